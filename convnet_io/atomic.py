"""Writing files so that nothing half-written is ever left at the destination."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; when the block succeeds it replaces
    ``path`` in one rename, when it fails the temporary file is removed."""
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=str(folder), prefix=f".{target.name}.", suffix=suffix)
    except OSError as e:
        from convnet_io.errors import ConvnetError

        raise ConvnetError(f"{target}: cannot write here: {e.strerror or e}") from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
