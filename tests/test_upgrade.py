"""Legacy Caffe net formats upgraded to V2 ``layer`` form (convnet_io.caffe.upgrade).

Expected values are written by hand from the rules of BVLC Caffe's
src/caffe/util/upgrade_proto.cpp, not produced by running the code under test.
"""
from __future__ import annotations

import pytest
from google.protobuf import text_format

from convnet_io.errors import ConvnetError
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.upgrade import is_upgrade_needed, upgrade_net


def parse(text: str) -> caffe_pb2.NetParameter:
    return text_format.Parse(text, caffe_pb2.NetParameter())


def by_name(net: caffe_pb2.NetParameter) -> dict[str, caffe_pb2.LayerParameter]:
    return {layer.name: layer for layer in net.layer}


def lr_decay(layer: caffe_pb2.LayerParameter) -> list[tuple[float, float]]:
    return [(p.lr_mult, p.decay_mult) for p in layer.param]


# ---------------------------------------------------------------------------
# V1 -> V2
# ---------------------------------------------------------------------------

V1_LENET = """
name: "LeNet"
layers {
  name: "mnist"
  type: DATA
  top: "data"
  top: "label"
  data_param {
    source: "examples/mnist/mnist_train_lmdb"
    backend: LMDB
    batch_size: 64
    scale: 0.00390625
    crop_size: 24
    mirror: true
    mean_file: "mean.binaryproto"
  }
  include { phase: TRAIN }
}
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param {
    num_output: 20
    kernel_size: 5
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" }
  }
}
layers {
  name: "pool1"
  type: POOLING
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}
layers {
  name: "ip1"
  type: INNER_PRODUCT
  bottom: "pool1"
  top: "ip1"
  blobs_lr: 1
  blobs_lr: 2
  inner_product_param { num_output: 500 }
}
layers {
  name: "relu1"
  type: RELU
  bottom: "ip1"
  top: "ip1"
}
layers {
  name: "ip2"
  type: INNER_PRODUCT
  bottom: "ip1"
  top: "ip2"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  inner_product_param { num_output: 10 }
}
layers {
  name: "loss"
  type: SOFTMAX_LOSS
  bottom: "ip2"
  bottom: "label"
  top: "loss"
  loss_weight: 1
}
"""


def test_v1_lenet_becomes_v2():
    net = parse(V1_LENET)
    assert is_upgrade_needed(net)
    notes = upgrade_net(net)

    assert len(net.layers) == 0
    assert net.name == "LeNet"
    assert [(l.name, l.type) for l in net.layer] == [
        ("mnist", "Data"),
        ("conv1", "Convolution"),
        ("pool1", "Pooling"),
        ("ip1", "InnerProduct"),
        ("relu1", "ReLU"),
        ("ip2", "InnerProduct"),
        ("loss", "SoftmaxWithLoss"),
    ]
    layers = by_name(net)

    conv1 = layers["conv1"]
    assert list(conv1.bottom) == ["data"] and list(conv1.top) == ["conv1"]
    assert lr_decay(conv1) == [(1.0, 1.0), (2.0, 0.0)]
    assert conv1.convolution_param.num_output == 20
    assert list(conv1.convolution_param.kernel_size) == [5]
    assert list(conv1.convolution_param.stride) == [1]
    assert conv1.convolution_param.weight_filler.type == "xavier"
    assert conv1.convolution_param.bias_filler.type == "constant"

    # blobs_lr without weight_decay: decay_mult is left unset (default 1).
    ip1 = layers["ip1"]
    assert [p.lr_mult for p in ip1.param] == [1.0, 2.0]
    assert [p.HasField("decay_mult") for p in ip1.param] == [False, False]
    assert ip1.inner_product_param.num_output == 500
    assert lr_decay(layers["ip2"]) == [(1.0, 1.0), (2.0, 0.0)]

    pool1 = layers["pool1"]
    assert pool1.pooling_param.pool == caffe_pb2.PoolingParameter.MAX
    assert pool1.pooling_param.kernel_size == 2
    assert pool1.pooling_param.stride == 2

    assert list(layers["relu1"].bottom) == ["ip1"] and list(layers["relu1"].top) == ["ip1"]
    assert len(layers["relu1"].param) == 0

    loss = layers["loss"]
    assert list(loss.bottom) == ["ip2", "label"]
    assert list(loss.loss_weight) == [1.0]

    # Data transformation fields moved from data_param into transform_param.
    data = layers["mnist"]
    assert list(data.top) == ["data", "label"]
    assert data.transform_param.scale == pytest.approx(0.00390625)
    assert data.transform_param.crop_size == 24
    assert data.transform_param.mirror is True
    assert data.transform_param.mean_file == "mean.binaryproto"
    for f in ("scale", "crop_size", "mirror", "mean_file"):
        assert not data.data_param.HasField(f), f
    assert data.data_param.source == "examples/mnist/mnist_train_lmdb"
    assert data.data_param.batch_size == 64
    assert data.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert len(data.include) == 1 and data.include[0].phase == caffe_pb2.TRAIN

    assert len(notes) == 2  # data transformation + V1 -> V2
    assert any("transform_param" in n and "mnist" in n for n in notes)

    # Upgrading an upgraded net is a no-op.
    before = net.SerializeToString()
    assert upgrade_net(net) == []
    assert net.SerializeToString() == before


@pytest.mark.parametrize(
    "v1_type, v2_type",
    [
        ("ABSVAL", "AbsVal"),
        ("ACCURACY", "Accuracy"),
        ("ARGMAX", "ArgMax"),
        ("BNLL", "BNLL"),
        ("CONCAT", "Concat"),
        ("CONTRASTIVE_LOSS", "ContrastiveLoss"),
        ("DECONVOLUTION", "Deconvolution"),
        ("DROPOUT", "Dropout"),
        ("DUMMY_DATA", "DummyData"),
        ("EUCLIDEAN_LOSS", "EuclideanLoss"),
        ("ELTWISE", "Eltwise"),
        ("EXP", "Exp"),
        ("FLATTEN", "Flatten"),
        ("HDF5_DATA", "HDF5Data"),
        ("HDF5_OUTPUT", "HDF5Output"),
        ("HINGE_LOSS", "HingeLoss"),
        ("IM2COL", "Im2col"),
        ("IMAGE_DATA", "ImageData"),
        ("INFOGAIN_LOSS", "InfogainLoss"),
        ("LRN", "LRN"),
        ("MEMORY_DATA", "MemoryData"),
        ("MULTINOMIAL_LOGISTIC_LOSS", "MultinomialLogisticLoss"),
        ("MVN", "MVN"),
        ("POWER", "Power"),
        ("SIGMOID", "Sigmoid"),
        ("SIGMOID_CROSS_ENTROPY_LOSS", "SigmoidCrossEntropyLoss"),
        ("SILENCE", "Silence"),
        ("SOFTMAX", "Softmax"),
        ("SPLIT", "Split"),
        ("SLICE", "Slice"),
        ("TANH", "TanH"),
        ("WINDOW_DATA", "WindowData"),
        ("THRESHOLD", "Threshold"),
    ],
)
def test_v1_type_names(v1_type, v2_type):
    net = parse(f'layers {{ name: "x" type: {v1_type} bottom: "a" top: "b" }}')
    upgrade_net(net)
    assert net.layer[0].type == v2_type


def test_v1_param_names_share_mode_and_sub_params():
    net = parse(
        """
        layers {
          name: "ip_shared"
          type: INNER_PRODUCT
          bottom: "a"
          top: "b"
          param: "w"
          param: "bias"
          blob_share_mode: PERMISSIVE
          blobs_lr: 0.5
          inner_product_param { num_output: 7 bias_term: false }
          exclude { phase: TEST }
        }
        layers {
          name: "sum"
          type: ELTWISE
          bottom: "b"
          bottom: "c"
          top: "d"
          eltwise_param { operation: SUM coeff: 1 coeff: -1 }
        }
        layers {
          name: "drop"
          type: DROPOUT
          bottom: "d"
          top: "d"
          dropout_param { dropout_ratio: 0.3 }
        }
        """
    )
    upgrade_net(net)
    ip = net.layer[0]
    assert [p.name for p in ip.param] == ["w", "bias"]
    assert ip.param[0].share_mode == caffe_pb2.ParamSpec.PERMISSIVE
    assert not ip.param[1].HasField("share_mode")
    assert ip.param[0].lr_mult == 0.5
    assert not ip.param[1].HasField("lr_mult")
    assert ip.inner_product_param.num_output == 7
    assert ip.inner_product_param.bias_term is False
    assert len(ip.exclude) == 1 and ip.exclude[0].phase == caffe_pb2.TEST

    eltwise = net.layer[1]
    assert eltwise.type == "Eltwise"
    assert eltwise.eltwise_param.operation == caffe_pb2.EltwiseParameter.SUM
    assert list(eltwise.eltwise_param.coeff) == [1.0, -1.0]
    assert net.layer[2].dropout_param.dropout_ratio == pytest.approx(0.3)


def test_v1_image_and_window_data_transformation():
    net = parse(
        """
        layers {
          name: "images" type: IMAGE_DATA top: "data" top: "label"
          image_data_param { source: "list.txt" batch_size: 8 mirror: true crop_size: 32 new_height: 40 }
        }
        layers {
          name: "windows" type: WINDOW_DATA top: "wdata" top: "wlabel"
          window_data_param { source: "windows.txt" scale: 0.5 mean_file: "m.binaryproto" fg_threshold: 0.6 }
        }
        """
    )
    upgrade_net(net)
    images, windows = net.layer
    assert images.type == "ImageData"
    assert images.transform_param.mirror is True
    assert images.transform_param.crop_size == 32
    assert not images.transform_param.HasField("scale")
    assert not images.image_data_param.HasField("mirror")
    assert not images.image_data_param.HasField("crop_size")
    assert images.image_data_param.new_height == 40
    assert images.image_data_param.source == "list.txt"

    assert windows.type == "WindowData"
    assert windows.transform_param.scale == 0.5
    assert windows.transform_param.mean_file == "m.binaryproto"
    assert not windows.window_data_param.HasField("scale")
    assert not windows.window_data_param.HasField("mean_file")
    assert windows.window_data_param.fg_threshold == pytest.approx(0.6)


def test_v1_net_with_v2_layers_is_an_error():
    net = parse(
        """
        layers { name: "relu" type: RELU bottom: "a" top: "a" }
        layer { name: "sig" type: "Sigmoid" bottom: "a" top: "b" }
        """
    )
    with pytest.raises(ValueError, match="'layers'.*'layer'") as info:
        upgrade_net(net)
    assert isinstance(info.value, ConvnetError)


def _v1_layer_with_raw_type(name: str, type_value: int) -> bytes:
    """A serialized NetParameter with one V1 layer whose ``type`` enum value is ``type_value``."""
    layer = caffe_pb2.V1LayerParameter(name=name, bottom=["a"], top=["b"]).SerializeToString()
    layer += bytes([(5 << 3) | 0, type_value])  # field 5 (type), varint; type_value < 128
    return bytes([(2 << 3) | 2, len(layer)]) + layer  # NetParameter field 2 (layers)


def test_unknown_v1_type_is_an_error():
    net = caffe_pb2.NetParameter.FromString(_v1_layer_with_raw_type("mystery", 99))
    assert len(net.layers) == 1
    with pytest.raises(ConvnetError, match="mystery") as info:
        upgrade_net(net)
    assert "99" in str(info.value)


def test_v1_layer_without_type_is_an_error():
    net = parse('layers { name: "typeless" bottom: "a" top: "b" }')
    with pytest.raises(ConvnetError, match="typeless"):
        upgrade_net(net)


# ---------------------------------------------------------------------------
# deploy-style net inputs -> Input layer
# ---------------------------------------------------------------------------


def test_input_dim_becomes_input_layer():
    net = parse(
        """
        name: "CaffeNet"
        input: "data"
        input_dim: 10
        input_dim: 3
        input_dim: 227
        input_dim: 227
        layer {
          name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
          convolution_param { num_output: 96 kernel_size: 11 stride: 4 }
        }
        """
    )
    notes = upgrade_net(net)
    assert len(notes) == 1
    assert [(l.name, l.type) for l in net.layer] == [("input", "Input"), ("conv1", "Convolution")]
    inp = net.layer[0]
    assert list(inp.top) == ["data"]
    assert len(inp.bottom) == 0
    assert [list(s.dim) for s in inp.input_param.shape] == [[10, 3, 227, 227]]
    assert len(net.input) == 0 and len(net.input_dim) == 0 and len(net.input_shape) == 0
    assert net.layer[1].convolution_param.num_output == 96


def test_input_shape_becomes_input_layer():
    net = parse(
        """
        input: "data"
        input_shape { dim: 1 dim: 3 dim: 224 dim: 224 }
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
        """
    )
    upgrade_net(net)
    assert [l.type for l in net.layer] == ["Input", "ReLU"]
    assert net.layer[0].name == "input"
    assert list(net.layer[0].top) == ["data"]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 3, 224, 224]]
    assert len(net.input) == 0 and len(net.input_shape) == 0


def test_two_inputs_share_one_input_layer():
    net = parse(
        """
        input: "data"
        input: "im_info"
        input_dim: 1
        input_dim: 3
        input_dim: 600
        input_dim: 800
        input_dim: 1
        input_dim: 3
        input_dim: 1
        input_dim: 1
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
        """
    )
    upgrade_net(net)
    assert [l.type for l in net.layer] == ["Input", "ReLU"]
    inp = net.layer[0]
    assert list(inp.top) == ["data", "im_info"]
    assert [list(s.dim) for s in inp.input_param.shape] == [[1, 3, 600, 800], [1, 3, 1, 1]]


def test_two_input_shapes():
    net = parse(
        """
        input: "a"
        input_shape { dim: 2 dim: 5 }
        input: "b"
        input_shape { dim: 2 dim: 1 dim: 7 }
        layer { name: "cat" type: "Concat" bottom: "a" bottom: "b" top: "c" }
        """
    )
    upgrade_net(net)
    inp = net.layer[0]
    assert list(inp.top) == ["a", "b"]
    assert [list(s.dim) for s in inp.input_param.shape] == [[2, 5], [2, 1, 7]]


def test_v1_deploy_net_with_inputs():
    net = parse(
        """
        input: "data"
        input_dim: 1
        input_dim: 1
        input_dim: 28
        input_dim: 28
        layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
        layers { name: "prob" type: SOFTMAX bottom: "ip" top: "prob" }
        """
    )
    notes = upgrade_net(net)
    assert len(notes) == 2
    assert [(l.name, l.type) for l in net.layer] == [("input", "Input"), ("ip", "InnerProduct"), ("prob", "Softmax")]
    assert [list(s.dim) for s in net.layer[0].input_param.shape] == [[1, 1, 28, 28]]


def test_inputs_without_shape_are_dropped():
    net = parse(
        """
        input: "data"
        layer { name: "relu" type: "ReLU" bottom: "data" top: "data" }
        """
    )
    notes = upgrade_net(net)
    assert len(notes) == 1
    assert [l.name for l in net.layer] == ["relu"]
    assert len(net.input) == 0


def test_wrong_number_of_input_dims_is_an_error():
    net = parse('input: "data" input_dim: 1 input_dim: 3 input_dim: 224')
    with pytest.raises(ConvnetError, match="input_dim"):
        upgrade_net(net)


def test_missing_input_shape_is_an_error():
    net = parse('input: "a" input: "b" input_shape { dim: 1 }')
    with pytest.raises(ConvnetError, match="input_shape"):
        upgrade_net(net)


# ---------------------------------------------------------------------------
# V0 -> V1 -> V2
# ---------------------------------------------------------------------------

V0_CAFFENET = """
name: "CaffeNet"
input: "data"
input_dim: 10
input_dim: 3
input_dim: 227
input_dim: 227
layers {
  layer {
    name: "conv1"
    type: "conv"
    num_output: 96
    kernelsize: 11
    stride: 4
    blobs_lr: 1
    blobs_lr: 2
    weight_decay: 1
    weight_decay: 0
    weight_filler { type: "gaussian" std: 0.01 }
    bias_filler { type: "constant" value: 0 }
  }
  bottom: "data"
  top: "conv1"
}
layers {
  layer { name: "relu1" type: "relu" }
  bottom: "conv1"
  top: "conv1"
}
layers {
  layer { name: "pool1" type: "pool" pool: MAX kernelsize: 3 stride: 2 }
  bottom: "conv1"
  top: "pool1"
}
layers {
  layer { name: "norm1" type: "lrn" local_size: 5 alpha: 0.0001 beta: 0.75 }
  bottom: "pool1"
  top: "norm1"
}
layers {
  layer { name: "pad2" type: "padding" pad: 2 }
  bottom: "norm1"
  top: "pad2"
}
layers {
  layer { name: "conv2" type: "conv" num_output: 256 group: 2 kernelsize: 5 blobs_lr: 1 blobs_lr: 2 }
  bottom: "pad2"
  top: "conv2"
}
layers {
  layer { name: "pool2" type: "pool" pool: AVE kernelsize: 3 stride: 2 }
  bottom: "conv2"
  top: "pool2"
}
layers {
  layer { name: "fc6" type: "innerproduct" num_output: 4096 biasterm: false }
  bottom: "pool2"
  top: "fc6"
}
layers {
  layer { name: "drop6" type: "dropout" dropout_ratio: 0.5 }
  bottom: "fc6"
  top: "fc6"
}
layers {
  layer { name: "prob" type: "softmax" }
  bottom: "fc6"
  top: "prob"
}
"""


def test_v0_caffenet_becomes_v2():
    net = parse(V0_CAFFENET)
    notes = upgrade_net(net)

    assert len(net.layers) == 0
    assert net.name == "CaffeNet"
    assert [(l.name, l.type) for l in net.layer] == [
        ("input", "Input"),
        ("conv1", "Convolution"),
        ("relu1", "ReLU"),
        ("pool1", "Pooling"),
        ("norm1", "LRN"),
        ("conv2", "Convolution"),
        ("pool2", "Pooling"),
        ("fc6", "InnerProduct"),
        ("drop6", "Dropout"),
        ("prob", "Softmax"),
    ]
    layers = by_name(net)
    assert [list(s.dim) for s in layers["input"].input_param.shape] == [[10, 3, 227, 227]]
    assert list(layers["input"].top) == ["data"]

    conv1 = layers["conv1"].convolution_param
    assert conv1.num_output == 96
    assert list(conv1.kernel_size) == [11]
    assert list(conv1.stride) == [4]
    assert list(conv1.pad) == []
    assert conv1.weight_filler.type == "gaussian"
    assert conv1.weight_filler.std == pytest.approx(0.01)
    assert conv1.bias_filler.type == "constant"
    assert lr_decay(layers["conv1"]) == [(1.0, 1.0), (2.0, 0.0)]
    assert list(layers["conv1"].bottom) == ["data"]

    assert list(layers["relu1"].bottom) == ["conv1"] and list(layers["relu1"].top) == ["conv1"]

    pool1 = layers["pool1"].pooling_param
    assert pool1.pool == caffe_pb2.PoolingParameter.MAX
    assert pool1.kernel_size == 3 and pool1.stride == 2
    assert layers["pool2"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE

    lrn = layers["norm1"].lrn_param
    assert lrn.local_size == 5
    assert lrn.alpha == pytest.approx(0.0001)
    assert lrn.beta == pytest.approx(0.75)

    # The padding layer is gone: conv2 reads norm1 directly and carries pad 2.
    assert "pad2" not in layers
    conv2 = layers["conv2"]
    assert list(conv2.bottom) == ["norm1"]
    assert list(conv2.convolution_param.pad) == [2]
    assert conv2.convolution_param.group == 2
    assert list(conv2.convolution_param.kernel_size) == [5]
    assert conv2.convolution_param.num_output == 256
    assert [p.lr_mult for p in conv2.param] == [1.0, 2.0]

    fc6 = layers["fc6"].inner_product_param
    assert fc6.num_output == 4096
    assert fc6.bias_term is False
    assert layers["drop6"].dropout_param.dropout_ratio == pytest.approx(0.5)
    assert list(layers["prob"].bottom) == ["fc6"]

    assert len(notes) == 3  # V0 -> V1, V1 -> V2, inputs
    assert any("padding" in n for n in notes)


def test_v0_data_loss_concat_accuracy():
    net = parse(
        """
        layers {
          layer {
            name: "data" type: "data" source: "train_leveldb" batchsize: 256
            cropsize: 227 mirror: true meanfile: "mean.binaryproto" scale: 0.5 rand_skip: 3
          }
          top: "data"
          top: "label"
        }
        layers {
          layer { name: "cat" type: "concat" concat_dim: 1 }
          bottom: "data"
          bottom: "data"
          top: "cat"
        }
        layers {
          layer { name: "flat" type: "flatten" }
          bottom: "cat"
          top: "flat"
        }
        layers {
          layer { name: "loss" type: "softmax_loss" }
          bottom: "flat"
          bottom: "label"
          top: "loss"
        }
        layers {
          layer { name: "acc" type: "accuracy" }
          bottom: "flat"
          bottom: "label"
          top: "acc"
        }
        """
    )
    upgrade_net(net)
    assert [(l.name, l.type) for l in net.layer] == [
        ("data", "Data"),
        ("cat", "Concat"),
        ("flat", "Flatten"),
        ("loss", "SoftmaxWithLoss"),
        ("acc", "Accuracy"),
    ]
    data = net.layer[0]
    assert data.data_param.source == "train_leveldb"
    assert data.data_param.batch_size == 256
    assert data.data_param.rand_skip == 3
    assert data.transform_param.crop_size == 227
    assert data.transform_param.mirror is True
    assert data.transform_param.mean_file == "mean.binaryproto"
    assert data.transform_param.scale == 0.5
    assert list(data.top) == ["data", "label"]
    assert net.layer[1].concat_param.concat_dim == 1
    assert list(net.layer[1].bottom) == ["data", "data"]
    assert list(net.layer[3].bottom) == ["flat", "label"]


def test_v0_padding_into_pooling():
    net = parse(
        """
        input: "data"
        input_dim: 1 input_dim: 1 input_dim: 8 input_dim: 8
        layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "padded" }
        layers { layer { name: "pool" type: "pool" pool: MAX kernelsize: 3 stride: 1 } bottom: "padded" top: "pool" }
        """
    )
    upgrade_net(net)
    assert [l.name for l in net.layer] == ["input", "pool"]
    pool = net.layer[1]
    assert list(pool.bottom) == ["data"]
    assert pool.pooling_param.pad == 1
    assert pool.pooling_param.kernel_size == 3


def test_v0_parameter_for_wrong_type_is_dropped_with_note():
    net = parse(
        """
        input: "x"
        layers { layer { name: "relu1" type: "relu" num_output: 5 } bottom: "x" top: "x" }
        """
    )
    notes = upgrade_net(net)
    assert net.layer[0].type == "ReLU"
    assert not net.layer[0].HasField("inner_product_param")
    assert not net.layer[0].HasField("convolution_param")
    assert any("relu1" in n and "num_output" in n for n in notes)


def test_v0_padding_into_relu_is_an_error():
    net = parse(
        """
        input: "data"
        layers { layer { name: "pad" type: "padding" pad: 1 } bottom: "data" top: "padded" }
        layers { layer { name: "act" type: "relu" } bottom: "padded" top: "act" }
        """
    )
    with pytest.raises(ConvnetError, match="act"):
        upgrade_net(net)


def test_v0_unknown_type_is_an_error():
    net = parse('input: "x" layers { layer { name: "odd" type: "warp_field" } bottom: "x" top: "y" }')
    with pytest.raises(ConvnetError, match="odd.*warp_field"):
        upgrade_net(net)


def test_v0_unknown_bottom_is_an_error():
    net = parse('layers { layer { name: "r" type: "relu" } bottom: "nowhere" top: "y" }')
    with pytest.raises(ConvnetError, match="'r'.*nowhere"):
        upgrade_net(net)


# ---------------------------------------------------------------------------
# BatchNorm param specs
# ---------------------------------------------------------------------------


def test_batch_norm_statistics_specs_stop_learning():
    # Caffe's UpgradeNetBatchNorm: three param specs get lr_mult 0 and decay_mult 0, others stay.
    net = parse(
        """
        layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 dim: 2 dim: 2 } } }
        layer {
          name: "bn1" type: "BatchNorm" bottom: "x" top: "x"
          param { lr_mult: 1 name: "m" }
          param { lr_mult: 1 decay_mult: 1 }
          param { lr_mult: 0 }
          batch_norm_param { use_global_stats: true eps: 0.001 }
        }
        layer {
          name: "scale1" type: "Scale" bottom: "x" top: "x"
          param { lr_mult: 1 }
          param { lr_mult: 1 }
          param { lr_mult: 1 }
          scale_param { bias_term: true }
        }
        """
    )
    notes = upgrade_net(net)
    assert len(notes) == 1 and "bn1" in notes[0]
    bn = by_name(net)["bn1"]
    assert [(p.lr_mult, p.decay_mult) for p in bn.param] == [(0, 0)] * 3
    assert bn.param[0].name == "m"
    assert upgrade_net(net) == []
    assert bn.batch_norm_param.use_global_stats is True
    assert bn.batch_norm_param.eps == pytest.approx(0.001)
    # Only BatchNorm layers are touched.
    assert len(by_name(net)["scale1"].param) == 3


# ---------------------------------------------------------------------------
# current nets pass through
# ---------------------------------------------------------------------------


def test_v2_net_is_unchanged():
    net = parse(
        """
        name: "tiny"
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }
        layer {
          name: "conv" type: "Convolution" bottom: "data" top: "conv"
          param { lr_mult: 1 decay_mult: 1 }
          param { lr_mult: 2 decay_mult: 0 }
          convolution_param { num_output: 4 kernel_size: 3 }
        }
        layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "conv" }
        layer {
          name: "data_train" type: "Data" top: "d" top: "l"
          data_param { source: "db" batch_size: 4 scale: 0.5 }
          include { phase: TRAIN }
        }
        """
    )
    before = net.SerializeToString()
    assert not is_upgrade_needed(net)
    assert upgrade_net(net) == []
    assert net.SerializeToString() == before
