"""The variants the engines bench (``engines_bench.py``) times for one net at one batch size: eager
PyTorch, torch.compile, ONNX Runtime and OpenVINO as convnet runs them, and each engine's default and
tuned session written against its own API. The sessions that take any batch size are built once per
net (``shared_sessions``) and bound to each batch's input (``row_variants``)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.run import Timeout, log, time_limit

COMPILE_FROM_BATCH = 2  # torch.compile is measured at batches from this one on
EAGER, COMPILED = "eager PyTorch", "torch.compile"
ORT, OV = "ONNX Runtime (convnet's session)", "OpenVINO (convnet's session)"
STREAMS = "OpenVINO (convnet's session, a stream per core)"
SPLIT = "OpenVINO trunk + ONNX Runtime InnerProducts (convnet's)"
ENGINE_OF = {EAGER: "torch", COMPILED: "torch.compile", ORT: "onnxruntime", OV: "openvino",
             STREAMS: "openvino-streams", SPLIT: "openvino+onnxruntime"}
DEFAULTS = ("ONNX Runtime (default session)", "OpenVINO (default compile_model)")


def _ort_session(model: bytes, tuned: bool):
    from bench.run import _session

    return _session(model, tuned=tuned)


def shared_sessions(model: bytes, notes: dict) -> dict[str, Any]:
    """The sessions that take any batch size, built once per net: name -> session with
    ``run(outputs, feeds)``."""
    from convnet_io.runtimes.onnxruntime_session import make_session
    from convnet_io.runtimes.openvino_session import OpenVinoSession, openvino_available

    s: dict[str, Any] = {}
    built: dict[str, float] = {}

    def add(name: str, make: Callable[[], Any]) -> None:
        t0 = time.perf_counter()
        try:
            session = make()
        except Exception as e:  # noqa: BLE001  (a session that cannot be built is reported, not fatal)
            notes[name] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
            return
        if session is not None:
            s[name] = session
            built[name] = time.perf_counter() - t0

    add(ORT, lambda: make_session(model, "cpu"))
    add("ONNX Runtime (default session)", lambda: _ort_session(model, tuned=False))
    add("ONNX Runtime (tuned session)", lambda: _ort_session(model, tuned=True))
    if openvino_available():
        from convnet_io.runtimes.openvino_session import shared_core
        from convnet_io.runtimes.split_session import SplitSession

        core = shared_core()
        add(OV, lambda: OpenVinoSession(model))
        add("OpenVINO (default compile_model)", lambda: _OvDefault(core, model))

        def split():
            session = SplitSession(model)
            return session if session.head is not None else None
        add(SPLIT, split)
    else:
        notes["OpenVINO"] = "not installed (pip install 'convnet[openvino]')"
    log("    sessions built: " + ", ".join(f"{k} {v:.1f} s" for k, v in built.items()))
    return s


class _OvDefault:
    """OpenVINO as its getting-started page runs it: ``core.compile_model`` with no configuration."""

    def __init__(self, core, model: bytes):
        self.compiled = core.compile_model(core.read_model(model), "CPU")
        self.request = self.compiled.create_infer_request()

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        result = self.request.infer(feeds)
        return [result[self.compiled.output(o)] for o in outputs]


class _OvTuned:
    """OpenVINO used as its documentation tunes it, written against its own API: at batch 1 the
    LATENCY hint on every core; above, the THROUGHPUT hint with one stream per core, the batch cut
    into one slice per stream in an AsyncInferQueue. Built per batch size (the mode depends on it)."""

    def __init__(self, model: bytes, batch: int):
        import openvino as ov

        from convnet_io.runtimes.openvino_session import shared_core

        core = shared_core()
        self.n = n = os.cpu_count() or 1
        self.queue = None
        if batch == 1 or n == 1:
            self.compiled = core.compile_model(core.read_model(model), "CPU",
                                               {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": n})
            self.request = self.compiled.create_infer_request()
            return
        self.compiled = core.compile_model(core.read_model(model), "CPU",
                                           {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": n})
        self.queue = ov.AsyncInferQueue(self.compiled, n)
        self.parts: dict[int, np.ndarray] = {}
        self.out = None
        self.queue.set_callback(lambda r, i: self.parts.__setitem__(i, r.get_tensor(self.out).data.copy()))

    def run(self, outputs: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        (name, x), = feeds.items()
        if self.queue is None:
            return [self.request.infer(feeds)[self.compiled.output(outputs[0])]]
        self.out = self.compiled.output(outputs[0])
        slices = np.array_split(x, self.n)
        for i, part in enumerate(slices):
            self.queue.start_async({name: part}, i)
        self.queue.wait_all()
        return [np.concatenate([self.parts[i] for i in range(len(slices))])]


def _bound(session, out: str, feeds: dict[str, np.ndarray]) -> Callable[[], Any]:
    return lambda: session.run([out], feeds)[0]


def row_variants(net, x: np.ndarray, out: str, model: bytes, sessions: dict[str, Any], compile_timeout: int,
                 notes: dict) -> tuple[dict[str, Callable[[], Any]], Any]:
    """Every variant at this batch size: the shared sessions bound to ``x``, plus what is built per
    batch (torch.compile, OpenVINO's throughput-mode and tuned sessions). Returns them and the
    compiled graph (None where not compiled)."""
    import torch

    from convnet_io.runtimes.compiled import compile_fetch, run_compiled
    from convnet_io.runtimes.openvino_session import OpenVinoSession, openvino_available

    batch = x.shape[0]
    feeds = {"data": x}
    v: dict[str, Callable[[], Any]] = {EAGER: lambda: net.run_values(feeds, [out])[out]}
    compiled = None
    if batch >= COMPILE_FROM_BATCH:
        xt = torch.from_numpy(x)
        t0 = time.perf_counter()
        try:
            torch._dynamo.reset()
            compiled = compile_fetch(net.module, [out])
            with time_limit(compile_timeout):
                run_compiled(compiled, {"data": xt})
            v[COMPILED] = lambda: run_compiled(compiled, {"data": xt})[out]
            notes[COMPILED] = f"compiled once for this shape in {time.perf_counter() - t0:.1f} s"
        except (Timeout, Exception) as e:  # noqa: BLE001  (reported, not fatal)
            compiled = None
            notes[COMPILED] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    else:
        notes[COMPILED] = (f"not measured below batch {COMPILE_FROM_BATCH}: 1.4-2.2x slower than the fastest "
                           "engine at batch 1 in every recorded run, and its compile costs tens of seconds "
                           "per net; the table never names it here")
    for name in (ORT, "ONNX Runtime (default session)", "ONNX Runtime (tuned session)", OV,
                 "OpenVINO (default compile_model)", SPLIT):
        if name in sessions:
            v[name] = _bound(sessions[name], out, feeds)
    if openvino_available():
        t0 = time.perf_counter()
        if batch > 1:
            streams = OpenVinoSession(model, streams=os.cpu_count())
            v[STREAMS] = lambda: streams.run([out], feeds)[0]
        tuned = _OvTuned(model, batch)
        v["OpenVINO (tuned)"] = lambda: tuned.run([out], feeds)[0]
        log(f"    OpenVINO sessions for batch {batch} built in {time.perf_counter() - t0:.1f} s")
    return v, compiled
