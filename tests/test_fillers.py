"""Caffe's weight fillers (``include/caffe/filler.hpp``) and ``initial_blobs``.

Each test states Caffe's definition itself and checks ``convnet_io.graph.fillers.fill`` against it:
exactly where the filler is deterministic, statistically (tolerances of ``Z`` standard errors of
the estimate, from the sample size) where it is random.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from convnet_io.errors import LayerError
from convnet_io.graph.fillers import fill
from convnet_io.graph import Filler
from convnet_io.graph.initialize import default_filler, initial_blobs

from helpers import graph_from_text, input_layer

Z = 6.0  # standard errors allowed: a false failure is a ~1e-9 event


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# Caffe's fan rules (XavierFiller / MSRAFiller): fan_in = count / num (shape[0]),
# fan_out = count / channels (shape[1], or 1 for a 1-D blob: Blob::LegacyShape).
def caffe_n(shape, variance_norm: str) -> float:
    count = int(np.prod(shape))
    fan_in = count // shape[0]
    fan_out = count // (shape[1] if len(shape) > 1 else 1)
    if variance_norm == "AVERAGE":
        return (fan_in + fan_out) / 2.0
    if variance_norm == "FAN_OUT":
        return float(fan_out)
    return float(fan_in)


def assert_mean(x: np.ndarray, mean: float, std: float) -> None:
    """The sample mean of ``x`` is ``mean`` within Z standard errors (std / sqrt(n))."""
    x = np.asarray(x, dtype=np.float64).ravel()
    tol = Z * std / math.sqrt(x.size)
    assert abs(x.mean() - mean) <= tol, (x.mean(), mean, tol)


def assert_std(x: np.ndarray, std: float) -> None:
    """The sample std of normal ``x`` is ``std`` within Z standard errors (std / sqrt(2n))."""
    x = np.asarray(x, dtype=np.float64).ravel()
    tol = Z * std / math.sqrt(2 * x.size)
    assert abs(x.std() - std) <= tol, (x.std(), std, tol)


# -- constant ---------------------------------------------------------------------------------


def test_constant_fills_the_value_exactly():
    out = fill(Filler(type="constant", value=0.7), (3, 4, 5), rng())
    assert out.dtype == np.float32 and out.shape == (3, 4, 5)
    assert np.all(out == np.float32(0.7))


def test_default_filler_and_none_are_constant_zero():
    # FillerParameter's defaults: type "constant", value 0.
    assert np.all(fill(Filler(), (2, 3), rng()) == 0)
    out = fill(None, (4,), rng())
    assert out.shape == (4,) and np.all(out == 0)


# -- uniform ----------------------------------------------------------------------------------


def test_uniform_range_and_mean():
    lo, hi = -2.0, 3.0
    out = fill(Filler(type="uniform", min=lo, max=hi), (200, 500), rng(1))
    assert out.dtype == np.float32 and out.shape == (200, 500)
    assert out.min() >= lo and out.max() <= hi
    # It covers the range, not a narrower one.
    assert out.min() < lo + 0.01 and out.max() > hi - 0.01
    assert_mean(out, (lo + hi) / 2, (hi - lo) / math.sqrt(12))


def test_uniform_default_range_is_0_1():
    out = fill(Filler(type="uniform"), (10000,), rng(2))
    assert out.min() >= 0 and out.max() <= 1
    assert_mean(out, 0.5, 1 / math.sqrt(12))


# -- gaussian ---------------------------------------------------------------------------------


def test_gaussian_mean_and_std():
    out = fill(Filler(type="gaussian", mean=1.5, std=0.2), (100, 1000), rng(3))
    assert out.dtype == np.float32 and out.shape == (100, 1000)
    assert_mean(out, 1.5, 0.2)
    assert_std(out, 0.2)


def test_gaussian_defaults_are_standard_normal():
    out = fill(Filler(type="gaussian"), (50000,), rng(4))
    assert_mean(out, 0.0, 1.0)
    assert_std(out, 1.0)


@pytest.mark.parametrize("shape, sparse", [((50, 2000), 10), ((20, 10, 10, 10), 5), ((40, 3000), 0)])
def test_sparse_gaussian_keeps_sparse_over_num_outputs(shape, sparse):
    # GaussianFiller: non_zero_probability = sparse / num_outputs, num_outputs = shape(0).
    out = fill(Filler(type="gaussian", std=1.0, sparse=sparse), shape, rng(5))
    p = sparse / shape[0]
    n = out.size
    frac = np.count_nonzero(out) / n
    tol = Z * math.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(frac - p) <= tol, (frac, p, tol)
    # The kept values are still N(mean, std).
    kept = out[out != 0]
    if kept.size:
        assert_std(kept, 1.0)


def test_sparse_gaussian_on_a_1d_blob_as_caffe():
    # Caffe only needs num_axes >= 1 (CHECK_GE(blob->num_axes(), 1)); num_outputs = shape(0),
    # so a 1-D blob of 10000 values with sparse 2500 keeps each with probability 1/4.
    out = fill(Filler(type="gaussian", sparse=2500), (10000,), rng(6))
    p = 0.25
    frac = np.count_nonzero(out) / out.size
    assert abs(frac - p) <= Z * math.sqrt(p * (1 - p) / out.size)


# -- xavier / msra ----------------------------------------------------------------------------

SHAPES = [(64, 32, 3, 3), (300, 200), (16, 48, 5, 5)]
NORMS = ["FAN_IN", "FAN_OUT", "AVERAGE"]


def test_fan_rules_distinguish_the_modes():
    # The shapes are chosen so the three rules give three different n.
    for shape in SHAPES:
        assert len({caffe_n(shape, v) for v in NORMS}) == 3
    assert caffe_n((64, 32, 3, 3), "FAN_IN") == 32 * 9
    assert caffe_n((64, 32, 3, 3), "FAN_OUT") == 64 * 9
    assert caffe_n((64, 32, 3, 3), "AVERAGE") == (32 * 9 + 64 * 9) / 2


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", NORMS)
def test_xavier_is_uniform_within_sqrt_3_over_n(shape, norm):
    a = math.sqrt(3.0 / caffe_n(shape, norm))
    out = fill(Filler(type="xavier", variance_norm=norm), shape, rng(7)).astype(np.float64)
    assert out.shape == shape
    m = np.abs(out).max()
    assert m <= a * (1 + 1e-6), (m, a)
    assert m >= a * 0.99, (m, a)  # P(all |x| < 0.99a) = 0.99**count: negligible
    # Var U(-a, a) = a²/3; the sample variance's standard error is a² sqrt(4 / (45 n)).
    var = (out ** 2).mean()
    tol = Z * a * a * math.sqrt(4.0 / (45.0 * out.size))
    assert abs(var - a * a / 3) <= tol, (var, a * a / 3, tol)
    assert_mean(out, 0.0, a / math.sqrt(3))


def test_xavier_on_a_1d_blob_fan_out_is_count():
    # channels() of a 1-D blob is 1, so fan_out = count; fan_in = count / shape(0) = 1.
    out = fill(Filler(type="xavier", variance_norm="FAN_OUT"), (30000,), rng(8))
    a = math.sqrt(3.0 / 30000)
    assert np.abs(out).max() <= a * (1 + 1e-6)
    assert np.abs(out).max() >= 0.99 * a


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("norm", NORMS)
def test_msra_is_gaussian_with_std_sqrt_2_over_n(shape, norm):
    std = math.sqrt(2.0 / caffe_n(shape, norm))
    out = fill(Filler(type="msra", variance_norm=norm), shape, rng(9))
    assert out.shape == shape and out.dtype == np.float32
    assert_mean(out, 0.0, std)
    assert_std(out, std)


# -- bilinear ---------------------------------------------------------------------------------


def caffe_bilinear(shape) -> np.ndarray:
    """BilinearFiller::Fill, literally: f = ceil(w/2), c = (2f - 1 - f % 2) / (2f),
    data[i] = (1 - |x/f - c|) (1 - |y/f - c|), x = i % w, y = (i / w) % h."""
    num, ch, h, w = shape
    f = math.ceil(w / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    data = np.empty(num * ch * h * w, dtype=np.float32)
    for i in range(data.size):
        x = i % w
        y = (i // w) % h
        data[i] = (1 - abs(x / f - c)) * (1 - abs(y / f - c))
    return data.reshape(shape)


@pytest.mark.parametrize("shape", [(3, 1, 4, 4), (2, 2, 3, 3), (1, 1, 1, 1), (4, 1, 6, 6), (2, 3, 5, 5)])
def test_bilinear_is_caffes_kernel(shape):
    out = fill(Filler(type="bilinear"), shape, rng())
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, caffe_bilinear(shape), rtol=0, atol=1e-7)
    # Every (num, channel) slice holds the same kernel.
    k = out[0, 0]
    assert all(np.array_equal(out[n, c], k) for n in range(shape[0]) for c in range(shape[1]))


def test_bilinear_known_values():
    # k = 4 (factor 2 upsampling): f = 2, c = 0.75, 1-D taps 0.25 0.75 0.75 0.25.
    t4 = np.array([0.25, 0.75, 0.75, 0.25])
    np.testing.assert_allclose(fill(Filler(type="bilinear"), (1, 1, 4, 4), rng())[0, 0],
                               np.outer(t4, t4), atol=1e-7)
    # k = 3: f = 2, c = (4 - 1 - 0) / 4 = 0.75: taps 0.25 0.75 0.75 (Caffe's formula as written).
    t3 = np.array([0.25, 0.75, 0.75])
    np.testing.assert_allclose(fill(Filler(type="bilinear"), (2, 1, 3, 3), rng())[1, 0],
                               np.outer(t3, t3), atol=1e-7)


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (4, 4), (1, 1, 1, 3, 3)])
def test_bilinear_needs_a_square_4d_blob(shape):
    with pytest.raises(ValueError):
        fill(Filler(type="bilinear"), shape, rng())


# -- positive_unitball ------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 3, 2, 2), (7, 100), (3, 1)])
def test_positive_unitball_rows_sum_to_one(shape):
    out = fill(Filler(type="positive_unitball"), shape, rng(10))
    assert out.shape == shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    rows = out.reshape(shape[0], -1).astype(np.float64).sum(axis=1)
    np.testing.assert_allclose(rows, 1.0, rtol=1e-5)
    if out[0].size > 1:
        assert len(np.unique(out)) > 1  # random, not constant 1/dim


# -- reproducibility and errors ---------------------------------------------------------------

RANDOM = [
    Filler(type="uniform", min=-1, max=1),
    Filler(type="gaussian", std=0.5),
    Filler(type="gaussian", sparse=3),
    Filler(type="xavier"),
    Filler(type="msra", variance_norm="AVERAGE"),
    Filler(type="positive_unitball"),
]


@pytest.mark.parametrize("f", RANDOM, ids=lambda f: f.type + ("-sparse" if f.sparse >= 0 else ""))
def test_same_seed_same_values(f):
    shape = (8, 6, 3, 3)
    a = fill(f, shape, rng(42))
    b = fill(f, shape, rng(42))
    assert np.array_equal(a, b)
    c = fill(f, shape, rng(43))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("name", ["gausian", "Xavier", "", "orthogonal"])
def test_unknown_filler_is_a_value_error(name):
    with pytest.raises(ValueError, match="unknown filler"):
        fill(Filler(type=name), (2, 2), rng())


# -- initial_blobs ----------------------------------------------------------------------------

NET = (
    input_layer((2, 4, 12, 12))
    + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3
    weight_filler { type: "xavier" } bias_filler { type: "constant" value: 1 } } }
layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 128 kernel_size: 3 } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "ip" type: "InnerProduct" bottom: "conv2" top: "ip" inner_product_param { num_output: 50 } }
layer { name: "bias" type: "Bias" bottom: "ip" top: "ip2" }
"""
)


@pytest.fixture(scope="module")
def net_graph():
    return graph_from_text(NET)


def test_initial_blobs_shapes_follow_the_graph(net_graph):
    blobs = initial_blobs(net_graph, seed=0)
    expected = {n.name: [p.shape for p in n.params] for n in net_graph.nodes if n.params}
    assert {k: [b.shape for b in v] for k, v in blobs.items()} == expected
    assert set(blobs) == {"conv1", "prelu1", "conv2", "bn2", "scale2", "ip", "bias"}
    assert all(b.dtype == np.float32 for v in blobs.values() for b in v)


def test_initial_blobs_honour_prototxt_fillers(net_graph):
    blobs = initial_blobs(net_graph, seed=0)
    w, b = blobs["conv1"]
    assert w.shape == (8, 4, 3, 3)
    a = math.sqrt(3.0 / (4 * 9))  # xavier, fan_in = 4*3*3
    assert np.abs(w).max() <= a * (1 + 1e-6)
    assert np.all(b == 1.0)


def test_initial_blobs_default_fan_in_gaussian(net_graph):
    blobs = initial_blobs(net_graph, seed=0)
    w2 = blobs["conv2"][0]  # (128, 8, 3, 3), no filler: N(0, 2 / fan_in)
    assert w2.shape == (128, 8, 3, 3)
    assert_mean(w2, 0.0, math.sqrt(2.0 / 72))
    assert_std(w2, math.sqrt(2.0 / 72))
    ip = blobs["ip"][0]  # (50, 128*8*8)
    fan_in = 128 * 8 * 8
    assert ip.shape == (50, fan_in)
    assert_std(ip, math.sqrt(2.0 / fan_in))
    # Biases without a filler: small, not all equal.
    for bias in (blobs["conv2"][1], blobs["ip"][1]):
        assert np.abs(bias).max() <= 0.05 + 1e-7
        assert len(np.unique(bias)) > 1
    conv2 = next(n for n in net_graph.nodes if n.name == "conv2")
    f = default_filler(conv2.params[0], 0)
    assert f.type == "gaussian" and f.std == pytest.approx(math.sqrt(2.0 / 72))


def test_initial_blobs_layer_defaults(net_graph):
    blobs = initial_blobs(net_graph, seed=0)
    (slope,) = blobs["prelu1"]
    assert slope.shape == (8,) and np.all(slope == np.float32(0.25))  # Caffe's PReLU default
    scale, shift = blobs["scale2"]
    assert scale.shape == (128,) and np.all(scale == 1) and np.all(shift == 0)
    mean, var, factor = blobs["bn2"]
    assert mean.shape == var.shape == (128,) and factor.shape == (1,)
    assert not any(x.any() for x in (mean, var, factor))  # Caffe's BatchNorm starts at zeros
    (bias,) = blobs["bias"]
    assert bias.shape == (50,) and np.all(bias == 0)


def test_initial_blobs_seeded(net_graph):
    a = initial_blobs(net_graph, seed=5)
    b = initial_blobs(net_graph, seed=5)
    c = initial_blobs(net_graph, seed=6)
    assert all(np.array_equal(x, y) for k in a for x, y in zip(a[k], b[k]))
    assert not np.array_equal(a["conv2"][0], c["conv2"][0])
    assert not np.array_equal(a["conv1"][0], c["conv1"][0])


def test_initial_blobs_bad_filler_names_the_layer():
    g = graph_from_text(input_layer((1, 2, 5, 5)) + """
layer { name: "convx" type: "Convolution" bottom: "data" top: "c"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "gausian" } } }
""")
    with pytest.raises(LayerError) as e:
        initial_blobs(g)
    assert e.value.layer == "convx"
    assert "convx" in str(e.value) and "gausian" in str(e.value)
