"""Decoding and Caffe's preprocessing of image files in worker threads, ahead of the net.

``convnet run`` over a folder decodes JPEGs and resizes them while the net runs on the batch
before; done in one thread the two would take turns. The work is in C that lets go of the GIL
(Pillow's JPEG decoder, OpenCV's resize, NumPy's casts, the inference engines' ``run``), so
threads overlap it with the net without the cost of worker processes (starting an interpreter
each, and every preprocessed image pickled through a pipe: 0.6 MB for AlexNet's 227 x 227).

:class:`Prefetcher` starts decoding as soon as it is made, so it can be started before the net
is loaded: the first images are ready when the net is. Results come back in input order; the
window of images decoded ahead and not yet taken is bounded.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".pbm", ".tif", ".tiff", ".webp", ".gif"}

STARTUP_BYTES = 512 * 2**20
"""Preprocessed images held while the net is still loading: loading AlexNet and building its engine
take about as long as decoding 1,000 JPEGs on a free core (848 of AlexNet's 227 x 227 fit)."""


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
    """Decoding threads: none for a single image; else one per four cores (one decoding thread
    keeps up with AlexNet on four cores: 2 ms of decode and resize per image against 10 to 20 ms
    of CPU in the net), at least one, at most eight."""
    if n_files <= 1:
        return 0
    return max(1, min(8, (os.cpu_count() or 1) // 4))


def blob_bytes(settings: dict) -> int:
    """Bytes of one preprocessed image (its crops) as ``prepare_file`` returns it."""
    h, w = (int(d) for d in settings["crop"])
    return (10 if settings.get("oversample") else 1) * int(settings["channels"]) * h * w * 4


def prepare_file(path: str, settings: dict) -> tuple[np.ndarray | None, str | None]:
    """One image file decoded and preprocessed: (blob, None) or (None, why it cannot be read)."""
    from convnet_io.tools.preprocess import ImageError, load_image, preprocess

    s = settings
    try:
        image = load_image(path, color=s["channels"] == 3)
        blob = preprocess(image, s["crop"], s["mean"], oversample_crops=s["oversample"], image_dims=s["image_dims"],
                          raw_scale=s["raw_scale"], channel_swap=s["channel_swap"] if s["channels"] == 3 else None)
        return blob, None
    except ImageError as e:
        return None, e.reason


class Prefetcher:
    """``prepare_file`` of each path, computed ahead in ``workers`` threads, taken in order with
    ``next()``. Up to ``ahead`` images are decoded ahead of the one taken last; before the first is
    taken, up to ``startup`` (the net may still be loading). ``close()`` stops the threads (each
    finishes the image it is on); with ``workers`` 0 the images are prepared on ``next()``."""

    def __init__(self, paths: Sequence[str], settings: dict, workers: int, ahead: int | None = None,
                 startup: int | None = None):
        self.paths = [str(p) for p in paths]
        self.settings = settings
        n = len(self.paths)
        self._ahead = max(1, int(ahead if ahead is not None else 2 * int(settings.get("batch_size", 16))))
        first = startup if startup is not None else STARTUP_BYTES // max(1, blob_bytes(settings))
        self._limit = min(n, max(self._ahead, int(first)))  # tasks below this index may start
        self._next_task = 0
        self._next_out = 0
        self._done: dict[int, tuple] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._threads = [threading.Thread(target=self._work, name=f"convnet-decode-{i}", daemon=True)
                         for i in range(max(0, int(workers)) if n else 0)]
        for t in self._threads:
            t.start()

    @property
    def workers(self) -> int:
        """Decoding threads running beside the consumer."""
        return len(self._threads)

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._stop and self._next_task >= self._limit and self._next_task < len(self.paths):
                    self._cond.wait()
                if self._stop or self._next_task >= len(self.paths):
                    return
                i = self._next_task
                self._next_task += 1
            try:
                result = ("ok", prepare_file(self.paths[i], self.settings))
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                result = ("raise", e)
            with self._cond:
                self._done[i] = result
                self._cond.notify_all()

    def __iter__(self) -> Iterator[tuple[np.ndarray | None, str | None]]:
        return self

    def __next__(self) -> tuple[np.ndarray | None, str | None]:
        i = self._next_out
        if i >= len(self.paths):
            raise StopIteration
        if not self._threads:
            self._next_out += 1
            return prepare_file(self.paths[i], self.settings)
        with self._cond:
            while i not in self._done:
                if self._stop:
                    raise StopIteration
                self._cond.wait()
            kind, value = self._done.pop(i)
            self._next_out += 1
            self._limit = min(len(self.paths), max(self._limit, self._next_out + self._ahead))
            self._cond.notify_all()
        if kind == "raise":
            raise value
        return value

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._done.clear()
            self._cond.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepared_files(paths: Sequence[str], settings: dict, workers: int) -> Prefetcher:
    """``prepare_file`` of each path, in order; with ``workers`` > 0 computed ahead in that many
    threads (call ``close()`` on the result when not read to the end)."""
    return Prefetcher(paths, settings, workers)
