"""The forks' messages and fields in convnet's superset caffe.proto.

Expected numbers are transcribed from the forks' own schema files (SSD:
weiliu89/caffe branch ssd src/caffe/proto/caffe.proto; OpenCV 4.x
modules/dnn/src/caffe/opencv-caffe.proto; SegNet alexgkendall/caffe-segnet;
PSPNet hszhao/PSPNet; ShuffleNet and YOLO ports), not from convnet's schema.
"""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from convnet_io.caffe import fork_fields
from convnet_io.caffe.proto import caffe_pb2

# "name=number" per message, as the fork numbers them.
FORK_FIELDS = {
    # SSD
    "PermuteParameter": "order=1",
    "NormalizeParameter": "across_spatial=1 scale_filler=2 channel_shared=3 eps=4",
    "PriorBoxParameter": (
        "min_size=1 max_size=2 aspect_ratio=3 flip=4 clip=5 variance=6 img_size=7 "
        "img_h=8 img_w=9 step=10 step_h=11 step_w=12 offset=13"
        # OpenCV's additions to the same message
        " offset_h=14 offset_w=15 width=16 height=17"
    ),
    "NonMaximumSuppressionParameter": "nms_threshold=1 top_k=2 eta=3",
    "SaveOutputParameter": (
        "output_directory=1 output_name_prefix=2 output_format=3 label_map_file=4 "
        "name_size_file=5 num_test_image=6"
    ),
    "DetectionOutputParameter": (
        "num_classes=1 share_location=2 background_label_id=3 nms_param=4 "
        "save_output_param=5 code_type=6 keep_top_k=7 variance_encoded_in_target=8 "
        "confidence_threshold=9 visualize=10 visualize_threshold=11 save_file=12"
    ),
    "MultiBoxLossParameter": (
        "loc_loss_type=1 conf_loss_type=2 loc_weight=3 num_classes=4 share_location=5 "
        "match_type=6 overlap_threshold=7 use_prior_for_matching=8 background_label_id=9 "
        "use_difficult_gt=10 do_neg_mining=11 neg_pos_ratio=12 neg_overlap=13 code_type=14 "
        "encode_variance_in_target=16 map_object_to_agnostic=17 "
        "ignore_cross_boundary_bbox=18 bp_inside=19 mining_type=20 nms_param=21 "
        "sample_size=22 use_prior_for_nms=23"
    ),
    "AnnotatedDataParameter": "batch_sampler=1 label_map_file=2 anno_type=3",
    "EmitConstraint": "emit_type=1 emit_overlap=2",
    "TransformationParameter": (
        "resize_param=8 noise_param=9 emit_constraint=10 crop_h=11 crop_w=12 "
        "distort_param=13 expand_param=14"
    ),
    "SolverState": "minimum_loss=5 iter_last_event=6",
    # OpenCV (opencv-caffe.proto), where it does not clash
    "ROIPoolingParameter": "pooled_h=1 pooled_w=2 spatial_scale=3",
    "PSROIPoolingParameter": "spatial_scale=1 output_dim=2 group_size=3",
    "ProposalParameter": (
        "feat_stride=1 base_size=2 min_size=3 ratio=4 scale=5 pre_nms_topn=6 "
        "post_nms_topn=7 nms_thresh=8"
    ),
    "DropoutParameter": "scale_train=2",
    "BatchNormParameter": "scale_bias=7",
    # SegNet
    "UpsampleParameter": (
        "scale=1 scale_h=2 scale_w=3 pad_out_h=4 pad_out_w=5 upsample_h=6 upsample_w=7"
    ),
    # PSPNet / DeepLab v2
    "InterpParameter": "height=1 width=2 zoom_factor=3 shrink_factor=4 pad_beg=5 pad_end=6",
    # ShuffleNet ports
    "ShuffleChannelParameter": "group=1",
    # YOLOv2 ports
    "ReorgParameter": "stride=1 reverse=2",
    "RegionParameter": "classes=1 coords=2 boxes_of_each_grid=3 softmax=4",
}

# LayerParameter fields kept at their fork's number.
LAYER_FIELDS = {
    "annotated_data_param": 200,
    "multibox_loss_param": 201,
    "permute_param": 202,
    "prior_box_param": 203,
    "detection_output_param": 204,
    "detection_evaluate_param": 205,
    "norm_param": 206,
    "video_data_param": 207,
    "roi_pooling_param": 8266711,
    "psroi_pooling_param": 10002,
    "upsample_param": 149,
    "shuffle_channel_param": 164,
    "reorg_param": 159,
}

# Fields whose fork number was taken: fork number -> it lives at 20000 + it.
MOVED = {
    ("LayerParameter", "proposal_param"): 201,
    ("LayerParameter", "interp_param"): 143,
    ("LayerParameter", "region_param"): 149,
    ("SolverParameter", "eval_type"): 41,
    ("SolverParameter", "ap_version"): 42,
    ("PoolingParameter", "ceil_mode"): 13,
    ("DetectionOutputParameter", "normalized_bbox"): 10,
}

ENUMS = {
    "PriorBoxParameter.CodeType": "CORNER=1 CENTER_SIZE=2 CORNER_SIZE=3",
    "MultiBoxLossParameter.MiningType": "NONE=0 MAX_NEGATIVE=1 HARD_EXAMPLE=2",
    "AnnotatedDatum.AnnotationType": "BBOX=0",
}

DEFAULTS = {
    ("PriorBoxParameter", "flip"): True,
    ("PriorBoxParameter", "clip"): False,
    ("PriorBoxParameter", "offset"): 0.5,
    ("NormalizeParameter", "across_spatial"): True,
    ("NormalizeParameter", "channel_shared"): True,
    ("DetectionOutputParameter", "share_location"): True,
    ("DetectionOutputParameter", "keep_top_k"): -1,
    ("DetectionOutputParameter", "background_label_id"): 0,
    ("NonMaximumSuppressionParameter", "nms_threshold"): 0.3,
    ("NonMaximumSuppressionParameter", "eta"): 1.0,
    ("PoolingParameter", "ceil_mode"): True,
    ("InterpParameter", "zoom_factor"): 1,
    ("UpsampleParameter", "scale"): 2,
}


@pytest.mark.parametrize("message", sorted(FORK_FIELDS))
def test_fork_field_numbers(message):
    fields = caffe_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name
    for item in FORK_FIELDS[message].split():
        name, number = item.split("=")
        assert name in fields, f"{message}.{name} missing"
        assert fields[name].number == int(number), f"{message}.{name}"


def test_layer_parameter_fork_fields():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for name, number in LAYER_FIELDS.items():
        assert fields[name].number == number, name


def test_moved_fields_live_at_20000_plus_their_number():
    for (message, name), number in MOVED.items():
        field = caffe_pb2.DESCRIPTOR.message_types_by_name[message].fields_by_name[name]
        assert field.number == 20000 + number, f"{message}.{name}"
        assert fork_fields.MOVED[(message, name)][0] == number


def test_clashing_numbers_keep_bvlc_and_ssd_owners():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_number
    # BVLC's numbers that forks reused.
    assert fields[137].name == "embed_param"
    assert fields[143].name == "input_param"
    assert fields[147].name == "swish_param"
    assert fields[148].name == "clip_param"
    assert fields[201].name == "multibox_loss_param"
    pool = caffe_pb2.PoolingParameter.DESCRIPTOR.fields_by_number
    assert pool[13].name == "round_mode"
    fork_types = {t for types, _ in fork_fields.FORK_PARAMS.values() for t in types}
    for by_type in fork_fields.CLASHES.values():
        assert set(by_type) <= fork_types
        for type_, field in by_type.items():
            assert type_ in fork_fields.FORK_PARAMS[field][0]


@pytest.mark.parametrize("enum_name", sorted(ENUMS))
def test_fork_enums(enum_name):
    outer, inner = enum_name.split(".")
    enum = caffe_pb2.DESCRIPTOR.message_types_by_name[outer].enum_types_by_name[inner]
    assert sorted(f"{v.name}={v.number}" for v in enum.values) == sorted(ENUMS[enum_name].split())


@pytest.mark.parametrize("key", sorted(DEFAULTS), ids=lambda k: ".".join(k))
def test_fork_defaults(key):
    message, name = key
    value = getattr(getattr(caffe_pb2, message)(), name)
    assert value == pytest.approx(DEFAULTS[key])


def test_every_fork_layer_field_is_described():
    fields = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_name
    for name in fork_fields.FORK_PARAMS:
        assert name in fields
    for name in fork_fields.KNOWN_ELSEWHERE:
        assert name not in fields


def test_fork_prototxt_parses_and_binary_round_trips():
    text = """
    layer { name: "mbox_priorbox" type: "PriorBox" bottom: "conv" bottom: "data"
      top: "p" prior_box_param { min_size: 30 max_size: 60 aspect_ratio: 2 flip: true
      clip: false variance: 0.1 variance: 0.1 variance: 0.2 variance: 0.2 step: 8 } }
    layer { name: "pool" type: "Pooling" bottom: "p" top: "q"
      pooling_param { pool: MAX kernel_size: 2 ceil_mode: false } }
    layer { name: "det" type: "DetectionOutput" bottom: "a" top: "d"
      detection_output_param { num_classes: 21 nms_param { nms_threshold: 0.45 top_k: 100 }
      code_type: CENTER_SIZE keep_top_k: 100 confidence_threshold: 0.25 } }
    layer { name: "interp" type: "Interp" bottom: "q" top: "r" interp_param { zoom_factor: 8 } }
    """
    net = text_format.Parse(text, caffe_pb2.NetParameter())
    again = caffe_pb2.NetParameter.FromString(net.SerializeToString())
    assert again == net
    assert again.layer[0].prior_box_param.min_size == [30.0]
    assert not again.layer[1].pooling_param.ceil_mode
    assert again.layer[2].detection_output_param.code_type == caffe_pb2.PriorBoxParameter.CENTER_SIZE
    # Field 203 on the wire is SSD's prior_box_param.
    raw = caffe_pb2.LayerParameter(prior_box_param=caffe_pb2.PriorBoxParameter(step=8)).SerializeToString()
    assert raw[:2] == bytes([(203 << 3 | 2) & 0x7F | 0x80, (203 << 3 | 2) >> 7])


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field, written by hand as a fork's binary would hold it."""
    def varint(v):
        out = b""
        while True:
            b, v = v & 0x7F, v >> 7
            out += bytes([b | (0x80 if v else 0)])
            if not v:
                return out
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@pytest.mark.parametrize("number,type_,field,payload,expect", [
    (137, "Upsample", "upsample_param", b"\x08\x04\x30\x0a\x38\x0c", {"scale": 4, "upsample_h": 10, "upsample_w": 12}),
    (143, "Interp", "interp_param", b"\x18\x08", {"zoom_factor": 8}),
    (148, "Reorg", "reorg_param", b"\x08\x02\x10\x01", {"stride": 2, "reverse": True}),
    (149, "Region", "region_param", b"\x08\x50\x18\x09", {"classes": 80, "boxes_of_each_grid": 9}),
    (150, "PriorBox", "prior_box_param", b"\x0d\x00\x00\xf0\x41", {"min_size": [30.0]}),
    (201, "Proposal", "proposal_param", b"\x08\x10\x30\xe8\x07", {"feat_stride": 16, "pre_nms_topn": 1000}),
])
def test_binary_fork_numbers_are_read_by_layer_type(tmp_path, number, type_, field, payload, expect):
    """A fork's binary net whose layer holds the fork's number for its parameter (SegNet's 137,
    PSPNet's 143, ...) reads that parameter, not this schema's owner of the number."""
    from convnet_io.caffe.prototxt import read_net_parameter

    layer = caffe_pb2.LayerParameter(name="x", type=type_).SerializeToString() + _field(number, payload)
    path = tmp_path / "fork.caffemodel"
    path.write_bytes(_field(100, layer))
    net = read_net_parameter(path)
    got = getattr(net.layer[0], field)
    for name, value in expect.items():
        assert (list(getattr(got, name)) if isinstance(value, list) else getattr(got, name)) == value
    owner = caffe_pb2.LayerParameter.DESCRIPTOR.fields_by_number.get(number)
    if owner is not None and owner.name != field:
        assert not net.layer[0].HasField(owner.name)
    # The same number on a layer of the schema's own type keeps the schema's meaning.
    if number == 143:
        plain = caffe_pb2.LayerParameter(name="in", type="Input", input_param=caffe_pb2.InputParameter(
            shape=[caffe_pb2.BlobShape(dim=[1, 3])]))
        path.write_bytes(_field(100, plain.SerializeToString()))
        assert list(read_net_parameter(path).layer[0].input_param.shape[0].dim) == [1, 3]
