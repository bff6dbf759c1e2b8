"""``convnet test``: Caffe's ``caffe test`` — the TEST phase run over its data layers for a number
of batches, each output averaged over them and the loss (the weighted sum of the loss outputs)
averaged too, as tools/caffe.cpp's test() does. The batches are those the first test pass of
``convnet train`` reads (the same feeder, from the first record)."""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from convnet_io.errors import ConvnetError


@dataclass
class TestReport:
    iterations: int
    loss: float
    outputs: dict[str, np.ndarray] = field(default_factory=dict)  # blob -> mean over batches
    loss_weights: dict[str, float] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        def value(a: np.ndarray):
            return float(a) if a.size == 1 else a.reshape(-1).tolist()

        return {"iterations": self.iterations, "loss": self.loss,
                "outputs": {k: value(v) for k, v in self.outputs.items()},
                "loss_weights": {k: w for k, w in self.loss_weights.items() if w}}


def load_phase_net(model: str | Path, weights: str | Path | None, phase: str = "TEST",
                   stages: tuple[str, ...] = (), level: int | None = None):
    """(graph, module, NetParameter, notices) for ``phase``, data layers sized from their first
    record, weights copied by layer name (layers the file lacks keep their fillers, as Caffe's
    CopyTrainedLayersFrom)."""
    import torch

    from convnet_io.caffe.builder import build_graph
    from convnet_io.caffe.prototxt import read_net
    from convnet_io.data import probe_source_shapes
    from convnet_io.graph.initialize import initial_blobs
    from convnet_io.torch_model import CaffeModule

    net, notes = read_net(model)
    shapes = probe_source_shapes(net, phase, stages=stages, level=level)
    graph = build_graph(net, phase=phase, input_shapes=shapes or None, stages=stages, level=level,
                        source_path=str(model), notices=list(notes))
    module = CaffeModule(graph).eval() if phase == "TEST" else CaffeModule(graph)
    blobs = initial_blobs(graph, 0)
    if weights is not None:
        from convnet_io.caffe.weights import check_weights

        report = check_weights(graph, weights, strict=False)
        graph.notices.extend(report.warnings)
        blobs.update(report.blobs)
    targets = module.caffe_blobs()
    with torch.no_grad():
        for layer, arrays in blobs.items():
            for t, a in zip(targets.get(layer, []), arrays):
                t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(t.shape))
    return graph, module, net, graph.notices


def feeder_for(graph, net, workers: int = 0):
    from convnet_io.data import DataFeeder

    feeder = DataFeeder(graph, graph.phase, net=net, workers=workers)
    if feeder.unfed:
        raise ConvnetError(f"the {graph.phase} net takes inputs no data layer feeds "
                           f"({', '.join(feeder.unfed)}); `convnet test` runs nets with data layers")
    return feeder


def run_test(model: str | Path, weights: str | Path | None, iterations: int = 50, phase: str = "TEST",
             stages: tuple[str, ...] = (), level: int | None = None, workers: int = 0,
             progress: bool = False, log=None) -> TestReport:
    """Caffe's ``caffe test``: ``log`` (if given) gets Caffe's per-batch lines."""
    import torch

    if iterations < 1:
        raise ConvnetError(f"--iterations must be at least 1, not {iterations}")
    graph, module, net, notices = load_phase_net(model, weights, phase, stages, level)
    outputs = graph.outputs
    if not outputs:
        raise ConvnetError(f"{model}: the {phase} net has no outputs")
    weights_of = {t: w for n in graph.nodes for t, w in zip(n.tops, n.loss_weights)}
    sums: dict[str, np.ndarray] = {}
    loss = 0.0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=iterations, unit="batch", file=sys.stderr, leave=False, dynamic_ncols=True)
    feeder = feeder_for(graph, net, workers)
    try:
        with torch.no_grad():
            for i in range(iterations):
                out = module.run(next(feeder), outputs)
                values = {k: out[k].detach().cpu().double().numpy() for k in outputs}
                loss += sum(weights_of.get(k, 0.0) * float(v.sum()) for k, v in values.items())
                for k, v in values.items():
                    sums[k] = sums[k] + v if k in sums else v.copy()
                    if log is not None:
                        for x in v.reshape(-1):
                            log(f"Batch {i}, {graph.blob_of[k]} = {x:g}")
                if bar is not None:
                    bar.update(1)
    finally:
        feeder.close()
        if bar is not None:
            bar.close()
    return TestReport(iterations, loss / iterations,
                      {graph.blob_of[k]: v / iterations for k, v in sums.items()},
                      {graph.blob_of[k]: float(weights_of.get(k, 0.0)) for k in outputs}, list(notices))


def format_report(report: TestReport) -> str:
    """Caffe's closing lines: ``Loss: x``, then ``name = mean`` per output value."""
    lines = [f"Loss: {report.loss:g}"]
    for name, value in report.outputs.items():
        w = report.loss_weights.get(name, 0.0)
        for x in value.reshape(-1):
            extra = f" (* {w:g} = {w * x:g} loss)" if w else ""
            lines.append(f"{name} = {x:g}{extra}")
    return "\n".join(lines)
