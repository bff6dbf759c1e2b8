"""Match Caffe weights (.caffemodel layers) to a graph's learnable blobs, by layer name."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convnet_io.caffe.caffemodel import LayerBlobs, read_caffemodel
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.graph import Graph


@dataclass
class WeightsReport:
    blobs: dict[str, list[np.ndarray]] = field(default_factory=dict)  # layer -> arrays, net shapes
    matched: int = 0
    missing: list[str] = field(default_factory=list)  # net layers with blobs absent from the file
    warnings: list[str] = field(default_factory=list)


def _fit(layer: str, index: int, arr: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    """``arr`` in the net's ``shape``; Caffe's legacy 4-D (num, channels, height, width) blobs fit
    a lower-rank blob padded with leading ones (as ``Blob::ShapeEquals``)."""
    if tuple(arr.shape) == shape:
        return arr
    if arr.ndim == 4 and len(shape) <= 4 and tuple(arr.shape) == (1,) * (4 - len(shape)) + shape:
        return arr.reshape(shape)
    raise LayerError(layer, f"blob {index} has shape {list(arr.shape)} in {source}, "
                     f"but the net expects {list(shape)}")


def match_weights(graph: Graph, layers: list[LayerBlobs], source: str = "the weights",
                  strict: bool = True) -> WeightsReport:
    """Pair each graph layer that has learnable blobs with the file's layer of the same name.

    ``strict``: a net layer missing from the file is an error (inference); otherwise it is listed
    in ``missing`` and keeps its initial values (fine-tuning, as Caffe's CopyTrainedLayersFrom).
    """
    # Caffe's CopyTrainedLayersFrom copies every file layer into the first net layer of its name,
    # so a name the file repeats ends with its last blobs, and a repeated net name gets none.
    by_name = {lb.name: lb for lb in layers}
    report = WeightsReport()
    used = set()
    for node in graph.nodes:
        if not node.params:
            continue
        lb = None if node.caffe_name else by_name.get(node.name)
        if lb is None:
            if strict:
                raise LayerError(node.name, f"has {len(node.params)} learnable blob(s) but {source} "
                                 "has no layer of that name", node.type)
            report.missing.append(node.name)
            continue
        used.add(node.name)
        if len(lb.blobs) != len(node.params):
            raise LayerError(node.name, f"{source} has {len(lb.blobs)} blob(s) for this layer, the net "
                             f"expects {len(node.params)} (shapes {[list(p.shape) for p in node.params]})",
                             node.type)
        report.blobs[node.name] = [
            _fit(node.name, i, np.asarray(a, dtype=np.float32), tuple(p.shape), source)
            for i, (a, p) in enumerate(zip(lb.blobs, node.params))
        ]
        report.matched += 1
    extra = [lb.name for lb in layers if lb.name not in used]
    if extra:
        report.warnings.append(f"{source}: {len(extra)} layer(s) not in the net, ignored: " + ", ".join(extra))
    if report.missing:
        report.warnings.append(f"{source}: no weights for layer(s) " + ", ".join(report.missing)
                               + "; they keep their initial values")
    return report


def check_weights(graph: Graph, path: str | Path, strict: bool = True) -> WeightsReport:
    """Read a .caffemodel and check it against the graph."""
    return match_weights(graph, read_caffemodel(path), source=str(path), strict=strict)


def layer_blobs(graph: Graph, blobs: dict[str, list[np.ndarray]]) -> list[LayerBlobs]:
    """Blobs per layer in net order, as write_caffemodel takes them."""
    types = {n.name: n.type for n in graph.nodes}
    missing = [name for name in blobs if name not in types]
    if missing:
        raise ConvnetError(f"blobs given for layers not in the net: {', '.join(missing)}")
    return [LayerBlobs(n.name, n.type, list(blobs[n.name])) for n in graph.nodes if n.name in blobs]
