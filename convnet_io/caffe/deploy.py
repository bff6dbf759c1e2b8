"""Write a graph as a deploy prototxt: what Caffe's ``deploy.prototxt`` files are, and what OpenCV's
and Caffe's importers read.

``deploy_text(graph)`` takes a graph of any phase from any source format (prototxt of any version,
Caffe2 listing) and writes:

* one ``Input`` layer per graph input that holds data, with its shape from ``graph.shapes``; label
  inputs (tops read only as labels/targets of loss and accuracy layers) are left out;
* every other layer in execution order with its Caffe name, type, bottoms and tops (Caffe blob
  names, ``graph.blob_of``) and its parameters re-serialised from the node's typed attributes, with
  fields that hold their ``caffe.proto`` default left out;
* no loss or accuracy layer, and no layer whose outputs only feed them: the prediction bottoms of
  the *main* loss (the largest loss weight; GoogLeNet's ``loss3``) stay, and become net outputs,
  while branches that only feed lesser losses (GoogLeNet's auxiliary classifiers ``loss1``/``loss2``)
  go, as in the BVLC deploy files.

The text is built as a ``caffe_pb2.NetParameter`` and printed with ``text_format``, never templated.

OpenCV's importer reads its own copy of caffe.proto and silently drops a whole layer parameter
message that holds a field it does not know. Of what is written here, OpenCV 4.14 lacks
``round_mode`` (it spells FLOOR ``ceil_mode: false``; CEIL, the default, is never written) and the
Clip and Swish parameters, types its Caffe importer lacks anyway. ``pool`` is always
written, although MAX is the default: OpenCV refuses a Pooling layer giving neither it nor a kernel.
"""
from __future__ import annotations

import math
from typing import Any, Callable

from google.protobuf import text_format

from convnet_io.caffe.deploy_bvlc import bvlc_writers, write_spatial
from convnet_io.caffe.deploy_detection import detection_writers
from convnet_io.caffe.deploy_forks import fork_writers
from convnet_io.caffe.deploy_recurrent import recurrent_writers
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.graph import Filler, Graph, Node
from convnet_io.graph.layers.conv_nd import is_nd
from convnet_io.graph.layers.loss import LOSS_TYPES

EVAL_TYPES = frozenset(LOSS_TYPES | {"Accuracy"})


def is_eval_type(type_: str) -> bool:
    """Loss and metric layers: not part of a deploy net."""
    return type_ in EVAL_TYPES or type_.endswith("Loss")


# -- which layers a deploy net keeps ------------------------------------------------------------------

def deploy_nodes(graph: Graph) -> tuple[list[Node], list[str]]:
    """(non-source nodes to write, in order; input values to write as Input layers, in order)."""
    evals = [n for n in graph.nodes if is_eval_type(n.type)]
    seeds: list[str] = []
    if evals:
        weight = {n.name: sum(n.loss_weights) for n in evals}
        top = max(weight.values())
        seeds += [n.bottoms[0] for n in evals if n.bottoms and math.isclose(weight[n.name], top)]
    # Values nothing reads (the net's own outputs, e.g. a deploy-style ``prob``) are kept too.
    outputs = set(graph.outputs)
    seeds += [v for n in graph.nodes if not n.is_source and not is_eval_type(n.type)
              for v in n.tops if v in outputs]
    # Layers with no tops (Silence) are kept when what they read is kept; they are not seeds.
    producer = {t: n for n in graph.nodes for t in n.tops}
    needed: set[str] = set()
    stack = list(seeds)
    while stack:
        v = stack.pop()
        if v in needed:
            continue
        needed.add(v)
        node = producer.get(v)
        if node is not None and not node.is_source:
            stack.extend(node.bottoms)
            # Every top of a kept layer is written (a Slice part, a pooling mask).
            stack.extend(node.tops)
    kept = [n for n in graph.nodes if not n.is_source and not is_eval_type(n.type)
            and (any(t in needed for t in n.tops) or (not n.tops and all(b in needed for b in n.bottoms)))]
    inputs = [v for v in graph.inputs if v in needed]
    return kept, inputs


# -- parameter serialisation ----------------------------------------------------------------------------

def _default(msg: Any, name: str) -> Any:
    return msg.DESCRIPTOR.fields_by_name[name].default_value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        import numpy as np

        return bool(np.float32(a) == np.float32(b))
    return a == b


def _put(msg: Any, **fields: Any) -> None:
    """Set each field that differs from its caffe.proto default (enums given by name)."""
    for name, value in fields.items():
        if value is None:
            continue
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.enum_type is not None and isinstance(value, str):
            value = field.enum_type.values_by_name[value].number
        if field.is_repeated:
            getattr(msg, name).extend(value)
            continue
        if isinstance(value, bool):
            value = bool(value)
        if not _same(value, _default(msg, name)):
            setattr(msg, name, value)


def _put_always(msg: Any, **fields: Any) -> None:
    """Set fields whose presence means something (required fields, tri-state options)."""
    for name, value in fields.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        if field.enum_type is not None and isinstance(value, str):
            value = field.enum_type.values_by_name[value].number
        setattr(msg, name, value)


def _filler(msg: Any, f: Filler | None) -> None:
    if f is None:
        return
    msg.SetInParent()
    _put(msg, type=f.type, value=f.value, min=f.min, max=f.max, mean=f.mean, std=f.std,
         sparse=f.sparse, variance_norm=f.variance_norm)
    if not msg.HasField("type"):
        msg.type = f.type  # name the filler even when it is the default "constant"


def _pair(msg: Any, single: str, h: str, w: str, value: tuple[int, int], default: int, repeated: bool) -> None:
    """A 2-D size as Caffe writes it: one ``x`` when square, ``x_h``/``x_w`` otherwise."""
    if value[0] == value[1]:
        if value[0] != default:
            if repeated:
                getattr(msg, single).append(value[0])
            else:
                setattr(msg, single, value[0])
    else:
        setattr(msg, h, value[0])
        setattr(msg, w, value[1])


def _convolution(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.convolution_param
    _put_always(p, num_output=a.num_output)
    _put(p, bias_term=a.bias_term)
    bottom = graph.shapes[node.bottoms[0]]
    if is_nd(a.spatial, bottom):  # N-D: the spatial fields as the net wrote them
        write_spatial(p, a.spatial, _put)
        _put(p, group=a.group)
        _filler(p.weight_filler, a.weight_filler)
        if a.bias_term:
            _filler(p.bias_filler, a.bias_filler)
        return
    _pair(p, "kernel_size", "kernel_h", "kernel_w", a.kernel, -1, True)
    _pair(p, "stride", "stride_h", "stride_w", a.stride, 1, True)
    _pair(p, "pad", "pad_h", "pad_w", a.pad, 0, True)
    if a.dilation[0] != a.dilation[1]:  # ``dilation`` has no _h/_w form: one value per axis
        p.dilation.extend(a.dilation)
    elif a.dilation[0] != 1:
        p.dilation.append(a.dilation[0])
    _put(p, group=a.group, axis=a.axis)
    _filler(p.weight_filler, a.weight_filler)
    if a.bias_term:
        _filler(p.bias_filler, a.bias_filler)


def _pooling(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.pooling_param
    # Always named, though MAX is the default: OpenCV's PoolingLayerImpl refuses a layer that gives
    # neither ``pool`` nor a kernel size ("Cannot determine pooling type"), as global MAX would be.
    _put_always(p, pool=a.method)
    if a.global_pooling:
        p.global_pooling = True
    else:
        _pair(p, "kernel_size", "kernel_h", "kernel_w", a.kernel, -1, False)
        _pair(p, "stride", "stride_h", "stride_w", a.stride, 1, False)
        _pair(p, "pad", "pad_h", "pad_w", a.pad, 0, False)
    # FLOOR is BVLC Caffe's round_mode; OpenCV's caffe.proto does not know the field (it has
    # ceil_mode) and refuses a file that sets it. CEIL, the default of both, is not written.
    _put(p, round_mode=a.round_mode)


def _inner_product(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.inner_product_param
    _put_always(p, num_output=a.num_output)
    _put(p, bias_term=a.bias_term, axis=a.axis, transpose=a.transpose)
    _filler(p.weight_filler, a.weight_filler)
    if a.bias_term:
        _filler(p.bias_filler, a.bias_filler)


def _embed(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.embed_param
    _put_always(p, num_output=a.num_output, input_dim=a.input_dim)
    _put(p, bias_term=a.bias_term)
    _filler(p.weight_filler, a.weight_filler)
    if a.bias_term:
        _filler(p.bias_filler, a.bias_filler)


def _lrn(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.lrn_param, local_size=a.local_size, alpha=a.alpha, beta=a.beta, k=a.k,
         norm_region=a.norm_region)


def _batch_norm(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.batch_norm_param
    if a.use_global_stats is not None:  # unset means "by phase": keep the difference
        _put_always(p, use_global_stats=a.use_global_stats)
    _put(p, moving_average_fraction=a.moving_average_fraction, eps=a.eps)


def _scale(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.scale_param
    _put(p, axis=a.axis, num_axes=a.num_axes, bias_term=a.bias_term)
    _filler(p.filler, a.filler)
    if a.bias_term:
        _filler(p.bias_filler, a.bias_filler)


def _bias(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.bias_param
    _put(p, axis=a.axis, num_axes=a.num_axes)
    _filler(p.filler, a.filler)


def _mvn(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.mvn_param, normalize_variance=a.normalize_variance, across_channels=a.across_channels,
         eps=a.eps)


def _relu(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.relu_param, negative_slope=a.negative_slope)


def _prelu(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.prelu_param
    _put(p, channel_shared=a.channel_shared)
    _filler(p.filler, a.filler)


def _elu(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.elu_param, alpha=a.alpha)


def _power(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.power_param, power=a.power, scale=a.scale, shift=a.shift)


def _exp(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.exp_param, base=a.base, scale=a.scale, shift=a.shift)


def _log(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.log_param, base=a.base, scale=a.scale, shift=a.shift)


def _threshold(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.threshold_param, threshold=a.threshold)


def _clip(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put_always(layer.clip_param, min=a.min, max=a.max)


def _swish(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    _put(layer.swish_param, beta=a.beta)


def _dropout(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.dropout_param
    _put(p, dropout_ratio=a.ratio)
    if not a.scale_train:
        if "scale_train" not in p.DESCRIPTOR.fields_by_name:
            raise LayerError(node.name, "scale_train false cannot be written: caffe.proto has no such field",
                             node.type)
        p.scale_train = False


def _axis(param: str) -> Callable[[Any, Any, Node, Graph], None]:
    def write(layer: Any, a: Any, node: Node, graph: Graph) -> None:
        msg = getattr(layer, param)
        msg.SetInParent()
        _put(msg, axis=a.axis)
    return write


def _slice(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.slice_param
    p.SetInParent()
    _put(p, axis=a.axis)
    p.slice_point.extend(a.slice_points)


def _flatten(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.flatten_param
    p.SetInParent()
    _put(p, axis=a.axis, end_axis=a.end_axis)


def _reshape(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.reshape_param
    p.shape.SetInParent()
    p.shape.dim.extend(a.shape)
    _put(p, axis=a.axis, num_axes=a.num_axes)


def _crop(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.crop_param
    p.SetInParent()
    _put(p, axis=a.axis)
    p.offset.extend(a.offsets)


def _tile(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.tile_param
    _put(p, axis=a.axis)
    _put_always(p, tiles=a.tiles)


def _reduction(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.reduction_param
    p.SetInParent()
    _put(p, operation=a.operation, axis=a.axis, coeff=a.coeff)


def _argmax(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.argmax_param
    p.SetInParent()
    _put(p, out_max_val=a.out_max_val, top_k=a.top_k)
    if a.axis is not None:
        _put_always(p, axis=a.axis)


def _eltwise(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.eltwise_param
    p.SetInParent()
    _put(p, operation=a.operation)
    p.coeff.extend(a.coeffs)


def _parameter(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    p = layer.parameter_param
    p.shape.SetInParent()
    p.shape.dim.extend(a.shape)


def _none(layer: Any, a: Any, node: Node, graph: Graph) -> None:
    return None


WRITERS: dict[str, Callable[[Any, Any, Node, Graph], None]] = {
    "Convolution": _convolution,
    "Deconvolution": _convolution,
    "Pooling": _pooling,
    "InnerProduct": _inner_product,
    "Embed": _embed,
    "LRN": _lrn,
    "BatchNorm": _batch_norm,
    "Scale": _scale,
    "Bias": _bias,
    "MVN": _mvn,
    "ReLU": _relu,
    "PReLU": _prelu,
    "ELU": _elu,
    "Sigmoid": _none,
    "TanH": _none,
    "AbsVal": _none,
    "BNLL": _none,
    "Power": _power,
    "Exp": _exp,
    "Log": _log,
    "Threshold": _threshold,
    "Clip": _clip,
    "Swish": _swish,
    "Dropout": _dropout,
    "Concat": _axis("concat_param"),
    "Softmax": _axis("softmax_param"),
    "Slice": _slice,
    "Split": _none,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Crop": _crop,
    "Tile": _tile,
    "Reduction": _reduction,
    "ArgMax": _argmax,
    "Eltwise": _eltwise,
    "Silence": _none,
    "Parameter": _parameter,
}
WRITERS.update(fork_writers(_put, _put_always, _convolution))  # segmentation, two-stage, YOLO forks
WRITERS.update(detection_writers(_put, _put_always, _filler))  # SSD's layers
WRITERS.update(bvlc_writers(_put, _put_always))  # SPP, Im2col, BatchReindex, Filter, HDF5Output
WRITERS.update(recurrent_writers(_put, _put_always, _filler))  # RNN, LSTM, LSTMUnit


# -- the net ------------------------------------------------------------------------------------------

def _input_names(graph: Graph, inputs: list[str], taken: set[str]) -> dict[str, str]:
    """Input layer name per input value: the source layer's name when it feeds one kept input
    (``data``, ``cifar``), else the blob's name, made unique against the other layer names."""
    per_source: dict[str, list[str]] = {}
    for v in inputs:
        per_source.setdefault(graph.producer(v).name, []).append(v)
    names: dict[str, str] = {}
    used = set(taken)
    for source, values in per_source.items():
        for v in values:
            name = source if len(values) == 1 else graph.blob_of[v]
            base, i = name, 1
            while name in used:
                name, i = f"{base}_input{'' if i == 1 else i}", i + 1
            used.add(name)
            names[v] = name
    return names


def deploy_net(graph: Graph) -> caffe_pb2.NetParameter:
    """The deploy NetParameter of a graph (see the module docstring)."""
    nodes, inputs = deploy_nodes(graph)
    if not nodes:
        raise ConvnetError(f"{graph.name or 'the net'}: nothing is left for a deploy net once loss and "
                           "accuracy layers are taken out")
    net = caffe_pb2.NetParameter()
    if graph.name:
        net.name = graph.name
    names = _input_names(graph, inputs, {n.name for n in nodes})
    for v in inputs:
        layer = net.layer.add(name=names[v], type="Input")
        layer.top.append(graph.blob_of[v])
        layer.input_param.shape.add().dim.extend(int(d) for d in graph.shapes[v])
    for node in nodes:
        writer = WRITERS.get(node.type)
        if writer is None:
            if node.attrs is not None:
                raise LayerError(node.name, f"deploy_text cannot write layer type '{node.type}' yet",
                                 node.type)
            writer = _none
        layer = net.layer.add(name=node.name, type=node.type)
        layer.bottom.extend(graph.blob_of.get(b, b) for b in node.bottoms)
        layer.top.extend(graph.blob_of.get(t, t) for t in node.tops)
        if any(spec.share_name for spec in node.params):  # shared weights stay shared
            for spec in node.params:
                param = layer.param.add()
                if spec.share_name:
                    param.name = spec.share_name
        writer(layer, node.attrs, node, graph)
    return net


def deploy_text(graph: Graph) -> str:
    """The graph as deploy prototxt text that Caffe and OpenCV read."""
    return text_format.MessageToString(deploy_net(graph))
