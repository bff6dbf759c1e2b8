"""Caffe's shape rules, checked through ``graph_from_text`` against shapes worked out by hand.

The arithmetic in the comments follows BVLC Caffe:
  * Convolution: ``(in + 2*pad - extent) / stride + 1`` in C++ integer division (truncation toward
    zero), ``extent = dilation*(kernel-1) + 1``;
  * Deconvolution: ``stride*(in-1) + extent - 2*pad``;
  * Pooling: ``ceil`` (or ``floor`` with round_mode FLOOR) of ``(in + 2*pad - kernel) / stride``,
    plus 1; then, when pad_h or pad_w is non-zero, drop the last window if it starts at or past
    ``in + pad`` (the clip rule);
  * InnerProduct: ``bottom[:axis] + [num_output]``.
"""
from __future__ import annotations

import pytest

from convnet_io.errors import LayerError
from helpers import graph_from_text, input_layer


def _layer(name, type_, params="", bottom="data", top=None):
    bottoms = bottom if isinstance(bottom, (list, tuple)) else [bottom]
    tops = top if isinstance(top, (list, tuple)) else [top or name]
    b = " ".join(f'bottom: "{x}"' for x in bottoms)
    t = " ".join(f'top: "{x}"' for x in tops)
    return f'layer {{ name: "{name}" type: "{type_}" {b} {t} {params} }}\n'


def conv(name, bottom, p, type_="Convolution"):
    return _layer(name, type_, f"convolution_param {{ {p} }}", bottom)


def pool(name, bottom, p):
    return _layer(name, "Pooling", f"pooling_param {{ {p} }}", bottom)


def ip(name, bottom, p):
    return _layer(name, "InnerProduct", f"inner_product_param {{ {p} }}", bottom)


def shape_of(text, value):
    return graph_from_text(text).shapes[value]


def one(shape, type_, params, bottom="data"):
    """The top shape of a single layer ``l`` on an Input of ``shape``."""
    return shape_of(input_layer(shape) + _layer("l", type_, params, bottom), "l")


# ------------------------------------------------------------------------------------------------
# AlexNet-sized chain
# ------------------------------------------------------------------------------------------------
ALEXNET = (
    conv("conv1", "data", "num_output: 96 kernel_size: 11 stride: 4")
    + _layer("relu1", "ReLU", bottom="conv1", top="conv1")
    + _layer("norm1", "LRN", "lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 }", bottom="conv1")
    + pool("pool1", "norm1", "pool: MAX kernel_size: 3 stride: 2")
    + conv("conv2", "pool1", "num_output: 256 pad: 2 kernel_size: 5 group: 2")
    + pool("pool2", "conv2", "pool: MAX kernel_size: 3 stride: 2")
    + conv("conv3", "pool2", "num_output: 384 pad: 1 kernel_size: 3")
    + conv("conv4", "conv3", "num_output: 384 pad: 1 kernel_size: 3 group: 2")
    + conv("conv5", "conv4", "num_output: 256 pad: 1 kernel_size: 3 group: 2")
    + pool("pool5", "conv5", "pool: MAX kernel_size: 3 stride: 2")
    + ip("fc6", "pool5", "num_output: 4096")
    + ip("fc7", "fc6", "num_output: 4096")
    + ip("fc8", "fc7", "num_output: 1000")
    + _layer("prob", "Softmax", bottom="fc8")
)


def test_alexnet_chain_227():
    g = graph_from_text(input_layer((10, 3, 227, 227)) + ALEXNET)
    s = g.shapes
    assert s["conv1"] == (10, 96, 55, 55)     # (227 - 11)/4 + 1 = 54 + 1 = 55
    assert s["conv1:1"] == (10, 96, 55, 55)   # in-place ReLU
    assert s["norm1"] == (10, 96, 55, 55)
    assert s["pool1"] == (10, 96, 27, 27)     # ceil((55 - 3)/2) + 1 = 26 + 1 = 27
    assert s["conv2"] == (10, 256, 27, 27)    # (27 + 4 - 5)/1 + 1 = 27
    assert s["pool2"] == (10, 256, 13, 13)    # ceil((27 - 3)/2) + 1 = 12 + 1 = 13
    assert s["conv3"] == (10, 384, 13, 13)    # (13 + 2 - 3)/1 + 1 = 13
    assert s["conv4"] == (10, 384, 13, 13)
    assert s["conv5"] == (10, 256, 13, 13)
    assert s["pool5"] == (10, 256, 6, 6)      # ceil((13 - 3)/2) + 1 = 5 + 1 = 6
    assert s["fc6"] == (10, 4096)
    assert s["fc7"] == (10, 4096)
    assert s["fc8"] == (10, 1000)
    assert s["prob"] == (10, 1000)
    params = {n.name: [p.shape for p in n.params] for n in g.nodes}
    assert params["conv1"] == [(96, 3, 11, 11), (96,)]
    assert params["conv2"] == [(256, 48, 5, 5), (256,)]    # 96 / group 2 = 48
    assert params["conv3"] == [(384, 256, 3, 3), (384,)]
    assert params["conv4"] == [(384, 192, 3, 3), (384,)]   # 384 / 2
    assert params["conv5"] == [(256, 192, 3, 3), (256,)]
    assert params["fc6"] == [(4096, 256 * 6 * 6), (4096,)]  # K = 9216
    assert params["fc8"] == [(1000, 4096), (1000,)]
    total = sum(p.count for n in g.nodes for p in n.params)
    assert total == 60_965_224  # the well-known AlexNet parameter count


def test_alexnet_conv1_pool1_at_224_ceil_and_floor():
    # 224: (224 - 11)/4 = 213/4 = 53 (truncated) + 1 = 54
    #   CEIL:  ceil((54 - 3)/2) + 1 = ceil(25.5) + 1 = 27
    #   FLOOR: floor(25.5) + 1 = 26
    base = input_layer((1, 3, 224, 224)) + conv("conv1", "data", "num_output: 96 kernel_size: 11 stride: 4")
    assert shape_of(base, "conv1") == (1, 96, 54, 54)
    ceil = base + pool("pool1", "conv1", "pool: MAX kernel_size: 3 stride: 2")
    floor = base + pool("pool1", "conv1", "pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR")
    assert shape_of(ceil, "pool1") == (1, 96, 27, 27)
    assert shape_of(floor, "pool1") == (1, 96, 26, 26)
    # 227 gives 55 then 27 in both modes: (55 - 3)/2 = 26 exactly.
    base227 = input_layer((1, 3, 227, 227)) + conv("conv1", "data", "num_output: 96 kernel_size: 11 stride: 4")
    for mode in ("CEIL", "FLOOR"):
        t = base227 + pool("pool1", "conv1", f"pool: MAX kernel_size: 3 stride: 2 round_mode: {mode}")
        assert shape_of(t, "pool1") == (1, 96, 27, 27)


def test_googlenet_and_vgg_stems():
    # GoogLeNet conv1 7x7/2 pad 3: (224 + 6 - 7)/2 + 1 = 223/2 = 111 + 1 = 112
    # pool1 3x3/2: ceil((112 - 3)/2) + 1 = ceil(54.5) + 1 = 56
    t = (input_layer((1, 3, 224, 224)) + conv("conv1", "data", "num_output: 64 kernel_size: 7 stride: 2 pad: 3")
         + pool("pool1", "conv1", "pool: MAX kernel_size: 3 stride: 2"))
    g = graph_from_text(t)
    assert g.shapes["conv1"] == (1, 64, 112, 112)
    assert g.shapes["pool1"] == (1, 64, 56, 56)
    # VGG: 3x3 pad 1 keeps 224; 2x2/2 pooling halves it: ceil((224 - 2)/2) + 1 = 112
    t = (input_layer((1, 3, 224, 224)) + conv("conv1_1", "data", "num_output: 64 kernel_size: 3 pad: 1")
         + pool("pool1", "conv1_1", "pool: MAX kernel_size: 2 stride: 2"))
    g = graph_from_text(t)
    assert g.shapes["conv1_1"] == (1, 64, 224, 224)
    assert g.shapes["pool1"] == (1, 64, 112, 112)


# ------------------------------------------------------------------------------------------------
# Convolution / Deconvolution
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape,p,expected", [
    # extent = 2*(3-1)+1 = 5: (32 - 5)/1 + 1 = 28
    ((1, 3, 32, 32), "num_output: 8 kernel_size: 3 dilation: 2", (1, 8, 28, 28)),
    # extent = 4*(3-1)+1 = 9: (32 + 8 - 9)/1 + 1 = 32 (DeepLab-style "same" dilation)
    ((1, 3, 32, 32), "num_output: 8 kernel_size: 3 dilation: 4 pad: 4", (1, 8, 32, 32)),
    # extent 5, stride 2: (32 - 5)/2 = 13 (truncated) + 1 = 14
    ((1, 3, 32, 32), "num_output: 8 kernel_size: 3 dilation: 2 stride: 2", (1, 8, 14, 14)),
    # dilation (2, 3): extents 5 and 7 -> (20 - 5) + 1 = 16, (21 - 7) + 1 = 15
    ((1, 3, 20, 21), "num_output: 2 kernel_size: 3 dilation: 2 dilation: 3", (1, 2, 16, 15)),
    # kernel_h 3 / kernel_w 5, pad_h 1 / pad_w 0, stride_h 2 / stride_w 3:
    # (11 + 2 - 3)/2 + 1 = 6; (17 - 5)/3 + 1 = 5
    ((2, 4, 11, 17), "num_output: 6 kernel_h: 3 kernel_w: 5 pad_h: 1 pad_w: 0 stride_h: 2 stride_w: 3",
     (2, 6, 6, 5)),
    # (10 - 3)/4 = 1 (truncated) + 1 = 2
    ((1, 1, 10, 10), "num_output: 1 kernel_size: 3 stride: 4", (1, 1, 2, 2)),
    # kernel equal to the input: (5 - 5)/1 + 1 = 1
    ((1, 1, 5, 5), "num_output: 1 kernel_size: 5", (1, 1, 1, 1)),
])
def test_convolution_shapes(shape, p, expected):
    assert one(shape, "Convolution", f"convolution_param {{ {p} }}") == expected


@pytest.mark.parametrize("shape,p,expected", [
    # FCN 2x upsampling: 2*(16 - 1) + 4 - 2*1 = 32
    ((1, 21, 16, 16), "num_output: 21 kernel_size: 4 stride: 2 pad: 1 group: 21 bias_term: false", (1, 21, 32, 32)),
    # FCN-32s: 32*(16 - 1) + 64 = 544
    ((1, 21, 16, 16), "num_output: 21 kernel_size: 64 stride: 32 bias_term: false", (1, 21, 544, 544)),
    # stride 1: (5 - 1) + 3 = 7
    ((2, 3, 5, 5), "num_output: 4 kernel_size: 3", (2, 4, 7, 7)),
    # dilation 2: extent 5, (16 - 1) + 5 = 20
    ((1, 2, 16, 16), "num_output: 2 kernel_size: 3 dilation: 2", (1, 2, 20, 20)),
    # h/w: 2*(4-1) + 3 - 2 = 7; 3*(5-1) + 2 - 0 = 14
    ((1, 2, 4, 5), "num_output: 3 kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 3 pad_h: 1 pad_w: 0",
     (1, 3, 7, 14)),
])
def test_deconvolution_shapes(shape, p, expected):
    assert one(shape, "Deconvolution", f"convolution_param {{ {p} }}") == expected


def test_deconvolution_weight_shape():
    g = graph_from_text(input_layer((1, 4, 5, 5)) + conv("up", "data", "num_output: 6 kernel_size: 3 group: 2",
                                                         "Deconvolution"))
    # (bottom channels, num_output / group, kh, kw)
    assert [p.shape for p in g.node("up").params] == [(4, 3, 3, 3), (6,)]


def test_convolution_multiple_bottoms_and_tops():
    t = (input_layer((2, 3, 8, 8), "a") + input_layer((2, 3, 8, 8), "b")
         + _layer("c", "Convolution", "convolution_param { num_output: 5 kernel_size: 3 stride: 2 }",
                  bottom=["a", "b"], top=["ca", "cb"]))
    g = graph_from_text(t)
    # (8 - 3)/2 = 2 (truncated) + 1 = 3
    assert g.shapes["ca"] == g.shapes["cb"] == (2, 5, 3, 3)
    assert [p.shape for p in g.node("c").params] == [(5, 3, 3, 3), (5,)]


# ------------------------------------------------------------------------------------------------
# Pooling
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw,p,expected", [
    # H=6,k=3,s=2,p=1: ceil(5/2) + 1 = 4; clip: 3*2 = 6 >= 6 + 1? no -> 4
    ((6, 6), "pool: AVE kernel_size: 3 stride: 2 pad: 1", (4, 4)),
    # H=7,k=3,s=2,p=1: 6/2 + 1 = 4; clip: 6 >= 8? no -> 4
    ((7, 7), "pool: AVE kernel_size: 3 stride: 2 pad: 1", (4, 4)),
    # H=5,k=2,s=2,p=1: ceil(5/2) + 1 = 4; clip: 3*2 = 6 >= 5 + 1 -> drop -> 3
    ((5, 5), "pool: MAX kernel_size: 2 stride: 2 pad: 1", (3, 3)),
    # H=7,k=2,s=2,p=1: ceil(7/2) + 1 = 5; clip: 4*2 = 8 >= 8 -> 4
    ((7, 7), "pool: AVE kernel_size: 2 stride: 2 pad: 1", (4, 4)),
    # FLOOR H=6,k=3,s=2,p=1: floor(5/2) + 1 = 3; clip: 4 >= 7? no
    ((6, 6), "pool: AVE kernel_size: 3 stride: 2 pad: 1 round_mode: FLOOR", (3, 3)),
    # FLOOR H=7,k=2,s=2,p=1: floor(7/2) + 1 = 4; clip: 6 >= 8? no -> 4
    ((7, 7), "pool: AVE kernel_size: 2 stride: 2 pad: 1 round_mode: FLOOR", (4, 4)),
    # no pad -> no clip: H=6,k=2,s=3: ceil(4/3) + 1 = 3 (last window starts at 6 = H: Caffe keeps it
    # because the clip rule is only applied with padding; MAX then gives -FLT_MAX there)
    ((6, 6), "pool: MAX kernel_size: 1 stride: 3", (3, 3)),
    # kernel_h 3 / kernel_w 2, stride_h 2 / stride_w 1: ceil(4/2)+1 = 3; (6-2)/1+1 = 5
    ((7, 6), "pool: MAX kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1", (3, 5)),
    # pad only on W still clips H: H=5,kh=1,sh=3: ceil(4/3)+1 = 3, 2*3 = 6 >= 5 + 0 -> 2;
    # W=6,kw=3,sw=2,pw=1: ceil(5/2)+1 = 4, 6 >= 7? no -> 4
    ((5, 6), "pool: AVE kernel_h: 1 kernel_w: 3 stride_h: 3 stride_w: 2 pad_h: 0 pad_w: 1", (2, 4)),
    # kernel larger than the map, no pad: ceil((2 - 3)/2) + 1 = ceil(-0.5) + 1 = 0 + 1 = 1
    ((2, 2), "pool: AVE kernel_size: 3 stride: 2", (1, 1)),
    # stride 1 "same" pooling: (13 + 2 - 3)/1 + 1 = 13 (GoogLeNet inception pool proj)
    ((13, 13), "pool: MAX kernel_size: 3 stride: 1 pad: 1", (13, 13)),
])
def test_pooling_shapes(hw, p, expected):
    assert one((2, 3, *hw), "Pooling", f"pooling_param {{ {p} }}") == (2, 3, *expected)


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_global_pooling_shape(method):
    assert one((2, 1024, 7, 7), "Pooling", f"pooling_param {{ pool: {method} global_pooling: true }}") == (2, 1024, 1, 1)
    assert one((1, 3, 5, 9), "Pooling", f"pooling_param {{ pool: {method} global_pooling: true }}") == (1, 3, 1, 1)


def test_global_pooling_with_a_kernel_is_an_error():
    # Caffe: "With Global_pooling: true Filter size cannot specified"
    with pytest.raises(LayerError) as e:
        one((1, 3, 5, 5), "Pooling", "pooling_param { pool: AVE global_pooling: true kernel_size: 3 }")
    assert "'l'" in str(e.value)


def test_pooling_pad_not_smaller_than_kernel_is_an_error():
    with pytest.raises(LayerError) as e:
        one((1, 3, 5, 5), "Pooling", "pooling_param { pool: MAX kernel_size: 2 pad: 2 }")
    assert "'l'" in str(e.value)


# ------------------------------------------------------------------------------------------------
# InnerProduct
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p,expected_top,expected_w", [
    ("num_output: 7", (2, 7), (7, 3 * 4 * 5)),                                # axis 1: K = 60
    ("num_output: 7 axis: 2", (2, 3, 7), (7, 4 * 5)),                          # K = 20
    ("num_output: 7 axis: 3", (2, 3, 4, 7), (7, 5)),
    ("num_output: 7 axis: -1", (2, 3, 4, 7), (7, 5)),
    ("num_output: 7 axis: -3", (2, 7), (7, 60)),
    ("num_output: 7 axis: 0", (7,), (7, 2 * 3 * 4 * 5)),                       # M = 1
    ("num_output: 7 transpose: true", (2, 7), (60, 7)),
    ("num_output: 7 axis: 2 transpose: true bias_term: false", (2, 3, 7), (20, 7)),
])
def test_inner_product_shapes(p, expected_top, expected_w):
    g = graph_from_text(input_layer((2, 3, 4, 5)) + ip("fc", "data", p))
    assert g.shapes["fc"] == expected_top
    shapes = [q.shape for q in g.node("fc").params]
    assert shapes[0] == expected_w
    assert shapes[1:] == ([] if "bias_term: false" in p else [(7,)])


# ------------------------------------------------------------------------------------------------
# Shape layers
# ------------------------------------------------------------------------------------------------
def test_concat_shapes():
    two = input_layer((2, 3, 4, 4), "a") + input_layer((2, 5, 4, 4), "b")
    assert shape_of(two + _layer("c", "Concat", bottom=["a", "b"]), "c") == (2, 8, 4, 4)   # 3 + 5
    t = input_layer((2, 3, 4, 4), "a") + input_layer((2, 3, 6, 4), "b")
    assert shape_of(t + _layer("c", "Concat", "concat_param { axis: 2 }", ["a", "b"]), "c") == (2, 3, 10, 4)
    assert shape_of(t + _layer("c", "Concat", "concat_param { axis: -2 }", ["a", "b"]), "c") == (2, 3, 10, 4)
    # legacy concat_dim
    assert shape_of(t + _layer("c", "Concat", "concat_param { concat_dim: 2 }", ["a", "b"]), "c") == (2, 3, 10, 4)
    # batch axis, three bottoms: 2 + 2 + 2
    three = input_layer((2, 3), "a") + input_layer((2, 3), "b") + input_layer((2, 3), "d")
    assert shape_of(three + _layer("c", "Concat", "concat_param { axis: 0 }", ["a", "b", "d"]), "c") == (6, 3)
    with pytest.raises(LayerError) as e:
        graph_from_text(t + _layer("cat", "Concat", bottom=["a", "b"]))  # differ on axis 2, concat on 1
    assert "'cat'" in str(e.value)


def test_slice_shapes():
    t = input_layer((2, 9, 4))
    g = graph_from_text(t + _layer("s", "Slice", "slice_param { axis: 1 }", top=["x", "y", "z"]))
    assert [g.shapes[v] for v in "xyz"] == [(2, 3, 4)] * 3                          # 9 / 3
    g = graph_from_text(t + _layer("s", "Slice", "slice_param { axis: 1 slice_point: 2 slice_point: 5 }",
                                   top=["x", "y", "z"]))
    assert [g.shapes[v] for v in "xyz"] == [(2, 2, 4), (2, 3, 4), (2, 4, 4)]        # 2, 5-2, 9-5
    g = graph_from_text(t + _layer("s", "Slice", "slice_param { slice_dim: 2 }", top=["x", "y"]))
    assert [g.shapes[v] for v in "xy"] == [(2, 9, 2)] * 2
    g = graph_from_text(t + _layer("s", "Slice", "slice_param { axis: -1 slice_point: 1 }", top=["x", "y"]))
    assert [g.shapes[v] for v in "xy"] == [(2, 9, 1), (2, 9, 3)]
    with pytest.raises(LayerError):  # 9 channels into 2 equal parts
        graph_from_text(t + _layer("s", "Slice", "slice_param { axis: 1 }", top=["x", "y"]))
    with pytest.raises(LayerError):  # 1 slice point for 3 tops
        graph_from_text(t + _layer("s", "Slice", "slice_param { axis: 1 slice_point: 3 }", top=["x", "y", "z"]))


@pytest.mark.parametrize("p,expected", [
    ("", (2, 60)),                                          # axis 1 .. -1: 3*4*5
    ("flatten_param { axis: 2 }", (2, 3, 20)),
    ("flatten_param { axis: 1 end_axis: 2 }", (2, 12, 5)),
    ("flatten_param { axis: 0 }", (120,)),
    ("flatten_param { axis: -2 end_axis: -1 }", (2, 3, 20)),
])
def test_flatten_shapes(p, expected):
    assert one((2, 3, 4, 5), "Flatten", p) == expected


@pytest.mark.parametrize("p,expected", [
    ("shape { dim: 0 dim: -1 }", (2, 60)),                   # keep N, infer 60
    ("shape { dim: 0 dim: 0 dim: -1 }", (2, 3, 20)),
    ("shape { dim: -1 dim: 5 }", (24, 5)),                   # 120 / 5
    ("shape { dim: 4 dim: 0 dim: -1 }", (4, 3, 10)),         # 120 / (4*3) = 10
])
def test_reshape_shapes(p, expected):
    assert one((2, 3, 4, 5), "Reshape", f"reshape_param {{ {p} }}") == expected


@pytest.mark.parametrize("p,expected", [
    ("shape { dim: -1 } axis: 1 num_axes: 2", (2, 12, 5)),   # replace axes 1,2 by 3*4
    ("shape { dim: 1 } axis: -1 num_axes: 0", (2, 3, 4, 5, 1)),  # insert at the end (axis -1 -> 4)
    ("shape { dim: 1 } axis: 0 num_axes: 0", (1, 2, 3, 4, 5)),
    ("shape { dim: 2 dim: 2 } axis: 2 num_axes: 1", (2, 3, 2, 2, 5)),
    ("shape { dim: 0 dim: 0 dim: 0 dim: 0 }", (2, 3, 4, 5)),
])
def test_reshape_axis_num_axes(p, expected):
    assert one((2, 3, 4, 5), "Reshape", f"reshape_param {{ {p} }}") == expected


def test_reshape_errors():
    with pytest.raises(LayerError):  # 120 / 7
        one((2, 3, 4, 5), "Reshape", "reshape_param { shape { dim: 7 dim: -1 } }")
    with pytest.raises(LayerError):  # 120 / (6*3) is not whole
        one((2, 3, 4, 5), "Reshape", "reshape_param { shape { dim: 6 dim: 0 dim: -1 } }")
    with pytest.raises(LayerError):  # two -1
        one((2, 3, 4, 5), "Reshape", "reshape_param { shape { dim: -1 dim: -1 } }")
    with pytest.raises(LayerError):  # count changes
        one((2, 3, 4, 5), "Reshape", "reshape_param { shape { dim: 2 dim: 3 } }")


def test_crop_shapes():
    t = input_layer((1, 3, 10, 12), "big") + input_layer((1, 5, 6, 6), "ref")
    crop = lambda p: _layer("crop", "Crop", p, bottom=["big", "ref"])
    # default axis 2: keep (1, 3), take (6, 6) from ref
    assert shape_of(t + crop("crop_param { offset: 2 }"), "crop") == (1, 3, 6, 6)
    assert shape_of(t + crop("crop_param { axis: 2 offset: 4 offset: 6 }"), "crop") == (1, 3, 6, 6)
    assert shape_of(t + crop(""), "crop") == (1, 3, 6, 6)
    assert shape_of(t + crop("crop_param { axis: -1 offset: 6 }"), "crop") == (1, 3, 10, 6)
    with pytest.raises(LayerError):  # offset 5 + 6 > 10 on axis 2
        graph_from_text(t + crop("crop_param { offset: 5 }"))
    with pytest.raises(LayerError):  # axis 1: ref has 5 channels, bottom 3
        graph_from_text(t + crop("crop_param { axis: 1 }"))


def test_tile_reduction_argmax_eltwise_shapes():
    assert one((2, 3, 4), "Tile", "tile_param { axis: 1 tiles: 3 }") == (2, 9, 4)
    assert one((2, 3, 4), "Tile", "tile_param { axis: -1 tiles: 2 }") == (2, 3, 8)
    # Reduction keeps the axes before `axis`
    assert one((2, 3, 4, 5), "Reduction", "") == ()                                # axis 0: a scalar
    assert one((2, 3, 4, 5), "Reduction", "reduction_param { axis: 2 }") == (2, 3)
    assert one((2, 3, 4, 5), "Reduction", "reduction_param { operation: MEAN axis: -1 }") == (2, 3, 4)
    # ArgMax without axis: max(num_axes, 3) axes, (N, 1 or 2, top_k, 1...)
    assert one((2, 10), "ArgMax", "") == (2, 1, 1)
    assert one((2, 10), "ArgMax", "argmax_param { top_k: 3 out_max_val: true }") == (2, 2, 3)
    assert one((2, 3, 4, 5), "ArgMax", "argmax_param { top_k: 3 }") == (2, 1, 3, 1)
    # with axis: bottom shape, axis -> top_k
    assert one((2, 10), "ArgMax", "argmax_param { axis: 1 top_k: 2 }") == (2, 2)
    assert one((2, 3, 4, 5), "ArgMax", "argmax_param { axis: 1 out_max_val: true }") == (2, 1, 4, 5)
    with pytest.raises(LayerError):  # top_k 11 > 10 values per item
        one((2, 10), "ArgMax", "argmax_param { top_k: 11 }")
    # Eltwise: identical shapes in, same shape out
    two = input_layer((2, 3, 4, 4), "a") + input_layer((2, 3, 4, 4), "b")
    for op in ("SUM", "PROD", "MAX"):
        assert shape_of(two + _layer("e", "Eltwise", f"eltwise_param {{ operation: {op} }}", ["a", "b"]), "e") \
            == (2, 3, 4, 4)
    assert shape_of(two + _layer("e", "Eltwise", "eltwise_param { coeff: 1 coeff: -1 }", ["a", "b"]), "e") \
        == (2, 3, 4, 4)
    bad = input_layer((2, 3, 4, 4), "a") + input_layer((2, 3, 4, 5), "b")
    with pytest.raises(LayerError) as e:
        graph_from_text(bad + _layer("e", "Eltwise", bottom=["a", "b"]))
    assert "'e'" in str(e.value)


def test_lrn_keeps_shape_and_wants_4d():
    assert one((2, 7, 5, 6), "LRN", "lrn_param { local_size: 5 }") == (2, 7, 5, 6)
    assert one((2, 7, 5, 6), "LRN", "lrn_param { local_size: 3 norm_region: WITHIN_CHANNEL }") == (2, 7, 5, 6)
    with pytest.raises(LayerError):
        one((2, 7), "LRN", "")
    with pytest.raises(LayerError):  # Caffe: "LRN only supports odd values for local_size"
        one((2, 7, 5, 6), "LRN", "lrn_param { local_size: 4 }")


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def test_channels_not_divisible_by_group():
    t = input_layer((1, 5, 8, 8)) + conv("conv2", "data", "num_output: 4 kernel_size: 3 group: 2")
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert e.value.layer == "conv2"
    assert "'conv2'" in str(e.value) and "group" in str(e.value)


def test_num_output_not_divisible_by_group():
    t = input_layer((1, 4, 8, 8)) + conv("conv2", "data", "num_output: 5 kernel_size: 3 group: 2")
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert "'conv2'" in str(e.value)


@pytest.mark.parametrize("text,layer", [
    # (3 - 5)/1 + 1 = -1
    (input_layer((1, 1, 3, 3)) + conv("big", "data", "num_output: 1 kernel_size: 5"), "big"),
    # (4 - 5)/1 + 1 = 0
    (input_layer((1, 1, 4, 4)) + conv("big", "data", "num_output: 1 kernel_size: 5"), "big"),
    # dilation 3: extent 7 > 5: (5 - 7)/1 + 1 = -1
    (input_layer((1, 1, 5, 5)) + conv("dil", "data", "num_output: 1 kernel_size: 3 dilation: 3"), "dil"),
    # AlexNet conv1 on a 10x10 image: (10 - 11)/4 = 0 (!) + 1 = 1 is fine for Caffe, so use 11/1: 0
    (input_layer((1, 3, 10, 10)) + conv("conv1", "data", "num_output: 2 kernel_size: 11"), "conv1"),
    # Deconvolution: 1*(1 - 1) + 1 - 2*1 = -1
    (input_layer((1, 1, 1, 1)) + conv("up", "data", "num_output: 1 kernel_size: 1 pad: 1", "Deconvolution"), "up"),
    # Pooling kernel 3 stride 1 on a 1x1 map: ceil(-2/1) + 1 = -1
    (input_layer((1, 1, 1, 1)) + pool("p", "data", "pool: MAX kernel_size: 3"), "p"),
])
def test_non_positive_output_size_names_the_layer(text, layer):
    with pytest.raises(LayerError) as e:
        graph_from_text(text)
    assert e.value.layer == layer
    assert f"'{layer}'" in str(e.value)


def test_unknown_layer_type_lists_supported_types():
    t = input_layer((1, 3, 4, 4)) + _layer("weird", "FancyConv")
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    msg = str(e.value)
    assert "'weird'" in msg and "FancyConv" in msg
    for known in ("Convolution", "Deconvolution", "Pooling", "InnerProduct", "LRN", "ReLU", "Concat"):
        assert known in msg


def test_undefined_bottom():
    t = input_layer((1, 3, 4, 4)) + conv("conv1", "nope", "num_output: 2 kernel_size: 1")
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert e.value.layer == "conv1" and "nope" in str(e.value)


def test_top_written_twice_by_two_non_in_place_layers():
    t = (input_layer((1, 3, 4, 4)) + _layer("conv1", "Convolution", "convolution_param { num_output: 2 kernel_size: 1 }",
                                            top="x")
         + _layer("conv2", "Convolution", "convolution_param { num_output: 2 kernel_size: 1 }", top="x"))
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert e.value.layer == "conv2" and "'x'" in str(e.value)


def test_cycle_is_reported():
    t = (input_layer((1, 3, 4, 4))
         + _layer("a", "ReLU", bottom="tb", top="ta")
         + _layer("b", "ReLU", bottom="ta", top="tb"))
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert "cycle" in str(e.value)


def test_in_place_relu_versions_the_blob():
    t = (input_layer((1, 3, 8, 8)) + conv("conv1", "data", "num_output: 4 kernel_size: 3")
         + _layer("relu1", "ReLU", bottom="conv1", top="conv1"))
    g = graph_from_text(t)
    assert g.values == ["data", "conv1", "conv1:1"]
    assert g.final_value("conv1") == "conv1:1"
    assert g.node("relu1").bottoms == ["conv1"] and g.node("relu1").tops == ["conv1:1"]
    assert g.shapes["conv1"] == g.shapes["conv1:1"] == (1, 4, 6, 6)
    assert g.blob_of["conv1:1"] == "conv1"
    # a second in-place layer: conv1:2, and readers see the latest version
    t2 = t + _layer("drop1", "Dropout", bottom="conv1", top="conv1") + pool("pool1", "conv1", "pool: MAX kernel_size: 2 stride: 2")
    g2 = graph_from_text(t2)
    assert g2.values == ["data", "conv1", "conv1:1", "conv1:2", "pool1"]
    assert g2.final_value("conv1") == "conv1:2"
    assert g2.node("pool1").bottoms == ["conv1:2"]
    assert g2.shapes["pool1"] == (1, 4, 3, 3)  # ceil((6 - 2)/2) + 1 = 3


# ------------------------------------------------------------------------------------------------
# Where convnet's rules and Caffe's differ (these tests assert Caffe's behaviour)
# ------------------------------------------------------------------------------------------------
def test_convolution_pad_w_alone():
    """base_conv_layer.cpp: ``if (has_pad_h() || has_pad_w())`` -> pad = (pad_h (default 0), pad_w).
    5x5, k 3, pad_w 1: rows (5 - 3)/1 + 1 = 3, columns (5 + 2 - 3)/1 + 1 = 5."""
    assert one((1, 2, 5, 5), "Convolution", "convolution_param { num_output: 3 kernel_size: 3 pad_w: 1 }") \
        == (1, 3, 3, 5)


def test_convolution_size_uses_cpp_truncating_division():
    """``(in + 2*pad - extent) / stride + 1`` is C++ int division: (6 - 7)/2 = 0, so Caffe gives 1
    (the window reads one implicit zero row/column). Python floor division gives -1 + 1 = 0."""
    assert one((1, 1, 6, 6), "Convolution", "convolution_param { num_output: 1 kernel_size: 7 stride: 2 }") \
        == (1, 1, 1, 1)


def test_convolution_bottoms_must_share_a_shape():
    """base_conv_layer.cpp Reshape: ``CHECK(bottom[0]->shape() == bottom[bottom_id]->shape())``."""
    t = (input_layer((1, 1, 5, 5), "a") + input_layer((1, 1, 6, 6), "b")
         + _layer("c", "Convolution", "convolution_param { num_output: 1 kernel_size: 3 }",
                  bottom=["a", "b"], top=["ca", "cb"]))
    with pytest.raises(LayerError) as e:
        graph_from_text(t)
    assert e.value.layer == "c"


CAFFE_REFUSES = {
    # PoolingLayer::LayerSetUp: "pad is pad OR pad_h and pad_w are required."
    "pool_pad_w_alone": ("Pooling", "pooling_param { pool: MAX kernel_size: 3 pad_w: 1 }"),
    "pool_pad_and_pad_h": ("Pooling", "pooling_param { pool: MAX kernel_size: 3 pad: 1 pad_h: 1 pad_w: 1 }"),
    # "Stride is stride OR stride_h and stride_w are required."
    "pool_stride_w_alone": ("Pooling", "pooling_param { pool: MAX kernel_size: 3 stride_w: 2 }"),
    # "Filter size is kernel_size OR kernel_h and kernel_w; not both"
    "pool_kernel_size_and_kernel_h_w": ("Pooling", "pooling_param { pool: MAX kernel_size: 3 kernel_h: 2 kernel_w: 2 }"),
    # "Padding implemented only for average and max pooling."
    "pool_stochastic_with_pad": ("Pooling", "pooling_param { pool: STOCHASTIC kernel_size: 3 pad: 1 }"),
    # BaseConvolutionLayer: "Either kernel_size or kernel_h/w should be specified; not both."
    "conv_kernel_size_and_kernel_h_w": ("Convolution",
                                        "convolution_param { num_output: 1 kernel_size: 3 kernel_h: 2 kernel_w: 2 }"),
    # "Either pad or pad_h/w should be specified; not both."
    "conv_pad_and_pad_h_w": ("Convolution", "convolution_param { num_output: 1 kernel_size: 3 pad: 1 pad_h: 2 pad_w: 2 }"),
    # stride_w alone: stride = (stride_h = 0, 2); Caffe divides by 0 in compute_output_shape.
    "conv_stride_w_alone": ("Convolution", "convolution_param { num_output: 1 kernel_size: 3 stride_w: 2 }"),
}


@pytest.mark.parametrize("case", list(CAFFE_REFUSES), ids=list(CAFFE_REFUSES))
def test_parameter_combinations_caffe_refuses(case):
    type_, p = CAFFE_REFUSES[case]
    with pytest.raises(LayerError) as e:
        one((1, 2, 9, 9), type_, p)
    assert e.value.layer == "l"


def test_eltwise_max_accepts_coeff_like_caffe():
    """eltwise_layer.cpp only refuses coeff with PROD ("Eltwise layer only takes coefficients for
    summation." is checked for PROD); with MAX the coefficients are accepted and ignored."""
    two = input_layer((2, 3), "a") + input_layer((2, 3), "b")
    assert shape_of(two + _layer("e", "Eltwise", "eltwise_param { operation: MAX coeff: 1 coeff: 2 }", ["a", "b"]),
                    "e") == (2, 3)
    with pytest.raises(LayerError):
        graph_from_text(two + _layer("e", "Eltwise", "eltwise_param { operation: PROD coeff: 1 coeff: 2 }", ["a", "b"]))
