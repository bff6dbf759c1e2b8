"""Export a loaded net: ONNX (checked, then validated in ONNX Runtime), TorchScript, torch.export,
safetensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from convnet_io.atomic import atomic_output
from convnet_io.errors import ConvnetError
from convnet_io.onnx_export import DEFAULT_OPSET, check_onnx, export_onnx, save_onnx  # noqa: F401  (re-exported for the CLI)


@dataclass
class ValidationResult:
    provider: str
    batches: list[int]
    worst_rel: float
    per_output: dict[str, float] = field(default_factory=dict)
    ok: bool = True


def seeded_inputs(graph, batch: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs for the net's data inputs at ``batch``: N(0, 50^2), the spread of
    mean-subtracted pixels, for image-like blobs; word ids for an Embed; N(0, 1) otherwise."""
    from convnet_io.graph import inference_view

    rng = np.random.default_rng(seed)
    feeds = {}
    view = inference_view(graph)
    # As the export: only inputs whose first axis is the net's batch vary with it (a recurrent
    # net's x_static has N rows while its x and cont start with T).
    first = next((view.shapes[v][0] for v in view.read_inputs if len(view.shapes[v]) >= 2), None)
    # Word ids for Embed bottoms: Caffe refuses an index outside [0, input_dim).
    vocab = {n.bottoms[0]: n.attrs.input_dim for n in view.nodes if n.type == "Embed"}
    for v in view.read_inputs:
        dims = graph.shapes[v]
        shape = (batch, *dims[1:]) if len(dims) < 2 or dims[0] == first else tuple(dims)
        if v in vocab:
            feeds[v] = rng.integers(0, vocab[v], shape).astype(np.float32)
            continue
        scale = 50.0 if len(shape) == 4 else 1.0
        feeds[v] = (rng.standard_normal(shape) * scale).astype(np.float32)
    return feeds


def validate_onnx(net, model, batches=(1, 7), seed: int = 0, rtol: float = 1e-4, device: str = "auto") -> ValidationResult:
    """Run the ONNX model in ONNX Runtime and compare its outputs with the PyTorch model."""
    from convnet_io.runtimes.compare import Tolerance, compare_blob
    from convnet_io.runtimes.onnxruntime_session import make_session

    session = make_session(model.SerializeToString(), device)
    provider = session.get_providers()[0]
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    worst, per = 0.0, {}
    tol = Tolerance(atol=0.0, rtol=rtol)
    ok = True
    for batch in batches:
        feeds = {k: v for k, v in seeded_inputs(net.graph, batch, seed + batch).items() if k in inputs}
        got = dict(zip(outputs, session.run(outputs, feeds)))
        want = net.run_values(feeds, outputs)  # the PyTorch model itself, whatever forward defaults to
        for name in outputs:
            c = compare_blob(name, got[name], want[name], tol)
            rel = c.max_rel if c.max_rel is not None else float("inf")
            per[name] = max(per.get(name, 0.0), rel)
            worst = max(worst, rel)
            ok = ok and c.ok
    return ValidationResult(provider, list(batches), worst, per, ok)


def _atomic_write(path: str | Path, write) -> None:
    with atomic_output(path) as tmp:
        write(str(tmp))


def example_inputs(net, batch: int = 1):
    import torch

    return tuple(torch.from_numpy(v) for v in seeded_inputs(net.graph, batch, 0).values())


def save_torchscript(net, path: str | Path) -> None:
    """A traced TorchScript module (inputs in ``net.inputs`` order, batch of the trace dynamic)."""
    import warnings

    import torch

    module = net.module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in recent torch releases but still what many deployments load.
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(module, example_inputs(net), check_trace=False)
    _atomic_write(path, lambda tmp: traced.save(tmp))


def save_exported_program(net, path: str | Path) -> None:
    """A torch.export program (``.pt2``) with a dynamic batch dimension."""
    import torch

    module = net.module.eval()
    args = example_inputs(net, batch=2)
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = (tuple({0: batch} for _ in args),)  # forward(*inputs): one spec for the varargs
    try:
        program = torch.export.export(module, args, dynamic_shapes=dynamic)
    except Exception:  # noqa: BLE001  (some graphs fix the batch: fall back to a static export)
        program = torch.export.export(module, args)
    _atomic_write(path, lambda tmp: torch.export.save(program, tmp))


def save_safetensors(net, path: str | Path) -> None:
    """The Caffe blobs as a flat safetensors file: keys ``<layer>/<index>`` (no pickle)."""
    from safetensors.numpy import save_file

    tensors = {f"{layer}/{i}": np.ascontiguousarray(b) for layer, blobs in net.blobs().items()
               for i, b in enumerate(blobs)}
    if not tensors:
        raise ConvnetError("the net has no learnable blobs to save")
    _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"format": "caffe-blobs",
                                                                      "net": net.graph.name or ""}))
