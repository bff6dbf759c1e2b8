"""Writing ``.caffemodel`` and ``.binaryproto`` files: each blob's float32 bytes streamed straight
into a temporary file beside the destination, which replaces it only once complete."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Iterable

import numpy as np

from convnet_io.atomic import sweep_stale
from convnet_io.caffe.caffemodel.reader import LayerBlobs
from convnet_io.caffe.caffemodel.wire import (
    _BLOB_DATA,
    _BLOB_SHAPE,
    _F32,
    _LEN,
    _NET_LAYER,
    _SHAPE_DIM,
    _V2_BLOBS,
    _V2_NAME,
    _V2_TYPE,
)
from convnet_io.errors import ConvnetError
from convnet_io.protowire import encode_key, encode_varint, len_field


def _as_blob(blob: object, where: str) -> np.ndarray:
    arr = np.asarray(blob)
    if arr.dtype.kind not in "fiu":
        raise ConvnetError(f"{where}: blobs must be real numbers, got dtype {arr.dtype}")
    return arr


class _EncodedBlob:
    """A BlobProto as header bytes + the raw float32 payload + shape bytes, with its size."""

    __slots__ = ("array", "head", "tail", "size")

    def __init__(self, array: np.ndarray):
        self.array = array
        n = array.size
        # Field order as protobuf serializes: data (5), then shape (7).
        self.head = encode_key(_BLOB_DATA, _LEN) + encode_varint(4 * n) if n else b""
        dims = b"".join(encode_varint(d) for d in array.shape)
        shape_msg = len_field(_SHAPE_DIM, dims) if dims else b""
        self.tail = len_field(_BLOB_SHAPE, shape_msg)
        self.size = len(self.head) + 4 * n + len(self.tail)

    def write(self, f) -> None:
        f.write(self.head)
        if self.array.size:
            data = np.asarray(self.array, dtype=_F32, order="C")  # no copy if already <f4, C
            f.write(memoryview(data.reshape(-1)).cast("B"))
        f.write(self.tail)


def _write_atomic(path: str | os.PathLike, write_body) -> None:
    dest = os.path.realpath(os.fspath(path))  # through a symlink, keep the link
    directory, base = os.path.split(dest)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    sweep_stale(Path(dest))
    try:
        while True:
            # the atomic helper's pattern, so a killed writer's file is swept next time
            tmp = os.path.join(directory, f".{base}.convnet-{os.getpid()}-{secrets.token_hex(6)}.tmp")
            try:
                fd = os.open(tmp, flags, 0o666)  # 0o666 & ~umask, like a plain open()
                break
            except FileExistsError:
                continue
    except OSError as e:
        raise ConvnetError(f"{path}: cannot write: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write_body(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError):
            raise ConvnetError(f"{path}: cannot write: {e.strerror or e}") from None
        raise


def write_caffemodel(path: str | os.PathLike, layers: Iterable[LayerBlobs],
                     net_name: str = "") -> None:
    """Write ``layers`` as a V2 binary ``NetParameter`` with float32 weights.

    Each layer becomes ``layer { name type blobs { data shape { dim } } }``;
    arrays are converted to float32 (any real dtype is accepted) and keep their
    shapes.  The bytes are exactly protobuf's serialization of that message.
    The file is written to a temporary file beside ``path`` and moved into
    place only when complete, so ``path`` is never left half-written.
    """
    encoded: list[tuple[bytes, list[_EncodedBlob]]] = []
    for i, layer in enumerate(layers):
        name, ltype, blobs = (getattr(layer, "name", None), getattr(layer, "type", None),
                              getattr(layer, "blobs", None))
        where = f"layer #{i}" + (f" '{name}'" if isinstance(name, str) else "")
        if not isinstance(name, str) or not isinstance(ltype, str):
            raise ConvnetError(f"{where}: name and type must be strings")
        if blobs is None or isinstance(blobs, (str, bytes)):
            raise ConvnetError(f"{where}: blobs must be a list of arrays")
        items = [_EncodedBlob(_as_blob(b, f"{where} blob {j}")) for j, b in enumerate(blobs)]
        head = (len_field(_V2_NAME, name.encode("utf-8", "surrogateescape"))
                + len_field(_V2_TYPE, ltype.encode("utf-8", "surrogateescape")))
        encoded.append((head, items))
    if not encoded:
        raise ConvnetError(f"{path}: no layers to write")

    def body(f) -> None:
        if net_name:
            f.write(len_field(1, net_name.encode("utf-8", "surrogateescape")))
        layer_key = encode_key(_NET_LAYER, _LEN)
        blob_key = encode_key(_V2_BLOBS, _LEN)
        for head, items in encoded:
            size = len(head) + sum(len(blob_key) + len(encode_varint(b.size)) + b.size
                                   for b in items)
            f.write(layer_key + encode_varint(size) + head)
            for b in items:
                f.write(blob_key + encode_varint(b.size))
                b.write(f)

    _write_atomic(path, body)


def write_blobproto(path: str | os.PathLike, array) -> None:
    """Write one array as a ``BlobProto`` file (``shape`` + float32 ``data``), atomically."""
    blob = _EncodedBlob(_as_blob(array, str(path)))
    _write_atomic(path, blob.write)
