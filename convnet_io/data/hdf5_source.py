"""Caffe's ``HDF5Data`` layer source: rows of the datasets named after the layer's tops.

``source`` is a text file listing ``.h5`` files (whitespace-separated, as Caffe reads it; a
relative name is looked up from the working directory, then beside the list file). Every top
``t`` reads dataset ``t`` of each file; the datasets of one file share their first dimension,
the rows. Like Caffe, a whole file is loaded at once (as float32) and rows are served from
memory; ``shuffle`` permutes the file order and the rows of each file, anew every epoch.
No DataTransformer applies (Caffe's HDF5 layer has none).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from convnet_io.data.base import RecordSource, fmt_shape, layer_salt, rng_for
from convnet_io.errors import ConvnetError


def read_hdf5_list(source: str | os.PathLike) -> list[str]:
    """The ``.h5`` files a HDF5Data ``source`` names (or the source itself, if it is one)."""
    import h5py

    source = os.fspath(source)
    if not os.path.exists(source):
        raise ConvnetError(f"{source}: no such HDF5 list file")
    if h5py.is_hdf5(source):
        return [source]
    try:
        tokens = Path(source).read_text(encoding="utf-8", errors="surrogateescape").split()
    except OSError as e:
        raise ConvnetError(f"{source}: cannot read: {e.strerror or e}") from None
    if not tokens:
        raise ConvnetError(f"{source}: lists no HDF5 files")
    base = os.path.dirname(source)
    files = []
    for name in tokens:
        if not os.path.exists(name) and not os.path.isabs(name) and os.path.exists(os.path.join(base, name)):
            name = os.path.join(base, name)
        files.append(name)
    return files


class HDF5Source(RecordSource):
    kind = "HDF5Data"

    def __init__(self, source: str | os.PathLike, datasets: list[str], shuffle: bool = False, layer: str = ""):
        import h5py

        self.source = os.fspath(source)
        self.datasets = list(datasets)
        self.shuffle = bool(shuffle)
        self.layer = layer
        self.files = read_hdf5_list(self.source)
        counts = []
        self.row_shapes: list[tuple[int, ...]] | None = None
        for path in self.files:
            try:
                with h5py.File(path, "r") as f:
                    n = None
                    shapes = []
                    for name in self.datasets:
                        if name not in f:
                            raise ConvnetError(f"{path}: no dataset '{name}' (layer '{layer}' reads one "
                                               f"dataset per top: {', '.join(self.datasets)})")
                        ds = f[name]
                        if not isinstance(ds, h5py.Dataset) or ds.ndim < 1:
                            raise ConvnetError(f"{path}: '{name}' is not a dataset of at least one dimension")
                        if n is None:
                            n = ds.shape[0]
                        elif ds.shape[0] != n:
                            raise ConvnetError(f"{path}: dataset '{name}' has {ds.shape[0]} rows, "
                                               f"'{self.datasets[0]}' has {n}")
                        shapes.append(tuple(int(d) for d in ds.shape[1:]))
            except FileNotFoundError:
                raise ConvnetError(f"{path}: no such HDF5 file (listed in {self.source})") from None
            except OSError as e:
                raise ConvnetError(f"{path}: cannot read as HDF5: {e}") from None
            if self.row_shapes is None:
                self.row_shapes = shapes
            elif shapes != self.row_shapes:
                raise ConvnetError(f"{path}: rows are {', '.join(map(fmt_shape, shapes))}, but "
                                   f"{self.files[0]} has {', '.join(map(fmt_shape, self.row_shapes))}")
            counts.append(int(n or 0))
        self.counts = np.array(counts, dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)])
        if self.starts[-1] == 0:
            raise ConvnetError(f"{self.source}: the HDF5 files hold no rows")
        self._cache: tuple[int, int, list[np.ndarray]] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _locate(self, index: int) -> tuple[int, int]:
        f = int(np.searchsorted(self.starts, index, side="right") - 1)
        return f, int(index - self.starts[f])

    def name_of(self, index: int) -> str:
        f, row = self._locate(index)
        return f"{self.files[f]}: row {row}"

    def _load(self, f: int) -> list[np.ndarray]:
        import h5py

        if self._cache is not None and self._cache[0] == os.getpid() and self._cache[1] == f:
            return self._cache[2]
        try:
            with h5py.File(self.files[f], "r") as h:
                arrays = [np.asarray(h[name][...], dtype=np.float32) for name in self.datasets]
        except OSError as e:
            raise ConvnetError(f"{self.files[f]}: cannot read as HDF5: {e}") from None
        self._cache = (os.getpid(), f, arrays)
        return arrays

    def read(self, index: int) -> list:
        f, row = self._locate(index)
        return [a[row] for a in self._load(f)]

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        rng = rng_for(seed, layer_salt(self.layer), 0x4DF5, epoch)
        parts = []
        for f in rng.permutation(len(self.files)):
            parts.append(self.starts[f] + rng.permutation(int(self.counts[f])))
        return np.concatenate(parts)

    def close(self) -> None:
        self._cache = None
