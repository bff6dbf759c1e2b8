"""RNN, LSTM and LSTMUnit against a float64 NumPy unroll of Caffe's equations written here.

The references transcribe Caffe's unrolled nets (``lstm_layer.cpp``, ``rnn_layer.cpp``) and
``LSTMUnitLayer::Forward_cpu`` / ``Backward_cpu``: ``h_conted = cont_t * h_{t-1}``, the packed gate
order i, f, o, g, a forget gate of exactly 0 where ``cont_t == 0``. Gradients are checked against
central finite differences of the reference (cont in {0, 1}, where Caffe's gradient is the true
one) and, for non-binary cont, against Caffe's own backward formula.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from helpers import graph_from_text, input_layer

import convnet_io
from convnet_io.errors import ConvnetError
from convnet_io.onnx_export import check_onnx, export_onnx
from convnet_io.runtimes.onnxruntime_session import make_session
from convnet_io.runtimes.runners import mark_all_outputs

TOL = 1e-5
T, N, H = 20, 3, 5
X_SHAPE = (T, N, 2, 3)  # features over two axes: Caffe flattens from axis 2
STATIC_SHAPE = (N, 4)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def cont_with_resets(steps=T, streams=N):
    """Sequences starting at t = 0 and again in the middle, at different steps per stream."""
    cont = np.ones((steps, streams))
    cont[0] = 0
    cont[steps // 3, 0] = 0
    cont[steps // 2, 1:] = 0
    cont[max(steps - 4, 0), :] = 0
    return cont


def lstm_ref(x, cont, W_xc, b_c, W_hc, x_static=None, W_xc_static=None, h0=None, c0=None):
    """Caffe's LSTM, float64: returns (h for every step, h_T, c_T)."""
    steps, streams = cont.shape
    hidden = W_hc.shape[1]
    xf = x.reshape(steps, streams, -1)
    h = np.zeros((streams, hidden)) if h0 is None else h0[0].copy()
    c = np.zeros((streams, hidden)) if c0 is None else c0[0].copy()
    out = []
    for t in range(steps):
        ct = cont[t][:, None]
        gate = (ct * h) @ W_hc.T + (xf[t] @ W_xc.T + b_c)
        if x_static is not None:
            gate = gate + x_static.reshape(streams, -1) @ W_xc_static.T
        i, f, o, g = (gate[:, k * hidden:(k + 1) * hidden] for k in range(4))
        i, o, g = sigmoid(i), sigmoid(o), np.tanh(g)
        f = np.where(ct == 0, 0.0, ct * sigmoid(f))
        c = f * c + i * g
        h = o * np.tanh(c)
        out.append(h)
    return np.stack(out), h[None], c[None]


def rnn_ref(x, cont, W_xh, b_h, W_hh, W_ho, b_o, x_static=None, W_xh_static=None, h0=None):
    """Caffe's RNN, float64: returns (o for every step, h_T)."""
    steps, streams = cont.shape
    hidden = W_hh.shape[1]
    xf = x.reshape(steps, streams, -1)
    h = np.zeros((streams, hidden)) if h0 is None else h0[0].copy()
    out = []
    for t in range(steps):
        pre = (cont[t][:, None] * h) @ W_hh.T + (xf[t] @ W_xh.T + b_h)
        if x_static is not None:
            pre = pre + x_static.reshape(streams, -1) @ W_xh_static.T
        h = np.tanh(pre)
        out.append(np.tanh(h @ W_ho.T + b_o))
    return np.stack(out), h[None]


# ------------------------------------------------------------------------------------------------
# Net snippets
# ------------------------------------------------------------------------------------------------
def recurrent_net(kind: str, static: bool, expose: bool, x_shape=X_SHAPE, hidden=H) -> str:
    steps, streams = x_shape[:2]
    text = input_layer(x_shape, "x") + input_layer((steps, streams), "cont")
    bottoms = ["x", "cont"]
    if static:
        text += input_layer((streams, *STATIC_SHAPE[1:]), "x_static")
        bottoms.append("x_static")
    states = ["h", "c"] if kind == "LSTM" else ["h"]
    tops = ["y"]
    if expose:
        for s in states:
            text += input_layer((1, streams, hidden), f"{s}0")
        bottoms += [f"{s}0" for s in states]
        tops += [f"{s}T" for s in states]
    text += (f'layer {{ name: "rec" type: "{kind}" '
             + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
             + " ".join(f'top: "{t}"' for t in tops)
             + f" recurrent_param {{ num_output: {hidden} expose_hidden: {str(expose).lower()} }} }}\n")
    return text


def make_inputs(kind, static, expose, rng, x_shape=X_SHAPE, hidden=H):
    steps, streams = x_shape[:2]
    feeds = {"x": rng.standard_normal(x_shape), "cont": cont_with_resets(steps, streams)}
    if static:
        feeds["x_static"] = rng.standard_normal((streams, *STATIC_SHAPE[1:]))
    if expose:
        for s in (["h", "c"] if kind == "LSTM" else ["h"]):
            feeds[f"{s}0"] = rng.standard_normal((1, streams, hidden)) * 0.5
    return feeds


def reference(kind, blobs, feeds, static):
    args = {"x_static": feeds.get("x_static"), "h0": feeds.get("h0")}
    if kind == "LSTM":
        W_xc, b_c, *rest = blobs
        W_xc_static = rest[0] if static else None
        out, hT, cT = lstm_ref(feeds["x"], feeds["cont"], W_xc, b_c, rest[-1], W_xc_static=W_xc_static,
                               c0=feeds.get("c0"), **args)
        return {"y": out, "hT": hT, "cT": cT}
    W_xh, b_h, *rest = blobs
    W_xh_static = rest[0] if static else None
    out, hT = rnn_ref(feeds["x"], feeds["cont"], W_xh, b_h, *rest[-3:], W_xh_static=W_xh_static, **args)
    return {"y": out, "hT": hT}


def seeded_net(tmp_path, text, seed=0, scale=0.5):
    path = tmp_path / "net.prototxt"
    path.write_text(text)
    net = convnet_io.load(path, seed=seed)
    rng = np.random.default_rng(seed)
    net.set_blobs({k: [(rng.standard_normal(b.shape) * scale).astype(np.float32) for b in v]
                   for k, v in net.blobs().items()})
    return net


VARIANTS = [(kind, static, expose) for kind in ("LSTM", "RNN") for static in (False, True) for expose in (False, True)]


# ------------------------------------------------------------------------------------------------
# Shapes and blob layout
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, static, expose", VARIANTS)
def test_blob_layout_and_tops(kind, static, expose):
    g = graph_from_text(recurrent_net(kind, static, expose))
    node = next(n for n in g.nodes if n.name == "rec")
    d_x, d_s = 6, STATIC_SHAPE[1]
    if kind == "LSTM":  # W_xc, b_c, [W_xc_static], W_hc; 4H rows packed i, f, o, g
        want = [(4 * H, d_x), (4 * H,)] + ([(4 * H, d_s)] if static else []) + [(4 * H, H)]
    else:  # W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o
        want = [(H, d_x), (H,)] + ([(H, d_s)] if static else []) + [(H, H), (H, H), (H,)]
    assert [p.shape for p in node.params] == want
    assert g.shapes[node.tops[0]] == (T, N, H)
    assert [g.shapes[t] for t in node.tops[1:]] == [(1, N, H)] * (len(node.tops) - 1)


@pytest.mark.parametrize("text, message", [
    (input_layer((4, 2, 3), "x") + input_layer((4, 3), "cont")
     + 'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "y" recurrent_param { num_output: 2 } }',
     "cont"),
    (input_layer((4, 2, 3), "x") + input_layer((4, 2), "cont")
     + 'layer { name: "l" type: "LSTM" bottom: "x" bottom: "cont" top: "y" recurrent_param { } }',
     "num_output"),
    (input_layer((4, 2, 3), "x") + input_layer((4, 2), "cont")
     + 'layer { name: "l" type: "RNN" bottom: "x" bottom: "cont" top: "y" top: "z" recurrent_param { num_output: 2 } }',
     "top"),
    (input_layer((4, 2, 3), "x") + input_layer((4, 2), "cont") + input_layer((1, 2, 3), "h0")
     + 'layer { name: "l" type: "RNN" bottom: "x" bottom: "cont" bottom: "h0" top: "y" top: "hT" '
       'recurrent_param { num_output: 2 expose_hidden: true } }',
     "h_0"),
])
def test_bad_nets_name_the_layer(text, message):
    with pytest.raises(ConvnetError, match=message):
        graph_from_text(text)


# ------------------------------------------------------------------------------------------------
# Forward: PyTorch and ONNX Runtime against the NumPy unroll, 20 steps, resets in the middle
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, static, expose", VARIANTS)
def test_forward_matches_caffe_unroll(tmp_path, kind, static, expose):
    net = seeded_net(tmp_path, recurrent_net(kind, static, expose))
    rng = np.random.default_rng(1)
    feeds = {k: v.astype(np.float32) for k, v in make_inputs(kind, static, expose, rng).items()}
    blobs = [b.astype(np.float64) for b in net.blobs()["rec"]]
    want = reference(kind, blobs, {k: v.astype(np.float64) for k, v in feeds.items()}, static)
    tops = ["y"] + ([k for k in want if k != "y"] if expose else [])
    got = net.run_values(feeds, tops)
    for top in tops:
        assert np.abs(got[top] - want[top]).max() <= TOL, (top, np.abs(got[top] - want[top]).max())

    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    assert "Scan" in [n.op_type for n in model.graph.node]
    session = make_session(mark_all_outputs(model, net.graph).SerializeToString(), "cpu")
    ort = dict(zip(tops, session.run(tops, {i.name: feeds[i.name] for i in session.get_inputs()})))
    for top in tops:
        assert np.abs(ort[top] - want[top]).max() <= TOL, (top, np.abs(ort[top] - want[top]).max())


@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_onnx_runs_for_any_number_of_steps(tmp_path, kind):
    """The Scan is not unrolled: the same export runs 1, 7 and 33 steps."""
    net = seeded_net(tmp_path, recurrent_net(kind, False, False, x_shape=(5, N, 3)))
    model = export_onnx(net.graph, net.blobs())
    session = make_session(model.SerializeToString(), "cpu")
    blobs = [b.astype(np.float64) for b in net.blobs()["rec"]]
    rng = np.random.default_rng(2)
    for steps in (1, 7, 33):
        feeds = {"x": rng.standard_normal((steps, N, 3)).astype(np.float32),
                 "cont": cont_with_resets(steps, N).astype(np.float32)}
        (got,) = session.run(["y"], feeds)
        want = reference(kind, blobs, {k: v.astype(np.float64) for k, v in feeds.items()}, False)["y"]
        assert np.abs(got - want).max() <= TOL


def test_non_binary_cont_scales_state():
    """cont is a scale, not a flag: h_conted = cont * h and f = cont * sigmoid(f')."""
    text = recurrent_net("LSTM", False, False, x_shape=(6, 2, 3), hidden=3)
    from helpers import module_from_text
    _graph, module = module_from_text(text)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 2, 3))
    cont = rng.uniform(-1.5, 1.5, (6, 2))
    cont[2, 1] = 0
    with torch.no_grad():
        got = module.run({"x": torch.tensor(x, dtype=torch.float32), "cont": torch.tensor(cont, dtype=torch.float32)},
                         ["y"])["y"].double().numpy()
    blobs = [b.detach().double().numpy() for b in module.layer("rec").caffe_blobs()]
    want = lstm_ref(x, cont, blobs[0], blobs[1], blobs[2])[0]
    assert np.abs(got - want).max() <= TOL


# ------------------------------------------------------------------------------------------------
# The state carried across passes (Caffe copies h_T / c_T into h_0 / c_0 before each forward)
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["LSTM", "RNN"])
def test_state_carries_across_training_passes(kind):
    from helpers import module_from_text
    text = recurrent_net(kind, False, False, x_shape=(4, 2, 3), hidden=3)
    _graph, module = module_from_text(text, phase="TRAIN")
    module.train()
    rng = np.random.default_rng(4)
    xs = [rng.standard_normal((4, 2, 3)) for _ in range(2)]
    cont = np.ones((4, 2))
    first = {"x": torch.tensor(xs[0], dtype=torch.float64), "cont": torch.tensor(cont)}
    second = {"x": torch.tensor(xs[1], dtype=torch.float64), "cont": torch.tensor(cont)}
    module.double()
    blobs = [b.detach().numpy() for b in module.layer("rec").caffe_blobs()]
    ref = lstm_ref if kind == "LSTM" else rnn_ref
    r1 = ref(xs[0], cont, *blobs)
    r2 = ref(xs[1], cont, *blobs, h0=r1[1], **({"c0": r1[2]} if kind == "LSTM" else {}))
    module.run(first, ["y"])
    got = module.run(second, ["y"])["y"].detach().numpy()
    assert np.abs(got - r2[0]).max() <= 1e-12
    module.layer("rec").reset()
    got = module.run(first, ["y"])["y"].detach().numpy()
    assert np.abs(got - r1[0]).max() <= 1e-12
    module.eval()  # inference starts from zero every pass, as a freshly loaded Caffe net
    assert np.abs(module.run(second, ["y"])["y"].detach().numpy() - ref(xs[1], cont, *blobs)[0]).max() <= 1e-12


# ------------------------------------------------------------------------------------------------
# Backward
# ------------------------------------------------------------------------------------------------
def _grad_case(kind, static, expose):
    from helpers import module_from_text
    x_shape = (6, 2, 3)
    text = recurrent_net(kind, static, expose, x_shape=x_shape, hidden=3)
    _graph, module = module_from_text(text, phase="TRAIN")
    module.double().eval()
    rng = np.random.default_rng(5)
    feeds = make_inputs(kind, static, expose, rng, x_shape=x_shape, hidden=3)
    feeds["cont"] = np.array([[0, 0], [1, 1], [1, 0], [1, 1], [0, 1], [1, 1]], dtype=np.float64)
    with torch.no_grad():
        for b in module.layer("rec").caffe_blobs():
            b.mul_(0.7)
    weights = rng.standard_normal((6, 2, 3))  # loss = sum(weights * y)
    return module, feeds, weights


@pytest.mark.parametrize("kind, static, expose", VARIANTS)
def test_gradients_match_finite_differences(kind, static, expose):
    module, feeds, weights = _grad_case(kind, static, expose)
    layer = module.layer("rec")
    tensors = {k: torch.tensor(v, requires_grad=k != "cont") for k, v in feeds.items()}
    y = module.run(tensors, ["y"])["y"]
    (y * torch.tensor(weights)).sum().backward()
    blobs = [b.detach().numpy().copy() for b in layer.caffe_blobs()]

    def loss(bl, fd):
        return float((reference(kind, bl, fd, static)["y"] * weights).sum())

    eps = 1e-6
    for i, b in enumerate(blobs):
        numeric = np.zeros_like(b)
        for idx in np.ndindex(b.shape):
            up = [v.copy() for v in blobs]
            down = [v.copy() for v in blobs]
            up[i][idx] += eps
            down[i][idx] -= eps
            numeric[idx] = (loss(up, feeds) - loss(down, feeds)) / (2 * eps)
        analytic = layer.caffe_blobs()[i].grad.numpy()
        assert np.abs(analytic - numeric).max() <= 1e-6 * max(1.0, np.abs(numeric).max()), (i, analytic, numeric)
    for name in ("x", "x_static"):
        if name not in feeds:
            continue
        numeric = np.zeros_like(feeds[name])
        for idx in np.ndindex(feeds[name].shape):
            up, down = dict(feeds), dict(feeds)
            up[name] = feeds[name].copy()
            down[name] = feeds[name].copy()
            up[name][idx] += eps
            down[name][idx] -= eps
            numeric[idx] = (loss(blobs, up) - loss(blobs, down)) / (2 * eps)
        assert np.abs(tensors[name].grad.numpy() - numeric).max() <= 1e-6 * max(1.0, np.abs(numeric).max())
    # Caffe shares only the data of h_0 / c_0 with its unrolled net: they get no gradient.
    for name in ("h0", "c0"):
        if name in tensors:
            assert tensors[name].grad is None


def test_exposed_final_state_carries_no_gradient():
    module, feeds, _ = _grad_case("LSTM", False, True)
    tensors = {k: torch.tensor(v, requires_grad=k == "x") for k, v in feeds.items()}
    out = module.run(tensors, ["y", "hT", "cT"])
    assert not out["hT"].requires_grad and not out["cT"].requires_grad
    assert np.array_equal(out["hT"].detach().numpy()[0], out["y"].detach().numpy()[-1])


def caffe_lstm_unit_backward(c_prev, x, cont, c_diff, h_diff):
    """LSTMUnitLayer::Backward_cpu transcribed (f already scaled by cont)."""
    hidden = c_prev.shape[-1]
    i, f, o, g = (x[..., k * hidden:(k + 1) * hidden] for k in range(4))
    ct = cont[..., None]
    i, o, g = sigmoid(i), sigmoid(o), np.tanh(g)
    f = np.where(ct == 0, 0.0, ct * sigmoid(f))
    c = f * c_prev + i * g
    tanh_c = np.tanh(c)
    c_term = c_diff + h_diff * o * (1 - tanh_c * tanh_c)
    x_diff = np.concatenate([c_term * g * i * (1 - i), c_term * c_prev * f * (1 - f),
                             h_diff * tanh_c * o * (1 - o), c_term * i * (1 - g * g)], axis=-1)
    return c_term * f, x_diff, (c, o * tanh_c)


def test_lstm_unit_forward_backward_is_caffes_with_non_binary_cont(tmp_path):
    """Caffe's forget-gate gradient uses f (1 - f) with f = cont * sigmoid: for cont not in {0, 1}
    it is not the derivative of the forward pass, and convnet follows Caffe."""
    hidden, streams = 4, 5
    text = (input_layer((1, streams, hidden), "c_prev") + input_layer((1, streams, 4 * hidden), "gates")
            + input_layer((1, streams), "cont")
            + 'layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" '
              'top: "c" top: "h" }\n')
    from helpers import module_from_text
    _graph, module = module_from_text(text)
    module.double()
    rng = np.random.default_rng(6)
    c_prev, gates = rng.standard_normal((1, streams, hidden)), rng.standard_normal((1, streams, 4 * hidden))
    cont = np.array([[0.0, 1.0, 0.5, -0.7, 2.0]])
    c_diff, h_diff = rng.standard_normal((1, streams, hidden)), rng.standard_normal((1, streams, hidden))
    t = {"c_prev": torch.tensor(c_prev, requires_grad=True), "gates": torch.tensor(gates, requires_grad=True),
         "cont": torch.tensor(cont)}
    out = module.run(t, ["c", "h"])
    (out["c"] * torch.tensor(c_diff) + out["h"] * torch.tensor(h_diff)).sum().backward()
    want_cp, want_x, (want_c, want_h) = caffe_lstm_unit_backward(c_prev, gates, cont, c_diff, h_diff)
    assert np.abs(out["c"].detach().numpy() - want_c).max() <= 1e-12
    assert np.abs(out["h"].detach().numpy() - want_h).max() <= 1e-12
    assert np.abs(t["c_prev"].grad.numpy() - want_cp).max() <= 1e-12
    assert np.abs(t["gates"].grad.numpy() - want_x).max() <= 1e-12

    # And the ONNX export of the unit on its own.
    path = tmp_path / "unit.prototxt"
    path.write_text(text)
    net = convnet_io.load(path)
    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    session = make_session(model.SerializeToString(), "cpu")
    feeds = {"c_prev": c_prev.astype(np.float32), "gates": gates.astype(np.float32), "cont": cont.astype(np.float32)}
    got_c, got_h = session.run(["c", "h"], feeds)
    assert np.abs(got_c - want_c).max() <= TOL and np.abs(got_h - want_h).max() <= TOL


@pytest.mark.parametrize("kind, opset", [("LSTM", 13), ("LSTM", 17), ("RNN", 13), ("RNN", 17)])
def test_export_validates_at_batch_1_and_7(tmp_path, kind, opset):
    """`convnet export`'s own check: dim 0 (time, here) at 1 and 7 steps, ORT against PyTorch."""
    from convnet_io.tools.export import validate_onnx
    net = seeded_net(tmp_path, recurrent_net(kind, True, True, x_shape=(4, N, 3)))
    model = export_onnx(net.graph, net.blobs(), opset=opset)
    result = validate_onnx(net, model, device="cpu")
    assert result.ok, result
    assert isinstance(model, onnx.ModelProto)
