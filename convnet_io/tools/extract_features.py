"""``convnet extract-features``: Caffe's ``extract_features`` tool — the TEST net run over its data
layers for a number of batches, named blobs saved item by item: LMDB of float Datums keyed by the
item index (``%010d``, Caffe's layout), or NumPy ``.npy`` / HDF5 arrays of shape N x blob dims."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convnet_io.errors import ConvnetError

FORMATS = ("lmdb", "npy", "h5")


def _legacy_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(channels, height, width) of one item as Caffe's Blob::LegacyShape reads them: axes a
    blob lacks count as 1, from the right (an N x 10 blob is 10 x 1 x 1)."""
    full = tuple(shape) + (1,) * (4 - len(shape))
    return full[1], full[2], full[3]


class _LmdbWriter:
    def __init__(self, path: Path):
        import lmdb

        if path.exists():
            raise ConvnetError(f"{path}: already exists (Caffe's extract_features will not overwrite a database)")
        self.env = lmdb.open(str(path), map_size=1 << 40, subdir=True, lock=True)
        self.txn = self.env.begin(write=True)
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        from convnet_io.caffe.proto import caffe_pb2

        for item in batch:
            channels, height, width = _legacy_shape((1,) + item.shape)
            datum = caffe_pb2.Datum(channels=channels, height=height, width=width)
            datum.float_data.extend(item.reshape(-1).astype(np.float32).tolist())
            self.txn.put(f"{self.count:010d}".encode(), datum.SerializeToString())
            self.count += 1
            if self.count % 1000 == 0:  # Caffe commits every 1000 items too
                self.txn.commit()
                self.txn = self.env.begin(write=True)

    def close(self) -> None:
        self.txn.commit()
        self.env.close()


class _ArrayWriter:
    def __init__(self, path: Path, fmt: str, blob: str):
        self.path, self.fmt, self.blob = path, fmt, blob
        self.parts: list[np.ndarray] = []

    def add(self, batch: np.ndarray) -> None:
        self.parts.append(batch.astype(np.float32))

    def close(self) -> None:
        from convnet_io.atomic import atomic_output

        data = np.concatenate(self.parts)
        with atomic_output(self.path) as tmp:
            if self.fmt == "npy":
                with open(tmp, "wb") as f:
                    np.save(f, data)
            else:
                import h5py

                with h5py.File(tmp, "w") as f:
                    f.create_dataset(self.blob, data=data)


def extract_features(model: str | Path, weights: str | Path | None, blobs: list[str], outputs: list[str],
                     batches: int = 1, fmt: str = "lmdb", workers: int = 0) -> dict[str, tuple[int, ...]]:
    """Write ``blobs`` of ``batches`` TEST batches to ``outputs`` (one per blob); returns each
    output's array shape."""
    import torch

    from convnet_io.tools.net_test import feeder_for, load_phase_net

    if fmt not in FORMATS:
        raise ConvnetError(f"--format must be one of {', '.join(FORMATS)}, not {fmt!r}")
    if len(blobs) != len(outputs):
        raise ConvnetError(f"{len(blobs)} blob(s) but {len(outputs)} output(s): give one output per blob")
    if batches < 1:
        raise ConvnetError(f"--batches must be at least 1, not {batches}")
    graph, module, net, _ = load_phase_net(model, weights, "TEST")
    values = []
    for b in blobs:
        try:
            values.append(graph.final_value(b))
        except KeyError:
            raise ConvnetError(f"unknown feature blob name {b} in the network {model}") from None
    writers = [_LmdbWriter(Path(o)) if fmt == "lmdb" else _ArrayWriter(Path(o), fmt, b)
               for b, o in zip(blobs, outputs)]
    feeder = feeder_for(graph, net, workers)
    shapes: dict[str, list[int]] = {}
    try:
        with torch.no_grad():
            for _ in range(batches):
                out = module.run(next(feeder), values)
                for b, v, w in zip(blobs, values, writers):
                    arr = out[v].detach().cpu().numpy()
                    w.add(arr)
                    shapes.setdefault(b, [0, *arr.shape[1:]])[0] += arr.shape[0]
    finally:
        feeder.close()
    for w in writers:
        w.close()
    return {o: tuple(shapes[b]) for b, o in zip(blobs, outputs)}
