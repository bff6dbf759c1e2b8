"""pycaffe's module-level switches. convnet's pycaffe keeps blobs as NumPy arrays shared with
CPU tensors, so it computes on the CPU whatever mode is asked for (said once, at the call)."""
from __future__ import annotations

import sys
import warnings
from typing import Any

__version__ = "1.0.0"  # the Caffe release whose Python interface this follows

_state = {"mode": "CPU", "device": 0, "seed": None}


def set_mode_cpu() -> None:
    _state["mode"] = "CPU"


def set_mode_gpu() -> None:
    if _state["mode"] != "GPU":
        warnings.warn("caffe.set_mode_gpu(): convnet's pycaffe runs nets on the CPU (its blobs are "
                      "NumPy views of CPU tensors); use convnet_io.load(...) or `convnet train "
                      "--device cuda` for the GPU", stacklevel=2)
    _state["mode"] = "GPU"


def get_mode() -> str:
    return _state["mode"]


def set_device(device_id: int) -> None:
    _state["device"] = int(device_id)


def set_random_seed(seed: int) -> None:
    """Seeds torch (dropout and other random layers) and the fillers of nets built afterwards."""
    import torch

    _state["seed"] = int(seed)
    torch.manual_seed(int(seed))


def filler_seed() -> int:
    return _state["seed"] if _state["seed"] is not None else 0


def init_log(level: int = 0, use_stderr: bool = True) -> None:
    """Caffe's glog set-up: convnet logs to standard output already."""


def log(message: str) -> None:
    print(message, file=sys.stderr)


def solver_count() -> int:
    return 1


def solver_rank() -> int:
    return 0


def layer_type_list() -> list[str]:
    """Every layer type convnet knows."""
    from convnet_io.graph.layers.registry import supported_types

    return sorted(supported_types())


class Layer:
    """Base class of Python layers: ``setup``, ``reshape``, ``forward``, ``backward`` over
    ``bottom``/``top`` blob lists, ``self.param_str``, ``self.phase`` and ``self.blobs``."""

    def __init__(self, param: Any = None):
        self.param_str = param.python_param.param_str if param is not None else ""
        self.phase = 1
        self.blobs: list = []

    def setup(self, bottom, top) -> None:
        pass

    def reshape(self, bottom, top) -> None:
        pass

    def forward(self, bottom, top) -> None:
        pass

    def backward(self, top, propagate_down, bottom) -> None:
        pass


def set_solver_count(count: int) -> None:
    if int(count) != 1:
        raise NotImplementedError("caffe.set_solver_count: convnet's pycaffe solves in one process; "
                                  "train on several with `convnet train --nproc N`")


def set_solver_rank(rank: int) -> None:
    if int(rank) != 0:
        raise NotImplementedError("caffe.set_solver_rank: convnet's pycaffe solves in one process")


def set_multiprocess(multiprocess: bool) -> None:
    if multiprocess:
        raise NotImplementedError("caffe.set_multiprocess: use `convnet train --nproc N`")


def has_nccl() -> bool:
    return False


class NCCL:
    """pycaffe's multi-GPU gradient exchange: not on convnet (``convnet train --nproc N``)."""

    def __init__(self, *args: Any, **kwargs: Any):
        raise NotImplementedError("caffe.NCCL is not supported on convnet's pycaffe: train on several "
                                  "processes or GPUs with `convnet train --nproc N`")


class Timer:
    """Caffe's Timer: ``start()``, ``stop()``, ``ms`` (milliseconds between them)."""

    def __init__(self):
        self._start: float | None = None
        self._ms = 0.0

    def start(self) -> None:
        import time

        self._start = time.perf_counter()

    def stop(self) -> None:
        import time

        if self._start is not None:
            self._ms = (time.perf_counter() - self._start) * 1000.0
            self._start = None

    @property
    def ms(self) -> float:
        return self._ms
