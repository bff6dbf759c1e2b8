"""`convnet init` (seeded initial weights, BatchNorm calibration) and `convnet forward` (arrays in,
an .npz of blobs out, written atomically)."""
from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import convnet_io
from convnet_cli.main import cli
from convnet_io.caffe.caffemodel import read_caffemodel

from helpers import input_layer

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"
LENET = MODELS / "mnist" / "lenet.prototxt"
CIFAR_DEPLOY = MODELS / "cifar10" / "cifar10_quick.prototxt"
Z = 6.0  # standard errors allowed in statistical checks


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_bad_input(result):
    """Exit 2, nothing on stdout, and one line on stderr ('error: ...'), or click's usage message
    for a malformed option, which ends in one 'Error: ...' line."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if lines and lines[0].startswith("Usage:"):
        assert lines[-1].startswith("Error: "), result.stderr
        assert sum(line.startswith("Error: ") for line in lines) == 1
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def leftovers(directory: Path, keep: set[str]) -> list[str]:
    """Files in ``directory`` other than ``keep`` (temporary files left behind)."""
    return sorted(p.name for p in directory.iterdir() if p.name not in keep)


# -- nets -------------------------------------------------------------------------------------

# Fillers of every random kind, and layers without any (deploy style).
SMALL = input_layer((2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3
    weight_filler { type: "xavier" } bias_filler { type: "uniform" min: -1 max: 1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 6 weight_filler { type: "msra" } } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "ip2" top: "prob" }
"""

# A deploy net without fillers, big enough for the statistics to be sharp.
DEPLOY = input_layer((1, 16, 12, 12)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 64 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 32 kernel_size: 5 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 100 } }
"""


def bn_net(blocks: int = 6, batch: int = 16, channels: int = 16, size: int = 16) -> str:
    """conv -> BatchNorm -> Scale -> ReLU, ``blocks`` times, in place as Caffe's ResNets are."""
    text = input_layer((batch, 3, size, size))
    bottom = "data"
    for i in range(1, blocks + 1):
        c = f"conv{i}"
        text += f"""
layer {{ name: "{c}" type: "Convolution" bottom: "{bottom}" top: "{c}"
  convolution_param {{ num_output: {channels} kernel_size: 3 pad: 1 bias_term: false }} }}
layer {{ name: "bn{i}" type: "BatchNorm" bottom: "{c}" top: "{c}" }}
layer {{ name: "scale{i}" type: "Scale" bottom: "{c}" top: "{c}" scale_param {{ bias_term: true }} }}
layer {{ name: "relu{i}" type: "ReLU" bottom: "{c}" top: "{c}" }}
"""
        bottom = c
    return text


@pytest.fixture
def write(tmp_path):
    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.write_text(text)
        return p

    return _write


# -- convnet init -----------------------------------------------------------------------------


@pytest.mark.parametrize("text", [SMALL, bn_net(blocks=2, batch=4, size=8)], ids=["fillers", "batchnorm"])
def test_init_same_seed_same_bytes(write, tmp_path, text):
    net = write("net.prototxt", text)
    a, b, c = tmp_path / "a.caffemodel", tmp_path / "b.caffemodel", tmp_path / "c.caffemodel"
    for out, seed in ((a, 7), (b, 7), (c, 8)):
        r = invoke("init", net, "-o", out, "--seed", seed)
        assert r.exit_code == 0, r.output
        assert f"(seed {seed})" in r.stdout
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert leftovers(tmp_path, {"net.prototxt", "a.caffemodel", "b.caffemodel", "c.caffemodel"}) == []


def test_init_writes_every_layer_with_blobs(write, tmp_path):
    net = write("net.prototxt", SMALL)
    out = tmp_path / "w.caffemodel"
    r = invoke("init", net, "-o", out)
    assert r.exit_code == 0, r.output
    # conv1 4*3*3*3 + 4, ip1 6*36 + 6, ip2 3*6 + 3
    assert r.stdout.strip() == f"wrote {out}: 3 layers, {108 + 4 + 216 + 6 + 18 + 3:,} parameters (seed 0)"
    layers = read_caffemodel(out)
    assert [(lb.name, lb.type, [b.shape for b in lb.blobs]) for lb in layers] == [
        ("conv1", "Convolution", [(4, 3, 3, 3), (4,)]),
        ("ip1", "InnerProduct", [(6, 36), (6,)]),
        ("ip2", "InnerProduct", [(3, 6), (3,)]),
    ]
    by = {lb.name: lb.blobs for lb in layers}
    assert np.abs(by["conv1"][0]).max() <= math.sqrt(3 / 27) + 1e-6  # xavier
    assert np.abs(by["conv1"][1]).max() <= 1 and len(np.unique(by["conv1"][1])) == 4  # uniform
    assert np.count_nonzero(by["ip1"][0]) == 6 * 36  # msra
    assert np.abs(by["ip2"][0]).max() > 0 and np.abs(by["ip2"][1]).max() <= 0.05 + 1e-7  # defaults
    # The file loads back against the net.
    assert convnet_io.load(net, weights=out).blobs()["ip2"][0].shape == (3, 6)


def test_init_into_a_missing_directory_is_one_error_line(write, tmp_path):
    net = write("net.prototxt", SMALL)
    r = invoke("init", net, "-o", tmp_path / "nodir" / "w.caffemodel")
    assert_bad_input(r)
    assert not (tmp_path / "nodir").exists()


def check_fan_in_gaussian(layers, min_count: int = 0):
    """Every weight blob (blob 0, at least 2-D) is N(0, 2 / fan_in), fan_in = count / shape[0]."""
    checked = 0
    for lb in layers:
        w = lb.blobs[0].astype(np.float64)
        if w.ndim < 2 or w.size < min_count:
            continue
        std = math.sqrt(2.0 / (w.size // w.shape[0]))
        assert np.count_nonzero(w) == w.size, lb.name
        assert abs(w.mean()) <= Z * std / math.sqrt(w.size), (lb.name, w.mean())
        assert abs(w.std() - std) <= Z * std / math.sqrt(2 * w.size), (lb.name, w.std(), std)
        checked += 1
    return checked


def test_init_deploy_net_fan_in_gaussian(write, tmp_path):
    net = write("deploy.prototxt", DEPLOY)
    out = tmp_path / "w.caffemodel"
    assert invoke("init", net, "-o", out, "--seed", 3).exit_code == 0
    layers = read_caffemodel(out)
    assert check_fan_in_gaussian(layers) == 3
    for lb in layers:  # biases: small, non-zero
        assert 0 < np.abs(lb.blobs[1]).max() <= 0.05 + 1e-7


@pytest.mark.skipif(not CIFAR_DEPLOY.is_file(), reason="shared caffe-models (cifar10_quick.prototxt) not present")
def test_init_shared_deploy_net_fan_in_gaussian(tmp_path):
    # cifar10_quick.prototxt is a deploy net that names no fillers.
    assert "filler" not in CIFAR_DEPLOY.read_text()
    out = tmp_path / "cifar.caffemodel"
    r = invoke("init", CIFAR_DEPLOY, "-o", out)
    assert r.exit_code == 0, r.output
    layers = read_caffemodel(out)
    assert [lb.name for lb in layers] == ["conv1", "conv2", "conv3", "ip1", "ip2"]
    assert check_fan_in_gaussian(layers, min_count=2000) == 4  # ip2 (10 x 64) is too small to test


@pytest.mark.skipif(not LENET.is_file(), reason="shared caffe-models (mnist/lenet.prototxt) not present")
def test_init_lenet_honours_its_xavier_fillers(tmp_path):
    # lenet.prototxt names weight_filler xavier / bias_filler constant: U(-a, a), a = sqrt(3 / fan_in),
    # std a / sqrt(3) = sqrt(1 / fan_in); biases 0.
    assert "xavier" in LENET.read_text()
    out = tmp_path / "lenet.caffemodel"
    r = invoke("init", LENET, "-o", out)
    assert r.exit_code == 0, r.output
    layers = read_caffemodel(out)
    assert [lb.name for lb in layers] == ["conv1", "conv2", "ip1", "ip2"]
    for lb in layers:
        w, b = (x.astype(np.float64) for x in lb.blobs)
        fan_in = w.size // w.shape[0]
        a = math.sqrt(3.0 / fan_in)
        assert np.abs(w).max() <= a * (1 + 1e-6), lb.name
        var_tol = Z * a * a * math.sqrt(4.0 / (45.0 * w.size))
        assert abs((w ** 2).mean() - a * a / 3) <= var_tol, lb.name
        assert np.all(b == 0), lb.name


def bn_outputs(net_obj, x: np.ndarray) -> dict[str, np.ndarray]:
    """Each BatchNorm layer's own output (its value id: conv3:1 when in place), on ``x``."""
    ids = {n.name: n.tops[0] for n in net_obj.graph.nodes if n.type == "BatchNorm"}
    out = net_obj.forward({"data": x}, blobs=list(ids.values()))
    return {name: out[v] for name, v in ids.items()}


def test_init_calibrates_batchnorm(write, tmp_path):
    net = write("bn.prototxt", bn_net())
    out = tmp_path / "bn.caffemodel"
    r = invoke("init", net, "-o", out, "--seed", 1)
    assert r.exit_code == 0, r.output
    assert "6 BatchNorm layers calibrated" in r.stdout
    layers = {lb.name: lb.blobs for lb in read_caffemodel(out)}
    for i in range(1, 7):
        mean, var, factor = layers[f"bn{i}"]
        assert factor.shape == (1,) and factor[0] == 1.0
        assert np.all(var > 0) and np.any(mean != 0)
        scale, shift = layers[f"scale{i}"]
        assert np.all(scale == 1) and np.all(shift == 0)
    net_obj = convnet_io.load(net, weights=out, backend="torch")
    x = np.random.default_rng(99).standard_normal((16, 3, 16, 16)).astype(np.float32)  # a fresh batch
    outs = bn_outputs(net_obj, x)
    assert sorted(outs) == [f"bn{i}" for i in range(1, 7)]
    for name, y in outs.items():
        y = y.astype(np.float64)
        assert abs(y.mean()) < 0.05, (name, y.mean())
        assert abs(y.std() - 1) < 0.05, (name, y.std())
        per_channel = y.transpose(1, 0, 2, 3).reshape(y.shape[1], -1)
        assert np.abs(per_channel.mean(axis=1)).max() < 0.25, name
        assert np.abs(per_channel.std(axis=1) - 1).max() < 0.25, name


def test_init_no_calibrate_is_zero_mean_unit_variance(write, tmp_path):
    # --no-calibrate: "Leave BatchNorm statistics at zero mean, unit variance", so each BatchNorm
    # passes its input through: y = (x - 0) / sqrt(1 + eps).
    net = write("bn.prototxt", bn_net(blocks=2, batch=4, size=8))
    out = tmp_path / "bn.caffemodel"
    r = invoke("init", net, "-o", out, "--no-calibrate")
    assert r.exit_code == 0, r.output
    assert "calibrated" not in r.stdout
    net_obj = convnet_io.load(net, weights=out, backend="torch")
    x = np.random.default_rng(0).standard_normal((4, 3, 8, 8)).astype(np.float32)
    ids = [(n.bottoms[0], n.tops[0]) for n in net_obj.graph.nodes if n.type == "BatchNorm"]
    assert ids == [("conv1", "conv1:1"), ("conv2", "conv2:1")]
    got = net_obj.forward({"data": x}, blobs="all")  # value ids: conv1 is the convolution's output
    for before, after in ids:
        np.testing.assert_allclose(got[after], got[before] / math.sqrt(1 + 1e-5), rtol=1e-4, atol=1e-5)


# -- convnet forward --------------------------------------------------------------------------


@pytest.fixture
def small(write, tmp_path):
    net = write("net.prototxt", SMALL)
    weights = tmp_path / "w.caffemodel"
    assert invoke("init", net, "-o", weights, "--seed", 5).exit_code == 0
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    xp = tmp_path / "x.npy"
    np.save(xp, x)
    return {"net": net, "weights": weights, "x": x, "x_path": xp, "dir": tmp_path,
            "files": {"net.prototxt", "w.caffemodel", "x.npy"}}


def api(small, blobs=None, x=None):
    net = convnet_io.load(small["net"], weights=small["weights"], backend="torch")
    return net.forward({"data": small["x"] if x is None else x}, blobs=blobs)


def forward(small, *extra, out="out.npz", inputs=None):
    args = ["forward", small["net"], "--weights", small["weights"],
            "--input", inputs or f"data={small['x_path']}", "-o", small["dir"] / out, *extra]
    return invoke(*args)


def load_npz(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def test_forward_writes_the_outputs_as_the_api_computes_them(small):
    r = forward(small, "--backend", "torch")
    assert r.exit_code == 0, r.output
    got = load_npz(small["dir"] / "out.npz")
    expected = api(small)
    assert list(got) == list(expected) == ["prob"]
    np.testing.assert_array_equal(got["prob"], expected["prob"])
    assert got["prob"].shape == (2, 3)
    np.testing.assert_allclose(got["prob"].sum(axis=1), 1, rtol=1e-5)
    assert r.stdout.strip() == f"wrote {small['dir'] / 'out.npz'}: prob 2×3"
    assert leftovers(small["dir"], small["files"] | {"out.npz"}) == []


def test_forward_default_backend_agrees(small):
    r = forward(small)
    assert r.exit_code == 0, r.output
    got = load_npz(small["dir"] / "out.npz")
    np.testing.assert_allclose(got["prob"], api(small)["prob"], rtol=1e-4, atol=1e-6)


def test_forward_all_blobs_includes_in_place_versions(small):
    r = forward(small, "--blobs", "all", "--backend", "torch")
    assert r.exit_code == 0, r.output
    got = load_npz(small["dir"] / "out.npz")
    assert list(got) == ["data", "conv1", "conv1:1", "pool1", "ip1", "ip2", "prob"]
    expected = api(small, blobs="all")
    for k in expected:
        np.testing.assert_array_equal(got[k], expected[k], err_msg=k)
    np.testing.assert_array_equal(got["data"], small["x"])
    # conv1 is the convolution's output, conv1:1 the in-place ReLU's.
    assert (got["conv1"] < 0).any()
    np.testing.assert_array_equal(got["conv1:1"], np.maximum(got["conv1"], 0))


def test_forward_picks_named_blobs(small):
    r = forward(small, "--blobs", "conv1,ip1", "--backend", "torch")
    assert r.exit_code == 0, r.output
    got = load_npz(small["dir"] / "out.npz")
    assert list(got) == ["conv1", "ip1"]
    full = api(small, blobs="all")
    # A plain Caffe name is the blob after the pass: conv1 after its in-place ReLU.
    np.testing.assert_array_equal(got["conv1"], full["conv1:1"])
    np.testing.assert_array_equal(got["ip1"], full["ip1"])
    r = forward(small, "--blobs", "conv1:1,conv1", "--backend", "torch", out="v.npz")
    assert r.exit_code == 0, r.output
    assert list(load_npz(small["dir"] / "v.npz")) == ["conv1:1", "conv1"]


def test_forward_json(small):
    r = forward(small, "--blobs", "pool1,prob", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"output": str(small["dir"] / "out.npz"),
                                    "blobs": {"pool1": [2, 4, 3, 3], "prob": [2, 3]}}


def test_forward_other_batch_size(small):
    x = np.random.default_rng(2).standard_normal((5, 3, 8, 8)).astype(np.float32)
    np.save(small["dir"] / "x5.npy", x)
    r = forward(small, "--backend", "torch", "--blobs", "ip1,prob", inputs=f"data={small['dir'] / 'x5.npy'}")
    assert r.exit_code == 0, r.output
    got = load_npz(small["dir"] / "out.npz")
    assert got["prob"].shape == (5, 3)
    expected = api(small, blobs=["ip1", "prob"], x=x)
    np.testing.assert_array_equal(got["ip1"], expected["ip1"])


@pytest.mark.parametrize("spec", ["data", "{x}", "=", "data=", "data={dir}/nope.npy",
                                  "data={dir}/net.prototxt", "other={x}"])
def test_forward_bad_input_is_one_error_line(small, spec):
    old = small["dir"] / "out.npz"
    old.write_bytes(b"previous")
    r = forward(small, inputs=spec.format(x=small["x_path"], dir=small["dir"]))
    assert_bad_input(r)
    assert old.read_bytes() == b"previous"
    assert leftovers(small["dir"], small["files"] | {"out.npz"}) == []


def test_forward_missing_npy_names_the_file(small):
    r = forward(small, inputs=f"data={small['dir'] / 'missing.npy'}")
    assert_bad_input(r)
    assert "missing.npy" in r.stderr
    assert not (small["dir"] / "out.npz").exists()


@pytest.mark.parametrize("extra", [("--blobs", "nope"), ("--backend", "gpu")])
def test_forward_bad_options_write_nothing(small, extra):
    r = forward(small, *extra)
    assert_bad_input(r)
    assert leftovers(small["dir"], small["files"]) == []


def test_forward_wrong_input_shape_is_an_error(small):
    np.save(small["dir"] / "x4.npy", np.zeros((2, 4, 8, 8), np.float32))
    r = forward(small, inputs=f"data={small['dir'] / 'x4.npy'}")
    assert_bad_input(r)
    assert leftovers(small["dir"], small["files"] | {"x4.npy"}) == []


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt(),
                                 RuntimeError("boom")], ids=["ENOSPC", "interrupt", "crash"])
def test_forward_failed_write_leaves_no_temp_file(small, monkeypatch, exc):
    old = small["dir"] / "out.npz"
    old.write_bytes(b"previous")

    def failing_write(fp, *args, **kwds):
        fp.write(b"\x93NUMPY partial")
        raise exc

    monkeypatch.setattr(np.lib.format, "write_array", failing_write)
    r = forward(small, "--backend", "torch")
    assert r.exit_code != 0
    assert "Traceback" not in r.output
    assert old.read_bytes() == b"previous"
    assert leftovers(small["dir"], small["files"] | {"out.npz"}) == []


def test_forward_replaces_an_existing_output(small):
    (small["dir"] / "out.npz").write_bytes(b"previous")
    r = forward(small, "--backend", "torch")
    assert r.exit_code == 0, r.output
    assert list(load_npz(small["dir"] / "out.npz")) == ["prob"]
    assert leftovers(small["dir"], small["files"] | {"out.npz"}) == []


def test_forward_into_a_missing_directory_is_one_error_line(small):
    # Bad input (like `convnet init -o missing/dir/w.caffemodel`): exit 2, not an internal error.
    r = forward(small, out="nodir/out.npz")
    assert_bad_input(r)
    assert not (small["dir"] / "nodir").exists()


@pytest.mark.parametrize("name", ["file", "allow_pickle", "a/b"])
def test_forward_writes_blobs_whatever_their_names(write, tmp_path, name):
    # Caffe blob names are free strings; every blob reported written must be in the file.
    net = write("net.prototxt", input_layer((2, 3)) + f"""
layer {{ name: "ip" type: "InnerProduct" bottom: "data" top: "{name}" inner_product_param {{ num_output: 4 }} }}
""")
    np.save(tmp_path / "x.npy", np.ones((2, 3), np.float32))
    out = tmp_path / "out.npz"
    r = invoke("forward", net, "--input", f"data={tmp_path / 'x.npy'}", "-o", out, "--backend", "torch")
    assert r.exit_code == 0, r.output
    got = load_npz(out)
    assert list(got) == [name]
    expected = convnet_io.load(net, backend="torch").forward({"data": np.ones((2, 3), np.float32)})
    np.testing.assert_array_equal(got[name], expected[name])
