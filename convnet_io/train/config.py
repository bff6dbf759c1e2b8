"""Solver files: read SolverParameter text, apply command-line overrides, find the nets."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.prototxt import read_text
from convnet_io.errors import ConvnetError, ParseError


@dataclass
class TrainOptions:
    """What ``convnet train`` takes besides the solver file."""

    solver: str
    net: str | None = None  # overrides the solver's net / train_net
    max_iter: int | None = None
    base_lr: float | None = None
    batch_size: int | None = None
    test_interval: int | None = None
    test_iter: int | None = None
    snapshot_prefix: str | None = None
    snapshot_every: int | None = None
    device: str = "auto"
    weights: str | None = None  # fine-tune from a caffemodel (layers matched by name)
    resume: str | None = None  # a .solverstate to continue from
    # data layer source overrides: "LAYER", "TRAIN:LAYER"/"TEST:LAYER", or "TRAIN"/"TEST" for
    # every data layer of that phase -> path
    sources: dict[str, str] = field(default_factory=dict)
    mean_file: str | None = None
    workers: int = 2
    seed: int | None = None
    log_json: str | None = None
    skip_bad_data: bool = False
    pca_lighting: bool = False  # the AlexNet paper's colour augmentation (not Caffe's), TRAIN only
    progress: bool = False
    quiet: bool = False
    solver_type: str | None = None  # overrides the file's type (pycaffe's SGDSolver(...) and friends)


def read_solver(path: str | Path) -> caffe_pb2.SolverParameter:
    text = read_text(path)
    param = caffe_pb2.SolverParameter()
    try:
        text_format.Parse(text, param)
    except text_format.ParseError as e:
        raise ParseError(str(path), e.GetLine(), e.GetColumn(), str(e).split(" : ", 1)[-1]) from None
    return param


def apply_overrides(param: caffe_pb2.SolverParameter, opts: TrainOptions) -> None:
    if opts.max_iter is not None:
        param.max_iter = opts.max_iter
    if opts.base_lr is not None:
        param.base_lr = opts.base_lr
    if opts.test_interval is not None:
        param.test_interval = opts.test_interval
    if opts.test_iter is not None:
        del param.test_iter[:]
        param.test_iter.append(opts.test_iter)
    if opts.snapshot_prefix is not None:
        param.snapshot_prefix = opts.snapshot_prefix
    if opts.snapshot_every is not None:
        param.snapshot = opts.snapshot_every
    if opts.seed is not None:
        param.random_seed = opts.seed
    if opts.solver_type is not None:
        param.ClearField("solver_type")
        param.type = opts.solver_type
    if not param.HasField("max_iter"):
        raise ConvnetError(f"{opts.solver}: max_iter is not set (give --max-iter)")
    if not param.HasField("base_lr"):
        raise ConvnetError(f"{opts.solver}: base_lr is not set (give --base-lr)")


def resolve_path(name: str, solver_path: str | Path) -> Path:
    """Caffe resolves paths from the working directory (its repository root); also try the
    solver's folder and its parents, so zoo solver files work where they lie."""
    p = Path(name)
    if p.is_absolute() or p.exists():
        return p
    folder = Path(solver_path).resolve().parent
    for base in (folder, *folder.parents):
        if (base / p).exists():
            return base / p
        if (base / p.name).exists() and base == folder:
            return base / p.name
    return p


def net_parameters(param: caffe_pb2.SolverParameter, opts: TrainOptions) -> tuple[Any, Any, list[str]]:
    """(train NetParameter, test NetParameter or None, notes) — upgraded, overrides applied."""
    from convnet_io.caffe.prototxt import read_net

    notes: list[str] = []
    if opts.net:
        train, n = read_net(opts.net)
        notes += n
        test = None
    elif param.HasField("train_net_param") or param.HasField("net_param"):
        from convnet_io.caffe.upgrade import upgrade_net

        train = caffe_pb2.NetParameter()
        train.CopyFrom(param.train_net_param if param.HasField("train_net_param") else param.net_param)
        notes += upgrade_net(train)
        test = None
    else:
        name = param.train_net or param.net
        if not name:
            raise ConvnetError(f"{opts.solver}: the solver names no net (net, train_net) — give --net")
        train, n = read_net(resolve_path(name, opts.solver))
        notes += n
        test = None
        if len(param.test_net):
            test, n = read_net(resolve_path(param.test_net[0], opts.solver))
            notes += n
    for net in (train, test):
        if net is not None:
            _override_data_layers(net, opts)
    return train, test, notes


def _layer_phases(layer: Any) -> set[str]:
    phases = {caffe_pb2.Phase.Name(r.phase) for r in layer.include if r.HasField("phase")}
    return phases or {"TRAIN", "TEST"}


def _source_for(layer: Any, sources: dict[str, str]) -> str | None:
    for phase in sorted(_layer_phases(layer)):
        for key in (f"{phase}:{layer.name}", phase):
            if key in sources:
                return sources[key]
    return sources.get(layer.name)


def _override_data_layers(net: Any, opts: TrainOptions) -> None:
    known = {layer.name for layer in net.layer} | {"TRAIN", "TEST"}
    unknown = [k for k in opts.sources if k.split(":")[-1] not in known]
    if unknown:
        raise ConvnetError(f"--data names layer(s) not in the net: {', '.join(unknown)}")
    for layer in net.layer:
        params = [getattr(layer, f) for f in ("data_param", "image_data_param", "hdf5_data_param",
                                              "window_data_param", "memory_data_param")
                  if layer.HasField(f)]
        for p in params:
            if opts.batch_size is not None and hasattr(p, "batch_size"):
                p.batch_size = opts.batch_size
            source = _source_for(layer, opts.sources)
            if source is not None and hasattr(p, "source"):
                p.source = source
        if opts.mean_file is not None and layer.HasField("transform_param") and layer.transform_param.mean_file:
            layer.transform_param.mean_file = opts.mean_file
