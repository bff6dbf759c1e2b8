"""Writing files so that nothing half-written is ever left at the destination."""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _umask() -> int:
    """The process's umask (read without changing it where /proc says it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_pattern(name: str) -> re.Pattern:
    return re.compile(rf"^\.{re.escape(name)}\.convnet-(\d+)-[0-9a-z_]+\.tmp")


def sweep_stale(target: Path) -> None:
    """Remove temporary files of this helper's own pattern for ``target`` left by a killed
    writer (SIGKILL, power loss): those whose process is gone."""
    folder = target.parent if str(target.parent) else Path(".")
    pattern = _temp_pattern(target.name)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if not m or int(m.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # its writer is still running
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                import shutil

                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
        except OSError:
            pass


@contextmanager
def atomic_output(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; when the block succeeds it replaces
    ``path`` in one rename, when it fails the temporary file is removed. The file gets the mode
    any new file gets (0666 less the umask), like the outputs of other tools."""
    from convnet_io.errors import ConvnetError

    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    sweep_stale(target)
    try:
        fd, tmp = tempfile.mkstemp(dir=str(folder), prefix=f".{target.name}.convnet-{os.getpid()}-",
                                   suffix=".tmp" + suffix)
    except OSError as e:
        raise ConvnetError(f"{target}: cannot write here: {e.strerror or e}") from None
    os.close(fd)
    try:
        try:
            yield Path(tmp)
            if Path(tmp).exists():
                os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except OSError as e:  # no space, no permission: the user's to fix, named by the target
            if isinstance(e, (FileNotFoundError, IsADirectoryError)) and e.filename not in (None, tmp):
                raise
            raise ConvnetError(f"{target}: cannot write: {e.strerror or e}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> None:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
