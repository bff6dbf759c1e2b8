"""What an exporter writes into: nodes, initialisers and fresh names, built with onnx.helper."""
from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from convnet_io.graph import Graph, Node

BLOB_ROLES = {0: "w", 1: "b"}
# Constants at least this large are weights worth streaming (shape constants stay inline:
# shape inference reads their values).
DEFER_MIN_ELEMENTS = 1024


class ExportContext:
    """One export in progress. Values keep their graph ids (``conv1``, ``conv1:1``); initialisers
    are named ``<layer>_w`` / ``<layer>_b`` for Caffe blobs 0 and 1 (as Caffe2), ``<layer>_<role>``
    for derived constants."""

    def __init__(self, graph: Graph, blobs: dict[str, list[np.ndarray]], opset: int,
                 defer_weights: bool = False):
        self.graph = graph
        self.blobs = blobs
        self.opset = opset
        self.nodes: list = []
        self.initializers: list = []
        # With ``defer_weights`` large float32 constants are kept as (name, array) and streamed
        # into the file by ``onnx_export.writer``: no TensorProto copy of the weights is made.
        self.defer_weights = defer_weights
        self.deferred: list[tuple[str, np.ndarray]] = []
        self._names: set[str] = set(graph.shapes)
        self._node_names: set[str] = set()
        # Output dims an exporter knows better than the graph's shape rule (a data-dependent
        # length, e.g. DetectionOutput's rows); used as given, no batch dimension added.
        self.output_dims: dict[str, list] = {}

    # -- names and constants -----------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        name, i = base, 1
        while name in self._names:
            name = f"{base}_{i}"
            i += 1
        self._names.add(name)
        return name

    def constant(self, base: str, array, dtype=np.float32) -> str:
        """Add an initialiser; returns its (unique) name."""
        name = self.fresh(base)
        array = np.asarray(array, dtype=dtype)
        if self.defer_weights and array.dtype == np.float32 and array.size >= DEFER_MIN_ELEMENTS:
            self.deferred.append((name, np.ascontiguousarray(array)))
        else:
            self.initializers.append(numpy_helper.from_array(array, name))
        return name

    def blob(self, node: Node, index: int, array: np.ndarray | None = None, role: str | None = None) -> str:
        """Caffe blob ``index`` of ``node`` (optionally transformed) as an initialiser."""
        data = self.blobs[node.name][index] if array is None else array
        return self.constant(f"{node.name}_{role or BLOB_ROLES.get(index, f'blob{index}')}", data)

    def ints(self, base: str, values) -> str:
        return self.constant(base, np.asarray(values, dtype=np.int64), dtype=np.int64)

    # -- nodes -------------------------------------------------------------------------------------
    def add(self, op: str, inputs: list[str], outputs: list[str] | None = None, name: str | None = None,
            **attrs) -> str:
        """Add an ONNX node; returns its first output (a fresh temporary if none given)."""
        if outputs is None:
            outputs = [self.fresh(f"{name or op.lower()}_out")]
        node_name = base = name or outputs[0] + "/" + op
        i = 1
        while node_name in self._node_names:
            node_name = f"{base}_{i}"
            i += 1
        self._node_names.add(node_name)
        self.nodes.append(helper.make_node(op, inputs, outputs, name=node_name, **attrs))
        return outputs[0]

    def shape(self, value: str) -> tuple[int, ...]:
        return self.graph.shapes[value]


FLOAT = TensorProto.FLOAT
