"""Runners: one interface, ``run(feeds) -> {value id: array}`` over every blob the backend exposes."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph
from convnet_io.graph.layers.detection import caffe_row_order


class TorchRunner:
    """convnet's PyTorch model; exposes every value (each in-place write separately)."""

    def __init__(self, net, label: str = "torch"):
        from convnet_io.graph import inference_view

        self.net = net
        self.name = label
        view = inference_view(net.graph)
        self.values = view.read_inputs + [t for n in view.nodes if not n.is_source for t in n.tops]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.net.run_values(feeds, self.values)


def mark_all_outputs(model, graph: Graph):
    """A copy of ``model`` whose outputs are every graph value it computes (Polygraphy's --mark all)."""
    import onnx
    from onnx import helper

    marked = onnx.ModelProto()
    marked.CopyFrom(model)
    produced = {o for n in marked.graph.node for o in n.output}
    present = {o.name for o in marked.graph.output}
    for value in graph.values:
        if value in produced and value not in present:
            marked.graph.output.append(helper.make_tensor_value_info(value, onnx.TensorProto.FLOAT, None))
    return marked


class OnnxRuntimeRunner:
    """ONNX Runtime on convnet's export of the graph, every intermediate value marked as an output."""

    def __init__(self, net, device: str = "auto", opset: int | None = None):
        from convnet_io.onnx_export import DEFAULT_OPSET, export_onnx
        from convnet_io.runtimes.onnxruntime_session import make_session

        model = export_onnx(net.graph, net.blobs(), opset=opset or DEFAULT_OPSET)
        self.session = make_session(mark_all_outputs(model, net.graph).SerializeToString(), device)
        self.provider = self.session.get_providers()[0]
        self.name = f"onnxruntime ({self.provider})"
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items() if k in self.inputs}
        return dict(zip(self.outputs, self.session.run(self.outputs, feed)))


class OpenVinoRunner(OnnxRuntimeRunner):
    """OpenVINO on convnet's export of the graph, every intermediate value marked as an output
    (the same model the ONNX Runtime runner runs, compiled by OpenVINO for the CPU)."""

    def __init__(self, net, device: str = "auto", opset: int | None = None):
        from convnet_io.onnx_export import DEFAULT_OPSET, export_onnx
        from convnet_io.runtimes.openvino_session import OpenVinoSession

        model = export_onnx(net.graph, net.blobs(), opset=opset or DEFAULT_OPSET)
        self.session = OpenVinoSession(mark_all_outputs(model, net.graph).SerializeToString(), device)
        self.provider = self.session.get_providers()[0]
        self.name = f"openvino {self.session.version.split('-')[0]}"
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.inputs = [i.name for i in self.session.get_inputs()]


class OpenCVRunner:
    """OpenCV dnn's Caffe importer on a deploy prototxt and .caffemodel written from the graph.

    Fusion is disabled so each Caffe layer's output is observable; a layer's output is the value
    its top holds after it ran (``relu1`` -> ``conv1:1``)."""

    def __init__(self, net):
        try:
            import cv2
        except ImportError:
            raise ConvnetError("OpenCV is not installed: pip install 'opencv-python-headless<5'") from None
        from convnet_io.caffe.deploy import deploy_text

        self.name = f"opencv {cv2.__version__}"
        self.graph = net.graph
        with tempfile.TemporaryDirectory() as tmp:
            proto = Path(tmp) / "deploy.prototxt"
            weights = Path(tmp) / "weights.caffemodel"
            proto.write_text(deploy_text(net.graph))
            net.save_caffemodel(weights)
            try:
                self.cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
            except cv2.error as e:
                raise ConvnetError(f"OpenCV cannot import this net: {str(e).strip().splitlines()[-1]}") from None
        self.cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
        self.cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
        self.cv_net.enableFusion(False)
        names = set(self.cv_net.getLayerNames())
        self.layer_values = {n.name: n.tops[0] for n in net.graph.nodes
                             if not n.is_source and n.tops and n.name in names}
        # OpenCV orders DetectionOutput's rows by score and pads them: put them in Caffe's order.
        self.detections = {n.tops[0] for n in net.graph.nodes if n.type == "DetectionOutput"}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for name, value in feeds.items():
            self.cv_net.setInput(np.ascontiguousarray(value, dtype=np.float32), name)
        layers = list(self.layer_values)
        outs = self.cv_net.forward(layers)
        result = {}
        for layer, out in zip(layers, outs):
            value = self.layer_values[layer]
            expected = self.graph.shapes[value]
            arr = np.asarray(out)
            if value in self.detections:
                arr = caffe_row_order(arr)
            elif arr.size == int(np.prod(expected)) and arr.shape != expected:
                arr = arr.reshape(expected)
            result[value] = arr
        return result
