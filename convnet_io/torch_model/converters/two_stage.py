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
            cells = []
            for hs, he in hbins:
                for ws, we in wbins:
                    if he <= hs or we <= ws:
                        cells.append(features.new_zeros(features.shape[1]))
                    else:
                        cells.append(features[b, :, hs:he, ws:we].amax(dim=(1, 2)))
            rows.append(torch.stack(cells, dim=1).reshape(-1, ph, pw))
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
