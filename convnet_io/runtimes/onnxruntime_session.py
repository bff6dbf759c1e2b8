"""ONNX Runtime sessions with the right execution provider for this machine."""
from __future__ import annotations

import os
from pathlib import Path


def gpu_present() -> bool:
    """An NVIDIA GPU with its driver loaded (asking ORT for CUDA without one prints load errors)."""
    if os.environ.get("CONVNET_DISABLE_CUDA"):
        return False
    return Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()


def choose_providers(device: str = "auto") -> list[str]:
    """CUDA first when asked for or when present and available, CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    want_cuda = device == "cuda" or (device == "auto" and gpu_present())
    if want_cuda and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def make_session(model_bytes, device: str = "auto", threads: int | None = None,
                 prepack: bool = True, spin: bool = True):
    """An InferenceSession on ``device`` (auto, cpu, cuda) from the model's bytes or file path;
    ``session.get_providers()[0]`` says which provider actually runs it. ``prepack=False`` skips
    re-laying out the weights for ORT's GEMM kernels: cheaper for a session that runs only a
    few times (the export check). ``spin=False``: idle worker threads sleep instead of spinning,
    for a session that shares the cores with other work (the export check's PyTorch side).
    ``model_bytes`` may be an ``EngineModel``: its weights are then the session's as views of the
    arrays, not copies (the session holds on to them)."""
    import onnxruntime as ort

    from convnet_io.runtimes.engine_model import EngineModel, external_initializers

    opts = ort.SessionOptions()
    weights = None
    if isinstance(model_bytes, EngineModel):
        weights = model_bytes.weights
        external_initializers(opts, weights)
        model_bytes = model_bytes.with_placeholders()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not prepack:
        opts.add_session_config_entry("session.disable_prepacking", "1")
    if not spin:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model_bytes, sess_options=opts, providers=choose_providers(device))
    if weights is not None:
        session._convnet_weights = weights  # the arrays the session may read from
    return session
