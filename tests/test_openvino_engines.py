"""OpenVINO in throughput mode (``openvino-streams``): the batch split into one slice per stream,
run concurrently, the slices' outputs joined — the same numbers as the single-stream session; the
split engine (``openvino+onnxruntime``: OpenVINO's trunk, ONNX Runtime's InnerProduct head); and
``auto`` running each where the engine table names it (skipped without the ``openvino`` extra)."""
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


def test_split_session_runs_the_trunk_in_openvino_and_the_head_in_onnxruntime(tmp_path):
    from convnet_io.onnx_export import export_onnx
    from convnet_io.runtimes.split_session import SplitSession

    net = _net(tmp_path)
    x = np.random.default_rng(3).standard_normal((3, 3, 12, 12)).astype(np.float32)
    split = SplitSession(export_onnx(net.graph, net.blobs()).SerializeToString())
    assert split.cut == "conv1:1" and split.head is not None  # after the ReLU, before the InnerProduct
    assert split.get_providers() == ["OpenVINO CPU", "CPUExecutionProvider"]
    assert [o.name for o in split.get_outputs()] == ["prob"]
    got = split.run(["prob"], {"data": x})[0]
    assert rel_err(got, net.run_values({"data": x}, ["prob"])["prob"]) <= 1e-5
    # a trunk value asked for, or a net without an InnerProduct head: all of it in OpenVINO
    whole = SplitSession(_model(net))
    assert whole.head is None
    assert rel_err(whole.run(["conv1"], {"data": x})[0], net.run_values({"data": x}, ["conv1"])["conv1"]) <= 1e-5


def test_auto_runs_the_split_engine_where_the_table_names_it(tmp_path, monkeypatch):
    from convnet_io.runtimes.split_session import SplitSession

    path = tmp_path / "t.json"
    engine_table.write_table(path, {"cpu": {"Tiny": {1: "openvino+onnxruntime"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(path))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    net = _net(tmp_path)
    x = np.random.default_rng(4).standard_normal((2, 3, 12, 12)).astype(np.float32)
    for _ in range(engine_table.COMPILE_AFTER_CALLS - 1):  # a one-shot call: OpenVINO alone, no second session
        net.forward({"data": x})
    assert list(k[0] for k in net._ort if len(k) == 2 and isinstance(k[1], tuple)) == ["openvino"]
    got = net.forward({"data": x})["prob"]
    session, _ = net._ort[("openvino+onnxruntime", ("prob",))]
    assert isinstance(session, SplitSession) and session.head is not None
    assert rel_err(got, net.run_values({"data": x}, ["prob"])["prob"]) <= 1e-5
    blobs = net.forward({"data": x}, blobs=["conv1", "prob"])  # a trunk blob too: all in OpenVINO
    assert rel_err(blobs["conv1"], net.run_values({"data": x}, ["conv1:1"])["conv1:1"]) <= 1e-5  # after ReLU


def test_a_streams_session_is_freed_when_dropped(tmp_path):
    """The queue's callback holds the slices, not the session: nothing keeps a dropped session."""
    import gc
    import weakref

    session = OpenVinoSession(_model(_net(tmp_path)), streams=2)
    x = np.random.default_rng(5).standard_normal((4, 3, 12, 12)).astype(np.float32)
    assert session.run(["prob"], {"data": x})[0].shape == (4, 5)
    ref = weakref.ref(session)
    del session
    gc.collect()
    assert ref() is None
