"""LRN, BatchNorm, Scale, Bias and MVN."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.activation import Elementwise
from convnet_io.graph.layers.common import canonical_axis, enum_name, filler
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Filler, Shape


@dataclass(frozen=True)
class LRNAttrs:
    local_size: int = 5
    alpha: float = 1.0
    beta: float = 0.75
    k: float = 1.0
    norm_region: str = "ACROSS_CHANNELS"  # or WITHIN_CHANNEL


@register("LRN")
class LRN(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.lrn_param
        if p.local_size % 2 == 0:
            raise ValueError(f"local_size {p.local_size} must be odd")
        region = enum_name(p, "norm_region")
        return LRNAttrs(int(p.local_size), float(p.alpha), float(p.beta), float(p.k), region)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if len(bottoms[0]) != 4:
            raise ValueError(f"expects a 4-D (N,C,H,W) bottom, got shape {list(bottoms[0])}")
        return [bottoms[0]]


@dataclass(frozen=True)
class BatchNormAttrs:
    use_global_stats: bool | None = None  # None: Caffe decides by phase (TEST uses global stats)
    moving_average_fraction: float = 0.999
    eps: float = 1e-5


@register("BatchNorm")
class BatchNorm(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.batch_norm_param
        ugs = bool(p.use_global_stats) if p.HasField("use_global_stats") else None
        return BatchNormAttrs(ugs, float(p.moving_average_fraction), float(p.eps))

    @classmethod
    def param_shapes(cls, a, bottoms):
        c = bottoms[0][1] if len(bottoms[0]) > 1 else 1
        return [(c,), (c,), (1,)]

    @classmethod
    def fillers(cls, a):
        zero = Filler(type="constant", value=0.0)
        return [zero, zero, zero]


@dataclass(frozen=True)
class ScaleAttrs:
    axis: int = 1
    num_axes: int = 1
    bias_term: bool = False
    filler: Filler | None = None
    bias_filler: Filler | None = None
    operand_bottom: bool = False  # the scale comes from a second bottom, not a learnable blob


def _scale_shape(axis: int, num_axes: int, bottom: Shape) -> Shape:
    axis = canonical_axis(axis, len(bottom)) if bottom else 0
    if num_axes < -1:
        raise ValueError("num_axes must be non-negative, or -1 to extend to the end")
    end = len(bottom) if num_axes == -1 else axis + num_axes
    if end > len(bottom):
        raise ValueError(f"axis {axis} + num_axes {num_axes} exceeds the bottom's {len(bottom)} axes")
    return tuple(bottom[axis:end])


def _operand_shape(axis: int, second: Shape, bottom: Shape) -> None:
    """Caffe's rule for a second bottom: its shape matches the bottom's from ``axis`` on."""
    axis = canonical_axis(axis, len(bottom)) if second else axis
    if tuple(bottom[axis:axis + len(second)]) != tuple(second):
        raise ValueError(f"second bottom {list(second)} does not match bottom {list(bottom)} at axis {axis}")


@register("Scale")
class Scale(Elementwise):
    max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = layer.scale_param
        return ScaleAttrs(int(p.axis), int(p.num_axes), bool(p.bias_term),
                          filler(p.filler, p.HasField("filler")),
                          filler(p.bias_filler, p.HasField("bias_filler")), len(layer.bottom) == 2)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if len(bottoms) == 2:
            _operand_shape(a.axis, bottoms[1], bottoms[0])
        else:
            _scale_shape(a.axis, a.num_axes, bottoms[0])
        return [bottoms[0]]

    @classmethod
    def param_shapes(cls, a, bottoms):
        if len(bottoms) == 2:
            shape = tuple(bottoms[1])
            return [shape] if a.bias_term else []
        shape = _scale_shape(a.axis, a.num_axes, bottoms[0])
        return [shape, shape] if a.bias_term else [shape]

    @classmethod
    def fillers(cls, a):
        one = Filler(type="constant", value=1.0)
        zero = Filler(type="constant", value=0.0)
        if a.operand_bottom:
            return [a.bias_filler or zero]
        return [a.filler or one, a.bias_filler or zero]


@dataclass(frozen=True)
class BiasAttrs:
    axis: int = 1
    num_axes: int = 1
    filler: Filler | None = None


@register("Bias")
class Bias(Elementwise):
    max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = layer.bias_param
        return BiasAttrs(int(p.axis), int(p.num_axes), filler(p.filler, p.HasField("filler")))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if len(bottoms) == 2:
            _operand_shape(a.axis, bottoms[1], bottoms[0])
        else:
            _scale_shape(a.axis, a.num_axes, bottoms[0])
        return [bottoms[0]]

    @classmethod
    def param_shapes(cls, a, bottoms):
        if len(bottoms) == 2:
            return []
        return [_scale_shape(a.axis, a.num_axes, bottoms[0])]

    @classmethod
    def fillers(cls, a):
        return [a.filler or Filler(type="constant", value=0.0)]


@dataclass(frozen=True)
class MVNAttrs:
    normalize_variance: bool = True
    across_channels: bool = False
    eps: float = 1e-9


@register("MVN")
class MVN(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.mvn_param
        return MVNAttrs(bool(p.normalize_variance), bool(p.across_channels), float(p.eps))
