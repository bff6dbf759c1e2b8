"""convnet: run, convert and check Caffe models with PyTorch and ONNX."""
from __future__ import annotations

from convnet_io.api import Net, load, load_graph
from convnet_io.errors import ConvnetError
from convnet_io.version import __version__

__all__ = ["ConvnetError", "Net", "load", "load_graph", "__version__"]
