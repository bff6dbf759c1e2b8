"""The PyTorch side: a Graph becomes a ``torch.nn.Module`` with Caffe's exact numerics."""
from convnet_io.torch_model import converters  # noqa: F401  (registers every converter)
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.model import CaffeModule
from convnet_io.torch_model.registry import converter, converter_types

__all__ = ["CaffeLayer", "CaffeModule", "converter", "converter_types"]
