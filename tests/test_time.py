"""`convnet time`: per-layer forward/backward times with the torch and ONNX Runtime backends."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from convnet_cli.main import cli

from convnet_io import load
from convnet_io.onnx_export import export_onnx
from convnet_io.tools.timing_onnxruntime import _LayerMatcher, onnx_node_layers

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 2 dim: 3 dim: 24 dim: 24 } shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc1" type: "InnerProduct" bottom: "pool1" top: "fc1"
        inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "fc2" type: "InnerProduct" bottom: "fc1" top: "fc2"
        inner_product_param { num_output: 5 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc2" bottom: "label" top: "loss" }
"""
LAYERS = ["conv1", "relu1", "norm1", "pool1", "fc1", "relu2", "fc2", "loss"]
INFERENCE_LAYERS = LAYERS[:-1]


@pytest.fixture(scope="module")
def net_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("time") / "small.prototxt"
    path.write_text(NET)
    return str(path)


def invoke(*args):
    result = CliRunner().invoke(cli, ["time", *args])
    assert result.exit_code == 0, result.output
    return result.output


def invoke_json(*args):
    return json.loads(invoke(*args, "--json"))


def check_rows(data, names, backward=False):
    assert [r["name"] for r in data["layers"]] == names
    for r in data["layers"]:
        assert r["forward_ms"] >= 0 and r["share"] >= 0
        assert ("backward_ms" in r) == backward
        if backward:
            assert r["backward_ms"] >= 0
    assert sum(r["share"] for r in data["layers"]) == pytest.approx(100.0, abs=1e-6)
    assert data["total_forward_ms"] == pytest.approx(sum(r["forward_ms"] for r in data["layers"]))
    assert data["total_forward_ms"] > 0 and data["wall_forward_ms"] > 0


def test_text_table_one_row_per_layer(net_path):
    out = invoke(net_path, "--iterations", "3", "--warmup", "1")
    lines = out.splitlines()
    rows = {}
    for line in lines:
        parts = line.split()
        if parts and parts[0] in LAYERS:
            rows[parts[0]] = parts
    assert list(rows) == LAYERS  # net order
    shares = [float(r[-1].rstrip("%")) for r in rows.values()]
    times = [float(r[-2]) for r in rows.values()]
    assert all(t >= 0 for t in times)
    assert sum(shares) == pytest.approx(100.0, abs=0.5)
    assert any(line.startswith("total") for line in lines)
    assert "wall: forward pass" in out


def test_json_forward(net_path):
    data = invoke_json(net_path, "--iterations", "3", "--warmup", "1")
    assert data["backend"] == "torch" and data["batch"] == 2 and data["iterations"] == 3
    check_rows(data, LAYERS)
    assert {r["name"]: r["type"] for r in data["layers"]}["norm1"] == "LRN"
    assert "total_backward_ms" not in data


def test_json_backward(net_path):
    data = invoke_json(net_path, "--iterations", "2", "--warmup", "1", "--backward")
    check_rows(data, LAYERS, backward=True)
    by = {r["name"]: r for r in data["layers"]}
    # layers with learnable blobs do real backward work; the loss propagates to fc2
    assert by["conv1"]["backward_ms"] > 0 and by["fc2"]["backward_ms"] > 0 and by["loss"]["backward_ms"] > 0
    assert data["total_backward_ms"] == pytest.approx(sum(r["backward_ms"] for r in data["layers"]))
    assert data["wall_backward_ms"] > 0
    assert data["total_ms"] == pytest.approx(data["total_forward_ms"] + data["total_backward_ms"])


def test_sort_and_batch(net_path):
    data = invoke_json(net_path, "--iterations", "2", "--warmup", "0", "--sort", "--batch", "3")
    assert data["batch"] == 3
    totals = [r["forward_ms"] for r in data["layers"]]
    assert totals == sorted(totals, reverse=True)
    assert sorted(r["name"] for r in data["layers"]) == sorted(LAYERS)


def test_onnxruntime_backend(net_path):
    data = invoke_json(net_path, "--backend", "onnxruntime", "--iterations", "3", "--warmup", "1")
    assert data["backend"] == "onnxruntime" and data["device"].endswith("ExecutionProvider")
    check_rows(data, INFERENCE_LAYERS)  # the exported (inference) model: no loss layer
    by = {r["name"]: r for r in data["layers"]}
    for name in ("conv1", "norm1", "pool1", "fc1", "fc2"):
        assert by[name]["onnx_nodes"], name
        assert by[name]["forward_ms"] > 0, name
    # every node ORT ran is a layer's own node or one of the layout reorders ORT inserts
    notes = " ".join(data.get("notes", []))
    if "ORT-inserted" in notes:
        inserted = notes.split("follow (others): ")[1].split(" no ORT node")[0]
        assert all(n.strip().startswith("Reorder") for n in inserted.split(",")), notes
    out = invoke(net_path, "--backend", "onnxruntime", "--iterations", "2", "--warmup", "0")
    assert "backend: onnxruntime" in out


def test_backward_needs_torch(net_path):
    result = CliRunner().invoke(cli, ["time", net_path, "--backend", "onnxruntime", "--backward"])
    assert result.exit_code == 2
    assert "--backward needs --backend torch" in result.output


def test_onnx_node_names_map_to_layers(net_path):
    net = load(net_path)
    blobs = net.blobs()
    model = export_onnx(net.graph, blobs)
    mapping = onnx_node_layers(net.graph, blobs)
    assert {n.name for n in model.graph.node} == set(mapping)
    assert set(mapping.values()) <= set(INFERENCE_LAYERS)
    from convnet_io.graph import inference_view

    match = _LayerMatcher(inference_view(net.graph), mapping)
    # names as ONNX Runtime's optimizer rewrites them
    assert match("fused fc1") == "fc1"
    assert match("fused fc1_1") == "fc1"  # a de-duplicated node name
    assert match("fc1/flatten") == "fc1"
    assert match("conv1:1_nchwc") == "conv1"  # Conv fused with relu1, named after relu1's output
    assert match("pool1_nchwc") == "pool1"
    assert match("ReorderOutput_token_3") is None
