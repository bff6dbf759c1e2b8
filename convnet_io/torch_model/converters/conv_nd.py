"""Convolution and Deconvolution over any number of spatial axes (and any channel axis), and the
Im2col layer, with Caffe's geometry (``base_conv_layer.cpp``, ``im2col_layer.cpp``). The leading
axes before the channel axis are folded into one batch axis, as Caffe's ``num_`` does."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.conv_nd import geometry
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_DECONV = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def _fold(x: torch.Tensor, axis: int, spatial: int) -> torch.Tensor:
    """(lead..., C, *spatial) -> (prod(lead), C, *spatial), with a unit spatial axis for 0-D."""
    x = x.reshape(-1, *x.shape[axis:])
    return x.unsqueeze(-1) if spatial == 0 else x


def _pad_tail(x: torch.Tensor, tail: tuple[int, ...]) -> torch.Tensor:
    if not any(tail):
        return x
    pads = []
    for t in reversed(tail):
        pads += [0, t]
    return F.pad(x, pads)


class ConvolutionND(CaffeLayer):
    def __init__(self, g, weight_shape, bias_shape, group: int, transposed: bool, tail, out_shape):
        super().__init__()
        n = g.spatial_axes
        if n > 3:
            raise ValueError(f"{n} spatial axes: PyTorch convolves over at most 3")
        self.axis, self.spatial, self.group, self.transposed = g.axis, n, group, transposed
        unit = (1,) if n == 0 else ()
        self.stride, self.pad = tuple(g.stride) + unit, tuple(g.pad) + (0,) * (n == 0)
        self.dilation = tuple(g.dilation) + unit
        self.tail, self.out_shape = tuple(tail) + (0,) * (n == 0), tuple(out_shape)
        self.weight = nn.Parameter(torch.zeros(*weight_shape))
        self.bias = nn.Parameter(torch.zeros(*bias_shape)) if bias_shape is not None else None

    def forward(self, *bottoms):
        n = max(self.spatial, 1)
        w = self.weight.unsqueeze(-1) if self.spatial == 0 else self.weight
        outs = []
        for x in bottoms:
            lead = x.shape[:self.axis]
            y = _pad_tail(_fold(x, self.axis, self.spatial), self.tail)
            fn = _DECONV[n] if self.transposed else _CONV[n]
            y = fn(y, w, self.bias, stride=self.stride, padding=self.pad, dilation=self.dilation, groups=self.group)
            outs.append(y.reshape(*lead, *self.out_shape))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def caffe_blobs(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def extra_repr(self):
        return (f"{'transposed, ' if self.transposed else ''}weight={tuple(self.weight.shape)}, axis={self.axis}, "
                f"stride={self.stride}, padding={self.pad}, dilation={self.dilation}, groups={self.group}")


def convert_convolution_nd(node: Node, graph: Graph) -> nn.Module:
    """The N-D case of the Convolution/Deconvolution converter (vision.py dispatches here)."""
    a = node.attrs
    bottom, top = graph.shapes[node.bottoms[0]], graph.shapes[node.tops[0]]
    g = geometry(a.spatial, bottom)
    shapes = [p.shape for p in node.params]
    deconv = node.type == "Deconvolution"
    tail = (0,) * g.spatial_axes if deconv else g.tail(bottom, g.output_size(bottom))
    return ConvolutionND(g, shapes[0], shapes[1] if len(shapes) > 1 else None, a.group, deconv, tail,
                         top[g.axis:])


class Im2col(CaffeLayer):
    """2-D: F.unfold (a gather, exact). Other ranks: a grouped convolution with one-hot kernels,
    which picks each kernel offset of each channel (exact for finite inputs)."""

    def __init__(self, g, channels: int, tail, out_shape):
        super().__init__()
        n = g.spatial_axes
        if n > 3:
            raise ValueError(f"{n} spatial axes: PyTorch convolves over at most 3")
        self.axis, self.spatial, self.channels = g.axis, n, channels
        self.kernel, self.stride, self.pad, self.dilation = g.kernel, g.stride, g.pad, g.dilation
        self.tail, self.out_shape = tuple(tail), tuple(out_shape)
        k = 1
        for v in g.kernel:
            k *= v
        eye = torch.eye(k).reshape(k, 1, *g.kernel).repeat(channels, 1, *([1] * n))
        self.register_buffer("one_hot", eye, persistent=False)

    def forward(self, x):
        lead = x.shape[:self.axis]
        y = _pad_tail(x.reshape(-1, *x.shape[self.axis:]), self.tail)
        if self.spatial == 2:
            y = F.unfold(y, self.kernel, dilation=self.dilation, padding=self.pad, stride=self.stride)
        elif self.spatial == 0:
            y = y
        else:
            y = _CONV[self.spatial](y, self.one_hot.to(y.dtype), None, stride=self.stride, padding=self.pad,
                                    dilation=self.dilation, groups=self.channels)
        return y.reshape(*lead, *self.out_shape)


@converter("Im2col")
def convert_im2col(node: Node, graph: Graph) -> nn.Module:
    bottom, top = graph.shapes[node.bottoms[0]], graph.shapes[node.tops[0]]
    g = geometry(node.attrs.spatial, bottom)
    return Im2col(g, bottom[g.axis], g.tail(bottom, g.output_size(bottom)), top[g.axis:])
