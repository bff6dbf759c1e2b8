"""BatchNorm, Scale, Bias and MVN with Caffe's exact numerics (LRN lives in vision.py)."""
from __future__ import annotations

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.common import canonical_axis
from convnet_io.torch_model.base import CaffeLayer, blob_shape_for_axis
from convnet_io.torch_model.registry import converter


class BatchNorm(CaffeLayer):
    """Caffe BatchNorm (no affine part; Caffe follows it with a Scale layer).

    Caffe blobs, kept as buffers: ``mean`` (C,), ``variance`` (C,) and ``scale_factor`` (1,); the
    stored statistics are sums, the real ones are blob / scale_factor (0 when scale_factor is 0).

    With global stats: y = (x - mean / s) / sqrt(variance / s + eps). Otherwise the batch mean and
    biased batch variance over every axis but axis 1 are used, and the blobs are updated as Caffe
    does: s = maf * s + 1, mean = maf * mean + batch_mean, variance = maf * variance +
    m / (m - 1) * batch_variance, with m = count / C. ``use_global_stats`` None means: global stats
    when not training (Caffe's TEST phase). As in Caffe, the blobs are updated whenever batch stats
    are used, also in eval mode with use_global_stats explicitly false.
    """

    def __init__(self, channels: int, use_global_stats: bool | None = None,
                 moving_average_fraction: float = 0.999, eps: float = 1e-5):
        super().__init__()
        self.channels = channels
        self.use_global_stats = use_global_stats
        self.moving_average_fraction = moving_average_fraction
        self.eps = eps
        self.register_buffer("mean", torch.zeros(channels, dtype=torch.float32))
        self.register_buffer("variance", torch.zeros(channels, dtype=torch.float32))
        self.register_buffer("scale_factor", torch.zeros(1, dtype=torch.float32))

    def _uses_global_stats(self) -> bool:
        if self.use_global_stats is None:
            return not self.training
        return self.use_global_stats

    def _channel_view(self, x: torch.Tensor) -> list[int]:
        return [1] * x.dim() if x.dim() < 2 else [1, -1] + [1] * (x.dim() - 2)

    def forward(self, x):
        if x.dim() >= 2 and x.shape[1] != self.channels:
            raise ValueError(f"BatchNorm expects {self.channels} channels, got shape {list(x.shape)}")
        view = self._channel_view(x)
        if self._uses_global_stats():
            s = self.scale_factor
            inv = torch.where(s == 0, torch.zeros_like(s), 1.0 / s)  # Caffe: 0 when s == 0
            mean = self.mean * inv
            var = self.variance * inv
            return (x - mean.reshape(view)) / torch.sqrt(var + self.eps).reshape(view)
        dims = [0] if x.dim() < 2 else [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims)
        centered = x - mean.reshape(view)
        var = (centered * centered).mean(dim=dims)  # biased: E((X - EX)^2)
        self._update(mean.detach(), var.detach(), x.numel() // max(self.channels, 1))
        return centered / torch.sqrt(var + self.eps).reshape(view)

    @torch.no_grad()
    def _update(self, batch_mean: torch.Tensor, batch_var: torch.Tensor, m: int) -> None:
        maf = self.moving_average_fraction
        self.scale_factor.mul_(maf).add_(1.0)
        self.mean.mul_(maf).add_(batch_mean.to(self.mean.dtype))
        correction = m / (m - 1) if m > 1 else 1.0
        self.variance.mul_(maf).add_(batch_var.to(self.variance.dtype) * correction)

    def caffe_blobs(self):
        return [self.mean, self.variance, self.scale_factor]

    def extra_repr(self):
        return (f"{self.channels}, use_global_stats={self.use_global_stats}, "
                f"moving_average_fraction={self.moving_average_fraction}, eps={self.eps}")


@converter("BatchNorm")
def convert_batch_norm(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    channels = node.params[0].shape[0]
    return BatchNorm(channels, a.use_global_stats, a.moving_average_fraction, a.eps)


def _operand_axis(attrs_axis: int, operand_ndim: int, bottom_ndim: int) -> int:
    """Caffe's axis for a Scale/Bias operand: 0 for a scalar operand, else the canonical axis."""
    if operand_ndim == 0:
        return 0
    axis = canonical_axis(attrs_axis, bottom_ndim)
    if axis + operand_ndim > bottom_ndim:
        raise ValueError(f"an operand of {operand_ndim} axes at axis {axis} extends past the bottom's "
                         f"{bottom_ndim} axes")
    return axis


def _broadcast(operand: torch.Tensor, ndim: int, axis: int) -> torch.Tensor:
    return operand.reshape(blob_shape_for_axis(operand, ndim, axis))


class Scale(CaffeLayer):
    """y = x * scale (+ bias), the operand broadcast over x starting at ``axis``.

    One bottom: ``scale`` is a learnable blob shaped x.shape[axis:axis + num_axes] (num_axes -1: to
    the end; 0: a scalar). Two bottoms: the second bottom is the scale. Caffe blobs: [scale, bias]
    with one bottom, [bias] with two; bias (if bias_term) has the scale's shape.
    """

    def __init__(self, axis: int, scale_shape: tuple[int, ...] | None, bias_shape: tuple[int, ...] | None):
        super().__init__()
        self.axis = axis
        self.weight = nn.Parameter(torch.zeros(scale_shape, dtype=torch.float32)) if scale_shape is not None else None
        self.bias = nn.Parameter(torch.zeros(bias_shape, dtype=torch.float32)) if bias_shape is not None else None

    def forward(self, x, *operand):
        if self.weight is not None:
            if operand:
                raise ValueError("Scale with a learnable scale takes one bottom")
            scale = self.weight
        else:
            if len(operand) != 1:
                raise ValueError("Scale without a learnable scale needs the scale as a second bottom")
            scale = operand[0]
        axis = 0 if scale.dim() == 0 else self.axis
        y = x * _broadcast(scale, x.dim(), axis)
        if self.bias is not None:
            y = y + _broadcast(self.bias, x.dim(), 0 if self.bias.dim() == 0 else self.axis)
        return y

    def caffe_blobs(self):
        return [b for b in (self.weight, self.bias) if b is not None]

    def extra_repr(self):
        scale = tuple(self.weight.shape) if self.weight is not None else "bottom[1]"
        return f"scale={scale}, axis={self.axis}, bias={self.bias is not None}"


@converter("Scale")
def convert_scale(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    ndim = len(graph.shapes[node.bottoms[0]])
    shapes = [tuple(p.shape) for p in node.params]
    if len(node.bottoms) == 2:
        operand = tuple(graph.shapes[node.bottoms[1]])
        scale_shape, bias_shape = None, (shapes[0] if a.bias_term else None)
    else:
        operand = shapes[0]
        scale_shape, bias_shape = shapes[0], (shapes[1] if a.bias_term else None)
    axis = _operand_axis(a.axis, len(operand), ndim)
    return Scale(axis, scale_shape, bias_shape)


class Bias(CaffeLayer):
    """y = x + bias, broadcast over x starting at ``axis``: a learnable blob shaped
    x.shape[axis:axis + num_axes] with one bottom, or the second bottom (no blob)."""

    def __init__(self, axis: int, bias_shape: tuple[int, ...] | None):
        super().__init__()
        self.axis = axis
        self.bias = nn.Parameter(torch.zeros(bias_shape, dtype=torch.float32)) if bias_shape is not None else None

    def forward(self, x, *operand):
        if self.bias is not None:
            if operand:
                raise ValueError("Bias with a learnable bias takes one bottom")
            bias = self.bias
        else:
            if len(operand) != 1:
                raise ValueError("Bias without a learnable bias needs the bias as a second bottom")
            bias = operand[0]
        return x + _broadcast(bias, x.dim(), 0 if bias.dim() == 0 else self.axis)

    def caffe_blobs(self):
        return [self.bias] if self.bias is not None else []

    def extra_repr(self):
        bias = tuple(self.bias.shape) if self.bias is not None else "bottom[1]"
        return f"bias={bias}, axis={self.axis}"


@converter("Bias")
def convert_bias(node: Node, graph: Graph) -> nn.Module:
    ndim = len(graph.shapes[node.bottoms[0]])
    if len(node.bottoms) == 2:
        operand, bias_shape = tuple(graph.shapes[node.bottoms[1]]), None
    else:
        operand = bias_shape = tuple(node.params[0].shape)
    return Bias(_operand_axis(node.attrs.axis, len(operand), ndim), bias_shape)


class MVN(CaffeLayer):
    """Caffe MVN: subtract the mean over each (n, c) slice (or each n's whole sample when
    across_channels); with normalize_variance, divide by sqrt(var) + eps, var the biased variance
    E((X - EX)^2) over the same elements."""

    def __init__(self, normalize_variance: bool = True, across_channels: bool = False, eps: float = 1e-9):
        super().__init__()
        self.normalize_variance, self.across_channels, self.eps = normalize_variance, across_channels, eps

    def forward(self, x):
        shape = x.shape
        rows = shape[0] if self.across_channels or x.dim() < 2 else shape[0] * shape[1]
        flat = x.reshape(rows, -1)
        centered = flat - flat.mean(dim=1, keepdim=True)
        if self.normalize_variance:
            var = (centered * centered).mean(dim=1, keepdim=True)
            centered = centered / (torch.sqrt(var) + self.eps)
        return centered.reshape(shape)

    def extra_repr(self):
        return (f"normalize_variance={self.normalize_variance}, across_channels={self.across_channels}, "
                f"eps={self.eps}")


@converter("MVN")
def convert_mvn(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return MVN(a.normalize_variance, a.across_channels, a.eps)
