"""pycaffe's Blob and Layer views: NumPy arrays a script reads and writes in place."""
from __future__ import annotations

from typing import Any

import numpy as np


class Blob:
    """A Caffe blob: ``data`` and ``diff`` are float32 arrays owned by the blob (activations) or
    sharing memory with the layer's torch tensor (learnable blobs), so ``blob.data[...] = x``
    feeds the net or changes its weights, as in pycaffe."""

    def __init__(self, data: np.ndarray, diff: np.ndarray | None = None, tensor: Any = None):
        self._data = data
        self._diff = np.zeros_like(data) if diff is None else diff
        self._tensor = tensor  # the torch tensor behind a learnable blob (None for activations)

    @classmethod
    def zeros(cls, shape) -> Blob:
        return cls(np.zeros(tuple(int(d) for d in shape), dtype=np.float32))

    @property
    def data(self) -> np.ndarray:
        return self._data

    @property
    def diff(self) -> np.ndarray:
        return self._diff

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._data.shape)

    @property
    def count(self) -> int:
        return int(self._data.size)

    def _legacy(self, index: int) -> int:
        # Caffe's LegacyShape: axes past the blob's last count as 1 (an N x 500 blob is 500 x 1 x 1)
        return int(self._data.shape[index]) if index < self._data.ndim else 1

    @property
    def num(self) -> int:
        return self._legacy(0)

    @property
    def channels(self) -> int:
        return self._legacy(1)

    @property
    def height(self) -> int:
        return self._legacy(2)

    @property
    def width(self) -> int:
        return self._legacy(3)

    def reshape(self, *dims: int) -> None:
        """New shape; the values are kept where the count is unchanged, else zeros (Caffe leaves
        them undefined)."""
        if len(dims) == 1 and isinstance(dims[0], (tuple, list)):
            dims = tuple(dims[0])
        shape = tuple(int(d) for d in dims)
        if self._tensor is not None:
            if shape != self.shape:
                raise ValueError("a learnable blob keeps its shape on convnet (reshape the net's "
                                 "definition instead)")
            return
        if shape == self.shape:
            return
        if int(np.prod(shape)) == self.count:
            self._data = self._data.reshape(shape)
            self._diff = self._diff.reshape(shape)
        else:
            self._data = np.zeros(shape, dtype=np.float32)
            self._diff = np.zeros(shape, dtype=np.float32)

    def __repr__(self) -> str:
        return f"<Blob shape={self.shape}>"


class LayerView:
    """One entry of ``net.layers``: ``type``, ``blobs`` (the learnable blobs), ``name``."""

    def __init__(self, name: str, type_: str, blobs: list[Blob], module: Any = None):
        self.name = name
        self.type = type_
        self.blobs = blobs
        self.module = module  # the torch submodule convnet runs for this layer

    def __repr__(self) -> str:
        return f"<Layer {self.name!r} type={self.type!r}>"
