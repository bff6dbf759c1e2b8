"""Convolution geometry over any number of spatial axes, as Caffe's ``BaseConvolutionLayer``
(``base_conv_layer.cpp``): the channel ``axis``, repeated ``kernel_size``/``stride``/``pad``/
``dilation`` (one value for every spatial axis, or one per axis), ``force_nd_im2col``; and the
``Im2col`` layer, which shares the geometry.

The familiar 2-D case (a 4-D bottom, axis 1) keeps the 2-D attributes of ``vision.py``; everything
else (1-D, 3-D video and volume nets, a channel axis other than 1) is resolved here against the
bottom's shape, with Caffe's checks and messages.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convnet_io.graph.layers.common import canonical_axis, count
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Shape


@dataclass(frozen=True)
class ConvSpatial:
    """The spatial fields of a ConvolutionParameter as written (nothing resolved yet)."""

    kernel_size: tuple[int, ...] = ()
    stride: tuple[int, ...] = ()
    pad: tuple[int, ...] = ()
    dilation: tuple[int, ...] = ()
    kernel_hw: tuple[int, int] | None = None
    stride_hw: tuple[int, int] | None = None
    pad_hw: tuple[int, int] | None = None
    axis: int = 1
    force_nd_im2col: bool = False


def conv_spatial(p: Any) -> ConvSpatial:
    def hw(name: str) -> tuple[int, int] | None:
        if p.HasField(f"{name}_h") or p.HasField(f"{name}_w"):
            return int(getattr(p, f"{name}_h")), int(getattr(p, f"{name}_w"))
        return None

    return ConvSpatial(tuple(int(v) for v in p.kernel_size), tuple(int(v) for v in p.stride),
                       tuple(int(v) for v in p.pad), tuple(int(v) for v in p.dilation),
                       hw("kernel"), hw("stride"), hw("pad"), int(p.axis), bool(p.force_nd_im2col))


@dataclass(frozen=True)
class ConvGeometry:
    """Resolved against a bottom: the channel axis and one kernel/stride/pad/dilation per spatial axis."""

    axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    @property
    def spatial_axes(self) -> int:
        return len(self.kernel)

    def output_size(self, bottom: Shape) -> tuple[int, ...]:
        """Caffe's compute_output_shape; C++ division truncates toward zero."""
        out = []
        for i, size in enumerate(bottom[self.axis + 1:]):
            extent = self.dilation[i] * (self.kernel[i] - 1) + 1
            span = size + 2 * self.pad[i] - extent
            out.append(int(span / self.stride[i]) + 1)
        return tuple(out)

    def deconv_output_size(self, bottom: Shape) -> tuple[int, ...]:
        return tuple(self.stride[i] * (size - 1) + self.dilation[i] * (self.kernel[i] - 1) + 1 - 2 * self.pad[i]
                     for i, size in enumerate(bottom[self.axis + 1:]))

    def tail(self, bottom: Shape, out: tuple[int, ...]) -> tuple[int, ...]:
        """Zeros past the end pad that Caffe's im2col reads when a kernel overhangs the input."""
        return tuple(max(0, (out[i] - 1) * self.stride[i] + self.dilation[i] * (self.kernel[i] - 1) + 1
                         - size - 2 * self.pad[i]) for i, size in enumerate(bottom[self.axis + 1:]))


def _per_axis(values: tuple[int, ...], hw: tuple[int, int] | None, n: int, default: int | None, what: str) -> tuple[int, ...]:
    if hw is not None:
        if n != 2:
            raise ValueError(f"{what}_h & {what}_w can only be used for 2D convolution "
                             f"(this bottom has {n} spatial axes)")
        if values:
            raise ValueError(f"either {what} or {what}_h/w should be specified; not both")
        return hw
    if not values:
        if default is None:
            raise ValueError("kernel_size must be specified")
        return (default,) * n
    if len(values) not in (1, n):
        raise ValueError(f"{what} must be specified once, or once per spatial dimension "
                         f"({what} specified {len(values)} times; {n} spatial dims)")
    return values * n if len(values) == 1 else values


def geometry(s: ConvSpatial, bottom: Shape) -> ConvGeometry:
    """BaseConvolutionLayer::LayerSetUp's checks and values for this bottom."""
    axis = canonical_axis(s.axis, len(bottom))
    n = len(bottom) - axis - 1
    kernel = _per_axis(s.kernel_size, s.kernel_hw, n, None, "kernel_size")
    if any(k <= 0 for k in kernel):
        raise ValueError(f"filter dimensions must be nonzero, got {list(kernel)}")
    stride = _per_axis(s.stride, s.stride_hw, n, 1, "stride")
    if any(v <= 0 for v in stride):
        raise ValueError(f"stride dimensions must be nonzero, got {list(stride)}")
    pad = _per_axis(s.pad, s.pad_hw, n, 0, "pad")
    dilation = _per_axis(s.dilation, None, n, 1, "dilation")
    if any(v <= 0 for v in dilation):
        raise ValueError(f"dilation must be positive, got {list(dilation)}")
    return ConvGeometry(axis, kernel, stride, pad, dilation)


def is_nd(s: ConvSpatial | None, bottom: Shape) -> bool:
    """True unless this is the 2-D case vision.py's attributes describe (4-D bottom, axis 1)."""
    if s is None:
        return False
    if len(bottom) != 4 or canonical_axis(s.axis, len(bottom)) != 1:
        return True
    return any(len(v) > 2 for v in (s.kernel_size, s.stride, s.pad, s.dilation))


def check_channels(g: ConvGeometry, bottoms: list[Shape], num_output: int, group: int) -> int:
    """BaseConvolutionLayer's channel and group checks; returns the channel count."""
    for b in bottoms:
        if tuple(b) != tuple(bottoms[0]):
            raise ValueError(f"all bottoms must have the same shape, got {[list(x) for x in bottoms]}")
    channels = bottoms[0][g.axis]
    if num_output <= 0:
        raise ValueError("num_output must be positive")
    if group <= 0 or channels % group:
        raise ValueError(f"input channels {channels} are not divisible by group {group}")
    if num_output % group:
        raise ValueError(f"num_output {num_output} is not divisible by group {group}")
    return channels


def nd_top_shapes(a: Any, bottoms: list[Shape], deconv: bool) -> list[Shape]:
    g = geometry(a.spatial, bottoms[0])
    check_channels(g, bottoms, a.num_output, a.group)
    b = bottoms[0]
    out = g.deconv_output_size(b) if deconv else g.output_size(b)
    return [(*b[:g.axis], a.num_output, *out) for _ in bottoms]


def nd_param_shapes(a: Any, bottoms: list[Shape], deconv: bool) -> list[Shape]:
    g = geometry(a.spatial, bottoms[0])
    channels = bottoms[0][g.axis]
    w = (channels, a.num_output // a.group, *g.kernel) if deconv else (a.num_output, channels // a.group, *g.kernel)
    return [w, (a.num_output,)] if a.bias_term else [w]


def nd_macs(a: Any, bottoms: list[Shape], tops: list[Shape], deconv: bool) -> int:
    g = geometry(a.spatial, bottoms[0])
    k = count(g.kernel)
    if deconv:
        return sum(count(b) * (a.num_output // a.group) * k for b in bottoms)
    return sum(count(t) * (bottoms[0][g.axis] // a.group) * k for t in tops)


@dataclass(frozen=True)
class Im2colAttrs:
    spatial: ConvSpatial


@register("Im2col")
class Im2col(LayerSpec):
    """Caffe's im2col as a layer: (..., C, *spatial) -> (..., C * prod(kernel), *output), rows in
    (channel, kernel offset) order, the kernel offsets row-major."""

    @classmethod
    def attrs(cls, layer):
        return Im2colAttrs(conv_spatial(layer.convolution_param))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        g = geometry(a.spatial, b)
        return [(*b[:g.axis], b[g.axis] * count(g.kernel), *g.output_size(b))]
