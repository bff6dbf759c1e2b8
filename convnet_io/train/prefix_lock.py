"""One trainer per snapshot prefix: two trainers writing ``<prefix>_iter_N.caffemodel`` would
overwrite each other's snapshots silently, so the second one is refused while the first runs."""
from __future__ import annotations

import os
from pathlib import Path

from convnet_io.errors import ConvnetError


class PrefixLock:
    """An exclusive ``flock`` on ``<prefix>.lock``, held while a trainer runs (the kernel drops it
    when the process dies, even by SIGKILL, so a stale lock file never blocks the next run)."""

    def __init__(self, prefix: str):
        self.path = Path(f"{prefix}.lock")
        self.fd: int | None = None

    def acquire(self) -> PrefixLock:
        import fcntl

        if not self.path.parent.is_dir():
            return self  # nothing can be snapshotted there; the snapshot itself will say so
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError:
            return self  # a read-only folder: the snapshot will report it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            finally:
                os.close(fd)
            raise ConvnetError(f"snapshot prefix {self.path.with_suffix('')}: another trainer ({holder}) is "
                               "using it; its snapshots would be overwritten (set another snapshot_prefix)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None
