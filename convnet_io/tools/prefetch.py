"""Decoding and Caffe's preprocessing of image files in worker processes, ahead of the net.

``convnet run`` over a folder spends as long decoding JPEGs and resizing them as the net spends
on them; done in the main process the two take turns. Here worker processes (started by spawn, so
nothing of the parent's threads or sessions is inherited) decode and preprocess the next images
while the main process runs the net on the current batch; results come back in input order.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}

_SETTINGS: dict = {}


def expand_folders(items: Iterable) -> list:
    """Items with each folder replaced by the image files in it (sorted by name, not recursive)."""
    out = []
    for item in items:
        if isinstance(item, (str, os.PathLike)) and Path(item).is_dir():
            out += sorted(str(p) for p in Path(item).iterdir()
                          if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        else:
            out.append(item)
    return out


def default_workers(n_files: int, batch_size: int) -> int:
    """No pool for a batch or less (starting one costs more than it saves); else the cores but one
    (the net's own threads use the rest), at least one, at most eight."""
    if n_files <= batch_size:
        return 0
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _init(settings: dict) -> None:
    _SETTINGS.update(settings)


def prepare_file(path: str, settings: dict | None = None) -> tuple[np.ndarray | None, str | None]:
    """One image file decoded and preprocessed: (blob, None) or (None, why it cannot be read)."""
    from convnet_io.tools.preprocess import ImageError, load_image, preprocess

    s = settings if settings is not None else _SETTINGS
    try:
        image = load_image(path, color=s["channels"] == 3)
        blob = preprocess(image, s["crop"], s["mean"], oversample_crops=s["oversample"], image_dims=s["image_dims"],
                          raw_scale=s["raw_scale"], channel_swap=s["channel_swap"] if s["channels"] == 3 else None)
        return blob, None
    except ImageError as e:
        return None, e.reason


def _prepare(path: str) -> tuple[np.ndarray | None, str | None]:
    return prepare_file(path)


def prepared_files(paths: Sequence[str], settings: dict, workers: int) -> Iterator[tuple[np.ndarray | None, str | None]]:
    """``prepare_file`` of each path, in order; with ``workers`` > 0 computed ahead in that many
    processes."""
    if workers <= 0:
        for p in paths:
            yield prepare_file(p, settings)
        return
    import multiprocessing
    from collections import deque

    ahead = max(2 * batch_ahead(settings), 4 * workers)  # a bounded window: decoded blobs wait in memory
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init, initargs=(settings,))
    try:
        todo = iter(paths)
        pending = deque(pool.apply_async(_prepare, (p,)) for p in _take(todo, ahead))
        while pending:
            result = pending.popleft().get()
            for p in _take(todo, 1):
                pending.append(pool.apply_async(_prepare, (p,)))
            yield result
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def batch_ahead(settings: dict) -> int:
    return int(settings.get("batch_size", 16))


def _take(it, n: int) -> list:
    out = []
    for _ in range(n):
        try:
            out.append(next(it))
        except StopIteration:
            break
    return out
