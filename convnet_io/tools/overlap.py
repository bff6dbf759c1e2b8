"""Work run on a second thread so that it overlaps the caller's.

The export check spends most of its time where Python's lock is released: importing torch's shared
libraries, writing the file, ONNX Runtime building its session and running it, torch's kernels. On
two cores the ONNX Runtime side and the PyTorch side of the check can run at the same time; the
result (or the exception) is handed back to the thread that asks for it.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Background:
    """``fn(*args)`` started now on a daemon thread; ``result()`` waits for it and returns its value
    or raises its exception in the caller's thread."""

    def __init__(self, fn: Callable[..., Any], *args: Any, name: str = "convnet-background"):
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn, args), name=name, daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            self._value = fn(*args)
        except BaseException as e:  # noqa: BLE001  (raised again where result() is asked for)
            self._error = e

    def done(self) -> bool:
        return not self._thread.is_alive()

    def wait(self) -> None:
        """Wait for it to end, whatever it returns or raises (before the caller raises on: the
        process does not exit under a thread still inside a native library)."""
        self._thread.join()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def preload(*modules: str) -> Background:
    """Import ``modules`` on a second thread (third-party ones only: a module of this package
    imported from two threads at once could meet itself half-initialised)."""
    import importlib

    return Background(lambda: [importlib.import_module(m) for m in modules], name="convnet-preload")
