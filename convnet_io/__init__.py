"""convnet: run, convert and check Caffe models with PyTorch and ONNX."""
from __future__ import annotations

__version__ = "0.1.0"

from .api import Net, load
from .api_graph import load_graph
from .errors import ConvnetError

__all__ = ["ConvnetError", "Net", "load", "load_graph", "__version__"]
