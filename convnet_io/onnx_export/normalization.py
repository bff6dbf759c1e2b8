"""BatchNorm, Scale, Bias and MVN as ONNX."""
from __future__ import annotations

import numpy as np

from convnet_io.graph.layers.common import canonical_axis
from convnet_io.onnx_export.registry import exporter


@exporter("BatchNorm")
def export_batch_norm(ctx, node):
    if node.attrs.use_global_stats is False:
        raise ValueError("use_global_stats: false normalises with batch statistics, which an inference "
                         "export cannot do; export with stored statistics (use_global_stats unset or true)")
    mean, var, factor = ctx.blobs[node.name]
    f = float(factor.reshape(-1)[0])
    s = 0.0 if f == 0 else 1.0 / f  # Caffe's rule for the stored scale factor
    c = mean.size
    ctx.add("BatchNormalization",
            [node.bottoms[0], ctx.constant(f"{node.name}_gamma", np.ones(c)),
             ctx.constant(f"{node.name}_beta", np.zeros(c)),
             ctx.blob(node, 0, mean * s, role="mean"), ctx.blob(node, 1, var * s, role="var")],
            [node.tops[0]], name=node.name, epsilon=node.attrs.eps)


def _broadcast_shape(param_shape, ndim: int, axis: int) -> list[int]:
    return list(param_shape) + [1] * (ndim - axis - len(param_shape))


def _operand(ctx, node, bottom_shape, axis: int, second: str) -> str:
    """The second bottom reshaped to broadcast from ``axis`` (its own dims copied with 0s)."""
    other = ctx.shape(second)
    target = [0] * len(other) + [1] * (len(bottom_shape) - axis - len(other))
    if target == [0] * len(other):
        return second
    return ctx.add("Reshape", [second, ctx.ints(f"{node.name}_operand_shape", target)], name=f"{node.name}/operand")


def _scale_or_bias(ctx, node, op: str, first_role: str):
    a = node.attrs
    x, y = node.bottoms[0], node.tops[0]
    shape = ctx.shape(x)
    axis = canonical_axis(a.axis, len(shape)) if shape else 0
    blobs = ctx.blobs.get(node.name, [])
    if len(node.bottoms) == 2:
        factor = _operand(ctx, node, shape, axis, node.bottoms[1])
        bias_index = 0
    else:
        p = blobs[0]
        factor = ctx.blob(node, 0, p.reshape(_broadcast_shape(p.shape, len(shape), axis)), role=first_role)
        bias_index = 1
    has_bias = op == "Mul" and a.bias_term
    out = ctx.add(op, [x, factor], None if has_bias else [y], name=node.name)
    if has_bias:
        b = blobs[bias_index]
        bias = ctx.blob(node, bias_index, b.reshape(_broadcast_shape(b.shape, len(shape), axis)), role="bias")
        ctx.add("Add", [out, bias], [y], name=f"{node.name}/bias")


@exporter("Scale")
def export_scale(ctx, node):
    _scale_or_bias(ctx, node, "Mul", "scale")


@exporter("Bias")
def export_bias(ctx, node):
    _scale_or_bias(ctx, node, "Add", "bias")


def reduce_mean(ctx, x: str, axes: list[int], name: str) -> str:
    if ctx.opset >= 18:
        return ctx.add("ReduceMean", [x, ctx.ints(f"{name}_axes", axes)], name=name, keepdims=1)
    return ctx.add("ReduceMean", [x], name=name, axes=axes, keepdims=1)


@exporter("MVN")
def export_mvn(ctx, node):
    a = node.attrs
    x, y = node.bottoms[0], node.tops[0]
    ndim = len(ctx.shape(x))
    axes = list(range(1 if a.across_channels else 2, ndim))
    if not axes:
        # Each mean is over one value: Caffe's output is x - x (zeros, NaN kept).
        ctx.add("Sub", [x, x], [y], name=node.name)
        return
    mean = reduce_mean(ctx, x, axes, f"{node.name}/mean")
    centred = ctx.add("Sub", [x, mean], None if a.normalize_variance else [y], name=f"{node.name}/centre")
    if not a.normalize_variance:
        return
    # Caffe: var = E((x - Ex)^2); y = (x - Ex) / (sqrt(var) + eps).
    sq = ctx.add("Mul", [centred, centred], name=f"{node.name}/square")
    var = reduce_mean(ctx, sq, axes, f"{node.name}/variance")
    std = ctx.add("Sqrt", [var], name=f"{node.name}/std")
    den = ctx.add("Add", [std, ctx.constant(f"{node.name}_eps", a.eps)], name=f"{node.name}/eps")
    ctx.add("Div", [centred, den], [y], name=node.name)
