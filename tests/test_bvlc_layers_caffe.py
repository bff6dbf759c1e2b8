"""Opt-in: the layers of issue 14 against real BVLC Caffe (pycaffe), forward and backward.

Run with ``CONVNET_CAFFE_PYTHON=/path/to/python-with-pycaffe``. Caffe runs each small net in TRAIN
phase (force_backward), saves its blobs, the bottoms' gradients and its .caffemodel; convnet loads
the same prototxt and .caffemodel, runs the same inputs through PyTorch with autograd and must agree.
"""
from __future__ import annotations

import os
import subprocess
import textwrap

import numpy as np
import pytest
import torch

CAFFE_PYTHON = os.environ.get("CONVNET_CAFFE_PYTHON")
pytestmark = pytest.mark.skipif(not CAFFE_PYTHON, reason="set CONVNET_CAFFE_PYTHON to a pycaffe Python")
TOL = 1e-4


def inp(name, dims):
    return (f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
            + " ".join(f"dim: {d}" for d in dims) + " } } }\n")


def rng(seed):
    return np.random.default_rng(seed)


H = np.abs(rng(9).standard_normal((4, 4))).astype(np.float32)
TIES = np.array([[[[1.]], [[3.]], [[3.]], [[0.]], [[3.]], [[-1.]]], [[[2.]], [[2.]], [[2.]], [[2.]], [[5.]], [[2.]]]])
CASES = {
    "contrastive": (inp("a", (6, 3)) + inp("b", (6, 3)) + inp("y", (6,))
                    + 'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss" '
                      'contrastive_loss_param { margin: 2 } }',
                    {"a": rng(1).standard_normal((6, 3)), "b": rng(2).standard_normal((6, 3)),
                     "y": np.array([1, 0, 0, 1, 0, 0])}, ["a", "b"]),
    "contrastive_legacy": (inp("a", (6, 3)) + inp("b", (6, 3)) + inp("y", (6,))
                           + 'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" '
                             'top: "loss" contrastive_loss_param { margin: 3 legacy_version: true } }',
                           {"a": rng(3).standard_normal((6, 3)), "b": rng(4).standard_normal((6, 3)),
                            "y": np.array([1, 0, 0, 1, 0, 0])}, ["a", "b"]),
    "hinge_l2": (inp("x", (5, 4)) + inp("l", (5,))
                 + 'layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "l" top: "loss" hinge_loss_param { norm: L2 } }',
                 {"x": rng(5).standard_normal((5, 4)), "l": np.array([0, 3, 1, 2, 3])}, ["x"]),
    "hinge_l1": (inp("x", (5, 4)) + inp("l", (5,))
                 + 'layer { name: "loss" type: "HingeLoss" bottom: "x" bottom: "l" top: "loss" }',
                 {"x": rng(6).standard_normal((5, 4)), "l": np.array([0, 3, 1, 2, 3])}, ["x"]),
    # No force_backward (Caffe would force it into H and stop): a unit Scale makes Caffe compute
    # the gradient of its top, which is the gradient of x.
    "infogain": (inp("x", (3, 4, 2)) + inp("l", (3, 2)) + inp("H", (4, 4))
                 + 'layer { name: "xs" type: "Scale" bottom: "x" top: "xs" '
                   'scale_param { filler { value: 1 } } }'
                 + 'layer { name: "loss" type: "InfogainLoss" bottom: "xs" bottom: "l" bottom: "H" top: "loss" '
                   'loss_param { ignore_label: 1 } }',
                 {"x": rng(7).standard_normal((3, 4, 2)) * 2, "l": np.array([[0, 1], [3, 2], [1, 1]]), "H": H}, ["x"]),
    "multinomial": (inp("p", (5, 4)) + inp("l", (5,))
                    + 'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: "l" top: "loss" }',
                    {"p": np.abs(rng(8).standard_normal((5, 4))) / 3, "l": np.array([0, 1, 2, 3, 1])}, ["p"]),
    "spp": (inp("x", (2, 3, 13, 11))
            + 'layer { name: "spp" type: "SPP" bottom: "x" top: "spp" spp_param { pyramid_height: 3 pool: AVE } }',
            {"x": rng(10).standard_normal((2, 3, 13, 11))}, []),
    "spp_max": (inp("x", (2, 3, 9, 16))
                + 'layer { name: "spp" type: "SPP" bottom: "x" top: "spp" spp_param { pyramid_height: 3 } }',
                {"x": rng(11).standard_normal((2, 3, 9, 16))}, []),
    "batch_reindex": (inp("x", (4, 3)) + inp("i", (5,))
                      + 'layer { name: "r" type: "BatchReindex" bottom: "x" bottom: "i" top: "r" }',
                      {"x": rng(12).standard_normal((4, 3)), "i": np.array([3, 0, 0, 2, 1])}, []),
    "filter": (inp("x", (5, 3)) + inp("s", (5,))
               + 'layer { name: "f" type: "Filter" bottom: "x" bottom: "s" top: "f" }',
               {"x": rng(13).standard_normal((5, 3)), "s": np.array([1, 0, 0.5, 0, 1])}, []),
    "im2col_3d": (inp("x", (2, 2, 4, 5, 3))
                  + 'layer { name: "c" type: "Im2col" bottom: "x" top: "c" convolution_param { kernel_size: 2 '
                    'kernel_size: 3 kernel_size: 2 stride: 1 stride: 2 stride: 1 pad: 0 pad: 1 pad: 1 } }',
                  {"x": rng(14).standard_normal((2, 2, 4, 5, 3))}, []),
    "conv_3d": (inp("x", (2, 3, 5, 6, 4))
                + 'layer { name: "conv" type: "Convolution" bottom: "x" top: "conv" convolution_param { num_output: 4 '
                  'kernel_size: 3 kernel_size: 2 kernel_size: 3 stride: 2 pad: 1 dilation: 1 '
                  'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }',
                {"x": rng(15).standard_normal((2, 3, 5, 6, 4))}, []),
    "deconv_3d_axis2": (inp("x", (2, 2, 3, 3, 4, 2))
                        + 'layer { name: "up" type: "Deconvolution" bottom: "x" top: "up" convolution_param { '
                          'num_output: 2 axis: 2 kernel_size: 3 stride: 2 pad: 1 group: 1 '
                          'weight_filler { type: "gaussian" std: 0.3 } bias_filler { type: "gaussian" std: 0.3 } } }',
                        {"x": rng(16).standard_normal((2, 2, 3, 3, 4, 2))}, []),
    # Caffe's edge cases of Reduction, Tile, Crop and ArgMax.
    "reduction_asum_axis0": (inp("x", (2, 3, 4)) + 'layer { name: "r" type: "Reduction" bottom: "x" top: "r" '
                             'reduction_param { operation: ASUM coeff: -2 } }',
                             {"x": np.where(rng(20).random((2, 3, 4)) < 0.2, 0, rng(21).standard_normal((2, 3, 4)))}, ["x"]),
    "reduction_mean_last": (inp("x", (2, 3, 4)) + 'layer { name: "r" type: "Reduction" bottom: "x" top: "r" '
                            'reduction_param { operation: MEAN axis: -1 coeff: 0.5 } }',
                            {"x": rng(22).standard_normal((2, 3, 4))}, ["x"]),
    "reduction_sumsq_axis1": (inp("x", (2, 3, 4)) + 'layer { name: "r" type: "Reduction" bottom: "x" top: "r" '
                              'reduction_param { operation: SUMSQ axis: 1 } }',
                              {"x": rng(23).standard_normal((2, 3, 4))}, ["x"]),
    "tile_last": (inp("x", (2, 3, 2)) + 'layer { name: "t" type: "Tile" bottom: "x" top: "t" tile_param { axis: -1 tiles: 3 } }',
                  {"x": rng(24).standard_normal((2, 3, 2))}, ["x"]),
    "crop_axis1": (inp("x", (2, 5, 6, 7)) + inp("ref", (1, 3, 4, 4))
                   + 'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "c" '
                     'crop_param { axis: 1 offset: 1 offset: 0 offset: 2 } }',
                   {"x": rng(25).standard_normal((2, 5, 6, 7)), "ref": np.zeros((1, 3, 4, 4))}, ["x"]),
    "crop_default": (inp("x", (2, 3, 6, 7)) + inp("ref", (1, 1, 3, 4))
                     + 'layer { name: "c" type: "Crop" bottom: "x" bottom: "ref" top: "c" crop_param { offset: 2 } }',
                     {"x": rng(26).standard_normal((2, 3, 6, 7)), "ref": np.zeros((1, 1, 3, 4))}, ["x"]),
    "argmax_ties": (inp("x", (2, 6, 1, 1)) + 'layer { name: "a" type: "ArgMax" bottom: "x" top: "a" '
                    'argmax_param { top_k: 3 out_max_val: true } }', {"x": TIES}, []),
    "argmax_axis_ties": (inp("x", (2, 6, 1, 1)) + 'layer { name: "a" type: "ArgMax" bottom: "x" top: "a" '
                         'argmax_param { top_k: 2 axis: 1 } }', {"x": TIES}, []),
    "argmax_axis_value": (inp("x", (2, 4, 3)) + 'layer { name: "a" type: "ArgMax" bottom: "x" top: "a" '
                          'argmax_param { axis: -1 out_max_val: true } }', {"x": rng(27).standard_normal((2, 4, 3))}, []),
}

CAFFE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    caffe.set_random_seed(3)
    proto, model, inputs, out = sys.argv[1:5]
    feeds = dict(np.load(inputs))
    net = caffe.Net(proto, caffe.TRAIN)
    for k, v in feeds.items():
        net.blobs[k].reshape(*v.shape)
        net.blobs[k].data[...] = v
    net.forward()
    # Without a loss, each output's gradient is a fixed pattern (the test applies the same).
    diffs = {} if any(layer.type.endswith("Loss") for layer in net.layers) else {
        o: np.cos(np.arange(net.blobs[o].data.size)).reshape(net.blobs[o].data.shape) for o in net.outputs}
    for o, d in diffs.items():
        net.blobs[o].diff[...] = d
    net.backward()
    result = {}
    for name in net.blobs:
        result[name] = net.blobs[name].data.copy()
        result[name + "_diff"] = net.blobs[name].diff.copy()
    net.save(model)
    np.savez(out, **result)
""")


@pytest.mark.parametrize("case", sorted(CASES))
def test_against_caffe(tmp_path, case):
    import convnet_io

    text, inputs, grads = CASES[case]
    forward_only = case in ("batch_reindex", "filter", "infogain") or case.startswith("argmax")  # Caffe refuses to force these
    text = ('name: "t"\n' if forward_only else 'name: "t" force_backward: true\n') + text
    proto = tmp_path / "net.prototxt"
    proto.write_text(text)
    feeds = {k: np.asarray(v, dtype=np.float32) for k, v in inputs.items()}
    np.savez(tmp_path / "in.npz", **feeds)
    script = tmp_path / "caffe_run.py"
    script.write_text(CAFFE_SCRIPT)
    model, out = tmp_path / "w.caffemodel", tmp_path / "out.npz"
    r = subprocess.run([CAFFE_PYTHON, str(script), str(proto), str(model), str(tmp_path / "in.npz"), str(out)],
                       capture_output=True, text=True, env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stderr[-3000:]
    want = dict(np.load(out))

    net = convnet_io.load(proto, weights=model, phase="TRAIN", backend="torch")
    graph = net.graph
    tensors = {k: torch.tensor(v, requires_grad=k in grads) for k, v in feeds.items()}
    values = net.module.run(tensors, graph.values)
    loss = sum(values[t] * w for n in graph.nodes for t, w in zip(n.tops, n.loss_weights) if w)
    if not torch.is_tensor(loss):
        loss = sum((values[o] * torch.cos(torch.arange(values[o].numel(), dtype=torch.float64))
                    .reshape(values[o].shape)).sum() for o in graph.outputs)
    for v in graph.values:
        blob = graph.blob_of[v]
        if blob in want and graph.final_value(blob) == v:
            got = values[v].detach().double().numpy()
            assert got.shape == want[blob].shape or got.size == want[blob].size, (blob, got.shape, want[blob].shape)
            scale = max(np.abs(want[blob]).max(initial=0), 1e-6)
            assert np.abs(got.reshape(want[blob].shape) - want[blob]).max(initial=0) <= TOL * scale, blob
    if grads:
        loss.backward()
        for k in grads:
            g = tensors[k].grad.double().numpy()
            caffe_blob = "xs" if case == "infogain" else k
            scale = max(np.abs(want[caffe_blob + "_diff"]).max(), 1e-6)
            assert np.abs(g - want[caffe_blob + "_diff"]).max() <= TOL * scale, k
