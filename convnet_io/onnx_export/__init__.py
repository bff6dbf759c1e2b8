"""The ONNX side: a Graph and its Caffe blobs become an ONNX model with Caffe's semantics."""
from convnet_io.onnx_export import activation, normalization, recurrent, shape_ops, vision  # noqa: F401  (registers exporters)
from convnet_io.onnx_export import detection_heads, forks  # noqa: F401  (the forks' layers)
from convnet_io.onnx_export import detection  # noqa: F401  (SSD)
from convnet_io.onnx_export import pyramid  # noqa: F401  (the rest of BVLC's registry)
from convnet_io.onnx_export.exporter import DEFAULT_OPSET, check_onnx, export_onnx, save_onnx
from convnet_io.onnx_export.registry import exporter, exporter_types

__all__ = ["DEFAULT_OPSET", "check_onnx", "export_onnx", "exporter", "exporter_types", "save_onnx"]
