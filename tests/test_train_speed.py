"""What makes ``convnet train`` fast stays Caffe-exact: LRN's forward and backward (Caffe's
CrossChannelForward_cpu / CrossChannelBackward_cpu transcribed in float64 NumPy below), the MAX
pooling check, the channels-last layout and the solver on it, and the allocator setting."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convnet_io.torch_model.converters.lrn_across import LRNAcrossChannels


def ref_lrn_forward_backward(x, top_diff, size, alpha, beta, k):
    """Caffe lrn_layer.cpp, ACROSS_CHANNELS, with its running sums over the padded channels."""
    x, top_diff = np.asarray(x, np.float64), np.asarray(top_diff, np.float64)
    n, c = x.shape[:2]
    pre = (size - 1) // 2
    scale = np.empty_like(x)
    for i in range(n):
        padded = np.zeros((c + size - 1,) + x.shape[2:])
        padded[pre:pre + c] = x[i] ** 2
        s = np.full(x.shape[2:], float(k))
        for j in range(size - 1):
            s = s + alpha / size * padded[j]
        for ch in range(c):
            s = s + alpha / size * padded[ch + size - 1]
            scale[i, ch] = s
            s = s - alpha / size * padded[ch]
    top = x * scale ** -beta
    bottom_diff = top_diff * scale ** -beta
    cache_ratio = 2.0 * alpha * beta / size
    for i in range(n):
        padded = np.zeros((c + size - 1,) + x.shape[2:])
        padded[pre:pre + c] = top_diff[i] * top[i] / scale[i]
        accum = padded[:size - 1].sum(axis=0)
        for ch in range(c):
            accum = accum + padded[ch + size - 1]
            bottom_diff[i, ch] -= cache_ratio * x[i, ch] * accum
            accum = accum - padded[ch]
    return top, bottom_diff


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("c,size,alpha,beta,k", [
    (7, 5, 1e-4, 0.75, 1.0), (7, 5, 2.0, 0.75, 1.0), (5, 3, 0.5, 0.6, 2.0),
    (3, 5, 1.5, 0.75, 1.0), (4, 1, 0.3, 0.5, 1.0), (2, 7, 1.0, 1.2, 0.5)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_lrn_across_forward_backward_as_caffe(c, size, alpha, beta, k, channels_last):
    rng = np.random.default_rng(size * 10 + c)
    x = (rng.standard_normal((2, c, 4, 5)) * 3).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    top_ref, diff_ref = ref_lrn_forward_backward(x, dy, size, alpha, beta, k)
    xt = torch.from_numpy(x)
    if channels_last:
        xt = xt.contiguous(memory_format=torch.channels_last)
    xt.requires_grad_()
    top = LRNAcrossChannels.apply(xt, size, alpha, beta, k)
    top.backward(torch.from_numpy(dy))
    assert _rel(top.detach().numpy(), top_ref) < 1e-6
    assert _rel(xt.grad.numpy(), diff_ref) < 1e-5


def test_lrn_layer_trains_through_caffe_backward():
    """The converted LRN layer takes the Caffe-backward path when a gradient is wanted and gives the
    plain forward otherwise; both forwards agree."""
    from convnet_io.torch_model.converters.vision import LRN

    class Attrs:
        local_size, alpha, beta, k, norm_region = 5, 1e-2, 0.75, 1.0, "ACROSS_CHANNELS"

    layer = LRN(Attrs())
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.standard_normal((2, 8, 3, 3)) * 4).astype(np.float32))
    with torch.no_grad():
        plain = layer(x)
    xg = x.clone().requires_grad_()
    trained = layer(xg)
    assert trained.grad_fn is not None and "LRNAcrossChannels" in type(trained.grad_fn).__name__
    dy = rng.standard_normal(x.shape).astype(np.float32)
    trained.backward(torch.from_numpy(dy))
    top_ref, diff_ref = ref_lrn_forward_backward(x.numpy(), dy, 5, 1e-2, 0.75, 1.0)
    assert _rel(plain.numpy(), top_ref) < 1e-6 and _rel(trained.detach().numpy(), top_ref) < 1e-6
    assert _rel(xg.grad.numpy(), diff_ref) < 1e-5


# -- the Trainer's CPU settings --------------------------------------------------------------------

NET = """
name: "small"
layer { name: "input" type: "Input" top: "data" top: "label"
        input_param { shape { dim: 8 dim: 3 dim: 12 dim: 12 } shape { dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        param { lr_mult: 1 } param { lr_mult: 2 decay_mult: 0 }
        convolution_param { num_output: 6 kernel_size: 3 weight_filler { type: "gaussian" std: 0.3 } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1"
        inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip1" bottom: "label" top: "loss" }
"""


def _trainer(tmp_path, name):
    from convnet_io.train.config import TrainOptions
    from convnet_io.train.trainer import Trainer

    (tmp_path / "net.prototxt").write_text(NET)
    solver = tmp_path / f"{name}.prototxt"
    solver.write_text(f'net: "{tmp_path / "net.prototxt"}"\nbase_lr: 0.1\nmomentum: 0.9\nweight_decay: 0.01\n'
                      f'lr_policy: "fixed"\nmax_iter: 3\ndisplay: 0\nsnapshot: 0\nsnapshot_after_train: false\n'
                      f'snapshot_prefix: "{tmp_path / name}"\nrandom_seed: 5\n')
    return Trainer(TrainOptions(solver=str(solver), device="cpu", workers=0, quiet=True))


def test_channels_last_training_steps_as_nchw(tmp_path):
    """Three SGD steps with the CPU settings (channels-last blobs, history in their layout) leave the
    weights, the solver history and the snapshot where plain NCHW training leaves them."""
    import itertools

    from convnet_io.caffe.caffemodel import read_caffemodel
    from convnet_io.train.speed import channels_last_fits

    rng = np.random.default_rng(0)
    feeds = {"data": torch.from_numpy(rng.standard_normal((8, 3, 12, 12)).astype(np.float32)),
             "label": torch.from_numpy(rng.integers(0, 4, 8).astype(np.float32))}
    plain, fast = _trainer(tmp_path, "plain"), _trainer(tmp_path, "fast")
    assert channels_last_fits(fast.train_graph)
    fast.use_fast_cpu_settings()
    assert fast.module.layer("conv1").weight.is_contiguous(memory_format=torch.channels_last)
    for t in (plain, fast):
        it = itertools.repeat(feeds)
        for _ in range(3):
            t._train_step(it)
            t.solver.step()
    for a, b in zip(plain.solver.blobs, fast.solver.blobs):
        np.testing.assert_allclose(b.tensor.detach().numpy(), a.tensor.detach().numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(plain.solver.history(), fast.solver.history()):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-5, atol=1e-6)
    model, _ = fast.snapshot()
    stored = {layer.name: layer.blobs for layer in read_caffemodel(model)}
    np.testing.assert_allclose(stored["conv1"][0].reshape(6, 3, 3, 3),
                               plain.module.layer("conv1").weight.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_channels_last_only_for_nets_that_handle_it():
    from convnet_io.caffe.builder import build_graph
    from convnet_io.caffe.prototxt import parse_net_text
    from convnet_io.train.speed import channels_last_fits

    assert channels_last_fits(build_graph(parse_net_text(NET), phase="TRAIN"))
    with_bn = NET.replace('layer { name: "relu1" type: "ReLU"', 'layer { name: "bn" type: "BatchNorm" bottom: "conv1" '
                          'top: "conv1" }\nlayer { name: "relu1" type: "ReLU"')
    assert not channels_last_fits(build_graph(parse_net_text(with_bn), phase="TRAIN"))
    with_lrn = NET.replace('bottom: "conv1" top: "pool1"', 'bottom: "norm1" top: "pool1"').replace(
        'layer { name: "pool1"', 'layer { name: "norm1" type: "LRN" bottom: "conv1" top: "norm1" }\nlayer { name: "pool1"')
    assert not channels_last_fits(build_graph(parse_net_text(with_lrn), phase="TRAIN"))


def test_keep_freed_memory_is_idempotent():
    from convnet_io.train.speed import keep_freed_memory

    first = keep_freed_memory()
    assert keep_freed_memory() == first
