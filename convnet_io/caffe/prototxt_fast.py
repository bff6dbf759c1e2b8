"""A fast path for the common subset of protobuf text format, for very large nets.

protobuf's own text parser is written in Python and costs about 0.3 ms per Caffe layer (a
700,000-layer prototxt took minutes). Here one compiled regular expression tokenizes the whole
file in C and a flat loop fills the messages. Anything outside the plain subset (``<>`` blocks,
``[...]`` lists and extensions, enum numbers, ``inf``/``nan``, octal or hex numbers, adjacent
strings, a repeated singular field, any error at all) returns None, and the caller parses the
text with ``text_format`` as before, so the result and every error message stay protobuf's."""
from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Any

from google.protobuf import text_encoding
from google.protobuf.descriptor import FieldDescriptor as FD

_TOKEN = re.compile(r'[ \t\r\n\f\v]*(?:#[^\n]*\n?[ \t\r\n\f\v]*)*'
                    # strings as "unrolled loops": a run of plain characters is one step for the
                    # regex engine, so a 50 MB name costs no per-character backtracking state
                    r'("[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\\\n]*(?:\\.[^\'\\\n]*)*\'|[A-Za-z_]\w*'
                    r'|-?[0-9.][\w.+-]*|[{}:,;])')
_REST = re.compile(r'[ \t\r\n\f\v]*(?:#[^\n]*\n?[ \t\r\n\f\v]*)*')
_INT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"-?(?:[1-9][0-9]*|0)?(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?")

_INTS = {FD.TYPE_INT32, FD.TYPE_INT64, FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_SINT32, FD.TYPE_SINT64,
         FD.TYPE_FIXED32, FD.TYPE_FIXED64, FD.TYPE_SFIXED32, FD.TYPE_SFIXED64}
_UNSIGNED = {FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_FIXED32, FD.TYPE_FIXED64}
_FLOATS = {FD.TYPE_FLOAT, FD.TYPE_DOUBLE}


class _Fallback(Exception):
    pass


_fields_cache: dict[Any, dict[str, tuple]] = {}


def _fields(descriptor) -> dict[str, tuple]:
    """name -> (kind, repeated, enum values or None, field name) for one message type."""
    out = _fields_cache.get(descriptor)
    if out is None:
        out = {}
        for f in descriptor.fields:
            if f.type == FD.TYPE_MESSAGE:
                kind = "m"
            elif f.type == FD.TYPE_GROUP:
                continue
            elif f.type in _INTS:
                kind = "u" if f.type in _UNSIGNED else "i"
            elif f.type in _FLOATS:
                kind = "f"
            elif f.type == FD.TYPE_BOOL:
                kind = "b"
            elif f.type == FD.TYPE_STRING:
                kind = "s"
            elif f.type == FD.TYPE_BYTES:
                kind = "y"
            elif f.type == FD.TYPE_ENUM:
                kind = "e"
            else:
                continue
            enum = {v.name: v.number for v in f.enum_type.values} if kind == "e" else None
            out[f.name] = (kind, f.is_repeated, enum, f.name)
        _fields_cache[descriptor] = out
    return out


def _string(tok: str) -> str | bytes:
    if tok[0] not in "\"'":
        raise _Fallback
    body = tok[1:-1]
    if "\\" in body:
        return text_encoding.CUnescape(body)
    return body


def _value(kind: str, enum, tok: str):
    if kind == "s":
        v = _string(tok)
        return v.decode("utf-8") if isinstance(v, bytes) else v
    if kind == "i" or kind == "u":
        if not _INT.fullmatch(tok) or (kind == "u" and tok[0] == "-"):
            raise _Fallback
        return int(tok)
    if kind == "f":
        if not _FLOAT.fullmatch(tok) or not any(c.isdigit() for c in tok) or re.match(r"-?0[0-9]", tok):
            raise _Fallback
        return float(tok)
    if kind == "e":
        v = enum.get(tok)
        if v is None:
            raise _Fallback
        return v
    if kind == "b":
        if tok in ("true", "t", "True"):
            return True
        if tok in ("false", "f", "False"):
            return False
        raise _Fallback
    v = _string(tok)
    return v if isinstance(v, bytes) else v.encode("utf-8")


def parse_fast(text: str, message: Any) -> Any | None:
    """Fill ``message`` from ``text`` when it is in the plain subset; None to ask for the full
    parser (``message`` may then be partly filled: the caller starts from a fresh one)."""
    # finditer skips what the pattern does not match: the tokens and the blanks between them must
    # account for the whole text, else something unusual is there.
    if not _REST.fullmatch(_TOKEN.sub("", text)):
        return None
    try:
        # tokens are streamed, never held in one list (10 million of them for a 700k-layer net)
        _fill(map(_group, _TOKEN.finditer(text)), message)
    except (_Fallback, ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError):
        return None
    return message


def _group(m: re.Match) -> str:
    return m[1]


def _fill(tokens: Iterator[str], root: Any) -> None:
    stack = []
    msg = root
    fields = _fields(msg.DESCRIPTOR)
    take = functools.partial(next, tokens, None)
    tok = take()
    while tok is not None:
        if tok == "}":
            if not stack:
                raise _Fallback
            msg, fields = stack.pop()
            tok = take()
        else:
            f = fields.get(tok)
            if f is None:
                raise _Fallback
            kind, repeated, enum, name = f
            nxt = take()
            if kind == "m":
                if nxt == ":":
                    nxt = take()
                if nxt != "{":
                    raise _Fallback
                if repeated:
                    sub = getattr(msg, name).add()
                else:
                    if msg.HasField(name):
                        raise _Fallback
                    sub = getattr(msg, name)
                    sub.SetInParent()
                stack.append((msg, fields))
                msg, fields = sub, _fields(sub.DESCRIPTOR)
                tok = take()
            else:
                if nxt != ":":
                    raise _Fallback
                value = take()
                if value is None:
                    raise _Fallback
                v = _value(kind, enum, value)
                tok = take()
                if kind in "sy" and tok is not None and tok[0] in "\"'":
                    raise _Fallback  # adjacent strings are concatenated by protobuf
                if repeated:
                    getattr(msg, name).append(v)
                else:
                    if msg.HasField(name):
                        raise _Fallback
                    setattr(msg, name, v)
        if tok == "," or tok == ";":
            tok = take()
    if stack:
        raise _Fallback
