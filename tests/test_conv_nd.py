"""N-D Convolution / Deconvolution (1-D, 3-D, a channel axis other than 1) and Im2col: PyTorch and
ONNX Runtime against float64 NumPy transcriptions of Caffe's im2col_nd / col2im_nd arithmetic
(``src/caffe/util/im2col.cpp``, ``base_conv_layer.cpp``)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from helpers import graph_from_text, input_layer
from test_onnx_export import check_ref, export_case


def out_size(size, k, s, p, d):
    span = size + 2 * p - (d * (k - 1) + 1)
    return int(span / s) + 1  # C++ truncation toward zero


def windows(x, kernel, stride, pad, dil):
    """For every kernel offset: the (N, C, *out) values im2col reads there (zeros off the input)."""
    spatial = x.shape[2:]
    out = [out_size(spatial[i], kernel[i], stride[i], pad[i], dil[i]) for i in range(len(spatial))]
    ends = [max(spatial[i] + pad[i], (out[i] - 1) * stride[i] + dil[i] * (kernel[i] - 1) + 1 - pad[i])
            for i in range(len(spatial))]
    xp = np.zeros((*x.shape[:2], *[pad[i] + ends[i] for i in range(len(spatial))]))
    xp[(slice(None), slice(None), *[slice(pad[i], pad[i] + spatial[i]) for i in range(len(spatial))])] = x
    for k in itertools.product(*[range(v) for v in kernel]):
        sl = tuple(slice(k[i] * dil[i], k[i] * dil[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                   for i in range(len(spatial)))
        yield k, xp[(slice(None), slice(None), *sl)]


def conv_ref(x, w, b, stride, pad, dil, group):
    o, cg = w.shape[:2]
    og = o // group
    y = None
    for k, patch in windows(x, w.shape[2:], stride, pad, dil):
        if y is None:
            y = np.zeros((x.shape[0], o, *patch.shape[2:]))
        for g in range(group):
            y[:, g * og:(g + 1) * og] += np.einsum("nc...,oc->no...", patch[:, g * cg:(g + 1) * cg],
                                                   w[(slice(g * og, (g + 1) * og), slice(None), *k)])
    return y + b.reshape(1, -1, *[1] * (x.ndim - 2))


def deconv_ref(x, w, b, stride, pad, dil, group):
    """col2im: every input value times the kernel, added at stride * i + dil * k - pad."""
    c, og = w.shape[:2]
    cg = c // group
    n, spatial, kernel = x.shape[0], x.shape[2:], w.shape[2:]
    out = [stride[i] * (spatial[i] - 1) + dil[i] * (kernel[i] - 1) + 1 - 2 * pad[i] for i in range(len(spatial))]
    yp = np.zeros((n, og * group, *[out[i] + 2 * pad[i] for i in range(len(spatial))]))
    for k in itertools.product(*[range(v) for v in kernel]):
        sl = tuple(slice(k[i] * dil[i], k[i] * dil[i] + stride[i] * (spatial[i] - 1) + 1, stride[i])
                   for i in range(len(spatial)))
        for g in range(group):
            yp[(slice(None), slice(g * og, (g + 1) * og), *sl)] += np.einsum(
                "nc...,co->no...", x[:, g * cg:(g + 1) * cg], w[(slice(g * cg, (g + 1) * cg), slice(None), *k)])
    y = yp[(slice(None), slice(None), *[slice(pad[i], pad[i] + out[i]) for i in range(len(spatial))])]
    return y + b.reshape(1, -1, *[1] * (x.ndim - 2))


def im2col_ref(x, kernel, stride, pad, dil):
    cols = {k: patch for k, patch in windows(x, kernel, stride, pad, dil)}
    offsets = list(itertools.product(*[range(v) for v in kernel]))
    rows = [cols[k][:, c] for c in range(x.shape[1]) for k in offsets]
    return np.stack(rows, axis=1)


def conv_param(kernel, stride=(), pad=(), dil=(), extra=""):
    fields = [f"kernel_size: {v}" for v in kernel] + [f"stride: {v}" for v in stride]
    fields += [f"pad: {v}" for v in pad] + [f"dilation: {v}" for v in dil]
    return "convolution_param { " + " ".join(fields) + " " + extra + " }"


def per_axis(values, n, default):
    return tuple(values) * n if len(values) == 1 else (tuple(values) or (default,) * n)


CASES = [  # bottom, num_output, group, kernel, stride, pad, dilation
    ((2, 3, 5, 6, 7), 4, 1, (3, 2, 3), (1, 2, 2), (1, 0, 1), (1, 1, 2)),
    ((1, 4, 4, 5, 6), 6, 2, (3,), (2,), (1,), ()),
    ((2, 4, 9), 3, 1, (3,), (2,), (1,), ()),
    ((1, 2, 3, 3, 3), 2, 1, (4,), (3,), (), ()),  # the kernel overhangs: Caffe's truncating size
]


@pytest.mark.parametrize("bottom,num_output,group,kernel,stride,pad,dil", CASES)
def test_convolution_nd(tmp_path, bottom, num_output, group, kernel, stride, pad, dil):
    x = np.random.default_rng(1).standard_normal(bottom).astype(np.float32)
    param = conv_param(kernel, stride, pad, dil, f"num_output: {num_output} group: {group}")
    case = export_case(tmp_path, f'layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv" {param} }}',
                       {"data": x})
    n = len(bottom) - 2
    w, b = case.blobs["conv"]
    want = conv_ref(x.astype(np.float64), w, b, per_axis(stride, n, 1), per_axis(pad, n, 0), per_axis(dil, n, 1), group)
    check_ref(case, {"conv": want})


@pytest.mark.parametrize("bottom,num_output,group,kernel,stride,pad,dil", [
    ((2, 4, 3, 4, 5), 3, 1, (3, 2, 3), (2, 1, 2), (1, 0, 1), (1, 2, 1)),
    ((1, 4, 6), 4, 2, (4,), (2,), (1,), ()),
])
def test_deconvolution_nd(tmp_path, bottom, num_output, group, kernel, stride, pad, dil):
    x = np.random.default_rng(2).standard_normal(bottom).astype(np.float32)
    param = conv_param(kernel, stride, pad, dil, f"num_output: {num_output} group: {group}")
    case = export_case(tmp_path, f'layer {{ name: "up" type: "Deconvolution" bottom: "data" top: "up" {param} }}',
                       {"data": x})
    n = len(bottom) - 2
    w, b = case.blobs["up"]
    want = deconv_ref(x.astype(np.float64), w, b, per_axis(stride, n, 1), per_axis(pad, n, 0), per_axis(dil, n, 1), group)
    check_ref(case, {"up": want})


def test_convolution_channel_axis_2(tmp_path):
    """axis: 2 -- the axes before the channel axis are all 'num' (Caffe's count(0, axis))."""
    x = np.random.default_rng(3).standard_normal((2, 3, 4, 6, 5)).astype(np.float32)
    case = export_case(tmp_path, 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                                 'convolution_param { num_output: 5 kernel_size: 3 pad: 1 axis: 2 } }', {"data": x})
    assert case.net.graph.shapes["conv"] == (2, 3, 5, 6, 5)
    w, b = case.blobs["conv"]
    want = conv_ref(x.reshape(6, 4, 6, 5).astype(np.float64), w, b, (1, 1), (1, 1), (1, 1), 1).reshape(2, 3, 5, 6, 5)
    check_ref(case, {"conv": want})


@pytest.mark.parametrize("bottom,kernel,stride,pad,dil,extra", [
    ((2, 3, 6, 7), (3, 2), (2, 1), (1, 0), (1, 2), ""),
    ((2, 3, 6, 7), (3,), (2,), (1,), (), "force_nd_im2col: true"),
    ((1, 2, 4, 5, 3), (2, 3, 2), (1, 2, 1), (0, 1, 1), (), ""),
])
def test_im2col(tmp_path, bottom, kernel, stride, pad, dil, extra):
    x = np.random.default_rng(4).standard_normal(bottom).astype(np.float32)
    case = export_case(tmp_path, f'layer {{ name: "cols" type: "Im2col" bottom: "data" top: "cols" '
                                 f'{conv_param(kernel, stride, pad, dil, extra)} }}', {"data": x})
    n = len(bottom) - 2
    want = im2col_ref(x.astype(np.float64), per_axis(kernel, n, 0), per_axis(stride, n, 1), per_axis(pad, n, 0),
                      per_axis(dil, n, 1))
    check_ref(case, {"cols": want})


def test_force_nd_im2col_is_the_same_2d_convolution(tmp_path):
    x = np.random.default_rng(5).standard_normal((1, 3, 7, 7)).astype(np.float32)
    case = export_case(tmp_path, 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                                 'convolution_param { num_output: 2 kernel_size: 3 stride: 2 force_nd_im2col: true } }',
                       {"data": x})
    w, b = case.blobs["conv"]
    check_ref(case, {"conv": conv_ref(x.astype(np.float64), w, b, (2, 2), (0, 0), (1, 1), 1)})


@pytest.mark.parametrize("bottom,param,message", [
    ((1, 2, 4, 4, 4), "kernel_size: 3 kernel_size: 3", "once per spatial dimension"),
    ((1, 2, 4, 4, 4), "kernel_h: 3 kernel_w: 3", "only be used for 2D convolution"),
    ((1, 2, 4, 4, 4), "kernel_size: 3 stride: 0", "stride"),
    ((1, 2, 4, 4), "kernel_size: 3 kernel_size: 3 kernel_size: 3", "once per spatial dimension"),
])
def test_nd_geometry_checks_are_caffes(bottom, param, message):
    from convnet_io.errors import LayerError

    with pytest.raises(LayerError, match=message):
        graph_from_text(input_layer(bottom) + 'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" '
                        f'convolution_param {{ num_output: 2 {param} }} }}')
