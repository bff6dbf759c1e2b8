"""Caffe2 init ops (fills): the parameter shapes they create and the Caffe fillers they become."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe2.op import Op
from convnet_io.graph import Shape

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
    op.check_args(allowed)
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
