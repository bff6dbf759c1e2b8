"""Independent check of the vision converters (Convolution, Deconvolution, InnerProduct, Pooling,
LRN) against float64 NumPy transcriptions of Caffe's CPU forward loops.

The references below follow BVLC Caffe's sources line by line and use no torch:
  * base_conv_layer.cpp / conv_layer.cpp: im2col + per-group gemm, output size
    ``(in + 2*pad - extent) / stride + 1`` in C++ integer division (truncation toward zero);
  * deconv_layer.cpp: ``backward_cpu_gemm`` (W^T x per group) + col2im, output size
    ``stride*(in-1) + extent - 2*pad``;
  * inner_product_layer.cpp: ``top = bottom(M x K) * W^T`` (or ``* W`` with transpose) + bias;
  * pooling_layer.cpp: ``ceil``/``floor`` of a float division, the clip rule when any pad is set,
    MAX starting at -FLT_MAX over the clipped window, AVE dividing by the window clipped at
    ``H + pad`` (padding counts, the overhang past it does not);
  * lrn_layer.cpp: ACROSS_CHANNELS ``scale = k + alpha/size * sum(x^2)`` over ``size`` channels;
    WITHIN_CHANNEL as Caffe builds it: x^2 -> AVE pooling (pad (size-1)/2, stride 1) ->
    Power(shift 1, scale alpha, power -beta) -> product with x (``k`` unused).

Every comparison is rel err = max|a - e| / max|e| <= 1e-5.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from helpers import input_layer, rel_err, run_single

TOL = 1e-5
FLT_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------------------------
# Reference implementations (float64 NumPy, Caffe's loops)
# ------------------------------------------------------------------------------------------------
def _c_div(a: int, b: int) -> int:
    """C++ integer division: truncation toward zero."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_conv_out(size, kernel, stride, pad, dilation=1):
    extent = dilation * (kernel - 1) + 1
    return _c_div(size + 2 * pad - extent, stride) + 1


def ref_conv(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Caffe Convolution forward: im2col (zeros outside the image) then one gemm per group."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    assert cg * group == c and o % group == 0
    oh = ref_conv_out(h, kh, stride[0], pad[0], dilation[0])
    ow = ref_conv_out(wd, kw, stride[1], pad[1], dilation[1])
    og = o // group
    out = np.zeros((n, o, oh, ow))
    for g in range(group):
        xg = x[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            rows = np.arange(oh) * stride[0] - pad[0] + i * dilation[0]
            rv = (rows >= 0) & (rows < h)
            for j in range(kw):
                cols = np.arange(ow) * stride[1] - pad[1] + j * dilation[1]
                cv = (cols >= 0) & (cols < wd)
                col = xg[:, :, rows.clip(0, h - 1)][:, :, :, cols.clip(0, wd - 1)]
                col = col * (rv[:, None] & cv[None, :])
                out[:, g * og:(g + 1) * og] += np.einsum("oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j], col)
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def ref_deconv(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """Caffe Deconvolution forward: col = W_g^T x_g per group, then col2im (scatter-add)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    cw, og, kh, kw = w.shape  # (bottom channels, num_output / group, kh, kw)
    assert cw == c and c % group == 0
    cg = c // group
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    out = np.zeros((n, og * group, oh, ow))
    for g in range(group):
        xg = x[:, g * cg:(g + 1) * cg]
        view = out[:, g * og:(g + 1) * og]
        for i in range(kh):
            rows = np.arange(h) * stride[0] - pad[0] + i * dilation[0]
            rv = np.nonzero((rows >= 0) & (rows < oh))[0]
            for j in range(kw):
                cols = np.arange(wd) * stride[1] - pad[1] + j * dilation[1]
                cv = np.nonzero((cols >= 0) & (cols < ow))[0]
                contrib = np.einsum("co,nchw->nohw", w[g * cg:(g + 1) * cg, :, i, j], xg)
                view[:, :, rows[rv][:, None], cols[cv][None, :]] += contrib[:, :, rv][:, :, :, cv]
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def ref_inner_product(x, w, b=None, axis=1, transpose=False):
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    m = int(np.prod(x.shape[:axis], dtype=np.int64))
    x2 = x.reshape(m, -1)
    y = x2 @ (w if transpose else w.T)
    if b is not None:
        y = y + np.asarray(b, np.float64)[None, :]
    return y.reshape(*x.shape[:axis], y.shape[-1])


def ref_pool_out(size, kernel, stride, pad, round_mode="CEIL", any_pad=None):
    """Caffe's pooled size (PoolingLayer::Reshape), float division as Caffe does it."""
    span = np.float32(size + 2 * pad - kernel) / np.float32(stride)
    out = int(math.ceil(span) if round_mode == "CEIL" else math.floor(span)) + 1
    any_pad = pad != 0 if any_pad is None else any_pad
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def ref_pool(x, method, kernel, stride=(1, 1), pad=(0, 0), round_mode="CEIL"):
    """Caffe PoolingLayer::Forward_cpu for MAX and AVE (vectorized over N and C only)."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    any_pad = pad[0] != 0 or pad[1] != 0
    ph_n = ref_pool_out(h, kernel[0], stride[0], pad[0], round_mode, any_pad)
    pw_n = ref_pool_out(w, kernel[1], stride[1], pad[1], round_mode, any_pad)
    out = np.zeros((n, c, ph_n, pw_n))
    for ph in range(ph_n):
        for pw in range(pw_n):
            hstart = ph * stride[0] - pad[0]
            wstart = pw * stride[1] - pad[1]
            if method == "MAX":
                hend, wend = min(hstart + kernel[0], h), min(wstart + kernel[1], w)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                top = np.full((n, c), -FLT_MAX)
                for hh in range(hstart, hend):
                    for ww in range(wstart, wend):
                        v = x[:, :, hh, ww]
                        top = np.where(v > top, v, top)
                out[:, :, ph, pw] = top
            else:
                hend, wend = min(hstart + kernel[0], h + pad[0]), min(wstart + kernel[1], w + pad[1])
                pool_size = (hend - hstart) * (wend - wstart)
                hstart, wstart = max(hstart, 0), max(wstart, 0)
                hend, wend = min(hend, h), min(wend, w)
                acc = np.zeros((n, c))
                for hh in range(hstart, hend):
                    for ww in range(wstart, wend):
                        acc += x[:, :, hh, ww]
                out[:, :, ph, pw] = acc / pool_size
    return out


def ref_lrn_across(x, size, alpha, beta, k):
    x = np.asarray(x, np.float64)
    c = x.shape[1]
    pre = (size - 1) // 2
    sq = x * x
    scale = np.full_like(x, k)
    for ch in range(c):
        for j in range(ch - pre, ch - pre + size):
            if 0 <= j < c:
                scale[:, ch] += alpha / size * sq[:, j]
    return x * scale ** (-beta)


def ref_lrn_within(x, size, alpha, beta):
    x = np.asarray(x, np.float64)
    pre = (size - 1) // 2
    pooled = ref_pool(x * x, "AVE", (size, size), (1, 1), (pre, pre))
    assert pooled.shape == x.shape
    power = (1.0 + alpha * pooled) ** (-beta)
    return x * power


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------
def _rand(shape, seed=1, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _blobs(module, name):
    return [b.detach().double().numpy() for b in module.layer(name).caffe_blobs()]


def _layer(name, type_, params="", bottom="data", top=None):
    bottoms = bottom if isinstance(bottom, (list, tuple)) else [bottom]
    tops = top if isinstance(top, (list, tuple)) else [top or name]
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def _check(actual, expected, shape=None):
    if shape is not None:
        assert tuple(actual.shape) == tuple(shape), (actual.shape, shape)
    err = rel_err(actual, expected)
    assert err <= TOL, f"rel err {err:.3g} > {TOL}"


def _run_conv(x, conv_param, type_="Convolution"):
    text = input_layer(x.shape) + _layer("conv", type_, f"convolution_param {{ {conv_param} }}")
    graph, module, out = run_single(text, {"data": x})
    return graph, module, out["conv"]


# ------------------------------------------------------------------------------------------------
# Convolution
# ------------------------------------------------------------------------------------------------
CONV_CASES = {
    # id: (input shape, convolution_param, reference kwargs)
    "plain": ((2, 3, 7, 6), "num_output: 4 kernel_size: 3", {}),
    "stride2": ((2, 3, 9, 8), "num_output: 4 kernel_size: 3 stride: 2", dict(stride=(2, 2))),
    "pad1": ((1, 3, 6, 7), "num_output: 5 kernel_size: 3 pad: 1", dict(pad=(1, 1))),
    "pad2_stride3": ((1, 2, 10, 9), "num_output: 3 kernel_size: 4 pad: 2 stride: 3",
                     dict(pad=(2, 2), stride=(3, 3))),
    "separate_h_w": ((2, 3, 11, 9),
                     "num_output: 4 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 2 stride_h: 2 stride_w: 1",
                     dict(pad=(1, 2), stride=(2, 1))),
    # pad_h alone: Caffe pads (pad_h, pad_w default 0).
    "pad_h_alone": ((1, 2, 5, 6), "num_output: 3 kernel_size: 3 pad_h: 1", dict(pad=(1, 0))),
    "repeated_two_values": ((1, 2, 9, 8), "num_output: 3 kernel_size: 3 kernel_size: 2 pad: 0 pad: 1 "
                            "stride: 2 stride: 3", dict(pad=(0, 1), stride=(2, 3))),
    # AlexNet conv2 shape-alike on a small map: 96 -> 256 in 2 groups, 5x5, pad 2 (here 8 -> 6).
    "group2_alexnet_conv2": ((2, 8, 7, 7), "num_output: 6 kernel_size: 5 pad: 2 group: 2", dict(pad=(2, 2), group=2)),
    "group4": ((1, 8, 6, 6), "num_output: 4 kernel_size: 3 group: 4", dict(group=4)),
    "dilation2": ((1, 3, 11, 10), "num_output: 4 kernel_size: 3 dilation: 2", dict(dilation=(2, 2))),
    "dilation2_pad2_stride2": ((2, 2, 12, 11), "num_output: 3 kernel_size: 3 dilation: 2 pad: 2 stride: 2",
                               dict(dilation=(2, 2), pad=(2, 2), stride=(2, 2))),
    # Stride that does not divide the span: Caffe truncates; the last rows are never read.
    "stride_leaves_rows": ((1, 2, 10, 10), "num_output: 2 kernel_size: 3 stride: 4", dict(stride=(4, 4))),
}


@pytest.mark.parametrize("case", list(CONV_CASES), ids=list(CONV_CASES))
def test_convolution_matches_caffe(case):
    shape, param, kw = CONV_CASES[case]
    x = _rand(shape)
    _, module, out = _run_conv(x, param)
    w, b = _blobs(module, "conv")
    expected = ref_conv(x, w, b, **kw)
    _check(out, expected)


def test_convolution_weight_and_output_shapes_for_groups():
    x = _rand((2, 8, 7, 7))
    _, module, out = _run_conv(x, "num_output: 6 kernel_size: 5 pad: 2 group: 2")
    w, b = _blobs(module, "conv")
    # Caffe: weight (num_output, channels / group, kh, kw) = (6, 8/2, 5, 5); bias (6,).
    assert w.shape == (6, 4, 5, 5) and b.shape == (6,)
    # (7 + 2*2 - 5) / 1 + 1 = 7
    assert out.shape == (2, 6, 7, 7)


def test_convolution_without_bias():
    x = _rand((2, 3, 6, 6))
    _, module, out = _run_conv(x, "num_output: 4 kernel_size: 3 pad: 1 bias_term: false")
    blobs = _blobs(module, "conv")
    assert len(blobs) == 1 and blobs[0].shape == (4, 3, 3, 3)
    _check(out, ref_conv(x, blobs[0], None, pad=(1, 1)), shape=(2, 4, 6, 6))


def test_convolution_several_bottoms_share_one_weight():
    """Caffe applies the layer's single weight/bias to bottom[i] -> top[i]."""
    xa, xb, xc = _rand((2, 3, 6, 6), 1), _rand((2, 3, 6, 6), 2), _rand((2, 3, 6, 6), 3)
    text = (input_layer(xa.shape, "a") + input_layer(xb.shape, "b") + input_layer(xc.shape, "c")
            + _layer("conv", "Convolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 pad: 1 }",
                     bottom=["a", "b", "c"], top=["ta", "tb", "tc"]))
    graph, module, out = run_single(text, {"a": xa, "b": xb, "c": xc})
    blobs = _blobs(module, "conv")
    assert len(blobs) == 2  # one weight, one bias for all three bottoms
    for x, t in ((xa, "ta"), (xb, "tb"), (xc, "tc")):
        # (6 + 2 - 3) / 2 + 1 = 3
        _check(out[t], ref_conv(x, *blobs, stride=(2, 2), pad=(1, 1)), shape=(2, 4, 3, 3))
    assert graph.shapes["ta"] == graph.shapes["tb"] == graph.shapes["tc"] == (2, 4, 3, 3)


def test_convolution_1x1():
    x = _rand((2, 5, 4, 3))
    _, module, out = _run_conv(x, "num_output: 7 kernel_size: 1")
    _check(out, ref_conv(x, *_blobs(module, "conv")), shape=(2, 7, 4, 3))


def test_convolution_pad_w_alone_pads_only_the_width():
    """BVLC base_conv_layer.cpp: ``if (has_pad_h() || has_pad_w())`` then pad = (pad_h, pad_w) with
    pad_h defaulting to 0. So ``pad_w: 1`` alone pads the width by 1: 5x5, k 3 -> (5-3)/1+1 = 3 rows,
    (5+2-3)/1+1 = 5 columns."""
    x = _rand((1, 2, 5, 5))
    graph, module, out = _run_conv(x, "num_output: 3 kernel_size: 3 pad_w: 1")
    assert graph.shapes["conv"] == (1, 3, 3, 5)
    _check(out, ref_conv(x, *_blobs(module, "conv"), pad=(0, 1)), shape=(1, 3, 3, 5))


# ------------------------------------------------------------------------------------------------
# Deconvolution
# ------------------------------------------------------------------------------------------------
DECONV_CASES = {
    "plain": ((2, 3, 4, 5), "num_output: 4 kernel_size: 3", {}),
    "stride2_pad1": ((2, 3, 5, 4), "num_output: 4 kernel_size: 4 stride: 2 pad: 1", dict(stride=(2, 2), pad=(1, 1))),
    "stride2_pad1_group2": ((2, 4, 5, 5), "num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2",
                            dict(stride=(2, 2), pad=(1, 1), group=2)),
    "fcn_upsample_group_eq_channels": ((1, 3, 4, 4), "num_output: 3 kernel_size: 4 stride: 2 group: 3 bias_term: false",
                                       dict(stride=(2, 2), group=3)),
    "separate_h_w": ((1, 2, 4, 5), "num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0",
                     dict(stride=(2, 3), pad=(1, 0))),
    "dilation2": ((1, 2, 4, 4), "num_output: 2 kernel_size: 3 dilation: 2 stride: 2 pad: 1",
                  dict(dilation=(2, 2), stride=(2, 2), pad=(1, 1))),
}


@pytest.mark.parametrize("case", list(DECONV_CASES), ids=list(DECONV_CASES))
def test_deconvolution_matches_caffe(case):
    shape, param, kw = DECONV_CASES[case]
    x = _rand(shape)
    _, module, out = _run_conv(x, param, "Deconvolution")
    blobs = _blobs(module, "conv")
    w, b = (blobs + [None])[:2]
    _check(out, ref_deconv(x, w, b, **kw))


def test_deconvolution_shapes():
    x = _rand((2, 4, 5, 5))
    graph, module, out = _run_conv(x, "num_output: 6 kernel_size: 3 stride: 2 pad: 1 group: 2", "Deconvolution")
    w, b = _blobs(module, "conv")
    # Caffe (reverse dimensions): weight (channels, num_output / group, kh, kw) = (4, 3, 3, 3).
    assert w.shape == (4, 3, 3, 3) and b.shape == (6,)
    # 2 * (5 - 1) + 3 - 2 * 1 = 9
    assert graph.shapes["conv"] == (2, 6, 9, 9) and out.shape == (2, 6, 9, 9)


# ------------------------------------------------------------------------------------------------
# InnerProduct
# ------------------------------------------------------------------------------------------------
def _run_ip(x, param):
    text = input_layer(x.shape) + _layer("ip", "InnerProduct", f"inner_product_param {{ {param} }}")
    graph, module, out = run_single(text, {"data": x})
    return graph, module, out["ip"]


def test_inner_product_from_4d_blob_axis1():
    x = _rand((3, 4, 3, 2))
    graph, module, out = _run_ip(x, "num_output: 5")
    w, b = _blobs(module, "ip")
    assert w.shape == (5, 4 * 3 * 2) and b.shape == (5,)
    _check(out, ref_inner_product(x, w, b, axis=1), shape=(3, 5))
    assert graph.shapes["ip"] == (3, 5)


def test_inner_product_axis2():
    x = _rand((2, 3, 4, 5))
    graph, module, out = _run_ip(x, "num_output: 6 axis: 2")
    w, b = _blobs(module, "ip")
    assert w.shape == (6, 4 * 5)
    _check(out, ref_inner_product(x, w, b, axis=2), shape=(2, 3, 6))


def test_inner_product_negative_axis():
    x = _rand((2, 3, 4, 5))
    _, module, out = _run_ip(x, "num_output: 3 axis: -1")
    w, b = _blobs(module, "ip")
    assert w.shape == (3, 5)
    _check(out, ref_inner_product(x, w, b, axis=3), shape=(2, 3, 4, 3))


def test_inner_product_transpose():
    x = _rand((3, 2, 2, 3))
    _, module, out = _run_ip(x, "num_output: 4 transpose: true")
    w, b = _blobs(module, "ip")
    assert w.shape == (12, 4)  # Caffe: (K, N) when transpose
    _check(out, ref_inner_product(x, w, b, axis=1, transpose=True), shape=(3, 4))


def test_inner_product_without_bias_axis2_transpose():
    x = _rand((2, 3, 4))
    _, module, out = _run_ip(x, "num_output: 5 axis: 2 transpose: true bias_term: false")
    blobs = _blobs(module, "ip")
    assert len(blobs) == 1 and blobs[0].shape == (4, 5)
    _check(out, ref_inner_product(x, blobs[0], None, axis=2, transpose=True), shape=(2, 3, 5))


# ------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------
def _run_pool(x, param):
    text = input_layer(x.shape) + _layer("pool", "Pooling", f"pooling_param {{ {param} }}")
    graph, module, out = run_single(text, {"data": x})
    return graph, out["pool"]


def test_pool_size_hand_arithmetic():
    # 227: conv1 (227-11)/4+1 = 55; pool ceil((55-3)/2)+1 = 26+1 = 27, floor gives 27 too.
    assert ref_conv_out(227, 11, 4, 0) == 55
    assert ref_pool_out(55, 3, 2, 0, "CEIL") == 27 and ref_pool_out(55, 3, 2, 0, "FLOOR") == 27
    # 224: conv1 213/4 = 53 (truncated) + 1 = 54; pool ceil(51/2)=26 -> 27, floor(51/2)=25 -> 26.
    assert ref_conv_out(224, 11, 4, 0) == 54
    assert ref_pool_out(54, 3, 2, 0, "CEIL") == 27 and ref_pool_out(54, 3, 2, 0, "FLOOR") == 26
    # H=6,k=3,s=2,p=1: ceil(5/2)+1 = 4; clip? 3*2=6 >= 6+1? no -> 4.
    assert ref_pool_out(6, 3, 2, 1) == 4
    # H=7,k=3,s=2,p=1: 6/2+1 = 4; clip? 6 >= 8? no -> 4.
    assert ref_pool_out(7, 3, 2, 1) == 4
    # H=5,k=2,s=2,p=1: ceil(5/2)+1 = 4; clip: 3*2=6 >= 5+1 -> 3.
    assert ref_pool_out(5, 2, 2, 1) == 3


@pytest.mark.parametrize("size,round_mode,conv_hw,pool_hw", [
    (227, "CEIL", 55, 27), (227, "FLOOR", 55, 27), (224, "CEIL", 54, 27), (224, "FLOOR", 54, 26)])
def test_alexnet_conv1_pool1_sizes_and_values(size, round_mode, conv_hw, pool_hw):
    x = _rand((1, 3, size, size))
    text = (input_layer(x.shape)
            + _layer("conv1", "Convolution", "convolution_param { num_output: 2 kernel_size: 11 stride: 4 }")
            + _layer("pool1", "Pooling", f"pooling_param {{ pool: MAX kernel_size: 3 stride: 2 round_mode: {round_mode} }}",
                     bottom="conv1"))
    graph, module, out = run_single(text, {"data": x})
    assert graph.shapes["conv1"] == (1, 2, conv_hw, conv_hw)
    assert graph.shapes["pool1"] == (1, 2, pool_hw, pool_hw)
    conv = ref_conv(x, *_blobs(module, "conv1"), stride=(4, 4))
    _check(out["conv1"], conv, shape=(1, 2, conv_hw, conv_hw))
    # Pool the converter's own conv1 output so the pooling check is independent of conv rounding.
    _check(out["pool1"], ref_pool(out["conv1"], "MAX", (3, 3), (2, 2), round_mode=round_mode),
           shape=(1, 2, pool_hw, pool_hw))


POOL_CASES = {
    # id: (input shape, pooling_param, ref kwargs, expected output HxW)
    "max_k3s2_ceil_overhang": ((2, 3, 6, 6), "pool: MAX kernel_size: 3 stride: 2", dict(kernel=(3, 3), stride=(2, 2)), (3, 3)),
    "ave_k3s2_ceil_overhang": ((2, 3, 6, 6), "pool: AVE kernel_size: 3 stride: 2", dict(kernel=(3, 3), stride=(2, 2)), (3, 3)),
    # H=6,k=3,s=2,p=1 -> 4 windows, starts -1,1,3,5, divisors clipped at 7: 3,3,3,2.
    "ave_H6_k3s2p1": ((2, 2, 6, 6), "pool: AVE kernel_size: 3 stride: 2 pad: 1",
                      dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)), (4, 4)),
    # H=7,k=3,s=2,p=1 -> 4 windows, starts -1,1,3,5, ends 2,4,6,8: every divisor 3.
    "ave_H7_k3s2p1": ((2, 2, 7, 7), "pool: AVE kernel_size: 3 stride: 2 pad: 1",
                      dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)), (4, 4)),
    "ave_H6xW7_k3s2p1": ((1, 2, 6, 7), "pool: AVE kernel_size: 3 stride: 2 pad: 1",
                         dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1)), (4, 4)),
    # H=5,k=2,s=2,p=1: ceil(5/2)+1 = 4, clip (3*2 >= 6) removes the last window -> 3.
    "ave_clip_rule_removes_last": ((1, 2, 5, 5), "pool: AVE kernel_size: 2 stride: 2 pad: 1",
                                   dict(kernel=(2, 2), stride=(2, 2), pad=(1, 1)), (3, 3)),
    "max_clip_rule_removes_last": ((1, 2, 5, 5), "pool: MAX kernel_size: 2 stride: 2 pad: 1",
                                   dict(kernel=(2, 2), stride=(2, 2), pad=(1, 1)), (3, 3)),
    # H=7,k=2,s=2,p=1: ceil(7/2)+1 = 5, clip (8 >= 8) -> 4.
    "ave_clip_rule_H7": ((1, 1, 7, 7), "pool: AVE kernel_size: 2 stride: 2 pad: 1",
                         dict(kernel=(2, 2), stride=(2, 2), pad=(1, 1)), (4, 4)),
    # FLOOR: H=6,k=3,s=2,p=1 -> floor(5/2)+1 = 3 (CEIL gives 4).
    "ave_floor_pad1": ((2, 2, 6, 6), "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR",
                       dict(kernel=(3, 3), stride=(2, 2), pad=(1, 1), round_mode="FLOOR"), (3, 3)),
    "max_floor": ((2, 2, 6, 6), "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR",
                  dict(kernel=(3, 3), stride=(2, 2), round_mode="FLOOR"), (2, 2)),
    "max_kh3_kw2": ((2, 2, 7, 6), "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1",
                    dict(kernel=(3, 2), stride=(2, 1)), (3, 5)),
    "ave_kh2_kw3_pad_h_w": ((2, 2, 7, 6), "pool: AVE kernel_h: 2 kernel_w: 3 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 1",
                            dict(kernel=(2, 3), stride=(1, 2), pad=(1, 1)), (8, 4)),
    # pad only in W: the clip rule still applies to H (Caffe tests pad_h || pad_w). H=5,kh=1,sh=3,
    # pad_h=0: ceil(4/3)+1 = 3, clip (2*3=6 >= 5+0) -> 2. W=6,kw=3,sw=2,pw=1: ceil(5/2)+1 = 4, 6 >= 7? no.
    "ave_pad_w_only_clip_both": ((1, 2, 5, 6), "pool: AVE kernel_h: 1 kernel_w: 3 stride_h: 3 stride_w: 2 "
                                 "pad_h: 0 pad_w: 1", dict(kernel=(1, 3), stride=(3, 2), pad=(0, 1)), (2, 4)),
    "max_pad_w_only_clip_both": ((1, 2, 5, 6), "pool: MAX kernel_h: 1 kernel_w: 3 stride_h: 3 stride_w: 2 "
                                 "pad_h: 0 pad_w: 1", dict(kernel=(1, 3), stride=(3, 2), pad=(0, 1)), (2, 4)),
    # kernel larger than the map: ceil((2-3)/2)+1 = 1; AVE divides by min(3, 2) per axis.
    "ave_kernel_larger_than_map": ((1, 2, 2, 2), "pool: AVE kernel_size: 3 stride: 2",
                                   dict(kernel=(3, 3), stride=(2, 2)), (1, 1)),
    "max_stride1_pad1": ((2, 3, 5, 5), "pool: MAX kernel_size: 3 stride: 1 pad: 1",
                         dict(kernel=(3, 3), stride=(1, 1), pad=(1, 1)), (5, 5)),
    "ave_stride1_pad2": ((2, 3, 5, 4), "pool: AVE kernel_size: 5 stride: 1 pad: 2",
                         dict(kernel=(5, 5), stride=(1, 1), pad=(2, 2)), (5, 4)),
}


@pytest.mark.parametrize("case", list(POOL_CASES), ids=list(POOL_CASES))
def test_pooling_matches_caffe(case):
    shape, param, kw, hw = POOL_CASES[case]
    method = "MAX" if "pool: MAX" in param else "AVE"
    x = _rand(shape)
    graph, out = _run_pool(x, param)
    expected = ref_pool(x, method, **kw)
    assert expected.shape[2:] == hw  # the reference agrees with the hand arithmetic
    assert graph.shapes["pool"] == (shape[0], shape[1], *hw)
    _check(out, expected, shape=expected.shape)


def test_ave_pad_divisor_counts_padding_but_not_overhang():
    """Ones in, H=W=6, k3 s2 p1: windows [-1,2) [1,4) [3,6) [5,7+): divisors 3,3,3,2 per axis and the
    valid counts 2,3,3,1, so each output is (valid_h*valid_w)/(div_h*div_w)."""
    x = np.ones((1, 1, 6, 6), np.float32)
    _, out = _run_pool(x, "pool: AVE kernel_size: 3 stride: 2 pad: 1")
    valid = np.array([2, 3, 3, 1], float)
    div = np.array([3, 3, 3, 2], float)
    expected = np.outer(valid / div, valid / div)[None, None]
    _check(out, expected, shape=(1, 1, 4, 4))
    np.testing.assert_allclose(out[0, 0, 3, 3], 1.0 / 4.0, rtol=1e-6)


def test_max_pool_padding_never_wins_on_negative_inputs():
    x = -(np.abs(_rand((2, 3, 6, 6))) + 1.0)
    for param, kw in (("pool: MAX kernel_size: 3 stride: 2 pad: 1", dict(pad=(1, 1))),
                      ("pool: MAX kernel_size: 3 stride: 1 pad: 2", dict(pad=(2, 2), stride=(1, 1))),
                      ("pool: MAX kernel_size: 2 stride: 2 pad: 1", dict(pad=(1, 1), kernel=(2, 2)))):
        kw = {"kernel": (3, 3), "stride": (2, 2), **kw}
        _, out = _run_pool(x, param)
        expected = ref_pool(x, "MAX", **kw)
        assert (out < -0.5).all(), "a padding value (0 or -FLT_MAX) leaked into a window"
        assert (out >= x.min() - 1e-6).all()
        _check(out, expected, shape=expected.shape)


def test_max_pool_ignores_nan_and_starts_at_minus_flt_max():
    """Caffe's MAX loop is ``if (bottom > top) top = bottom`` from ``top = -FLT_MAX``: a NaN never
    wins (the comparison is false), and a window of -inf values yields -FLT_MAX."""
    x = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    x[0, 0, 0, 0] = np.nan
    x[0, 0, 2:, 2:] = -np.inf
    _, out = _run_pool(x, "pool: MAX kernel_size: 2 stride: 2")
    expected = ref_pool(x, "MAX", (2, 2), (2, 2))
    assert expected[0, 0].tolist() == [[5.0, 7.0], [13.0, -FLT_MAX]]
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling(method):
    x = _rand((2, 3, 5, 7))
    graph, out = _run_pool(x, f"pool: {method} global_pooling: true")
    assert graph.shapes["pool"] == (2, 3, 1, 1)
    expected = ref_pool(x, method, (5, 7), (1, 1), (0, 0))
    _check(out, expected, shape=(2, 3, 1, 1))
    direct = x.astype(np.float64).max(axis=(2, 3)) if method == "MAX" else x.astype(np.float64).mean(axis=(2, 3))
    _check(out[:, :, 0, 0], direct)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling_converter_module_directly(method):
    """The converter on global-pooling attrs built by hand (independent of prototxt parsing)."""
    import torch

    from convnet_io.graph.layers.vision import Pooling as PoolingSpec
    from convnet_io.graph.layers.vision import PoolingAttrs
    from convnet_io.torch_model.converters.vision import Pooling

    x = _rand((2, 3, 5, 7))
    attrs = PoolingAttrs(method, (0, 0), global_pooling=True)
    assert PoolingSpec.top_shapes(attrs, [x.shape], 1) == [(2, 3, 1, 1)]
    module = Pooling(PoolingSpec.resolved(attrs, x.shape), (5, 7), (1, 1)).eval()
    with torch.no_grad():
        out = module(torch.from_numpy(x)).double().numpy()
    _check(out, ref_pool(x, method, (5, 7)), shape=(2, 3, 1, 1))


def test_global_pooling_after_conv():
    x = _rand((1, 3, 9, 9))
    text = (input_layer(x.shape)
            + _layer("conv", "Convolution", "convolution_param { num_output: 4 kernel_size: 3 stride: 2 }")
            + _layer("gap", "Pooling", "pooling_param { pool: AVE global_pooling: true }", bottom="conv"))
    graph, module, out = run_single(text, {"data": x})
    conv = ref_conv(x, *_blobs(module, "conv"), stride=(2, 2))  # (9-3)/2+1 = 4
    assert conv.shape == (1, 4, 4, 4)
    _check(out["gap"], conv.mean(axis=(2, 3), keepdims=True), shape=(1, 4, 1, 1))


# ------------------------------------------------------------------------------------------------
# LRN
# ------------------------------------------------------------------------------------------------
def _run_lrn(x, param):
    text = input_layer(x.shape) + _layer("norm", "LRN", f"lrn_param {{ {param} }}")
    _, _, out = run_single(text, {"data": x})
    return out["norm"]


LRN_ACROSS = [
    # (channels, local_size, alpha, beta, k)
    (8, 5, 1e-4, 0.75, 1.0),   # AlexNet/CaffeNet norm1 parameters
    (7, 5, 2.0, 0.75, 1.0),    # large alpha: the sum term dominates; 7 channels, not a multiple of 5
    (7, 5, 2.0, 0.75, 2.0),    # k = 2 (GoogLeNet-style k)
    (4, 3, 2.0, 0.75, 2.0),    # local_size 3, 4 channels
    (5, 3, 1e-4, 0.75, 1.0),
    (3, 5, 1.5, 0.75, 1.0),    # fewer channels than local_size
    (2, 7, 3.0, 0.5, 1.0),
    (1, 5, 5.0, 0.75, 2.0),    # a single channel
]


@pytest.mark.parametrize("c,size,alpha,beta,k", LRN_ACROSS)
def test_lrn_across_channels(c, size, alpha, beta, k):
    x = _rand((2, c, 4, 5), scale=2.0)
    out = _run_lrn(x, f"local_size: {size} alpha: {alpha} beta: {beta} k: {k}")
    expected = ref_lrn_across(x, size, alpha, beta, k)
    _check(out, expected, shape=x.shape)
    # Caffe divides alpha by local_size: with a large alpha the undivided form is far off.
    if alpha >= 1:
        wrong = x.astype(np.float64) * (k + alpha * _window_sum_sq(x, size)) ** (-beta)
        assert rel_err(out, wrong) > 1e-3


def _window_sum_sq(x, size):
    x = np.asarray(x, np.float64)
    pre = (size - 1) // 2
    c = x.shape[1]
    out = np.zeros_like(x)
    for ch in range(c):
        lo, hi = max(ch - pre, 0), min(ch - pre + size, c)
        out[:, ch] = (x[:, lo:hi] ** 2).sum(axis=1)
    return out


def test_lrn_across_channels_default_params():
    # LRNParameter defaults: local_size 5, alpha 1, beta 0.75, k 1.
    x = _rand((1, 6, 3, 3))
    out = _run_lrn(x, "")
    _check(out, ref_lrn_across(x, 5, 1.0, 0.75, 1.0), shape=x.shape)


LRN_WITHIN = [
    # (shape, local_size, alpha, beta, k)
    ((2, 3, 6, 7), 3, 2.0, 0.75, 1.0),
    ((2, 3, 6, 7), 5, 2.0, 0.75, 2.0),   # k is not used by WITHIN_CHANNEL
    ((1, 2, 5, 5), 5, 1e-4, 0.75, 1.0),
    ((1, 2, 4, 3), 5, 3.0, 0.5, 1.0),    # window larger than the map
    ((1, 1, 7, 6), 7, 1.0, 0.75, 5.0),
]


@pytest.mark.parametrize("shape,size,alpha,beta,k", LRN_WITHIN)
def test_lrn_within_channel(shape, size, alpha, beta, k):
    x = _rand(shape, scale=2.0)
    out = _run_lrn(x, f"norm_region: WITHIN_CHANNEL local_size: {size} alpha: {alpha} beta: {beta} k: {k}")
    expected = ref_lrn_within(x, size, alpha, beta)
    _check(out, expected, shape=x.shape)


def test_lrn_within_channel_ignores_k():
    x = _rand((1, 2, 5, 5), scale=2.0)
    a = _run_lrn(x, "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2.0 beta: 0.75 k: 1")
    b = _run_lrn(x, "norm_region: WITHIN_CHANNEL local_size: 3 alpha: 2.0 beta: 0.75 k: 7")
    np.testing.assert_array_equal(a, b)


def test_alexnet_norm1_chain():
    """conv1 -> relu1 -> norm1 -> pool1 on a small map with CaffeNet's norm1 parameters."""
    x = _rand((1, 3, 35, 35))
    text = (input_layer(x.shape)
            + _layer("conv1", "Convolution", "convolution_param { num_output: 6 kernel_size: 11 stride: 4 }")
            + _layer("relu1", "ReLU", bottom="conv1", top="conv1")
            + _layer("norm1", "LRN", "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }", bottom="conv1")
            + _layer("pool1", "Pooling", "pooling_param { pool: MAX kernel_size: 3 stride: 2 }", bottom="norm1"))
    graph, module, out = run_single(text, {"data": x})
    conv = ref_conv(x, *_blobs(module, "conv1"), stride=(4, 4))  # (35-11)/4+1 = 7
    relu = np.maximum(conv, 0)
    norm = ref_lrn_across(relu, 5, 1e-4, 0.75, 1.0)
    pool = ref_pool(norm, "MAX", (3, 3), (2, 2))  # ceil((7-3)/2)+1 = 3
    assert pool.shape == (1, 6, 3, 3)
    _check(out["conv1"], conv)
    _check(out["conv1:1"], relu)
    _check(out["norm1"], norm)
    _check(out["pool1"], pool)


# ------------------------------------------------------------------------------------------------
# The references themselves, on hand-checkable numbers
# ------------------------------------------------------------------------------------------------
def test_reference_conv_by_hand():
    x = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
    w = np.ones((1, 1, 2, 2))
    out = ref_conv(x, w, np.array([0.5]), stride=(2, 2))
    # windows [[0,1,4,5],[2,3,6,7]] ... sums 10, 18, 42, 50 (+0.5)
    np.testing.assert_array_equal(out[0, 0], [[10.5, 18.5], [42.5, 50.5]])


def test_reference_deconv_is_conv_adjoint():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5))
    w = rng.standard_normal((6, 2, 3, 3))  # conv weight (6 out, 4/2 in); as deconv weight: (6 in, 2 out/g)
    y = rng.standard_normal((1, 6, 3, 3))
    kw = dict(stride=(2, 2), pad=(1, 1), group=2)
    cx = ref_conv(x, w, **kw)
    assert cx.shape == y.shape
    dy = ref_deconv(y, w, **kw)
    assert dy.shape == x.shape
    np.testing.assert_allclose((cx * y).sum(), (x * dy).sum(), rtol=1e-12)


def test_reference_pool_by_hand():
    x = np.arange(1, 17, dtype=np.float64).reshape(1, 1, 4, 4)
    # AVE k3 s2 p1 on 4x4: ceil(3/2)+1 = 3; clip: 4 >= 5? no. starts -1,1,3; ends min(.,5) 2,4,5 -> div 3,3,2
    out = ref_pool(x, "AVE", (3, 3), (2, 2), (1, 1))
    assert out.shape == (1, 1, 3, 3)
    assert out[0, 0, 0, 0] == (1 + 2 + 5 + 6) / 9
    assert out[0, 0, 2, 2] == 16 / 4
    assert ref_pool(-x, "MAX", (3, 3), (2, 2), (1, 1))[0, 0, 0, 0] == -1
