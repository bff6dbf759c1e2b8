"""Whole SSD nets against OpenCV's Caffe importer and in ONNX Runtime: nets written here in the
shape of MobileNet-SSD (depthwise blocks, Permute/Flatten/PriorBox/Concat heads, Reshape + Softmax,
DetectionOutput) and of OpenCV's ResNet-10 SSD face detector (residual blocks, a Normalize'd head),
on seeded weights.

Every blob OpenCV exposes agrees within 1e-4 relative, except DetectionOutput's, where OpenCV
itself departs from Caffe-SSD: it orders the rows by score across labels and pads them to
keep_top_k (opencv modules/dnn/src/layers/detection_output_layer.cpp). There the rows are compared
as a set with OpenCV's (same images, labels, scores and boxes to 1e-5), and in order with the float64
NumPy transcription of the fork's DetectionOutputLayer in test_detection_layers.py.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

from helpers import rel_err
from opencv_reference import TOLERANCE, Case, Deviation, run_case, seeded_net
from test_detection_layers import assert_rows_equal, ref_detection_output


def _conv(name, bottom, out, k=3, s=1, p=None, group=1, bn=True, relu=True, bias=None):
    p = k // 2 if p is None else p
    bias = (not bn) if bias is None else bias
    text = (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
            f'num_output: {out} kernel_size: {k} {f"stride: {s} " if s != 1 else ""}'
            f'{f"pad: {p} " if p else ""}{f"group: {group} " if group != 1 else ""}'
            f'bias_term: {str(bias).lower()} weight_filler {{ type: "msra" }} }} }}\n')
    if bn:
        text += (f'layer {{ name: "{name}/bn" type: "BatchNorm" bottom: "{name}" top: "{name}" }}\n'
                 f'layer {{ name: "{name}/scale" type: "Scale" bottom: "{name}" top: "{name}" '
                 f'scale_param {{ bias_term: true }} }}\n')
    if relu:
        text += f'layer {{ name: "{name}/relu" type: "ReLU" bottom: "{name}" top: "{name}" }}\n'
    return text


def _head(i, feat, priors, classes, prior_param):
    """One SSD head: loc/conf convolutions, Permute (0,2,3,1), Flatten, and the PriorBox."""
    text = ""
    for kind, per in (("loc", 4), ("conf", classes)):
        name = f"{feat}_mbox_{kind}"
        text += _conv(name, feat, priors * per, bn=False, relu=False, bias=True)
        text += (f'layer {{ name: "{name}_perm" type: "Permute" bottom: "{name}" top: "{name}_perm" '
                 f'permute_param {{ order: 0 order: 2 order: 3 order: 1 }} }}\n'
                 f'layer {{ name: "{name}_flat" type: "Flatten" bottom: "{name}_perm" top: "{name}_flat" '
                 f'flatten_param {{ axis: 1 }} }}\n')
    text += (f'layer {{ name: "{feat}_mbox_priorbox" type: "PriorBox" bottom: "{feat}" bottom: "data" '
             f'top: "{feat}_mbox_priorbox" prior_box_param {{ {prior_param} }} }}\n')
    return text


def _tail(feats, classes, detection):
    text = ""
    for kind, axis in (("loc_flat", 1), ("conf_flat", 1), ("priorbox", 2)):
        bottoms = " ".join(f'bottom: "{f}_mbox_{kind}"' for f in feats)
        top = "mbox_" + kind.split("_")[0]
        text += (f'layer {{ name: "{top}" type: "Concat" {bottoms} top: "{top}" concat_param {{ axis: {axis} }} }}\n')
    text += (f'layer {{ name: "mbox_conf_reshape" type: "Reshape" bottom: "mbox_conf" top: "mbox_conf_reshape" '
             f'reshape_param {{ shape {{ dim: 0 dim: -1 dim: {classes} }} }} }}\n'
             'layer { name: "mbox_conf_softmax" type: "Softmax" bottom: "mbox_conf_reshape" top: "mbox_conf_softmax" '
             'softmax_param { axis: 2 } }\n'
             'layer { name: "mbox_conf_flatten" type: "Flatten" bottom: "mbox_conf_softmax" top: "mbox_conf_flatten" '
             'flatten_param { axis: 1 } }\n'
             'layer { name: "detection_out" type: "DetectionOutput" bottom: "mbox_loc" bottom: "mbox_conf_flatten" '
             f'bottom: "mbox_priorbox" top: "detection_out" detection_output_param {{ {detection} }} }}\n')
    return text


VARIANCE = "variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2"


def mobilenet_ssd(size: int = 96) -> str:
    """MobileNet-SSD's layout, narrower and on a smaller image: depthwise + pointwise blocks with
    BatchNorm/Scale/ReLU, extra 1x1 + 3x3/2 layers, six-ratio priors, 21 classes."""
    text = 'name: "MobileNet-SSD-shaped"\n' + (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}\n')
    text += _conv("conv0", "data", 16, s=2)
    bottom, width = "conv0", 16
    for i, (out, s) in enumerate([(32, 1), (32, 2), (48, 2), (64, 2)], start=1):
        text += _conv(f"conv{i}/dw", bottom, width, s=s, group=width)
        text += _conv(f"conv{i}", f"conv{i}/dw", out, k=1)
        bottom, width = f"conv{i}", out
    text += _conv("conv5_1", "conv4", 32, k=1) + _conv("conv5_2", "conv5_1", 48, s=2)
    text += _conv("conv6_1", "conv5_2", 24, k=1) + _conv("conv6_2", "conv6_1", 32, s=2)
    heads = [("conv3", 3, f"min_size: 20 aspect_ratio: 2 flip: true clip: false {VARIANCE} offset: 0.5"),
             ("conv4", 6, (f"min_size: 36 max_size: 54 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
                          f"{VARIANCE} offset: 0.5")),
             ("conv5_2", 6, (f"min_size: 54 max_size: 72 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
                            f"{VARIANCE} offset: 0.5")),
             ("conv6_2", 6, (f"min_size: 72 max_size: 90 aspect_ratio: 2 aspect_ratio: 3 flip: true clip: false "
                            f"{VARIANCE} offset: 0.5"))]
    for i, (feat, priors, param) in enumerate(heads):
        text += _head(i, feat, priors, 21, param)
    return text + _tail([h[0] for h in heads], 21, (
        "num_classes: 21 share_location: true background_label_id: 0 "
        "nms_param { nms_threshold: 0.45 top_k: 100 } code_type: CENTER_SIZE keep_top_k: 100 "
        "confidence_threshold: 0.1"))


def face_detector(size: int = 64) -> str:
    """OpenCV's res10_300x300_ssd layout, smaller: residual blocks with BatchNorm/Scale, a
    Normalize'd first head (across_spatial false, per-channel scale), 2 classes, keep_top_k 200."""
    text = 'name: "ResNet10-SSD-face-shaped"\n' + (
        f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ dim: 1 dim: 3 dim: {size} dim: {size} }} }} }}\n')
    text += _conv("conv1", "data", 16, k=7, s=2)
    text += 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 3 stride: 2 } }\n'
    bottom = "pool1"
    for i, (out, s) in enumerate([(16, 1), (32, 2), (48, 2)], start=1):
        text += _conv(f"layer{i}_a", bottom, out, s=s) + _conv(f"layer{i}_b", f"layer{i}_a", out, relu=False)
        text += _conv(f"layer{i}_proj", bottom, out, k=1, s=s, relu=False)
        text += (f'layer {{ name: "layer{i}_sum" type: "Eltwise" bottom: "layer{i}_b" bottom: "layer{i}_proj" '
                 f'top: "layer{i}_sum" }}\n'
                 f'layer {{ name: "layer{i}_relu" type: "ReLU" bottom: "layer{i}_sum" top: "layer{i}_sum" }}\n')
        bottom = f"layer{i}_sum"
    text += ('layer { name: "layer2_norm" type: "Normalize" bottom: "layer2_sum" top: "layer2_norm" '
             'norm_param { across_spatial: false scale_filler { type: "constant" value: 10 } channel_shared: false } }\n')
    text += _conv("extra_1", "layer3_sum", 16, k=1) + _conv("extra_2", "extra_1", 32, s=2)
    heads = [("layer2_norm", 4, (f"min_size: 10 max_size: 20 aspect_ratio: 2 flip: true clip: false {VARIANCE} "
                                 "step: 8 offset: 0.5")),
             ("layer3_sum", 4, (f"min_size: 20 max_size: 36 aspect_ratio: 2 flip: true clip: false {VARIANCE} "
                               "step: 16 offset: 0.5")),
             ("extra_2", 4, (f"min_size: 36 max_size: 60 aspect_ratio: 2 flip: true clip: false {VARIANCE} "
                            "step: 32 offset: 0.5"))]
    for i, (feat, priors, param) in enumerate(heads):
        text += _head(i, feat, priors, 2, param)
    return text + _tail([h[0] for h in heads], 2, (
        "num_classes: 2 share_location: true background_label_id: 0 "
        "nms_param { nms_threshold: 0.45 top_k: 400 } code_type: CENTER_SIZE keep_top_k: 200 "
        "confidence_threshold: 0.3"))


def _numpy_detection(node, bottoms, blobs):
    a = node.attrs
    return ref_detection_output(*bottoms, a.num_classes, a.share_location, a.background_label_id,
                                a.code_type, a.variance_encoded_in_target, a.keep_top_k,
                                a.confidence_threshold, a.nms_threshold, a.top_k, a.eta)


DEVIATION = {"detection_out": Deviation(
    "OpenCV orders the rows by score across labels and pads them to keep_top_k", _numpy_detection)}

NETS = {"mobilenet_ssd": (mobilenet_ssd, (1, 3, 96, 96)), "face_detector": (face_detector, (1, 3, 64, 64))}


def _opencv_rows(path: Path, net, x: np.ndarray) -> np.ndarray:
    from opencv_reference import opencv_net

    weights = path.with_suffix(".caffemodel")
    net.save_caffemodel(weights)
    cv = opencv_net(path, weights)
    cv.setInput(x)
    rows = np.asarray(cv.forward("detection_out")).reshape(-1, 7)
    return rows[rows[:, 2] > 0]  # OpenCV's padding rows hold zeros


def _sorted_rows(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float64).reshape(-1, 7)
    return rows[np.lexsort((rows[:, 3], -rows[:, 2], rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("name", sorted(NETS))
def test_ssd_net_matches_opencv_and_onnxruntime(name, tmp_path):
    build, shape = NETS[name]
    path = tmp_path / f"{name}.prototxt"
    path.write_text(build())
    result = run_case(Case(name, path, shape, deploy=path, deviations=DEVIATION), tmp_path / "work")
    assert not result.failures(), result.failures()
    compared = {b.layer for b in result.blobs}
    assert "detection_out" in compared and len(compared) > 40
    assert result.max_rel_err <= TOLERANCE
    print(f"\n{name}: {len(result.blobs)} blobs vs OpenCV/NumPy, max rel err {result.max_rel_err:.2e}")

    # DetectionOutput: the same rows as OpenCV (as a set) and as the fork's loop (in order).
    net = seeded_net(path, shape, 0)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    from convnet_io.runtimes.runners import OnnxRuntimeRunner, TorchRunner

    ours = TorchRunner(net).run({"data": x})
    rows = ours["detection_out"].reshape(-1, 7)
    assert len(rows) >= 3 and (rows[:, 1] >= 1).all(), "the seeded net must produce detections"
    theirs = _opencv_rows(path, net, x)
    assert_rows_equal(_sorted_rows(rows), _sorted_rows(theirs))
    node = net.graph.node("detection_out")
    assert_rows_equal(rows, _numpy_detection(node, [ours[b].astype(np.float32) for b in node.bottoms], []))

    # The ONNX export in ONNX Runtime: every blob within 1e-4, the rows equal.
    onnx = OnnxRuntimeRunner(net, device="cpu").run({"data": x})
    worst = max(rel_err(onnx[v], ours[v]) for v in ours if v in onnx and v != "detection_out")
    assert worst <= TOLERANCE
    assert_rows_equal(onnx["detection_out"], rows)
    print(f"{name}: {len(rows)} detections; ONNX Runtime max rel err {worst:.2e}")

    # Batch 2 on the same export (dynamic batch): image 0's rows are the batch-1 rows.
    x2 = np.concatenate([x, np.random.default_rng(1).standard_normal(shape).astype(np.float32)])
    both = OnnxRuntimeRunner(net, device="cpu").run({"data": x2})["detection_out"].reshape(-1, 7)
    assert_rows_equal(both, TorchRunner(net).run({"data": x2})["detection_out"])
    assert_rows_equal(both[both[:, 0] == 0], rows)
    assert (both[:, 0] == 1).any()


def test_deploy_text_round_trips_ssd_layers():
    """deploy_text writes SSD's layers back (with the fields OpenCV's importer requires)."""
    from helpers import graph_from_text
    from test_deploy import assert_round_trip

    for build in (mobilenet_ssd, face_detector):
        assert_round_trip(graph_from_text(build()))
    options = (
        'layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 40 dim: 30 } } }\n'
        'layer { name: "feat" type: "Input" top: "feat" input_param { shape { dim: 1 dim: 8 dim: 5 dim: 4 } } }\n'
        'layer { name: "pb" type: "PriorBox" bottom: "feat" bottom: "data" top: "pb" prior_box_param { min_size: 7 '
        'aspect_ratio: 2 aspect_ratio: 3 flip: false clip: true img_h: 40 img_w: 30 step_h: 8 step_w: 7.5 offset: 0.25 } }\n'
        'layer { name: "n" type: "Normalize" bottom: "feat" top: "n" norm_param { across_spatial: true channel_shared: true eps: 0.01 } }\n'
        'layer { name: "loc" type: "Input" top: "loc" input_param { shape { dim: 1 dim: 720 } } }\n'
        'layer { name: "conf" type: "Input" top: "conf" input_param { shape { dim: 1 dim: 180 } } }\n'
        'layer { name: "det" type: "DetectionOutput" bottom: "loc" bottom: "conf" bottom: "pb" top: "det" '
        'detection_output_param { num_classes: 3 share_location: false background_label_id: -1 code_type: CORNER_SIZE '
        'variance_encoded_in_target: true nms_param { nms_threshold: 0.6 eta: 0.9 } } }\n')
    new = assert_round_trip(graph_from_text(options))
    assert new.node("pb").attrs.aspect_ratios == (1.0, 2.0, 3.0)
    assert new.node("det").attrs.top_k == -1 and new.node("det").attrs.confidence_threshold == -np.inf


def test_diff_runner_against_opencv_agrees_on_an_ssd_net(tmp_path):
    """`convnet diff --against opencv`'s runner puts OpenCV's detection rows in Caffe-SSD's order
    (and drops its padding), so every blob of an SSD net, DetectionOutput's included, agrees."""
    from convnet_io.runtimes.compare import Tolerance, compare_runs
    from convnet_io.runtimes.runners import OpenCVRunner, TorchRunner

    path = tmp_path / "face.prototxt"
    path.write_text(face_detector())
    net = seeded_net(path, (1, 3, 64, 64), 0)
    x = {"data": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}
    torch_runner = TorchRunner(net)
    ours, theirs = torch_runner.run(x), OpenCVRunner(net).run(x)
    report = compare_runs(torch_runner.values, ours, theirs, Tolerance(atol=1e-5, rtol=1e-4))
    assert report["ok"], report["first_divergence"]
    assert report["compared"] > 40
    assert len(theirs["detection_out"].reshape(-1, 7)) == len(ours["detection_out"].reshape(-1, 7)) > 3
