"""``import caffe`` answered by convnet: a meta path finder maps ``caffe`` and ``caffe.<sub>``
(``caffe.io``, ``caffe.proto.caffe_pb2``, ``caffe.draw``, ...) to ``convnet_io.pycaffe[.<sub>]``,
so old scripts run unchanged (``convnet pycaffe SCRIPT.py``, ``python -m convnet_io.pycaffe``)."""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import runpy
import sys
from collections.abc import Sequence

# pycaffe module names whose contents live in another convnet module
_RENAMED = {"caffe.pycaffe": "convnet_io.pycaffe", "caffe._caffe": "convnet_io.pycaffe"}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str):
        self.target = target

    def create_module(self, spec):
        return importlib.import_module(self.target)

    def exec_module(self, module) -> None:
        pass  # the convnet module is already imported


class CaffeAlias(importlib.abc.MetaPathFinder):
    """Finds ``caffe`` and its submodules in ``convnet_io.pycaffe``."""

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "caffe" and not fullname.startswith("caffe."):
            return None
        real = _RENAMED.get(fullname, "convnet_io.pycaffe" + fullname[len("caffe"):])
        if importlib.util.find_spec(real) is None:
            return None
        module = importlib.import_module(real)
        is_package = hasattr(module, "__path__")
        spec = importlib.util.spec_from_loader(fullname, _AliasLoader(real), is_package=is_package)
        if is_package:
            spec.submodule_search_locations = list(module.__path__)
        return spec


def install() -> None:
    """Make ``import caffe`` import convnet's pycaffe (idempotent). An already imported real
    ``caffe`` is left alone."""
    if not any(isinstance(f, CaffeAlias) for f in sys.meta_path):
        sys.meta_path.insert(0, CaffeAlias())


def run_script(script: str, args: Sequence[str] = (), allow_python_layers: bool = False) -> None:
    """Run ``script`` as ``__main__`` with ``sys.argv = [script, *args]`` and ``import caffe``
    answered by convnet; its folder is first on ``sys.path``, as ``python script.py`` has it."""
    from convnet_io.errors import ConvnetError
    from convnet_io.pycaffe.python_layer import allow_python_layers_by_default

    if not os.path.isfile(script):
        raise ConvnetError(f"{script}: no such script")
    install()
    allow_python_layers_by_default(allow_python_layers)
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
