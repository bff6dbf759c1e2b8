"""Two-stage detection heads: Fast/Faster R-CNN's ``ROIPooling`` and R-FCN's ``PSROIPooling``.

Both read regions as rows ``(batch_index, x1, y1, x2, y2)`` in image pixels (a ``(R, 5)`` blob, or
``(R, 5, 1, 1)`` as Caffe's Python proposal layer writes it) and scale them by ``spatial_scale``."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import count
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.layers.segmentation import fork_param
from convnet_io.graph.types import Shape


def _rois(features: Shape, rois: Shape) -> int:
    if len(features) != 4:
        raise ValueError(f"expects 4-D (N,C,H,W) features, got shape {list(features)}")
    if len(rois) < 2 or rois[1] != 5 or count(rois, 2) != 1:
        raise ValueError(f"expects regions of shape (R, 5), got {list(rois)}")
    return rois[0]


@dataclass(frozen=True)
class ROIPoolingAttrs:
    pooled: tuple[int, int]
    spatial_scale: float = 1.0


@register("ROIPooling")
class ROIPooling(LayerSpec):
    """rbgirshick/caffe-fast-rcnn roi_pooling_layer.cpp: corners rounded after scaling, width and
    height at least 1 (``end - start + 1``), bins ``floor(i * size / pooled)`` to
    ``ceil((i + 1) * size / pooled)`` clipped to the map; an empty bin is 0."""

    min_bottoms = max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "roi_pooling_param")
        if p.pooled_h <= 0 or p.pooled_w <= 0:
            raise ValueError("pooled_h and pooled_w must be positive")
        return ROIPoolingAttrs((int(p.pooled_h), int(p.pooled_w)), float(p.spatial_scale))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        r = _rois(bottoms[0], bottoms[1])
        return [(r, bottoms[0][1], *a.pooled)]


@dataclass(frozen=True)
class PSROIPoolingAttrs:
    output_dim: int
    group_size: int
    spatial_scale: float = 1.0


@register("PSROIPooling")
class PSROIPooling(LayerSpec):
    """R-FCN (daijifeng001/caffe-rfcn psroi_pooling_layer.cpp): position-sensitive average pooling;
    bin (i, j) of output channel c averages input channel ``(c * group + i) * group + j``."""

    min_bottoms = max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "psroi_pooling_param")
        if p.output_dim <= 0 or p.group_size <= 0:
            raise ValueError("output_dim and group_size must be positive")
        return PSROIPoolingAttrs(int(p.output_dim), int(p.group_size), float(p.spatial_scale))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        r = _rois(bottoms[0], bottoms[1])
        want = a.output_dim * a.group_size * a.group_size
        if bottoms[0][1] != want:
            raise ValueError(f"input channels {bottoms[0][1]} must be output_dim * group_size^2 = {want}")
        return [(r, a.output_dim, a.group_size, a.group_size)]
