"""The one registry of Caffe layer types and the base class every type derives from."""
from __future__ import annotations

import importlib
from typing import Any, ClassVar

from convnet_io.graph.types import Filler, Shape

_SPECS: dict[str, type["LayerSpec"]] = {}

# Which family module registers each type, so that a net imports only the families it uses
# (importing all fifteen cost a 1,000-layer `convnet build` about 50 ms of CPU, an eighth of it).
# An index, not the registry: a type it lacks is still found, by importing every module of the
# package, and tests/test_layer_index.py keeps it complete.
_FAMILIES: dict[str, tuple[str, ...]] = {
    "activation": ("ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log",
                   "Threshold", "Clip", "Swish", "Dropout"),
    "conv_nd": ("Im2col",),
    "data": ("Input", "Data", "ImageData", "WindowData", "MemoryData", "HDF5Data", "DummyData"),
    "detection": ("Permute", "PriorBox", "Normalize", "DetectionOutput"),
    "loss": ("SoftmaxWithLoss", "Accuracy", "EuclideanLoss", "SigmoidCrossEntropyLoss"),
    "loss_extra": ("ContrastiveLoss", "HingeLoss", "InfogainLoss", "MultinomialLogisticLoss"),
    "mobile": ("ReLU6", "ShuffleChannel", "Axpy", "ConvolutionDepthwise", "DepthwiseConvolution"),
    "normalization": ("LRN", "BatchNorm", "Scale", "Bias", "MVN"),
    "pyramid": ("SPP", "BatchReindex", "Filter", "HDF5Output"),
    "recurrent": ("LSTM", "RNN", "LSTMUnit"),
    "segmentation": ("Upsample", "Interp"),
    "shape_ops": ("Concat", "Slice", "Split", "Flatten", "Reshape", "Crop", "Tile", "Reduction", "ArgMax",
                  "Eltwise", "Softmax", "Silence", "Parameter"),
    "two_stage": ("ROIPooling", "PSROIPooling", "Proposal"),
    "vision": ("Convolution", "Deconvolution", "Pooling", "InnerProduct", "Embed"),
    "yolo": ("Reorg", "Region"),
}
_FAMILY_OF = {t: module for module, types in _FAMILIES.items() for t in types}
_PACKAGE = __name__.rpartition(".")[0]
_all_loaded = False


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


def load_all() -> None:
    """Import every family module of the package (each registers its types on import)."""
    global _all_loaded
    if not _all_loaded:
        import pkgutil  # only here: a net's own types need no listing of the package

        for info in pkgutil.iter_modules(importlib.import_module(_PACKAGE).__path__):
            importlib.import_module(f"{_PACKAGE}.{info.name}")
        _all_loaded = True


def get_spec(type_name: str) -> type[LayerSpec] | None:
    """The LayerSpec of a Caffe type (importing its family on first use), or None."""
    spec = _SPECS.get(type_name)
    if spec is None and not _all_loaded:
        family = _FAMILY_OF.get(type_name)
        if family is not None:
            importlib.import_module(f"{_PACKAGE}.{family}")
            spec = _SPECS.get(type_name)
        if spec is None:
            load_all()
            spec = _SPECS.get(type_name)
    return spec


def supported_types() -> list[str]:
    load_all()
    return sorted({spec.type for spec in _SPECS.values()})


def is_source_type(type_name: str) -> bool:
    spec = get_spec(type_name)
    return bool(spec and spec.source)
