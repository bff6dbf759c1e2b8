"""What ``convnet init`` and ``convnet forward`` do besides loading: BatchNorm statistics for new
weights, ``.npy`` inputs read and checked, blobs written as ``.npz``."""
from __future__ import annotations

import zipfile

import numpy as np

from convnet_io.atomic import atomic_output
from convnet_io.errors import ConvnetError
from convnet_io.torch_model.calibrate import calibrate_batchnorm


def unit_batchnorm(net_obj) -> None:
    """BatchNorm statistics of zero mean and unit variance (scale factor 1)."""
    import torch

    for node in net_obj.graph.nodes:
        if node.type == "BatchNorm":
            mean, var, factor = net_obj.module.layer(node.name).caffe_blobs()
            with torch.no_grad():
                mean.zero_()
                var.fill_(1.0)
                factor.fill_(1.0)


def calibrate(net_obj, seed: int) -> int:
    """BatchNorm statistics measured on a seeded random batch; the number of layers calibrated."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    feeds = {v: torch.randn(net_obj.graph.shapes[v], generator=gen) for v in net_obj.graph.inputs}
    n = calibrate_batchnorm(net_obj.module, feeds)
    # BatchNorm with stored statistics divides by the scale factor: keep it 1.
    for node in net_obj.graph.nodes:
        if node.type == "BatchNorm":
            with torch.no_grad():
                net_obj.module.layer(node.name).caffe_blobs()[2].fill_(1.0)
    return n


def read_npy_inputs(items: tuple[str, ...]) -> dict[str, np.ndarray]:
    """``NAME=FILE.npy`` items as arrays, each checked to hold real numbers."""
    feeds = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            raise ConvnetError(f"--input: '{item}' should be NAME=FILE.npy")
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: an empty or cut-short file
            raise ConvnetError(f"{path}: cannot read as .npy: {e or 'empty file'}") from None
        if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number) \
                or np.iscomplexobj(array):
            raise ConvnetError(f"{path}: not a .npy array of real numbers")
        feeds[name] = array
    return feeds


def save_npz_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Arrays as an .npz file, written atomically, any blob name allowed."""
    # np.savez(**arrays) would take blobs named "file" or "allow_pickle" as its own arguments.
    with atomic_output(path, suffix=".npz") as tmp, zipfile.ZipFile(tmp, "w") as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)
