"""The remaining Caffe losses: ContrastiveLoss, HingeLoss, InfogainLoss, MultinomialLogisticLoss.

Shape rules follow each layer's ``Reshape`` (``src/caffe/layers/<name>_layer.cpp``) and
``LossLayer::Reshape`` (bottoms 0 and 1 share their first axis); the top is the scalar loss.
"""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import canonical_axis, count, enum_name
from convnet_io.graph.layers.loss import Loss, loss_attrs
from convnet_io.graph.layers.registry import register
from convnet_io.graph.types import Shape


def legacy(shape: Shape, index: int) -> int:
    """Blob::LegacyShape: a missing axis counts as 1 (num, channels, height, width)."""
    return shape[index] if index < len(shape) else 1


def _check_batch(bottoms: list[Shape]) -> None:
    if legacy(bottoms[0], 0) != legacy(bottoms[1], 0):
        raise ValueError(f"the bottoms' first axes differ: {list(bottoms[0])} and {list(bottoms[1])}")


@dataclass(frozen=True)
class ContrastiveLossAttrs:
    margin: float = 1.0
    legacy_version: bool = False


@register("ContrastiveLoss")
class ContrastiveLoss(Loss):
    """Bottoms a, b (N, C[, 1, 1]) and the similarity flag y (N[, 1, 1, 1])."""

    min_bottoms = max_bottoms = 3

    @classmethod
    def attrs(cls, layer):
        p = layer.contrastive_loss_param
        return ContrastiveLossAttrs(float(p.margin), bool(p.legacy_version))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        _check_batch(bottoms)
        x, y, sim = bottoms
        if legacy(x, 1) != legacy(y, 1):
            raise ValueError(f"the two feature bottoms differ in channels: {list(x)} and {list(y)}")
        if any(legacy(s, i) != 1 for s in (x, y) for i in (2, 3)) or max(len(x), len(y)) > 4:
            raise ValueError("feature bottoms must be (N, C) or (N, C, 1, 1)")
        if any(legacy(sim, i) != 1 for i in (1, 2, 3)) or len(sim) > 4:
            raise ValueError(f"the similarity bottom must hold one value per pair, got {list(sim)}")
        return [()]


@dataclass(frozen=True)
class HingeLossAttrs:
    norm: str = "L1"


@register("HingeLoss")
class HingeLoss(Loss):
    @classmethod
    def attrs(cls, layer):
        return HingeLossAttrs(enum_name(layer.hinge_loss_param, "norm"))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        _check_batch(bottoms)
        if count(bottoms[1]) != legacy(bottoms[0], 0):
            raise ValueError(f"one label per item expected: {count(bottoms[1])} labels for {legacy(bottoms[0], 0)} items")
        return [()]


@dataclass(frozen=True)
class InfogainLossAttrs:
    axis: int = 1
    source: str = ""
    ignore_label: int | None = None
    normalization: str = "VALID"
    # The H matrix read from ``source`` by the net reader (None: not read, or H is bottom 2).
    infogain: tuple[tuple[float, ...], ...] | None = None


@register("InfogainLoss")
class InfogainLoss(Loss):
    """Softmax over ``axis`` inside the layer, then -sum_l H[label, l] log(max(prob_l, 1e-20));
    H is bottom 2 or the BlobProto file ``source``; a second top is the softmax."""

    min_bottoms, max_bottoms = 2, 3

    @classmethod
    def attrs(cls, layer):
        base = loss_attrs(layer)
        if layer.loss_param.HasField("normalize"):  # Caffe: CHECK(!has_normalize())
            raise ValueError("normalize is deprecated: use normalization")
        p = layer.infogain_loss_param
        if len(layer.bottom) < 3 and not p.source:
            raise ValueError("the infogain matrix source must be given (infogain_loss_param.source) "
                             "or passed as a third bottom")
        return InfogainLossAttrs(int(p.axis), p.source, base.ignore_label, base.normalization)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        _check_batch(bottoms)
        scores, label = bottoms[0], bottoms[1]
        axis = canonical_axis(a.axis, len(scores))
        if count(scores) // scores[axis] != count(label):
            raise ValueError(f"number of labels {count(label)} must match the predictions {list(scores)} "
                             f"without axis {axis}")
        classes = scores[axis]
        if len(bottoms) == 3 and count(bottoms[2]) != classes * classes:
            raise ValueError(f"H must be {classes}x{classes}, got {list(bottoms[2])}")
        if a.infogain is not None and len(a.infogain) * len(a.infogain[0]) != classes * classes:
            raise ValueError(f"H from '{a.source}' must be {classes}x{classes}")
        return [()] + [scores] * (num_tops - 1)


@register("MultinomialLogisticLoss")
class MultinomialLogisticLoss(Loss):
    """Bottom 0 holds probabilities (N, C): -sum log(max(prob[label], 1e-20)) / N."""

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        _check_batch(bottoms)
        if any(legacy(bottoms[1], i) != 1 for i in (1, 2, 3)):
            raise ValueError(f"the label bottom must hold one value per item, got {list(bottoms[1])}")
        return [()]


EXTRA_LOSS_TYPES = frozenset({"ContrastiveLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss"})
