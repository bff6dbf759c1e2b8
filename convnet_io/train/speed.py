"""Process and layout settings that make a CPU training step cheaper without changing its numbers.

* Freed memory is kept by the allocator: a training step allocates and frees the same large
  blobs every iteration, and glibc's default hands each one over 32 MiB back to the kernel
  (``mmap``/``munmap``), so every step pays page faults on fresh zeroed pages. On AlexNet that
  made a ReLU five times slower than the arithmetic it does; Caffe allocates its blobs once.
* Channels-last (NHWC) blobs where every layer of the net runs in that layout: oneDNN's
  convolutions and PyTorch's vectorised pooling kernels are several times faster on it than on
  NCHW (LeNet's pool1 forward 4.6 ms NCHW vs 0.5 ms NHWC on one core). The values are the same
  numbers in another memory order; only the nets made of layers known to handle it are converted.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from convnet_io.graph import Graph

# Layers whose converters take any memory format (no .view of a 4-D blob, no layout-dependent
# indexing); a net with any other type keeps NCHW. LRN is left out: its channel-window sums run
# along NHWC's innermost axis (AlexNet's norm1 step 123 ms NHWC vs 84 ms NCHW on one core), which
# takes back what the layout gains in the convolutions and poolings (2.01 s vs 2.07 s a step, within
# the noise), while the convolutions' different summation order moves a chaotic training run.
CHANNELS_LAST_LAYERS = frozenset({
    "Input", "Data", "ImageData", "HDF5Data", "MemoryData", "DummyData", "Convolution", "Pooling",
    "ReLU", "InnerProduct", "Dropout", "SoftmaxWithLoss", "Accuracy", "Silence"})

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_kept = False


def keep_freed_memory() -> bool:
    """glibc: serve every allocation from the heap and never trim it (``mallopt``); True when set.
    Memory freed by one step is reused by the next instead of going back to the kernel."""
    global _kept
    if _kept:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _kept = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    return _kept


def channels_last_fits(graph: Graph) -> bool:
    """The net has a 2-D convolution or pooling and only layers that handle NHWC blobs."""
    spatial = False
    for node in graph.nodes:
        if node.type not in CHANNELS_LAST_LAYERS:
            return False
        if node.type in ("Convolution", "Pooling"):
            shape = graph.shapes.get(node.bottoms[0]) if node.bottoms else None
            if shape is None or len(shape) != 4:
                return False
            spatial = True
    return spatial


def to_channels_last(module: torch.nn.Module) -> None:
    """4-D parameters to NHWC in place (the Parameter objects stay, so shared blobs and the
    solver's references still hold); the convolutions then run and return NHWC."""
    module.to(memory_format=torch.channels_last)
