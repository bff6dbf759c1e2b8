"""Files a layer itself reads at set-up (InfogainLoss's H matrix): read by the net reader, so the
graph and the backends get the values, not a path.

Caffe opens these paths relative to the working directory; the net file's folder is tried next.
A file that is not there leaves the value unset: the net still builds (like a data layer whose
source is absent), and running the layer says what is missing.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from convnet_io.errors import ConvnetError, LayerError
from convnet_io.graph import Node
from convnet_io.graph.layers.common import canonical_axis


def _find(path: str, source_path: str) -> Path | None:
    for candidate in (Path(path), Path(source_path).parent / path if source_path else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def read_layer_files(nodes: list[Node], shapes: dict, source_path: str = "") -> None:
    """Fill in what each node's files hold (in place)."""
    for node in nodes:
        if node.type == "InfogainLoss" and len(node.bottoms) < 3 and node.attrs.source:
            found = _find(node.attrs.source, source_path)
            if found is None:
                continue
            # NumPy comes with the reader: imported only for a net that reads a file
            from convnet_io.caffe.caffemodel import read_blobproto

            try:
                h = read_blobproto(found)
            except ConvnetError as e:
                raise LayerError(node.name, f"infogain matrix: {e}", node.type) from None
            classes = int(round(h.size ** 0.5))
            if classes * classes != h.size:
                raise LayerError(node.name, f"infogain matrix {found} has {h.size} values, not a square",
                                 node.type)
            scores = shapes[node.bottoms[0]]
            want = scores[canonical_axis(node.attrs.axis, len(scores))]
            if classes != want:
                raise LayerError(node.name, f"infogain matrix {found} is {classes}x{classes}, the scores "
                                 f"have {want} classes", node.type)
            rows = tuple(tuple(float(v) for v in row) for row in h.reshape(classes, classes))
            node.attrs = dataclasses.replace(node.attrs, infogain=rows)
