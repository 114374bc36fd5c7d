"""The management path's flood: UDP datagrams at a fixed rate for a bounded
time (send), and a receiver that drains them (recv). Both stop by
themselves."""

import argparse
import json
import socket
import sys
import time


def send(a):
    host, port = a.to.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    payload = b"m" * a.size
    end = time.monotonic() + a.seconds
    interval = 1.0 / a.rate
    batch = max(1, a.rate // 1000)
    sent, next_t = 0, time.monotonic()
    while time.monotonic() < end:
        for _ in range(batch):
            try:
                s.sendto(payload, (host, int(port)))
                sent += 1
            except OSError:
                pass
        next_t += interval * batch
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    json.dump({"sent": sent}, sys.stdout)


def recv(a):
    host, port = a.bind.rsplit(":", 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, int(port)))
    s.settimeout(0.5)
    end = time.monotonic() + a.seconds
    got = 0
    while time.monotonic() < end:
        try:
            s.recv(65536)
            got += 1
        except socket.timeout:
            pass
    json.dump({"received": got}, sys.stdout)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("send")
    p.add_argument("--to", required=True)
    p.add_argument("--rate", type=int, default=20000)
    p.add_argument("--size", type=int, default=1000)
    p.add_argument("--seconds", type=float, required=True)
    p = sub.add_parser("recv")
    p.add_argument("--bind", required=True)
    p.add_argument("--seconds", type=float, required=True)
    a = ap.parse_args()
    send(a) if a.cmd == "send" else recv(a)


if __name__ == "__main__":
    main()
