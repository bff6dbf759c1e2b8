"""What ``backend="auto"`` runs a net's inference on: the engine the recorded bench measured fastest
for that net, batch size and device.

``make bench`` writes the table (``engine_table.json`` beside this module, or the file named by
``$CONVNET_ENGINE_TABLE``)::

    {"machine": "...", "recorded": "...",
     "cpu": {"AlexNet": {"1": "onnxruntime", "32": "torch.compile"}, "*": {"1": "onnxruntime"}}}

Nets are looked up by their ``name:`` (``*`` for any other net), batch sizes by the largest
recorded batch not above the one asked for (the smallest recorded one below that). An engine that
is not installed, a missing or unreadable table, or a device without an entry give ONNX Runtime:
the fastest ready-made engine at small batch in every recorded run so far.

Engines are the backends' names, plus ``openvino-streams``: OpenVINO in throughput mode, one
stream per core, the batch split between the streams (``OpenVinoSession(streams=...)``), and
``openvino+onnxruntime``: OpenVINO for the convolutional trunk, ONNX Runtime for the InnerProduct
head (``split_session.py``). A table naming either on a machine without OpenVINO, like one naming
``openvino``, gives ONNX Runtime.
"""
from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

# Engines that cost seconds to set up (torch.compile's compile; the split engine's second session,
# about 1.7 s of CPU for AlexNet here) run from this call with a batch size on, their fallback for
# the calls before: a one-shot CLI call never pays the set-up, a loop over batches pays it once.
COMPILE_AFTER_CALLS = 3
SETUP_FALLBACK = {"torch.compile": "onnxruntime", "openvino+onnxruntime": "openvino"}
ENGINES = ("onnxruntime", "openvino", "openvino-streams", "openvino+onnxruntime", "torch.compile", "torch")
DEFAULT_ENGINE = "onnxruntime"
TABLE = Path(__file__).with_name("engine_table.json")


def table_path() -> Path:
    return Path(os.environ.get("CONVNET_ENGINE_TABLE", TABLE))


@lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_table() -> dict:
    p = table_path()
    try:
        mtime = p.stat().st_mtime
    except OSError:
        return {}
    return _read(str(p), mtime)


def _installed(engine: str) -> bool:
    if engine.startswith("openvino"):
        from convnet_io.runtimes.openvino_session import openvino_available

        return openvino_available()
    return engine in ENGINES


def choose_engine(net_name: str, batch: int, device: str = "cpu", table: dict | None = None) -> str:
    """The recorded fastest engine for ``net_name`` at ``batch`` on ``device`` (cpu or cuda)."""
    table = load_table() if table is None else table
    per_net = table.get(device) if isinstance(table.get(device), dict) else {}
    rows = per_net.get(net_name) or per_net.get("*") or {}
    try:
        batches = sorted((int(b), e) for b, e in rows.items())
    except (TypeError, ValueError):
        return DEFAULT_ENGINE
    if not batches:
        return DEFAULT_ENGINE
    below = [e for b, e in batches if b <= batch]
    engine = below[-1] if below else batches[0][1]
    return engine if engine in ENGINES and _installed(engine) else DEFAULT_ENGINE


def write_table(path: Path, rows: dict[str, dict[str, dict[int, str]]], machine: str, recorded: str) -> None:
    """The table ``choose_engine`` reads: ``rows[device][net][batch] = engine``."""
    data = {"machine": machine, "recorded": recorded,
            **{dev: {net: {str(b): e for b, e in sorted(per.items())} for net, per in nets.items()}
               for dev, nets in rows.items()}}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)
