"""Upgrade legacy Caffe net definitions to the current (V2 ``layer``) form.

This is the one place where old net formats are brought up to date; it follows
BVLC Caffe's ``UpgradeNetAsNeeded`` (src/caffe/util/upgrade_proto.cpp) step by
step and in the same order:

1. V0 nets (``layers { layer { type: "conv" ... } }``, including ``padding``
   layers) become V1 nets (``layers { type: CONVOLUTION ... }``) (``upgrade_legacy``).
2. Data transformation fields left in a V1 data layer's own parameters
   (``scale``, ``mean_file``, ``crop_size``, ``mirror``) move to
   ``transform_param``.
3. V1 ``layers`` entries become V2 ``layer`` entries (string types,
   ``ParamSpec`` instead of ``blobs_lr``/``weight_decay``/``param``) (``upgrade_legacy``).
4. Net-level ``input`` + ``input_dim``/``input_shape`` become one ``Input``
   layer named ``input`` at the front of the net.
5. BatchNorm layers that still declare their three statistics ``param`` specs
   lose them.

Where Caffe only logs an error and carries on with a broken net (an unknown
type, a padding layer feeding something other than a convolution/pooling, a
bottom blob nobody produces, ``layer`` and ``layers`` in one net), this module
raises :class:`UpgradeError` / :class:`LayerUpgradeError` instead. Both are
:class:`~convnet_io.errors.ConvnetError` *and* :class:`ValueError`.
V0 parameters that do not apply to their layer's type are dropped, as Caffe
drops them, and each one is reported in the returned notes.
"""
from __future__ import annotations

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.upgrade_legacy import (
    _DATA_TRANSFORM_FIELDS,
    _V1_DATA_LAYER_PARAMS,
    _V1_TYPE,
    V0_TO_V1_TYPE,
    V1_TO_V2_TYPE,
    LayerUpgradeError,
    UpgradeError,
    _layer_label,
    _plural,
    is_upgrade_needed,
    needs_batch_norm_upgrade,
    needs_data_upgrade,
    needs_input_upgrade,
    needs_v0_upgrade,
    needs_v1_upgrade,
    upgrade_v0_net,
    upgrade_v1_net,
    v0_layer_type,
    v1_layer_type,
)

__all__ = [
    "UpgradeError",
    "LayerUpgradeError",
    "upgrade_net",
    "is_upgrade_needed",
    "needs_v0_upgrade",
    "needs_data_upgrade",
    "needs_v1_upgrade",
    "needs_input_upgrade",
    "needs_batch_norm_upgrade",
    "upgrade_v0_net",
    "upgrade_data_transformation",
    "upgrade_v1_net",
    "upgrade_net_input",
    "upgrade_batch_norm",
    "v0_layer_type",
    "v1_layer_type",
    "V0_TO_V1_TYPE",
    "V1_TO_V2_TYPE",
]

# ---------------------------------------------------------------------------
# 2. data transformation fields -> transform_param
# ---------------------------------------------------------------------------


def upgrade_data_transformation(net: caffe_pb2.NetParameter) -> list[str]:
    """Move ``scale``/``mean_file``/``crop_size``/``mirror`` of V1 data layers into ``transform_param``."""
    if not needs_data_upgrade(net):
        return []
    moved: list[str] = []
    for i, layer in enumerate(net.layers):
        param_name = _V1_DATA_LAYER_PARAMS.get(_V1_TYPE.Name(layer.type))
        if param_name is None:
            continue
        param = getattr(layer, param_name)
        transform = layer.transform_param
        # Caffe touches both messages of every data layer here, so both end up present.
        param.SetInParent()
        transform.SetInParent()
        fields = [f for f in _DATA_TRANSFORM_FIELDS if param.HasField(f)]
        for f in fields:
            setattr(transform, f, getattr(param, f))
            param.ClearField(f)
        if fields:
            moved.append(f"'{_layer_label(layer.name, i)}' ({', '.join(fields)})")
    return [f"moved deprecated data transformation fields into transform_param: {'; '.join(moved)}"]


# ---------------------------------------------------------------------------
# 4. net inputs -> Input layer
# ---------------------------------------------------------------------------


def upgrade_net_input(net: caffe_pb2.NetParameter) -> list[str]:
    """Turn net-level ``input``/``input_dim``/``input_shape`` into an ``Input`` layer at the front."""
    if not needs_input_upgrade(net):
        return []
    names = list(net.input)
    n = len(names)
    has_shape = len(net.input_shape) > 0
    has_dim = len(net.input_dim) > 0
    notes: list[str] = []
    if has_shape or has_dim:
        if has_shape and len(net.input_shape) != n:
            raise UpgradeError(
                f"net declares {_plural(n, 'input')} but {_plural(len(net.input_shape), 'input_shape')}; "
                "exactly one input_shape is required per input"
            )
        if not has_shape and len(net.input_dim) != 4 * n:
            raise UpgradeError(
                f"net declares {_plural(n, 'input')} but {len(net.input_dim)} input_dim values; "
                "exactly four input_dim values (N, C, H, W) are required per input"
            )
        layer = caffe_pb2.LayerParameter(name="input", type="Input")
        for i, name in enumerate(names):
            layer.top.append(name)
            shape = layer.input_param.shape.add()
            if has_shape:
                shape.CopyFrom(net.input_shape[i])
            else:
                shape.dim.extend(net.input_dim[4 * i: 4 * i + 4])
        rest = list(net.layer)
        new_layers = [layer, *rest]
        net.ClearField("layer")
        net.layer.extend(new_layers)
        shapes = ", ".join(
            f"'{name}' {list(s.dim)}" for name, s in zip(names, layer.input_param.shape)
        )
        notes.append(f"converted net inputs to an Input layer named 'input': {shapes}")
        if has_shape and has_dim:
            notes.append("net gives both input_shape and input_dim; input_shape was used and input_dim ignored")
    else:
        notes.append(
            f"dropped net input{'s' if n != 1 else ''} {', '.join(repr(x) for x in names)} "
            "declared without input_dim/input_shape"
        )
    net.ClearField("input")
    net.ClearField("input_shape")
    net.ClearField("input_dim")
    return notes


# ---------------------------------------------------------------------------
# 5. BatchNorm param specs
# ---------------------------------------------------------------------------


def upgrade_batch_norm(net: caffe_pb2.NetParameter) -> list[str]:
    """Zero lr_mult/decay_mult of the three statistics specs old BatchNorm definitions declared.

    As Caffe's UpgradeNetBatchNorm: the statistics are not learned by gradient; other fields stay.
    """
    if not needs_batch_norm_upgrade(net):
        return []
    fixed: list[str] = []
    for i, layer in enumerate(net.layer):
        if layer.type == "BatchNorm" and len(layer.param) == 3:
            for spec in layer.param:
                spec.lr_mult = 0.0
                spec.decay_mult = 0.0
            fixed.append(f"'{_layer_label(layer.name, i)}'")
    return [f"set lr_mult and decay_mult to 0 for the statistics of BatchNorm layer(s) {', '.join(fixed)}"]


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------


def upgrade_net(net: caffe_pb2.NetParameter) -> list[str]:
    """Upgrade ``net`` in place to V2 ``layer`` form; return one human-readable note per upgrade applied.

    Runs the V0, data transformation, V1, input and BatchNorm upgrades in Caffe's order. A net that
    is already current comes back unchanged with no notes. Raises :class:`UpgradeError` or
    :class:`LayerUpgradeError` (both ``ConvnetError`` and ``ValueError``) for nets Caffe cannot
    upgrade faithfully.
    """
    notes: list[str] = []
    notes += upgrade_v0_net(net)
    notes += upgrade_data_transformation(net)
    notes += upgrade_v1_net(net)
    notes += upgrade_net_input(net)
    notes += upgrade_batch_norm(net)
    return notes
