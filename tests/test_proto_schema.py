"""Checks that convnet's caffe.proto matches BVLC Caffe's schema.

The expected values below are transcribed from BVLC Caffe's own
src/caffe/proto/caffe.proto (master), not from convnet_io/caffe/proto/caffe.proto,
so a typo in our schema shows up here as a mismatch.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor, text_format

from convnet_io.caffe.proto import caffe_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent

FD = descriptor.FieldDescriptor

# ---------------------------------------------------------------------------
# (a) generated code is in sync with caffe.proto
# ---------------------------------------------------------------------------


def test_generated_code_is_fresh():
    pytest.importorskip("grpc_tools")
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "gen_proto.py"), "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------
# (b) schema facts from upstream Caffe
# ---------------------------------------------------------------------------

# Every field of every message, as "name=number:type".  A trailing "*" marks a
# repeated field, "!" a required one.  Message and enum fields name their type.
UPSTREAM_FIELDS = {
    "BlobShape": "dim=1:int64*",
    "BlobProto": (
        "shape=7:BlobShape data=5:float* diff=6:float* double_data=8:double* "
        "double_diff=9:double* num=1:int32 channels=2:int32 height=3:int32 "
        "width=4:int32"
    ),
    "BlobProtoVector": "blobs=1:BlobProto*",
    "Datum": (
        "channels=1:int32 height=2:int32 width=3:int32 data=4:bytes "
        "label=5:int32 float_data=6:float* encoded=7:bool"
    ),
    "FillerParameter": (
        "type=1:string value=2:float min=3:float max=4:float mean=5:float "
        "std=6:float sparse=7:int32 variance_norm=8:VarianceNorm"
    ),
    "NetParameter": (
        "name=1:string input=3:string* input_shape=8:BlobShape* "
        "input_dim=4:int32* force_backward=5:bool state=6:NetState "
        "debug_info=7:bool layer=100:LayerParameter* layers=2:V1LayerParameter*"
    ),
    "SolverParameter": (
        "net=24:string net_param=25:NetParameter train_net=1:string "
        "test_net=2:string* train_net_param=21:NetParameter "
        "test_net_param=22:NetParameter* train_state=26:NetState "
        "test_state=27:NetState* test_iter=3:int32* test_interval=4:int32 "
        "test_compute_loss=19:bool test_initialization=32:bool base_lr=5:float "
        "display=6:int32 average_loss=33:int32 max_iter=7:int32 "
        "iter_size=36:int32 lr_policy=8:string gamma=9:float power=10:float "
        "momentum=11:float weight_decay=12:float regularization_type=29:string "
        "stepsize=13:int32 stepvalue=34:int32* clip_gradients=35:float "
        "snapshot=14:int32 snapshot_prefix=15:string snapshot_diff=16:bool "
        "snapshot_format=37:SnapshotFormat solver_mode=17:SolverMode "
        "device_id=18:int32 random_seed=20:int64 type=40:string delta=31:float "
        "momentum2=39:float rms_decay=38:float debug_info=23:bool "
        "snapshot_after_train=28:bool solver_type=30:SolverType "
        "layer_wise_reduce=41:bool weights=42:string*"
    ),
    "SolverState": (
        "iter=1:int32 learned_net=2:string history=3:BlobProto* "
        "current_step=4:int32"
    ),
    "NetState": "phase=1:Phase level=2:int32 stage=3:string*",
    "NetStateRule": (
        "phase=1:Phase min_level=2:int32 max_level=3:int32 stage=4:string* "
        "not_stage=5:string*"
    ),
    "ParamSpec": (
        "name=1:string share_mode=2:DimCheckMode lr_mult=3:float "
        "decay_mult=4:float"
    ),
    "LayerParameter": (
        "name=1:string type=2:string bottom=3:string* top=4:string* "
        "phase=10:Phase loss_weight=5:float* param=6:ParamSpec* "
        "blobs=7:BlobProto* propagate_down=11:bool* include=8:NetStateRule* "
        "exclude=9:NetStateRule* transform_param=100:TransformationParameter "
        "loss_param=101:LossParameter accuracy_param=102:AccuracyParameter "
        "argmax_param=103:ArgMaxParameter batch_norm_param=139:BatchNormParameter "
        "bias_param=141:BiasParameter clip_param=148:ClipParameter "
        "concat_param=104:ConcatParameter "
        "contrastive_loss_param=105:ContrastiveLossParameter "
        "convolution_param=106:ConvolutionParameter crop_param=144:CropParameter "
        "data_param=107:DataParameter dropout_param=108:DropoutParameter "
        "dummy_data_param=109:DummyDataParameter eltwise_param=110:EltwiseParameter "
        "elu_param=140:ELUParameter embed_param=137:EmbedParameter "
        "exp_param=111:ExpParameter flatten_param=135:FlattenParameter "
        "hdf5_data_param=112:HDF5DataParameter "
        "hdf5_output_param=113:HDF5OutputParameter "
        "hinge_loss_param=114:HingeLossParameter "
        "image_data_param=115:ImageDataParameter "
        "infogain_loss_param=116:InfogainLossParameter "
        "inner_product_param=117:InnerProductParameter "
        "input_param=143:InputParameter log_param=134:LogParameter "
        "lrn_param=118:LRNParameter memory_data_param=119:MemoryDataParameter "
        "mvn_param=120:MVNParameter parameter_param=145:ParameterParameter "
        "pooling_param=121:PoolingParameter power_param=122:PowerParameter "
        "prelu_param=131:PReLUParameter python_param=130:PythonParameter "
        "recurrent_param=146:RecurrentParameter "
        "reduction_param=136:ReductionParameter relu_param=123:ReLUParameter "
        "reshape_param=133:ReshapeParameter scale_param=142:ScaleParameter "
        "sigmoid_param=124:SigmoidParameter softmax_param=125:SoftmaxParameter "
        "spp_param=132:SPPParameter slice_param=126:SliceParameter "
        "swish_param=147:SwishParameter tanh_param=127:TanHParameter "
        "threshold_param=128:ThresholdParameter tile_param=138:TileParameter "
        "window_data_param=129:WindowDataParameter"
    ),
    "TransformationParameter": (
        "scale=1:float mirror=2:bool crop_size=3:uint32 mean_file=4:string "
        "mean_value=5:float* force_color=6:bool force_gray=7:bool"
    ),
    "LossParameter": (
        "ignore_label=1:int32 normalization=3:NormalizationMode normalize=2:bool"
    ),
    "AccuracyParameter": "top_k=1:uint32 axis=2:int32 ignore_label=3:int32",
    "ArgMaxParameter": "out_max_val=1:bool top_k=2:uint32 axis=3:int32",
    "ClipParameter": "min=1:float! max=2:float!",
    "ConcatParameter": "axis=2:int32 concat_dim=1:uint32",
    "BatchNormParameter": (
        "use_global_stats=1:bool moving_average_fraction=2:float eps=3:float"
    ),
    "BiasParameter": "axis=1:int32 num_axes=2:int32 filler=3:FillerParameter",
    "ContrastiveLossParameter": "margin=1:float legacy_version=2:bool",
    "ConvolutionParameter": (
        "num_output=1:uint32 bias_term=2:bool pad=3:uint32* kernel_size=4:uint32* "
        "stride=6:uint32* dilation=18:uint32* pad_h=9:uint32 pad_w=10:uint32 "
        "kernel_h=11:uint32 kernel_w=12:uint32 stride_h=13:uint32 "
        "stride_w=14:uint32 group=5:uint32 weight_filler=7:FillerParameter "
        "bias_filler=8:FillerParameter engine=15:Engine axis=16:int32 "
        "force_nd_im2col=17:bool"
    ),
    "CropParameter": "axis=1:int32 offset=2:uint32*",
    "DataParameter": (
        "source=1:string batch_size=4:uint32 rand_skip=7:uint32 backend=8:DB "
        "scale=2:float mean_file=3:string crop_size=5:uint32 mirror=6:bool "
        "force_encoded_color=9:bool prefetch=10:uint32"
    ),
    "DropoutParameter": "dropout_ratio=1:float",
    "DummyDataParameter": (
        "data_filler=1:FillerParameter* shape=6:BlobShape* num=2:uint32* "
        "channels=3:uint32* height=4:uint32* width=5:uint32*"
    ),
    "EltwiseParameter": (
        "operation=1:EltwiseOp coeff=2:float* stable_prod_grad=3:bool"
    ),
    "ELUParameter": "alpha=1:float",
    "EmbedParameter": (
        "num_output=1:uint32 input_dim=2:uint32 bias_term=3:bool "
        "weight_filler=4:FillerParameter bias_filler=5:FillerParameter"
    ),
    "ExpParameter": "base=1:float scale=2:float shift=3:float",
    "FlattenParameter": "axis=1:int32 end_axis=2:int32",
    "HDF5DataParameter": "source=1:string batch_size=2:uint32 shuffle=3:bool",
    "HDF5OutputParameter": "file_name=1:string",
    "HingeLossParameter": "norm=1:Norm",
    "ImageDataParameter": (
        "source=1:string batch_size=4:uint32 rand_skip=7:uint32 shuffle=8:bool "
        "new_height=9:uint32 new_width=10:uint32 is_color=11:bool scale=2:float "
        "mean_file=3:string crop_size=5:uint32 mirror=6:bool "
        "root_folder=12:string"
    ),
    "InfogainLossParameter": "source=1:string axis=2:int32",
    "InnerProductParameter": (
        "num_output=1:uint32 bias_term=2:bool weight_filler=3:FillerParameter "
        "bias_filler=4:FillerParameter axis=5:int32 transpose=6:bool"
    ),
    "InputParameter": "shape=1:BlobShape*",
    "LogParameter": "base=1:float scale=2:float shift=3:float",
    "LRNParameter": (
        "local_size=1:uint32 alpha=2:float beta=3:float norm_region=4:NormRegion "
        "k=5:float engine=6:Engine"
    ),
    "MemoryDataParameter": (
        "batch_size=1:uint32 channels=2:uint32 height=3:uint32 width=4:uint32"
    ),
    "MVNParameter": "normalize_variance=1:bool across_channels=2:bool eps=3:float",
    "ParameterParameter": "shape=1:BlobShape",
    "PoolingParameter": (
        "pool=1:PoolMethod pad=4:uint32 pad_h=9:uint32 pad_w=10:uint32 "
        "kernel_size=2:uint32 kernel_h=5:uint32 kernel_w=6:uint32 stride=3:uint32 "
        "stride_h=7:uint32 stride_w=8:uint32 engine=11:Engine "
        "global_pooling=12:bool round_mode=13:RoundMode"
    ),
    "PowerParameter": "power=1:float scale=2:float shift=3:float",
    "PythonParameter": (
        "module=1:string layer=2:string param_str=3:string "
        "share_in_parallel=4:bool"
    ),
    "RecurrentParameter": (
        "num_output=1:uint32 weight_filler=2:FillerParameter "
        "bias_filler=3:FillerParameter debug_info=4:bool expose_hidden=5:bool"
    ),
    "ReductionParameter": "operation=1:ReductionOp axis=2:int32 coeff=3:float",
    "ReLUParameter": "negative_slope=1:float engine=2:Engine",
    "ReshapeParameter": "shape=1:BlobShape axis=2:int32 num_axes=3:int32",
    "ScaleParameter": (
        "axis=1:int32 num_axes=2:int32 filler=3:FillerParameter bias_term=4:bool "
        "bias_filler=5:FillerParameter"
    ),
    "SigmoidParameter": "engine=1:Engine",
    "SliceParameter": "axis=3:int32 slice_point=2:uint32* slice_dim=1:uint32",
    "SoftmaxParameter": "engine=1:Engine axis=2:int32",
    "SwishParameter": "beta=1:float",
    "TanHParameter": "engine=1:Engine",
    "TileParameter": "axis=1:int32 tiles=2:int32",
    "ThresholdParameter": "threshold=1:float",
    "WindowDataParameter": (
        "source=1:string scale=2:float mean_file=3:string batch_size=4:uint32 "
        "crop_size=5:uint32 mirror=6:bool fg_threshold=7:float "
        "bg_threshold=8:float fg_fraction=9:float context_pad=10:uint32 "
        "crop_mode=11:string cache_images=12:bool root_folder=13:string"
    ),
    "SPPParameter": "pyramid_height=1:uint32 pool=2:PoolMethod engine=6:Engine",
    "V1LayerParameter": (
        "bottom=2:string* top=3:string* name=4:string include=32:NetStateRule* "
        "exclude=33:NetStateRule* type=5:LayerType blobs=6:BlobProto* "
        "param=1001:string* blob_share_mode=1002:DimCheckMode* "
        "blobs_lr=7:float* weight_decay=8:float* loss_weight=35:float* "
        "accuracy_param=27:AccuracyParameter argmax_param=23:ArgMaxParameter "
        "concat_param=9:ConcatParameter "
        "contrastive_loss_param=40:ContrastiveLossParameter "
        "convolution_param=10:ConvolutionParameter data_param=11:DataParameter "
        "dropout_param=12:DropoutParameter dummy_data_param=26:DummyDataParameter "
        "eltwise_param=24:EltwiseParameter exp_param=41:ExpParameter "
        "hdf5_data_param=13:HDF5DataParameter "
        "hdf5_output_param=14:HDF5OutputParameter "
        "hinge_loss_param=29:HingeLossParameter "
        "image_data_param=15:ImageDataParameter "
        "infogain_loss_param=16:InfogainLossParameter "
        "inner_product_param=17:InnerProductParameter lrn_param=18:LRNParameter "
        "memory_data_param=22:MemoryDataParameter mvn_param=34:MVNParameter "
        "pooling_param=19:PoolingParameter power_param=21:PowerParameter "
        "relu_param=30:ReLUParameter sigmoid_param=38:SigmoidParameter "
        "softmax_param=39:SoftmaxParameter slice_param=31:SliceParameter "
        "tanh_param=37:TanHParameter threshold_param=25:ThresholdParameter "
        "window_data_param=20:WindowDataParameter "
        "transform_param=36:TransformationParameter loss_param=42:LossParameter "
        "layer=1:V0LayerParameter"
    ),
    "V0LayerParameter": (
        "name=1:string type=2:string num_output=3:uint32 biasterm=4:bool "
        "weight_filler=5:FillerParameter bias_filler=6:FillerParameter "
        "pad=7:uint32 kernelsize=8:uint32 group=9:uint32 stride=10:uint32 "
        "pool=11:PoolMethod dropout_ratio=12:float local_size=13:uint32 "
        "alpha=14:float beta=15:float k=22:float source=16:string scale=17:float "
        "meanfile=18:string batchsize=19:uint32 cropsize=20:uint32 mirror=21:bool "
        "blobs=50:BlobProto* blobs_lr=51:float* weight_decay=52:float* "
        "rand_skip=53:uint32 det_fg_threshold=54:float det_bg_threshold=55:float "
        "det_fg_fraction=56:float det_context_pad=58:uint32 "
        "det_crop_mode=59:string new_num=60:int32 new_channels=61:int32 "
        "new_height=62:int32 new_width=63:int32 shuffle_images=64:bool "
        "concat_dim=65:uint32 hdf5_output_param=1001:HDF5OutputParameter"
    ),
    "PReLUParameter": "filler=1:FillerParameter channel_shared=2:bool",
}

# Every enum, as "NAME=value".  Keys are the enum's full name within caffe.
UPSTREAM_ENUMS = {
    "Phase": "TRAIN=0 TEST=1",
    "FillerParameter.VarianceNorm": "FAN_IN=0 FAN_OUT=1 AVERAGE=2",
    "SolverParameter.SnapshotFormat": "HDF5=0 BINARYPROTO=1",
    "SolverParameter.SolverMode": "CPU=0 GPU=1",
    "SolverParameter.SolverType": (
        "SGD=0 NESTEROV=1 ADAGRAD=2 RMSPROP=3 ADADELTA=4 ADAM=5"
    ),
    "ParamSpec.DimCheckMode": "STRICT=0 PERMISSIVE=1",
    "LossParameter.NormalizationMode": "FULL=0 VALID=1 BATCH_SIZE=2 NONE=3",
    "ConvolutionParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "DataParameter.DB": "LEVELDB=0 LMDB=1",
    "EltwiseParameter.EltwiseOp": "PROD=0 SUM=1 MAX=2",
    "HingeLossParameter.Norm": "L1=1 L2=2",
    "LRNParameter.NormRegion": "ACROSS_CHANNELS=0 WITHIN_CHANNEL=1",
    "LRNParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "PoolingParameter.PoolMethod": "MAX=0 AVE=1 STOCHASTIC=2",
    "PoolingParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "PoolingParameter.RoundMode": "CEIL=0 FLOOR=1",
    "ReductionParameter.ReductionOp": "SUM=1 ASUM=2 SUMSQ=3 MEAN=4",
    "ReLUParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "SigmoidParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "SoftmaxParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "TanHParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "SPPParameter.PoolMethod": "MAX=0 AVE=1 STOCHASTIC=2",
    "SPPParameter.Engine": "DEFAULT=0 CAFFE=1 CUDNN=2",
    "V1LayerParameter.LayerType": (
        "NONE=0 ABSVAL=35 ACCURACY=1 ARGMAX=30 BNLL=2 CONCAT=3 "
        "CONTRASTIVE_LOSS=37 CONVOLUTION=4 DATA=5 DECONVOLUTION=39 DROPOUT=6 "
        "DUMMY_DATA=32 EUCLIDEAN_LOSS=7 ELTWISE=25 EXP=38 FLATTEN=8 HDF5_DATA=9 "
        "HDF5_OUTPUT=10 HINGE_LOSS=28 IM2COL=11 IMAGE_DATA=12 INFOGAIN_LOSS=13 "
        "INNER_PRODUCT=14 LRN=15 MEMORY_DATA=29 MULTINOMIAL_LOGISTIC_LOSS=16 "
        "MVN=34 POOLING=17 POWER=26 RELU=18 SIGMOID=19 "
        "SIGMOID_CROSS_ENTROPY_LOSS=27 SILENCE=36 SOFTMAX=20 SOFTMAX_LOSS=21 "
        "SPLIT=22 SLICE=33 TANH=23 WINDOW_DATA=24 THRESHOLD=31"
    ),
    "V1LayerParameter.DimCheckMode": "STRICT=0 PERMISSIVE=1",
    "V0LayerParameter.PoolMethod": "MAX=0 AVE=1 STOCHASTIC=2",
}

# Explicit upstream defaults (message, field) -> value.  Enum defaults are
# given by value name.  Floats are compared at float32 precision.
UPSTREAM_DEFAULTS = {
    ("BlobProto", "num"): 0,
    ("Datum", "encoded"): False,
    ("FillerParameter", "type"): "constant",
    ("FillerParameter", "value"): 0.0,
    ("FillerParameter", "min"): 0.0,
    ("FillerParameter", "max"): 1.0,
    ("FillerParameter", "mean"): 0.0,
    ("FillerParameter", "std"): 1.0,
    ("FillerParameter", "sparse"): -1,
    ("FillerParameter", "variance_norm"): "FAN_IN",
    ("NetParameter", "force_backward"): False,
    ("NetParameter", "debug_info"): False,
    ("SolverParameter", "test_interval"): 0,
    ("SolverParameter", "test_compute_loss"): False,
    ("SolverParameter", "test_initialization"): True,
    ("SolverParameter", "average_loss"): 1,
    ("SolverParameter", "iter_size"): 1,
    ("SolverParameter", "regularization_type"): "L2",
    ("SolverParameter", "clip_gradients"): -1.0,
    ("SolverParameter", "snapshot"): 0,
    ("SolverParameter", "snapshot_diff"): False,
    ("SolverParameter", "snapshot_format"): "BINARYPROTO",
    ("SolverParameter", "solver_mode"): "GPU",
    ("SolverParameter", "device_id"): 0,
    ("SolverParameter", "random_seed"): -1,
    ("SolverParameter", "type"): "SGD",
    ("SolverParameter", "delta"): 1e-8,
    ("SolverParameter", "momentum2"): 0.999,
    ("SolverParameter", "rms_decay"): 0.99,
    ("SolverParameter", "debug_info"): False,
    ("SolverParameter", "snapshot_after_train"): True,
    ("SolverParameter", "solver_type"): "SGD",
    ("SolverParameter", "layer_wise_reduce"): True,
    ("SolverState", "current_step"): 0,
    ("NetState", "phase"): "TEST",
    ("NetState", "level"): 0,
    ("ParamSpec", "lr_mult"): 1.0,
    ("ParamSpec", "decay_mult"): 1.0,
    ("TransformationParameter", "scale"): 1.0,
    ("TransformationParameter", "mirror"): False,
    ("TransformationParameter", "crop_size"): 0,
    ("TransformationParameter", "force_color"): False,
    ("TransformationParameter", "force_gray"): False,
    ("LossParameter", "normalization"): "VALID",
    ("AccuracyParameter", "top_k"): 1,
    ("AccuracyParameter", "axis"): 1,
    ("ArgMaxParameter", "out_max_val"): False,
    ("ArgMaxParameter", "top_k"): 1,
    ("ConcatParameter", "axis"): 1,
    ("ConcatParameter", "concat_dim"): 1,
    ("BatchNormParameter", "moving_average_fraction"): 0.999,
    ("BatchNormParameter", "eps"): 1e-5,
    ("BiasParameter", "axis"): 1,
    ("BiasParameter", "num_axes"): 1,
    ("ContrastiveLossParameter", "margin"): 1.0,
    ("ContrastiveLossParameter", "legacy_version"): False,
    ("ConvolutionParameter", "bias_term"): True,
    ("ConvolutionParameter", "pad_h"): 0,
    ("ConvolutionParameter", "pad_w"): 0,
    ("ConvolutionParameter", "group"): 1,
    ("ConvolutionParameter", "engine"): "DEFAULT",
    ("ConvolutionParameter", "axis"): 1,
    ("ConvolutionParameter", "force_nd_im2col"): False,
    ("CropParameter", "axis"): 2,
    ("DataParameter", "rand_skip"): 0,
    ("DataParameter", "backend"): "LEVELDB",
    ("DataParameter", "scale"): 1.0,
    ("DataParameter", "crop_size"): 0,
    ("DataParameter", "mirror"): False,
    ("DataParameter", "force_encoded_color"): False,
    ("DataParameter", "prefetch"): 4,
    ("DropoutParameter", "dropout_ratio"): 0.5,
    ("EltwiseParameter", "operation"): "SUM",
    ("EltwiseParameter", "stable_prod_grad"): True,
    ("ELUParameter", "alpha"): 1.0,
    ("EmbedParameter", "bias_term"): True,
    ("ExpParameter", "base"): -1.0,
    ("ExpParameter", "scale"): 1.0,
    ("ExpParameter", "shift"): 0.0,
    ("FlattenParameter", "axis"): 1,
    ("FlattenParameter", "end_axis"): -1,
    ("HDF5DataParameter", "shuffle"): False,
    ("HingeLossParameter", "norm"): "L1",
    ("ImageDataParameter", "batch_size"): 1,
    ("ImageDataParameter", "rand_skip"): 0,
    ("ImageDataParameter", "shuffle"): False,
    ("ImageDataParameter", "new_height"): 0,
    ("ImageDataParameter", "new_width"): 0,
    ("ImageDataParameter", "is_color"): True,
    ("ImageDataParameter", "scale"): 1.0,
    ("ImageDataParameter", "crop_size"): 0,
    ("ImageDataParameter", "mirror"): False,
    ("ImageDataParameter", "root_folder"): "",
    ("InfogainLossParameter", "axis"): 1,
    ("InnerProductParameter", "bias_term"): True,
    ("InnerProductParameter", "axis"): 1,
    ("InnerProductParameter", "transpose"): False,
    ("LogParameter", "base"): -1.0,
    ("LogParameter", "scale"): 1.0,
    ("LogParameter", "shift"): 0.0,
    ("LRNParameter", "local_size"): 5,
    ("LRNParameter", "alpha"): 1.0,
    ("LRNParameter", "beta"): 0.75,
    ("LRNParameter", "norm_region"): "ACROSS_CHANNELS",
    ("LRNParameter", "k"): 1.0,
    ("LRNParameter", "engine"): "DEFAULT",
    ("MVNParameter", "normalize_variance"): True,
    ("MVNParameter", "across_channels"): False,
    ("MVNParameter", "eps"): 1e-9,
    ("PoolingParameter", "pool"): "MAX",
    ("PoolingParameter", "pad"): 0,
    ("PoolingParameter", "pad_h"): 0,
    ("PoolingParameter", "pad_w"): 0,
    ("PoolingParameter", "stride"): 1,
    ("PoolingParameter", "engine"): "DEFAULT",
    ("PoolingParameter", "global_pooling"): False,
    ("PoolingParameter", "round_mode"): "CEIL",
    ("PowerParameter", "power"): 1.0,
    ("PowerParameter", "scale"): 1.0,
    ("PowerParameter", "shift"): 0.0,
    ("PythonParameter", "param_str"): "",
    ("PythonParameter", "share_in_parallel"): False,
    ("RecurrentParameter", "num_output"): 0,
    ("RecurrentParameter", "debug_info"): False,
    ("RecurrentParameter", "expose_hidden"): False,
    ("ReductionParameter", "operation"): "SUM",
    ("ReductionParameter", "axis"): 0,
    ("ReductionParameter", "coeff"): 1.0,
    ("ReLUParameter", "negative_slope"): 0.0,
    ("ReLUParameter", "engine"): "DEFAULT",
    ("ReshapeParameter", "axis"): 0,
    ("ReshapeParameter", "num_axes"): -1,
    ("ScaleParameter", "axis"): 1,
    ("ScaleParameter", "num_axes"): 1,
    ("ScaleParameter", "bias_term"): False,
    ("SigmoidParameter", "engine"): "DEFAULT",
    ("SliceParameter", "axis"): 1,
    ("SliceParameter", "slice_dim"): 1,
    ("SoftmaxParameter", "engine"): "DEFAULT",
    ("SoftmaxParameter", "axis"): 1,
    ("SwishParameter", "beta"): 1.0,
    ("TanHParameter", "engine"): "DEFAULT",
    ("TileParameter", "axis"): 1,
    ("ThresholdParameter", "threshold"): 0.0,
    ("WindowDataParameter", "scale"): 1.0,
    ("WindowDataParameter", "crop_size"): 0,
    ("WindowDataParameter", "mirror"): False,
    ("WindowDataParameter", "fg_threshold"): 0.5,
    ("WindowDataParameter", "bg_threshold"): 0.5,
    ("WindowDataParameter", "fg_fraction"): 0.25,
    ("WindowDataParameter", "context_pad"): 0,
    ("WindowDataParameter", "crop_mode"): "warp",
    ("WindowDataParameter", "cache_images"): False,
    ("WindowDataParameter", "root_folder"): "",
    ("SPPParameter", "pool"): "MAX",
    ("SPPParameter", "engine"): "DEFAULT",
    ("V0LayerParameter", "biasterm"): True,
    ("V0LayerParameter", "pad"): 0,
    ("V0LayerParameter", "group"): 1,
    ("V0LayerParameter", "stride"): 1,
    ("V0LayerParameter", "pool"): "MAX",
    ("V0LayerParameter", "dropout_ratio"): 0.5,
    ("V0LayerParameter", "local_size"): 5,
    ("V0LayerParameter", "alpha"): 1.0,
    ("V0LayerParameter", "beta"): 0.75,
    ("V0LayerParameter", "k"): 1.0,
    ("V0LayerParameter", "scale"): 1.0,
    ("V0LayerParameter", "cropsize"): 0,
    ("V0LayerParameter", "mirror"): False,
    ("V0LayerParameter", "rand_skip"): 0,
    ("V0LayerParameter", "det_fg_threshold"): 0.5,
    ("V0LayerParameter", "det_bg_threshold"): 0.5,
    ("V0LayerParameter", "det_fg_fraction"): 0.25,
    ("V0LayerParameter", "det_context_pad"): 0,
    ("V0LayerParameter", "det_crop_mode"): "warp",
    ("V0LayerParameter", "new_num"): 0,
    ("V0LayerParameter", "shuffle_images"): False,
    ("V0LayerParameter", "concat_dim"): 1,
    ("PReLUParameter", "channel_shared"): False,
}

# Upstream fields with no explicit default (proto2 zero value, has_default_value
# False); a few that are easy to get wrong.
UPSTREAM_NO_DEFAULT = [
    ("SolverParameter", "base_lr"),
    ("SolverParameter", "lr_policy"),
    ("SolverParameter", "gamma"),
    ("SolverParameter", "power"),
    ("SolverParameter", "momentum"),
    ("SolverParameter", "weight_decay"),
    ("SolverParameter", "display"),
    ("SolverParameter", "max_iter"),
    ("SolverParameter", "stepsize"),
    ("BatchNormParameter", "use_global_stats"),
    ("ConvolutionParameter", "num_output"),
    ("ConvolutionParameter", "kernel_h"),
    ("ConvolutionParameter", "stride_h"),
    ("PoolingParameter", "kernel_size"),
    ("PoolingParameter", "stride_h"),
    ("LossParameter", "ignore_label"),
    ("LossParameter", "normalize"),
    ("ArgMaxParameter", "axis"),
    ("TileParameter", "tiles"),
    ("NetStateRule", "phase"),
]

_SCALAR_NAMES = {
    FD.TYPE_INT32: "int32",
    FD.TYPE_UINT32: "uint32",
    FD.TYPE_INT64: "int64",
    FD.TYPE_UINT64: "uint64",
    FD.TYPE_SINT32: "sint32",
    FD.TYPE_SINT64: "sint64",
    FD.TYPE_FIXED32: "fixed32",
    FD.TYPE_FIXED64: "fixed64",
    FD.TYPE_FLOAT: "float",
    FD.TYPE_DOUBLE: "double",
    FD.TYPE_BOOL: "bool",
    FD.TYPE_STRING: "string",
    FD.TYPE_BYTES: "bytes",
}


def _field_signature(field: descriptor.FieldDescriptor) -> str:
    if field.message_type is not None:
        kind = field.message_type.name
    elif field.enum_type is not None:
        kind = field.enum_type.name
    else:
        kind = _SCALAR_NAMES[field.type]
    if field.is_repeated:
        kind += "*"
    elif field.is_required:
        kind += "!"
    return f"{field.name}={field.number}:{kind}"


def _all_messages(file_desc):
    out = {}

    def walk(msg):
        out[msg.full_name] = msg
        for nested in msg.nested_types:
            walk(nested)

    for msg in file_desc.message_types_by_name.values():
        walk(msg)
    return out


def _all_enums(file_desc):
    out = {}
    for enum in file_desc.enum_types_by_name.values():
        out[enum.full_name] = enum
    for msg in _all_messages(file_desc).values():
        for enum in msg.enum_types:
            out[enum.full_name] = enum
    return out


def test_package_and_syntax():
    assert caffe_pb2.DESCRIPTOR.package == "caffe"
    assert caffe_pb2.DESCRIPTOR.name == "caffe.proto"


def test_message_set_matches_upstream():
    # The schema is a superset: the forks' messages come on top
    # (tests/test_proto_fork_schema.py checks those).
    ours = {name.removeprefix("caffe.") for name in _all_messages(caffe_pb2.DESCRIPTOR)}
    assert set(UPSTREAM_FIELDS) <= ours


@pytest.mark.parametrize("message_name", sorted(UPSTREAM_FIELDS))
def test_fields_match_upstream(message_name):
    msg = caffe_pb2.DESCRIPTOR.message_types_by_name[message_name]
    expected = sorted(UPSTREAM_FIELDS[message_name].split())
    upstream_names = {sig.split("=")[0] for sig in expected}
    # Fork fields added to BVLC messages are checked by test_proto_fork_schema.
    ours = sorted(_field_signature(f) for f in msg.fields if f.name in upstream_names)
    assert ours == expected


def test_enum_set_matches_upstream():
    ours = {name.removeprefix("caffe.") for name in _all_enums(caffe_pb2.DESCRIPTOR)}
    assert set(UPSTREAM_ENUMS) <= ours


@pytest.mark.parametrize("enum_name", sorted(UPSTREAM_ENUMS))
def test_enum_values_match_upstream(enum_name):
    enum = _all_enums(caffe_pb2.DESCRIPTOR)["caffe." + enum_name]
    ours = sorted(f"{v.name}={v.number}" for v in enum.values)
    expected = sorted(UPSTREAM_ENUMS[enum_name].split())
    assert ours == expected


@pytest.mark.parametrize(
    "message_name,field_name,expected",
    [(m, f, v) for (m, f), v in UPSTREAM_DEFAULTS.items()],
    ids=[f"{m}.{f}" for (m, f) in UPSTREAM_DEFAULTS],
)
def test_explicit_defaults(message_name, field_name, expected):
    field = caffe_pb2.DESCRIPTOR.message_types_by_name[message_name].fields_by_name[
        field_name
    ]
    assert field.has_default_value, f"{message_name}.{field_name} lacks a default"
    value = field.default_value
    if field.enum_type is not None:
        assert field.enum_type.values_by_number[value].name == expected
    elif field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        assert math.isclose(value, expected, rel_tol=1e-6, abs_tol=0.0)
    else:
        assert type(value) is type(expected) and value == expected
    # The generated class reports the same default on an empty message.
    instance = getattr(caffe_pb2, message_name)()
    if field.type in (FD.TYPE_FLOAT, FD.TYPE_DOUBLE):
        assert math.isclose(getattr(instance, field_name), value, rel_tol=1e-6)
    else:
        assert getattr(instance, field_name) == value


@pytest.mark.parametrize(
    "message_name,field_name",
    UPSTREAM_NO_DEFAULT,
    ids=[f"{m}.{f}" for (m, f) in UPSTREAM_NO_DEFAULT],
)
def test_fields_without_explicit_default(message_name, field_name):
    field = caffe_pb2.DESCRIPTOR.message_types_by_name[message_name].fields_by_name[
        field_name
    ]
    assert not field.has_default_value


def test_no_unexpected_defaults():
    """Every field that carries a default upstream is listed, and no others."""
    listed = set(UPSTREAM_DEFAULTS)
    with_default = set()
    for name, msg in caffe_pb2.DESCRIPTOR.message_types_by_name.items():
        if name not in UPSTREAM_FIELDS:
            continue
        upstream_names = {sig.split("=")[0] for sig in UPSTREAM_FIELDS[name].split()}
        for field in msg.fields:
            if field.has_default_value and field.name in upstream_names:
                with_default.add((name, field.name))
    # Upstream explicit defaults the table above deliberately leaves out
    # (they repeat the proto2 zero value of a legacy 4-d/V0 field).
    unlisted_zero_defaults = {
        ("BlobProto", "channels"),
        ("BlobProto", "height"),
        ("BlobProto", "width"),
        ("V0LayerParameter", "new_channels"),
        ("V0LayerParameter", "new_height"),
        ("V0LayerParameter", "new_width"),
    }
    assert with_default - listed == unlisted_zero_defaults
    assert listed - with_default == set()


def test_packed_repeated_fields():
    blob = caffe_pb2.BlobProto.DESCRIPTOR.fields_by_name
    shape = caffe_pb2.BlobShape.DESCRIPTOR.fields_by_name
    for field in (blob["data"], blob["diff"], blob["double_data"], blob["double_diff"], shape["dim"]):
        assert field.is_packed, field.full_name
    # proto2 repeated scalars without [packed = true] stay unpacked on the wire.
    assert not caffe_pb2.Datum.DESCRIPTOR.fields_by_name["float_data"].is_packed
    assert not caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name["input_dim"].is_packed


def test_key_numbers_spelled_out():
    """The handful of numbers a converter relies on most, stated plainly."""
    layer = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    assert layer["name"].number == 1
    assert layer["type"].number == 2
    assert layer["bottom"].number == 3
    assert layer["top"].number == 4
    assert layer["loss_weight"].number == 5
    assert layer["param"].number == 6
    assert layer["blobs"].number == 7
    assert layer["include"].number == 8
    assert layer["exclude"].number == 9
    assert layer["phase"].number == 10
    assert layer["propagate_down"].number == 11
    assert layer["convolution_param"].number == 106
    assert layer["inner_product_param"].number == 117
    assert layer["lrn_param"].number == 118
    assert layer["pooling_param"].number == 121
    assert layer["batch_norm_param"].number == 139
    assert layer["scale_param"].number == 142
    assert layer["input_param"].number == 143
    assert layer["swish_param"].number == 147
    assert layer["clip_param"].number == 148
    net = caffe_pb2.NetParameter.DESCRIPTOR.fields_by_name
    assert (net["layer"].number, net["layers"].number) == (100, 2)
    assert (net["input"].number, net["input_dim"].number, net["input_shape"].number) == (3, 4, 8)
    v1 = caffe_pb2.V1LayerParameter
    assert (v1.CONVOLUTION, v1.POOLING, v1.LRN, v1.INNER_PRODUCT) == (4, 17, 15, 14)
    assert (v1.RELU, v1.SOFTMAX, v1.SOFTMAX_LOSS, v1.DECONVOLUTION) == (18, 20, 21, 39)


# ---------------------------------------------------------------------------
# (c) text and binary round trips
# ---------------------------------------------------------------------------

V2_PROTOTXT = """
name: "tiny"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  param { lr_mult: 1 decay_mult: 1 }
  param { lr_mult: 2 decay_mult: 0 }
  convolution_param {
    num_output: 4
    kernel_size: 3
    pad: 1
    stride: 1
    weight_filler { type: "xavier" }
    bias_filler { type: "constant" value: 0 }
  }
}
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer {
  name: "pool1"
  type: "Pooling"
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR }
}
layer {
  name: "bn1"
  type: "BatchNorm"
  bottom: "pool1"
  top: "pool1"
  batch_norm_param { use_global_stats: true }
  include { phase: TEST }
}
layer {
  name: "clip1"
  type: "Clip"
  bottom: "pool1"
  top: "pool1"
  clip_param { min: 0 max: 6 }
}
layer {
  name: "fc"
  type: "InnerProduct"
  bottom: "pool1"
  top: "fc"
  inner_product_param { num_output: 10 }
}
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""

V1_PROTOTXT = """
name: "legacy"
input: "data"
input_dim: 1
input_dim: 3
input_dim: 8
input_dim: 8
layers {
  name: "conv1"
  type: CONVOLUTION
  bottom: "data"
  top: "conv1"
  blobs_lr: 1
  blobs_lr: 2
  weight_decay: 1
  weight_decay: 0
  convolution_param { num_output: 4 kernel_size: 3 }
}
layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
layers {
  name: "pool1"
  type: POOLING
  bottom: "conv1"
  top: "pool1"
  pooling_param { pool: AVE kernel_size: 2 stride: 2 }
}
layers { name: "loss" type: SOFTMAX_LOSS bottom: "pool1" bottom: "label" top: "loss" }
"""

SOLVER_PROTOTXT = """
net: "train_val.prototxt"
test_iter: 100
test_interval: 500
base_lr: 0.01
lr_policy: "step"
gamma: 0.1
stepsize: 1000
momentum: 0.9
weight_decay: 0.0005
max_iter: 10000
snapshot_prefix: "snap/net"
solver_mode: CPU
type: "Adam"
weights: "a.caffemodel"
"""


def _roundtrip(message_cls, text):
    msg = text_format.Parse(text, message_cls())
    again = text_format.Parse(text_format.MessageToString(msg), message_cls())
    assert again == msg
    wire = msg.SerializeToString()
    assert message_cls.FromString(wire) == msg
    return msg


def test_v2_prototxt_roundtrip():
    net = _roundtrip(caffe_pb2.NetParameter, V2_PROTOTXT)
    assert [layer.type for layer in net.layer] == [
        "Input", "Convolution", "ReLU", "Pooling", "BatchNorm", "Clip",
        "InnerProduct", "Softmax",
    ]
    conv = net.layer[1].convolution_param
    assert list(conv.kernel_size) == [3] and conv.num_output == 4
    assert conv.group == 1 and conv.bias_term is True  # defaults
    assert net.layer[3].pooling_param.round_mode == caffe_pb2.PoolingParameter.FLOOR
    assert net.layer[4].include[0].phase == caffe_pb2.TEST
    assert list(net.layer[0].input_param.shape[0].dim) == [1, 3, 8, 8]


def test_v1_prototxt_roundtrip():
    net = _roundtrip(caffe_pb2.NetParameter, V1_PROTOTXT)
    assert len(net.layer) == 0 and len(net.layers) == 4
    conv = net.layers[0]
    assert conv.type == caffe_pb2.V1LayerParameter.CONVOLUTION
    assert list(conv.blobs_lr) == [1.0, 2.0]
    assert list(net.input_dim) == [1, 3, 8, 8]
    assert net.layers[3].type == caffe_pb2.V1LayerParameter.SOFTMAX_LOSS


def test_minimal_v1_layer_parses():
    net = text_format.Parse(
        "layers { type: CONVOLUTION blobs_lr: 1 }", caffe_pb2.NetParameter()
    )
    assert net.layers[0].type == 4
    assert list(net.layers[0].blobs_lr) == [1.0]


def test_solver_prototxt_roundtrip():
    solver = _roundtrip(caffe_pb2.SolverParameter, SOLVER_PROTOTXT)
    assert solver.solver_mode == caffe_pb2.SolverParameter.CPU
    assert solver.type == "Adam"
    assert list(solver.weights) == ["a.caffemodel"]
    assert solver.random_seed == -1 and not solver.HasField("random_seed")


def test_known_wire_bytes():
    """Hand-assembled bytes fix tags and packing independently of our schema."""
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1.0, -2.0])
    blob.num = 1
    # Fields are emitted in number order: num (1, varint), data (5, packed
    # float), shape (7, message holding packed int64 dims under tag 1).
    expected = (
        b"\x08\x01"
        + b"\x2a\x08" + b"\x00\x00\x80\x3f" + b"\x00\x00\x00\xc0"
        + b"\x3a\x04" + b"\x0a\x02\x02\x03"
    )
    assert blob.SerializeToString() == expected

    layer = caffe_pb2.LayerParameter(name="c", type="Convolution")
    layer.convolution_param.num_output = 8
    # convolution_param is field 106: tag (106 << 3 | 2) = 850 -> varint d2 06.
    assert layer.SerializeToString() == (
        b"\x0a\x01c" + b"\x12\x0bConvolution" + b"\xd2\x06\x02\x08\x08"
    )

    state = caffe_pb2.SolverState(iter=5, current_step=2)
    assert state.SerializeToString() == b"\x08\x05\x20\x02"


def test_clip_bounds_are_required():
    layer = caffe_pb2.LayerParameter(name="clip", type="Clip")
    layer.clip_param.min = 0.0
    assert not layer.IsInitialized()
    layer.clip_param.max = 6.0
    assert layer.IsInitialized()
