"""Text from a user's files shown on a terminal: control characters escaped, never sent raw.

A layer name or an unknown field can hold ESC sequences (colour changes, a window-title rewrite,
a cursor moved back over an error). Every printer and every error message goes through
``escape``; the CLI also filters its streams with ``EscapingStream`` so nothing is missed."""
from __future__ import annotations

import re
from typing import TextIO

# C0 controls except newline and tab, DEL, the C1 controls, and the bidirectional overrides that
# reorder what is shown (a name that reads differently from what it is).
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# What a stream lets through besides newline and tab: carriage returns, which progress bars redraw
# their line with (names themselves never keep one: ``name`` escapes it).
_STREAM_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_CONTROL_WITH_NEWLINES = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _replace(m: re.Match) -> str:
    c = ord(m.group())
    if c == 0x0A:
        return "\\n"
    if c == 0x09:
        return "\\t"
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def escape(text: object, newlines: bool = True) -> str:
    """``text`` with control characters written as ``\\xNN``; with ``newlines=False`` newlines and
    tabs are escaped too (a name shown inside one line)."""
    s = str(text)
    pattern = _CONTROL if newlines else _CONTROL_WITH_NEWLINES
    return pattern.sub(_replace, s) if pattern.search(s) else s


def name(text: object) -> str:
    """A name from a file (layer, blob, field) for one line of output."""
    return escape(text, newlines=False)


class EscapingStream:
    """A text stream that escapes control characters on the way out (the CLI's stdout/stderr)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a text stream refuses bytes (click probes with b"")
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._stream.write(_STREAM_CONTROL.sub(_replace, text) if _STREAM_CONTROL.search(text) else text)
        return len(text)

    def __getattr__(self, attr: str):
        return getattr(self._stream, attr)
