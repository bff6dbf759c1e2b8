"""YOLOv2 ports: Reorg and Region, as OpenCV's dnn layers compute them."""
from __future__ import annotations

import torch

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


class Reorg(CaffeLayer):
    """darknet's reorg (forward=0): the input seen as (C/s^2, H, s, W, s), gathered as
    (s_y, s_x, C/s^2, H, W), shaped (C*s^2, H/s, W/s)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        n, c, h, w = x.shape
        s = self.stride
        y = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * s * s, h // s, w // s)

    def extra_repr(self):
        return f"stride={self.stride}"


@converter("Reorg")
def convert_reorg(node: Node, graph: Graph):
    return Reorg(node.attrs.stride)


def region_decode(x: torch.Tensor, biases: torch.Tensor, a) -> torch.Tensor:
    """Rows (N*H*W*A, 5 + classes) before NMS: boxes, objectness, thresholded class scores."""
    n, rows, cols, _ = x.shape
    cell = a.coords + 1 + a.classes
    v = x.reshape(n, rows, cols, a.anchors, cell)
    gy = torch.arange(rows, dtype=x.dtype, device=x.device).view(1, rows, 1, 1)
    gx = torch.arange(cols, dtype=x.dtype, device=x.device).view(1, 1, cols, 1)
    anchors = biases.reshape(a.anchors, 2)
    bx = (gx + torch.sigmoid(v[..., 0])) / cols
    by = (gy + torch.sigmoid(v[..., 1])) / rows
    bw = torch.exp(v[..., 2]) * anchors[:, 0] / rows   # OpenCV divides the width by the rows
    bh = torch.exp(v[..., 3]) * anchors[:, 1] / cols
    obj = torch.sigmoid(v[..., 4])
    cls = torch.softmax(v[..., 5:], dim=-1) if a.softmax else torch.sigmoid(v[..., 5:])
    prob = obj.unsqueeze(-1) * cls
    prob = torch.where(prob > a.thresh, prob, torch.zeros_like(prob))
    out = torch.cat([torch.stack([bx, by, bw, bh, obj], dim=-1), prob], dim=-1)
    return out.reshape(-1, cell)


def _iou(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    """Overlap of (x, y, w, h) corner boxes as OpenCV's Rect2f: 1 - jaccardDistance."""
    x1 = torch.maximum(box[0], others[:, 0])
    y1 = torch.maximum(box[1], others[:, 1])
    x2 = torch.minimum(box[0] + box[2], others[:, 0] + others[:, 2])
    y2 = torch.minimum(box[1] + box[3], others[:, 1] + others[:, 3])
    inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    union = box[2] * box[3] + others[:, 2] * others[:, 3] - inter
    return torch.where(union > 0, inter / torch.where(union > 0, union, torch.ones_like(union)),
                       torch.zeros_like(union))


def region_nms(rows: torch.Tensor, a) -> torch.Tensor:
    """OpenCV's do_nms_sort: per class, scores above ``thresh`` in descending (stable) order, a box
    kept when its overlap with every kept box is at most ``nms_threshold``; the rest set to 0."""
    boxes = torch.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2, rows[:, 2], rows[:, 3]], dim=1)
    out = rows.clone()
    for k in range(a.classes):
        scores = rows[:, 5 + k]
        candidates = torch.nonzero(scores > a.thresh).flatten()
        order = candidates[torch.argsort(-scores[candidates], stable=True)]
        kept: list[int] = []
        for i in order.tolist():
            if not kept or bool((_iou(boxes[i], boxes[kept]) <= a.nms_threshold).all()):
                kept.append(i)
        column = torch.zeros_like(scores)
        if kept:
            column[kept] = scores[kept]
        out[:, 5 + k] = column
    return out


class Region(CaffeLayer):
    def __init__(self, attrs):
        super().__init__()
        self.attrs = attrs
        self.biases = torch.nn.Parameter(torch.ones(2 * attrs.anchors), requires_grad=False)

    def forward(self, x):
        rows = region_decode(x, self.biases, self.attrs)
        if self.attrs.nms_threshold > 0:
            per_image = rows.reshape(x.shape[0], -1, rows.shape[1])
            rows = torch.cat([region_nms(r, self.attrs) for r in per_image])
        return rows

    def caffe_blobs(self):
        return [self.biases]

    def extra_repr(self):
        a = self.attrs
        return (f"classes={a.classes}, anchors={a.anchors}, {'softmax' if a.softmax else 'logistic'}, "
                f"thresh={a.thresh:g}, nms_threshold={a.nms_threshold:g}")


@converter("Region")
def convert_region(node: Node, graph: Graph):
    return Region(node.attrs)
