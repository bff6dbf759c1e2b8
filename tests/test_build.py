"""`convnet build`: shapes, parameter and MAC totals against hand counts; every shipped and
reference net builds or fails with a located reason."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from convnet_cli.main import cli
from convnet_io.api.loading import load_graph
from convnet_io.graph.summary import summarize

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
MODELS = SHARED / "caffe-models"
needs_shared = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/caffe-models not present")


def conv_params(cin, cout, k, group=1):
    return cout * (cin // group) * k * k + cout


def fc_params(cin, cout):
    return cin * cout + cout


# AlexNet with its two-GPU grouping (conv2, conv4, conv5 in 2 groups).
ALEXNET_PARAMS = (conv_params(3, 96, 11) + conv_params(96, 256, 5, 2) + conv_params(256, 384, 3)
                  + conv_params(384, 384, 3, 2) + conv_params(384, 256, 3, 2)
                  + fc_params(256 * 6 * 6, 4096) + fc_params(4096, 4096) + fc_params(4096, 1000))


def inception_params(cin, c1, r3, c3, r5, c5, pp):
    return (conv_params(cin, c1, 1) + conv_params(cin, r3, 1) + conv_params(r3, c3, 3)
            + conv_params(cin, r5, 1) + conv_params(r5, c5, 5) + conv_params(cin, pp, 1))


GOOGLENET_DEPLOY_PARAMS = (
    conv_params(3, 64, 7) + conv_params(64, 64, 1) + conv_params(64, 192, 3)
    + inception_params(192, 64, 96, 128, 16, 32, 32) + inception_params(256, 128, 128, 192, 32, 96, 64)
    + inception_params(480, 192, 96, 208, 16, 48, 64) + inception_params(512, 160, 112, 224, 24, 64, 64)
    + inception_params(512, 128, 128, 256, 24, 64, 64) + inception_params(512, 112, 144, 288, 32, 64, 64)
    + inception_params(528, 256, 160, 320, 32, 128, 128) + inception_params(832, 256, 160, 320, 32, 128, 128)
    + inception_params(832, 384, 192, 384, 48, 128, 128) + fc_params(1024, 1000))

LENET_PARAMS = conv_params(1, 20, 5) + conv_params(20, 50, 5) + fc_params(50 * 4 * 4, 500) + fc_params(500, 10)
CIFAR_QUICK_PARAMS = (conv_params(3, 32, 5) + conv_params(32, 32, 5) + conv_params(32, 64, 5)
                      + fc_params(64 * 4 * 4, 64) + fc_params(64, 10))


def test_hand_count_is_the_documented_alexnet_figure():
    assert ALEXNET_PARAMS == 60_965_224


def _shapes(summary):
    return {r["name"]: tuple(r["shape"][1:]) for r in summary["layers"]}


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("net", ["prototxt/alexnet.prototxt", "prototxt/caffenet.prototxt"])
def test_bundled_alexnet_shapes_and_totals(net, phase):
    s = summarize(load_graph(ROOT / net, phase=phase))
    shapes = _shapes(s)
    assert shapes["conv1"] == (96, 55, 55)
    assert shapes["pool1"] == (96, 27, 27)
    assert shapes["conv2"] == (256, 27, 27)
    assert shapes["pool2"] == (256, 13, 13)
    assert shapes["conv5"] == (256, 13, 13)
    assert shapes["pool5"] == (256, 6, 6)
    assert shapes["fc8"] == (1000,)
    assert s["total_params"] == ALEXNET_PARAMS
    # conv MACs: output elements x (input channels per group x k x k); fc: in x out.
    expected_macs = (96 * 55 * 55 * 3 * 121 + 256 * 27 * 27 * 48 * 25 + 384 * 13 * 13 * 256 * 9
                     + 384 * 13 * 13 * 192 * 9 + 256 * 13 * 13 * 192 * 9
                     + 9216 * 4096 + 4096 * 4096 + 4096 * 1000)
    assert s["total_macs"] == expected_macs
    types = {r["name"]: r["type"] for r in s["layers"]}
    assert ("accuracy" in types) == (phase == "TEST")
    assert types["loss"] == "SoftmaxWithLoss"


def test_alexnet_lrn_comes_before_pooling_and_caffenet_after():
    alex = [n.name for n in load_graph(ROOT / "prototxt/alexnet.prototxt").nodes]
    caffe = [n.name for n in load_graph(ROOT / "prototxt/caffenet.prototxt").nodes]
    assert alex.index("norm1") < alex.index("pool1")
    assert caffe.index("pool1") < caffe.index("norm1")


@needs_shared
@pytest.mark.parametrize("net, expected", [
    ("bvlc_alexnet/deploy.prototxt", ALEXNET_PARAMS),
    ("bvlc_alexnet/train_val.prototxt", ALEXNET_PARAMS),
    ("bvlc_reference_caffenet/deploy.prototxt", ALEXNET_PARAMS),
    ("bvlc_googlenet/deploy.prototxt", GOOGLENET_DEPLOY_PARAMS),
    ("mnist/lenet.prototxt", LENET_PARAMS),
    ("cifar10/cifar10_quick.prototxt", CIFAR_QUICK_PARAMS),
])
def test_reference_net_totals(net, expected):
    assert summarize(load_graph(MODELS / net))["total_params"] == expected


@needs_shared
def test_googlenet_shapes():
    s = _shapes(summarize(load_graph(MODELS / "bvlc_googlenet/deploy.prototxt")))
    assert s["conv1/7x7_s2"] == (64, 112, 112)
    assert s["pool1/3x3_s2"] == (64, 56, 56)  # ceil((112-3)/2)+1 = 56
    assert s["inception_3a/output"] == (256, 28, 28)
    assert s["inception_5b/output"] == (1024, 7, 7)
    assert s["pool5/7x7_s1"] == (1024, 1, 1)
    assert s["loss3/classifier"] == (1000,)


def _all_reference_nets():
    if not MODELS.is_dir():
        return []
    return sorted(p for p in MODELS.rglob("*.prototxt") if "solver" not in p.name)


@needs_shared
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("net", _all_reference_nets(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_reference_net_builds_or_fails_located(net, phase):
    result = CliRunner().invoke(cli, ["build", str(net), "--phase", phase])
    if result.exit_code == 0:
        assert "total:" in result.output
        return
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    # The only accepted failure: a data layer whose size needs its (absent) source.
    assert re.search(r"layer '[^']+' \(Data\): .*--input-shape", result.output), result.output
    retry = CliRunner().invoke(cli, ["build", str(net), "--phase", phase, "--input-shape", "2,3,32,32"])
    assert retry.exit_code == 0, retry.output


@needs_shared
def test_lenet_train_test_with_input_shape():
    g = load_graph(MODELS / "mnist/lenet_train_test.prototxt", phase="TRAIN", input_shapes=(64, 1, 28, 28))
    s = summarize(g)
    assert _shapes(s)["pool2"] == (50, 4, 4)
    assert s["total_params"] == LENET_PARAMS
    assert g.shapes["label"] == (64,)


def test_build_json_keys():
    result = CliRunner().invoke(cli, ["build", str(ROOT / "prototxt/alexnet.prototxt"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{"):])
    assert set(data) >= {"layers", "total_params", "total_macs", "output_shapes"}
    assert set(data["layers"][0]) >= {"name", "type", "tops", "shape", "params", "macs"}
    conv1 = next(r for r in data["layers"] if r["name"] == "conv1")
    assert conv1["shape"] == [50, 96, 55, 55] and conv1["params"] == 96 * 3 * 121 + 96
    assert data["total_params"] == ALEXNET_PARAMS


def test_input_shape_overrides_the_data_layer():
    g = load_graph(ROOT / "prototxt/alexnet.prototxt", input_shapes={"data": (2, 3, 224, 224)})
    assert g.shapes["conv1"] == (2, 96, 54, 54)  # (224 - 11) // 4 + 1
    assert g.shapes["pool1"] == (2, 96, 27, 27)  # ceil((54 - 3) / 2) + 1


def test_data_layer_shape_notice_says_three_channels():
    g = load_graph(ROOT / "prototxt/alexnet.prototxt", phase="TRAIN")
    assert g.shapes["data"] == (128, 3, 227, 227)
    assert any("3 channels" in n for n in g.notices)


def test_malformed_prototxt_is_one_located_line(tmp_path):
    bad = tmp_path / "bad.prototxt"
    bad.write_text('name: "x"\nlayer {\n  name: "a"\n  type: "ReLU"\n  bottom "x"\n}\n')
    result = subprocess.run([sys.executable, "-m", "convnet_cli.main", "build", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert re.match(rf"error: {re.escape(str(bad))}:5:\d+: ", result.stderr), result.stderr


def test_unknown_layer_type_names_layer_and_lists_supported(tmp_path):
    net = tmp_path / "n.prototxt"
    net.write_text('input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\n'
                   'layer { name: "weird" type: "Frobnicate" bottom: "data" top: "y" }\n')
    result = CliRunner().invoke(cli, ["build", str(net)])
    assert result.exit_code == 2
    assert "layer 'weird'" in result.output and "Frobnicate" in result.output
    # the list is every type, also those of families the net's own types did not load
    assert "Proposal" in result.output and "Region" in result.output
    assert "Convolution" in result.output


def test_missing_file_is_a_clear_error():
    result = CliRunner().invoke(cli, ["build", "no/such/net.prototxt"])
    assert result.exit_code == 2
    assert "no such file" in result.output


def _seed_blocks() -> str:
    """The ```protobuf blocks quoted in seed 001, concatenated as a user would paste them."""
    seed = next((SHARED / "seeds").glob("001_*.txt"))
    blocks = re.findall(r"```protobuf\n(.*?)```", seed.read_text(encoding="utf-8"), flags=re.S)
    return "".join(blocks)


@pytest.mark.skipif(not (SHARED / "seeds").is_dir(), reason="../shared/seeds not present")
def test_seed_001_blocks_fail_at_the_unbalanced_brace(tmp_path):
    text = _seed_blocks()
    path = tmp_path / "seed001.prototxt"
    path.write_text(text)
    lines = text.splitlines()
    # The pool2 block never closes, so the next `layer {` opens inside it: that line is the error.
    pool2 = next(i for i, line in enumerate(lines) if 'name: "pool2"' in line)
    expected_line = next(i for i in range(pool2, len(lines)) if lines[i].strip() == "layer {") + 1
    result = CliRunner().invoke(cli, ["build", str(path)])
    assert result.exit_code == 2
    m = re.search(rf"{re.escape(str(path))}:(\d+):(\d+): ", result.output)
    assert m, result.output
    assert int(m.group(1)) == expected_line


@pytest.mark.skipif(not (SHARED / "seeds").is_dir(), reason="../shared/seeds not present")
def test_seed_001_blocks_each_parse_or_fail_located(tmp_path):
    seed = next((SHARED / "seeds").glob("001_*.txt"))
    blocks = re.findall(r"```protobuf\n(.*?)```", seed.read_text(encoding="utf-8"), flags=re.S)
    from convnet_io.errors import ParseError
    from convnet_io.caffe.prototxt import parse_net_text

    failures = []
    for i, block in enumerate(blocks):
        try:
            parse_net_text(block, f"block{i}")
        except ParseError as e:
            assert e.line is not None and e.line >= 1
            failures.append((i, e.line))
    # Exactly the blocks whose braces do not balance fail, each at a line inside the block.
    unbalanced = [i for i, b in enumerate(blocks) if b.count("{") != b.count("}")]
    assert unbalanced and [i for i, _ in failures] == unbalanced
    for i, line in failures:
        assert 1 <= line <= len(blocks[i].splitlines()) + 1
