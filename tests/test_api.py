"""The Python API: load, forward on either backend, blob names, reshaping, weights round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import convnet_io
from convnet_io.errors import ConvnetError
from helpers import input_layer, rel_err

NET = input_layer((2, 3, 16, 16)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc"
        inner_product_param { num_output: 5 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def path(tmp_path):
    p = tmp_path / "net.prototxt"
    p.write_text(NET)
    return p


def x(batch=2, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, 16, 16)).astype(np.float32)


def test_backends_agree_and_auto_uses_onnxruntime_for_inference(path):
    ort_net = convnet_io.load(path, seed=3, backend="onnxruntime")
    torch_net = convnet_io.load(path, seed=3, backend="torch")
    auto = convnet_io.load(path, seed=3)
    for batch in (1, 2, 5):
        a = ort_net.forward(x(batch))["prob"]
        b = torch_net.forward(x(batch))["prob"]
        assert rel_err(a, b) <= 1e-5
        assert rel_err(auto.forward(x(batch))["prob"], b) <= 1e-5
    assert auto._ort, "auto should have built an ONNX Runtime session for inference"


def test_blob_names_and_in_place_versions(path):
    net = convnet_io.load(path, seed=1)
    every = net.forward(x(), blobs="all")
    assert list(every) == ["data", "conv1", "conv1:1", "pool1", "fc", "prob"]
    assert (every["conv1:1"] >= 0).all() and (every["conv1"] < 0).any()
    # A Caffe name means the blob as Caffe holds it after the pass: the ReLU's output.
    np.testing.assert_array_equal(net.forward(x(), blobs=["conv1"])["conv1"], every["conv1:1"])
    with pytest.raises(ConvnetError, match="no blob named"):
        net.forward(x(), blobs=["nope"])


def test_onnxruntime_sessions_follow_weight_changes(path):
    net = convnet_io.load(path, seed=1)
    before = net.forward(x())["prob"]
    with torch.no_grad():
        net.module.layer("fc").weight.mul_(2.0)  # trained in place through the module
    after = net.forward(x())["prob"]
    expected = net.run_values(x(), ["prob"])["prob"]
    assert rel_err(after, expected) <= 1e-5 and not np.allclose(after, before)


def test_auto_runs_torch_in_training_mode_and_for_other_image_sizes(path):
    net = convnet_io.load(path, seed=1)
    net.module.train()
    net.forward(x())
    assert not net._ort
    net.module.eval()
    with pytest.raises(ConvnetError):  # the InnerProduct's weights fit 16x16 inputs only
        net.forward(np.zeros((1, 3, 20, 20), np.float32))


def test_explicit_onnxruntime_refuses_what_it_cannot_run(tmp_path):
    p = tmp_path / "bn.prototxt"
    p.write_text(input_layer((2, 3, 4, 4)) + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "y" '
                 'batch_norm_param { use_global_stats: false } }\n')
    net = convnet_io.load(p, backend="onnxruntime")
    with pytest.raises(ConvnetError, match="batch statistics"):
        net.forward(x(2)[:, :, :4, :4])
    assert convnet_io.load(p).forward(x(2)[:, :, :4, :4])["y"].shape == (2, 3, 4, 4)  # auto: torch


def test_unknown_backend_is_an_error(path):
    with pytest.raises(ConvnetError, match="backend"):
        convnet_io.load(path, backend="tensorflow")


def test_save_caffemodel_round_trip(path, tmp_path):
    net = convnet_io.load(path, seed=5)
    net.save_caffemodel(tmp_path / "w.caffemodel")
    again = convnet_io.load(path, weights=tmp_path / "w.caffemodel")
    for layer, blobs in net.blobs().items():
        for a, b in zip(blobs, again.blobs()[layer]):
            np.testing.assert_array_equal(a, b)


def test_reshaped_modules_follow_train_and_eval(tmp_path):
    p = tmp_path / "drop.prototxt"
    p.write_text(input_layer((2, 3, 8, 8)) + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "drop" type: "Dropout" bottom: "conv" top: "conv" }
""")
    net = convnet_io.load(p, seed=1)
    other = np.random.default_rng(0).standard_normal((2, 3, 10, 10)).astype(np.float32)
    net.module.train()
    net.forward(other)
    net.module.eval()
    np.testing.assert_array_equal(net.forward(other)["conv"], net.forward(other)["conv"])


def test_writes_through_data_need_invalidate(path):
    net = convnet_io.load(path, seed=1)
    net.forward(x())
    net.module.layer("fc").weight.data.mul_(-1.0)  # bypasses the version counter
    net.invalidate()
    assert rel_err(net.forward(x())["prob"], net.run_values(x(), ["prob"])["prob"]) <= 1e-5


def test_asking_for_no_blob_is_an_error(path):
    net = convnet_io.load(path, seed=1)
    with pytest.raises(ConvnetError, match="no blobs"):
        net.forward(x(), blobs=[])


def test_unknown_input_shape_name_is_an_error(path):
    with pytest.raises(ConvnetError, match="foo"):
        convnet_io.load(path, input_shapes={"foo": (1, 3, 8, 8)})
    # An unnamed shape overrides the Input layer's own.
    assert convnet_io.load(path, input_shapes=(1, 3, 16, 16)).graph.shapes["data"] == (1, 3, 16, 16)
