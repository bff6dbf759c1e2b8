"""Bench section "convert": conversion latency as a user meets it, every command in a fresh process.

For LeNet, SqueezeNet 1.1 and AlexNet (seeded weights written as .caffemodel files):
``convnet export NET --weights W --onnx OUT --no-check``, the same with the ONNX Runtime check, and
caffe2onnx (the reference: ``python -m caffe2onnx.convert`` in its own Python 3.7 virtualenv,
``$C2O_PYTHON`` or /work/c2o-venv). The check's own cost is its wall time less the import floor
(a fresh interpreter importing torch, onnx and onnxruntime): the median over rounds of each
round's difference (the two run next to each other, so load that drifts between rounds cancels).
Also ``convnet --help`` and ``convnet build`` of a generated 1,000-layer net. Commands run in
interleaved rounds; medians.

Every Python here runs from compiled bytecode, as after ``pip install`` (which compiles): with
``PYTHONDONTWRITEBYTECODE`` set (as on the shared VM) an editable install would otherwise compile
convnet's ~140 modules from source in every process (0.2-0.3 s of CPU in each export), while
torch, onnx and onnxruntime come compiled from their wheels. The convnet commands and the import
floor read and write bytecode under a temporary ``PYTHONPYCACHEPREFIX`` filled before the rounds;
caffe2onnx (Python 3.7, which has no prefix) gets its package compiled in place once.
Where PYTHONDONTWRITEBYTECODE is set, LeNet's check is also timed as that environment runs it.

Run alone: ``python bench/convert_bench.py [--quick]``; ``bench/run.py --sections convert`` runs it
inside the suite.
"""
from __future__ import annotations

import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ROOT.parent / "shared" / "caffe-models"
NETS = {
    "LeNet": MODELS / "mnist" / "lenet.prototxt",
    "SqueezeNet 1.1": ROOT / "bench" / "squeezenet_v1.1_deploy.prototxt",
    "AlexNet": MODELS / "bvlc_alexnet" / "deploy.prototxt",
}
ROUNDS = {"LeNet": 7, "SqueezeNet 1.1": 5, "AlexNet": 3}
C2O_DEFAULT = Path("/work/c2o-venv/bin/python")
FROM_SOURCE = "convnet export (ONNX Runtime check), PYTHONDONTWRITEBYTECODE"
TARGETS = {"no_check_vs_caffe2onnx": 1.5, "check_cost_s": {"LeNet": 0.5, "AlexNet": 2.0},
           "help_s": 0.3, "build_1000_s": 0.5}


def log(msg: str) -> None:
    print(msg, flush=True)


def caffe2onnx_python() -> Path | None:
    p = Path(os.environ.get("C2O_PYTHON", C2O_DEFAULT))
    if not p.exists():
        return None
    ok = subprocess.run([str(p), "-c", "import caffe2onnx"], capture_output=True).returncode == 0
    return p if ok else None


def deep_net(path: Path, layers: int = 1000) -> Path:
    """A chain of 3x3 convolutions and in-place ReLUs: ``layers`` layers with the Input."""
    lines = ['name: "deep"', 'layer { name: "data" type: "Input" top: "data" '
             'input_param { shape { dim: 1 dim: 8 dim: 16 dim: 16 } } }']
    bottom = "data"
    for i in range(1, layers):
        if i % 2:
            lines.append(f'layer {{ name: "conv{i}" type: "Convolution" bottom: "{bottom}" top: "conv{i}" '
                         'convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }')
            bottom = f"conv{i}"
        else:
            lines.append(f'layer {{ name: "relu{i}" type: "ReLU" bottom: "{bottom}" top: "{bottom}" }}')
    path.write_text("\n".join(lines) + "\n")
    return path


def write_weights(net: Path, out: Path, seed: int = 1) -> Path:
    from convnet_io.api.loading import load_blobs, load_graph
    from convnet_io.caffe.caffemodel import write_caffemodel
    from convnet_io.caffe.weights import layer_blobs

    graph = load_graph(net)
    write_caffemodel(out, layer_blobs(graph, load_blobs(graph, seed=seed)[0]), net_name=graph.name)
    return out


def bytecode_env(prefix: Path) -> dict[str, str]:
    """The environment with bytecode read from and written under ``prefix``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(prefix)
    return env


def tree_bytecode() -> tuple[int, int]:
    """How many of convnet's modules have up-to-date bytecode in the tree's __pycache__ (what a
    process with PYTHONDONTWRITEBYTECODE and no prefix reads instead of compiling), of how many."""
    fresh = total = 0
    for src in [*(ROOT / "convnet_io").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]:
        total += 1
        pyc = src.parent / "__pycache__" / f"{src.stem}.{sys.implementation.cache_tag}.pyc"
        try:
            st, head = src.stat(), pyc.read_bytes()[8:16]  # the source's mtime and size, as recorded
        except OSError:
            continue
        fresh += head == struct.pack("<II", int(st.st_mtime) & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF)
    return fresh, total


def compile_ahead(env: dict[str, str], c2o: Path | None, warm: list[list[str]]) -> None:
    """Bytecode before the first timed round: convnet's packages compiled, ``warm`` run once (the
    modules of torch, onnx and onnxruntime an export imports), caffe2onnx's package compiled."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", str(ROOT / "convnet_io"), str(ROOT / "cli")],
                   env=env, capture_output=True, cwd=ROOT, check=False)
    for cmd in warm:
        subprocess.run(cmd, env=env, capture_output=True, cwd=ROOT, check=False)
    if c2o:
        code = "import compileall, os, caffe2onnx; compileall.compile_dir(os.path.dirname(caffe2onnx.__file__), quiet=1)"
        subprocess.run([str(c2o), "-c", code], capture_output=True, check=False)


def time_commands(commands: dict[str, list[str]], rounds: int, label: str,
                  env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """Each command once per round, interleaved; wall seconds (and the child's CPU seconds), each
    round's figures kept (``walls``, ``cpus``) for differences taken round by round."""
    walls: dict[str, list[float]] = {k: [] for k in commands}
    cpus: dict[str, list[float]] = {k: [] for k in commands}
    errors: dict[str, str] = {}
    for r in range(rounds):
        for name, cmd in commands.items():
            if name in errors:
                continue
            before = os.times()
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
            wall = time.perf_counter() - t0
            after = os.times()
            if proc.returncode != 0:
                errors[name] = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1][:200]
                log(f"    {name}: failed: {errors[name]}")
                continue
            walls[name].append(wall)
            cpus[name].append(after.children_user + after.children_system
                              - before.children_user - before.children_system)
        log(f"    {label}round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.2f} s" for k, v in walls.items() if v))
    out = {}
    for name in commands:
        if name in errors:
            out[name] = {"error": errors[name]}
        else:
            w = walls[name]
            out[name] = {"median_s": statistics.median(w), "min_s": min(w), "max_s": max(w), "runs": len(w),
                         "cpu_median_s": statistics.median(cpus[name]), "walls": w, "cpus": cpus[name]}
    return out


def paired(a: list[float], b: list[float]) -> float | None:
    """The median of the round-by-round differences a - b (both measured in every round)."""
    return statistics.median(x - y for x, y in zip(a, b)) if a and len(a) == len(b) else None


def run(quick: bool = False) -> dict[str, Any]:
    script = Path(sys.executable).parent / "convnet"  # the installed command, as a user runs it
    convnet = [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]
    c2o = caffe2onnx_python()
    log("[convert] conversion latency (fresh processes)" + ("" if c2o else ": caffe2onnx not found"))
    res: dict[str, Any] = {"nets": {}, "caffe2onnx": str(c2o) if c2o else None, "targets": {}}
    with tempfile.TemporaryDirectory(prefix="convnet-convert-") as tmp:
        tmp = Path(tmp)
        env = bytecode_env(tmp / "pycache")
        floor = {"python -c pass": [sys.executable, "-c", "pass"],
                 "import floor (torch, onnx, onnxruntime)": [sys.executable, "-c", "import torch, onnx, onnxruntime"],
                 "convnet --help": convnet + ["--help"],
                 "convnet build (1,000 layers)": convnet + ["build", str(deep_net(tmp / "deep.prototxt"))]}
        lenet = write_weights(NETS["LeNet"], tmp / "warm.caffemodel") if NETS["LeNet"].exists() else None
        warm = [floor["import floor (torch, onnx, onnxruntime)"]] + (
            [convnet + ["export", str(NETS["LeNet"]), "--weights", str(lenet), "--onnx", str(tmp / "w.onnx"),
                        "--device", "cpu"]] if lenet else [])
        compile_ahead(env, c2o, warm)
        res["bytecode"] = "compiled ahead (PYTHONPYCACHEPREFIX), as after pip install"
        res["light"] = time_commands(floor, 3 if quick else 7, "light ", env)
        floor_s = res["light"]["import floor (torch, onnx, onnxruntime)"]["median_s"]
        for net, path in NETS.items():
            if not path.exists():
                res["nets"][net] = {"error": f"{path} not found"}
                continue
            w = write_weights(path, tmp / (path.stem + ".caffemodel"))
            cmds = {"convnet export --no-check": convnet + ["export", str(path), "--weights", str(w), "--onnx",
                                                            str(tmp / "a.onnx"), "--no-check"],
                    "convnet export (ONNX Runtime check)": convnet + ["export", str(path), "--weights", str(w),
                                                                      "--onnx", str(tmp / "b.onnx"), "--device", "cpu"]}
            # the floor in the same rounds, so the check's own cost is measured under the same load
            cmds["import floor"] = floor["import floor (torch, onnx, onnxruntime)"]
            if net == "LeNet" and os.environ.get("PYTHONDONTWRITEBYTECODE"):
                # as this environment runs it: an editable install compiles convnet from source every time
                cmds[FROM_SOURCE] = ["env", "-u", "PYTHONPYCACHEPREFIX", "PYTHONDONTWRITEBYTECODE=1"] + \
                    cmds["convnet export (ONNX Runtime check)"]
            if c2o:
                cmds["caffe2onnx"] = [str(c2o), "-m", "caffe2onnx.convert", "--prototxt", str(path),
                                      "--caffemodel", str(w), "--onnx", str(tmp / "c.onnx")]
            rounds = 2 if quick else ROUNDS[net]
            r = time_commands(cmds, rounds if net != "AlexNet" or not quick else 1, f"{net} ", env)
            r = {"results": r, "weights_bytes": w.stat().st_size}
            nc, ck = r["results"]["convnet export --no-check"], r["results"]["convnet export (ONNX Runtime check)"]
            fl = r["results"].get("import floor", {})
            net_floor = fl.get("median_s", floor_s)
            if "median_s" in ck:
                # round by round against the floor run next to it; medians of each where a round failed
                cost = paired(ck["walls"], fl.get("walls", []))
                r["check_cost_s"] = cost if cost is not None else ck["median_s"] - net_floor
                r["floor_s"] = net_floor
                # CPU seconds beyond the floor's: the work itself, what load on the machine leaves alone
                if "cpus" in fl:
                    cpu = paired(ck["cpus"], fl["cpus"])
                    r["check_cpu_s"] = cpu if cpu is not None else ck["cpu_median_s"] - fl["cpu_median_s"]
            src = r["results"].get(FROM_SOURCE, {})
            if "walls" in src and "walls" in fl:
                r["tree_bytecode"] = tree_bytecode()
                r["check_cost_from_source_s"] = paired(src["walls"], fl["walls"])
                r["check_cpu_from_source_s"] = paired(src["cpus"], fl["cpus"])
                limit = TARGETS["check_cost_s"].get(net)
                if limit is not None:
                    res["targets"][f"{net}: the ONNX Runtime check costs at most {limit} s beyond the import floor"] = \
                        r["check_cost_s"] <= limit
            ref = r["results"].get("caffe2onnx", {})
            if "median_s" in ref and "median_s" in nc:
                r["no_check_vs_caffe2onnx"] = nc["median_s"] / ref["median_s"]
                res["targets"][f"{net}: export --no-check at most 1.5x caffe2onnx's time"] = \
                    r["no_check_vs_caffe2onnx"] <= TARGETS["no_check_vs_caffe2onnx"]
            res["nets"][net] = r
    light = res["light"]
    res["floor_s"] = floor_s
    res["targets"]["convnet --help at most 0.3 s"] = light["convnet --help"].get("median_s", 1e9) <= TARGETS["help_s"]
    res["targets"]["convnet build of a 1,000-layer net at most 0.5 s"] = \
        light["convnet build (1,000 layers)"].get("median_s", 1e9) <= TARGETS["build_1000_s"]
    return res


def markdown(res: dict[str, Any]) -> str:
    out = ["### e. Conversion latency (each command a fresh process; wall time, median)", "",
           f"Reference: caffe2onnx ({res['caffe2onnx'] or 'not installed: no reference'}). The check's own "
           "cost is its wall time less the import floor (a fresh interpreter importing torch, onnx and "
           "onnxruntime, timed next to it in each round; the median of the rounds' differences); CPU: its "
           "CPU time less the floor's (the check runs ONNX Runtime and the PyTorch reference on two "
           "threads, so on two idle cores the wall figure is below the CPU one). Every Python runs from "
           f"bytecode {res.get('bytecode', 'as found')}.", "",
           "| net | convnet --no-check | convnet + ORT check | check beyond floor | caffe2onnx | --no-check vs caffe2onnx |",
           "|---|---:|---:|---:|---:|---:|"]

    def cell(r: dict) -> str:
        return f"{r['median_s']:.2f} s" if "median_s" in r else f"failed: {r.get('error', '?')}"

    for net, r in res["nets"].items():
        if "results" not in r:
            out.append(f"| {net} | {r.get('error')} | | | | |")
            continue
        rr = r["results"]
        ratio = f"{r['no_check_vs_caffe2onnx']:.2f}x" if "no_check_vs_caffe2onnx" in r else "–"
        cost = f"{r['check_cost_s']:.2f} s (floor {r['floor_s']:.2f} s)" if "check_cost_s" in r else "–"
        if "check_cpu_s" in r:
            cost += f"; CPU {r['check_cpu_s']:.2f} s"
        out.append(f"| {net} ({r['weights_bytes'] / 1e6:.1f} MB) | {cell(rr['convnet export --no-check'])} | "
                   f"{cell(rr['convnet export (ONNX Runtime check)'])} | {cost} | "
                   f"{cell(rr['caffe2onnx']) if 'caffe2onnx' in rr else '–'} | {ratio} |")
    for net, r in res["nets"].items():
        if r.get("check_cost_from_source_s") is not None:
            fresh, total = r.get("tree_bytecode", (0, 0))
            out += ["", (f"{net} as this environment runs it (PYTHONDONTWRITEBYTECODE set, no prefix: bytecode "
                         f"only where the tree's __pycache__ has it, {fresh} of convnet's {total} modules; the "
                         f"others compiled from source in every process): the check costs "
                         f"{r['check_cost_from_source_s']:.2f} s beyond the floor "
                         f"(CPU {r['check_cpu_from_source_s']:.2f} s).")]
    out += ["", "| light path | median | CPU |", "|---|---:|---:|"]
    for name, r in res["light"].items():
        out.append(f"| {name} | {cell(r)} | {r.get('cpu_median_s', float('nan')):.2f} s |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import json

    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
