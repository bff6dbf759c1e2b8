"""Where the files of a Caffe2 NetDef pair are: a folder holding ``predict_net.pb[txt]`` and
``init_net.pb[txt]`` (the model zoo's layout, with ``value_info.json``), a predict net named like
one, or a ``Caffe2Net`` naming both. Cheap to import: the loader asks here first."""
from __future__ import annotations

from pathlib import Path

from convnet_io.errors import ConvnetError

PREDICT_NAMES = ("predict_net.pb", "predict_net.pbtxt")
INIT_NAMES = ("init_net.pb", "init_net.pbtxt")
VALUE_INFO = "value_info.json"


class Caffe2Net(str):
    """A predict net path that also carries its init net (and value_info.json) paths, so that a
    NetDef pair travels wherever a net path does."""

    init: str | None
    value_info: str | None
    input_shapes: dict | None  # as --input-shape gives them, for a net without value_info.json

    def __new__(cls, predict: str | Path, init: str | Path | None = None, value_info: str | Path | None = None,
                input_shapes: dict | None = None):
        obj = super().__new__(cls, str(predict))
        obj.init = str(init) if init is not None else None
        obj.value_info = str(value_info) if value_info is not None else None
        obj.input_shapes = input_shapes
        return obj


# ------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------


def _is_netdef_name(p: Path) -> bool:
    return "predict_net" in p.name or "init_net" in p.name


def is_netdef(path: str | Path) -> bool:
    """A Caffe2Net, a folder holding predict_net.pb[txt], a file named like one, or a .pbtxt
    holding ``op {`` blocks (a text NetDef) rather than ``layer {`` ones."""
    if isinstance(path, Caffe2Net):
        return True
    p = Path(path)
    if p.is_dir():
        return any((p / n).exists() for n in PREDICT_NAMES)
    if p.suffix in (".pb", ".pbtxt") and _is_netdef_name(p):
        return True
    if p.suffix == ".pbtxt" and p.is_file():
        head = p.read_text(encoding="utf-8", errors="replace")[:65536]
        return "op {" in head and "layer {" not in head and "layers {" not in head
    return False


def resolve(path: str | Path) -> Caffe2Net:
    """The predict net, init net and value_info.json of a folder, a predict net path or a Caffe2Net."""
    p = Path(path)
    if isinstance(path, Caffe2Net) and path.init is not None:
        vi = path.value_info or (p.parent / VALUE_INFO if (p.parent / VALUE_INFO).exists() else None)
        return Caffe2Net(path, path.init, vi, path.input_shapes)
    if p.is_dir():
        predict = next((p / n for n in PREDICT_NAMES if (p / n).exists()), None)
        if predict is None:
            raise ConvnetError(f"{p}: no {' or '.join(PREDICT_NAMES)} in this folder")
        folder = p
    else:
        predict, folder = p, p.parent
    init = None
    if "predict_net" in predict.name:
        for suffix in (".pb", ".pbtxt"):
            cand = predict.with_name(predict.name.replace("predict_net", "init_net")).with_suffix(suffix)
            if cand.exists():
                init = cand
                break
    if init is None:
        init = next((folder / n for n in INIT_NAMES if (folder / n).exists()), None)
    vi = getattr(path, "value_info", None) or (folder / VALUE_INFO if (folder / VALUE_INFO).exists() else None)
    return Caffe2Net(predict, init, vi, getattr(path, "input_shapes", None))
