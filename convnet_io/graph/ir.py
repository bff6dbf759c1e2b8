"""The intermediate graph: one framework-free description of a net that every consumer reads.

Parsers (prototxt, Caffe2 listings) write it; the PyTorch model, the ONNX exporter, the summary and
the diff read it. It imports neither torch nor onnx.

Blobs are *values*: each write of a Caffe blob gets its own value id. The first write keeps the
Caffe name (``conv1``); each in-place rewrite adds a version suffix (``conv1:1``, ``conv1:2``), so
an in-place ReLU does not hide the convolution output it overwrote.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, filterfalse
from typing import Any

from convnet_io.graph.layers.registry import is_source_type
from convnet_io.graph.types import Filler, Shape


class _NoItems(list):
    """An empty list that stays empty: nodes with no weights, loss weights or propagate_down
    flags share one (three empty lists per node are 150 MB on a 700k-layer net)."""

    __slots__ = ()

    def _frozen(self, *args, **kwargs):
        raise TypeError("this empty list is shared by nodes; assign a new list instead")

    append = extend = insert = pop = remove = clear = sort = reverse = _frozen
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _frozen


NO_ITEMS: list = _NoItems()


@dataclass(slots=True)  # no per-object dict: a 700k-layer graph holds 700k nodes
class ParamSpec:
    """One learnable blob of a layer: its shape, filler and solver multipliers."""

    shape: Shape
    filler: Filler | None = None
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    share_name: str = ""

    @property
    def count(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


@dataclass(slots=True)
class Node:
    """One layer: Caffe name and type, the values it reads and writes, typed attributes."""

    name: str
    type: str
    bottoms: list[str]
    tops: list[str]
    attrs: Any
    params: list[ParamSpec] = field(default_factory=list)
    loss_weights: list[float] = field(default_factory=list)
    propagate_down: list[bool] = field(default_factory=list)
    caffe_name: str = ""  # the name in the net file, where a repeated name was made unique

    @property
    def is_source(self) -> bool:
        """True for layers that take no bottom and feed the net (Input, Data, ...)."""
        return is_source_type(self.type)

    @property
    def param_count(self) -> int:
        return sum(p.count for p in self.params)


@dataclass
class Graph:
    """A whole net for one phase, nodes in execution order, every value's shape known.

    A graph is not changed once built (``dataclasses.replace`` makes a new one), so the derived
    lists below are computed once."""

    name: str
    phase: str
    nodes: list[Node]
    shapes: dict[str, Shape]
    blob_of: dict[str, str]
    notices: list[str] = field(default_factory=list)
    source_path: str = ""

    # -- lookups ---------------------------------------------------------------------------------
    @cached_property
    def _node_of(self) -> dict[str, Node]:
        """Lookups by name and by value, built once: a scan per lookup is quadratic on 700k layers."""
        out: dict[str, Node] = {}
        for n in self.nodes:
            out.setdefault(n.name, n)
        return out

    @cached_property
    def _producer_of(self) -> dict[str, Node]:
        out: dict[str, Node] = {}
        for n in self.nodes:
            for t in n.tops:
                out.setdefault(t, n)
        return out

    @cached_property
    def _last_write(self) -> dict[str, str]:
        return {self.blob_of[v]: v for v in self.values}

    def node(self, name: str) -> Node:
        n = self._node_of.get(name)
        if n is None or n.name != name:  # a name changed after the index was built
            for n in self.nodes:
                if n.name == name:
                    return n
            raise KeyError(name)
        return n

    @cached_property
    def inputs(self) -> list[str]:
        """Values written by source layers: what a forward pass is fed."""
        source = _source_types()
        return [t for n in self.nodes if source[n.type] for t in n.tops]

    @cached_property
    def read_inputs(self) -> list[str]:
        """Inputs that some layer reads (a label no kept layer uses is left out)."""
        read = self._read
        return [v for v in self.inputs if v in read]

    @cached_property
    def outputs(self) -> list[str]:
        """Values that no layer reads: what a forward pass returns by default."""
        source = _source_types()
        computed = [n for n in self.nodes if not source[n.type]]
        # C loops over the values: a 700k-layer net has 700k of them
        return list(filterfalse(self._read.__contains__, chain.from_iterable(map(_TOPS, computed))))

    @property
    def _read(self) -> set[str]:
        """Every value some node reads."""
        return set(chain.from_iterable(map(_BOTTOMS, self.nodes)))

    @cached_property
    def values(self) -> list[str]:
        """Every value in execution order."""
        return list(chain.from_iterable(map(_TOPS, self.nodes)))

    def final_value(self, blob: str) -> str:
        """The value a Caffe blob name holds after a forward pass (its last write)."""
        last = self._last_write.get(blob)
        if last is None:
            if blob in self.shapes:
                return blob
            raise KeyError(blob)
        return last

    def producer(self, value: str) -> Node:
        n = self._producer_of.get(value)
        if n is None or value not in n.tops:
            for n in self.nodes:
                if value in n.tops:
                    return n
            raise KeyError(value)
        return n

    @property
    def param_count(self) -> int:
        return sum(n.param_count for n in self.nodes)


_TOPS = operator.attrgetter("tops")
_BOTTOMS = operator.attrgetter("bottoms")


class _SourceTypes(dict):
    """type -> whether it is a source, looked up once per type (not once per node)."""

    def __missing__(self, type_: str) -> bool:
        self[type_] = is_source_type(type_)
        return self[type_]


def _source_types() -> _SourceTypes:
    return _SourceTypes()


# Layers an inference model leaves out: losses and metrics need labels and say nothing about the
# model's outputs.
TRAINING_ONLY_TYPES = frozenset({"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss",
                                 "ContrastiveLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss",
                                 "Accuracy", "Silence"})


def inference_view(graph: Graph) -> Graph:
    """The graph without losses, metrics and whatever only feeds them (labels): what a deployed
    model computes. Shapes and names are the graph's own."""
    import dataclasses

    kept = [n for n in graph.nodes if n.type not in TRAINING_ONLY_TYPES]
    read_by_kept = {b for n in kept for b in n.bottoms}
    needed: set[str] = set()
    keep: list[Node] = []
    for node in reversed(kept):
        is_output = any(t not in read_by_kept for t in node.tops) and not node.is_source
        if is_output or any(t in needed for t in node.tops):
            keep.append(node)
            needed.update(node.bottoms)
    keep.reverse()
    return dataclasses.replace(graph, nodes=keep)
