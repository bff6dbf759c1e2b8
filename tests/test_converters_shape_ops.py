"""Shape and element-wise converters against float64 NumPy versions of Caffe's formulas.

Every expected value is computed here from the inputs (and, for learnable layers, the blobs the
helper filled), following the loops in Caffe's ``src/caffe/layers/<name>_layer.cpp``.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import input_layer, rel_err, run_single

TOL = 1e-5


def rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(np.float64)


def layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def check(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert rel_err(actual, expected) <= TOL


# -- Concat -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_concat(axis):
    shapes = [(2, 3, 4, 5), (2, 3, 4, 5), (2, 3, 4, 5)]
    sizes = [1, 4, 2]
    ax = axis % 4
    feeds = {}
    text = ""
    for i, (shape, n) in enumerate(zip(shapes, sizes)):
        s = list(shape)
        s[ax] = n
        feeds[f"in{i}"] = rand(s, i)
        text += input_layer(s, f"in{i}")
    text += layer("cat", "Concat", list(feeds), ["out"], f"concat_param {{ axis: {axis} }}")
    _, _, out = run_single(text, feeds)
    expected = np.concatenate([feeds[k] for k in feeds], axis=ax)
    check(out["out"], expected)


def test_concat_legacy_concat_dim():
    a, b = rand((2, 3, 4), 1), rand((2, 5, 4), 2)
    text = (input_layer(a.shape, "a") + input_layer(b.shape, "b")
            + layer("cat", "Concat", ["a", "b"], ["out"], "concat_param { concat_dim: 1 }"))
    _, _, out = run_single(text, {"a": a, "b": b})
    check(out["out"], np.concatenate([a, b], axis=1))


# -- Slice / Split ----------------------------------------------------------------------------------
def test_slice_with_slice_points():
    x = rand((2, 7, 3, 4))
    text = input_layer(x.shape) + layer("sl", "Slice", ["data"], ["s0", "s1", "s2"],
                                        "slice_param { axis: 1 slice_point: 2 slice_point: 3 }")
    _, _, out = run_single(text, {"data": x})
    check(out["s0"], x[:, 0:2])
    check(out["s1"], x[:, 2:3])
    check(out["s2"], x[:, 3:7])


def test_slice_equal_split_on_last_axis():
    x = rand((2, 3, 4, 6))
    text = input_layer(x.shape) + layer("sl", "Slice", ["data"], ["s0", "s1", "s2"],
                                        "slice_param { axis: -1 }")
    _, module, out = run_single(text, {"data": x})
    for i in range(3):
        check(out[f"s{i}"], x[..., 2 * i:2 * i + 2])
    assert "sizes=[2, 2, 2]" in repr(module.layer("sl"))


def test_split_copies_to_every_top():
    x = rand((2, 3, 4))
    text = input_layer(x.shape) + layer("sp", "Split", ["data"], ["a", "b", "c"])
    _, _, out = run_single(text, {"data": x})
    for t in "abc":
        check(out[t], x)


# -- Flatten / Reshape ------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,end_axis,shape", [
    (1, -1, (2, 60)),
    (1, 2, (2, 12, 5)),
    (2, -1, (2, 3, 20)),
    (0, 1, (6, 4, 5)),
    (-2, -1, (2, 3, 20)),
])
def test_flatten(axis, end_axis, shape):
    x = rand((2, 3, 4, 5))
    text = input_layer(x.shape) + layer("fl", "Flatten", ["data"], ["out"],
                                        f"flatten_param {{ axis: {axis} end_axis: {end_axis} }}")
    _, _, out = run_single(text, {"data": x})
    # Caffe's Flatten keeps the data in memory order: a C-order reshape.
    check(out["out"], x.reshape(shape))


@pytest.mark.parametrize("body,shape", [
    ("shape { dim: 0 dim: -1 dim: 4 }", (2, 15, 4)),
    ("shape { dim: -1 }", (120,)),
    ("shape { dim: 0 dim: 0 dim: 2 dim: -1 }", (2, 3, 2, 10)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: 1 } axis: 1 num_axes: 0", (2, 1, 3, 4, 5)),
    ("shape { dim: -1 } axis: -3", (2, 3, 20)),
])
def test_reshape(body, shape):
    x = rand((2, 3, 4, 5))
    text = input_layer(x.shape) + layer("rs", "Reshape", ["data"], ["out"], f"reshape_param {{ {body} }}")
    _, _, out = run_single(text, {"data": x})
    check(out["out"], x.reshape(shape))


# -- Crop -------------------------------------------------------------------------------------------
def crop_ref(x, ref_shape, axis, offsets):
    """Caffe's rule: axes before ``axis`` whole; from ``axis`` on, ref's size at the offset (one
    offset for all axes, one per axis, or 0)."""
    index = []
    for i in range(x.ndim):
        if i < axis:
            index.append(slice(None))
            continue
        o = offsets[0] if len(offsets) == 1 else (offsets[i - axis] if offsets else 0)
        index.append(slice(o, o + ref_shape[i]))
    return x[tuple(index)]


@pytest.mark.parametrize("axis,offsets", [
    (2, [1]),         # one offset for both spatial axes
    (1, [1, 2, 3]),   # one per axis
    (2, []),          # default 0
    (-2, [2, 0]),
])
def test_crop(axis, offsets):
    x = rand((2, 5, 7, 8))
    ref_shape = (1, 3, 4, 5)
    ref = rand(ref_shape, 3)
    body = "crop_param { axis: %d %s }" % (axis, " ".join(f"offset: {o}" for o in offsets))
    text = (input_layer(x.shape) + input_layer(ref_shape, "ref")
            + layer("crop", "Crop", ["data", "ref"], ["out"], body))
    _, _, out = run_single(text, {"data": x, "ref": ref})
    check(out["out"], crop_ref(x, ref_shape, axis % 4, offsets))


# -- Tile -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,tiles", [(1, 3), (2, 2), (0, 2), (-1, 4)])
def test_tile(axis, tiles):
    x = rand((2, 3, 4))
    text = input_layer(x.shape) + layer("tile", "Tile", ["data"], ["out"],
                                        f"tile_param {{ axis: {axis} tiles: {tiles} }}")
    _, _, out = run_single(text, {"data": x})
    ax = axis % 3
    # Caffe copies the whole block x[i, ..., :] (axes ax..end) ``tiles`` times per outer index.
    outer = int(np.prod(x.shape[:ax]))
    block = x.reshape(outer, -1)
    rows = [np.concatenate([block[i]] * tiles) for i in range(outer)]
    shape = list(x.shape)
    shape[ax] *= tiles
    check(out["out"], np.stack(rows).reshape(shape))


# -- Reduction --------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["SUM", "ASUM", "SUMSQ", "MEAN"])
@pytest.mark.parametrize("axis,coeff", [(0, 1.0), (1, 2.0), (2, -0.5), (-1, 1.0)])
def test_reduction(op, axis, coeff):
    x = rand((2, 3, 4, 5))
    text = input_layer(x.shape) + layer("red", "Reduction", ["data"], ["out"],
                                        f"reduction_param {{ operation: {op} axis: {axis} coeff: {coeff} }}")
    _, module, out = run_single(text, {"data": x})
    ax = axis % 4
    num = int(np.prod(x.shape[:ax]))
    flat = x.reshape(num, -1)
    dim = flat.shape[1]
    per = {"SUM": flat.sum(1), "ASUM": np.abs(flat).sum(1), "SUMSQ": (flat * flat).sum(1),
           "MEAN": flat.sum(1)}[op]
    c = coeff / dim if op == "MEAN" else coeff
    check(out["out"], (per * c).reshape(x.shape[:ax]))
    assert op in repr(module.layer("red"))


# -- ArgMax -----------------------------------------------------------------------------------------
def caffe_top_k(values, k):
    """std::partial_sort with std::greater on (value, index) pairs: Python's tuple order, reversed."""
    pairs = sorted(((float(v), j) for j, v in enumerate(values)), reverse=True)
    return pairs[:k]


def argmax_ref(x, top_k, out_max_val, axis):
    if axis is None:
        n = x.shape[0]
        flat = x.reshape(n, -1)
        rows = []
        for i in range(n):
            best = caffe_top_k(flat[i], top_k)
            chans = [[j for _, j in best]]
            if out_max_val:
                chans.append([v for v, _ in best])
            rows.append(chans)
        out = np.array(rows, dtype=np.float64)
        return out.reshape(n, len(rows[0]), top_k, *([1] * max(x.ndim - 3, 0)))
    moved = np.moveaxis(x, axis, -1)
    res = np.zeros(moved.shape[:-1] + (top_k,))
    for idx in np.ndindex(*moved.shape[:-1]):
        best = caffe_top_k(moved[idx], top_k)
        res[idx] = [v for v, _ in best] if out_max_val else [j for _, j in best]
    return np.moveaxis(res, -1, axis)


def tied(shape, seed=0):
    """Small integers: many equal values, so the tie order matters."""
    return np.random.default_rng(seed).integers(0, 4, size=shape).astype(np.float64)


@pytest.mark.parametrize("top_k,out_max_val,axis", [
    (1, False, None), (1, True, None), (3, False, None), (3, True, None),
    (1, False, 1), (2, False, 1), (2, True, 1), (3, False, 3), (2, True, -2), (1, True, 0),
])
@pytest.mark.parametrize("values", ["random", "tied"])
def test_argmax(top_k, out_max_val, axis, values):
    shape = (2, 4, 3, 5)
    x = rand(shape, 5) if values == "random" else tied(shape, 5)
    body = f"argmax_param {{ top_k: {top_k} out_max_val: {str(out_max_val).lower()}"
    body += "" if axis is None else f" axis: {axis}"
    body += " }"
    text = input_layer(shape) + layer("am", "ArgMax", ["data"], ["out"], body)
    _, _, out = run_single(text, {"data": x})
    check(out["out"], argmax_ref(x, top_k, out_max_val, None if axis is None else axis % 4))


def test_argmax_ties_prefer_the_larger_index():
    x = np.array([[3.0, 7.0, 1.0, 7.0, 7.0, 2.0]])
    text = input_layer(x.shape) + layer("am", "ArgMax", ["data"], ["out"],
                                        "argmax_param { top_k: 4 out_max_val: true }")
    _, _, out = run_single(text, {"data": x})
    # Pairs (7,4) > (7,3) > (7,1) > (3,0) under std::greater.
    check(out["out"], np.array([[[4, 3, 1, 0], [7, 7, 7, 3]]], dtype=np.float64))


def test_argmax_2d_input_gets_three_axes():
    x = rand((3, 10), 2)
    text = input_layer(x.shape) + layer("am", "ArgMax", ["data"], ["out"], "argmax_param { top_k: 2 }")
    _, _, out = run_single(text, {"data": x})
    check(out["out"], argmax_ref(x, 2, False, None))
    assert out["out"].shape == (3, 1, 2)


# -- Eltwise ----------------------------------------------------------------------------------------
def eltwise_net(op, n, coeffs=(), shape=(2, 3, 4, 5)):
    feeds = {f"in{i}": rand(shape, 10 + i) for i in range(n)}
    body = f"eltwise_param {{ operation: {op} " + " ".join(f"coeff: {c}" for c in coeffs) + " }"
    text = "".join(input_layer(shape, k) for k in feeds)
    text += layer("elt", "Eltwise", list(feeds), ["out"], body)
    return text, feeds


@pytest.mark.parametrize("coeffs", [(1, -1), (0.5, 2), (), (1, 1, 1), (0.25, -3, 1.5)])
def test_eltwise_sum(coeffs):
    n = len(coeffs) or 2
    text, feeds = eltwise_net("SUM", n, coeffs)
    _, _, out = run_single(text, feeds)
    cs = coeffs or (1.0,) * n
    expected = np.zeros_like(feeds["in0"])
    for c, k in zip(cs, feeds):
        expected += c * feeds[k]
    check(out["out"], expected)


@pytest.mark.parametrize("n", [2, 3])
def test_eltwise_prod(n):
    text, feeds = eltwise_net("PROD", n)
    _, _, out = run_single(text, feeds)
    expected = np.ones_like(feeds["in0"])
    for k in feeds:
        expected *= feeds[k]
    check(out["out"], expected)


@pytest.mark.parametrize("n", [2, 3])
def test_eltwise_max(n):
    text, feeds = eltwise_net("MAX", n)
    _, _, out = run_single(text, feeds)
    expected = feeds["in0"].copy()
    for k in list(feeds)[1:]:
        expected = np.where(feeds[k] > expected, feeds[k], expected)
    check(out["out"], expected)


def test_eltwise_default_operation_is_sum():
    shape = (2, 3)
    a, b = rand(shape, 1), rand(shape, 2)
    text = input_layer(shape, "a") + input_layer(shape, "b") + layer("elt", "Eltwise", ["a", "b"], ["out"])
    _, _, out = run_single(text, {"a": a, "b": b})
    check(out["out"], a + b)


# -- Softmax ----------------------------------------------------------------------------------------
def softmax_ref(x, axis):
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("axis", [1, 2, -1, 0])
def test_softmax(axis):
    x = rand((2, 3, 4, 5)) * 4
    body = f"softmax_param {{ axis: {axis} }}"
    text = input_layer(x.shape) + layer("sm", "Softmax", ["data"], ["out"], body)
    _, module, out = run_single(text, {"data": x})
    check(out["out"], softmax_ref(x, axis))
    assert f"axis={axis % 4}" in repr(module.layer("sm"))


def test_softmax_default_axis_2d():
    x = rand((4, 10)) * 10
    text = input_layer(x.shape) + layer("sm", "Softmax", ["data"], ["out"])
    _, _, out = run_single(text, {"data": x})
    check(out["out"], softmax_ref(x, 1))


# -- Silence / Parameter / Embed --------------------------------------------------------------------
def test_silence_has_no_tops():
    x = rand((2, 3))
    text = (input_layer(x.shape) + layer("sp", "Split", ["data"], ["a", "b"])
            + layer("quiet", "Silence", ["a"], []) + layer("sm", "Softmax", ["b"], ["out"]))
    graph, module, out = run_single(text, {"data": x})
    assert module.layer("quiet")(*[]) == ()
    assert graph.outputs == ["out"]
    check(out["out"], softmax_ref(x, 1))


def test_parameter_outputs_its_blob():
    text = layer("p", "Parameter", [], ["w"], "parameter_param { shape { dim: 3 dim: 4 } }")
    _, module, out = run_single(text, {})
    blobs = module.caffe_blobs()["p"]
    assert len(blobs) == 1 and tuple(blobs[0].shape) == (3, 4)
    check(out["w"], blobs[0].detach().double().numpy())
    assert np.abs(out["w"]).max() > 0  # the helper filled it with noise


def test_parameter_feeds_eltwise():
    x = rand((3, 4))
    text = (input_layer(x.shape) + layer("p", "Parameter", [], ["w"], "parameter_param { shape { dim: 3 dim: 4 } }")
            + layer("add", "Eltwise", ["data", "w"], ["out"]))
    _, module, out = run_single(text, {"data": x})
    w = module.caffe_blobs()["p"][0].detach().double().numpy()
    check(out["out"], x + w)


@pytest.mark.parametrize("bias", [True, False])
def test_embed(bias):
    idx = np.random.default_rng(4).integers(0, 7, size=(3, 5)).astype(np.float64)
    body = f"embed_param {{ num_output: 4 input_dim: 7 bias_term: {str(bias).lower()} }}"
    text = input_layer(idx.shape) + layer("emb", "Embed", ["data"], ["out"], body)
    _, module, out = run_single(text, {"data": idx})
    blobs = [b.detach().double().numpy() for b in module.caffe_blobs()["emb"]]
    assert blobs[0].shape == (7, 4) and len(blobs) == (2 if bias else 1)
    expected = np.zeros((3, 5, 4))
    for i in range(3):
        for j in range(5):
            expected[i, j] = blobs[0][int(idx[i, j])] + (blobs[1] if bias else 0.0)
    check(out["out"], expected)
    assert "input_dim=7, num_output=4" in repr(module.layer("emb"))


def test_embed_rejects_out_of_range_index():
    idx = np.array([[0.0, 9.0]])
    text = input_layer(idx.shape) + layer("emb", "Embed", ["data"], ["out"],
                                          "embed_param { num_output: 2 input_dim: 3 }")
    with pytest.raises((IndexError, RuntimeError)):
        run_single(text, {"data": idx})
