"""An export written straight to a file: the model built with onnx.helper, checked by onnx.checker,
and the weights streamed from the Caffe blobs into the file without a TensorProto copy.

For AlexNet (244 MB of weights) ``export_onnx`` + ``check_onnx`` + ``save_onnx`` copy the weights
five times (``tobytes``, ``make_graph``, three serialisations for the checker, shape inference and
the file), each copy a fresh 244 MB of small pages: seconds. Here the model is built without the
large float initialisers, checked with them declared as typed inputs of the same shapes (the checker
and shape inference need their types and shapes, not their values), and the file is the serialised
model followed by one ``graph { initializer { ... } }`` record per weight. Protobuf merges the
repeated occurrences of an embedded message field when parsing, so ``onnx.load`` and ONNX Runtime
read one model with every initialiser; each weight's bytes go from its array to the file directly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from convnet_io.atomic import atomic_output
from convnet_io.errors import ConvnetError
from convnet_io.protowire import len_prefix
from convnet_io.graph import Graph
from convnet_io.onnx_export.context import FLOAT
from convnet_io.onnx_export.exporter import DEFAULT_OPSET, build_model

# Field numbers of onnx.proto3 the weight records are made of.
_MODEL_GRAPH, _GRAPH_INITIALIZER, _TENSOR_RAW_DATA = 7, 5, 9
_LE_F32 = np.dtype("<f4")  # ONNX raw_data is little-endian


@dataclass
class WrittenModel:
    path: str
    opset: int
    nodes: int
    weights: int  # initialisers streamed into the file
    model: onnx.ModelProto  # the model without the streamed initialisers (for inspection)


def _weight_record_head(name: str, array: np.ndarray) -> bytes:
    """``ModelProto{graph{initializer{dims, data_type, name, raw_data: <prefix only>}}}``: the
    tensor's small fields serialised by protobuf, then the length prefixes that enclose the data."""
    small = onnx.TensorProto(name=name, dims=list(array.shape), data_type=FLOAT).SerializeToString()
    nbytes = array.size * 4
    raw = len_prefix(_TENSOR_RAW_DATA, nbytes)
    tensor_size = len(small) + len(raw) + nbytes
    init = len_prefix(_GRAPH_INITIALIZER, tensor_size)
    return len_prefix(_MODEL_GRAPH, len(init) + tensor_size) + init + small + raw


def check_model_with_weights(model: onnx.ModelProto, weights: list[tuple[str, np.ndarray]]) -> None:
    """onnx.checker's full check (strict shape inference included) of ``model`` with the streamed
    weights declared as float inputs of their shapes."""
    checked = onnx.ModelProto()
    checked.CopyFrom(model)
    checked.graph.input.extend(helper.make_tensor_value_info(n, FLOAT, list(a.shape)) for n, a in weights)
    try:
        onnx.checker.check_model(checked, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ConvnetError(f"the exported ONNX model does not pass the checker: {e}") from None


def model_chunks(model: onnx.ModelProto, weights: list[tuple[str, np.ndarray]]):
    """The serialised model, then each weight's initialiser record (its head, then its bytes as a
    view of the array): together one ONNX model."""
    yield model.SerializeToString()
    for name, array in weights:
        data = np.ascontiguousarray(array, dtype=_LE_F32)
        yield _weight_record_head(name, data)
        yield memoryview(data.reshape(-1)).cast("B")


def write_model(model: onnx.ModelProto, weights: list[tuple[str, np.ndarray]], path: str | Path) -> None:
    """The model, then each weight as its own initialiser record; atomically."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        for chunk in model_chunks(model, weights):
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


def export_to_file(graph: Graph, blobs: dict[str, list[np.ndarray]], path: str | Path,
                   opset: int = DEFAULT_OPSET, static_batch: bool = False) -> WrittenModel:
    """Build, check and write the ONNX model of ``graph`` with ``blobs``."""
    model, weights = build_model(graph, blobs, opset, static_batch, defer_weights=True)
    check_model_with_weights(model, weights)
    write_model(model, weights, path)
    return WrittenModel(str(path), opset, len(model.graph.node), len(weights), model)
