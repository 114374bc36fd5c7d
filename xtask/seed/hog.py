"""Detection workload (the seed's YOLOv3 stand-in): OpenCV's HOG people
detector (weights compiled into OpenCV) on a clip upscaled to 1280x720, one
thread. Per frame: decode, resize, detect."""

import argparse
import time

import common


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    a = ap.parse_args()
    cv2 = common.one_thread_cv2()
    hog = cv2.HOGDescriptor()
    hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
    cap = cv2.VideoCapture(a.clip)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {a.clip}")
    lat, people = [], 0
    start = time.perf_counter()
    for _ in range(a.frames):
        t = time.perf_counter()
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, frame = cap.read()
            if not ok:
                raise SystemExit(f"{a.clip}: no frame")
        img = cv2.resize(frame, (a.width, a.height), interpolation=cv2.INTER_LINEAR)
        rects, _ = hog.detectMultiScale(img, winStride=(8, 8), padding=(8, 8), scale=1.05)
        people += len(rects)
        lat.append((time.perf_counter() - t) * 1000)
    common.result(a.frames, time.perf_counter() - start, lat, detections_per_frame=people / a.frames)


if __name__ == "__main__":
    main()
