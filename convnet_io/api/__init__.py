"""The public Python API: ``load`` a net into a ``Net`` (graph, PyTorch module, forward on PyTorch or
ONNX Runtime, weights out), ``load_graph`` for the graph alone. The names resolve on first use, so
``from convnet_io.api import load_graph`` costs no NumPy."""
from __future__ import annotations

__all__ = ["Net", "load", "load_graph"]

_NAMES = {"Net": "convnet_io.api.net", "load": "convnet_io.api.net", "load_graph": "convnet_io.api.loading"}


def __getattr__(name: str):
    if name in _NAMES:
        import importlib

        value = getattr(importlib.import_module(_NAMES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convnet_io.api' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
