"""Python layers (``type: "Python"``, ``python_param { module layer param_str }``): a
``caffe.Layer`` subclass imported from the Python path, as Caffe's PythonLayer does, with its
``setup``/``reshape`` giving the top shapes and ``forward``/``backward`` run on NumPy blobs.

This runs the user's code, so the type exists only while pycaffe builds or runs a net that
allows it (``Net(..., allow_python_layers=True)``, ``convnet pycaffe --allow-python-layers``):
the layer type and its converter are registered for that span and removed after, so nothing
else in convnet sees it. Without the permission a Python layer is an error naming the layer and
the flag. Python layers are not exported to ONNX or deploy text (the code is not part of the net)."""
from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from convnet_io.errors import LayerError

_DEFAULT = {"allowed": False}
_ACTIVE = {"depth": 0, "allowed": False}
FLAG_HELP = ("allow_python_layers=True (Python) or --allow-python-layers (convnet pycaffe, convnet train, "
             "convnet diff)")


def allow_python_layers_by_default(allowed: bool) -> None:
    """What nets built without an explicit ``allow_python_layers`` get (``convnet pycaffe``)."""
    _DEFAULT["allowed"] = bool(allowed)


def default_allowed() -> bool:
    return _DEFAULT["allowed"]


@dataclass(frozen=True, eq=False)
class PythonAttrs:
    module: str
    layer: str
    param_str: str
    phase: int
    instance: Any = field(repr=False, compare=False)


def _make_instance(layer: Any) -> Any:
    p = layer.python_param
    try:
        module = importlib.import_module(p.module)
    except ImportError as e:
        raise LayerError(layer.name, f"cannot import python_param module '{p.module}': {e}", "Python") from None
    cls = getattr(module, p.layer, None)
    if cls is None:
        raise LayerError(layer.name, f"module '{p.module}' has no layer class '{p.layer}'", "Python")
    instance = cls(layer)  # Caffe passes the LayerParameter to the class
    instance.param_str = p.param_str
    instance.phase = int(layer.phase) if layer.HasField("phase") else 1
    return instance


def _blobs(shapes_or_arrays: list[Any]) -> list[Any]:
    from convnet_io.pycaffe.blob import Blob

    out = []
    for x in shapes_or_arrays:
        if isinstance(x, np.ndarray):
            out.append(Blob(np.array(x, dtype=np.float32)))
        else:
            out.append(Blob.zeros(x))
    return out


def _spec_class():
    from convnet_io.graph.layers.registry import LayerSpec

    class Python(LayerSpec):
        type = "Python"
        min_bottoms = 0
        max_bottoms = None
        min_tops = 0
        in_place_ok = True

        @classmethod
        def attrs(cls, layer):
            if not _ACTIVE["allowed"]:
                raise LayerError(layer.name, f"is a Python layer (module '{layer.python_param.module}', "
                                 f"layer '{layer.python_param.layer}'): it would run that Python code, "
                                 f"which is off unless allowed: pass {FLAG_HELP}", "Python")
            return PythonAttrs(layer.python_param.module, layer.python_param.layer,
                               layer.python_param.param_str, int(layer.phase), _make_instance(layer))

        @classmethod
        def top_shapes(cls, a, bottoms, num_tops):
            bottom, top = _blobs(list(bottoms)), _blobs([(1,)] * num_tops)
            if not getattr(a.instance, "_convnet_set_up", False):
                a.instance.setup(bottom, top)
                a.instance._convnet_set_up = True
            a.instance.reshape(bottom, top)
            return [t.shape for t in top]

    return Python


class _PythonFunction:
    """The user's forward/backward as a torch autograd function."""

    @staticmethod
    def make():
        import torch

        class Fn(torch.autograd.Function):
            @staticmethod
            def forward(ctx, layer, num_tops, *bottoms):
                bottom = _blobs([b.detach().cpu().numpy() for b in bottoms])
                top = _blobs([(1,)] * num_tops)
                layer.reshape(bottom, top)
                layer.forward(bottom, top)
                ctx.layer, ctx.bottom, ctx.top = layer, bottom, top
                return tuple(torch.from_numpy(np.array(t.data, dtype=np.float32)) for t in top)

            @staticmethod
            def backward(ctx, *grads):
                for t, g in zip(ctx.top, grads):
                    t.diff[...] = 0 if g is None else g.detach().cpu().numpy().reshape(t.shape)
                propagate = [True] * len(ctx.bottom)
                ctx.layer.backward(ctx.top, propagate, ctx.bottom)
                return (None, None, *(torch.from_numpy(np.array(b.diff, dtype=np.float32)) for b in ctx.bottom))

        return Fn


def _converter(node: Any, graph: Any) -> Any:
    from convnet_io.torch_model.base import CaffeLayer

    fn = _PythonFunction.make()

    class PythonLayer(CaffeLayer):
        """A Caffe Python layer: ``{module}.{layer}``."""

        def __init__(self, instance: Any, num_tops: int):
            super().__init__()
            self.instance, self.num_tops = instance, num_tops

        def forward(self, *bottoms):
            out = fn.apply(self.instance, self.num_tops, *bottoms)
            return out[0] if len(out) == 1 else out

        def extra_repr(self) -> str:
            return f"{node.attrs.module}.{node.attrs.layer}"

    return PythonLayer(node.attrs.instance, len(node.tops))


@contextlib.contextmanager
def python_layers_allowed(allowed: bool | None) -> Iterator[None]:
    """The ``Python`` type registered (runnable when ``allowed``) for the span of the block."""
    from convnet_io.graph.layers import registry as specs
    from convnet_io.torch_model import registry as converters

    if allowed is None:
        allowed = default_allowed()
    outer = dict(_ACTIVE)
    if allowed:  # the layer modules `import caffe`
        from convnet_io.pycaffe.alias import install

        install()
    if _ACTIVE["depth"] == 0:
        if "Python" in specs._SPECS or "Python" in converters._CONVERTERS:
            raise RuntimeError("a 'Python' layer type is already registered elsewhere")
        specs._SPECS["Python"] = _spec_class()
        converters._CONVERTERS["Python"] = _converter
    _ACTIVE["depth"] += 1
    _ACTIVE["allowed"] = bool(allowed)
    try:
        yield
    finally:
        _ACTIVE.update(outer)
        if _ACTIVE["depth"] == 0:
            specs._SPECS.pop("Python", None)
            converters._CONVERTERS.pop("Python", None)
