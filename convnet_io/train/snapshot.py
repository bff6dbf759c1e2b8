"""Caffe snapshots: ``<prefix>_iter_<N>.caffemodel`` and ``.solverstate``, written atomically."""
from __future__ import annotations

from pathlib import Path

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError
from convnet_io.limits import memory_budget, read_bytes_limited


def snapshot_paths(prefix: str, iteration: int) -> tuple[Path, Path]:
    base = f"{prefix}_iter_{iteration}"
    return Path(base + ".caffemodel"), Path(base + ".solverstate")


def read_solverstate(path: str | Path) -> caffe_pb2.SolverState:
    p = Path(path)
    try:
        data = read_bytes_limited(p, memory_budget(), "solver state")
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read the solver state: {e.strerror}") from None
    state = caffe_pb2.SolverState()
    try:
        state.ParseFromString(data)
    except Exception as e:  # noqa: BLE001  (protobuf raises DecodeError and friends)
        raise ConvnetError(f"{path}: not a Caffe .solverstate: {e}") from None
    return state


def learned_net_path(state: caffe_pb2.SolverState, state_path: str | Path) -> Path:
    """The caffemodel a solver state points at (as written, or beside the state file)."""
    learned = Path(state.learned_net)
    if learned.exists():
        return learned
    beside = Path(state_path).resolve().parent / learned.name
    if beside.exists():
        return beside
    raise ConvnetError(f"{state_path}: its weights '{state.learned_net}' are not found "
                       f"(looked beside the state file too)")
