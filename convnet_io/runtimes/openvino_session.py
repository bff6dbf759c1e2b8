"""OpenVINO (an optional extra: ``pip install 'convnet[openvino]'``) behind ONNX Runtime's session
surface — ``get_inputs``, ``get_outputs``, ``get_providers``, ``run(names, feeds)`` — so that the
code that runs convnet's ONNX export in ONNX Runtime runs it in OpenVINO unchanged.

OpenVINO reads the ONNX model itself (no conversion step to keep in sync) and compiles it for the
CPU. Its CPU plugin runs float32 models in bfloat16 on CPUs with AVX512-BF16 or AMX unless told
otherwise; convnet pins float32 so the numbers are Caffe's, and asks for bf16 only when a caller
does (``precision="bf16"``).
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from convnet_io.errors import ConvnetError


@dataclass(frozen=True)
class _Port:
    name: str


@lru_cache(maxsize=1)
def shared_core():
    """The process's one OpenVINO Core. Each Core makes its own CPU plugin, which gives the calling
    thread a new alternate signal stack and unmaps it when the plugin is destroyed, restoring the
    previous one only if its own is still current: plugins destroyed in the order they were made
    left the thread on an unmapped stack, and the next signal Python handles (Ctrl-C, SIGCHLD)
    crashed the process. One Core, never destroyed, makes one plugin for the process's lifetime."""
    import openvino as ov

    return ov.Core()


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class OpenVinoSession:
    """A compiled OpenVINO model of an ONNX model (bytes, a file path, or an ``EngineModel``
    whose weights it then shares rather than copies) on the CPU.

    ``streams``: with 2 or more, OpenVINO's throughput mode — that many streams, the cores shared
    out between them, and ``run`` splits the batch into one slice per stream, run concurrently.
    Each stream then computes its slice on its own core(s) with no synchronisation between them
    after every layer, which is where the single-stream (latency) session loses time at large
    batch; the slices' outputs are concatenated, and each item's numbers are those of the same
    kernels. Batches smaller than ``streams`` use fewer slices. ``pinned=False``: the streams'
    threads are not pinned to cores, for a session sharing the cores with other work (a pinned
    stream whose core is busy cannot move to the core the other stream has left idle: AlexNet over
    1,000 JPEGs beside a decoding thread, median of 6 interleaved runs, 14.4 s unpinned against
    15.1 s pinned)."""

    def __init__(self, model, device: str = "auto", threads: int | None = None,
                 precision: str = "f32", hint: str | None = None, streams: int | None = None,
                 pinned: bool = True):
        try:
            import openvino as ov
        except ImportError:
            raise ConvnetError("OpenVINO is not installed: pip install 'convnet[openvino]' "
                               "(or pip install openvino)") from None
        if device == "cuda":
            raise ConvnetError("OpenVINO runs on the CPU here (its GPU plugin is for Intel GPUs): "
                               "use --device cpu or another backend")
        from convnet_io.runtimes.engine_model import EngineModel, replace_weight_inputs

        core = shared_core()
        # an EngineModel's weights become constants over the arrays' own memory (kept alive here)
        self._weights = model.weights if isinstance(model, EngineModel) else None
        try:
            ov_model = core.read_model(model.with_weights_as_inputs() if self._weights is not None else model)
        except RuntimeError as e:
            raise ConvnetError(f"OpenVINO cannot read the exported model: {str(e).strip().splitlines()[0]}") from None
        if self._weights is not None:
            replace_weight_inputs(ov_model, self._weights)
        config = {"INFERENCE_PRECISION_HINT": precision}
        if threads:
            config["INFERENCE_NUM_THREADS"] = threads
        if hint:  # LATENCY or THROUGHPUT
            config["PERFORMANCE_HINT"] = hint
        self.streams = int(streams or 1)
        if self.streams > 1:
            # the cores are shared out between the streams by OpenVINO (threads: the total, if given)
            config.update({"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams})
            if not pinned:  # beside other work: let the scheduler move a stream off a busy core
                config["ENABLE_CPU_PINNING"] = False
        self.compiled = core.compile_model(ov_model, "CPU", config)
        self._request = self.compiled.create_infer_request()
        self._queue = None
        if self.streams > 1:
            self._queue = ov.AsyncInferQueue(self.compiled, self.streams)
            # the callback holds the slices, not the session: a bound method would make a cycle
            # through the queue (a C++ object the garbage collector cannot see into) never freed
            self._slices: dict[int, list[np.ndarray]] = {}
            self._queue.set_callback(_collector(self.compiled, self._slices))
        self.version = ov.__version__

    def get_inputs(self) -> list[_Port]:
        return [_Port(p.get_any_name()) for p in self.compiled.inputs]

    def get_outputs(self) -> list[_Port]:
        return [_Port(p.get_any_name()) for p in self.compiled.outputs]

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU"]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        names = output_names or [p.name for p in self.get_outputs()]
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        batch = min((v.shape[0] for v in feeds.values() if v.ndim), default=1)
        if self._queue is None or batch < 2 or any(v.ndim and v.shape[0] != batch for v in feeds.values()):
            result = self._request.infer(feeds)
            # the request's output tensors are reused by the next call: copy them out
            return [np.array(result[self.compiled.output(n)]) for n in names]
        bounds = np.linspace(0, batch, min(self.streams, batch) + 1).astype(int)
        self._slices.clear()
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            self._queue.start_async({k: v[a:b] for k, v in feeds.items()}, (i, names))
        self._queue.wait_all()
        return [np.concatenate([self._slices[i][j] for i in range(len(bounds) - 1)]) for j in range(len(names))]


def _collector(compiled, slices: dict):
    def collect(request, userdata) -> None:
        """A slice's outputs, copied out of its request before the request is reused."""
        index, names = userdata
        slices[index] = [np.array(request.get_tensor(compiled.output(n)).data) for n in names]
    return collect


def openvino_blocker(graph) -> str | None:
    """Why OpenVINO would not compute this graph as Caffe does (None when it would): the layer
    patterns where the per-layer tests against Caffe's float64 reference found it differs."""
    for node in graph.nodes:
        a = node.attrs
        if node.type == "LRN" and getattr(a, "norm_region", "") == "ACROSS_CHANNELS" and node.bottoms:
            channels = graph.shapes[node.bottoms[0]][1] if len(graph.shapes[node.bottoms[0]]) > 1 else 0
            if a.local_size > channels:
                return f"layer '{node.name}' (LRN): OpenVINO's window over fewer channels than local_size differs"
        if node.type == "Reduction" and getattr(a, "operation", "") == "ASUM":
            return f"layer '{node.name}' (Reduction ASUM): OpenVINO's ReduceL1 gives the wrong shape"
        if node.type == "ArgMax" and getattr(a, "out_max_val", False) and getattr(a, "axis", None) is None:
            return f"layer '{node.name}' (ArgMax with out_max_val): OpenVINO gives an empty batch"
    return None
