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


@dataclass(frozen=True)
class ProposalAttrs:
    feat_stride: int = 16
    base_size: int = 16
    min_size: int = 16
    ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    scales: tuple[float, ...] = (8.0, 16.0, 32.0)
    pre_nms_topn: int = 6000
    post_nms_topn: int = 300
    nms_thresh: float = 0.7

    @property
    def anchors(self) -> int:
        return len(self.ratios) * len(self.scales)


@register("Proposal")
class Proposal(LayerSpec):
    """py-faster-rcnn's proposal layer as OpenCV's proposal_layer.cpp computes it: anchors
    ``scale * round(base / sqrt(ratio))`` wide (ratios outer, scales inner) centred at
    ``(x + base / (2 stride)) * stride``, deltas decoded CENTER_SIZE in pixels (sizes + 1), boxes
    clipped to the image (im_info rows, cols), the ``pre_nms_topn`` best objectness scores (the
    second half of the channels) through greedy NMS at ``nms_thresh`` (overlap with + 1 areas) up to
    ``post_nms_topn``. Tops: rois ``(post_nms_topn, 5)`` rows ``(0, x1, y1, x2, y2)`` and, when
    named, scores ``(post_nms_topn, 1)``; rows past the kept boxes are 0. ``min_size`` is read but,
    as in OpenCV, not applied. One image per batch."""

    min_bottoms = max_bottoms = 3

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "proposal_param")
        a = ProposalAttrs(
            feat_stride=int(p.feat_stride), base_size=int(p.base_size), min_size=int(p.min_size),
            ratios=tuple(float(r) for r in p.ratio) or ProposalAttrs.ratios,
            scales=tuple(float(s) for s in p.scale) or ProposalAttrs.scales,
            pre_nms_topn=int(p.pre_nms_topn), post_nms_topn=int(p.post_nms_topn), nms_thresh=float(p.nms_thresh),
        )
        if a.feat_stride <= 0 or a.base_size <= 0 or a.post_nms_topn <= 0:
            raise ValueError("feat_stride, base_size and post_nms_topn must be positive")
        if not 0 < a.nms_thresh:
            raise ValueError("nms_thresh must be positive")
        return a

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        scores, deltas, info = bottoms
        if len(scores) != 4 or len(deltas) != 4:
            raise ValueError(f"expects 4-D scores and deltas, got {list(scores)} and {list(deltas)}")
        if scores[0] != 1:
            raise ValueError("one image per batch (as py-faster-rcnn and OpenCV)")
        if scores[1] != 2 * a.anchors or deltas[1] != 4 * a.anchors or tuple(scores[2:]) != tuple(deltas[2:]):
            raise ValueError(f"{a.anchors} anchors want scores (1, {2 * a.anchors}, H, W) and deltas "
                             f"(1, {4 * a.anchors}, H, W), got {list(scores)} and {list(deltas)}")
        if count(info) < 2:
            raise ValueError(f"im_info {list(info)} must hold (rows, cols, ...)")
        if num_tops > 2:
            raise ValueError(f"Proposal has 1 or 2 tops, got {num_tops}")
        return [(a.post_nms_topn, 5), (a.post_nms_topn, 1)][:max(num_tops, 1)]
