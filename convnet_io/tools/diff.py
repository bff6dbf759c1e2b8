"""`convnet diff`: run two executions of a model on the same input, compare every shared blob."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convnet_io.api import Net, load
from convnet_io.api.loading import load_graph
from convnet_io.caffe.caffemodel import LayerBlobs
from convnet_io.errors import ConvnetError
from convnet_io.runtimes.compare import Tolerance, compare_runs, format_report  # noqa: F401  (re-exported for the CLI)
from convnet_io.tools.export import seeded_inputs

BACKENDS = ("torch", "onnxruntime", "opencv", "openvino")


@dataclass
class DiffSetup:
    a: str
    b: str | None = None
    weights: str | None = None
    weights_b: str | None = None
    against: str = "onnxruntime"
    image: str | None = None
    seed: int = 0
    batch: int = 1
    tolerance: Tolerance = Tolerance()
    device: str = "auto"


def _batched_shapes(path: str, batch: int) -> dict:
    graph = load_graph(path)
    return {v: (batch, *graph.shapes[v][1:]) for v in graph.inputs if graph.shapes[v]}


def _load(path: str, weights: str | None, batch: int, seed: int) -> Net:
    return load(path, weights=weights, input_shapes=_batched_shapes(path, batch), seed=seed)


def _share_weights(src: Net, dst: Net) -> None:
    """Give ``dst`` the blobs of ``src``, matched by layer name (both definitions of one model)."""
    from convnet_io.caffe.weights import match_weights

    layers = [LayerBlobs(name, "", blobs) for name, blobs in src.blobs().items()]
    report = match_weights(dst.graph, layers, source=f"the weights of {src.graph.source_path}")
    dst.set_blobs(report.blobs)


def _inputs(setup: DiffSetup, net: Net) -> dict[str, np.ndarray]:
    if setup.image is None:
        return {k: v for k, v in seeded_inputs(net.graph, setup.batch, setup.seed).items()}
    from convnet_io.tools.preprocess import ImageError, load_image, preprocess

    data = [v for v in net.graph.inputs if len(net.graph.shapes[v]) == 4]
    if len(data) != 1:
        raise ConvnetError("--input IMAGE needs a net with one image input")
    shape = net.graph.shapes[data[0]]
    try:
        image = load_image(setup.image, color=shape[1] == 3)
    except ImageError as e:
        raise ConvnetError(str(e)) from None
    blob = preprocess(image, shape[2:], channel_swap=(2, 1, 0) if shape[1] == 3 else None)
    return {data[0]: np.repeat(blob, setup.batch, axis=0).astype(np.float32)}


def run_diff(setup: DiffSetup) -> dict:
    """The comparison report (see ``compare_runs``) plus which runs were compared."""
    from convnet_io.runtimes.runners import OnnxRuntimeRunner, OpenCVRunner, TorchRunner

    net_a = _load(setup.a, setup.weights, setup.batch, setup.seed)
    if setup.b is not None:
        net_b = _load(setup.b, setup.weights_b or setup.weights, setup.batch, setup.seed)
        if not (setup.weights_b or setup.weights):
            _share_weights(net_a, net_b)
        runner_a = TorchRunner(net_a, f"torch: {setup.a}")
        runner_b = TorchRunner(net_b, f"torch: {setup.b}")
    else:
        if setup.against not in BACKENDS:
            raise ConvnetError(f"--against must be one of {', '.join(BACKENDS)}")
        runner_a = TorchRunner(net_a)
        if setup.against == "torch":
            runner_b = TorchRunner(_load(setup.a, setup.weights, setup.batch, setup.seed), "torch (second run)")
            if not setup.weights:
                _share_weights(net_a, runner_b.net)
        elif setup.against == "onnxruntime":
            runner_b = OnnxRuntimeRunner(net_a, device=setup.device)
        elif setup.against == "openvino":
            from convnet_io.runtimes.runners import OpenVinoRunner

            runner_b = OpenVinoRunner(net_a, device=setup.device)
        else:
            runner_b = OpenCVRunner(net_a)
    feeds = _inputs(setup, net_a)
    out_a = runner_a.run(feeds)
    out_b = runner_b.run(feeds)
    report = compare_runs(net_a.graph.values, out_a, out_b, setup.tolerance)
    report["a"], report["b"] = runner_a.name, runner_b.name
    report["batch"], report["tolerance"] = setup.batch, {"atol": setup.tolerance.atol, "rtol": setup.tolerance.rtol}
    if not report["blobs"]:
        raise ConvnetError(f"{runner_a.name} and {runner_b.name} expose no blob under the same name")
    return report


