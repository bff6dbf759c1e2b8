"""Load any supported net file into a Graph: the single entry point parsers share."""
from __future__ import annotations

from pathlib import Path

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.prototxt import read_net, read_text
from convnet_io.caffe2.listing_text import is_caffe2_listing
from convnet_io.graph import Graph, Shape


def load_graph(path: str | Path, phase: str = "TEST", input_shapes: dict[str, Shape] | Shape | None = None,
               stages: tuple[str, ...] = (), level: int | None = None) -> Graph:
    """Parse a prototxt, a binary NetParameter or a Caffe2 op listing into a Graph for ``phase``."""
    p = Path(path)
    if p.suffix not in (".caffemodel", ".binaryproto", ".pb"):
        text = read_text(p)
        if is_caffe2_listing(text):
            from convnet_io.caffe2.listing import listing_to_graph

            return listing_to_graph(text, str(path), input_shapes=input_shapes)
    net, notes = read_net(p)
    return build_graph(net, phase=phase, input_shapes=input_shapes, stages=stages, level=level,
                       source_path=str(path), notices=notes)
