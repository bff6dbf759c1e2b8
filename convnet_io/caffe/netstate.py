"""Phase and NetStateRule filtering: which layers a net has for a given phase, level and stages.

Follows Caffe's ``Net::FilterNet`` and ``Net::StateMeetsRule``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convnet_io.errors import LayerError

PHASES = ("TRAIN", "TEST")


@dataclass(frozen=True)
class NetState:
    phase: str = "TEST"
    level: int = 0
    stages: tuple[str, ...] = field(default_factory=tuple)


def state_for(net: Any, phase: str, level: int | None = None, stages: tuple[str, ...] = ()) -> NetState:
    """The state Caffe would run ``net`` in: the net's own ``state`` with phase/level/stages given."""
    phase = phase.upper()
    if phase not in PHASES:
        raise ValueError(f"phase must be TRAIN or TEST, not {phase!r}")
    own = net.state
    return NetState(phase, own.level if level is None else level, tuple(own.stage) + tuple(stages))


def state_meets_rule(state: NetState, rule: Any) -> bool:
    from convnet_io.caffe.proto import caffe_pb2

    if rule.HasField("phase") and caffe_pb2.Phase.Name(rule.phase) != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    if any(s not in state.stages for s in rule.stage):
        return False
    if any(s in state.stages for s in rule.not_stage):
        return False
    return True


def layer_included(layer: Any, state: NetState) -> bool:
    if len(layer.include) and len(layer.exclude):
        raise LayerError(layer.name, "specify either include rules or exclude rules, not both", layer.type)
    if len(layer.include):
        return any(state_meets_rule(state, r) for r in layer.include)
    return not any(state_meets_rule(state, r) for r in layer.exclude)


def filter_layers(net: Any, state: NetState) -> list[Any]:
    """The layers of an (upgraded, V2) net that exist in ``state``, in file order."""
    layers = net.messages() if hasattr(net, "messages") else net.layer  # a PlainNet's, as messages
    return [layer for layer in layers if layer_included(layer, state)]
