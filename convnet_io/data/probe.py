"""Shapes from the data, before a graph exists: one record of each source layer read to learn its
tops' shapes."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from convnet_io.data.base import BadRecord
from convnet_io.data.feeds import make_source
from convnet_io.data.transform import DataTransformer
from convnet_io.errors import ConvnetError

# ---------------------------------------------------------------------------------------------
# shapes from the data, before a graph exists
# ---------------------------------------------------------------------------------------------


def probe_source_shapes(net: Any, phase: str = "TRAIN", sources: Mapping[str, str] | None = None,
                        stages: tuple[str, ...] = (), level: int | None = None,
                        batch_size: int | None = None) -> dict[str, tuple[int, ...]]:
    """Read the first record of each Data/ImageData/HDF5Data layer of ``net`` (an upgraded
    NetParameter) and return ``{top blob: shape}`` for ``build_graph(input_shapes=...)``: the
    shapes a layer will really produce (channels, transformed size), batch first."""
    from convnet_io.caffe.netstate import filter_layers, state_for
    from convnet_io.graph.layers import get_spec

    sources = dict(sources or {})
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in filter_layers(net, state_for(net, phase, level, tuple(stages))):
        spec = get_spec(layer.type)
        if spec is None or not spec.source or layer.type not in ("Data", "ImageData", "HDF5Data"):
            continue
        attrs = spec.attrs(layer)
        tops = list(layer.top)
        src = make_source(layer.type, layer.name, attrs, tops, sources.get(layer.name))
        try:
            batch = int(batch_size or attrs.batch_size or 1)
            first = None
            last: BadRecord | None = None
            for i in range(min(len(src), 16)):
                try:
                    first = src.read(i)
                    break
                except BadRecord as e:
                    last = e
            if first is None:
                raise ConvnetError(f"layer '{layer.name}': cannot read a record to learn the shapes: {last}")
            if layer.type == "HDF5Data":
                for t, v in zip(tops, first):
                    shapes[t] = (batch, *np.shape(v))
            else:
                shapes[tops[0]] = (batch, *DataTransformer(attrs.transform, phase, layer=layer.name,
                                                           mean=np.zeros(1)).output_shape(np.shape(first[0])))
                for t in tops[1:]:
                    shapes[t] = (batch,)
        finally:
            src.close()
    return shapes
