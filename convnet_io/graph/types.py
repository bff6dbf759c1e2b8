"""The plain value types the graph and the layer types share: shapes, value ids, fillers."""
from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]

VERSION_SEPARATOR = ":"


def value_id(blob: str, version: int) -> str:
    """The id of the ``version``-th write of Caffe blob ``blob`` (0 is the first)."""
    return blob if version == 0 else f"{blob}{VERSION_SEPARATOR}{version}"


@dataclass(frozen=True)
class Filler:
    """A Caffe FillerParameter, as plain values."""

    type: str = "constant"
    value: float = 0.0
    min: float = 0.0
    max: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    sparse: int = -1
    variance_norm: str = "FAN_IN"
