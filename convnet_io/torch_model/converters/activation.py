"""Element-wise (neuron) layers with Caffe's exact formulas.

Every module here returns a new tensor and never writes into its bottom, so an in-place layer in a
prototxt (top == bottom) leaves the value it overwrote intact under its own value id.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


class ReLU(CaffeLayer):
    """y = max(x, 0) + negative_slope * min(x, 0)."""

    def __init__(self, negative_slope: float = 0.0):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        if self.negative_slope == 0:
            return torch.relu(x)
        return x.clamp(min=0) + self.negative_slope * x.clamp(max=0)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


@converter("ReLU")
def convert_relu(node: Node, graph: Graph) -> nn.Module:
    return ReLU(node.attrs.negative_slope)


class PReLU(CaffeLayer):
    """y = max(x, 0) + slope[c] * min(x, 0), c indexing axis 1; one shared slope if channel_shared.

    The Caffe blob is ``slope``: shape (C,), or (1,) when channel_shared.
    """

    def __init__(self, channels: int, channel_shared: bool):
        super().__init__()
        self.channel_shared = channel_shared
        self.slope = nn.Parameter(torch.zeros(1 if channel_shared else channels, dtype=torch.float32))

    def forward(self, x):
        if x.dim() < 2:
            raise ValueError("PReLU needs a bottom with a channel axis")
        if self.channel_shared:
            slope = self.slope.reshape([1] * x.dim())
        else:
            slope = self.slope.reshape([1, -1] + [1] * (x.dim() - 2))
        return x.clamp(min=0) + slope * x.clamp(max=0)

    def caffe_blobs(self):
        return [self.slope]

    def extra_repr(self):
        if self.channel_shared:
            return "channel_shared=True"
        return f"channels={self.slope.numel()}"


@converter("PReLU")
def convert_prelu(node: Node, graph: Graph) -> nn.Module:
    shape = node.params[0].shape
    return PReLU(shape[0], node.attrs.channel_shared)


class ELU(CaffeLayer):
    """y = max(x, 0) + alpha * (exp(min(x, 0)) - 1)."""

    def __init__(self, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return x.clamp(min=0) + self.alpha * (torch.exp(x.clamp(max=0)) - 1)

    def extra_repr(self):
        return f"alpha={self.alpha}"


@converter("ELU")
def convert_elu(node: Node, graph: Graph) -> nn.Module:
    return ELU(node.attrs.alpha)


class Sigmoid(CaffeLayer):
    """y = 1 / (1 + exp(-x))."""

    def forward(self, x):
        return torch.sigmoid(x)


class TanH(CaffeLayer):
    """y = tanh(x)."""

    def forward(self, x):
        return torch.tanh(x)


class AbsVal(CaffeLayer):
    """y = |x|."""

    def forward(self, x):
        return torch.abs(x)


class BNLL(CaffeLayer):
    """Caffe's stable softplus: x > 0 ? x + log(1 + exp(-x)) : log(1 + exp(x))."""

    def forward(self, x):
        return x.clamp(min=0) + torch.log1p(torch.exp(-torch.abs(x)))


_PLAIN = {"Sigmoid": Sigmoid, "TanH": TanH, "AbsVal": AbsVal, "BNLL": BNLL}


@converter(*_PLAIN)
def convert_plain(node: Node, graph: Graph) -> nn.Module:
    return _PLAIN[node.type]()


class Power(CaffeLayer):
    """y = (shift + scale * x) ^ power.

    As in Caffe, when power * scale == 0 the output is the constant 1 (power 0) or shift ^ power
    (scale 0), whatever x holds.
    """

    def __init__(self, power: float = 1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.power, self.scale, self.shift = power, scale, shift

    def forward(self, x):
        if self.power * self.scale == 0:
            value = 1.0 if self.power == 0 else float(torch.tensor(self.shift, dtype=torch.float64) ** self.power)
            return torch.full_like(x, value)
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        if self.power != 1:
            y = torch.pow(y, self.power)
        return y

    def extra_repr(self):
        return f"power={self.power}, scale={self.scale}, shift={self.shift}"


@converter("Power")
def convert_power(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return Power(a.power, a.scale, a.shift)


def _log_base(base: float) -> float:
    """ln(base); Caffe's base -1 means e."""
    return 1.0 if base == -1 else math.log(base)


class Exp(CaffeLayer):
    """y = base ^ (shift + scale * x) (base -1 means e), computed as Caffe does:
    outer * exp(inner * x) with inner = ln(base) * scale and outer = base ^ shift."""

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.base, self.scale, self.shift = base, scale, shift
        self.inner_scale = _log_base(base) * scale
        if shift == 0:
            self.outer_scale = 1.0
        else:
            self.outer_scale = math.exp(shift) if base == -1 else math.pow(base, shift)

    def forward(self, x):
        y = x * self.inner_scale if self.inner_scale != 1 else x
        y = torch.exp(y)
        return y * self.outer_scale if self.outer_scale != 1 else y

    def extra_repr(self):
        base = "e" if self.base == -1 else self.base
        return f"base={base}, scale={self.scale}, shift={self.shift}"


@converter("Exp")
def convert_exp(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return Exp(a.base, a.scale, a.shift)


class Log(CaffeLayer):
    """y = log_base(shift + scale * x) (base -1 means e), as Caffe: ln(shift + scale * x) / ln(base)."""

    def __init__(self, base: float = -1.0, scale: float = 1.0, shift: float = 0.0):
        super().__init__()
        self.base, self.scale, self.shift = base, scale, shift
        self.base_scale = 1.0 if base == -1 else 1.0 / math.log(base)

    def forward(self, x):
        y = x
        if self.scale != 1:
            y = y * self.scale
        if self.shift != 0:
            y = y + self.shift
        y = torch.log(y)
        return y * self.base_scale if self.base_scale != 1 else y

    def extra_repr(self):
        base = "e" if self.base == -1 else self.base
        return f"base={base}, scale={self.scale}, shift={self.shift}"


@converter("Log")
def convert_log(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return Log(a.base, a.scale, a.shift)


class Threshold(CaffeLayer):
    """y = 1 if x > threshold else 0."""

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = threshold

    def forward(self, x):
        return (x > self.threshold).to(x.dtype)

    def extra_repr(self):
        return f"threshold={self.threshold}"


@converter("Threshold")
def convert_threshold(node: Node, graph: Graph) -> nn.Module:
    return Threshold(node.attrs.threshold)


class Clip(CaffeLayer):
    """y = max(min, min(x, max)), with std::min/std::max's comparisons (a NaN input gives ``min``)."""

    def __init__(self, min: float, max: float):  # noqa: A002  (Caffe's names)
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x):
        upper = torch.where(x > self.max, self.max, x)  # std::min(x, max)
        return torch.where(upper > self.min, upper, self.min)  # std::max(min, upper)

    def extra_repr(self):
        return f"min={self.min}, max={self.max}"


@converter("Clip")
def convert_clip(node: Node, graph: Graph) -> nn.Module:
    return Clip(node.attrs.min, node.attrs.max)


class Swish(CaffeLayer):
    """y = x * sigmoid(beta * x)."""

    def __init__(self, beta: float = 1.0):
        super().__init__()
        self.beta = beta

    def forward(self, x):
        return x * torch.sigmoid(x * self.beta if self.beta != 1 else x)

    def extra_repr(self):
        return f"beta={self.beta}"


@converter("Swish")
def convert_swish(node: Node, graph: Graph) -> nn.Module:
    return Swish(node.attrs.beta)


class Dropout(CaffeLayer):
    """Caffe dropout. Training: keep each element with probability 1 - ratio and multiply the kept
    ones by 1 / (1 - ratio) (scale_train) or by 1 (not scale_train). Eval: identity (scale_train) or
    multiply by 1 - ratio (not scale_train)."""

    def __init__(self, ratio: float = 0.5, scale_train: bool = True):
        super().__init__()
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"dropout_ratio {ratio} must be in [0, 1)")
        self.ratio, self.scale_train = ratio, scale_train
        self.scale = 1.0 / (1.0 - ratio)

    def forward(self, x):
        if self.training:
            mask = torch.empty_like(x).bernoulli_(1.0 - self.ratio)
            y = x * mask
            return y * self.scale if self.scale_train else y
        if self.scale_train:
            return x
        return x * (1.0 - self.ratio)

    def extra_repr(self):
        return f"ratio={self.ratio}, scale_train={self.scale_train}"


@converter("Dropout")
def convert_dropout(node: Node, graph: Graph) -> nn.Module:
    return Dropout(node.attrs.ratio, node.attrs.scale_train)
