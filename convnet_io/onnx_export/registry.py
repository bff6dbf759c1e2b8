"""The registry of ONNX exporters: one small function per Caffe layer type."""
from __future__ import annotations

from typing import Callable

from convnet_io.errors import LayerError
from convnet_io.graph import Node

Exporter = Callable[["ExportContext", Node], None]  # noqa: F821
_EXPORTERS: dict[str, Exporter] = {}


def exporter(*type_names: str):
    """Decorator: register an ONNX exporter for Caffe layer types; duplicates are refused."""

    def wrap(fn: Exporter) -> Exporter:
        for t in type_names:
            if t in _EXPORTERS:
                raise ValueError(f"an ONNX exporter for {t!r} is already registered")
            _EXPORTERS[t] = fn
        return fn

    return wrap


def export_node(ctx, node: Node) -> None:
    fn = _EXPORTERS.get(node.type)
    if fn is None and node.type in _REFUSED:
        raise LayerError(node.name, _REFUSED[node.type], node.type)
    if fn is None:
        raise LayerError(node.name, f"layer type '{node.type}' cannot be exported to ONNX yet; "
                         f"supported: {', '.join(sorted(_EXPORTERS))}", node.type)
    try:
        fn(ctx, node)
    except (ValueError, NotImplementedError) as e:
        raise LayerError(node.name, str(e), node.type) from None


_REFUSED: dict[str, str] = {}


def refuse(type_name: str, reason: str) -> None:
    """Record why a Caffe type has no ONNX form (the export names the reason; runners fall back)."""
    _REFUSED[type_name] = reason


def exporter_types() -> list[str]:
    return sorted(_EXPORTERS)
