"""Caffe2 ops made ready for the per-operator converters, before translation:

* NHWC: Caffe's layers are NCHW, so an NHWC op (``order: NHWC``) runs between two Transposes
  (SSD's Permute layer): its input to NCHW, its output back to NHWC. A run of NHWC ops shares
  the transposes: an NHWC blob keeps its NCHW twin until it is written again. Convolution
  filters stored (M, kH, kW, C) become (M, C, kH, kW), their values too; NHWC Concat is axis 3.
* ImageInput-style data ops: their first output is an input of the net (the batch size and
  crop give its shape where they are stated); the op itself is dropped.
* A Reshape whose shape is an integer fill of the init net takes the shape as an argument.
* An FC weight read with ``axis_w`` is filled as the matrix it is read as.
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from convnet_io.caffe2.op import Arg, Op
from convnet_io.graph import Shape

if TYPE_CHECKING:
    from convnet_io.caffe2.netdef import InitNet

_NHWC_DATA_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "LRN", "SpatialBN", "PRelu", "ChannelShuffle"}
_FILTER_OPS = {"Conv", "ConvTranspose"}
_INPUT_OPS = {"ImageInput", "TensorProtosDBInput", "VideoInput"}
_TO_NCHW, _TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


def _arg(name: str, value: Any) -> Arg:
    return Arg(name, value, str(value), 0)


def _derived(op: Op, **changes: Any) -> Op:
    """A new op made from ``op`` (same position for messages); named after its output, not ``op``."""
    if hasattr(op, "name"):
        changes.setdefault("name", "")
    changes.setdefault("input_cols", [op.col] * len(changes.get("inputs", op.inputs)))
    changes.setdefault("output_cols", [op.col] * len(changes.get("outputs", op.outputs)))
    return replace(op, **changes)


def _with_args(op: Op, **values: Any) -> dict[str, Arg]:
    args = dict(op.args)
    for k, v in values.items():
        if v is None:
            args.pop(k, None)
        else:
            args[k] = _arg(k, v)
    return args


def _transpose(op: Op, src: str, dst: str, axes: list[int]) -> Op:
    return _derived(op, type="Transpose", inputs=[src], outputs=[dst], args={"axes": _arg("axes", axes)})


def rewrite_nhwc(fills: list[Op], predict: list[Op], values: dict[str, np.ndarray]) -> tuple[list[Op], list[Op]]:
    """(fills, predict) with every NHWC op made NCHW between transposes; ``values`` (init blob ->
    array) is updated for permuted filters."""
    if not any(op.get_str("order", "NCHW") == "NHWC" for op in predict):
        return fills, predict
    fill_of = {op.outputs[0]: i for i, op in enumerate(fills)}
    permuted: set[str] = set()
    nchw_of: dict[str, str] = {}  # NHWC blob -> its NCHW twin, while the blob is unchanged
    names = {b for op in predict for b in (*op.inputs, *op.outputs)}

    def twin(blob: str) -> str:
        name, i = f"{blob}__nchw", 2
        while name in names:
            name, i = f"{blob}__nchw{i}", i + 1
        names.add(name)
        return name

    alias: dict[str, str] = {}  # blob -> the name its value has after an in-place NHWC op
    out: list[Op] = []
    for op in predict:
        if alias:
            op = replace(op, inputs=[alias.get(b, b) for b in op.inputs],
                         outputs=[alias.get(b, b) if b in op.inputs else b for b in op.outputs])
        order = op.get_str("order", "NCHW")
        if order == "NHWC" and op.type == "Concat":
            axis = {} if op.has("axis") else {"axis": 3}
            out.append(replace(op, args=_with_args(op, order=None, **axis)))
        elif order == "NHWC" and op.type in _NHWC_DATA_OPS:
            x, y = op.inputs[0], op.outputs[0]
            if x not in nchw_of:
                nchw_of[x] = twin(x)
                out.append(_transpose(op, x, nchw_of[x], _TO_NCHW))
            if op.type in _FILTER_OPS and op.inputs[1] not in permuted and op.inputs[1] in fill_of:
                w = op.inputs[1]
                permuted.add(w)
                fill = fills[fill_of[w]]
                shape = fill.get_ints("shape") or []
                if len(shape) == 4:
                    fills[fill_of[w]] = replace(fill, args=_with_args(fill, shape=[shape[i] for i in _TO_NCHW]))
                    if w in values:
                        values[w] = np.ascontiguousarray(values[w].reshape(shape).transpose(_TO_NCHW))
            y_nchw = nchw_of[x] if y == x else twin(y)  # in place stays in place
            main = replace(op, inputs=[nchw_of[x], *op.inputs[1:]], outputs=[y_nchw, *op.outputs[1:]],
                           args=_with_args(op, order="NCHW"))
            for blob in op.outputs:
                nchw_of.pop(blob, None)
            out.append(main)
            if y == x:  # Caffe writes a blob again only in place: the result takes a new name
                alias[y] = y = twin(y).replace("__nchw", "__nhwc")
            out.append(_transpose(op, y_nchw, y, _TO_NHWC))
            nchw_of[y] = y_nchw
            continue
        else:
            out.append(op)
        for blob in op.outputs:
            nchw_of.pop(blob, None)
    return fills, out


def data_inputs(predict: list[Op]) -> tuple[list[Op], dict[str, Shape | None]]:
    """Predict ops without the data-reading ops, and the blobs those gave (shape if stated)."""
    out, inputs = [], {}
    for op in predict:
        if op.type not in _INPUT_OPS:
            out.append(op)
            continue
        batch, crop = op.get_int("batch_size"), op.get_int("crop")
        channels = 1 if op.get_bool("is_gray") else 3
        inputs[op.outputs[0]] = (batch, channels, crop, crop) if batch and crop else None
    return out, inputs


def rewrite_for_caffe(init: InitNet, predict: list[Op]) -> tuple[list[Op], list[Op]]:
    """(fill ops, predict ops) for the translator."""
    out: list[Op] = []
    for op in predict:
        if op.type == "Reshape" and len(op.inputs) == 2 and op.inputs[1] in init.ints and "shape" not in op.args:
            shape = [int(v) for v in init.ints[op.inputs[1]]]
            op = replace(op, inputs=op.inputs[:1], input_cols=op.input_cols[:1], args=_with_args(op, shape=shape))
        out.append(op)
    fills = _fc_weights_2d(list(init.fills), out, init.values)
    return rewrite_nhwc(fills, out, init.values)


def _fc_weights_2d(fills: list[Op], predict: list[Op], values: dict[str, np.ndarray]) -> list[Op]:
    """FC's ``axis_w``: W is read as a matrix, its axes before axis_w one side, the rest the other:
    the init fill gives the 2-D shape Caffe's InnerProduct stores."""
    fill_of = {op.outputs[0]: i for i, op in enumerate(fills)}
    for i, op in enumerate(predict):
        if op.type not in ("FC", "FCTransposed") or op.get_int("axis_w", 1) == 1 or len(op.inputs) < 2:
            continue
        w, axis_w = op.inputs[1], op.get_int("axis_w")
        if w in fill_of:
            fill = fills[fill_of[w]]
            shape = fill.get_ints("shape") or []
            if 0 < axis_w < len(shape):
                flat = [int(np.prod(shape[:axis_w])), int(np.prod(shape[axis_w:]))]
                fills[fill_of[w]] = replace(fill, args=_with_args(fill, shape=flat))
                if w in values:
                    values[w] = values[w].reshape(flat)
                predict[i] = replace(op, args=_with_args(op, axis_w=None))
    return fills
