"""The licence-plate pipeline (the seed's SSD-MobileNet v2 + LeNet +
DeepSORT service, with what installs here): frames arrive over TCP from a
"camera", a Haar plate cascade finds plates, PP-OCR's recogniser (ONNX
Runtime, one intra-op thread) reads each one, a SORT tracker follows them,
and the readings are checked against the plates drawn into the frames.

    plates.py render   --clip vtest.avi --out FILE --frames N   (once, cached)
    plates.py camera   --file FILE --connect ADDR:PORT           (camera netns)
    plates.py pipeline --listen ADDR:PORT --frames N             (node netns)

The pipeline asks for each frame (one byte) and the camera answers with it:
per-frame latency is from the request to the frame's tracked result.
"""

import argparse
import json
import random
import socket
import struct
import sys
import time

import common

MAGIC = b"GSPL1\n"
WIDTH, HEIGHT = 1920, 1080
PLATE_W, PLATE_H = 300, 66
LETTERS = "ABCEHKMOPTXY"


def plate_text(rng):
    """A Russian-style plate: letter, three digits, two letters."""
    return (
        rng.choice(LETTERS)
        + "".join(rng.choice("0123456789") for _ in range(3))
        + rng.choice(LETTERS)
        + rng.choice(LETTERS)
    )


class Scene:
    """Plates of known text moving at constant speed, bouncing off the
    frame's edges; deterministic for a seed."""

    def __init__(self, plates=3, seed=18):
        rng = random.Random(seed)
        self.plates = []
        for i in range(plates):
            self.plates.append(
                {
                    "id": i + 1,
                    "text": plate_text(rng),
                    "x": rng.uniform(50, WIDTH - PLATE_W - 50),
                    "y": 150 + i * (HEIGHT - 300) / max(plates, 1) + rng.uniform(0, 60),
                    "vx": rng.choice((-1, 1)) * rng.uniform(8, 20),
                    "vy": rng.choice((-1, 1)) * rng.uniform(2, 6),
                }
            )

    def step(self):
        for p in self.plates:
            for axis, size, limit in (("x", PLATE_W, WIDTH), ("y", PLATE_H, HEIGHT)):
                v = "v" + axis
                p[axis] += p[v]
                if p[axis] < 0 or p[axis] + size > limit:
                    p[v] = -p[v]
                    p[axis] = min(max(p[axis], 0), limit - size)

    def truth(self):
        return [[p["id"], p["text"], [int(p["x"]), int(p["y"]), PLATE_W, PLATE_H]] for p in self.plates]


def draw(cv2, img, truth):
    for _, text, (x, y, w, h) in truth:
        cv2.rectangle(img, (x, y), (x + w, y + h), (255, 255, 255), -1)
        cv2.rectangle(img, (x, y), (x + w, y + h), (0, 0, 0), 3)
        cv2.putText(img, text, (x + 14, y + 52), cv2.FONT_HERSHEY_SIMPLEX, 1.8, (0, 0, 0), 4)


def render(a):
    cv2 = common.one_thread_cv2()
    cap = cv2.VideoCapture(a.clip)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {a.clip}")
    scene = Scene(seed=a.seed)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(MAGIC)
        for i in range(a.frames):
            ok, frame = cap.read()
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, frame = cap.read()
            img = cv2.resize(frame, (WIDTH, HEIGHT), interpolation=cv2.INTER_LINEAR)
            truth = scene.truth()
            draw(cv2, img, truth)
            ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if not ok:
                raise SystemExit("JPEG encoding failed")
            meta = json.dumps({"frame": i, "plates": truth}).encode()
            jpeg = jpeg.tobytes()
            f.write(struct.pack("!II", len(meta), len(jpeg)) + meta + jpeg)
            scene.step()
    import os

    os.replace(tmp, a.out)


def read_frames(path):
    frames = []
    with open(path, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            raise SystemExit(f"{path}: not a rendered plate clip")
        while True:
            head = f.read(8)
            if not head:
                break
            ml, jl = struct.unpack("!II", head)
            frames.append(head + f.read(ml + jl))
    return frames


def recv_exact(conn, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise EOFError("camera closed the connection")
        buf += chunk
    return bytes(buf)


def camera(a):
    frames = read_frames(a.file)
    host, port = a.connect.rsplit(":", 1)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection((host, int(port)), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    conn.settimeout(None)
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sent = 0
    while True:
        req = conn.recv(1)
        if req != b"n":
            break
        conn.sendall(frames[sent % len(frames)])
        sent += 1
    json.dump({"sent": sent}, sys.stdout)


def normalise(text):
    return "".join(c for c in text.upper() if c.isalnum())


def pipeline(a):
    import numpy as np
    from rapidocr_onnxruntime import RapidOCR

    from metrics import Accuracy
    from sort import Sort

    cv2 = common.one_thread_cv2()
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_russian_plate_number.xml")
    if cascade.empty():
        raise SystemExit("the plate cascade did not load")
    ocr = RapidOCR(intra_op_num_threads=1, inter_op_num_threads=1)
    # Session warm-up outside the timed loop.
    ocr(np.full((66, 300, 3), 255, np.uint8), use_det=False, use_cls=False)
    host, port = a.listen.rsplit(":", 1)
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((host, int(port)))
    srv.listen(1)
    # Ready: the harness starts the camera when it reads this line.
    sys.stderr.write("pipeline: listening\n")
    sys.stderr.flush()
    srv.settimeout(120)
    conn, _ = srv.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    tracker, acc = Sort(), Accuracy()
    lat, net = [], []
    start = time.perf_counter()
    for _ in range(a.frames):
        t = time.perf_counter()
        conn.sendall(b"n")
        ml, jl = struct.unpack("!II", recv_exact(conn, 8))
        meta = json.loads(recv_exact(conn, ml))
        jpeg = recv_exact(conn, jl)
        net.append((time.perf_counter() - t) * 1000)
        img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
        found = cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=4, minSize=(100, 25))
        boxes = [tuple(float(v) for v in d) for d in found]
        tracks = tracker.update(boxes)
        for (x, y, w, h), track in zip(boxes, tracks):
            crop = img[int(y) : int(y + h), int(x) : int(x + w)]
            res, _ = ocr(crop, use_det=False, use_cls=False)
            if res:
                track.read(normalise(res[0][0]), float(res[0][1]))
        acc.add_frame(
            [(p[0], p[1], tuple(p[2])) for p in meta["plates"]],
            [(tr.id, b, tr.text()) for b, tr in zip(boxes, tracks)],
        )
        lat.append((time.perf_counter() - t) * 1000)
    seconds = time.perf_counter() - start
    conn.sendall(b"q")
    conn.close()
    common.result(a.frames, seconds, lat, accuracy=acc.summary(), network_ms=[round(x, 3) for x in net])


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("render")
    p.add_argument("--clip", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--frames", type=int, required=True)
    p.add_argument("--seed", type=int, default=18)
    p = sub.add_parser("camera")
    p.add_argument("--file", required=True)
    p.add_argument("--connect", required=True)
    p = sub.add_parser("pipeline")
    p.add_argument("--listen", required=True)
    p.add_argument("--frames", type=int, required=True)
    a = ap.parse_args()
    {"render": render, "camera": camera, "pipeline": pipeline}[a.cmd](a)


if __name__ == "__main__":
    main()
