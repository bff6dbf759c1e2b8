"""Caffe2 op listings -> a Caffe NetParameter -> the same Graph a prototxt gives.

A listing is the text form of a Caffe2 net, one op a line::

    op: Conv (data conv1_w conv1_b)->(conv1) stride:4 pad:0 kernel:11 order:NCHW

Each op becomes the Caffe layer(s) with the same semantics and ``build_graph`` does validation and
shape inference, exactly as for a prototxt; nothing here infers a shape. Caffe2 keeps a model as an
init net (fill ops that create the parameters) and a predict net: the fill ops give the parameter
shapes the predict ops do not state (num_output, bias_term) and become the layers' Caffe fillers.

Naming lets one .caffemodel serve both definitions: a layer with weights is named after its weight
blob less the ``_w`` suffix (``conv1_w`` -> ``conv1``), its Caffe blobs in Caffe's order; any other
layer after its first output, plus ``_<op type>`` when that name is taken (``conv1_relu``). Blob
names stay as written, so in-place ops stay in place.

Besides ``op:`` lines a listing may hold ``net: NAME`` headers, ``# comments`` and ``input: BLOB
N,C,H,W`` lines giving an external input's default shape.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .builder import build_graph
from .errors import ConvnetError, LayerError, ParseError
from .graph import Graph, Shape
from .proto import caffe_pb2

# ------------------------------------------------------------------------------------------------
# Reading the text
# ------------------------------------------------------------------------------------------------

_OP_LINE = re.compile(r"^\s*op:\s*(?P<type>[A-Za-z_]\w*)\s*\((?P<ins>[^()]*)\)\s*->\s*"
                      r"\((?P<outs>[^()]*)\)(?P<rest>.*)$")
_ARG = re.compile(r"\s*(?P<key>[A-Za-z_]\w*)\s*:\s*(?P<val>\[[^\]]*\]|[^\s\[\]]+)")
_INPUT_LINE = re.compile(r"^\s*input:\s*(?P<name>[^\s,]+)\s+(?P<dims>\d+(?:\s*[,x]\s*\d+)*)\s*$")
_INT = re.compile(r"^[+-]?\d+$")
_BLOB = re.compile(r"[^\s,]+")


@dataclass
class Arg:
    name: str
    value: Any  # int, float, str, or a list of those
    text: str
    col: int


@dataclass
class Op:
    """One ``op:`` line: type, blobs and arguments, each with its 1-based column."""

    type: str
    inputs: list[str]
    outputs: list[str]
    args: dict[str, Arg]
    path: str
    line: int
    col: int
    input_cols: list[int] = field(default_factory=list)
    output_cols: list[int] = field(default_factory=list)

    def error(self, message: str, col: int | None = None) -> ParseError:
        return ParseError(self.path, self.line, col or self.col, f"{self.type}: {message}")

    def arg_error(self, name: str, message: str) -> ParseError:
        return self.error(message, self.args[name].col)

    # -- typed arguments ------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.args

    def get_int(self, name: str, default: int | None = None) -> int | None:
        a = self.args.get(name)
        if a is None:
            return default
        v = _as_int(a.value)
        if v is None:
            raise self.arg_error(name, f"argument '{name}' must be an integer, got '{a.text}'")
        return v

    def get_float(self, name: str, default: float | None = None) -> float | None:
        a = self.args.get(name)
        if a is None:
            return default
        if isinstance(a.value, (int, float)):
            return float(a.value)
        raise self.arg_error(name, f"argument '{name}' must be a number, got '{a.text}'")

    def get_ints(self, name: str) -> list[int] | None:
        a = self.args.get(name)
        if a is None:
            return None
        values = a.value if isinstance(a.value, list) else [a.value]
        out = [_as_int(v) for v in values]
        if any(v is None for v in out):
            raise self.arg_error(name, f"argument '{name}' must be a list of integers, got '{a.text}'")
        return out  # type: ignore[return-value]

    def get_str(self, name: str, default: str | None = None) -> str | None:
        a = self.args.get(name)
        return default if a is None else str(a.value)

    def get_bool(self, name: str, default: bool = False) -> bool:
        v = self.get_int(name, int(default))
        if v not in (0, 1):
            raise self.arg_error(name, f"argument '{name}' must be 0 or 1, got {v}")
        return bool(v)


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return int(v.lower() == "true")
    return None


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _value(text: str) -> Any:
    if text.startswith("["):
        items = [s for s in re.split(r"[,\s]+", text[1:-1]) if s]
        return [_scalar(s) for s in items]
    return _scalar(text)


def _parse_op(m: re.Match, path: str, lineno: int) -> Op:
    ins = [(t.group(), m.start("ins") + t.start() + 1) for t in _BLOB.finditer(m.group("ins"))]
    outs = [(t.group(), m.start("outs") + t.start() + 1) for t in _BLOB.finditer(m.group("outs"))]
    op = Op(m.group("type"), [b for b, _ in ins], [b for b, _ in outs], {}, path, lineno,
            m.start("type") + 1, [c for _, c in ins], [c for _, c in outs])
    rest, base, pos = m.group("rest"), m.start("rest"), 0
    while rest[pos:].strip():
        a = _ARG.match(rest, pos)
        if a is None:
            col = base + pos + len(rest[pos:]) - len(rest[pos:].lstrip()) + 1
            raise ParseError(path, lineno, col, f"{op.type}: malformed argument "
                             f"'{rest[pos:].split()[0]}' (expected key:value, key:[a,b,...])")
        key, col = a.group("key"), base + a.start("key") + 1
        if key in op.args:
            raise ParseError(path, lineno, col, f"{op.type}: argument '{key}' is given twice")
        op.args[key] = Arg(key, _value(a.group("val")), a.group("val"), col)
        pos = a.end()
    if not op.outputs:
        raise op.error("an op needs at least one output")
    return op


@dataclass
class _Listing:
    ops: list[Op]
    inputs: dict[str, tuple[Shape, int]]  # `input:` lines: blob -> (shape, line)
    name: str


def _read(text: str, path: str) -> _Listing:
    ops: list[Op] = []
    inputs: dict[str, tuple[Shape, int]] = {}
    headers: list[tuple[int, str]] = []  # (index of the next op, net name)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        s = line.strip()
        if not s or s.startswith("```"):  # blank, comment, or the fence of a pasted listing
            continue
        if s.startswith("net:"):
            headers.append((len(ops), s[4:].strip().strip("-").strip()))
        elif s.startswith("op:"):
            m = _OP_LINE.match(line)
            if m is None:
                raise ParseError(path, lineno, line.index("op:") + 1,
                                 "malformed op line (expected `op: Type (inputs)->(outputs) key:value ...`)")
            ops.append(_parse_op(m, path, lineno))
        elif s.startswith("input:"):
            m = _INPUT_LINE.match(line)
            if m is None:
                raise ParseError(path, lineno, line.index("input:") + 1,
                                 "malformed input line (expected `input: BLOB N,C,H,W`)")
            shape = tuple(int(d) for d in re.split(r"\s*[,x]\s*", m.group("dims")))
            if any(d <= 0 for d in shape):
                raise ParseError(path, lineno, m.start("dims") + 1, f"input shape {list(shape)} must be positive")
            if m.group("name") in inputs:
                raise ParseError(path, lineno, m.start("name") + 1, f"input '{m.group('name')}' is given twice")
            inputs[m.group("name")] = (shape, lineno)
        else:
            raise ParseError(path, lineno, len(line) - len(line.lstrip()) + 1,
                             "expected an `op:`, `net:` or `input:` line")
    # The net is named by the header of the section holding the first predict (non-fill) op.
    first = next((i for i, op in enumerate(ops) if op.type not in _FILLERS), 0)
    name = ""
    for at, header in headers:
        if at <= first and header:
            name = header
    return _Listing(ops, inputs, name or Path(path).stem)


# ------------------------------------------------------------------------------------------------
# Init ops: parameter shapes and Caffe fillers
# ------------------------------------------------------------------------------------------------


@dataclass
class InitBlob:
    """A blob created by a fill op: its shape and the Caffe filler that draws it the same way."""

    name: str
    shape: Shape
    filler: dict[str, Any] | None
    op: Op


def _gaussian(op: Op) -> dict[str, Any]:
    return {"type": "gaussian", "mean": op.get_float("mean", 0.0), "std": op.get_float("std", 1.0)}


def _given(op: Op) -> dict[str, Any] | None:
    # Caffe has no filler for explicit values; equal values are a constant, others are weights.
    values = op.args["values"].value if op.has("values") else []
    values = values if isinstance(values, list) else [values]
    if any(not isinstance(v, (int, float)) for v in values):
        raise op.arg_error("values", "argument 'values' must be a list of numbers")
    if values and len(set(values)) == 1:
        return {"type": "constant", "value": float(values[0])}
    return None


def _constant(op: Op) -> dict[str, Any]:
    if op.get_int("dtype", 1) != 1:
        raise op.arg_error("dtype", "only dtype 1 (FLOAT) can be a Caffe parameter")
    return {"type": "constant", "value": op.get_float("value", 0.0)}


# Caffe2 filler_op.h: XavierFill is U(+-sqrt(3/fan_in)), fan_in = numel/dim(0), which is Caffe's
# xavier with FAN_IN; MSRAFill is N(0, sqrt(2/fan_out)), fan_out = numel/dim(1): Caffe's msra FAN_OUT.
_FILLERS: dict[str, tuple[frozenset[str], Callable[[Op], dict[str, Any] | None]]] = {
    "GaussianFill": (frozenset({"shape", "mean", "std"}), _gaussian),
    "XavierFill": (frozenset({"shape"}), lambda op: {"type": "xavier", "variance_norm": "FAN_IN"}),
    "MSRAFill": (frozenset({"shape"}), lambda op: {"type": "msra", "variance_norm": "FAN_OUT"}),
    "ConstantFill": (frozenset({"shape", "value", "dtype"}), _constant),
    "UniformFill": (frozenset({"shape", "min", "max"}),
                    lambda op: {"type": "uniform", "min": op.get_float("min", 0.0), "max": op.get_float("max", 1.0)}),
    "GivenTensorFill": (frozenset({"shape", "values"}), _given),
}


def _init_blob(op: Op) -> InitBlob:
    allowed, make = _FILLERS[op.type]
    _check_args(op, allowed)
    if op.inputs:
        raise op.error("fill ops with inputs (input_as_shape) are not supported: give shape:[...]",
                       op.input_cols[0])
    if len(op.outputs) != 1:
        raise op.error("a fill op writes exactly one blob", op.output_cols[-1])
    shape = op.get_ints("shape")
    if shape is None:
        raise op.error(f"'{op.outputs[0]}' needs shape:[...]")
    if any(d <= 0 for d in shape):
        raise op.arg_error("shape", f"shape {shape} must be positive")
    filler = make(op)
    if op.type == "GivenTensorFill" and op.has("values"):
        n = len(op.args["values"].value) if isinstance(op.args["values"].value, list) else 1
        count = 1
        for d in shape:
            count *= d
        if n != count:
            raise op.arg_error("values", f"{n} values for shape {shape} ({count} elements)")
    return InitBlob(op.outputs[0], tuple(shape), filler, op)


def _set_filler(msg: Any, init: InitBlob | None) -> None:
    if init is None or init.filler is None:
        return
    for key, value in init.filler.items():
        if key == "variance_norm":
            value = caffe_pb2.FillerParameter.VarianceNorm.Value(value)
        setattr(msg, key, value)


# ------------------------------------------------------------------------------------------------
# Converters: one small function per Caffe2 op family
# ------------------------------------------------------------------------------------------------

_IGNORED_ARGS = frozenset({"engine"})  # a Caffe2 kernel choice; the result is the same


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
            _CONVERTERS[t] = _Converter(fn, frozenset(args) | _IGNORED_ARGS, inputs[0], inputs[1],
                                        max_outputs, params)
        return fn

    return wrap


def _check_args(op: Op, allowed: frozenset[str]) -> None:
    for name, a in op.args.items():
        if name not in allowed:
            supported = ", ".join(sorted(allowed - _IGNORED_ARGS)) or "none"
            raise op.error(f"unknown or unsupported argument '{name}' (supported: {supported})", a.col)


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
    if _legacy_pad(op, (0, 1)) == 1:  # VALID: Caffe2 ignores the pads
        pad = (0, 0)
    layer = t.layer(op, caffe_type, [t.bottom(op, 0)], t.weighted_name(op))
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
    legacy = _legacy_pad(op, (0, 1, 3))
    if legacy == 1:  # VALID: Caffe2 ignores the pads
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


# ------------------------------------------------------------------------------------------------
# The translation
# ------------------------------------------------------------------------------------------------

_PARAM_SUFFIXES = ("_slope", "_w", "_s", "_b")


def _layer_name_of(blob: str) -> str:
    for suffix in _PARAM_SUFFIXES:
        if blob.endswith(suffix) and len(blob) > len(suffix):
            return blob[: -len(suffix)]
    return blob


@dataclass
class _ParamUse:
    blob: str
    layer: str
    index: int
    op: Op


class _Translator:
    """Turns the predict ops into Caffe layers, one converter call per op."""

    def __init__(self, listing: _Listing, path: str):
        self.path = path
        self.init: dict[str, InitBlob] = {}
        self.predict: list[Op] = []
        for op in listing.ops:
            if op.type in _FILLERS:
                blob = _init_blob(op)
                if blob.name in self.init:
                    raise op.error(f"'{blob.name}' is already filled on line {self.init[blob.name].op.line}",
                                   op.output_cols[0])
                self.init[blob.name] = blob
            else:
                self.predict.append(op)
        self.layers: list[Any] = []
        self.layer_ops: dict[str, Op] = {}
        self.uses: list[_ParamUse] = []
        self.softmax_ops: list[tuple[str, Op]] = []
        self.dropped: dict[str, Op] = {}
        self.used_names: set[str] = set()
        self.weighted: dict[int, str] = {}
        self.shared: set[str] = set()
        self.inputs: list[str] = []
        self._plan()

    # -- before translating: names of weighted layers, external inputs ---------------------------
    def _plan(self) -> None:
        counts: dict[str, int] = {}
        written: set[str] = set()
        for op in self.predict:
            conv = _CONVERTERS.get(op.type)
            if conv is None:
                raise op.error(f"unknown op type '{op.type}'. Supported: "
                               + ", ".join(sorted([*_CONVERTERS, *_FILLERS])))
            _check_args(op, conv.args)
            n = len(op.inputs)
            if n < conv.min_inputs or (conv.max_inputs is not None and n > conv.max_inputs):
                want = (f"{conv.min_inputs}" if conv.max_inputs == conv.min_inputs else
                        f"at least {conv.min_inputs}" if conv.max_inputs is None else
                        f"{conv.min_inputs} to {conv.max_inputs}")
                raise op.error(f"takes {want} input(s), got {n}")
            if len(op.outputs) > conv.max_outputs:
                raise op.error(f"takes at most {conv.max_outputs} output(s), got {len(op.outputs)}",
                               op.output_cols[conv.max_outputs])
            params = conv.params(op, self.init)
            if params:
                self.weighted[id(op)] = self.unique(_layer_name_of(op.inputs[params[0]]))
            for i in params:
                counts[op.inputs[i]] = counts.get(op.inputs[i], 0) + 1
            for i, blob in enumerate(op.inputs):
                if i not in params and blob not in written and blob not in self.init and blob not in self.inputs:
                    self.inputs.append(blob)
            written.update(op.outputs)
        self.shared = {b for b, c in counts.items() if c > 1}
        self.input_names = {blob: self.unique(blob) for blob in self.inputs}

    def unique(self, name: str, suffix: str = "") -> str:
        candidates = [name] + ([f"{name}_{suffix}"] if suffix else [])
        for c in candidates:
            if c not in self.used_names:
                self.used_names.add(c)
                return c
        base, i = candidates[-1], 2
        while f"{base}_{i}" in self.used_names:
            i += 1
        self.used_names.add(f"{base}_{i}")
        return f"{base}_{i}"

    # -- helpers for converters -----------------------------------------------------------------
    def weighted_name(self, op: Op) -> str:
        return self.weighted[id(op)]

    def weight(self, op: Op, index: int, rank: int) -> InitBlob:
        blob = op.inputs[index]
        w = self.init.get(blob)
        if w is None:
            raise op.error(f"the shape of weight '{blob}' is unknown: add an init op giving its shape, "
                           f"e.g. `op: GaussianFill ()->({blob}) shape:[...] std:0.01`", op.input_cols[index])
        if len(w.shape) != rank:
            raise op.error(f"weight '{blob}' must be {rank}-D, its init op (line {w.op.line}) gives "
                           f"shape {list(w.shape)}", op.input_cols[index])
        return w

    def bottom(self, op: Op, index: int) -> str:
        blob = op.inputs[index]
        if blob in self.init:
            raise op.error(f"input '{blob}' is filled by an init op (line {self.init[blob].op.line}); "
                           "convnet takes init blobs only as layer parameters", op.input_cols[index])
        if blob in self.dropped:
            src = self.dropped[blob]
            raise op.error(f"input '{blob}' is an auxiliary output of {src.type} (line {src.line}), "
                           "which has no Caffe blob", op.input_cols[index])
        return blob

    def layer(self, op: Op, caffe_type: str, bottoms: list[str], name: str | None = None) -> Any:
        """A new Caffe layer writing the op's first output (later outputs are dropped)."""
        top = op.outputs[0]
        if name is None:
            name = self.unique(top, op.type.lower())
        layer = caffe_pb2.LayerParameter(name=name, type=caffe_type, bottom=bottoms, top=[top])
        self.layers.append(layer)
        self.layer_ops[name] = op
        return layer

    def params(self, op: Op, layer: Any, blobs: list[str]) -> None:
        """Record Caffe2 parameter blobs as the layer's Caffe blobs 0, 1, ...; shared blobs get
        Caffe ``param { name }`` so that every layer using them shares one copy."""
        share = any(b in self.shared for b in blobs)
        for i, blob in enumerate(blobs):
            self.uses.append(_ParamUse(blob, layer.name, i, op))
            if share:
                layer.param.add().name = blob

    # -- the pass -------------------------------------------------------------------------------
    def run(self, name: str, shapes: dict[str, tuple[Shape, int]]) -> caffe_pb2.NetParameter:
        for blob, (_, line) in shapes.items():
            if blob not in self.inputs:
                raise ParseError(self.path, line, 1, f"input '{blob}' is not an external input of the "
                                 f"listing (those are: {', '.join(self.inputs) or 'none'})")
        net = caffe_pb2.NetParameter(name=name)
        for blob in self.inputs:
            layer = net.layer.add(name=self.input_names[blob], type="Input", top=[blob])
            if blob in shapes:
                layer.input_param.shape.add().dim.extend(shapes[blob][0])
        for op in self.predict:
            for blob in op.outputs:
                self.dropped.pop(blob, None)
            _CONVERTERS[op.type].fn(self, op)
            for blob in op.outputs[1:]:
                self.dropped[blob] = op
        net.layer.extend(self.layers)
        return net


@dataclass
class _Translation:
    net: caffe_pb2.NetParameter
    param_map: dict[str, tuple[str, int]]
    translator: _Translator


def _translate(text: str, path: str) -> _Translation:
    listing = _read(text, path)
    t = _Translator(listing, path)
    net = t.run(listing.name, listing.inputs)
    param_map: dict[str, tuple[str, int]] = {}
    for use in t.uses:
        param_map.setdefault(use.blob, (use.layer, use.index))
    return _Translation(net, param_map, t)


def listing_to_net(text: str, path: str = "<string>") -> tuple[caffe_pb2.NetParameter, dict[str, tuple[str, int]]]:
    """The V2 NetParameter of a Caffe2 listing, and Caffe2 param blob -> (Caffe layer, blob index).

    Input layers carry the shapes of the listing's ``input:`` lines (none where it has none).
    SpatialBN's mean and var are BatchNorm blobs 0 and 1 (Caffe's blob 2, the scale factor, has no
    Caffe2 blob: use 1), its scale and bias the blobs 0 and 1 of the Scale layer after it."""
    tr = _translate(text, path)
    return tr.net, tr.param_map


def _input_shapes(tr: _Translation, given: dict[str, Shape] | Shape | None, path: str) -> dict[str, Shape]:
    inputs = tr.translator.inputs
    if not inputs:
        raise ConvnetError(f"{path}: the listing reads no external input (every blob is written by an op)")
    shapes: dict[str, Shape] = {}
    for layer in tr.net.layer:
        if layer.type == "Input" and layer.input_param.shape:
            shapes[layer.top[0]] = tuple(int(d) for d in layer.input_param.shape[0].dim)
    if isinstance(given, dict):
        for name, shape in given.items():
            if name == "":
                shapes[inputs[0]] = tuple(shape)
            elif name in inputs:
                shapes[name] = tuple(shape)
            else:
                raise ConvnetError(f"{path}: an input shape is given for '{name}', which the listing does "
                                   f"not read as an input (its inputs: {', '.join(inputs)})")
    elif given is not None:
        shapes[inputs[0]] = tuple(given)
    for blob in inputs:
        if blob not in shapes:
            raise ConvnetError(f"{path}: a Caffe2 listing gives no shape for input '{blob}': pass "
                               f"--input-shape N,C,H,W, or add a line `input: {blob} N,C,H,W` to the listing")
    return shapes


def listing_to_graph(text: str, path: str = "<string>",
                     input_shapes: dict[str, Shape] | Shape | None = None) -> Graph:
    """Parse a Caffe2 op listing into the Graph its Caffe translation gives (phase TEST).

    ``input_shapes``: None (use the listing's ``input:`` lines), one shape for the (first) external
    input, or a dict blob -> shape."""
    tr = _translate(text, path)
    shapes = _input_shapes(tr, input_shapes, path)
    net = caffe_pb2.NetParameter()
    net.CopyFrom(tr.net)
    for layer in net.layer:
        if layer.type == "Input":
            del layer.input_param.shape[:]
            layer.input_param.shape.add().dim.extend(shapes[layer.top[0]])
    t = tr.translator
    try:
        graph = build_graph(net, phase="TEST", source_path=path)
    except LayerError as e:
        op = t.layer_ops.get(e.layer)
        if op is None:
            raise
        raise op.error(f"as Caffe {e.layer_type or 'layer'} '{e.layer}': {e.message}") from None
    _check_param_shapes(graph, t)
    _check_softmax(graph, t)
    return graph


def _check_param_shapes(graph: Graph, t: _Translator) -> None:
    """Each init op's shape must be the shape the Caffe layer gives that blob, or weights won't load."""
    for use in t.uses:
        init = t.init.get(use.blob)
        if init is None:
            continue
        node = graph.node(use.layer)
        want = node.params[use.index].shape if use.index < len(node.params) else None
        if want != init.shape:
            col = use.op.input_cols[use.op.inputs.index(use.blob)]
            raise use.op.error(f"'{use.blob}' has shape {list(init.shape)} (init op, line {init.op.line}), "
                               f"but Caffe {node.type} '{node.name}' needs "
                               f"{list(want) if want is not None else 'no such blob'} here", col)


def _check_softmax(graph: Graph, t: _Translator) -> None:
    for name, op in t.softmax_ops:
        node = graph.node(name)
        shape = graph.shapes[node.bottoms[0]]
        axis = node.attrs.axis % len(shape)
        rest = 1
        for d in shape[axis + 1:]:
            rest *= d
        if rest != 1:
            raise op.error(f"on a {list(shape)} input Caffe2 normalises over axes {axis}.. together but "
                           f"Caffe's Softmax over axis {axis} alone: add a Flatten or Reshape first")
