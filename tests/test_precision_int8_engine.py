"""int8 on the engine that has int8 kernels: the quantizer's choices (u8 activations, 7-bit
per-channel weights for CPUs without VNNI), OpenVINO running the convolutions in u8, the fallback
to ONNX Runtime, top-1 agreement with float32 and the cost per blob."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from helpers import input_layer
from onnx import numpy_helper

import convnet_io
from convnet_io.onnx_export.writer import export_to_file
from convnet_io.runtimes import precision
from convnet_io.runtimes.onnxruntime_session import make_session
from convnet_io.runtimes.openvino_session import openvino_available

# a small classifier: ReLU after each convolution (folded into the QuantizeLinear), an LRN that
# stays float32 between two quantized convolutions
NET = input_layer((1, 3, 24, 24)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv2" top: "ip1"
        inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
"""
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="OpenVINO is not installed")


def images(n: int, seed: int) -> np.ndarray:
    """Image-like inputs: smooth random fields (neighbouring pixels correlated), mean-subtracted scale."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((n, 3, 6, 6)) * 50
    return np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3).astype(np.float32) + \
        rng.standard_normal((n, 3, 24, 24)).astype(np.float32) * 10


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("int8")
    (tmp / "net.prototxt").write_text(NET)
    net = convnet_io.load(tmp / "net.prototxt", seed=3, backend="torch")
    fp32, int8 = tmp / "fp32.onnx", tmp / "int8.onnx"
    export_to_file(net.graph, net.blobs(), fp32)
    precision.quantize_int8(fp32, int8, "data", images(64, seed=1))
    return net, fp32, int8, tmp


def test_quantizer_u8_activations_and_7_bit_symmetric_per_channel_weights(models):
    _, _, int8, _ = models
    model = onnx.load(str(int8))
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = init["conv2_w_quantized"]
    # reduce_range, symmetric: [-64, 64], so u8 x s8 pair sums fit int16 on AVX2 without VNNI
    assert w.dtype == np.int8 and np.abs(w.astype(int)).max() == 64
    assert init["conv2_w_scale"].shape == (32,) and not init["conv2_w_zero_point"].any()  # per channel, symmetric
    zero = {n.input[0]: init[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert zero and all(z.dtype == np.uint8 for z in zero.values())
    assert zero["conv1:1"] == 0  # the ReLU is folded into the uint8 range: zero point 0 after it


@needs_openvino
def test_openvino_runs_the_convolutions_in_u8(models):
    net, _, int8, _ = models
    assert precision.int8_engine(net.graph) == "openvino"
    session = precision.int8_session(str(int8), net.graph)
    kernels = precision.int8_kernels(session)
    assert kernels["conv1"].startswith("u8 ") and kernels["conv2"].startswith("u8 "), kernels
    assert kernels["ip1"].startswith("f32 "), kernels  # it writes the net's output: kept in float32


def test_int8_agrees_with_fp32_on_both_engines(models):
    _, fp32, int8, _ = models
    x = images(200, seed=2)
    want = make_session(str(fp32), "cpu").run(None, {"data": x})[0]
    engines = ["onnxruntime"] + (["openvino"] if openvino_available() else [])
    got = {e: precision.int8_session(str(int8), engine=e).run(None, {"data": x})[0] for e in engines}
    for engine, out in got.items():
        # random weights leave many inputs with close top classes: a few may swap (the bench
        # measures agreement on trained LeNet and on nets whose logits have unit spread)
        agree = (out.argmax(1) == want.argmax(1)).mean()
        rel = np.abs(out - want).mean() / np.abs(want).mean()
        assert agree >= 0.95 and 0 < rel < 0.03, (engine, agree, rel)
    # the same integer arithmetic on both engines (7-bit weights: no saturation on either)
    assert np.abs(got["onnxruntime"] - got.get("openvino", got["onnxruntime"])).max() < 1e-3 * np.abs(want).max()


def test_onnxruntime_when_openvino_cannot_or_for_cuda(models, monkeypatch):
    net, _, _, _ = models
    assert precision.int8_engine(net.graph, "cuda") == "onnxruntime"
    import convnet_io.runtimes.openvino_session as ovs

    monkeypatch.setattr(ovs, "openvino_blocker", lambda graph: "layer 'x': differs")
    assert precision.int8_engine(net.graph) == "onnxruntime"
    monkeypatch.setattr(ovs, "openvino_available", lambda: False)
    assert precision.int8_engine(None) == "onnxruntime"
    with pytest.raises(precision.ConvnetError, match="int8 runs on openvino or onnxruntime"):
        precision.int8_session(b"", engine="torch")


def test_layer_errors_per_blob(models):
    _, fp32, int8, _ = models
    errors = precision.layer_errors(fp32, int8, {"data": images(8, seed=4)}, ["conv1:1", "norm1", "pool1", "conv2:1", "ip1"])
    assert set(errors) == {"conv1:1", "norm1", "pool1", "conv2:1", "ip1"}
    # conv1:1 is the ReLU's output: compared after the QuantizeLinear that clamps it, not before
    assert all(0 < e < 0.05 for e in errors.values()), errors


def test_forward_int8_runs_on_the_int8_engine(models):
    _, fp32, _, tmp = models
    net = convnet_io.load(tmp / "net.prototxt", seed=3, backend="onnxruntime")
    net.set_precision("int8", calibration=images(32, seed=5))
    session = net._int8_session(onnx.load(str(fp32)))
    assert type(session).__name__ == ("OpenVinoSession" if openvino_available() else "InferenceSession")
    x = images(16, seed=6)
    got = net.forward({"data": x})["ip1"]
    net.set_precision("fp32")
    want = net.forward({"data": x})["ip1"]
    assert (got.argmax(1) == want.argmax(1)).mean() >= 15 / 16 and not np.array_equal(got, want)


def test_bf16_refused_in_one_line_on_a_cpu_without_it(models, monkeypatch):
    _, _, _, tmp = models
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    np.save(tmp / "x.npy", images(2, seed=7))
    for cmd in (["forward", str(tmp / "net.prototxt"), "--input", f"data={tmp / 'x.npy'}", "-o", str(tmp / "o.npz")],
                ["export", str(tmp / "net.prototxt"), "--onnx", str(tmp / "b.onnx")]):
        r = CliRunner().invoke(cli, cmd + ["--precision", "bf16"], catch_exceptions=False)
        lines = r.stderr.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "AVX512-BF16" in lines[0], r.stderr


def test_softmax_and_the_outputs_stay_float(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET + 'layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }\n')
    net = convnet_io.load(tmp_path / "net.prototxt", seed=3, backend="torch")
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / "int8.onnx"
    export_to_file(net.graph, net.blobs(), fp32)
    assert precision.kept_in_float(fp32) == ["prob", "ip1"]  # the Softmax and the classifier it reads
    precision.quantize_int8(fp32, int8, "data", images(32, seed=1))
    quantized = {n.input[0] for n in onnx.load(str(int8)).graph.node if n.op_type == "QuantizeLinear"}
    assert "pool1" in quantized and not quantized & {"ip1", "prob"}  # logits and probabilities not on 256 levels
    x = images(64, seed=8)
    want = make_session(str(fp32), "cpu").run(None, {"data": x})[0]
    got = precision.int8_session(str(int8), net.graph).run(None, {"data": x})[0]
    off_grid = np.abs(got * 255 - np.round(got * 255)) > 1e-3  # not on a uint8 output's 256 levels
    assert off_grid.mean() > 0.1 and (got.argmax(1) == want.argmax(1)).mean() >= 0.95
