"""One source layer's feed: its records read, checked and transformed into batches (or a DummyData
layer's fillers), and the options every feed shares."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet_io.data.base import BadRecord, RecordSource, check_label, fmt_shape, layer_salt, rng_for
from convnet_io.data.transform import DataTransformer, PCALighting
from convnet_io.errors import ConvnetError
from convnet_io.graph import Filler, Graph, Node

IMAGE_TYPES = ("Data", "ImageData")
USER_FED_TYPES = ("Input", "MemoryData")
MAX_TRIES = 64  # bad records in a row before a layer gives up, with skip_bad


@dataclass
class FeederOptions:
    """How a :class:`DataFeeder` reads. ``sources`` replaces a layer's ``source`` path
    (``{layer name: path}``); ``num_classes`` enables the label range check; ``batch_size``
    overrides every layer's; ``inputs`` feeds Input/MemoryData tops (``{top: records array}``);
    ``pca_lighting`` (True for ImageNet's values, or a :class:`PCALighting`) adds AlexNet's colour
    augmentation to image layers at TRAIN; ``mirror_at_test=False`` stops Caffe's random
    mirroring at TEST; ``check_shapes`` compares records with the graph's shapes."""

    seed: int = 0
    rank: int = 0
    world_size: int = 1
    workers: int = 4
    prefetch: int = 2
    sources: dict[str, str] = field(default_factory=dict)
    skip_bad: bool = False
    num_classes: int | None = None
    batch_size: int | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    pca_lighting: PCALighting | bool | None = None
    mirror_at_test: bool = True
    check_shapes: bool = True
    pin_memory: bool = False


@dataclass(frozen=True)
class _Ctx:
    seed: int
    rank: int
    world: int
    skip_bad: bool
    num_classes: int | None
    check_shapes: bool


# ---------------------------------------------------------------------------------------------
# one source layer
# ---------------------------------------------------------------------------------------------


class _RecordFeed:
    """Batches of one record-reading source layer (Data, ImageData, HDF5Data, fed Input)."""

    def __init__(self, node: Node, source: RecordSource, batch: int, expected: list[tuple[int, ...] | None],
                 transformer: DataTransformer | None, label_tops: tuple[int, ...], rand_skip: int = 0):
        self.layer, self.type, self.tops = node.name, node.type, list(node.tops)
        self.source = source
        self.batch = int(batch)
        self.expected = expected
        self.transformer = transformer
        self.label_tops = label_tops
        self.salt = layer_salt(node.name)
        self.rand_skip = int(rand_skip)
        self._orders: dict[int, np.ndarray | None] = {}
        self._bad: dict[int, tuple[str, str]] = {}

    def _order(self, epoch: int, seed: int) -> np.ndarray | None:
        if epoch not in self._orders:
            if len(self._orders) > 2:
                self._orders.pop(min(self._orders))
            self._orders[epoch] = self.source.epoch_order(epoch, seed)
        return self._orders[epoch]

    def record_at(self, k: int, ctx: _Ctx) -> tuple[int, int]:
        """(epoch, record index) of this rank's ``k``-th record."""
        g = self.rand_skip + k * ctx.world + ctx.rank
        epoch, j = divmod(g, len(self.source))
        order = self._order(epoch, ctx.seed)
        return epoch, (j if order is None else int(order[j]))

    def _load(self, epoch: int, index: int, attempt: int, ctx: _Ctx) -> list[np.ndarray]:
        name = self.source.name_of(index)
        raw = self.source.read(index)
        out = []
        for i, (top, value) in enumerate(zip(self.tops, raw)):
            if i in self.label_tops:
                arr = np.asarray(value, dtype=np.float32)
                if arr.size == 1:
                    check_label(name, float(arr.reshape(())), ctx.num_classes)
            elif i == 0 and self.transformer is not None:
                rng = rng_for(ctx.seed, self.salt, epoch, index, attempt) if self.transformer.random else None
                arr = self.transformer(value, rng, name)
            else:
                arr = np.asarray(value, dtype=np.float32)
            want = self.expected[i]
            if ctx.check_shapes and want is not None and arr.shape != want:
                reshapable = arr.size == math.prod(want) and not (i == 0 and self.transformer is not None)
                if not reshapable:
                    what = "after the transform " if (i == 0 and self.transformer is not None) else ""
                    raise BadRecord(name, f"top '{top}' is {fmt_shape(arr.shape)} {what}but the net takes "
                                    f"{fmt_shape(want)} per item")
                arr = arr.reshape(want)
            out.append(arr)
        if len(out) < len(self.tops):
            raise ConvnetError(f"layer '{self.layer}': the source gives {len(out)} values per record "
                               f"for {len(self.tops)} tops")
        return out

    def make_batch(self, b: int, ctx: _Ctx) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
        columns: list[list[np.ndarray]] = [[] for _ in self.tops]
        skipped: list[tuple[str, str]] = []
        tries = min(len(self.source), MAX_TRIES)
        for slot in range(self.batch):
            k = b * self.batch + slot
            for attempt in range(tries + 1):
                if attempt == tries:
                    name, reason = skipped[-1]
                    raise ConvnetError(f"layer '{self.layer}': {tries} bad records in a row; the last, "
                                       f"{name}: {reason}")
                epoch, index = self.record_at(k + attempt * self.batch, ctx)
                try:
                    if index in self._bad:
                        raise BadRecord(*self._bad[index])
                    values = self._load(epoch, index, attempt, ctx)
                    break
                except BadRecord as e:
                    if not ctx.skip_bad:
                        raise ConvnetError(f"layer '{self.layer}': {e} (skip_bad skips such records)") from None
                    self._bad[index] = (e.record, e.reason)
                    skipped.append((e.record, e.reason))
            for col, v in zip(columns, values):
                col.append(v)
        return [np.stack(col) for col in columns], skipped


class _DummyFeed:
    """DummyData: fillers per top; constant ones are filled once, random ones every batch."""

    def __init__(self, node: Node, shapes: list[tuple[int, ...]], fillers: list[Filler]):
        from convnet_io.data.synthetic import dummy_blob

        self.layer, self.type, self.tops = node.name, node.type, list(node.tops)
        self.shapes, self.fillers = shapes, fillers
        self.salt = layer_salt(node.name)
        self.constant = [dummy_blob(f, s, np.random.default_rng(0)) if f.type == "constant" else None
                         for f, s in zip(fillers, shapes)]

    def make_batch(self, b: int, ctx: _Ctx) -> tuple[list[np.ndarray], list[tuple[str, str]]]:
        from convnet_io.data.synthetic import dummy_blob

        out = []
        for i, (f, s, c) in enumerate(zip(self.fillers, self.shapes, self.constant)):
            out.append(c if c is not None else dummy_blob(f, s, rng_for(ctx.seed, self.salt, ctx.rank, b, i)))
        return out, []


# ---------------------------------------------------------------------------------------------
# building the feeds of a graph
# ---------------------------------------------------------------------------------------------


def _decode_mode(attrs: Any) -> str:
    t = attrs.transform
    return "color" if t.force_color else "gray" if t.force_gray else "native"


def make_source(node_type: str, layer: str, attrs: Any, top_names: list[str],
                source: str | None = None) -> RecordSource:
    """The record source of a Data, ImageData or HDF5Data layer (``source`` overrides its path)."""
    path = source or attrs.source
    if not path:
        raise ConvnetError(f"layer '{layer}' ({node_type}): no source given")
    if node_type == "Data":
        from convnet_io.data.lmdb_source import LMDBSource

        return LMDBSource(path, layer=layer, decode=_decode_mode(attrs))
    if node_type == "ImageData":
        from convnet_io.data.image_list import ImageListSource

        return ImageListSource(path, attrs.root_folder, attrs.new_height, attrs.new_width,
                               attrs.is_color, attrs.shuffle, layer=layer)
    if node_type == "HDF5Data":
        from convnet_io.data.hdf5_source import HDF5Source

        return HDF5Source(path, top_names, shuffle=attrs.shuffle, layer=layer)
    raise ConvnetError(f"layer '{layer}': {node_type} layers cannot be fed by convnet's data feeder "
                       "(supported: Data, ImageData, HDF5Data, DummyData, Input)")


def _net_layer(net: Any, name: str) -> Any:
    for layer in getattr(net, "layer", ()):
        if layer.name == name:
            return layer
    return None


def _dummy_fillers_of(node: Node, graph: Graph, net: Any) -> tuple[list[Filler | None], bool]:
    """The DummyData fillers: from the node's attrs when it carries them, else from the net."""
    from convnet_io.graph.layers.common import filler

    own = getattr(node.attrs, "fillers", None)
    if own is not None:
        return list(own), True
    if net is None and graph.source_path and os.path.exists(graph.source_path):
        try:
            from convnet_io.caffe.prototxt import read_net_parameter

            net = read_net_parameter(graph.source_path)
        except ConvnetError:
            net = None
    layer = _net_layer(net, node.name) if net is not None else None
    if layer is None:
        return [], False
    return [filler(f) for f in layer.dummy_data_param.data_filler], True


def _rand_skip(node: Node, net: Any, seed: int) -> int:
    layer = _net_layer(net, node.name) if net is not None else None
    if layer is None:
        return 0
    param = layer.data_param if node.type == "Data" else layer.image_data_param if node.type == "ImageData" else None
    n = int(getattr(param, "rand_skip", 0) or 0) if param is not None else 0
    if n <= 0:
        return 0
    return int(rng_for(seed, layer_salt(node.name), 0x5C1B).integers(n))


def _pca(option: PCALighting | bool | None) -> PCALighting | None:
    if option is True:
        return PCALighting()
    return option or None
