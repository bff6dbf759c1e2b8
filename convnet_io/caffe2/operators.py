"""Caffe2 operators -> Caffe layers: one small function per op family, registered by op type."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe2.fills import _FILLERS, InitBlob, _set_filler
from convnet_io.caffe2.op import IGNORED_ARGS, Op

if TYPE_CHECKING:
    from convnet_io.caffe2.listing import _Translator


# ------------------------------------------------------------------------------------------------
# Converters: one small function per Caffe2 op family
# ------------------------------------------------------------------------------------------------



@dataclass(frozen=True)
class _Converter:
    fn: Callable[["_Translator", Op], None]
    args: frozenset[str]
    min_inputs: int
    max_inputs: int | None
    max_outputs: int  # Caffe2 outputs beyond the first (masks, scales) are dropped
    params: Callable[[Op, dict[str, InitBlob]], list[int]]


_CONVERTERS: dict[str, _Converter] = {}


def _no_params(op: Op, init: dict[str, InitBlob]) -> list[int]:
    return []


def _all_but_first(op: Op, init: dict[str, InitBlob]) -> list[int]:
    return list(range(1, len(op.inputs)))


def converter(*types: str, args: tuple[str, ...] = (), inputs: tuple[int, int | None] = (1, 1),
              max_outputs: int = 1, params: Callable[[Op, dict[str, InitBlob]], list[int]] = _no_params):
    """Register a function translating the Caffe2 op type(s) into Caffe layers."""

    def wrap(fn: Callable[["_Translator", Op], None]) -> Callable[["_Translator", Op], None]:
        for t in types:
            if t in _CONVERTERS or t in _FILLERS:
                raise ValueError(f"Caffe2 op {t!r} is registered twice")
            _CONVERTERS[t] = _Converter(fn, frozenset(args) | IGNORED_ARGS, inputs[0], inputs[1],
                                        max_outputs, params)
        return fn

    return wrap


def _order(op: Op) -> None:
    if op.get_str("order", "NCHW") != "NCHW":
        raise op.arg_error("order", f"order {op.get_str('order')} is not supported: Caffe layers are NCHW")


def _pair(op: Op, base: str, default: int | None) -> tuple[int, int] | None:
    """Caffe2's ``x``, ``xs:[h,w]`` or ``x_h``/``x_w`` argument forms of a 2-D size."""
    forms = [n for n in (base, base + "s", base + "_h", base + "_w") if op.has(n)]
    if op.has(base) and len(forms) > 1:
        raise op.arg_error(forms[1], f"give '{base}' or '{forms[1]}', not both")
    if op.has(base):
        v = op.get_int(base)
        return v, v
    if op.has(base + "s"):
        vs = op.get_ints(base + "s")
        if len(vs) != 2:
            raise op.arg_error(base + "s", f"'{base}s' needs 2 values (h, w); convnet supports 2-D ops")
        if op.has(base + "_h") or op.has(base + "_w"):
            raise op.arg_error(base + "s", f"give '{base}s' or '{base}_h'/'{base}_w', not both")
        return vs[0], vs[1]
    if op.has(base + "_h") or op.has(base + "_w"):
        h, w = op.get_int(base + "_h", default), op.get_int(base + "_w", default)
        if h is None or w is None:
            raise op.error(f"'{base}_h' and '{base}_w' must be given together")
        return h, w
    return None if default is None else (default, default)


_PAD_NAMES = ("pad_t", "pad_l", "pad_b", "pad_r")


def _pads(op: Op) -> tuple[int, int]:
    """(pad_h, pad_w) from ``pad``, ``pads:[t,l,b,r]`` or ``pad_t/pad_l/pad_b/pad_r``: Caffe pads
    both sides of an axis equally, so asymmetric pads have no Caffe layer."""
    given = [n for n in ("pad", "pads", *_PAD_NAMES) if op.has(n)]
    if not given:
        return 0, 0
    if "pad" in given and len(given) > 1:
        raise op.arg_error(given[1], f"give 'pad' or '{given[1]}', not both")
    if "pad" in given:
        p = op.get_int("pad")
        return p, p
    if "pads" in given:
        if len(given) > 1:
            raise op.arg_error(given[1], f"give 'pads' or '{given[1]}', not both")
        values = op.get_ints("pads")
        if len(values) != 4:
            raise op.arg_error("pads", "'pads' needs 4 values [t, l, b, r] for a 2-D op")
        t, l, b, r = values
        where = op.args["pads"].col
    else:
        t, l, b, r = (op.get_int(n, 0) for n in _PAD_NAMES)
        where = op.args[given[0]].col
    if t != b or l != r:
        raise op.error(f"asymmetric padding (top {t}, bottom {b}, left {l}, right {r}) is not supported: "
                       "Caffe pads both sides of an axis equally", where)
    return t, l


def _set_pair(p: Any, field_name: str, hw_names: tuple[str, str], value: tuple[int, int]) -> None:
    if value[0] == value[1]:
        getattr(p, field_name).append(value[0])
    else:
        setattr(p, hw_names[0], value[0])
        setattr(p, hw_names[1], value[1])


def _legacy_pad(op: Op, allowed: tuple[int, ...]) -> int:
    # caffe2_legacy.proto LegacyPadding: NOTSET 0, VALID 1, SAME 2, CAFFE_LEGACY_POOLING 3.
    v = op.get_int("legacy_pad", 0)
    if v not in allowed:
        names = {0: "NOTSET", 1: "VALID", 2: "SAME", 3: "CAFFE_LEGACY_POOLING"}
        raise op.arg_error("legacy_pad", f"legacy_pad {v} ({names.get(v, 'unknown')}) has no Caffe "
                           f"equivalent here (supported: {', '.join(str(a) for a in allowed)})")
    return v


_CONV_ARGS = ("kernel", "kernels", "kernel_h", "kernel_w", "stride", "strides", "stride_h", "stride_w",
              "pad", "pads", *_PAD_NAMES, "dilation", "dilations", "dilation_h", "dilation_w",
              "group", "order", "legacy_pad")


@converter("Conv", args=_CONV_ARGS, inputs=(2, 3), params=_all_but_first)
def _conv(t: "_Translator", op: Op) -> None:
    """Conv (X, W[, b]) -> Convolution; num_output and bias_term come from W and b."""
    _convolution(t, op, "Convolution")


@converter("ConvTranspose", args=(*_CONV_ARGS, "adj", "adj_h", "adj_w"), inputs=(2, 3), params=_all_but_first)
def _conv_transpose(t: "_Translator", op: Op) -> None:
    """ConvTranspose (X, W[, b]) -> Deconvolution; W is (C_in, C_out/group, kH, kW) in both."""
    if _pair(op, "adj", 0) != (0, 0):
        raise op.error("adj (output padding) is not supported: Caffe's Deconvolution has none",
                       op.args[next(n for n in ("adj", "adj_h", "adj_w") if op.has(n))].col)
    if _pair(op, "dilation", 1) != (1, 1):
        raise op.error("Caffe2's ConvTranspose has no dilation")
    if op.get_int("legacy_pad", 0) == 2:  # ConvTranspose sizes SAME its own way (conv_transpose_unpool_op_base.h)
        raise op.arg_error("legacy_pad", "legacy_pad SAME on ConvTranspose is not supported")
    _convolution(t, op, "Deconvolution")


def _convolution(t: "_Translator", op: Op, caffe_type: str) -> None:
    _order(op)
    w = t.weight(op, 1, rank=4)
    group = op.get_int("group", 1)
    if group <= 0:
        raise op.arg_error("group", f"group {group} must be positive")
    # Caffe2 takes a missing kernel from the filter's shape.
    kernel = _pair(op, "kernel", None) or (w.shape[2], w.shape[3])
    stride = _pair(op, "stride", 1)
    dilation = _pair(op, "dilation", 1)
    pad = _pads(op)
    legacy = _legacy_pad(op, (0, 1, 2))
    if legacy in (1, 2):  # VALID and SAME: Caffe2 ignores the pads; SAME's are set once shapes are known
        pad = (0, 0)
    if legacy == 2 and dilation != (1, 1):
        raise op.arg_error("legacy_pad", "Caffe2 refuses legacy_pad SAME with dilation")
    layer = t.layer(op, caffe_type, [t.bottom(op, 0)], t.weighted_name(op))
    if legacy == 2:
        t.same_ops.append((layer.name, op, kernel, stride))
    p = layer.convolution_param
    p.num_output = w.shape[0] if caffe_type == "Convolution" else w.shape[1] * group
    p.bias_term = len(op.inputs) == 3
    _set_pair(p, "kernel_size", ("kernel_h", "kernel_w"), kernel)
    if stride != (1, 1):
        _set_pair(p, "stride", ("stride_h", "stride_w"), stride)
    if pad != (0, 0):
        _set_pair(p, "pad", ("pad_h", "pad_w"), pad)
    if dilation != (1, 1):
        p.dilation.extend([dilation[0]] if dilation[0] == dilation[1] else dilation)
    if group != 1:
        p.group = group
    _set_filler(p.weight_filler, w)
    if p.bias_term:
        _set_filler(p.bias_filler, t.init.get(op.inputs[2]))
    t.params(op, layer, op.inputs[1:])


@converter("FC", args=("axis", "axis_w"), inputs=(3, 3), params=_all_but_first)
def _fc(t: "_Translator", op: Op) -> None:
    """FC (X, W, b) -> InnerProduct: Y = X W^T + b with X flattened from ``axis``, W (N, K) in both.

    Caffe keeps the axes before ``axis`` where Caffe2 folds them into one; the values are the same."""
    if op.get_int("axis_w", 1) != 1:
        raise op.arg_error("axis_w", "only axis_w 1 (a 2-D weight) is supported")
    w = t.weight(op, 1, rank=2)
    layer = t.layer(op, "InnerProduct", [t.bottom(op, 0)], t.weighted_name(op))
    p = layer.inner_product_param
    p.num_output = w.shape[0]
    if op.get_int("axis", 1) != 1:
        p.axis = op.get_int("axis")
    _set_filler(p.weight_filler, w)
    _set_filler(p.bias_filler, t.init.get(op.inputs[2]))
    t.params(op, layer, op.inputs[1:])


@converter("Relu")
def _relu(t: "_Translator", op: Op) -> None:
    t.layer(op, "ReLU", [t.bottom(op, 0)])


@converter("LeakyRelu", args=("alpha",))
def _leaky_relu(t: "_Translator", op: Op) -> None:
    layer = t.layer(op, "ReLU", [t.bottom(op, 0)])
    layer.relu_param.negative_slope = op.get_float("alpha", 0.01)  # Caffe2's default alpha


@converter("PRelu", args=("order",), inputs=(2, 2), params=lambda op, init: [1])
def _prelu(t: "_Translator", op: Op) -> None:
    """PRelu (X, slope) -> PReLU; a one-element slope is Caffe's channel_shared."""
    _order(op)
    slope = t.init.get(op.inputs[1])
    layer = t.layer(op, "PReLU", [t.bottom(op, 0)], t.weighted_name(op))
    if slope is not None:
        if len(slope.shape) != 1:
            raise op.error(f"slope '{slope.name}' must be 1-D, its init op gives {list(slope.shape)}",
                           op.input_cols[1])
        if slope.shape == (1,):
            layer.prelu_param.channel_shared = True
        _set_filler(layer.prelu_param.filler, slope)
    t.params(op, layer, op.inputs[1:])


@converter("Sigmoid")
def _sigmoid(t: "_Translator", op: Op) -> None:
    t.layer(op, "Sigmoid", [t.bottom(op, 0)])


@converter("Tanh")
def _tanh(t: "_Translator", op: Op) -> None:
    t.layer(op, "TanH", [t.bottom(op, 0)])


@converter("Elu", args=("alpha",))
def _elu(t: "_Translator", op: Op) -> None:
    t.layer(op, "ELU", [t.bottom(op, 0)]).elu_param.alpha = op.get_float("alpha", 1.0)


@converter("LRN", args=("size", "alpha", "beta", "bias", "order"), max_outputs=2)
def _lrn(t: "_Translator", op: Op) -> None:
    """LRN -> Caffe LRN ACROSS_CHANNELS. Both divide alpha by size: Caffe2's
    local_response_normalization_op.cc computes scale = bias + (alpha / size) * sum(x^2) (it is
    "copied from my Caffe implementation"), Caffe scale = k + (alpha / local_size) * sum, so the
    numbers carry over unchanged. The scale output Caffe2 keeps for the gradient is dropped."""
    _order(op)
    if not op.has("size"):
        raise op.error("needs size:N (Caffe2 has no default size)")
    layer = t.layer(op, "LRN", [t.bottom(op, 0)])
    p = layer.lrn_param
    p.local_size = op.get_int("size")
    p.alpha = op.get_float("alpha", 0.0)  # Caffe2's defaults: alpha 0, beta 0, bias 1
    p.beta = op.get_float("beta", 0.0)
    p.k = op.get_float("bias", 1.0)
    p.norm_region = caffe_pb2.LRNParameter.ACROSS_CHANNELS


_POOL_ARGS = ("kernel", "kernels", "kernel_h", "kernel_w", "stride", "strides", "stride_h", "stride_w",
              "pad", "pads", *_PAD_NAMES, "global_pooling", "legacy_pad", "order")


@converter("MaxPool", args=_POOL_ARGS)
def _max_pool(t: "_Translator", op: Op) -> None:
    _pooling(t, op, caffe_pb2.PoolingParameter.MAX)


@converter("AveragePool", args=(*_POOL_ARGS, "count_include_pad"))
def _average_pool(t: "_Translator", op: Op) -> None:
    _pooling(t, op, caffe_pb2.PoolingParameter.AVE)


def _pooling(t: "_Translator", op: Op, method: int) -> None:
    """Pooling. Caffe2 sizes the output with floor division, Caffe with ceil; legacy_pad:3
    (CAFFE_LEGACY_POOLING) is Caffe2's copy of Caffe's rule (ceil, then drop a last window that
    starts in the padding), so it maps to round_mode CEIL and everything else to FLOOR."""
    _order(op)
    glob = op.get_bool("global_pooling")
    kernel = _pair(op, "kernel", None)
    stride = _pair(op, "stride", 1)
    pad = _pads(op)
    legacy = _legacy_pad(op, (0, 1, 2, 3))
    if legacy in (1, 2):  # VALID and SAME: Caffe2 ignores the pads; SAME's are set once shapes are known
        pad = (0, 0)
    if (method == caffe_pb2.PoolingParameter.AVE and pad != (0, 0) and not glob
            and not op.get_bool("count_include_pad")):
        # Caffe's AVE divides by the window clipped to the padded map, Caffe2 (by default) by the
        # part inside the image: the same only without padding.
        raise op.error("average pooling with padding divides by the window including the padding in "
                       "Caffe; Caffe2 does so only with count_include_pad:1")
    if glob and kernel is not None:
        raise op.error("global_pooling takes no kernel", op.args["global_pooling"].col)
    if not glob and kernel is None:
        raise op.error("needs kernel:K (or kernels:[h,w], kernel_h/kernel_w) or global_pooling:1")
    layer = t.layer(op, "Pooling", [t.bottom(op, 0)])
    p = layer.pooling_param
    p.pool = method
    if glob:
        p.global_pooling = True
    else:
        if kernel[0] == kernel[1]:
            p.kernel_size = kernel[0]
        else:
            p.kernel_h, p.kernel_w = kernel
    if stride != (1, 1):
        if stride[0] == stride[1]:
            p.stride = stride[0]
        else:
            p.stride_h, p.stride_w = stride
    if pad != (0, 0):
        if pad[0] == pad[1]:
            p.pad = pad[0]
        else:
            p.pad_h, p.pad_w = pad
    P = caffe_pb2.PoolingParameter
    p.round_mode = P.CEIL if legacy == 3 else P.FLOOR
    if legacy == 3 and method == P.AVE and pad != (0, 0) and not glob:
        t.same_ops.append((layer.name, op, kernel, stride))  # checked once sizes are known
    if legacy == 2 and not glob:
        t.same_ops.append((layer.name, op, kernel, stride))


@converter("Dropout", args=("ratio", "is_test"), max_outputs=2)
def _dropout(t: "_Translator", op: Op) -> None:
    """Dropout -> Dropout. Both scale by 1/(1-ratio) while training and pass through at test;
    the mask output is dropped."""
    op.get_bool("is_test")
    t.layer(op, "Dropout", [t.bottom(op, 0)]).dropout_param.dropout_ratio = op.get_float("ratio", 0.5)


@converter("Softmax", args=("axis",))
def _softmax(t: "_Translator", op: Op) -> None:
    """Softmax -> Softmax. Caffe2 normalises over every axis from ``axis`` on, Caffe over ``axis``
    only: the same while the later axes are 1, which is checked once shapes are known."""
    layer = t.layer(op, "Softmax", [t.bottom(op, 0)])
    if op.get_int("axis", 1) != 1:
        layer.softmax_param.axis = op.get_int("axis")
    t.softmax_ops.append((layer.name, op))


@converter("Concat", args=("axis", "order", "add_axis"), inputs=(1, None), max_outputs=2)
def _concat(t: "_Translator", op: Op) -> None:
    """Concat -> Concat; Caffe2's split_info output is dropped."""
    if op.get_bool("add_axis"):
        raise op.arg_error("add_axis", "add_axis:1 is not supported")
    if op.has("axis"):
        axis = op.get_int("axis")
    else:
        _order(op)
        axis = 1
    layer = t.layer(op, "Concat", [t.bottom(op, i) for i in range(len(op.inputs))])
    if axis != 1:
        layer.concat_param.axis = axis


@converter("Sum", inputs=(1, None))
def _sum(t: "_Translator", op: Op) -> None:
    bottoms = [t.bottom(op, i) for i in range(len(op.inputs))]
    if len(bottoms) == 1:  # a sum of one blob is a copy
        t.layer(op, "Split", bottoms)
    else:
        t.layer(op, "Eltwise", bottoms).eltwise_param.operation = caffe_pb2.EltwiseParameter.SUM


def _broadcast_param(op: Op, init: dict[str, InitBlob]) -> list[int]:
    return [1] if op.get_bool("broadcast") and op.inputs[1] in init else []


@converter("Mul", "Add", args=("broadcast", "axis"), inputs=(2, 2), params=_broadcast_param)
def _mul_add(t: "_Translator", op: Op) -> None:
    """Mul/Add. Same-shape operands -> Eltwise PROD/SUM. With broadcast:1, B matches the axes of A
    from ``axis`` on -> Scale/Bias: B as a second bottom, or as the layer's parameter when B comes
    from an init op. Caffe2's default (no axis) matches B to A's last axes: axis -rank(B)."""
    mul = op.type == "Mul"
    if not op.get_bool("broadcast"):
        if op.has("axis"):
            raise op.arg_error("axis", "axis needs broadcast:1")
        layer = t.layer(op, "Eltwise", [t.bottom(op, 0), t.bottom(op, 1)])
        layer.eltwise_param.operation = (caffe_pb2.EltwiseParameter.PROD if mul else caffe_pb2.EltwiseParameter.SUM)
        return
    caffe_type = "Scale" if mul else "Bias"
    b = t.init.get(op.inputs[1])
    if b is not None:
        axis = op.get_int("axis", -len(b.shape))
        layer = t.layer(op, caffe_type, [t.bottom(op, 0)], t.weighted_name(op))
        p = layer.scale_param if mul else layer.bias_param
        p.axis, p.num_axes = axis, len(b.shape)
        _set_filler(p.filler, b)
        t.params(op, layer, op.inputs[1:])
        return
    if not op.has("axis"):
        raise op.error(f"broadcast:1 with a computed B '{op.inputs[1]}' needs axis:N "
                       "(the axis of A where B's shape starts)")
    layer = t.layer(op, caffe_type, [t.bottom(op, 0), t.bottom(op, 1)])
    (layer.scale_param if mul else layer.bias_param).axis = op.get_int("axis")


@converter("SpatialBN", args=("epsilon", "is_test", "order", "momentum"), inputs=(5, 5), max_outputs=5,
           params=_all_but_first)
def _spatial_bn(t: "_Translator", op: Op) -> None:
    """SpatialBN (X, scale, bias, mean, var) -> BatchNorm + Scale: Caffe splits batch normalisation
    into a BatchNorm layer (mean, var and a scale factor, normalising only) and a Scale layer with
    bias_term (the learned scale and shift). Training outputs (running stats) are dropped."""
    _order(op)
    op.get_bool("is_test")
    name = t.weighted_name(op)
    bn = t.layer(op, "BatchNorm", [t.bottom(op, 0)], name)
    bn.batch_norm_param.use_global_stats = True
    bn.batch_norm_param.eps = op.get_float("epsilon", 1e-5)
    if op.has("momentum"):  # running = momentum * running + (1 - momentum) * batch, as Caffe's
        bn.batch_norm_param.moving_average_fraction = op.get_float("momentum")
    t.params(op, bn, op.inputs[3:5])  # Caffe's third BatchNorm blob (the factor) has no Caffe2 blob
    top = op.outputs[0]
    scale = t.layer(op, "Scale", [top], t.unique(f"{name}_scale"))
    scale.scale_param.bias_term = True
    _set_filler(scale.scale_param.filler, t.init.get(op.inputs[1]))
    _set_filler(scale.scale_param.bias_filler, t.init.get(op.inputs[2]))
    t.params(op, scale, op.inputs[1:3])


@converter("Flatten", args=("axis",))
def _flatten(t: "_Translator", op: Op) -> None:
    """Flatten -> Flatten: with axis 1 both give (N, C*H*W)."""
    if op.get_int("axis", 1) != 1:
        raise op.arg_error("axis", "only axis 1 is supported (Caffe2 folds the leading axes, Caffe keeps them)")
    t.layer(op, "Flatten", [t.bottom(op, 0)])


@converter("Reshape", args=("shape",), max_outputs=2)
def _reshape(t: "_Translator", op: Op) -> None:
    """Reshape(shape) -> Reshape: 0 copies the input's dim and -1 is inferred in both; the old_shape
    output is dropped."""
    shape = op.get_ints("shape")
    if shape is None:
        raise op.error("needs shape:[...] (a shape given as a second input is not supported)")
    t.layer(op, "Reshape", [t.bottom(op, 0)]).reshape_param.shape.dim.extend(shape)


@converter("Copy", "Alias")
def _copy(t: "_Translator", op: Op) -> None:
    t.layer(op, "Split", [t.bottom(op, 0)])


# Registered on import: the shape, identity and elementwise operators beyond these families.
from convnet_io.caffe2 import operators_extra  # noqa: F401
