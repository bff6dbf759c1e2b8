"""ONNX export: per-layer traps and whole nets.

Every per-layer case builds a small net from prototxt text (Input layers + the layers under test),
fills its blobs with seeded random values, exports it with ``export_onnx``, passes ``check_onnx``
(onnx.checker full check + strict shape inference), runs it in ONNX Runtime on the CPU with every
graph value marked as an output, and compares

  * ONNX Runtime against convnet's PyTorch model on every value, and
  * ONNX Runtime and PyTorch against a float64 NumPy transcription of Caffe's forward pass written
    here (no torch, no onnx),

with rel err = max|a - e| / max|e| <= 1e-5. The whole-net tests compare ONNX Runtime with PyTorch
on every intermediate value at batch 1 and 7 (rel err <= 1e-4).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest

import convnet_io
from convnet_io.errors import ConvnetError
from convnet_io.tools.export import seeded_inputs
from convnet_io.graph import inference_view
from convnet_io.onnx_export import check_onnx, export_onnx
from convnet_io.runtimes.onnxruntime_session import make_session
from convnet_io.runtimes.runners import mark_all_outputs
from helpers import input_layer, rel_err

TOL = 1e-5
NET_TOL = 1e-4
FLT_MAX = float(np.finfo(np.float32).max)
ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"


# ------------------------------------------------------------------------------------------------
# Export + run harness
# ------------------------------------------------------------------------------------------------
@dataclass
class Exported:
    net: object
    model: onnx.ModelProto
    inferred: onnx.ModelProto
    blobs: dict
    feeds: dict
    ort: dict
    torch: dict


def _random_blobs(net, rng) -> dict:
    return {k: [rng.standard_normal(b.shape).astype(np.float32) for b in v] for k, v in net.blobs().items()}


def export_case(tmp_path, layers: str, inputs: dict, blobs=None, opset: int = 17, static_batch: bool = False,
                seed: int = 1) -> Exported:
    """``inputs``: name -> array (the Input layers get their shapes). ``blobs``: None for seeded
    normal noise in every blob, or a callable(net_blobs, rng) -> {layer: [arrays]} overriding some."""
    text = "".join(input_layer(v.shape, k) for k, v in inputs.items()) + layers
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = convnet_io.load(path, seed=seed)
    rng = np.random.default_rng(seed)
    values = _random_blobs(net, rng)
    if blobs is not None:
        values.update(blobs(net.blobs(), rng))
    if values:
        net.set_blobs(values)
    model = export_onnx(net.graph, net.blobs(), opset=opset, static_batch=static_batch)
    inferred = check_onnx(model)
    session = make_session(mark_all_outputs(model, net.graph).SerializeToString(), "cpu")
    outs = [o.name for o in session.get_outputs()]
    feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}
    got = dict(zip(outs, session.run(outs, feeds)))
    want = net.run_values(feeds, outs)
    # Every value the export computes is reachable under its graph id, and ORT agrees with torch.
    view = inference_view(net.graph)
    computed = [t for n in view.nodes if not n.is_source for t in n.tops]
    assert set(computed) <= set(outs), sorted(set(computed) - set(outs))
    for v in outs:
        assert got[v].shape == want[v].shape == tuple(net.graph.shapes[v]), (v, got[v].shape, want[v].shape)
        assert rel_err(got[v], want[v]) <= TOL, (v, rel_err(got[v], want[v]))
    return Exported(net, model, inferred, {k: [np.float64(b) for b in v] for k, v in net.blobs().items()},
                    feeds, got, want)


def check_ref(case: Exported, expected: dict) -> None:
    for value, e in expected.items():
        e = np.asarray(e, dtype=np.float64)
        assert case.ort[value].shape == e.shape, (value, case.ort[value].shape, e.shape)
        r_ort, r_torch = rel_err(case.ort[value], e), rel_err(case.torch[value], e)
        assert r_ort <= TOL and r_torch <= TOL, f"{value}: onnxruntime {r_ort:.3e}, torch {r_torch:.3e}"


def op_types(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def producer(model, value: str):
    (node,) = [n for n in model.graph.node if value in n.output]
    return node


def dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


# ------------------------------------------------------------------------------------------------
# float64 NumPy references of Caffe's forward loops
# ------------------------------------------------------------------------------------------------
def _c_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_conv(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """conv_layer.cpp: im2col (zeros outside the image, also past it when the kernel overhangs),
    one gemm per group; output size (in + 2p - extent) / s + 1 in C++ integer division."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = _c_div(h + 2 * pad[0] - (dilation[0] * (kh - 1) + 1), stride[0]) + 1
    ow = _c_div(wd + 2 * pad[1] - (dilation[1] * (kw - 1) + 1), stride[1]) + 1
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
                col = xg[:, :, rows.clip(0, h - 1)][:, :, :, cols.clip(0, wd - 1)] * (rv[:, None] & cv[None, :])
                out[:, g * og:(g + 1) * og] += np.einsum("oc,nchw->nohw", w[g * og:(g + 1) * og, :, i, j], col)
    if b is not None:
        out += b[None, :, None, None]
    return out


def ref_deconv(x, w, b=None, stride=(1, 1), pad=(0, 0), dilation=(1, 1), group=1):
    """deconv_layer.cpp: col = W_g^T x_g per group, then col2im (scatter-add, crop the pad)."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    cg = c // group
    oh = stride[0] * (h - 1) + dilation[0] * (kh - 1) + 1 - 2 * pad[0]
    ow = stride[1] * (wd - 1) + dilation[1] * (kw - 1) + 1 - 2 * pad[1]
    out = np.zeros((n, og * group, oh, ow))
    for g in range(group):
        view = out[:, g * og:(g + 1) * og]
        for i in range(kh):
            rows = np.arange(h) * stride[0] - pad[0] + i * dilation[0]
            rv = (rows >= 0) & (rows < oh)
            for j in range(kw):
                cols = np.arange(wd) * stride[1] - pad[1] + j * dilation[1]
                cv = (cols >= 0) & (cols < ow)
                contrib = np.einsum("nchw,co->nohw", x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg, :, i, j])
                view[:, :, rows[rv][:, None], cols[cv][None, :]] += contrib[:, :, rv][:, :, :, cv]
    if b is not None:
        out += b[None, :, None, None]
    return out


def caffe_pooled(size, k, s, p, ceil_mode, any_pad):
    """pooling_layer.cpp Reshape: ceil/floor of a float division, then the clip rule (pad > 0)."""
    span = (size + 2 * p - k) / s
    out = (int(math.ceil(span)) if ceil_mode else int(math.floor(span))) + 1
    if any_pad and (out - 1) * s >= size + p:
        out -= 1
    return out


def ref_pool(x, method, kernel, stride=(1, 1), pad=(0, 0), ceil_mode=True, global_pooling=False):
    """pooling_layer.cpp Forward_cpu. MAX: -FLT_MAX start, window clipped to the image. AVE: the
    divisor is the window clipped at H + pad (before clipping to the image)."""
    n, c, h, w = x.shape
    if global_pooling:
        kernel, stride, pad = (h, w), (1, 1), (0, 0)
    any_pad = bool(pad[0] or pad[1])
    oh = caffe_pooled(h, kernel[0], stride[0], pad[0], ceil_mode, any_pad)
    ow = caffe_pooled(w, kernel[1], stride[1], pad[1], ceil_mode, any_pad)
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * stride[0] - pad[0], j * stride[1] - pad[1]
            if method == "MAX":
                he, we = min(hs + kernel[0], h), min(ws + kernel[1], w)
                hs, ws = max(hs, 0), max(ws, 0)
                win = x[:, :, hs:he, ws:we]
                out[:, :, i, j] = win.max(axis=(2, 3)) if win.size else -FLT_MAX
            else:
                he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
                size = (he - hs) * (we - ws)
                hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
                out[:, :, i, j] = x[:, :, hs:he, ws:we].sum(axis=(2, 3)) / size
    return out


def ref_lrn_across(x, size, alpha, beta, k):
    """lrn_layer.cpp CrossChannelForward_cpu: scale = k + alpha/size * sum of x^2 over size channels."""
    half = (size - 1) // 2
    sq = np.pad(x * x, ((0, 0), (half, size - 1 - half), (0, 0), (0, 0)))
    sums = sum(sq[:, i:i + x.shape[1]] for i in range(size))
    return x * (k + alpha / size * sums) ** -beta


def ref_lrn_within(x, size, alpha, beta):
    """lrn_layer.cpp WithinChannelForward: x^2 -> AVE pool (pad (size-1)/2, stride 1) ->
    Power(power -beta, scale alpha, shift 1) -> times x."""
    half = (size - 1) // 2
    avg = ref_pool(x * x, "AVE", (size, size), (1, 1), (half, half))
    return x * (1.0 + alpha * avg) ** -beta


def ref_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ref_inner_product(x, w, b, axis, transpose):
    lead = x.shape[:axis]
    x2 = x.reshape(int(np.prod(lead)), -1)
    y = x2 @ (w if transpose else w.T)
    if b is not None:
        y = y + b
    return y.reshape(*lead, y.shape[-1])


def ref_mvn(x, normalize_variance=True, across_channels=False, eps=1e-9):
    axes = tuple(range(1 if across_channels else 2, x.ndim))
    c = x - x.mean(axis=axes, keepdims=True)
    if not normalize_variance:
        return c
    return c / (np.sqrt((c * c).mean(axis=axes, keepdims=True)) + eps)


def ref_argmax(x, top_k=1, out_max_val=False, axis=None):
    """argmax_layer.cpp: sort descending; without axis: (N, 1|2, top_k) indices then values."""
    if axis is None:  # top shape: max(ndim, 3) axes of 1, then (N, 1 or 2, top_k)
        flat = x.reshape(x.shape[0], -1)
        idx = np.argsort(-flat, axis=1, kind="stable")[:, :top_k]
        vals = np.take_along_axis(flat, idx, axis=1)
        parts = [idx, vals] if out_max_val else [idx]
        out = np.stack(parts, axis=1).astype(np.float64)
        return out.reshape(out.shape + (1,) * (max(x.ndim, 3) - 3))
    idx = np.argsort(-x, axis=axis, kind="stable")
    idx = np.take(idx, np.arange(top_k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis) if out_max_val else idx.astype(np.float64)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def bcast(p, ndim, axis):
    return p.reshape(p.shape + (1,) * (ndim - axis - p.ndim))


# ------------------------------------------------------------------------------------------------
# The per-layer cases: (id, layers, inputs, reference(x, blobs) -> {value: expected}, blobs)
# ------------------------------------------------------------------------------------------------
def _rng_input(seed, shape, scale=1.0, shift=0.0):
    return np.random.default_rng(seed).standard_normal(shape) * scale + shift


def pool(name, bottom, **p):
    body = " ".join(f"{k}: {v}" for k, v in p.items())
    return f'layer {{ name: "{name}" type: "Pooling" bottom: "{bottom}" top: "{name}" pooling_param {{ {body} }} }}\n'


def layer(name, type_, bottoms, tops=None, params=""):
    bottoms = [bottoms] if isinstance(bottoms, str) else bottoms
    tops = [name] if tops is None else ([tops] if isinstance(tops, str) else tops)
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


NEG = dict(scale=1.0, shift=-4.0)  # all-negative inputs: zero padding in a MAX pool would win


def x_of(shape, seed=0, scale=1.0, shift=0.0, name="data"):
    return {name: _rng_input(seed, shape, scale, shift)}


def _bn_blobs(factor):
    def make(blobs, rng):
        c = blobs["bn"][0].shape[0]
        mean = rng.standard_normal(c) * 3
        var = rng.uniform(0.5, 3.0, c)
        return {"bn": [mean.astype(np.float32), var.astype(np.float32), np.array([factor], np.float32)]}
    return make


def _bn_ref(x, b, eps):
    mean, var, f = b["bn"]
    s = 0.0 if f[0] == 0 else 1.0 / f[0]
    y = (x - mean[None, :, None, None] * s) / np.sqrt(var[None, :, None, None] * s + eps)
    gamma, beta = b["sc"]
    return {"bn": y, "sc": y * gamma[None, :, None, None] + beta[None, :, None, None]}


CASES = [
    # -- Pooling ---------------------------------------------------------------------------------
    ("pool_max_ceil_clip",  # clip rule removes the last window in both dims: 5x7 -> 3x4
     pool("p", "data", pool="MAX", kernel_size=2, stride=2, pad=1), x_of((2, 3, 5, 7), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (2, 2), (2, 2), (1, 1))}, None),
    ("pool_max_ceil_overhang",  # ceil adds a window that overhangs the input (6 -> 3, window [4, 7))
     pool("p", "data", pool="MAX", kernel_size=3, stride=2), x_of((2, 3, 6, 7), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 3), (2, 2))}, None),
    ("pool_max_ceil_pad_overhang",  # pad 1, the last window reads pad and overhang: 6 -> 4
     pool("p", "data", pool="MAX", kernel_size=3, stride=2, pad=1), x_of((2, 3, 6, 6), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 3), (2, 2), (1, 1))}, None),
    ("pool_max_floor",  # FLOOR: the windows stop short of the last row/column (6 -> 2)
     pool("p", "data", pool="MAX", kernel_size=3, stride=2, round_mode="FLOOR"), x_of((2, 3, 6, 6), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 3), (2, 2), ceil_mode=False)}, None),
    ("pool_max_floor_pad",
     pool("p", "data", pool="MAX", kernel_size=3, stride=2, pad=1, round_mode="FLOOR"), x_of((2, 3, 7, 8), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 3), (2, 2), (1, 1), ceil_mode=False)}, None),
    ("pool_max_rect",
     pool("p", "data", pool="MAX", kernel_h=3, kernel_w=2, stride_h=2, stride_w=1, pad_h=1, pad_w=1),
     x_of((2, 3, 6, 5), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 2), (2, 1), (1, 1))}, None),
    ("pool_ave_pad_ceil",  # H=6,k=3,s=2,p=1: 4 windows, divisors 3 (pad counts), 3, 3, 2 (overhang)
     pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1), x_of((2, 3, 6, 6)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (3, 3), (2, 2), (1, 1))}, None),
    ("pool_ave_ceil_overhang",  # no pad, ceil overhang: divisor 2 for the last row
     pool("p", "data", pool="AVE", kernel_size=3, stride=2), x_of((2, 3, 6, 7)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (3, 3), (2, 2))}, None),
    ("pool_ave_floor_pad",
     pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1, round_mode="FLOOR"), x_of((2, 3, 7, 6)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (3, 3), (2, 2), (1, 1), ceil_mode=False)}, None),
    ("pool_ave_rect",
     pool("p", "data", pool="AVE", kernel_h=2, kernel_w=3, stride_h=1, stride_w=2, pad_h=1, pad_w=2),
     x_of((2, 3, 5, 6)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (2, 3), (1, 2), (1, 2))}, None),
    ("pool_floor_crop_pad_max",  # FLOOR with pad, the last input row is read by no window: cropped
     pool("p", "data", pool="MAX", kernel_size=3, stride=3, pad=1, round_mode="FLOOR"), x_of((2, 3, 9, 10), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", (3, 3), (3, 3), (1, 1), ceil_mode=False)}, None),
    ("pool_floor_crop_pad_ave",
     pool("p", "data", pool="AVE", kernel_size=3, stride=3, pad=1, round_mode="FLOOR"), x_of((2, 3, 9, 10)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (3, 3), (3, 3), (1, 1), ceil_mode=False)}, None),
    ("pool_ave_kernel_equals_input_pad",  # windows larger than the unpadded map, divisors vary
     pool("p", "data", pool="AVE", kernel_size=4, stride=3, pad=2), x_of((2, 3, 4, 5)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", (4, 4), (3, 3), (2, 2))}, None),
    ("pool_global_max", pool("p", "data", pool="MAX", global_pooling="true"), x_of((2, 3, 5, 4), **NEG),
     lambda x, b: {"p": ref_pool(x["data"], "MAX", None, global_pooling=True)}, None),
    ("pool_global_ave", pool("p", "data", pool="AVE", global_pooling="true"), x_of((2, 3, 5, 4)),
     lambda x, b: {"p": ref_pool(x["data"], "AVE", None, global_pooling=True)}, None),
    # -- LRN -------------------------------------------------------------------------------------
    ("lrn_across",
     layer("n", "LRN", "data", params="lrn_param { local_size: 5 alpha: 3 beta: 0.75 k: 2 }"),
     x_of((2, 7, 3, 4), scale=2.0),
     lambda x, b: {"n": ref_lrn_across(x["data"], 5, 3.0, 0.75, 2.0)}, None),
    ("lrn_across_size_over_channels",  # the window is wider than the channel axis
     layer("n", "LRN", "data", params="lrn_param { local_size: 7 alpha: 2 beta: 0.9 k: 1.5 }"),
     x_of((2, 3, 2, 2), scale=2.0),
     lambda x, b: {"n": ref_lrn_across(x["data"], 7, 2.0, 0.9, 1.5)}, None),
    ("lrn_within_wide",
     layer("n", "LRN", "data", params="lrn_param { local_size: 5 alpha: 4 beta: 0.75 norm_region: WITHIN_CHANNEL }"),
     x_of((2, 2, 3, 4), scale=2.0),
     lambda x, b: {"n": ref_lrn_within(x["data"], 5, 4.0, 0.75)}, None),
    ("lrn_within",
     layer("n", "LRN", "data", params="lrn_param { local_size: 3 alpha: 2 beta: 0.6 k: 5 "
                                      "norm_region: WITHIN_CHANNEL }"),
     x_of((2, 3, 5, 6), scale=2.0),
     lambda x, b: {"n": ref_lrn_within(x["data"], 3, 2.0, 0.6)}, None),
    # -- Convolution / Deconvolution -------------------------------------------------------------
    ("conv_group_dilation",
     layer("c", "Convolution", "data", params="convolution_param { num_output: 6 kernel_size: 3 pad: 1 "
                                             "dilation: 2 group: 2 }"),
     x_of((2, 4, 9, 8)),
     lambda x, b: {"c": ref_conv(x["data"], *b["c"], pad=(1, 1), dilation=(2, 2), group=2)}, None),
    ("conv_depthwise_stride",
     layer("c", "Convolution", "data", params="convolution_param { num_output: 8 kernel_size: 3 pad: 1 "
                                             "stride: 2 group: 4 }"),
     x_of((2, 4, 7, 6)),
     lambda x, b: {"c": ref_conv(x["data"], *b["c"], stride=(2, 2), pad=(1, 1), group=4)}, None),
    ("conv_kernel_overhang",  # input 6, kernel 7, stride 2: C++ truncation gives 1 output
     layer("c", "Convolution", "data", params="convolution_param { num_output: 4 kernel_size: 7 stride: 2 }"),
     x_of((2, 3, 6, 6)),
     lambda x, b: {"c": ref_conv(x["data"], *b["c"], stride=(2, 2))}, None),
    ("conv_dilated_overhang",  # extent 7 over input 5, stride 3: 1 output reading 2 implicit zeros
     layer("c", "Convolution", "data", params="convolution_param { num_output: 4 kernel_size: 3 "
                                             "dilation: 3 stride: 3 }"),
     x_of((2, 3, 5, 5)),
     lambda x, b: {"c": ref_conv(x["data"], *b["c"], stride=(3, 3), dilation=(3, 3))}, None),
    ("conv_rect_nobias",
     layer("c", "Convolution", "data", params="convolution_param { num_output: 5 kernel_h: 3 kernel_w: 1 "
                                             "pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 1 bias_term: false }"),
     x_of((2, 3, 7, 5)),
     lambda x, b: {"c": ref_conv(x["data"], b["c"][0], None, stride=(2, 1), pad=(1, 0))}, None),
    ("conv_two_bottoms",  # one layer, two bottoms, shared weights
     layer("c", "Convolution", ["a", "b"], ["ca", "cb"],
           params="convolution_param { num_output: 3 kernel_size: 2 }"),
     {"a": _rng_input(1, (2, 2, 4, 4)), "b": _rng_input(2, (2, 2, 4, 4))},
     lambda x, b: {"ca": ref_conv(x["a"], *b["c"]), "cb": ref_conv(x["b"], *b["c"])}, None),
    ("deconv_group",
     layer("d", "Deconvolution", "data", params="convolution_param { num_output: 6 kernel_size: 4 stride: 2 "
                                               "pad: 1 group: 2 }"),
     x_of((2, 4, 4, 5)),
     lambda x, b: {"d": ref_deconv(x["data"], *b["d"], stride=(2, 2), pad=(1, 1), group=2)}, None),
    ("deconv_dilation",
     layer("d", "Deconvolution", "data", params="convolution_param { num_output: 3 kernel_size: 3 "
                                               "dilation: 2 stride: 3 }"),
     x_of((2, 2, 3, 4)),
     lambda x, b: {"d": ref_deconv(x["data"], *b["d"], stride=(3, 3), dilation=(2, 2))}, None),
    # -- BatchNorm + Scale, Dropout --------------------------------------------------------------
    ("batchnorm_factor_scale_bias",  # stored statistics are sums: divide by the factor 0.5
     layer("bn", "BatchNorm", "data", params="batch_norm_param { eps: 0.001 }")
     + layer("sc", "Scale", "bn", params="scale_param { bias_term: true }"),
     x_of((2, 4, 3, 5), scale=2.0),
     lambda x, b: _bn_ref(x["data"], b, 1e-3), _bn_blobs(0.5)),
    ("batchnorm_factor_zero",  # Caffe: factor 0 means scale 0 (mean 0, variance 0)
     layer("bn", "BatchNorm", "data") + layer("sc", "Scale", "bn", params="scale_param { bias_term: true }"),
     x_of((2, 4, 3, 5), scale=0.01),
     lambda x, b: _bn_ref(x["data"], b, 1e-5), _bn_blobs(0.0)),
    ("dropout_test_identity",
     layer("d", "Dropout", "data", params="dropout_param { dropout_ratio: 0.3 }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"d": x["data"]}, None),
    # -- InnerProduct, Softmax -------------------------------------------------------------------
    ("ip_from_4d", layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 5 }"),
     x_of((2, 3, 4, 4)),
     lambda x, b: {"ip": ref_inner_product(x["data"], *b["ip"], 1, False)}, None),
    ("ip_axis2_transpose",
     layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 7 axis: 2 transpose: true }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"ip": ref_inner_product(x["data"], *b["ip"], 2, True)}, None),
    ("ip_axis2_nobias",
     layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 7 axis: 2 bias_term: false }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"ip": ref_inner_product(x["data"], b["ip"][0], None, 2, False)}, None),
    ("ip_transpose_axis1",
     layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 4 transpose: true }"),
     x_of((2, 3, 2, 2)),
     lambda x, b: {"ip": ref_inner_product(x["data"], *b["ip"], 1, True)}, None),
    ("ip_axis0",  # axis 0: the whole blob is one row
     layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 3 axis: 0 }"),
     x_of((2, 3, 2)),
     lambda x, b: {"ip": ref_inner_product(x["data"], *b["ip"], 0, False)}, None),
    ("embed",  # indices are truncated floats
     layer("em", "Embed", "data", params="embed_param { num_output: 4 input_dim: 5 }"),
     {"data": np.array([[0.0, 4.0, 2.7], [1.2, 3.0, 0.9]])},
     lambda x, b: {"em": b["em"][0][np.trunc(x["data"]).astype(int)] + b["em"][1]}, None),
    ("parameter", layer("pm", "Parameter", [], params="parameter_param { shape { dim: 2 dim: 3 } }")
     + layer("e", "Eltwise", ["data", "pm"], params="eltwise_param { operation: PROD }"),
     x_of((2, 3)),
     lambda x, b: {"pm": b["pm"][0], "e": x["data"] * b["pm"][0]}, None),
    ("batchnorm_2d",
     layer("bn", "BatchNorm", "data") + layer("sc", "Scale", "bn", params="scale_param { bias_term: true }"),
     x_of((3, 4), scale=2.0),
     lambda x, b: {k: v[:, :, 0, 0] for k, v in _bn_ref(x["data"][:, :, None, None], b, 1e-5).items()},
     _bn_blobs(2.0)),
    ("softmax_2d", layer("s", "Softmax", "data"), x_of((3, 5), scale=3),
     lambda x, b: {"s": ref_softmax(x["data"], 1)}, None),
    ("argmax_2d_values", layer("am", "ArgMax", "data", params="argmax_param { top_k: 2 out_max_val: true }"),
     x_of((3, 6)),
     lambda x, b: {"am": ref_argmax(x["data"], 2, True)}, None),
    ("softmax_axis2", layer("s", "Softmax", "data", params="softmax_param { axis: 2 }"), x_of((2, 3, 4, 5), scale=3),
     lambda x, b: {"s": ref_softmax(x["data"], 2)}, None),
    ("softmax_axis_neg1", layer("s", "Softmax", "data", params="softmax_param { axis: -1 }"),
     x_of((2, 3, 4, 5), scale=3),
     lambda x, b: {"s": ref_softmax(x["data"], -1)}, None),
    # -- Eltwise ---------------------------------------------------------------------------------
    ("eltwise_sum_coeffs",
     layer("e", "Eltwise", ["a", "b", "c"], params="eltwise_param { operation: SUM coeff: 0.5 coeff: -2 coeff: 3 }"),
     {k: _rng_input(i, (2, 3, 4, 5)) for i, k in enumerate("abc")},
     lambda x, b: {"e": 0.5 * x["a"] - 2 * x["b"] + 3 * x["c"]}, None),
    ("eltwise_prod",
     layer("e", "Eltwise", ["a", "b", "c"], params="eltwise_param { operation: PROD }"),
     {k: _rng_input(i, (2, 3, 4, 5)) for i, k in enumerate("abc")},
     lambda x, b: {"e": x["a"] * x["b"] * x["c"]}, None),
    ("eltwise_max",
     layer("e", "Eltwise", ["a", "b", "c"], params="eltwise_param { operation: MAX }"),
     {k: _rng_input(i, (2, 3, 4, 5)) for i, k in enumerate("abc")},
     lambda x, b: {"e": np.maximum(np.maximum(x["a"], x["b"]), x["c"])}, None),
    # -- Shape ops -------------------------------------------------------------------------------
    ("concat_axis1", layer("cc", "Concat", ["a", "b"]),
     {"a": _rng_input(1, (2, 3, 4, 5)), "b": _rng_input(2, (2, 2, 4, 5))},
     lambda x, b: {"cc": np.concatenate([x["a"], x["b"]], 1)}, None),
    ("concat_axis_neg1", layer("cc", "Concat", ["a", "b"], params="concat_param { axis: -1 }"),
     {"a": _rng_input(1, (2, 3, 4, 5)), "b": _rng_input(2, (2, 3, 4, 2))},
     lambda x, b: {"cc": np.concatenate([x["a"], x["b"]], 3)}, None),
    ("slice_points", layer("sl", "Slice", "data", ["s0", "s1", "s2"],
                           params="slice_param { axis: 1 slice_point: 1 slice_point: 3 }"),
     x_of((2, 6, 3, 2)),
     lambda x, b: dict(zip(["s0", "s1", "s2"], np.split(x["data"], [1, 3], axis=1))), None),
    ("slice_equal_last_axis", layer("sl", "Slice", "data", ["s0", "s1"], params="slice_param { axis: -1 }"),
     x_of((2, 3, 4, 6)),
     lambda x, b: dict(zip(["s0", "s1"], np.split(x["data"], 2, axis=3))), None),
    ("split", layer("sp", "Split", "data", ["t0", "t1"]), x_of((2, 3, 2, 2)),
     lambda x, b: {"t0": x["data"], "t1": x["data"]}, None),
    ("flatten_default", layer("f", "Flatten", "data"), x_of((2, 3, 4, 5)),
     lambda x, b: {"f": x["data"].reshape(2, -1)}, None),
    ("flatten_axis1_end2", layer("f", "Flatten", "data", params="flatten_param { axis: 1 end_axis: 2 }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"f": x["data"].reshape(2, 12, 5)}, None),
    ("flatten_axis2", layer("f", "Flatten", "data", params="flatten_param { axis: 2 }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"f": x["data"].reshape(2, 3, 20)}, None),
    ("reshape_0_neg1", layer("r", "Reshape", "data", params="reshape_param { shape { dim: 0 dim: -1 } }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"r": x["data"].reshape(2, 60)}, None),
    ("reshape_0_2_neg1_0",
     layer("r", "Reshape", "data", params="reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } }"),
     x_of((2, 4, 3, 5)),
     lambda x, b: {"r": x["data"].reshape(2, 2, 6, 5)}, None),
    ("reshape_axis1_num_axes1",
     layer("r", "Reshape", "data", params="reshape_param { shape { dim: 2 dim: -1 } axis: 1 num_axes: 1 }"),
     x_of((2, 4, 3, 5)),
     lambda x, b: {"r": x["data"].reshape(2, 2, 2, 3, 5)}, None),
    ("reshape_neg_axis",  # axis -1 inserts at the end: (2,12) -> (2,12,1)
     layer("f", "Flatten", "data") + layer("r", "Reshape", "f", params="reshape_param { shape { dim: 1 } axis: -1 "
                                                                      "num_axes: 0 }"),
     x_of((2, 3, 2, 2)),
     lambda x, b: {"r": x["data"].reshape(2, 12, 1)}, None),
    ("crop_axis2_offsets", layer("cr", "Crop", ["a", "ref"], params="crop_param { axis: 2 offset: 1 offset: 2 }"),
     {"a": _rng_input(1, (2, 3, 8, 9)), "ref": _rng_input(2, (2, 3, 5, 6))},
     lambda x, b: {"cr": x["a"][:, :, 1:6, 2:8]}, None),
    ("crop_axis1_one_offset", layer("cr", "Crop", ["a", "ref"], params="crop_param { axis: 1 offset: 1 }"),
     {"a": _rng_input(1, (2, 5, 8, 9)), "ref": _rng_input(2, (2, 3, 5, 6))},
     lambda x, b: {"cr": x["a"][:, 1:4, 1:6, 1:7]}, None),
    ("tile_axis1", layer("t", "Tile", "data", params="tile_param { axis: 1 tiles: 3 }"), x_of((2, 2, 3, 2)),
     lambda x, b: {"t": np.tile(x["data"], (1, 3, 1, 1))}, None),
    ("tile_axis_neg1", layer("t", "Tile", "data", params="tile_param { axis: -1 tiles: 2 }"), x_of((2, 2, 3, 2)),
     lambda x, b: {"t": np.tile(x["data"], (1, 1, 1, 2))}, None),
    *[(f"reduction_{op.lower()}_axis{axis}",
       layer("r", "Reduction", "data", params=f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}"),
       x_of((2, 3, 4, 5)),
       (lambda op, axis, coeff: lambda x, b: {"r": coeff * {
           "SUM": np.sum, "ASUM": lambda a, axis: np.abs(a).sum(axis=axis),
           "SUMSQ": lambda a, axis: (a * a).sum(axis=axis), "MEAN": np.mean,
       }[op](x["data"], axis=tuple(range(axis, 4)))})(op, axis, coeff), None)
      for op in ("SUM", "ASUM", "SUMSQ", "MEAN") for axis, coeff in ((1, 1.0), (2, -0.5))],
    ("reduction_default_axis0",  # Caffe's default axis 0 reduces everything to a scalar
     layer("r", "Reduction", "data", params="reduction_param { operation: SUMSQ }"), x_of((2, 3, 4)),
     lambda x, b: {"r": (x["data"] ** 2).sum()}, None),
    ("argmax_default", layer("am", "ArgMax", "data"), x_of((2, 3, 4, 5)),
     lambda x, b: {"am": ref_argmax(x["data"])}, None),
    ("argmax_topk_max_val", layer("am", "ArgMax", "data", params="argmax_param { top_k: 3 out_max_val: true }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"am": ref_argmax(x["data"], 3, True)}, None),
    ("argmax_axis1_topk2", layer("am", "ArgMax", "data", params="argmax_param { top_k: 2 axis: 1 }"),
     x_of((2, 5, 3, 4)),
     lambda x, b: {"am": ref_argmax(x["data"], 2, False, axis=1)}, None),
    ("argmax_axis_neg1_values", layer("am", "ArgMax", "data",
                                      params="argmax_param { top_k: 2 axis: -1 out_max_val: true }"),
     x_of((2, 5, 3, 4)),
     lambda x, b: {"am": ref_argmax(x["data"], 2, True, axis=3)}, None),
    # -- Element-wise ----------------------------------------------------------------------------
    ("power_square", layer("y", "Power", "data", params="power_param { power: 2 scale: 0.5 shift: 1 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": (1 + 0.5 * x["data"]) ** 2}, None),
    ("power_sqrt", layer("y", "Power", "data", params="power_param { power: 0.5 scale: 2 shift: 10 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": (10 + 2 * x["data"]) ** 0.5}, None),
    ("power_neg", layer("y", "Power", "data", params="power_param { power: -1.5 shift: 5 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": (5 + x["data"]) ** -1.5}, None),
    ("power_affine", layer("y", "Power", "data", params="power_param { scale: -3 shift: 0.5 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": 0.5 - 3 * x["data"]}, None),
    ("exp_base2", layer("y", "Exp", "data", params="exp_param { base: 2 scale: 0.5 shift: 1 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": 2.0 ** (1 + 0.5 * x["data"])}, None),
    ("exp_e_scaled", layer("y", "Exp", "data", params="exp_param { scale: -1.5 shift: 0.25 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": np.exp(0.25 - 1.5 * x["data"])}, None),
    ("log_base10", layer("y", "Log", "data", params="log_param { base: 10 scale: 2 shift: 10 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": np.log10(10 + 2 * x["data"])}, None),
    ("log_e_shift", layer("y", "Log", "data", params="log_param { scale: 0.5 shift: 5 }"),
     x_of((2, 3, 4, 5)), lambda x, b: {"y": np.log(5 + 0.5 * x["data"])}, None),
    ("prelu_channelwise", layer("y", "PReLU", "data"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": np.maximum(x["data"], 0) + b["y"][0][None, :, None, None] * np.minimum(x["data"], 0)}, None),
    ("prelu_shared", layer("y", "PReLU", "data", params="prelu_param { channel_shared: true }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": np.maximum(x["data"], 0) + b["y"][0].reshape(()) * np.minimum(x["data"], 0)}, None),
    ("prelu_2d", layer("y", "PReLU", "data"), x_of((4, 6)),
     lambda x, b: {"y": np.maximum(x["data"], 0) + b["y"][0][None, :] * np.minimum(x["data"], 0)}, None),
    ("relu_leaky_inplace", layer("y", "ReLU", "data", "data", params="relu_param { negative_slope: 0.1 }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"data:1": np.where(x["data"] > 0, x["data"], 0.1 * x["data"])}, None),
    ("elu", layer("y", "ELU", "data", params="elu_param { alpha: 0.5 }"), x_of((2, 3, 4, 5), scale=2),
     lambda x, b: {"y": np.where(x["data"] > 0, x["data"], 0.5 * (np.exp(x["data"]) - 1))}, None),
    ("bnll", layer("y", "BNLL", "data"), x_of((2, 3, 4, 5), scale=10),
     lambda x, b: {"y": np.where(x["data"] > 0, x["data"] + np.log1p(np.exp(-x["data"])),
                                 np.log1p(np.exp(x["data"])))}, None),
    ("threshold", layer("y", "Threshold", "data", params="threshold_param { threshold: 0.3 }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": (x["data"] > 0.3).astype(np.float64)}, None),
    ("clip", layer("y", "Clip", "data", params="clip_param { min: -0.5 max: 0.7 }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": np.clip(x["data"], -0.5, 0.7)}, None),
    ("swish_beta", layer("y", "Swish", "data", params="swish_param { beta: 1.5 }"), x_of((2, 3, 4, 5), scale=3),
     lambda x, b: {"y": x["data"] * sigmoid(1.5 * x["data"])}, None),
    ("swish_default", layer("y", "Swish", "data"), x_of((2, 3, 4, 5), scale=3),
     lambda x, b: {"y": x["data"] * sigmoid(x["data"])}, None),
    ("sigmoid_tanh_absval", layer("s", "Sigmoid", "data") + layer("t", "TanH", "data") + layer("a", "AbsVal", "data"),
     x_of((2, 3, 4, 5), scale=3),
     lambda x, b: {"s": sigmoid(x["data"]), "t": np.tanh(x["data"]), "a": np.abs(x["data"])}, None),
    # -- MVN, Bias, Scale ------------------------------------------------------------------------
    ("mvn_default", layer("m", "MVN", "data"), x_of((2, 3, 4, 5), scale=3, shift=2),
     lambda x, b: {"m": ref_mvn(x["data"])}, None),
    ("mvn_across_eps", layer("m", "MVN", "data", params="mvn_param { across_channels: true eps: 0.01 }"),
     x_of((2, 3, 4, 5), scale=0.2, shift=2),
     lambda x, b: {"m": ref_mvn(x["data"], across_channels=True, eps=0.01)}, None),
    ("mvn_mean_only", layer("m", "MVN", "data", params="mvn_param { normalize_variance: false }"),
     x_of((2, 3, 4, 5), scale=3, shift=2),
     lambda x, b: {"m": ref_mvn(x["data"], normalize_variance=False)}, None),
    ("mvn_3d", layer("m", "MVN", "data"), x_of((2, 3, 6), scale=3, shift=2),
     lambda x, b: {"m": ref_mvn(x["data"])}, None),
    ("mvn_2d_across", layer("m", "MVN", "data", params="mvn_param { across_channels: true }"),
     x_of((3, 6), scale=3, shift=2),
     lambda x, b: {"m": ref_mvn(x["data"], across_channels=True)}, None),
    ("bias_blob", layer("y", "Bias", "data"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": x["data"] + b["y"][0][None, :, None, None]}, None),
    ("bias_blob_axis2_num_axes2", layer("y", "Bias", "data", params="bias_param { axis: 2 num_axes: 2 }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"y": x["data"] + b["y"][0][None, None]}, None),
    ("bias_second_bottom_axis0", layer("y", "Bias", ["data", "bb"], params="bias_param { axis: 0 }"),
     {"data": _rng_input(1, (2, 3, 4, 5)), "bb": _rng_input(2, (2, 3))},
     lambda x, b: {"y": x["data"] + x["bb"][:, :, None, None]}, None),
    ("bias_second_bottom_axis1", layer("y", "Bias", ["data", "bb"]),
     {"data": _rng_input(1, (2, 3, 4, 5)), "bb": _rng_input(2, (3, 4))},
     lambda x, b: {"y": x["data"] + x["bb"][None, :, :, None]}, None),
    ("scale_second_bottom_axis0", layer("y", "Scale", ["data", "g"], params="scale_param { axis: 0 }"),
     {"data": _rng_input(1, (2, 3, 4, 5)), "g": _rng_input(2, (2, 3))},
     lambda x, b: {"y": x["data"] * x["g"][:, :, None, None]}, None),
    ("scale_second_bottom_4d", layer("y", "Scale", ["data", "g"], params="scale_param { axis: 0 }"),
     {"data": _rng_input(1, (2, 3, 4, 5)), "g": _rng_input(2, (2, 3, 4, 5))},
     lambda x, b: {"y": x["data"] * x["g"]}, None),
    ("scale_num_axes2_bias", layer("y", "Scale", "data", params="scale_param { num_axes: 2 bias_term: true }"),
     x_of((2, 3, 4, 5)),
     lambda x, b: {"y": x["data"] * bcast(b["y"][0], 4, 1)[None] + bcast(b["y"][1], 4, 1)[None]}, None),
    ("scale_scalar", layer("y", "Scale", "data", params="scale_param { num_axes: 0 }"), x_of((2, 3, 4, 5)),
     lambda x, b: {"y": x["data"] * b["y"][0].reshape(())}, None),
]


@pytest.mark.parametrize("opset", [13, 17, 18])
@pytest.mark.parametrize("layers,inputs,reference,blobs", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_layer_matches_caffe(tmp_path, layers, inputs, reference, blobs, opset):
    case = export_case(tmp_path, layers, inputs, blobs, opset=opset)
    assert case.model.opset_import[0].version == opset
    x = {k: np.float64(v.astype(np.float32)) for k, v in inputs.items()}
    check_ref(case, reference(x, case.blobs))


# -- Known defects: these tests fail until the exporter is fixed ---------------------------------
@pytest.mark.parametrize("kernel,stride", [(1, 2), (2, 3)], ids=["k1s2", "k2s3"])
def test_pool_max_ceil_window_past_input(tmp_path, kernel, stride):
    """BUG (vision.py export_pooling): stride > kernel without pad. Caffe's ceil adds a last window
    that starts past the input (the clip rule only applies with pad), e.g. 6 -> 4 with kernel 1,
    stride 2 (a ResNet-style subsampling pool); Caffe's MAX gives -FLT_MAX there. ONNX's ceil_mode
    would drop that window, so the exporter pads the end itself, but with an end pad >= kernel,
    which ONNX Runtime refuses ("Pad should be smaller than kernel")."""
    layers = pool("p", "data", pool="MAX", kernel_size=kernel, stride=stride)
    inputs = x_of((2, 3, 6, 6), **NEG)
    x = np.float64(inputs["data"].astype(np.float32))
    expected = ref_pool(x, "MAX", (kernel, kernel), (stride, stride))
    assert expected.shape[2] == caffe_pooled(6, kernel, stride, 0, True, False)
    assert (expected.shape[2] - 1) * stride >= 6  # the last window starts past the input
    case = export_case(tmp_path, layers, inputs)
    check_ref(case, {"p": expected})


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_mvn_within_channel_on_2d_blob(tmp_path, opset):
    """BUG (normalization.py export_mvn): MVN with across_channels false on an (N, C) blob (e.g.
    after an InnerProduct) normalises over no axis: Caffe (dim = 1) and the PyTorch model give 0
    everywhere. The exporter passes an empty axes list to ReduceMean: opset < 18 fails to build the
    node ("Could not infer attribute `axes` type from empty iterator"); opset 18 builds it, and an
    empty axes input means "reduce over every axis", so ONNX Runtime returns non-zero values."""
    case = export_case(tmp_path, layer("m", "MVN", "data"), x_of((4, 6), scale=3, shift=2), opset=opset)
    check_ref(case, {"m": ref_mvn(np.float64(case.feeds["data"]))})


def test_dropout_is_identity_at_test(tmp_path):
    case = export_case(tmp_path, layer("drop", "Dropout", "data", "data"), x_of((2, 3, 4, 5)))
    nodes = {n.name: n for n in case.model.graph.node}
    assert nodes["drop"].op_type == "Identity"
    assert list(nodes["drop"].output) == ["data:1"]
    np.testing.assert_array_equal(case.ort["data:1"], case.feeds["data"])


def test_dropout_without_scale_train_scales_by_keep(tmp_path):
    """caffe.proto here has no scale_train field; a graph carrying scale_train=False (as other
    Caffe forks write it) exports as a (1 - ratio) scale."""
    import dataclasses

    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((2, 3, 4, 5)) + layer("d", "Dropout", "data",
                                                      params="dropout_param { dropout_ratio: 0.3 }"))
    net = convnet_io.load(path, seed=1)
    node = net.graph.node("d")
    node.attrs = dataclasses.replace(node.attrs, scale_train=False)
    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    x = _rng_input(0, (2, 3, 4, 5)).astype(np.float32)
    (y,) = make_session(model.SerializeToString(), "cpu").run(["d"], {"data": x})
    assert rel_err(y, np.float64(x) * 0.7) <= TOL


def test_batchnorm_use_global_stats_false_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((2, 3, 4, 4)) + layer("bn", "BatchNorm", "data",
                                                      params="batch_norm_param { use_global_stats: false }"))
    net = convnet_io.load(path, seed=1)
    with pytest.raises(ConvnetError, match="use_global_stats"):
        export_onnx(net.graph, net.blobs())


def test_stochastic_pooling_is_refused(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((2, 3, 4, 4)) + pool("p", "data", pool="STOCHASTIC", kernel_size=2, stride=2))
    net = convnet_io.load(path, seed=1)
    with pytest.raises(ConvnetError, match="'p'"):
        export_onnx(net.graph, net.blobs())


# ------------------------------------------------------------------------------------------------
# Names, batch dimension, opsets
# ------------------------------------------------------------------------------------------------
SMALL_NET = (
    layer("conv1", "Convolution", "data", params="convolution_param { num_output: 4 kernel_size: 3 pad: 1 }")
    + layer("relu1", "ReLU", "conv1", "conv1")
    + pool("pool1", "conv1", pool="MAX", kernel_size=3, stride=2)
    + layer("norm1", "LRN", "pool1", params="lrn_param { local_size: 3 alpha: 1 beta: 0.75 }")
    + layer("mvn1", "MVN", "norm1")
    + layer("ip1", "InnerProduct", "mvn1", params="inner_product_param { num_output: 6 }")
    + layer("slice1", "Slice", "ip1", ["ipa", "ipb"], params="slice_param { axis: 1 slice_point: 2 }")
    + layer("red1", "Reduction", "ipa", params="reduction_param { operation: MEAN axis: 1 }")
    + layer("red2", "Reduction", "ipb", params="reduction_param { operation: ASUM axis: 1 }")
    + layer("red3", "Reduction", "ipb", params="reduction_param { operation: SUMSQ axis: 1 }")
    + layer("red4", "Reduction", "ipa", params="reduction_param { operation: SUM axis: 1 }")
    + layer("prob", "Softmax", "ipb")
)


def test_values_keep_graph_ids_and_initialiser_names(tmp_path):
    case = export_case(tmp_path, SMALL_NET, x_of((2, 3, 7, 7), scale=5))
    g = case.model.graph
    produced = {o for n in g.node for o in n.output}
    # The convolution output and the in-place ReLU's rewrite are distinct ONNX values.
    assert {"conv1", "conv1:1", "pool1", "norm1", "mvn1", "ip1", "ipa", "ipb", "prob"} <= produced
    relu = producer(case.model, "conv1:1")
    assert relu.op_type == "Relu" and list(relu.input) == ["conv1"]
    assert producer(case.model, "pool1").input[0] == "conv1:1"
    assert producer(case.model, "conv1").input[0] == "data"
    inits = {i.name for i in g.initializer}
    assert {"conv1_w", "conv1_b", "ip1_w", "ip1_b"} <= inits
    layer_names = {n.name for n in case.net.graph.nodes}
    for name in inits:  # every constant is named after its layer: <layer>_<role>
        assert any(name.startswith(f"{ln}_") for ln in layer_names), name
    w = {i.name: onnx.numpy_helper.to_array(i) for i in g.initializer}
    np.testing.assert_array_equal(w["conv1_w"], case.net.blobs()["conv1"][0])
    np.testing.assert_array_equal(w["ip1_b"], case.net.blobs()["ip1"][1])
    # Graph outputs are the graph's outputs, by id.
    assert [o.name for o in g.output] == list(inference_view(case.net.graph).outputs)
    # Values as inferred keep the symbolic batch.
    inferred = {v.name: v for v in case.inferred.graph.value_info}
    assert dims(inferred["conv1:1"]) == ["N", 4, 7, 7]
    assert dims(inferred["ip1"]) == ["N", 6]


@pytest.mark.parametrize("static_batch", [False, True])
def test_batch_dimension(tmp_path, static_batch):
    case = export_case(tmp_path, SMALL_NET, x_of((2, 3, 7, 7), scale=5), static_batch=static_batch)
    g = case.model.graph
    want = 2 if static_batch else "N"
    assert [dims(i)[0] for i in g.input] == [want]
    assert all(dims(o)[0] == want for o in g.output if dims(o))
    inferred = {v.name: v for v in case.inferred.graph.value_info}
    assert dims(inferred["pool1"])[0] == want
    if static_batch:
        return
    # A dynamic batch really runs at another size, and agrees with torch there.
    session = make_session(mark_all_outputs(case.model, case.net.graph).SerializeToString(), "cpu")
    outs = [o.name for o in session.get_outputs()]
    x = _rng_input(5, (5, 3, 7, 7), scale=5).astype(np.float32)
    got = dict(zip(outs, session.run(outs, {"data": x})))
    want_vals = case.net.run_values({"data": x}, outs)
    for v in outs:
        assert got[v].shape == want_vals[v].shape, v
        assert rel_err(got[v], want_vals[v]) <= TOL, v


DYNAMIC_NET = (
    layer("f", "Flatten", "data", params="flatten_param { axis: 2 }")
    + layer("r", "Reshape", "data", params="reshape_param { shape { dim: 0 dim: -1 dim: 2 } }")
    + layer("ip", "InnerProduct", "data", params="inner_product_param { num_output: 3 axis: 2 transpose: true }")
    + layer("am", "ArgMax", "data", params="argmax_param { top_k: 2 out_max_val: true }")
    + layer("t", "Tile", "data", params="tile_param { axis: 1 tiles: 2 }")
    + layer("cr", "Crop", ["t", "data"], params="crop_param { axis: 1 offset: 1 offset: 0 offset: 0 }")
    + layer("rd", "Reduction", "data", params="reduction_param { operation: SUM axis: 1 coeff: 2 }")
    + pool("p", "data", pool="AVE", kernel_size=3, stride=2, pad=1)
    + layer("d", "Deconvolution", "data", params="convolution_param { num_output: 2 kernel_size: 2 stride: 2 }")
    + layer("sc", "Scale", ["data", "g"], params="scale_param { axis: 0 }")
)


@pytest.mark.parametrize("batch", [1, 5])
def test_dynamic_batch_runs_every_op(tmp_path, batch):
    inputs = {"data": _rng_input(1, (2, 3, 4, 6)), "g": _rng_input(2, (2, 3))}
    case = export_case(tmp_path, DYNAMIC_NET, inputs)
    session = make_session(mark_all_outputs(case.model, case.net.graph).SerializeToString(), "cpu")
    outs = [o.name for o in session.get_outputs()]
    feeds = {"data": _rng_input(3, (batch, 3, 4, 6)).astype(np.float32),
             "g": _rng_input(4, (batch, 3)).astype(np.float32)}
    got = dict(zip(outs, session.run(outs, feeds)))
    want = case.net.run_values(feeds, outs)
    for v in outs:
        assert got[v].shape == want[v].shape and got[v].shape[0] == batch, (v, got[v].shape, want[v].shape)
        assert rel_err(got[v], want[v]) <= TOL, v


@pytest.mark.parametrize("opset", [13, 17, 18])
def test_opsets(tmp_path, opset):
    case = export_case(tmp_path, SMALL_NET, x_of((2, 3, 7, 7), scale=5), opset=opset)
    assert [o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")] == [opset]
    assert case.model.ir_version == onnx.helper.find_min_ir_version_for(list(case.model.opset_import))
    by_name = {n.name: n for n in case.model.graph.node}
    for node in (by_name["mvn1/mean"], producer(case.model, "red1")):  # ReduceMean
        assert node.op_type == "ReduceMean"
        has_attr = any(a.name == "axes" for a in node.attribute)
        assert (len(node.input) == 2 and not has_attr) if opset >= 18 else (len(node.input) == 1 and has_attr)
    for name, op in (("red2", "ReduceL1"), ("red3", "ReduceSumSquare")):
        node = producer(case.model, name)
        assert node.op_type == op and len(node.input) == (2 if opset >= 18 else 1)
    red4 = producer(case.model, "red4")
    assert red4.op_type == "ReduceSum" and len(red4.input) == 2  # input since 13
    x = np.float64(case.feeds["data"])
    conv = np.maximum(ref_conv(x, *[np.float64(b) for b in case.net.blobs()["conv1"]], pad=(1, 1)), 0)
    check_ref(case, {"conv1:1": conv, "pool1": ref_pool(conv, "MAX", (3, 3), (2, 2)),
                     "mvn1": ref_mvn(case.ort["norm1"].astype(np.float64))})


@pytest.mark.parametrize("opset", [5, 12, onnx.defs.onnx_opset_version() + 1])
def test_unsupported_opset(tmp_path, opset):
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((1, 3, 7, 7)) + SMALL_NET)
    net = convnet_io.load(path, seed=1)
    with pytest.raises(ConvnetError, match=f"opset {opset}"):
        export_onnx(net.graph, net.blobs(), opset=opset)


def test_check_onnx_rejects_a_broken_model(tmp_path):
    path = tmp_path / "net.prototxt"
    path.write_text(input_layer((1, 3, 7, 7)) + SMALL_NET)
    net = convnet_io.load(path, seed=1)
    model = export_onnx(net.graph, net.blobs())
    del model.graph.initializer[0]  # a node now reads an undefined value
    with pytest.raises(ConvnetError, match="checker"):
        check_onnx(model)


# ------------------------------------------------------------------------------------------------
# Whole nets
# ------------------------------------------------------------------------------------------------
WHOLE_NETS = [
    ("bvlc_alexnet", MODELS / "bvlc_alexnet" / "deploy.prototxt", None),
    ("bvlc_reference_caffenet", MODELS / "bvlc_reference_caffenet" / "deploy.prototxt", None),
    ("bvlc_googlenet", MODELS / "bvlc_googlenet" / "deploy.prototxt", None),
    ("mnist_lenet", MODELS / "mnist" / "lenet.prototxt", None),
    ("cifar10_quick", MODELS / "cifar10" / "cifar10_quick.prototxt", None),
    ("cifar10_full", MODELS / "cifar10" / "cifar10_full_train_test.prototxt", (1, 3, 32, 32)),
    ("cifar10_full_sigmoid_bn", MODELS / "cifar10" / "cifar10_full_sigmoid_train_test_bn.prototxt", (1, 3, 32, 32)),
    ("bundled_alexnet", ROOT / "prototxt" / "alexnet.prototxt", None),
    ("bundled_caffenet", ROOT / "prototxt" / "caffenet.prototxt", None),
    ("bundled_alexnet_caffe2", ROOT / "prototxt" / "alexnet_caffe2.txt", None),
]


def _calibrate(net, seed: int) -> int:
    """As `convnet init` does (cli/weights_cmds.py calibrate), on inputs of the scale the test feeds."""
    import torch

    from convnet_io.torch_model.calibrate import calibrate_batchnorm

    data = seeded_inputs(net.graph, 1, seed)
    # Every input (the label too: the loss and accuracy layers run as well), data at the test's scale.
    feeds = {k: torch.from_numpy(data[k]) if k in data else torch.zeros(net.graph.shapes[k])
             for k in net.graph.inputs}
    n = calibrate_batchnorm(net.module, feeds)
    for node in net.graph.nodes:
        if node.type == "BatchNorm":
            net.module.layer(node.name).caffe_blobs()[2].data.fill_(1.0)
    return n


@pytest.mark.parametrize("name,path,shape", WHOLE_NETS, ids=[n[0] for n in WHOLE_NETS])
def test_whole_net_onnxruntime_matches_torch(name, path, shape):
    if not path.exists():
        pytest.skip(f"{path} is not present")
    net = convnet_io.load(path, input_shapes=shape, seed=3)
    if any(n.type == "BatchNorm" for n in net.graph.nodes):
        assert _calibrate(net, 11) > 0
    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    assert dims(model.graph.input[0])[0] == "N"
    session = make_session(mark_all_outputs(model, net.graph).SerializeToString(), "cpu")
    outs = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    view = inference_view(net.graph)
    computed = [t for n in view.nodes if not n.is_source for t in n.tops]
    assert set(computed) <= set(outs), sorted(set(computed) - set(outs))
    worst = {}
    for batch in (1, 7):
        feeds = {k: v for k, v in seeded_inputs(net.graph, batch, 100 + batch).items() if k in inputs}
        got = dict(zip(outs, session.run(outs, feeds)))
        want = net.run_values(feeds, outs)
        errs = {v: rel_err(got[v], want[v]) for v in outs}
        for v in outs:
            assert got[v].shape == want[v].shape and got[v].shape[0] == batch, (v, got[v].shape, want[v].shape)
            assert np.isfinite(want[v]).all(), v
        bad = {v: e for v, e in errs.items() if not e <= NET_TOL}
        assert not bad, f"{name} at batch {batch}: {bad}"
        worst[batch] = max(errs.values())
        # Sane activations: the output is not degenerate, calibrated BatchNorm outputs are of order one.
        final = got[view.outputs[0]]
        assert final.std() > 0, f"{name}: constant output"
        for node in view.nodes:
            if node.type == "BatchNorm":
                assert 0.2 < got[node.tops[0]].std() < 5, (node.name, got[node.tops[0]].std())
    print(f"\n{name}: worst rel err {worst[1]:.2e} at batch 1, {worst[7]:.2e} at batch 7 "
          f"({len(outs)} values)")
