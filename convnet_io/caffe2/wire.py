"""The float arrays of init nets over the protobuf wire format, straight into NumPy.

An init net holds a model's weights as ``GivenTensorFill`` ops whose ``values`` argument is a
``repeated float floats = 5``, unpacked as proto2 declares it: one tag byte and four value bytes
per float. Parsing that into Python floats and back costs seconds per million values, so large
ops are walked here instead: the values are read as one strided NumPy view (or one slice when a
writer packed them) and the rest of the op, a few dozen bytes, is left to protobuf. Writing is
the mirror image: the op without its values through protobuf, the values as one packed run.
"""
from __future__ import annotations

import numpy as np
from google.protobuf.message import DecodeError

from convnet_io.caffe2.proto import caffe2_pb2
from convnet_io.errors import ConvnetError
from convnet_io.protowire import encode_varint

_LARGE = 1 << 14  # ops smaller than this go through protobuf whole
_FLOATS = 5  # Argument.floats
_ARG = 5  # OperatorDef.arg
_OP = 2  # NetDef.op
_FLOAT_TAG = (_FLOATS << 3) | 5  # 0x2d: one unpacked float
_RECORD = np.dtype([("tag", "u1"), ("value", "<f4")])


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7



def _fields(buf: memoryview, pos: int, end: int):
    """(field, wire type, start of the field's key, start of its value, end of the field)."""
    while pos < end:
        key_at = pos
        key, pos = _varint(buf, pos)
        field, wt = key >> 3, key & 7
        if wt == 0:
            _, stop = _varint(buf, pos)
        elif wt == 1:
            stop = pos + 8
        elif wt == 2:
            n, pos = _varint(buf, pos)
            stop = pos + n
        elif wt == 5:
            stop = pos + 4
        else:
            raise ValueError(f"wire type {wt} at byte {key_at}")
        if stop > end:
            raise ValueError(f"field {field} at byte {key_at} runs past the end of its message")
        yield field, wt, key_at, pos, stop
        pos = stop


def _float_run(data: bytes, key_at: int, end: int) -> tuple[np.ndarray, int]:
    """The run of unpacked floats starting at ``key_at``: values and the end of the run."""
    n = (end - key_at) // 5
    records = np.frombuffer(data, dtype=_RECORD, count=n, offset=key_at)
    bad = np.flatnonzero(records["tag"] != _FLOAT_TAG)
    run = int(bad[0]) if bad.size else n
    return records["value"][:run].astype(np.float32), key_at + 5 * run


def _split_arg(data: bytes, buf: memoryview, start: int, end: int) -> tuple[bytes, np.ndarray | None]:
    """An Argument's bytes without its floats, and the floats (None if it has none)."""
    kept: list[bytes] = []
    chunks: list[np.ndarray] = []
    pos = start
    while pos < end:
        key_at = pos
        key, _ = _varint(buf, pos)
        if key == _FLOAT_TAG:
            values, pos = _float_run(data, key_at, end)
            chunks.append(values)
            continue
        field, wt, _, vstart, stop = next(_fields(buf, key_at, end))
        if field == _FLOATS and wt == 2:  # packed by another writer
            chunks.append(np.frombuffer(data, dtype="<f4", count=(stop - vstart) // 4, offset=vstart).copy())
        else:
            kept.append(data[key_at:stop])
        pos = stop
    if not chunks:
        return b"".join(kept), None
    return b"".join(kept), chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def read_netdef_with_arrays(data: bytes, path: str) -> tuple[caffe2_pb2.NetDef, dict[int, dict[str, np.ndarray]]]:
    """A binary NetDef whose large float arguments are returned apart: the NetDef without them,
    and op index -> argument name -> float32 array."""
    buf = memoryview(data)
    arrays: dict[int, dict[str, np.ndarray]] = {}
    light: list[bytes] = []
    index = 0
    try:
        for field, wt, key_at, start, stop in _fields(buf, 0, len(data)):
            if field != _OP or wt != 2:
                light.append(data[key_at:stop])
                continue
            if stop - start < _LARGE:
                light.append(data[key_at:stop])
            else:
                op_bytes: list[bytes] = []
                for f, w, k, s, e in _fields(buf, start, stop):
                    if f != _ARG or w != 2:
                        op_bytes.append(data[k:e])
                        continue
                    rest, values = _split_arg(data, buf, s, e)
                    if values is not None:
                        name = caffe2_pb2.Argument.FromString(rest).name
                        arrays.setdefault(index, {})[name] = values
                    op_bytes.append(bytes([(_ARG << 3) | 2]) + encode_varint(len(rest)) + rest)
                body = b"".join(op_bytes)
                light.append(bytes([(_OP << 3) | 2]) + encode_varint(len(body)) + body)
            index += 1
        net = caffe2_pb2.NetDef.FromString(b"".join(light))
    except (ValueError, IndexError, DecodeError) as e:
        raise ConvnetError(f"{path}: not a binary Caffe2 NetDef: {e}") from None
    return net, arrays


def encode_op(op: caffe2_pb2.OperatorDef, values: dict[str, np.ndarray] | None = None) -> list[bytes | memoryview]:
    """One ``op`` field of a NetDef as buffers to write in order: the op, then its float arguments
    packed (one length-delimited run of little-endian floats). Caffe2 declares the field unpacked
    and writes a tag per value, but every protobuf parser, Caffe2's included, takes either
    encoding of a repeated scalar; packed is 20% smaller and needs no copy of the values."""
    parts: list[bytes | memoryview] = [op.SerializeToString()]
    for name, arr in (values or {}).items():
        data = np.ascontiguousarray(arr, dtype="<f4").reshape(-1)
        head = caffe2_pb2.Argument(name=name).SerializeToString()
        head += bytes([(_FLOATS << 3) | 2]) + encode_varint(data.nbytes)
        parts.append(bytes([(_ARG << 3) | 2]) + encode_varint(len(head) + data.nbytes) + head)
        parts.append(memoryview(data).cast("B"))
    body_len = sum(len(p) if isinstance(p, bytes) else p.nbytes for p in parts)
    return [bytes([(_OP << 3) | 2]) + encode_varint(body_len), *parts]
