"""A net for inference on the exported engines, loaded without building the PyTorch module first.

``convnet run`` on the CPU runs the net in OpenVINO or ONNX Runtime (what ``backend="auto"`` picks
from the recorded bench). Their model is convnet's ONNX export, which is built from the graph and
the weights as NumPy arrays; the PyTorch module ``load`` builds first is then only a detour:
importing torch and building the module cost about 2 s of CPU before the first image, more than
decoding 500 JPEGs. :func:`load_for_inference` reads the weights straight from the .caffemodel
(``convnet_io.api.loading.load_blobs``, the same check and the same fillers for missing layers as
``load``) into an :class:`EngineNet`: a ``Net`` whose module is built only if something asks for
it (a blob outside the inference graph, the torch engine, training), so every ``Net`` use still
works, only later.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from convnet_io.api.net import Net


def _read_only(a: np.ndarray) -> np.ndarray:
    view = np.asarray(a).view()
    view.flags.writeable = False
    return view


class _PendingModule:
    """Stands in for the module until it is needed: not training (inference is what this net is
    for); any other attribute builds the module and is read from it."""

    training = False

    def __init__(self, owner: EngineNet):
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._owner._build_module(), name)


class EngineNet(Net):
    """A ``Net`` holding its weights as NumPy arrays; the PyTorch module is built on first use."""

    def __init__(self, graph, blobs: dict, backend: str = "auto"):
        self._numpy_blobs = blobs
        self._module = None
        super().__init__(graph, None, backend)

    @property
    def module(self):
        return self._module if self._module is not None else _PendingModule(self)

    @module.setter
    def module(self, value) -> None:
        self._module = value

    def _build_module(self):
        if self._module is None:
            from convnet_io.torch_model import CaffeModule

            self._module = CaffeModule(self.graph)
            self.set_blobs(self._numpy_blobs)
        return self._module

    def blobs(self) -> dict:
        """The weights, read-only views while there is no module (the export only reads them:
        copying AlexNet's 244 MB for it took longer than decoding 100 images)."""
        if self._module is None:
            return {k: [_read_only(a) for a in v] for k, v in self._numpy_blobs.items()}
        return super().blobs()

    def _engine_blobs(self) -> dict:
        # the reader's own arrays, shared with the engines' sessions (nothing writes to them)
        return self._numpy_blobs if self._module is None else super()._engine_blobs()

    def _weights_key(self) -> tuple:
        # the NumPy weights never change in place; once the module exists, its tensors count
        return () if self._module is None else super()._weights_key()


def keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back at once.

    Building the engine copies the weights several times (NumPy arrays, ONNX initialisers, the
    serialised model, the engine's own): each copy of AlexNet's 244 MB is a fresh mmap that the
    kernel fills page by page, 865,000 page faults and 2.3 s of system time measured before the
    first image, against 470,000 and 1.1 s when malloc reuses what it freed (the same figures as
    MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ set in the environment). For a command process
    (``convnet run``) that loads one net; the memory is the process's until it exits. Does nothing
    where malloc is not glibc's."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    mallopt(m_mmap_threshold, 1 << 30)
    mallopt(m_trim_threshold, (1 << 31) - 1)
    mallopt(m_top_pad, 64 << 20)


def runs_on_engine(net: Net) -> bool:
    """Whether ``net``'s inference graph runs on an exported engine (no torch needed for it)."""
    reason, _, _ = net._onnxruntime_blocker()
    if reason is None and net.backend == "openvino":
        from convnet_io.runtimes.openvino_session import openvino_blocker

        reason = openvino_blocker(net.graph)
    return reason is None


def load_for_inference(net: str | Path, weights: str | Path | None = None, backend: str = "auto",
                       precision: str = "fp32") -> Net:
    """``convnet_io.api.load(net, weights, backend=backend)`` for inference: an :class:`EngineNet`
    where the net runs on an exported engine (backend auto, onnxruntime or openvino, float32, a
    Caffe prototxt), else what ``load`` gives."""
    from convnet_io.api import load
    from convnet_io.api.loading import is_caffe2_net, load_blobs, load_graph

    if (backend not in ("auto", "onnxruntime", "openvino") or precision != "fp32" or not isinstance(net, (str, Path))
            or is_caffe2_net(net)):
        return load(net, weights=weights, backend=backend)
    graph = load_graph(net)
    probe = EngineNet(graph, {}, backend)
    if not runs_on_engine(probe):
        return load(net, weights=weights, backend=backend)
    blobs, warnings = load_blobs(graph, weights)
    graph.notices.extend(warnings)
    return EngineNet(graph, blobs, backend)
