"""ReLU6, ShuffleChannel, Axpy and the depthwise convolution type names."""
from __future__ import annotations

from convnet_io.graph import Graph, Node
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.converters.vision import convert_convolution
from convnet_io.torch_model.registry import converter


class ReLU6(CaffeLayer):
    def forward(self, x):
        return x.clamp(0.0, 6.0)


@converter("ReLU6")
def convert_relu6(node: Node, graph: Graph):
    return ReLU6()


class ShuffleChannel(CaffeLayer):
    def __init__(self, group: int):
        super().__init__()
        self.group = group

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.group, c // self.group, h, w).transpose(1, 2).reshape(n, c, h, w)

    def extra_repr(self):
        return f"group={self.group}"


@converter("ShuffleChannel")
def convert_shuffle_channel(node: Node, graph: Graph):
    return ShuffleChannel(node.attrs.group)


class Axpy(CaffeLayer):
    def forward(self, scale, x, y):
        return scale.reshape(*scale.shape[:2], *([1] * (x.dim() - 2))) * x + y


@converter("Axpy")
def convert_axpy(node: Node, graph: Graph):
    return Axpy()


@converter("ConvolutionDepthwise", "DepthwiseConvolution")
def convert_depthwise(node: Node, graph: Graph):
    return convert_convolution(node, graph)  # Convolution's converter, whatever its form
