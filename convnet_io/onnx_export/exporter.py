"""Graph + Caffe blobs -> ONNX model, built with onnx.helper and checked with onnx.checker."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from convnet_io.version import __version__
from convnet_io.atomic import write_bytes_atomic
from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph, inference_view
from convnet_io.onnx_export.context import FLOAT, ExportContext
from convnet_io.onnx_export.registry import export_node

DEFAULT_OPSET = 17
MIN_OPSET = 13
BATCH_DIM = "N"


def export_onnx(graph: Graph, blobs: dict[str, list[np.ndarray]], opset: int = DEFAULT_OPSET,
                static_batch: bool = False) -> onnx.ModelProto:
    """An ONNX model computing ``graph`` with Caffe's semantics at inference (TEST) time."""
    return build_model(graph, blobs, opset, static_batch)[0]


def build_model(graph: Graph, blobs: dict[str, list[np.ndarray]], opset: int = DEFAULT_OPSET,
                static_batch: bool = False, defer_weights: bool = False
                ) -> tuple[onnx.ModelProto, list[tuple[str, np.ndarray]]]:
    """The model and, with ``defer_weights``, the large float32 initialisers left out of it as
    (name, array) pairs for ``onnx_export.writer`` to stream into the file."""
    max_opset = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= opset <= max_opset:
        raise ConvnetError(f"opset {opset} is not supported: choose {MIN_OPSET} to {max_opset}")
    graph = inference_view(graph)
    ctx = ExportContext(graph, blobs, opset, defer_weights=defer_weights)
    nodes = graph.nodes
    inputs, outputs = [], []
    read = {b for n in nodes for b in n.bottoms}
    batch = next((graph.shapes[v][0] for v in graph.read_inputs if len(graph.shapes[v]) >= 2), None)
    for node in nodes:
        if node.is_source:
            for t in node.tops:
                if t in read:
                    shape = graph.shapes[t]
                    # Only inputs that carry the batch get the symbolic batch dimension.
                    dynamic = not static_batch and len(shape) >= 2 and shape[0] == batch
                    inputs.append(_value_info(t, shape, not dynamic))
            continue
        export_node(ctx, node)
    for node in nodes:
        if not node.is_source:
            outputs += [helper.make_tensor_value_info(t, FLOAT, ctx.output_dims[t]) if t in ctx.output_dims
                        else _value_info(t, graph.shapes[t], static_batch) for t in node.tops if t not in read]
    onnx_graph = helper.make_graph(ctx.nodes, graph.name or "caffe_net", inputs, outputs, ctx.initializers)
    opsets = [helper.make_opsetid("", opset)]
    # The lowest IR version that carries this opset, so older runtimes can load the file.
    model = helper.make_model(onnx_graph, opset_imports=opsets, producer_name="convnet",
                              producer_version=__version__, ir_version=helper.find_min_ir_version_for(opsets))
    model.doc_string = f"Converted from Caffe net '{graph.name}' ({graph.source_path}) by convnet"
    helper.set_model_props(model, {"source": str(graph.source_path), "caffe_phase": graph.phase})
    return model, ctx.deferred


def _value_info(name: str, shape, static_batch: bool):
    dims = list(shape)
    if dims and not static_batch:
        dims[0] = BATCH_DIM
    return helper.make_tensor_value_info(name, FLOAT, dims)


def check_onnx(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnx.checker (full check, with shape inference) and strict shape inference; returns the
    inferred model."""
    try:
        onnx.checker.check_model(model, full_check=True)
        return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ConvnetError(f"the exported ONNX model does not pass the checker: {e}") from None


def save_onnx(model: onnx.ModelProto, path: str | Path) -> None:
    """Write atomically: a temporary file in the same folder, then rename."""
    write_bytes_atomic(path, model.SerializeToString())
