"""Caffe2 op listings: translated into Caffe layers and built by the shared builder.

Expected shapes and counts are computed by hand from Caffe's and Caffe2's rules, never read back
from convnet's own output.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from convnet_io.api.loading import load_graph
from convnet_io.caffe2.listing import listing_to_graph, listing_to_net
from convnet_io.errors import ConvnetError, ParseError
from convnet_io.caffe.proto import caffe_pb2

ROOT = Path(__file__).resolve().parent.parent
ALEXNET = ROOT / "prototxt" / "alexnet_caffe2.txt"
DEPLOY = ROOT.parent / "shared" / "caffe-models" / "bvlc_alexnet" / "deploy.prototxt"

# conv: out*(in/group)*k*k + out; fc: in*out + out. AlexNet with groups 2 in conv2, conv4, conv5.
ALEXNET_PARAMS = (96 * 3 * 11 * 11 + 96 + 256 * 48 * 5 * 5 + 256 + 384 * 256 * 3 * 3 + 384
                  + 384 * 192 * 3 * 3 + 384 + 256 * 192 * 3 * 3 + 256
                  + 9216 * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000)


def build(body: str, input_shapes=None, header: str = "input: data 1,8,6,6\n"):
    return listing_to_graph(header + body, "t.txt", input_shapes=input_shapes)


def conv_init(name: str, shape, bias: bool = True) -> str:
    dims = ",".join(str(d) for d in shape)
    text = f"op: XavierFill ()->({name}_w) shape:[{dims}]\n"
    if bias:
        text += f"op: ConstantFill ()->({name}_b) shape:[{shape[0]}] value:0\n"
    return text


# -- the bundled AlexNet listing -----------------------------------------------------------------


def test_alexnet_listing_builds_with_alexnet_shapes():
    g = load_graph(ALEXNET)
    assert ALEXNET_PARAMS == 60965224
    assert g.param_count == ALEXNET_PARAMS
    assert g.name == "AlexNet"
    expect = {
        "conv1": (1, 96, 55, 55),   # (227 - 11) / 4 + 1
        "pool1": (1, 96, 27, 27),   # ceil((55 - 3) / 2) + 1
        "conv2": (1, 256, 27, 27),  # 27 + 2*2 - 5 + 1
        "pool2": (1, 256, 13, 13),
        "conv5": (1, 256, 13, 13),
        "pool5": (1, 256, 6, 6),
        "fc6": (1, 4096),
        "fc8": (1, 1000),
        "prob": (1, 1000),
    }
    for blob, shape in expect.items():
        assert g.shapes[blob] == shape, blob
    assert g.inputs == ["data"]
    assert g.outputs == ["prob"]


def test_alexnet_listing_layer_names_and_fillers():
    g = load_graph(ALEXNET)
    conv2 = g.node("conv2")
    assert conv2.type == "Convolution" and conv2.attrs.group == 2 and conv2.attrs.num_output == 256
    assert [p.shape for p in conv2.params] == [(256, 48, 5, 5), (256,)]
    assert conv2.params[0].filler.type == "gaussian"
    assert conv2.params[0].filler.std == pytest.approx(0.01)
    assert conv2.params[1].filler.type == "constant" and conv2.params[1].filler.value == 1.0
    assert g.node("conv1").params[1].filler.value == 0.0
    assert g.node("fc6").params[0].filler.std == pytest.approx(0.005)
    assert g.node("fc8").params[1].filler.value == 0.0
    # Caffe2's extra outputs are dropped: no blob for them.
    assert not any(b.startswith("_") for b in g.blob_of.values())
    assert g.node("fc6_dropout").attrs.ratio == 0.5


def test_alexnet_listing_matches_bvlc_prototxt_weight_layers():
    if not DEPLOY.is_file():
        pytest.skip("../shared/caffe-models not present")
    listing = load_graph(ALEXNET)
    proto = load_graph(DEPLOY, input_shapes={"data": (1, 3, 227, 227)})
    weighted = [n for n in proto.nodes if n.params]
    assert [n.name for n in weighted] == [n.name for n in listing.nodes if n.params]
    for n in weighted:
        assert [p.shape for p in listing.node(n.name).params] == [p.shape for p in n.params], n.name
    assert listing.param_count == proto.param_count


def test_input_shape_overrides_the_listing_default():
    g = load_graph(ALEXNET, input_shapes=(2, 3, 227, 227))
    assert g.shapes["data"] == (2, 3, 227, 227)
    assert g.shapes["conv1"] == (2, 96, 55, 55)
    assert g.shapes["fc8"] == (2, 1000)
    g = load_graph(ALEXNET, input_shapes={"data": (4, 3, 227, 227)})
    assert g.shapes["prob"] == (4, 1000)


def test_lrn_maps_to_caffe_lrn_with_one_top():
    g = load_graph(ALEXNET)
    lrn = g.node("norm1")
    assert lrn.type == "LRN"
    assert lrn.tops == ["norm1"]
    a = lrn.attrs
    assert (a.local_size, a.alpha, a.beta, a.k, a.norm_region) == (5, pytest.approx(1e-4), 0.75, 1.0,
                                                                    "ACROSS_CHANNELS")


def test_in_place_relu_keeps_versions():
    g = load_graph(ALEXNET)
    relu = g.node("conv1_relu")
    assert relu.type == "ReLU"
    assert relu.bottoms == ["conv1"] and relu.tops == ["conv1:1"]
    assert g.blob_of["conv1:1"] == "conv1"
    assert g.node("norm1").bottoms == ["conv1:1"]
    assert g.producer("conv1").name == "conv1"


def test_listing_to_net_maps_param_blobs():
    net, params = listing_to_net(ALEXNET.read_text(), str(ALEXNET))
    assert isinstance(net, caffe_pb2.NetParameter)
    assert params["conv1_w"] == ("conv1", 0) and params["conv1_b"] == ("conv1", 1)
    assert params["fc8_b"] == ("fc8", 1)
    assert len(params) == 16
    assert net.layer[0].type == "Input" and list(net.layer[0].input_param.shape[0].dim) == [1, 3, 227, 227]
    conv1 = next(l for l in net.layer if l.name == "conv1")
    assert list(conv1.bottom) == ["data"] and conv1.convolution_param.weight_filler.type == "gaussian"


def test_no_input_shape_asks_for_input_shape():
    text = ALEXNET.read_text().replace("input: data 1,3,227,227\n", "")
    with pytest.raises(ConvnetError, match="--input-shape"):
        listing_to_graph(text, "a.txt")
    g = listing_to_graph(text, "a.txt", input_shapes=(1, 3, 227, 227))
    assert g.shapes["pool5"] == (1, 256, 6, 6)


# -- pooling: Caffe2 floors, legacy_pad:3 is Caffe's ceil ------------------------------------------


@pytest.mark.parametrize("legacy, size", [("legacy_pad:3", 3), ("", 2)])
def test_maxpool_round_mode(legacy, size):
    # 6x6, kernel 3, stride 2: ceil((6-3)/2)+1 = 3, floor((6-3)/2)+1 = 2.
    g = build(f"op: MaxPool (data)->(pool) kernel:3 stride:2 order:NCHW {legacy}\n",
              header="input: data 1,1,6,6\n")
    assert g.shapes["pool"] == (1, 1, size, size)
    assert g.node("pool").attrs.round_mode == ("CEIL" if legacy else "FLOOR")
    assert g.node("pool").attrs.method == "MAX"


def test_average_pooling():
    g = build("op: AveragePool (data)->(a) kernels:[3,2] strides:[1,2]\n")
    # (6-3)/1+1 = 4, (6-2)/2+1 = 3
    assert g.shapes["a"] == (1, 8, 4, 3)
    assert g.node("a").attrs.method == "AVE"
    with pytest.raises(ParseError, match="count_include_pad"):
        build("op: AveragePool (data)->(a) kernel:3 pad:1\n")
    assert build("op: AveragePool (data)->(a) kernel:3 pad:1 count_include_pad:1\n").shapes["a"] == (1, 8, 6, 6)


# Pooling.attrs (layers/vision.py) takes len() of the optional kernel_size when global_pooling is set,
# so a global pooling layer fails to build from a prototxt as well; not this module's code.
def test_global_pooling():
    g = build("op: AveragePool (data)->(b) global_pooling:1\n")
    assert g.shapes["b"] == (1, 8, 1, 1)
    assert g.node("b").attrs.global_pooling


# -- other ops ------------------------------------------------------------------------------------


def test_spatial_bn_maps_to_batchnorm_and_scale():
    text = ("op: ConstantFill ()->(bn_s) shape:[8] value:1\n"
            "op: ConstantFill ()->(bn_b) shape:[8] value:0\n"
            "op: ConstantFill ()->(bn_rm) shape:[8] value:0\n"
            "op: ConstantFill ()->(bn_riv) shape:[8] value:1\n"
            "op: SpatialBN (data bn_s bn_b bn_rm bn_riv)->(y) epsilon:0.001 is_test:1 order:NCHW\n")
    g = build(text)
    bn, scale = g.node("bn"), g.node("bn_scale")
    assert bn.type == "BatchNorm" and scale.type == "Scale"
    assert bn.attrs.use_global_stats is True and bn.attrs.eps == pytest.approx(1e-3)
    assert scale.attrs.bias_term
    assert scale.bottoms == ["y"] and scale.tops == ["y:1"]
    assert [p.shape for p in scale.params] == [(8,), (8,)]
    _, params = listing_to_net("input: data 1,8,6,6\n" + text, "t.txt")
    assert params == {"bn_rm": ("bn", 0), "bn_riv": ("bn", 1), "bn_s": ("bn_scale", 0), "bn_b": ("bn_scale", 1)}


def test_sum_mul_add():
    g = build("op: Relu (data)->(a)\nop: Sigmoid (data)->(b)\n"
              "op: Sum (a b data)->(s)\nop: Mul (a b)->(m)\nop: Add (a b)->(p)\n")
    s = g.node("s")
    assert s.type == "Eltwise" and s.attrs.operation == "SUM" and len(s.bottoms) == 3
    assert g.node("m").attrs.operation == "PROD"
    assert g.node("p").attrs.operation == "SUM"


def test_broadcast_mul_add_become_scale_and_bias():
    g = build("op: ConstantFill ()->(k_w) shape:[8] value:2\n"
              "op: Mul (data k_w)->(y) broadcast:1 axis:1\n"
              "op: Copy (data)->(z)\n"
              "op: AveragePool (z)->(g) kernel:6\n"
              "op: Reshape (g)->(v old) shape:[1,8]\n"
              "op: Add (y v)->(w) broadcast:1 axis:0\n")
    scale = g.node("k")
    assert scale.type == "Scale" and [p.shape for p in scale.params] == [(8,)]
    assert scale.params[0].filler.value == 2.0
    bias = g.node("w")
    assert bias.type == "Bias" and bias.bottoms == ["y", "v"] and not bias.params
    assert g.node("z").type == "Split"


def test_activations_and_shape_ops():
    g = build("op: PRelu (data p_slope)->(a)\nop: ConstantFill ()->(p_slope) shape:[8] value:0.25\n"
              "op: LeakyRelu (a)->(b) alpha:0.2\nop: Elu (b)->(c) alpha:0.5\nop: Tanh (c)->(d)\n"
              "op: Concat (d c)->(e info) axis:1\nop: Flatten (e)->(f)\n"
              "op: FC (f fc_w fc_b)->(g)\nop: MSRAFill ()->(fc_w) shape:[3,576]\n"
              "op: GivenTensorFill ()->(fc_b) shape:[3] values:[0.5,1,2]\nop: Softmax (g)->(prob) axis:1\n")
    assert g.node("p").type == "PReLU" and g.node("p").params[0].shape == (8,)
    assert g.node("b").type == "ReLU" and g.node("b").attrs.negative_slope == pytest.approx(0.2)
    assert g.node("c").type == "ELU" and g.node("c").attrs.alpha == 0.5
    assert g.node("d").type == "TanH"
    assert g.shapes["e"] == (1, 16, 6, 6)
    assert g.shapes["f"] == (1, 576)
    assert g.shapes["g"] == (1, 3)
    fc = g.node("fc")
    assert fc.attrs.num_output == 3
    assert (fc.params[0].filler.type, fc.params[0].filler.variance_norm) == ("msra", "FAN_OUT")
    assert fc.params[1].filler is None  # explicit values are weights, not a Caffe filler


def test_conv_args_and_conv_transpose():
    g = build(conv_init("c", (4, 4, 3, 1)) + conv_init("d", (4, 2, 2, 2), bias=False)
              + "op: Conv (data c_w c_b)->(c) kernel_h:3 kernel_w:1 pads:[1,0,1,0] group:2 dilation:1\n"
              "op: ConvTranspose (c d_w)->(d) kernel:2 stride:2\n")
    assert g.shapes["c"] == (1, 4, 6, 6)  # 6 + 2 - 3 + 1, 6 + 0 - 1 + 1
    assert g.node("c").attrs.pad == (1, 0) and g.node("c").attrs.kernel == (3, 1)
    d = g.node("d")
    assert d.type == "Deconvolution" and d.attrs.num_output == 2 and not d.attrs.bias_term
    assert g.shapes["d"] == (1, 2, 12, 12)  # 2 * (6 - 1) + 2


# -- errors ---------------------------------------------------------------------------------------


def test_unknown_op_is_a_parse_error_at_its_line():
    with pytest.raises(ParseError) as e:
        build("op: Relu (data)->(a)\n# a comment\n\nop: Frobnicate (a)->(b)\n")
    assert (e.value.line, e.value.column) == (5, 5)
    assert "Frobnicate" in str(e.value) and str(e.value).startswith("t.txt:5:5:")


def test_unknown_argument_is_a_parse_error_at_the_argument():
    with pytest.raises(ParseError) as e:
        build("op: Relu (data)->(a)\nop: MaxPool (a)->(b) kernel:2 flavour:3\n")
    assert e.value.line == 3 and e.value.column == 31
    assert "flavour" in str(e.value) and "MaxPool" in str(e.value)


def test_conv_without_weight_shape_says_which_blob():
    with pytest.raises(ParseError) as e:
        build("op: Conv (data conv1_w conv1_b)->(conv1) kernel:3\n")
    assert e.value.line == 2
    assert "conv1_w" in str(e.value) and "shape" in str(e.value)


def test_init_shape_must_fit_the_layer():
    with pytest.raises(ParseError, match=r"conv1_w.*\[4, 3, 3, 3\].*\[4, 8, 3, 3\]") as e:
        build(conv_init("conv1", (4, 3, 3, 3)) + "op: Conv (data conv1_w conv1_b)->(conv1) kernel:3\n")
    assert e.value.line == 4


@pytest.mark.parametrize("body, pattern, line", [
    ("op: Relu (data)->(a) order:NCHW\n", "unknown or unsupported argument 'order'", 2),
    ("op: MaxPool (data)->(a) kernel:3 order:NCWH\n", "NCWH", 2),
    ("op: MaxPool (data)->(a) kernel:3 pad_t:1 pad_b:0 pad_l:1 pad_r:1\n", "asymmetric", 2),
    ("op: AveragePool (data)->(a) kernel:4 legacy_pad:2\n", "SAME", 2),  # pads 1 and 2: not Caffe
    ("op: MaxPool (data)->(a)\n", "kernel", 2),
    ("op: Relu (data)->(a) engine:CUDNN\nop: Relu (a b)->(c)\n", "takes 1 input", 3),
    ("op: LRN (data)->(n s) size:3\nop: Relu (s)->(r)\n", "auxiliary output of LRN", 3),
    ("op: Relu data->a\n", "malformed op line", 2),
    ("op: Relu (data)->(a) alpha\n", "malformed argument", 2),
    ("op: Dropout (data)->(a) ratio:[1,2]\n", "must be a number", 2),
    ("bogus line\n", "expected an `op:`", 2),
    ("op: Softmax (data)->(a)\n", "Flatten", 2),
    ("op: Mul (data data)->(a) broadcast:1\n", "needs axis", 2),
    ("op: LRN (data)->(a) size:2 alpha:1 beta:1\n", "odd", 2),
])
def test_errors_are_located(body, pattern, line):
    with pytest.raises(ParseError, match=pattern) as e:
        build(body)
    assert e.value.line == line


def test_input_shapes_for_unknown_blob_are_refused():
    with pytest.raises(ConvnetError, match="'nope'"):
        build("op: Relu (data)->(a)\n", input_shapes={"nope": (1, 2, 3, 4)})
    with pytest.raises(ParseError, match="not an external input"):
        listing_to_graph("input: x 1,2\nop: Relu (data)->(a)\n", "t.txt")
