"""Element-wise layers (neurons): the top has the bottom's shape; all may run in place."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import filler
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Filler


class Elementwise(LayerSpec):
    in_place_ok = True


@dataclass(frozen=True)
class ReLUAttrs:
    negative_slope: float = 0.0


@register("ReLU")
class ReLU(Elementwise):
    @classmethod
    def attrs(cls, layer):
        return ReLUAttrs(float(layer.relu_param.negative_slope))


@dataclass(frozen=True)
class PReLUAttrs:
    channel_shared: bool = False
    filler: Filler | None = None


@register("PReLU")
class PReLU(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.prelu_param
        return PReLUAttrs(bool(p.channel_shared), filler(p.filler, p.HasField("filler")))

    @classmethod
    def param_shapes(cls, a, bottoms):
        if len(bottoms[0]) < 2:
            raise ValueError("PReLU needs a bottom with a channel axis")
        return [(1,) if a.channel_shared else (bottoms[0][1],)]

    @classmethod
    def fillers(cls, a):
        # Caffe's default PReLU filler is constant 0.25.
        return [a.filler or Filler(type="constant", value=0.25)]


@dataclass(frozen=True)
class ELUAttrs:
    alpha: float = 1.0


@register("ELU")
class ELU(Elementwise):
    @classmethod
    def attrs(cls, layer):
        return ELUAttrs(float(layer.elu_param.alpha))


@register("Sigmoid")
class Sigmoid(Elementwise):
    pass


@register("TanH")
class TanH(Elementwise):
    pass


@register("AbsVal")
class AbsVal(Elementwise):
    pass


@register("BNLL")
class BNLL(Elementwise):
    pass


@dataclass(frozen=True)
class PowerAttrs:
    """y = (shift + scale * x) ^ power; Exp and Log use the same three numbers with their base."""

    power: float = 1.0
    scale: float = 1.0
    shift: float = 0.0


@register("Power")
class Power(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.power_param
        return PowerAttrs(float(p.power), float(p.scale), float(p.shift))


@dataclass(frozen=True)
class ExpLogAttrs:
    """Exp: y = base ^ (shift + scale * x); Log: y = log_base(shift + scale * x). base -1 means e."""

    base: float = -1.0
    scale: float = 1.0
    shift: float = 0.0


@register("Exp")
class Exp(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.exp_param
        if p.base != -1 and p.base <= 0:
            raise ValueError("base must be strictly positive (or -1 for e)")
        return ExpLogAttrs(float(p.base), float(p.scale), float(p.shift))


@register("Log")
class Log(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.log_param
        if p.base != -1 and p.base <= 0:
            raise ValueError("base must be strictly positive (or -1 for e)")
        return ExpLogAttrs(float(p.base), float(p.scale), float(p.shift))


@dataclass(frozen=True)
class ThresholdAttrs:
    threshold: float = 0.0


@register("Threshold")
class Threshold(Elementwise):
    @classmethod
    def attrs(cls, layer):
        return ThresholdAttrs(float(layer.threshold_param.threshold))


@dataclass(frozen=True)
class ClipAttrs:
    min: float
    max: float


@register("Clip")
class Clip(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.clip_param
        if not (p.HasField("min") and p.HasField("max")):
            raise ValueError("clip_param needs both min and max")
        return ClipAttrs(float(p.min), float(p.max))


@dataclass(frozen=True)
class SwishAttrs:
    beta: float = 1.0


@register("Swish")
class Swish(Elementwise):
    @classmethod
    def attrs(cls, layer):
        return SwishAttrs(float(layer.swish_param.beta))


@dataclass(frozen=True)
class DropoutAttrs:
    ratio: float = 0.5
    scale_train: bool = True


@register("Dropout")
class Dropout(Elementwise):
    @classmethod
    def attrs(cls, layer):
        p = layer.dropout_param
        if not 0.0 <= p.dropout_ratio < 1.0:
            raise ValueError(f"dropout_ratio {p.dropout_ratio} must be in [0, 1)")
        scale_train = p.scale_train if hasattr(p, "scale_train") else True
        return DropoutAttrs(float(p.dropout_ratio), bool(scale_train))
