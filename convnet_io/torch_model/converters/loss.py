"""SoftmaxWithLoss, Accuracy, EuclideanLoss and SigmoidCrossEntropyLoss with Caffe's exact semantics
(``src/caffe/layers/<name>_layer.cpp``). Loss tops are 0-d tensors; the loss weight is not applied
to the top (Caffe applies it when it sums the objective).

Labels are stored as floats and read as Caffe's ``static_cast<int>`` does (truncated toward zero).
"""
from __future__ import annotations

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.common import canonical_axis, count
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter

FLT_MIN = 1.1754943508222875e-38  # std::numeric_limits<float>::min()

NORMALIZATIONS = ("FULL", "VALID", "BATCH_SIZE", "NONE")


def get_normalizer(mode: str, outer: int, inner: int, valid: torch.Tensor) -> torch.Tensor:
    """Caffe's ``get_normalizer``: FULL = outer * inner, VALID = the non-ignored count, BATCH_SIZE =
    outer, NONE = 1; never below 1."""
    if mode == "VALID":
        return torch.clamp(valid, min=1)
    fixed = {"FULL": outer * inner, "BATCH_SIZE": outer, "NONE": 1}[mode]
    return valid.new_tensor(float(max(1, fixed)))


def _labels(label: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    return label.reshape(shape).to(torch.int64)  # truncation toward zero, as static_cast<int>


def _labels_and_mask(label, shape, ignore_label):
    """Integer labels shaped (outer, inner), ignored positions set to class 0, and the mask of the
    positions that count."""
    lab = _labels(label, shape)
    if ignore_label is None:
        return lab, torch.ones_like(lab, dtype=torch.bool)
    valid = lab != ignore_label
    return torch.where(valid, lab, torch.zeros_like(lab)), valid


class SoftmaxWithLoss(CaffeLayer):
    """Softmax over ``axis``, then -sum log(max(prob[label], FLT_MIN)) over positions whose label is
    not ``ignore_label``, divided by the normalizer. A second top is the softmax itself."""

    def __init__(self, axis: int, ignore_label: int | None, normalization: str, num_tops: int):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"loss normalization {normalization} is not supported")
        self.axis, self.ignore_label, self.normalization = axis, ignore_label, normalization
        self.num_tops = num_tops

    def forward(self, scores, label):
        prob = torch.softmax(scores, dim=self.axis)
        shape = tuple(scores.shape)
        outer, channels, inner = count(shape, 0, self.axis), shape[self.axis], count(shape, self.axis + 1)
        p = prob.reshape(outer, channels, inner)
        lab, valid = _labels_and_mask(label, (outer, inner), self.ignore_label)
        picked = p.gather(1, lab.unsqueeze(1)).squeeze(1)
        logs = torch.log(torch.clamp(picked, min=FLT_MIN))
        loss = -torch.where(valid, logs, torch.zeros_like(logs)).sum()
        n_valid = valid.sum().to(scores.dtype)
        loss = loss / get_normalizer(self.normalization, outer, inner, n_valid)
        return (loss, prob) if self.num_tops > 1 else loss

    def extra_repr(self):
        return (f"axis={self.axis}, ignore_label={self.ignore_label}, "
                f"normalization={self.normalization}")


@converter("SoftmaxWithLoss")
def convert_softmax_with_loss(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    if len(node.bottoms) != 2:
        raise ValueError(f"SoftmaxWithLoss takes scores and labels, got {len(node.bottoms)} bottoms")
    if len(node.tops) > 2:
        raise ValueError(f"SoftmaxWithLoss writes at most 2 tops (loss, prob), got {len(node.tops)}")
    axis = canonical_axis(a.axis, len(graph.shapes[node.bottoms[0]]))
    return SoftmaxWithLoss(axis, a.ignore_label, a.normalization, len(node.tops))


class Accuracy(CaffeLayer):
    """Caffe Accuracy: a position counts as correct when fewer than ``top_k`` classes score at least
    the true class's score (besides the true class itself). Ignored labels do not count; no counted
    position gives 0. A second top is the accuracy per class (0 for a class with no position)."""

    def __init__(self, top_k: int, axis: int, ignore_label: int | None, num_tops: int):
        super().__init__()
        self.top_k, self.axis, self.ignore_label, self.num_tops = top_k, axis, ignore_label, num_tops

    def forward(self, scores, label):
        shape = tuple(scores.shape)
        outer, channels, inner = count(shape, 0, self.axis), shape[self.axis], count(shape, self.axis + 1)
        s = scores.reshape(outer, channels, inner)
        lab, valid = _labels_and_mask(label, (outer, inner), self.ignore_label)
        true_score = s.gather(1, lab.unsqueeze(1))
        num_better = (s >= true_score).sum(dim=1) - 1  # the true class also scores >= itself
        correct = (num_better < self.top_k) & valid
        n_valid = valid.sum()
        accuracy = correct.sum().to(scores.dtype) / n_valid.to(scores.dtype)
        accuracy = torch.where(n_valid > 0, accuracy, torch.zeros_like(accuracy))
        if self.num_tops == 1:
            return accuracy
        classes = torch.arange(channels, device=scores.device)
        is_class = lab.reshape(-1, 1) == classes  # (positions, C)
        nums = (is_class & valid.reshape(-1, 1)).sum(0).to(scores.dtype)
        hits = (is_class & correct.reshape(-1, 1)).sum(0).to(scores.dtype)
        per_class = torch.where(nums > 0, hits / torch.clamp(nums, min=1), torch.zeros_like(nums))
        return accuracy, per_class

    def extra_repr(self):
        return f"top_k={self.top_k}, axis={self.axis}, ignore_label={self.ignore_label}"


@converter("Accuracy")
def convert_accuracy(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    if len(node.tops) > 2:
        raise ValueError(f"Accuracy writes at most 2 tops (accuracy, per-class), got {len(node.tops)}")
    axis = canonical_axis(a.axis, len(graph.shapes[node.bottoms[0]]))
    return Accuracy(a.top_k, axis, a.ignore_label, len(node.tops))


class EuclideanLoss(CaffeLayer):
    """Caffe EuclideanLoss: sum((a - b)^2) / N / 2, N the first axis of ``a``."""

    def forward(self, a, b):
        diff = a - b.reshape(a.shape)
        return (diff * diff).sum() / a.shape[0] / 2


@converter("EuclideanLoss")
def convert_euclidean_loss(node: Node, graph: Graph) -> nn.Module:
    return EuclideanLoss()


class SigmoidCrossEntropyLoss(CaffeLayer):
    """Caffe's stable form: -sum(x * (t - [x >= 0]) - log(1 + exp(x - 2 x [x >= 0]))) over
    positions whose target is not ``ignore_label``, divided by the normalizer (outer = N,
    inner = the values per item)."""

    def __init__(self, ignore_label: int | None, normalization: str):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"loss normalization {normalization} is not supported")
        self.ignore_label, self.normalization = ignore_label, normalization

    def forward(self, x, target):
        t = target.reshape(x.shape)
        pos = (x >= 0).to(x.dtype)
        terms = x * (t - pos) - torch.log(1 + torch.exp(x - 2 * x * pos))
        if self.ignore_label is not None:
            valid = t.to(torch.int64) != self.ignore_label
        else:
            valid = torch.ones_like(t, dtype=torch.bool)
        loss = -torch.where(valid, terms, torch.zeros_like(terms)).sum()
        outer = x.shape[0]
        inner = count(tuple(x.shape), 1)
        return loss / get_normalizer(self.normalization, outer, inner, valid.sum().to(x.dtype))

    def extra_repr(self):
        return f"ignore_label={self.ignore_label}, normalization={self.normalization}"


@converter("SigmoidCrossEntropyLoss")
def convert_sigmoid_cross_entropy_loss(node: Node, graph: Graph) -> nn.Module:
    return SigmoidCrossEntropyLoss(node.attrs.ignore_label, node.attrs.normalization)
