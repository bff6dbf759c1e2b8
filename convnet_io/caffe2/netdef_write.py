"""A graph and its weights written as a Caffe2 NetDef pair: ``predict_net.pb`` (one operator per
Caffe layer, BatchNorm + Scale as one SpatialBN), ``init_net.pb`` (a ``GivenTensorFill`` per
parameter blob, then a fill of the input blob as Caffe2's translator ends it) and
``value_info.json``. Parameters are named as Caffe2 names them (``conv1_w``, ``conv1_b``,
``bn_s``/``bn_b``/``bn_rm``/``bn_riv``) and every op carries its Caffe layer's name, so reading
the pair back gives the same graph.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from convnet_io.caffe2.proto import caffe2_pb2
from convnet_io.caffe2.wire import encode_op
from convnet_io.errors import LayerError
from convnet_io.graph import Graph
from convnet_io.graph.ir import Node


class _Writer:
    def __init__(self, graph: Graph, blobs: dict[str, list[np.ndarray]]):
        self.graph, self.blobs = graph, blobs
        self.predict = caffe2_pb2.NetDef(name=graph.name)
        self.params: dict[str, np.ndarray] = {}  # blob -> values, in first-use order

    def blob(self, value: str) -> str:
        return self.graph.blob_of.get(value, value)

    def op(self, node: Node, op_type: str, inputs: list[str], outputs: list[str] | None = None,
           name: str | None = None, **args: Any) -> caffe2_pb2.OperatorDef:
        od = self.predict.op.add(type=op_type, name=node.name if name is None else name,
                                 input=inputs, output=outputs or [self.blob(node.tops[0])])
        for key, value in args.items():
            a = od.arg.add(name=key)
            if isinstance(value, bool):
                a.i = int(value)
            elif isinstance(value, int):
                a.i = value
            elif isinstance(value, float):
                a.f = value
            elif isinstance(value, str):
                a.s = value.encode()
            elif all(isinstance(v, int) for v in value):
                a.ints.extend(value)
            else:
                a.floats.extend(value)
        return od

    def param(self, node: Node, index: int, suffix: str, array: np.ndarray | None = None) -> str:
        """The Caffe2 blob for the node's Caffe blob ``index`` (a shared blob keeps its name)."""
        spec = node.params[index]
        name = spec.share_name or f"{node.name}_{suffix}"
        if name not in self.params:
            value = self.blobs[node.name][index] if array is None else array
            self.params[name] = np.asarray(value, dtype=np.float32).reshape(spec.shape if array is None else value.shape)
        return name

    def bottoms(self, node: Node) -> list[str]:
        return [self.blob(b) for b in node.bottoms]


_WRITERS: dict[str, Callable[[_Writer, Node], None]] = {}


def _writes(*types: str):
    def wrap(fn):
        for t in types:
            _WRITERS[t] = fn
        return fn
    return wrap


def _window_args(kernel, stride, pad, dilation=(1, 1)) -> dict[str, Any]:
    args: dict[str, Any] = {}
    args.update({"kernel": kernel[0]} if kernel[0] == kernel[1] else {"kernel_h": kernel[0], "kernel_w": kernel[1]})
    args.update({"stride": stride[0]} if stride[0] == stride[1] else {"stride_h": stride[0], "stride_w": stride[1]})
    args.update({"pad": pad[0]} if pad[0] == pad[1] else {"pads": [pad[0], pad[1], pad[0], pad[1]]})
    if tuple(dilation) != (1, 1):
        args.update({"dilation": dilation[0]} if dilation[0] == dilation[1] else {"dilations": list(dilation)})
    return args


@_writes("Convolution", "Deconvolution")
def _conv(w: _Writer, node: Node) -> None:
    a = node.attrs
    if len(a.kernel) != 2 or a.axis != 1:
        raise LayerError(node.name, "only 2-D convolutions over axis 1 have a Caffe2 Conv", node.type)
    inputs = [*w.bottoms(node), w.param(node, 0, "w")]
    if a.bias_term:
        inputs.append(w.param(node, 1, "b"))
    args = _window_args(a.kernel, a.stride, a.pad, a.dilation)
    if a.group != 1:
        args["group"] = a.group
    w.op(node, "Conv" if node.type == "Convolution" else "ConvTranspose", inputs, order="NCHW", **args)


@_writes("InnerProduct")
def _fc(w: _Writer, node: Node) -> None:
    a = node.attrs
    if not a.bias_term:  # Caffe2's FC always adds a bias; reading back gives bias_term true
        raise LayerError(node.name, "an InnerProduct without bias has no Caffe2 FC", node.type)
    args = {"axis": a.axis} if a.axis != 1 else {}
    w.op(node, "FCTransposed" if a.transpose else "FC",
         [*w.bottoms(node), w.param(node, 0, "w"), w.param(node, 1, "b")], **args)


@_writes("Pooling")
def _pool(w: _Writer, node: Node) -> None:
    a = node.attrs
    if a.method not in ("MAX", "AVE"):
        raise LayerError(node.name, f"{a.method} pooling has no Caffe2 operator", node.type)
    op_type = "MaxPool" if a.method == "MAX" else "AveragePool"
    if a.global_pooling:
        w.op(node, op_type, w.bottoms(node), order="NCHW", global_pooling=1)
        return
    args = _window_args(a.kernel, a.stride, a.pad)
    if a.round_mode == "CEIL":  # Caffe's rounding is Caffe2's CAFFE_LEGACY_POOLING
        args["legacy_pad"] = 3
    if a.method == "AVE" and tuple(a.pad) != (0, 0):
        args["count_include_pad"] = 1
        shape = w.graph.shapes[node.bottoms[0]]
        for axis in (0, 1):  # Caffe2 divides by the whole window, Caffe clips it at the padded edge
            size, k, s, p = shape[2 + axis], a.kernel[axis], a.stride[axis], a.pad[axis]
            out = w.graph.shapes[node.tops[0]][2 + axis]
            if (out - 1) * s - p + k > size + p:
                raise LayerError(node.name, "AVE pooling whose last window reaches past the padding has no "
                                 "Caffe2 operator (Caffe2 counts the overhang in the divisor)", node.type)
    w.op(node, op_type, w.bottoms(node), order="NCHW", **args)


@_writes("ReLU")
def _relu(w: _Writer, node: Node) -> None:
    if node.attrs.negative_slope:
        w.op(node, "LeakyRelu", w.bottoms(node), alpha=float(node.attrs.negative_slope))
    else:
        w.op(node, "Relu", w.bottoms(node))


@_writes("Sigmoid", "TanH")
def _plain(w: _Writer, node: Node) -> None:
    w.op(node, {"Sigmoid": "Sigmoid", "TanH": "Tanh"}[node.type], w.bottoms(node))


@_writes("ELU")
def _elu(w: _Writer, node: Node) -> None:
    w.op(node, "Elu", w.bottoms(node), alpha=float(node.attrs.alpha))


@_writes("Clip")
def _clip(w: _Writer, node: Node) -> None:
    w.op(node, "Clip", w.bottoms(node), min=float(node.attrs.min), max=float(node.attrs.max))


@_writes("PReLU")
def _prelu(w: _Writer, node: Node) -> None:
    w.op(node, "PRelu", [*w.bottoms(node), w.param(node, 0, "slope")], order="NCHW")


@_writes("LRN")
def _lrn(w: _Writer, node: Node) -> None:
    a = node.attrs
    if a.norm_region != "ACROSS_CHANNELS":
        raise LayerError(node.name, "LRN WITHIN_CHANNEL has no Caffe2 operator", node.type)
    w.op(node, "LRN", w.bottoms(node), size=a.local_size, alpha=float(a.alpha), beta=float(a.beta),
         bias=float(a.k), order="NCHW")


@_writes("Dropout")
def _dropout(w: _Writer, node: Node) -> None:
    w.op(node, "Dropout", w.bottoms(node), ratio=float(node.attrs.ratio), is_test=1)


@_writes("Softmax")
def _softmax(w: _Writer, node: Node) -> None:
    args = {"axis": node.attrs.axis} if node.attrs.axis != 1 else {}
    w.op(node, "Softmax", w.bottoms(node), **args)


@_writes("Concat")
def _concat(w: _Writer, node: Node) -> None:
    top = w.blob(node.tops[0])  # Caffe2's Concat also writes the split sizes
    w.op(node, "Concat", w.bottoms(node), [top, f"_{top}_split_info"], axis=node.attrs.axis)


@_writes("Eltwise")
def _eltwise(w: _Writer, node: Node) -> None:
    a = node.attrs
    if a.operation == "SUM":
        if any(c != 1 for c in a.coeffs):
            raise LayerError(node.name, "Eltwise SUM with coefficients has no Caffe2 operator", node.type)
        w.op(node, "Sum", w.bottoms(node))
    elif a.operation == "PROD" and len(node.bottoms) == 2:
        w.op(node, "Mul", w.bottoms(node))
    elif a.operation == "MAX":
        w.op(node, "Max", w.bottoms(node))
    else:
        raise LayerError(node.name, f"Eltwise {a.operation} of {len(node.bottoms)} blobs has no Caffe2 operator",
                         node.type)


@_writes("Flatten")
def _flatten(w: _Writer, node: Node) -> None:
    if node.attrs.axis != 1 or node.attrs.end_axis != -1:
        raise LayerError(node.name, "only Flatten from axis 1 to the end has a Caffe2 operator", node.type)
    w.op(node, "Flatten", w.bottoms(node))


@_writes("Reshape")
def _reshape(w: _Writer, node: Node) -> None:
    a = node.attrs
    if a.num_axes > 0 and not a.shape and a.axis >= 0:  # axes of size 1 removed
        w.op(node, "Squeeze", w.bottoms(node), dims=list(range(a.axis, a.axis + a.num_axes)))
        return
    if a.num_axes == 0 and a.shape and set(a.shape) == {1} and a.axis >= 0:  # axes of size 1 inserted
        w.op(node, "ExpandDims", w.bottoms(node), dims=list(range(a.axis, a.axis + len(a.shape))))
        return
    if tuple(a.shape) == (-1,) and a.axis == 0 and a.num_axes == -1:
        w.op(node, "FlattenToVec", w.bottoms(node))
        return
    if a.axis != 0 or a.num_axes != -1:
        raise LayerError(node.name, "Caffe2's Reshape replaces the whole shape: axis 0, num_axes -1 only", node.type)
    top = w.blob(node.tops[0])  # Caffe2's Reshape also writes the old shape
    w.op(node, "Reshape", w.bottoms(node), [top, f"_{top}_old_shape"], shape=[int(d) for d in a.shape])


@_writes("Split")
def _split(w: _Writer, node: Node) -> None:
    for i, top in enumerate(node.tops):
        w.op(node, "Copy", w.bottoms(node), [w.blob(top)], name=node.name if i == 0 else f"{node.name}_{i}")


@_writes("ShuffleChannel")
def _shuffle(w: _Writer, node: Node) -> None:
    w.op(node, "ChannelShuffle", w.bottoms(node), group=node.attrs.group, order="NCHW")


@_writes("Permute")
def _permute(w: _Writer, node: Node) -> None:
    rank = len(w.graph.shapes[node.bottoms[0]])
    order = [*node.attrs.order, *(i for i in range(rank) if i not in node.attrs.order)]
    w.op(node, "Transpose", w.bottoms(node), axes=order)


@_writes("Power")
def _power(w: _Writer, node: Node) -> None:
    a = node.attrs
    if a.power != 1 or a.shift != 0:
        raise LayerError(node.name, "only Power with power 1 and shift 0 (Caffe2's Scale) has a Caffe2 operator",
                         node.type)
    w.op(node, "Scale", w.bottoms(node), scale=float(a.scale))


@_writes("Scale")
def _scale(w: _Writer, node: Node) -> None:
    a = node.attrs
    top = w.blob(node.tops[0])
    if a.operand_bottom:
        w.op(node, "Mul", w.bottoms(node), broadcast=1, axis=a.axis)
        inputs = [top]
    else:
        w.op(node, "Mul", [*w.bottoms(node), w.param(node, 0, "w")], broadcast=1, axis=a.axis)
        inputs = [top]
    if a.bias_term:
        index = 1 if not a.operand_bottom else 0
        w.op(node, "Add", [*inputs, w.param(node, index, "b")], name=f"{node.name}_bias", broadcast=1, axis=a.axis)


@_writes("Bias")
def _bias(w: _Writer, node: Node) -> None:
    if len(node.bottoms) == 2:
        w.op(node, "Add", w.bottoms(node), broadcast=1, axis=node.attrs.axis)
    else:
        w.op(node, "Add", [*w.bottoms(node), w.param(node, 0, "b")], broadcast=1, axis=node.attrs.axis)


def _spatial_bn(w: _Writer, bn: Node, scale: Node | None) -> None:
    """BatchNorm (+ the Scale after it) -> SpatialBN. Caffe stores mean and variance multiplied
    by a factor (blob 2); Caffe2 stores them plain."""
    mean, var, factor = (np.asarray(b, np.float32) for b in w.blobs[bn.name])
    k = 0.0 if float(factor.ravel()[0]) == 0 else 1.0 / float(factor.ravel()[0])
    c = mean.size
    if scale is not None:
        s, b = w.param(scale, 0, "w"), w.param(scale, 1, "b")
        w.params[f"{bn.name}_s"] = w.params.pop(s)
        w.params[f"{bn.name}_b"] = w.params.pop(b)
    else:
        w.params[f"{bn.name}_s"] = np.ones(c, np.float32)
        w.params[f"{bn.name}_b"] = np.zeros(c, np.float32)
    w.params[f"{bn.name}_rm"] = (mean * k).astype(np.float32)
    w.params[f"{bn.name}_riv"] = (var * k).astype(np.float32)
    out = w.blob((scale or bn).tops[0])
    w.op(bn, "SpatialBN", [*w.bottoms(bn), f"{bn.name}_s", f"{bn.name}_b", f"{bn.name}_rm", f"{bn.name}_riv"],
         [out], is_test=1, epsilon=float(bn.attrs.eps), order="NCHW")


def _fused_scale(graph: Graph, i: int) -> Node | None:
    """The Scale layer right after BatchNorm ``i`` that SpatialBN absorbs, if any."""
    if i + 1 >= len(graph.nodes):
        return None
    bn, nxt = graph.nodes[i], graph.nodes[i + 1]
    a = getattr(nxt, "attrs", None)
    if (nxt.type == "Scale" and nxt.bottoms == [bn.tops[0]] and a.bias_term and not a.operand_bottom
            and a.axis == 1 and a.num_axes == 1):
        return nxt
    return None


def netdef_pair(graph: Graph, blobs: dict[str, list[np.ndarray]]
                ) -> tuple[caffe2_pb2.NetDef, list[bytes | memoryview], dict]:
    """(predict NetDef, the init NetDef as buffers to write in order, value_info) of a TEST graph."""
    w = _Writer(graph, blobs)
    inputs: list[str] = []
    skip: set[str] = set()
    for i, node in enumerate(graph.nodes):
        if node.name in skip:
            continue
        if node.type == "Input":
            inputs.extend(w.blob(t) for t in node.tops)
            continue
        if node.type == "BatchNorm":
            scale = _fused_scale(graph, i)
            if scale is not None:
                skip.add(scale.name)
            _spatial_bn(w, node, scale)
            continue
        fn = _WRITERS.get(node.type)
        if fn is None:
            raise LayerError(node.name, f"Caffe type {node.type} has no Caffe2 operator in convnet's writer "
                             f"(written: {', '.join(sorted([*_WRITERS, 'BatchNorm', 'Input']))})", node.type)
        fn(w, node)
    w.predict.external_input.extend([*inputs, *w.params])
    w.predict.external_output.extend(w.blob(v) for v in graph.outputs)
    init = caffe2_pb2.NetDef(name=f"{graph.name}_init")
    init.external_output.extend(w.params)
    parts: list[bytes | memoryview] = [init.SerializeToString()]
    for name, values in w.params.items():
        od = caffe2_pb2.OperatorDef(type="GivenTensorFill", output=[name])
        od.arg.add(name="shape", ints=list(values.shape))
        parts.extend(encode_op(od, {"values": values}))
    info = {}
    for blob in inputs:
        shape = list(graph.shapes[graph.final_value(blob)] if blob not in graph.shapes else graph.shapes[blob])
        od = caffe2_pb2.OperatorDef(type="ConstantFill", output=[blob])
        od.arg.add(name="shape", ints=shape)
        od.arg.add(name="value", f=0.0)
        parts.extend(encode_op(od))
        info[blob] = [caffe2_pb2.TensorProto.FLOAT, shape]
    return w.predict, parts, info


def write_netdef_pair(graph: Graph, blobs: dict[str, list[np.ndarray]], out_dir: str | Path) -> dict[str, str]:
    """Write predict_net.pb, init_net.pb and value_info.json into ``out_dir`` (atomically each)."""
    from convnet_io.atomic import atomic_output, write_bytes_atomic

    predict, init, info = netdef_pair(graph, blobs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"predict_net": out / "predict_net.pb", "init_net": out / "init_net.pb", "value_info": out / "value_info.json"}
    write_bytes_atomic(paths["predict_net"], predict.SerializeToString())
    with atomic_output(paths["init_net"]) as tmp, open(tmp, "wb") as f:
        f.writelines(init)
    write_bytes_atomic(paths["value_info"], (json.dumps(info) + "\n").encode())
    return {k: str(v) for k, v in paths.items()}
