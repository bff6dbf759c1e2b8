"""Bench section "engines": which engine runs each net fastest, and what ``backend="auto"`` gets.

For AlexNet, GoogLeNet and ResNet-50 (deploy nets, seeded weights) at batch 1 and 32, float32, the
engines as convnet runs them — eager PyTorch, torch.compile (compiled once per shape), ONNX Runtime
(convnet's session) and OpenVINO (when installed) — next to each engine's *default* session
(a bare ``InferenceSession`` / ``core.compile_model``) and its tuned one. From the medians it writes
the table ``backend="auto"`` reads (convnet_io/runtimes/engine_table.json, see engine_table.py), then
measures ``net.forward`` with ``auto`` reading that table (timed in rounds interleaved with the
default and the fastest session again), and the output of every engine against the eager module and
against the same module in float64 (max |a-b| / max |b|). The seeded weights are calibrated
(``seeded_net``) so those outputs are not degenerate.

Run alone: ``python bench/engines_bench.py [--quick] [--no-table] [--nets GoogLeNet,ResNet-50]``.
"""
from __future__ import annotations

import gc
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.run import CpuMonitor, Timeout, interleaved, log, summary, time_limit

MODELS = ROOT.parent / "shared" / "caffe-models"
NETS = {
    "AlexNet": MODELS / "bvlc_alexnet" / "deploy.prototxt",
    "GoogLeNet": MODELS / "bvlc_googlenet" / "deploy.prototxt",
    "ResNet-50": ROOT / "bench" / "resnet50_deploy.prototxt",
}
BATCHES = (1, 32)
TOLERANCE = 1e-5  # max |a - b| / max |b| against the eager module
STREAMS = "OpenVINO (convnet's session, a stream per core)"
SPLIT = "OpenVINO trunk + ONNX Runtime InnerProducts (convnet's)"
ENGINE_OF = {"eager PyTorch": "torch", "torch.compile": "torch.compile", "ONNX Runtime (convnet's session)": "onnxruntime",
             "OpenVINO (convnet's session)": "openvino", STREAMS: "openvino-streams", SPLIT: "openvino+onnxruntime"}
DEFAULTS = ("ONNX Runtime (default session)", "OpenVINO (default compile_model)")


def seeded_net(path: Path, batch: int, backend: str):
    """The net with seeded weights whose activations mean something: BatchNorm statistics measured
    on a seeded batch (as ``convnet init`` does: He-scaled fillers alone leave them 0, which makes
    ResNet-50 overflow), then the classifier before the final Softmax scaled so its logits have unit
    spread (unscaled, the Softmax saturates to one-hot and every engine agrees to 1e-26 for free)."""
    import torch

    import convnet_io
    from convnet_io.tools.export import seeded_inputs
    from convnet_io.torch_model.calibrate import calibrate_batchnorm

    shape = (batch, *convnet_io.load_graph(path).shapes["data"][1:])
    net = convnet_io.load(path, input_shapes={"data": shape}, seed=1, backend=backend)
    feeds = {k: torch.from_numpy(v) for k, v in seeded_inputs(net.graph, batch, seed=1000 + batch).items()}
    calibrate_batchnorm(net.module, feeds)
    producer = {t: n for n in net.graph.nodes for t in n.tops}
    last = producer.get(net.graph.outputs[0])
    if last is not None and last.type == "Softmax" and producer.get(last.bottoms[0]) is not None:
        fc = producer[last.bottoms[0]]
        logits = net.run_values(feeds, [last.bottoms[0]])[last.bottoms[0]]
        spread = float(np.std(logits))
        if spread > 0 and np.isfinite(spread):
            with torch.no_grad():
                for blob in net.module.layer(fc.name).caffe_blobs():
                    blob.mul_(1.0 / spread)
    return net


def _variants(net, x: np.ndarray, out: str, compile_timeout: int, notes: dict,
              only: set[str] | None = None) -> dict[str, Callable[[], Any]]:
    """Every engine variant (``only``: those named, torch.compile left out unless named)."""
    v = _build(net, x, out, compile_timeout, notes, only)
    return {k: f for k, f in v.items() if only is None or k in only}


def _build(net, x: np.ndarray, out: str, compile_timeout: int, notes: dict,
           only: set[str] | None) -> dict[str, Callable[[], Any]]:
    import torch

    from bench.run import _session
    from convnet_io.onnx_export import export_onnx
    from convnet_io.runtimes.compiled import compile_fetch, run_compiled
    from convnet_io.runtimes.onnxruntime_session import make_session
    from convnet_io.runtimes.openvino_session import OpenVinoSession, openvino_available
    from convnet_io.runtimes.split_session import SplitSession

    v: dict[str, Callable[[], Any]] = {}
    v["eager PyTorch"] = lambda: net.run_values({"data": x}, [out])[out]
    xt = torch.from_numpy(x)
    try:
        if only is not None and "torch.compile" not in only:
            raise LookupError("not asked for")
        torch._dynamo.reset()
        compiled = compile_fetch(net.module, [out])
        with time_limit(compile_timeout):
            run_compiled(compiled, {"data": xt})
        v["torch.compile"] = lambda: run_compiled(compiled, {"data": xt})[out]
    except LookupError:
        pass
    except (Timeout, Exception) as e:  # noqa: BLE001  (reported, not fatal)
        notes["torch.compile"] = f"skipped: {type(e).__name__}: {str(e)[:160]}"
    model = export_onnx(net.graph, net.blobs()).SerializeToString()

    def want(k: str) -> bool:
        return only is None or k in only

    if want("ONNX Runtime (convnet's session)"):
        ort_convnet = make_session(model, "cpu")
        v["ONNX Runtime (convnet's session)"] = lambda: ort_convnet.run([out], {"data": x})[0]
    if want("ONNX Runtime (default session)"):
        ort_default = _session(model, tuned=False)
        v["ONNX Runtime (default session)"] = lambda: ort_default.run([out], {"data": x})[0]
    if want("ONNX Runtime (tuned session)"):
        ort_tuned = _session(model, tuned=True)
        v["ONNX Runtime (tuned session)"] = lambda: ort_tuned.run([out], {"data": x})[0]
    if openvino_available():
        import openvino as ov

        core = ov.Core()
        if want("OpenVINO (convnet's session)"):
            ov_convnet = OpenVinoSession(model)
            v["OpenVINO (convnet's session)"] = lambda: ov_convnet.run([out], {"data": x})[0]
        if want("OpenVINO (default compile_model)"):
            ov_default = core.compile_model(core.read_model(model), "CPU")
            req = ov_default.create_infer_request()
            v["OpenVINO (default compile_model)"] = lambda: req.infer({"data": x})[ov_default.output(out)]
        if x.shape[0] > 1 and want(STREAMS):
            ov_streams = OpenVinoSession(model, streams=os.cpu_count())
            v[STREAMS] = lambda: ov_streams.run([out], {"data": x})[0]
        if want(SPLIT):
            split = SplitSession(model)
            if split.head is not None:
                v[SPLIT] = lambda: split.run([out], {"data": x})[0]
        if want("OpenVINO (tuned)"):
            v["OpenVINO (tuned)"] = _openvino_tuned(core, model, x, out)
    else:
        notes["OpenVINO"] = "not installed (pip install 'convnet[openvino]')"
    return v


def _openvino_tuned(core, model: bytes, x: np.ndarray, out: str) -> Callable[[], Any]:
    """OpenVINO used as its documentation tunes it, written against its own API: at batch 1 the
    LATENCY hint on every core; above, the THROUGHPUT hint with one stream per core, the batch cut
    into one slice per stream in an AsyncInferQueue."""
    n = os.cpu_count() or 1
    if x.shape[0] == 1 or n == 1:
        compiled = core.compile_model(core.read_model(model), "CPU",
                                      {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": n})
        req = compiled.create_infer_request()
        return lambda: req.infer({"data": x})[compiled.output(out)]
    import openvino as ov

    compiled = core.compile_model(core.read_model(model), "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": n})
    queue = ov.AsyncInferQueue(compiled, n)
    parts: dict[int, np.ndarray] = {}
    queue.set_callback(lambda r, i: parts.__setitem__(i, r.get_tensor(compiled.output(out)).data.copy()))
    slices = np.array_split(x, n)

    def run() -> np.ndarray:
        for i, s in enumerate(slices):
            queue.start_async({"data": s}, i)
        queue.wait_all()
        return np.concatenate([parts[i] for i in range(n)])
    return run


def bench_net(name: str, path: Path, batch: int, quick: bool, compile_timeout: int) -> dict[str, Any]:
    from convnet_io.tools.export import seeded_inputs

    net = seeded_net(path, batch, "torch")
    out = net.graph.outputs[0]
    x = seeded_inputs(net.graph, batch, seed=batch)["data"]
    notes: dict[str, str] = {}
    log(f"[engines] {name}, batch {batch}: building")
    variants = _variants(net, x, out, compile_timeout, notes)
    ref = net.run_values({"data": x}, [out])[out]
    exact = _float64(net, x, out)
    errors = {k: _rel(np.asarray(fn()).reshape(ref.shape), ref) for k, fn in variants.items()}
    errors64 = {k: _rel(np.asarray(fn()).reshape(ref.shape), exact) for k, fn in variants.items()}
    EXACT[(name, batch)] = exact
    mon = CpuMonitor()
    rounds = (3 if quick else 10) if batch == 1 else (2 if quick else 4)
    times = interleaved(variants, rounds=rounds, warmup=1, label=f"{name} b{batch} ")
    res = {k: {**summary(t), "max_rel_err_vs_eager": errors[k], "max_rel_err_vs_float64": errors64[k]}
           for k, t in times.items()}
    for r in res.values():
        r["images_per_s"] = batch / r["median_s"]
    # auto must give the eager module's numbers: the fastest engine within TOLERANCE of eager, or
    # (where float32 rounding alone moves eager itself that far from the float64 result: deep nets)
    # no further than TOLERANCE beyond eager's own distance from the float64 result
    floor = errors64["eager PyTorch"]
    candidates = [k for k in res if k in ENGINE_OF and (res[k]["max_rel_err_vs_eager"] <= TOLERANCE
                                                        or res[k]["max_rel_err_vs_float64"] <= floor + TOLERANCE)]
    fastest = min(candidates, key=lambda k: res[k]["median_s"])  # eager itself always qualifies
    del variants
    gc.collect()
    return {"net": net.graph.name, "batch": batch, "results": res, "fastest_engine": ENGINE_OF[fastest],
            "notes": notes, "others_cores": mon.others(), "path": str(path), "output": out, "name": name,
            "float32_floor": errors64["eager PyTorch"]}


EXACT: dict[tuple[str, int], np.ndarray] = {}  # each row's float64 result, for the auto row


def _rel(got: np.ndarray, want: np.ndarray) -> float:
    """max |got - want| / max |want|: the error as a fraction of the output's scale."""
    return float(np.abs(np.asarray(got, dtype=np.float64) - want).max() / max(float(np.abs(want).max()), 1e-12))


def _float64(net, x: np.ndarray, out: str) -> np.ndarray:
    """The same module computed in float64: what float32 rounding costs eager PyTorch itself, the
    scale against which an engine's difference from eager is judged."""
    import copy

    import torch

    module = copy.deepcopy(net.module).double()
    with torch.no_grad():
        y = module.run({"data": torch.from_numpy(x).double()}, [out])[out].numpy()
    del module
    gc.collect()
    return y


def bench_auto(row: dict[str, Any], quick: bool) -> None:
    """net.forward with backend="auto" reading the table just written; adds the auto row and ratios."""
    from convnet_io.tools.export import seeded_inputs

    path, batch, out = Path(row["path"]), row["batch"], row["output"]
    net = seeded_net(path, batch, "auto")
    x = seeded_inputs(net.graph, batch, seed=batch)["data"]
    from convnet_io.runtimes.engine_table import COMPILE_AFTER_CALLS

    ref = net.run_values({"data": x}, [out])[out]
    # auto runs a costly-to-set-up engine from its COMPILE_AFTER_CALLS-th call: these calls build
    # (and for torch.compile compile) it, so the timed rounds and the error are the chosen engine's
    for _ in range(COMPILE_AFTER_CALLS):
        got = net.forward({"data": x}, blobs=[out])[out]
    res = row["results"]
    defaults = [k for k in DEFAULTS if k in res]
    best_default = min(defaults, key=lambda k: res[k]["median_s"])
    best_any = min(res, key=lambda k: res[k]["median_s"])
    # auto is timed in rounds interleaved with the two sessions it is judged against, rebuilt here,
    # so that load from other processes between the sections falls on all three alike
    notes: dict[str, str] = {}
    others = _variants(net, x, out, 300, notes, only={best_default, best_any})
    rounds = (3 if quick else 10) if batch == 1 else (2 if quick else 4)
    t = interleaved({"auto": lambda: net.forward({"data": x}, blobs=[out]), **others}, rounds=rounds, warmup=1,
                    label=f"{row['net']} b{batch} auto ")
    med = {k: summary(v)["median_s"] for k, v in t.items()}
    auto = {**summary(t["auto"]), "max_rel_err_vs_eager": _rel(got, ref)}
    exact = EXACT.get((row.get("name"), batch))
    auto["max_rel_err_vs_float64"] = _rel(got, exact) if exact is not None else float("nan")
    auto["images_per_s"] = batch / auto["median_s"]
    res["convnet auto (net.forward)"] = auto
    row["auto_vs_best_default"] = med.get(best_default, res[best_default]["median_s"]) / med["auto"]
    row["auto_vs_best_tuned"] = med.get(best_any, res[best_any]["median_s"]) / med["auto"]
    row["auto_round_medians_s"] = med
    row["best_default"], row["best_any"] = best_default, best_any
    row["auto_engine"] = net._engine_for({"data": x})


def run(quick: bool = False, compile_timeout: int = 300, write_table: bool = True,
        nets: list[str] | None = None) -> dict[str, Any]:
    from convnet_io.runtimes import engine_table

    rows = []
    for name, path in NETS.items():
        if nets and name not in nets:
            continue
        if not path.exists():
            log(f"[engines] {name}: {path} not found")
            continue
        for batch in BATCHES:
            rows.append(bench_net(name, path, batch, quick, compile_timeout))
    table: dict[str, dict[int, str]] = {}
    for r in rows:
        table.setdefault(r["net"], {})[r["batch"]] = r["fastest_engine"]
    import platform

    # the table auto reads ($CONVNET_ENGINE_TABLE when set: a trial run leaves the recorded one alone)
    target = engine_table.table_path() if write_table else Path(tempfile.mkdtemp()) / "engine_table.json"
    engine_table.write_table(target, {"cpu": table}, platform.node(), time.strftime("%Y-%m-%d %H:%M:%S %Z"))
    os.environ["CONVNET_ENGINE_TABLE"] = str(target)
    for r in rows:
        bench_auto(r, quick)
    targets = {}
    for r in rows:
        targets[f"{r['net']} batch {r['batch']}: auto at least 1.2x the fastest engine's default session"] = \
            r["auto_vs_best_default"] >= 1.2
        targets[f"{r['net']} batch {r['batch']}: auto at least as fast as the best tuned session (3 % spread)"] = \
            r["auto_vs_best_tuned"] >= 0.97
        auto = r["results"]["convnet auto (net.forward)"]
        targets[f"{r['net']} batch {r['batch']}: auto within 1e-5 of the eager module"] = \
            auto["max_rel_err_vs_eager"] <= TOLERANCE
    return {"rows": rows, "table": str(target), "targets": targets}


def markdown(res: dict[str, Any]) -> str:
    out = ["### f. Engines per net and batch; what `auto` picks", "",
           f"`auto` reads the table this section wrote ({Path(res['table']).name}): the engine measured fastest "
           "for the net and batch, as convnet runs it.", ""]
    for r in res["rows"]:
        out += [f"**{r['net']}, batch {r['batch']}** (others: {r['others_cores']:.2f} cores): fastest engine "
                f"**{r['fastest_engine']}**; auto ran {r.get('auto_engine')}: "
                f"{r.get('auto_vs_best_default', float('nan')):.2f}x the best default session ({r.get('best_default')}), "
                f"{r.get('auto_vs_best_tuned', float('nan')):.2f}x the best of all ({r.get('best_any')}).", "",
                "| engine | median / batch | images/s | max rel. err vs eager | vs float64 |", "|---|---:|---:|---:|---:|"]
        for k, v in r["results"].items():
            out.append(f"| {k} | {1000 * v['median_s']:.1f} ms | {v['images_per_s']:.1f} | "
                       f"{v['max_rel_err_vs_eager']:.1e} | {v.get('max_rel_err_vs_float64', float('nan')):.1e} |")
        out.append(f"\nfloat32's own error here (eager PyTorch vs the same module in float64): "
                   f"{r.get('float32_floor', float('nan')):.1e}.")
        if "auto_round_medians_s" in r:
            out.append("\nauto timed again in rounds with the sessions it is judged against: " + ", ".join(
                f"{k} {1000 * t:.1f} ms" for k, t in r["auto_round_medians_s"].items()))
        for k, n in r["notes"].items():
            out.append(f"\n*{k}*: {n}")
        out.append("")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import json

    chosen = sys.argv[sys.argv.index("--nets") + 1].split(",") if "--nets" in sys.argv else None
    report = run(quick="--quick" in sys.argv, write_table="--no-table" not in sys.argv, nets=chosen)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
