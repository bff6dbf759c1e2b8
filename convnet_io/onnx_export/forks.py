"""The forks' layers as ONNX: SegNet's Upsample, PSPNet's Interp, ROIPooling, Reorg, Region,
ReLU6, ShuffleChannel, Axpy and the depthwise type names, with the forks' semantics kept."""
from __future__ import annotations

import numpy as np

from convnet_io.onnx_export.registry import exporter
from convnet_io.onnx_export.vision import export_convolution


def _leading(ctx, node, x: str, count: int) -> str:
    """The first ``count`` dims of ``x``'s runtime shape (the batch stays dynamic)."""
    shape = ctx.add("Shape", [x], name=f"{node.name}/shape")
    return ctx.add("Slice", [shape, ctx.ints(f"{node.name}_lead_starts", [0]), ctx.ints(f"{node.name}_lead_ends", [count])],
                   name=f"{node.name}/lead")


def _with_lead(ctx, node, x: str, tail: list[int]) -> str:
    return ctx.add("Concat", [_leading(ctx, node, x, 2), ctx.ints(f"{node.name}_tail", tail)],
                   name=f"{node.name}/size", axis=0)


@exporter("Upsample")
def export_upsample(ctx, node):
    top = node.tops[0]
    if len(node.bottoms) == 1:
        # Nearest neighbour, index floor(out / scale): Resize's asymmetric + floor.
        s = node.attrs.scale
        ctx.add("Resize", [node.bottoms[0], "", ctx.constant(f"{node.name}_scales", [1.0, 1.0, float(s[0]), float(s[1])])],
                [top], name=node.name, mode="nearest", coordinate_transformation_mode="asymmetric",
                nearest_mode="floor")
        return
    # SegNet: zeros, then each value scattered to the plane index its mask holds.
    x, mask = node.bottoms
    _, _, oh, ow = ctx.shape(top)
    flat = ctx.ints(f"{node.name}_flat", [0, 0, -1])
    values = ctx.add("Reshape", [x, flat], name=f"{node.name}/values")
    index = ctx.add("Cast", [ctx.add("Reshape", [mask, flat], name=f"{node.name}/mask")], name=f"{node.name}/index",
                    to=7)  # INT64
    zeros = ctx.add("ConstantOfShape", [_with_lead(ctx, node, x, [oh * ow])], name=f"{node.name}/zeros",
                    value=_float_tensor(0.0))
    scattered = ctx.add("ScatterElements", [zeros, index, values], name=f"{node.name}/scatter", axis=2)
    ctx.add("Reshape", [scattered, ctx.ints(f"{node.name}_out_shape", [0, 0, oh, ow])], [top], name=node.name)


def _float_tensor(value: float):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.array([value], dtype=np.float32))


@exporter("Interp")
def export_interp(ctx, node):
    a = node.attrs
    x, top = node.bottoms[0], node.tops[0]
    _, _, h, w = ctx.shape(x)
    _, _, oh, ow = ctx.shape(top)
    if a.pad_beg or a.pad_end:
        x = ctx.add("Slice", [x, ctx.ints(f"{node.name}_starts", [-a.pad_beg] * 2),
                              ctx.ints(f"{node.name}_ends", [h + a.pad_end, w + a.pad_end]),
                              ctx.ints(f"{node.name}_axes", [2, 3])], name=f"{node.name}/crop")
    if (h + a.pad_beg + a.pad_end, w + a.pad_beg + a.pad_end) == (oh, ow):
        ctx.add("Identity", [x], [top], name=node.name)
        return
    ctx.add("Resize", [x, "", "", _with_lead(ctx, node, x, [oh, ow])], [top], name=node.name, mode="linear",
            coordinate_transformation_mode="align_corners")


@exporter("Reorg")
def export_reorg(ctx, node):
    s = node.attrs.stride
    x, top = node.bottoms[0], node.tops[0]
    _, c, h, w = ctx.shape(x)
    six = ctx.add("Reshape", [x, ctx.ints(f"{node.name}_six", [-1, c // (s * s), h, s, w, s])], name=f"{node.name}/split")
    moved = ctx.add("Transpose", [six], name=f"{node.name}/transpose", perm=[0, 3, 5, 1, 2, 4])
    ctx.add("Reshape", [moved, ctx.ints(f"{node.name}_shape", [-1, c * s * s, h // s, w // s])], [top], name=node.name)


@exporter("ShuffleChannel")
def export_shuffle_channel(ctx, node):
    g = node.attrs.group
    x, top = node.bottoms[0], node.tops[0]
    _, c, h, w = ctx.shape(x)
    five = ctx.add("Reshape", [x, ctx.ints(f"{node.name}_five", [-1, g, c // g, h, w])], name=f"{node.name}/split")
    moved = ctx.add("Transpose", [five], name=f"{node.name}/transpose", perm=[0, 2, 1, 3, 4])
    ctx.add("Reshape", [moved, ctx.ints(f"{node.name}_shape", [-1, c, h, w])], [top], name=node.name)


@exporter("ReLU6")
def export_relu6(ctx, node):
    ctx.add("Clip", [node.bottoms[0], ctx.constant(f"{node.name}_min", 0.0), ctx.constant(f"{node.name}_max", 6.0)],
            [node.tops[0]], name=node.name)


@exporter("Axpy")
def export_axpy(ctx, node):
    scale, x, y = node.bottoms
    ndim = len(ctx.shape(x))
    a = ctx.add("Reshape", [scale, ctx.ints(f"{node.name}_scale_shape", [0, 0] + [1] * (ndim - 2))],
                name=f"{node.name}/scale")
    ax = ctx.add("Mul", [a, x], name=f"{node.name}/ax")
    ctx.add("Add", [ax, y], [node.tops[0]], name=node.name)


@exporter("ConvolutionDepthwise", "DepthwiseConvolution")
def export_depthwise(ctx, node):
    export_convolution(ctx, node)
