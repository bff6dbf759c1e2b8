"""A fast path for the common subset of protobuf text format, for very large nets.

protobuf's own text parser is written in Python and costs about 0.3 ms per Caffe layer (a
700,000-layer prototxt took minutes). Here one compiled regular expression tokenizes the whole
file in C and a flat loop fills the messages. Anything outside the plain subset (``<>`` blocks,
``[...]`` lists and extensions, enum numbers, ``inf``/``nan``, octal or hex numbers, adjacent
strings, a repeated singular field, any error at all) returns None, and the caller parses the
text with ``text_format`` as before, so the result and every error message stay protobuf's."""
from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterator
from itertools import chain, groupby, islice, repeat
from typing import Any

from google.protobuf import text_encoding
from google.protobuf.descriptor import FieldDescriptor as FD

_BLANK = r'[ \t\r\n\f\v]*+(?:#[^\n]*+\n?[ \t\r\n\f\v]*+)*+'
# strings as "unrolled loops": a run of plain characters is one step for the regex engine, so a
# 50 MB name costs no per-character backtracking state
_TOKEN_BODY = (r'(?P<tok>"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\\\n]*(?:\\.[^\'\\\n]*)*\'|[A-Za-z_]\w*'
               r'|-?[0-9.][\w.+-]*|[{}:,;])')
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


def parse_fast(text: str, message: Any, layers: list | None = None) -> Any | None:
    """Fill ``message`` from ``text`` when it is in the plain subset; None to ask for the full
    parser (``message`` may then be partly filled: the caller starts from a fresh one).

    With ``layers`` (a NetParameter only), every layer is appended there in order instead: a
    layer of only name, type, bottoms and tops as a tuple (see PlainNet), any other as its
    message (which ``message.layer`` also holds)."""
    plain = message.DESCRIPTOR.full_name == "caffe.NetParameter"
    # an ASCII text is scanned as bytes: the names come out ready for the wire format
    data = text.encode("ascii") if plain and layers is None and text.isascii() else text
    scan = (_SCAN_BYTES if isinstance(data, bytes) else _SCAN_STR) if plain else _SCAN_TOKENS
    # finditer skips what the pattern does not match; here every position matches (junk is one
    # character, the end of the text is a match), so nothing is ever skipped unseen
    try:
        _parse(scan.finditer(data), message, isinstance(data, bytes), layers)
    except (_Fallback, ValueError, TypeError, IndexError, AttributeError, UnicodeDecodeError):
        return None
    return message


def _parse(matches: Iterator[re.Match], root: Any, as_bytes: bool, layers: list | None) -> None:
    """Runs of plain layers (wire bytes parsed by upb in C, or tuples) and the tokens of
    everything else (filled field by field), in file order, so layers keep it. Tokens are
    streamed, never held in one list (14 million of them for a 700k-layer net of other layers)."""
    synced = 0  # root.layer entries already in ``layers``

    def plain(run: _PlainRun) -> None:
        nonlocal synced
        if layers is None:
            root.MergeFromString(_plain_layers(run.matches, run.kinds, as_bytes))
            return
        layers.extend(root.layer[synced:])  # the other layers before this run
        synced = len(root.layer)
        layers.extend(_plain_tuples(run.matches, run.kinds))

    _fill(_tokens(matches, as_bytes), root, plain)
    if layers is not None:
        layers.extend(root.layer[synced:])


class _PlainRun:
    """Consecutive plain layers, one item of the token stream."""

    __slots__ = ("kinds", "matches")

    def __init__(self, matches: list[re.Match], kinds: list[str]):
        self.matches, self.kinds = matches, kinds


def _tokens(matches: Iterator[re.Match], as_bytes: bool) -> Iterator[str | _PlainRun]:
    while True:
        batch = list(islice(matches, _BATCH))
        if not batch:
            return
        kinds = list(map(_KIND, batch))
        start = 0
        # runs of one kind (plain layers of both forms count as one kind)
        for kind, run in groupby(map(_RUN.__getitem__, kinds)):
            end = start + len(list(run))
            if kind == "tok":
                tokens = map(_TOK, batch[start:end])
                yield from map(bytes.decode, tokens) if as_bytes else tokens
            elif kind == "junk":
                raise _Fallback  # something the scanner does not know: protobuf's parser decides
            elif kind == "plain":
                yield _PlainRun(batch[start:end], kinds[start:end])
            start = end


def _plain_layers(matches: list[re.Match], kinds: list[str], as_bytes: bool) -> bytes:
    """The wire bytes of NetParameter.layer entries holding only name, type, bottom and top."""
    if all(k == "p4" for k in kinds):
        # the common form (name, type, one bottom, one top), encoded by C loops: no Python per layer
        groups = list(zip(*map(_GROUPS4, matches)))
        if not as_bytes:
            groups = [list(map(str.encode, g)) for g in groups]
        lengths = [list(map(len, g)) for g in groups]
        if max(map(max, lengths)) < 0x80:  # every length is one varint byte
            body = list(map((8).__add__, map(sum, zip(*lengths))))  # + 4 tags and 4 lengths
            fields = zip(repeat(_LAYER_TAG), map(_varint, body),
                         repeat(b"\n"), map(_varint, lengths[0]), groups[0],
                         repeat(b"\x12"), map(_varint, lengths[1]), groups[1],
                         repeat(b"\x1a"), map(_varint, lengths[2]), groups[2],
                         repeat(b"\x22"), map(_varint, lengths[3]), groups[3])
            return b"".join(chain.from_iterable(fields))
    return b"".join(map(_plain_layer, matches, repeat(as_bytes)))


def _plain_tuples(matches: list[re.Match], kinds: list[str]) -> list[tuple]:
    """Plain layers as PlainNet tuples: (name, type, bottom, top) strings for the common form,
    (name, type, bottoms, tops) with tuples of names (and None for a name or type not given)
    for the others."""
    if all(k == "p4" for k in kinds):
        return list(map(_GROUPS4, matches))  # the regex engine's own tuples: nothing per layer here
    return list(map(_plain_tuple, matches))


def _plain_tuple(m: re.Match) -> tuple:
    if m.lastgroup == "p4":
        return m.group(1, 2, 3, 4)
    name, type_, io = m.group(5, 6, 7)
    pairs = _IO_STR.findall(io)
    return (name, type_, tuple(v for f, v in pairs if f == "bottom"), tuple(v for f, v in pairs if f == "top"))


def _plain_layer(m: re.Match, as_bytes: bool) -> bytes:
    if m.lastgroup == "p4":
        fields = zip(_TAGS4, m.group(1, 2, 3, 4))
    else:
        name, type_, io = m.group(5, 6, 7)
        fields = [(b"\n", name), (b"\x12", type_)]
        fields += [(_IO_TAG[f], v) for f, v in (_IO_BYTES if as_bytes else _IO_STR).findall(io)]
    body = b""
    for tag, v in fields:
        if v is not None:
            if not as_bytes:
                v = v.encode()
            body += tag + _varint(len(v)) + v
    return _LAYER_TAG + _varint(len(body)) + body


@functools.cache
def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _scanner(kind: type) -> re.Pattern:
    """One pattern for the whole text, tried at every token: a plain layer (in two forms), else
    one token, else one character nothing else takes (junk). A plain layer can only start where a
    token would, so one is never found inside a string or a comment."""
    w = r"[ \t\r\n\f\v]*+"
    s = r'"([^"\\\n]*+)"'
    head = rf"layer{w}:?{w}\{{{w}"
    plain4 = (rf"{head}name{w}:{w}{s}{w}type{w}:{w}{s}{w}bottom{w}:{w}{s}{w}"
              rf'top{w}:{w}"(?P<p4>[^"\\\n]*+)"{w}\}}')
    io = rf'(?:(?:bottom|top){w}:{w}"[^"\\\n]*+"{w})*+'
    plain = rf"{head}(?:name{w}:{w}{s}{w})?(?:type{w}:{w}{s}{w})?(?P<pn>{io})\}}"
    pattern = rf"{_BLANK}(?:{plain4}|{plain}|{_TOKEN_BODY}|{_END})"
    return re.compile(pattern.encode() if kind is bytes else pattern)


_END = r"(?P<end>\Z)|(?s:(?P<junk>.))"
_SCAN_STR = _scanner(str)
_SCAN_BYTES = _scanner(bytes)
_SCAN_TOKENS = re.compile(rf"{_BLANK}(?:{_TOKEN_BODY}|{_END})")
_BATCH = 1 << 16  # matches taken at a time: the encoded layers of one batch are parsed together
_KIND = operator.attrgetter("lastgroup")
_TOK = operator.itemgetter("tok")
_GROUPS4 = operator.methodcaller("group", 1, 2, 3, 4)
_RUN = {"p4": "plain", "pn": "plain", "tok": "tok", "end": "end", "junk": "junk"}
_LAYER_TAG = b"\xa2\x06"  # NetParameter.layer: field 100, length-delimited
_TAGS4 = (b"\n", b"\x12", b"\x1a", b"\x22")  # LayerParameter name 1, type 2, bottom 3, top 4
_IO_STR = re.compile(r'(bottom|top)[ \t\r\n\f\v]*:[ \t\r\n\f\v]*"([^"\\\n]*)"')
_IO_BYTES = re.compile(_IO_STR.pattern.encode())
_IO_TAG = {"bottom": b"\x1a", "top": b"\x22", b"bottom": b"\x1a", b"top": b"\x22"}


def _fill(tokens: Iterator[Any], root: Any, plain: Any = None) -> None:
    """Fill ``root`` from a token stream; a run of plain layers in it (only at the top level)
    goes to ``plain``."""
    stack = []
    msg = root
    fields = _fields(msg.DESCRIPTOR)
    take = functools.partial(next, tokens, None)
    tok = take()
    while tok is not None:
        if type(tok) is not str:  # a _PlainRun
            if stack or plain is None:
                raise _Fallback
            plain(tok)
            tok = take()
            continue
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
                if type(value) is not str:
                    raise _Fallback
                v = _value(kind, enum, value)
                tok = take()
                if kind in "sy" and type(tok) is str and tok[0] in "\"'":
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
