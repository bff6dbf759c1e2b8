"""Reading the text of a Caffe2 op listing: ``op:`` lines with their inputs, outputs and arguments,
``net: NAME`` headers, ``# comments`` and ``input: BLOB N,C,H,W`` lines giving an external input's
default shape.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convnet_io.caffe2.fills import _FILLERS
from convnet_io.caffe2.op import Arg, Op
from convnet_io.errors import ParseError
from convnet_io.graph import Shape


def is_caffe2_listing(text: str) -> bool:
    """Caffe2 op listings have ``op: Type (inputs)->(outputs)`` lines."""
    if "->" not in text:  # one scan in C: a 50 MB prototxt is not split into 700k lines
        return False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("op:") and "->" in s:
            return True
    return False



# ------------------------------------------------------------------------------------------------
# Reading the text
# ------------------------------------------------------------------------------------------------

_OP_LINE = re.compile(r"^\s*op:\s*(?P<type>[A-Za-z_]\w*)\s*\((?P<ins>[^()]*)\)\s*->\s*"
                      r"\((?P<outs>[^()]*)\)(?P<rest>.*)$")
_ARG = re.compile(r"\s*(?P<key>[A-Za-z_]\w*)\s*:\s*(?P<val>\[[^\]]*\]|[^\s\[\]]+)")
_INPUT_LINE = re.compile(r"^\s*input:\s*(?P<name>[^\s,]+)\s+(?P<dims>\d+(?:\s*[,x]\s*\d+)*)\s*$")
_INT = re.compile(r"^[+-]?\d+$")
_BLOB = re.compile(r"[^\s,]+")


def _scalar(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if _INT.match(text):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def _value(text: str) -> Any:
    if text.startswith("["):
        items = [s for s in re.split(r"[,\s]+", text[1:-1]) if s]
        return [_scalar(s) for s in items]
    return _scalar(text)


def _parse_op(m: re.Match, path: str, lineno: int) -> Op:
    ins = [(t.group(), m.start("ins") + t.start() + 1) for t in _BLOB.finditer(m.group("ins"))]
    outs = [(t.group(), m.start("outs") + t.start() + 1) for t in _BLOB.finditer(m.group("outs"))]
    op = Op(m.group("type"), [b for b, _ in ins], [b for b, _ in outs], {}, path, lineno,
            m.start("type") + 1, [c for _, c in ins], [c for _, c in outs])
    rest, base, pos = m.group("rest"), m.start("rest"), 0
    while rest[pos:].strip():
        a = _ARG.match(rest, pos)
        if a is None:
            col = base + pos + len(rest[pos:]) - len(rest[pos:].lstrip()) + 1
            raise ParseError(path, lineno, col, f"{op.type}: malformed argument "
                             f"'{rest[pos:].split()[0]}' (expected key:value, key:[a,b,...])")
        key, col = a.group("key"), base + a.start("key") + 1
        if key in op.args:
            raise ParseError(path, lineno, col, f"{op.type}: argument '{key}' is given twice")
        op.args[key] = Arg(key, _value(a.group("val")), a.group("val"), col)
        pos = a.end()
    if not op.outputs:
        raise op.error("an op needs at least one output")
    return op


@dataclass
class _Listing:
    ops: list[Op]
    inputs: dict[str, tuple[Shape, int]]  # `input:` lines: blob -> (shape, line)
    name: str


def _read(text: str, path: str) -> _Listing:
    ops: list[Op] = []
    inputs: dict[str, tuple[Shape, int]] = {}
    headers: list[tuple[int, str]] = []  # (index of the next op, net name)
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        s = line.strip()
        if not s or s.startswith("```"):  # blank, comment, or the fence of a pasted listing
            continue
        if s.startswith("net:"):
            headers.append((len(ops), s[4:].strip().strip("-").strip()))
        elif s.startswith("op:"):
            m = _OP_LINE.match(line)
            if m is None:
                raise ParseError(path, lineno, line.index("op:") + 1,
                                 "malformed op line (expected `op: Type (inputs)->(outputs) key:value ...`)")
            ops.append(_parse_op(m, path, lineno))
        elif s.startswith("input:"):
            m = _INPUT_LINE.match(line)
            if m is None:
                raise ParseError(path, lineno, line.index("input:") + 1,
                                 "malformed input line (expected `input: BLOB N,C,H,W`)")
            shape = tuple(int(d) for d in re.split(r"\s*[,x]\s*", m.group("dims")))
            if any(d <= 0 for d in shape):
                raise ParseError(path, lineno, m.start("dims") + 1, f"input shape {list(shape)} must be positive")
            if m.group("name") in inputs:
                raise ParseError(path, lineno, m.start("name") + 1, f"input '{m.group('name')}' is given twice")
            inputs[m.group("name")] = (shape, lineno)
        else:
            raise ParseError(path, lineno, len(line) - len(line.lstrip()) + 1,
                             "expected an `op:`, `net:` or `input:` line")
    # The net is named by the header of the section holding the first predict (non-fill) op.
    first = next((i for i, op in enumerate(ops) if op.type not in _FILLERS), 0)
    name = ""
    for at, header in headers:
        if at <= first and header:
            name = header
    return _Listing(ops, inputs, name or Path(path).stem)
