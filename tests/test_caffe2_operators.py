"""Caffe2 operators as stored NetDefs: every legacy_pad mode against a float64 NumPy transcription
of Caffe2's ComputeSizeAndPad (caffe2/operators/conv_pool_op_base.h) and of its max pooling, NHWC
nets against NumPy NHWC references, and the shape/elementwise operators against NumPy."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from convnet_io.api import Net
from convnet_io.api.loading import load_caffe2
from convnet_io.caffe2.proto import caffe2_pb2
from convnet_io.errors import ConvnetError

NOTSET, VALID, SAME, CAFFE_LEGACY_POOLING = 0, 1, 2, 3


# -- NumPy transcriptions of Caffe2 -----------------------------------------------------------------


def c2_size_and_pad(in_size, kernel, stride, pad_head, pad_tail, legacy):
    """ComputeSizeAndPad for one axis (dilation 1): (pad_head, pad_tail, out_size)."""
    if legacy == NOTSET:
        return pad_head, pad_tail, int((in_size + pad_head + pad_tail - kernel) / stride + 1)
    if legacy == VALID:
        return 0, 0, (in_size - kernel) // stride + 1
    if legacy == SAME:
        target = (in_size + stride - 1) // stride
        needed = (target - 1) * stride + kernel - in_size
        head = int(needed / 2)  # CAFFE2_PAD_HEAD_MORE is off
        return head, needed - head, (in_size + needed - kernel) // stride + 1
    out = math.ceil((in_size + pad_head * 2 - kernel) / stride + 1)
    if pad_head > 0 and (out - 1) * stride >= in_size + pad_head:
        out -= 1
    standard = int((in_size + pad_head * 2 - kernel) / stride + 1)
    return pad_head, pad_head + stride * (out - standard), out


def c2_max_pool(x, kernel, stride, pads):
    """Caffe2's MaxPool (NCHW) over explicit (top, left, bottom, right) pads: padding never wins; a
    window wholly in the padding keeps the start value, the float's lowest."""
    n, c, h, w = x.shape
    (pt, pb, oh), (pl, pr, ow) = pads
    y = np.full((n, c, oh, ow), float(np.finfo(np.float32).min))
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * stride - pt, j * stride - pl
            he, we = min(hs + kernel, h + pb), min(ws + kernel, w + pr)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            if he > hs and we > ws:
                y[:, :, i, j] = x[:, :, hs:he, ws:we].max(axis=(2, 3))
    return y


# -- NetDef pairs built by the test ----------------------------------------------------------------


def arg(name, value):
    a = caffe2_pb2.Argument(name=name)
    if isinstance(value, str):
        a.s = value.encode()
    elif isinstance(value, float):
        a.f = value
    elif isinstance(value, int):
        a.i = value
    elif all(isinstance(v, int) for v in value):
        a.ints.extend(value)
    else:
        a.floats.extend(value)
    return a


def op(type_, inputs, outputs, **args):
    return caffe2_pb2.OperatorDef(type=type_, input=inputs, output=outputs, arg=[arg(k, v) for k, v in args.items()])


def write_pair(folder, ops, params, inputs):
    """predict_net.pb / init_net.pb / value_info.json as Caffe2 writes them (protobuf, unpacked floats)."""
    folder.mkdir(parents=True, exist_ok=True)
    predict = caffe2_pb2.NetDef(name="t", op=ops, external_input=[*inputs, *params])
    init = caffe2_pb2.NetDef(name="t_init")
    for name, value in params.items():
        init.op.append(op("GivenTensorFill", [], [name], shape=list(value.shape),
                          values=[float(v) for v in value.ravel()]))
    for name, shape in inputs.items():
        init.op.append(op("GivenTensorFill", [], [name], shape=list(shape), values=[0.0] * int(np.prod(shape))))
    (folder / "predict_net.pb").write_bytes(predict.SerializeToString())
    (folder / "init_net.pb").write_bytes(init.SerializeToString())
    (folder / "value_info.json").write_text(json.dumps({k: [1, list(v)] for k, v in inputs.items()}))
    return folder


def run(folder, x, blobs):
    from convnet_io.torch_model import CaffeModule

    graph, weights = load_caffe2(folder)
    net = Net(graph, CaffeModule(graph), backend="torch")
    net.set_blobs(weights)
    return graph, net.forward({graph.inputs[0]: x.astype(np.float32)}, blobs=blobs)


# -- legacy_pad: every mode ------------------------------------------------------------------------

CASES = [(size, kernel, stride, pad) for size in (5, 6, 7, 8, 11) for kernel in (2, 3) for stride in (1, 2, 3)
         for pad in (0, 1) if pad < kernel]


@pytest.mark.parametrize("legacy", [NOTSET, VALID, SAME, CAFFE_LEGACY_POOLING],
                         ids=["NOTSET", "VALID", "SAME", "CAFFE_LEGACY_POOLING"])
def test_max_pool_every_legacy_pad_against_caffe2_rules(legacy, tmp_path):
    rng = np.random.default_rng(legacy)
    done = refused = 0
    for i, (size, kernel, stride, pad) in enumerate(CASES):
        pt, pb, oh = c2_size_and_pad(size, kernel, stride, pad, pad, legacy)
        pl, pr, ow = c2_size_and_pad(size + 1, kernel, stride, pad, pad, legacy)
        x = rng.standard_normal((1, 2, size, size + 1))
        folder = write_pair(tmp_path / str(i), [op("MaxPool", ["data"], ["y"], kernel=kernel, stride=stride, pad=pad,
                                                   legacy_pad=legacy, order="NCHW")], {}, {"data": x.shape})
        try:
            graph, out = run(folder, x, ["y"])
        except ConvnetError as e:  # only SAME's odd tails that no Caffe rounding reproduces
            assert legacy == SAME and "legacy_pad SAME" in str(e), (size, kernel, stride, pad, e)
            refused += 1
            continue
        assert graph.shapes["y"] == (1, 2, oh, ow), (size, kernel, stride, pad)
        ref = c2_max_pool(x, kernel, stride, ((pt, pb, oh), (pl, pr, ow)))
        np.testing.assert_allclose(out["y"], ref, rtol=1e-6, atol=1e-6)
        done += 1
    assert done >= len(CASES) * (2 / 3 if legacy == SAME else 1)


@pytest.mark.parametrize("size", [6, 7, 9])
def test_conv_same_and_valid(size, tmp_path):
    """Conv with SAME at stride 1 (odd kernel: symmetric) and VALID, against a NumPy convolution."""
    rng = np.random.default_rng(size)
    x = rng.standard_normal((1, 2, size, size))
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    folder = write_pair(tmp_path, [op("Conv", ["data", "w", "b"], ["same"], kernel=3, legacy_pad=SAME, pad=5),
                                   op("Conv", ["data", "w", "b"], ["valid"], kernel=3, legacy_pad=VALID, pad=5)],
                        {"w": w, "b": b}, {"data": x.shape})
    _graph, out = run(folder, x, ["same", "valid"])
    for name, legacy in (("same", SAME), ("valid", VALID)):
        pt, pb, oh = c2_size_and_pad(size, 3, 1, 5, 5, legacy)
        xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pt, pb)))
        ref = np.zeros((1, 3, oh, oh))
        for i in range(oh):
            for j in range(oh):
                ref[0, :, i, j] = np.einsum("chw,ochw->o", xp[0, :, i:i + 3, j:j + 3], w) + b
        np.testing.assert_allclose(out[name], ref, rtol=1e-4, atol=1e-4)


# -- NHWC ------------------------------------------------------------------------------------------


def test_nhwc_conv_pool_bn_concat_against_numpy(tmp_path):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 7, 6, 3))  # N, H, W, C
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)  # M, kH, kW, C: Caffe2's NHWC filter
    b = rng.standard_normal(4).astype(np.float32)
    s, sh = rng.random(4).astype(np.float32) + 0.5, rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.random(4).astype(np.float32) + 0.5
    ops = [op("Conv", ["data", "w", "b"], ["c"], kernel=3, pad=1, order="NHWC"),
           op("Relu", ["c"], ["c"]),
           op("MaxPool", ["c"], ["p"], kernel=3, stride=2, legacy_pad=CAFFE_LEGACY_POOLING, order="NHWC"),
           op("SpatialBN", ["p", "s", "sh", "mean", "var"], ["p"], is_test=1, epsilon=1e-5, order="NHWC"),
           op("Concat", ["p", "p"], ["cat", "cat_info"], order="NHWC")]
    folder = write_pair(tmp_path, ops, {"w": w, "b": b, "s": s, "sh": sh, "mean": mean, "var": var},
                        {"data": x.shape})
    graph, out = run(folder, x, ["c", "cat"])
    # float64 NHWC reference
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((2, 7, 6, 4))
    for i in range(7):
        for j in range(6):
            conv[:, i, j, :] = np.einsum("nhwc,mhwc->nm", xp[:, i:i + 3, j:j + 3, :], w) + b
    relu = np.maximum(conv, 0)
    pt, pb, oh = c2_size_and_pad(7, 3, 2, 0, 0, CAFFE_LEGACY_POOLING)
    pl, pr, ow = c2_size_and_pad(6, 3, 2, 0, 0, CAFFE_LEGACY_POOLING)
    pool = c2_max_pool(relu.transpose(0, 3, 1, 2), 3, 2, ((pt, pb, oh), (pl, pr, ow))).transpose(0, 2, 3, 1)
    bn = (pool - mean) / np.sqrt(var + 1e-5) * s + sh
    assert graph.shapes[graph.final_value("cat")] == (2, oh, ow, 8)
    np.testing.assert_allclose(out["c"], relu, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out["cat"], np.concatenate([bn, bn], axis=3), rtol=1e-4, atol=1e-4)


# -- shape and elementwise operators ---------------------------------------------------------------


def test_shape_and_elementwise_operators_against_numpy(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 1, 3))
    wt = rng.standard_normal((12, 5)).astype(np.float32)  # FCTransposed: (K, N)
    bt = rng.standard_normal(5).astype(np.float32)
    ops = [op("Transpose", ["data"], ["t"], axes=[0, 3, 1, 2]),
           op("Squeeze", ["t"], ["sq"], dims=[3]),
           op("ExpandDims", ["sq"], ["ex"], dims=[1, 2]),
           op("ChannelShuffle", ["data"], ["cs"], group=2),
           op("Clip", ["cs"], ["cl"], min=-0.5, max=0.7),
           op("Scale", ["cl"], ["sc"], scale=2.5),
           op("StopGradient", ["sc"], ["sg"]),
           op("Max", ["sg", "data"], ["mx"]),
           op("FlattenToVec", ["mx"], ["fv"]),
           op("FCTransposed", ["mx", "wt", "bt"], ["fct"]),
           op("Reshape", ["fct"], ["rs", "old_shape"], shape=[0, 5, 1]),
           op("Copy", ["rs"], ["cp"]),
           op("Alias", ["cp"], ["al"])]
    folder = write_pair(tmp_path, ops, {"wt": wt, "bt": bt}, {"data": x.shape})
    _graph, out = run(folder, x, ["t", "sq", "ex", "cs", "cl", "sc", "mx", "fv", "fct", "rs", "al"])
    t = x.transpose(0, 3, 1, 2)
    cs = x.reshape(2, 2, 2, 1, 3).transpose(0, 2, 1, 3, 4).reshape(x.shape)
    mx = np.maximum(np.clip(cs, -0.5, 0.7) * 2.5, x)
    fct = mx.reshape(2, -1) @ wt + bt
    expect = {"t": t, "sq": t[:, :, :, 0], "ex": t[:, None, None, :, :, 0], "cs": cs,
              "cl": np.clip(cs, -0.5, 0.7), "sc": np.clip(cs, -0.5, 0.7) * 2.5, "mx": mx, "fv": mx.ravel(),
              "fct": fct, "rs": fct.reshape(2, 5, 1), "al": fct.reshape(2, 5, 1)}
    for name, ref in expect.items():
        assert out[name].shape == ref.shape, name
        np.testing.assert_allclose(out[name], ref, rtol=1e-5, atol=1e-5, err_msg=name)


def test_image_input_and_reshape_from_an_int_fill(tmp_path):
    x = np.arange(2 * 3 * 4 * 4, dtype=np.float64).reshape(2, 3, 4, 4)
    folder = tmp_path / "m"
    write_pair(folder, [op("ImageInput", ["reader"], ["data", "label"], batch_size=2, crop=4),
                        op("Reshape", ["data", "new_shape"], ["r", "old"])], {}, {})
    init = caffe2_pb2.NetDef.FromString((folder / "init_net.pb").read_bytes())
    init.op.append(op("GivenTensorInt64Fill", [], ["new_shape"], shape=[2], values=[2, -1]))
    (folder / "init_net.pb").write_bytes(init.SerializeToString())
    (folder / "value_info.json").unlink()
    graph, out = run(folder, x, ["r"])
    assert graph.inputs == ["data"] and graph.shapes["data"] == (2, 3, 4, 4)
    np.testing.assert_array_equal(out["r"], x.reshape(2, -1))


def test_unsupported_forms_are_named(tmp_path):
    folder = write_pair(tmp_path, [op("Relu", ["data"], ["a"]),
                                   op("Conv", ["a", "w"], ["c"], kernel=2, legacy_pad=SAME)],
                        {"w": np.ones((1, 1, 2, 2), np.float32)}, {"data": (1, 1, 4, 4)})
    with pytest.raises(ConvnetError, match=r"op 2 of 2 \(Conv\).*SAME pads an input of size 4 by 0 and 1"):
        load_caffe2(folder)


def test_average_pool_divisors_caffe_and_caffe2_share(tmp_path):
    """CAFFE_LEGACY_POOLING average pooling with padding: Caffe2 (count_include_pad) divides by the
    whole window; where no window reaches past the padding that is Caffe's divisor too (size 7),
    where one does (size 6) the operator is refused."""
    x = np.random.default_rng(1).standard_normal((1, 2, 7, 7))
    folder = write_pair(tmp_path / "a", [op("AveragePool", ["data"], ["y"], kernel=3, stride=2, pad=1, legacy_pad=3,
                                            count_include_pad=1)], {}, {"data": x.shape})
    graph, out = run(folder, x, ["y"])
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    ref = np.array([[[[xp[0, c, 2 * i:2 * i + 3, 2 * j:2 * j + 3].sum() / 9 for j in range(4)] for i in range(4)]
                     for c in range(2)]])
    np.testing.assert_allclose(out["y"], ref, rtol=1e-5, atol=1e-6)
    folder = write_pair(tmp_path / "b", [op("AveragePool", ["data"], ["y"], kernel=3, stride=2, pad=1, legacy_pad=3,
                                            count_include_pad=1)], {}, {"data": (1, 2, 6, 6)})
    with pytest.raises(ConvnetError, match="reaches past the padding"):
        load_caffe2(folder)
