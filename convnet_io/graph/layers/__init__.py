"""Caffe layer types known to the graph: attributes, shape rule, learnable blobs, cost.

Each Caffe type is one small ``LayerSpec`` subclass registered with ``@register("Type")``, grouped
by family in the modules of this package, with its shape rule next to its attributes as in Caffe's
``Reshape``. Framework code (torch, onnx) lives elsewhere and looks layers up by the same type.
A family module is imported when one of its types is first looked up (``get_spec``); listing the
types (``supported_types``, ``load_all``) imports them all.
"""
from __future__ import annotations

from convnet_io.graph.layers.registry import (
    LayerSpec,
    get_spec,
    is_source_type,
    load_all,
    register,
    supported_types,
)

__all__ = ["LayerSpec", "get_spec", "is_source_type", "load_all", "register", "supported_types"]
