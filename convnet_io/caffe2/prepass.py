"""NetDef ops made ready for the per-operator converters: what needs the init net's values
(a Reshape whose shape is an integer fill) is resolved before translation."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from convnet_io.caffe2.op import Arg, Op

if TYPE_CHECKING:
    from convnet_io.caffe2.netdef import InitNet


def rewrite_for_caffe(init: "InitNet", predict: list[Op]) -> tuple[list[Op], list[Op]]:
    """(fill ops, predict ops) for the translator."""
    out: list[Op] = []
    for op in predict:
        if op.type == "Reshape" and len(op.inputs) == 2 and op.inputs[1] in init.ints and "shape" not in op.args:
            shape = [int(v) for v in init.ints[op.inputs[1]]]
            args = dict(op.args)
            args["shape"] = Arg("shape", shape, str(shape), 0)
            op = replace(op, inputs=op.inputs[:1], input_cols=op.input_cols[:1], args=args)
        out.append(op)
    return init.fills, out
