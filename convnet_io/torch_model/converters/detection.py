"""SSD's Permute, PriorBox, Normalize and DetectionOutput (weiliu89/caffe, branch ssd).

DetectionOutput's rows depend on the data (how many boxes survive), so it runs Caffe's loops on
the CPU in float32 NumPy; the other three are plain tensor code."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.detection import (
    DetectionOutputAttrs,
    permute_order,
    prior_box_values,
)
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


class Permute(CaffeLayer):
    def __init__(self, order: tuple[int, ...]):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x.permute(*self.order).contiguous()

    def extra_repr(self):
        return f"order={list(self.order)}"


@converter("Permute")
def convert_permute(node: Node, graph: Graph) -> nn.Module:
    return Permute(permute_order(node.attrs.order, len(graph.shapes[node.bottoms[0]])))


class PriorBox(CaffeLayer):
    """The prior boxes depend only on the two bottoms' sizes: computed once per size."""

    def __init__(self, attrs):
        super().__init__()
        self.attrs = attrs
        self._cache: dict[tuple[int, ...], torch.Tensor] = {}

    def forward(self, feature, image):
        key = (*feature.shape[2:], *image.shape[2:])
        if torch.jit.is_tracing() or torch.compiler.is_compiling():  # a constant of the trace
            return torch.from_numpy(prior_box_values(self.attrs, *key)).to(feature.device)
        if key not in self._cache:
            self._cache[key] = torch.from_numpy(prior_box_values(self.attrs, *key))
        return self._cache[key].to(feature.device)

    def extra_repr(self):
        a = self.attrs
        return f"min_sizes={list(a.min_sizes)}, max_sizes={list(a.max_sizes)}, priors={a.num_priors}"


@converter("PriorBox")
def convert_prior_box(node: Node, graph: Graph) -> nn.Module:
    return PriorBox(node.attrs)


class Normalize(CaffeLayer):
    """NormalizeLayer::Forward_cpu: across_spatial multiplies by 1 / sqrt(sum x^2 + eps) of the
    whole item, otherwise divides by sqrt(sum_c x^2 + eps) per pixel; then the learned scale."""

    def __init__(self, channels: int, across_spatial: bool, channel_shared: bool, eps: float):
        super().__init__()
        self.across_spatial = across_spatial
        self.channel_shared = channel_shared
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(() if channel_shared else (channels,), dtype=torch.float32))

    def forward(self, x):
        sq = x * x
        if self.across_spatial:
            norm = torch.sqrt(sq.flatten(1).sum(1) + self.eps)
            y = x * (1.0 / norm).reshape(-1, *[1] * (x.dim() - 1))
        else:
            y = x / torch.sqrt(sq.sum(1, keepdim=True) + self.eps)
        if self.channel_shared:
            return y * self.scale
        return y * self.scale.reshape(1, -1, *[1] * (x.dim() - 2))

    def caffe_blobs(self):
        return [self.scale]

    def extra_repr(self):
        return (f"across_spatial={self.across_spatial}, channel_shared={self.channel_shared}, "
                f"eps={self.eps}")


@converter("Normalize")
def convert_normalize(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return Normalize(graph.shapes[node.bottoms[0]][1], a.across_spatial, a.channel_shared, a.eps)


# -- DetectionOutput ------------------------------------------------------------------------------

F32 = np.float32


def decode_boxes(loc: np.ndarray, prior: np.ndarray, var: np.ndarray, code_type: str,
                 variance_in_target: bool) -> np.ndarray:
    """bbox_util.cpp DecodeBBox for every box: loc (..., P, 4) against priors (P, 4) with their
    variances, float32 as the fork computes (exp and the halving in double)."""
    loc = loc.astype(F32)
    px0, py0, px1, py1 = (prior[:, i] for i in range(4))
    v = np.ones_like(var) if variance_in_target else var
    lx0, ly0, lx1, ly1 = (loc[..., i] for i in range(4))
    if code_type == "CORNER":
        out = [px0 + v[:, 0] * lx0, py0 + v[:, 1] * ly0, px1 + v[:, 2] * lx1, py1 + v[:, 3] * ly1]
    elif code_type == "CENTER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        pcx, pcy = (px0 + px1) / F32(2), (py0 + py1) / F32(2)
        cx = v[:, 0] * lx0 * pw + pcx
        cy = v[:, 1] * ly0 * ph + pcy
        w = (np.exp((v[:, 2] * lx1).astype(np.float64)) * pw).astype(F32).astype(np.float64)
        h = (np.exp((v[:, 3] * ly1).astype(np.float64)) * ph).astype(F32).astype(np.float64)
        cx, cy = cx.astype(np.float64), cy.astype(np.float64)
        out = [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0]
    elif code_type == "CORNER_SIZE":
        pw, ph = px1 - px0, py1 - py0
        out = [px0 + v[:, 0] * lx0 * pw, py0 + v[:, 1] * ly0 * ph,
               px1 + v[:, 2] * lx1 * pw, py1 + v[:, 3] * ly1 * ph]
    else:
        raise ValueError(f"unknown code_type {code_type}")
    return np.stack([np.asarray(c).astype(F32) for c in out], axis=-1)


def box_sizes(boxes: np.ndarray) -> np.ndarray:
    """BBoxSize (normalized): width * height, 0 for an inverted box."""
    w = boxes[..., 2] - boxes[..., 0]
    h = boxes[..., 3] - boxes[..., 1]
    return np.where((w < 0) | (h < 0), F32(0), w * h).astype(F32)


def _overlaps(boxes: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """JaccardOverlap of every pair, float32; 0 where the boxes do not overlap."""
    a, b = boxes[:, None, :], boxes[None, :, :]
    apart = (b[..., 0] > a[..., 2]) | (b[..., 2] < a[..., 0]) | (b[..., 1] > a[..., 3]) | (b[..., 3] < a[..., 1])
    iw = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0])
    ih = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1])
    inter = (iw * ih).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / (sizes[:, None] + sizes[None, :] - inter)
    return np.where(apart | (iw <= 0) | (ih <= 0), F32(0), iou).astype(F32)


def nms_fast(boxes: np.ndarray, scores: np.ndarray, threshold: float, nms_threshold: float,
             eta: float, top_k: int) -> list[int]:
    """ApplyNMSFast: scores above the threshold, stable-sorted descending, the first top_k, then
    greedy suppression of boxes overlapping a kept one by more than nms_threshold (which eta < 1
    lowers after each kept box while it is above 0.5)."""
    candidates = np.flatnonzero(scores > F32(threshold))
    candidates = candidates[np.argsort(-scores[candidates], kind="stable")]
    if top_k > -1:
        candidates = candidates[:top_k]
    if not len(candidates):
        return []
    sub = boxes[candidates]
    iou = _overlaps(sub, box_sizes(sub))
    adaptive = F32(nms_threshold)
    kept = np.zeros(len(candidates), dtype=bool)
    for i in range(len(candidates)):
        if (iou[i][kept] <= adaptive).all():
            kept[i] = True
            if eta < 1 and adaptive > 0.5:
                adaptive = F32(adaptive * F32(eta))
    return [int(j) for j in candidates[kept]]


def detection_output(loc: np.ndarray, conf: np.ndarray, prior: np.ndarray,
                     a: DetectionOutputAttrs) -> np.ndarray:
    """DetectionOutputLayer::Forward_cpu: rows (image, label, score, xmin, ymin, xmax, ymax) by
    image, then label ascending, then score descending; one (i, -1, ...) row per image if none."""
    n = loc.shape[0]
    priors = prior.shape[2] // 4
    p = prior.reshape(2, priors, 4).astype(F32)
    loc = loc.reshape(n, priors, a.num_loc_classes, 4).transpose(0, 2, 1, 3)
    conf = conf.reshape(n, priors, a.num_classes).astype(F32)
    decoded = decode_boxes(loc, p[0], p[1], a.code_type, a.variance_encoded_in_target)
    rows = []
    for i in range(n):
        picked: dict[int, list[int]] = {}
        for c in range(a.num_classes):
            if c == a.background_label_id:
                continue
            boxes = decoded[i, 0 if a.share_location else c]
            picked[c] = nms_fast(boxes, conf[i, :, c], a.confidence_threshold, a.nms_threshold,
                                 a.eta, a.top_k)
        total = sum(len(v) for v in picked.values())
        if a.keep_top_k > -1 and total > a.keep_top_k:
            pairs = [(conf[i, j, c], c, j) for c, js in picked.items() for j in js]
            order = sorted(range(len(pairs)), key=lambda k: -pairs[k][0])[:a.keep_top_k]
            picked = {}
            for k in order:
                picked.setdefault(pairs[k][1], []).append(pairs[k][2])
        for c in sorted(picked):
            boxes = decoded[i, 0 if a.share_location else c]
            for j in picked[c]:
                rows.append([i, c, conf[i, j, c], *boxes[j]])
    if not rows:
        rows = [[i, -1, -1, -1, -1, -1, -1] for i in range(n)]
    return np.asarray(rows, dtype=F32).reshape(1, 1, -1, 7)


class DetectionOutput(CaffeLayer):
    def __init__(self, attrs: DetectionOutputAttrs):
        super().__init__()
        self.attrs = attrs

    def forward(self, loc, conf, prior):
        if torch.jit.is_tracing() or torch.compiler.is_compiling():
            # A trace would freeze this input's rows into a constant: refuse instead.
            raise ConvnetError("DetectionOutput's rows depend on the data: TorchScript and torch.export "
                               "cannot hold it; use the ONNX export (NonMaxSuppression) or export the net "
                               "up to its bottoms")
        with np.errstate(over="ignore", invalid="ignore"):  # Caffe lets inf boxes through, silently
            out = detection_output(loc.detach().cpu().numpy(), conf.detach().cpu().numpy(),
                                   prior.detach().cpu().numpy(), self.attrs)
        return torch.from_numpy(out).to(loc.device)

    def extra_repr(self):
        a = self.attrs
        return (f"num_classes={a.num_classes}, code_type={a.code_type}, nms_threshold={a.nms_threshold}, "
                f"top_k={a.top_k}, keep_top_k={a.keep_top_k}")


@converter("DetectionOutput")
def convert_detection_output(node: Node, graph: Graph) -> nn.Module:
    return DetectionOutput(node.attrs)
