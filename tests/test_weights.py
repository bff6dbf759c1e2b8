"""Weights against a net: ``convnet_io.caffe.weights.match_weights`` / ``check_weights`` and
``convnet build NET --weights W``, with Caffe's rules (``Net::CopyTrainedLayersFrom``: by layer name,
the same number of blobs, ``Blob::ShapeEquals`` shapes, legacy 4-D blobs, V1 files)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from convnet_cli.main import cli
from convnet_io.caffe.caffemodel import LayerBlobs, read_caffemodel, write_caffemodel
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.weights import check_weights, layer_blobs, match_weights

from helpers import graph_from_text, input_layer

NET = input_layer((2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
  inner_product_param { num_output: 5 } }
"""
# conv1: (4, 3, 3, 3) + (4,); pool1: 4 x 3 x 3 = 36 inputs; ip1: (5, 36) + (5,).
SHAPES = {"conv1": [(4, 3, 3, 3), (4,)], "ip1": [(5, 36), (5,)]}
RNG = np.random.default_rng(11)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def good_layers():
    return [LayerBlobs(name, "Convolution" if name == "conv1" else "InnerProduct",
                       [rand(*s) for s in shapes]) for name, shapes in SHAPES.items()]


@pytest.fixture(scope="module")
def graph():
    return graph_from_text(NET)


@pytest.fixture
def net_file(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return p


def numbers(text: str) -> str:
    """The digits of ``text`` with everything else collapsed to one space: shapes compare as
    '4 3 3 3' however they are formatted."""
    return " " + re.sub(r"\D+", " ", text) + " "


# -- match_weights ------------------------------------------------------------------------------


def test_good_weights_match(graph):
    layers = good_layers()
    report = match_weights(graph, layers)
    assert report.matched == 2
    assert report.missing == [] and report.warnings == []
    assert set(report.blobs) == {"conv1", "ip1"}
    for lb in layers:
        got = report.blobs[lb.name]
        assert [g.shape for g in got] == [tuple(s) for s in SHAPES[lb.name]]
        for g, a in zip(got, lb.blobs):
            np.testing.assert_array_equal(g, a)
            assert g.dtype == np.float32


def test_good_weights_file_matches(graph, tmp_path):
    layers = good_layers()
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, layers)
    report = check_weights(graph, path)
    assert report.matched == 2 and report.warnings == []
    for lb in layers:
        for g, a in zip(report.blobs[lb.name], lb.blobs):
            np.testing.assert_array_equal(g, a)


def test_order_in_the_file_does_not_matter(graph):
    report = match_weights(graph, good_layers()[::-1])
    assert report.matched == 2 and report.warnings == []


def test_missing_layer_is_an_error_naming_it(graph):
    layers = [lb for lb in good_layers() if lb.name != "ip1"]
    with pytest.raises(LayerError) as e:
        match_weights(graph, layers, source="w.caffemodel")
    assert e.value.layer == "ip1"
    assert "'ip1'" in str(e.value) and "w.caffemodel" in str(e.value)


def test_missing_layer_not_strict_is_listed_and_warned(graph):
    layers = [lb for lb in good_layers() if lb.name != "conv1"]
    report = match_weights(graph, layers, source="w.caffemodel", strict=False)
    assert report.missing == ["conv1"]
    assert report.matched == 1 and set(report.blobs) == {"ip1"}
    assert len(report.warnings) == 1 and "conv1" in report.warnings[0]
    assert "ip1" not in report.warnings[0]


def test_load_not_strict_keeps_initial_values_for_missing_layers(tmp_path):
    # Fine-tuning as Caffe does it (Net::CopyTrainedLayersFrom on a net built from its fillers): a
    # layer absent from the file keeps its filler values; the warning says "they keep their
    # initial values", and `convnet train --weights` (Trainer) does fill them from initial_blobs.
    from convnet_io import load

    net_file = tmp_path / "net.prototxt"
    net_file.write_text(NET.replace("convolution_param { num_output: 4 kernel_size: 3 }",
                                    "convolution_param { num_output: 4 kernel_size: 3 "
                                    "weight_filler { type: 'gaussian' std: 0.1 } "
                                    "bias_filler { type: 'constant' value: 0.5 } }"))
    layers = [lb for lb in good_layers() if lb.name != "conv1"]
    path = tmp_path / "partial.caffemodel"
    write_caffemodel(path, layers)
    with pytest.raises(LayerError, match="conv1"):
        load(net_file, weights=path)
    net = load(net_file, weights=path, strict=False, seed=3)
    assert any("conv1" in n for n in net.graph.notices)
    blobs = net.blobs()
    np.testing.assert_array_equal(blobs["ip1"][0], layers[0].blobs[0])
    np.testing.assert_array_equal(blobs["ip1"][1], layers[0].blobs[1])
    fresh = load(net_file, seed=3).blobs()
    assert np.all(fresh["conv1"][1] == 0.5)
    assert np.all(blobs["conv1"][1] == 0.5), blobs["conv1"][1]  # the bias_filler, not zeros
    np.testing.assert_array_equal(blobs["conv1"][0], fresh["conv1"][0])


def test_wrong_blob_count_names_layer_and_both_counts(graph):
    layers = good_layers()
    layers[0].blobs.append(rand(4))  # conv1 with 3 blobs, the net has 2
    with pytest.raises(LayerError) as e:
        match_weights(graph, layers)
    msg = str(e.value)
    assert e.value.layer == "conv1" and "'conv1'" in msg
    assert re.search(r"\b3 blob", msg) and re.search(r"expects 2\b", msg), msg


def test_bias_term_false_file_against_bias_net_is_a_count_error(graph):
    layers = good_layers()
    layers[1].blobs = layers[1].blobs[:1]  # ip1 written without its bias
    with pytest.raises(LayerError) as e:
        match_weights(graph, layers)
    assert e.value.layer == "ip1"
    assert re.search(r"\b1 blob", str(e.value)) and re.search(r"expects 2\b", str(e.value))


@pytest.mark.parametrize("layer, index, bad", [
    ("conv1", 0, (4, 3, 5, 5)),
    ("conv1", 1, (5,)),
    ("ip1", 0, (36, 5)),  # transposed
    ("conv1", 0, (4, 27)),  # same count, other shape: Caffe's ShapeEquals refuses it
    ("ip1", 0, (5, 36, 1, 1)),  # not the legacy (1, 1, N, K) layout
])
def test_shape_mismatch_names_layer_and_both_shapes(graph, layer, index, bad):
    layers = good_layers()
    lb = next(x for x in layers if x.name == layer)
    lb.blobs[index] = rand(*bad)
    with pytest.raises(LayerError) as e:
        match_weights(graph, layers, source="w.caffemodel")
    msg = str(e.value)
    assert e.value.layer == layer and f"'{layer}'" in msg
    expected = SHAPES[layer][index]
    assert numbers(" ".join(map(str, bad))) in numbers(msg), msg
    assert numbers(" ".join(map(str, expected))) in numbers(msg), msg


def test_extra_layers_in_the_file_are_a_warning_listing_them(graph):
    layers = good_layers() + [LayerBlobs("conv0", "Convolution", [rand(2, 3, 1, 1)]),
                              LayerBlobs("fc_old", "InnerProduct", [rand(3, 3), rand(3)])]
    report = match_weights(graph, layers, source="w.caffemodel")
    assert report.matched == 2 and report.missing == []
    assert len(report.warnings) == 1
    w = report.warnings[0]
    assert "conv0" in w and "fc_old" in w and "conv1" not in w and "ip1" not in w


def legacy_blob(msg, arr: np.ndarray):
    """A BlobProto with Caffe's legacy num/channels/height/width fields."""
    b = msg.blobs.add()
    b.num, b.channels, b.height, b.width = (1,) * (4 - arr.ndim) + arr.shape
    b.data.extend(arr.ravel().tolist())


def test_legacy_4d_blobs_fit_inner_product_and_bias(graph, tmp_path):
    # Old Caffe stored an InnerProduct weight (N, K) as (1, 1, N, K), its bias as (1, 1, 1, N).
    conv_w, conv_b, ip_w, ip_b = rand(4, 3, 3, 3), rand(4), rand(5, 36), rand(5)
    net = caffe_pb2.NetParameter(name="legacy")
    conv = net.layer.add(name="conv1", type="Convolution")
    legacy_blob(conv, conv_w)
    legacy_blob(conv, conv_b)
    ip = net.layer.add(name="ip1", type="InnerProduct")
    legacy_blob(ip, ip_w)
    legacy_blob(ip, ip_b)
    path = tmp_path / "legacy.caffemodel"
    path.write_bytes(net.SerializeToString())
    raw = {lb.name: [b.shape for b in lb.blobs] for lb in read_caffemodel(path)}
    assert raw == {"conv1": [(4, 3, 3, 3), (1, 1, 1, 4)], "ip1": [(1, 1, 5, 36), (1, 1, 1, 5)]}
    report = check_weights(graph, path)
    assert report.matched == 2 and report.warnings == []
    got = report.blobs
    assert [b.shape for b in got["ip1"]] == [(5, 36), (5,)]
    np.testing.assert_array_equal(got["ip1"][0], ip_w)
    np.testing.assert_array_equal(got["ip1"][1], ip_b)
    np.testing.assert_array_equal(got["conv1"][0], conv_w)
    np.testing.assert_array_equal(got["conv1"][1], conv_b)


def test_legacy_blob_matching_in_memory(graph):
    layers = good_layers()
    ip_w = layers[1].blobs[0]
    layers[1].blobs[0] = ip_w.reshape(1, 1, 5, 36)
    report = match_weights(graph, layers)
    assert report.blobs["ip1"][0].shape == (5, 36)
    np.testing.assert_array_equal(report.blobs["ip1"][0], ip_w)


def v1_file(path, conv_w, conv_b, ip_w, ip_b, extra_relu=True):
    """A V1 (``layers { type: CONVOLUTION ... }``) caffemodel with legacy-shaped blobs."""
    net = caffe_pb2.NetParameter(name="v1net")
    conv = net.layers.add(name="conv1", type=caffe_pb2.V1LayerParameter.CONVOLUTION)
    legacy_blob(conv, conv_w)
    legacy_blob(conv, conv_b)
    if extra_relu:
        net.layers.add(name="relu1", type=caffe_pb2.V1LayerParameter.RELU)
    ip = net.layers.add(name="ip1", type=caffe_pb2.V1LayerParameter.INNER_PRODUCT)
    legacy_blob(ip, ip_w)
    legacy_blob(ip, ip_b)
    path.write_bytes(net.SerializeToString())
    return path


def test_v1_caffemodel_loads(graph, tmp_path):
    conv_w, conv_b, ip_w, ip_b = rand(4, 3, 3, 3), rand(4), rand(5, 36), rand(5)
    path = v1_file(tmp_path / "v1.caffemodel", conv_w, conv_b, ip_w, ip_b)
    layers = read_caffemodel(path)
    assert [(lb.name, lb.type) for lb in layers] == [("conv1", "Convolution"), ("ip1", "InnerProduct")]
    report = check_weights(graph, path)
    assert report.matched == 2 and report.warnings == []
    np.testing.assert_array_equal(report.blobs["conv1"][0], conv_w)
    np.testing.assert_array_equal(report.blobs["conv1"][1], conv_b)
    np.testing.assert_array_equal(report.blobs["ip1"][0], ip_w)
    np.testing.assert_array_equal(report.blobs["ip1"][1], ip_b)


def test_v1_caffemodel_runs(net_file, tmp_path):
    from convnet_io import load

    conv_w, conv_b, ip_w, ip_b = rand(4, 3, 3, 3), rand(4), rand(5, 36), rand(5)
    path = v1_file(tmp_path / "v1.caffemodel", conv_w, conv_b, ip_w, ip_b)
    net = load(net_file, weights=path, backend="torch")
    x = rand(2, 3, 8, 8)
    out = net.forward({"data": x})["ip1"]
    # NumPy reference: conv 3x3 valid + bias, ReLU, 2x2 max pool, inner product.
    cols = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))  # (2, 3, 6, 6, 3, 3)
    conv = np.einsum("nchwij,ocij->nohw", cols, conv_w) + conv_b[None, :, None, None]
    pooled = np.maximum(conv, 0).reshape(2, 4, 3, 2, 3, 2).max(axis=(3, 5))
    expected = pooled.reshape(2, -1) @ ip_w.T + ip_b
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_layer_blobs_in_net_order_and_unknown_layers(graph):
    blobs = {"ip1": [rand(5, 36), rand(5)], "conv1": [rand(4, 3, 3, 3), rand(4)]}
    out = layer_blobs(graph, blobs)
    assert [(lb.name, lb.type) for lb in out] == [("conv1", "Convolution"), ("ip1", "InnerProduct")]
    with pytest.raises(ConvnetError, match="nope"):
        layer_blobs(graph, {**blobs, "nope": [rand(1)]})


# -- convnet build --weights ------------------------------------------------------------------


def run_build(*args):
    return CliRunner().invoke(cli, ["build", *map(str, args)])


def test_build_with_good_weights(net_file, tmp_path):
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, good_layers())
    result = run_build(net_file, "--weights", path)
    assert result.exit_code == 0, result.output
    assert f"weights: {path} fits the net (2 layers with blobs)" in result.stdout
    assert result.stderr == ""


def test_build_with_v1_weights(net_file, tmp_path):
    path = v1_file(tmp_path / "v1.caffemodel", rand(4, 3, 3, 3), rand(4), rand(5, 36), rand(5))
    result = run_build(net_file, "--weights", path)
    assert result.exit_code == 0, result.output
    assert "fits the net (2 layers with blobs)" in result.stdout


def test_build_with_extra_layers_warns(net_file, tmp_path):
    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, good_layers() + [LayerBlobs("fc_old", "InnerProduct", [rand(2, 2)])])
    result = run_build(net_file, "--weights", path)
    assert result.exit_code == 0, result.output
    assert "fits the net" in result.stdout
    assert "fc_old" in result.stderr


def test_build_json_reports_weights(net_file, tmp_path):
    import json

    path = tmp_path / "w.caffemodel"
    write_caffemodel(path, good_layers())
    result = run_build(net_file, "--weights", path, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["weights"] == {"path": str(path), "layers": 2, "warnings": []}


@pytest.mark.parametrize("case", ["shape", "count", "missing"])
def test_build_with_bad_weights_exits_2_naming_the_layer(net_file, tmp_path, case):
    layers = good_layers()
    if case == "shape":
        layers[1].blobs[0] = rand(5, 40)
    elif case == "count":
        layers[1].blobs.append(rand(5))
    else:
        layers = layers[:1]
    path = tmp_path / "bad.caffemodel"
    write_caffemodel(path, layers)
    result = run_build(net_file, "--weights", path)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "'ip1'" in lines[0]
    assert "Traceback" not in result.output
    assert "fits the net" not in result.stdout


def test_build_with_unreadable_weights_exits_2(net_file, tmp_path):
    path = tmp_path / "junk.caffemodel"
    path.write_bytes(b"\xff\xff\xff\xff not protobuf")
    result = run_build(net_file, "--weights", path)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ") and str(path) in result.stderr
    missing = run_build(net_file, "--weights", tmp_path / "nope.caffemodel")
    assert missing.exit_code == 2 and "nope.caffemodel" in missing.stderr
