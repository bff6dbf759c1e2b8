"""Caffe's dataset tools: ``convert_imageset`` (images -> LMDB of Datums) and
``compute_image_mean`` (LMDB -> mean ``.binaryproto``).

As in Caffe (``tools/convert_imageset.cpp``, ``util/io.cpp``):

* the list file has ``path label`` lines; images are read as ``root + path``, BGR (or grey with
  ``gray``), resized with OpenCV's bilinear rule when both sizes are given;
* keys are ``"%08d_%s" % (line number after shuffling, path)``, records committed every 1000;
* ``encoded`` stores image file bytes instead of pixels: the file itself when it needs no
  resizing and its extension matches the encoding (``ReadFileToDatum``, so ``gray`` does not
  change such files: use ``force_gray`` in the Data layer), else the decoded image re-encoded
  (``encode_type``, default the file's extension; JPEG at quality 95 like ``cv::imencode``);
* an image that cannot be read is reported and left out (its line number stays unused), as
  Caffe logs and goes on;
* the database must not exist yet (Caffe's ``db::NEW``).

Unlike Caffe, the database is built in a temporary directory beside the target and renamed into
place when complete, so an interrupted run leaves no half-written database; the shuffle is
seeded (``seed``); compute_image_mean accumulates in float64 (Caffe sums in float32, which rounds
once a pixel's sum passes 2**24).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from convnet_io.data.base import BadRecord, fmt_shape, join_root, read_list_file
from convnet_io.errors import ConvnetError


@dataclass
class ConvertResult:
    db: str
    written: int
    failed: list[tuple[str, str]] = field(default_factory=list)
    shape: tuple[int, ...] | None = None


def _progress(total: int | None, desc: str, enabled: bool, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not enabled,
                dynamic_ncols=True, leave=False)


def _match_ext(filename: str, encoding: str) -> bool:
    """Caffe's matchExt: the file's extension is the encoding ('jpeg' counts as 'jpg')."""
    dot = filename.rfind(".")
    ext = (filename[dot + 1:] if dot >= 0 else filename).lower()
    enc = encoding.lower()
    return ext == enc or (enc == "jpg" and ext == "jpeg")


def image_to_datum_bytes(path: str, label: int, height: int = 0, width: int = 0, is_color: bool = True,
                         encoding: str = "") -> tuple[bytes, tuple[int, ...]]:
    """Caffe's ``ReadImageToDatum``: the serialized Datum for one image, and the image's
    ``C x H x W`` shape. Raises :class:`BadRecord`."""
    from convnet_io.data.datum import encoded_datum, image_to_datum
    from convnet_io.data.image import encode_image, read_image

    img = read_image(path, height, width, is_color)
    shape = (img.shape[2], img.shape[0], img.shape[1])
    if encoding:
        if (img.shape[2] == 3) == is_color and not height and not width and _match_ext(path, encoding):
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                raise BadRecord(path, f"cannot read: {e.strerror or e}") from None
        else:
            try:
                data = encode_image(img, encoding)
            except (ValueError, OSError) as e:
                raise BadRecord(path, str(e)) from None
        return encoded_datum(data, label).SerializeToString(), shape
    return image_to_datum(img, label).SerializeToString(), shape


def convert_imageset(root: str, list_file: str, db_path: str, *, resize: tuple[int, int] = (0, 0),
                     gray: bool = False, encoded: bool = False, encode_type: str = "", shuffle: bool = False,
                     seed: int = 0, check_size: bool = False, backend: str = "lmdb", progress: bool = True,
                     warn: Callable[[str], None] | None = None) -> ConvertResult:
    """Write the images of ``list_file`` (under ``root``) to a new LMDB at ``db_path``."""
    from convnet_io.data.lmdb_source import LMDBWriter

    if backend.lower() != "lmdb":
        raise ConvnetError(f"backend '{backend}' is not supported; only lmdb (LevelDB is not)")
    height, width = max(0, int(resize[0])), max(0, int(resize[1]))
    lines = read_list_file(list_file)
    if not lines:
        raise ConvnetError(f"{list_file}: the image list is empty")
    if shuffle:
        order = np.random.default_rng(seed).permutation(len(lines))
        lines = [lines[i] for i in order]
    encoded = encoded or bool(encode_type)
    result = ConvertResult(db=db_path, written=0)
    warn = warn or (lambda msg: print(f"warning: {msg}", file=sys.stderr))
    with LMDBWriter(db_path) as writer:
        bar = _progress(len(lines), "convert-imageset", progress, "img")
        try:
            for line_id, (name, label) in enumerate(lines):
                path = join_root(root, name)
                enc = encode_type
                if encoded and not enc:
                    dot = name.rfind(".")
                    enc = name[dot + 1:].lower() if dot >= 0 and dot < len(name) - 1 else "png"
                try:
                    value, shape = image_to_datum_bytes(path, label, height, width, not gray, enc)
                except BadRecord as e:
                    result.failed.append((e.record, e.reason))
                    warn(f"skipped {e}")
                    bar.update(1)
                    continue
                if check_size:
                    if result.shape is None:
                        result.shape = shape
                    elif shape != result.shape:
                        raise ConvnetError(f"{path}: image is {fmt_shape(shape)}, earlier ones are "
                                           f"{fmt_shape(result.shape)} (--check-size)")
                elif result.shape is None:
                    result.shape = shape
                writer.put(f"{line_id:08d}_{name}", value)
                result.written += 1
                bar.update(1)
        finally:
            bar.close()
        if result.written == 0:
            raise ConvnetError(f"{list_file}: none of the {len(lines)} images could be read; no database written")
        writer.finish()
    return result


@dataclass
class MeanResult:
    mean: np.ndarray  # C x H x W float32
    channel_means: np.ndarray  # C
    count: int


def compute_image_mean(db_path: str, output: str | None = None, *, progress: bool = True) -> MeanResult:
    """Caffe's ``compute_image_mean``: the per-pixel mean of every Datum in an LMDB (encoded ones
    decoded natively), written as a ``1 x C x H x W`` BlobProto to ``output`` when given."""
    from convnet_io.caffe.caffemodel import write_blobproto
    from convnet_io.data.datum import datum_to_array, parse_datum
    from convnet_io.data.lmdb_source import iter_records, key_text, open_env

    env = open_env(db_path)
    total = env.stat()["entries"]
    if total == 0:
        raise ConvnetError(f"{db_path}: the database is empty")
    acc: np.ndarray | None = None
    count = 0
    bar = _progress(total, "compute-mean", progress, "rec")
    try:
        for key, value in iter_records(db_path):
            name = f"{db_path}: key '{key_text(key)}'"
            arr = datum_to_array(parse_datum(value, name), name, "native")
            if acc is None:
                acc = np.zeros(arr.shape, dtype=np.float64)
            elif arr.shape != acc.shape:
                raise ConvnetError(f"{name}: record is {fmt_shape(arr.shape)}, the first is "
                                   f"{fmt_shape(acc.shape)}; a mean needs records of one size")
            acc += arr
            count += 1
            bar.update(1)
    except BadRecord as e:
        raise ConvnetError(str(e)) from None
    finally:
        bar.close()
    mean = (acc / count).astype(np.float32)
    channel_means = mean.astype(np.float64).mean(axis=(1, 2))
    if output is not None:
        write_blobproto(output, mean[None])
    return MeanResult(mean=mean, channel_means=channel_means, count=count)
