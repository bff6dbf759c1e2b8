"""Protobuf wire-format encoding for the writers that stream large arrays into a file themselves
(``.caffemodel``, Caffe2 ``init_net.pb``, ONNX initialisers) instead of copying them into messages."""
from __future__ import annotations

VARINT, I64, LEN, I32 = 0, 1, 2, 5  # wire types


def encode_varint(value: int) -> bytes:
    """A non-negative integer as a base-128 varint."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_key(number: int, wire_type: int) -> bytes:
    """A field's key: its number and wire type."""
    return encode_varint((number << 3) | wire_type)


def len_prefix(number: int, size: int) -> bytes:
    """The key and length of a length-delimited field of ``size`` bytes (the payload follows)."""
    return encode_key(number, LEN) + encode_varint(size)


def len_field(number: int, payload: bytes) -> bytes:
    """A whole length-delimited field."""
    return len_prefix(number, len(payload)) + payload
