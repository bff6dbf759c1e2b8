"""``caffe.NetSpec``, ``caffe.layers`` (L), ``caffe.params`` (P), ``caffe.to_proto``: nets written
as Python calls, turned into the NetParameter (and prototxt text) pycaffe produces.

The naming is pycaffe's: a top assigned to a NetSpec attribute takes that name (and its layer
too); any other top is named after its layer type and a per-type counter (``Convolution1``);
``in_place=True`` reuses the bottom as the top; keyword arguments go to the layer's own
``<type>_param`` unless they end in ``param`` or are LayerParameter fields."""
from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any

from convnet_io.caffe.proto import caffe_pb2


def param_name_dict() -> dict[str, str]:
    """Layer type -> the LayerParameter field of its parameters (``Convolution`` -> ``convolution``),
    read from the schema's ``*_param`` fields and their message names."""
    layer = caffe_pb2.LayerParameter()
    out = {}
    for f in layer.DESCRIPTOR.fields:
        if f.name.endswith("_param") and f.message_type is not None:
            type_name = f.message_type.name
            if type_name.endswith("Parameter"):
                out[type_name[: -len("Parameter")]] = f.name[: -len("_param")]
    return out


def assign_proto(proto: Any, name: str, val: Any) -> None:
    """Set field ``name`` of ``proto`` from a Python value: lists fill repeated fields (dicts in a
    list add messages), dicts fill a message, anything else is assigned; a single value given to
    a repeated field becomes a one-element list."""
    is_repeated = hasattr(getattr(proto, name), "extend")
    if is_repeated and not isinstance(val, list):
        val = [val]
    if isinstance(val, list):
        if val and isinstance(val[0], dict):
            for item in val:
                message = getattr(proto, name).add()
                for k, v in item.items():
                    assign_proto(message, k, v)
        else:
            getattr(proto, name).extend(val)
    elif isinstance(val, dict):
        for k, v in val.items():
            assign_proto(getattr(proto, name), k, v)
    else:
        setattr(proto, name, val)


class Top:
    """One output blob of a layer call (``n``-th top of ``fn``)."""

    def __init__(self, fn: Function, n: int):
        self.fn = fn
        self.n = n

    def to_proto(self) -> Any:
        """A NetParameter with every layer needed to compute this top."""
        return to_proto(self)

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        self.fn._to_proto(layers, names, autonames)


class Function:
    """One layer: its type, the Tops it reads and its parameters."""

    def __init__(self, type_name: str, inputs: tuple, params: dict[str, Any]):
        self.type_name = type_name
        for index, item in enumerate(inputs):
            if not isinstance(item, Top):
                raise TypeError(f"{type_name} input {index} is not a Top (type is {type(item)})")
        self.inputs = inputs
        self.params = dict(params)
        self.ntop = self.params.pop("ntop", 1)
        self.in_place = self.params.pop("in_place", False)
        self.tops = tuple(Top(self, n) for n in range(self.ntop))

    def _get_name(self, names: dict, autonames: Counter) -> str:
        if self not in names and self.ntop > 0:
            names[self] = self._get_top_name(self.tops[0], names, autonames)
        elif self not in names:
            autonames[self.type_name] += 1
            names[self] = self.type_name + str(autonames[self.type_name])
        return names[self]

    @staticmethod
    def _get_top_name(top: Top, names: dict, autonames: Counter) -> str:
        if top not in names:
            autonames[top.fn.type_name] += 1
            names[top] = top.fn.type_name + str(autonames[top.fn.type_name])
        return names[top]

    def _to_proto(self, layers: dict, names: dict, autonames: Counter) -> None:
        if self in layers:
            return
        bottom_names = []
        for item in self.inputs:
            item._to_proto(layers, names, autonames)
            bottom_names.append(layers[item.fn].top[item.n])
        layer = caffe_pb2.LayerParameter()
        layer.type = self.type_name
        layer.bottom.extend(bottom_names)
        if self.in_place:
            layer.top.extend(layer.bottom)
        else:
            for top in self.tops:
                layer.top.append(self._get_top_name(top, names, autonames))
        layer.name = self._get_name(names, autonames)
        for k, v in self.params.items():
            if k.endswith("param"):  # e.g. param=[dict(lr_mult=1)], transform_param=dict(...)
                assign_proto(layer, k, v)
                continue
            try:
                assign_proto(getattr(layer, _PARAM_NAMES[self.type_name] + "_param"), k, v)
            except (AttributeError, KeyError):
                assign_proto(layer, k, v)
        layers[self] = layer


class NetSpec:
    """Tops assigned as attributes (``n.conv1 = L.Convolution(n.data, ...)``); ``to_proto``
    writes every layer they need, named as assigned."""

    def __init__(self):
        super().__setattr__("tops", OrderedDict())

    def __setattr__(self, name: str, value: Any) -> None:
        self.tops[name] = value

    def __getattr__(self, name: str) -> Any:
        try:
            return self.tops[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setitem__(self, key: str, value: Any) -> None:
        self.__setattr__(key, value)

    def __getitem__(self, item: str) -> Any:
        return self.tops[item]

    def __delitem__(self, name: str) -> None:
        del self.tops[name]

    def keys(self) -> list[str]:
        return list(self.tops.keys())

    def vals(self) -> list[Any]:
        return list(self.tops.values())

    def to_proto(self) -> Any:
        names = {v: k for k, v in self.tops.items()}
        autonames: Counter = Counter()
        layers: OrderedDict = OrderedDict()
        for top in self.tops.values():
            top._to_proto(layers, names, autonames)
        net = caffe_pb2.NetParameter()
        net.layer.extend(layers.values())
        return net


def to_proto(*tops: Top) -> Any:
    """A NetParameter with every layer needed to compute ``tops`` (names generated)."""
    layers: OrderedDict = OrderedDict()
    autonames: Counter = Counter()
    for top in tops:
        top.fn._to_proto(layers, {}, autonames)
    net = caffe_pb2.NetParameter()
    net.layer.extend(layers.values())
    return net


class Layers:
    """``L.Convolution(bottom, kernel_size=3, ...)``: a Top (a tuple for ``ntop > 1``, the
    Function itself for ``ntop=0``)."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def layer_fn(*args: Any, **kwargs: Any):
            fn = Function(name, args, kwargs)
            if fn.ntop == 0:
                return fn
            if fn.ntop == 1:
                return fn.tops[0]
            return fn.tops
        return layer_fn


class Parameters:
    """``P.Pooling.MAX``: the enum values of ``<Name>Parameter``."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        message = getattr(caffe_pb2, name + "Parameter")

        class Param:
            def __getattr__(self, param_name: str):
                return getattr(message, param_name)
        return Param()


_PARAM_NAMES = param_name_dict()
layers = Layers()
params = Parameters()
