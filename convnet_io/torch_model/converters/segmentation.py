"""SegNet's Upsample (max-unpooling by the mask, or nearest neighbour) and PSPNet's Interp."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


class Unpool(CaffeLayer):
    """Every value written at the plane index its mask holds, zeros elsewhere (SegNet's loop)."""

    def __init__(self, out_hw: tuple[int, int]):
        super().__init__()
        self.out_hw = tuple(out_hw)

    def forward(self, x, mask):
        n, c = x.shape[:2]
        size = self.out_hw[0] * self.out_hw[1]
        index = mask.reshape(n, c, -1).to(torch.int64)
        top = x.new_zeros(n, c, size).scatter(2, index, x.reshape(n, c, -1))
        return top.reshape(n, c, *self.out_hw)

    def extra_repr(self):
        return f"output={self.out_hw}"


class UpsampleNearest(CaffeLayer):
    """Each value repeated scale_h x scale_w times (the YOLOv3 ports' one-bottom Upsample)."""

    def __init__(self, scale: tuple[int, int]):
        super().__init__()
        self.scale = tuple(scale)

    def forward(self, x):
        return x.repeat_interleave(self.scale[0], dim=2).repeat_interleave(self.scale[1], dim=3)

    def extra_repr(self):
        return f"scale={self.scale}"


@converter("Upsample")
def convert_upsample(node: Node, graph: Graph):
    if len(node.bottoms) == 2:
        top = graph.shapes[node.tops[0]]
        return Unpool((top[2], top[3]))
    return UpsampleNearest(node.attrs.scale)


class Interp(CaffeLayer):
    """Crop by -pad_beg / -pad_end, then bilinear with aligned corners (the fork's interp2)."""

    def __init__(self, pad_beg: int, pad_end: int, out_hw: tuple[int, int]):
        super().__init__()
        self.pad_beg, self.pad_end, self.out_hw = pad_beg, pad_end, tuple(out_hw)

    def forward(self, x):
        if self.pad_beg or self.pad_end:
            h, w = x.shape[2:]
            x = x[:, :, -self.pad_beg:h + self.pad_end, -self.pad_beg:w + self.pad_end]
        if tuple(x.shape[2:]) == self.out_hw:
            return x
        return F.interpolate(x, size=self.out_hw, mode="bilinear", align_corners=True)

    def extra_repr(self):
        return f"output={self.out_hw}, pad_beg={self.pad_beg}, pad_end={self.pad_end}, align_corners=True"


@converter("Interp")
def convert_interp(node: Node, graph: Graph):
    top = graph.shapes[node.tops[0]]
    return Interp(node.attrs.pad_beg, node.attrs.pad_end, (top[2], top[3]))
