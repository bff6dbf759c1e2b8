"""Errors a user can act on. The CLI prints them as one line and exits 2."""
from __future__ import annotations


class ConvnetError(Exception):
    """Bad input: a malformed file, an inconsistent net, weights that do not fit."""

    exit_code = 2


class ParseError(ConvnetError):
    """A file that cannot be parsed, located as ``path:line:col``."""

    def __init__(self, path: str, line: int | None, column: int | None, message: str):
        self.path, self.line, self.column, self.message = path, line, column, message
        where = str(path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {message}")


class LayerError(ConvnetError):
    """A problem with one layer of a net, named in the message."""

    def __init__(self, layer: str, message: str, layer_type: str | None = None):
        self.layer, self.layer_type, self.message = layer, layer_type, message
        kind = f" ({layer_type})" if layer_type else ""
        super().__init__(f"layer '{layer}'{kind}: {message}")
