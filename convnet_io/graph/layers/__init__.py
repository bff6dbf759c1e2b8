"""Caffe layer types known to the graph: attributes, shape rule, learnable blobs, cost.

Each Caffe type is one small ``LayerSpec`` subclass registered with ``@register("Type")``, grouped
by family in the modules below, with its shape rule next to its attributes as in Caffe's
``Reshape``. Framework code (torch, onnx) lives elsewhere and looks layers up by the same type.
"""
from __future__ import annotations

from convnet_io.graph.layers import activation, data, loss, normalization, recurrent, shape_ops, vision  # noqa: F401  (registration)
from convnet_io.graph.layers import mobile, segmentation, two_stage, yolo  # noqa: F401  (fork layers)
from convnet_io.graph.layers import detection  # noqa: F401  (SSD)
from convnet_io.graph.layers import loss_extra, pyramid  # noqa: F401  (the rest of BVLC's registry)
from convnet_io.graph.layers.registry import LayerSpec, get_spec, is_source_type, register, supported_types

__all__ = ["LayerSpec", "get_spec", "is_source_type", "register", "supported_types"]
