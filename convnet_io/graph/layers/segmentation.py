"""Segmentation forks' upsampling layers: SegNet's ``Upsample`` (max-unpooling by the pooling mask,
and the nearest-neighbour ``scale`` form YOLOv3 ports use) and PSPNet/DeepLab's ``Interp``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Shape


def fork_param(layer: Any, name: str) -> Any:
    """A fork's parameter message, or a clear error when this caffe.proto lacks it."""
    if name not in layer.DESCRIPTOR.fields_by_name:
        raise ValueError(f"caffe.proto has no '{name}' (the fork's field); the layer cannot be read")
    return getattr(layer, name)


def _four_d(b: Shape, what: str = "bottom") -> None:
    if len(b) != 4:
        raise ValueError(f"expects a 4-D (N,C,H,W) {what}, got shape {list(b)}")


@dataclass(frozen=True)
class UpsampleAttrs:
    scale: tuple[int, int] = (2, 2)
    pad_out: tuple[bool, bool] = (False, False)
    size: tuple[int, int] | None = None  # upsample_h / upsample_w: the output size given outright


@register("Upsample")
class Upsample(LayerSpec):
    """SegNet (alexgkendall/caffe-segnet upsample_layer.cpp): with two bottoms (values, MAX pooling
    mask) every value goes to the plane index its mask holds, the rest is 0; the output is
    ``upsample_h x upsample_w`` or ``H * scale - pad_out``. With one bottom (YOLOv3 ports), each
    value is repeated ``scale x scale`` times (nearest neighbour)."""

    min_bottoms, max_bottoms = 1, 2

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "upsample_param")
        has = p.HasField
        if has("upsample_h") != has("upsample_w"):
            raise ValueError("upsample_h and upsample_w must be given together")
        if has("scale_h") != has("scale_w"):
            raise ValueError("scale_h and scale_w must be given together")
        if has("scale_h") and has("scale"):
            raise ValueError("give either scale or scale_h and scale_w, not both")
        scale = (int(p.scale_h), int(p.scale_w)) if has("scale_h") else (int(p.scale),) * 2
        size = (int(p.upsample_h), int(p.upsample_w)) if has("upsample_h") else None
        if size is None and min(scale) < 1:
            raise ValueError(f"scale must be positive, got {list(scale)}")
        pad_out = (bool(p.pad_out_h), bool(p.pad_out_w))
        for i in range(2):
            if pad_out[i] and scale[i] != 2:
                raise ValueError("pad_out_h / pad_out_w need scale 2 (SegNet: the output size is ill-defined otherwise)")
        return UpsampleAttrs(scale, pad_out, size)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        _four_d(b)
        if len(bottoms) == 2:
            if tuple(bottoms[1]) != tuple(b):
                raise ValueError(f"the mask {list(bottoms[1])} must have the shape of the values {list(b)}")
            if a.size is not None:
                return [(b[0], b[1], *a.size)]
            return [(b[0], b[1], b[2] * a.scale[0] - int(a.pad_out[0]), b[3] * a.scale[1] - int(a.pad_out[1]))]
        if a.size is not None or any(a.pad_out):
            raise ValueError("the one-bottom (nearest-neighbour) Upsample takes only scale")
        return [(b[0], b[1], b[2] * a.scale[0], b[3] * a.scale[1])]


@dataclass(frozen=True)
class InterpAttrs:
    zoom_factor: int | None = None
    shrink_factor: int | None = None
    height: int | None = None
    width: int | None = None
    pad_beg: int = 0
    pad_end: int = 0


@register("Interp")
class Interp(LayerSpec):
    """PSPNet/DeepLab Interp (interp_layer.cpp + util/interp.cpp): crop by ``-pad_beg`` /
    ``-pad_end`` (non-positive pads only), then bilinear resize with corners aligned
    (``ratio = (in - 1) / (out - 1)``)."""

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "interp_param")
        has = p.HasField
        if p.pad_beg > 0 or p.pad_end > 0:
            raise ValueError("Interp supports only non-positive pad_beg / pad_end (cropping), as the fork")
        return InterpAttrs(
            zoom_factor=int(p.zoom_factor) if has("zoom_factor") else None,
            shrink_factor=int(p.shrink_factor) if has("shrink_factor") else None,
            height=int(p.height) if has("height") else None,
            width=int(p.width) if has("width") else None,
            pad_beg=int(p.pad_beg), pad_end=int(p.pad_end),
        )

    @classmethod
    def effective(cls, a: InterpAttrs, b: Shape) -> tuple[int, int]:
        return b[2] + a.pad_beg + a.pad_end, b[3] + a.pad_beg + a.pad_end

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        _four_d(b)
        h, w = cls.effective(a, b)
        if h <= 0 or w <= 0:
            raise ValueError(f"pad_beg {a.pad_beg} / pad_end {a.pad_end} crop away the whole {b[2]}x{b[3]} input")
        # The fork's order of precedence (InterpLayer::Reshape).
        shrink, zoom = a.shrink_factor, a.zoom_factor
        if shrink is not None and zoom is None:
            if shrink < 1:
                raise ValueError("shrink_factor must be positive")
            oh, ow = (h - 1) // shrink + 1, (w - 1) // shrink + 1
        elif zoom is not None and shrink is None:
            if zoom < 1:
                raise ValueError("zoom_factor must be positive")
            oh, ow = h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1)
        elif a.height is not None and a.width is not None:
            oh, ow = a.height, a.width
        elif shrink is not None and zoom is not None:
            if shrink < 1 or zoom < 1:
                raise ValueError("shrink_factor and zoom_factor must be positive")
            oh, ow = (h - 1) // shrink + 1, (w - 1) // shrink + 1
            oh, ow = oh + (oh - 1) * (zoom - 1), ow + (ow - 1) * (zoom - 1)
        else:
            raise ValueError("give zoom_factor, shrink_factor, or height and width")
        if oh <= 0 or ow <= 0:
            raise ValueError(f"output size {oh}x{ow} must be positive")
        return [(b[0], b[1], oh, ow)]
