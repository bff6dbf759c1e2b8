"""One load in a fresh interpreter, for peak-RSS figures: ``rss_worker.py METHOD CAFFEMODEL DEPLOY``.

Every method imports the same modules first (NumPy, OpenCV, convnet_io's reader), so the baseline
interpreter (method ``none``) differs from the others only by the load itself. Prints one JSON line:
``ru_maxrss`` (bytes, Linux reports KiB) and VmHWM before and after the load, and the load's time.

Start it through a small shell that forks it (``sh -c 'python rss_worker.py ...; exit $?'``), not
straight from a large process: Linux carries the high-water mark of the address space a process had
before ``exec`` into its ``ru_maxrss``, and a child forked from the 1 GB benchmark process would
report at least that.
"""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import cv2  # noqa: F401  (imported by every method: the same baseline)
import numpy as np  # noqa: F401

from convnet_io.caffe.caffemodel import read_caffemodel


def maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def vmhwm() -> int:
    """The peak RSS of this process's address space (/proc/self/status VmHWM), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    method, model, deploy = sys.argv[1:4]
    before, hwm_before = maxrss(), vmhwm()
    t0 = time.perf_counter()
    if method == "none":
        keep = None
    elif method == "bytes":
        keep = Path(model).read_bytes()
    elif method == "convnet":
        keep = read_caffemodel(model)
    elif method == "opencv":
        keep = cv2.dnn.readNetFromCaffe(deploy, model)
    else:
        raise SystemExit(f"unknown method {method}")
    seconds = time.perf_counter() - t0
    after, hwm_after = maxrss(), vmhwm()
    del keep
    print(json.dumps({"method": method, "maxrss_before": before, "maxrss_after": after,
                      "vmhwm_before": hwm_before, "vmhwm_after": hwm_after, "seconds": seconds}))


if __name__ == "__main__":
    main()
