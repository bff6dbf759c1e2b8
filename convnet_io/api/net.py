"""The Python API: ``net = convnet_io.load(NET, weights=None, phase="TEST")``."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from convnet_io.api.loading import load_graph
from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph, Shape
from convnet_io.graph.reshape import reshape_graph

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")


class Net:
    """A Caffe net ready to run: ``graph`` (the IR), ``module`` (the torch.nn.Module).

    ``backend`` picks what ``forward`` runs on: ``torch`` (the module), ``onnxruntime`` (convnet's
    own ONNX export of the module's current weights, in an ONNX Runtime session), or ``auto``:
    ONNX Runtime for inference when the net exports (the faster of the two on CPUs, see
    docs/BENCHMARKS.md), the module otherwise (training mode, training-only blobs, other image
    sizes)."""

    def __init__(self, graph: Graph, module: Any, backend: str = "auto"):
        if backend not in BACKENDS:
            raise ConvnetError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
        self.graph = graph
        self.module = module
        self.backend = backend
        self._reshaped: dict[tuple, Any] = {}
        self._ort: dict[tuple, Any] = {}
        self._ort_weights: tuple | None = None
        self.precision = "fp32"
        self._calibration: dict[str, np.ndarray] | None = None
        # True while the net runs beside other work on the same cores (``convnet run``'s decoding
        # threads): ``auto`` then takes OpenVINO's throughput mode over its single-stream session
        self.throughput = False

    # -- running -----------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self.graph.outputs)

    def forward(self, inputs: Any, blobs: str | Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Run the net. ``inputs``: a dict of input blob name -> NumPy array or tensor (or one array
        for a single-input net). ``blobs``: None for the net's outputs, ``"all"`` for every blob
        (each write of an in-place blob separately: ``conv1``, ``conv1:1``), or a list of names; a
        plain Caffe name means the blob as Caffe holds it after the pass (its last write)."""
        wanted = self._resolve(self.graph, blobs)
        if not wanted:
            raise ConvnetError("no blobs asked for")
        values = [v for _, v in wanted]
        named = self._named_inputs(inputs)
        if self._use_onnxruntime(named, values):
            out = self._run_onnxruntime(named, values)
        else:
            out = self.run_values(named, values)
        return {name: out[v] for name, v in wanted}

    # -- ONNX Runtime --------------------------------------------------------------------------------
    def _named_inputs(self, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            unknown = [k for k in inputs if k not in self.graph.inputs]
            if unknown:
                raise ConvnetError(f"'{unknown[0]}' is not an input of the net (inputs: {', '.join(self.graph.inputs)})")
            return dict(inputs)
        data_inputs = [v for v in self.graph.inputs if len(self.graph.shapes[v]) > 1] or self.graph.inputs
        if len(data_inputs) != 1:
            raise ConvnetError(f"the net has inputs {', '.join(self.graph.inputs)}: pass a dict")
        return {data_inputs[0]: inputs}

    def _onnxruntime_blocker(self) -> tuple[str | None, set[str], set[str]]:
        """Why the graph cannot run on ONNX Runtime (None if it can), its values and inputs."""
        if not hasattr(self, "_ort_plan"):
            from convnet_io.graph import inference_view
            from convnet_io.onnx_export import exporter_types

            view = inference_view(self.graph)
            exportable = set(exporter_types())
            reason = None
            if any(n.type not in exportable for n in view.nodes if not n.is_source):
                reason = "the net has layers without an ONNX exporter"
            elif any(n.type == "BatchNorm" and n.attrs.use_global_stats is False for n in view.nodes):
                reason = "BatchNorm with use_global_stats: false needs batch statistics"
            self._ort_plan = (reason, set(view.values), set(view.read_inputs))
        return self._ort_plan

    def _use_onnxruntime(self, feeds: dict[str, Any], values: list[str]) -> bool:
        if self.backend == "torch" or (self.backend == "auto" and self.module.training):
            return False
        reason, view_values, view_inputs = self._onnxruntime_blocker()
        if reason is None:
            if not set(values) <= view_values or not set(feeds) <= view_inputs:
                reason = "the blobs asked for are not part of the inference graph"
            elif any(tuple(np.shape(v)[1:]) != tuple(self.graph.shapes[k][1:]) for k, v in feeds.items()):
                reason = "inputs differ from the definition in more than the batch size"
        if reason is None and self.backend == "openvino":
            from convnet_io.runtimes.openvino_session import openvino_blocker

            reason = openvino_blocker(self.graph)
        if reason and self.backend in ("onnxruntime", "openvino"):
            raise ConvnetError(f"cannot run on {self.backend}: {reason}")
        return reason is None

    def _weights_key(self) -> tuple:
        # Tensors count their in-place changes: training the module through ``net.module``
        # invalidates the exported sessions. Writes through ``tensor.data`` bypass that counter:
        # call ``invalidate()`` after them.
        return tuple((id(t), t.data_ptr(), t._version) for blobs in self.module.caffe_blobs().values()
                     for t in blobs)

    def invalidate(self) -> None:
        """Forget the ONNX Runtime sessions built from earlier weights."""
        self._ort.clear()
        self._ort_weights = None

    def _run_onnxruntime(self, feeds: dict[str, Any], values: list[str]) -> dict[str, np.ndarray]:
        from convnet_io.runtimes.engine_model import EngineModel
        from convnet_io.runtimes.onnxruntime_session import make_session

        key = self._weights_key()
        if key != self._ort_weights:
            self._ort.clear()
            self._ort_weights = key
        engine = self._engine_for(feeds)
        if engine in ("torch", "torch.compile"):
            return self._run_torch_engine(engine, feeds, values)
        if ("model",) not in self._ort:  # the export, its weights shared with the engines (no copies)
            self._ort[("model",)] = EngineModel.export(self.graph, self._engine_blobs())
        names = tuple(values)
        if (engine, names) not in self._ort:
            model = self._ort[("model",)].with_outputs(names)
            if engine.startswith("openvino"):  # openvino-streams: one stream per core, the batch split
                from convnet_io.runtimes.openvino_session import OpenVinoSession

                if engine == "openvino+onnxruntime":  # OpenVINO's trunk, ONNX Runtime's InnerProducts
                    from convnet_io.runtimes.split_session import SplitSession

                    session = SplitSession(model)
                else:
                    session = OpenVinoSession(model,
                                              precision="bf16" if self.precision == "bf16" else "f32",
                                              streams=os.cpu_count() if engine == "openvino-streams" else None,
                                              pinned=not self.throughput)
            elif self.precision == "int8":
                session = self._int8_session(model)
            else:
                session = make_session(model)
            self._ort[(engine, names)] = (session, [i.name for i in session.get_inputs()])
        session, inputs = self._ort[(engine, names)]
        feed = {k: np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v, dtype=np.float32)
                for k, v in feeds.items() if k in inputs}
        missing = [k for k in inputs if k not in feed]
        if missing:
            raise ConvnetError(f"missing input(s): {', '.join(missing)}")
        return dict(zip(names, session.run(list(names), feed)))

    def set_precision(self, precision: str = "fp32", calibration: Any = None) -> None:
        """Opt-in reduced precision for ``forward`` on the exported engines: ``int8`` runs OpenVINO
        (else ONNX Runtime) on the export quantized by ONNX Runtime's static quantizer, activation ranges measured on
        ``calibration`` (inputs as ``forward`` takes them); ``bf16`` runs OpenVINO in bfloat16 where
        the CPU computes it natively (AVX512-BF16, AMX). ``fp32`` goes back to Caffe's numbers."""
        from convnet_io.runtimes.precision import check_precision

        check_precision(precision)
        if precision == "int8":
            if calibration is None:
                raise ConvnetError("int8 needs calibration inputs to measure activation ranges on")
            named = self._named_inputs(calibration)
            self._calibration = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in named.items()}
        if precision != "fp32" and self.backend == "torch":
            raise ConvnetError(f"{precision} runs on the exported engines, not on backend torch")
        self.precision = precision
        self._ort.clear()

    def _engine_for(self, feeds: dict[str, Any]) -> str:
        """The backend asked for, or for ``auto`` what the recorded bench measured fastest for this
        net at this batch size (``runtimes/engine_table.py``); with ``throughput`` set, OpenVINO's
        throughput mode where that is one of OpenVINO's single-stream sessions. A single-stream session
        splits each layer between every core and waits for the last: a core taken by other work
        (decoding the next images) holds up every layer. With one stream per core nothing waits:
        AlexNet over 1,000 JPEGs at batch 16 with a decoding thread on 2 cores took 14.7-14.9 s
        against 18.0-18.3 s, and 15 % less CPU."""
        engine = self._table_engine(feeds)
        if (self.throughput and engine in ("openvino", "openvino+onnxruntime") and self.backend == "auto"
                and (os.cpu_count() or 1) > 1):
            batch = max((np.shape(v)[0] for v in feeds.values() if np.ndim(v)), default=1)
            return "openvino-streams" if batch > 1 else engine
        return engine

    def _table_engine(self, feeds: dict[str, Any]) -> str:
        if self.precision != "fp32":  # the engines that run the reduced precision
            return "onnxruntime" if self.precision == "int8" else "openvino"
        if self.backend != "auto":
            return self.backend
        from convnet_io.runtimes.engine_table import choose_engine
        from convnet_io.runtimes.onnxruntime_session import gpu_present

        batch = int(max((np.shape(v)[0] for v in feeds.values() if np.ndim(v)), default=1))
        if ("engine", batch) in self._ort:  # decided once per batch size (cleared with the sessions)
            return self._ort[("engine", batch)]
        engine = choose_engine(self.graph.name, batch, "cuda" if gpu_present() else "cpu")
        if engine.startswith("openvino"):
            from convnet_io.runtimes.openvino_session import openvino_blocker

            if openvino_blocker(self.graph):
                engine = "onnxruntime"
        from convnet_io.runtimes.engine_table import COMPILE_AFTER_CALLS, SETUP_FALLBACK

        if engine in SETUP_FALLBACK:  # costly to set up: only a net run repeatedly pays it
            calls = self._ort[("calls", batch)] = self._ort.get(("calls", batch), 0) + 1
            if calls < COMPILE_AFTER_CALLS:
                return SETUP_FALLBACK[engine]
        self._ort[("engine", batch)] = engine
        return engine

    def _run_torch_engine(self, engine: str, feeds: dict[str, Any], values: list[str]) -> dict[str, np.ndarray]:
        if engine == "torch":
            return self.run_values(feeds, values)
        from convnet_io.runtimes.compiled import compile_fetch, run_compiled

        tensors = self._feeds(feeds)
        shapes = {k: tuple(v.shape) for k, v in tensors.items()}
        key = ("torch.compile", tuple(sorted(shapes.items())), tuple(values))
        if key not in self._ort:  # compiled once per shapes and blobs; new weights clear it
            self._ort[key] = compile_fetch(self._module_for(shapes)[0], list(values))
        out = run_compiled(self._ort[key], tensors)
        return {v: t.detach().cpu().numpy() for v, t in out.items()}

    def _int8_session(self, model):
        import tempfile

        from convnet_io.runtimes.precision import int8_session, quantize_int8

        if len(self._calibration) != 1:
            raise ConvnetError("int8 calibration needs a net with one input")
        (name, data), = self._calibration.items()
        with tempfile.TemporaryDirectory(prefix="convnet-int8-") as tmp:
            fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            # an EngineModel (its weights written once) or a whole ModelProto
            fp32.write_bytes(model.serialized() if hasattr(model, "weights") else model.SerializeToString())
            quantize_int8(fp32, int8, name, data)
            return int8_session(int8.read_bytes(), self.graph)  # OpenVINO's int8 kernels where it can

    def run_values(self, inputs: Any, values: Iterable[str]) -> dict[str, np.ndarray]:
        """Run the net and return the given value ids (``conv1``, ``conv1:1``) exactly."""
        import torch

        feeds = self._feeds(inputs)
        module, _ = self._module_for({k: tuple(v.shape) for k, v in feeds.items()})
        with torch.no_grad():
            out = module.run(feeds, list(values))
        return {v: t.detach().cpu().numpy() for v, t in out.items()}

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        import torch

        if not isinstance(inputs, Mapping):
            data_inputs = [v for v in self.graph.inputs if len(self.graph.shapes[v]) > 1] or self.graph.inputs
            if len(data_inputs) != 1:
                raise ConvnetError(f"the net has inputs {', '.join(self.graph.inputs)}: pass a dict")
            inputs = {data_inputs[0]: inputs}
        feeds = {}
        for name, value in inputs.items():
            if name not in self.graph.inputs:
                raise ConvnetError(f"'{name}' is not an input of the net (inputs: {', '.join(self.graph.inputs)})")
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            feeds[name] = t.to(torch.float32)
        return feeds

    def _module_for(self, shapes: dict[str, Shape]):
        """The module for these input shapes: the loaded one, or a reshaped copy sharing weights."""
        current = {k: self.graph.shapes[k] for k in shapes}
        if shapes == current:
            return self.module, self.graph
        key = tuple(sorted(shapes.items()))
        if key not in self._reshaped:
            from convnet_io.torch_model import CaffeModule

            graph = reshape_graph(self.graph, shapes)
            module = CaffeModule(graph)
            module.load_state_dict(self.module.state_dict())
            module.train(self.module.training)
            self._reshaped[key] = (module, graph)
        module, graph = self._reshaped[key]
        module.load_state_dict(self.module.state_dict())
        module.train(self.module.training)
        return module, graph

    @staticmethod
    def _resolve(graph: Graph, blobs) -> list[tuple[str, str]]:
        """(name to report, value id) pairs."""
        if blobs is None:
            return [(graph.blob_of[v], v) for v in graph.outputs]
        if blobs == "all":
            return [(v, v) for v in graph.values]
        if isinstance(blobs, str):
            blobs = [blobs]
        out = []
        for name in blobs:
            if name in graph.shapes and name not in graph.blob_of.values():
                out.append((name, name))
                continue
            try:
                out.append((name, graph.final_value(name)))
            except KeyError:
                raise ConvnetError(f"no blob named '{name}' in the net") from None
        return out

    # -- weights -----------------------------------------------------------------------------------
    def blobs(self) -> dict[str, list[np.ndarray]]:
        """Learnable blobs per layer, in Caffe order, as NumPy arrays."""
        return {k: [b.detach().cpu().numpy().copy() for b in v] for k, v in self.module.caffe_blobs().items()}

    def _engine_blobs(self) -> dict[str, list[np.ndarray]]:
        """The blobs for the engines' sessions: views of the module's CPU tensors, not copies (a
        change to them changes ``_weights_key``, which drops the sessions before their next run)."""
        return {k: [b.detach().cpu().numpy() for b in v] for k, v in self.module.caffe_blobs().items()}

    def set_blobs(self, blobs: Mapping[str, list[np.ndarray]]) -> None:
        import torch

        targets = self.module.caffe_blobs()
        with torch.no_grad():
            for layer, arrays in blobs.items():
                for t, a in zip(targets[layer], arrays):
                    t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(t.shape))

    def save_caffemodel(self, path: str | Path) -> None:
        """Write the weights as a V2 .caffemodel (atomically)."""
        from convnet_io.caffe.caffemodel import write_caffemodel
        from convnet_io.caffe.weights import layer_blobs

        write_caffemodel(path, layer_blobs(self.graph, self.blobs()), net_name=self.graph.name)


def load(net: str | Path, weights: str | Path | None = None, phase: str = "TEST",
         input_shapes: dict[str, Shape] | Shape | None = None, seed: int = 0,
         strict: bool = True, backend: str = "auto") -> Net:
    """Load a net definition (prototxt or Caffe2 listing) and optionally its .caffemodel weights.

    Without weights, blobs are filled from the net's fillers (seeded), as ``convnet init`` does.
    ``backend`` is what ``forward`` runs on (see ``Net``).
    """
    from convnet_io.api.loading import load_caffe2
    from convnet_io.torch_model import CaffeModule

    caffe2 = load_caffe2(net, weights, input_shapes, seed)  # a NetDef pair carries its weights
    graph = caffe2[0] if caffe2 else load_graph(net, phase=phase.upper(), input_shapes=input_shapes)
    module = CaffeModule(graph)
    result = Net(graph, module, backend=backend)
    if caffe2:
        result.set_blobs(caffe2[1])
    elif weights is None:
        from convnet_io.graph.initialize import initial_blobs

        result.set_blobs(initial_blobs(graph, seed))
    else:
        from convnet_io.caffe.weights import check_weights

        report = check_weights(graph, weights, strict=strict)
        graph.notices.extend(report.warnings)
        if report.missing:  # fine-tuning: layers not in the file keep their fillers' values
            from convnet_io.graph.initialize import initial_blobs

            result.set_blobs({k: v for k, v in initial_blobs(graph, seed).items() if k in report.missing})
        result.set_blobs(report.blobs)
    return result
