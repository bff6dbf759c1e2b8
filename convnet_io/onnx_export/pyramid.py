"""SPP, BatchReindex and Filter as ONNX. HDF5Output writes a file and has no top: an inference
model leaves it out (nothing reads it)."""
from __future__ import annotations

from convnet_io.graph import Node
from convnet_io.graph.layers.pyramid import spp_levels
from convnet_io.onnx_export.registry import exporter
from convnet_io.onnx_export.vision import export_pooling


class _LevelContext:
    """The export context, with the shapes of one pyramid level's pooled value added."""

    def __init__(self, ctx, shapes):
        self._ctx, self._shapes = ctx, shapes

    def __getattr__(self, name):
        return getattr(self._ctx, name)

    def shape(self, value):
        return self._shapes[value] if value in self._shapes else self._ctx.shape(value)


@exporter("SPP")
def export_spp(ctx, node):
    """Each level is exported as Caffe's Pooling layer would be, then flattened and concatenated."""
    bottom, top = node.bottoms[0], node.tops[0]
    levels = spp_levels(node.attrs, ctx.shape(bottom))
    flat = []
    for i, (attrs, shape) in enumerate(levels):
        pooled = top if len(levels) == 1 else ctx.fresh(f"{node.name}/level{i}")
        level = Node(name=f"{node.name}/level{i}" if len(levels) > 1 else node.name, type="Pooling",
                     bottoms=[bottom], tops=[pooled], attrs=attrs)
        export_pooling(_LevelContext(ctx, {pooled: shape}), level)
        if len(levels) > 1:
            flat.append(ctx.add("Flatten", [pooled], name=f"{node.name}/flatten{i}", axis=1))
    if len(levels) > 1:
        ctx.add("Concat", flat, [top], name=node.name, axis=1)


@exporter("BatchReindex")
def export_batch_reindex(ctx, node):
    index = ctx.add("Cast", [node.bottoms[1]], name=f"{node.name}/index", to=7)  # INT64, truncating
    ctx.add("Gather", [node.bottoms[0], index], [node.tops[0]], name=node.name, axis=0)


@exporter("Filter")
def export_filter(ctx, node):
    """Compress along axis 0 with the selector != 0: the output's first dimension is the number of
    selected rows, known only when the model runs (a named symbolic dimension in the file)."""
    selector = node.bottoms[-1]
    flat = ctx.add("Reshape", [selector, ctx.ints(f"{node.name}_flat", [-1])], name=f"{node.name}/selector")
    zero = ctx.constant(f"{node.name}_zero", 0.0)
    nonzero = ctx.add("Not", [ctx.add("Equal", [flat, zero], name=f"{node.name}/is_zero")], name=f"{node.name}/keep")
    for bottom, top in zip(node.bottoms[:-1], node.tops):
        ctx.add("Compress", [bottom, nonzero], [top], name=f"{node.name}/{top}", axis=0)
        ctx.output_dims[top] = [f"{node.name}_rows", *ctx.shape(top)[1:]]
