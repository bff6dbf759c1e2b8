"""Layers of popular mobile/attention ports: ``ReLU6``, ``ShuffleChannel`` (ShuffleNet), ``Axpy``
(SENet), and the depthwise convolution type names (grouped Convolution under another name)."""
from __future__ import annotations

from dataclasses import dataclass

from convnet_io.graph.layers.activation import Elementwise
from convnet_io.graph.layers.common import count
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.layers.segmentation import fork_param
from convnet_io.graph.layers.vision import Convolution


@register("ReLU6")
class ReLU6(Elementwise):
    """min(max(x, 0), 6) (OpenCV's ReLU6 layer; MobileNet-v2 ports)."""


@dataclass(frozen=True)
class ShuffleChannelAttrs:
    group: int = 1


@register("ShuffleChannel")
class ShuffleChannel(LayerSpec):
    """ShuffleNet's channel shuffle: channels seen as (group, C / group), transposed."""

    @classmethod
    def attrs(cls, layer):
        p = fork_param(layer, "shuffle_channel_param")
        if p.group <= 0:
            raise ValueError("group must be positive")
        return ShuffleChannelAttrs(int(p.group))

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        b = bottoms[0]
        if len(b) != 4:
            raise ValueError(f"expects a 4-D (N,C,H,W) bottom, got shape {list(b)}")
        if b[1] % a.group:
            raise ValueError(f"channels {b[1]} are not divisible by group {a.group}")
        return [b]


@register("Axpy")
class Axpy(LayerSpec):
    """SENet's Axpy (hujie-frank/SENet axpy_layer.cpp): top = a * X + Y with a of shape (N, C) or
    (N, C, 1, 1) (bottom 0), X and Y (bottoms 1, 2) of one shape."""

    min_bottoms = max_bottoms = 3

    @classmethod
    def top_shapes(cls, a, bottoms, num_tops):
        scale, x, y = bottoms
        if tuple(x) != tuple(y):
            raise ValueError(f"X {list(x)} and Y {list(y)} must have one shape")
        if len(x) < 2 or tuple(scale[:2]) != tuple(x[:2]) or count(scale, 2) != 1:
            raise ValueError(f"the scale {list(scale)} must be (N, C) or (N, C, 1, 1) for X {list(x)}")
        return [x]

    @classmethod
    def macs(cls, a, bottoms, tops):
        return count(tops[0])


@register("ConvolutionDepthwise", "DepthwiseConvolution")
class ConvolutionDepthwise(Convolution):
    """The MobileNet ports' depthwise type names: convolution_param as Convolution, its ``group``
    (the ports give group = channels) used as written, as OpenCV does (it renames the type)."""
