"""``caffe.draw``: ``get_pydot_graph``, ``draw_net``, ``draw_net_to_file`` for a NetParameter, drawn
by ``convnet_io.tools.draw`` (Caffe's styles) and rendered by graphviz's ``dot``."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from convnet_io.pycaffe.net import phase_name
from convnet_io.tools import draw as _draw


def _phase(phase: Any) -> str | None:
    return None if phase is None else phase_name(phase)


def get_pydot_graph(caffe_net: Any, rankdir: str, label_edges: bool = True, phase: Any = None,
                    display_lrm: bool = False) -> Any:
    """A pydot graph of the net (needs the ``pydot`` package)."""
    try:
        import pydot
    except ImportError:
        raise ImportError("caffe.draw.get_pydot_graph needs pydot: pip install pydot "
                          "(draw_net and draw_net_to_file need only graphviz)") from None
    text = _draw.net_to_dot(caffe_net, rankdir, label_edges, _phase(phase), display_lrm)
    return pydot.graph_from_dot_data(text)[0]


def draw_net(caffe_net: Any, rankdir: str, ext: str = "png", phase: Any = None,
             display_lrm: bool = False) -> bytes:
    """The picture as bytes in format ``ext``."""
    text = _draw.net_to_dot(caffe_net, rankdir, True, _phase(phase), display_lrm)
    return _draw.render(text, ext)


def draw_net_to_file(caffe_net: Any, filename: str, rankdir: str = "LR", phase: Any = None,
                     display_lrm: bool = False) -> None:
    """The picture written to ``filename``, its format taken from the suffix."""
    ext = Path(filename).suffix.lstrip(".") or "png"
    Path(filename).write_bytes(draw_net(caffe_net, rankdir, ext, phase, display_lrm))
