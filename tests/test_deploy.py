"""deploy_text: any graph written back as a deploy prototxt that re-parses to the same net.

Round trip: deploy_text(graph) -> parse_net_text -> build_graph gives the same layer names, types,
blob names, value shapes, learnable blob shapes and typed attributes as the layers the deploy net
keeps, and an Input layer per data input with the graph's shape.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format

from convnet_io.api.loading import load_graph
from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.deploy import WRITERS, deploy_net, deploy_nodes, deploy_text, is_eval_type
from convnet_io.errors import ConvnetError
from convnet_io.graph.layers import get_spec, supported_types
from convnet_io.caffe.prototxt import parse_net_text
from helpers import graph_from_text, input_layer

ROOT = Path(__file__).resolve().parents[1]
MODELS = Path(__file__).resolve().parents[1].parent / "shared" / "caffe-models"
needs_shared = pytest.mark.skipif(not MODELS.is_dir(), reason=f"reference nets not found at {MODELS}")


def reparse(text: str):
    return build_graph(parse_net_text(text, "<deploy>"), phase="TEST")


def assert_round_trip(graph):
    """deploy_text(graph) re-parses to the kept part of ``graph``; returns the new graph."""
    text = deploy_text(graph)
    new = reparse(text)
    kept, inputs = deploy_nodes(graph)
    # One Input layer per kept data input, same blob name and shape.
    assert [n.type for n in new.nodes[:len(inputs)]] == ["Input"] * len(inputs)
    assert new.inputs == [graph.blob_of[v] for v in inputs]
    assert [new.shapes[v] for v in new.inputs] == [graph.shapes[v] for v in inputs]
    body = [n for n in new.nodes if not n.is_source]
    assert [n.name for n in body] == [n.name for n in kept]
    for old, now in zip(kept, body):
        assert now.type == old.type, old.name
        assert [new.blob_of[b] for b in now.bottoms] == [graph.blob_of[b] for b in old.bottoms], old.name
        assert [new.blob_of[t] for t in now.tops] == [graph.blob_of[t] for t in old.tops], old.name
        assert [new.shapes[t] for t in now.tops] == [graph.shapes[t] for t in old.tops], old.name
        assert [p.shape for p in now.params] == [p.shape for p in old.params], old.name
        assert now.param_count == old.param_count, old.name
        assert [p.share_name for p in now.params] == [p.share_name for p in old.params], old.name
        assert now.attrs == old.attrs, old.name
    assert new.param_count == sum(n.param_count for n in kept)
    assert not any(is_eval_type(n.type) for n in new.nodes)
    # It is text_format's own rendering: printing the parsed message gives the same text back.
    assert text_format.MessageToString(parse_net_text(text)) == text
    return new


# -- every reference and bundled net -----------------------------------------------------------------

def _reference_nets():
    if not MODELS.is_dir():
        return []
    return sorted(p.relative_to(MODELS).as_posix() for p in MODELS.rglob("*.prototxt") if "solver" not in p.name)


# Data layers without crop_size cannot know their image size: give one (batch 2).
SHAPES = {"cifar10": (2, 3, 32, 32), "mnist": (2, 1, 28, 28)}


@needs_shared
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("net", _reference_nets())
def test_reference_net_round_trips(net, phase):
    graph = load_graph(MODELS / net, phase=phase, input_shapes=SHAPES.get(net.split("/")[0]))
    assert_round_trip(graph)


@pytest.mark.parametrize("net", ["alexnet.prototxt", "caffenet.prototxt", "alexnet_caffe2.txt"])
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_bundled_net_round_trips(net, phase):
    graph = load_graph(ROOT / "prototxt" / net, phase=phase)
    new = assert_round_trip(graph)
    assert new.param_count == 60965224  # AlexNet with two-GPU groups, every source format


@needs_shared
@pytest.mark.parametrize("family", ["bvlc_alexnet", "bvlc_reference_caffenet", "bvlc_googlenet"])
def test_train_val_deploy_has_the_bvlc_deploy_layers(family):
    """The BVLC deploy files are their train_val nets without data, losses, accuracies and the
    auxiliary classifiers, plus a final Softmax: deploy_text keeps exactly those layers."""
    ours = reparse(deploy_text(load_graph(MODELS / family / "train_val.prototxt", phase="TEST")))
    theirs = load_graph(MODELS / family / "deploy.prototxt")
    expect = [n.name for n in theirs.nodes if not n.is_source and n.type != "Softmax"]
    assert [n.name for n in ours.nodes if not n.is_source] == expect
    assert ours.shapes["data"][1:] == theirs.shapes["data"][1:]  # crop_size -> the deploy's C, H, W
    assert ours.param_count == theirs.param_count


@needs_shared
def test_label_input_and_losses_are_dropped():
    graph = load_graph(MODELS / "mnist/lenet_train_test.prototxt", phase="TEST", input_shapes=(1, 1, 28, 28))
    net = deploy_net(graph)
    names = [layer.name for layer in net.layer]
    assert names == ["mnist", "conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2"]
    data = net.layer[0]
    assert data.type == "Input" and list(data.top) == ["data"]
    assert list(data.input_param.shape[0].dim) == [1, 1, 28, 28]
    assert "label" not in deploy_text(graph)
    assert reparse(deploy_text(graph)).outputs == ["ip2"]


@needs_shared
def test_googlenet_auxiliary_classifiers_are_dropped():
    graph = load_graph(MODELS / "bvlc_googlenet/train_val.prototxt", phase="TRAIN")
    names = [n.name for n in reparse(deploy_text(graph)).nodes]
    assert not any(n.startswith(("loss1/", "loss2/")) for n in names)
    assert "loss3/classifier" in names and "loss3/loss3" not in names
    assert "inception_4a/output" in names  # it fed loss1 as well as the trunk


def test_caffe2_listing_deploy_text():
    text = deploy_text(load_graph(ROOT / "prototxt" / "alexnet_caffe2.txt"))
    new = reparse(text)
    assert new.node("conv2").attrs.group == 2
    assert new.node("conv2").params[1].filler.value == 1.0  # the listing's ConstantFill survives
    assert new.outputs == ["prob"]


# -- every layer type ---------------------------------------------------------------------------------

ALL_TYPES = input_layer((2, 4, 8, 9)) + input_layer((2, 4, 8, 9), "other") + input_layer((2, 5), "ids") + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" param { name: "shared_w" } param { lr_mult: 2 }
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0
        dilation: 1 dilation: 2 group: 2 weight_filler { type: "msra" variance_norm: FAN_OUT }
        bias_filler { type: "constant" value: 0.2 } } }
layer { name: "conv_shared" type: "Convolution" bottom: "data" top: "conv_shared" param { name: "shared_w" }
        convolution_param { num_output: 6 kernel_h: 3 kernel_w: 2 stride_h: 1 stride_w: 2 pad_h: 1 pad_w: 0
        dilation: 1 dilation: 2 group: 2 bias_term: false } }
layer { name: "conv_sq" type: "Convolution" bottom: "data" top: "conv_sq"
        convolution_param { num_output: 3 kernel_size: 3 stride: 2 pad: 1 dilation: 2
        weight_filler { type: "xavier" } } }
layer { name: "deconv" type: "Deconvolution" bottom: "data" top: "deconv"
        convolution_param { num_output: 4 kernel_size: 4 stride: 2 pad: 1 group: 4 bias_term: false
        weight_filler { type: "bilinear" } } }
layer { name: "pool_ave" type: "Pooling" bottom: "data" top: "pool_ave"
        pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 1 pad_h: 1 pad_w: 1 } }
layer { name: "pool_floor" type: "Pooling" bottom: "data" top: "pool_floor"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 round_mode: FLOOR } }
layer { name: "pool_global" type: "Pooling" bottom: "data" top: "pool_global" pooling_param { global_pooling: true } }
layer { name: "pool_sto" type: "Pooling" bottom: "data" top: "pool_sto" pooling_param { pool: STOCHASTIC kernel_size: 2 stride: 2 } }
layer { name: "ip" type: "InnerProduct" bottom: "pool_ave" top: "ip"
        inner_product_param { num_output: 5 transpose: true weight_filler { type: "uniform" min: -0.5 max: 0.5 } } }
layer { name: "ip_axis" type: "InnerProduct" bottom: "data" top: "ip_axis"
        inner_product_param { num_output: 3 axis: 2 bias_term: false } }
layer { name: "embed" type: "Embed" bottom: "ids" top: "embed"
        embed_param { num_output: 3 input_dim: 10 weight_filler { type: "gaussian" std: 0.3 mean: 0.1 sparse: 2 } } }
layer { name: "lrn" type: "LRN" bottom: "data" top: "lrn" lrn_param { local_size: 3 alpha: 0.0001 beta: 0.5 k: 2 } }
layer { name: "lrn_within" type: "LRN" bottom: "data" top: "lrn_within" lrn_param { norm_region: WITHIN_CHANNEL } }
layer { name: "bn" type: "BatchNorm" bottom: "conv" top: "bn" batch_norm_param { eps: 0.001 moving_average_fraction: 0.9 } }
layer { name: "bn_global" type: "BatchNorm" bottom: "conv" top: "bn_global" batch_norm_param { use_global_stats: false } }
layer { name: "scale" type: "Scale" bottom: "bn" top: "bn" scale_param { bias_term: true filler { value: 2 } } }
layer { name: "scale2" type: "Scale" bottom: "data" bottom: "other" top: "scale2" scale_param { axis: 0 } }
layer { name: "bias" type: "Bias" bottom: "data" top: "bias" bias_param { axis: 2 num_axes: 2 } }
layer { name: "bias2" type: "Bias" bottom: "data" bottom: "other" top: "bias2" bias_param { axis: 0 } }
layer { name: "mvn" type: "MVN" bottom: "data" top: "mvn" mvn_param { normalize_variance: false across_channels: true eps: 0.01 } }
layer { name: "relu" type: "ReLU" bottom: "bn" top: "bn" relu_param { negative_slope: 0.1 } }
layer { name: "prelu" type: "PReLU" bottom: "data" top: "prelu" prelu_param { channel_shared: true filler { value: 0.1 } } }
layer { name: "elu" type: "ELU" bottom: "data" top: "elu" elu_param { alpha: 0.5 } }
layer { name: "sigmoid" type: "Sigmoid" bottom: "data" top: "sigmoid" }
layer { name: "tanh" type: "TanH" bottom: "data" top: "tanh" }
layer { name: "absval" type: "AbsVal" bottom: "data" top: "absval" }
layer { name: "bnll" type: "BNLL" bottom: "data" top: "bnll" }
layer { name: "power" type: "Power" bottom: "data" top: "power" power_param { power: 2 scale: 0.5 shift: 1 } }
layer { name: "exp" type: "Exp" bottom: "data" top: "exp" exp_param { base: 2 scale: 0.5 shift: 0.1 } }
layer { name: "log" type: "Log" bottom: "absval" top: "log" log_param { base: 10 shift: 1 } }
layer { name: "threshold" type: "Threshold" bottom: "data" top: "threshold" threshold_param { threshold: 0.3 } }
layer { name: "clip" type: "Clip" bottom: "data" top: "clip" clip_param { min: -1 max: 0 } }
layer { name: "swish" type: "Swish" bottom: "data" top: "swish" swish_param { beta: 1.5 } }
layer { name: "drop" type: "Dropout" bottom: "sigmoid" top: "sigmoid" dropout_param { dropout_ratio: 0.25 } }
layer { name: "eltwise" type: "Eltwise" bottom: "data" bottom: "other" top: "eltwise" eltwise_param { coeff: 1 coeff: -0.5 } }
layer { name: "eltwise_max" type: "Eltwise" bottom: "data" bottom: "other" top: "eltwise_max" eltwise_param { operation: MAX } }
layer { name: "eltwise_prod" type: "Eltwise" bottom: "data" bottom: "other" bottom: "tanh" top: "eltwise_prod"
        eltwise_param { operation: PROD } }
layer { name: "concat" type: "Concat" bottom: "data" bottom: "other" top: "concat" concat_param { concat_dim: 0 } }
layer { name: "concat3" type: "Concat" bottom: "data" bottom: "other" top: "concat3" concat_param { axis: -1 } }
layer { name: "slice" type: "Slice" bottom: "data" top: "s1" top: "s2" slice_param { slice_dim: 3 slice_point: 4 } }
layer { name: "slice_even" type: "Slice" bottom: "data" top: "e1" top: "e2" }
layer { name: "split" type: "Split" bottom: "data" top: "copy1" top: "copy2" }
layer { name: "flatten" type: "Flatten" bottom: "data" top: "flatten" flatten_param { axis: 2 end_axis: 3 } }
layer { name: "reshape" type: "Reshape" bottom: "data" top: "reshape" reshape_param { shape { dim: 0 dim: -1 } axis: 1 num_axes: 2 } }
layer { name: "reshape_empty" type: "Reshape" bottom: "ip" top: "reshape_empty" reshape_param { shape { } axis: 1 num_axes: 0 } }
layer { name: "crop" type: "Crop" bottom: "data" bottom: "pool_floor" top: "crop" crop_param { axis: 2 offset: 1 offset: 0 } }
layer { name: "tile" type: "Tile" bottom: "data" top: "tile" tile_param { axis: 2 tiles: 3 } }
layer { name: "reduction" type: "Reduction" bottom: "data" top: "reduction" reduction_param { operation: MEAN axis: 2 coeff: 3 } }
layer { name: "reduction_sum" type: "Reduction" bottom: "data" top: "reduction_sum" }
layer { name: "argmax" type: "ArgMax" bottom: "ip" top: "argmax" argmax_param { top_k: 2 out_max_val: true } }
layer { name: "argmax_axis" type: "ArgMax" bottom: "data" top: "argmax_axis" argmax_param { axis: 1 } }
layer { name: "softmax" type: "Softmax" bottom: "data" top: "softmax" softmax_param { axis: -1 } }
layer { name: "softmax_default" type: "Softmax" bottom: "ip" top: "softmax_default" }
layer { name: "parameter" type: "Parameter" top: "parameter" parameter_param { shape { dim: 3 dim: 2 } } }
layer { name: "pool_mask" type: "Pooling" bottom: "data" top: "pm" top: "pm_mask" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "unpool" type: "Upsample" bottom: "pm" bottom: "pm_mask" top: "unpool" upsample_param { upsample_h: 8 upsample_w: 9 } }
layer { name: "up_nearest" type: "Upsample" bottom: "data" top: "up_nearest" upsample_param { scale: 2 } }
layer { name: "interp" type: "Interp" bottom: "data" top: "interp" interp_param { zoom_factor: 2 pad_beg: -1 } }
layer { name: "roi_pool" type: "ROIPooling" bottom: "data" bottom: "ids" top: "roi_pool" roi_pooling_param { pooled_h: 2 pooled_w: 3 spatial_scale: 0.5 } }
layer { name: "psroi" type: "PSROIPooling" bottom: "data" bottom: "ids" top: "psroi" psroi_pooling_param { spatial_scale: 0.5 output_dim: 1 group_size: 2 } }
layer { name: "reorg" type: "Reorg" bottom: "up_nearest" top: "reorg" reorg_param { stride: 2 } }
layer { name: "reorg_nhwc" type: "Permute" bottom: "reorg" top: "reorg_nhwc" permute_param { order: 0 order: 2 order: 3 order: 1 } }
layer { name: "region" type: "Region" bottom: "reorg_nhwc" top: "region" region_param { classes: 3 coords: 4 boxes_of_each_grid: 2 softmax: true } }
layer { name: "relu6" type: "ReLU6" bottom: "data" top: "relu6" }
layer { name: "shuffle" type: "ShuffleChannel" bottom: "data" top: "shuffle" shuffle_channel_param { group: 2 } }
layer { name: "fork_gap" type: "Pooling" bottom: "data" top: "fork_gap" pooling_param { pool: AVE global_pooling: true } }
layer { name: "axpy" type: "Axpy" bottom: "fork_gap" bottom: "data" bottom: "other" top: "axpy" }
layer { name: "depthwise" type: "ConvolutionDepthwise" bottom: "data" top: "depthwise" convolution_param { num_output: 4 group: 4 kernel_size: 3 } }
layer { name: "image_split" type: "Slice" bottom: "data" top: "image0" top: "image1" slice_param { axis: 0 } }
layer { name: "rpn_deltas" type: "Concat" bottom: "image0" bottom: "image1" top: "rpn_deltas" }
layer { name: "im_info" type: "Reshape" bottom: "ids" top: "im_info" reshape_param { shape { dim: 1 dim: -1 } } }
layer { name: "proposal" type: "Proposal" bottom: "image0" bottom: "rpn_deltas" bottom: "im_info" top: "rois" top: "roi_scores"
        proposal_param { feat_stride: 4 ratio: 1 scale: 2 scale: 4 post_nms_topn: 7 } }
layer { name: "ssd_norm" type: "Normalize" bottom: "data" top: "ssd_norm"
        norm_param { across_spatial: false channel_shared: false scale_filler { type: "constant" value: 20 } } }
layer { name: "ssd_prior" type: "PriorBox" bottom: "ssd_norm" bottom: "data" top: "ssd_prior"
        prior_box_param { min_size: 4 max_size: 8 aspect_ratio: 2 clip: true variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 1 } }
layer { name: "ssd_loc" type: "Convolution" bottom: "ssd_norm" top: "ssd_loc" convolution_param { num_output: 16 kernel_size: 3 pad: 1 } }
layer { name: "ssd_loc_flat" type: "Flatten" bottom: "ssd_loc" top: "ssd_loc_flat" }
layer { name: "ssd_conf" type: "Convolution" bottom: "ssd_norm" top: "ssd_conf" convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "ssd_conf_flat" type: "Flatten" bottom: "ssd_conf" top: "ssd_conf_flat" }
layer { name: "ssd_det" type: "DetectionOutput" bottom: "ssd_loc_flat" bottom: "ssd_conf_flat" bottom: "ssd_prior" top: "ssd_det"
        detection_output_param { num_classes: 2 code_type: CENTER_SIZE keep_top_k: 20 confidence_threshold: 0.1 nms_param { nms_threshold: 0.45 top_k: 50 } } }
layer { name: "spp" type: "SPP" bottom: "data" top: "spp" spp_param { pyramid_height: 2 pool: AVE } }
layer { name: "im2col" type: "Im2col" bottom: "data" top: "im2col" convolution_param { kernel_size: 3 stride: 2 pad: 1 } }
layer { name: "conv_1d" type: "Convolution" bottom: "data" top: "conv_1d" convolution_param { num_output: 3 kernel_size: 3 axis: 2 } }
layer { name: "row_index" type: "Reduction" bottom: "ids" top: "row_index" reduction_param { axis: 1 } }
layer { name: "reindex" type: "BatchReindex" bottom: "data" bottom: "row_index" top: "reindex" }
layer { name: "filter" type: "Filter" bottom: "data" bottom: "row_index" top: "filtered" }
layer { name: "h5out" type: "HDF5Output" bottom: "data" bottom: "ids" hdf5_output_param { file_name: "out.h5" } }
layer { name: "silence" type: "Silence" bottom: "copy2" bottom: "e2" }
layer { name: "seq" type: "Input" top: "cont" top: "c_prev" top: "gates" top: "cont1" top: "x_static"
        input_param { shape { dim: 2 dim: 4 } shape { dim: 1 dim: 4 dim: 3 } shape { dim: 1 dim: 4 dim: 12 }
        shape { dim: 1 dim: 4 } shape { dim: 4 dim: 6 } } }
layer { name: "lstm" type: "LSTM" bottom: "data" bottom: "cont" top: "lstm"
        recurrent_param { num_output: 3 weight_filler { type: "uniform" min: -0.1 max: 0.1 } } }
layer { name: "rnn" type: "RNN" bottom: "data" bottom: "cont" bottom: "x_static" top: "rnn"
        recurrent_param { num_output: 2 expose_hidden: false bias_filler { type: "constant" value: 0.5 } } }
layer { name: "lstm_unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont1" top: "c_t" top: "h_t" }
"""


def test_every_layer_type_round_trips():
    graph = graph_from_text(ALL_TYPES)
    new = assert_round_trip(graph)
    written = {n.type for n in new.nodes}
    missing = {t for t in supported_types() if not get_spec(t).source and not is_eval_type(t)} - written
    assert not missing, f"ALL_TYPES lacks {sorted(missing)}"
    assert new.node("argmax_axis").attrs.axis == 1 and new.node("argmax").attrs.axis is None
    assert new.node("bn").attrs.use_global_stats is None
    assert new.node("bn_global").attrs.use_global_stats is False
    assert new.node("conv").attrs.dilation == (1, 2)
    assert new.node("pool_floor").attrs.round_mode == "FLOOR"
    assert new.node("conv_shared").params[0].share_name == "shared_w"


def test_every_registered_type_has_a_writer():
    types = [t for t in supported_types() if not get_spec(t).source and not is_eval_type(t)]
    assert sorted(set(types) - set(WRITERS)) == []


def test_defaults_are_left_out_and_pool_is_always_named():
    text = deploy_text(graph_from_text(input_layer((1, 2, 6, 6)) + """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 2 kernel_size: 3 stride: 1 pad: 0 group: 1 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool" pooling_param { global_pooling: true } }
layer { name: "relu" type: "ReLU" bottom: "pool" top: "pool" relu_param { negative_slope: 0 } }
"""))
    conv = text[text.index('name: "conv"'):text.index('name: "pool"')]
    assert "stride" not in conv and "pad" not in conv and "group" not in conv and "bias_term" not in conv
    # MAX is Caffe's default, but OpenCV refuses a Pooling layer naming neither pool nor kernel.
    assert "pool: MAX" in text and "global_pooling: true" in text
    assert "relu_param" not in text and "round_mode" not in text


def test_sources_become_input_layers_and_labels_go():
    graph = graph_from_text("""
layer { name: "src" type: "MemoryData" top: "data" top: "label" memory_data_param { batch_size: 3 channels: 2 height: 5 width: 4 } }
layer { name: "dummy" type: "DummyData" top: "a" top: "b" dummy_data_param { shape { dim: 3 dim: 6 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 6 } }
layer { name: "sum" type: "Eltwise" bottom: "ip" bottom: "a" bottom: "b" top: "sum" }
layer { name: "label_shape" type: "Reshape" bottom: "label" top: "label_r" reshape_param { shape { dim: -1 } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label_r" top: "loss" }
layer { name: "acc" type: "Accuracy" bottom: "sum" bottom: "label_r" top: "acc" }
""")
    net = deploy_net(graph)
    assert [(layer.name, layer.type, list(layer.top)) for layer in net.layer] == [
        ("src", "Input", ["data"]), ("a", "Input", ["a"]), ("b", "Input", ["b"]),
        ("ip", "InnerProduct", ["ip"]), ("sum", "Eltwise", ["sum"])]
    assert [list(layer.input_param.shape[0].dim) for layer in net.layer[:3]] == [[3, 2, 5, 4], [3, 6], [3, 6]]
    assert_round_trip(graph)


def test_outputs_and_equal_weight_losses_are_all_kept():
    graph = graph_from_text(input_layer((2, 4)) + input_layer((2,), "label") + """
layer { name: "head1" type: "InnerProduct" bottom: "data" top: "head1" inner_product_param { num_output: 3 } }
layer { name: "head2" type: "InnerProduct" bottom: "data" top: "head2" inner_product_param { num_output: 3 } }
layer { name: "aux" type: "InnerProduct" bottom: "data" top: "aux" inner_product_param { num_output: 3 } }
layer { name: "prob" type: "Softmax" bottom: "head1" top: "prob" }
layer { name: "loss1" type: "SoftmaxWithLoss" bottom: "head1" bottom: "label" top: "loss1" }
layer { name: "loss2" type: "SoftmaxWithLoss" bottom: "head2" bottom: "label" top: "loss2" }
layer { name: "loss_aux" type: "SoftmaxWithLoss" bottom: "aux" bottom: "label" top: "loss_aux" loss_weight: 0.3 }
""")
    kept, inputs = deploy_nodes(graph)
    assert [n.name for n in kept] == ["head1", "head2", "prob"]
    assert inputs == ["data"]
    assert_round_trip(graph)


def test_in_place_writes_keep_caffe_blob_names():
    text = deploy_text(load_graph(ROOT / "prototxt" / "alexnet_caffe2.txt"))
    relu = text[text.index('name: "conv1_relu"'):text.index('name: "norm1"')]
    assert 'bottom: "conv1"' in relu and 'top: "conv1"' in relu and ":1" not in text


def test_a_net_of_losses_only_is_refused():
    graph = graph_from_text(input_layer((2, 3)) + input_layer((2, 3), "target") + """
layer { name: "loss" type: "EuclideanLoss" bottom: "data" bottom: "target" top: "loss" }
""")
    with pytest.raises(ConvnetError, match="nothing is left"):
        deploy_text(graph)
