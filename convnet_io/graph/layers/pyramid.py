"""SPP (spatial pyramid pooling) and the row layers BatchReindex, Filter and HDF5Output, with the
shape rules of Caffe's ``spp_layer.cpp``, ``batch_reindex_layer.cpp``, ``filter_layer.cpp`` and
``hdf5_output_layer.cpp``."""
from __future__ import annotations

import math
from dataclasses import dataclass

from convnet_io.graph.layers.common import count, enum_name
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.layers.vision import Pooling, PoolingAttrs
from convnet_io.graph.types import Shape


@dataclass(frozen=True)
class SPPAttrs:
    pyramid_height: int
    method: str = "MAX"


def spp_level(a: SPPAttrs, level: int, height: int, width: int) -> PoolingAttrs:
    """SPPLayer::GetPoolingParam: 2^level bins per side; the kernel is the ceiling of size / bins,
    the stride the kernel, and the pad half the shortfall (rounded up)."""
    bins = 2 ** level
    kernel, pad = [], []
    for size in (height, width):
        k = math.ceil(size / bins)
        kernel.append(k)
        pad.append((k * bins - size + 1) // 2)
    return PoolingAttrs(method=a.method, kernel=tuple(kernel), stride=tuple(kernel), pad=tuple(pad),
                        global_pooling=False, round_mode="CEIL")


def spp_levels(a: SPPAttrs, bottom: Shape) -> list[tuple[PoolingAttrs, Shape]]:
    """Each level's pooling and its output shape, by Pooling's own shape rule and checks."""
    if len(bottom) != 4:
        raise ValueError(f"expects a 4-D (N,C,H,W) bottom, got shape {list(bottom)}")
    out = []
    for level in range(a.pyramid_height):
        p = spp_level(a, level, bottom[2], bottom[3])
        try:
            out.append((p, Pooling.top_shapes(p, [bottom], 1)[0]))
        except ValueError as e:
            raise ValueError(f"pyramid level {level} (kernel {list(p.kernel)}, pad {list(p.pad)}): {e}") from None
    return out


@register("SPP")
class SPP(LayerSpec):
    """One level: that pooling's (N, C, h, w) top; more: every level flattened, concatenated."""

    @classmethod
    def attrs(cls, layer):
        p = layer.spp_param
        if p.pyramid_height <= 0:
            raise ValueError("pyramid_height must be positive")
        return SPPAttrs(int(p.pyramid_height), enum_name(p, "pool"))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        if min(b[2:] or (0,)) <= 0:
            raise ValueError("input dimensions cannot be zero")
        levels = spp_levels(a, b)
        if a.pyramid_height == 1:
            return [levels[0][1]]
        return [(b[0], sum(count(s, 1) for _, s in levels))]

    @classmethod
    def macs(cls, a, bottoms, tops):
        return count(bottoms[0]) * a.pyramid_height


@register("BatchReindex")
class BatchReindex(LayerSpec):
    """top[i] = bottom[permut[i]] along the first axis; permut is a 1-D blob of row indices."""

    min_bottoms = max_bottoms = 2

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        data, permut = bottoms
        if len(permut) != 1:
            raise ValueError(f"the index bottom must be 1-D, got shape {list(permut)}")
        return [(permut[0], *data[1:])]


@register("Filter")
class Filter(LayerSpec):
    """The rows of each bottom whose selector (the last bottom) is non-zero. The number of rows is
    data-dependent; the graph holds Caffe's set-up shape (every row), each run has the true count."""

    min_bottoms, max_bottoms = 2, None
    data_dependent_rows = True

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        selector = bottoms[-1]
        if num_tops != len(bottoms) - 1:
            raise ValueError(f"needs one top per filtered bottom: {len(bottoms) - 1}, got {num_tops}")
        if any(d != 1 for d in selector[1:]):
            raise ValueError("selector blob dimensions must be singletons (1), except the first")
        for b in bottoms[:-1]:
            if b[0] != selector[0]:
                raise ValueError("each bottom should have the same 0th dimension as the selector blob")
        return [tuple(b) for b in bottoms[:-1]]


@dataclass(frozen=True)
class HDF5OutputAttrs:
    file_name: str


@register("HDF5Output")
class HDF5Output(LayerSpec):
    """Writes bottom 0 as dataset ``data`` and bottom 1 as ``label`` into ``file_name``; no top."""

    min_bottoms = max_bottoms = 2
    min_tops = 0

    @classmethod
    def attrs(cls, layer):
        return HDF5OutputAttrs(layer.hdf5_output_param.file_name)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if num_tops:
            raise ValueError(f"writes a file and has no top, got {num_tops}")
        if bottoms[0][:1] != bottoms[1][:1]:
            raise ValueError(f"data and label differ in their first axis: {list(bottoms[0])}, {list(bottoms[1])}")
        return []
