"""Write docs/LAYERS.md from the registries and the tests: every Caffe layer type, where it is
supported (graph shape rule, PyTorch converter, ONNX exporter) and which tests exercise it.

``python tools/gen_layers_doc.py`` rewrites the file; ``--check`` exits 1 when it is stale.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "LAYERS.md"

NOTES = {
    "ContrastiveLoss": "margin, legacy_version; Caffe's gradient (distance + 1e-4); not exported (training only)",
    "HingeLoss": "L1, L2; not exported (training only)",
    "InfogainLoss": "softmax inside, H from infogain_loss_param.source (BlobProto) or a third bottom, axis, ignore_label, normalization, prob top; not exported (training only)",
    "MultinomialLogisticLoss": "probabilities in, log threshold 1e-20 with Caffe's gradient; not exported (training only)",
    "SPP": "pyramid_height, MAX/AVE (STOCHASTIC at TEST); each level Caffe's Pooling; one level keeps the 4-D top",
    "BatchReindex": "rows by a float index blob (truncated); gradients accumulated; ONNX Gather",
    "Filter": "rows whose selector is non-zero; graph shape is Caffe's set-up shape (all rows); ONNX Compress with a symbolic row count",
    "HDF5Output": "writes bottoms 0 and 1 as datasets data and label to file_name on each forward; no top, so not in ONNX",
    "Im2col": "kernel/stride/pad/dilation per spatial axis, any channel axis; F.unfold in 2-D, one-hot grouped Conv otherwise and in ONNX",
    "Python": "pycaffe layers: see the pycaffe issue",
    "Pooling": "MAX/AVE (STOCHASTIC at TEST); ceil with Caffe's clip rule, FLOOR, global; AVE divisor counts padding, not the ceil overhang; MAX mask top (plane index h*W+w, SegNet); the forks' ceil_mode",
    "LRN": "ACROSS_CHANNELS and WITHIN_CHANNEL; alpha divided by local_size (by local_size² within a channel) as Caffe",
    "Convolution": "group, dilation, separate h/w kernel/pad/stride, bias_term; C++ truncating output size; N-D (1 to 3 spatial axes), any channel axis, force_nd_im2col",
    "Deconvolution": "group, stride, pad, bias_term; N-D and any channel axis as Convolution",
    "InnerProduct": "axis, transpose, bias_term",
    "BatchNorm": "use_global_stats, moving_average_fraction, eps, the third blob's scale factor; exported with statistics folded",
    "Scale": "axis, num_axes, bias_term, second bottom",
    "Bias": "axis, num_axes, second bottom",
    "Dropout": "scaled by 1/(1-p) at TRAIN, identity at TEST",
    "Eltwise": "SUM with coeffs, PROD, MAX",
    "Softmax": "any axis",
    "SoftmaxWithLoss": "ignore_label, normalization (FULL, VALID, BATCH_SIZE, NONE); not exported (training only)",
    "Accuracy": "top_k, axis, ignore_label, per-class top; not exported (training only)",
    "EuclideanLoss": "not exported (training only)",
    "SigmoidCrossEntropyLoss": "ignore_label, normalization; not exported (training only)",
    "Silence": "not exported",
    "ArgMax": "out_max_val, top_k, axis",
    "Reshape": "shape with 0 and -1, axis, num_axes",
    "Crop": "axis, one offset or one per axis",
    "Input": "a net input",
    "Data": "LMDB (Datum raw or encoded); shape from batch_size/crop_size or --input-shape",
    "ImageData": "list file, root_folder, new_height/new_width, is_color, shuffle",
    "HDF5Data": "list of .h5 files; shape from --input-shape",
    "DummyData": "shapes from the layer",
    "Permute": "SSD: order, completed with the axes it leaves out",
    "PriorBox": "SSD: min/max sizes (their integer part, as the fork), aspect ratios with flip, clip, 1 or 4 variances, img_size or img_h/img_w, step or step_h/step_w, offset; a constant in ONNX",
    "Normalize": "SSD: across_spatial, channel_shared, eps inside the square root",
    "Upsample": "SegNet: max-unpooling by the pooling mask (scale, scale_h/w, pad_out_h/w, upsample_h/w); one bottom: YOLOv3 ports' nearest-neighbour scale; ONNX ScatterElements / Resize",
    "Interp": "PSPNet/DeepLab: zoom_factor, shrink_factor, height/width, non-positive pad_beg/pad_end; bilinear with aligned corners as interp2",
    "ROIPooling": "Fast R-CNN: pooled_h/w, spatial_scale; corners rounded half away from zero, empty bins 0; ONNX MaxRoiPool",
    "PSROIPooling": "R-FCN: output_dim, group_size, spatial_scale; ONNX bin masks and Einsum",
    "Reorg": "YOLOv2: darknet's reorg (forward=0) as OpenCV runs it, stride",
    "Region": "YOLOv2 as OpenCV's region_layer.cpp: channels-last bottom, anchors as the blob, softmax, thresh 0.2, per-class NMS 0.4; ONNX NonMaxSuppression",
    "Proposal": "py-faster-rcnn RPN as OpenCV runs it: anchors from base_size/ratio/scale, pixel CENTER_SIZE decode, clip to im_info, pre_nms_topn, NMS with +1 areas, post_nms_topn rows (zeros after); min_size unused as in OpenCV; no ONNX form (ONNX NMS cannot measure +1 areas)",
    "ReLU6": "min(max(x, 0), 6)",
    "ShuffleChannel": "ShuffleNet: group",
    "Axpy": "SENet: a * X + Y, a per (n, c)",
    "ConvolutionDepthwise": "MobileNet ports (also DepthwiseConvolution): Convolution with its group as written",
    "LSTM": "x (T×N×…), cont, x_static, expose_hidden (h_0/c_0 in, h_T/c_T out); blobs W_xc, b_c, [W_xc_static], W_hc, gates i, f, o, g; Caffe's LSTMUnit gradient; state carried across TRAIN passes; ONNX Scan over time (any T)",
    "RNN": "x (T×N×…), cont, x_static, expose_hidden (h_0 in, h_T out); blobs W_xh, b_h, [W_xh_static], W_hh, W_ho, b_o, tanh; state carried across TRAIN passes; ONNX Scan over time (any T)",
    "LSTMUnit": "c_{t-1}, gates (i, f, o, g), cont_t; forget gate 0 where cont is 0, otherwise cont·σ; Caffe's backward",
    "DetectionOutput": "SSD: CORNER/CENTER_SIZE/CORNER_SIZE decoding with variance, per-class NMS (top_k, eta), keep_top_k, confidence_threshold, share_location, background_label_id; rows 1x1xNx7 in Caffe-SSD's order; ONNX: TopK + NonMaxSuppression (eta 1 only)",
}


# Every name in BVLC Caffe's layer registry (REGISTER_LAYER_CLASS / REGISTER_LAYER_CREATOR in
# src/caffe/layers/*.cpp and layer_factory.cpp, master): each gets a row, known or not.
BVLC_REGISTRY = (
    "AbsVal", "Accuracy", "ArgMax", "BNLL", "BatchNorm", "BatchReindex", "Bias", "Clip", "Concat",
    "ContrastiveLoss", "Convolution", "Crop", "Data", "Deconvolution", "Dropout", "DummyData", "ELU",
    "Eltwise", "Embed", "EuclideanLoss", "Exp", "Filter", "Flatten", "HDF5Data", "HDF5Output", "HingeLoss",
    "Im2col", "ImageData", "InfogainLoss", "InnerProduct", "Input", "LRN", "LSTM", "LSTMUnit", "Log", "MVN",
    "MemoryData", "MultinomialLogisticLoss", "PReLU", "Parameter", "Pooling", "Power", "Python", "RNN",
    "ReLU", "Reduction", "Reshape", "SPP", "Scale", "Sigmoid", "SigmoidCrossEntropyLoss", "Silence", "Slice",
    "Softmax", "SoftmaxWithLoss", "Split", "Swish", "TanH", "Threshold", "Tile", "WindowData",
)


def rows() -> list[tuple[str, ...]]:
    sys.path.insert(0, str(ROOT))
    from convnet_io.graph.layers import get_spec, supported_types
    from convnet_io.onnx_export import exporter_types
    from convnet_io.torch_model import converter_types

    torch_types, onnx_types = set(converter_types()), set(exporter_types())
    tests = sorted((ROOT / "tests").glob("test_*.py"))
    texts = {t.name: t.read_text(encoding="utf-8") for t in tests}
    out = []
    for t in sorted(set(supported_types()) | set(BVLC_REGISTRY)):
        spec = get_spec(t)
        bvlc = "yes" if t in BVLC_REGISTRY else "no"
        if spec is None:
            out.append((t, bvlc, "no", "no", "no", NOTES.get(t, ""), "-"))
            continue
        pattern = re.compile(rf'type:\s*\\?"{re.escape(t)}\\?"|"{re.escape(t)}"')
        used = [name for name, text in texts.items() if pattern.search(text)]
        source = spec.source
        out.append((
            t,
            bvlc,
            "yes",
            "source" if source else ("yes" if t in torch_types else "no"),
            "input" if source else ("yes" if t in onnx_types else "training only" if t in NOTES and "not exported" in NOTES[t] else "no"),
            NOTES.get(t, ""),
            ", ".join(f"`{u}`" for u in used) or "-",
        ))
    return out


def render() -> str:
    head = ["# Layers", "",
            "Every type in BVLC Caffe's layer registry and every other Caffe layer type convnet knows "
            "(the forks'). BVLC says whether the type is in BVLC Caffe's registry; graph whether convnet "
            "has its shape rule in `convnet_io/graph/layers/`; "
            "PyTorch and ONNX columns say whether a converter (`convnet_io/torch_model/converters/`) and "
            "an exporter (`convnet_io/onnx_export/`) exist. Tests compare against float64 NumPy "
            "references of Caffe's formulas and against OpenCV's Caffe importer on whole nets.",
            "Generated by `python tools/gen_layers_doc.py`; a test fails when it is stale.", "",
            "| type | BVLC | graph | PyTorch | ONNX | semantics | tests |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    return "\n".join(head + [f"| {' | '.join(r)} |" for r in rows()]) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print("docs/LAYERS.md is stale: run python tools/gen_layers_doc.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
