"""SSD's detection layers (weiliu89/caffe, branch ssd): ``Permute``, ``PriorBox``, ``Normalize``
and ``DetectionOutput``. Attributes follow each layer's ``LayerSetUp``, shapes its ``Reshape``."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from convnet_io.graph.layers.common import count, enum_name, filler
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.layers.segmentation import fork_param

if TYPE_CHECKING:  # NumPy is imported by the two functions that compute values: building a graph needs none
    import numpy as np
from convnet_io.graph.types import Filler


@dataclass(frozen=True)
class PermuteAttrs:
    order: tuple[int, ...] = ()


def permute_order(order: tuple[int, ...], ndim: int) -> tuple[int, ...]:
    """PermuteLayer::LayerSetUp: the given axes, then every axis left out, in order."""
    if any(o >= ndim for o in order):
        raise ValueError(f"order {list(order)} names an axis past the bottom's {ndim}")
    if len(set(order)) != len(order):
        raise ValueError(f"order {list(order)} repeats an axis")
    return (*order, *(i for i in range(ndim) if i not in order))


@register("Permute")
class Permute(LayerSpec):
    @classmethod
    def attrs(cls, layer):
        return PermuteAttrs(tuple(int(o) for o in fork_param(layer, "permute_param").order))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        return [tuple(b[i] for i in permute_order(a.order, len(b)))]


@dataclass(frozen=True)
class PriorBoxAttrs:
    min_sizes: tuple[float, ...]
    max_sizes: tuple[float, ...] = ()
    aspect_ratios: tuple[float, ...] = (1.0,)  # expanded as Caffe does: 1 first, flips after each
    flip: bool = True
    clip: bool = False
    variance: tuple[float, ...] = (0.1,)
    img_h: int = 0  # 0: the image bottom's height
    img_w: int = 0
    step_h: float = 0.0  # 0: image size / layer size
    step_w: float = 0.0
    offset: float = 0.5

    @property
    def num_priors(self) -> int:
        return len(self.aspect_ratios) * len(self.min_sizes) + len(self.max_sizes)


def _aspect_ratios(given, flip: bool) -> tuple[float, ...]:
    ratios = [1.0]
    for ar in given:
        if any(abs(ar - r) < 1e-6 for r in ratios):
            continue  # Caffe drops a ratio it already has
        ratios.append(float(ar))
        if flip:
            ratios.append(1.0 / ar)
    return tuple(ratios)


@register("PriorBox")
class PriorBox(LayerSpec):
    """bottom[0] the feature map, bottom[1] the image; top (1, 2, H*W*num_priors*4): the boxes in
    [0, 1] image coordinates, then their four variances."""

    min_bottoms = max_bottoms = 2

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "prior_box_param")
        if not p.min_size:
            raise ValueError("prior_box_param must give min_size")
        if any(s <= 0 for s in p.min_size):
            raise ValueError("min_size must be positive")
        if p.max_size and len(p.max_size) != len(p.min_size):
            raise ValueError(f"{len(p.max_size)} max_size values for {len(p.min_size)} min_size")
        if any(mx <= mn for mn, mx in zip(p.min_size, p.max_size)):
            raise ValueError("max_size must be greater than min_size")
        if len(p.variance) not in (0, 1, 4) or any(v <= 0 for v in p.variance):
            raise ValueError(f"variance takes 1 or 4 positive values, got {list(p.variance)}")
        for name in ("offset_h", "offset_w", "width", "height"):
            if len(getattr(p, name)):
                raise ValueError(f"'{name}' is OpenCV's explicit-box form of PriorBox; convnet "
                                 "implements the SSD fork's")
        if p.HasField("img_size") and (p.HasField("img_h") or p.HasField("img_w")):
            raise ValueError("give either img_size or img_h/img_w, not both")
        img_h = img_w = int(p.img_size)
        if p.HasField("img_h") or p.HasField("img_w"):
            img_h, img_w = int(p.img_h), int(p.img_w)
            if img_h <= 0 or img_w <= 0:
                raise ValueError("img_h and img_w must be positive")
        if p.HasField("step") and (p.HasField("step_h") or p.HasField("step_w")):
            raise ValueError("give either step or step_h/step_w, not both")
        step_h = step_w = float(p.step)
        if p.HasField("step_h") or p.HasField("step_w"):
            step_h, step_w = float(p.step_h), float(p.step_w)
            if step_h <= 0 or step_w <= 0:
                raise ValueError("step_h and step_w must be positive")
        return PriorBoxAttrs(
            tuple(float(s) for s in p.min_size), tuple(float(s) for s in p.max_size),
            _aspect_ratios(p.aspect_ratio, bool(p.flip)), bool(p.flip), bool(p.clip),
            tuple(float(v) for v in p.variance) or (0.1,), img_h, img_w, step_h, step_w,
            float(p.offset))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        feat = bottoms[0]
        if len(feat) != 4 or len(bottoms[1]) != 4:
            raise ValueError(f"expects 4-D feature map and image bottoms, got {list(feat)} and "
                             f"{list(bottoms[1])}")
        return [(1, 2, feat[2] * feat[3] * a.num_priors * 4)]


def prior_box_values(a: PriorBoxAttrs, layer_h: int, layer_w: int, img_h: int, img_w: int) -> np.ndarray:
    """PriorBoxLayer::Forward_cpu's top, (1, 2, layer_h * layer_w * num_priors * 4) float32, with
    its arithmetic: float steps and centres, box sides from the *integer* part of min_size and
    max_size (the fork stores them in ``int``), corners divided in double, stored as float."""
    import numpy as np

    f32 = np.float32
    if a.img_h and a.img_w:
        img_h, img_w = a.img_h, a.img_w
    if a.step_h and a.step_w:
        step_h, step_w = f32(a.step_h), f32(a.step_w)
    else:
        step_h, step_w = f32(img_h) / f32(layer_h), f32(img_w) / f32(layer_w)
    sides = []  # (width, height) of each prior of a cell, in Caffe's order
    for s, min_size in enumerate(a.min_sizes):
        m = int(min_size)
        sides.append((f32(m), f32(m)))
        if a.max_sizes:
            side = f32(math.sqrt(m * int(a.max_sizes[s])))
            sides.append((side, side))
        for ar in a.aspect_ratios:
            if abs(float(f32(ar)) - 1.0) < 1e-6:
                continue
            root = math.sqrt(float(f32(ar)))
            sides.append((f32(m * root), f32(m / root)))
    offset = f32(a.offset)
    cx = ((np.arange(layer_w, dtype=f32) + offset) * step_w).astype(np.float64)
    cy = ((np.arange(layer_h, dtype=f32) + offset) * step_h).astype(np.float64)
    bw = np.array([w for w, _ in sides], dtype=np.float64)
    bh = np.array([h for _, h in sides], dtype=np.float64)
    boxes = np.empty((layer_h, layer_w, len(sides), 4), dtype=np.float64)
    boxes[..., 0] = (cx[None, :, None] - bw / 2.0) / img_w
    boxes[..., 1] = (cy[:, None, None] - bh / 2.0) / img_h
    boxes[..., 2] = (cx[None, :, None] + bw / 2.0) / img_w
    boxes[..., 3] = (cy[:, None, None] + bh / 2.0) / img_h
    boxes = boxes.astype(f32).reshape(-1)
    if a.clip:
        boxes = np.clip(boxes, f32(0), f32(1))
    variances = np.resize(np.asarray(a.variance, dtype=f32), boxes.size)
    return np.stack([boxes, variances])[None]


@dataclass(frozen=True)
class NormalizeAttrs:
    across_spatial: bool = True
    channel_shared: bool = True
    eps: float = 1e-10
    scale_filler: Filler | None = None


@register("Normalize")
class Normalize(LayerSpec):
    """x / sqrt(sum x^2 + eps) over (C, H, W) per item (across_spatial) or over C per pixel, times
    a learned scale: one value (channel_shared, a 0-axis blob) or one per channel."""

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "norm_param")
        return NormalizeAttrs(bool(p.across_spatial), bool(p.channel_shared), float(p.eps),
                              filler(p.scale_filler, p.HasField("scale_filler")))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        if len(bottoms[0]) < 2:
            raise ValueError(f"expects a bottom of at least 2 axes, got {list(bottoms[0])}")
        return [bottoms[0]]

    @classmethod
    def param_shapes(cls, a, bottoms):
        return [()] if a.channel_shared else [(bottoms[0][1],)]

    @classmethod
    def fillers(cls, a):
        return [a.scale_filler or Filler(type="constant", value=1.0)]

    @classmethod
    def macs(cls, a, bottoms, tops):
        return 3 * count(bottoms[0])


CODE_TYPES = ("CORNER", "CENTER_SIZE", "CORNER_SIZE")


@dataclass(frozen=True)
class DetectionOutputAttrs:
    num_classes: int
    share_location: bool = True
    background_label_id: int = 0
    code_type: str = "CORNER"
    variance_encoded_in_target: bool = False
    keep_top_k: int = -1
    confidence_threshold: float = -math.inf  # unset: every box is a candidate (Caffe's -FLT_MAX)
    nms_threshold: float = 0.3
    top_k: int = -1
    eta: float = 1.0

    @property
    def num_loc_classes(self) -> int:
        return 1 if self.share_location else self.num_classes


@register("DetectionOutput")
class DetectionOutput(LayerSpec):
    """bottoms: location predictions (N, priors * loc classes * 4), confidences (N, priors *
    classes), priors (1, 2, priors * 4). The top has one row (image, label, score, xmin, ymin,
    xmax, ymax) per detection, so its length is known only after the pass: the shape rule gives
    Caffe's Reshape, (1, 1, 1, 7)."""

    min_bottoms = max_bottoms = 3

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "detection_output_param")
        if not p.HasField("num_classes"):
            raise ValueError("detection_output_param must give num_classes")
        if "normalized_bbox" in p.DESCRIPTOR.fields_by_name and not p.normalized_bbox:
            raise ValueError("normalized_bbox: false (OpenCV's pixel-coordinate form) is not supported")
        nms = p.nms_param
        if nms.nms_threshold < 0:
            raise ValueError("nms_threshold must be non-negative")
        if not 0 < nms.eta <= 1:
            raise ValueError("eta must be in (0, 1]")
        threshold = float(p.confidence_threshold) if p.HasField("confidence_threshold") else -math.inf
        return DetectionOutputAttrs(
            int(p.num_classes), bool(p.share_location), int(p.background_label_id),
            enum_name(p, "code_type"), bool(p.variance_encoded_in_target), int(p.keep_top_k),
            threshold, float(nms.nms_threshold), int(nms.top_k) if nms.HasField("top_k") else -1,
            float(nms.eta))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        loc, conf, prior = bottoms
        if len(prior) < 3 or prior[2] % 4:
            raise ValueError(f"priors must be (1, 2, 4 * priors), got {list(prior)}")
        priors = prior[2] // 4
        if loc[0] != conf[0]:
            raise ValueError(f"location batch {loc[0]} differs from confidence batch {conf[0]}")
        loc_c = loc[1] if len(loc) > 1 else 1
        conf_c = conf[1] if len(conf) > 1 else 1
        if loc_c != priors * a.num_loc_classes * 4:
            raise ValueError(f"{priors} priors need {priors * a.num_loc_classes * 4} location "
                             f"values per item, the bottom has {loc_c}")
        if conf_c != priors * a.num_classes:
            raise ValueError(f"{priors} priors and {a.num_classes} classes need "
                             f"{priors * a.num_classes} confidences per item, the bottom has {conf_c}")
        return [(1, 1, 1, 7)]



def caffe_row_order(rows: np.ndarray) -> np.ndarray:
    """Detection rows another implementation wrote (OpenCV: by score across labels, padded with
    zero rows to keep_top_k) in Caffe-SSD's order: image, label ascending, score descending."""
    import numpy as np

    rows = np.asarray(rows).reshape(-1, 7)
    rows = rows[np.any(rows != 0, axis=1)]
    order = np.lexsort((-rows[:, 2], rows[:, 1], rows[:, 0]))
    return rows[order].reshape(1, 1, -1, 7)
