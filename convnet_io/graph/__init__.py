"""The graph: one framework-free description of a net (``ir``), Caffe's layer types with their
shape rules (``layers``), and what is computed from a graph alone (reshape, summary, fillers).

It imports no format reader, no backend, and neither torch nor onnx."""
from convnet_io.graph.ir import TRAINING_ONLY_TYPES, Graph, Node, ParamSpec, inference_view
from convnet_io.graph.types import VERSION_SEPARATOR, Filler, Shape, value_id

__all__ = ["Filler", "Graph", "Node", "ParamSpec", "Shape", "TRAINING_ONLY_TYPES", "VERSION_SEPARATOR",
           "inference_view", "value_id"]
