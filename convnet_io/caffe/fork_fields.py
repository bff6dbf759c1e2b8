"""What the Caffe forks added to caffe.proto, and where their field numbers clash.

caffe.proto holds one superset schema: BVLC's messages plus the forks'. A
field keeps its fork's number unless two sources gave that number to different
things; then BVLC wins over a fork, the SSD fork over OpenCV's copy, and the
loser lives at 20000 + its number (see the comments in caffe.proto). Text
prototxt is read by name, so it is unaffected; `MOVED` lists the moved fields,
and in a binary net `pick_by_layer_type` reads a clashing number (`CLASHES`) as
the field the layer's type means. `KNOWN_ELSEWHERE` names `*_param` fields of
forks whose layers convnet does not implement, so an error about one can say
where it comes from.
"""

from __future__ import annotations

import re

# LayerParameter field -> (layer types, where it comes from) for the fork
# fields in caffe.proto.
FORK_PARAMS: dict[str, tuple[tuple[str, ...], str]] = {
    "annotated_data_param": (("AnnotatedData",), "SSD (weiliu89/caffe), 200"),
    "multibox_loss_param": (("MultiBoxLoss",), "SSD (weiliu89/caffe), 201"),
    "permute_param": (("Permute",), "SSD (weiliu89/caffe), 202; OpenCV, 148"),
    "prior_box_param": (("PriorBox",), "SSD (weiliu89/caffe), 203; OpenCV, 150"),
    "detection_output_param": (
        ("DetectionOutput",), "SSD (weiliu89/caffe), 204; OpenCV, 147"),
    "detection_evaluate_param": (("DetectionEvaluate",), "SSD (weiliu89/caffe), 205"),
    "norm_param": (("Normalize",), "SSD (weiliu89/caffe), 206; OpenCV, 149"),
    "video_data_param": (("VideoData",), "SSD (weiliu89/caffe), 207"),
    "roi_pooling_param": (("ROIPooling",), "Fast R-CNN (rbgirshick/caffe-fast-rcnn), 8266711"),
    "psroi_pooling_param": (("PSROIPooling",), "R-FCN (daijifeng001/caffe-rfcn), 10002"),
    "proposal_param": (("Proposal",), "OpenCV's opencv-caffe.proto, 201"),
    "upsample_param": (
        ("Upsample",), "SegNet (alexgkendall/caffe-segnet), 137; YOLOv3 ports, 149"),
    "interp_param": (("Interp",), "PSPNet (hszhao/PSPNet) and DeepLab v2, 143"),
    "shuffle_channel_param": (("ShuffleChannel",), "ShuffleNet ports, 164"),
    "reorg_param": (("Reorg",), "YOLOv2 ports, 148 or 159 (intel/caffe)"),
    "region_param": (("Region",), "YOLOv2 ports, 149"),
}

# (message, field) -> (number in the fork, fork, layer type owning that
# number there): fields that could not keep their fork's number.
MOVED: dict[tuple[str, str], tuple[int, str, str]] = {
    ("LayerParameter", "proposal_param"): (201, "OpenCV", "Proposal"),
    ("LayerParameter", "interp_param"): (143, "PSPNet / DeepLab v2", "Interp"),
    ("LayerParameter", "region_param"): (149, "YOLOv2 ports", "Region"),
    ("SolverParameter", "eval_type"): (41, "SSD", ""),
    ("SolverParameter", "ap_version"): (42, "SSD", ""),
    ("PoolingParameter", "ceil_mode"): (13, "BVLC PR #3057 / OpenCV", "Pooling"),
    ("DetectionOutputParameter", "normalized_bbox"): (10, "OpenCV", "DetectionOutput"),
}

# Numbers a fork gave to a field that this schema numbers differently (the number may belong
# to another field here, or to none): LayerParameter number -> {layer type: the field meant}.
# A binary layer of the listed type carrying that number meant the fork's field
# (``pick_by_layer_type``). 137: SegNet; 143: PSPNet/DeepLab v2; 147-150: OpenCV's numbering of
# the SSD fields (148 also the YOLOv2 ports' reorg_param, 149 their region_param); 201: OpenCV.
CLASHES: dict[int, dict[str, str]] = {
    137: {"Upsample": "upsample_param"},
    143: {"Interp": "interp_param"},
    147: {"DetectionOutput": "detection_output_param"},
    148: {"Reorg": "reorg_param", "Permute": "permute_param"},
    149: {"Region": "region_param", "Normalize": "norm_param"},
    150: {"PriorBox": "prior_box_param"},
    201: {"Proposal": "proposal_param"},
}


def pick_by_layer_type(net) -> list[str]:
    """Re-read the clashing fields of a binary NetParameter by each layer's type; returns notes.

    A field decoded under this schema's owner of the number (SegNet's Upsample 137 read as
    embed_param) is serialised back, unknown fields included, and parsed as the fork's message."""
    from google.protobuf.unknown_fields import UnknownFieldSet

    notes = []
    by_number = net.DESCRIPTOR.fields_by_name["layer"].message_type.fields_by_number
    for layer in net.layer:
        for number, by_type in CLASHES.items():
            target = by_type.get(layer.type)
            if target is None or layer.HasField(target):
                continue
            owner = by_number.get(number)
            if owner is not None and owner.name != target and layer.HasField(owner.name):
                data = getattr(layer, owner.name).SerializePartialToString()
                layer.ClearField(owner.name)
            elif owner is None:
                chunks = [f.data for f in UnknownFieldSet(layer) if f.field_number == number and f.wire_type == 2]
                if not chunks:
                    continue
                data = b"".join(chunks)
            else:
                continue
            getattr(layer, target).MergeFromString(data)
            notes.append(f"layer '{layer.name}' ({layer.type}): field {number} read as {target}, "
                         "the fork's meaning of that number for this type")
    return notes


# *_param fields of forks whose messages are not in caffe.proto.
KNOWN_ELSEWHERE: dict[str, str] = {
    "bn_param": "the BN layer of SegNet (caffe-segnet, 45) and PSPNet/DeepLab (152), "
                "two different BNParameter messages",
    "dense_image_data_param": "SegNet's DenseImageData layer (caffe-segnet, 138)",
    "seg_accuracy_param": "DeepLab v2's SegAccuracy layer (144)",
    "dense_crf_param": "DeepLab v2's DenseCRF layer (146)",
    "smooth_l1_loss_param": "Faster R-CNN's SmoothL1Loss layer (caffe-fast-rcnn)",
    "region_loss_param": "the YOLOv2 ports' RegionLoss layer",
    "yolo_detection_output_param": "MobileNet-YOLO's YoloDetectionOutput layer (601)",
    "yolov3_detection_output_param": "MobileNet-YOLO's Yolov3DetectionOutput layer (602)",
    "yolov3_param": "the YOLOv3 ports' Yolov3 loss layer (603)",
    "detection_loss_param": "the YOLOv1 ports' DetectionLoss layer",
    "eval_detection_param": "the YOLOv1 ports' EvalDetection layer",
    "box_annotator_ohem_param": "R-FCN's BoxAnnotatorOHEM layer (caffe-rfcn)",
    "relu6_param": "ReLU6 forks; BVLC's Clip layer (clip_param) computes the same",
    "mish_param": "the YOLOv4 ports' Mish layer",
}


def where_defined(field: str) -> str | None:
    """Which forks define a LayerParameter field, in words; None if none known."""
    if field in FORK_PARAMS:
        return FORK_PARAMS[field][1]
    return KNOWN_ELSEWHERE.get(field)


# -- naming the layer around an unknown field ---------------------------------------------------

_UNKNOWN = re.compile(r'Message type "caffe\.(\w+)" has no field named "(\w+)"')


def _blocks(text: str):
    """(kind, offset, depth) events of a text-format message: "open" with the field name before
    ``{``, "close", and "field" with a ``name: value`` pair; strings and comments skipped."""
    i, n, depth = 0, len(text), 0
    last_word, word_at = "", 0
    while i < n:
        ch = text[i]
        if ch == "#":
            i = text.find("\n", i)
            i = n if i < 0 else i
            continue
        if ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch:
                j += 2 if text[j] == "\\" else 1
            yield "string", i, depth, text[i + 1:j]
            i = j + 1
            continue
        if ch.isalnum() or ch in "_.-+":
            j = i
            while j < n and (text[j].isalnum() or text[j] in "_.-+"):
                j += 1
            yield "word", i, depth, text[i:j]
            last_word, word_at = text[i:j], i
            i = j
            continue
        if ch in "{<":
            yield "open", word_at, depth, last_word
            depth += 1
        elif ch in "}>":
            depth -= 1
            yield "close", i, depth, ""
        i += 1


def _layer_at(text: str, offset: int) -> tuple[str | None, str | None]:
    """(name, type) of the ``layer``/``layers`` block holding ``offset``."""
    start = None
    for kind, at, depth, value in _blocks(text):
        if at > offset and start is None:
            return None, None
        if kind == "open" and depth == 0 and value in ("layer", "layers"):
            start = at if at <= offset else None
            fields: dict[str, str] = {}
            key = None
        elif start is not None:
            if kind == "close" and depth == 0:
                if at >= offset:
                    return fields.get("name"), fields.get("type")
                start = None
            elif depth == 1 and kind in ("word", "string"):
                if key is not None and key not in fields:
                    fields[key] = value
                    key = None
                elif kind == "word":
                    key = value if value in ("name", "type") and text[at + len(value):].lstrip().startswith(":") else None
    return None, None


def explain_unknown_field(text: str, line: int | None, col: int | None, message: str) -> str:
    """The parser's "has no field named" message with the layer's name and type, and for a
    layer ``*_param`` field the forks known to define it."""
    m = _UNKNOWN.search(message)
    if not m or line is None:
        return message
    message_type, field = m.groups()
    lines = text.split("\n")
    offset = sum(len(x) + 1 for x in lines[:line - 1]) + max((col or 1) - 1, 0)
    name, type_ = _layer_at(text, offset)
    where = ""
    if type_ is not None:
        where = f" of layer '{name}' (type '{type_}')" if name else f" of a layer of type '{type_}'"
    if message_type in ("LayerParameter", "V1LayerParameter"):
        out = f"unknown field '{field}'{where}: convnet's caffe.proto has no such layer parameter"
        known = where_defined(field)
        if known:
            out += f"; it comes from {known}"
            if message_type == "V1LayerParameter" and field in FORK_PARAMS:
                out += " (a V2 'layer' field, not a V1 'layers' one)"
        return out
    return f"unknown field '{field}' in {message_type}{where}"
