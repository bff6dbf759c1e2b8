"""Opt-in reduced precision: int8 export through ONNX Runtime's quantizer with calibration inputs;
bf16 refused where the CPU would only emulate it."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from helpers import input_layer

from convnet_io.errors import ConvnetError
from convnet_io.runtimes import precision

NET = input_layer((1, 3, 16, 16)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 8 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 10 } }
"""


@pytest.fixture
def net_path(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return p


def invoke(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)], catch_exceptions=False)


def test_bf16_only_with_native_support(monkeypatch):
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    with pytest.raises(ConvnetError, match="AVX512-BF16 or AMX"):
        precision.check_precision("bf16")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    precision.check_precision("bf16")
    with pytest.raises(ConvnetError):
        precision.check_precision("fp16")


def test_int8_needs_calibration_inputs(net_path, tmp_path):
    r = invoke(net_path, "--onnx", tmp_path / "q.onnx", "--precision", "int8")
    assert r.exit_code == 2 and r.stderr.startswith("error: --precision int8 needs --calibration")
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((4, 3, 8, 8), np.float32))
    r = invoke(net_path, "--onnx", tmp_path / "q.onnx", "--precision", "int8", "--calibration", bad)
    assert r.exit_code == 2 and "do not fit the net's input" in r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_int8_export_is_quantized_and_close_on_its_calibration_data(net_path, tmp_path):
    rng = np.random.default_rng(0)
    calib = tmp_path / "calib.npy"
    np.save(calib, (rng.standard_normal((16, 3, 16, 16)) * 50).astype(np.float32))
    out = tmp_path / "q.onnx"
    r = invoke(net_path, "--onnx", out, "--precision", "int8", "--calibration", calib, "--device", "cpu", "--json")
    assert r.exit_code in (0, 1), r.output
    info = json.loads(r.stdout)["outputs"]["onnx"]
    # checked against the fp32 module on all 16 calibration inputs, judged by top-1 agreement
    assert info["batches"] == [1, 15] and 0 < info["worst_rel"] <= 0.1
    assert info["ok"] == (info["top1_agreement"] >= 0.99) and (r.exit_code == 0) == info["ok"]
    model = onnx.load(str(out))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    int8 = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert any(t.name.startswith("conv1_w") for t in int8), [t.name for t in int8]


def test_forward_int8_and_bf16(net_path, tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((4, 3, 16, 16)) * 50).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "calib.npy", (rng.standard_normal((16, 3, 16, 16)) * 50).astype(np.float32))
    runner = CliRunner()

    def forward(*extra):
        return runner.invoke(cli, ["forward", str(net_path), "--input", f"data={tmp_path / 'x.npy'}", "-o",
                                   str(tmp_path / "o.npz"), *map(str, extra)], catch_exceptions=False)

    assert forward().exit_code == 0
    fp32 = np.load(tmp_path / "o.npz")["ip1"]
    r = forward("--precision", "int8", "--calibration", tmp_path / "calib.npy")
    assert r.exit_code == 0, r.output
    int8 = np.load(tmp_path / "o.npz")["ip1"]
    assert not np.array_equal(int8, fp32) and np.abs(int8 - fp32).max() <= 0.1 * np.abs(fp32).max()
    r = forward("--precision", "int8")
    assert r.exit_code == 2 and r.stderr.strip() == \
        "error: --precision int8 needs --calibration NPY: inputs to measure activation ranges on"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    r = forward("--precision", "bf16")
    assert r.exit_code == 2 and "AVX512-BF16 or AMX" in r.stderr and len(r.stderr.strip().splitlines()) == 1
