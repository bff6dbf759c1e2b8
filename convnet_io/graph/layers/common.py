"""Helpers shared by layer specs: Caffe's parameter conventions."""
from __future__ import annotations

import math
from typing import Any

from convnet_io.graph.types import Filler, Shape


def count(shape: Shape, start: int = 0, end: int | None = None) -> int:
    n = 1
    for d in shape[start:end]:
        n *= d
    return n


def canonical_axis(axis: int, ndim: int) -> int:
    """Caffe's CanonicalAxisIndex: negative axes count from the end."""
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"axis {axis} is out of range for a {ndim}-D blob")
    return axis + ndim if axis < 0 else axis


def enum_name(msg: Any, field_name: str) -> str:
    """The name of an enum field's value (``pool: MAX`` -> "MAX"), read from the message's own
    descriptor, so that the layer types need no schema module."""
    value = getattr(msg, field_name)
    return msg.DESCRIPTOR.fields_by_name[field_name].enum_type.values_by_number[value].name


def filler(msg: Any, present: bool = True) -> Filler | None:
    """A FillerParameter message as a Filler (None where the layer names none)."""
    if not present:
        return None
    norm = enum_name(msg, "variance_norm")
    return Filler(
        type=msg.type, value=msg.value, min=msg.min, max=msg.max, mean=msg.mean, std=msg.std,
        sparse=msg.sparse, variance_norm=norm,
    )


def spatial_pair(repeated: Any, h_present: bool, h: int, w: int, default: int, what: str) -> tuple[int, int]:
    """Caffe's kernel/pad/stride/dilation rule for 2-D layers: ``x_h``/``x_w`` or a repeated ``x``."""
    if h_present:
        return int(h), int(w)
    values = list(repeated)
    if not values:
        return default, default
    if len(values) == 1:
        return int(values[0]), int(values[0])
    if len(values) == 2:
        return int(values[0]), int(values[1])
    raise ValueError(f"{what} has {len(values)} values; convnet supports 2-D spatial layers")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def isclose(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
