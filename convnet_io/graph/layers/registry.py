"""The one registry of Caffe layer types and the base class every type derives from."""
from __future__ import annotations

from typing import Any, ClassVar

from convnet_io.graph.types import Filler, Shape

_SPECS: dict[str, type["LayerSpec"]] = {}


class LayerSpec:
    """What the graph needs to know about one Caffe layer type.

    ``attrs`` turns a Caffe LayerParameter into a typed attribute object; ``top_shapes`` is the
    type's shape rule (Caffe's ``Reshape``); ``param_shapes`` and ``fillers`` describe its learnable
    blobs in Caffe's blob order; ``macs`` counts multiply-adds for one forward pass.
    """

    type: ClassVar[str] = ""
    source: ClassVar[bool] = False  # feeds the net (no bottoms)
    min_bottoms: ClassVar[int] = 1
    max_bottoms: ClassVar[int | None] = 1
    in_place_ok: ClassVar[bool] = False
    min_tops: ClassVar[int] = 1  # Caffe's MinTopBlobs / ExactNumTopBlobs: every layer but Silence writes

    @classmethod
    def attrs(cls, layer: Any) -> Any:
        return None

    @classmethod
    def top_shapes(cls, attrs: Any, bottoms: list[Shape], num_tops: int) -> list[Shape]:
        # One top shaped like the bottom: Caffe's NeuronLayer (ExactNumTopBlobs 1); a second named
        # top is refused by the builder ("produces 1 top(s), but 2 are named").
        return [bottoms[0]]

    @classmethod
    def param_shapes(cls, attrs: Any, bottoms: list[Shape]) -> list[Shape]:
        return []

    @classmethod
    def fillers(cls, attrs: Any) -> list[Filler | None]:
        return []

    @classmethod
    def macs(cls, attrs: Any, bottoms: list[Shape], tops: list[Shape]) -> int:
        return 0


def register(type_name: str, *aliases: str):
    """Class decorator: register a LayerSpec under a Caffe type name (and aliases)."""

    def wrap(cls: type[LayerSpec]) -> type[LayerSpec]:
        cls.type = type_name
        for name in (type_name, *aliases):
            if name in _SPECS:
                raise ValueError(f"layer type {name!r} is registered twice")
            _SPECS[name] = cls
        return cls

    return wrap


def get_spec(type_name: str) -> type[LayerSpec] | None:
    return _SPECS.get(type_name)


def supported_types() -> list[str]:
    return sorted({spec.type for spec in _SPECS.values()})


def is_source_type(type_name: str) -> bool:
    spec = _SPECS.get(type_name)
    return bool(spec and spec.source)
