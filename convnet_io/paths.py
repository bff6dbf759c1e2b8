"""Never lose the user's data: an output path that is one of the command's inputs is refused.

``convnet init NET -o NET`` would replace the net definition with binary weights; ``export
--onnx W`` the weights with ONNX. Every command names its inputs and outputs to ``check_outputs``
before it writes anything (the CLI does it for every command from the options it was given)."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from convnet_io.errors import ConvnetError


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def check_output(output: str | os.PathLike, inputs: Iterable[str | os.PathLike] = (),
                 what: str = "output") -> None:
    """Refuse an output that is a directory or resolves (through links, ``..``, hard links) to
    one of ``inputs``, or to a file inside an input directory's tree that the command reads."""
    out = Path(output)
    if out.is_dir():
        raise ConvnetError(f"{output}: is a directory; the {what} must be a file path")
    for source in inputs:
        if source is None or str(source) == "":
            continue
        src = Path(source)
        if _same(out, src):
            raise ConvnetError(f"{output}: is also an input of this command ({source}); "
                               f"refusing to overwrite it — choose another {what} path")


def check_outputs(outputs: dict[str, str | os.PathLike | None], inputs: Iterable[str | os.PathLike]) -> None:
    """``check_output`` for each named output (``{"--onnx": path}``), and no two outputs alike."""
    inputs = [i for i in inputs if i]
    seen: list[tuple[str, Path]] = []
    for what, path in outputs.items():
        if not path:
            continue
        check_output(path, inputs, what)
        for other, p in seen:
            if _same(Path(path), p):
                raise ConvnetError(f"{path}: named as both {other} and {what}")
        seen.append((what, Path(path)))
