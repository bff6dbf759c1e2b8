"""Layers that feed a net: Input and Caffe's data layers.

Their sources (LMDB, list files, HDF5) need not exist for the graph: shapes come from
``batch_size``/``crop_size``/``new_height`` and from the ``--input-shape`` the user gives.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from convnet_io.graph.layers.common import enum_name
from convnet_io.graph.layers.registry import LayerSpec, register
from convnet_io.graph.types import Shape


@dataclass(frozen=True)
class Transform:
    """Caffe's TransformationParameter."""

    scale: float = 1.0
    mirror: bool = False
    crop_size: int = 0
    mean_file: str = ""
    mean_value: tuple[float, ...] = ()
    force_color: bool = False
    force_gray: bool = False


def transform_of(layer: Any) -> Transform:
    t = layer.transform_param
    return Transform(float(t.scale), bool(t.mirror), int(t.crop_size), t.mean_file,
                     tuple(float(v) for v in t.mean_value), bool(t.force_color), bool(t.force_gray))


@dataclass
class SourceContext:
    """What the user told about input shapes, and where notices go."""

    named: dict[str, Shape] = field(default_factory=dict)
    default: Shape | None = None
    notice: Callable[[str], None] = print
    # (source, tops, batch_size) -> the tops' shapes from an HDF5Data layer's files, or None when
    # they are not on the machine; the net reader provides it (the graph reads no files).
    hdf5_shapes: Callable[[str, list[str], int], list[Shape] | None] | None = None

    def given(self, top: str) -> Shape | None:
        return self.named.get(top, self.default)


class Source(LayerSpec):
    source = True
    min_bottoms = max_bottoms = 0

    @classmethod
    def source_shapes(cls, layer_name: str, a: Any, tops: list[str], ctx: SourceContext) -> list[Shape]:
        raise NotImplementedError


@dataclass(frozen=True)
class InputAttrs:
    shapes: tuple[Shape, ...]


@register("Input")
class Input(Source):
    @classmethod
    def attrs(cls, layer):
        return InputAttrs(tuple(tuple(int(d) for d in s.dim) for s in layer.input_param.shape))

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        out = []
        for i, top in enumerate(tops):
            if top in ctx.named:
                out.append(ctx.named[top])
            elif ctx.default is not None and i == 0:
                out.append(ctx.default)  # --input-shape without a name: the (first) input
            elif a.shapes:
                if len(a.shapes) not in (1, len(tops)):
                    raise ValueError(f"{len(a.shapes)} shapes for {len(tops)} tops")
                out.append(a.shapes[0] if len(a.shapes) == 1 else a.shapes[i])
            else:
                raise ValueError(f"no shape for input '{top}': give --input-shape")
        return out


@dataclass(frozen=True)
class DataAttrs:
    """Data, ImageData, WindowData, MemoryData, HDF5Data: what is needed to shape and to feed."""

    source: str = ""
    batch_size: int = 0
    transform: Transform = Transform()
    backend: str = ""
    new_height: int = 0
    new_width: int = 0
    is_color: bool = True
    shuffle: bool = False
    root_folder: str = ""
    channels: int = 0
    height: int = 0
    width: int = 0


def _image_source_shapes(layer_name: str, a: DataAttrs, tops: list[str], ctx: SourceContext,
                         default_channels: int = 3) -> list[Shape]:
    batch = a.batch_size or 1
    given = ctx.given(tops[0])
    if given is not None:
        data = given
        batch = given[0]
    else:
        if a.batch_size <= 0:  # Caffe: CHECK_GT(batch_size, 0) << "Positive batch size required"
            raise ValueError(f"batch_size {a.batch_size} must be positive")
        crop = a.transform.crop_size
        h, w = (crop, crop) if crop else (a.new_height, a.new_width)
        if not (h and w):
            raise ValueError(
                "the data size cannot be known without reading the source "
                f"'{a.source}': give --input-shape N,C,H,W")
        channels = 1 if (not a.is_color or a.transform.force_gray) else default_channels
        ctx.notice(f"{layer_name}: input shape {batch}x{channels}x{h}x{w} assumed "
                   f"(batch_size, crop/resize; {channels} channels); use --input-shape to change it")
        data = (batch, channels, h, w)
    return [data] + [(batch,)] * (len(tops) - 1)


def _data_attrs(layer: Any, param: Any, **extra: Any) -> DataAttrs:
    return DataAttrs(source=getattr(param, "source", ""), batch_size=int(param.batch_size),
                     transform=transform_of(layer), **extra)


@register("Data")
class Data(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.data_param
        return _data_attrs(layer, p, backend=enum_name(p, "backend"))

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        return _image_source_shapes(layer_name, a, tops, ctx)


@register("ImageData")
class ImageData(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.image_data_param
        return _data_attrs(layer, p, new_height=int(p.new_height), new_width=int(p.new_width),
                           is_color=bool(p.is_color), shuffle=bool(p.shuffle), root_folder=p.root_folder)

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        return _image_source_shapes(layer_name, a, tops, ctx)


@register("WindowData")
class WindowData(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.window_data_param
        t = transform_of(layer)
        if p.crop_size and not t.crop_size:
            t = Transform(t.scale, t.mirror, int(p.crop_size), t.mean_file, t.mean_value)
        return DataAttrs(source=p.source, batch_size=int(p.batch_size), transform=t)

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        return _image_source_shapes(layer_name, a, tops, ctx)


@register("MemoryData")
class MemoryData(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.memory_data_param
        return DataAttrs(batch_size=int(p.batch_size), transform=transform_of(layer),
                         channels=int(p.channels), height=int(p.height), width=int(p.width))

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        given = ctx.given(tops[0])
        if given is None and min(a.batch_size, a.channels, a.height, a.width) <= 0:
            raise ValueError("batch_size, channels, height and width must be given and positive")
        data = given or (a.batch_size, a.channels, a.height, a.width)
        return [data] + [(data[0],)] * (len(tops) - 1)


@register("HDF5Data")
class HDF5Data(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.hdf5_data_param
        return DataAttrs(source=p.source, batch_size=int(p.batch_size), shuffle=bool(p.shuffle))

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        given = ctx.given(tops[0])
        if given is None and ctx.hdf5_shapes is not None:
            read = ctx.hdf5_shapes(a.source, list(tops), a.batch_size)
            if read is not None:
                return [ctx.named.get(t, s) for t, s in zip(tops, read)]
        if given is None:
            raise ValueError(f"HDF5 shapes cannot be known without reading '{a.source}': "
                             "give --input-shape N,C,H,W")
        return [given] + [ctx.named.get(t, (given[0],)) for t in tops[1:]]


@dataclass(frozen=True)
class DummyDataAttrs:
    shapes: tuple[Shape, ...]


@register("DummyData")
class DummyData(Source):
    @classmethod
    def attrs(cls, layer):
        p = layer.dummy_data_param
        shapes = [tuple(int(d) for d in s.dim) for s in p.shape]
        if not shapes:
            shapes = [(int(n), int(c), int(h), int(w))
                      for n, c, h, w in zip(p.num, p.channels, p.height, p.width)]
        return DummyDataAttrs(tuple(shapes))

    @classmethod
    def source_shapes(cls, layer_name, a, tops, ctx):
        if len(a.shapes) not in (1, len(tops)):
            raise ValueError(f"{len(a.shapes)} shapes for {len(tops)} tops")
        return [ctx.named.get(t, a.shapes[0] if len(a.shapes) == 1 else a.shapes[i]) for i, t in enumerate(tops)]
