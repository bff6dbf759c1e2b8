"""BatchNorm, Scale, Bias and MVN converters against float64 NumPy versions of Caffe's formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import input_layer, module_from_text, rel_err, run_single

TOL = 1e-5
SHAPE = (2, 3, 4, 5)


def data(shape=SHAPE, seed: int = 1, scale: float = 2.0, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale + offset).astype(np.float32)


def f32(a) -> np.ndarray:
    """The float64 value of what a float32 blob holds."""
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def run_with_blobs(text: str, inputs: dict, blobs: dict, phase: str = "TEST"):
    """Like run_single, but with the named layers' Caffe blobs set to the given arrays."""
    graph, module = module_from_text(text, phase)
    with torch.no_grad():
        for layer, arrays in blobs.items():
            targets = module.layer(layer).caffe_blobs()
            assert len(targets) == len(arrays)
            for t, a in zip(targets, arrays):
                t.copy_(torch.as_tensor(np.asarray(a, np.float32)).reshape(t.shape))
        feeds = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in inputs.items()}
        out = module.run(feeds, graph.values)
    return graph, module, {k: v.double().numpy() for k, v in out.items()}


def blobs_of(module, layer: str) -> list[np.ndarray]:
    return [b.detach().double().numpy().copy() for b in module.layer(layer).caffe_blobs()]


def channel(v: np.ndarray, ndim: int) -> np.ndarray:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


# -- BatchNorm -----------------------------------------------------------------------------------
def bn_net(params: str = "", shape=SHAPE) -> str:
    return input_layer(shape) + f'layer {{ name: "bn" type: "BatchNorm" bottom: "data" top: "y" {params} }}\n'


def bn_global_reference(x, mean, var, s, eps):
    inv = 0.0 if s == 0 else 1.0 / s
    return (x - channel(mean * inv, x.ndim)) / np.sqrt(channel(var * inv, x.ndim) + eps)


def stats_blobs(c: int, s: float, seed: int = 5):
    rng = np.random.default_rng(seed)
    return [f32(rng.standard_normal(c) * 3), f32(rng.uniform(0.5, 4.0, c) * s), f32([s])]


@pytest.mark.parametrize("s", [2.5, 1.0, 0.0])
def test_batch_norm_global_stats_with_scale_factor(s):
    x = data()
    blobs = stats_blobs(3, s)
    graph, module, out = run_with_blobs(bn_net(), {"data": x}, {"bn": blobs})
    expected = bn_global_reference(f32(x), blobs[0], blobs[1], s, 1e-5)
    assert rel_err(out["y"], expected) <= TOL
    # the stored blobs are not touched at TEST
    for got, want in zip(blobs_of(module, "bn"), blobs):
        assert np.array_equal(got, want)


def test_batch_norm_zero_scale_factor_means_zero_stats():
    x = data()
    blobs = stats_blobs(3, 0.0)
    blobs[1] = f32([1.0, 2.0, 3.0])  # ignored: 0 * variance
    graph, module, out = run_with_blobs(bn_net("batch_norm_param { eps: 0.001 }"), {"data": x}, {"bn": blobs})
    assert rel_err(out["y"], f32(x) / np.sqrt(np.float64(np.float32(0.001)))) <= TOL


def test_batch_norm_blobs_are_caffe_ordered_buffers():
    graph, module = module_from_text(bn_net())
    layer = module.layer("bn")
    blobs = layer.caffe_blobs()
    assert [tuple(b.shape) for b in blobs] == [(3,), (3,), (1,)]
    assert [p.shape for p in graph.node("bn").params] == [(3,), (3,), (1,)]
    state = layer.state_dict()
    assert len(state) == 3
    assert list(layer.parameters()) == []  # statistics are not trainable
    assert "use_global_stats=None" in repr(layer)


def bn_train_reference(x, mean0, var0, s0, maf, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    bm = x.mean(axis=axes)
    bv = ((x - channel(bm, x.ndim)) ** 2).mean(axis=axes)
    y = (x - channel(bm, x.ndim)) / np.sqrt(channel(bv, x.ndim) + eps)
    m = x.size // x.shape[1]
    corr = m / (m - 1) if m > 1 else 1.0
    return y, [maf * mean0 + bm, maf * var0 + corr * bv, np.array([s0 * maf + 1])]


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (6, 4), (3, 2, 7)])
def test_batch_norm_train_batch_stats_and_running_update(shape):
    x = data(shape, offset=1.5)
    c = shape[1]
    blobs = stats_blobs(c, 2.5)
    text = bn_net("batch_norm_param { moving_average_fraction: 0.9 eps: 0.0001 }", shape)
    graph, module, out = run_with_blobs(text, {"data": x}, {"bn": blobs}, phase="TRAIN")
    assert module.layer("bn").training
    y, new_blobs = bn_train_reference(f32(x), blobs[0], blobs[1], 2.5, f32(0.9)[()], f32(1e-4)[()])
    assert rel_err(out["y"], y) <= TOL
    got = blobs_of(module, "bn")
    for g, e in zip(got, new_blobs):
        assert rel_err(g, e) <= TOL
    assert got[2][0] == pytest.approx(2.5 * 0.9 + 1, rel=1e-6)  # 3.25


def test_batch_norm_train_updates_accumulate_over_forwards():
    x1, x2 = data(seed=1), data(seed=2, offset=-1.0)
    text = bn_net("batch_norm_param { moving_average_fraction: 0.5 }")
    graph, module = module_from_text(text, "TRAIN")
    with torch.no_grad():
        for b in module.layer("bn").caffe_blobs():
            b.zero_()
        for x in (x1, x2):
            module.run({"data": torch.as_tensor(x)}, ["y"])
    mean, var, s = np.zeros(3), np.zeros(3), 0.0
    for x in (x1, x2):
        _, (mean, var, sv) = bn_train_reference(f32(x), mean, var, s, 0.5, 1e-5)
        s = float(sv[0])
    got = blobs_of(module, "bn")
    assert rel_err(got[0], mean) <= TOL
    assert rel_err(got[1], var) <= TOL
    assert got[2][0] == pytest.approx(1.5)  # (0 * .5 + 1) * .5 + 1
    # ... and TEST with those statistics is the global-stats formula
    module.eval()
    with torch.no_grad():
        y = module.run({"data": torch.as_tensor(x1)}, ["y"])["y"].double().numpy()
    assert rel_err(y, bn_global_reference(f32(x1), got[0], got[1], got[2][0], 1e-5)) <= TOL


def test_batch_norm_use_global_stats_true_in_train():
    x = data()
    blobs = stats_blobs(3, 2.5)
    text = bn_net("batch_norm_param { use_global_stats: true }")
    graph, module, out = run_with_blobs(text, {"data": x}, {"bn": blobs}, phase="TRAIN")
    assert rel_err(out["y"], bn_global_reference(f32(x), blobs[0], blobs[1], 2.5, 1e-5)) <= TOL
    for got, want in zip(blobs_of(module, "bn"), blobs):
        assert np.array_equal(got, want)


def test_batch_norm_use_global_stats_false_in_test_uses_batch_stats():
    x = data()
    blobs = stats_blobs(3, 2.5)
    text = bn_net("batch_norm_param { use_global_stats: false }")
    graph, module, out = run_with_blobs(text, {"data": x}, {"bn": blobs})
    y, new_blobs = bn_train_reference(f32(x), blobs[0], blobs[1], 2.5, f32(0.999)[()], 1e-5)
    assert rel_err(out["y"], y) <= TOL
    for g, e in zip(blobs_of(module, "bn"), new_blobs):  # Caffe updates them whatever the phase
        assert rel_err(g, e) <= TOL


# -- Scale ---------------------------------------------------------------------------------------
def scale_net(params: str = "", shape=SHAPE, second=None) -> str:
    text = input_layer(shape)
    bottoms = 'bottom: "data"'
    if second is not None:
        text += input_layer(second, top="s")
        bottoms += ' bottom: "s"'
    return text + f'layer {{ name: "sc" type: "Scale" {bottoms} top: "y" {params} }}\n'


def at_axis(operand: np.ndarray, ndim: int, axis: int) -> np.ndarray:
    return operand.reshape((1,) * axis + operand.shape + (1,) * (ndim - axis - operand.ndim))


@pytest.mark.parametrize("axis,num_axes,blob_shape,caffe_axis", [
    (1, 1, (3,), 1),          # the default: per channel
    (0, 0, (), 0),            # a scalar
    (2, 0, (), 0),            # a scalar, whatever the axis
    (1, -1, (3, 4, 5), 1),    # to the end
    (2, 1, (4,), 2),          # along H
    (2, -1, (4, 5), 2),
    (0, 2, (2, 3), 0),
    (-2, 2, (4, 5), 2),       # a negative axis counts from the end
])
def test_scale_learnable(axis, num_axes, blob_shape, caffe_axis):
    x = data()
    text = scale_net(f"scale_param {{ axis: {axis} num_axes: {num_axes} }}")
    graph, module, out = run_single(text, {"data": x})
    (scale,) = blobs_of(module, "sc")
    assert scale.shape == blob_shape
    expected = f32(x) * at_axis(scale, 4, caffe_axis)
    assert rel_err(out["y"], expected) <= TOL


@pytest.mark.parametrize("num_axes,blob_shape,caffe_axis", [(1, (3,), 1), (0, (), 0), (-1, (3, 4, 5), 1)])
def test_scale_bias_term(num_axes, blob_shape, caffe_axis):
    x = data()
    text = scale_net(f"scale_param {{ num_axes: {num_axes} bias_term: true }}")
    graph, module, out = run_single(text, {"data": x})
    scale, bias = blobs_of(module, "sc")
    assert scale.shape == bias.shape == blob_shape
    expected = f32(x) * at_axis(scale, 4, caffe_axis) + at_axis(bias, 4, caffe_axis)
    assert rel_err(out["y"], expected) <= TOL
    assert "bias=True" in repr(module.layer("sc"))


@pytest.mark.parametrize("axis,second,caffe_axis", [
    (1, (3,), 1), (0, (2, 3), 0), (1, (3, 4, 5), 1), (2, (4,), 2), (-1, (5,), 3), (0, SHAPE, 0),
    (2, (), 0),  # a scalar second bottom: Caffe uses axis 0 whatever the axis says
])
def test_scale_second_bottom(axis, second, caffe_axis):
    x, s = data(), data(second, seed=7)
    graph, module, out = run_single(scale_net(f"scale_param {{ axis: {axis} }}", second=second),
                                    {"data": x, "s": s})
    assert module.layer("sc").caffe_blobs() == []
    assert graph.node("sc").params == []
    expected = f32(x) * at_axis(f32(s), 4, caffe_axis)
    assert rel_err(out["y"], expected) <= TOL


def test_scale_second_bottom_with_bias_term():
    x, s = data(), data((3, 4), seed=7)
    text = scale_net("scale_param { axis: 1 bias_term: true }", second=(3, 4))
    graph, module, out = run_single(text, {"data": x, "s": s})
    (bias,) = blobs_of(module, "sc")
    assert bias.shape == (3, 4)  # the bias takes the second bottom's shape
    expected = f32(x) * at_axis(f32(s), 4, 1) + at_axis(bias, 4, 1)
    assert rel_err(out["y"], expected) <= TOL


def test_scale_scalar_second_bottom_with_bias_term():
    x, s = data(), np.float32(-1.75)
    text = scale_net("scale_param { axis: 2 bias_term: true }", second=())
    graph, module, out = run_single(text, {"data": x, "s": s})
    (bias,) = blobs_of(module, "sc")
    assert bias.shape == ()
    assert rel_err(out["y"], f32(x) * -1.75 + bias) <= TOL


def test_scale_in_place_after_batch_norm():
    text = (input_layer(SHAPE)
            + 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "data" }\n'
            + 'layer { name: "sc" type: "Scale" bottom: "data" top: "data" scale_param { bias_term: true } }\n')
    x = data()
    stats = stats_blobs(3, 2.5)
    graph, module, out = run_with_blobs(text, {"data": x}, {"bn": stats})
    scale, bias = blobs_of(module, "sc")
    normed = bn_global_reference(f32(x), stats[0], stats[1], 2.5, 1e-5)
    assert np.array_equal(out["data"], f32(x))
    assert rel_err(out["data:1"], normed) <= TOL
    assert rel_err(out["data:2"], normed * channel(scale, 4) + channel(bias, 4)) <= TOL


# -- Bias ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis,num_axes,blob_shape,caffe_axis", [
    (1, 1, (3,), 1), (0, 0, (), 0), (1, -1, (3, 4, 5), 1), (2, 2, (4, 5), 2), (-3, 1, (3,), 1),
])
def test_bias_learnable(axis, num_axes, blob_shape, caffe_axis):
    x = data()
    text = input_layer(SHAPE) + ('layer { name: "b" type: "Bias" bottom: "data" top: "y" '
                                 f'bias_param {{ axis: {axis} num_axes: {num_axes} }} }}\n')
    graph, module, out = run_single(text, {"data": x})
    (bias,) = blobs_of(module, "b")
    assert bias.shape == blob_shape
    assert rel_err(out["y"], f32(x) + at_axis(bias, 4, caffe_axis)) <= TOL


@pytest.mark.parametrize("axis,second,caffe_axis", [(1, (3,), 1), (0, (2, 3, 4), 0), (2, (4, 5), 2), (3, (), 0)])
def test_bias_second_bottom(axis, second, caffe_axis):
    x, b = data(), data(second, seed=9)
    text = (input_layer(SHAPE) + input_layer(second, top="b")
            + f'layer {{ name: "bias" type: "Bias" bottom: "data" bottom: "b" top: "y" bias_param {{ axis: {axis} }} }}\n')
    graph, module, out = run_single(text, {"data": x, "b": b})
    assert module.layer("bias").caffe_blobs() == []
    assert rel_err(out["y"], f32(x) + at_axis(f32(b), 4, caffe_axis)) <= TOL


# -- MVN -----------------------------------------------------------------------------------------
def mvn_reference(x, normalize_variance=True, across_channels=False, eps=1e-9):
    rows = x.shape[0] if across_channels else x.shape[0] * x.shape[1]
    flat = x.reshape(rows, -1)
    mean = flat.mean(axis=1, keepdims=True)
    y = flat - mean
    if normalize_variance:
        var = (flat ** 2).mean(axis=1, keepdims=True) - mean ** 2  # E[x^2] - E[x]^2
        y = y / (np.sqrt(var) + eps)
    return y.reshape(x.shape)


@pytest.mark.parametrize("normalize_variance", [True, False])
@pytest.mark.parametrize("across_channels", [False, True])
@pytest.mark.parametrize("eps", [1e-9, 0.5])
def test_mvn(normalize_variance, across_channels, eps):
    x = data(offset=3.0)
    params = (f"mvn_param {{ normalize_variance: {str(normalize_variance).lower()} "
              f"across_channels: {str(across_channels).lower()} eps: {eps} }}")
    text = input_layer(SHAPE) + f'layer {{ name: "mvn" type: "MVN" bottom: "data" top: "y" {params} }}\n'
    graph, module, out = run_single(text, {"data": x})
    expected = mvn_reference(f32(x), normalize_variance, across_channels, f32(eps)[()])
    assert rel_err(out["y"], expected) <= TOL


def test_mvn_eps_is_added_to_the_standard_deviation():
    # x = +-1 per channel: std 1; Caffe gives x / (1 + eps), not x / sqrt(1 + eps).
    x = np.tile(np.array([1.0, -1.0], np.float32), 2 * 3 * 4 * 5 // 2).reshape(SHAPE)
    text = input_layer(SHAPE) + 'layer { name: "mvn" type: "MVN" bottom: "data" top: "y" mvn_param { eps: 0.5 } }\n'
    graph, module, out = run_single(text, {"data": x})
    assert rel_err(out["y"], f32(x) / 1.5) <= TOL


def test_batch_norm_train_backward_through_batch_stats():
    # Caffe's backward: dX = (dY - mean(dY) - mean(dY * Y) * Y) / sqrt(var + eps); dY = 1 gives 0.
    graph, module = module_from_text(bn_net(), "TRAIN")
    x = torch.as_tensor(data()).requires_grad_(True)
    y = module.run({"data": x}, ["y"])["y"]
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().max()) < 1e-5
