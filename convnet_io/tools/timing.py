"""Per-layer timing of a net, as ``caffe time``: the logic behind ``convnet time``.

Two backends:

* ``torch``: the steps of ``CaffeModule._steps`` are run one by one and each submodule call is timed
  with ``time.perf_counter`` (PyTorch on CPU is synchronous; on CUDA each call is followed by a
  synchronize). Without ``backward`` the pass runs under ``torch.no_grad`` as ``Net.forward`` does;
  with it the forward pass records the autograd graph, and each layer's backward is timed on its own:
  the layer is run again on (detached) copies of the inputs it saw in the net, and
  ``torch.autograd.backward`` of its tops with an all-ones upstream gradient is timed. That is the
  work Caffe's ``Layer::Backward`` does for the layer, including the gradients of its parameters.
  The backward of the whole net (from the loss tops, weighted by their loss weights, or from the
  sum of the net's outputs when it has no loss) is timed as well and reported as the wall figure.
* ``onnxruntime``: the net is exported with :func:`convnet_io.onnx_export.export_onnx` and run with
  ORT's profiler on (``SessionOptions.enable_profiling``), with the options ``make_session`` uses
  (``ORT_ENABLE_ALL``). Node times of the runs after warm-up are aggregated back to Caffe layers by
  node name: the names the exporter gives each layer's nodes are known exactly; nodes ORT rewrites
  (``fused fc6``, ``conv1:1_nchwc``: a Conv fused with its ReLU is named after the ReLU's output
  value) are matched by stripping ORT's prefix/suffix, by value id (the layer that first wrote the
  value's blob) and by name prefix; nodes ORT inserts (``ReorderInput``/``ReorderOutput`` layout
  changes) count for the layer they feed (``ReorderInput*``) or the layer run just before them.
  Layers ORT fused into another show 0 ms.

Times are milliseconds per iteration, averaged over ``iterations`` after ``warmup`` iterations;
``share`` is each layer's percentage of the sum over layers (forward + backward).

"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph

BACKENDS = ("torch", "onnxruntime")


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float = 0.0
    backward_ms: float | None = None
    share: float = 0.0
    nodes: list[str] = field(default_factory=list)  # ONNX Runtime nodes counted for the layer

    @property
    def total_ms(self) -> float:
        return self.forward_ms + (self.backward_ms or 0.0)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "forward_ms": self.forward_ms}
        if self.backward_ms is not None:
            out["backward_ms"] = self.backward_ms
        out["share"] = self.share
        if self.nodes:
            out["onnx_nodes"] = list(self.nodes)
        return out


@dataclass
class TimingReport:
    net: str
    backend: str
    device: str
    batch: int
    iterations: int
    warmup: int
    phase: str
    layers: list[LayerTime]
    wall_forward_ms: float
    wall_backward_ms: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def total_forward_ms(self) -> float:
        return sum(r.forward_ms for r in self.layers)

    @property
    def total_backward_ms(self) -> float | None:
        if self.wall_backward_ms is None:
            return None
        return sum(r.backward_ms or 0.0 for r in self.layers)

    def finish(self) -> "TimingReport":
        total = sum(r.total_ms for r in self.layers)
        for r in self.layers:
            r.share = 100.0 * r.total_ms / total if total > 0 else 0.0
        return self

    def to_json(self, sort: bool = False) -> dict[str, Any]:
        rows = sorted(self.layers, key=lambda r: -r.total_ms) if sort else self.layers
        out: dict[str, Any] = {
            "net": self.net, "backend": self.backend, "device": self.device, "batch": self.batch,
            "phase": self.phase, "iterations": self.iterations, "warmup": self.warmup,
            "layers": [r.to_json() for r in rows],
            "total_forward_ms": self.total_forward_ms,
            "wall_forward_ms": self.wall_forward_ms,
        }
        if self.wall_backward_ms is not None:
            out["total_backward_ms"] = self.total_backward_ms
            out["wall_backward_ms"] = self.wall_backward_ms
            out["total_ms"] = self.total_forward_ms + (self.total_backward_ms or 0.0)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# -- inputs --------------------------------------------------------------------------------------

def timing_feeds(graph: Graph, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs for every input the net reads: the data inputs as ``seeded_inputs`` makes them
    (N(0, 50^2) for image-like blobs, N(0, 1) otherwise), zeros for labels (inputs only losses and
    metrics read; 0 is a valid class)."""
    from convnet_io.tools.export import seeded_inputs

    data = seeded_inputs(graph, _batch_of(graph), seed)
    out: dict[str, np.ndarray] = {}
    for v in graph.read_inputs:
        shape = tuple(graph.shapes[v])
        if v in data and tuple(data[v].shape) == shape:
            out[v] = data[v]
        else:
            out[v] = np.zeros(shape, dtype=np.float32)
    return out


def _batch_of(graph: Graph) -> int:
    for v in graph.inputs:
        if graph.shapes[v]:
            return int(graph.shapes[v][0])
    return 1


# -- torch ---------------------------------------------------------------------------------------

def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _as_tuple(result):
    import torch

    return (result,) if isinstance(result, torch.Tensor) else tuple(result)


def time_torch(net, iterations: int = 50, warmup: int = 5, backward: bool = False, seed: int = 0,
               device: str = "cpu", net_label: str = "") -> TimingReport:
    """Per-layer forward (and backward) times of ``net`` (a :class:`convnet_io.api.Net`) in PyTorch."""
    import torch

    if iterations < 1 or warmup < 0:
        raise ConvnetError("iterations must be at least 1 and warm-up at least 0")
    graph = net.graph
    dev = torch.device(device)
    module = net.module.to(dev)
    feeds = {k: torch.from_numpy(v).to(dev) for k, v in timing_feeds(graph, seed).items()}
    steps = module._steps
    types = {module.module_names[n.name]: n.type for n in graph.nodes if not n.is_source}
    caffe_name = {v: k for k, v in module.module_names.items()}
    fwd = [0.0] * len(steps)
    walls: list[float] = []
    env: dict[str, Any] = {}
    grad_ctx = torch.enable_grad if backward else torch.no_grad
    torch.manual_seed(seed)
    for it in range(warmup + iterations):
        env = dict(feeds)
        with grad_ctx():
            start = time.perf_counter()
            for i, (name, bottoms, tops) in enumerate(steps):
                args = [env[b] for b in bottoms]
                _sync(dev)
                t0 = time.perf_counter()
                result = module._modules[name](*args)
                _sync(dev)
                dt = time.perf_counter() - t0
                for t, r in zip(tops, _as_tuple(result)):
                    env[t] = r
                if it >= warmup:
                    fwd[i] += dt
            wall = time.perf_counter() - start
        if it >= warmup:
            walls.append(wall)
        if not backward:
            env = {}
    layers = [LayerTime(caffe_name[name], types[name], 1000.0 * fwd[i] / iterations)
              for i, (name, _, _) in enumerate(steps)]
    report = TimingReport(net_label or str(graph.source_path), "torch", str(dev), _batch_of(graph), iterations,
                          warmup, graph.phase, layers, 1000.0 * statistics.fmean(walls))
    if backward:
        _time_backward_torch(module, graph, feeds, env, report, iterations, warmup, dev)
    return report.finish()


def _loss_of(graph: Graph, env: dict[str, Any]):
    """Caffe's objective: the loss tops weighted by their loss weights; without a loss, the sum of
    the net's outputs (an all-ones gradient on each)."""
    terms = [w * env[t].sum() for n in graph.nodes for t, w in zip(n.tops, n.loss_weights) if w and t in env]
    if not terms:
        terms = [env[v].sum() for v in graph.outputs if v in env and env[v].is_floating_point()
                 and env[v].requires_grad]
    if not terms:
        raise ConvnetError("--backward: nothing in the net needs a gradient (no learnable blobs?)")
    return sum(terms)


def _time_backward_torch(module, graph: Graph, feeds, env, report: TimingReport, iterations: int,
                         warmup: int, dev) -> None:
    import torch

    params = [p for p in module.parameters() if p.requires_grad]
    # The whole net's backward, from Caffe's objective: the wall figure.
    walls = []
    for it in range(warmup + iterations):
        for p in params:
            p.grad = None
        values = dict(feeds)
        with torch.enable_grad():
            for name, bottoms, tops in module._steps:
                for t, r in zip(tops, _as_tuple(module._modules[name](*[values[b] for b in bottoms]))):
                    values[t] = r
            loss = _loss_of(graph, values)
            _sync(dev)
            t0 = time.perf_counter()
            loss.backward()
            _sync(dev)
        if it >= warmup:
            walls.append(time.perf_counter() - t0)
    report.wall_backward_ms = 1000.0 * statistics.fmean(walls)
    # Each layer's backward on its own, on the inputs it saw in the net.
    for row, (name, bottoms, tops) in zip(report.layers, module._steps):
        layer = module._modules[name]
        own = [p for p in layer.parameters() if p.requires_grad]
        inputs = []
        for b in bottoms:
            x = env[b].detach()
            if env[b].requires_grad:  # as in the net: no gradient for data and labels
                x = x.clone().requires_grad_(True)
            inputs.append(x)
        total = 0.0
        timed = 0
        for it in range(warmup + iterations):
            for p in own:
                p.grad = None
            for x in inputs:
                x.grad = None
            with torch.enable_grad():
                outs = [o for o in _as_tuple(layer(*inputs)) if o.requires_grad]
                if not outs:
                    break
                grads = [torch.ones_like(o) for o in outs]
                _sync(dev)
                t0 = time.perf_counter()
                torch.autograd.backward(outs, grads)
                _sync(dev)
                dt = time.perf_counter() - t0
            if it >= warmup:
                total += dt
                timed += 1
        row.backward_ms = 1000.0 * total / timed if timed else 0.0
    for p in params:
        p.grad = None


# -- loading and formatting ------------------------------------------------------------------------

def load_for_timing(net_path: str, weights: str | None = None, batch: int | None = None,
                    phase: str = "TEST", input_shapes: dict | None = None, seed: int = 0):
    """``convnet_io.load`` with every input's batch dimension set to ``batch`` when given."""
    from convnet_io.api import load
    from convnet_io.api.loading import load_graph

    shapes = dict(input_shapes or {})
    if batch is not None:
        graph = load_graph(net_path, phase=phase.upper(), input_shapes=shapes or None)
        for v in graph.inputs:
            shape = graph.shapes[v]
            if shape:
                shapes[v] = (batch, *tuple(shape[1:]))
    return load(net_path, weights=weights, phase=phase.upper(), input_shapes=shapes or None, seed=seed)


def format_report(report: TimingReport, sort: bool = False) -> str:
    rows = sorted(report.layers, key=lambda r: -r.total_ms) if sort else report.layers
    backward = report.wall_backward_ms is not None
    head = ["layer", "type", "forward ms"] + (["backward ms"] if backward else []) + ["share"]
    body = []
    for r in rows:
        body.append([r.name, r.type, f"{r.forward_ms:.3f}"] + ([f"{r.backward_ms or 0.0:.3f}"] if backward else [])
                    + [f"{r.share:.1f}%"])
    total = ["total", "", f"{report.total_forward_ms:.3f}"] + (
        [f"{report.total_backward_ms or 0.0:.3f}"] if backward else []) + ["100.0%"]
    widths = [max(len(x[i]) for x in [head, *body, total]) for i in range(len(head))]

    def fmt(row):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    lines = [f"net: {report.net}  backend: {report.backend} ({report.device})  phase: {report.phase}  "
             f"batch: {report.batch}",
             f"average over {report.iterations} iteration(s) after {report.warmup} warm-up",
             fmt(head), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in body]
    lines.append("  ".join("-" * w for w in widths))
    lines.append(fmt(total))
    wall = f"wall: forward pass {report.wall_forward_ms:.3f} ms"
    if backward:
        wall += f", backward pass {report.wall_backward_ms:.3f} ms"
        wall += f", forward-backward {report.wall_forward_ms + report.wall_backward_ms:.3f} ms"
    lines.append(wall + " per iteration")
    for note in report.notes:
        lines.append(f"note: {note}")
    return "\n".join(lines)
