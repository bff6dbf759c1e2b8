"""Load any supported net file into a Graph: the single entry point parsers share."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .builder import build_graph
from .errors import ConvnetError
from .graph import Graph, Shape
from .prototxt import read_net_parameter, read_text


def is_caffe2_listing(text: str) -> bool:
    """Caffe2 op listings have ``op: Type (inputs)->(outputs)`` lines."""
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("op:") and "->" in s:
            return True
    return False


def read_net(path: str | Path) -> tuple[Any, list[str]]:
    """An upgraded (V2) NetParameter from a prototxt or binary net, and the upgrade notes."""
    from .upgrade import upgrade_net

    net = read_net_parameter(path)
    try:
        notes = upgrade_net(net)
    except ValueError as e:
        raise ConvnetError(f"{path}: {e}") from None
    if not len(net.layer):
        raise ConvnetError(f"{path}: no layers found (is this a net definition?)")
    return net, [f"{path}: {n}" for n in notes]


def load_graph(path: str | Path, phase: str = "TEST", input_shapes: dict[str, Shape] | Shape | None = None,
               stages: tuple[str, ...] = (), level: int | None = None) -> Graph:
    """Parse a prototxt, a binary NetParameter or a Caffe2 op listing into a Graph for ``phase``."""
    p = Path(path)
    if p.suffix not in (".caffemodel", ".binaryproto", ".pb"):
        text = read_text(p)
        if is_caffe2_listing(text):
            from .caffe2_listing import listing_to_graph

            return listing_to_graph(text, str(path), input_shapes=input_shapes)
    net, notes = read_net(p)
    return build_graph(net, phase=phase, input_shapes=input_shapes, stages=stages, level=level,
                       source_path=str(path), notices=notes)
