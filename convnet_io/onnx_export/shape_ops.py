"""Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Reduction, ArgMax, Eltwise, Softmax,
Parameter and Embed as ONNX."""
from __future__ import annotations

from convnet_io.graph.layers.common import canonical_axis
from convnet_io.graph.layers.shape_ops import Crop as CropSpec
from convnet_io.graph.layers.shape_ops import Slice as SliceSpec
from convnet_io.onnx_export.registry import exporter


@exporter("Concat")
def export_concat(ctx, node):
    axis = canonical_axis(node.attrs.axis, len(ctx.shape(node.bottoms[0])))
    ctx.add("Concat", list(node.bottoms), [node.tops[0]], name=node.name, axis=axis)


@exporter("Slice")
def export_slice(ctx, node):
    shape = ctx.shape(node.bottoms[0])
    axis = canonical_axis(node.attrs.axis, len(shape))
    sizes = SliceSpec.sizes(node.attrs, shape, len(node.tops))
    ctx.add("Split", [node.bottoms[0], ctx.ints(f"{node.name}_split", sizes)], list(node.tops),
            name=node.name, axis=axis)


@exporter("Split")
def export_split(ctx, node):
    for i, top in enumerate(node.tops):
        ctx.add("Identity", [node.bottoms[0]], [top], name=f"{node.name}/{i}" if i else node.name)


def _reshape_to(ctx, node, bottom: str, top: str, keep_leading: int) -> None:
    """Reshape to the top's shape; the first ``keep_leading`` axes are copied (0) so batch stays dynamic."""
    target = [0] * keep_leading + list(ctx.shape(top)[keep_leading:])
    ctx.add("Reshape", [bottom, ctx.ints(f"{node.name}_shape", target)], [top], name=node.name)


@exporter("Flatten")
def export_flatten(ctx, node):
    shape = ctx.shape(node.bottoms[0])
    start = canonical_axis(node.attrs.axis, len(shape))
    end = canonical_axis(node.attrs.end_axis, len(shape))
    if end == len(shape) - 1 and start == 1:
        ctx.add("Flatten", [node.bottoms[0]], [node.tops[0]], name=node.name, axis=1)
        return
    _reshape_to(ctx, node, node.bottoms[0], node.tops[0], start)


@exporter("Reshape")
def export_reshape(ctx, node):
    a = node.attrs
    bottom, top = node.bottoms[0], node.tops[0]
    rank = len(ctx.shape(bottom))
    start = a.axis + rank + 1 if a.axis < 0 else a.axis
    # Axes before ``start`` are copied; inside, Caffe's 0 (copy) and -1 (infer) mean what ONNX's do.
    target = [0] * start + [d for d in a.shape] + list(ctx.shape(top)[start + len(a.shape):])
    if start == 0 and target and target[0] not in (0, -1):
        target = list(ctx.shape(top))
    ctx.add("Reshape", [bottom, ctx.ints(f"{node.name}_shape", target)], [top], name=node.name)


@exporter("Crop")
def export_crop(ctx, node):
    bottom, ref = node.bottoms
    shape, ref_shape = ctx.shape(bottom), ctx.shape(ref)
    offsets = CropSpec.offsets(node.attrs, shape, ref_shape)
    start = canonical_axis(node.attrs.axis, len(shape))
    axes = list(range(start, len(shape)))
    ctx.add("Slice", [bottom, ctx.ints(f"{node.name}_starts", [offsets[i] for i in axes]),
                      ctx.ints(f"{node.name}_ends", [offsets[i] + ref_shape[i] for i in axes]),
                      ctx.ints(f"{node.name}_axes", axes)], [node.tops[0]], name=node.name)


@exporter("Tile")
def export_tile(ctx, node):
    shape = ctx.shape(node.bottoms[0])
    axis = canonical_axis(node.attrs.axis, len(shape))
    repeats = [1] * len(shape)
    repeats[axis] = node.attrs.tiles
    ctx.add("Tile", [node.bottoms[0], ctx.ints(f"{node.name}_repeats", repeats)], [node.tops[0]], name=node.name)


REDUCE_OPS = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}


def reduce(ctx, op: str, x: str, axes: list[int], name: str, keepdims: int, output: list[str] | None = None) -> str:
    """A Reduce* node with axes as an input (ReduceSum from opset 13, all from 18) or attribute."""
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.add(op, [x, ctx.ints(f"{name}_axes", axes)], output, name=name, keepdims=keepdims)
    return ctx.add(op, [x], output, name=name, axes=axes, keepdims=keepdims)


@exporter("Reduction")
def export_reduction(ctx, node):
    a = node.attrs
    x, y = node.bottoms[0], node.tops[0]
    shape = ctx.shape(x)
    axis = canonical_axis(a.axis, len(shape))
    axes = list(range(axis, len(shape)))
    op = REDUCE_OPS[a.operation]
    if a.coeff == 1.0:
        reduce(ctx, op, x, axes, node.name, 0, [y])
        return
    r = reduce(ctx, op, x, axes, node.name, 0)
    ctx.add("Mul", [r, ctx.constant(f"{node.name}_coeff", a.coeff)], [y], name=f"{node.name}/coeff")


@exporter("ArgMax")
def export_argmax(ctx, node):
    a = node.attrs
    x, y = node.bottoms[0], node.tops[0]
    shape = ctx.shape(x)
    if a.axis is not None:
        axis = canonical_axis(a.axis, len(shape))
        values, indices = ctx.fresh(f"{node.name}_values"), ctx.fresh(f"{node.name}_indices")
        ctx.add("TopK", [x, ctx.ints(f"{node.name}_k", [a.top_k])], [values, indices], name=node.name, axis=axis)
        if a.out_max_val:
            ctx.add("Identity", [values], [y], name=f"{node.name}/values")
        else:
            ctx.add("Cast", [indices], [y], name=f"{node.name}/cast", to=1)
        return
    flat = ctx.add("Flatten", [x], name=f"{node.name}/flatten", axis=1)
    values, indices = ctx.fresh(f"{node.name}_values"), ctx.fresh(f"{node.name}_indices")
    ctx.add("TopK", [flat, ctx.ints(f"{node.name}_k", [a.top_k])], [values, indices], name=node.name, axis=1)
    idx = ctx.add("Cast", [indices], name=f"{node.name}/cast", to=1)
    parts = [idx, values] if a.out_max_val else [idx]
    target = [0, 1] + list(ctx.shape(y)[2:])
    shaped = [ctx.add("Reshape", [p, ctx.ints(f"{node.name}_shape", target)], name=f"{node.name}/reshape")
              for p in parts]
    if len(shaped) == 1:
        ctx.add("Identity", shaped, [y], name=f"{node.name}/out")
    else:
        ctx.add("Concat", shaped, [y], name=f"{node.name}/concat", axis=1)


@exporter("Eltwise")
def export_eltwise(ctx, node):
    a = node.attrs
    if a.operation == "PROD":
        x = node.bottoms[0]
        for i, b in enumerate(node.bottoms[1:], 1):
            x = ctx.add("Mul", [x, b], [node.tops[0]] if i == len(node.bottoms) - 1 else None, name=f"{node.name}/{i}")
        return
    if a.operation == "MAX":
        ctx.add("Max", list(node.bottoms), [node.tops[0]], name=node.name)
        return
    terms = []
    for i, b in enumerate(node.bottoms):
        c = a.coeffs[i] if a.coeffs else 1.0
        terms.append(b if c == 1.0 else ctx.add("Mul", [b, ctx.constant(f"{node.name}_coeff{i}", c)],
                                                  name=f"{node.name}/coeff{i}"))
    ctx.add("Sum", terms, [node.tops[0]], name=node.name)


@exporter("Softmax")
def export_softmax(ctx, node):
    axis = canonical_axis(node.attrs.axis, len(ctx.shape(node.bottoms[0])))
    ctx.add("Softmax", [node.bottoms[0]], [node.tops[0]], name=node.name, axis=axis)


@exporter("Parameter")
def export_parameter(ctx, node):
    ctx.add("Identity", [ctx.blob(node, 0, role="value")], [node.tops[0]], name=node.name)


@exporter("Embed")
def export_embed(ctx, node):
    x, y = node.bottoms[0], node.tops[0]
    idx = ctx.add("Cast", [x], name=f"{node.name}/index", to=7)
    out = ctx.add("Gather", [ctx.blob(node, 0), idx], None if node.attrs.bias_term else [y], name=node.name, axis=0)
    if node.attrs.bias_term:
        ctx.add("Add", [out, ctx.blob(node, 1)], [y], name=f"{node.name}/bias")


