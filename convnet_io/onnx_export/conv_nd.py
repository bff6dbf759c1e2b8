"""Convolution and Deconvolution over 1 to 3 spatial axes (any channel axis) and Im2col as ONNX
Conv / ConvTranspose: the axes before the channel axis are folded into the batch axis and
unfolded after; Caffe's truncating output size is kept by padding the end explicitly."""
from __future__ import annotations

import numpy as np

from convnet_io.graph.layers.conv_nd import geometry
from convnet_io.onnx_export.registry import exporter


def _fold(ctx, node, value, shape, axis, spatial):
    """(lead..., C, *spatial) as (N', C, *spatial): a Reshape, or the value itself when axis is 1."""
    if axis == 1 and spatial > 0:
        return value
    target = [-1, *shape[axis:]] + ([1] if spatial == 0 else [])
    return ctx.add("Reshape", [value, ctx.ints(f"{node.name}_fold", target)], name=f"{node.name}/fold")


def _direct(axis, spatial) -> bool:
    """The Conv writes the top itself (no folding needed)."""
    return axis == 1 and spatial > 0


def _unfold(ctx, node, value, bottom, top, axis, spatial):
    if _direct(axis, spatial):
        return
    lead = ctx.add("Slice", [ctx.add("Shape", [bottom], name=f"{node.name}/shape"), ctx.ints(f"{node.name}_s0", [0]),
                            ctx.ints(f"{node.name}_s1", [axis])], name=f"{node.name}/lead")
    rest = ctx.ints(f"{node.name}_rest", list(ctx.shape(top)[axis:]))
    target = ctx.add("Concat", [lead, rest], name=f"{node.name}/target", axis=0)
    ctx.add("Reshape", [value, target], [top], name=f"{node.name}/unfold")


def export_convolution_nd(ctx, node):
    """The N-D case of the Convolution/Deconvolution exporter (vision.py dispatches here)."""
    a = node.attrs
    g = geometry(a.spatial, ctx.shape(node.bottoms[0]))
    n = g.spatial_axes
    if n > 3:
        raise ValueError(f"{n} spatial axes: ONNX Runtime convolves over at most 3")
    deconv = node.type == "Deconvolution"
    w = ctx.blobs[node.name][0]
    weights = [ctx.blob(node, 0, w.reshape(*w.shape, 1) if n == 0 else None)]
    if a.bias_term:
        weights.append(ctx.blob(node, 1))
    unit = [1] if n == 0 else []
    for bottom, top in zip(node.bottoms, node.tops):
        shape = ctx.shape(bottom)
        tail = (0,) * n if deconv else g.tail(shape, g.output_size(shape))
        x = _fold(ctx, node, bottom, shape, g.axis, n)
        y = ctx.add("ConvTranspose" if deconv else "Conv", [x, *weights], [top] if _direct(g.axis, n) else None,
                    name=node.name,
                    kernel_shape=list(g.kernel) + unit, strides=list(g.stride) + unit,
                    dilations=list(g.dilation) + unit,
                    pads=list(g.pad) + [0] * len(unit) + [p + t for p, t in zip(g.pad, tail)] + [0] * len(unit),
                    group=a.group)
        _unfold(ctx, node, y, bottom, top, g.axis, n)


@exporter("Im2col")
def export_im2col(ctx, node):
    """A grouped Conv with one-hot kernels: output channel c * K + k is kernel offset k of channel c."""
    bottom, top = node.bottoms[0], node.tops[0]
    shape = ctx.shape(bottom)
    g = geometry(node.attrs.spatial, shape)
    n = g.spatial_axes
    if n > 3:
        raise ValueError(f"{n} spatial axes: ONNX Runtime convolves over at most 3")
    channels, k = shape[g.axis], int(np.prod(g.kernel, dtype=np.int64))
    unit = [1] if n == 0 else []
    one_hot = np.tile(np.eye(k, dtype=np.float32).reshape(k, 1, *g.kernel, *unit), (channels, 1) + (1,) * (n + len(unit)))
    tail = g.tail(shape, g.output_size(shape))
    x = _fold(ctx, node, bottom, shape, g.axis, n)
    y = ctx.add("Conv", [x, ctx.constant(f"{node.name}_one_hot", one_hot)], [top] if _direct(g.axis, n) else None,
                name=node.name,
                kernel_shape=list(g.kernel) + unit, strides=list(g.stride) + unit, dilations=list(g.dilation) + unit,
                pads=list(g.pad) + [0] * len(unit) + [p + t for p, t in zip(g.pad, tail)] + [0] * len(unit),
                group=channels)
    _unfold(ctx, node, y, bottom, top, g.axis, n)
