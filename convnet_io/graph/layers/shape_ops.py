"""Layers that move, join, split or reduce blobs: Concat, Slice, Split, Flatten, Reshape, Crop,
Tile, Reduction, ArgMax, Eltwise, Softmax, Silence, Parameter."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import canonical_axis, count, enum_name
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Filler, Shape


@dataclass(frozen=True)
class AxisAttrs:
    axis: int = 1


@register("Concat")
class Concat(LayerSpec):
    max_bottoms = None

    @classmethod
    def attrs(cls, layer):
        p = layer.concat_param
        return AxisAttrs(int(p.concat_dim) if p.HasField("concat_dim") else int(p.axis))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        first = bottoms[0]
        axis = canonical_axis(a.axis, len(first))
        total = 0
        for b in bottoms:
            if len(b) != len(first) or any(b[i] != first[i] for i in range(len(b)) if i != axis):
                raise ValueError(f"bottoms {[list(x) for x in bottoms]} differ outside the concat axis {axis}")
            total += b[axis]
        return [(*first[:axis], total, *first[axis + 1:])]


@dataclass(frozen=True)
class SliceAttrs:
    axis: int = 1
    slice_points: tuple[int, ...] = ()


@register("Slice")
class Slice(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.slice_param
        axis = int(p.slice_dim) if p.HasField("slice_dim") else int(p.axis)
        return SliceAttrs(axis, tuple(int(x) for x in p.slice_point))

    @classmethod
    def sizes(cls, a: SliceAttrs, bottom: Shape, num_tops: int) -> list[int]:
        dim = bottom[canonical_axis(a.axis, len(bottom))]
        if a.slice_points:
            if len(a.slice_points) != num_tops - 1:
                raise ValueError(f"{len(a.slice_points)} slice points for {num_tops} tops")
            edges = [0, *a.slice_points, dim]
            sizes = [edges[i + 1] - edges[i] for i in range(num_tops)]
            if any(s <= 0 for s in sizes):
                raise ValueError(f"slice points {list(a.slice_points)} do not increase within {dim}")
            return sizes
        if dim % num_tops:
            raise ValueError(f"axis size {dim} cannot be sliced into {num_tops} equal parts")
        return [dim // num_tops] * num_tops

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        axis = canonical_axis(a.axis, len(b))
        return [(*b[:axis], s, *b[axis + 1:]) for s in cls.sizes(a, b, num_tops)]


@register("Split")
class Split(LayerSpec):
    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        return [bottoms[0]] * num_tops


@dataclass(frozen=True)
class FlattenAttrs:
    axis: int = 1
    end_axis: int = -1


@register("Flatten")
class Flatten(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.flatten_param
        return FlattenAttrs(int(p.axis), int(p.end_axis))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        start = canonical_axis(a.axis, len(b))
        end = canonical_axis(a.end_axis, len(b))
        return [(*b[:start], count(b, start, end + 1), *b[end + 1:])]


@dataclass(frozen=True)
class ReshapeAttrs:
    shape: tuple[int, ...]
    axis: int = 0
    num_axes: int = -1


@register("Reshape")
class Reshape(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.reshape_param
        return ReshapeAttrs(tuple(int(d) for d in p.shape.dim), int(p.axis), int(p.num_axes))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        # Caffe allows axis == num_axes here (insert at the end).
        start = a.axis + len(b) + 1 if a.axis < 0 else a.axis
        if not 0 <= start <= len(b):
            raise ValueError(f"axis {a.axis} is out of range for a {len(b)}-D blob")
        end = len(b) if a.num_axes == -1 else start + a.num_axes
        if end > len(b):
            raise ValueError(f"axis {a.axis} + num_axes {a.num_axes} exceeds {len(b)} axes")
        middle: list[int] = []
        infer = None
        for i, d in enumerate(a.shape):
            if d == 0:
                if start + i >= len(b):
                    raise ValueError(f"dim {i} copies axis {start + i}, which the bottom lacks")
                middle.append(b[start + i])
            elif d == -1:
                if infer is not None:
                    raise ValueError("at most one dim may be -1")
                infer = i
                middle.append(1)
            elif d > 0:
                middle.append(d)
            else:
                raise ValueError(f"dim {d} is invalid")
        top = [*b[:start], *middle, *b[end:]]
        if infer is not None:
            known = count(tuple(top))
            if known == 0 or count(b) % known:
                raise ValueError(f"cannot infer dim {infer}: {count(b)} elements into {top}")
            top[start + infer] = count(b) // known
        if count(tuple(top)) != count(b):
            raise ValueError(f"reshape of {list(b)} to {top} changes the element count")
        return [tuple(top)]


@dataclass(frozen=True)
class CropAttrs:
    axis: int = 2
    offsets: tuple[int, ...] = ()


@register("Crop")
class Crop(LayerSpec):
    min_bottoms = max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = layer.crop_param
        return CropAttrs(int(p.axis), tuple(int(o) for o in p.offset))

    @classmethod
    def offsets(cls, a: CropAttrs, bottom: Shape, reference: Shape) -> list[int]:
        start = canonical_axis(a.axis, len(bottom))
        n = len(bottom) - start
        if len(a.offsets) not in (0, 1, n):
            raise ValueError(f"{len(a.offsets)} offsets given for {n} cropped axes")
        offs = [0] * len(bottom)
        for i in range(start, len(bottom)):
            o = a.offsets[0] if len(a.offsets) == 1 else (a.offsets[i - start] if a.offsets else 0)
            if bottom[i] - o < reference[i]:
                raise ValueError(f"axis {i}: offset {o} + size {reference[i]} exceeds {bottom[i]}")
            offs[i] = o
        return offs

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b, ref = bottoms
        if len(b) != len(ref):
            raise ValueError(f"bottoms {list(b)} and {list(ref)} differ in rank")
        cls.offsets(a, b, ref)
        start = canonical_axis(a.axis, len(b))
        return [(*b[:start], *ref[start:])]


@dataclass(frozen=True)
class TileAttrs:
    axis: int = 1
    tiles: int = 1


@register("Tile")
class Tile(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.tile_param
        if p.tiles <= 0:
            raise ValueError("tiles must be positive")
        return TileAttrs(int(p.axis), int(p.tiles))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = list(bottoms[0])
        axis = canonical_axis(a.axis, len(b))
        b[axis] *= a.tiles
        return [tuple(b)]


@dataclass(frozen=True)
class ReductionAttrs:
    operation: str = "SUM"  # SUM, ASUM, SUMSQ, MEAN
    axis: int = 0
    coeff: float = 1.0


@register("Reduction")
class Reduction(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.reduction_param
        op = enum_name(p, "operation")
        return ReductionAttrs(op, int(p.axis), float(p.coeff))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        return [tuple(b[:canonical_axis(a.axis, len(b))])]


@dataclass(frozen=True)
class ArgMaxAttrs:
    out_max_val: bool = False
    top_k: int = 1
    axis: int | None = None


@register("ArgMax")
class ArgMax(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.argmax_param
        if p.top_k < 1:
            raise ValueError("top_k must be at least 1")
        return ArgMaxAttrs(bool(p.out_max_val), int(p.top_k), int(p.axis) if p.HasField("axis") else None)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        if a.axis is not None:
            axis = canonical_axis(a.axis, len(b))
            if a.top_k > b[axis]:
                raise ValueError(f"top_k {a.top_k} exceeds axis size {b[axis]}")
            return [(*b[:axis], a.top_k, *b[axis + 1:])]
        if a.top_k > count(b, 1):
            raise ValueError(f"top_k {a.top_k} exceeds {count(b, 1)} values per item")
        shape = [1] * max(len(b), 3)
        shape[0], shape[2] = b[0], a.top_k
        if a.out_max_val:
            shape[1] = 2
        return [tuple(shape)]


@dataclass(frozen=True)
class EltwiseAttrs:
    operation: str = "SUM"  # PROD, SUM, MAX
    coeffs: tuple[float, ...] = ()


@register("Eltwise")
class Eltwise(LayerSpec):
    min_bottoms = 2
    max_bottoms = None

    @classmethod
    def attrs(cls, layer):
        p = layer.eltwise_param
        op = enum_name(p, "operation")
        if p.coeff and op == "PROD":
            raise ValueError("coeff is not allowed with operation PROD")
        n = len(layer.bottom)
        if p.coeff and len(p.coeff) != n:
            raise ValueError(f"{len(p.coeff)} coeffs for {n} bottoms")
        # Caffe accepts coeff with MAX and ignores it.
        return EltwiseAttrs(op, tuple(float(c) for c in p.coeff) if op == "SUM" else ())

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        for b in bottoms[1:]:
            if tuple(b) != tuple(bottoms[0]):
                raise ValueError(f"bottom shapes differ: {[list(x) for x in bottoms]}")
        return [bottoms[0]]


@register("Softmax")
class Softmax(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        return AxisAttrs(int(layer.softmax_param.axis))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        canonical_axis(a.axis, len(bottoms[0]))
        return [bottoms[0]]


@register("Silence")
class Silence(LayerSpec):
    max_bottoms = None
    min_tops = 0

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        return []


@dataclass(frozen=True)
class ParameterAttrs:
    shape: tuple[int, ...]


@register("Parameter")
class Parameter(LayerSpec):
    min_bottoms = max_bottoms = 0

    @classmethod
    def attrs(cls, layer):
        return ParameterAttrs(tuple(int(d) for d in layer.parameter_param.shape.dim))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        return [a.shape]

    @classmethod
    def param_shapes(cls, a, bottoms):
        return [a.shape]

    @classmethod
    def fillers(cls, a):
        return [Filler(type="constant", value=0.0)]
