"""Python layers (``type: "Python"``): placeholder until the layer type lands."""
from __future__ import annotations

import contextlib


@contextlib.contextmanager
def python_layers_allowed(allowed: bool):
    yield


def allow_python_layers_by_default(allowed: bool) -> None:
    pass
