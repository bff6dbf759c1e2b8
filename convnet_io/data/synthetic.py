"""Sources that read no files: arrays the user gives (``Input``, ``MemoryData``) and ``DummyData``."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from convnet_io.data.base import RecordSource, fmt_shape
from convnet_io.graph import Filler, Shape


class ArraySource(RecordSource):
    """Records from in-memory arrays, one per top, indexed along their first axis (``Input`` and
    ``MemoryData`` tops the user feeds through the feeder)."""

    kind = "Input"

    def __init__(self, arrays: Sequence[Any], layer: str = "", names: Sequence[str] = ()):
        arrs = [np.asarray(a) for a in arrays]
        if not arrs:
            raise ValueError("no arrays")
        n = arrs[0].shape[0] if arrs[0].ndim else 0
        for a, name in zip(arrs, names or [""] * len(arrs)):
            if a.ndim == 0 or a.shape[0] != n:
                raise ValueError(f"'{name}': {fmt_shape(a.shape)} records; every array of layer "
                                 f"'{layer}' needs {n} rows along its first axis")
        if n == 0:
            raise ValueError(f"layer '{layer}': no records")
        self.arrays = arrs
        self.layer = layer

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def name_of(self, index: int) -> str:
        return f"layer '{self.layer}' input row {index}"

    def read(self, index: int) -> list:
        return [a[index] for a in self.arrays]


def dummy_blob(filler: Filler | None, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """One DummyData top: Caffe's filler (constant 0 when none is given)."""
    from convnet_io.graph.fillers import fill

    return fill(filler or Filler(), shape, rng)


def dummy_fillers(num_tops: int, fillers: Sequence[Filler | None]) -> list[Filler]:
    """DummyData's rule: no filler -> constant 0 for every top; one -> the same for every top;
    otherwise one per top."""
    fillers = list(fillers)
    if not fillers:
        return [Filler()] * num_tops
    if len(fillers) == 1:
        return [fillers[0] or Filler()] * num_tops
    if len(fillers) != num_tops:
        raise ValueError(f"{len(fillers)} data_filler for {num_tops} tops (give 0, 1 or one per top)")
    return [f or Filler() for f in fillers]
