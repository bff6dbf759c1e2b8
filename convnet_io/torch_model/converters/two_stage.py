"""ROIPooling (Fast R-CNN) and PSROIPooling (R-FCN), region by region as the forks' loops."""
from __future__ import annotations

import math

import numpy as np
import torch

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


def _round(v: float) -> int:
    """C's round(): halves away from zero (Python's round() goes to even)."""
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def roi_bins(start: int, size: int, pooled: int, limit: int) -> list[tuple[int, int]]:
    """Fast R-CNN's bins: floor(i * bin) to ceil((i + 1) * bin) from ``start``, clipped to the map,
    with ``bin = size / pooled`` in float32 (Caffe's Dtype)."""
    bin_size = np.float32(size) / np.float32(pooled)
    out = []
    for i in range(pooled):
        lo = int(np.floor(np.float32(i) * bin_size)) + start
        hi = int(np.ceil(np.float32(i + 1) * bin_size)) + start
        out.append((min(max(lo, 0), limit), min(max(hi, 0), limit)))
    return out


class ROIPooling(CaffeLayer):
    def __init__(self, pooled: tuple[int, int], spatial_scale: float):
        super().__init__()
        self.pooled, self.spatial_scale = tuple(pooled), float(spatial_scale)

    def forward(self, features, rois):
        rois = rois.reshape(rois.shape[0], 5)
        h, w = features.shape[2:]
        (ph, pw), scale = self.pooled, np.float32(self.spatial_scale)
        rows = []
        for roi in rois.detach().cpu().numpy().astype(np.float32):
            b = int(roi[0])
            x1, y1, x2, y2 = (_round(float(np.float32(v) * scale)) for v in roi[1:])
            hbins = roi_bins(y1, max(y2 - y1 + 1, 1), ph, h)
            wbins = roi_bins(x1, max(x2 - x1 + 1, 1), pw, w)
            # Separable: the max over each column bin, then over each row bin of those; an empty
            # bin (either extent 0) is 0.
            low = features.new_full((features.shape[1], h), float("-inf"))
            columns = torch.stack([features[b, :, :, ws:we].amax(dim=2) if we > ws else low for ws, we in wbins], dim=2)
            low = features.new_full((features.shape[1], pw), float("-inf"))
            cells = torch.stack([columns[:, hs:he].amax(dim=1) if he > hs else low for hs, he in hbins], dim=1)
            rows.append(torch.where(torch.isneginf(cells), torch.zeros_like(cells), cells))
        return torch.stack(rows) if rows else features.new_zeros(0, features.shape[1], ph, pw)

    def extra_repr(self):
        return f"pooled={self.pooled}, spatial_scale={self.spatial_scale:g}"


@converter("ROIPooling")
def convert_roi_pooling(node: Node, graph: Graph):
    return ROIPooling(node.attrs.pooled, node.attrs.spatial_scale)


class PSROIPooling(CaffeLayer):
    def __init__(self, output_dim: int, group_size: int, spatial_scale: float):
        super().__init__()
        self.output_dim, self.group, self.spatial_scale = output_dim, group_size, float(spatial_scale)

    def forward(self, features, rois):
        rois = rois.reshape(rois.shape[0], 5)
        h, w = features.shape[2:]
        g, scale, f32 = self.group, np.float32(self.spatial_scale), np.float32
        maps = features.reshape(features.shape[0], self.output_dim, g, g, h, w)
        rows = []
        for roi in rois.detach().cpu().numpy().astype(np.float32):
            b = int(roi[0])
            x1, y1 = f32(_round(float(roi[1]))) * scale, f32(_round(float(roi[2]))) * scale
            x2, y2 = f32(_round(float(roi[3])) + 1.0) * scale, f32(_round(float(roi[4])) + 1.0) * scale
            bin_h, bin_w = max(y2 - y1, f32(0.1)) / f32(g), max(x2 - x1, f32(0.1)) / f32(g)
            out = features.new_zeros(self.output_dim, g, g)
            for i in range(g):
                hs = min(max(int(np.floor(f32(i) * bin_h + y1)), 0), h)
                he = min(max(int(np.ceil(f32(i + 1) * bin_h + y1)), 0), h)
                for j in range(g):
                    ws = min(max(int(np.floor(f32(j) * bin_w + x1)), 0), w)
                    we = min(max(int(np.ceil(f32(j + 1) * bin_w + x1)), 0), w)
                    if he > hs and we > ws:
                        window = maps[b, :, i, j, hs:he, ws:we]
                        out[:, i, j] = window.sum(dim=(1, 2)) / ((he - hs) * (we - ws))
            rows.append(out)
        return torch.stack(rows) if rows else features.new_zeros(0, self.output_dim, g, g)

    def extra_repr(self):
        return f"output_dim={self.output_dim}, group_size={self.group}, spatial_scale={self.spatial_scale:g}"


@converter("PSROIPooling")
def convert_psroi_pooling(node: Node, graph: Graph):
    a = node.attrs
    return PSROIPooling(a.output_dim, a.group_size, a.spatial_scale)


def proposal_anchors(a) -> np.ndarray:
    """(A, 2) anchor widths and heights, OpenCV's rounding of py-faster-rcnn's (float32)."""
    sizes = []
    for ratio in a.ratios:
        width = np.floor(np.float32(a.base_size) / np.sqrt(np.float32(ratio)) + np.float32(0.5))
        height = np.floor(width * np.float32(ratio) + np.float32(0.5))
        sizes += [(np.float32(s) * width, np.float32(s) * height) for s in a.scales]
    return np.asarray(sizes, dtype=np.float32)


def _box_size(b: np.ndarray) -> np.ndarray:
    """BBoxSize for pixel boxes: (w + 1)(h + 1), 0 for an inverted box."""
    w, h = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    return np.where((w < 0) | (h < 0), np.float32(0), (w + 1) * (h + 1)).astype(np.float32)


def proposals(scores: np.ndarray, deltas: np.ndarray, info: np.ndarray, a) -> tuple[np.ndarray, np.ndarray]:
    """(rois (post, 5), scores (post, 1)) for one image, float32 as OpenCV's loops."""
    f32 = np.float32
    count_a, (h, w) = a.anchors, scores.shape[2:]
    sizes = proposal_anchors(a)
    step, offset = f32(a.feat_stride), f32(0.5 * a.base_size / a.feat_stride)
    cy = ((np.arange(h, dtype=f32) + offset) * step)[:, None, None]
    cx = ((np.arange(w, dtype=f32) + offset) * step)[None, :, None]
    half_w, half_h = sizes[:, 0] * f32(0.5), sizes[:, 1] * f32(0.5)
    prior = np.stack(np.broadcast_arrays(cx - half_w, cy - half_h, cx + half_w - f32(1), cy + half_h - f32(1)),
                     axis=-1).reshape(-1, 4).astype(f32)
    objectness = scores[0, count_a:].transpose(1, 2, 0).reshape(-1).astype(f32)
    d = deltas[0].reshape(count_a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4).astype(f32)
    pw, ph = prior[:, 2] - prior[:, 0] + f32(1), prior[:, 3] - prior[:, 1] + f32(1)
    pcx, pcy = prior[:, 0] + pw * f32(0.5), prior[:, 1] + ph * f32(0.5)
    dcx, dcy = d[:, 0] * pw + pcx, d[:, 1] * ph + pcy
    dw, dh = np.exp(d[:, 2]) * pw, np.exp(d[:, 3]) * ph
    boxes = np.stack([dcx - dw * f32(0.5), dcy - dh * f32(0.5), dcx + dw * f32(0.5), dcy + dh * f32(0.5)], axis=1)
    rows, cols = int(info.reshape(-1)[0]), int(info.reshape(-1)[1])
    limit = np.array([cols - 1, rows - 1, cols - 1, rows - 1], dtype=f32)
    boxes = np.maximum(np.minimum(boxes, limit), f32(0)).astype(f32)
    areas = _box_size(boxes)
    # GetMaxScoreIndex: scores above the (default 0) confidence threshold, stable descending, top_k.
    order = [int(i) for i in np.argsort(-objectness, kind="stable") if objectness[i] > 0][:a.pre_nms_topn]
    kept: list[int] = []
    for i in order:
        if kept:
            k = np.asarray(kept)
            lo = np.maximum(boxes[k, :2], boxes[i, :2])
            hi = np.minimum(boxes[k, 2:], boxes[i, 2:])
            inter = _box_size(np.concatenate([lo, hi], axis=1))
            iou = np.where(inter > 0, inter / (areas[k] + areas[i] - inter), f32(0))
            if not bool((iou <= f32(a.nms_thresh)).all()):
                continue
        kept.append(i)
        if len(kept) >= a.post_nms_topn:
            break
    rois = np.zeros((a.post_nms_topn, 5), dtype=f32)
    out_scores = np.zeros((a.post_nms_topn, 1), dtype=f32)
    rois[:len(kept), 1:] = boxes[kept]
    out_scores[:len(kept), 0] = objectness[kept]
    return rois, out_scores


class Proposal(CaffeLayer):
    """Region proposals (OpenCV's semantics), computed on the host: not differentiable."""

    def __init__(self, attrs, tops: int):
        super().__init__()
        self.attrs, self.tops = attrs, tops

    def forward(self, scores, deltas, info):
        rois, out = proposals(scores.detach().cpu().numpy(), deltas.detach().cpu().numpy(),
                              info.detach().cpu().numpy(), self.attrs)
        rois_t = torch.from_numpy(rois).to(scores.device, scores.dtype)
        if self.tops == 1:
            return rois_t
        return rois_t, torch.from_numpy(out).to(scores.device, scores.dtype)

    def extra_repr(self):
        a = self.attrs
        return (f"feat_stride={a.feat_stride}, anchors={a.anchors}, pre_nms_topn={a.pre_nms_topn}, "
                f"post_nms_topn={a.post_nms_topn}, nms_thresh={a.nms_thresh:g}")


@converter("Proposal")
def convert_proposal(node: Node, graph: Graph):
    return Proposal(node.attrs, len(node.tops))
