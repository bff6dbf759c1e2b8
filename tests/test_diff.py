"""`convnet diff`: planted faults are found at the right blob, clean pairs agree, backends agree
blob by blob (in-place writes included), the JSON report's shape, and bad input is exit 2."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convnet_cli.main import cli
from convnet_io.caffe.caffemodel import read_caffemodel, write_caffemodel

ROOT = Path(__file__).resolve().parent.parent
ALEXNET = ROOT / "prototxt" / "alexnet.prototxt"
ALEXNET_CAFFE2 = ROOT / "prototxt" / "alexnet_caffe2.txt"

SMALL = """\
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 stride: 1 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "pool1" type: "Pooling" bottom: "norm1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc" inner_product_param { num_output: 10 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""
SMALL_ORDER = ["data", "conv1", "conv1:1", "norm1", "pool1", "conv2", "conv2:1", "fc", "prob"]
ROW_KEYS = {"name", "shape", "max_abs", "max_rel", "mean_abs", "cosine", "ok"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def diff_json(*args):
    result = invoke("diff", *args, "--json")
    assert result.exit_code in (0, 1), (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result.exit_code, json.loads(result.stdout)


def rows(report):
    return {r["name"]: r for r in report["blobs"]}


def assert_bad_input(result):
    """Exit 2, nothing on stdout, and either one line on stderr ('error: ...') or click's usage
    message for an option out of range (which ends in one 'Error: ...' line)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    if lines and lines[0].startswith("Usage:"):
        assert lines[-1].startswith("Error: "), result.stderr
    else:
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def perturb(src: Path, dst: Path, layer: str, factor: float = 1.01) -> None:
    """Copy a .caffemodel with ``layer``'s weight blob (blob 0) multiplied by ``factor``."""
    layers = read_caffemodel(src)
    assert layer in [lb.name for lb in layers]
    for lb in layers:
        if lb.name == layer:
            lb.blobs[0] = lb.blobs[0] * factor
    write_caffemodel(dst, layers)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small net, its weights (convnet init) and variants."""
    d = tmp_path_factory.mktemp("small")
    net = d / "small.prototxt"
    net.write_text(SMALL)
    weights = d / "small.caffemodel"
    result = invoke("init", net, "-o", weights, "--seed", 1)
    assert result.exit_code == 0, result.output
    perturbed = d / "small_conv2.caffemodel"
    perturb(weights, perturbed, "conv2")
    return {"dir": d, "net": net, "weights": weights, "perturbed": perturbed}


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    d = tmp_path_factory.mktemp("alexnet")
    weights = d / "alexnet.caffemodel"
    result = invoke("init", ALEXNET, "-o", weights, "--seed", 0)
    assert result.exit_code == 0, result.output
    return weights


# ---------------------------------------------------------------------------------------------
# planted faults
# ---------------------------------------------------------------------------------------------


def test_planted_weight_fault_is_first_divergence(small):
    code, report = diff_json(small["net"], small["net"], "--weights", small["weights"],
                             "--weights-b", small["perturbed"])
    assert code == 1
    assert report["ok"] is False
    assert report["first_divergence"] == "conv2"
    names = [r["name"] for r in report["blobs"]]
    assert names == SMALL_ORDER
    i = names.index("conv2")
    assert all(r["ok"] for r in report["blobs"][:i]), report["blobs"][:i]
    assert all(r["max_abs"] == 0.0 for r in report["blobs"][:i])   # same weights, same code: bit-exact
    conv2 = report["blobs"][i]
    assert conv2["status"] == "mismatch"
    # the weight is 1% larger, the bias unchanged: the error is at most 1% of the blob's scale
    assert 0.001 < conv2["max_rel"] <= 0.0101
    assert not rows(report)["conv2:1"]["ok"] and not rows(report)["fc"]["ok"]


def test_planted_weight_fault_text_report(small):
    result = invoke("diff", small["net"], small["net"], "--weights", small["weights"],
                    "--weights-b", small["perturbed"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[-1].endswith("first divergence: conv2")
    marked = [ln for ln in lines[:-1] if "<- first divergence" in ln]
    assert len(marked) == 1 and marked[0].split()[0] == "conv2"


def test_planted_weight_fault_alexnet(alexnet_weights, tmp_path):
    perturbed = tmp_path / "alexnet_conv2.caffemodel"
    perturb(alexnet_weights, perturbed, "conv2")
    code, report = diff_json(ALEXNET, ALEXNET, "--weights", alexnet_weights, "--weights-b", perturbed)
    assert code == 1
    assert report["first_divergence"] == "conv2"
    names = [r["name"] for r in report["blobs"]]
    assert names[:5] == ["data", "conv1", "conv1:1", "norm1", "pool1"]
    assert all(r["ok"] for r in report["blobs"][:names.index("conv2")])


def test_changed_lrn_alpha_diverges_at_lrn_top(small):
    changed = small["dir"] / "small_alpha.prototxt"
    text = SMALL.replace("alpha: 0.0001", "alpha: 0.001")
    assert text != SMALL
    changed.write_text(text)
    code, report = diff_json(small["net"], changed, "--weights", small["weights"])
    assert code == 1
    assert report["first_divergence"] == "norm1"
    for name in ("data", "conv1", "conv1:1"):
        assert rows(report)[name]["ok"], name
    assert rows(report)["norm1"]["status"] == "mismatch"


def test_changed_lrn_alpha_without_weights_shares_a_weights(small):
    # no --weights: B takes A's (seeded) blobs, so the only difference is still the LRN
    changed = small["dir"] / "small_alpha2.prototxt"
    changed.write_text(SMALL.replace("alpha: 0.0001", "alpha: 0.001"))
    code, report = diff_json(small["net"], changed, "--seed", 5)
    assert code == 1 and report["first_divergence"] == "norm1"


# ---------------------------------------------------------------------------------------------
# clean pairs
# ---------------------------------------------------------------------------------------------


def test_same_file_twice_agrees(small):
    code, report = diff_json(small["net"], small["net"], "--weights", small["weights"])
    assert code == 0
    assert report["ok"] is True and report["first_divergence"] is None
    assert [r["name"] for r in report["blobs"]] == SMALL_ORDER
    assert all(r["ok"] and r["max_abs"] == 0.0 for r in report["blobs"])
    result = invoke("diff", small["net"], small["net"], "--weights", small["weights"])
    assert result.exit_code == 0
    assert result.stdout.strip().splitlines()[-1] == f"all {len(SMALL_ORDER)} blobs agree"


def test_alexnet_prototxt_agrees_with_caffe2_listing(alexnet_weights):
    code, report = diff_json(ALEXNET, ALEXNET_CAFFE2, "--weights", alexnet_weights)
    assert code == 0, report.get("first_divergence")
    assert report["ok"] is True and report["first_divergence"] is None
    names = [r["name"] for r in report["blobs"]]
    for name in ("conv1", "conv1:1", "norm1", "pool1", "conv2", "norm2", "conv5:1", "pool5", "fc6", "fc7", "fc8"):
        assert name in names, name
    assert rows(report)["fc8"]["shape"] == [1, 1000]
    assert rows(report)["data"]["shape"] == [1, 3, 227, 227]   # --batch 1, not the Data layer's 50


# ---------------------------------------------------------------------------------------------
# against a backend
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv", "torch"])
def test_against_backend_agrees_with_in_place_blobs(small, backend):
    code, report = diff_json(small["net"], "--weights", small["weights"], "--against", backend)
    assert code == 0, report["first_divergence"]
    assert report["ok"] is True and report["first_divergence"] is None
    names = [r["name"] for r in report["blobs"]]
    # each in-place write is its own blob: conv1 before relu1, conv1:1 after
    for name in ("conv1", "conv1:1", "norm1", "pool1", "conv2", "conv2:1", "fc", "prob"):
        assert name in names, (backend, name, names)
    assert names == [n for n in SMALL_ORDER if n in names]          # execution order
    assert rows(report)["conv1"]["shape"] == [1, 8, 32, 32]
    assert backend.split()[0] in report["b"]


@pytest.mark.parametrize("backend", ["onnxruntime", "opencv"])
def test_against_backend_batch_3(small, backend):
    code, report = diff_json(small["net"], "--weights", small["weights"], "--against", backend, "--batch", 3)
    assert code == 0, report["first_divergence"]
    assert report["batch"] == 3
    assert rows(report)["conv1:1"]["shape"] == [3, 8, 32, 32]
    assert rows(report)["prob"]["shape"] == [3, 10]


def test_batch_3_between_two_definitions(small):
    code, report = diff_json(small["net"], small["net"], "--weights", small["weights"],
                             "--weights-b", small["perturbed"], "--batch", 3)
    assert code == 1 and report["first_divergence"] == "conv2"
    assert rows(report)["data"]["shape"] == [3, 3, 32, 32]


def test_image_input(small, tmp_path):
    image = tmp_path / "img.png"
    pixels = (np.random.default_rng(3).random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(image)
    result = invoke("diff", small["net"], "--weights", small["weights"], "--input", image, "--batch", 2, "--json")
    if result.exit_code == 3 and ("ImportError" in result.stderr or "AttributeError" in result.stderr):
        pytest.xfail(f"convnet_io/preprocess.py is unfinished (another engineer's work): {result.stderr.strip()}")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert rows(report)["conv1:1"]["shape"] == [2, 8, 32, 32]
    # the image, not the seeded noise, was the input
    _, seeded = diff_json(small["net"], "--weights", small["weights"], "--batch", 2)
    assert rows(report)["conv1"]["mean_abs"] != rows(seeded)["conv1"]["mean_abs"]


def test_image_input_two_definitions(small, tmp_path):
    image = tmp_path / "grey.png"
    Image.fromarray((np.arange(50 * 60).reshape(50, 60) % 256).astype(np.uint8), mode="L").save(image)
    result = invoke("diff", small["net"], small["net"], "--weights", small["weights"],
                    "--weights-b", small["perturbed"], "--input", image, "--json")
    if result.exit_code == 3 and ("ImportError" in result.stderr or "AttributeError" in result.stderr):
        pytest.xfail(f"convnet_io/preprocess.py is unfinished (another engineer's work): {result.stderr.strip()}")
    assert result.exit_code == 1, result.output
    assert json.loads(result.stdout)["first_divergence"] == "conv2"


# ---------------------------------------------------------------------------------------------
# the JSON report
# ---------------------------------------------------------------------------------------------


def test_json_shape(small):
    code, report = diff_json(small["net"], small["net"], "--weights", small["weights"],
                             "--weights-b", small["perturbed"])
    assert code == 1
    assert {"blobs", "ok", "first_divergence"} <= set(report)
    assert isinstance(report["ok"], bool)
    assert report["first_divergence"] is None or isinstance(report["first_divergence"], str)
    assert isinstance(report["blobs"], list) and report["blobs"]
    for row in report["blobs"]:
        assert ROW_KEYS <= set(row), row
        assert isinstance(row["name"], str) and isinstance(row["ok"], bool)
        assert isinstance(row["shape"], list) and all(isinstance(d, int) for d in row["shape"])
        for key in ("max_abs", "max_rel", "mean_abs", "cosine"):
            assert isinstance(row[key], float), (row["name"], key)
    assert report["tolerance"] == {"atol": 1e-5, "rtol": 1e-4}
    assert report["compared"] == len(report["blobs"])
    code, clean = diff_json(small["net"], small["net"], "--weights", small["weights"])
    assert clean["ok"] is True and clean["first_divergence"] is None


def test_tolerance_options_reach_the_comparison(small):
    # a 1% weight change passes with rtol 2% (max_rel <= 1%), and fails with the default
    code, report = diff_json(small["net"], small["net"], "--weights", small["weights"],
                             "--weights-b", small["perturbed"], "--rtol", 0.02, "--atol", 0)
    assert code == 0 and report["ok"] is True
    assert report["tolerance"] == {"atol": 0.0, "rtol": 0.02}


def test_json_with_nan_weights_is_strict_json(small, tmp_path):
    # BUG (kept failing on purpose): a NaN in the weights makes fc NaN in both runs; the report
    # then holds max_abs=inf, max_rel=inf, mean_abs=NaN, printed by --json as Infinity / NaN,
    # which is not JSON (RFC 8259): jq and JSON.parse reject the whole report.
    nan_weights = tmp_path / "nan.caffemodel"
    layers = read_caffemodel(small["weights"])
    for lb in layers:
        if lb.name == "fc":
            lb.blobs[1] = lb.blobs[1].copy()
            lb.blobs[1][3] = np.nan
    write_caffemodel(nan_weights, layers)
    result = invoke("diff", small["net"], "--weights", nan_weights, "--json")
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)                 # Python's lenient parser accepts it ...
    assert report["first_divergence"] == "fc"
    assert all(r["ok"] for r in report["blobs"] if r["name"] not in ("fc", "prob"))

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    json.loads(result.stdout, parse_constant=reject)   # ... a strict one does not


# ---------------------------------------------------------------------------------------------
# shapes that differ, bad input
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def strided(small):
    """B: pool1 with stride 1 (32 -> 31), so pool1, conv2 and fc's input differ in shape; its
    weights share A's conv1 and conv2 (same shapes) and have their own fc."""
    d = small["dir"]
    net = d / "small_stride1.prototxt"
    text = SMALL.replace("pool: MAX kernel_size: 2 stride: 2", "pool: MAX kernel_size: 2 stride: 1")
    assert text != SMALL
    net.write_text(text)
    own = d / "stride1_own.caffemodel"
    assert invoke("init", net, "-o", own, "--seed", 2).exit_code == 0
    a_layers = {lb.name: lb for lb in read_caffemodel(small["weights"])}
    layers = read_caffemodel(own)
    for lb in layers:
        if lb.name in ("conv1", "conv2"):
            lb.blobs = a_layers[lb.name].blobs
    weights = d / "stride1.caffemodel"
    write_caffemodel(weights, layers)
    return {"net": net, "weights": weights}


def test_shape_mismatch_is_reported_not_raised(small, strided):
    code, report = diff_json(small["net"], strided["net"], "--weights", small["weights"],
                             "--weights-b", strided["weights"])
    assert code == 1
    assert report["first_divergence"] == "pool1"
    r = rows(report)
    for name in ("data", "conv1", "conv1:1", "norm1"):
        assert r[name]["ok"], name
    for name in ("pool1", "conv2", "conv2:1"):
        assert r[name]["status"] == "shape mismatch" and r[name]["ok"] is False, name
        assert r[name]["max_abs"] is None
    assert r["pool1"]["shape"] == [[1, 8, 16, 16], [1, 8, 31, 31]]
    assert r["fc"]["shape"] == [1, 10] and r["fc"]["status"] == "mismatch"   # same shape, other values
    text = invoke("diff", small["net"], strided["net"], "--weights", small["weights"],
                  "--weights-b", strided["weights"])
    assert text.exit_code == 1 and "Traceback" not in text.output
    assert "1×8×16×16 vs 1×8×31×31" in text.stdout
    assert text.stdout.strip().splitlines()[-1].endswith("first divergence: pool1")


def test_missing_net(small, tmp_path):
    assert_bad_input(invoke("diff", tmp_path / "no_such.prototxt"))
    assert_bad_input(invoke("diff", small["net"], tmp_path / "no_such_b.prototxt"))


def test_missing_weights(small, tmp_path):
    assert_bad_input(invoke("diff", small["net"], "--weights", tmp_path / "no.caffemodel"))
    assert_bad_input(invoke("diff", small["net"], small["net"], "--weights", small["weights"],
                            "--weights-b", tmp_path / "no.caffemodel"))


def test_weights_for_another_net(small, strided):
    # the stride-1 net's fc has 8*31*31 inputs, the small net's 8*16*16
    result = invoke("diff", small["net"], "--weights", strided["weights"])
    assert_bad_input(result)
    assert "fc" in result.stderr
    assert_bad_input(invoke("diff", small["net"], small["net"], "--weights", small["weights"],
                            "--weights-b", strided["weights"]))


def test_corrupt_weights_and_bad_prototxt(small, tmp_path):
    assert_bad_input(invoke("diff", small["net"], "--weights", small["net"]))   # a prototxt as weights
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: \"x\" type: \n")
    assert_bad_input(invoke("diff", bad))


def test_bad_image(small, tmp_path):
    assert_bad_input(invoke("diff", small["net"], "--weights", small["weights"], "--input", tmp_path / "no.png"))
    assert_bad_input(invoke("diff", small["net"], "--weights", small["weights"], "--input", small["net"]))


def test_bad_batch(small):
    assert_bad_input(invoke("diff", small["net"], "--weights", small["weights"], "--batch", 0))


def test_negative_seed_is_bad_input_not_internal_error(small):
    # A negative seed is refused as bad input (exit 2), never an internal error.
    assert_bad_input(invoke("diff", small["net"], "--weights", small["weights"], "--seed", -3))
