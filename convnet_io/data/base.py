"""What every record source shares: the bad-record error, list files, the source interface."""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np

from convnet_io.errors import ConvnetError


class BadRecord(ConvnetError):
    """One record that cannot be used: a missing or undecodable image, a corrupt Datum, a label
    out of range, a size that does not fit. ``record`` names it (a path, or an LMDB key)."""

    def __init__(self, record: str, reason: str):
        self.record, self.reason = record, reason
        super().__init__(f"{record}: {reason}")


class RecordSource:
    """Records addressed by index ``0 .. len-1``, each a list with one array per top.

    Sources are opened lazily in the process that reads them (so a forked DataLoader worker opens
    its own LMDB environment or HDF5 file) and are cheap to copy to workers.
    """

    layer: str = ""
    kind: str = ""

    def __len__(self) -> int:
        raise NotImplementedError

    def name_of(self, index: int) -> str:
        """How an error names record ``index``: its path or its key."""
        raise NotImplementedError

    def read(self, index: int) -> list[Any]:
        """The raw record: one array (or scalar) per top. Raises :class:`BadRecord`."""
        raise NotImplementedError

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray | None:
        """Record indices in the order epoch ``epoch`` reads them; None for the stored order."""
        return None

    def close(self) -> None:
        """Release open handles (they reopen on the next read)."""


def join_root(root: str, name: str) -> str:
    """Caffe's ``root_folder + filename``, with the separator added when the root lacks it."""
    if not root:
        return name
    return root + name if root.endswith(("/", os.sep)) else root + "/" + name


def parse_list_line(line: str) -> tuple[str, str] | None:
    """``path label`` split at the last run of whitespace (Caffe: ``find_last_of(' ')``, so paths
    may hold spaces); None for a blank line."""
    text = line.rstrip("\r\n").strip()
    if not text:
        return None
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
        return (text, "")
    return parts[0], parts[1]


def read_list_file(path: str | os.PathLike, need_labels: bool = True) -> list[tuple[str, int]]:
    """The ``path label`` lines of an image list (convert_imageset's LISTFILE, ImageData's source).

    Caffe reads a missing or non-numeric label as 0 (``atoi``); here it is an error naming the
    line, so no record gets a wrong label silently."""
    try:
        with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such list file") from None
    except IsADirectoryError:
        raise ConvnetError(f"{path}: is a directory, not a list file") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    out: list[tuple[str, int]] = []
    for lineno, line in enumerate(lines, 1):
        parsed = parse_list_line(line)
        if parsed is None:
            continue
        name, label_text = parsed
        if not label_text:
            if need_labels:
                raise ConvnetError(f"{path}:{lineno}: expected 'path label', got '{name}'")
            out.append((name, 0))
            continue
        try:
            label = int(label_text)
        except ValueError:
            raise ConvnetError(f"{path}:{lineno}: '{label_text}' is not an integer label "
                               f"(line '{line.strip()}')") from None
        if not -2**31 <= label < 2**31:
            raise ConvnetError(f"{path}:{lineno}: label {label} does not fit Caffe's int32")
        out.append((name, label))
    return out


def check_label(record: str, label: float, num_classes: int | None) -> None:
    """A label must name one of ``num_classes`` classes (when the number is known)."""
    if num_classes is None:
        return
    if not (0 <= label < num_classes):
        raise BadRecord(record, f"label {label:g} is out of range for {num_classes} classes "
                        f"(0..{num_classes - 1})")


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(int(d)) for d in shape) or "scalar"


def layer_salt(layer: str) -> int:
    """A stable number for a layer name, so two data layers draw different random numbers."""
    import zlib

    return zlib.crc32(layer.encode("utf-8"))


def rng_for(*parts: int) -> np.random.Generator:
    """A generator determined by ``parts`` alone (seed, layer, epoch, record, ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(p) % (1 << 64) for p in parts]))
