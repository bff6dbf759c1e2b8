"""The ONNX Runtime check of ``convnet export --onnx``: one session for both batches, one pass of
the PyTorch module, the two sides overlapping on two threads, and still a check that fails when the
file and the net disagree."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from helpers import input_layer

from convnet_io.api.loading import load_blobs, load_graph
from convnet_io.onnx_export.writer import export_to_file
from convnet_io.tools import convert
from convnet_io.tools.overlap import Background, preload

NET = input_layer((1, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" lrn_param { local_size: 3 alpha: 0.1 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


@pytest.fixture
def written(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    graph = load_graph(path)
    blobs, _ = load_blobs(graph, None, seed=3)
    model = export_to_file(graph, blobs, tmp_path / "net.onnx").model
    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    return graph, blobs, tmp_path / "net.onnx", names


def _counting(monkeypatch):
    """Count ONNX Runtime sessions made and PyTorch modules built by the check."""
    import convnet_io.runtimes.onnxruntime_session as ors

    counts = {"sessions": 0, "modules": 0}
    make_session, module_net = ors.make_session, convert._module_net

    def counted_session(*a, **k):
        counts["sessions"] += 1
        return make_session(*a, **k)

    def counted_module(*a, **k):
        counts["modules"] += 1
        return module_net(*a, **k)

    monkeypatch.setattr(ors, "make_session", counted_session)
    monkeypatch.setattr(convert, "_module_net", counted_module)
    return counts


def test_overlapped_check_is_the_serial_one(written, monkeypatch):
    graph, blobs, path, names = written
    counts = _counting(monkeypatch)
    both = convert.validate_file(graph, blobs, path, device="cpu", names=names)
    assert counts == {"sessions": 1, "modules": 1}  # one session for both batches, one module pass
    alone = convert.validate_file(graph, blobs, path, device="cpu")  # names unknown: session first
    assert counts == {"sessions": 2, "modules": 2}
    assert both == alone
    assert both["ok"] and both["batches"] == [1, 7] and both["provider"] == "CPUExecutionProvider"
    assert set(both["per_output"]) == {"prob"} and 0 <= both["worst_rel"] <= 1e-5


def test_onnxruntime_runs_while_the_module_runs(written, monkeypatch):
    """The session is made while the PyTorch side computes: ONNX Runtime's side waits for the
    module's pass to start and still finishes (serially it would wait for ever: the timeout)."""
    import convnet_io.runtimes.onnxruntime_session as ors

    graph, blobs, path, names = written
    started, seen = threading.Event(), []
    make_session, reference = ors.make_session, convert._reference

    def waiting_session(*a, **k):
        seen.append(started.wait(timeout=30))
        return make_session(*a, **k)

    def signalling_reference(*a, **k):
        started.set()
        return reference(*a, **k)

    monkeypatch.setattr(ors, "make_session", waiting_session)
    monkeypatch.setattr(convert, "_reference", signalling_reference)
    assert convert.validate_file(graph, blobs, path, device="cpu", names=names)["ok"]
    assert seen == [True]


def test_the_module_pass_runs_on_one_torch_thread(written, monkeypatch):
    """The module's pass runs with torch on one thread (ONNX Runtime has the other core; no OpenMP
    pool started for it), and the caller's thread count comes back, also when the pass fails."""
    import torch

    graph, blobs, path, names = written
    seen, module_net = [], convert._module_net

    def counting(*a, **k):
        seen.append(torch.get_num_threads())
        return module_net(*a, **k)

    monkeypatch.setattr(convert, "_module_net", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert convert.validate_file(graph, blobs, path, device="cpu", names=names)["ok"]
        assert seen == [1] and torch.get_num_threads() == 2

        def broken(*a, **k):
            raise RuntimeError("the module failed")

        monkeypatch.setattr(convert, "_module_net", broken)
        with pytest.raises(RuntimeError, match="the module failed"):
            convert.validate_file(graph, blobs, path, device="cpu", names=names)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_wrong_names_fall_back_to_the_sessions(written):
    """Names that are not the model's: the module runs again for the outputs the session has."""
    graph, blobs, path, names = written
    result = convert.validate_file(graph, blobs, path, device="cpu", names=(names[0], ["ip1"]))
    assert result["ok"] and set(result["per_output"]) == {"prob"}


def test_the_check_fails_when_the_file_holds_other_weights(written):
    """The reference is the PyTorch module built from the blobs, not the file: a file written from
    other weights fails."""
    graph, blobs, path, names = written
    other, _ = load_blobs(graph, None, seed=4)
    export_to_file(graph, other, path)
    result = convert.validate_file(graph, blobs, path, device="cpu", names=names)
    assert not result["ok"] and result["worst_rel"] > 1e-3


def test_the_check_fails_when_the_module_disagrees(written, monkeypatch):
    """The other way round: a PyTorch side that computes something else is caught."""
    graph, blobs, path, names = written
    reference = convert._reference

    def off(*a, **k):
        return [{n: v + 0.01 for n, v in part.items()} for part in reference(*a, **k)]

    monkeypatch.setattr(convert, "_reference", off)
    assert not convert.validate_file(graph, blobs, path, device="cpu", names=names)["ok"]


def test_onnxruntime_error_reaches_the_caller(written, tmp_path):
    graph, blobs, _, names = written
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(Exception, match="(?i)protobuf|parse|load|invalid"):
        convert.validate_file(graph, blobs, bad, device="cpu", names=names)


def test_background_returns_and_raises():
    assert Background(lambda a, b: a + b, 2, 3).result() == 5

    def fail():
        raise ValueError("from the thread")

    with pytest.raises(ValueError, match="from the thread"):
        Background(fail).result()
    job = preload("json", "numpy")
    assert [m.__name__ for m in job.result()] == ["json", "numpy"] and job.done()


def test_convert_to_onnx_checks_once(tmp_path, monkeypatch):
    path = tmp_path / "net.prototxt"
    path.write_text(NET)
    counts = _counting(monkeypatch)
    c = convert.convert_to_onnx(path, tmp_path / "net.onnx", device="cpu")
    assert c.check["ok"] and c.check["batches"] == [1, 7]
    assert counts == {"sessions": 1, "modules": 1}
    c = convert.convert_to_onnx(path, tmp_path / "net.onnx", device="cpu", static_batch=True)
    assert c.check["ok"] and c.check["batches"] == [1]


# -- the reference module over the blobs' arrays ---------------------------------------------------
AVE = input_layer((1, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
"""

SHARED = input_layer((1, 3, 8, 8)) + """
layer { name: "a" type: "Convolution" bottom: "data" top: "a" param { name: "w" } param { name: "b" }
        convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "b" type: "Convolution" bottom: "a" top: "b" param { name: "w" } param { name: "b" }
        convolution_param { num_output: 3 kernel_size: 1 } }
"""


def _ordinary(graph, blobs):
    from convnet_io.api.net import Net
    from convnet_io.torch_model import CaffeModule

    net = Net(graph, CaffeModule(graph), backend="torch")
    net.set_blobs(blobs)
    return net


@pytest.mark.parametrize("text,over_blobs", [(NET, True), (AVE, True), (SHARED, False)], ids=["lrn", "ave", "shared"])
def test_reference_module_over_the_blobs(tmp_path, text, over_blobs):
    """Built over the arrays (average pooling keeps the divisors its constructor computes); the
    ordinary build where blobs are shared by name; the same outputs either way."""
    from convnet_io.tools.check_module import holds_meta, module_net, net_over_blobs

    path = tmp_path / "net.prototxt"
    path.write_text(text)
    graph = convert._at_batch(load_graph(path), 5)
    blobs, _ = load_blobs(graph, None, seed=3)
    fast = net_over_blobs(graph, blobs)
    assert (fast is not None) == over_blobs
    net = module_net(graph, blobs)
    assert not holds_meta(net.module)
    if over_blobs:  # the blobs are the arrays themselves, not copies
        w = net.module.caffe_blobs()["conv1"][0]
        assert w.data_ptr() == blobs["conv1"][0].ctypes.data
    x = {"data": np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32) * 50}
    outs = list(graph.outputs)
    got, want = net.run_values(x, outs), _ordinary(graph, blobs).run_values(x, outs)
    for name in outs:
        np.testing.assert_array_equal(got[name], want[name])


def test_read_only_blobs_are_copied(written):
    from convnet_io.tools.check_module import net_over_blobs

    graph, blobs, _, _ = written
    frozen = {k: [b.copy() for b in v] for k, v in blobs.items()}
    for v in frozen.values():
        for b in v:
            b.flags.writeable = False
    net = net_over_blobs(graph, frozen)
    w = net.module.caffe_blobs()["conv1"][0]
    assert w.data_ptr() != frozen["conv1"][0].ctypes.data
    np.testing.assert_array_equal(w.numpy(), frozen["conv1"][0])


def test_a_failing_reference_waits_for_onnxruntime(written, monkeypatch):
    """The module's error is the one raised, once ONNX Runtime's side has ended."""
    graph, blobs, path, names = written
    ended = []
    outputs = convert._onnxruntime_outputs

    def slow(*a, **k):
        import time

        time.sleep(0.5)
        result = outputs(*a, **k)
        ended.append(True)
        return result

    def broken(*a, **k):
        raise RuntimeError("the module failed")

    monkeypatch.setattr(convert, "_onnxruntime_outputs", slow)
    monkeypatch.setattr(convert, "_reference", broken)
    with pytest.raises(RuntimeError, match="the module failed"):
        convert.validate_file(graph, blobs, path, device="cpu", names=names)
    assert ended == [True]


def test_a_module_keeping_another_meta_tensor_is_found():
    import torch

    from convnet_io.tools.check_module import holds_meta

    class Keeps(torch.nn.Module):
        def __init__(self, where):
            super().__init__()
            t = torch.zeros(3, device="meta")
            if where == "attribute":
                self.t = t
            elif where == "list":
                self.ts = [torch.ones(1), t]
            elif where == "buffer":
                self.register_buffer("t", t, persistent=False)

    for where in ("attribute", "list", "buffer"):
        assert holds_meta(torch.nn.Sequential(Keeps(where))), where
    assert not holds_meta(torch.nn.Sequential(Keeps("nowhere"), torch.nn.Linear(2, 2)))


# -- how the bench measures the check's cost -------------------------------------------------------
def test_bench_check_cost_is_paired_round_by_round(tmp_path, monkeypatch):
    """The check's cost is the median of each round's difference to the floor timed next to it, and
    every command runs from bytecode under the bench's own prefix."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import convert_bench

    # load that drifts between rounds cancels: 3 s, 5 s, 4 s floors, each check 0.25 s above its floor
    assert convert_bench.paired([3.25, 5.25, 4.25], [3.0, 5.0, 4.0]) == pytest.approx(0.25)
    assert convert_bench.paired([3.0], []) is None  # a failed floor: no pairs
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    env = convert_bench.bytecode_env(tmp_path)
    assert "PYTHONDONTWRITEBYTECODE" not in env and env["PYTHONPYCACHEPREFIX"] == str(tmp_path)
    fresh, total = convert_bench.tree_bytecode()
    assert 0 <= fresh <= total and total > 100
