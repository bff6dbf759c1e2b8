"""The forks' layers one by one: PyTorch and ONNX Runtime against float64 NumPy transcriptions of
the forks' C++ (``fork_reference.py``): SegNet's pooling mask and Upsample, PSPNet's Interp,
Fast R-CNN's ROIPooling, R-FCN's PSROIPooling, darknet/OpenCV's Reorg and Region, ShuffleNet's
ShuffleChannel, SENet's Axpy, ReLU6 and the depthwise type names; shape rules and bad input."""
from __future__ import annotations

import fork_reference as ref
import numpy as np
import pytest
from helpers import graph_from_text, input_layer, rel_err
from test_onnx_export import check_ref, export_case, ref_conv

from convnet_io.errors import ConvnetError

TOL = 1e-5


def _x(shape, seed=0, scale=3.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# -- SegNet: the MAX pooling mask and max-unpooling ------------------------------------------------

POOL_MASK = """
layer { name: "p_k2s2" type: "Pooling" bottom: "data" top: "p_k2s2" top: "m_k2s2" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "p_k3s2p1" type: "Pooling" bottom: "data" top: "p_k3s2p1" top: "m_k3s2p1" pooling_param { pool: MAX kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "p_floor" type: "Pooling" bottom: "data" top: "p_floor" top: "m_floor" pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }
layer { name: "p_k2s3p1" type: "Pooling" bottom: "data" top: "p_k2s3p1" top: "m_k2s3p1" pooling_param { pool: MAX kernel_size: 2 stride: 3 pad: 1 } }
layer { name: "up" type: "Upsample" bottom: "p_k2s2" bottom: "m_k2s2" top: "up" upsample_param { scale: 2 } }
layer { name: "up_pad" type: "Upsample" bottom: "p_k3s2p1" bottom: "m_k3s2p1" top: "up_pad" upsample_param { scale: 2 pad_out_h: true pad_out_w: true } }
layer { name: "up_size" type: "Upsample" bottom: "p_floor" bottom: "m_floor" top: "up_size" upsample_param { upsample_h: 9 upsample_w: 11 } }
"""


def test_pooling_mask_and_segnet_upsample(tmp_path):
    x = _x((2, 3, 9, 11))
    x[0, 0, :2, :2] = 1.5  # ties: Caffe keeps the first maximum in row-major order
    case = export_case(tmp_path, POOL_MASK, {"data": x})
    expected = {}
    for name, k, s, p, ceil in [("k2s2", 2, 2, 0, True), ("k3s2p1", 3, 2, 1, True), ("floor", 3, 2, 0, False),
                                ("k2s3p1", 2, 3, 1, True)]:
        out, mask = ref.max_pool_with_mask(x, (k, k), (s, s), (p, p), ceil)
        expected[f"p_{name}"], expected[f"m_{name}"] = out, mask
    expected["up"] = ref.segnet_upsample(expected["p_k2s2"], expected["m_k2s2"], (10, 12))
    expected["up_pad"] = ref.segnet_upsample(expected["p_k3s2p1"], expected["m_k3s2p1"], (9, 11))
    expected["up_size"] = ref.segnet_upsample(expected["p_floor"], expected["m_floor"], (9, 11))
    check_ref(case, expected)
    for name in ("m_k2s2", "m_k3s2p1", "m_floor", "m_k2s3p1"):  # indices are exact
        assert np.array_equal(case.torch[name], expected[name]) and np.array_equal(case.ort[name], expected[name])


def test_nearest_upsample_and_ceil_mode(tmp_path):
    layers = """
layer { name: "up2" type: "Upsample" bottom: "data" top: "up2" upsample_param { scale: 2 } }
layer { name: "up3" type: "Upsample" bottom: "data" top: "up3" upsample_param { scale: 3 } }
"""
    x = _x((2, 3, 4, 5))
    case = export_case(tmp_path, layers, {"data": x})
    check_ref(case, {"up2": ref.nearest_upsample(x, 2), "up3": ref.nearest_upsample(x, 3)})
    g = graph_from_text(input_layer((1, 1, 10, 10)) + """
layer { name: "p" type: "Pooling" bottom: "data" top: "p" pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: false } }
layer { name: "q" type: "Pooling" bottom: "data" top: "q" pooling_param { pool: MAX kernel_size: 3 stride: 2 ceil_mode: true } }
""")
    assert g.shapes["p"] == (1, 1, 4, 4) and g.shapes["q"] == (1, 1, 5, 5)


# -- PSPNet / DeepLab Interp -----------------------------------------------------------------------

INTERP = """
layer { name: "zoom" type: "Interp" bottom: "data" top: "zoom" interp_param { zoom_factor: 3 } }
layer { name: "shrink" type: "Interp" bottom: "data" top: "shrink" interp_param { shrink_factor: 2 } }
layer { name: "size" type: "Interp" bottom: "data" top: "size" interp_param { height: 13 width: 4 } }
layer { name: "both" type: "Interp" bottom: "data" top: "both" interp_param { shrink_factor: 2 zoom_factor: 4 } }
layer { name: "crop" type: "Interp" bottom: "data" top: "crop" interp_param { zoom_factor: 2 pad_beg: -1 pad_end: -2 } }
layer { name: "one" type: "Interp" bottom: "data" top: "one" interp_param { height: 1 width: 1 } }
layer { name: "same" type: "Interp" bottom: "data" top: "same" interp_param { height: 7 width: 10 } }
"""


def test_interp_zoom_shrink_size_and_crop(tmp_path):
    x = _x((2, 3, 7, 10))
    case = export_case(tmp_path, INTERP, {"data": x})
    shapes = {v: case.net.graph.shapes[v] for v in ("zoom", "shrink", "size", "both", "crop", "one")}
    # The fork's size rules: zoom in + (in - 1)(z - 1), shrink (in - 1) / s + 1, both: shrink first.
    assert shapes == {"zoom": (2, 3, 19, 28), "shrink": (2, 3, 4, 5), "size": (2, 3, 13, 4),
                      "both": (2, 3, 13, 17), "crop": (2, 3, 7, 13), "one": (2, 3, 1, 1)}
    check_ref(case, {v: ref.interp(x, -1 if v == "crop" else 0, -2 if v == "crop" else 0, s[2:])
                     for v, s in {**shapes, "same": (2, 3, 7, 10)}.items()})


# -- two-stage detection ---------------------------------------------------------------------------

def _rois(n_images, h, w, count, seed=1, scale=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        x1, y1 = rng.uniform(-2, w / scale - 2), rng.uniform(-2, h / scale - 2)
        x2, y2 = x1 + rng.uniform(0, w / scale), y1 + rng.uniform(0, h / scale)
        rows.append([i % n_images, x1, y1, x2, y2])
    rows.append([0, 2.5, 3.5, 2.5, 3.5])  # a one-pixel region, halves rounded away from zero
    return np.asarray(rows, dtype=np.float32)


def test_roi_pooling_and_psroi_pooling(tmp_path):
    x = _x((2, 18, 10, 12))
    rois = _rois(2, 10, 12, 9, scale=0.5)
    layers = """
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" roi_pooling_param { pooled_h: 3 pooled_w: 4 spatial_scale: 0.5 } }
layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" psroi_pooling_param { spatial_scale: 0.5 output_dim: 2 group_size: 3 } }
"""
    case = export_case(tmp_path, layers, {"data": x, "rois": rois})
    check_ref(case, {"roi": ref.roi_pooling(x, rois, (3, 4), 0.5), "ps": ref.psroi_pooling(x, rois, 2, 3, 0.5)})


# -- YOLOv2: Reorg and Region ----------------------------------------------------------------------

def test_reorg_is_darknets_permutation(tmp_path):
    x = _x((2, 8, 6, 4))
    case = export_case(tmp_path, 'layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }',
                       {"data": x})
    check_ref(case, {"reorg": ref.reorg(x, 2)})
    assert case.net.graph.shapes["reorg"] == (2, 32, 3, 2)


def test_region_as_opencv(tmp_path):
    """OpenCV's defaults (thresh 0.2, NMS at 0.4): the ports' region_param has no field for them."""
    import torch
    from helpers import module_from_text

    classes, anchors = 3, 2
    x = _x((2, 4, 3, anchors * (5 + classes)), seed=4, scale=1.0)
    text = input_layer(x.shape) + ('layer { name: "region" type: "Region" bottom: "data" top: "region" '
                                   f'region_param {{ classes: {classes} coords: 4 boxes_of_each_grid: {anchors} softmax: true }} }}')
    _, module = module_from_text(text)
    biases = np.array([3.0, 3.5, 2.5, 2.0], dtype=np.float32)  # large boxes: they overlap
    with torch.no_grad():
        module.layer("region").caffe_blobs()[0].copy_(torch.from_numpy(biases))
        got = module.run({"data": torch.from_numpy(x)}, ["region"])["region"].numpy()
    want = ref.region(x, biases, classes, anchors, softmax=True, thresh=0.2, nms_threshold=0.4)
    before_nms = ref.region(x, biases, classes, anchors, softmax=True, thresh=0.2, nms_threshold=0.0)
    assert got.shape == (2 * 4 * 3 * anchors, 5 + classes)
    assert rel_err(got, want) <= TOL
    case = export_case(tmp_path, text.split("\n", 1)[1], {"data": x},
                       blobs=lambda blobs, rng: {"region": [biases]})
    check_ref(case, {"region": want})  # ONNX: NonMaxSuppression per class, in OpenCV's order
    assert (want[:, 5:] > 0).any() and (before_nms[:, 5:] > 0).sum() > (want[:, 5:] > 0).sum()  # NMS acted


# -- ShuffleNet, SENet, MobileNet ports ------------------------------------------------------------

MOBILE = """
layer { name: "relu6" type: "ReLU6" bottom: "data" top: "relu6" }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "data" top: "shuffle" shuffle_channel_param { group: 3 } }
layer { name: "gap" type: "Pooling" bottom: "data" top: "gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "axpy" type: "Axpy" bottom: "gap" bottom: "data" bottom: "relu6" top: "axpy" }
layer { name: "dw" type: "ConvolutionDepthwise" bottom: "data" top: "dw" convolution_param { num_output: 6 group: 6 kernel_size: 3 pad: 1 } }
layer { name: "dw2" type: "DepthwiseConvolution" bottom: "data" top: "dw2" convolution_param { num_output: 12 group: 6 kernel_size: 3 stride: 2 bias_term: false } }
"""


def test_relu6_shuffle_axpy_depthwise(tmp_path):
    x = _x((2, 6, 5, 7), scale=5.0)
    case = export_case(tmp_path, MOBILE, {"data": x})
    b = case.blobs
    relu6 = np.clip(np.float64(x), 0, 6)
    gap = np.float64(x).mean(axis=(2, 3), keepdims=True)
    check_ref(case, {
        "relu6": relu6, "shuffle": ref.shuffle_channel(x, 3), "axpy": ref.axpy(gap, x, relu6),
        "dw": ref_conv(np.float64(x), b["dw"][0], b["dw"][1], pad=(1, 1), group=6),
        "dw2": ref_conv(np.float64(x), b["dw2"][0], stride=(2, 2), group=6),
    })
    assert case.net.graph.node("dw2").params[0].shape == (12, 1, 3, 3)


def test_bilinear_filler_deconvolution_upsamples():
    """FCN's upsampling: a Deconvolution with Caffe's bilinear filler, group = channels."""
    import convnet_io

    text = input_layer((1, 2, 4, 5)) + """
layer { name: "up" type: "Deconvolution" bottom: "data" top: "up" convolution_param { num_output: 2 group: 2 kernel_size: 4 stride: 2 bias_term: false weight_filler { type: "bilinear" } } }
"""
    import tempfile
    from pathlib import Path

    from helpers import graph_from_text as _g  # noqa: F401

    path = Path(tempfile.mkdtemp()) / "up.prototxt"
    path.write_text(text)
    net = convnet_io.load(path, seed=0)
    w = net.blobs()["up"][0]
    assert rel_err(w, ref.bilinear_filler(w.shape)) <= 1e-7


# -- bad input -------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer, message", [
    ('layer { name: "u" type: "Upsample" bottom: "data" top: "u" upsample_param { scale: 3 pad_out_h: true } }',
     "pad_out_h"),
    ('layer { name: "i" type: "Interp" bottom: "data" top: "i" interp_param { pad_beg: 1 } }', "non-positive"),
    ('layer { name: "i" type: "Interp" bottom: "data" top: "i" }', "zoom_factor"),
    ('layer { name: "s" type: "ShuffleChannel" bottom: "data" top: "s" shuffle_channel_param { group: 4 } }',
     "divisible"),
    ('layer { name: "r" type: "Reorg" bottom: "data" top: "r" reorg_param { stride: 4 } }', "stride"),
    ('layer { name: "p" type: "Pooling" bottom: "data" top: "p" top: "m" pooling_param { pool: AVE kernel_size: 2 } }',
     "1 top"),
])
def test_bad_fork_layers_name_the_layer(layer, message):
    with pytest.raises(ConvnetError, match=message):
        graph_from_text(input_layer((1, 6, 6, 6)) + layer)


def test_deploy_text_writes_the_fork_layers_back():
    """deploy_text (what OpenCV and `convnet diff --against opencv` read) keeps every fork field."""
    from convnet_io.caffe.deploy import deploy_text

    text = (input_layer((1, 12, 8, 8)) + input_layer((3, 5), "rois") + POOL_MASK.replace("9 ", "8 ").replace("11 }", "8 }")
            .split('layer { name: "up_size"')[0] + INTERP.replace("height: 7 width: 10", "height: 8 width: 8") + MOBILE
            + """
layer { name: "up1" type: "Upsample" bottom: "data" top: "up1" upsample_param { scale_h: 2 scale_w: 3 } }
layer { name: "roi" type: "ROIPooling" bottom: "data" bottom: "rois" top: "roi" roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.25 } }
layer { name: "ps" type: "PSROIPooling" bottom: "data" bottom: "rois" top: "ps" psroi_pooling_param { spatial_scale: 0.5 output_dim: 12 group_size: 1 } }
layer { name: "cls" type: "Convolution" bottom: "data" top: "cls" convolution_param { num_output: 8 kernel_size: 1 } }
layer { name: "box" type: "Convolution" bottom: "data" top: "box" convolution_param { num_output: 16 kernel_size: 1 } }
layer { name: "info" type: "Reshape" bottom: "rois" top: "info" reshape_param { shape { dim: 1 dim: -1 } } }
layer { name: "prop" type: "Proposal" bottom: "cls" bottom: "box" bottom: "info" top: "prop" proposal_param { feat_stride: 8 ratio: 0.5 ratio: 1 scale: 4 scale: 8 post_nms_topn: 20 } }
layer { name: "reorg" type: "Reorg" bottom: "data" top: "reorg" reorg_param { stride: 2 } }
layer { name: "perm" type: "Permute" bottom: "reorg" top: "perm" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "region" type: "Region" bottom: "perm" top: "region" region_param { classes: 3 coords: 4 boxes_of_each_grid: 6 softmax: true } }
""")
    g1 = graph_from_text(text)
    g2 = graph_from_text(deploy_text(g1))
    for node in g1.nodes:
        if not node.is_source:
            other = g2.node(node.name)
            assert (other.type, other.attrs, other.tops) == (node.type, node.attrs, node.tops), node.name
    assert g2.shapes == {k: v for k, v in g1.shapes.items() if k in g2.shapes}


def test_proposal_is_not_exported_to_onnx_and_says_why(tmp_path):
    from convnet_io.onnx_export import export_onnx

    text = input_layer((1, 8, 4, 5)) + input_layer((1, 16, 4, 5), "deltas") + input_layer((1, 3), "im_info") + """
layer { name: "proposal" type: "Proposal" bottom: "data" bottom: "deltas" bottom: "im_info" top: "rois" proposal_param { ratio: 0.5 ratio: 2 scale: 8 scale: 16 } }
"""
    graph = graph_from_text(text)
    assert graph.shapes["rois"] == (300, 5)
    with pytest.raises(ConvnetError, match="no exact ONNX form"):
        export_onnx(graph, {})
    import convnet_io

    path = tmp_path / "rpn.prototxt"
    path.write_text(text)
    net = convnet_io.load(path)  # forward falls back to PyTorch (backend "auto")
    out = net.forward({"data": np.full((1, 8, 4, 5), 0.5, np.float32), "deltas": np.zeros((1, 16, 4, 5), np.float32),
                       "im_info": np.array([[64, 80, 1]], np.float32)})
    assert out["rois"].shape == (300, 5) and (out["rois"][:, 3] <= 79).all()
    with pytest.raises(ConvnetError, match="anchors"):
        graph_from_text(text.replace("scale: 16 ", ""))
