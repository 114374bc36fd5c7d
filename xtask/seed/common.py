"""What the workloads share: one thread everywhere, the result line."""

import json
import os
import sys

# One thread for every library (OpenCV, OpenMP, BLAS): the seed's claims are
# about one workload's CPU, and the hogs take the rest.
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")


def one_thread_cv2():
    import cv2

    cv2.setNumThreads(1)
    return cv2


def result(frames, seconds, latencies_ms, **extra):
    """Prints the one JSON line the harness reads."""
    out = {
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else 0.0,
        "latencies_ms": [round(x, 3) for x in latencies_ms],
    }
    out.update(extra)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
