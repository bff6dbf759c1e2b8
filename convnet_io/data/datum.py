"""Caffe's ``Datum`` record (what an LMDB of a Data layer holds) to and from NumPy.

A Datum is one of: raw ``data`` bytes, ``channels x height x width`` uint8 in Caffe's channel
order (BGR when convert_imageset made it); ``float_data``, the same layout as float32; or
``encoded`` image file bytes (JPEG, PNG, ...) decoded at read time (``DecodeDatumToCVMat``).
"""
from __future__ import annotations

import numpy as np

from convnet_io.data.base import BadRecord, fmt_shape
from convnet_io.data.image import decode_image


def _pb():
    from convnet_io.caffe.proto import caffe_pb2

    return caffe_pb2


def array_to_datum(array: np.ndarray, label: int = 0):
    """A ``C x H x W`` array as a Datum: uint8 -> raw ``data`` bytes, anything else -> ``float_data``
    (Caffe's ``CVMatToDatum`` / ``BlobToDatum`` layout)."""
    arr = np.asarray(array)
    if arr.ndim != 3:
        raise ValueError(f"a Datum holds a C x H x W array, got shape {arr.shape}")
    datum = _pb().Datum(channels=arr.shape[0], height=arr.shape[1], width=arr.shape[2], label=int(label))
    if arr.dtype == np.uint8:
        datum.data = np.ascontiguousarray(arr).tobytes()
    else:
        datum.float_data.extend(np.asarray(arr, dtype=np.float32).reshape(-1).tolist())
    return datum


def image_to_datum(img: np.ndarray, label: int = 0):
    """An ``H x W x C`` (BGR) uint8 image as a raw Datum (``CVMatToDatum``)."""
    return array_to_datum(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1), label)


def encoded_datum(data: bytes, label: int = 0):
    """Image file bytes as an encoded Datum (``ReadFileToDatum``: no channels/height/width)."""
    return _pb().Datum(data=bytes(data), label=int(label), encoded=True)


def parse_datum(value: bytes, name: str = "<datum>"):
    """Serialized bytes -> Datum; :class:`BadRecord` when they are not one."""
    from google.protobuf.message import DecodeError

    datum = _pb().Datum()
    try:
        datum.ParseFromString(bytes(value))
    except (DecodeError, ValueError, RuntimeError) as e:
        raise BadRecord(name, f"corrupt record, not a Caffe Datum ({e or 'parse error'})") from None
    return datum


def datum_to_array(datum, name: str = "<datum>", decode: str = "native") -> np.ndarray:
    """A Datum's pixels as ``C x H x W``: uint8 for raw and encoded data, float32 for
    ``float_data``. ``decode`` applies to encoded Datums: ``native`` (Caffe's default),
    ``color`` (``force_color``) or ``gray`` (``force_gray``)."""
    if datum.encoded:
        if not datum.data:
            raise BadRecord(name, "encoded Datum without data")
        return decode_image(datum.data, decode, name).transpose(2, 0, 1)
    c, h, w = int(datum.channels), int(datum.height), int(datum.width)
    if c <= 0 or h <= 0 or w <= 0:
        raise BadRecord(name, f"Datum of shape {c}x{h}x{w} (channels, height and width must be positive)")
    n = c * h * w
    if datum.data:
        if len(datum.data) != n:
            raise BadRecord(name, f"Datum data has {len(datum.data)} bytes, but "
                            f"{fmt_shape((c, h, w))} needs {n}")
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(c, h, w)
    if len(datum.float_data):
        if len(datum.float_data) != n:
            raise BadRecord(name, f"Datum float_data has {len(datum.float_data)} values, but "
                            f"{fmt_shape((c, h, w))} needs {n}")
        return np.asarray(datum.float_data, dtype=np.float32).reshape(c, h, w)
    raise BadRecord(name, "Datum holds neither data nor float_data")


def read_datum(value: bytes, name: str = "<datum>", decode: str = "native") -> tuple[np.ndarray, int]:
    """Serialized Datum bytes -> (``C x H x W`` array, label)."""
    datum = parse_datum(value, name)
    return datum_to_array(datum, name, decode), int(datum.label)
