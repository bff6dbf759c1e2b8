"""A built graph fed inputs of other shapes: Caffe's ``Net::Reshape``."""
from __future__ import annotations

import dataclasses

from convnet_io.errors import LayerError
from convnet_io.graph.ir import Graph
from convnet_io.graph.layers import get_spec
from convnet_io.graph.types import Shape


def reshape_graph(graph: Graph, input_shapes: dict[str, Shape]) -> Graph:
    """The same graph fed inputs of other shapes: every shape re-inferred, as Caffe's Net::Reshape.

    Learnable blob shapes must not change (an InnerProduct after a spatial change would): that is
    an error naming the layer.
    """
    shapes: dict[str, Shape] = {}
    for node in graph.nodes:
        spec = get_spec(node.type)
        if node.is_source:
            old_batch = graph.shapes[node.tops[0]][0] if graph.shapes[node.tops[0]] else None
            first = input_shapes.get(node.tops[0], graph.shapes[node.tops[0]])
            for t in node.tops:
                s = tuple(input_shapes.get(t, graph.shapes[t]))
                if t not in input_shapes and s and s[0] == old_batch and first:
                    s = (first[0], *s[1:])
                shapes[t] = s
            continue
        bshapes = [shapes[b] for b in node.bottoms]
        try:
            tshapes = spec.top_shapes(node.attrs, bshapes, len(node.tops))
            pshapes = [tuple(s) for s in spec.param_shapes(node.attrs, bshapes)]
        except (ValueError, ZeroDivisionError, IndexError) as e:
            raise LayerError(node.name, str(e), node.type) from None
        if pshapes != [tuple(p.shape) for p in node.params]:
            raise LayerError(node.name, f"input shapes {[list(s) for s in bshapes]} need learnable blobs "
                             f"{[list(s) for s in pshapes]}, but the net has "
                             f"{[list(p.shape) for p in node.params]}", node.type)
        for t, s in zip(node.tops, tshapes):
            if any(d <= 0 for d in s):
                raise LayerError(node.name, f"top '{graph.blob_of[t]}' would have shape {list(s)}", node.type)
            shapes[t] = tuple(int(d) for d in s)
    return dataclasses.replace(graph, shapes=shapes)
