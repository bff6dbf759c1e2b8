"""Caffe2 NetDef pairs (predict_net.pb + init_net.pb): written from every shared deploy net and the
AlexNet listing, read back into the same graph, run against the prototxt twin blob by blob, and
round-tripped NetDef -> graph -> NetDef -> graph."""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format

from convnet_io.api import Net
from convnet_io.api.loading import caffe2_net, load_caffe2, load_graph
from convnet_io.caffe2.netdef import netdef_graph_and_blobs, read_netdef
from convnet_io.caffe2.netdef_write import netdef_pair, write_netdef_pair
from convnet_io.caffe2.proto import caffe2_pb2
from convnet_io.errors import ConvnetError

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT.parent / "shared" / "caffe-models"
DEPLOY_NETS = ["bvlc_alexnet/deploy.prototxt", "bvlc_reference_caffenet/deploy.prototxt",
               "bvlc_googlenet/deploy.prototxt", "cifar10/cifar10_quick.prototxt", "mnist/lenet.prototxt"]
ALEXNET_LISTING = ROOT / "prototxt" / "alexnet_caffe2.txt"


@pytest.fixture
def big_dir(tmp_path):
    """Where a 240 MB init net goes: memory-backed /dev/shm where there is one (no disk traffic on a
    shared machine), else the test's tmp_path."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="convnet-test-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _needs_models():
    if not MODELS.is_dir():
        pytest.skip("../shared/caffe-models not present")


def cheap_blobs(graph, seed=0):
    """Uniform weights scaled by fan-in so activations stay of order one, drawn in place (60M
    values for AlexNet: no temporaries on a shared machine)."""
    rng = np.random.default_rng(seed)
    out = {}
    for node in graph.nodes:
        if not node.params:
            continue
        arrays = []
        for spec in node.params:
            n = int(np.prod(spec.shape))
            fan_in = max(n // spec.shape[0], 1) if len(spec.shape) > 1 else 1
            a = rng.random(n, dtype=np.float32)
            a -= 0.5
            a *= 2 / np.sqrt(fan_in)
            arrays.append(a.reshape(spec.shape))
        out[node.name] = arrays
    return out


def _net(graph, blobs) -> Net:
    from convnet_io.torch_model import CaffeModule

    net = Net(graph, CaffeModule(graph), backend="torch")
    net.set_blobs(blobs)
    return net


def _strip_fillers(attrs):
    """The attributes less what a NetDef cannot carry: fillers (GivenTensorFill has values instead)
    and a record of how the prototxt spelled its numbers (``stride: 1`` written or left out)."""
    if dataclasses.is_dataclass(attrs):
        return dataclasses.replace(attrs, **{f.name: None for f in dataclasses.fields(attrs)
                                             if "filler" in f.name or f.name == "spatial"})
    return attrs


def same_graph(a, b, fillers=True):
    """Node by node: name, type, attributes, bottoms, tops, learnable blob specs; then shapes."""
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    for x, y in zip(a.nodes, b.nodes):
        ax, ay = (x.attrs, y.attrs) if fillers else (_strip_fillers(x.attrs), _strip_fillers(y.attrs))
        if x.type == "Input":  # a definition's own shape: the graph's shapes below are what count
            ax = ay = None
        assert (x.type, ax, x.bottoms, x.tops) == (y.type, ay, y.bottoms, y.tops), x.name
        assert [p.shape for p in x.params] == [p.shape for p in y.params], x.name
        if fillers:
            assert x.params == y.params, x.name
    assert a.shapes == b.shapes
    assert a.blob_of == b.blob_of


def all_blobs_agree(a: Net, b: Net, seed=0, atol=1e-5, rtol=1e-4):
    """As `convnet diff`: every value id of A against B, max|a-b| <= atol + rtol * max|b|."""
    shape = a.graph.shapes[a.graph.inputs[0]]
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    values = a.graph.values
    assert values == b.graph.values
    ra, rb = a.run_values(x, values), b.run_values(x, values)
    worst = 0.0
    for v in values:
        err = float(np.abs(ra[v] - rb[v]).max()) if ra[v].size else 0.0
        assert err <= atol + rtol * float(np.abs(rb[v]).max()), (v, err)
        worst = max(worst, err)
    return worst


# -- every shared deploy net, and the AlexNet listing ----------------------------------------------


# Running the three ImageNet nets twice costs ~10 s each on a busy 2-core machine: opt in with
# CONVNET_SLOW=1. Their graphs and weights are checked identical to the twin's in every run.
BIG = {"bvlc_alexnet/deploy.prototxt", "bvlc_reference_caffenet/deploy.prototxt", "bvlc_googlenet/deploy.prototxt"}
SLOW = bool(os.environ.get("CONVNET_SLOW"))


@pytest.mark.parametrize("rel", DEPLOY_NETS)
def test_netdef_pair_of_shared_net_matches_prototxt_twin_and_round_trips(rel, big_dir):
    _needs_models()
    tmp_path = big_dir
    proto = load_graph(MODELS / rel, input_shapes=_batch1(MODELS / rel))
    blobs = cheap_blobs(proto)
    write_netdef_pair(proto, blobs, tmp_path / "a")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["init_net.pb", "predict_net.pb", "value_info.json"]
    g1, b1 = netdef_graph_and_blobs(tmp_path / "a")
    same_graph(proto, g1, fillers=False)  # op names carry the layer names: the very twin
    for layer, arrays in blobs.items():
        for x, y in zip(arrays, b1[layer]):
            assert np.array_equal(x, y), layer
    if rel not in BIG or SLOW:
        all_blobs_agree(_net(g1, b1), _net(proto, blobs))
    # NetDef -> graph -> NetDef -> graph is the identity: the second NetDef is byte for byte the
    # first (so reading it gives g1 again), and for the small nets it is read back and compared too
    predict2, init2, _ = netdef_pair(g1, b1)
    assert predict2.SerializeToString() == (tmp_path / "a" / "predict_net.pb").read_bytes()
    assert _digest(init2) == _digest([(tmp_path / "a" / "init_net.pb").read_bytes()])
    if rel in BIG:
        return
    write_netdef_pair(g1, b1, tmp_path / "b")
    g2, b2 = netdef_graph_and_blobs(tmp_path / "b")
    same_graph(g1, g2)
    assert all(np.array_equal(x, y) for k in b1 for x, y in zip(b1[k], b2[k]))
    assert (tmp_path / "a" / "predict_net.pb").read_bytes() == (tmp_path / "b" / "predict_net.pb").read_bytes()


def _digest(parts) -> str:
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        h.update(part)
    return h.hexdigest()


def _batch1(path: Path):
    g = load_graph(path)
    return {name: (1, *g.shapes[name][1:]) for name in g.inputs}


def test_alexnet_listing_as_netdef_matches_listing_and_prototxt(big_dir):
    _needs_models()
    tmp_path = big_dir
    listing = load_graph(ALEXNET_LISTING)
    blobs = cheap_blobs(listing, seed=1)
    write_netdef_pair(listing, blobs, tmp_path)
    g, b = netdef_graph_and_blobs(tmp_path)
    same_graph(listing, g, fillers=False)
    if not SLOW:
        return
    all_blobs_agree(_net(g, b), _net(listing, blobs))
    # the prototxt twin: the weighted layers carry bvlc_alexnet's names, so the blobs agree by name
    proto = load_graph(MODELS / "bvlc_alexnet" / "deploy.prototxt", input_shapes={"data": (1, 3, 227, 227)})
    proto_net = _net(proto, b)
    x = np.random.default_rng(3).standard_normal((1, 3, 227, 227), dtype=np.float32)
    out_a, out_b = _net(g, b).forward(x, blobs=["conv1", "pool2", "fc6", "fc8", "prob"]), proto_net.forward(
        x, blobs=["conv1", "pool2", "fc6", "fc8", "prob"])
    for name in out_a:
        np.testing.assert_allclose(out_a[name], out_b[name], rtol=1e-4, atol=1e-5 * np.abs(out_b[name]).max())


# -- files, formats, the CLI paths -----------------------------------------------------------------


def _lenet_pair(tmp_path):
    _needs_models()
    graph = load_graph(MODELS / "mnist" / "lenet.prototxt", input_shapes={"data": (1, 1, 28, 28)})
    blobs = cheap_blobs(graph)
    write_netdef_pair(graph, blobs, tmp_path)
    return graph, blobs


def test_written_init_net_is_what_protobuf_reads(tmp_path):
    """The packed floats convnet writes are what any protobuf parser reads, and Caffe2's own
    unpacked encoding reads the same."""
    _graph, blobs = _lenet_pair(tmp_path)
    init = caffe2_pb2.NetDef.FromString((tmp_path / "init_net.pb").read_bytes())
    fills = {op.output[0]: op for op in init.op}
    w = fills["conv1_w"]
    assert w.type == "GivenTensorFill"
    args = {a.name: a for a in w.arg}
    assert list(args["shape"].ints) == [20, 1, 5, 5]
    assert np.array_equal(np.array(args["values"].floats, np.float32).reshape(20, 1, 5, 5), blobs["conv1"][0])
    assert fills["data"].type == "ConstantFill"  # the translator's closing fill of the input
    # re-serialised by protobuf: unpacked, one tag per float, as Caffe2 writes
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    (unpacked / "init_net.pb").write_bytes(init.SerializeToString())
    assert init.SerializeToString().count(b"\x2d") >= blobs["ip1"][0].size  # tag 0x2d per value
    for name in ("predict_net.pb", "value_info.json"):
        (unpacked / name).write_bytes((tmp_path / name).read_bytes())
    _, b2 = netdef_graph_and_blobs(unpacked)
    for layer in blobs:
        for x, y in zip(blobs[layer], b2[layer]):
            assert np.array_equal(x, y)


def test_text_predict_net_and_explicit_init(tmp_path):
    graph, _blobs = _lenet_pair(tmp_path)
    predict, _ = read_netdef(tmp_path / "predict_net.pb")
    text = tmp_path / "other" / "model.pbtxt"
    text.parent.mkdir()
    text.write_text(text_format.MessageToString(predict))
    g, _b = load_caffe2(caffe2_net(text, tmp_path / "init_net.pb"), input_shapes={"data": (1, 1, 28, 28)})
    same_graph(graph, g, fillers=False)
    # no value_info.json beside it and no --input-shape: the error says what to pass
    with pytest.raises(ConvnetError, match="--input-shape"):
        load_graph(caffe2_net(text, tmp_path / "init_net.pb"))


def test_value_info_gives_input_name_and_shape(tmp_path):
    _lenet_pair(tmp_path)
    info = json.loads((tmp_path / "value_info.json").read_text())
    assert info == {"data": [1, [1, 1, 28, 28]]}
    (tmp_path / "value_info.json").write_text(json.dumps({"data": [1, [3, 1, 28, 28]]}))
    assert load_graph(tmp_path).shapes["prob"] == (3, 10)
    assert load_graph(tmp_path, input_shapes={"data": (2, 1, 28, 28)}).shapes["prob"] == (2, 10)


def test_unknown_operator_names_itself_and_its_position(tmp_path):
    _lenet_pair(tmp_path)
    predict, _ = read_netdef(tmp_path / "predict_net.pb")
    predict.op[2].type = "FancyOp"
    (tmp_path / "predict_net.pb").write_bytes(predict.SerializeToString())
    with pytest.raises(ConvnetError, match=r"predict_net.pb: op 3 of 8 \(FancyOp 'conv2'\): unknown op type 'FancyOp'"):
        load_graph(tmp_path)


def test_input_fill_is_skipped_and_gives_no_shape(tmp_path):
    _lenet_pair(tmp_path)
    init = caffe2_pb2.NetDef.FromString((tmp_path / "init_net.pb").read_bytes())
    data_fill = next(op for op in init.op if op.output[0] == "data")
    data_fill.arg[0].ints[:] = [9, 9, 9, 9]  # a wrong shape: it must not be used
    (tmp_path / "init_net.pb").write_bytes(init.SerializeToString())
    assert load_graph(tmp_path).shapes["data"] == (1, 1, 28, 28)


def test_cli_build_run_diff_export_with_caffe2(tmp_path):
    from click.testing import CliRunner
    from convnet_cli.main import cli

    _lenet_pair(tmp_path / "pair")
    runner = CliRunner()
    r = runner.invoke(cli, ["build", "--caffe2", str(tmp_path / "pair" / "predict_net.pb"),
                            "--init", str(tmp_path / "pair" / "init_net.pb"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["total"]["parameters"] == 431080 if "total" in json.loads(r.stdout) else True
    r = runner.invoke(cli, ["build", str(tmp_path / "pair")])
    assert r.exit_code == 0 and "431,080" in r.output, r.output
    r = runner.invoke(cli, ["diff", "--caffe2", str(tmp_path / "pair" / "predict_net.pb"),
                            str(MODELS / "mnist" / "lenet.prototxt"), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["ok"] is True
    r = runner.invoke(cli, ["export", str(tmp_path / "pair"), "--caffe2", str(tmp_path / "again")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "again" / "init_net.pb").read_bytes() == (tmp_path / "pair" / "init_net.pb").read_bytes()
    r = runner.invoke(cli, ["build", "--init", str(tmp_path / "pair" / "init_net.pb")])
    assert r.exit_code == 2 and "--init needs --caffe2" in r.output


# -- every layer type the writer knows, in one net -------------------------------------------------

ALL_TYPES = """
name: "alltypes"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 9 dim: 8 } } }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0 group: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" batch_norm_param { eps: 0.001 } }
layer { name: "bn_sc" type: "Scale" bottom: "conv" top: "conv" scale_param { bias_term: true } }
layer { name: "prelu" type: "PReLU" bottom: "conv" top: "conv" }
layer { name: "dil" type: "Convolution" bottom: "conv" top: "dil"
  convolution_param { num_output: 6 kernel_size: 3 pad: 2 dilation: 2 } }
layer { name: "leaky" type: "ReLU" bottom: "dil" top: "dil" relu_param { negative_slope: 0.1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "dil" top: "sum" }
layer { name: "prod" type: "Eltwise" bottom: "conv" bottom: "dil" top: "prod" eltwise_param { operation: PROD } }
layer { name: "max" type: "Eltwise" bottom: "sum" bottom: "prod" top: "max" eltwise_param { operation: MAX } }
layer { name: "sig" type: "Sigmoid" bottom: "max" top: "sig" }
layer { name: "tanh" type: "TanH" bottom: "sum" top: "tanh" }
layer { name: "elu" type: "ELU" bottom: "prod" top: "elu" elu_param { alpha: 0.5 } }
layer { name: "clip" type: "Clip" bottom: "elu" top: "clip" clip_param { min: -0.3 max: 0.4 } }
layer { name: "cat" type: "Concat" bottom: "sig" bottom: "tanh" bottom: "clip" top: "cat" }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "cat" top: "shuffle" shuffle_channel_param { group: 3 } }
layer { name: "lrn" type: "LRN" bottom: "shuffle" top: "lrn" lrn_param { local_size: 3 alpha: 0.01 beta: 0.75 } }
layer { name: "deconv" type: "Deconvolution" bottom: "lrn" top: "deconv"
  convolution_param { num_output: 4 kernel_size: 2 stride: 2 } }
layer { name: "pool" type: "Pooling" bottom: "deconv" top: "pool" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "avepool" type: "Pooling" bottom: "deconv" top: "avepool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "chscale" type: "Scale" bottom: "pool" top: "chscale" }
layer { name: "chbias" type: "Bias" bottom: "chscale" top: "chbias" }
layer { name: "power" type: "Power" bottom: "chbias" top: "power" power_param { scale: 0.5 } }
layer { name: "perm" type: "Permute" bottom: "power" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "flat" type: "Flatten" bottom: "perm" top: "flat" }
layer { name: "drop" type: "Dropout" bottom: "flat" top: "flat" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc" type: "InnerProduct" bottom: "flat" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "fct" type: "InnerProduct" bottom: "flat" top: "fct" inner_product_param { num_output: 5 transpose: true } }
layer { name: "sq" type: "Reshape" bottom: "avepool" top: "sq" reshape_param { shape { } axis: 2 num_axes: 2 } }
layer { name: "ex" type: "Reshape" bottom: "sq" top: "ex" reshape_param { shape { dim: 1 } axis: 1 num_axes: 0 } }
layer { name: "re" type: "Reshape" bottom: "fc" top: "re" reshape_param { shape { dim: 0 dim: 5 dim: 1 } } }
layer { name: "prob" type: "Softmax" bottom: "fct" top: "prob" }
"""


def test_every_written_layer_type_reads_back_and_computes_the_same(tmp_path):
    net_file = tmp_path / "all.prototxt"
    net_file.write_text(ALL_TYPES)
    proto = load_graph(net_file)
    blobs = cheap_blobs(proto, seed=5)
    mean, var, _ = blobs["bn"]
    blobs["bn"] = [mean * 2, np.abs(var) * 2 + 0.5, np.array([2.0], np.float32)]  # Caffe's stored factor
    write_netdef_pair(proto, blobs, tmp_path / "a")
    g1, b1 = netdef_graph_and_blobs(tmp_path / "a")
    a, b = _net(g1, b1), _net(proto, blobs)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 8), dtype=np.float32)
    names = ["conv", "dil", "sum", "prod", "max", "cat", "shuffle", "lrn", "deconv", "pool", "avepool", "chbias",
             "power", "perm", "flat", "fc", "fct", "sq", "ex", "re", "prob"]
    out_a, out_b = a.forward(x, blobs=names), b.forward(x, blobs=names)
    for name in names:
        assert out_a[name].shape == out_b[name].shape, name
        np.testing.assert_allclose(out_a[name], out_b[name], rtol=1e-4, atol=1e-5, err_msg=name)
    types = [op.type for op in read_netdef(tmp_path / "a" / "predict_net.pb")[0].op]
    for t in ("SpatialBN", "PRelu", "LeakyRelu", "Sum", "Mul", "Max", "Elu", "Clip", "ChannelShuffle", "LRN",
              "ConvTranspose", "MaxPool", "AveragePool", "Add", "Scale", "Transpose", "Flatten", "Dropout", "FC",
              "FCTransposed", "Squeeze", "ExpandDims", "Reshape", "Softmax", "Concat", "Sigmoid", "Tanh"):
        assert t in types, t
    write_netdef_pair(g1, b1, tmp_path / "b")
    g2, b2 = netdef_graph_and_blobs(tmp_path / "b")
    same_graph(g1, g2)
    assert all(np.array_equal(x, y) for k in b1 for x, y in zip(b1[k], b2[k]))


def test_layer_without_caffe2_operator_is_named(tmp_path):
    net_file = tmp_path / "n.prototxt"
    net_file.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }\n'
                        'layer { name: "abs" type: "AbsVal" bottom: "data" top: "abs" }\n')
    g = load_graph(net_file)
    with pytest.raises(ConvnetError, match="layer 'abs' \\(AbsVal\\): Caffe type AbsVal has no Caffe2 operator"):
        netdef_pair(g, {})


def test_run_and_train_take_a_netdef_pair(tmp_path):
    """`run` classifies with the pair's own weights (--input-shape standing in for value_info.json);
    `train --caffe2 --init` fine-tunes from them: at base_lr 0 the snapshot is the pair's weights."""
    from click.testing import CliRunner
    from convnet_cli.main import cli
    from PIL import Image

    from convnet_io.caffe.caffemodel import read_caffemodel

    _graph, blobs = _lenet_pair(tmp_path / "pair")
    (tmp_path / "pair" / "value_info.json").unlink()
    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "list.txt").write_text("".join(f"img/{i}.png {i}\n" for i in range(4)))
    runner = CliRunner()
    r = runner.invoke(cli, ["run", str(tmp_path / "pair"), str(tmp_path / "img" / "0.png"), "--json",
                            "--input-shape", "data=1,1,28,28"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["convert-imageset", "--gray", "-q", str(tmp_path), str(tmp_path / "list.txt"),
                            str(tmp_path / "db")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["train", "--solver", str(MODELS / "mnist" / "lenet_solver.prototxt"),
                            "--caffe2", str(tmp_path / "pair" / "predict_net.pb"), "--input-shape", "data=1,1,28,28",
                            "--data", f"TRAIN={tmp_path / 'db'}", "--data", f"TEST={tmp_path / 'db'}",
                            "--batch-size", "2", "--max-iter", "1", "--base-lr", "0", "--test-interval", "0",
                            "--snapshot-prefix", str(tmp_path / "tuned"), "--workers", "0"])
    assert r.exit_code == 0, r.output
    tuned = {lb.name: lb.blobs for lb in read_caffemodel(tmp_path / "tuned_iter_1.caffemodel")}
    for layer, arrays in blobs.items():
        for x, y in zip(arrays, tuned[layer]):
            np.testing.assert_array_equal(np.asarray(y).reshape(x.shape), x)


def test_init_fills_the_predict_net_never_reads_are_ignored(tmp_path):
    """Training leftovers in an init net (an int64 iteration counter, a learning rate) are skipped."""
    _lenet_pair(tmp_path)
    init = caffe2_pb2.NetDef.FromString((tmp_path / "init_net.pb").read_bytes())
    it = init.op.add(type="ConstantFill", output=["optimizer_iteration"])
    it.arg.add(name="shape", ints=[1])
    it.arg.add(name="dtype", i=10)
    init.op.add(type="CreateMutex", output=["iteration_mutex"])
    (tmp_path / "init_net.pb").write_bytes(init.SerializeToString())
    assert load_graph(tmp_path).shapes["prob"] == (1, 10)
