"""Element-wise layers as ONNX."""
from __future__ import annotations

import math

from convnet_io.onnx_export.registry import exporter


def _single(node):
    return node.bottoms[0], node.tops[0]


@exporter("ReLU")
def export_relu(ctx, node):
    x, y = _single(node)
    if node.attrs.negative_slope:
        ctx.add("LeakyRelu", [x], [y], name=node.name, alpha=node.attrs.negative_slope)
    else:
        ctx.add("Relu", [x], [y], name=node.name)


@exporter("PReLU")
def export_prelu(ctx, node):
    x, y = _single(node)
    slope = ctx.blobs[node.name][0]
    ndim = len(ctx.shape(x))
    shaped = slope.reshape([-1] + [1] * (ndim - 2)) if slope.size > 1 else slope.reshape([1])
    ctx.add("PRelu", [x, ctx.blob(node, 0, shaped, role="slope")], [y], name=node.name)


@exporter("ELU")
def export_elu(ctx, node):
    x, y = _single(node)
    ctx.add("Elu", [x], [y], name=node.name, alpha=node.attrs.alpha)


SIMPLE = {"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs", "BNLL": "Softplus"}


@exporter(*SIMPLE)
def export_simple(ctx, node):
    x, y = _single(node)
    ctx.add(SIMPLE[node.type], [x], [y], name=node.name)


def _affine(ctx, node, x, scale: float, shift: float, final: str | None = None) -> str:
    """scale * x + shift with the trivial parts left out; writes ``final`` when given."""
    steps = []
    if scale != 1.0:
        steps.append(("Mul", scale, "scale"))
    if shift != 0.0:
        steps.append(("Add", shift, "shift"))
    if not steps:
        return ctx.add("Identity", [x], [final], name=node.name) if final else x
    for i, (op, value, role) in enumerate(steps):
        out = [final] if final and i == len(steps) - 1 else None
        x = ctx.add(op, [x, ctx.constant(f"{node.name}_{role}", value)], out, name=f"{node.name}/{role}")
    return x


@exporter("Power")
def export_power(ctx, node):
    a = node.attrs
    x, y = _single(node)
    if a.power == 1.0:
        _affine(ctx, node, x, a.scale, a.shift, final=y)
        return
    base = _affine(ctx, node, x, a.scale, a.shift)
    ctx.add("Pow", [base, ctx.constant(f"{node.name}_power", a.power)], [y], name=node.name)


@exporter("Exp")
def export_exp(ctx, node):
    a = node.attrs
    x, y = _single(node)
    log_base = 1.0 if a.base == -1 else math.log(a.base)
    inner = _affine(ctx, node, x, a.scale * log_base, a.shift * log_base)
    ctx.add("Exp", [inner], [y], name=node.name)


@exporter("Log")
def export_log(ctx, node):
    a = node.attrs
    x, y = _single(node)
    inner = _affine(ctx, node, x, a.scale, a.shift)
    if a.base == -1:
        ctx.add("Log", [inner], [y], name=node.name)
        return
    log = ctx.add("Log", [inner], name=node.name)
    ctx.add("Mul", [log, ctx.constant(f"{node.name}_base_scale", 1.0 / math.log(a.base))], [y],
            name=f"{node.name}/base")


@exporter("Threshold")
def export_threshold(ctx, node):
    x, y = _single(node)
    above = ctx.add("Greater", [x, ctx.constant(f"{node.name}_threshold", node.attrs.threshold)], name=node.name)
    ctx.add("Cast", [above], [y], name=f"{node.name}/cast", to=1)


@exporter("Clip")
def export_clip(ctx, node):
    x, y = _single(node)
    ctx.add("Clip", [x, ctx.constant(f"{node.name}_min", node.attrs.min),
                     ctx.constant(f"{node.name}_max", node.attrs.max)], [y], name=node.name)


@exporter("Swish")
def export_swish(ctx, node):
    x, y = _single(node)
    z = _affine(ctx, node, x, node.attrs.beta, 0.0)
    s = ctx.add("Sigmoid", [z], name=f"{node.name}/sigmoid")
    ctx.add("Mul", [x, s], [y], name=node.name)


@exporter("Dropout")
def export_dropout(ctx, node):
    # Inference: identity (Caffe scales at TRAIN), or a (1 - ratio) scale without scale_train.
    x, y = _single(node)
    if node.attrs.scale_train:
        ctx.add("Identity", [x], [y], name=node.name)
    else:
        ctx.add("Mul", [x, ctx.constant(f"{node.name}_keep", 1.0 - node.attrs.ratio)], [y], name=node.name)


