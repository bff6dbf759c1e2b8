"""YOLOv2 ports: ``Reorg`` (darknet's space-to-depth) and ``Region`` (the detection head as
OpenCV's dnn implements it for Caffe and darknet nets)."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.common import count
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.layers.segmentation import fork_param
from convnet_io.graph.types import Filler


@dataclass(frozen=True)
class ReorgAttrs:
    stride: int = 2


@register("Reorg")
class Reorg(LayerSpec):
    """darknet's reorg_cpu(..., forward=0) as OpenCV's reorg_layer.cpp runs it: the input read as
    ``(C / s^2, H * s, W * s)`` and gathered into ``(C, H, W)`` order, then shaped
    ``(C * s^2, H / s, W / s)``: a permutation of the elements, not a plain space-to-depth."""

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "reorg_param")
        if "reverse" in p.DESCRIPTOR.fields_by_name and p.reverse:
            raise ValueError("reverse: true (depth-to-space) is not supported")
        stride = int(p.stride) if p.HasField("stride") else 2  # OpenCV's default
        if stride <= 0:
            raise ValueError("stride must be positive")
        return ReorgAttrs(stride)

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        n, c, h, w = _four(bottoms[0])
        s = a.stride
        if c % (s * s) or h % s or w % s:
            raise ValueError(f"channels {c} must divide by stride^2 and height {h} / width {w} by stride {s}")
        return [(n, c * s * s, h // s, w // s)]


def _four(b):
    if len(b) != 4:
        raise ValueError(f"expects a 4-D bottom, got shape {list(b)}")
    return b


@dataclass(frozen=True)
class RegionAttrs:
    classes: int
    coords: int = 4
    anchors: int = 5
    softmax: bool = False
    logistic: bool = False
    thresh: float = 0.2
    nms_threshold: float = 0.4
    biases: tuple[float, ...] = ()


@register("Region")
class Region(LayerSpec):
    """OpenCV's region_layer.cpp (YOLOv2 / v3 heads): the bottom is ``(N, H, W, A * (5 + classes))``
    (channels last: a Permute 0,2,3,1 precedes it in Caffe ports); each row of the ``(N*H*W*A,
    5 + classes)`` top is ``x, y, w, h, objectness, class scores``: x = (col + sigmoid) / W,
    y = (row + sigmoid) / H, w = exp * anchor_w / H, h = exp * anchor_h / W (OpenCV divides the
    width by the row count), objectness = sigmoid, scores = objectness * softmax (or sigmoid) kept
    above ``thresh``, then per-class greedy NMS at ``nms_threshold`` (0: none). The anchors are the
    layer's one blob, ``(2 * A,)`` (as OpenCV reads it from the .caffemodel); a ``biases`` list in
    region_param, where the fork's schema has one, is checked against the anchor count."""

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "region_param")
        fields = p.DESCRIPTOR.fields_by_name

        def given(name):
            return name in fields and not fields[name].is_repeated and p.HasField(name)

        def get(name, default):
            # The schema's default where it has the field, else OpenCV's.
            return getattr(p, name) if name in fields else default

        # The anchor count: ``boxes_of_each_grid`` in the YOLOv2 ports' schema, ``num`` in darknet.
        anchors = next((int(getattr(p, k)) for k in ("num", "anchors", "boxes_of_each_grid") if given(k)),
                       int(get("boxes_of_each_grid", 5)))
        a = RegionAttrs(
            classes=int(get("classes", 0)), coords=int(get("coords", 4)), anchors=anchors,
            softmax=bool(get("softmax", False)), logistic=bool(get("logistic", False)),
            thresh=float(get("thresh", 0.2)), nms_threshold=float(get("nms_threshold", 0.4)),
            biases=tuple(float(x) for x in get("biases", ())),
        )
        if a.coords != 4:
            raise ValueError(f"coords {a.coords}: only 4 is supported (as OpenCV)")
        if a.classes < 1 or a.anchors < 1:
            raise ValueError("classes and the number of anchors must be positive")
        if not (a.softmax or a.logistic):
            raise ValueError("give softmax: true (YOLOv2) or logistic: true (YOLOv3)")
        if a.biases and len(a.biases) != 2 * a.anchors:
            raise ValueError(f"{len(a.biases)} biases for {a.anchors} anchors (want {2 * a.anchors})")
        if a.nms_threshold < 0:
            raise ValueError("nms_threshold must not be negative")
        return a

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        n, h, w, c = _four(bottoms[0])
        cell = a.coords + 1 + a.classes
        if c != cell * a.anchors:
            raise ValueError(f"the last axis {c} must be anchors * (5 + classes) = {cell * a.anchors} "
                             "(Region reads channels last, after a Permute 0,2,3,1)")
        return [(n * h * w * a.anchors, cell)]

    @classmethod
    def param_shapes(cls, a, bottoms):
        return [(2 * a.anchors,)]

    @classmethod
    def fillers(cls, a):
        return [Filler(type="constant", value=1.0)]

    @classmethod
    def macs(cls, a, bottoms, tops):
        return count(tops[0]) * 4
