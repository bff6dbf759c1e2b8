"""More Caffe2 operators -> Caffe layers: the shape and identity operators of the model zoo's
image nets (Transpose, FlattenToVec, Squeeze/ExpandDims, ChannelShuffle, StopGradient), the
elementwise ones (Clip, Scale, Max) and FCTransposed."""
from __future__ import annotations

from typing import TYPE_CHECKING

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe2.fills import _set_filler
from convnet_io.caffe2.op import Op
from convnet_io.caffe2.operators import _all_but_first, _order, converter

if TYPE_CHECKING:
    from convnet_io.caffe2.listing import _Translator

_FLT_MAX = 3.4028234663852886e38  # Caffe2's Clip defaults: the float range


@converter("FCTransposed", args=("axis", "axis_w"), inputs=(3, 3), params=_all_but_first)
def _fc_transposed(t: _Translator, op: Op) -> None:
    """FCTransposed (X, W, b): Y = X W + b with W (K, N), which is Caffe's InnerProduct with
    ``transpose: true`` (its weight stored K x N)."""
    if op.get_int("axis_w", 1) != 1:
        raise op.arg_error("axis_w", "only axis_w 1 (a 2-D weight) is supported")
    w = t.weight(op, 1, rank=2)
    layer = t.layer(op, "InnerProduct", [t.bottom(op, 0)], t.weighted_name(op))
    p = layer.inner_product_param
    p.num_output = w.shape[1]
    p.transpose = True
    if op.get_int("axis", 1) != 1:
        p.axis = op.get_int("axis")
    _set_filler(p.weight_filler, w)
    _set_filler(p.bias_filler, t.init.get(op.inputs[2]))
    t.params(op, layer, op.inputs[1:])


@converter("FlattenToVec")
def _flatten_to_vec(t: _Translator, op: Op) -> None:
    """FlattenToVec: every value in one axis -> Caffe Reshape to shape [-1]."""
    t.layer(op, "Reshape", [t.bottom(op, 0)]).reshape_param.shape.dim.append(-1)


@converter("Transpose", args=("axes",))
def _transpose(t: _Translator, op: Op) -> None:
    """Transpose(axes) -> Permute (SSD's layer) with the same order. Caffe2's default, no axes,
    reverses the axes: that needs the rank, so it must be given."""
    axes = op.get_ints("axes")
    if not axes:
        raise op.error("needs axes:[...] (Caffe2's default reverses the axes; give them explicitly)")
    if sorted(axes) != list(range(len(axes))):
        raise op.arg_error("axes", f"axes {axes} must be a permutation of 0..{len(axes) - 1}")
    t.layer(op, "Permute", [t.bottom(op, 0)]).permute_param.order.extend(axes)


def _contiguous(op: Op, dims: list[int]) -> tuple[int, int]:
    if not dims:
        raise op.error("needs dims:[...]")
    ds = sorted(dims)
    if ds[0] < 0 or ds != list(range(ds[0], ds[0] + len(ds))):
        raise op.arg_error("dims", f"dims {dims} must be non-negative and consecutive (one Caffe Reshape)")
    return ds[0], len(ds)


@converter("Squeeze", args=("dims",))
def _squeeze(t: _Translator, op: Op) -> None:
    """Squeeze(dims) -> Reshape replacing those axes (each of size 1) by none: Caffe's Reshape
    with ``axis``, ``num_axes`` and an empty shape."""
    first, n = _contiguous(op, op.get_ints("dims") or [])
    p = t.layer(op, "Reshape", [t.bottom(op, 0)]).reshape_param
    p.axis, p.num_axes = first, n
    p.shape.SetInParent()


@converter("ExpandDims", args=("dims",))
def _expand_dims(t: _Translator, op: Op) -> None:
    """ExpandDims(dims) -> Reshape inserting size-1 axes at those output positions (num_axes 0)."""
    first, n = _contiguous(op, op.get_ints("dims") or [])
    p = t.layer(op, "Reshape", [t.bottom(op, 0)]).reshape_param
    p.axis, p.num_axes = first, 0
    p.shape.dim.extend([1] * n)


@converter("ChannelShuffle", args=("group", "order"))
def _channel_shuffle(t: _Translator, op: Op) -> None:
    """ChannelShuffle(group) -> ShuffleChannel: channels as (group, C / group), transposed, in both."""
    _order(op)
    group = op.get_int("group", 1)
    if group <= 0:
        raise op.arg_error("group", f"group {group} must be positive")
    t.layer(op, "ShuffleChannel", [t.bottom(op, 0)]).shuffle_channel_param.group = group


@converter("Clip", args=("min", "max"))
def _clip(t: _Translator, op: Op) -> None:
    """Clip(min, max) -> Clip; a bound not given is the float range's end, as in Caffe2."""
    p = t.layer(op, "Clip", [t.bottom(op, 0)]).clip_param
    p.min = op.get_float("min", -_FLT_MAX)
    p.max = op.get_float("max", _FLT_MAX)
    if p.min > p.max:
        raise op.error(f"min {p.min:g} is above max {p.max:g}")


@converter("Scale", args=("scale",))
def _scale(t: _Translator, op: Op) -> None:
    """Scale(scale): Y = scale * X -> Caffe Power with power 1 and that scale (Caffe's Scale
    layer is the learned per-channel one: Caffe2's Mul with broadcast)."""
    p = t.layer(op, "Power", [t.bottom(op, 0)]).power_param
    p.scale = op.get_float("scale", 1.0)


@converter("StopGradient")
def _stop_gradient(t: _Translator, op: Op) -> None:
    """StopGradient: the identity forward (convnet runs these nets for inference) -> Split."""
    t.layer(op, "Split", [t.bottom(op, 0)])


@converter("Max", inputs=(1, None))
def _max(t: _Translator, op: Op) -> None:
    """Max of same-shape inputs -> Eltwise MAX (one input: a copy)."""
    bottoms = [t.bottom(op, i) for i in range(len(op.inputs))]
    if len(bottoms) == 1:
        t.layer(op, "Split", bottoms)
    else:
        t.layer(op, "Eltwise", bottoms).eltwise_param.operation = caffe_pb2.EltwiseParameter.MAX
