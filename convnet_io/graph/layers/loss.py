"""Loss and metric layers: SoftmaxWithLoss, Accuracy, EuclideanLoss, SigmoidCrossEntropyLoss."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import canonical_axis, count, enum_name
from convnet_io.graph.layers.registry import LayerSpec, register


@dataclass(frozen=True)
class LossAttrs:
    ignore_label: int | None = None
    normalization: str = "VALID"  # FULL, VALID, BATCH_SIZE, NONE
    axis: int = 1


def loss_attrs(layer, default: str = "VALID") -> LossAttrs:
    """Caffe's LossParameter; ``default`` is the type's normalization when none is set."""
    p = layer.loss_param
    if p.HasField("normalization"):
        norm = enum_name(p, "normalization")
    elif p.HasField("normalize"):
        norm = "VALID" if p.normalize else "BATCH_SIZE"
    else:
        norm = default
    ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
    return LossAttrs(ignore, norm, int(layer.softmax_param.axis))


class Loss(LayerSpec):
    min_bottoms = max_bottoms = 2


@register("SoftmaxWithLoss")
class SoftmaxWithLoss(Loss):
    @classmethod
    def attrs(cls, layer):
        return loss_attrs(layer)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        scores, label = bottoms[0], bottoms[1]
        axis = canonical_axis(a.axis, len(scores))
        if count(scores) // scores[axis] != count(label):
            raise ValueError(f"label count {count(label)} must equal scores {list(scores)} "
                             f"without axis {axis}")
        return [()] + [scores] * (num_tops - 1)


@dataclass(frozen=True)
class AccuracyAttrs:
    top_k: int = 1
    axis: int = 1
    ignore_label: int | None = None


@register("Accuracy")
class Accuracy(LayerSpec):
    min_bottoms = max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = layer.accuracy_param
        ignore = int(p.ignore_label) if p.HasField("ignore_label") else None
        return AccuracyAttrs(int(p.top_k), int(p.axis), ignore)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        scores, label = bottoms
        axis = canonical_axis(a.axis, len(scores))
        if a.top_k > scores[axis]:
            raise ValueError(f"top_k {a.top_k} exceeds the {scores[axis]} classes")
        if count(scores) // scores[axis] != count(label):
            raise ValueError(f"label count {count(label)} does not match scores {list(scores)}")
        return [()] + [(scores[axis],)] * (num_tops - 1)


@register("EuclideanLoss")
class EuclideanLoss(Loss):
    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if count(bottoms[0]) != count(bottoms[1]) or bottoms[0][:1] != bottoms[1][:1]:
            raise ValueError(f"bottoms {list(bottoms[0])} and {list(bottoms[1])} differ")
        return [()]


@register("SigmoidCrossEntropyLoss")
class SigmoidCrossEntropyLoss(Loss):
    @classmethod
    def attrs(cls, layer):
        return loss_attrs(layer, default="BATCH_SIZE")

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if count(bottoms[0]) != count(bottoms[1]):
            raise ValueError(f"bottoms {list(bottoms[0])} and {list(bottoms[1])} differ in count")
        return [()]


LOSS_TYPES = frozenset({"SoftmaxWithLoss", "EuclideanLoss", "SigmoidCrossEntropyLoss"})
