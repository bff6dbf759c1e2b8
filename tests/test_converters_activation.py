"""Element-wise converters against float64 NumPy versions of Caffe's formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import graph_from_text, input_layer, rel_err, run_single

from convnet_io.graph.layers.activation import DropoutAttrs
from convnet_io.torch_model import CaffeModule

TOL = 1e-5
SHAPE = (2, 3, 4, 5)


def net(type_: str, params: str = "", shape=SHAPE, bottom: str = "data", top: str = "y") -> str:
    return input_layer(shape) + (f'layer {{ name: "l" type: "{type_}" bottom: "{bottom}" top: "{top}" '
                                 f'{params} }}\n')


def data(shape=SHAPE, seed: int = 1, scale: float = 2.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def run(type_: str, params: str = "", x=None, phase: str = "TEST"):
    x = data() if x is None else x
    graph, module, out = run_single(net(type_, params, x.shape), {"data": x}, phase=phase)
    return module, x.astype(np.float64), out["y"]


# -- ReLU ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("slope", [0.0, 0.1, -0.5])
def test_relu(slope):
    params = f"relu_param {{ negative_slope: {slope} }}" if slope else ""
    module, x, y = run("ReLU", params)
    expected = np.maximum(x, 0) + slope * np.minimum(x, 0)
    assert rel_err(y, expected) <= TOL
    assert f"negative_slope={slope}" in repr(module.layer("l"))


def test_relu_in_place_keeps_pre_relu_value():
    text = (input_layer(SHAPE, top="x")
            + 'layer { name: "relu" type: "ReLU" bottom: "x" top: "x" }\n'
            + 'layer { name: "act" type: "TanH" bottom: "x" top: "t" }\n')
    x = data()
    graph, module, out = run_single(text, {"x": x})
    assert graph.node("relu").tops == ["x:1"]
    assert graph.node("act").bottoms == ["x:1"]
    x64 = x.astype(np.float64)
    assert np.array_equal(out["x"], x64)  # the pre-ReLU value survives
    assert rel_err(out["x:1"], np.maximum(x64, 0)) <= TOL
    assert rel_err(out["t"], np.tanh(np.maximum(x64, 0))) <= TOL
    assert (out["x"] < 0).any()


# -- PReLU ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (4, 6), (2, 3, 7)])
def test_prelu_per_channel(shape):
    x = data(shape)
    graph, module, out = run_single(net("PReLU", shape=shape), {"data": x})
    (slope,) = [b.detach().double().numpy() for b in module.layer("l").caffe_blobs()]
    assert slope.shape == (shape[1],)
    x64 = x.astype(np.float64)
    s = slope.reshape((1, -1) + (1,) * (len(shape) - 2))
    expected = np.maximum(x64, 0) + s * np.minimum(x64, 0)
    assert rel_err(out["y"], expected) <= TOL


def test_prelu_channel_shared():
    x = data()
    graph, module, out = run_single(net("PReLU", "prelu_param { channel_shared: true }"), {"data": x})
    blobs = module.layer("l").caffe_blobs()
    assert len(blobs) == 1 and tuple(blobs[0].shape) == (1,)
    a = float(blobs[0].detach()[0])
    x64 = x.astype(np.float64)
    assert rel_err(out["y"], np.where(x64 > 0, x64, a * x64)) <= TOL
    assert "channel_shared=True" in repr(module.layer("l"))


# -- simple element-wise -------------------------------------------------------------------------
@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_elu(alpha):
    module, x, y = run("ELU", f"elu_param {{ alpha: {alpha} }}")
    expected = np.maximum(x, 0) + alpha * (np.exp(np.minimum(x, 0)) - 1)
    assert rel_err(y, expected) <= TOL


def test_sigmoid():
    x = data(scale=10.0)
    module, x, y = run("Sigmoid", x=x)
    assert rel_err(y, 1.0 / (1.0 + np.exp(-x))) <= TOL


def test_tanh():
    module, x, y = run("TanH")
    assert rel_err(y, np.tanh(x)) <= TOL


def test_absval():
    module, x, y = run("AbsVal")
    assert rel_err(y, np.abs(x)) <= TOL


def test_bnll_stable_for_large_inputs():
    x = data(scale=30.0)
    x.flat[:4] = [100.0, -100.0, 0.0, 80.0]
    module, x, y = run("BNLL", x=x)
    expected = np.where(x > 0, x + np.log(1.0 + np.exp(-np.abs(x))), np.log(1.0 + np.exp(np.minimum(x, 0))))
    assert np.isfinite(y).all()
    assert rel_err(y, expected) <= TOL


# -- Power / Exp / Log ---------------------------------------------------------------------------
@pytest.mark.parametrize("power,scale,shift", [
    (1.0, 1.0, 0.0), (2.0, 0.5, 1.5), (3.0, -1.5, 0.0), (0.5, 0.25, 2.0), (-1.0, 2.0, 10.0),
])
def test_power(power, scale, shift):
    x = data()
    if power == 0.5:
        x = np.abs(x)  # keep the base positive
    module, x, y = run("Power", f"power_param {{ power: {power} scale: {scale} shift: {shift} }}", x)
    assert rel_err(y, (shift + scale * x) ** power) <= TOL
    assert f"power={power}" in repr(module.layer("l"))


@pytest.mark.parametrize("power,scale,shift,const", [(0.0, 2.0, 3.0, 1.0), (2.0, 0.0, 3.0, 9.0)])
def test_power_constant_cases(power, scale, shift, const):
    module, x, y = run("Power", f"power_param {{ power: {power} scale: {scale} shift: {shift} }}")
    assert rel_err(y, np.full_like(x, const)) <= TOL


@pytest.mark.parametrize("base,scale,shift", [(-1.0, 1.0, 0.0), (2.0, 0.5, 1.0), (10.0, -0.3, -0.5),
                                              (-1.0, 0.7, 0.4)])
def test_exp(base, scale, shift):
    params = f"exp_param {{ base: {base} scale: {scale} shift: {shift} }}"
    module, x, y = run("Exp", params)
    b = np.e if base == -1 else base
    assert rel_err(y, np.power(b, shift + scale * x)) <= TOL


@pytest.mark.parametrize("base,scale,shift", [(-1.0, 1.0, 0.0), (10.0, 2.0, 5.0), (2.0, 0.5, 0.25),
                                              (-1.0, 3.0, 1.0)])
def test_log(base, scale, shift):
    x = np.abs(data()) + np.float32(0.05)
    params = f"log_param {{ base: {base} scale: {scale} shift: {shift} }}"
    module, x, y = run("Log", params, x)
    z = shift + scale * x
    expected = np.log(z) if base == -1 else np.log(z) / np.log(base)
    assert rel_err(y, expected) <= TOL


# -- Threshold / Clip / Swish --------------------------------------------------------------------
def test_threshold():
    x = data()
    x.flat[:3] = [0.3, 0.30001, 0.29999]
    module, x, y = run("Threshold", "threshold_param { threshold: 0.3 }", x)
    t = np.float64(np.float32(0.3))
    assert np.array_equal(y, (x > t).astype(np.float64))
    assert y.flat[0] == 0.0 and y.flat[1] == 1.0 and y.flat[2] == 0.0


def test_clip():
    module, x, y = run("Clip", "clip_param { min: -0.5 max: 0.7 }")
    assert rel_err(y, np.maximum(-0.5, np.minimum(x, 0.7))) <= TOL
    assert y.min() == pytest.approx(-0.5) and y.max() == pytest.approx(0.7)


def test_clip_nan_gives_min_like_std_max():
    from convnet_io.torch_model.converters.activation import Clip

    out = Clip(-1.0, 2.0)(torch.tensor([float("nan"), 3.0, -4.0, 0.5]))
    assert out.tolist() == [-1.0, 2.0, -1.0, 0.5]


@pytest.mark.parametrize("beta", [1.0, 1.5, -0.5])
def test_swish(beta):
    module, x, y = run("Swish", f"swish_param {{ beta: {beta} }}")
    assert rel_err(y, x / (1.0 + np.exp(-beta * x))) <= TOL


# -- Dropout -------------------------------------------------------------------------------------
BIG = (8, 16, 64, 64)


def test_dropout_train_statistics():
    torch.manual_seed(0)
    ratio = 0.3
    x = np.random.default_rng(2).uniform(1.0, 2.0, BIG).astype(np.float32)  # no zero inputs
    module, x, y = run("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}", x, phase="TRAIN")
    assert module.layer("l").training
    dropped = y == 0
    assert abs(dropped.mean() - ratio) < 0.005
    kept = ~dropped
    assert rel_err(y[kept], x[kept] / (1.0 - ratio)) <= 1e-6
    assert abs(y.mean() - x.mean()) / x.mean() < 0.01


def test_dropout_train_masks_differ_between_runs():
    torch.manual_seed(0)
    x = np.ones((4, 4, 8, 8), np.float32)
    graph, module, out = run_single(net("Dropout", shape=x.shape), {"data": x}, phase="TRAIN")
    with torch.no_grad():
        again = module.run({"data": torch.as_tensor(x)}, ["y"])["y"].double().numpy()
    assert not np.array_equal(out["y"], again)
    assert set(np.unique(again)) <= {0.0, 2.0}


def test_dropout_test_is_identity():
    module, x, y = run("Dropout", "dropout_param { dropout_ratio: 0.3 }")
    assert not module.layer("l").training
    assert np.array_equal(y, x)


def test_dropout_zero_ratio_train_is_identity():
    module, x, y = run("Dropout", "dropout_param { dropout_ratio: 0.0 }", phase="TRAIN")
    assert np.array_equal(y, x)


def _dropout_module(ratio: float, scale_train: bool, shape, phase: str) -> CaffeModule:
    # caffe.proto has no scale_train field; set the typed attrs directly as a fork's proto would.
    graph = graph_from_text(net("Dropout", f"dropout_param {{ dropout_ratio: {ratio} }}", shape), phase)
    graph.node("l").attrs = DropoutAttrs(ratio, scale_train)
    return CaffeModule(graph)


def test_dropout_without_scale_train():
    ratio = 0.25
    x = np.random.default_rng(3).uniform(1.0, 2.0, BIG).astype(np.float32)
    x64 = x.astype(np.float64)
    feeds = {"data": torch.as_tensor(x)}

    test_module = _dropout_module(ratio, False, BIG, "TEST")
    with torch.no_grad():
        y = test_module.run(feeds, ["y"])["y"].double().numpy()
    assert rel_err(y, x64 * (1.0 - ratio)) <= TOL
    assert "scale_train=False" in repr(test_module.layer("l"))

    torch.manual_seed(1)
    train_module = _dropout_module(ratio, False, BIG, "TRAIN")
    with torch.no_grad():
        y = train_module.run(feeds, ["y"])["y"].double().numpy()
    kept = y != 0
    assert abs((~kept).mean() - ratio) < 0.005
    assert np.array_equal(y[kept], x64[kept])  # kept values are not scaled


def test_module_train_eval_switches_dropout():
    torch.manual_seed(0)
    x = np.ones((4, 4, 8, 8), np.float32)
    graph, module, out = run_single(net("Dropout", shape=x.shape), {"data": x}, phase="TRAIN")
    module.eval()
    with torch.no_grad():
        y = module.run({"data": torch.as_tensor(x)}, ["y"])["y"].numpy()
    assert np.array_equal(y, x)
