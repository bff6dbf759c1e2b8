"""Time `convnet build` on long chains of ReLU layers: wall time, CPU time and peak memory.

    .venv/bin/python tools/scale_check.py                  # 10k, 100k and 699,074 layers
    .venv/bin/python tools/scale_check.py --variants       # also in-place and one-field-a-line
    .venv/bin/python tools/scale_check.py --sizes 1000 50000

Each net is written to a temporary folder and built by a fresh `convnet build` process (output to
/dev/null), so the CLI's import floor is part of every figure. The target (issue 10): 700k layers
in at most 10 s and 1 GB. The load average is printed beside the figures: on a busy machine the
wall time says little, the CPU time more.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SIZES = (10_000, 100_000, 699_074)  # 699,074 layers: the 50 MB prototxt of the issue


def write_chain(path: Path, n: int, form: str = "chain") -> None:
    """``n`` layers: an Input, then ReLUs, each reading the previous one's top (``chain``), all
    rewriting one blob (``inplace``), or a chain written one field a line (``lines``)."""
    with open(path, "w") as f:
        top = "x" if form == "inplace" else "r0"
        f.write(f'name: "{form}"\nlayer {{ name: "data" type: "Input" top: "{top}" '
                'input_param { shape { dim: 1 dim: 4 } } }\n')
        for i in range(1, n):
            bottom, top = ("x", "x") if form == "inplace" else (f"r{i - 1}", f"r{i}")
            if form == "lines":
                f.write(f'layer {{\n  name: "relu{i}"\n  type: "ReLU"\n  bottom: "{bottom}"\n  top: "{top}"\n}}\n')
            else:
                f.write(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "{top}" }}\n')


def convnet() -> list[str]:
    script = Path(sys.executable).parent / "convnet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]


def measure(args: list[str]) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MB, exit status) of one command."""
    t0 = time.perf_counter()
    with open(os.devnull, "w") as null:
        proc = subprocess.Popen(args, stdout=null, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
    if proc.returncode != 0:
        print(f"  exit {proc.returncode}: {err[-500:]}", file=sys.stderr)
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, proc.returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES), help="layer counts")
    ap.add_argument("--variants", action="store_true", help="also in-place and one-field-a-line chains")
    ap.add_argument("--rounds", type=int, default=1, help="builds per net; the best is printed")
    a = ap.parse_args(argv)
    forms = ("chain", "inplace", "lines") if a.variants else ("chain",)
    tmp = Path(tempfile.mkdtemp(prefix="convnet-scale-"))
    failed = 0
    try:
        wall, cpu, rss, _ = measure(convnet() + ["--help"])
        print(f"load average {os.getloadavg()[0]:.2f}; import floor (convnet --help): "
              f"{wall:.2f} s wall, {cpu:.2f} s CPU, {rss:.0f} MB")
        print(f"{'form':8} {'layers':>9} {'MB':>6} {'wall s':>7} {'CPU s':>6} {'peak MB':>8} {'load':>5}")
        for form in forms:
            for n in a.sizes:
                path = tmp / f"{form}{n}.prototxt"
                write_chain(path, n, form)
                runs = [measure(convnet() + ["build", str(path)]) for _ in range(a.rounds)]
                wall, cpu, rss, code = min(runs)
                failed += code != 0
                print(f"{form:8} {n:>9,} {path.stat().st_size / 2**20:>6.1f} {wall:>7.2f} {cpu:>6.2f} "
                      f"{rss:>8.0f} {os.getloadavg()[0]:>5.2f}", flush=True)
                path.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
