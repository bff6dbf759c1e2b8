"""Caffe2 op listings -> a Caffe NetParameter -> the same Graph a prototxt gives.

A listing is the text form of a Caffe2 net, one op a line::

    op: Conv (data conv1_w conv1_b)->(conv1) stride:4 pad:0 kernel:11 order:NCHW

Each op becomes the Caffe layer(s) with the same semantics (operators) and ``build_graph`` does
validation and shape inference, exactly as for a prototxt; nothing here infers a shape. Caffe2 keeps a
model as an init net (fill ops that create the parameters, fills) and a predict net: the fill ops
give the parameter shapes the predict ops do not state (num_output, bias_term) and become the layers'
Caffe fillers.

Naming lets one .caffemodel serve both definitions: a layer with weights is named after its weight
blob less the ``_w`` suffix (``conv1_w`` -> ``conv1``), its Caffe blobs in Caffe's order; any other
layer after its first output, plus ``_<op type>`` when that name is taken (``conv1_relu``). Blob
names stay as written, so in-place ops stay in place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe2.fills import _FILLERS, InitBlob, _init_blob
from convnet_io.caffe2.listing_text import _Listing, _read
from convnet_io.caffe2.op import Op
from convnet_io.caffe2.operators import _CONVERTERS
from convnet_io.errors import ConvnetError, LayerError, ParseError
from convnet_io.graph import Graph, Shape

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
        self.same_ops: list[tuple[str, Op, tuple[int, int], tuple[int, int]]] = []  # legacy_pad SAME layers
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
            op.check_args(conv.args)
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
            if params:  # a NetDef op's own name wins: it is the Caffe layer's when convnet wrote it
                self.weighted[id(op)] = self.unique(getattr(op, "name", "") or _layer_name_of(op.inputs[params[0]]))
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
            name = self.unique(getattr(op, "name", "") or top, op.type.lower())
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
                try:
                    layer.input_param.shape.add().dim.extend(shapes[blob][0])
                except ValueError as e:  # a dimension past int64 (10^20): the file's, not a bug
                    raise ParseError(self.path, shapes[blob][1], 1, f"input '{blob}': {e}") from None
        for op in self.predict:
            for blob in op.outputs:
                self.dropped.pop(blob, None)
            try:
                _CONVERTERS[op.type].fn(self, op)
            except ValueError as e:  # a value Caffe's fields cannot hold (10^20, -10^20)
                raise op.error(str(e)) from None
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
    return translate_ops(_read(text, path), path)


def translate_ops(listing: _Listing, path: str) -> _Translation:
    """Ops (fills and predict ops, from a listing or a NetDef) translated into Caffe layers."""
    from convnet_io.caffe2.prepass import rewrite_nhwc

    fills, predict = rewrite_nhwc([op for op in listing.ops if op.type in _FILLERS],
                                  [op for op in listing.ops if op.type not in _FILLERS], {})
    listing = _Listing([*fills, *predict], listing.inputs, listing.name)
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
    return translation_to_graph(_translate(text, path), path, input_shapes)


def translation_to_graph(tr: _Translation, path: str,
                         input_shapes: dict[str, Shape] | Shape | None = None) -> Graph:
    """The Graph of translated ops, built and checked as a prototxt is."""
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
    if t.same_ops:
        from convnet_io.caffe2.legacy_pad import resolve_same

        graph = resolve_same(net, graph, t.same_ops, path)
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
