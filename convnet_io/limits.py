"""Limits checked before work: the memory budget and the size of input files.

A 0.5 MB PNG can decode to gigabytes, a net line can ask for 10^13 weights, ``/dev/zero`` never
ends. Each is refused before the allocation or the read that would hurt, with one line naming the
file or layer and the sizes. The budget defaults to a fraction of the machine's memory; the CLI's
``--max-memory`` (or ``CONVNET_MAX_MEMORY``) changes it."""
from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from convnet_io.errors import ConvnetError

# Half of the machine: room for the process's own copies (a net's blobs are read, converted and
# held by the runtime) without pushing the rest of the machine into swap.
DEFAULT_FRACTION = 0.5
# Text inputs (prototxt, solver, Caffe2 listings, lists): a 50 MB prototxt holds 700k layers; a
# file of gigabytes is not a net definition.
MAX_TEXT_BYTES = 256 * 2**20

_budget: int | None = None
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20, "mib": 2**20,
          "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40, "tib": 2**40}


@functools.lru_cache(maxsize=1)
def machine_memory() -> int:
    """Physical memory in bytes (a cgroup limit counts when it is smaller)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 * 2**30
    for f in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(f).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < total:
            total = int(text)
    return total


def parse_size(text: str) -> int:
    """``4G``, ``512MiB``, ``1e9`` -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ConvnetError(f"'{text}' is not a memory size like 4G, 512M or 1000000000")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not value >= 1:
        raise ConvnetError(f"'{text}': the memory budget must be at least one byte")
    return int(value)


def memory_budget() -> int:
    """The bytes one command may allocate for a net's blobs, weights or an image."""
    if _budget is not None:
        return _budget
    env = os.environ.get("CONVNET_MAX_MEMORY")
    if env:
        return parse_size(env)
    return int(machine_memory() * DEFAULT_FRACTION)


def set_memory_budget(size: int | str | None) -> None:
    """Set the budget for this process (None: back to the default)."""
    global _budget
    _budget = None if size is None else (parse_size(size) if isinstance(size, str) else int(size))


def human(nbytes: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if abs(nbytes) < 1024 or unit == "EiB":
            return f"{nbytes:,.0f} {unit}" if unit == "bytes" else f"{nbytes:,.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.3g}"


def check_memory(what: str, nbytes: float, detail: str = "") -> None:
    """Refuse ``what`` when it would need more than the budget; ``detail`` says where the size
    comes from (``1 x 3 x 13000 x 13000 pixels``)."""
    budget = memory_budget()
    if nbytes > budget:
        extra = f" ({detail})" if detail else ""
        raise ConvnetError(f"{what}: needs {human(nbytes)}{extra}, over the memory budget of {human(budget)} "
                           "(--max-memory to change)")


def read_bytes_limited(path: str | os.PathLike, limit: int | None = None, what: str = "file") -> bytes:
    """The whole file, refused once more than ``limit`` bytes have been read (``/dev/zero``, a
    FIFO, a multi-gigabyte file given as a net definition). OSError is left to the caller."""
    limit = MAX_TEXT_BYTES if limit is None else limit
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ConvnetError(f"{path}: over {human(limit)}; too large for a {what}")
    return data


# Bytes held per pixel while an image becomes a float array: the decoded bands, the float32
# H x W x 3 copy and the float64 intermediate a 16-bit image goes through.
IMAGE_BYTES_PER_PIXEL = 4 + 3 * 4 + 8


def check_image(where: str, width: int, height: int, bands: int = 3) -> None:
    """Refuse an image from its header, before decoding: a 0.5 MB PNG can say 13000 x 13000."""
    pixels = int(width) * int(height)
    check_memory(where, pixels * max(IMAGE_BYTES_PER_PIXEL, bands * 4 + 16),
                 f"{width} x {height} pixels, {bands} band(s) to decode")
