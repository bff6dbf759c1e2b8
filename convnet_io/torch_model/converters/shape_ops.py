"""Concat, Slice, Split, Flatten, Reshape, Crop, Tile, Reduction, ArgMax, Eltwise, Softmax, Silence,
Parameter and Embed with Caffe's exact semantics (``src/caffe/layers/<name>_layer.cpp``).

Axes are made canonical at conversion from the shapes in the graph, so every module holds plain
non-negative axes; index-valued tops (ArgMax) are floats, as Caffe stores them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.common import canonical_axis, count
from convnet_io.graph.layers.shape_ops import Crop as CropSpec
from convnet_io.graph.layers.shape_ops import Slice as SliceSpec
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import converter


def _bottom_shape(node: Node, graph: Graph, i: int = 0) -> tuple[int, ...]:
    return tuple(graph.shapes[node.bottoms[i]])


def _axis(node: Node, graph: Graph, axis: int, i: int = 0) -> int:
    return canonical_axis(axis, len(_bottom_shape(node, graph, i)))


# -- joining and splitting ----------------------------------------------------------------------
class Concat(CaffeLayer):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, *bottoms):
        return torch.cat(bottoms, dim=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


@converter("Concat")
def convert_concat(node: Node, graph: Graph) -> nn.Module:
    return Concat(_axis(node, graph, node.attrs.axis))


class Slice(CaffeLayer):
    """Caffe Slice: consecutive pieces of ``sizes`` along ``axis``, one per top."""

    def __init__(self, axis: int, sizes: list[int]):
        super().__init__()
        self.axis, self.sizes = axis, list(sizes)

    def forward(self, x):
        return tuple(torch.split(x, self.sizes, dim=self.axis))

    def extra_repr(self):
        return f"axis={self.axis}, sizes={self.sizes}"


@converter("Slice")
def convert_slice(node: Node, graph: Graph) -> nn.Module:
    bottom = _bottom_shape(node, graph)
    sizes = SliceSpec.sizes(node.attrs, bottom, len(node.tops))
    return Slice(canonical_axis(node.attrs.axis, len(bottom)), sizes)


class Split(CaffeLayer):
    """Caffe Split: every top holds the bottom's data (Caffe shares it; converters never write
    their inputs in place, so the tops share the bottom tensor here too)."""

    def __init__(self, num_tops: int):
        super().__init__()
        self.num_tops = num_tops

    def forward(self, x):
        return (x,) * self.num_tops

    def extra_repr(self):
        return f"tops={self.num_tops}"


@converter("Split")
def convert_split(node: Node, graph: Graph) -> nn.Module:
    return Split(len(node.tops))


# -- reshaping ----------------------------------------------------------------------------------
class Flatten(CaffeLayer):
    """Caffe Flatten: axes ``start`` .. ``end`` (inclusive) become one."""

    def __init__(self, start: int, end: int):
        super().__init__()
        self.start, self.end = start, end

    def forward(self, x):
        return x.flatten(self.start, self.end)

    def extra_repr(self):
        return f"axis={self.start}, end_axis={self.end}"


@converter("Flatten")
def convert_flatten(node: Node, graph: Graph) -> nn.Module:
    n = len(_bottom_shape(node, graph))
    return Flatten(canonical_axis(node.attrs.axis, n), canonical_axis(node.attrs.end_axis, n))


class Reshape(CaffeLayer):
    """Caffe Reshape: the top shape is the one the graph inferred (0 and -1 dims resolved)."""

    def __init__(self, shape: tuple[int, ...]):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(self.shape)

    def extra_repr(self):
        return f"shape={self.shape}"


@converter("Reshape")
def convert_reshape(node: Node, graph: Graph) -> nn.Module:
    return Reshape(tuple(graph.shapes[node.tops[0]]))


class Crop(CaffeLayer):
    """Caffe Crop: from ``axis`` on, the bottom is cut to the reference's size at fixed offsets."""

    def __init__(self, offsets: list[int], sizes: list[int], start: int):
        super().__init__()
        self.start = start
        self.offsets, self.sizes = list(offsets), list(sizes)

    def forward(self, x, reference=None):
        index = [slice(None)] * self.start
        for o, s in zip(self.offsets[self.start:], self.sizes[self.start:]):
            index.append(slice(o, o + s))
        return x[tuple(index)]

    def extra_repr(self):
        return f"axis={self.start}, offsets={self.offsets[self.start:]}, size={self.sizes[self.start:]}"


@converter("Crop")
def convert_crop(node: Node, graph: Graph) -> nn.Module:
    bottom, reference = _bottom_shape(node, graph, 0), _bottom_shape(node, graph, 1)
    offsets = CropSpec.offsets(node.attrs, bottom, reference)
    return Crop(offsets, list(reference), canonical_axis(node.attrs.axis, len(bottom)))


class Tile(CaffeLayer):
    """Caffe Tile: the whole block of axes ``axis`` .. end is repeated ``tiles`` times."""

    def __init__(self, axis: int, tiles: int):
        super().__init__()
        self.axis, self.tiles = axis, tiles

    def forward(self, x):
        shape = list(x.shape)
        outer = count(tuple(shape), 0, self.axis)
        y = x.reshape(outer, -1).repeat(1, self.tiles)
        shape[self.axis] *= self.tiles
        return y.reshape(shape)

    def extra_repr(self):
        return f"axis={self.axis}, tiles={self.tiles}"


@converter("Tile")
def convert_tile(node: Node, graph: Graph) -> nn.Module:
    return Tile(_axis(node, graph, node.attrs.axis), node.attrs.tiles)


# -- reductions -----------------------------------------------------------------------------------
class Reduction(CaffeLayer):
    """Caffe Reduction over all axes from ``axis`` on: SUM, ASUM (sum |x|), SUMSQ (sum x^2) or MEAN,
    then times ``coeff`` (MEAN: coeff / the number of reduced values)."""

    def __init__(self, operation: str, axis: int, coeff: float):
        super().__init__()
        if operation not in ("SUM", "ASUM", "SUMSQ", "MEAN"):
            raise ValueError(f"reduction operation {operation} is not supported")
        self.operation, self.axis, self.coeff = operation, axis, coeff

    def forward(self, x):
        lead = tuple(x.shape[:self.axis])
        flat = x.reshape(*lead, -1)
        if self.operation == "ASUM":
            flat = flat.abs()
        elif self.operation == "SUMSQ":
            flat = flat * flat
        y = flat.sum(dim=-1)
        coeff = self.coeff / flat.shape[-1] if self.operation == "MEAN" else self.coeff
        return y if coeff == 1.0 else y * coeff

    def extra_repr(self):
        return f"{self.operation}, axis={self.axis}, coeff={self.coeff}"


@converter("Reduction")
def convert_reduction(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    return Reduction(a.operation, _axis(node, graph, a.axis), a.coeff)


class ArgMax(CaffeLayer):
    """Caffe ArgMax: the ``top_k`` largest values, ordered as Caffe's ``std::partial_sort`` with
    ``std::greater`` on (value, index) pairs: by value descending, equal values by larger index
    first. Without ``axis``: over all values of an item, top (N, 1 or 2, top_k, ...) with indices
    in channel 0 and, with ``out_max_val``, values in channel 1. With ``axis``: indices, or only
    the values when ``out_max_val``. Indices are floats, as Caffe writes them."""

    def __init__(self, top_k: int, out_max_val: bool, axis: int | None):
        super().__init__()
        self.top_k, self.out_max_val, self.axis = top_k, out_max_val, axis

    def _top_k(self, x: torch.Tensor, dim: int):
        # Reverse the axis, then a stable descending sort keeps equal values in reversed order,
        # i.e. the larger original index first.
        size = x.shape[dim]
        values, rev = torch.sort(x.flip(dim), dim=dim, descending=True, stable=True)
        values = values.narrow(dim, 0, self.top_k)
        indices = (size - 1) - rev.narrow(dim, 0, self.top_k)
        return values, indices.to(x.dtype)

    def forward(self, x):
        if self.axis is not None:
            values, indices = self._top_k(x, self.axis)
            return values if self.out_max_val else indices
        n = x.shape[0]
        values, indices = self._top_k(x.reshape(n, -1), 1)
        channels = (indices, values) if self.out_max_val else (indices,)
        y = torch.stack(channels, dim=1)  # (N, 1 or 2, top_k)
        trailing = [1] * max(x.dim() - 3, 0)
        return y.reshape(n, len(channels), self.top_k, *trailing)

    def extra_repr(self):
        return f"top_k={self.top_k}, out_max_val={self.out_max_val}, axis={self.axis}"


@converter("ArgMax")
def convert_argmax(node: Node, graph: Graph) -> nn.Module:
    a = node.attrs
    axis = None if a.axis is None else _axis(node, graph, a.axis)
    return ArgMax(a.top_k, a.out_max_val, axis)


# -- element-wise and softmax ---------------------------------------------------------------------
class Eltwise(CaffeLayer):
    """Caffe Eltwise: SUM (sum of coeff_i * x_i, coeffs default 1), PROD, or MAX (a later bottom
    wins only where it is strictly greater, as Caffe's ``>`` test)."""

    def __init__(self, operation: str, coeffs: tuple[float, ...]):
        super().__init__()
        if operation not in ("SUM", "PROD", "MAX"):
            raise ValueError(f"eltwise operation {operation} is not supported")
        self.operation, self.coeffs = operation, tuple(coeffs)

    def forward(self, *bottoms):
        if self.operation == "PROD":
            y = bottoms[0]
            for b in bottoms[1:]:
                y = y * b
            return y
        if self.operation == "MAX":
            y = bottoms[0]
            for b in bottoms[1:]:
                y = torch.where(b > y, b, y)
            return y
        coeffs = self.coeffs or (1.0,) * len(bottoms)
        y = None
        for c, b in zip(coeffs, bottoms):
            term = b if c == 1.0 else b * c
            y = term if y is None else y + term
        return y

    def extra_repr(self):
        return self.operation + (f", coeffs={list(self.coeffs)}" if self.coeffs else "")


@converter("Eltwise")
def convert_eltwise(node: Node, graph: Graph) -> nn.Module:
    return Eltwise(node.attrs.operation, node.attrs.coeffs)


class Softmax(CaffeLayer):
    def __init__(self, axis: int):
        super().__init__()
        self.axis = axis

    def forward(self, x):
        return torch.softmax(x, dim=self.axis)

    def extra_repr(self):
        return f"axis={self.axis}"


@converter("Softmax")
def convert_softmax(node: Node, graph: Graph) -> nn.Module:
    return Softmax(_axis(node, graph, node.attrs.axis))


# -- no tops, parameters, lookups -----------------------------------------------------------------
class Silence(CaffeLayer):
    """Caffe Silence: reads its bottoms, writes nothing."""

    def forward(self, *bottoms):
        return ()


@converter("Silence")
def convert_silence(node: Node, graph: Graph) -> nn.Module:
    return Silence()


class Parameter(CaffeLayer):
    """Caffe Parameter: its one learnable blob is its top."""

    def __init__(self, shape):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*shape, dtype=torch.float32))

    def forward(self):
        # The blob itself, as Caffe shares it; detached when no gradient is being recorded, so an
        # inference run hands back a plain tensor.
        return self.weight if torch.is_grad_enabled() else self.weight.detach()

    def caffe_blobs(self):
        return [self.weight]

    def extra_repr(self):
        return f"shape={tuple(self.weight.shape)}"


@converter("Parameter")
def convert_parameter(node: Node, graph: Graph) -> nn.Module:
    return Parameter(node.params[0].shape)


class Embed(CaffeLayer):
    """Caffe Embed: each input value is an integer index (stored as a float, truncated toward zero
    like ``static_cast<int>``) into the rows of W (input_dim, num_output); plus the bias."""

    def __init__(self, weight_shape, bias_shape):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(*weight_shape, dtype=torch.float32))
        self.bias = nn.Parameter(torch.zeros(*bias_shape, dtype=torch.float32)) if bias_shape else None

    def forward(self, x):
        index = x.long()
        y = F.embedding(index, self.weight)
        return y if self.bias is None else y + self.bias

    def caffe_blobs(self):
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def extra_repr(self):
        w = self.weight.shape
        return f"input_dim={w[0]}, num_output={w[1]}, bias={self.bias is not None}"


@converter("Embed")
def convert_embed(node: Node, graph: Graph) -> nn.Module:
    shapes = [p.shape for p in node.params]
    return Embed(shapes[0], shapes[1] if len(shapes) > 1 else None)
