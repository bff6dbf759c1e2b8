"""Read Caffe net definitions (text prototxt or binary NetParameter) into NetParameter messages."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.message import DecodeError

from convnet_io.caffe.fork_fields import explain_unknown_field, pick_by_layer_type
from convnet_io.caffe.plain_net import PlainNet, collector_paused
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.prototxt_fast import parse_fast
from convnet_io.caffe.upgrade_legacy import is_upgrade_needed
from convnet_io.errors import ConvnetError, ParseError
from convnet_io.limits import memory_budget, read_bytes_limited

_FAST_FROM = 1 << 16  # characters: below this protobuf's own parser takes milliseconds
_LOCATION = re.compile(r"^(\d+):(\d+)\s*:\s*")


def parse_net_text(text: str, path: str = "<string>", compact: bool = False) -> Any:
    """Parse NetParameter text; a syntax error becomes a ParseError located at path:line:col.

    With ``compact``, a large net may come back as a PlainNet (layers of only names held as
    tuples, for ``build_graph``) when it needs no upgrade."""
    if len(text) > _FAST_FROM:  # protobuf's parser is slow on very large nets; same result
        with collector_paused():
            if compact:
                layers: list = []
                head = parse_fast(text, caffe_pb2.NetParameter(), layers)
                if head is not None and not is_upgrade_needed(head):
                    return PlainNet(head, layers)
                del layers, head
            net = parse_fast(text, caffe_pb2.NetParameter())
        if net is not None:
            return net
    net = caffe_pb2.NetParameter()
    try:
        text_format.Parse(text, net)
    except text_format.ParseError as e:
        line, col = e.GetLine(), e.GetColumn()
        message = _LOCATION.sub("", str(e))
        if line is None:
            m = _LOCATION.match(str(e))
            if m:
                line, col = int(m.group(1)), int(m.group(2))
        message = explain_unknown_field(text, line, col, message)  # names the layer and the fork
        raise ParseError(path, line, col, message) from None
    return net


def read_text(path: str | Path) -> str:
    p = Path(path)
    try:
        data = read_bytes_limited(p, what="net or solver definition")
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConvnetError(f"{path}: is a directory, not a net definition") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        # located like a syntax error: line and column (in characters) of the first bad byte
        line = data.count(b"\n", 0, e.start) + 1
        col = len(data[data.rfind(b"\n", 0, e.start) + 1:e.start].decode("utf-8", "replace")) + 1
        raise ParseError(str(path), line, col, f"not UTF-8 text (byte 0x{data[e.start]:02x}); "
                         "for binary weights use --weights") from None


def read_net_parameter(path: str | Path, compact: bool = False, text: str | None = None) -> Any:
    """A NetParameter from a text prototxt, or from a binary file (a .caffemodel used as a net);
    with ``compact``, a large text net may be a PlainNet. ``text``: the file's text, when the
    caller has read it already."""
    p = Path(path)
    if p.suffix in (".caffemodel", ".binaryproto", ".pb"):
        net = caffe_pb2.NetParameter()
        try:
            net.ParseFromString(read_bytes_limited(p, memory_budget(), "binary net"))
        except (DecodeError, OSError) as e:
            raise ConvnetError(f"{path}: not a binary NetParameter: {e}") from None
        pick_by_layer_type(net)  # numbers two forks gave to different fields, read by layer type
        return net
    return parse_net_text(read_text(p) if text is None else text, str(path), compact)


def read_net(path: str | Path, compact: bool = False, text: str | None = None) -> tuple[Any, list[str]]:
    """An upgraded (V2) NetParameter from a prototxt or binary net, and the upgrade notes. With
    ``compact`` (for ``build_graph`` only), a large net needing no upgrade may be a PlainNet: a
    700k-layer chain then takes a third of the memory."""
    from convnet_io.caffe.upgrade import upgrade_net

    net = read_net_parameter(path, compact, text)
    if isinstance(net, PlainNet):
        if not net.layer:
            raise ConvnetError(f"{path}: no layers found (is this a net definition?)")
        return net, []
    try:
        notes = upgrade_net(net)
    except ValueError as e:
        raise ConvnetError(f"{path}: {e}") from None
    if not len(net.layer):
        raise ConvnetError(f"{path}: no layers found (is this a net definition?)")
    return net, [f"{path}: {n}" for n in notes]
