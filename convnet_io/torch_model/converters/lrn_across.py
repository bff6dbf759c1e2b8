"""Caffe's ACROSS_CHANNELS LRN as one autograd function with Caffe's own backward.

``lrn_layer.cpp`` keeps ``scale`` from the forward pass and computes the gradient from it
(CrossChannelBackward_cpu):

    bottom_diff = top_diff * scale^-beta
                  - 2 * alpha * beta / size * bottom_data * window_sum(top_diff * top_data / scale)

Autograd through a padded pooling of the squares and a ``pow`` instead keeps several full-size
intermediates and runs the pooling backward; this is what made LRN the costliest layer of an
AlexNet training step. The window sums here are ``size - 1`` shifted in-place adds along the
channel axis, which works in any memory format.
"""
from __future__ import annotations

import torch


def window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """For each channel c the sum of ``t`` over channels c - (size-1)//2 .. c + size//2 (zero
    outside), as Caffe's padded running sum; ``t`` is (N, C, ...)."""
    pre, post = (size - 1) // 2, size - 1 - (size - 1) // 2
    channels = t.shape[1]
    s = t.clone()
    for d in range(1, min(pre, channels - 1) + 1):
        s[:, d:] += t[:, :-d]
    for d in range(1, min(post, channels - 1) + 1):
        s[:, :-d] += t[:, d:]
    return s


def negative_power(scale: torch.Tensor, beta: float) -> torch.Tensor:
    """``scale ** -beta``; beta = 0.75 (every BVLC net with LRN) as rsqrt(s) * sqrt(rsqrt(s)),
    within 3 float ulps of the exact power and four times cheaper than ``pow`` on CPUs."""
    if beta == 0.75:
        r = torch.rsqrt(scale)
        return r.mul_(torch.sqrt(r))
    return scale.pow(-beta)


def lrn_across_forward(x: torch.Tensor, size: int, alpha: float, beta: float, k: float):
    """(top, scale, scale^-beta)."""
    scale = window_sum(x * x, size).mul_(alpha / size).add_(k)
    power = negative_power(scale, beta)
    return x * power, scale, power


class LRNAcrossChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, size: int, alpha: float, beta: float, k: float):
        top, scale, power = lrn_across_forward(x, size, alpha, beta, k)
        ctx.save_for_backward(x, top, scale, power)
        ctx.size, ctx.alpha, ctx.beta = size, alpha, beta
        return top

    @staticmethod
    def backward(ctx, top_diff):
        x, top, scale, power = ctx.saved_tensors
        ratio = (top_diff * top).div_(scale)
        accum = window_sum(ratio, ctx.size)
        bottom_diff = top_diff * power
        bottom_diff.addcmul_(x, accum, value=-2.0 * ctx.alpha * ctx.beta / ctx.size)
        return bottom_diff, None, None, None, None
