"""Caffe2's ``legacy_pad: SAME`` (conv_pool_op_base.h, ComputeSizeAndPad) set on the Caffe layers
once the input sizes are known, and CAFFE_LEGACY_POOLING average pooling checked against them.

SAME pads so that ``out = ceil(in / stride)``: ``pad_needed = (out - 1) * stride + kernel - in``,
``pad_head = pad_needed / 2`` (Caffe2 builds with CAFFE2_PAD_HEAD_MORE off), the rest at the tail.
The padding depends on the input size, so translation leaves it at 0; here each SAME layer gets
its pads from the built graph, and the graph is rebuilt until no layer changes (a pad changes the
sizes downstream). Caffe pads both sides equally, so an odd ``pad_needed`` maps only where the
extra tail row changes nothing: max pooling (padding never wins a max) and average pooling with
no head padding, both as Caffe's ceil-rounded pooling, whose last window the input clips.
"""
from __future__ import annotations

import math
from typing import Any

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe2.op import Op
from convnet_io.errors import LayerError
from convnet_io.graph import Graph


def same_pads(in_size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """(pad_head, pad_tail, out_size) of Caffe2's SAME rule for one axis."""
    target = (in_size + stride - 1) // stride
    needed = (target - 1) * stride + kernel - in_size
    head = int(needed / 2)  # C++ division truncates toward zero
    return head, needed - head, (in_size + needed - kernel) // stride + 1


def _caffe_ceil_out(in_size: int, kernel: int, stride: int, pad: int) -> int:
    out = math.ceil((in_size + 2 * pad - kernel) / stride) + 1
    if pad and (out - 1) * stride >= in_size + pad:
        out -= 1
    return out


def _pool_setting(op: Op, p: Any, in_hw: tuple[int, int], kernel, stride) -> tuple[tuple[int, int], int]:
    """(pad_h, pad_w), round mode for a SAME pooling layer."""
    pads, ceil = [], False
    for axis, size in enumerate(in_hw):
        head, tail, out = same_pads(size, kernel[axis], stride[axis])
        if head < 0 or tail < 0:
            raise op.error(f"legacy_pad SAME gives a negative pad ({head}, {tail}) for input size {size}")
        if tail != head:
            if p.pool == caffe_pb2.PoolingParameter.AVE and head > 0:
                raise op.error(f"legacy_pad SAME pads an input of size {size} by {head} and {tail}: Caffe's "
                               "average pooling pads both sides equally and counts the padding")
            if _caffe_ceil_out(size, kernel[axis], stride[axis], head) != out:
                raise op.error(f"legacy_pad SAME pads an input of size {size} by {head} and {tail}, which "
                               "no Caffe pooling reproduces")
            ceil = True
        pads.append(head)
    if ceil:  # every axis must then come out right under ceil rounding
        for axis, size in enumerate(in_hw):
            head, _, out = same_pads(size, kernel[axis], stride[axis])
            if _caffe_ceil_out(size, kernel[axis], stride[axis], head) != out:
                raise op.error(f"legacy_pad SAME: no single Caffe rounding fits both axes of {list(in_hw)}")
    mode = caffe_pb2.PoolingParameter.CEIL if ceil else caffe_pb2.PoolingParameter.FLOOR
    return (pads[0], pads[1]), mode


def _check_ave_overhang(op: Op, p: Any, in_hw: tuple[int, int], kernel, stride) -> None:
    """CAFFE_LEGACY_POOLING average pooling with padding: Caffe2 (count_include_pad) divides every
    window by kernel_h * kernel_w, Caffe by the window clipped at the padded edge; they differ
    only where ceil rounding adds a window reaching past that edge."""
    pads = (p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad)
    for axis, size in enumerate(in_hw):
        out = _caffe_ceil_out(size, kernel[axis], stride[axis], pads[axis])
        if (out - 1) * stride[axis] - pads[axis] + kernel[axis] > size + pads[axis]:
            raise op.error(f"average pooling with CAFFE_LEGACY_POOLING over size {size}: the last window "
                           "reaches past the padding, which Caffe2 counts in the divisor and Caffe does not")


def _conv_setting(op: Op, in_hw: tuple[int, int], kernel, stride) -> tuple[int, int]:
    pads = []
    for axis, size in enumerate(in_hw):
        head, tail, _ = same_pads(size, kernel[axis], stride[axis])
        if head != tail or head < 0:
            raise op.error(f"legacy_pad SAME pads an input of size {size} by {head} and {tail}: Caffe's "
                           "convolution pads both sides equally")
        pads.append(head)
    return pads[0], pads[1]


def _set_pads(p: Any, pad: tuple[int, int], conv: bool) -> None:
    if conv:
        del p.pad[:]
        p.ClearField("pad_h")
        p.ClearField("pad_w")
        if pad != (0, 0):
            p.pad_h, p.pad_w = pad
    else:
        p.ClearField("pad")
        p.pad_h, p.pad_w = pad


def resolve_same(net: caffe_pb2.NetParameter, graph: Graph, same_ops: list, path: str) -> Graph:
    """The graph with every SAME layer's pads (and, for pooling, rounding) set; ``net`` is edited."""
    layers = {layer.name: layer for layer in net.layer}
    for _ in range(len(same_ops) + 1):
        changed = False
        for name, op, kernel, stride in same_ops:
            layer = layers[name]
            node = graph.node(name)
            shape = graph.shapes[node.bottoms[0]]
            if len(shape) != 4:
                raise op.error(f"legacy_pad SAME needs a 4-D input, got {list(shape)}")
            in_hw = (shape[2], shape[3])
            if layer.type == "Pooling" and op.get_int("legacy_pad", 0) == 3:
                _check_ave_overhang(op, layer.pooling_param, in_hw, kernel, stride)
                continue
            if layer.type == "Pooling":
                p = layer.pooling_param
                pad, mode = _pool_setting(op, p, in_hw, kernel, stride)
                old = ((p.pad_h, p.pad_w) if p.HasField("pad_h") else (p.pad, p.pad), p.round_mode)
                if old != (pad, mode):
                    _set_pads(p, pad, conv=False)
                    p.round_mode = mode
                    changed = True
            else:
                p = layer.convolution_param
                pad = _conv_setting(op, in_hw, kernel, stride)
                old = (p.pad_h, p.pad_w) if p.HasField("pad_h") else ((p.pad[0],) * 2 if len(p.pad) else (0, 0))
                if old != pad:
                    _set_pads(p, pad, conv=True)
                    changed = True
        if not changed:
            return graph
        try:
            graph = build_graph(net, phase="TEST", source_path=path)
        except LayerError as e:
            op = next((o for n, o, _, _ in same_ops if n == e.layer), None)
            if op is None:
                raise
            raise op.error(f"as Caffe {e.layer_type or 'layer'} '{e.layer}': {e.message}") from None
    return graph
