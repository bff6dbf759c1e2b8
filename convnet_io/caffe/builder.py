"""NetParameter -> Graph: phase filtering, blob versioning, validation and shape inference."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from convnet_io.caffe.hdf5_shapes import hook as hdf5_hook
from convnet_io.caffe.layer_files import read_layer_files
from convnet_io.caffe.netstate import filter_layers, state_for
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.graph import Graph, Node, ParamSpec, Shape, value_id
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
    layers = [_LayerView(lyr) for lyr in filter_layers(net, state)]
    _check_order(layers)

    current: dict[str, str] = {}  # Caffe blob name -> its latest value id
    versions: dict[str, int] = {}
    shapes: dict[str, Shape] = {}
    blob_of: dict[str, str] = {}
    nodes: list[Node] = []
    names: set[str] = set()
    budget = memory_budget()
    for layer in layers:
        layer = _auto_top(layer)
        name, type_ = layer.name, layer.type
        node = _build_node(layer, current, shapes, ctx, state.phase)
        if name in names:
            # Caffe accepts repeated layer names (BVLC's mnist_autoencoder has two 'loss' layers);
            # modules and ONNX nodes need a key, so the later layer gets a unique one. Weights go to
            # the first layer of a name only, as Caffe's CopyTrainedLayersFrom does.
            node.name = _unique_name(name, names | {lyr.name for lyr in layers})
            node.caffe_name = name
            notes.append(f"two layers are named '{name}': the later one ({type_}) is '{node.name}' here")
        names.add(node.name)
        tops: list[str] = []
        top_shapes = node.tops  # shapes, temporarily
        for blob, shape in zip(layer.top, top_shapes):
            if blob in current:
                if blob not in layer.bottom:
                    raise LayerError(name, f"top '{blob}' is already written by an earlier layer "
                                     "(only in-place layers may write a blob again)", type_)
                versions[blob] += 1
            else:
                versions[blob] = 0
            vid = value_id(blob, versions[blob])
            current[blob] = vid
            shapes[vid] = tuple(int(d) for d in shape)
            blob_of[vid] = blob
            tops.append(vid)
        node.tops = tops
        nodes.append(node)
        _check_layer_memory(node, shapes, budget)
    read_layer_files(nodes, shapes, source_path)
    sources = {blob_of[t] for n in nodes if n.is_source for t in n.tops}
    unknown = sorted(set(ctx.named) - sources)
    if unknown:
        raise ConvnetError(f"--input-shape names {', '.join(unknown)}, which the net does not take as input "
                           f"(its inputs: {', '.join(sorted(sources)) or 'none'})")
    _check_net_memory(nodes, shapes, source_path or net.name)
    return Graph(name=net.name, phase=state.phase, nodes=nodes, shapes=shapes, blob_of=blob_of,
                 notices=notes, source_path=source_path)


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
