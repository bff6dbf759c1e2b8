"""`convnet test`, `extract-features`, `draw`, `pycaffe SCRIPT` and the rest of pycaffe's Net:
checked against `convnet train`'s own test pass, float64 NumPy references, and pycaffe's rules."""
# ruff: noqa: C408  (the BVLC examples' code, kept as written: dict(...) calls)
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from pycaffe_reference import digits_images, lenet_forward, make_digits

import convnet_io.pycaffe as caffe
import convnet_io.pycaffe.draw  # noqa: F401  (caffe.draw is imported by name, as in pycaffe)
from convnet_io.caffe.caffemodel import read_caffemodel
from convnet_io.errors import ConvnetError
from convnet_io.pycaffe import layers as L
from convnet_io.pycaffe import params as P

ROOT = Path(__file__).resolve().parent.parent


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def lenet(lmdb, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=str(lmdb),
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    n.accuracy = L.Accuracy(n.score, n.label)
    return n.to_proto()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Digits LMDBs, LeNet nets written by NetSpec, a solver, and `convnet train` run on it once
    (one test pass, at the end, over 4 batches of 90 = the 360 test digits)."""
    root = make_digits(tmp_path_factory.mktemp("digits"))
    (root / "train.prototxt").write_text(str(lenet(root / "train_lmdb", 64)))
    (root / "test.prototxt").write_text(str(lenet(root / "test_lmdb", 90)))
    (root / "solver.prototxt").write_text(f'''train_net: "{root / 'train.prototxt'}"
test_net: "{root / 'test.prototxt'}"
test_iter: 4
test_interval: 20
test_initialization: false
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 0
max_iter: 20
snapshot_prefix: "{root / 'lenet'}"
random_seed: 1
''')
    r = invoke("train", "--solver", root / "solver.prototxt", "--workers", "0", "--log-json", root / "metrics.jsonl")
    assert r.exit_code == 0, r.output
    return root


def test_convnet_test_reports_train_test_pass(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    train_test = [r for r in records if r["phase"] == "test"][-1]
    r = invoke("test", "--model", trained / "test.prototxt", "--weights", trained / "lenet_iter_20.caffemodel",
               "--iterations", 4, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert report["outputs"]["accuracy"] == train_test["accuracy"]
    assert abs(report["outputs"]["loss"] - train_test["loss"]) < 1e-6
    assert abs(report["loss"] - report["outputs"]["loss"]) < 1e-9  # loss weight 1, the only loss
    # float64 NumPy over the 360 test digits with the snapshot's weights
    weights = {lb.name: lb.blobs for lb in read_caffemodel(trained / "lenet_iter_20.caffemodel")}
    x, y = digits_images(trained)
    ref = (lenet_forward(x / 255, weights)["score"].argmax(1) == y).mean()
    assert abs(report["outputs"]["accuracy"] - ref) <= 1 / 360
    print(f"convnet test accuracy {report['outputs']['accuracy']:.6f} loss {report['outputs']['loss']:.6f}; "
          f"convnet train's test pass {train_test['accuracy']:.6f} / {train_test['loss']:.6f}; float64 {ref:.6f}")
    text = invoke("test", "--model", trained / "test.prototxt", "--weights", trained / "lenet_iter_20.caffemodel",
                  "--iterations", 4)
    assert text.exit_code == 0 and f"accuracy = {report['outputs']['accuracy']:g}" in text.output
    assert "loss = " in text.output and "(* 1 = " in text.output and text.output.startswith("Loss: ")


def test_pycaffe_solver_is_convnet_train(trained, tmp_path):
    """SGDSolver.solve() and `convnet train` run one loop. `convnet train` keeps LeNet's blobs
    channels-last on a CPU (pycaffe scripts see NCHW arrays), so the convolutions sum in another
    order: after 20 steps the weights agree to float32 rounding, not bit for bit."""
    text = (trained / "solver.prototxt").read_text().replace(str(trained / "lenet"), str(tmp_path / "py"))
    (tmp_path / "solver.prototxt").write_text(text)
    solver = caffe.get_solver(str(tmp_path / "solver.prototxt"))
    assert solver.type == "SGD" and solver.iter == 0 and len(solver.test_nets) == 1
    solver.solve()
    assert solver.iter == 20
    ours = {lb.name: lb.blobs for lb in read_caffemodel(tmp_path / "py_iter_20.caffemodel")}
    theirs = {lb.name: lb.blobs for lb in read_caffemodel(trained / "lenet_iter_20.caffemodel")}
    for name, blobs in theirs.items():
        for a, b in zip(ours[name], blobs):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-3 * max(1.0, float(np.abs(b).max())))
    # restore: weights and iteration from the state; step continues
    restored = caffe.SGDSolver(str(tmp_path / "solver.prototxt"))
    restored.restore(str(tmp_path / "py_iter_20.solverstate"))
    assert restored.iter == 20
    np.testing.assert_array_equal(restored.net.params["score"][0].data, ours["score"][0])
    calls = []
    restored.add_callback(lambda: calls.append("start"), lambda: calls.append("gradients"))
    restored.step(2)
    assert restored.iter == 22 and calls == ["start", "gradients"] * 2
    # the typed constructors override the file's type, as pycaffe's do
    assert caffe.AdamSolver(str(tmp_path / "solver.prototxt")).type == "Adam"


def test_extract_features(trained, tmp_path):
    import lmdb

    from convnet_io.caffe.proto import caffe_pb2

    model, weights = trained / "test.prototxt", trained / "lenet_iter_20.caffemodel"
    r = invoke("extract-features", model, weights, "score,pool2", f"{tmp_path / 'score_lmdb'},{tmp_path / 'pool2_lmdb'}",
               "--batches", 2)
    assert r.exit_code == 0, r.output
    w = {lb.name: lb.blobs for lb in read_caffemodel(weights)}
    x, _ = digits_images(trained)
    ref = lenet_forward(x[:180] / 255, w)
    with lmdb.open(str(tmp_path / "score_lmdb"), readonly=True) as env, env.begin() as txn:
        items = list(txn.cursor())
    assert [k for k, _ in items][:2] == [b"0000000000", b"0000000001"] and len(items) == 180
    datum = caffe_pb2.Datum.FromString(items[7][1])
    assert (datum.channels, datum.height, datum.width) == (10, 1, 1)
    np.testing.assert_allclose(np.array(datum.float_data), ref["score"][7], atol=1e-4)
    with lmdb.open(str(tmp_path / "pool2_lmdb"), readonly=True) as env, env.begin() as txn:
        d = caffe_pb2.Datum.FromString(txn.get(b"0000000179"))
    assert (d.channels, d.height, d.width) == (50, 4, 4)
    np.testing.assert_allclose(np.array(d.float_data).reshape(50, 4, 4), ref["pool2"][179], atol=1e-4)
    r = invoke("extract-features", model, weights, "fc1", tmp_path / "fc1.npy", "--format", "npy")
    assert r.exit_code == 0, r.output
    np.testing.assert_allclose(np.load(tmp_path / "fc1.npy"), ref["fc1"][:90], atol=1e-4)
    r = invoke("extract-features", model, weights, "nope", tmp_path / "x.npy", "--format", "npy")
    assert r.exit_code == 2 and "unknown feature blob name nope" in r.output


LENET_DEPLOY = ROOT.parent / "shared" / "caffe-models" / "mnist" / "lenet.prototxt"


def test_draw_dot_text_and_rendering(tmp_path, monkeypatch):
    r = invoke("draw", LENET_DEPLOY, tmp_path / "lenet.dot", "--rankdir", "TB")
    assert r.exit_code == 0, r.output
    text = (tmp_path / "lenet.dot").read_text()
    assert "rankdir=TB;" in text and '"conv1_Convolution" [shape="record", style="filled", fillcolor="#FF5050"' in text
    assert 'label="conv1 (Convolution) kernel size: 5 stride: 1 pad: 0"' in text
    assert '"conv1_Convolution" -> "conv1_blob" [label="64x20x24x24"];' in text  # shapes on the edges
    assert '"relu1_ReLU" [shape="record", style="filled", fillcolor="#90EE90"' in text  # in place
    from convnet_io.caffe.prototxt import read_net

    net, _ = read_net(LENET_DEPLOY)
    if shutil.which("dot"):
        svg = caffe.draw.draw_net(net, "LR", ext="svg")
        assert svg.startswith(b"<?xml") and b"conv1" in svg
        r = invoke("draw", LENET_DEPLOY, tmp_path / "lenet.png")
        assert r.exit_code == 0 and (tmp_path / "lenet.png").read_bytes()[:4] == b"\x89PNG"
    monkeypatch.setenv("PATH", str(tmp_path))  # no graphviz: one clear line, exit 2
    r = invoke("draw", LENET_DEPLOY, tmp_path / "lenet.svg")
    assert r.exit_code == 2 and "graphviz's 'dot' program is not installed (apt-get install graphviz" in r.output


PY_LAYER = '''import caffe


class Scale(caffe.Layer):
    def setup(self, bottom, top):
        self.k = float(self.param_str)

    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)

    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data * self.k

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff * self.k
'''
PY_NET = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 3 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 4 } }
layer { name: "triple" type: "Python" bottom: "ip" top: "out"
        python_param { module: "scale_layer" layer: "Scale" param_str: "3" } }
'''
SCRIPT = '''import sys
import numpy as np
import caffe
from caffe.proto import caffe_pb2
import caffe.io

net = caffe.Net("net.prototxt", caffe.TEST)
x = np.arange(6, dtype=np.float32).reshape(2, 3)
out = net.forward(data=x)["out"]
w, b = net.params["ip"][0].data.astype(np.float64), net.params["ip"][1].data.astype(np.float64)
net.backward(out=np.ones((2, 4), np.float32))
print(sys.argv[1:], isinstance(caffe_pb2.NetParameter(), caffe_pb2.NetParameter),
      float(np.abs(out - 3 * (x @ w.T + b)).max()) < 1e-4,
      float(np.abs(net.params["ip"][0].diff - 3 * np.ones((4, 2)) @ x).max()) < 1e-4)
'''


def test_python_layer_script_unmodified(tmp_path, monkeypatch):
    (tmp_path / "scale_layer.py").write_text(PY_LAYER)
    (tmp_path / "net.prototxt").write_text(PY_NET)
    (tmp_path / "script.py").write_text(SCRIPT)
    monkeypatch.chdir(tmp_path)
    r = invoke("pycaffe", "script.py")  # not allowed: the layer and the flag are named
    assert r.exit_code == 2
    assert "layer 'triple' (Python)" in r.output and "--allow-python-layers" in r.output
    r = invoke("pycaffe", "--allow-python-layers", "script.py", "a", "--b")
    assert r.exit_code == 0, r.output
    assert r.output.strip() == "['a', '--b'] True True True"
    done = subprocess.run([sys.executable, "-m", "convnet_io.pycaffe", "--allow-python-layers", "script.py", "c"],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['c'] True True True"
    # the type exists only while an allowing net is built: elsewhere convnet knows no Python layer
    from convnet_io.graph.layers import get_spec

    assert get_spec("Python") is None


MEMORY_NET = '''layer { name: "mem" type: "MemoryData" top: "data" top: "label"
        memory_data_param { batch_size: 4 channels: 2 height: 1 width: 1 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" loss_weight: 2 }
'''


def test_net_surface(tmp_path):
    deploy = str(LENET_DEPLOY)
    net = caffe.Net(deploy, caffe.TEST)
    assert net.inputs == ["data"] and net.outputs == ["prob"]
    assert net._layer_names[:2] == ["data", "conv1"] and net.layers[1].type == "Convolution"
    assert list(net.layer_dict)[-1] == "prob" and net.top_names["relu1"] == ["ip1"]
    assert net.bottom_names["ip2"] == ["ip1"] and net.blobs["conv1"].num == 64
    assert (net.blobs["ip1"].channels, net.blobs["ip1"].height, net.blobs["ip1"].width) == (500, 1, 1)
    # forward_all pads the last batch and cuts the padding
    x = np.random.default_rng(0).random((70, 1, 28, 28), dtype=np.float32)
    out = net.forward_all(data=x)["prob"]
    w = {k: [b.data for b in v] for k, v in net.params.items()}
    ref = lenet_forward(x.astype(np.float64), w, ("conv1", "conv2", "ip1", "ip2"))["score"]
    e = np.exp(ref - ref.max(1, keepdims=True))
    np.testing.assert_allclose(out, e / e.sum(1, keepdims=True), atol=1e-5)
    assert out.shape == (70, 10)
    # save / copy_from, the three constructor forms, share_with
    net.params["ip2"][1].data[...] = 0.5
    net.save(str(tmp_path / "w.caffemodel"))
    for other in (caffe.Net(deploy, str(tmp_path / "w.caffemodel"), caffe.TEST),
                  caffe.Net(deploy, caffe.TEST, weights=str(tmp_path / "w.caffemodel"))):
        np.testing.assert_array_equal(other.params["ip2"][1].data, 0.5)
    fresh = caffe.Net(deploy, phase=caffe.TEST)
    fresh.share_with(net)
    net.params["conv1"][0].data[0] = 7
    assert (fresh.params["conv1"][0].data[0] == 7).all()
    with pytest.raises(TypeError, match="phase"):
        caffe.Net(deploy)
    # forward to a layer, then backward from it (pycaffe's start/end): ip1's weight gradient
    # for an all-ones diff is the column sums of its input
    net.blobs["data"].data[...] = x[:64]
    out = net.forward(end="ip1")
    assert list(out) == ["ip1"]
    before = net.params["ip1"][0].diff.copy()
    net.blobs["ip1"].diff[...] = 1.0
    net.backward(start="ip1")
    pool2 = net.blobs["pool2"].data.reshape(64, -1).astype(np.float64)
    np.testing.assert_allclose(net.params["ip1"][0].diff - before, np.ones((500, 64)) @ pool2, rtol=1e-5)
    # MemoryData, loss weights, backward from the loss
    (tmp_path / "mem.prototxt").write_text(MEMORY_NET)
    mem = caffe.Net(str(tmp_path / "mem.prototxt"), caffe.TRAIN)
    assert mem._blob_loss_weights["loss"] == 2 and mem._blob_loss_weights["ip"] == 0
    data = np.arange(16, dtype=np.float32).reshape(8, 2, 1, 1) / 10
    labels = np.array([0, 1, 2, 0, 1, 2, 0, 1], dtype=np.float32)
    mem.set_input_arrays(data, labels)
    mem.forward()
    mem.forward()
    np.testing.assert_array_equal(mem.blobs["data"].data, data[4:])
    W, b = mem.params["ip"][0].data.astype(np.float64), mem.params["ip"][1].data.astype(np.float64)
    s = data[4:, :, 0, 0] @ W.T + b
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert abs(float(mem.blobs["loss"].data) - (-np.log(p[np.arange(4), labels[4:].astype(int)]).mean())) < 1e-6
    mem.backward()
    p[np.arange(4), labels[4:].astype(int)] -= 1
    np.testing.assert_allclose(mem.params["ip"][0].diff, 2 * p.T @ data[4:, :, 0, 0] / 4, atol=1e-6)
    with pytest.raises(ConvnetError, match="multiple"):
        mem.set_input_arrays(data[:6], labels[:6])


def test_io_converters():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(caffe.io.blobproto_to_array(caffe.io.array_to_blobproto(a)), a)
    vec = caffe.io.arraylist_to_blobprotovector_str([a, a[0]])
    assert [x.shape for x in caffe.io.blobprotovector_str_to_arraylist(vec)] == [(2, 3, 4), (3, 4)]
    d = caffe.io.array_to_datum(a.astype(np.uint8), label=3)
    assert d.label == 3 and d.data == a.astype(np.uint8).tobytes()
    np.testing.assert_array_equal(caffe.io.datum_to_array(d), a.astype(np.uint8))
    f = caffe.io.array_to_datum(a)
    assert not f.HasField("label") and caffe.io.datum_to_array(f).dtype == np.float64
    crops = caffe.io.oversample([np.random.default_rng(1).random((10, 12, 3), dtype=np.float32)], (4, 6))
    assert crops.shape == (10, 4, 6, 3)
    t = caffe.io.Transformer({"data": (1, 3, 4, 4)})
    t.set_transpose("data", (2, 0, 1))
    t.set_channel_swap("data", (2, 1, 0))
    t.set_raw_scale("data", 255)
    t.set_mean("data", np.array([1.0, 2.0, 3.0]))
    t.set_input_scale("data", 0.5)
    img = np.random.default_rng(2).random((4, 4, 3), dtype=np.float32)
    x = t.preprocess("data", img)
    np.testing.assert_allclose(x, (img.transpose(2, 0, 1)[::-1] * 255 - np.array([1, 2, 3])[:, None, None]) * 0.5,
                               rtol=1e-6)
    np.testing.assert_allclose(t.deprocess("data", x), img, atol=1e-6)


def test_get_pydot_graph():
    pytest.importorskip("pydot")
    from convnet_io.caffe.prototxt import read_net

    net, _ = read_net(LENET_DEPLOY)
    graph = caffe.draw.get_pydot_graph(net, "TB", phase=caffe.TEST)
    names = {n.get_name().strip('"') for n in graph.get_nodes()}
    assert {"conv1_Convolution", "conv1_blob", "prob_Softmax"} <= names


TRAIN_NET = '''layer { name: "data" type: "DummyData" top: "data" top: "label"
        dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" }
                           data_filler { type: "constant" value: 1 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
SCALE
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "out" bottom: "label" top: "loss" }
'''
PYTHON_SCALE = ('layer { name: "triple" type: "Python" bottom: "ip" top: "out" '
                'python_param { module: "scale_layer" layer: "Scale" param_str: "3" } }')
POWER_SCALE = 'layer { name: "triple" type: "Power" bottom: "ip" top: "out" power_param { scale: 3 } }'


def test_train_and_diff_with_python_layers(tmp_path, monkeypatch):
    """`convnet train` with a Python layer trains as the same net with Caffe's Power layer does."""
    (tmp_path / "scale_layer.py").write_text(PY_LAYER)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, layer in (("py", PYTHON_SCALE), ("power", POWER_SCALE)):
        (tmp_path / f"{name}.prototxt").write_text(TRAIN_NET.replace("SCALE", layer))
        (tmp_path / f"{name}_solver.prototxt").write_text(
            f'net: "{tmp_path / name}.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 5\n'
            f'snapshot_prefix: "{tmp_path / name}"\nrandom_seed: 3\n')
    r = invoke("train", "--solver", tmp_path / "py_solver.prototxt", "--workers", 0)
    assert r.exit_code == 2 and "layer 'triple' (Python)" in r.output and "--allow-python-layers" in r.output
    r = invoke("train", "--solver", tmp_path / "py_solver.prototxt", "--workers", 0, "--allow-python-layers")
    assert r.exit_code == 0, r.output
    r = invoke("train", "--solver", tmp_path / "power_solver.prototxt", "--workers", 0)
    assert r.exit_code == 0, r.output
    py = {lb.name: lb.blobs for lb in read_caffemodel(tmp_path / "py_iter_5.caffemodel")}
    power = {lb.name: lb.blobs for lb in read_caffemodel(tmp_path / "power_iter_5.caffemodel")}
    for a, b in zip(py["ip"], power["ip"]):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    r = invoke("diff", tmp_path / "py.prototxt", tmp_path / "power.prototxt", "--allow-python-layers", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["ok"]


STAGED = '''layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
layer { name: "deploy_only" type: "InnerProduct" bottom: "data" top: "out" include { stage: "deploy" }
        inner_product_param { num_output: 3 } }
layer { name: "level2" type: "InnerProduct" bottom: "data" top: "out" include { min_level: 2 }
        inner_product_param { num_output: 5 } }
'''


def test_net_stages_and_level(tmp_path):
    (tmp_path / "staged.prototxt").write_text(STAGED)
    path = str(tmp_path / "staged.prototxt")
    assert caffe.Net(path, caffe.TEST, stages=["deploy"])._layer_names == ["data", "deploy_only"]
    assert caffe.Net(path, caffe.TEST, level=2)._layer_names == ["data", "level2"]
    assert caffe.Net(path, caffe.TEST).outputs == ["data"]


def test_globals_say_what_is_not_supported():
    timer = caffe.Timer()
    timer.start()
    timer.stop()
    assert timer.ms >= 0 and caffe.has_nccl() is False and caffe.solver_count() == 1
    with pytest.raises(NotImplementedError, match="convnet train --nproc"):
        caffe.NCCL(None, None)
    with pytest.warns(UserWarning, match="runs nets on the CPU"):
        caffe.set_mode_gpu()
    caffe.set_mode_cpu()
    assert "Convolution" in caffe.layer_type_list() and caffe.__version__ == "1.0.0"
