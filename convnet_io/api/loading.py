"""Load any supported net file into a Graph: the single entry point parsers share."""
from __future__ import annotations

from pathlib import Path

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.prototxt import read_net, read_text
from convnet_io.caffe2.listing_text import is_caffe2_listing
from convnet_io.graph import Graph, Shape


def load_graph(path: str | Path, phase: str = "TEST", input_shapes: dict[str, Shape] | Shape | None = None,
               stages: tuple[str, ...] = (), level: int | None = None) -> Graph:
    """Parse a prototxt, a binary NetParameter, a Caffe2 op listing or a Caffe2 NetDef pair (a
    folder, a predict_net.pb[txt], a ``Caffe2Net``) into a Graph for ``phase``."""
    from convnet_io.caffe2.netdef_files import is_netdef

    if is_netdef(path):
        from convnet_io.caffe2.netdef import netdef_to_graph

        return netdef_to_graph(path, input_shapes=input_shapes)
    p = Path(path)
    text = None
    if p.suffix not in (".caffemodel", ".binaryproto", ".pb"):
        text = read_text(p)
        if is_caffe2_listing(text):
            from convnet_io.caffe2.listing import listing_to_graph

            return listing_to_graph(text, str(path), input_shapes=input_shapes)
    net, notes = read_net(p, compact=True, text=text)  # layers of only names as tuples: a third of the memory
    del text  # not held while the graph is built (50 MB for a 700k-layer net)
    return build_graph(net, phase=phase, input_shapes=input_shapes, stages=stages, level=level,
                       source_path=str(path), notices=notes)


def load_blobs(graph: Graph, weights: str | Path | None = None, seed: int = 0,
               strict: bool = True) -> tuple[dict, list[str]]:
    """The learnable blobs ``load`` gives the net, as NumPy arrays, without building the PyTorch
    module: the .caffemodel's (layers it lacks keep their fillers' values when not ``strict``), or
    the fillers' seeded values. Returns (layer -> arrays, warnings)."""
    from convnet_io.graph.initialize import initial_blobs

    if weights is None:
        return initial_blobs(graph, seed), []
    from convnet_io.caffe.weights import check_weights

    report = check_weights(graph, weights, strict=strict)
    blobs = {k: v for k, v in initial_blobs(graph, seed).items() if k in report.missing} if report.missing else {}
    blobs.update(report.blobs)
    return blobs, list(report.warnings)


def load_caffe2(net: str | Path, weights: str | Path | None = None,
                input_shapes: dict[str, Shape] | Shape | None = None, seed: int = 0) -> tuple[Graph, dict] | None:
    """A Caffe2 NetDef pair's graph and its init net's weights (layer -> arrays); None when NET is
    no NetDef, or when ``weights`` is a .caffemodel to load instead. ``weights`` may name the
    init net (``--init``)."""
    from convnet_io.caffe2.netdef_files import Caffe2Net, is_netdef

    if not is_netdef(net) or (weights is not None and str(weights).endswith(".caffemodel")):
        return None
    from convnet_io.caffe2.netdef import netdef_graph_and_blobs

    if weights is not None:
        net = Caffe2Net(net, weights, getattr(net, "value_info", None), getattr(net, "input_shapes", None))
    return netdef_graph_and_blobs(net, input_shapes, seed=seed)


def caffe2_net(predict: str | Path, init: str | Path | None = None,
               input_shapes: dict[str, Shape] | None = None) -> str:
    """A NET value naming a Caffe2 NetDef pair: ``predict`` (file or folder) with its init net, and
    input shapes for a net without value_info.json."""
    from convnet_io.caffe2.netdef_files import Caffe2Net, resolve

    pair = resolve(predict)
    return Caffe2Net(pair, init or pair.init, pair.value_info, input_shapes or getattr(predict, "input_shapes", None))


def is_caffe2_net(path: str | Path) -> bool:
    """Whether NET is a Caffe2 NetDef pair (which carries its weights)."""
    from convnet_io.caffe2.netdef_files import is_netdef

    return is_netdef(path)
