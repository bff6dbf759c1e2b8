"""ContrastiveLoss, HingeLoss, InfogainLoss and MultinomialLogisticLoss with Caffe's forward and
Caffe's backward (``src/caffe/layers/<name>_layer.cpp``). Where Caffe's hand-written gradient is
not the derivative of its forward (ContrastiveLoss adds 1e-4 to the distance; the log threshold
is not differentiated), the gradient is Caffe's, not autograd's."""
from __future__ import annotations

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.common import canonical_axis, count
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.converters.loss import NORMALIZATIONS, _labels_and_mask, get_normalizer
from convnet_io.torch_model.registry import converter

LOG_THRESHOLD = 1e-20  # Caffe's kLOG_THRESHOLD


class _ContrastiveFn(torch.autograd.Function):
    """Forward sum over pairs / 2N; backward as ContrastiveLossLayer::Backward_cpu."""

    @staticmethod
    def forward(ctx, a, b, similar, margin, legacy_version):
        diff = a - b
        dist_sq = (diff * diff).sum(1)
        if legacy_version:
            dissimilar = torch.clamp(margin - dist_sq, min=0)
        else:
            dissimilar = torch.clamp(margin - torch.sqrt(dist_sq), min=0) ** 2
        loss = torch.where(similar, dist_sq, dissimilar).sum() / a.shape[0] / 2
        ctx.save_for_backward(diff, dist_sq, similar)
        ctx.margin, ctx.legacy = margin, legacy_version
        return loss

    @staticmethod
    def backward(ctx, grad):
        diff, dist_sq, similar = ctx.saved_tensors
        alpha = grad / diff.shape[0]
        if ctx.legacy:
            mdist = ctx.margin - dist_sq
            beta = -alpha * torch.ones_like(dist_sq)
        else:
            dist = torch.sqrt(dist_sq)
            mdist = ctx.margin - dist
            beta = -alpha * mdist / (dist + 1e-4)
        coef = torch.where(similar, alpha * torch.ones_like(dist_sq),
                           torch.where(mdist > 0, beta, torch.zeros_like(beta)))
        g = coef[:, None] * diff
        return g, -g, None, None, None


class ContrastiveLoss(CaffeLayer):
    """sum over pairs of d^2 (similar) or max(margin - d, 0)^2 (dissimilar; legacy_version:
    max(margin - d^2, 0)), over 2N. The flag is read as static_cast<int>."""

    def __init__(self, margin: float, legacy_version: bool):
        super().__init__()
        self.margin, self.legacy_version = margin, legacy_version

    def forward(self, a, b, sim):
        n = a.shape[0]
        similar = sim.reshape(n).to(torch.int64) != 0
        return _ContrastiveFn.apply(a.reshape(n, -1), b.reshape(n, -1), similar, self.margin, self.legacy_version)

    def extra_repr(self):
        return f"margin={self.margin:.6g}, legacy_version={self.legacy_version}"


@converter("ContrastiveLoss")
def convert_contrastive_loss(node: Node, graph: Graph) -> nn.Module:
    return ContrastiveLoss(node.attrs.margin, node.attrs.legacy_version)


class HingeLoss(CaffeLayer):
    """t = max(0, 1 + x) with the label's entry negated first; L1: sum t / N, L2: sum t^2 / N."""

    def __init__(self, norm: str):
        super().__init__()
        if norm not in ("L1", "L2"):
            raise ValueError(f"hinge norm {norm} is not supported")
        self.norm = norm

    def forward(self, x, label):
        n = x.shape[0]
        flat = x.reshape(n, -1)
        lab = label.reshape(n).to(torch.int64)
        sign = torch.ones_like(flat).scatter(1, lab[:, None], -1.0)
        t = torch.relu(1 + sign * flat)
        return (t.sum() if self.norm == "L1" else (t * t).sum()) / n

    def extra_repr(self):
        return f"norm={self.norm}"


@converter("HingeLoss")
def convert_hinge_loss(node: Node, graph: Graph) -> nn.Module:
    return HingeLoss(node.attrs.norm)


def _thresholded_log(p: torch.Tensor, log_p: torch.Tensor | None = None) -> torch.Tensor:
    """log(max(p, 1e-20)) in value; in gradient Caffe's, which ignores the threshold: the
    gradient of ``log_p`` when given (d log softmax), else 1 / max(p, 1e-20)."""
    value = torch.log(torch.clamp(p.detach(), min=LOG_THRESHOLD))
    if log_p is not None:
        return log_p + (value - log_p).detach()
    return value + (p - p.detach()) / torch.clamp(p.detach(), min=LOG_THRESHOLD)


class InfogainLoss(CaffeLayer):
    """-sum over counted positions of sum_l H[label, l] log(max(softmax_l, 1e-20)), divided by
    the normalizer; ignore_label positions neither count nor get a gradient."""

    def __init__(self, axis: int, ignore_label, normalization: str, infogain, num_tops: int, source: str):
        super().__init__()
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"loss normalization {normalization} is not supported")
        self.axis, self.ignore_label, self.normalization = axis, ignore_label, normalization
        self.num_tops, self.source = num_tops, source
        h = torch.tensor(infogain, dtype=torch.float32) if infogain is not None else None
        self.register_buffer("infogain", h, persistent=False)

    def forward(self, scores, label, infogain=None):
        shape = tuple(scores.shape)
        outer, classes, inner = count(shape, 0, self.axis), shape[self.axis], count(shape, self.axis + 1)
        h = infogain if infogain is not None else self.infogain
        if h is None:
            raise ValueError(f"the infogain matrix '{self.source}' could not be read")
        h = h.reshape(classes, classes).detach().to(scores.dtype)
        prob = torch.softmax(scores, dim=self.axis)
        logs = _thresholded_log(prob, torch.log_softmax(scores, dim=self.axis)).reshape(outer, classes, inner)
        lab, valid = _labels_and_mask(label, (outer, inner), self.ignore_label)
        rows = h[lab]  # (outer, inner, classes): H[label, l]
        per = (rows.permute(0, 2, 1) * logs).sum(1)
        loss = -torch.where(valid, per, torch.zeros_like(per)).sum()
        loss = loss / get_normalizer(self.normalization, outer, inner, valid.sum().to(scores.dtype))
        return (loss, prob) if self.num_tops > 1 else loss

    def extra_repr(self):
        return f"axis={self.axis}, ignore_label={self.ignore_label}, normalization={self.normalization}"


@converter("InfogainLoss")
def convert_infogain_loss(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    axis = canonical_axis(a.axis, len(graph.shapes[node.bottoms[0]]))
    return InfogainLoss(axis, a.ignore_label, a.normalization, a.infogain, len(node.tops), a.source)


class MultinomialLogisticLoss(CaffeLayer):
    """-sum_i log(max(prob[i, label_i], 1e-20)) / N; gradient -1 / max(prob, 1e-20) / N."""

    def forward(self, prob, label):
        n = prob.shape[0]
        p = prob.reshape(n, -1)
        picked = p.gather(1, label.reshape(n, 1).to(torch.int64)).squeeze(1)
        return -_thresholded_log(picked).sum() / n


@converter("MultinomialLogisticLoss")
def convert_multinomial_logistic_loss(node: Node, graph: Graph) -> nn.Module:
    return MultinomialLogisticLoss()
