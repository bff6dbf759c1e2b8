"""The public Python API: ``load`` a net into a ``Net`` (graph, PyTorch module, forward on PyTorch or
ONNX Runtime, weights out), ``load_graph`` for the graph alone."""
from convnet_io.api.loading import load_graph
from convnet_io.api.net import Net, load

__all__ = ["Net", "load", "load_graph"]
