"""SSD's layers (weiliu89/caffe, branch ssd) against float64 NumPy transcriptions of the fork's
C++ written here: permute_layer.cpp, prior_box_layer.cpp, normalize_layer.cpp,
detection_output_layer.cpp with bbox_util.cpp (DecodeBBox, ApplyNMSFast, JaccardOverlap); the
Flatten/Reshape/Softmax forms SSD nets use; and each layer's ONNX export in ONNX Runtime."""
from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import graph_from_text, input_layer, rel_err, run_single

from convnet_io.errors import LayerError

TOL = 1e-5


# -- references ---------------------------------------------------------------------------------

def ref_prior_box(feat_hw, img_hw, min_sizes, max_sizes=(), ratios=(), flip=True, clip=False,
                  variance=(0.1,), img=None, step=None, offset=0.5):
    """PriorBoxLayer::Forward_cpu, cell by cell (min/max sizes truncated to int as the fork's
    ``int min_size_`` does)."""
    lh, lw = feat_hw
    ih, iw = img if img else img_hw
    ars = [1.0]
    for r in ratios:
        if any(abs(r - x) < 1e-6 for x in ars):
            continue
        ars.append(r)
        if flip:
            ars.append(1.0 / r)
    sh, sw = step if step else (ih / lh, iw / lw)
    out = []
    for h in range(lh):
        for w in range(lw):
            cx, cy = (w + offset) * sw, (h + offset) * sh
            for s, mn in enumerate(min_sizes):
                mn = int(mn)
                sides = [(mn, mn)]
                if max_sizes:
                    side = math.sqrt(mn * int(max_sizes[s]))
                    sides.append((side, side))
                sides += [(mn * math.sqrt(r), mn / math.sqrt(r)) for r in ars if abs(r - 1) >= 1e-6]
                for bw, bh in sides:
                    out += [(cx - bw / 2) / iw, (cy - bh / 2) / ih, (cx + bw / 2) / iw, (cy + bh / 2) / ih]
    boxes = np.array(out)
    if clip:
        boxes = np.clip(boxes, 0, 1)
    var = np.tile(np.array(variance, dtype=np.float64), len(boxes) // len(variance))
    return np.stack([boxes, var])[None]


def ref_normalize(x, scale, across_spatial, channel_shared, eps):
    """NormalizeLayer::Forward_cpu: norm = sqrt(sum x^2 + eps) per item or per pixel."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        if across_spatial:
            out[n] = x[n] / math.sqrt((x[n] ** 2).sum() + eps)
        else:
            out[n] = x[n] / np.sqrt((x[n] ** 2).sum(axis=0, keepdims=True) + eps)
        out[n] *= scale if channel_shared else np.asarray(scale).reshape(-1, *[1] * (x.ndim - 2))
    return out


def _decode(prior, var, loc, code, in_target):
    v = [1.0] * 4 if in_target else var
    if code == "CORNER":
        return [prior[i] + v[i] * loc[i] for i in range(4)]
    pw, ph = prior[2] - prior[0], prior[3] - prior[1]
    if code == "CORNER_SIZE":
        return [prior[0] + v[0] * loc[0] * pw, prior[1] + v[1] * loc[1] * ph,
                prior[2] + v[2] * loc[2] * pw, prior[3] + v[3] * loc[3] * ph]
    cx = v[0] * loc[0] * pw + (prior[0] + prior[2]) / 2
    cy = v[1] * loc[1] * ph + (prior[1] + prior[3]) / 2
    w, h = math.exp(v[2] * loc[2]) * pw, math.exp(v[3] * loc[3]) * ph
    return [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]


def _size(b):
    return 0.0 if b[2] < b[0] or b[3] < b[1] else (b[2] - b[0]) * (b[3] - b[1])


def _jaccard(a, b):
    if b[0] > a[2] or b[2] < a[0] or b[1] > a[3] or b[3] < a[1]:
        return 0.0
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / (_size(a) + _size(b) - inter)


def ref_detection_output(loc, conf, prior, num_classes, share_location=True, background=0,
                         code="CORNER", in_target=False, keep_top_k=-1, threshold=-np.inf,
                         nms=0.3, top_k=-1, eta=1.0):
    n = loc.shape[0]
    P = prior.shape[2] // 4
    L = 1 if share_location else num_classes
    loc = np.asarray(loc, np.float64).reshape(n, P, L, 4)
    conf = np.asarray(conf, np.float64).reshape(n, P, num_classes)
    pb = np.asarray(prior, np.float64).reshape(2, P, 4)
    rows = []
    for i in range(n):
        decoded = {c: [_decode(pb[0, p], pb[1, p], loc[i, p, c], code, in_target) for p in range(P)]
                   for c in range(L) if share_location or c != background}
        indices = {}
        for c in range(num_classes):
            if c == background:
                continue
            boxes = decoded[0 if share_location else c]
            scores = conf[i, :, c]
            cand = sorted((p for p in range(P) if scores[p] > threshold), key=lambda p: -scores[p])
            if top_k > -1:
                cand = cand[:top_k]
            kept, adaptive = [], nms
            for p in cand:
                if all(_jaccard(boxes[p], boxes[k]) <= adaptive for k in kept):
                    kept.append(p)
                    if eta < 1 and adaptive > 0.5:
                        adaptive *= eta
            indices[c] = kept
        if keep_top_k > -1 and sum(map(len, indices.values())) > keep_top_k:
            pairs = sorted(((conf[i, p, c], c, p) for c in sorted(indices) for p in indices[c]),
                           key=lambda t: -t[0])[:keep_top_k]
            indices = {}
            for _, c, p in pairs:
                indices.setdefault(c, []).append(p)
        for c in sorted(indices):
            for p in indices[c]:
                rows.append([i, c, conf[i, p, c], *decoded[0 if share_location else c][p]])
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(n)]
    return np.array(rows).reshape(1, 1, -1, 7)


def assert_rows_equal(actual, expected, tol=TOL):
    """Same rows in the same order: image and label exact, score and box to ``tol``."""
    a = np.asarray(actual).reshape(-1, 7)
    e = np.asarray(expected).reshape(-1, 7)
    assert a.shape == e.shape, (a.shape, e.shape)
    np.testing.assert_array_equal(a[:, :2], e[:, :2])
    np.testing.assert_allclose(a[:, 2:], e[:, 2:], atol=tol, rtol=0)


def onnx_values(graph, module, feeds, names):
    """The graph exported with the module's blobs, run in ONNX Runtime."""
    ort = pytest.importorskip("onnxruntime")
    from convnet_io.onnx_export import check_onnx, export_onnx

    blobs = {k: [t.detach().numpy() for t in v] for k, v in module.caffe_blobs().items()}
    model = export_onnx(graph, blobs)
    check_onnx(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {k: np.asarray(v, dtype=np.float32) for k, v in feeds.items()}
    return dict(zip(names, sess.run(names, feeds)))


# -- Permute, Flatten/Reshape/Softmax as SSD uses them ----------------------------------------------

@pytest.mark.parametrize("order", [(0, 2, 3, 1), (0, 3), (1, 0, 2, 3), ()])
def test_permute(order):
    x = np.random.default_rng(1).standard_normal((2, 3, 4, 5))
    layers = "".join(f"order: {o} " for o in order)
    text = input_layer(x.shape) + f'layer {{ name: "p" type: "Permute" bottom: "data" top: "p" permute_param {{ {layers}}} }}'
    full = (*order, *(i for i in range(4) if i not in order))
    graph, module, out = run_single(text, {"data": x})
    np.testing.assert_array_equal(out["p"], x.transpose(full).astype(np.float32))
    assert graph.shapes["p"] == tuple(x.shape[i] for i in full)
    np.testing.assert_array_equal(onnx_values(graph, module, {"data": x}, ["p"])["p"], out["p"])


def test_permute_refuses_bad_orders():
    for order in ("order: 4", "order: 1 order: 1"):
        with pytest.raises(LayerError, match="order"):
            graph_from_text(input_layer((1, 2, 3, 4)) +
                            f'layer {{ name: "p" type: "Permute" bottom: "data" top: "p" permute_param {{ {order} }} }}')


def test_ssd_head_forms_flatten_reshape_softmax():
    """mbox_conf: Permute (0,2,3,1), Flatten axis 1, Concat axis 1, Reshape (0,-1,C), Softmax axis 2,
    Flatten: the order of values DetectionOutput reads."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 6, 3, 3)), rng.standard_normal((2, 6, 2, 2))
    text = (input_layer(a.shape, "a") + input_layer(b.shape, "b") + """
layer { name: "pa" type: "Permute" bottom: "a" top: "pa" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "fa" type: "Flatten" bottom: "pa" top: "fa" flatten_param { axis: 1 } }
layer { name: "pb" type: "Permute" bottom: "b" top: "pb" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "fb" type: "Flatten" bottom: "pb" top: "fb" flatten_param { axis: 1 } }
layer { name: "cat" type: "Concat" bottom: "fa" bottom: "fb" top: "cat" concat_param { axis: 1 } }
layer { name: "r" type: "Reshape" bottom: "cat" top: "r" reshape_param { shape { dim: 0 dim: -1 dim: 3 } } }
layer { name: "s" type: "Softmax" bottom: "r" top: "s" softmax_param { axis: 2 } }
layer { name: "f" type: "Flatten" bottom: "s" top: "f" flatten_param { axis: 1 } }
""")
    graph, module, out = run_single(text, {"a": a, "b": b})
    cat = np.concatenate([a.transpose(0, 2, 3, 1).reshape(2, -1), b.transpose(0, 2, 3, 1).reshape(2, -1)], 1)
    r = cat.reshape(2, -1, 3)
    e = np.exp(r - r.max(2, keepdims=True))
    expected = (e / e.sum(2, keepdims=True)).reshape(2, -1)
    assert graph.shapes["r"] == (2, 26, 3)
    assert rel_err(out["f"], expected) < TOL
    assert rel_err(onnx_values(graph, module, {"a": a, "b": b}, ["f"])["f"], expected) < TOL


# -- PriorBox -------------------------------------------------------------------------------------

PRIOR_CASES = {
    "min_max_flip": ("min_size: 30 max_size: 60 aspect_ratio: 2 aspect_ratio: 3 flip: true",
                     {"min_sizes": (30,), "max_sizes": (60,), "ratios": (2, 3)}),
    "duplicate_ratio_no_flip": ("min_size: 20 aspect_ratio: 2 aspect_ratio: 2.0000001 aspect_ratio: 1 flip: false",
                                {"min_sizes": (20,), "ratios": (2, 2.0000001, 1), "flip": False}),
    "clip_variance4": ("min_size: 50 max_size: 90 clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2",
                       {"min_sizes": (50,), "max_sizes": (90,), "clip": True, "variance": (0.1, 0.1, 0.2, 0.2)}),
    "two_sizes_step_offset": ("min_size: 10 min_size: 21 max_size: 20 max_size: 40 step: 8 offset: 0.25",
                              {"min_sizes": (10, 21), "max_sizes": (20, 40), "step": (8, 8), "offset": 0.25}),
    "img_size": ("min_size: 16 img_size: 100 aspect_ratio: 2", {"min_sizes": (16,), "ratios": (2,), "img": (100, 100)}),
    "img_h_w_step_h_w": ("min_size: 16 img_h: 90 img_w: 120 step_h: 10 step_w: 14 variance: 0.2",
                         {"min_sizes": (16,), "img": (90, 120), "step": (10, 14), "variance": (0.2,)}),
    "fractional_min_size_truncated": ("min_size: 30.7 max_size: 60.9", {"min_sizes": (30.7,), "max_sizes": (60.9,)}),
}


@pytest.mark.parametrize("case", sorted(PRIOR_CASES))
def test_prior_box(case):
    param, ref = PRIOR_CASES[case]
    text = (input_layer((2, 3, 64, 48)) + input_layer((2, 4, 5, 7), "feat") +
            f'layer {{ name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "pb" prior_box_param {{ {param} }} }}')
    feeds = {"data": np.zeros((2, 3, 64, 48)), "feat": np.zeros((2, 4, 5, 7))}
    graph, module, out = run_single(text, feeds)
    expected = ref_prior_box((5, 7), (64, 48), **ref)
    assert graph.shapes["pb"] == expected.shape
    assert np.abs(out["pb"] - expected).max() < 1e-6
    assert np.abs(onnx_values(graph, module, feeds, ["pb"])["pb"] - expected).max() < 1e-6


def test_prior_box_refuses_bad_parameters():
    for param in ("max_size: 10", "min_size: 10 max_size: 5", "min_size: 10 variance: 0.1 variance: 0.2",
                  "min_size: 10 img_size: 10 img_h: 5 img_w: 5", "min_size: 10 step: 4 step_h: 2 step_w: 2"):
        with pytest.raises(LayerError):
            graph_from_text(input_layer((1, 3, 8, 8)) + input_layer((1, 3, 2, 2), "f") +
                            f'layer {{ name: "pb" type: "PriorBox" bottom: "f" bottom: "data" top: "pb" '
                            f'prior_box_param {{ {param} }} }}')


# -- Normalize ------------------------------------------------------------------------------------

@pytest.mark.parametrize("across_spatial", [True, False])
@pytest.mark.parametrize("channel_shared", [True, False])
@pytest.mark.parametrize("eps", [1e-10, 0.5])
def test_normalize(across_spatial, channel_shared, eps):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 4, 3, 5))
    text = input_layer(x.shape) + (
        f'layer {{ name: "n" type: "Normalize" bottom: "data" top: "n" norm_param {{ '
        f'across_spatial: {str(across_spatial).lower()} channel_shared: {str(channel_shared).lower()} eps: {eps} '
        f'scale_filler {{ type: "constant" value: 20 }} }} }}')
    graph, module, out = run_single(text, {"data": x})
    scale = module.caffe_blobs()["n"][0].detach().double().numpy()
    assert scale.shape == (() if channel_shared else (4,))
    expected = ref_normalize(x, scale, across_spatial, channel_shared, eps)
    assert rel_err(out["n"], expected) < TOL
    assert rel_err(onnx_values(graph, module, {"data": x}, ["n"])["n"], expected) < TOL


def test_normalize_default_filler_is_one():
    graph = graph_from_text(input_layer((1, 3, 2, 2)) +
                            'layer { name: "n" type: "Normalize" bottom: "data" top: "n" norm_param { channel_shared: false } }')
    node = graph.node("n")
    assert node.params[0].shape == (3,)
    from convnet_io.graph.layers import get_spec
    assert get_spec("Normalize").fillers(node.attrs)[0].value == 1.0


# -- DetectionOutput ------------------------------------------------------------------------------

def _detection_inputs(rng, n, priors, classes, loc_classes, spread=3.0):
    """Priors inside the image, small location offsets, softmax confidences with spread scores."""
    centres = rng.uniform(0.2, 0.8, (priors, 2))
    sides = rng.uniform(0.1, 0.4, (priors, 2))
    boxes = np.concatenate([centres - sides / 2, centres + sides / 2], 1)
    var = np.tile([0.1, 0.1, 0.2, 0.2], (priors, 1))
    prior = np.stack([boxes.reshape(-1), var.reshape(-1)])[None]
    loc = rng.standard_normal((n, priors * loc_classes * 4)) * 0.5
    logits = rng.standard_normal((n, priors, classes)) * spread
    conf = np.exp(logits) / np.exp(logits).sum(2, keepdims=True)
    return loc, conf.reshape(n, -1), prior


DETECTION_CASES = {
    "center_size_mobilenet_ssd": {"code": "CENTER_SIZE", "nms": 0.45, "top_k": 100, "keep_top_k": 100, "threshold": 0.25},
    "corner": {"code": "CORNER", "nms": 0.45, "top_k": 50, "threshold": 0.1},
    "corner_size": {"code": "CORNER_SIZE", "nms": 0.3, "threshold": 0.1},
    "variance_in_target": {"code": "CENTER_SIZE", "in_target": True, "nms": 0.5, "threshold": 0.2},
    "keep_top_k_cuts": {"code": "CENTER_SIZE", "nms": 0.45, "top_k": 40, "keep_top_k": 7, "threshold": 0.05},
    "no_share_location_background_2": {"code": "CENTER_SIZE", "share_location": False, "background": 2,
                                           "nms": 0.45, "threshold": 0.2},
    "no_background_no_threshold": {"code": "CENTER_SIZE", "background": -1, "nms": 0.45, "top_k": 10},
    "adaptive_eta": {"code": "CENTER_SIZE", "nms": 0.7, "eta": 0.8, "threshold": 0.1},
    "nothing_found": {"code": "CENTER_SIZE", "nms": 0.45, "threshold": 1.0},
}


def _detection_text(n, priors, classes, loc_classes, case):
    c = dict(case)
    fields = [f"num_classes: {classes}", f"share_location: {str(c.get('share_location', True)).lower()}",
              f"background_label_id: {c.get('background', 0)}", f"code_type: {c['code']}",
              f"variance_encoded_in_target: {str(c.get('in_target', False)).lower()}",
              f"keep_top_k: {c.get('keep_top_k', -1)}"]
    nms = f"nms_threshold: {c['nms']} eta: {c.get('eta', 1.0)}"
    if "top_k" in c:
        nms += f" top_k: {c['top_k']}"
    fields.append(f"nms_param {{ {nms} }}")
    if "threshold" in c:
        fields.append(f"confidence_threshold: {c['threshold']}")
    return (input_layer((n, priors * loc_classes * 4), "loc") + input_layer((n, priors * classes), "conf") +
            input_layer((1, 2, priors * 4), "prior") +
            'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "prior" top: "det" '
            f'detection_output_param {{ {" ".join(fields)} }} }}')


@pytest.mark.parametrize("case", sorted(DETECTION_CASES))
def test_detection_output(case):
    c = DETECTION_CASES[case]
    n, priors, classes = 2, 60, 4
    loc_classes = 1 if c.get("share_location", True) else classes
    loc, conf, prior = _detection_inputs(np.random.default_rng(7), n, priors, classes, loc_classes)
    text = _detection_text(n, priors, classes, loc_classes, c)
    feeds = {"loc": loc, "conf": conf, "prior": prior}
    # Caffe computes in float32: the reference reads the same float32 inputs.
    f32 = {k: np.asarray(v, np.float32) for k, v in feeds.items()}
    graph, module, out = run_single(text, feeds)
    assert graph.shapes["det"] == (1, 1, 1, 7)
    ref_args = {k: v for k, v in c.items() if k != "share_location"}
    expected = ref_detection_output(f32["loc"], f32["conf"], f32["prior"], classes,
                                    share_location=c.get("share_location", True), **ref_args)
    assert_rows_equal(out["det"], expected)
    if case == "nothing_found":
        np.testing.assert_array_equal(out["det"].reshape(-1, 7), [[0] + [-1] * 6, [1] + [-1] * 6])
    else:
        assert len(expected.reshape(-1, 7)) > 5
    if c.get("eta", 1.0) != 1.0:
        from convnet_io.errors import LayerError
        with pytest.raises(LayerError, match="eta"):
            onnx_values(graph, module, feeds, ["det"])
        return
    assert_rows_equal(onnx_values(graph, module, feeds, ["det"])["det"], expected)


def test_detection_output_onnx_batch_is_dynamic():
    """One export serves batch 1 and batch 3 (the rows of every image, image index first)."""
    c = DETECTION_CASES["keep_top_k_cuts"]
    ort = pytest.importorskip("onnxruntime")
    from convnet_io.onnx_export import export_onnx

    text = _detection_text(1, 30, 3, 1, c)
    graph, _module, _ = run_single(text, {k: np.zeros(s) for k, s in
                                         (("loc", (1, 120)), ("conf", (1, 90)), ("prior", (1, 2, 120)))})
    sess = ort.InferenceSession(export_onnx(graph, {}).SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 3):
        loc, conf, prior = _detection_inputs(np.random.default_rng(n), n, 30, 3, 1)
        f32 = [np.asarray(v, np.float32) for v in (loc, conf, prior)]
        got = sess.run(["det"], dict(zip(("loc", "conf", "prior"), f32)))[0]
        ref_args = {k: v for k, v in c.items()}
        assert_rows_equal(got, ref_detection_output(*f32, 3, **ref_args))


def test_detection_output_checks_its_bottoms():
    text = _detection_text(1, 10, 3, 1, DETECTION_CASES["corner"]).replace("dim: 40 }", "dim: 44 }", 1)
    with pytest.raises(LayerError, match="location"):
        graph_from_text(text)


def test_detection_output_refuses_a_torchscript_trace():
    """A trace would freeze one input's rows into a constant: refused with a clear error."""
    import torch

    from convnet_io.errors import ConvnetError

    c = DETECTION_CASES["corner"]
    graph, module, _ = run_single(_detection_text(1, 10, 3, 1, c), {k: np.zeros(s) for k, s in
                                  (("loc", (1, 40)), ("conf", (1, 30)), ("prior", (1, 2, 40)))})
    inputs = tuple(torch.zeros(graph.shapes[v]) for v in graph.inputs)
    with pytest.raises(ConvnetError, match="depend on the data"):
        torch.jit.trace(module.eval(), inputs, check_trace=False)
