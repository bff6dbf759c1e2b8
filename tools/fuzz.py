"""`make fuzz`: N mutated cases per reader (default 10,000), each target in its own process.

Prints, per target: cases, failures (an exception
other than ConvnetError, i.e. an exit 3 in the CLI, or a case over 10 s), the slowest case and the
process's peak memory against the memory budget. Each failing input is written under
``out/fuzz/`` so it can become a regression test. Exit 1 when any target failed."""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def child(name: str, cases: int, seed: int, out: Path) -> None:
    import fuzzing

    from convnet_io.limits import memory_budget

    warnings.simplefilter("ignore")
    target = fuzzing.TARGETS_BY_NAME[name]
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    progress = out / f"{name}.progress"

    def note(report) -> None:  # how far a long run has got, readable while it runs
        progress.write_text(json.dumps({"cases": report.cases, "failures": len(report.failures),
                                        "seconds": round(time.time() - t0),
                                        "kinds": sorted({f"{f.kind}: {f.message[:160]}" for f in report.failures})})
                            + "\n")

    report = fuzzing.run_target(target, cases, seed, on_progress=note)
    for f in report.failures:
        (out / f"{name}-{f.case}.bin").write_bytes(f.data)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"target": name, "cases": report.cases, "failures": len(report.failures),
                      "kinds": sorted({f"{f.kind}: {f.message[:160]}" for f in report.failures}),
                      "first": [f.case for f in report.failures[:5]], "slowest_s": round(report.slowest_s, 3),
                      "slowest_cpu_s": round(report.slowest_cpu_s, 3),
                      "seconds": round(time.time() - t0, 1), "peak_bytes": peak, "budget_bytes": memory_budget()}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--target", action="append", help="only these targets (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "out" / "fuzz"))
    ap.add_argument("--jobs", type=int, default=1, help="targets run at the same time")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.cases, args.seed, Path(args.out))
        return 0
    import fuzzing

    names = args.target or [t.name for t in fuzzing.TARGETS]
    failed = False
    print(f"{'target':16} {'cases':>7} {'failures':>8} {'slowest CPU':>12} {'(wall)':>8} {'peak MiB':>9} "
          f"{'time':>7}", flush=True)
    running: list[tuple[str, subprocess.Popen]] = []
    pending = list(names)
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            running.append((name, subprocess.Popen(
                [sys.executable, __file__, "--child", name, "--cases", str(args.cases), "--seed", str(args.seed),
                 "--out", args.out], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"})))
        name, proc = running.pop(0)
        stdout, stderr = proc.communicate()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if proc.returncode or not lines:
            print(f"{name:16} crashed (exit {proc.returncode}): {stderr.strip()[-400:]}")
            failed = True
            continue
        r = json.loads(lines[-1])
        over = r["peak_bytes"] > r["budget_bytes"] or r["slowest_cpu_s"] > 10
        failed |= bool(r["failures"]) or over
        print(f"{name:16} {r['cases']:>7} {r['failures']:>8} {r['slowest_cpu_s']:>11.2f}s {r['slowest_s']:>7.2f}s "
              f"{r['peak_bytes'] / 2**20:>9.0f} {r['seconds']:>6.0f}s" + ("  OVER LIMIT" if over else ""))
        for k in r["kinds"]:
            print(f"    {k}  (cases {r['first']})")
        sys.stdout.flush()
    return 1 if failed else 0


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    sys.exit(main())
