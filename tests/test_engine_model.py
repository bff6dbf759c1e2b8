"""The export handed to the engines without copies of its weights (``runtimes/engine_model.py``):
ONNX Runtime given the arrays as external initialisers, OpenVINO given them as constants over the
arrays' memory, the split engine both; each computes what a float64 NumPy implementation of Caffe's
layers computes, exactly what the same engine computes from the self-contained model, and keeps
working after every other reference to the arrays is gone."""
from __future__ import annotations

import gc

import numpy as np
import onnx
import pytest
from helpers import input_layer, rel_err

import convnet_io
from convnet_io.onnx_export import export_onnx
from convnet_io.runtimes.engine_model import EngineModel
from convnet_io.runtimes.onnxruntime_session import make_session

NET = input_layer((2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 64 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 7 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


@pytest.fixture
def net(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text('name: "Tiny"\n' + NET)
    return convnet_io.load(path, seed=3, backend="onnxruntime")


def reference(x: np.ndarray, blobs) -> np.ndarray:
    """Caffe's Convolution (pad 1, 3x3), ReLU, InnerProduct and Softmax in float64."""
    w, b = (a.astype(np.float64) for a in blobs["conv1"])
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    n, _, h, wd = x.shape[0], x.shape[1], x.shape[2] - 2, x.shape[3] - 2
    conv = np.zeros((n, w.shape[0], h, wd))
    for i in range(3):
        for j in range(3):
            conv += np.einsum("nchw,oc->nohw", x[:, :, i:i + h, j:j + wd], w[:, :, i, j])
    conv = np.maximum(conv + b[None, :, None, None], 0)
    ip_w, ip_b = (a.astype(np.float64) for a in blobs["ip1"])
    logits = conv.reshape(n, -1) @ ip_w.reshape(ip_w.shape[0], -1).T + ip_b
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _x(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, 8, 8)).astype(np.float32)


def test_the_export_keeps_the_weights_in_the_blobs_own_memory(net):
    blobs = net._engine_blobs()
    model = EngineModel.export(net.graph, blobs)
    weights = dict(model.weights)
    assert set(weights) == {"conv1_w", "ip1_w"}  # the small biases stay in the model
    assert np.shares_memory(weights["conv1_w"], blobs["conv1"][0])
    assert np.shares_memory(weights["ip1_w"], blobs["ip1"][0])
    assert {t.name for t in model.model.graph.initializer} == {"conv1_b", "ip1_b"}
    # a read-only or non-float32 array is copied once rather than aliased
    frozen = {k: [a.copy() for a in v] for k, v in blobs.items()}
    frozen["ip1"][0].flags.writeable = False
    copied = dict(EngineModel.export(net.graph, frozen).weights)["ip1_w"]
    assert copied.flags.writeable and not np.shares_memory(copied, frozen["ip1"][0])
    assert np.array_equal(copied, frozen["ip1"][0])


def test_onnxruntime_with_external_weights_computes_caffes_numbers(net):
    blobs = net.blobs()
    model = EngineModel.export(net.graph, net._engine_blobs()).with_outputs(["prob"])
    x = _x()
    got = make_session(model, device="cpu").run(["prob"], {"data": x})[0]
    whole = make_session(export_onnx(net.graph, blobs).SerializeToString(), device="cpu").run(["prob"], {"data": x})[0]
    assert rel_err(got, reference(x, blobs)) <= 1e-5
    assert np.array_equal(got, whole)  # the same kernels on the same weights


def test_the_serialised_model_is_the_whole_export(net):
    blobs = net.blobs()
    engine_model = EngineModel.export(net.graph, net._engine_blobs())
    loaded = onnx.load_from_string(engine_model.serialized())
    onnx.checker.check_model(loaded, full_check=True)
    whole = export_onnx(net.graph, blobs)
    values = {t.name: onnx.numpy_helper.to_array(t) for t in loaded.graph.initializer}
    assert set(values) == {t.name for t in whole.graph.initializer}
    for t in whole.graph.initializer:
        assert np.array_equal(values[t.name], onnx.numpy_helper.to_array(t))
    x = _x(1)
    got = make_session(engine_model.serialized(), device="cpu").run(["prob"], {"data": x})[0]
    assert rel_err(got, reference(x, blobs)) <= 1e-5


def test_a_session_outlives_every_other_reference_to_its_weights(net):
    blobs = net.blobs()  # copies: the session's only other owner
    expected = reference(_x(2), blobs)
    model = EngineModel.export(net.graph, {k: [a.copy() for a in v] for k, v in blobs.items()}).with_outputs(["prob"])
    session = make_session(model, device="cpu")
    del model
    gc.collect()
    np.empty(1 << 20, np.float32).fill(7.0)  # reuse freed memory, were the weights freed
    assert rel_err(session.run(["prob"], {"data": _x(2)})[0], expected) <= 1e-5


def test_sessions_sharing_the_modules_tensors_follow_changed_weights(net):
    import torch

    x = _x(3)
    before = net.forward({"data": x})["prob"]
    with torch.no_grad():
        for t in net.module.caffe_blobs()["ip1"]:
            t.mul_(-0.5)  # in place: the sessions' views see it, and the key drops the sessions
    after = net.forward({"data": x})["prob"]
    assert not np.allclose(before, after)
    assert rel_err(after, reference(x, net.blobs())) <= 1e-5


@pytest.mark.parametrize("kind", ["openvino", "split"])
def test_openvino_with_shared_constants_computes_caffes_numbers(net, kind):
    pytest.importorskip("openvino")
    from convnet_io.runtimes.openvino_session import OpenVinoSession
    from convnet_io.runtimes.split_session import SplitSession

    make = OpenVinoSession if kind == "openvino" else SplitSession
    blobs = net.blobs()
    x = _x(4)
    model = EngineModel.export(net.graph, {k: [a.copy() for a in v] for k, v in blobs.items()}).with_outputs(["prob"])
    session = make(model)
    whole = make(export_onnx(net.graph, blobs).SerializeToString()).run(["prob"], {"data": x})[0]
    del model
    gc.collect()
    got = session.run(["prob"], {"data": x})[0]
    assert rel_err(got, reference(x, blobs)) <= 1e-5
    assert np.array_equal(got, whole)
    if kind == "split":
        assert session.head is not None and session.get_providers() == ["OpenVINO CPU", "CPUExecutionProvider"]
