"""Bench section "train2": training iterations per second against real Caffe, and 2-process scaling.

a. LeNet (batch 64) and AlexNet (batch 32) on one in-memory batch: both nets' TRAIN phase with the
   Data layers replaced by one Input layer (data, label) -- the same prototxt and the same solver
   file (SGD, base_lr 0.01, momentum 0.9, weight_decay 5e-4, the nets' own lr/decay multipliers)
   for every contender:
   * convnet: a ``Trainer`` built from that solver file doing what ``convnet train``'s loop does
     per iteration (``Trainer._train_step``: seeding, forward, loss backward, the loss and outputs
     read back; then ``CaffeSolver.step``), with ``use_fast_cpu_settings`` as ``train`` applies it;
   * the hand-written torch loop (``nn.Sequential`` + ``torch.optim.SGD`` with the same lr/decay
     per blob, starting from the same weights), in the same process and so with the same
     allocator settings;
   * real BVLC Caffe's ``SGDSolver.step(1)`` (pycaffe, ``$CAFFE_PYTHON`` or /work/caffe-venv,
     GLOG_minloglevel=2) on the same solver file, the batch written into ``solver.net.blobs`` once;
     a child process that steps on request, so its iterations are interleaved with the others'.
   Each round times one iteration of each (wall and CPU time); the medians are reported.
b. ``convnet train`` on LeNet (the scikit-learn digits as an LMDB) at global batch 64: one process
   with 2 intra-op threads vs 2 processes x 1 thread x 32 (gloo), and one process with 1 thread;
   iterations per second from the difference between a short and a long run, so process start and
   data set-up cancel out. The gloo all-reduce of LeNet's gradients is timed on its own.

Run alone: ``python bench/train_bench.py [--quick]``.
"""
from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.run import CpuMonitor, hand_written_alexnet, log

MODELS = ROOT.parent / "shared" / "caffe-models"
NETS = {"LeNet": (MODELS / "mnist" / "lenet_train_test.prototxt", 64, (1, 28, 28), 10),
        "AlexNet": (ROOT / "prototxt" / "alexnet.prototxt", 32, (3, 227, 227), 1000)}
CAFFE_DEFAULT = Path("/work/caffe-venv/bin/python")
SOLVER = ('base_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: "fixed"\nmax_iter: 1000000\n'
          'display: 0\nsnapshot: 0\nsnapshot_after_train: false\nsolver_mode: CPU\n')
CONVNET, HAND, CAFFE = ("convnet train step (Trainer + CaffeSolver)", "hand-written torch loop",
                        "BVLC Caffe SGDSolver.step (pycaffe)")

# The Caffe child: set-up, one warm-up step, then one timed step per line read from stdin.
CAFFE_STEP = r'''
import os, sys, time, json
os.environ.setdefault("GLOG_minloglevel", "2")
import numpy as np, caffe
caffe.set_mode_cpu()
solver = caffe.SGDSolver(sys.argv[1])
d = np.load(sys.argv[2])
solver.net.blobs["data"].data[...] = d["data"]
solver.net.blobs["label"].data[...] = d["label"]
solver.step(1)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    if line.strip() != "step":
        break
    t0, c0 = time.perf_counter(), time.process_time()
    solver.step(1)
    print(json.dumps({"wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
                      "loss": float(solver.net.blobs["loss"].data)}), flush=True)
'''


def hand_written_lenet():
    from torch import nn

    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2, 2), nn.Conv2d(20, 50, 5), nn.MaxPool2d(2, 2),
                         nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10))


def caffe_python() -> Path | None:
    p = Path(os.environ.get("CAFFE_PYTHON", CAFFE_DEFAULT))
    return p if p.exists() else None


def input_train_net(path: Path, batch: int, item: tuple[int, ...]) -> str:
    """The TRAIN net with its Data layers replaced by one Input layer (data, label) and TEST-only
    layers dropped: what pycaffe trains on an in-memory batch."""
    from google.protobuf import text_format

    from convnet_io.caffe.proto import caffe_pb2
    from convnet_io.caffe.prototxt import read_net

    net, _ = read_net(path)
    out = caffe_pb2.NetParameter(name=net.name)
    inp = out.layer.add(name="input", type="Input", top=["data", "label"])
    inp.input_param.shape.add(dim=[batch, *item])
    inp.input_param.shape.add(dim=[batch])
    for layer in net.layer:
        if layer.type in ("Data", "ImageData", "HDF5Data", "Input"):
            continue
        if any(r.HasField("phase") and r.phase == caffe_pb2.TEST for r in layer.include):
            continue
        copy = out.layer.add()
        copy.CopyFrom(layer)
        del copy.include[:]
    return text_format.MessageToString(out)


class CaffeChild:
    """pycaffe in its own interpreter, stepping when asked."""

    def __init__(self, python: Path, solver: Path, batch: Path):
        self.proc = subprocess.Popen([str(python), "-c", CAFFE_STEP, str(solver), str(batch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env={**os.environ, "GLOG_minloglevel": "2"})
        self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines() or ["no output"]
            raise RuntimeError(err[-1][:200])
        return json.loads(line)

    def step(self) -> dict:
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _hand_loop(name: str, trainer, data, labels):
    """nn.Sequential with the Trainer's initial weights; torch.optim.SGD with each blob's
    lr_mult / decay_mult as a parameter group."""
    import torch

    seq = (hand_written_lenet() if name == "LeNet" else hand_written_alexnet()).train()
    layers = [m for m in seq if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    learnable = [n for n in trainer.train_graph.nodes if n.type in ("Convolution", "InnerProduct")]
    groups = []
    with torch.no_grad():
        for m, node in zip(layers, learnable):
            blobs = trainer.module.layer(node.name).caffe_blobs()
            for p, blob, spec in zip((m.weight, m.bias), blobs, node.params):
                p.copy_(blob.reshape(p.shape))
                groups.append({"params": [p], "lr": 0.01 * spec.lr_mult, "weight_decay": 0.0005 * spec.decay_mult})
    opt = torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    criterion = torch.nn.CrossEntropyLoss()
    x, target = torch.from_numpy(data), torch.from_numpy(labels).long()

    def step():
        opt.zero_grad(set_to_none=True)
        loss = criterion(seq(x), target)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def bench_in_memory(name: str, quick: bool, tmp: Path) -> dict[str, Any]:
    import torch

    from convnet_io.train.config import TrainOptions
    from convnet_io.train.trainer import Trainer

    path, batch, item, classes = NETS[name]
    log(f"[train2] {name}, batch {batch}: one iteration on an in-memory batch "
        f"(torch {torch.get_num_threads()} threads)")
    d = tmp / name
    d.mkdir()
    (d / "net.prototxt").write_text(input_train_net(path, batch, item))
    (d / "solver.prototxt").write_text(f'net: "{d / "net.prototxt"}"\n' + SOLVER)
    rng = np.random.default_rng(0)
    scale = 1.0 if name == "LeNet" else 50.0
    data = (rng.standard_normal((batch, *item)) * scale).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    np.savez(d / "batch.npz", data=data, label=labels.astype(np.float32))

    trainer = Trainer(TrainOptions(solver=str(d / "solver.prototxt"), device="cpu", workers=0, quiet=True))
    hand_step = _hand_loop(name, trainer, data, labels)  # the initial weights, before any layout change
    trainer.use_fast_cpu_settings()  # what Trainer.train does first
    feeds = {"data": torch.from_numpy(data), "label": torch.from_numpy(labels.astype(np.float32))}
    feeds_iter = itertools.repeat(feeds)

    def convnet_step():  # the body of Trainer.train's loop without display/test/snapshot
        loss, _ = trainer._train_step(feeds_iter)
        trainer.solver.step()
        return loss

    caffe = None
    res: dict[str, Any] = {}
    cp = caffe_python()
    if cp is None:
        res[CAFFE] = {"error": "no pycaffe interpreter (set CAFFE_PYTHON)"}
    else:
        try:
            caffe = CaffeChild(cp, d / "solver.prototxt", d / "batch.npz")
        except (RuntimeError, OSError, ValueError) as e:
            res[CAFFE] = {"error": str(e)}
    rounds = (3 if quick else 9) if name == "AlexNet" else (10 if quick else 40)
    wall: dict[str, list[float]] = {CONVNET: [], HAND: [], CAFFE: []}
    cpu: dict[str, list[float]] = {CONVNET: [], HAND: [], CAFFE: []}
    first_loss = {CONVNET: convnet_step(), HAND: hand_step()}  # warm-up
    mon = CpuMonitor()
    try:
        for r in range(rounds):
            for key, fn in ((CONVNET, convnet_step), (HAND, hand_step)):
                time.sleep(0.05)
                t0, c0 = time.perf_counter(), time.process_time()
                fn()
                wall[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
            if caffe is not None:
                time.sleep(0.05)
                try:
                    out = caffe.step()
                    wall[CAFFE].append(out["wall"])
                    cpu[CAFFE].append(out["cpu"])
                except (RuntimeError, OSError, ValueError) as e:
                    res[CAFFE] = {"error": str(e)}
                    caffe = None
            log(f"    {name} round {r + 1}/{rounds}: " + ", ".join(
                f"{k.split(' (')[0]} {1000 * v[-1]:.1f} ms" for k, v in wall.items() if v))
    finally:
        if caffe is not None:
            caffe.close()
    for key, ts in wall.items():
        if ts:
            med = statistics.median(ts)
            res[key] = {"median_s": med, "min_s": min(ts), "max_s": max(ts), "runs": len(ts),
                        "cpu_median_s": statistics.median(cpu[key]), "iterations_per_s": 1.0 / med}
    conv, hand = res[CONVNET]["median_s"], res[HAND]["median_s"]
    out: dict[str, Any] = {"batch": batch, "results": res, "others_cores": mon.others(), "vs_hand": conv / hand,
                           "vs_hand_cpu": res[CONVNET]["cpu_median_s"] / res[HAND]["cpu_median_s"],
                           "first_loss": first_loss, "threads": torch.get_num_threads(),
                           "channels_last": trainer.module.layer(
                               next(n.name for n in trainer.train_graph.nodes if n.type == "Convolution")
                           ).weight.is_contiguous(memory_format=torch.channels_last),
                           "targets": {f"{name}: training step at most 1.05x the hand-written torch loop's time":
                                       conv / hand <= 1.05}}
    if "median_s" in res.get(CAFFE, {}):
        out["speed_vs_caffe"] = res[CAFFE]["median_s"] / conv
        out["speed_vs_caffe_cpu"] = res[CAFFE]["cpu_median_s"] / res[CONVNET]["cpu_median_s"]
        out["targets"][f"{name}: at least 1.5x real Caffe's iterations per second"] = out["speed_vs_caffe"] >= 1.5
    return out


# -- b. scaling ---------------------------------------------------------------------------------------

def _digits_lmdb(root: Path) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    (root / "img").mkdir(parents=True)
    d = load_digits()
    lines = []
    for i, (image, label) in enumerate(zip(d.images, d.target)):
        p = f"img/{i:04d}.png"
        Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize((28, 28), Image.BILINEAR).save(root / p)
        lines.append(f"{p} {label}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    subprocess.run(_convnet() + ["convert-imageset", "--gray", "-q", str(root), str(root / "train.txt"),
                                 str(root / "train_lmdb")], check=True, capture_output=True)
    return root / "train_lmdb"


def _convnet() -> list[str]:
    script = Path(sys.executable).parent / "convnet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]


ALLREDUCE = r'''
import os, sys, time, json, torch, torch.distributed as dist
import torch.multiprocessing as mp
def run(rank, n, port, count, iters, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=n)
    t = torch.ones(count)
    for _ in range(5):
        dist.all_reduce(t)
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(iters):
        dist.all_reduce(t)
    if rank == 0:
        q.put((time.perf_counter() - t0) / iters)
    dist.destroy_process_group()
if __name__ == "__main__":
    import socket
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    ctx = mp.get_context("spawn"); q = ctx.SimpleQueue()
    mp.start_processes(run, args=(2, port, int(sys.argv[1]), int(sys.argv[2]), q), nprocs=2, start_method="spawn")
    print(json.dumps({"seconds": q.get()}))
'''

LENET_PARAMS = 431_080  # learnable floats of LeNet (conv1 520, conv2 25,050, ip1 400,500, ip2 5,010)


def allreduce_seconds(count: int, iters: int, tmp: Path) -> float | None:
    """Seconds per gloo all-reduce of ``count`` floats between 2 processes of 1 thread (a script
    file: spawned processes re-import their parent's main module)."""
    script = tmp / "allreduce.py"
    script.write_text(ALLREDUCE)
    try:
        proc = subprocess.run([sys.executable, str(script), str(count), str(iters)], capture_output=True, text=True,
                              timeout=300, check=False)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        log(f"    gloo all-reduce timing failed: {(proc.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])["seconds"]


def bench_scaling(quick: bool, global_batch: int = 64) -> dict[str, Any]:
    log(f"[train2] LeNet, convnet train: 1 process x 2 threads vs 2 processes x 1 thread at global batch {global_batch}")
    short, long = (5, 45) if quick else (10, 210)
    configs = {"1 process x 2 threads": (1, 2), "2 processes x 1 thread (gloo)": (2, 1), "1 process x 1 thread": (1, 1)}
    res: dict[str, Any] = {"global_batch": global_batch, "iterations": [short, long], "results": {},
                           "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="convnet-scaling-") as tmp:
        tmp = Path(tmp)
        db = _digits_lmdb(tmp / "digits")
        walls: dict[str, dict[int, list[float]]] = {k: {short: [], long: []} for k in configs}
        errors: dict[str, str] = {}
        for rep in range(1 if quick else 2):  # interleaved: every configuration once per repetition
            for label, (nproc, threads) in configs.items():
                for iters in (short, long):
                    if label in errors:
                        continue
                    cmd = _convnet() + ["train", "--solver", str(MODELS / "mnist" / "lenet_solver.prototxt"),
                                        "--data", f"TRAIN={db}", "--test-interval", "0", "--max-iter", str(iters),
                                        "--batch-size", str(global_batch // nproc), "--nproc", str(nproc),
                                        "--workers", "0", "--device", "cpu", "--snapshot-prefix",
                                        str(tmp / f"{nproc}_{threads}_{iters}_{rep}" / "lenet")]
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                    t0 = time.perf_counter()
                    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, check=False)
                    walls[label][iters].append(time.perf_counter() - t0)
                    if proc.returncode != 0:
                        errors[label] = (proc.stderr.strip().splitlines() or ["?"])[-1][:200]
        for label in configs:
            if label in errors:
                res["results"][label] = {"error": errors[label]}
                continue
            w = {n: statistics.median(v) for n, v in walls[label].items()}
            res["results"][label] = {"walls_s": w, "iterations_per_s": (long - short) / max(w[long] - w[short], 1e-9)}
        ar = allreduce_seconds(LENET_PARAMS, 20 if quick else 100, tmp)
    one = res["results"].get("1 process x 2 threads", {})
    two = res["results"].get("2 processes x 1 thread (gloo)", {})
    single = res["results"].get("1 process x 1 thread", {})
    res["allreduce_s"] = ar
    if "iterations_per_s" in one and "iterations_per_s" in two:
        res["speedup"] = two["iterations_per_s"] / one["iterations_per_s"]
        res["targets"] = {"LeNet: 2 processes at least 1.6x one at the same global batch": res["speedup"] >= 1.6}
        threads_gain = one["iterations_per_s"] / single["iterations_per_s"] if "iterations_per_s" in single else None
        res["threads_gain"] = threads_gain
        per_iter = 1.0 / one["iterations_per_s"]
        res["reason"] = (
            f"this machine has {os.cpu_count()} cores and one process already runs every op on both "
            + (f"(2 intra-op threads: {threads_gain:.2f}x one thread)" if threads_gain else "(2 intra-op threads)")
            + ", so 2 processes x 1 thread split the same arithmetic per global batch over the same 2 cores and "
            "add a gloo all-reduce of LeNet's 431,080 gradient floats"
            + (f" ({1000 * ar:.1f} ms, {100 * ar / per_iter:.0f} % of one process's {1000 * per_iter:.1f} ms "
               "iteration)" if ar else "")
            + ": the ceiling is the 2-thread inefficiency won back (1 / the thread gain), not 2x")
    return res


def run(quick: bool = False) -> dict[str, Any]:
    import subprocess as sp

    res: dict[str, Any] = {"nets": {}, "targets": {},
                           "uptime": sp.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()}
    with tempfile.TemporaryDirectory(prefix="convnet-train-bench-") as tmp:
        for name in NETS:
            r = bench_in_memory(name, quick, Path(tmp))
            res["nets"][name] = r
            res["targets"].update(r["targets"])
    res["scaling"] = bench_scaling(quick)
    res["targets"].update(res["scaling"].get("targets", {}))
    return res


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def target_lines(res: dict[str, Any]) -> list[str]:
    """One line per target: the figure, the reference it is measured against, the verdict."""
    out = []
    for name, r in res["nets"].items():
        res_ = r["results"]
        conv, hand = res_[CONVNET], res_[HAND]
        out.append(f"- {name}, batch {r['batch']}: convnet {conv['iterations_per_s']:.2f} it/s vs the hand-written "
                   f"torch loop {hand['iterations_per_s']:.2f} it/s: {r['vs_hand']:.3f}x its time per iteration "
                   f"(CPU time {r['vs_hand_cpu']:.3f}x; target <= 1.05x): {_verdict(r['vs_hand'] <= 1.05)}")
        if "speed_vs_caffe" in r:
            cf = res_[CAFFE]
            out.append(f"- {name}, batch {r['batch']}: convnet {conv['iterations_per_s']:.2f} it/s vs BVLC Caffe "
                       f"SGDSolver.step {cf['iterations_per_s']:.2f} it/s: {r['speed_vs_caffe']:.2f}x (CPU time "
                       f"{r['speed_vs_caffe_cpu']:.2f}x; target >= 1.5x): {_verdict(r['speed_vs_caffe'] >= 1.5)}")
        else:
            out.append(f"- {name}: BVLC Caffe not measured: {res_.get(CAFFE, {}).get('error', '?')}")
    s = res["scaling"]
    if "speedup" in s:
        out.append(f"- LeNet, global batch {s['global_batch']}: 2 processes x 1 thread "
                   f"{s['results']['2 processes x 1 thread (gloo)']['iterations_per_s']:.2f} it/s vs 1 process x 2 "
                   f"threads {s['results']['1 process x 2 threads']['iterations_per_s']:.2f} it/s: {s['speedup']:.2f}x "
                   f"(target >= 1.6x): {_verdict(s['speedup'] >= 1.6)}"
                   + ("" if s["speedup"] >= 1.6 else f"; why: {s['reason']}"))
    else:
        out.append("- LeNet 2-process scaling not measured: " + "; ".join(
            f"{k}: {v.get('error', '?')}" for k, v in s["results"].items()))
    return out


def markdown(res: dict[str, Any]) -> str:
    out = ["### h. Training iterations per second: convnet, the hand-written torch loop and BVLC Caffe", "",
           f"`uptime` at the start: {res.get('uptime', '?')}", ""]
    for name, r in res["nets"].items():
        out += [(f"**{name}, batch {r['batch']}** (same Input-layer TRAIN net and solver file for all; torch "
                 f"{r['threads']} threads, channels-last {'on' if r['channels_last'] else 'off'}; others: "
                 f"{r['others_cores']:.2f} cores):"), "",
                "| loop | median / iteration | CPU time / iteration | iterations/s |", "|---|---:|---:|---:|"]
        for k, v in r["results"].items():
            if "error" in v:
                out.append(f"| {k} | failed: {v['error']} | | |")
            else:
                out.append(f"| {k} | {1000 * v['median_s']:.1f} ms | {1000 * v['cpu_median_s']:.1f} ms | "
                           f"{v['iterations_per_s']:.2f} |")
        out.append("")
    s = res["scaling"]
    out += [f"**Processes and threads** (`convnet train`, LeNet on the digits LMDB, global batch {s['global_batch']}, "
            f"{s['cores']} cores; iterations/s from the difference of {s['iterations'][0]}- and "
            f"{s['iterations'][1]}-iteration runs; gloo all-reduce of 431,080 floats: "
            + (f"{1000 * s['allreduce_s']:.2f} ms" if s.get("allreduce_s") else "not measured") + "):", "",
            "| configuration | iterations/s |", "|---|---:|"]
    for k, v in s["results"].items():
        out.append(f"| {k} | {v['iterations_per_s']:.2f} |" if "iterations_per_s" in v else f"| {k} | failed: {v['error']} |")
    out += ["", "Targets:", ""] + target_lines(res)
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
