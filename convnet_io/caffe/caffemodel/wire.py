"""Protobuf wire format, walked and written by hand for the weight files: field numbers of the
messages involved, tag and varint decoding over a buffer, and the few encoders the writer needs."""
from __future__ import annotations

import numpy as np

_F32 = np.dtype("<f4")
_F64 = np.dtype("<f8")

# Wire types.
_VARINT, _I64, _LEN, _SGROUP, _EGROUP, _I32 = 0, 1, 2, 3, 4, 5

# Field numbers.
_NET_LAYER, _NET_LAYERS = 100, 2
_V2_NAME, _V2_TYPE, _V2_BLOBS = 1, 2, 7
_V1_V0LAYER, _V1_NAME, _V1_TYPE, _V1_BLOBS = 1, 4, 5, 6
_V0_NAME, _V0_TYPE, _V0_BLOBS = 1, 2, 50
_BLOB_NUM, _BLOB_CHANNELS, _BLOB_HEIGHT, _BLOB_WIDTH = 1, 2, 3, 4
_BLOB_DATA, _BLOB_DIFF, _BLOB_SHAPE, _BLOB_DOUBLE_DATA, _BLOB_DOUBLE_DIFF = 5, 6, 7, 8, 9
_SHAPE_DIM = 1

_MAX_GROUP_DEPTH = 100  # protobuf's default recursion limit


# ---------------------------------------------------------------------------
# wire-format reading
# ---------------------------------------------------------------------------


class _WireError(Exception):
    """Malformed wire data at byte offset ``pos`` of the file."""

    def __init__(self, message: str, pos: int):
        super().__init__(message)
        self.message, self.pos = message, pos


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode the varint at ``pos``; return (value, position after it)."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:
            return b, pos + 1
    start = pos
    value = shift = 0
    while True:
        if pos >= end:
            raise _WireError("truncated varint", start)
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise _WireError("varint longer than 10 bytes", start)


def _next_field(buf: bytes, pos: int, end: int) -> tuple[int, int, int, int, int]:
    """Read one field at ``pos``: (number, wire type, a, b, next position).

    For a varint, ``a`` is its value; for length-delimited, fixed32 and fixed64
    fields, ``a:b`` is the payload.  A group is skipped whole and reported with
    ``a == b == next position``.
    """
    tag_pos = pos
    tag, pos = _varint(buf, pos, end)
    number, wt = tag >> 3, tag & 7
    if number == 0:
        raise _WireError("invalid field number 0", tag_pos)
    if wt == _VARINT:
        value, pos = _varint(buf, pos, end)
        return number, wt, value, 0, pos
    if wt == _LEN:
        length, pos = _varint(buf, pos, end)
        stop = pos + length
        if stop > end:
            raise _WireError(
                f"field {number} declares {length} bytes but only {end - pos} remain "
                "(truncated file?)", tag_pos)
        return number, wt, pos, stop, stop
    if wt == _I32 or wt == _I64:
        stop = pos + (4 if wt == _I32 else 8)
        if stop > end:
            raise _WireError(f"truncated fixed-width field {number}", tag_pos)
        return number, wt, pos, stop, stop
    if wt == _SGROUP:
        pos = _skip_group(buf, pos, end, number, tag_pos)
        return number, wt, pos, pos, pos
    if wt == _EGROUP:
        raise _WireError(f"unexpected end-group tag for field {number}", tag_pos)
    raise _WireError(f"invalid wire type {wt} for field {number}", tag_pos)


def _skip_group(buf: bytes, pos: int, end: int, number: int, tag_pos: int) -> int:
    stack = [number]
    while stack:
        if pos >= end:
            raise _WireError(f"unterminated group {number}", tag_pos)
        t_pos = pos
        tag, pos = _varint(buf, pos, end)
        n, wt = tag >> 3, tag & 7
        if n == 0:
            raise _WireError("invalid field number 0", t_pos)
        if wt == _VARINT:
            _, pos = _varint(buf, pos, end)
        elif wt == _LEN:
            length, pos = _varint(buf, pos, end)
            pos += length
        elif wt == _I32:
            pos += 4
        elif wt == _I64:
            pos += 8
        elif wt == _SGROUP:
            stack.append(n)
            if len(stack) > _MAX_GROUP_DEPTH:
                raise _WireError("groups nested too deeply", t_pos)
        elif wt == _EGROUP:
            if stack.pop() != n:
                raise _WireError(f"mismatched end-group tag for field {n}", t_pos)
        else:
            raise _WireError(f"invalid wire type {wt} for field {n}", t_pos)
        if pos > end:
            raise _WireError(f"truncated field {n} inside group {number}", t_pos)
    return pos


def _fixed_run(buf: bytes, pos: int, end: int, tag_byte: int, width: int) -> int:
    """How many consecutive ``tag_byte`` + ``width``-byte records start at ``pos``.

    Finds a run of non-packed repeated float/double fields with NumPy instead of
    a Python loop per value; the chunk grows so a long run costs linear time.
    """
    rec = 1 + width
    n_max = (end - pos) // rec
    n, chunk = 0, 256
    while n < n_max:
        m = min(chunk, n_max - n)
        at = pos + n * rec
        tags = np.frombuffer(buf[at:at + m * rec], np.uint8)[::rec]  # a copy: no export of buf
        bad = np.flatnonzero(tags != tag_byte)
        if bad.size:
            return n + int(bad[0])
        n += m
        chunk *= 2
    return n


def _packed_varints(buf: bytes, pos: int, end: int, out: list[int]) -> None:
    while pos < end:
        value, pos = _varint(buf, pos, end)
        out.append(value - (1 << 64) if value >= 1 << 63 else value)  # int64


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


# ---------------------------------------------------------------------------
# wire-format writing
# ---------------------------------------------------------------------------
