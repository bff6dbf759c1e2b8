"""``convnet draw``: a net as a graphviz picture, drawn the way Caffe's ``python/draw_net.py`` draws
it (layers as coloured records, blobs as grey octagons, in-place layers green), with each top's
shape on its edge where convnet can infer it.

The DOT text is written here; graphviz's ``dot`` program renders it (``.svg``, ``.png``, ``.pdf``;
``.dot`` writes the text itself). Graphviz is a system package: ``apt-get install graphviz``,
``brew install graphviz``, ``conda install graphviz``."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

from convnet_io.errors import ConvnetError

RANKDIRS = ("LR", "RL", "TB", "BT")
FORMATS = ("svg", "png", "pdf", "dot", "jpg", "ps")

LAYER_STYLE = {"shape": "record", "style": "filled"}
NEURON_COLOR = "#90EE90"
BLOB_STYLE = {"shape": "octagon", "fillcolor": "#E0E0E0", "style": "filled"}


def layer_color(layer_type: str) -> str:
    """Caffe draw.py's colours: convolutions red, pooling orange, inner products purple."""
    if layer_type in ("Convolution", "Deconvolution"):
        return "#FF5050"
    if layer_type == "Pooling":
        return "#FF9900"
    if layer_type == "InnerProduct":
        return "#CC33FF"
    return "#6495ED"


def _lr_mults(layer: Any) -> tuple[float, float]:
    params = list(layer.param)
    if len(params) > 2:
        raise ConvnetError(f"layer '{layer.name}': cannot read the learning rate multipliers")
    mults = [p.lr_mult if p.HasField("lr_mult") else 1.0 for p in params] + [1.0] * (2 - len(params))
    return mults[0], mults[1]


def layer_label(layer: Any, rankdir: str, display_lrm: bool = False) -> str:
    """``name``, ``(type)``, and kernel/stride/pad for spatial layers, as Caffe's get_layer_label."""
    from convnet_io.caffe.proto import caffe_pb2

    sep = " " if rankdir in ("TB", "BT") else r"\n"
    parts = [layer.name]
    if layer.type == "Pooling":
        method = caffe_pb2.PoolingParameter.PoolMethod.Name(layer.pooling_param.pool)
        parts.append(f"({layer.type} {method})")
    else:
        parts.append(f"({layer.type})")
    if layer.type in ("Convolution", "Deconvolution", "Pooling"):
        if layer.type == "Pooling":
            p = layer.pooling_param
            kernel, stride, pad = p.kernel_size, p.stride, p.pad
        else:
            p = layer.convolution_param
            kernel = p.kernel_size[0] if len(p.kernel_size) else 1
            stride = p.stride[0] if len(p.stride) else 1
            pad = p.pad[0] if len(p.pad) else 0
        parts.append(sep.join([f"kernel size: {kernel}", f"stride: {stride}", f"pad: {pad}"]))
    if display_lrm and layer.type in ("Convolution", "Deconvolution", "InnerProduct"):
        lrm0, lrm1 = _lr_mults(layer)
        if lrm0 or lrm1:
            parts.append(f"lr mult: {lrm0:.1f}, {lrm1:.1f}")
    return sep.join(parts)


def edge_label(layer: Any) -> str:
    """Caffe's edge label: the batch of a Data layer, ``num_output`` of convolutions and inner products."""
    if layer.type == "Data":
        return f"Batch {layer.data_param.batch_size}"
    if layer.type in ("Convolution", "Deconvolution"):
        return str(layer.convolution_param.num_output)
    if layer.type == "InnerProduct":
        return str(layer.inner_product_param.num_output)
    return ""


def _quote(text: str) -> str:
    return '"' + text.replace('"', r'\"') + '"'


def _attrs(attrs: dict[str, str]) -> str:
    return "[" + ", ".join(f"{k}={_quote(v) if k != 'label' else v}" for k, v in attrs.items()) + "]"


def blob_shapes(net: Any, phase: str | None, source_path: str = "") -> dict[str, tuple[int, ...]]:
    """Each blob's shape as convnet infers it (both phases when ``phase`` is None; empty where
    the net does not build, e.g. data sources that are not on this machine and say no size)."""
    from convnet_io.caffe.builder import build_graph

    shapes: dict[str, tuple[int, ...]] = {}
    for ph in ([phase] if phase else ["TRAIN", "TEST"]):
        try:
            graph = build_graph(net, phase=ph, source_path=source_path, notices=[])
        except Exception:  # noqa: BLE001, S112 - shapes are a nicety; the drawing needs none
            continue
        for value, shape in graph.shapes.items():
            shapes.setdefault(graph.blob_of[value], tuple(shape))
    return shapes


def net_to_dot(net: Any, rankdir: str = "LR", label_edges: bool = True, phase: str | None = None,
               display_lrm: bool = False, shapes: dict[str, tuple[int, ...]] | None = None) -> str:
    """DOT text for a NetParameter: the layers of ``phase`` (all layers when None)."""
    from convnet_io.caffe.netstate import filter_layers, state_for

    if rankdir not in RANKDIRS:
        raise ConvnetError(f"rankdir must be one of {', '.join(RANKDIRS)}, not {rankdir!r}")
    layers = list(net.layer)
    if phase is not None:
        layers = filter_layers(net, state_for(net, phase, None, ()))
    nodes: dict[str, dict[str, str]] = {}
    edges: list[tuple[str, str, str]] = []
    for layer in layers:
        node = f"{layer.name}_{layer.type}"
        in_place = len(layer.bottom) == 1 and len(layer.top) == 1 and layer.bottom[0] == layer.top[0]
        nodes[node] = {**LAYER_STYLE, "fillcolor": NEURON_COLOR if in_place else layer_color(layer.type),
                       "label": _quote(layer_label(layer, rankdir, display_lrm))}
        for bottom in layer.bottom:
            nodes.setdefault(bottom + "_blob", {**BLOB_STYLE, "label": _quote(bottom)})
            edges.append((bottom + "_blob", node, ""))
        for top in layer.top:
            nodes.setdefault(top + "_blob", {**BLOB_STYLE, "label": _quote(top)})
            label = ""
            if label_edges:
                label = edge_label(layer)
                if shapes and top in shapes and not in_place:
                    label = "x".join(str(d) for d in shapes[top])
            edges.append((node, top + "_blob", label))
    lines = [f"digraph {_quote(net.name or 'Net')} {{", f"  rankdir={rankdir};"]
    for name, attrs in nodes.items():
        lines.append(f"  {_quote(name)} {_attrs(attrs)};")
    for src, dst, label in edges:
        lines.append(f"  {_quote(src)} -> {_quote(dst)} [label={_quote(label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_program() -> str:
    """The path of graphviz's ``dot``, or a ConvnetError saying how to install it."""
    path = shutil.which("dot")
    if path is None:
        raise ConvnetError("graphviz's 'dot' program is not installed (apt-get install graphviz, "
                           "brew install graphviz or conda install graphviz); "
                           "write a .dot file to render it elsewhere")
    return path


def render(dot_text: str, fmt: str) -> bytes:
    """DOT text rendered by graphviz to ``fmt`` (``dot`` gives the text back)."""
    if fmt == "dot":
        return dot_text.encode()
    if fmt not in FORMATS:
        raise ConvnetError(f"cannot draw to .{fmt}: use one of {', '.join('.' + f for f in FORMATS)}")
    result = subprocess.run([dot_program(), f"-T{fmt}"], input=dot_text.encode(), capture_output=True, check=False)
    if result.returncode != 0:
        raise ConvnetError(f"graphviz failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def draw_file(net_path: str | Path, out: str | Path, rankdir: str = "LR", phase: str | None = None,
              display_lrm: bool = False, shapes: bool = True) -> Path:
    """``convnet draw NET OUT``: the picture's format is OUT's suffix."""
    from convnet_io.atomic import write_bytes_atomic
    from convnet_io.caffe.prototxt import read_net

    out = Path(out)
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise ConvnetError(f"{out}: cannot tell the picture format; name it .svg, .png, .pdf or .dot")
    net, _ = read_net(net_path)
    phase = phase.upper() if phase else None
    text = net_to_dot(net, rankdir, True, phase, display_lrm,
                      blob_shapes(net, phase, str(net_path)) if shapes else None)
    write_bytes_atomic(out, render(text, fmt))
    return out
