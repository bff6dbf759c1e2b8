"""Two engines on one net (engine ``openvino+onnxruntime``): the convolutional trunk in OpenVINO,
the InnerProduct head after it in ONNX Runtime, behind ONNX Runtime's session surface.

Why: at small batch an InnerProduct is a matrix-vector product, bound by reading its weights from
memory (AlexNet's three stream 234 MB per image), and the two engines' kernels differ there while
OpenVINO's convolutions are the faster ones on the CPUs measured. The head starts at the first
tensor from which only InnerProduct-like nodes (Gemm, MatMul, Flatten, Reshape, Relu, Identity,
Dropout, Softmax) follow to the outputs; a net without such a head, or outputs asked for inside the
trunk, run wholly in OpenVINO. Each part computes what the whole model computes, so the numbers
are each engine's own for its layers.
"""
from __future__ import annotations

import numpy as np

from convnet_io.runtimes.engine_model import EngineModel

HEAD_OPS = {"Gemm", "MatMul", "Flatten", "Reshape", "Relu", "Identity", "Dropout", "Softmax", "Add"}


def head_start(model, weights: set[str] = frozenset()) -> tuple[int, str] | None:
    """(index of the head's first node, the tensor it starts from); None without a head that has
    a Gemm, or one fed by more than one tensor. ``weights``: initialisers kept outside the model."""
    nodes = list(model.graph.node)
    start = len(nodes)
    while start > 0 and nodes[start - 1].op_type in HEAD_OPS:
        start -= 1
    while start < len(nodes) and nodes[start].op_type not in ("Gemm", "MatMul", "Flatten", "Reshape"):
        start += 1  # a ReLU of the last convolution stays with it
    head = nodes[start:]
    if not any(n.op_type in ("Gemm", "MatMul") for n in head) or start == 0:
        return None
    produced = {o for n in head for o in n.output}
    if any(o.name not in produced for o in model.graph.output):  # a trunk value asked for
        return None
    inits = {i.name for i in model.graph.initializer} | set(weights)
    cut = {i for n in head for i in n.input if i and i not in produced and i not in inits}
    return (start, cut.pop()) if len(cut) == 1 else None


def split_model(model, start: int, cut: str):
    """The trunk (the model's inputs to ``cut``) and the head (``cut`` to the model's outputs)."""
    import onnx
    from onnx import helper

    trunk = onnx.ModelProto()
    trunk.CopyFrom(model)
    del trunk.graph.output[:]
    trunk.graph.output.append(helper.make_tensor_value_info(cut, onnx.TensorProto.FLOAT, None))
    del trunk.graph.node[start:]
    used = {i for n in trunk.graph.node for i in n.input}
    kept = [t for t in trunk.graph.initializer if t.name in used]
    del trunk.graph.initializer[:]
    trunk.graph.initializer.extend(kept)
    nodes = list(model.graph.node)[start:]
    used = {i for n in nodes for i in n.input}
    head = helper.make_graph(nodes, "head", [helper.make_tensor_value_info(cut, onnx.TensorProto.FLOAT, None)],
                             list(model.graph.output), [t for t in model.graph.initializer if t.name in used])
    head_model = helper.make_model(head, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return trunk, head_model


def _head_session(model: EngineModel):
    """ONNX Runtime on the CPU with its threads not spinning after each run: spinning threads
    would take the cores from OpenVINO's trunk of the next call."""
    import onnxruntime as ort

    from convnet_io.runtimes.engine_model import external_initializers

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    external_initializers(opts, model.weights)
    session = ort.InferenceSession(model.with_placeholders(), sess_options=opts, providers=["CPUExecutionProvider"])
    session._convnet_weights = model.weights
    return session


def _part(model, engine_model: EngineModel) -> EngineModel:
    """``model`` (a part of ``engine_model``'s) with the weights its nodes read."""
    used = {i for n in model.graph.node for i in n.input}
    return EngineModel(model, [(n, a) for n, a in engine_model.weights if n in used])


class SplitSession:
    """OpenVINO for the trunk, ONNX Runtime for the InnerProduct head of an ONNX model (bytes, or
    an ``EngineModel`` whose weights both engines then share rather than copy)."""

    def __init__(self, model_bytes, streams: int | None = None):
        import onnx

        from convnet_io.runtimes.openvino_session import OpenVinoSession

        engine_model = model_bytes if isinstance(model_bytes, EngineModel) else \
            EngineModel(onnx.load_from_string(model_bytes))
        model = engine_model.model
        weights = engine_model.weight_names()
        self._inputs = [i.name for i in model.graph.input
                        if i.name not in {t.name for t in model.graph.initializer} | weights]
        self._outputs = [o.name for o in model.graph.output]
        found = head_start(model, weights)
        self.cut = found[1] if found else None
        self.head = None
        if found is None or self.cut in self._inputs:
            self.trunk = OpenVinoSession(engine_model, streams=streams)
            self.version = self.trunk.version
            return
        trunk, head = split_model(model, *found)
        self.trunk = OpenVinoSession(_part(trunk, engine_model), streams=streams)
        self.head = _head_session(_part(head, engine_model))
        self.version = self.trunk.version

    def get_inputs(self):
        return self.trunk.get_inputs()

    def get_outputs(self):
        return self.head.get_outputs() if self.head is not None else self.trunk.get_outputs()

    def get_providers(self) -> list[str]:
        return ["OpenVINO CPU", "CPUExecutionProvider"] if self.head is not None else ["OpenVINO CPU"]

    def run(self, output_names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if self.head is None:
            return self.trunk.run(output_names, feeds)
        (middle,) = self.trunk.run([self.cut], feeds)
        return self.head.run(output_names or self._outputs, {self.cut: middle})
