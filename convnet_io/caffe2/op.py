"""One Caffe2 operator as read from a net: type, inputs, outputs and typed arguments, with the
position it came from for error messages."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convnet_io.errors import ParseError

# Kernel choices and workspace hints of Caffe2's engines (cuDNN's among them): the result is the same.
IGNORED_ARGS = frozenset({"engine", "ws_nbytes_limit", "exhaustive_search", "shared_buffer", "use_cudnn",
                          "cudnn_exhaustive_search", "deterministic", "float16_compute"})


@dataclass
class Arg:
    name: str
    value: Any  # int, float, str, or a list of those
    text: str
    col: int


@dataclass
class Op:
    """One ``op:`` line: type, blobs and arguments, each with its 1-based column."""

    type: str
    inputs: list[str]
    outputs: list[str]
    args: dict[str, Arg]
    path: str
    line: int
    col: int
    input_cols: list[int] = field(default_factory=list)
    output_cols: list[int] = field(default_factory=list)

    def error(self, message: str, col: int | None = None) -> ParseError:
        return ParseError(self.path, self.line, col or self.col, f"{self.type}: {message}")

    def arg_error(self, name: str, message: str) -> ParseError:
        return self.error(message, self.args[name].col)

    # -- typed arguments ------------------------------------------------------------------------
    def has(self, name: str) -> bool:
        return name in self.args

    def get_int(self, name: str, default: int | None = None) -> int | None:
        a = self.args.get(name)
        if a is None:
            return default
        v = _as_int(a.value)
        if v is None:
            raise self.arg_error(name, f"argument '{name}' must be an integer, got '{a.text}'")
        return v

    def get_float(self, name: str, default: float | None = None) -> float | None:
        a = self.args.get(name)
        if a is None:
            return default
        if isinstance(a.value, (int, float)):
            return float(a.value)
        raise self.arg_error(name, f"argument '{name}' must be a number, got '{a.text}'")

    def get_ints(self, name: str) -> list[int] | None:
        a = self.args.get(name)
        if a is None:
            return None
        values = a.value if isinstance(a.value, list) else [a.value]
        out = [_as_int(v) for v in values]
        if any(v is None for v in out):
            raise self.arg_error(name, f"argument '{name}' must be a list of integers, got '{a.text}'")
        return out  # type: ignore[return-value]

    def get_str(self, name: str, default: str | None = None) -> str | None:
        a = self.args.get(name)
        return default if a is None else str(a.value)

    def get_bool(self, name: str, default: bool = False) -> bool:
        v = self.get_int(name, int(default))
        if v not in (0, 1):
            raise self.arg_error(name, f"argument '{name}' must be 0 or 1, got {v}")
        return bool(v)


    def check_args(self, allowed: frozenset[str]) -> None:
        """An error at the first argument not in ``allowed``, listing the supported ones."""
        for name, a in self.args.items():
            if name not in allowed:
                supported = ", ".join(sorted(allowed - IGNORED_ARGS)) or "none"
                raise self.error(f"unknown or unsupported argument '{name}' (supported: {supported})", a.col)

def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return int(v.lower() == "true")
    return None
