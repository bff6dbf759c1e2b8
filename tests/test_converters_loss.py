"""Loss and metric converters against float64 NumPy versions of Caffe's formulas.

Each reference follows the loops of Caffe's ``src/caffe/layers/<name>_layer.cpp`` (master):
SoftmaxWithLoss and SigmoidCrossEntropyLoss with ``get_normalizer``, Accuracy with its
``num_better_predictions`` tie rule.
"""
from __future__ import annotations

import numpy as np
import pytest

from helpers import input_layer, rel_err, run_single

TOL = 1e-5
FLT_MIN = float(np.finfo(np.float32).tiny)


def rand(shape, seed=0, scale=1.0):
    x = np.random.default_rng(seed).standard_normal(shape) * scale
    return x.astype(np.float32).astype(np.float64)


def labels(shape, classes, seed=0, ignore=None, ignore_frac=0.0):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, classes, size=shape)
    if ignore is not None:
        lab = np.where(rng.random(shape) < ignore_frac, ignore, lab)
    return lab.astype(np.float64)


def layer(name, type_, bottoms, tops, body=""):
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {body} }}\n'


def check(actual, expected):
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert rel_err(actual, expected) <= TOL, (actual, expected)


def normalizer(mode, outer, inner, valid):
    n = {"FULL": outer * inner, "VALID": valid, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return max(1.0, float(n))


# -- SoftmaxWithLoss --------------------------------------------------------------------------------
def softmax_loss_ref(x, label, axis=1, ignore=None, mode="VALID"):
    """Caffe's loop: prob = softmax over axis (stored as float); loss over (i, j) positions."""
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    inner = int(np.prod(x.shape[axis + 1:]))
    m = x.max(axis=axis, keepdims=True)
    e = np.exp(x - m)
    prob = (e / e.sum(axis=axis, keepdims=True)).astype(np.float32).astype(np.float64)
    p = prob.reshape(outer, x.shape[axis], inner)
    lab = label.reshape(outer, inner)
    loss, count = 0.0, 0
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i, j])
            if ignore is not None and v == ignore:
                continue
            loss -= np.log(max(p[i, v, j], FLT_MIN))
            count += 1
    return loss / normalizer(mode, outer, inner, count), prob


def swl_body(ignore=None, mode=None, axis=None, normalize=None):
    parts = []
    if ignore is not None:
        parts.append(f"ignore_label: {ignore}")
    if mode is not None:
        parts.append(f"normalization: {mode}")
    if normalize is not None:
        parts.append(f"normalize: {str(normalize).lower()}")
    body = f"loss_param {{ {' '.join(parts)} }}" if parts else ""
    if axis is not None:
        body += f" softmax_param {{ axis: {axis} }}"
    return body


def run_swl(x, label, tops=("loss",), **kw):
    text = (input_layer(x.shape) + input_layer(label.shape, "label")
            + layer("loss", "SoftmaxWithLoss", ["data", "label"], list(tops), swl_body(**kw)))
    return run_single(text, {"data": x, "label": label})


def test_softmax_loss_default_vector_labels():
    x, lab = rand((6, 10), 1, 3.0), labels((6,), 10, 2)
    graph, _, out = run_swl(x, lab)
    expected, _ = softmax_loss_ref(x, lab)
    assert out["loss"].shape == ()
    check(out["loss"], expected)
    assert graph.node("loss").loss_weights == [1.0]


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_spatial_with_ignore_label(mode):
    x = rand((2, 5, 3, 4), 3, 2.0)
    lab = labels((2, 1, 3, 4), 5, 4, ignore=255, ignore_frac=0.4)
    assert (lab == 255).any() and (lab != 255).any()
    _, _, out = run_swl(x, lab, ignore=255, mode=mode)
    expected, _ = softmax_loss_ref(x, lab, ignore=255, mode=mode)
    check(out["loss"], expected)


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
def test_softmax_loss_modes_without_ignore(mode):
    x, lab = rand((3, 4, 2, 2), 5), labels((3, 1, 2, 2), 4, 6)
    _, _, out = run_swl(x, lab, mode=mode)
    expected, _ = softmax_loss_ref(x, lab, mode=mode)
    check(out["loss"], expected)


@pytest.mark.parametrize("normalize,mode", [(True, "VALID"), (False, "BATCH_SIZE")])
def test_softmax_loss_legacy_normalize(normalize, mode):
    x, lab = rand((2, 3, 4), 7), labels((2, 4), 3, 8, ignore=-1, ignore_frac=0.3)
    _, _, out = run_swl(x, lab, ignore=-1, normalize=normalize)
    expected, _ = softmax_loss_ref(x, lab, axis=1, ignore=-1, mode=mode)
    check(out["loss"], expected)


def test_softmax_loss_all_ignored_valid_divides_by_one():
    x = rand((2, 3), 9)
    lab = np.array([7.0, 7.0])
    _, _, out = run_swl(x, lab, ignore=7)
    check(out["loss"], 0.0)


@pytest.mark.parametrize("axis", [2, -1])
def test_softmax_loss_non_default_axis(axis):
    x = rand((2, 3, 6), 10, 2.0)
    ax = axis % 3
    lab_shape = (2, 3)
    lab = labels(lab_shape, 6, 11, ignore=0, ignore_frac=0.2)
    _, _, out = run_swl(x, lab, ("loss", "prob"), axis=axis, ignore=0)
    expected, prob = softmax_loss_ref(x, lab, axis=ax, ignore=0)
    check(out["loss"], expected)
    check(out["prob"], prob)


def test_softmax_loss_second_top_is_the_softmax():
    x, lab = rand((2, 4, 3, 3), 12, 3.0), labels((2, 3, 3), 4, 13)
    _, module, out = run_swl(x, lab, ("loss", "prob"), mode="FULL")
    expected, prob = softmax_loss_ref(x, lab, mode="FULL")
    check(out["loss"], expected)
    check(out["prob"], prob)
    assert "normalization=FULL" in repr(module.layer("loss"))


def test_softmax_loss_clamps_at_flt_min():
    # prob of class 1 underflows to 0 in float: Caffe takes log(FLT_MIN) instead of -inf.
    x = np.array([[0.0, -200.0, 0.0], [1.0, 2.0, 3.0]])
    lab = np.array([1.0, 2.0])
    _, _, out = run_swl(x, lab, mode="NONE")
    expected, _ = softmax_loss_ref(x, lab, mode="NONE")
    assert np.isfinite(out["loss"])
    check(out["loss"], expected)


# -- Accuracy ---------------------------------------------------------------------------------------
def accuracy_ref(x, label, top_k=1, axis=1, ignore=None):
    axis = axis % x.ndim
    outer = int(np.prod(x.shape[:axis]))
    classes = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:]))
    s = x.reshape(outer, classes, inner)
    lab = label.reshape(outer, inner)
    acc, count = 0, 0
    hits, nums = np.zeros(classes), np.zeros(classes)
    for i in range(outer):
        for j in range(inner):
            v = int(lab[i, j])
            if ignore is not None and v == ignore:
                continue
            nums[v] += 1
            true = s[i, v, j]
            num_better = -1
            for k in range(classes):
                num_better += s[i, k, j] >= true
            if num_better < top_k:
                acc += 1
                hits[v] += 1
            count += 1
    per_class = np.where(nums > 0, hits / np.maximum(nums, 1), 0.0)
    return (acc / count if count else 0.0), per_class


def run_acc(x, label, tops=("acc",), top_k=1, axis=None, ignore=None):
    parts = [f"top_k: {top_k}"]
    if axis is not None:
        parts.append(f"axis: {axis}")
    if ignore is not None:
        parts.append(f"ignore_label: {ignore}")
    text = (input_layer(x.shape) + input_layer(label.shape, "label")
            + layer("acc", "Accuracy", ["data", "label"], list(tops),
                    f"accuracy_param {{ {' '.join(parts)} }}"))
    return run_single(text, {"data": x, "label": label})


def tied_scores(shape, seed):
    """Small integer scores: the true class often ties with others."""
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)


@pytest.mark.parametrize("top_k", [1, 5])
@pytest.mark.parametrize("scores", ["random", "tied"])
def test_accuracy(top_k, scores):
    shape = (40, 8)
    x = rand(shape, 20) if scores == "random" else tied_scores(shape, 20)
    lab = labels((40,), 8, 21)
    _, _, out = run_acc(x, lab, ("acc", "per_class"), top_k=top_k)
    acc, per_class = accuracy_ref(x, lab, top_k)
    assert out["acc"].shape == () and out["per_class"].shape == (8,)
    check(out["acc"], acc)
    check(out["per_class"], per_class)


def test_accuracy_tie_with_true_class_is_not_top1():
    x = np.array([[1.0, 2.0, 2.0], [3.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    lab = np.array([1.0, 0.0, 2.0])
    _, _, out = run_acc(x, lab)
    # Row 0: class 2 ties the true class -> wrong; row 1 right; row 2: all tie -> wrong.
    check(out["acc"], 1.0 / 3.0)
    check(out["acc"], accuracy_ref(x, lab)[0])


@pytest.mark.parametrize("top_k", [1, 3])
def test_accuracy_spatial_with_ignore(top_k):
    x = tied_scores((2, 5, 3, 4), 22)
    lab = labels((2, 1, 3, 4), 5, 23, ignore=-1, ignore_frac=0.3)
    _, _, out = run_acc(x, lab, ("acc", "per_class"), top_k=top_k, ignore=-1)
    acc, per_class = accuracy_ref(x, lab, top_k, ignore=-1)
    check(out["acc"], acc)
    check(out["per_class"], per_class)


def test_accuracy_on_last_axis():
    x = rand((3, 4, 6), 24)
    lab = labels((3, 4), 6, 25)
    _, _, out = run_acc(x, lab, top_k=2, axis=-1)
    check(out["acc"], accuracy_ref(x, lab, 2, axis=-1)[0])


def test_accuracy_all_ignored_is_zero():
    x = rand((3, 4), 26)
    lab = np.array([5.0, 5.0, 5.0])
    _, _, out = run_acc(x, lab, ("acc", "per_class"), ignore=5)
    check(out["acc"], 0.0)
    check(out["per_class"], np.zeros(4))


# -- TRAIN / TEST net with a label input -----------------------------------------------------------
NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 8 dim: 6 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 8 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
layer { name: "acc1" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc1" include { phase: TEST } }
layer { name: "acc5" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc5"
        accuracy_param { top_k: 5 } include { phase: TEST } }
"""


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_train_test_net(phase):
    x, lab = rand((8, 6), 30), labels((8,), 10, 31)
    graph, module, out = run_single(NET, {"data": x, "label": lab}, phase=phase)
    w, b = (t.detach().double().numpy() for t in module.caffe_blobs()["ip"])
    ip = (x.astype(np.float32) @ w.astype(np.float32).T + b.astype(np.float32)).astype(np.float64)
    check(out["ip"], ip)
    check(out["loss"], softmax_loss_ref(ip, lab)[0])
    if phase == "TRAIN":
        assert graph.outputs == ["loss"]
        assert "acc1" not in out
    else:
        assert sorted(graph.outputs) == ["acc1", "acc5", "loss"]
        check(out["acc1"], accuracy_ref(ip, lab, 1)[0])
        check(out["acc5"], accuracy_ref(ip, lab, 5)[0])
        assert out["acc1"] <= out["acc5"]


# -- EuclideanLoss ----------------------------------------------------------------------------------
@pytest.mark.parametrize("shape_a,shape_b", [((4, 3), (4, 3)), ((2, 3, 4, 5), (2, 60)), ((5,), (5,))])
def test_euclidean_loss(shape_a, shape_b):
    a = rand(shape_a, 40)
    b = rand(shape_b, 41)
    text = (input_layer(shape_a, "a") + input_layer(shape_b, "b")
            + layer("loss", "EuclideanLoss", ["a", "b"], ["loss"]))
    _, _, out = run_single(text, {"a": a, "b": b})
    diff = a.reshape(-1) - b.reshape(-1)
    assert out["loss"].shape == ()
    check(out["loss"], np.dot(diff, diff) / shape_a[0] / 2)


# -- SigmoidCrossEntropyLoss -------------------------------------------------------------------------
def sce_ref(x, t, ignore=None, mode="BATCH_SIZE"):
    outer = x.shape[0]
    inner = x.size // outer
    xf, tf = x.reshape(-1), t.reshape(-1)
    loss, valid = 0.0, 0
    for xi, ti in zip(xf, tf):
        if ignore is not None and int(ti) == ignore:
            continue
        pos = 1.0 if xi >= 0 else 0.0
        loss -= xi * (ti - pos) - np.log(1 + np.exp(xi - 2 * xi * pos))
        valid += 1
    return loss / normalizer(mode, outer, inner, valid)


def run_sce(x, t, body=""):
    text = (input_layer(x.shape) + input_layer(t.shape, "target")
            + layer("loss", "SigmoidCrossEntropyLoss", ["data", "target"], ["loss"], body))
    return run_single(text, {"data": x, "target": t})


def sce_targets(shape, seed, ignore=None):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, 2, size=shape).astype(np.float64)
    if ignore is not None:
        t = np.where(rng.random(shape) < 0.3, ignore, t)
    return t


@pytest.mark.parametrize("mode", ["FULL", "VALID", "BATCH_SIZE", "NONE"])
@pytest.mark.parametrize("ignore", [None, -1])
def test_sigmoid_cross_entropy_loss(mode, ignore):
    x = rand((3, 4, 2, 2), 50, 4.0)
    t = sce_targets(x.shape, 51, ignore)
    parts = [f"normalization: {mode}"] + ([f"ignore_label: {ignore}"] if ignore is not None else [])
    _, module, out = run_sce(x, t, f"loss_param {{ {' '.join(parts)} }}")
    assert out["loss"].shape == ()
    check(out["loss"], sce_ref(x, t, ignore, mode))
    assert f"normalization={mode}" in repr(module.layer("loss"))


def test_sigmoid_cross_entropy_loss_large_logits_are_stable():
    x = np.array([[80.0, -80.0, 30.0, -30.0, 0.0]])
    t = np.array([[0.0, 1.0, 1.0, 0.0, 1.0]])
    _, _, out = run_sce(x, t, "loss_param { normalization: NONE }")
    assert np.isfinite(out["loss"])
    check(out["loss"], sce_ref(x, t, mode="NONE"))


def test_sigmoid_cross_entropy_loss_soft_targets():
    x = rand((4, 6), 52, 3.0)
    t = np.random.default_rng(53).random((4, 6)).astype(np.float32).astype(np.float64)
    _, _, out = run_sce(x, t, "loss_param { normalization: FULL }")
    check(out["loss"], sce_ref(x, t, mode="FULL"))


@pytest.mark.parametrize("normalize,mode", [(True, "VALID"), (False, "BATCH_SIZE")])
def test_sigmoid_cross_entropy_loss_legacy_normalize(normalize, mode):
    x = rand((3, 5), 54, 2.0)
    t = sce_targets(x.shape, 55, -1)
    body = f"loss_param {{ normalize: {str(normalize).lower()} ignore_label: -1 }}"
    _, _, out = run_sce(x, t, body)
    check(out["loss"], sce_ref(x, t, -1, mode))


def test_sigmoid_cross_entropy_loss_default_normalization_is_batch_size():
    x = rand((3, 5), 56, 2.0)
    t = sce_targets(x.shape, 57)
    _, _, out = run_sce(x, t)
    check(out["loss"], sce_ref(x, t, mode="BATCH_SIZE"))


def test_softmax_loss_refuses_a_third_top():
    from convnet_io.errors import LayerError

    x, lab = rand((2, 3), 60), labels((2,), 3, 61)
    with pytest.raises(LayerError, match="at most 2 tops"):
        run_swl(x, lab, ("loss", "prob", "extra"))
