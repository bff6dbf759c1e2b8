"""convnet: run, convert and check Caffe models with PyTorch and ONNX."""
from __future__ import annotations

from convnet_io.errors import ConvnetError
from convnet_io.version import __version__

__all__ = ["ConvnetError", "Net", "load", "load_graph", "__version__"]

# The API's names resolve on first use, so that importing the package (the CLI does, for its
# version and errors) costs neither NumPy nor the readers.
_API = {"Net": "convnet_io.api.net", "load": "convnet_io.api.net", "load_graph": "convnet_io.api.loading"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'convnet_io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
