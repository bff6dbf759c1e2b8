"""``backend="auto"``: the engine the recorded bench table names for the net and batch size, with
ONNX Runtime when there is no table, no row, or the engine is not installed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import input_layer, rel_err

import convnet_io
from convnet_io.runtimes import engine_table
from convnet_io.runtimes.engine_table import choose_engine

TABLE = {"cpu": {"AlexNet": {"1": "openvino", "32": "torch.compile"}, "*": {"1": "torch", "16": "onnxruntime"}}}
NET = input_layer((2, 3, 12, 12)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
"""


@pytest.fixture
def no_openvino(monkeypatch):
    import convnet_io.runtimes.openvino_session as ovs

    monkeypatch.setattr(ovs, "openvino_available", lambda: False)


def test_batches_pick_the_largest_recorded_not_above(no_openvino):
    assert choose_engine("AlexNet", 32, table=TABLE) == "torch.compile"
    assert choose_engine("AlexNet", 256, table=TABLE) == "torch.compile"
    assert choose_engine("Other", 1, table=TABLE) == "torch"
    assert choose_engine("Other", 8, table=TABLE) == "torch"
    assert choose_engine("Other", 16, table=TABLE) == "onnxruntime"


def test_defaults(no_openvino):
    assert choose_engine("AlexNet", 1, table=TABLE) == "onnxruntime"  # openvino recorded, not installed
    assert choose_engine("AlexNet", 4, "cuda", table=TABLE) == "onnxruntime"  # no row for the device
    assert choose_engine("AlexNet", 1, table={}) == "onnxruntime"
    assert choose_engine("AlexNet", 1, table={"cpu": {"AlexNet": {"x": "torch"}}}) == "onnxruntime"
    assert choose_engine("AlexNet", 1, table={"cpu": {"AlexNet": {"1": "no-such-engine"}}}) == "onnxruntime"
    # OpenVINO's throughput mode, recorded where OpenVINO is missing
    assert choose_engine("AlexNet", 32, table={"cpu": {"AlexNet": {"32": "openvino-streams"}}}) == "onnxruntime"


def test_openvino_streams_is_an_engine_where_openvino_is_installed(monkeypatch):
    import convnet_io.runtimes.openvino_session as ovs

    monkeypatch.setattr(ovs, "openvino_available", lambda: True)
    assert choose_engine("AlexNet", 32, table={"cpu": {"AlexNet": {"1": "openvino", "32": "openvino-streams"}}}) \
        == "openvino-streams"


def test_table_file_round_trip_and_unreadable_file(tmp_path, monkeypatch, no_openvino):
    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Net": {1: "torch", 32: "onnxruntime"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    assert json.loads(path.read_text())["cpu"]["Net"] == {"1": "torch", "32": "onnxruntime"}
    assert choose_engine("Net", 1) == "torch" and choose_engine("Net", 64) == "onnxruntime"
    path.write_text("{not json")
    assert choose_engine("Net", 1) == "onnxruntime"
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(tmp_path / "missing.json"))
    assert choose_engine("Net", 1) == "onnxruntime"


def _net(tmp_path: Path, name: str):
    path = tmp_path / "net.prototxt"
    path.write_text(f'name: "{name}"\n' + NET)
    return convnet_io.load(path, seed=4)


def test_auto_runs_what_the_table_names(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Tiny": {1: "torch", 3: "onnxruntime"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    net = _net(tmp_path, "Tiny")
    x = np.random.default_rng(0).standard_normal((3, 3, 12, 12)).astype(np.float32)
    one = net.forward({"data": x[:1]})["ip1"]
    assert not any(k[0] == "onnxruntime" for k in net._ort if isinstance(k, tuple))  # batch 1: PyTorch
    three = net.forward({"data": x})["ip1"]
    assert ("onnxruntime", ("ip1",)) in net._ort  # batch 3: ONNX Runtime
    want = net.run_values({"data": x}, ["ip1"])["ip1"]
    assert rel_err(one, want[:1]) <= 1e-5 and rel_err(three, want) <= 1e-5


def test_auto_torch_compile_is_compiled_once_per_shape(tmp_path, monkeypatch):
    import functools

    import torch

    from convnet_io.runtimes import compiled

    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Tiny": {1: "torch.compile"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    # Dynamo's eager backend: the same capture and caching, without inductor's code generation
    # (a minute on a loaded 2-core machine; the bench compiles with inductor for real).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    made = []
    real = compiled.compile_fetch
    monkeypatch.setattr(compiled, "compile_fetch", lambda *a: made.append(a) or real(*a))
    net = _net(tmp_path, "Tiny")
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    for _ in range(engine_table.COMPILE_AFTER_CALLS - 1):  # the first calls: ONNX Runtime, no compile
        assert rel_err(net.forward({"data": x})["ip1"], net.run_values({"data": x}, ["ip1"])["ip1"]) <= 1e-5
    assert made == [] and ("onnxruntime", ("ip1",)) in net._ort
    first = net.forward({"data": x})["ip1"]
    second = net.forward({"data": x + 1})["ip1"]
    assert len(made) == 1
    assert rel_err(first, net.run_values({"data": x}, ["ip1"])["ip1"]) <= 1e-5
    assert rel_err(second, net.run_values({"data": x + 1}, ["ip1"])["ip1"]) <= 1e-5
    key = next(k for k in net._ort if k[0] == "torch.compile")
    net.set_blobs({k: [b * 2 for b in v] for k, v in net.blobs().items()})
    assert key in net._ort and net._weights_key() != net._ort_weights  # the next call drops the stale graph
