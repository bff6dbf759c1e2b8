"""Shapes of an HDF5Data layer's tops read from its files, when they are on the machine.

Caffe's HDF5DataLayer reads the list file (``source``), opens the first ``.h5`` file and gives
each top the shape ``batch_size x`` (the dataset's shape after its first axis). The same is done
here at build time, so ``convnet init`` / ``build`` need no ``--input-shape`` for such a net. Only
the file headers are read, never the data."""
from __future__ import annotations

import os

from convnet_io.graph import Shape
from convnet_io.limits import read_bytes_limited


def _find(name: str, net_path: str) -> str | None:
    for candidate in (name, os.path.join(os.path.dirname(net_path), name) if net_path else None):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def hdf5_top_shapes(source: str, tops: list[str], batch_size: int, net_path: str = "") -> list[Shape] | None:
    """The tops' shapes from the first listed file; None when the list or the file is not there
    (the caller then asks for --input-shape). A file that is there but does not fit raises
    ValueError, which names what is wrong."""
    found = _find(source, net_path)
    if found is None:
        return None
    try:
        import h5py
    except ImportError:
        return None
    if h5py.is_hdf5(found):
        first = found
    else:
        names = read_bytes_limited(found, what="HDF5 list file").decode("utf-8", "surrogateescape").split()
        if not names:
            raise ValueError(f"HDF5 list '{found}' names no files")
        first = _find(names[0], found) or _find(names[0], net_path)
        if first is None:
            return None
    if batch_size <= 0:
        raise ValueError(f"batch_size {batch_size} must be positive")
    try:
        with h5py.File(first, "r") as f:
            out = []
            for top in tops:
                if top not in f or not hasattr(f[top], "shape"):
                    raise ValueError(f"HDF5 file '{first}' has no dataset '{top}' (one per top)")
                shape = tuple(int(d) for d in f[top].shape)
                if not shape:
                    raise ValueError(f"dataset '{top}' of '{first}' is a scalar; rows are its first axis")
                out.append((int(batch_size),) + shape[1:])
            return out
    except OSError as e:
        raise ValueError(f"cannot read HDF5 file '{first}': {e}") from None


def hook(net_path: str):
    """``SourceContext.hdf5_shapes`` for a net read from ``net_path``."""
    return lambda source, tops, batch_size: hdf5_top_shapes(source, tops, batch_size, net_path)

