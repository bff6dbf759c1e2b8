"""The registry of layer converters: one small function per Caffe type, graph node -> torch module."""
from __future__ import annotations

from typing import Callable

from torch import nn

from convnet_io.errors import LayerError
from convnet_io.graph import Graph, Node

Converter = Callable[[Node, Graph], nn.Module]
_CONVERTERS: dict[str, Converter] = {}


def converter(*type_names: str):
    """Decorator: register a converter for one or more Caffe layer types; duplicates are refused."""

    def wrap(fn: Converter) -> Converter:
        for t in type_names:
            if t in _CONVERTERS:
                raise ValueError(f"a converter for {t!r} is already registered")
            _CONVERTERS[t] = fn
        return fn

    return wrap


def convert_node(node: Node, graph: Graph) -> nn.Module:
    fn = _CONVERTERS.get(node.type)
    if fn is None:
        raise LayerError(node.name, f"layer type '{node.type}' has no PyTorch converter yet; "
                         f"supported: {', '.join(sorted(_CONVERTERS))}", node.type)
    try:
        return fn(node, graph)
    except (ValueError, NotImplementedError) as e:
        raise LayerError(node.name, str(e), node.type) from None


def converter_types() -> list[str]:
    return sorted(_CONVERTERS)
