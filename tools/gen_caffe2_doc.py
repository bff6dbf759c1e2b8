"""Write docs/CAFFE2.md from the Caffe2 registries: every Caffe2 operator convnet reads (with the
Caffe layers it becomes, the arguments and inputs the registry accepts), the fill ops of init
nets, and the Caffe layer types the NetDef writer turns back into operators.

``python tools/gen_caffe2_doc.py`` rewrites the file; ``--check`` exits 1 when it is stale.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CAFFE2.md"

# The Caffe layer(s) each operator becomes, and what to know. Every registered operator needs a row
# (the generator refuses to run otherwise), so a new converter cannot go undocumented.
READS = {
    "Conv": ("Convolution", "group, dilations, kernels/strides/pads lists or _h/_w forms, a kernel taken from W; legacy_pad NOTSET, VALID, SAME (symmetric padding only)"),
    "ConvTranspose": ("Deconvolution", "group, lists as Conv; no adj, no dilation"),
    "FC": ("InnerProduct", "axis; axis_w (W read as a matrix)"),
    "FCTransposed": ("InnerProduct (transpose)", "W stored (K, N)"),
    "Relu": ("ReLU", ""),
    "LeakyRelu": ("ReLU (negative_slope)", "alpha, default 0.01"),
    "PRelu": ("PReLU", "one slope: channel_shared"),
    "Sigmoid": ("Sigmoid", ""),
    "Tanh": ("TanH", ""),
    "Elu": ("ELU", "alpha"),
    "LRN": ("LRN ACROSS_CHANNELS", "the scale output dropped; alpha/size in both"),
    "MaxPool": ("Pooling MAX", "global_pooling; legacy_pad NOTSET/VALID (floor), CAFFE_LEGACY_POOLING (Caffe's ceil), SAME (pads from the input size; an odd tail as ceil rounding)"),
    "AveragePool": ("Pooling AVE", "as MaxPool; padding only with count_include_pad:1 (and, with CAFFE_LEGACY_POOLING, no window past it), SAME only without head padding"),
    "Dropout": ("Dropout", "ratio, is_test; the mask output dropped"),
    "Softmax": ("Softmax", "axis; the axes after it must be 1"),
    "Concat": ("Concat", "axis or order; add_axis:0; the split-info output dropped"),
    "Sum": ("Eltwise SUM (one input: Split)", ""),
    "Mul": ("Eltwise PROD; Scale with broadcast:1", "broadcast, axis (default: B matched to A's last axes)"),
    "Add": ("Eltwise SUM; Bias with broadcast:1", "broadcast, axis"),
    "Max": ("Eltwise MAX", ""),
    "SpatialBN": ("BatchNorm + Scale (bias_term)", "epsilon, momentum, is_test; training outputs dropped"),
    "Flatten": ("Flatten", "axis 1"),
    "FlattenToVec": ("Reshape [-1]", ""),
    "Reshape": ("Reshape", "shape argument or an integer fill of the init net; the old_shape output dropped"),
    "Transpose": ("Permute", "axes (required)"),
    "Squeeze": ("Reshape (axis, num_axes, no dims)", "consecutive dims"),
    "ExpandDims": ("Reshape (num_axes 0, dims of 1)", "consecutive dims"),
    "ChannelShuffle": ("ShuffleChannel", "group"),
    "Clip": ("Clip", "min, max (default: the float range)"),
    "Scale": ("Power (power 1)", "scale"),
    "Copy": ("Split", ""),
    "Alias": ("Split", ""),
    "StopGradient": ("Split", "the identity forward"),
}
FILLS = {
    "GivenTensorFill": "the weights: values become the layer's blobs",
    "GivenTensorIntFill / GivenTensorInt64Fill / GivenTensorBoolFill": "integer tensors: a Reshape's shape input",
    "ConstantFill": "constant filler (value)",
    "XavierFill": "xavier filler, FAN_IN",
    "MSRAFill": "msra filler, FAN_OUT",
    "GaussianFill": "gaussian filler (mean, std)",
    "UniformFill": "uniform filler (min, max)",
}
WRITES = {
    "Convolution": "Conv", "Deconvolution": "ConvTranspose", "InnerProduct": "FC (FCTransposed with transpose)",
    "Pooling": "MaxPool / AveragePool (ceil rounding as legacy_pad CAFFE_LEGACY_POOLING)",
    "ReLU": "Relu (LeakyRelu with negative_slope)", "Sigmoid": "Sigmoid", "TanH": "Tanh", "ELU": "Elu",
    "Clip": "Clip", "PReLU": "PRelu", "LRN": "LRN (ACROSS_CHANNELS)", "Dropout": "Dropout (is_test)",
    "Softmax": "Softmax", "Concat": "Concat (with its split-info output)", "Eltwise": "Sum / Mul / Max",
    "Flatten": "Flatten (axis 1 to the end)", "Reshape": "Reshape (with old_shape) / Squeeze / ExpandDims / FlattenToVec",
    "Split": "Copy, one per top", "ShuffleChannel": "ChannelShuffle", "Permute": "Transpose",
    "Power": "Scale (power 1, shift 0)", "Scale": "Mul broadcast (+ Add for the bias)", "Bias": "Add broadcast",
    "BatchNorm": "SpatialBN, absorbing the Scale after it (mean and variance divided by Caffe's factor)",
    "Input": "an external input, value_info.json, and the closing fill of the input blob",
}


def render() -> str:
    sys.path.insert(0, str(ROOT))
    from convnet_io.caffe2.fills import _FILLERS
    from convnet_io.caffe2.netdef_write import _WRITERS
    from convnet_io.caffe2.op import IGNORED_ARGS
    from convnet_io.caffe2.operators import _CONVERTERS

    missing = sorted(set(_CONVERTERS) - set(READS))
    if missing:
        sys.exit(f"gen_caffe2_doc: add a READS row for {', '.join(missing)}")
    unwritten = sorted(set(_WRITERS) - set(WRITES))
    if unwritten:
        sys.exit(f"gen_caffe2_doc: add a WRITES row for {', '.join(unwritten)}")
    lines = [
        "# Caffe2 operators",
        "",
        "Generated by `tools/gen_caffe2_doc.py` from the operator registry (`convnet_io/caffe2/operators*.py`)",
        "and the NetDef writer; `tests/test_caffe2_doc.py` fails when it is stale.",
        "",
        "convnet reads Caffe2 nets as op listings and as stored NetDefs (`predict_net.pb`/`.pbtxt` +",
        "`init_net.pb`, with the model zoo's `value_info.json`), translating each operator into the Caffe",
        "layer(s) with the same semantics; the graph is then built, checked and run like a prototxt's.",
        "Operators with `order: NHWC` run between two Permute layers (filters permuted to NCHW).",
        "`ImageInput`-style data ops become net inputs. Extra outputs Caffe2 keeps for training",
        "(masks, scales, running statistics) are dropped; reading one is an error naming it.",
        "",
        "## Operators read",
        "",
        "| Caffe2 operator | Caffe layer(s) | inputs | arguments | notes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in sorted(_CONVERTERS):
        c = _CONVERTERS[name]
        inputs = (f"{c.min_inputs}" if c.max_inputs == c.min_inputs else
                  f"{c.min_inputs}+" if c.max_inputs is None else f"{c.min_inputs}-{c.max_inputs}")
        args = ", ".join(sorted(c.args - IGNORED_ARGS)) or "-"
        layer, note = READS[name]
        lines.append(f"| `{name}` | {layer} | {inputs} | {args} | {note} |")
    lines += ["", "## Init-net fill ops", "", "| fill | becomes |", "| --- | --- |"]
    registered = set(_FILLERS)
    for name, what in FILLS.items():
        assert set(name.split(" / ")) <= registered | {"GivenTensorIntFill", "GivenTensorInt64Fill",
                                                        "GivenTensorBoolFill"}, name
        lines.append(f"| `{name}` | {what} |")
    lines += ["", "Caffe2's translator ends an init net with a fill of the input blob itself: it is skipped",
              "and gives no shape.", "", "## Caffe layers written (`convnet export NET --caffe2 OUT_DIR`)", "",
              "| Caffe layer | Caffe2 operator(s) |", "| --- | --- |"]
    for name in sorted({*_WRITERS, "BatchNorm", "Input"}):
        lines.append(f"| {name} | {WRITES[name]} |")
    lines += ["", "Parameters are named `<layer>_w`, `<layer>_b` (`_slope` for PReLU; `_s`, `_b`, `_rm`, `_riv`",
              "for SpatialBN) and every operator carries its layer's name, so the pair reads back to the same",
              "graph. `init_net.pb` holds one `GivenTensorFill` per blob, its values packed (every protobuf",
              "parser, Caffe2's included, reads packed and unpacked repeated floats alike).", ""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text(encoding="utf-8") != text:
            print("docs/CAFFE2.md is stale: run `python tools/gen_caffe2_doc.py`", file=sys.stderr)
            return 1
        print("docs/CAFFE2.md is up to date")
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
