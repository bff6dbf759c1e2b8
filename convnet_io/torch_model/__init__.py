"""The PyTorch side: a Graph becomes a ``torch.nn.Module`` with Caffe's exact numerics."""
from . import converters  # noqa: F401  (registers every converter)
from .base import CaffeLayer
from .model import CaffeModule
from .registry import converter, converter_types

__all__ = ["CaffeLayer", "CaffeModule", "converter", "converter_types"]
