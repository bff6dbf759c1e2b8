"""Caffe2 NetDef pairs for the commands: ``convnet export NET --caffe2 OUT_DIR`` and the weights of
a pair as a .caffemodel (``convnet train --caffe2 ... --init ...`` fine-tunes from them)."""
from __future__ import annotations

from pathlib import Path

from convnet_io.graph import Shape


def export_caffe2(net: str, out_dir: str | Path, weights: str | None = None,
                  input_shapes: dict[str, Shape] | Shape | None = None) -> dict:
    """Write NET with its weights (a .caffemodel, a NetDef's init net, or the seeded fillers) as
    predict_net.pb + init_net.pb + value_info.json in ``out_dir``."""
    from convnet_io.api.loading import load_caffe2, load_graph
    from convnet_io.caffe2.netdef_write import write_netdef_pair

    notices: list[str] = []
    caffe2 = load_caffe2(net, weights, input_shapes)
    if caffe2:
        graph, blobs = caffe2
    else:
        graph = load_graph(net, input_shapes=input_shapes)
        if weights:
            from convnet_io.caffe.weights import check_weights

            report = check_weights(graph, weights)
            blobs, notices = report.blobs, list(report.warnings)
        else:
            from convnet_io.graph.initialize import initial_blobs

            blobs = initial_blobs(graph, 0)
            notices.append("no --weights: the init net holds the seeded fillers' values")
    files = write_netdef_pair(graph, blobs, out_dir)
    return {"path": str(out_dir), "files": files, "notices": [*graph.notices, *notices]}


def netdef_as_caffemodel(net: str, dest: str | Path) -> str:
    """The weights of a NetDef pair written as a V2 .caffemodel (layers named as convnet names the
    translated layers, which are the prototxt twin's names for nets convnet wrote)."""
    from convnet_io.api.loading import load_caffe2
    from convnet_io.caffe.caffemodel import write_caffemodel
    from convnet_io.caffe.weights import layer_blobs

    graph, blobs = load_caffe2(net)
    write_caffemodel(dest, layer_blobs(graph, blobs), net_name=graph.name)
    return str(dest)
