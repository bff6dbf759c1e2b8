"""OpenVINO in throughput mode (``openvino-streams``): the batch split into one slice per stream,
run concurrently, the slices' outputs joined — the same numbers as the single-stream session — and
``auto`` running it where the engine table names it (skipped without the ``openvino`` extra)."""
from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("openvino")

from helpers import input_layer, rel_err

import convnet_io
from convnet_io.runtimes import engine_table
from convnet_io.runtimes.openvino_session import OpenVinoSession

NET = input_layer((2, 3, 12, 12)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


def _net(tmp_path, text: str = NET, name: str = "Tiny", backend: str = "auto"):
    path = tmp_path / "net.prototxt"
    path.write_text(f'name: "{name}"\n' + text)
    return convnet_io.load(path, seed=4, backend=backend)


def _model(net) -> bytes:
    from convnet_io.onnx_export import export_onnx
    from convnet_io.runtimes.runners import mark_all_outputs

    return mark_all_outputs(export_onnx(net.graph, net.blobs()), net.graph).SerializeToString()


def test_streams_split_the_batch_and_give_the_single_stream_numbers(tmp_path):
    net = _net(tmp_path)
    model = _model(net)
    one, two = OpenVinoSession(model), OpenVinoSession(model, streams=2)
    assert two.compiled.get_property("NUM_STREAMS") == 2
    x = np.random.default_rng(0).standard_normal((5, 3, 12, 12)).astype(np.float32)
    names = ["conv1", "ip1", "prob"]
    for batch in (5, 1):  # 5: slices of 3 and 2; 1: a single request
        want = one.run(names, {"data": x[:batch]})
        got = two.run(names, {"data": x[:batch]})
        for g, w in zip(got, want):
            assert g.shape == w.shape and np.array_equal(g, w)
    eager = net.run_values({"data": x}, ["prob"])["prob"]
    assert rel_err(two.run(["prob"], {"data": x})[0], eager) <= 1e-5
    # the slices' outputs are copies: a later call does not change an earlier result
    first = two.run(["prob"], {"data": x})[0].copy()
    kept = two.run(["prob"], {"data": x})[0]
    two.run(["prob"], {"data": -x})
    assert np.array_equal(kept, first)


def test_auto_runs_openvino_streams_where_the_table_names_it(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Tiny": {1: "openvino", 4: "openvino-streams"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    net = _net(tmp_path)
    x = np.random.default_rng(1).standard_normal((4, 3, 12, 12)).astype(np.float32)
    got = net.forward({"data": x})["prob"]
    session, _ = net._ort[("openvino-streams", ("prob",))]
    assert session.streams == (os.cpu_count() or 1)  # one stream per core
    assert rel_err(got, net.run_values({"data": x}, ["prob"])["prob"]) <= 1e-5
    one = net.forward({"data": x[:1]})["prob"]
    assert ("openvino", ("prob",)) in net._ort
    assert rel_err(one, net.run_values({"data": x[:1]}, ["prob"])["prob"]) <= 1e-5


def test_auto_keeps_a_layer_openvino_refuses_on_onnxruntime(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Tiny": {1: "openvino-streams"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    text = input_layer((2, 3, 6, 6)) + """
layer { name: "norm" type: "LRN" bottom: "data" top: "norm" lrn_param { local_size: 7 } }
layer { name: "ip1" type: "InnerProduct" bottom: "norm" top: "ip1" inner_product_param { num_output: 3 } }
"""
    net = _net(tmp_path, text)
    x = np.random.default_rng(2).standard_normal((2, 3, 6, 6)).astype(np.float32)
    got = net.forward({"data": x})["ip1"]
    assert ("onnxruntime", ("ip1",)) in net._ort and not any(str(k[0]).startswith("openvino") for k in net._ort)
    assert rel_err(got, net.run_values({"data": x}, ["ip1"])["ip1"]) <= 1e-5
