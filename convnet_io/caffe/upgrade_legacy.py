"""V0 and V1 nets to V2: Caffe's type tables and its ``UpgradeV0Net`` / ``UpgradeV1Net`` steps."""
from __future__ import annotations

from google.protobuf import unknown_fields

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError, LayerError

V1 = caffe_pb2.V1LayerParameter
_V1_TYPE = V1.LayerType


class UpgradeError(ConvnetError, ValueError):
    """A legacy net that cannot be upgraded (net-level problem)."""


class LayerUpgradeError(LayerError, ValueError):
    """A legacy layer that cannot be upgraded; the message names the layer."""


# ---------------------------------------------------------------------------
# type tables
# ---------------------------------------------------------------------------

#: V0 layer type strings and the V1 enum names they become.
V0_TO_V1_TYPE: dict[str, str] = {
    "accuracy": "ACCURACY",
    "bnll": "BNLL",
    "concat": "CONCAT",
    "conv": "CONVOLUTION",
    "data": "DATA",
    "dropout": "DROPOUT",
    "euclidean_loss": "EUCLIDEAN_LOSS",
    "flatten": "FLATTEN",
    "hdf5_data": "HDF5_DATA",
    "hdf5_output": "HDF5_OUTPUT",
    "im2col": "IM2COL",
    "images": "IMAGE_DATA",
    "infogain_loss": "INFOGAIN_LOSS",
    "innerproduct": "INNER_PRODUCT",
    "lrn": "LRN",
    "multinomial_logistic_loss": "MULTINOMIAL_LOGISTIC_LOSS",
    "pool": "POOLING",
    "relu": "RELU",
    "sigmoid": "SIGMOID",
    "softmax": "SOFTMAX",
    "softmax_loss": "SOFTMAX_LOSS",
    "split": "SPLIT",
    "tanh": "TANH",
    "window_data": "WINDOW_DATA",
}

#: V1 ``LayerType`` enum names and the V2 type strings they become.
V1_TO_V2_TYPE: dict[str, str] = {
    "ABSVAL": "AbsVal",
    "ACCURACY": "Accuracy",
    "ARGMAX": "ArgMax",
    "BNLL": "BNLL",
    "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss",
    "CONVOLUTION": "Convolution",
    "DECONVOLUTION": "Deconvolution",
    "DATA": "Data",
    "DROPOUT": "Dropout",
    "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss",
    "ELTWISE": "Eltwise",
    "EXP": "Exp",
    "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data",
    "HDF5_OUTPUT": "HDF5Output",
    "HINGE_LOSS": "HingeLoss",
    "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData",
    "INFOGAIN_LOSS": "InfogainLoss",
    "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN",
    "MEMORY_DATA": "MemoryData",
    "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN",
    "POOLING": "Pooling",
    "POWER": "Power",
    "RELU": "ReLU",
    "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss",
    "SILENCE": "Silence",
    "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss",
    "SPLIT": "Split",
    "SLICE": "Slice",
    "TANH": "TanH",
    "WINDOW_DATA": "WindowData",
    "THRESHOLD": "Threshold",
}

# V0 parameters and where each one lands in a V1 layer, by V0 layer type.
# Each target is (sub-message field of V1LayerParameter, field in it, how):
# "set" a scalar, "append" to a repeated scalar, "copy" a message.
_CONV, _IP, _POOL = "convolution_param", "inner_product_param", "pooling_param"
_V0_PARAM_TARGETS: dict[str, dict[str, tuple[str, str, str]]] = {
    "num_output": {"conv": (_CONV, "num_output", "set"), "innerproduct": (_IP, "num_output", "set")},
    "biasterm": {"conv": (_CONV, "bias_term", "set"), "innerproduct": (_IP, "bias_term", "set")},
    "weight_filler": {"conv": (_CONV, "weight_filler", "copy"), "innerproduct": (_IP, "weight_filler", "copy")},
    "bias_filler": {"conv": (_CONV, "bias_filler", "copy"), "innerproduct": (_IP, "bias_filler", "copy")},
    "pad": {"conv": (_CONV, "pad", "append"), "pool": (_POOL, "pad", "set")},
    "kernelsize": {"conv": (_CONV, "kernel_size", "append"), "pool": (_POOL, "kernel_size", "set")},
    "group": {"conv": (_CONV, "group", "set")},
    "stride": {"conv": (_CONV, "stride", "append"), "pool": (_POOL, "stride", "set")},
    "pool": {"pool": (_POOL, "pool", "enum")},
    "dropout_ratio": {"dropout": ("dropout_param", "dropout_ratio", "set")},
    "local_size": {"lrn": ("lrn_param", "local_size", "set")},
    "alpha": {"lrn": ("lrn_param", "alpha", "set")},
    "beta": {"lrn": ("lrn_param", "beta", "set")},
    "k": {"lrn": ("lrn_param", "k", "set")},
    "source": {
        "data": ("data_param", "source", "set"),
        "hdf5_data": ("hdf5_data_param", "source", "set"),
        "images": ("image_data_param", "source", "set"),
        "window_data": ("window_data_param", "source", "set"),
        "infogain_loss": ("infogain_loss_param", "source", "set"),
    },
    "batchsize": {
        "data": ("data_param", "batch_size", "set"),
        "hdf5_data": ("hdf5_data_param", "batch_size", "set"),
        "images": ("image_data_param", "batch_size", "set"),
        "window_data": ("window_data_param", "batch_size", "set"),
    },
    "rand_skip": {"data": ("data_param", "rand_skip", "set"), "images": ("image_data_param", "rand_skip", "set")},
    "shuffle_images": {"images": ("image_data_param", "shuffle", "set")},
    "new_height": {"images": ("image_data_param", "new_height", "set")},
    "new_width": {"images": ("image_data_param", "new_width", "set")},
    "concat_dim": {"concat": ("concat_param", "concat_dim", "set")},
    "det_fg_threshold": {"window_data": ("window_data_param", "fg_threshold", "set")},
    "det_bg_threshold": {"window_data": ("window_data_param", "bg_threshold", "set")},
    "det_fg_fraction": {"window_data": ("window_data_param", "fg_fraction", "set")},
    "det_context_pad": {"window_data": ("window_data_param", "context_pad", "set")},
    "det_crop_mode": {"window_data": ("window_data_param", "crop_mode", "set")},
    "hdf5_output_param": {"hdf5_output": ("hdf5_output_param", "hdf5_output_param", "copy")},
}
# V0 data transformation fields: whatever the layer type, they go to transform_param.
_V0_TRANSFORM_FIELDS = {"scale": "scale", "meanfile": "mean_file", "cropsize": "crop_size", "mirror": "mirror"}
# V0 fields Caffe never carried over (no V1 counterpart); reported when present.
_V0_IGNORED_FIELDS = ("new_num", "new_channels")

# Data transformation fields that older V1 nets keep inside the data layer's own parameters.
_DATA_TRANSFORM_FIELDS = ("scale", "mean_file", "crop_size", "mirror")
_V1_DATA_LAYER_PARAMS = {
    "DATA": "data_param",
    "IMAGE_DATA": "image_data_param",
    "WINDOW_DATA": "window_data_param",
}

# Every *_param message of a V1 layer, copied as is to the V2 layer field of the same name.
_V1_PARAM_MESSAGES = tuple(
    f.name for f in V1.DESCRIPTOR.fields if f.name.endswith("_param")
)
_V1_TYPE_FIELD_NUMBER = V1.DESCRIPTOR.fields_by_name["type"].number


def _layer_label(name: str, index: int) -> str:
    return name if name else f"#{index} (unnamed)"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# ---------------------------------------------------------------------------
# predicates
# ---------------------------------------------------------------------------


def needs_v0_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when any ``layers`` entry carries a nested V0 ``layer`` definition."""
    return any(layer.HasField("layer") for layer in net.layers)


def needs_data_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when a V1 data layer keeps transformation fields in its own parameters."""
    for layer in net.layers:
        param_name = _V1_DATA_LAYER_PARAMS.get(_V1_TYPE.Name(layer.type))
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        if any(param.HasField(f) for f in _DATA_TRANSFORM_FIELDS):
            return True
    return False


def needs_v1_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when the net has any (V1) ``layers`` entries."""
    return len(net.layers) > 0


def needs_input_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when the net declares inputs with the net-level ``input`` field."""
    return len(net.input) > 0


def needs_batch_norm_upgrade(net: caffe_pb2.NetParameter) -> bool:
    """True when a BatchNorm layer declares three statistics param specs that still learn."""
    return any(layer.type == "BatchNorm" and len(layer.param) == 3
               and any(p.lr_mult != 0 or p.decay_mult != 0 for p in layer.param) for layer in net.layer)


def is_upgrade_needed(net: caffe_pb2.NetParameter) -> bool:
    """True when :func:`upgrade_net` would change ``net``."""
    return (
        needs_v0_upgrade(net)
        or needs_data_upgrade(net)
        or needs_v1_upgrade(net)
        or needs_input_upgrade(net)
        or needs_batch_norm_upgrade(net)
    )


# ---------------------------------------------------------------------------
# 1. V0 -> V1
# ---------------------------------------------------------------------------


def v0_layer_type(v0_type: str, layer_name: str = "") -> int:
    """The V1 ``LayerType`` value for a V0 type string (``"conv"`` -> ``CONVOLUTION``)."""
    try:
        return _V1_TYPE.Value(V0_TO_V1_TYPE[v0_type])
    except KeyError:
        known = ", ".join(sorted(V0_TO_V1_TYPE))
        raise LayerUpgradeError(
            layer_name, f"unknown V0 layer type '{v0_type}' (known V0 types: {known}, padding)"
        ) from None


def _fold_v0_padding_layers(net: caffe_pb2.NetParameter) -> tuple[list[caffe_pb2.V1LayerParameter], int]:
    """Drop V0 ``padding`` layers, moving their ``pad`` into the conv/pool layer they feed.

    Returns copies of the remaining ``layers`` entries and the number of padding layers removed.
    """
    original = list(net.layers)
    kept: list[caffe_pb2.V1LayerParameter] = []
    last_producer: dict[str, int] = {name: -1 for name in net.input}
    n_padding = 0
    for i, conn in enumerate(original):
        v0 = conn.layer
        label = _layer_label(v0.name, i)
        is_padding = v0.type == "padding"
        if is_padding:
            n_padding += 1
        else:
            copy = V1()
            copy.CopyFrom(conn)
            kept.append(copy)
        for j, blob in enumerate(conn.bottom):
            if blob not in last_producer:
                raise LayerUpgradeError(
                    label, f"bottom blob '{blob}' is not a net input and no earlier layer produces it"
                )
            src_index = last_producer[blob]
            if src_index == -1:
                continue
            src = original[src_index]
            if src.layer.type != "padding":
                continue
            src_label = _layer_label(src.layer.name, src_index)
            if v0.type not in ("conv", "pool"):
                raise LayerUpgradeError(
                    label,
                    f"V0 padding layer '{src_label}' feeds a layer of type '{v0.type}'; "
                    "only 'conv' and 'pool' layers can absorb a padding layer",
                    v0.type or None,
                )
            if len(conn.bottom) != 1:
                raise LayerUpgradeError(
                    label, f"takes {len(conn.bottom)} bottoms, but a layer fed by a V0 padding layer must take one",
                    v0.type,
                )
            if len(src.bottom) != 1 or len(src.top) != 1:
                raise LayerUpgradeError(
                    src_label,
                    f"V0 padding layer has {len(src.bottom)} bottoms and {len(src.top)} tops; exactly one of each "
                    "is required",
                    "padding",
                )
            target = kept[-1]
            target.layer.pad = src.layer.pad
            target.bottom[j] = src.bottom[0]
        for blob in conn.top:
            last_producer[blob] = i
    return kept, n_padding


def _upgrade_v0_layer(conn: caffe_pb2.V1LayerParameter, index: int, notes: list[str]) -> caffe_pb2.V1LayerParameter:
    """One V0 ``layers { layer { ... } bottom top }`` entry as a V1 layer."""
    v0 = conn.layer
    label = _layer_label(v0.name, index)
    out = V1()
    out.bottom.extend(conn.bottom)
    out.top.extend(conn.top)
    if v0.HasField("name"):
        out.name = v0.name
    if not v0.HasField("type"):
        raise LayerUpgradeError(label, "V0 layer definition has no type")
    v0_type = v0.type
    out.type = v0_layer_type(v0_type, label)
    for blob in v0.blobs:
        out.blobs.add().CopyFrom(blob)
    out.blobs_lr.extend(v0.blobs_lr)
    out.weight_decay.extend(v0.weight_decay)

    for field in caffe_pb2.V0LayerParameter.DESCRIPTOR.fields:
        name = field.name
        if name in _V0_TRANSFORM_FIELDS:
            if v0.HasField(name):
                setattr(out.transform_param, _V0_TRANSFORM_FIELDS[name], getattr(v0, name))
            continue
        if name in _V0_IGNORED_FIELDS:
            if v0.HasField(name):
                notes.append(f"layer '{label}': V0 parameter '{name}' has no V1 counterpart and was dropped")
            continue
        targets = _V0_PARAM_TARGETS.get(name)
        if targets is None or not v0.HasField(name):
            continue
        target = targets.get(v0_type)
        if target is None:
            notes.append(
                f"layer '{label}': V0 parameter '{name}' does not apply to layer type '{v0_type}' and was dropped"
            )
            continue
        msg_name, field_name, how = target
        msg = getattr(out, msg_name)
        value = getattr(v0, name)
        if how == "set":
            setattr(msg, field_name, value)
        elif how == "append":
            getattr(msg, field_name).append(value)
        elif how == "enum":
            method = caffe_pb2.V0LayerParameter.PoolMethod.Name(value)
            setattr(msg, field_name, caffe_pb2.PoolingParameter.PoolMethod.Value(method))
        elif how == "copy":
            if msg_name == field_name:  # the whole sub-message carries over
                msg.CopyFrom(value)
            else:
                getattr(msg, field_name).CopyFrom(value)
    return out


def upgrade_v0_net(net: caffe_pb2.NetParameter) -> list[str]:
    """Upgrade a V0 net (nested ``layer`` definitions) to V1 ``layers`` in place."""
    if not needs_v0_upgrade(net):
        return []
    if len(net.layer):
        raise UpgradeError(
            "net mixes V0 'layers { layer { ... } }' definitions with current-format 'layer' entries; "
            "write the net in one format"
        )
    for i, conn in enumerate(net.layers):
        if not conn.HasField("layer"):
            raise LayerUpgradeError(
                _layer_label(conn.name, i),
                "V1 'layers' entry in a V0 net (other entries nest a V0 'layer' definition); "
                "write the net in one format",
            )
    n_before = len(net.layers)
    kept, n_padding = _fold_v0_padding_layers(net)
    notes: list[str] = []
    upgraded = [_upgrade_v0_layer(conn, i, notes) for i, conn in enumerate(kept)]
    net.ClearField("layers")
    net.layers.extend(upgraded)
    summary = f"upgraded {_plural(n_before, 'V0 layer definition')} to V1 form"
    if n_padding:
        summary += f" ({_plural(n_padding, 'padding layer')} folded into the following convolution/pooling)"
    return [summary] + notes


# ---------------------------------------------------------------------------
# 3. V1 -> V2
# ---------------------------------------------------------------------------


def v1_layer_type(layer: caffe_pb2.V1LayerParameter, index: int = 0) -> str:
    """The V2 type string of a V1 layer (``CONVOLUTION`` -> ``"Convolution"``)."""
    label = _layer_label(layer.name, index)
    if not layer.HasField("type"):
        for f in unknown_fields.UnknownFieldSet(layer):
            if f.field_number == _V1_TYPE_FIELD_NUMBER:
                raise LayerUpgradeError(label, f"unknown V1 layer type {f.data} (not in Caffe's V1 LayerType enum)")
        raise LayerUpgradeError(label, "V1 layer has no type")
    enum_name = _V1_TYPE.Name(layer.type)
    v2 = V1_TO_V2_TYPE.get(enum_name)
    if v2 is None:
        raise LayerUpgradeError(label, f"V1 layer type {enum_name} names no layer")
    return v2


def _upgrade_v1_layer(v1: caffe_pb2.V1LayerParameter, index: int) -> caffe_pb2.LayerParameter:
    out = caffe_pb2.LayerParameter()
    out.bottom.extend(v1.bottom)
    out.top.extend(v1.top)
    if v1.HasField("name"):
        out.name = v1.name
    for rule in v1.include:
        out.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        out.exclude.add().CopyFrom(rule)
    out.type = v1_layer_type(v1, index)
    for blob in v1.blobs:
        out.blobs.add().CopyFrom(blob)

    def spec(i: int) -> caffe_pb2.ParamSpec:
        while len(out.param) <= i:
            out.param.add()
        return out.param[i]

    for i, name in enumerate(v1.param):
        spec(i).name = name
    for i, mode in enumerate(v1.blob_share_mode):
        spec(i).share_mode = caffe_pb2.ParamSpec.DimCheckMode.Value(V1.DimCheckMode.Name(mode))
    for i, lr in enumerate(v1.blobs_lr):
        spec(i).lr_mult = lr
    for i, decay in enumerate(v1.weight_decay):
        spec(i).decay_mult = decay
    out.loss_weight.extend(v1.loss_weight)
    for name in _V1_PARAM_MESSAGES:
        if v1.HasField(name):
            getattr(out, name).CopyFrom(getattr(v1, name))
    return out


def upgrade_v1_net(net: caffe_pb2.NetParameter) -> list[str]:
    """Replace V1 ``layers`` entries by V2 ``layer`` entries in place."""
    if not needs_v1_upgrade(net):
        return []
    if len(net.layer):
        raise UpgradeError(
            f"net has both V1 'layers' entries ({len(net.layers)}) and current-format 'layer' entries "
            f"({len(net.layer)}); Caffe would ignore the 'layer' entries - write the net in one format"
        )
    for i, v1 in enumerate(net.layers):
        if v1.HasField("layer"):
            raise LayerUpgradeError(_layer_label(v1.name, i), "V1 layer still holds a nested V0 definition")
    upgraded = [_upgrade_v1_layer(v1, i) for i, v1 in enumerate(net.layers)]
    net.ClearField("layers")
    net.layer.extend(upgraded)
    return [f"upgraded {_plural(len(upgraded), 'V1 layer')} ('layers' entries) to current 'layer' form"]
