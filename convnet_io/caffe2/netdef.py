"""Caffe2 nets as stored: a ``predict_net.pb`` (or ``.pbtxt``) NetDef of operators and an
``init_net.pb`` NetDef of fill ops holding the weights, optionally with the model zoo's
``value_info.json`` (input name -> [data type, shape]).

The predict ops become the same ``Op`` objects the op listing gives, so one translator
(``listing.translate_ops``, ``operators``) serves both; the init net's fills give the parameter
shapes and fillers, and ``GivenTensorFill`` values become the Net's weights. Translated models
end their init net with a fill of the input blob itself: it is skipped and gives no shape.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet_io.caffe2.fills import _FILLERS
from convnet_io.caffe2.listing import _Translation, translate_ops, translation_to_graph
from convnet_io.caffe2.listing_text import _Listing
from convnet_io.caffe2.netdef_files import resolve
from convnet_io.caffe2.op import Arg, Op
from convnet_io.caffe2.prepass import data_inputs, rewrite_for_caffe
from convnet_io.caffe2.proto import caffe2_pb2
from convnet_io.caffe2.wire import read_netdef_with_arrays
from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph, Shape

# Fills of integer tensors: never Caffe parameters, but a Reshape may read its shape from one.
_INT_FILLS = {"GivenTensorIntFill": "ints", "GivenTensorInt64Fill": "ints", "GivenTensorBoolFill": "ints"}


@dataclass
class NetDefOp(Op):
    """An operator of a NetDef: errors name its position in the net (there are no lines)."""

    name: str = ""
    index: int = 0
    count: int = 0

    def error(self, message: str, col: int | None = None) -> ConvnetError:
        label = f"{self.type} '{self.name}'" if self.name else self.type
        return ConvnetError(f"{self.path}: op {self.index} of {self.count} ({label}): {message}")


def read_netdef(path: str | Path) -> tuple[caffe2_pb2.NetDef, dict[int, dict[str, np.ndarray]]]:
    """A NetDef from binary or text, with the large float arguments of binary ones apart."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    if p.suffix == ".pbtxt" or _looks_like_text(data):
        from google.protobuf import text_format

        net = caffe2_pb2.NetDef()
        try:
            text_format.Parse(data.decode("utf-8"), net)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise ConvnetError(f"{path}: not a text Caffe2 NetDef: {e}") from None
        return net, {}
    return read_netdef_with_arrays(data, str(path))


def _looks_like_text(data: bytes) -> bool:
    head = data[:256].lstrip()
    return head.startswith((b"name:", b"op {", b"op{", b"external_input", b"#", b"type:"))


def read_value_info(path: str | Path) -> dict[str, Shape]:
    """value_info.json: ``{"data": [1, [1, 3, 224, 224]]}`` (data type, shape) per input."""
    try:
        info = json.loads(Path(path).read_text(encoding="utf-8"))
        return {name: tuple(int(d) for d in v[1]) for name, v in info.items()}
    except (OSError, ValueError, TypeError, IndexError, KeyError) as e:
        raise ConvnetError(f"{path}: not a value_info.json ({{\"input\": [type, [N, C, H, W]]}}): {e}") from None


# ------------------------------------------------------------------------------------------------
# NetDef -> Ops
# ------------------------------------------------------------------------------------------------


def _arg_value(a: caffe2_pb2.Argument) -> Any:
    if a.HasField("f"):
        return float(a.f)
    if a.HasField("i"):
        return int(a.i)
    if a.HasField("s"):
        return a.s.decode("utf-8", errors="replace")
    if len(a.floats):
        return [float(v) for v in a.floats]
    if len(a.ints):
        return [int(v) for v in a.ints]
    if len(a.strings):
        return [s.decode("utf-8", errors="replace") for s in a.strings]
    if a.HasField("t") or len(a.tensors) or a.HasField("n") or len(a.nets) or len(a.qtensors):
        return None  # tensors and nets as arguments: no converter takes them; check_args names them
    return []


def netdef_ops(net: caffe2_pb2.NetDef, path: str) -> list[NetDefOp]:
    """Every OperatorDef as an Op (index 1-based, for messages)."""
    ops = []
    for i, od in enumerate(net.op, 1):
        op = NetDefOp(od.type, list(od.input), list(od.output), {}, path, i, 1,
                      [0] * len(od.input), [0] * len(od.output), name=od.name, index=i, count=len(net.op))
        for a in od.arg:
            if a.name in op.args:
                raise op.error(f"argument '{a.name}' is given twice")
            value = _arg_value(a)
            if value is None:
                raise op.error(f"argument '{a.name}' holds a tensor or a net, which convnet does not take")
            op.args[a.name] = Arg(a.name, value, str(value), 0)
        if not op.outputs:
            raise op.error("an op needs at least one output")
        ops.append(op)
    return ops


@dataclass
class InitNet:
    fills: list[Op] = field(default_factory=list)  # fill ops as the translator takes them
    values: dict[str, np.ndarray] = field(default_factory=dict)  # GivenTensorFill blob -> values
    ints: dict[str, np.ndarray] = field(default_factory=dict)  # integer fills
    skipped: list[str] = field(default_factory=list)


def _read_init(path: str, predict: list[NetDefOp], inputs: set[str]) -> InitNet:
    net, arrays = read_netdef(path)
    ops = netdef_ops(net, path)
    read = {b for op in predict for b in op.inputs}
    out = InitNet()
    for op in ops:
        blob = op.outputs[0] if op.outputs else ""
        if blob in inputs or blob not in read:  # the input's own fill; training state the predict net never reads
            out.skipped.append(blob)
            continue
        if op.type in _INT_FILLS:
            values = op.args.get("values")
            out.ints[blob] = np.asarray(values.value if values else [], dtype=np.int64)
            continue
        if op.type not in _FILLERS:
            raise op.error(f"not a fill op: an init net may hold {', '.join(sorted([*_FILLERS, *_INT_FILLS]))}")
        if op.type == "GivenTensorFill":
            big = arrays.get(op.index - 1, {}).get("values")
            small = op.args.pop("values", None)
            values = big if big is not None else np.asarray(small.value if small else [], dtype=np.float32)
            shape = op.get_ints("shape")
            if shape is None:
                raise op.error(f"'{blob}' needs a shape argument")
            count = int(np.prod(shape)) if shape else 1
            if values.size != count:
                raise op.error(f"{values.size} values for shape {shape} ({count} elements)")
            out.values[blob] = values.reshape(shape)
        out.fills.append(op)
    return out


def _data_inputs(predict: list[NetDefOp], given: set[str]) -> set[str]:
    """Blobs the predict net reads as data: the value_info names, and every blob read at input
    0 of an op before any op writes it (parameters are never an op's first input)."""
    written: set[str] = set()
    out = set(given)
    for op in predict:
        if op.inputs and op.inputs[0] not in written:
            out.add(op.inputs[0])
        written.update(op.outputs)
    return out


@dataclass
class NetDefTranslation:
    translation: _Translation
    init: InitNet
    path: str


def translate_netdef(net: str | Path, input_shapes: dict[str, Shape] | Shape | None = None
                     ) -> tuple[NetDefTranslation, dict[str, Shape] | Shape | None]:
    pair = resolve(net)
    if pair.init is None:
        raise ConvnetError(f"{pair}: no init net beside it (init_net.pb): pass --init init_net.pb")
    predict_net, _ = read_netdef(pair)
    predict, fed = data_inputs(netdef_ops(predict_net, str(pair)))
    shapes: dict[str, Shape] = read_value_info(pair.value_info) if pair.value_info else {}
    for blob, shape in fed.items():
        if shape is not None:
            shapes.setdefault(blob, shape)
    init = _read_init(pair.init, predict, _data_inputs(predict, {*shapes, *fed}))
    fills, predict_ops = rewrite_for_caffe(init, predict)
    name = predict_net.name or Path(str(pair)).parent.name or Path(str(pair)).stem
    listing = _Listing([*fills, *predict_ops], {k: (v, None) for k, v in shapes.items()}, name)
    tr = translate_ops(listing, str(pair))
    return NetDefTranslation(tr, init, str(pair)), input_shapes if input_shapes is not None else pair.input_shapes


def _check_input_shapes(nt: NetDefTranslation, given: dict[str, Shape] | Shape | None) -> None:
    inputs = nt.translation.translator.inputs
    known = {layer.top[0] for layer in nt.translation.net.layer if layer.type == "Input" and layer.input_param.shape}
    if isinstance(given, dict):
        known |= {inputs[0] if k == "" and inputs else k for k in given}
    elif given is not None and inputs:
        known.add(inputs[0])
    missing = [b for b in inputs if b not in known]
    if missing:
        raise ConvnetError(f"{nt.path}: no shape for input '{missing[0]}': pass --input-shape "
                           f"{missing[0]}=N,C,H,W (a value_info.json beside the net gives it)")


def netdef_to_graph(net: str | Path, input_shapes: dict[str, Shape] | Shape | None = None) -> Graph:
    """The Graph of a NetDef pair (phase TEST), as the op listing and the prototxt twin give it."""
    return netdef_graph_and_blobs(net, input_shapes)[0]


def netdef_graph_and_blobs(net: str | Path, input_shapes: dict[str, Shape] | Shape | None = None,
                           seed: int = 0) -> tuple[Graph, dict[str, list[np.ndarray]]]:
    """The Graph and its weights: the init net's values per Caffe layer, in Caffe's blob order.
    Blobs of random fills (XavierFill, ...) are drawn from the graph's fillers; BatchNorm's scale
    factor, which Caffe2 has no blob for, is 1."""
    from convnet_io.graph.fillers import fill
    from convnet_io.graph.initialize import default_filler

    nt, shapes = translate_netdef(net, input_shapes)
    _check_input_shapes(nt, shapes)
    graph = translation_to_graph(nt.translation, nt.path, shapes)
    by_slot = {(u.layer, u.index): u.blob for u in nt.translation.translator.uses}
    rng = np.random.default_rng(seed)
    blobs: dict[str, list[np.ndarray]] = {}
    for node in graph.nodes:
        if not node.params:
            continue
        arrays = []
        for i, spec in enumerate(node.params):
            blob = by_slot.get((node.name, i))
            if blob is not None and blob in nt.init.values:
                arrays.append(nt.init.values[blob].reshape(spec.shape).astype(np.float32, copy=False))
            elif node.type == "BatchNorm" and i == 2:
                arrays.append(np.ones(spec.shape, dtype=np.float32))
            else:
                arrays.append(fill(spec.filler or default_filler(spec, i), spec.shape, rng))
        blobs[node.name] = arrays
    return graph, blobs
