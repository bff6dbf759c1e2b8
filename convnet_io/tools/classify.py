"""Classify images with a loaded net: Caffe's ``Classifier.predict`` over many images, batched.

``classify(net, images, mean=...)`` preprocesses each image as Caffe does (see
:mod:`convnet_io.tools.preprocess`), runs the net on batches of them, and returns one
:class:`Classification` per image with its class probabilities and top-k classes.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.tools.prefetch import Prefetcher, default_workers, expand_folders
from convnet_io.tools.preprocess import (
    CAFFE_IMAGE_DIMS,
    RAW_SCALE,
    RGB_TO_BGR,
    ImageError,
    load_image,  # noqa: F401  (part of this module's surface)
    load_mean,
    prepare_mean,
    preprocess,
)


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str | None
    prob: float


@dataclass
class Classification:
    """The result for one image: ``probs`` (one per class) and ``top_k``, or ``error``."""

    path: str
    probs: np.ndarray | None = None
    top_k: list[Prediction] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict:
        return {"path": self.path,
                "top_k": [{"index": p.index, "label": p.label, "prob": p.prob} for p in self.top_k]}


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names, one a line (``synset_words.txt``: ``n01440764 tench, Tinca tinca``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConvnetError(f"{path}: is a directory, not a labels file") from None
    except UnicodeDecodeError:
        raise ConvnetError(f"{path}: not a UTF-8 text file of labels") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    labels = [line.strip() for line in text.splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ConvnetError(f"{path}: no labels in the file")
    return labels


def data_input(net) -> tuple[str, tuple[int, int, int]]:
    """The net's (or graph's) image input: its value id and ``(channels, height, width)``."""
    graph = getattr(net, "graph", net)
    images = [v for v in graph.inputs if len(graph.shapes[v]) == 4]
    if len(images) != 1:
        found = ", ".join(f"{graph.blob_of.get(v, v)} {list(graph.shapes[v])}" for v in graph.inputs)
        raise ConvnetError(f"cannot classify: the net needs one N x C x H x W image input (inputs: {found or 'none'})")
    _, c, h, w = (int(d) for d in graph.shapes[images[0]])
    if c not in (1, 3):
        raise ConvnetError(f"cannot classify: the image input has {c} channels (1 or 3 expected)")
    return images[0], (c, h, w)


def probability_output(net) -> tuple[str, bool, int]:
    """The output to read class scores from: ``(blob name, is_softmax, num_classes)``. The last
    output made by a Softmax layer, else the last output (softmax is then applied). Losses and
    metrics are set aside, so a train_val net classifies with the scores that feed its loss."""
    from convnet_io.graph import inference_view

    graph = inference_view(getattr(net, "graph", net))
    candidates = []
    for v in graph.outputs:
        shape = graph.shapes[v]
        if len(shape) >= 2 and all(int(d) == 1 for d in shape[2:]):
            candidates.append(v)
    if not candidates:
        found = ", ".join(f"{graph.blob_of.get(v, v)} {list(graph.shapes[v])}" for v in graph.outputs)
        raise ConvnetError(f"cannot classify: no output holds one score per class (outputs: {found or 'none'})")
    softmaxed = [v for v in candidates if graph.producer(v).type == "Softmax"]
    chosen = softmaxed[-1] if softmaxed else candidates[-1]
    return graph.blob_of.get(chosen, chosen), bool(softmaxed), int(graph.shapes[chosen][1])


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of an ``N x K`` array, in float64."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=1, keepdims=True)
    e = np.exp(s)
    return e / e.sum(axis=1, keepdims=True)


def top_predictions(probs: np.ndarray, k: int, labels: Sequence[str] | None = None) -> list[Prediction]:
    """The ``k`` most probable classes, most probable first (ties: lower index first)."""
    order = np.argsort(-np.asarray(probs, dtype=np.float64), kind="stable")[:max(0, int(k))]
    return [Prediction(int(i), labels[i] if labels is not None else None, float(probs[i])) for i in order]


def _file_settings(net, mean, oversample: bool, image_dims, raw_scale, channel_swap, batch_size: int) -> dict:
    """What ``prepare_file`` needs to turn a file into the net's input (see :mod:`.prefetch`)."""
    _, (channels, h, w) = data_input(net)
    if isinstance(mean, (str, os.PathLike)):
        mean = load_mean(mean)
    mean_arr = None if mean is None else prepare_mean(mean, (h, w), channels)
    if channel_swap is None and channels == 3:
        channel_swap = RGB_TO_BGR
    return {"channels": channels, "crop": (h, w), "mean": mean_arr, "oversample": bool(oversample),
            "image_dims": tuple(int(d) for d in image_dims), "raw_scale": raw_scale,
            "channel_swap": None if channel_swap is None else tuple(int(c) for c in channel_swap),
            "batch_size": int(batch_size)}


def _same_settings(a: dict, b: dict) -> bool:
    if a.keys() != b.keys():
        return False
    for k, va in a.items():
        vb = b[k]
        if isinstance(va, np.ndarray) or isinstance(vb, np.ndarray):
            if va is None or vb is None or not np.array_equal(va, vb):
                return False
        elif va != vb:
            return False
    return True


def _same_files(a: list, b: list) -> bool:
    return len(a) == len(b) and all(isinstance(x, (str, os.PathLike)) and isinstance(y, (str, os.PathLike))
                                    and str(x) == str(y) for x, y in zip(a, b))


@dataclass
class Prefetched:
    """Image files being decoded for a net that may still be loading (see :func:`start_prefetch`)."""

    images: list
    settings: dict
    files: Prefetcher

    def close(self) -> None:
        self.files.close()


def start_prefetch(net, images: Sequence, mean=None, oversample: bool = False, batch_size: int = 16,
                   image_dims: Sequence[int] = CAFFE_IMAGE_DIMS, raw_scale: float | None = RAW_SCALE,
                   channel_swap: Sequence[int] | None = None, workers: int | None = None) -> Prefetched:
    """Start decoding and preprocessing the image files among ``images`` for ``net`` — a loaded
    net or only its graph (``convnet_io.api.load_graph``), so that decoding runs while the weights
    load and the engine compiles. Pass the result to :func:`iter_classify` as ``prefetched``
    with the same arguments; close it if it is not used."""
    settings = _file_settings(net, mean, oversample, image_dims, raw_scale, channel_swap, batch_size)
    images = expand_folders(images)
    paths = [str(i) for i in images if isinstance(i, (str, os.PathLike))]
    n_workers = default_workers(len(paths), batch_size) if workers is None else workers
    return Prefetched(images, settings, Prefetcher(paths, settings, n_workers))


def iter_classify(net, images: Sequence, mean=None, oversample: bool = False, top_k: int = 5,
                  batch_size: int = 16, labels: Sequence[str] | None = None, progress: bool = False,
                  skip_errors: bool = False, image_dims: Sequence[int] = CAFFE_IMAGE_DIMS,
                  raw_scale: float | None = RAW_SCALE,
                  channel_swap: Sequence[int] | None = None, workers: int | None = None,
                  prefetched: Prefetched | None = None) -> Iterator[Classification]:
    """:func:`classify` as a generator: yields each image's result, in order, batch by batch. Folders
    among ``images`` stand for the image files in them; files are decoded and preprocessed in
    ``workers`` threads (None: one per four cores, at least one) ahead of the net, or taken from
    ``prefetched`` (:func:`start_prefetch`, started with the same arguments)."""
    if batch_size < 1:
        raise ConvnetError(f"batch size must be at least 1, not {batch_size}")
    if top_k < 1:
        raise ConvnetError(f"top-k must be at least 1, not {top_k}")
    try:
        input_id, (channels, h, w) = data_input(net)
        out_name, is_softmax, num_classes = probability_output(net)
        if labels is not None:
            labels = list(labels)
            if len(labels) != num_classes:
                raise ConvnetError(f"{len(labels)} labels for {num_classes} classes: the labels file does not fit "
                                   f"the net's output '{out_name}'")
        settings = _file_settings(net, mean, oversample, image_dims, raw_scale, channel_swap, batch_size)
        images = expand_folders(images)
    except BaseException:
        if prefetched is not None:
            prefetched.close()
        raise
    mean_arr, channel_swap = settings["mean"], settings["channel_swap"]
    crops_per_image = 10 if oversample else 1
    paths = [str(i) for i in images if isinstance(i, (str, os.PathLike))]
    if prefetched is not None and _same_files(prefetched.images, images) and _same_settings(prefetched.settings, settings):
        from_files = prefetched.files
    else:  # nothing prefetched, or for other images or settings: start here
        if prefetched is not None:
            prefetched.close()
        from_files = Prefetcher(paths, settings, default_workers(len(paths), batch_size) if workers is None else workers)

    def entries():
        for n, item in enumerate(images):
            if isinstance(item, (str, os.PathLike)):
                yield (str(item), *next(from_files))
                continue
            name = f"<image {n}>"
            try:
                yield name, preprocess(_as_image(item, channels, name), (h, w), mean_arr, oversample_crops=oversample,
                                       image_dims=image_dims, raw_scale=raw_scale,
                                       channel_swap=channel_swap if channels == 3 else None), None
            except ImageError as e:
                yield name, None, e.reason

    bar = None
    if progress and len(images) > batch_size:
        from tqdm import tqdm

        bar = tqdm(total=len(images), unit="image", file=sys.stderr, dynamic_ncols=True, leave=False)
    pending = entries()
    # decoding threads share the cores with the net: let ``auto`` take an engine that does not
    # wait on a busy core after every layer (``Net.throughput``)
    throughput = getattr(net, "throughput", None)
    if throughput is not None and from_files.workers:
        net.throughput = True
    try:
        while True:
            chunk = [e for _, e in zip(range(batch_size), pending)]
            if not chunk:
                break
            results = [Classification(path=name) for name, _, _ in chunk]
            blobs, good = [], []
            for i, (name, blob, error) in enumerate(chunk):
                if error is None:
                    blobs.append(blob)
                    good.append(i)
                elif not skip_errors:
                    raise ImageError(name, error)
                else:
                    results[i].error = error
            if blobs:
                out = net.forward({input_id: np.concatenate(blobs)}, blobs=[out_name])[out_name]
                out = out.reshape(out.shape[0], -1).astype(np.float64)
                probs = out if is_softmax else softmax(out)
                probs = probs.reshape(len(good), crops_per_image, -1).mean(axis=1)
                for i, p in zip(good, probs):
                    results[i].probs = p
                    results[i].top_k = top_predictions(p, top_k, labels)
            yield from results
            if bar is not None:
                bar.update(len(chunk))
    finally:
        from_files.close()
        if throughput is not None:
            net.throughput = throughput
        if bar is not None:
            bar.close()


def classify(net, images: Sequence, mean=None, oversample: bool = False, top_k: int = 5,
             batch_size: int = 16, labels: Sequence[str] | None = None, progress: bool = False,
             skip_errors: bool = False, image_dims: Sequence[int] = CAFFE_IMAGE_DIMS,
             raw_scale: float | None = RAW_SCALE,
             channel_swap: Sequence[int] | None = None, workers: int | None = None) -> list[Classification]:
    """Classify ``images`` (file paths, or ``H x W x 3`` RGB float arrays in ``[0, 1]``) with
    ``net`` (a :class:`convnet_io.Net`), Caffe-style.

    ``mean``: None, per-channel values in the net's (BGR) order, a ``C x H x W`` array, or a
    ``.npy``/``.binaryproto`` path (see :func:`convnet_io.tools.preprocess.prepare_mean`).
    ``oversample``: average the probabilities of the 10 crops of ``caffe.io.oversample``
    instead of using the centre crop. ``batch_size`` images go through the net per forward
    pass (times 10 crops with ``oversample``). Probabilities come from the last output made
    by a Softmax layer, or the softmax of the last output. ``labels``: one name per class.
    ``skip_errors``: an image that cannot be read gives a result with ``error`` set instead
    of raising :class:`~convnet_io.tools.preprocess.ImageError`. ``progress``: a tqdm bar on stderr
    when there is more than one batch. ``image_dims``, ``raw_scale`` and ``channel_swap``
    (default RGB -> BGR for 3 channels) are Caffe's ``Classifier`` settings.
    """
    return list(iter_classify(net, images, mean=mean, oversample=oversample, top_k=top_k,
                              batch_size=batch_size, labels=labels, progress=progress,
                              skip_errors=skip_errors, image_dims=image_dims, raw_scale=raw_scale,
                              channel_swap=channel_swap, workers=workers))


def _as_image(item, channels: int, name: str) -> np.ndarray:
    arr = np.asarray(item, dtype=np.float32)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(name, f"expected an H x W x 3 array, got shape {arr.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if channels == 1 and arr.shape[2] == 3:
        raise ImageError(name, "the net takes 1-channel images; pass H x W x 1 arrays")
    return arr
