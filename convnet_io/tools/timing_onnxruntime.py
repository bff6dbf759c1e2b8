"""``convnet time --backend onnxruntime``: per-layer times from ONNX Runtime's profiler, its nodes
matched back to the Caffe layers they came from."""
from __future__ import annotations

import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph
from convnet_io.tools.timing import LayerTime, TimingReport, _batch_of, timing_feeds

# -- ONNX Runtime --------------------------------------------------------------------------------

def onnx_node_layers(graph: Graph, blobs: dict[str, list[np.ndarray]], opset: int | None = None) -> dict[str, str]:
    """ONNX node name -> Caffe layer name, for the model ``export_onnx(graph, blobs)`` writes: the
    export is replayed layer by layer and the nodes each layer adds are recorded."""
    from convnet_io.graph import inference_view
    from convnet_io.onnx_export.context import ExportContext
    from convnet_io.onnx_export.exporter import DEFAULT_OPSET
    from convnet_io.onnx_export.registry import export_node

    view = inference_view(graph)
    ctx = ExportContext(view, blobs, opset or DEFAULT_OPSET)
    out: dict[str, str] = {}
    for node in view.nodes:
        if node.is_source:
            continue
        before = len(ctx.nodes)
        export_node(ctx, node)
        for n in ctx.nodes[before:]:
            out[n.name] = node.name
    return out


_ORT_PREFIXES = ("fused ",)
_ORT_SUFFIXES = ("_nchwc", "_kernel_time", "_fence_before", "_fence_after")


class _LayerMatcher:
    """Maps the node names in an ORT profile back to Caffe layers (see the module docstring)."""

    def __init__(self, graph: Graph, onnx_map: dict[str, str]):
        self.graph = graph
        self.onnx_map = onnx_map
        self.layers = [n.name for n in graph.nodes if not n.is_source]
        # value id -> the layer that first wrote its blob (a fused Conv+ReLU is named after the
        # ReLU's output, conv1:1; the work is mostly conv1's)
        first_writer: dict[str, str] = {}
        self.value_layer: dict[str, str] = {}
        for n in graph.nodes:
            if n.is_source:
                continue
            for t in n.tops:
                blob = graph.blob_of.get(t, t)
                first_writer.setdefault(blob, n.name)
                self.value_layer[t] = first_writer[blob]
        self.cache: dict[str, str | None] = {}

    def _prefix(self, name: str, candidates) -> str | None:
        best = None
        for c in candidates:
            if not name.startswith(c) or (best is not None and len(c) <= len(best)):
                continue
            if len(name) == len(c) or name[len(c)] in "_/:. ":
                best = c
        return best

    def __call__(self, name: str) -> str | None:
        if name in self.cache:
            return self.cache[name]
        result = None
        base = name
        for p in _ORT_PREFIXES:
            if base.startswith(p):
                base = base[len(p):]
        changed = True
        while changed:
            changed = False
            for s in _ORT_SUFFIXES:
                if base.endswith(s):
                    base, changed = base[: -len(s)], True
        for candidate in (name, base):
            if candidate in self.onnx_map:
                result = self.onnx_map[candidate]
                break
            if candidate in self.value_layer:
                result = self.value_layer[candidate]
                break
        if result is None:
            hit = self._prefix(base, self.onnx_map)
            if hit is not None:
                result = self.onnx_map[hit]
            else:
                hit = self._prefix(base, self.layers)
                result = hit
        self.cache[name] = result
        return result


def _profile_runs(events: list[dict]) -> list[list[dict]]:
    """Node events grouped by the ``model_run`` they fall in, in order."""
    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])
    nodes = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
    nodes.sort(key=lambda e: e["ts"])
    grouped: list[list[dict]] = [[] for _ in runs]
    for e in nodes:
        for i, r in enumerate(runs):
            if r["ts"] <= e["ts"] <= r["ts"] + r["dur"]:
                grouped[i].append(e)
                break
    return grouped


def time_onnxruntime(net, iterations: int = 50, warmup: int = 5, seed: int = 0, device: str = "auto",
                     threads: int | None = None, net_label: str = "") -> TimingReport:
    """Per-layer forward times of ``net`` exported to ONNX and run in ONNX Runtime (its profiler)."""
    import onnxruntime as ort

    from convnet_io.graph import inference_view
    from convnet_io.onnx_export import export_onnx
    from convnet_io.runtimes.onnxruntime_session import choose_providers

    if iterations < 1 or warmup < 0:
        raise ConvnetError("iterations must be at least 1 and warm-up at least 0")
    graph = net.graph
    blobs = net.blobs()
    model = export_onnx(graph, blobs)
    onnx_map = onnx_node_layers(graph, blobs)
    view = inference_view(graph)
    with tempfile.TemporaryDirectory(prefix="convnet-time-") as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = os.path.join(tmp, "ort")
        if threads:
            opts.intra_op_num_threads = threads
        session = ort.InferenceSession(model.SerializeToString(), sess_options=opts,
                                       providers=choose_providers(device))
        provider = session.get_providers()[0]
        names = [i.name for i in session.get_inputs()]
        feeds = {k: v for k, v in timing_feeds(graph, seed).items() if k in names}
        outputs = [o.name for o in session.get_outputs()]
        walls = []
        for it in range(warmup + iterations):
            t0 = time.perf_counter()
            session.run(outputs, feeds)
            if it >= warmup:
                walls.append(time.perf_counter() - t0)
        profile = Path(session.end_profiling())
        events = json.loads(profile.read_text())
    runs = _profile_runs(events)[warmup:]
    match = _LayerMatcher(view, onnx_map)
    order = [n for n in view.nodes if not n.is_source]
    rows = {n.name: LayerTime(n.name, n.type) for n in order}
    notes = []
    unmatched: set[str] = set()
    for run in runs:
        last = None
        pending = 0.0  # time of ORT-inserted nodes waiting for the next layer
        pending_names: list[str] = []
        for e in run:
            node = e["name"][: -len("_kernel_time")]
            layer = match(node)
            to_next = False
            if layer is None or layer not in rows:
                unmatched.add(node)
                to_next = node.startswith("ReorderInput")
                layer = None if to_next else last
            dur = e["dur"] / 1000.0 / len(runs)
            if layer is None:
                pending += dur
                pending_names.append(node)
                continue
            if pending_names:
                rows[layer].forward_ms += pending
                rows[layer].nodes.extend(n for n in pending_names if n not in rows[layer].nodes)
                pending, pending_names = 0.0, []
            rows[layer].forward_ms += dur
            if node not in rows[layer].nodes:
                rows[layer].nodes.append(node)
            last = layer
        if pending_names and last is not None:
            rows[last].forward_ms += pending
            rows[last].nodes.extend(n for n in pending_names if n not in rows[last].nodes)
    if unmatched:
        notes.append("ORT-inserted nodes counted for the layer they feed (ReorderInput) or follow (others): "
                     + ", ".join(sorted(unmatched)))
    fused = [r.name for r in rows.values() if not r.nodes]
    if fused:
        notes.append("no ORT node of their own (fused into another layer by ORT's optimizer): " + ", ".join(fused))
    if not runs or not any(runs):
        notes.append("the ORT profile held no node events")
    report = TimingReport(net_label or str(graph.source_path), "onnxruntime", provider, _batch_of(graph), iterations,
                          warmup, graph.phase, list(rows.values()), 1000.0 * statistics.fmean(walls), notes=notes)
    return report.finish()
