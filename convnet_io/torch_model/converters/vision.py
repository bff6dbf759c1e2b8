"""Convolution, Deconvolution, InnerProduct, Pooling and LRN with Caffe's exact numerics."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.common import canonical_axis, count
from convnet_io.graph.layers.vision import Pooling as PoolingSpec
from convnet_io.graph.layers.vision import convolution_tail
from convnet_io.graph.layers.conv_nd import is_nd
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.converters.conv_nd import convert_convolution_nd
from convnet_io.torch_model.converters.lrn_across import LRNAcrossChannels
from convnet_io.torch_model.registry import converter


def _blob(shape) -> nn.Parameter:
    return nn.Parameter(torch.zeros(*shape, dtype=torch.float32))


class Convolution(CaffeLayer):
    transposed = False

    def __init__(self, attrs, weight_shape, bias_shape, tail=(0, 0)):
        super().__init__()
        self.stride, self.padding, self.dilation, self.groups = attrs.stride, attrs.pad, attrs.dilation, attrs.group
        self.weight = _blob(weight_shape)
        self.bias = _blob(bias_shape) if bias_shape is not None else None
        # Zeros Caffe's im2col reads past the bottom/right pad when the kernel overhangs the input.
        self.tail = tuple(tail)

    def forward(self, *bottoms):
        fn = F.conv_transpose2d if self.transposed else F.conv2d
        kw = dict(stride=self.stride, padding=self.padding, dilation=self.dilation, groups=self.groups)
        if any(self.tail):
            bottoms = tuple(F.pad(x, (0, self.tail[1], 0, self.tail[0])) for x in bottoms)
        outs = tuple(fn(x, self.weight, self.bias, **kw) for x in bottoms)
        return outs[0] if len(outs) == 1 else outs

    def caffe_blobs(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def extra_repr(self):
        w = self.weight.shape
        return (f"{w[1] * self.groups if not self.transposed else w[0]}, "
                f"{w[0] if not self.transposed else w[1] * self.groups}, kernel_size={tuple(w[2:])}, "
                f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
                f"groups={self.groups}, bias={self.bias is not None}")


class Deconvolution(Convolution):
    transposed = True


@converter("Convolution", "Deconvolution")
def convert_convolution(node: Node, graph: Graph) -> nn.Module:
    if is_nd(node.attrs.spatial, graph.shapes[node.bottoms[0]]):
        return convert_convolution_nd(node, graph)
    shapes = [p.shape for p in node.params]
    if node.type == "Deconvolution":
        return Deconvolution(node.attrs, shapes[0], shapes[1] if len(shapes) > 1 else None)
    return Convolution(node.attrs, shapes[0], shapes[1] if len(shapes) > 1 else None,
                       convolution_tail(node.attrs, graph.shapes[node.bottoms[0]], graph.shapes[node.tops[0]]))


class InnerProduct(CaffeLayer):
    def __init__(self, attrs, weight_shape, bias_shape, axis: int):
        super().__init__()
        self.axis, self.transpose = axis, attrs.transpose
        self.weight = _blob(weight_shape)
        self.bias = _blob(bias_shape) if bias_shape is not None else None

    def forward(self, x):
        lead = x.shape[:self.axis]
        x2 = x.reshape(count(tuple(lead)), -1)
        w = self.weight if self.transpose else self.weight.t()
        y = x2 @ w
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, y.shape[-1])

    def caffe_blobs(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def extra_repr(self):
        return f"weight={tuple(self.weight.shape)}, axis={self.axis}, transpose={self.transpose}, bias={self.bias is not None}"


@converter("InnerProduct")
def convert_inner_product(node: Node, graph: Graph) -> nn.Module:
    shapes = [p.shape for p in node.params]
    axis = canonical_axis(node.attrs.axis, len(graph.shapes[node.bottoms[0]]))
    return InnerProduct(node.attrs, shapes[0], shapes[1] if len(shapes) > 1 else None, axis)


class Pooling(CaffeLayer):
    """Caffe pooling: output size from Caffe's rule; the input is padded (or cropped) to exactly the
    extent the windows cover, so every window, divisor and overhang matches Caffe's loops."""

    def __init__(self, attrs, in_hw: tuple[int, int], out_hw: tuple[int, int], mask: bool = False):
        super().__init__()
        self.method = attrs.method
        self.mask = mask  # MAX only: also return Caffe's argmax mask top
        self.kernel, self.stride, self.pad = attrs.kernel, attrs.stride, attrs.pad
        self.in_hw, self.out_hw = in_hw, out_hw
        if self.method not in ("MAX", "AVE", "STOCHASTIC"):
            raise ValueError(f"pooling method {self.method} is not supported")
        # Right/bottom padding that makes the padded extent exactly (out-1)*stride + kernel.
        self.extra = tuple((out_hw[i] - 1) * self.stride[i] + self.kernel[i] - in_hw[i] - self.pad[i]
                           for i in range(2))
        if self.method == "AVE":
            self.register_buffer("inv_divisor", self._inverse_divisor(), persistent=False)

    def _inverse_divisor(self) -> torch.Tensor:
        """1 / Caffe's AVE pool size: windows clipped at H + pad (padding counts, overhang does not)."""
        sizes = []
        for i in range(2):
            starts = torch.arange(self.out_hw[i], dtype=torch.float64) * self.stride[i] - self.pad[i]
            ends = torch.clamp(starts + self.kernel[i], max=self.in_hw[i] + self.pad[i])
            sizes.append(ends - starts)
        size = sizes[0][:, None] * sizes[1][None, :]
        return (1.0 / size).to(torch.float32)

    def _padded(self, x: torch.Tensor, value: float) -> torch.Tensor:
        (ph, pw), (eh, ew) = self.pad, self.extra
        if eh < 0:
            x = x[:, :, : x.shape[2] + eh]
            eh = 0
        if ew < 0:
            x = x[:, :, :, : x.shape[3] + ew]
            ew = 0
        if ph or pw or eh or ew:
            x = F.pad(x, (pw, ew, ph, eh), value=value)
        return x

    def forward(self, x):
        if self.method == "MAX" and self.mask:
            return self._max_with_mask(x)
        if self.method == "MAX":
            return self._max(x)
        if self.method == "AVE":
            xp = self._padded(x, 0.0)
            sums = F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)
            return sums * self.inv_divisor.to(x.dtype)
        # STOCHASTIC at test time: Caffe's probability-weighted average sum(x^2)/sum(x).
        if self.training:
            raise NotImplementedError("STOCHASTIC pooling is supported at TEST only")
        xp = self._padded(x, 0.0)
        num = F.avg_pool2d(xp * xp, self.kernel, self.stride, divisor_override=1)
        den = F.avg_pool2d(xp, self.kernel, self.stride, divisor_override=1)
        return torch.where(den != 0, num / torch.where(den != 0, den, torch.ones_like(den)), torch.zeros_like(den))

    def _max(self, x: torch.Tensor) -> torch.Tensor:
        """Caffe starts each max at -FLT_MAX and replaces it only on a greater value, so NaN never
        wins and padding never does: pad with the lowest float; where the plain max pool gives NaN
        or -inf (rare), redo it with those mapped to -FLT_MAX. On GPUs, and when traced or compiled,
        the mapping is done up front: no host sync, no data-dependent branch."""
        low = torch.finfo(x.dtype).min
        if x.device.type != "cpu" or torch.jit.is_tracing() or torch.compiler.is_compiling():
            x = torch.nan_to_num(x, nan=low, neginf=low, posinf=float("inf"))
            return F.max_pool2d(self._padded(x, low), self.kernel, self.stride)
        out = F.max_pool2d(self._padded(x, low), self.kernel, self.stride)
        # A finite sum means every value is finite (one vectorised pass instead of isfinite's
        # mask and reduction); only an overflowing sum or a NaN/inf needs the exact check.
        if math.isfinite(float(out.detach().sum())) or not bool((torch.isnan(out) | (out == float("-inf"))).any()):
            return out
        x = torch.nan_to_num(x, nan=low, neginf=low, posinf=float("inf"))
        return F.max_pool2d(self._padded(x, low), self.kernel, self.stride)

    def _max_with_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The max and Caffe's mask: the first maximum's plane index ``h * W + w`` in the unpadded
        input (PoolingLayer::Forward_cpu compares with ``>``, so the first one in row-major order
        wins, as in max_pool2d's indices), as a float blob."""
        low = torch.finfo(x.dtype).min
        x = torch.nan_to_num(x, nan=low, neginf=low, posinf=float("inf"))
        xp = self._padded(x, low)
        out, index = F.max_pool2d(xp, self.kernel, self.stride, return_indices=True)
        width = xp.shape[3]
        h = torch.div(index, width, rounding_mode="floor") - self.pad[0]
        w = index - torch.div(index, width, rounding_mode="floor") * width - self.pad[1]
        return out, (h * self.in_hw[1] + w).to(x.dtype)

    def extra_repr(self):
        return (f"{self.method}, kernel_size={self.kernel}, stride={self.stride}, padding={self.pad}, "
                f"input={self.in_hw}, output={self.out_hw}")


@converter("Pooling")
def convert_pooling(node: Node, graph: Graph) -> nn.Module:
    bottom = graph.shapes[node.bottoms[0]]
    top = graph.shapes[node.tops[0]]
    attrs = PoolingSpec.resolved(node.attrs, bottom)
    return Pooling(attrs, (bottom[2], bottom[3]), (top[2], top[3]), mask=len(node.tops) > 1)


class LRN(CaffeLayer):
    """Caffe LRN. ACROSS_CHANNELS: x / (k + alpha/n * sum of squares over n channels)^beta.
    WITHIN_CHANNEL: x / (1 + alpha/n^2 * sum of squares over an n x n window)^beta (k unused)."""

    def __init__(self, attrs):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = attrs.local_size, attrs.alpha, attrs.beta, attrs.k
        self.region = attrs.norm_region

    def forward(self, x):
        half = (self.size - 1) // 2
        if (self.region == "ACROSS_CHANNELS" and torch.is_grad_enabled() and x.requires_grad
                and not (torch.jit.is_tracing() or torch.jit.is_scripting() or torch.compiler.is_compiling())):
            # Training: Caffe's forward and its backward from the kept scale (lrn_across.py).
            return LRNAcrossChannels.apply(x, self.size, self.alpha, self.beta, self.k)
        sq = x * x
        if self.region == "ACROSS_CHANNELS":
            padded = F.pad(sq, (0, 0, 0, 0, half, half))
            sums = F.avg_pool3d(padded.unsqueeze(1), (self.size, 1, 1), stride=1, divisor_override=1).squeeze(1)
            scale = self.k + (self.alpha / self.size) * sums
        else:
            sums = F.avg_pool2d(F.pad(sq, (half, half, half, half)), self.size, stride=1, divisor_override=1)
            scale = 1.0 + (self.alpha / (self.size * self.size)) * sums
        return x * scale.pow(-self.beta)

    def extra_repr(self):
        return f"{self.region}, local_size={self.size}, alpha={self.alpha:.6g}, beta={self.beta:.6g}, k={self.k:.6g}"


@converter("LRN")
def convert_lrn(node: Node, graph: Graph) -> nn.Module:
    return LRN(node.attrs)
