"""The forks' nets, whole, against OpenCV 4.x (fusion off, every blob OpenCV exposes within 1e-4
relative) and, where OpenCV lacks a layer (SegNet's Upsample), against a float64 NumPy chain of
the forks' C++; each also exported to ONNX and run in ONNX Runtime at the same tolerance.

The nets are written here in the shape of FCN-8s (Deconvolution with the bilinear filler, Crop
offsets, score fusion), a SegNet encoder-decoder (pooling masks, Upsample), a PSPNet pyramid
(AVE pooling bins, Interp back to the map), a Faster R-CNN / R-FCN head (ROIPooling,
PSROIPooling; two inputs) and a YOLOv2 head (Reorg, Concat, Permute, Region)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")

import fork_reference as ref
from helpers import rel_err
from opencv_reference import TOLERANCE, Case, Deviation, opencv_net, run_case
from test_onnx_export import ref_conv


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.prototxt"
    path.write_text(text)
    return path


def _input(shape, top="data") -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{top}" type: "Input" top: "{top}" input_param {{ shape {{ {dims} }} }} }}\n'


def _conv(name, bottom, n, k=3, pad=0, stride=1, extra="") -> str:
    return (f'layer {{ name: "{name}" type: "Convolution" bottom: "{bottom}" top: "{name}" convolution_param {{ '
            f'num_output: {n} kernel_size: {k} pad: {pad} stride: {stride} weight_filler {{ type: "xavier" }} {extra}}} }}\n')


def _relu(name, bottom, slope=0.0) -> str:
    param = f" relu_param {{ negative_slope: {slope} }}" if slope else ""
    return f'layer {{ name: "{name}" type: "ReLU" bottom: "{bottom}" top: "{bottom}"{param} }}\n'


def _onnx_matches_torch(net, feeds: dict) -> float:
    """Every value of the ONNX export (dynamic batch) run in ONNX Runtime against PyTorch; the
    largest relative error."""
    from convnet_io.onnx_export import check_onnx, export_onnx
    from convnet_io.runtimes.onnxruntime_session import make_session
    from convnet_io.runtimes.runners import mark_all_outputs

    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    session = make_session(mark_all_outputs(model, net.graph).SerializeToString(), "cpu")
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(names, feeds)))
    want = net.run_values(feeds, names)
    return max(rel_err(got[v], want[v]) for v in names)


def _check(result) -> None:
    failures = result.failures()
    assert not failures, f"{result.name}:\n  " + "\n  ".join(failures)
    assert result.blobs
    print(f"{result.name}: {len(result.blobs)} blobs vs OpenCV, max rel err {result.max_rel_err:.3g}")


def _onnx_case(path: Path, shape, seed=0) -> float:
    import convnet_io

    net = convnet_io.load(path, input_shapes={"data": tuple(shape)}, seed=seed)
    x = (np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)
    return _onnx_matches_torch(net, {"data": x})


# -- FCN-8s: Deconvolution (bilinear filler) and Crop offsets ---------------------------------------

def fcn_net() -> str:
    up = ('layer {{ name: "{n}" type: "Deconvolution" bottom: "{b}" top: "{n}" convolution_param {{ num_output: 5 '
          'group: 5 bias_term: false kernel_size: {k} stride: {s} weight_filler {{ type: "bilinear" }} }} }}\n')
    crop = 'layer {{ name: "{n}" type: "Crop" bottom: "{b}" bottom: "{r}" top: "{n}" crop_param {{ axis: 2 offset: {o} }} }}\n'
    fuse = 'layer {{ name: "{n}" type: "Eltwise" bottom: "{a}" bottom: "{b}" top: "{n}" eltwise_param {{ operation: SUM }} }}\n'
    pool = 'layer {{ name: "{n}" type: "Pooling" bottom: "{b}" top: "{n}" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}\n'
    return ('name: "fcn8s_like"\n' + _input((1, 3, 32, 32))
            + _conv("conv1", "data", 8, pad=20) + _relu("relu1", "conv1") + pool.format(n="pool1", b="conv1")
            + _conv("conv2", "pool1", 8, pad=1) + _relu("relu2", "conv2") + pool.format(n="pool2", b="conv2")
            + _conv("conv3", "pool2", 8, pad=1) + _relu("relu3", "conv3") + pool.format(n="pool3", b="conv3")
            + _conv("fc", "pool3", 16, k=3) + _relu("relu_fc", "fc")
            + _conv("score_fr", "fc", 5, k=1)
            + up.format(n="upscore2", b="score_fr", k=4, s=2)
            + _conv("score_pool2", "pool2", 5, k=1) + crop.format(n="score_pool2c", b="score_pool2", r="upscore2", o=1)
            + fuse.format(n="fuse_pool2", a="upscore2", b="score_pool2c")
            + up.format(n="upscore_pool2", b="fuse_pool2", k=4, s=2)
            + _conv("score_pool1", "pool1", 5, k=1) + crop.format(n="score_pool1c", b="score_pool1", r="upscore_pool2", o=1)
            + fuse.format(n="fuse_pool1", a="upscore_pool2", b="score_pool1c")
            + up.format(n="upscore4", b="fuse_pool1", k=8, s=4)
            + crop.format(n="score", b="upscore4", r="data", o=30))


def test_fcn8s_like_matches_opencv(tmp_path):
    path = _write(tmp_path, "fcn", fcn_net())
    result = run_case(Case("fcn8s_like", path, (1, 3, 32, 32), deploy=path), tmp_path)
    _check(result)
    assert {b.layer for b in result.blobs} >= {"upscore2", "score_pool2c", "upscore4", "score"}
    assert _onnx_case(path, (1, 3, 32, 32)) <= TOLERANCE


# -- PSPNet: the pyramid pooling module with Interp ------------------------------------------------

def psp_net() -> str:
    text = 'name: "pspnet_like"\n' + _input((1, 3, 24, 24)) + _conv("conv1", "data", 8, pad=1, stride=2) + _relu("relu1", "conv1")
    branches = []
    for bins, k in ((1, 12), (2, 6), (3, 4), (6, 2)):
        p = f"pool{bins}"
        text += (f'layer {{ name: "{p}" type: "Pooling" bottom: "conv1" top: "{p}" pooling_param {{ pool: AVE kernel_size: {k} stride: {k} }} }}\n'
                 + _conv(f"{p}_conv", p, 2, k=1) + _relu(f"{p}_relu", f"{p}_conv")
                 + f'layer {{ name: "{p}_interp" type: "Interp" bottom: "{p}_conv" top: "{p}_interp" interp_param {{ height: 12 width: 12 }} }}\n')
        branches.append(f"{p}_interp")
    text += ('layer { name: "concat" type: "Concat" bottom: "conv1" ' + " ".join(f'bottom: "{b}"' for b in branches)
             + ' top: "concat" }\n' + _conv("conv_last", "concat", 4, pad=1)
             + 'layer { name: "zoom" type: "Interp" bottom: "conv_last" top: "zoom" interp_param { zoom_factor: 2 } }\n'
             + 'layer { name: "to_input" type: "Interp" bottom: "conv_last" top: "to_input" interp_param { height: 24 width: 24 } }\n')
    return text


def test_pspnet_pyramid_matches_opencv(tmp_path):
    path = _write(tmp_path, "psp", psp_net())
    result = run_case(Case("pspnet_like", path, (1, 3, 24, 24), deploy=path), tmp_path)
    _check(result)
    assert {b.layer for b in result.blobs} >= {"pool1_interp", "pool6_interp", "zoom", "to_input"}
    assert _onnx_case(path, (1, 3, 24, 24)) <= TOLERANCE


# -- YOLOv2: Reorg (passthrough), Concat, Permute, Region -------------------------------------------

def yolo_net(region: bool = True) -> str:
    pool = 'layer {{ name: "{n}" type: "Pooling" bottom: "{b}" top: "{n}" pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}\n'
    return ('name: "yolov2_like"\n' + _input((1, 3, 16, 16))
            + _conv("conv1", "data", 8, pad=1) + _relu("relu1", "conv1", 0.1) + pool.format(n="pool1", b="conv1")
            + _conv("conv2", "pool1", 16, pad=1) + _relu("relu2", "conv2", 0.1) + pool.format(n="pool2", b="conv2")
            + _conv("conv3", "pool2", 16, pad=1) + _relu("relu3", "conv3", 0.1)
            + 'layer { name: "reorg" type: "Reorg" bottom: "conv2" top: "reorg" reorg_param { stride: 2 } }\n'
            + 'layer { name: "concat" type: "Concat" bottom: "reorg" bottom: "conv3" top: "concat" }\n'
            + _conv("conv_out", "concat", 5 * (5 + 2), k=1)
            + 'layer { name: "permute" type: "Permute" bottom: "conv_out" top: "permute" permute_param { order: 0 order: 2 order: 3 order: 1 } }\n'
            + ('layer { name: "region" type: "Region" bottom: "permute" top: "region" '
               'region_param { classes: 2 coords: 4 boxes_of_each_grid: 5 softmax: true } }\n' if region else ""))


def test_yolov2_head_matches_opencv(tmp_path):
    """OpenCV's caffe.proto has no region_param, so its Region gets no ``softmax`` from a
    prototxt and refuses the layer ("useLogistic || useSoftmax"): the net up to the Permute is
    compared with OpenCV, Region with the NumPy transcription of OpenCV's region_layer.cpp."""
    import convnet_io

    path = _write(tmp_path, "yolo", yolo_net())
    opencv_path = _write(tmp_path, "yolo_opencv", yolo_net(region=False))
    # Anchors as the YOLOv2 VOC cfg's, scaled to this small grid (OpenCV reads them as the blob).
    anchors = np.array([1.08, 1.19, 3.42, 4.41, 6.63, 11.38, 9.42, 5.11, 16.62, 10.52], dtype=np.float32) / 4
    net = convnet_io.load(path, input_shapes={"data": (1, 3, 16, 16)}, seed=0)
    net.set_blobs({"region": [anchors]})
    weights = tmp_path / "yolo.caffemodel"
    net.save_caffemodel(weights)
    feeds = {"data": (np.random.default_rng(0).standard_normal((1, 3, 16, 16)) * 2).astype(np.float32)}
    result = _run_two(net, opencv_path, weights, feeds, skip={"region"})
    _check(result)
    assert {b.layer for b in result.blobs} >= {"reorg", "concat", "permute"}
    values = net.run_values(feeds, ["permute", "region"])
    want = ref.region(values["permute"], anchors, classes=2, anchors=5, softmax=True, thresh=0.2, nms_threshold=0.4)
    assert rel_err(values["region"], want) <= 1e-5
    assert (want[:, 5:] > 0).any()  # detections survive the threshold and NMS
    assert _onnx_matches_torch(net, feeds) <= TOLERANCE


# -- Faster R-CNN and R-FCN heads: two inputs (image, regions) --------------------------------------

def rcnn_net(n_rois: int) -> str:
    return ('name: "faster_rcnn_head_like"\n' + _input((1, 3, 20, 24)) + _input((n_rois, 5), "rois")
            + _conv("conv1", "data", 8, pad=1) + _relu("relu1", "conv1")
            + 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            + _conv("conv2", "pool1", 18, pad=1) + _relu("relu2", "conv2")
            + 'layer { name: "roi_pool" type: "ROIPooling" bottom: "conv2" bottom: "rois" top: "roi_pool" '
              'roi_pooling_param { pooled_h: 3 pooled_w: 3 spatial_scale: 0.5 } }\n'
            + 'layer { name: "fc6" type: "InnerProduct" bottom: "roi_pool" top: "fc6" inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }\n'
            + _relu("relu6", "fc6")
            + 'layer { name: "cls_score" type: "InnerProduct" bottom: "fc6" top: "cls_score" inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }\n'
            + 'layer { name: "bbox_pred" type: "InnerProduct" bottom: "fc6" top: "bbox_pred" inner_product_param { num_output: 16 weight_filler { type: "xavier" } } }\n'
            + 'layer { name: "cls_prob" type: "Softmax" bottom: "cls_score" top: "cls_prob" }\n'
            + 'layer { name: "psroi" type: "PSROIPooling" bottom: "conv2" bottom: "rois" top: "psroi" '
              'psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }\n'
            + 'layer { name: "vote" type: "Pooling" bottom: "psroi" top: "vote" pooling_param { pool: AVE kernel_size: 3 stride: 3 } }\n')


def _run_two(net, prototxt: Path, weights: Path | None, feeds: dict, skip=frozenset()):
    """run_case for nets with several inputs: every OpenCV layer output against convnet's value."""
    from opencv_reference import Blob, Result

    cv_net = opencv_net(prototxt, weights)
    names = list(cv_net.getLayerNames())
    for k, v in feeds.items():
        cv_net.setInput(v, k)
    outs = cv_net.forwardAndRetrieve(names)
    graph = net.graph
    nodes = [n for n in graph.nodes if not n.is_source]
    ours = net.run_values(feeds, list(dict.fromkeys(t for n in nodes for t in n.tops)))
    result = Result(graph.name)
    result.feeds = feeds
    for node in nodes:
        if node.name in skip:
            continue
        if node.name not in names:
            result.problems.append(f"{node.name} missing from OpenCV")
            continue
        theirs = [np.asarray(o) for o in outs[names.index(node.name)]]
        if len(node.tops) > 1:  # only output 0 is kept from buffer reuse: a pass that stops here
            for k, v in feeds.items():
                cv_net.setInput(v, k)
            theirs = [np.asarray(o) for o in cv_net.forwardAndRetrieve([node.name])[0]]
        for value, t in zip(node.tops, theirs):
            if ours[value].shape != t.shape:
                result.problems.append(f"{node.name}: convnet {ours[value].shape}, OpenCV {t.shape}")
                continue
            result.blobs.append(Blob(node.name, value, rel_err(ours[value], t)))
    return result


def _frcnn_rois(n: int, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x1, y1 = rng.uniform(0, 18, n), rng.uniform(0, 14, n)
    w, h = rng.uniform(2, 16, n), rng.uniform(2, 12, n)
    rois = np.stack([np.zeros(n), x1, y1, np.minimum(x1 + w, 23), np.minimum(y1 + h, 19)], axis=1)
    return rois.astype(np.float32)


def test_faster_rcnn_and_rfcn_heads_match_opencv(tmp_path):
    import convnet_io

    rois = _frcnn_rois(6)
    path = _write(tmp_path, "frcnn", rcnn_net(len(rois)))
    net = convnet_io.load(path, seed=0)
    weights = tmp_path / "frcnn.caffemodel"
    net.save_caffemodel(weights)
    feeds = {"data": np.random.default_rng(0).standard_normal((1, 3, 20, 24)).astype(np.float32), "rois": rois}
    result = _run_two(net, path, weights, feeds)
    _check(result)
    assert {b.layer for b in result.blobs} >= {"roi_pool", "psroi", "cls_prob", "bbox_pred"}
    values = net.run_values(feeds, ["conv2:1", "roi_pool", "psroi"])
    assert rel_err(values["roi_pool"], ref.roi_pooling(values["conv2:1"], rois, (3, 3), 0.5)) <= 1e-5
    assert rel_err(values["psroi"], ref.psroi_pooling(values["conv2:1"], rois, 2, 3, 0.5)) <= 1e-5
    assert _onnx_matches_torch(net, feeds) <= TOLERANCE


# -- SegNet: OpenCV has no Upsample; the encoder (masks included) against OpenCV, the whole net
#    against a float64 NumPy chain ------------------------------------------------------------------

def segnet_net(decoder: bool = True) -> str:
    pool = ('layer {{ name: "{n}" type: "Pooling" bottom: "{b}" top: "{n}" top: "{n}_mask" '
            'pooling_param {{ pool: MAX kernel_size: 2 stride: 2 }} }}\n')
    text = ('name: "segnet_like"\n' + _input((1, 3, 16, 20))
            + _conv("conv1", "data", 8, pad=1) + _relu("relu1", "conv1") + pool.format(n="pool1", b="conv1")
            + _conv("conv2", "pool1", 8, pad=1) + _relu("relu2", "conv2") + pool.format(n="pool2", b="conv2"))
    if decoder:
        text += ('layer { name: "upsample2" type: "Upsample" bottom: "pool2" bottom: "pool2_mask" top: "upsample2" upsample_param { scale: 2 } }\n'
                 + _conv("conv_d2", "upsample2", 8, pad=1) + _relu("relu_d2", "conv_d2")
                 + 'layer { name: "upsample1" type: "Upsample" bottom: "conv_d2" bottom: "pool1_mask" top: "upsample1" upsample_param { upsample_h: 16 upsample_w: 20 } }\n'
                 + _conv("conv_d1", "upsample1", 4, pad=1)
                 + 'layer { name: "prob" type: "Softmax" bottom: "conv_d1" top: "prob" }\n')
    return text


def test_segnet_encoder_masks_match_opencv(tmp_path):
    """OpenCV gives every MAX Pooling layer a second output, the argmax mask, when the prototxt
    names one top (and refuses a consumer of a second top): OpenCV reads the encoder without the
    mask tops, and its second output is compared with convnet's mask top."""
    import convnet_io

    text = segnet_net(decoder=False)
    path = _write(tmp_path, "segnet_encoder", text)
    opencv_path = _write(tmp_path, "segnet_encoder_opencv", text.replace(' top: "pool1_mask"', "").replace(' top: "pool2_mask"', ""))
    net = convnet_io.load(path, seed=0)
    weights = tmp_path / "segnet.caffemodel"
    net.save_caffemodel(weights)
    feeds = {"data": np.random.default_rng(0).standard_normal((1, 3, 16, 20)).astype(np.float32)}
    result = _run_two(net, opencv_path, weights, feeds)
    _check(result)
    # OpenCV computes the mask of a layer whose outputs are all read or none (pool2 here; pool1's
    # first output feeds conv2, and OpenCV then leaves its mask out): pool1's is checked with NumPy.
    assert "pool2_mask" in {b.value for b in result.blobs}
    assert all(b.rel_err == 0 for b in result.blobs if b.value.endswith("_mask"))  # same indices


def test_segnet_decoder_matches_numpy(tmp_path):
    import convnet_io

    path = _write(tmp_path, "segnet", segnet_net())
    net = convnet_io.load(path, seed=0)
    x = np.random.default_rng(0).standard_normal((1, 3, 16, 20)).astype(np.float32)
    ids = [t for n in net.graph.nodes if not n.is_source for t in n.tops]
    ours = net.run_values({"data": x}, ids)
    b = {k: [np.float64(a) for a in v] for k, v in net.blobs().items()}
    relu = lambda v: np.maximum(v, 0)
    want = {"conv1": ref_conv(np.float64(x), *b["conv1"], pad=(1, 1))}
    want["conv1:1"] = relu(want["conv1"])
    want["pool1"], want["pool1_mask"] = ref.max_pool_with_mask(want["conv1:1"], (2, 2), (2, 2))
    want["conv2"] = ref_conv(want["pool1"], *b["conv2"], pad=(1, 1))
    want["conv2:1"] = relu(want["conv2"])
    want["pool2"], want["pool2_mask"] = ref.max_pool_with_mask(want["conv2:1"], (2, 2), (2, 2))
    want["upsample2"] = ref.segnet_upsample(want["pool2"], want["pool2_mask"], (8, 10))
    want["conv_d2"] = ref_conv(want["upsample2"], *b["conv_d2"], pad=(1, 1))
    want["conv_d2:1"] = relu(want["conv_d2"])
    want["upsample1"] = ref.segnet_upsample(want["conv_d2:1"], want["pool1_mask"], (16, 20))
    want["conv_d1"] = ref_conv(want["upsample1"], *b["conv_d1"], pad=(1, 1))
    e = np.exp(want["conv_d1"] - want["conv_d1"].max(axis=1, keepdims=True))
    want["prob"] = e / e.sum(axis=1, keepdims=True)
    assert set(want) == set(ids)
    errors = {v: rel_err(ours[v], want[v]) for v in ids}
    print(f"segnet_like decoder: {len(errors)} blobs vs NumPy, max rel err {max(errors.values()):.3g}")
    assert max(errors.values()) <= TOLERANCE, errors
    assert _onnx_matches_torch(net, {"data": x}) <= TOLERANCE


# -- Faster R-CNN with its RPN: Proposal (OpenCV's proposal_layer.cpp) feeding ROIPooling ----------

def rpn_net() -> str:
    return ('name: "faster_rcnn_rpn_like"\n' + _input((1, 3, 32, 40)) + _input((1, 3), "im_info")
            + _conv("conv1", "data", 8, pad=1, stride=2) + _relu("relu1", "conv1")
            + 'layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n'
            + _conv("rpn_conv", "pool1", 8, pad=1) + _relu("rpn_relu", "rpn_conv")
            + _conv("rpn_cls_score", "rpn_conv", 8, k=1) + _conv("rpn_bbox_pred", "rpn_conv", 16, k=1)
            + 'layer { name: "rpn_cls_score_reshape" type: "Reshape" bottom: "rpn_cls_score" top: "rpn_cls_score_reshape" '
              'reshape_param { shape { dim: 0 dim: 2 dim: -1 dim: 0 } } }\n'
            + 'layer { name: "rpn_cls_prob" type: "Softmax" bottom: "rpn_cls_score_reshape" top: "rpn_cls_prob" }\n'
            + 'layer { name: "rpn_cls_prob_reshape" type: "Reshape" bottom: "rpn_cls_prob" top: "rpn_cls_prob_reshape" '
              'reshape_param { shape { dim: 0 dim: 8 dim: -1 dim: 0 } } }\n'
            + 'layer { name: "proposal" type: "Proposal" bottom: "rpn_cls_prob_reshape" bottom: "rpn_bbox_pred" '
              'bottom: "im_info" top: "rois" top: "scores" proposal_param { feat_stride: 4 base_size: 4 ratio: 0.5 ratio: 2 '
              'scale: 2 scale: 4 pre_nms_topn: 60 post_nms_topn: 60 nms_thresh: 0.6 } }\n'
            + 'layer { name: "roi_pool" type: "ROIPooling" bottom: "pool1" bottom: "rois" top: "roi_pool" '
              'roi_pooling_param { pooled_h: 2 pooled_w: 2 spatial_scale: 0.25 } }\n'
            + 'layer { name: "cls_score" type: "InnerProduct" bottom: "roi_pool" top: "cls_score" inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n')


def test_faster_rcnn_proposal_matches_opencv(tmp_path):
    import convnet_io

    path = _write(tmp_path, "rpn", rpn_net())
    net = convnet_io.load(path, seed=1)
    weights = tmp_path / "rpn.caffemodel"
    net.save_caffemodel(weights)
    feeds = {"data": (np.random.default_rng(1).standard_normal((1, 3, 32, 40)) * 2).astype(np.float32),
             "im_info": np.array([[30, 37, 1]], dtype=np.float32)}
    result = _run_two(net, path, weights, feeds)
    _check(result)
    assert {b.value for b in result.blobs} >= {"rois", "scores", "roi_pool", "cls_score"}
    values = net.run_values(feeds, ["rpn_cls_prob_reshape", "rpn_bbox_pred", "rois", "scores"])
    rois, scores = ref.proposal(values["rpn_cls_prob_reshape"], values["rpn_bbox_pred"], feeds["im_info"],
                                4, 4, (0.5, 2.0), (2.0, 4.0), 60, 60, 0.6)
    assert rel_err(values["rois"], rois) <= 1e-5 and rel_err(values["scores"], scores) <= 1e-5
    assert 1 < (scores > 0).sum() < 60  # NMS dropped some of the 60 best, and some remain


# -- convnet diff across the fork layers ------------------------------------------------------------

@pytest.mark.parametrize("net, against", [("segnet", "onnxruntime"), ("psp", "opencv"), ("fcn", "opencv")])
def test_diff_runs_across_fork_layers(tmp_path, net, against):
    """`convnet diff` (the CLI) over the fork layers: every blob of the second run agrees."""
    from click.testing import CliRunner
    from convnet_cli.main import cli

    text = {"segnet": segnet_net, "psp": psp_net, "fcn": fcn_net}[net]()
    path = _write(tmp_path, net, text)
    result = CliRunner().invoke(cli, ["diff", str(path), "--against", against, "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "blobs agree" in result.output


def test_slice_dim_and_depthwise_names_match_opencv(tmp_path):
    """Slice with the old ``slice_dim`` field and the DepthwiseConvolution / ConvolutionDepthwise
    names as OpenCV reads them (it knows only ConvolutionDepthwise: the other is given to it as
    Convolution, and slice_dim as axis), ShuffleChannel and ReLU6."""
    body = ('name: "mobile_ports"\n' + _input((1, 6, 9, 8))
            + 'layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param { num_output: 6 group: 6 kernel_size: 3 pad: 1 } }\n'
            + 'layer { name: "dw2" type: "{dw2}" bottom: "dw" top: "dw2" convolution_param { num_output: 12 group: 6 kernel_size: 3 stride: 2 } }\n'
            + 'layer { name: "relu6" type: "ReLU6" bottom: "dw2" top: "relu6" }\n'
            + 'layer { name: "shuffle" type: "ShuffleChannel" bottom: "relu6" top: "shuffle" shuffle_channel_param { group: 3 } }\n'
            + 'layer { name: "slice" type: "Slice" bottom: "shuffle" top: "s1" top: "s2" slice_param { slice_dim: 2 slice_point: 2 } }\n'
            + 'layer { name: "sum" type: "Eltwise" bottom: "s1" bottom: "s2" top: "sum" }\n')
    path = _write(tmp_path, "mobile", body.replace("{dw2}", "DepthwiseConvolution"))
    # OpenCV reads Slice's ``axis`` only (slice_dim would cut channels): it is given axis 2.
    opencv_path = _write(tmp_path, "mobile_opencv", body.replace("{dw2}", "Convolution").replace("slice_dim: 2", "axis: 2"))
    result = run_case(Case("mobile_ports", path, (1, 6, 9, 8), deploy=opencv_path, input_scale=4.0), tmp_path)
    _check(result)
    assert {b.layer for b in result.blobs} >= {"dw", "dw2", "relu6", "shuffle", "slice"}


def test_senet_axpy_block_matches_opencv(tmp_path):
    """A SENet block with Axpy. OpenCV swaps X and Y (a * Y + X): Axpy is compared with the NumPy
    transcription of SENet's layer, the rest of the block with OpenCV."""
    text = ('name: "senet_axpy"\n' + _input((1, 8, 6, 7))
            + _conv("conv", "data", 8, pad=1)
            + 'layer { name: "squeeze" type: "Pooling" bottom: "conv" top: "squeeze" pooling_param { pool: AVE global_pooling: true } }\n'
            + _conv("fc1", "squeeze", 2, k=1) + _relu("fc1_relu", "fc1") + _conv("fc2", "fc1", 8, k=1)
            + 'layer { name: "gate" type: "Sigmoid" bottom: "fc2" top: "gate" }\n'
            + 'layer { name: "axpy" type: "Axpy" bottom: "gate" bottom: "conv" bottom: "data" top: "axpy" }\n')
    path = _write(tmp_path, "senet", text)
    swapped = Deviation("OpenCV's importer (caffe_importer.cpp) rewrites Axpy as Scale(bottom 2, bottom 0) "
                        "+ Eltwise SUM with bottom 1, i.e. a * Y + X; SENet's axpy_layer.cpp computes "
                        "F = a * X + Y (X = bottom 1, Y = bottom 2)",
                        lambda node, bottoms, blobs: ref.axpy(*bottoms))
    result = run_case(Case("senet_axpy", path, (1, 8, 6, 7), deploy=path, deviations={"axpy": swapped}), tmp_path)
    # OpenCV's helper layer for the rewrite ("<name>/scale").
    result.problems.remove("OpenCV layer 'axpy/scale' is no convnet layer")
    _check(result)
    assert ("axpy", "numpy") in {(b.layer, b.against) for b in result.blobs}
    assert result.opencv_deviates["axpy"] > 100 * TOLERANCE  # OpenCV still swaps X and Y
