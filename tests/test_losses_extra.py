"""ContrastiveLoss, HingeLoss, InfogainLoss and MultinomialLogisticLoss: forward and backward
against float64 NumPy transcriptions of Caffe's ``Forward_cpu`` / ``Backward_cpu`` loops
(``src/caffe/layers/<name>_layer.cpp``, BVLC master)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import graph_from_text, input_layer, rel_err

TOL = 1e-5
LOG_THRESHOLD = 1e-20


def rand(shape, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def run_layer(text, inputs, top_grad=1.0):
    """Forward the net's last layer on ``inputs``; return (loss, {bottom: gradient})."""
    from convnet_io.torch_model.registry import convert_node

    graph = graph_from_text(text)
    node = graph.nodes[-1]
    module = convert_node(node, graph)
    tensors = [torch.tensor(inputs[graph.blob_of[b]], dtype=torch.float32, requires_grad=True) for b in node.bottoms]
    out = module(*tensors)
    loss = out[0] if isinstance(out, tuple) else out
    (loss * top_grad).backward()
    grads = {graph.blob_of[b]: (t.grad if t.grad is not None else torch.zeros_like(t)).double().numpy()
             for b, t in zip(node.bottoms, tensors)}
    return float(loss.detach()), grads, out


def check(actual, expected, tol=TOL):
    assert rel_err(actual, expected) <= tol, (actual, expected)


# -- ContrastiveLoss -----------------------------------------------------------------------------
def contrastive_ref(a, b, y, margin, legacy, top_diff=1.0):
    n = a.shape[0]
    diff = a - b
    dist_sq = (diff * diff).sum(1)
    loss = 0.0
    for i in range(n):
        if int(y[i]):
            loss += dist_sq[i]
        elif legacy:
            loss += max(margin - dist_sq[i], 0.0)
        else:
            d = max(margin - np.sqrt(dist_sq[i]), 0.0)
            loss += d * d
    loss = loss / n / 2.0
    grads = []
    for sign in (1.0, -1.0):
        g = np.zeros_like(a)
        alpha = sign * top_diff / n
        for j in range(n):
            if int(y[j]):
                g[j] = alpha * diff[j]
            else:
                if legacy:
                    mdist = margin - dist_sq[j]
                    beta = -alpha
                else:
                    dist = np.sqrt(dist_sq[j])
                    mdist = margin - dist
                    beta = -alpha * mdist / (dist + 1e-4)
                g[j] = beta * diff[j] if mdist > 0 else 0.0
        grads.append(g)
    return loss, grads


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("margin", [1.0, 4.0])
def test_contrastive_loss(legacy, margin):
    n, c = 12, 5
    a, b = rand((n, c), 1, 0.6), rand((n, c), 2, 0.6)
    y = np.array([1, 0] * (n // 2), dtype=np.float64)
    y[3] = 0.7  # static_cast<int>(0.7) is 0: dissimilar
    text = (input_layer((n, c), "a") + input_layer((n, c, 1, 1), "b") + input_layer((n, 1, 1, 1), "y")
            + 'layer { name: "loss" type: "ContrastiveLoss" bottom: "a" bottom: "b" bottom: "y" top: "loss" '
            f'contrastive_loss_param {{ margin: {margin} legacy_version: {str(legacy).lower()} }} }}')
    loss, grads, _ = run_layer(text, {"a": a, "b": b.reshape(n, c, 1, 1), "y": y.reshape(n, 1, 1, 1)}, 0.5)
    want, (ga, gb) = contrastive_ref(a, b, y, margin, legacy, 0.5)
    assert abs(loss - want * 1) <= TOL * abs(want) + 1e-7
    check(grads["a"], ga)
    check(grads["b"].reshape(n, c), gb)
    assert not grads["y"].any()


# -- HingeLoss -----------------------------------------------------------------------------------
def hinge_ref(x, label, norm, top_diff=1.0):
    n = x.shape[0]
    dim = x.size // n
    d = x.reshape(n, dim).copy()
    for i in range(n):
        d[i, int(label[i])] *= -1
    d = np.maximum(0.0, 1.0 + d)
    loss = (np.abs(d).sum() if norm == "L1" else (d * d).sum()) / n
    g = np.sign(d) if norm == "L1" else d.copy()
    for i in range(n):
        g[i, int(label[i])] *= -1
    g = g * (top_diff / n) * (1.0 if norm == "L1" else 2.0)
    return loss, g.reshape(x.shape)


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_hinge_loss(norm):
    x = rand((8, 4, 2, 1), 3)
    label = np.random.default_rng(4).integers(0, 8, 8).astype(np.float64)
    text = (input_layer(x.shape, "x") + input_layer((8,), "label")
            + f'layer {{ name: "loss" type: "HingeLoss" bottom: "x" bottom: "label" top: "loss" hinge_loss_param {{ norm: {norm} }} }}')
    loss, grads, _ = run_layer(text, {"x": x, "label": label}, 2.0)
    want, g = hinge_ref(x, label, norm, 2.0)
    assert abs(loss - want) <= TOL * want
    check(grads["x"], g)


# -- InfogainLoss --------------------------------------------------------------------------------
def infogain_ref(x, label, h, axis=1, ignore=None, mode="VALID", top_diff=1.0):
    outer = int(np.prod(x.shape[:axis]))
    classes = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    prob = (e / e.sum(axis=axis, keepdims=True)).reshape(outer, classes, inner)
    lab = label.reshape(outer, inner)
    loss, count = 0.0, 0
    grad = np.zeros_like(prob)
    rows = h.sum(1)
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i, j])
            if ignore is not None and v == ignore:
                continue
            for k in range(classes):
                loss -= h[v, k] * np.log(max(prob[i, k, j], LOG_THRESHOLD))
                grad[i, k, j] = prob[i, k, j] * rows[v] - h[v, k]
            count += 1
    norm = max(1.0, {"FULL": outer * inner, "VALID": count, "BATCH_SIZE": outer, "NONE": 1}[mode])
    return loss / norm, (grad * top_diff / norm).reshape(x.shape), prob.reshape(x.shape)


@pytest.mark.parametrize("mode,ignore", [("VALID", None), ("VALID", 2), ("FULL", 1), ("BATCH_SIZE", None), ("NONE", None)])
def test_infogain_loss_third_bottom(mode, ignore):
    x = rand((3, 4, 2, 3), 5, 2.0)
    label = np.random.default_rng(6).integers(0, 4, (3, 1, 2, 3)).astype(np.float64)
    h = np.abs(rand((4, 4), 7))
    ign = f"ignore_label: {ignore}" if ignore is not None else ""
    text = (input_layer(x.shape, "x") + input_layer(label.shape, "label") + input_layer((1, 1, 4, 4), "H")
            + 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" bottom: "H" '
            f'top: "loss" top: "prob" loss_param {{ normalization: {mode} {ign} }} }}')
    loss, grads, out = run_layer(text, {"x": x, "label": label, "H": h.reshape(1, 1, 4, 4)}, 0.7)
    want, g, prob = infogain_ref(x, label, h, ignore=ignore, mode=mode, top_diff=0.7)
    assert abs(loss - want) <= TOL * abs(want)
    check(grads["x"], g)
    check(out[1].detach().double().numpy(), prob)


def test_infogain_loss_matrix_from_file(tmp_path):
    from convnet_io.caffe.caffemodel import write_blobproto

    h = np.abs(rand((5, 5), 8)).astype(np.float32)
    write_blobproto(tmp_path / "H.binaryproto", h.reshape(1, 1, 5, 5))
    net = tmp_path / "net.prototxt"
    net.write_text(input_layer((6, 5), "x") + input_layer((6,), "label")
                   + 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "label" top: "loss" '
                   'infogain_loss_param { source: "H.binaryproto" axis: -1 } }')
    from convnet_io.api.loading import load_graph
    from convnet_io.torch_model.registry import convert_node

    graph = load_graph(net)  # the source is found next to the net file
    module = convert_node(graph.nodes[-1], graph)
    x = rand((6, 5), 9, 3.0)
    label = np.arange(6, dtype=np.float64) % 5
    loss = float(module(torch.tensor(x, dtype=torch.float32), torch.tensor(label, dtype=torch.float32)))
    want = infogain_ref(x, label, h.astype(np.float64))[0]
    assert abs(loss - want) <= TOL * abs(want)


def test_infogain_loss_needs_a_matrix():
    from convnet_io.errors import LayerError

    with pytest.raises(LayerError, match="infogain matrix source"):
        graph_from_text(input_layer((2, 3), "x") + input_layer((2,), "l")
                        + 'layer { name: "loss" type: "InfogainLoss" bottom: "x" bottom: "l" top: "loss" }')


# -- MultinomialLogisticLoss ---------------------------------------------------------------------
def test_multinomial_logistic_loss():
    n, c = 6, 4
    prob = np.abs(rand((n, c), 10)) / 3
    prob[2, 1] = 1e-30  # below the threshold: log(1e-20), gradient -1/1e-20
    label = np.array([0, 1, 1, 3, 2, 0], dtype=np.float64)
    text = (input_layer((n, c), "p") + input_layer((n, 1, 1, 1), "label")
            + 'layer { name: "loss" type: "MultinomialLogisticLoss" bottom: "p" bottom: "label" top: "loss" }')
    loss, grads, _ = run_layer(text, {"p": prob.astype(np.float32), "label": label.reshape(n, 1, 1, 1)})
    p32 = prob.astype(np.float32).astype(np.float64)
    want = -sum(np.log(max(p32[i, int(label[i])], LOG_THRESHOLD)) for i in range(n)) / n
    g = np.zeros((n, c))
    for i in range(n):
        g[i, int(label[i])] = -1.0 / n / max(p32[i, int(label[i])], LOG_THRESHOLD)
    assert abs(loss - want) <= TOL * abs(want)
    check(grads["p"], g)


def test_losses_are_left_out_of_inference():
    from convnet_io.graph import inference_view

    text = (input_layer((4, 3), "x") + input_layer((4,), "l")
            + 'layer { name: "ip" type: "InnerProduct" bottom: "x" top: "ip" inner_product_param { num_output: 2 } }'
            + 'layer { name: "loss" type: "HingeLoss" bottom: "ip" bottom: "l" }')  # no top: Caffe adds one
    graph = graph_from_text(text)
    assert graph.nodes[-1].tops == ["loss(automatic)"] and graph.nodes[-1].loss_weights == [1.0]
    assert [n.name for n in inference_view(graph).nodes] == ["x", "ip"]
