"""NetParameter -> Graph: phase filtering, blob versioning, validation and shape inference."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from convnet_io.caffe.hdf5_shapes import hook as hdf5_hook
from convnet_io.caffe.layer_files import read_layer_files
from convnet_io.caffe.netstate import filter_layers, layer_included, state_for
from convnet_io.caffe.plain_net import collector_paused, layer_message
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.graph import Graph, Node, ParamSpec, Shape, value_id
from convnet_io.graph.ir import NO_ITEMS
from convnet_io.graph.layers import get_spec, supported_types
from convnet_io.graph.layers.data import SourceContext
from convnet_io.graph.layers.loss import Loss
from convnet_io.limits import check_memory, memory_budget
from convnet_io.terminal import name as name_escape


def build_graph(
    net: Any,
    phase: str = "TEST",
    input_shapes: dict[str, Shape] | Shape | None = None,
    stages: Iterable[str] = (),
    level: int | None = None,
    source_path: str = "",
    notices: list[str] | None = None,
) -> Graph:
    """Build the graph of an upgraded (V2) NetParameter for one phase."""
    if isinstance(stages, str):
        stages = (stages,)
    state = state_for(net, phase, level, tuple(stages))
    notes: list[str] = list(notices or [])
    ctx = _source_context(input_shapes, notes.append)
    ctx.hdf5_shapes = hdf5_hook(source_path)
    build = _Build(net, state, ctx, notes)
    with collector_paused():
        try:
            build.layers()
        except ConvnetError:
            # Caffe's order of checks: every layer's include/exclude rules, then the order of all
            # layers, then each layer in turn. Layers are read once, in one pass, so an error found
            # in a layer first makes sure no earlier check would have failed.
            _earlier_error(net, state, build.index)
            raise
        if build.auto_tops:  # a bottom may name an automatic top: the order check decides
            _check_order(_included(net, state))
    nodes, shapes, blob_of = build.nodes, build.shapes, build.blob_of
    read_layer_files(nodes, shapes, source_path)
    sources = build.sources
    unknown = sorted(set(ctx.named) - sources)
    if unknown:
        raise ConvnetError(f"--input-shape names {', '.join(unknown)}, which the net does not take as input "
                           f"(its inputs: {', '.join(sorted(sources)) or 'none'})")
    check_memory(name_escape(source_path or net.name or "net"), (build.blobs + build.params) * _FLOAT,
                 f"{build.blobs:,} blob and {build.params:,} weight float32 values")
    graph = Graph(name=net.name, phase=state.phase, nodes=nodes, shapes=shapes, blob_of=blob_of,
                  notices=notes, source_path=source_path)
    # the values no layer reads, known from the pass (each value is read only after its write):
    # Graph.outputs would look up every value of a 700k-layer net in a set of all of them
    graph.__dict__["outputs"] = list(build.unread)
    return graph


class _Build:
    """One pass over the layers. A layer holding only name, type, bottoms and tops (most layers
    of a huge generated net) takes a short path: its attributes, shapes and checks are computed
    once per (type, bottom count, top count, bottom shapes) and shared; any other layer, and any
    layer whose short path would fail, goes through ``_build_node`` so errors stay the same."""

    def __init__(self, net: Any, state: Any, ctx: SourceContext, notes: list[str]):
        self.net, self.state, self.ctx, self.notes = net, state, ctx, notes
        self.current: dict[str, str] = {}  # Caffe blob name -> its latest value id
        self.versions: dict[str, int] = {}
        self.shapes: dict[str, Shape] = {}
        self.blob_of: dict[str, str] = {}
        self.nodes: list[Node] = []
        self.names: set[str] = set()
        self.sources: set[str] = set()
        self.unread: dict[str, None] = {}  # values of non-source layers no layer has read yet, in order
        self.blobs = self.params = 0  # float32 values of all tops and all weights
        self.budget = memory_budget()
        self.index = -1
        self.auto_tops = False
        self._all_names: set[str] | None = None
        self._next_k: dict[str, int] = {}
        self._plain: dict[tuple, tuple | None] = {}  # (type, #bottoms, #tops) -> (spec, attrs)
        self._shaped: dict[tuple, tuple | None] = {}  # ... + bottom shapes -> tops, params, size
        self._types: dict[str, str] = {}  # one string object per type name

    def layers(self) -> None:
        state, phase = self.state, self.state.phase
        names, nodes, types, shaped = self.names, self.nodes, self._types, self._shaped
        current, shapes, blob_of, versions, unread = self.current, self.shapes, self.blob_of, self.versions, self.unread
        last_type = last_shape = last_done = None  # a chain repeats one (type, bottom shape)
        blobs = 0  # float32 values of the tops made here (added to self.blobs)
        for i, msg in enumerate(self.net.layer):
            # a layer of only a name, a type, one bottom and one top: b and t are its blobs
            b = t = None
            if type(msg) is tuple:  # a PlainNet's layer
                name, type_, b, t = msg
                if type(b) is not str:  # bottoms and tops as tuples: not always one of each
                    b, t = (b[0], t[0]) if len(b) == 1 and len(t) == 1 else (None, None)
            else:
                name, type_ = msg.name, msg.type
                bottom, top = msg.bottom, msg.top
                if len(bottom) == 1 and len(top) == 1:
                    b, t = bottom[0], top[0]
                    # nothing else is set: every other field would add bytes
                    if msg.ByteSize() != len(name) + len(type_) + len(b) + len(t) + 8:
                        b = None
            if b and name and type_ and name not in names:
                bvid = current.get(b)
                if bvid is not None:
                    type_ = types.setdefault(type_, type_)  # one string object per type
                    bshape = shapes[bvid]
                    if type_ is not last_type or bshape is not last_shape:
                        last_done = shaped.get((type_, bshape), False)
                        if last_done is False:
                            last_done = shaped[type_, bshape] = self._shape_plain(msg, type_, bshape)
                        last_type, last_shape = type_, bshape
                    # shared: attributes, top shape and weights of every such layer; a top
                    # already written is only taken in place (the general path raises otherwise)
                    if last_done is not None and (t == b or t not in current):
                        attrs, tshape, params, size, loss = last_done
                        if t == b:  # in place; a first write has no entry in versions
                            version = versions[t] = versions.get(t, 0) + 1
                            vid = value_id(t, version)
                        else:
                            vid = t
                        current[t] = vid
                        shapes[vid] = tshape
                        blob_of[vid] = t
                        unread.pop(bvid, None)
                        unread[vid] = None
                        names.add(name)
                        blobs += size
                        if params:
                            self.params += sum(_count(p[0]) for p in params)
                            params = [ParamSpec(*p) for p in params]
                        else:
                            params = NO_ITEMS
                        # positional, in Node's field order: keywords cost twice the call's time
                        nodes.append(Node(name, type_, [bvid], [vid], attrs, params,
                                          [1.0] if loss else NO_ITEMS, NO_ITEMS))
                        continue
            self.index = i
            self.blobs, blobs = self.blobs + blobs, 0
            if type(msg) is tuple:
                msg = layer_message(msg)
            if layer_included(msg, state):
                self._node(_LayerView(msg), phase)
        self.blobs += blobs

    def _shape_plain(self, msg: Any, type_: str, bshape: Shape) -> tuple | None:
        """What every plain (type, bottom shape) layer shares, or None when the general path must
        decide (a source, an automatic top, anything that raises, a layer over the budget)."""
        spec = get_spec(type_)
        if (spec is None or spec.source or spec.min_bottoms > 1 or spec.min_tops > 1
                or (spec.max_bottoms is not None and spec.max_bottoms < 1)):
            return None
        if type(msg) is tuple:
            msg = layer_message(msg)
        try:
            attrs = spec.attrs(msg)
            if not _shareable(attrs):
                return None
            tshapes = spec.top_shapes(attrs, [bshape], 1)
            if len(tshapes) < 1 or any(d <= 0 for d in tshapes[0]):
                return None
            tshape = tuple(int(d) for d in tshapes[0])
            shapes = spec.param_shapes(attrs, [bshape])
            fillers = spec.fillers(attrs)
        except (ConvnetError, ValueError, ZeroDivisionError, IndexError):  # raised again by the general path
            return None
        bn = type_ == "BatchNorm"  # statistics are not learned by gradient
        params = tuple((tuple(int(d) for d in sh), fillers[k] if k < len(fillers) else None,
                        0.0 if bn else 1.0, 0.0 if bn else 1.0, "") for k, sh in enumerate(shapes))
        size = _count(tshape)
        if (size + sum(_count(p[0]) for p in params)) * _FLOAT > self.budget:
            return None
        return attrs, tshape, params, size, type_.endswith("Loss")

    def _node(self, layer: Any, phase: str) -> None:
        """The general path: any layer, every check, as Caffe makes them."""
        current, versions, shapes, blob_of, names = self.current, self.versions, self.shapes, self.blob_of, self.names
        if not layer.top and _is_loss(layer.type):
            layer = _auto_top(layer)
            self.auto_tops = True
        name, type_ = layer.name, layer.type
        node = _build_node(layer, current, shapes, self.ctx, phase)
        if name in names:
            # Caffe accepts repeated layer names (BVLC's mnist_autoencoder has two 'loss' layers);
            # modules and ONNX nodes need a key, so the later layer gets a unique one. Weights go to
            # the first layer of a name only, as Caffe's CopyTrainedLayersFrom does.
            node.name = self._unique_name(name)
            node.caffe_name = name
            self.notes.append(f"two layers are named '{name}': the later one ({type_}) is '{node.name}' here")
        names.add(node.name)
        tops: list[str] = []
        top_shapes = node.tops  # shapes, temporarily
        for blob, shape in zip(layer.top, top_shapes):
            if blob in current:
                if blob not in layer.bottom:
                    raise LayerError(name, f"top '{blob}' is already written by an earlier layer "
                                     "(only in-place layers may write a blob again)", type_)
                versions[blob] = versions.get(blob, 0) + 1
            else:
                versions[blob] = 0
            vid = value_id(blob, versions[blob])
            current[blob] = vid
            shapes[vid] = tuple(int(d) for d in shape)
            blob_of[vid] = blob
            tops.append(vid)
        node.tops = tops
        self.nodes.append(node)
        _check_layer_memory(node, shapes, self.budget)
        for t in tops:
            self.blobs += _count(shapes[t])
        for p in node.params:
            self.params += _count(p.shape)
        for b in node.bottoms:
            self.unread.pop(b, None)
        if node.is_source:
            self.sources.update(blob_of[t] for t in tops)
        else:
            self.unread.update(dict.fromkeys(tops))

    def _unique_name(self, name: str) -> str:
        """``name_k`` with the smallest k no layer of the net and no earlier node has taken (the
        taken names only grow, so the search for one name goes on from where it last stopped)."""
        if self._all_names is None:
            self._all_names = {lyr.name for lyr in _included(self.net, self.state)}
        taken, k = self._all_names, self._next_k.get(name, 1)
        while f"{name}_{k}" in taken or f"{name}_{k}" in self.names:
            k += 1
        self._next_k[name] = k
        return f"{name}_{k}"


def _shareable(attrs: Any) -> bool:
    """Attributes several nodes may hold: None or a frozen dataclass."""
    if attrs is None:
        return True
    params = getattr(type(attrs), "__dataclass_params__", None)
    return params is not None and params.frozen


def _is_loss(type_: str) -> bool:
    spec = get_spec(type_)
    return spec is not None and issubclass(spec, Loss)


def _earlier_error(net: Any, state: Any, index: int) -> None:
    """Raise the error Caffe's order of checks finds before the one layer ``index`` raised: a
    later layer's include/exclude rules, or the order of the layers."""
    _check_order(_included(net, state))


_FLOAT = 4  # bytes of one float32 blob element


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def _check_layer_memory(node: Node, shapes: dict[str, Shape], budget: int) -> None:
    """One layer's tops and weights against the memory budget, before anything is allocated
    (an InnerProduct of 10^13 weights is refused here, not by the allocator after trying)."""
    tops = 0
    for t in node.tops:
        tops += _count(shapes[t])
    params = 0
    for p in node.params:
        params += _count(p.shape)
    if (tops + params) * _FLOAT > budget:
        parts = [f"weights {' + '.join('x'.join(map(str, p.shape)) for p in node.params)}"] if params else []
        parts += [f"top {'x'.join(map(str, shapes[t]))}" for t in node.tops][:3]
        try:
            check_memory(f"layer '{node.name}' ({node.type})", (tops + params) * _FLOAT,
                         ", ".join(parts) + " float32")
        except ConvnetError as e:
            raise ConvnetError(name_escape(str(e))) from None


def _check_net_memory(nodes: list[Node], shapes: dict[str, Shape], where: str) -> None:
    """The whole net's blobs and weights (what a forward pass holds) against the budget."""
    blobs = sum(_count(shapes[t]) for n in nodes for t in n.tops)
    params = sum(_count(p.shape) for n in nodes for p in n.params)
    check_memory(name_escape(where or "net"), (blobs + params) * _FLOAT,
                 f"{blobs:,} blob and {params:,} weight float32 values")


def _auto_top(layer: Any) -> Any:
    """Caffe's AutoTopBlobs: a loss layer listed without a top still writes its loss, into an
    anonymous blob (here ``<layer>(automatic)``)."""
    spec = get_spec(layer.type)
    if layer.top or spec is None or not issubclass(spec, Loss):
        return layer
    msg = getattr(layer, "msg", layer)
    out = type(msg)()
    out.CopyFrom(msg)
    out.top.append(f"{layer.name}(automatic)")
    return _LayerView(out)


def _included(net: Any, state: Any) -> list[Any]:
    """Views of the layers ``state`` includes (``filter_layers``), where a PlainNet's tuples
    stay tuples: a 700k-layer net is not turned into 700k messages to report one error."""
    if not hasattr(net, "messages"):
        return [_LayerView(lyr) for lyr in filter_layers(net, state)]
    out = []
    for layer in net.layer:
        if type(layer) is tuple:  # names only: no rules, so always included
            out.append(_TupleView(layer))
        elif layer_included(layer, state):
            out.append(_LayerView(layer))
    return out


class _TupleView:
    """A PlainNet tuple read like a _LayerView (names only)."""

    __slots__ = ("bottom", "name", "top", "type")

    def __init__(self, layer: tuple):
        name, type_, bottom, top = layer
        if type(bottom) is str:
            bottom, top = (bottom,), (top,)
        self.name, self.type, self.bottom, self.top = name or "", type_ or "", bottom, top


class _LayerView:
    """A LayerParameter with its names and blob lists read once. Reading a repeated field of a
    upb message costs microseconds each time, and a 700k-layer net reads each many times."""

    __slots__ = ("bottom", "msg", "name", "top", "type")

    def __init__(self, msg: Any):
        self.msg, self.name, self.type = msg, msg.name, msg.type
        self.top, self.bottom = tuple(msg.top), tuple(msg.bottom)

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.msg, attr)


def _unique_name(name: str, taken: set[str]) -> str:
    k = 1
    while f"{name}_{k}" in taken:
        k += 1
    return f"{name}_{k}"


def _source_context(input_shapes, notice: Callable[[str], None]) -> SourceContext:
    if input_shapes is None:
        return SourceContext(notice=notice)
    if isinstance(input_shapes, dict):
        named = {k: tuple(v) for k, v in input_shapes.items() if k}
        return SourceContext(named=named, default=input_shapes.get("") and tuple(input_shapes[""]), notice=notice)
    return SourceContext(default=tuple(input_shapes), notice=notice)


def _build_node(layer: Any, current: dict[str, str], shapes: dict[str, Shape], ctx: SourceContext,
                phase: str) -> Node:
    name, type_ = layer.name, layer.type
    spec = get_spec(type_)
    if spec is None:
        raise LayerError(name, f"unknown layer type '{type_}'. Supported types: "
                         + ", ".join(supported_types()), type_)
    nb = len(layer.bottom)
    if nb < spec.min_bottoms or (spec.max_bottoms is not None and nb > spec.max_bottoms):
        want = (f"{spec.min_bottoms}" if spec.max_bottoms == spec.min_bottoms else
                f"at least {spec.min_bottoms}" if spec.max_bottoms is None else
                f"{spec.min_bottoms} to {spec.max_bottoms}")
        raise LayerError(name, f"takes {want} bottom(s), got {nb}", type_)
    top_names = list(layer.top)
    if len(top_names) < spec.min_tops:
        raise LayerError(name, f"takes at least {spec.min_tops} top(s), got {len(top_names)}", type_)
    if len(top_names) > 1 and len(set(top_names)) < len(top_names):
        twice = sorted({t for t in top_names if top_names.count(t) > 1})
        raise LayerError(name, f"lists top '{twice[0]}' more than once", type_)
    bottoms = []
    for blob in layer.bottom:
        if blob not in current:
            raise LayerError(name, f"bottom '{blob}' is not produced by any earlier layer", type_)
        bottoms.append(current[blob])
    try:
        attrs = spec.attrs(layer)
        bshapes = [shapes[b] for b in bottoms]
        if spec.source:
            tshapes = spec.source_shapes(name, attrs, list(layer.top), ctx)
        else:
            tshapes = spec.top_shapes(attrs, bshapes, len(layer.top))
        if len(tshapes) < len(layer.top):
            raise ValueError(f"produces {len(tshapes)} top(s), but {len(layer.top)} are named")
        for blob, shape in zip(layer.top, tshapes):
            if any(d <= 0 for d in shape) and not spec.source:
                raise ValueError(f"top '{blob}' would have non-positive shape {list(shape)} "
                                 f"from bottom(s) {[list(s) for s in bshapes]}")
            if any(d <= 0 for d in shape):
                raise ValueError(f"top '{blob}' has non-positive shape {list(shape)}")
        params = _param_specs(layer, spec, attrs, bshapes)
    except ConvnetError:
        raise
    except (ValueError, ZeroDivisionError, IndexError) as e:
        raise LayerError(name, str(e), type_) from None
    loss_weights = list(layer.loss_weight)
    if not loss_weights and type_.endswith("Loss"):
        loss_weights = [1.0] + [0.0] * (len(layer.top) - 1)
    return Node(name=name, type=type_, bottoms=bottoms, tops=list(tshapes[:len(layer.top)]),
                attrs=attrs, params=params, loss_weights=loss_weights,
                propagate_down=list(layer.propagate_down))


def _param_specs(layer: Any, spec: Any, attrs: Any, bshapes: list[Shape]) -> list[ParamSpec]:
    shapes = spec.param_shapes(attrs, bshapes)
    fillers = spec.fillers(attrs)
    out = []
    for i, shape in enumerate(shapes):
        p = layer.param[i] if i < len(layer.param) else None
        out.append(ParamSpec(
            shape=tuple(int(d) for d in shape),
            filler=fillers[i] if i < len(fillers) else None,
            lr_mult=float(p.lr_mult) if p is not None else 1.0,
            decay_mult=float(p.decay_mult) if p is not None else 1.0,
            share_name=p.name if p is not None else "",
        ))
    if len(layer.param) > len(shapes):
        raise ValueError(f"{len(layer.param)} param specs given for {len(shapes)} learnable blob(s)")
    if layer.type == "BatchNorm":
        # Caffe: the statistics are not learned by gradient; a non-zero lr_mult is refused.
        if any(p.lr_mult != 0 for p in out[:len(layer.param)]):
            raise ValueError("batch normalization statistics cannot be learned: set lr_mult 0 (or omit param)")
        for p in out:
            p.lr_mult = p.decay_mult = 0.0
    return out


def _check_order(layers: list[Any]) -> None:
    """Bottoms must be written by an earlier layer; name the cycle when there is one."""
    written: set[str] = set()
    producers: dict[str, list[int]] = {}
    for i, layer in enumerate(layers):
        for t in layer.top:
            producers.setdefault(t, []).append(i)
    for i, layer in enumerate(layers):
        for b in layer.bottom:
            if b not in written and b in producers:
                later = producers[b][0]
                cycle = _find_cycle(layers, producers, start=i)
                if cycle:
                    path = " -> ".join(layers[j].name for j in cycle)
                    raise LayerError(layer.name, f"the net has a cycle: {path}", layer.type)
                raise LayerError(layer.name, f"bottom '{b}' is written only later, by layer "
                                 f"'{layers[later].name}': layers must be listed in execution order",
                                 layer.type)
        written.update(layer.top)


def _find_cycle(layers: list[Any], producers: dict[str, list[int]], start: int) -> list[int] | None:
    """A path of layers from ``start`` back to itself through bottom->producer edges, if any."""

    def deps(i: int) -> list[int]:
        out = []
        for b in layers[i].bottom:
            out.extend(j for j in producers.get(b, []) if j != i)
        return out

    stack = [(start, [start])]
    seen: set[int] = set()
    while stack:
        i, path = stack.pop()
        for j in deps(i):
            if j == start:
                return list(reversed(path + [start]))
            if j not in seen:
                seen.add(j)
                stack.append((j, path + [j]))
    return None
