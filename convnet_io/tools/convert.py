"""``convnet export --onnx``: a prototxt and .caffemodel to a checked ONNX file with torch kept out
of the way.

The weights go from the caffemodel reader into the file (``onnx_export.writer``); torch is imported
only for the ONNX Runtime check, which compares the file against the PyTorch module. The check
makes one session from the written file for every batch size and runs the module once: one pass
over the concatenated batches (when every output keeps the batch as its first axis), split back.
On two cores the work overlaps: torch is imported while the weights are read and written, and ONNX
Runtime loads and runs the file on a second thread while the module (built over the weights' arrays,
``check_module``, on one torch thread) computes the reference.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

INT8_CHECK_INPUTS = 256  # calibration inputs the int8 check runs on (all of them, up to this)
INT8_MIN_TOP1 = 0.99  # the int8 check passes when the top classes agree on this share of them


@dataclass
class OnnxConversion:
    path: str
    opset: int
    nodes: int
    notices: list[str] = field(default_factory=list)
    check: dict[str, Any] | None = None  # provider, batches, worst_rel, ok

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("notices")
        if out["check"] is None:
            out.pop("check")
        return out


def convert_to_onnx(net: str | Path, path: str | Path, weights: str | Path | None = None,
                    opset: int | None = None, static_batch: bool = False, input_shapes=None,
                    check: bool = True, rtol: float | None = None, device: str = "auto",
                    seed: int = 0, precision: str = "fp32", calibration: str | Path | None = None) -> OnnxConversion:
    """Write NET's ONNX model to ``path``; with ``check``, validate it in ONNX Runtime against the
    PyTorch module at batch 1 and 7 (the definition's batch with ``static_batch``). ``precision``
    int8 quantizes the model with ONNX Runtime's static quantizer on ``calibration`` inputs (the
    check then runs on those inputs and passes when the top classes agree with the fp32 module on
    at least 99 % of them)."""
    from convnet_io.errors import ConvnetError
    from convnet_io.tools.precision import check_precision

    check_precision(precision)
    if precision == "bf16":
        raise ConvnetError("bf16 is a run-time precision here (--precision bf16 for run/forward); "
                           "the ONNX file stays fp32")
    if precision == "int8" and not calibration:
        raise ConvnetError("--precision int8 needs --calibration NPY: inputs to measure activation ranges on")
    if rtol is None:
        rtol = 0.1 if precision == "int8" else 1e-4
    from convnet_io.api.loading import load_blobs, load_caffe2, load_graph
    from convnet_io.onnx_export.exporter import DEFAULT_OPSET
    from convnet_io.onnx_export.writer import export_to_file
    from convnet_io.tools.overlap import preload

    caffe2 = load_caffe2(net, weights, input_shapes, seed)  # a Caffe2 NetDef pair carries its weights
    if caffe2:
        (graph, blobs), warnings = caffe2, []
    else:
        graph = load_graph(net, input_shapes=input_shapes)
        if check:
            # The check needs torch: its import (mostly loading shared libraries) runs on a second
            # thread while this one reads and writes the weights (system calls that release the GIL).
            preload("torch")
        blobs, warnings = load_blobs(graph, weights, seed=seed)
    opset = opset or DEFAULT_OPSET
    check_inputs = None
    if precision == "int8":
        import tempfile

        from convnet_io.tools.precision import load_calibration, quantize_int8

        data = load_calibration(calibration, graph.shapes[graph.inputs[0]])
        check_inputs = {graph.inputs[0]: data}
        with tempfile.TemporaryDirectory(prefix="convnet-export-") as tmp:
            written = export_to_file(graph, blobs, Path(tmp) / "fp32.onnx", opset=opset, static_batch=static_batch)
            quantize_int8(Path(tmp) / "fp32.onnx", path, graph.inputs[0], data)
    else:
        written = export_to_file(graph, blobs, path, opset=opset, static_batch=static_batch)
    result = OnnxConversion(str(path), opset, written.nodes, list(graph.notices) + warnings)
    if check:
        batches = (graph.shapes[graph.inputs[0]][0],) if static_batch else (1, 7)
        min_top1 = None
        if check_inputs is not None:  # int8: judged by top-1 agreement on the inputs it was calibrated for
            n = min(len(next(iter(check_inputs.values()))), INT8_CHECK_INPUTS)
            if static_batch and n < batches[0]:
                raise ConvnetError(f"--static-batch {batches[0]} needs at least {batches[0]} calibration inputs, "
                                   f"not {n}")
            batches = batches if static_batch else ((1, n - 1) if n > 1 else (1,))
            min_top1 = INT8_MIN_TOP1
        names = ([i.name for i in written.model.graph.input], [o.name for o in written.model.graph.output])
        result.check = validate_file(graph, blobs, path, batches, rtol=rtol, device=device, inputs=check_inputs,
                                     min_top1=min_top1, names=names)
    return result


def validate_file(graph, blobs, path: str | Path, batches=(1, 7), rtol: float = 1e-4,
                  device: str = "auto", seed: int = 0, inputs: dict | None = None,
                  min_top1: float | None = None, names: tuple[list[str], list[str]] | None = None) -> dict[str, Any]:
    """The ONNX file in one ONNX Runtime session vs the PyTorch module, on seeded inputs (or the
    first rows of ``inputs``). With ``min_top1`` (reduced precision) the verdict is the top-1
    agreement of the class-score outputs instead of the relative error. ``names`` (the model's
    input and output names, when the caller knows them) lets the module run while ONNX Runtime
    loads the file: the two sides of the check overlap on two threads."""
    import numpy as np

    from convnet_io.runtimes.compare import Tolerance, compare_blob
    from convnet_io.tools.export import seeded_inputs
    from convnet_io.tools.overlap import Background

    total = sum(batches)
    source = {k: v[:total] for k, v in inputs.items()} if inputs else seeded_inputs(graph, total, seed)
    edges = np.cumsum((0,) + tuple(batches))

    def split(feeds):
        return [{k: v[a:b] for k, v in feeds.items()} for a, b in zip(edges[:-1], edges[1:])]

    runtime = Background(_onnxruntime_outputs, path, device, source, split, name="convnet-check-onnxruntime")
    want, expected = None, None
    if names:
        expected = {k: v for k, v in source.items() if k in names[0]}
        try:
            want = _reference(graph, blobs, expected, split(expected), names[1], total)
        except BaseException:
            runtime.wait()
            raise
    provider, session_inputs, outputs, got_parts = runtime.result()
    feeds = {k: v for k, v in source.items() if k in session_inputs}
    if want is None or set(feeds) != set(expected) or set(outputs) - set(names[1]):
        want = _reference(graph, blobs, feeds, split(feeds), outputs, total)
    tol = Tolerance(atol=0.0, rtol=rtol)
    worst, per, ok = 0.0, {}, True
    agree: dict[str, list[bool]] = {}
    for got, ref in zip(got_parts, want):
        for name in outputs:
            if got[name].ndim >= 2 and got[name].shape[1] > 1:
                a = got[name].reshape(len(got[name]), got[name].shape[1], -1).argmax(1)
                b = ref[name].reshape(len(ref[name]), ref[name].shape[1], -1).argmax(1)
                agree.setdefault(name, []).extend((a == b).all(axis=1).tolist())
            c = compare_blob(name, got[name], ref[name], tol)
            rel = c.max_rel if c.max_rel is not None else float("inf")
            per[name] = max(per.get(name, 0.0), rel)
            worst = max(worst, rel)
            ok = ok and c.ok
    result = {"provider": provider, "batches": list(batches), "worst_rel": worst, "per_output": per, "ok": ok,
              "rtol": rtol}
    if min_top1 is not None and agree:
        top1 = min(sum(v) / len(v) for v in agree.values())
        result.update(top1_agreement=top1, min_top1=min_top1, ok=top1 >= min_top1)
    return result


def _onnxruntime_outputs(path, device: str, source: dict, split):
    """One session from the written file, run on each part of the inputs it reads: its provider,
    input names, output names and the outputs of each part."""
    from convnet_io.runtimes.onnxruntime_session import make_session

    # Runs twice: not worth re-laying out the weights; shares the cores with the module's pass.
    session = make_session(str(path), device, prepack=False, spin=False)
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    parts = split({k: v for k, v in source.items() if k in inputs})
    return (session.get_providers()[0], inputs, outputs,
            [dict(zip(outputs, session.run(outputs, part))) for part in parts])


def _at_batch(graph, batch: int):
    """``graph`` with its data inputs at ``batch`` (re-inferred as Caffe's reshape)."""
    from convnet_io.graph import inference_view
    from convnet_io.graph.reshape import reshape_graph

    shapes = {v: (batch, *graph.shapes[v][1:]) for v in inference_view(graph).read_inputs}
    return reshape_graph(graph, shapes) if any(graph.shapes[k] != s for k, s in shapes.items()) else graph


def _module_net(graph, blobs):
    """A torch-backed Net over ``graph`` holding ``blobs`` (over their arrays, not copies)."""
    from convnet_io.tools.check_module import module_net

    return module_net(graph, blobs)


def _reference(graph, blobs, feeds, parts, outputs, total):
    """The module's outputs for each part: one pass over all of them when every output keeps the
    batch as its first axis (the parts are then independent rows), else one pass per part."""
    with one_torch_thread():
        return _module_passes(graph, blobs, feeds, parts, outputs, total)


@contextmanager
def one_torch_thread():
    """torch on one thread for the check's module pass, its thread count restored after. ONNX
    Runtime has the other core meanwhile, and the check's first torch operation would otherwise
    start torch's OpenMP pool: for LeNet 0.1 s of CPU (0.2 s on a busy machine, the threads
    waiting for each other) against a whole pass of 0.01 s on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _module_passes(graph, blobs, feeds, parts, outputs, total):
    sizes = [next(iter(p.values())).shape[0] if p else 1 for p in parts]
    whole = _at_batch(graph, total)
    if len(parts) == 1 or all(whole.shapes[v][:1] == (total,) for v in outputs):
        out = _module_net(whole, blobs).run_values(feeds, outputs)
        split, start = [], 0
        for n in sizes:
            split.append({k: v[start:start + n] for k, v in out.items()})
            start += n
        return split
    return [_module_net(_at_batch(graph, n), blobs).run_values(p, outputs) for n, p in zip(sizes, parts)]
