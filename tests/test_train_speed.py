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
