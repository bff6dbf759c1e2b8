"""Convolution, Deconvolution, Pooling and InnerProduct, with Caffe's shape rules."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convnet_io.graph.layers.common import canonical_axis, ceil_div, count, enum_name, filler, spatial_pair
from convnet_io.graph.layers.conv_nd import ConvSpatial, conv_spatial, is_nd, nd_macs, nd_param_shapes, nd_top_shapes
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Filler, Shape


@dataclass(frozen=True)
class ConvolutionAttrs:
    num_output: int
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    group: int = 1
    bias_term: bool = True
    axis: int = 1
    weight_filler: Filler | None = None
    bias_filler: Filler | None = None
    # The fields as written, which N-D nets resolve against the bottom (conv_nd.py); not part of
    # equality: the same geometry can be written several ways.
    spatial: ConvSpatial | None = field(default=None, compare=False)


def convolution_attrs(p: Any) -> ConvolutionAttrs:
    spatial = conv_spatial(p)
    if p.axis != 1 or max(len(p.kernel_size), len(p.stride), len(p.pad), len(p.dilation)) > 2:
        # Another channel axis, or more than two spatial axes: conv_nd resolves the geometry
        # against the bottom (the 2-D fields below are not used).
        return ConvolutionAttrs(
            num_output=int(p.num_output), kernel=(0, 0), group=int(p.group), bias_term=bool(p.bias_term),
            axis=int(p.axis), weight_filler=filler(p.weight_filler, p.HasField("weight_filler")),
            bias_filler=filler(p.bias_filler, p.HasField("bias_filler")), spatial=spatial)
    if p.HasField("kernel_h") != p.HasField("kernel_w"):
        raise ValueError("kernel_h and kernel_w must be given together")
    if p.HasField("kernel_h") and len(p.kernel_size):
        raise ValueError("give either kernel_size or kernel_h and kernel_w, not both")
    if (p.HasField("pad_h") or p.HasField("pad_w")) and len(p.pad):
        raise ValueError("give either pad or pad_h and pad_w, not both")
    if (p.HasField("stride_h") or p.HasField("stride_w")) and len(p.stride):
        raise ValueError("give either stride or stride_h and stride_w, not both")
    kernel = spatial_pair(p.kernel_size, p.HasField("kernel_h"), p.kernel_h, p.kernel_w, 0, "kernel_size")
    if min(kernel) <= 0:
        raise ValueError("kernel size must be given and positive (kernel_size or kernel_h/kernel_w)")
    if (p.HasField("stride_h") or p.HasField("stride_w")) and min(p.stride_h, p.stride_w) <= 0:
        raise ValueError("stride_h and stride_w must both be given and positive")
    a = ConvolutionAttrs(
        num_output=int(p.num_output),
        kernel=kernel,
        stride=spatial_pair(p.stride, p.HasField("stride_h") or p.HasField("stride_w"), p.stride_h, p.stride_w, 1, "stride"),
        pad=spatial_pair(p.pad, p.HasField("pad_h") or p.HasField("pad_w"), p.pad_h, p.pad_w, 0, "pad"),
        dilation=spatial_pair(p.dilation, False, 0, 0, 1, "dilation"),
        group=int(p.group),
        bias_term=bool(p.bias_term),
        axis=int(p.axis),
        weight_filler=filler(p.weight_filler, p.HasField("weight_filler")),
        bias_filler=filler(p.bias_filler, p.HasField("bias_filler")),
        spatial=spatial,
    )
    # Caffe's BaseConvolutionLayer: CHECK_GT(stride, 0) and CHECK_GT(dilation, 0), checked here so
    # the net is refused at build time, not by a division by zero later.
    if min(a.stride) <= 0:
        raise ValueError(f"stride {list(a.stride)} must be positive")
    if min(a.dilation) <= 0:
        raise ValueError(f"dilation {list(a.dilation)} must be positive")
    return a


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Caffe's convolution output size; C++ integer division truncates toward zero, so a kernel
    one step larger than the padded input still gives one output (reading implicit zeros)."""
    span = size + 2 * pad - (dilation * (kernel - 1) + 1)
    return int(span / stride) + 1 if span < 0 else span // stride + 1


def _check_conv_input(a: ConvolutionAttrs, bottom: Shape, out_channels: int) -> None:
    if len(bottom) != 4:
        raise ValueError(f"expects a 4-D (N,C,H,W) bottom, got shape {list(bottom)}")
    if a.num_output <= 0:
        raise ValueError("num_output must be positive")
    if a.group <= 0 or bottom[1] % a.group:
        raise ValueError(f"input channels {bottom[1]} are not divisible by group {a.group}")
    if out_channels % a.group:
        raise ValueError(f"num_output {a.num_output} is not divisible by group {a.group}")


@register("Convolution")
class Convolution(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        return convolution_attrs(layer.convolution_param)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if is_nd(a.spatial, bottoms[0]):
            return nd_top_shapes(a, bottoms, deconv=False)
        out = []
        for b in bottoms:
            if tuple(b) != tuple(bottoms[0]):
                raise ValueError(f"all bottoms must have the same shape, got {[list(x) for x in bottoms]}")
            _check_conv_input(a, b, a.num_output)
            hw = [conv_output_size(b[2 + i], a.kernel[i], a.stride[i], a.pad[i], a.dilation[i]) for i in range(2)]
            out.append((b[0], a.num_output, hw[0], hw[1]))
        return out

    @classmethod
    def param_shapes(cls, a, bottoms):
        if is_nd(a.spatial, bottoms[0]):
            return nd_param_shapes(a, bottoms, deconv=False)
        w = (a.num_output, bottoms[0][1] // a.group, *a.kernel)
        return [w, (a.num_output,)] if a.bias_term else [w]

    @classmethod
    def fillers(cls, a):
        return [a.weight_filler, a.bias_filler]

    @classmethod
    def macs(cls, a, bottoms, tops):
        if is_nd(a.spatial, bottoms[0]):
            return nd_macs(a, bottoms, tops, deconv=False)
        per_output = (bottoms[0][1] // a.group) * a.kernel[0] * a.kernel[1]
        return sum(count(t) * per_output for t in tops)

    max_bottoms = None


@register("Deconvolution")
class Deconvolution(Convolution):
    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if is_nd(a.spatial, bottoms[0]):
            return nd_top_shapes(a, bottoms, deconv=True)
        out = []
        for b in bottoms:
            if tuple(b) != tuple(bottoms[0]):
                raise ValueError(f"all bottoms must have the same shape, got {[list(x) for x in bottoms]}")
            _check_conv_input(a, b, a.num_output)
            hw = []
            for i in range(2):
                extent = a.dilation[i] * (a.kernel[i] - 1) + 1
                hw.append(a.stride[i] * (b[2 + i] - 1) + extent - 2 * a.pad[i])
            out.append((b[0], a.num_output, hw[0], hw[1]))
        return out

    @classmethod
    def param_shapes(cls, a, bottoms):
        if is_nd(a.spatial, bottoms[0]):
            return nd_param_shapes(a, bottoms, deconv=True)
        w = (bottoms[0][1], a.num_output // a.group, *a.kernel)
        return [w, (a.num_output,)] if a.bias_term else [w]

    @classmethod
    def macs(cls, a, bottoms, tops):
        if is_nd(a.spatial, bottoms[0]):
            return nd_macs(a, bottoms, tops, deconv=True)
        per_input = (a.num_output // a.group) * a.kernel[0] * a.kernel[1]
        return sum(count(b) * per_input for b in bottoms)


@dataclass(frozen=True)
class PoolingAttrs:
    method: str  # MAX, AVE, STOCHASTIC
    kernel: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)
    global_pooling: bool = False
    round_mode: str = "CEIL"  # CEIL or FLOOR


def pooling_output_size(size: int, kernel: int, stride: int, pad: int, round_mode: str, clip: bool) -> int:
    """Caffe's pooled size: ceil (or floor) division, then drop a last window that starts in the pad."""
    span = size + 2 * pad - kernel
    out = (ceil_div(span, stride) if round_mode == "CEIL" else span // stride) + 1
    if clip and (out - 1) * stride >= size + pad:
        out -= 1
    return out


@register("Pooling")
class Pooling(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.pooling_param
        if p.global_pooling:
            if p.HasField("kernel_h") or p.HasField("kernel_size"):
                raise ValueError("with global_pooling, the kernel size cannot be given")
            kernel = (0, 0)
        else:
            if p.HasField("kernel_h") != p.HasField("kernel_w"):
                raise ValueError("kernel_h and kernel_w must be given together")
            if not (p.HasField("kernel_h") or p.HasField("kernel_size")):
                raise ValueError("kernel_size (or kernel_h and kernel_w) is required")
            if p.HasField("kernel_h") and p.HasField("kernel_size"):
                raise ValueError("give either kernel_size or kernel_h and kernel_w, not both")
            kernel = (p.kernel_h, p.kernel_w) if p.HasField("kernel_h") else (p.kernel_size,) * 2
        if p.HasField("pad") and (p.HasField("pad_h") or p.HasField("pad_w")):
            raise ValueError("give either pad or pad_h and pad_w, not both")
        if p.HasField("pad_h") != p.HasField("pad_w"):
            raise ValueError("pad_h and pad_w must be given together")
        if p.HasField("stride") and (p.HasField("stride_h") or p.HasField("stride_w")):
            raise ValueError("give either stride or stride_h and stride_w, not both")
        if p.HasField("stride_h") != p.HasField("stride_w"):
            raise ValueError("stride_h and stride_w must be given together")
        pad = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad,) * 2
        stride = (p.stride_h, p.stride_w) if p.HasField("stride_h") else (p.stride,) * 2
        round_mode = enum_name(p, "round_mode")
        # The forks' (and OpenCV's) spelling: ceil_mode false is FLOOR rounding.
        if "ceil_mode" in p.DESCRIPTOR.fields_by_name and p.HasField("ceil_mode"):
            if p.HasField("round_mode") and (round_mode == "CEIL") != bool(p.ceil_mode):
                raise ValueError("round_mode and ceil_mode disagree")
            round_mode = "CEIL" if p.ceil_mode else "FLOOR"
        if enum_name(p, "pool") == "STOCHASTIC" and (pad[0] or pad[1]):
            raise ValueError("padding is implemented only for MAX and AVE pooling")
        return PoolingAttrs(
            method=enum_name(p, "pool"), kernel=tuple(int(k) for k in kernel),
            stride=tuple(int(s) for s in stride), pad=tuple(int(x) for x in pad),
            global_pooling=bool(p.global_pooling), round_mode=round_mode,
        )

    @classmethod
    def resolved(cls, a: PoolingAttrs, bottom: Shape) -> PoolingAttrs:
        """Attributes with global pooling turned into an explicit kernel over the whole map."""
        if not a.global_pooling:
            return a
        return PoolingAttrs(a.method, (bottom[2], bottom[3]), (1, 1), (0, 0), True, a.round_mode)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        if len(b) != 4:
            raise ValueError(f"expects a 4-D (N,C,H,W) bottom, got shape {list(b)}")
        r = cls.resolved(a, b)
        if r.global_pooling and (a.pad != (0, 0) or a.stride != (1, 1)):
            raise ValueError("with global_pooling, pad must be 0 and stride 1")
        for i in range(2):
            if r.kernel[i] <= 0 or r.stride[i] <= 0:
                raise ValueError("kernel and stride must be positive")
            if r.pad[i] >= r.kernel[i]:
                raise ValueError(f"pad {r.pad[i]} must be smaller than kernel {r.kernel[i]}")
        clip = r.pad != (0, 0)
        hw = [pooling_output_size(b[2 + i], r.kernel[i], r.stride[i], r.pad[i], r.round_mode, clip) for i in range(2)]
        top = (b[0], b[1], hw[0], hw[1])
        # Caffe's MAX pooling has an optional second top: the argmax mask (plane index h * W + w
        # of each window's first maximum, as float), which SegNet's Upsample reads.
        if num_tops > 2 or (num_tops == 2 and a.method != "MAX"):
            raise ValueError(f"{a.method} pooling has {'1 or 2 tops' if a.method == 'MAX' else '1 top'}, got {num_tops}")
        return [top] * max(num_tops, 1)

    max_bottoms = 1


@dataclass(frozen=True)
class InnerProductAttrs:
    num_output: int
    bias_term: bool = True
    axis: int = 1
    transpose: bool = False
    weight_filler: Filler | None = None
    bias_filler: Filler | None = None


@register("InnerProduct")
class InnerProduct(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.inner_product_param
        return InnerProductAttrs(
            num_output=int(p.num_output), bias_term=bool(p.bias_term), axis=int(p.axis),
            transpose=bool(p.transpose),
            weight_filler=filler(p.weight_filler, p.HasField("weight_filler")),
            bias_filler=filler(p.bias_filler, p.HasField("bias_filler")),
        )

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        if a.num_output <= 0:
            raise ValueError("num_output must be positive")
        axis = canonical_axis(a.axis, len(b))
        return [(*b[:axis], a.num_output)]

    @classmethod
    def param_shapes(cls, a, bottoms):
        k = count(bottoms[0], canonical_axis(a.axis, len(bottoms[0])))
        w = (k, a.num_output) if a.transpose else (a.num_output, k)
        return [w, (a.num_output,)] if a.bias_term else [w]

    @classmethod
    def fillers(cls, a):
        return [a.weight_filler, a.bias_filler]

    @classmethod
    def macs(cls, a, bottoms, tops):
        k = count(bottoms[0], canonical_axis(a.axis, len(bottoms[0])))
        return count(tops[0]) * k


@dataclass(frozen=True)
class EmbedAttrs:
    num_output: int
    input_dim: int
    bias_term: bool = True
    weight_filler: Filler | None = None
    bias_filler: Filler | None = None


@register("Embed")
class Embed(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        p = layer.embed_param
        if p.input_dim <= 0:  # Caffe: CHECK_GT(K_, 0) << "EmbedLayer input_dim must be positive"
            raise ValueError(f"input_dim {p.input_dim} must be positive")
        return EmbedAttrs(int(p.num_output), int(p.input_dim), bool(p.bias_term),
                          filler(p.weight_filler, p.HasField("weight_filler")),
                          filler(p.bias_filler, p.HasField("bias_filler")))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        return [(*bottoms[0], a.num_output)]

    @classmethod
    def param_shapes(cls, a, bottoms):
        w = (a.input_dim, a.num_output)
        return [w, (a.num_output,)] if a.bias_term else [w]

    @classmethod
    def fillers(cls, a):
        return [a.weight_filler, a.bias_filler]


def convolution_tail(a, bottom, top) -> tuple[int, int]:
    """Extra zero rows/columns past the pad that Caffe's windows read (kernel larger than input)."""
    return tuple(max(0, (top[2 + i] - 1) * a.stride[i] + a.dilation[i] * (a.kernel[i] - 1) + 1
                     - bottom[2 + i] - 2 * a.pad[i]) for i in range(2))
