"""Bench section "train2": training iterations per second against real Caffe, and 2-process scaling.

a. LeNet (batch 64) and AlexNet (batch 32) on one in-memory batch, SGD with momentum 0.9 and weight
   decay 5e-4, the nets' own lr/decay multipliers:
   * convnet: ``CaffeModule.run`` + loss backward + ``CaffeSolver.step`` (what ``convnet train`` runs
     per iteration, as bench/run.py section d);
   * the hand-written torch loop (``nn.Sequential`` + ``torch.optim.SGD``);
   * real BVLC Caffe's ``SGDSolver.step(1)`` (pycaffe, ``$CAFFE_PYTHON`` or /work/caffe-venv) on the
     same train net with its Data layers replaced by an Input layer, the batch written into
     ``solver.net.blobs`` once (a fresh process, its own timing loop).
b. ``convnet train --nproc 2`` vs ``--nproc 1`` at the same global batch (LeNet on the scikit-learn
   digits as an LMDB, 64 = 1 x 64 = 2 x 32): iterations per second from the difference between a
   short and a long run, so process start and data set-up cancel out.

Run alone: ``python bench/train_bench.py [--quick]``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.run import CpuMonitor, hand_written_alexnet, interleaved, log, summary

MODELS = ROOT.parent / "shared" / "caffe-models"
NETS = {"LeNet": (MODELS / "mnist" / "lenet_train_test.prototxt", 64, (1, 28, 28), 10),
        "AlexNet": (ROOT / "prototxt" / "alexnet.prototxt", 32, (3, 227, 227), 1000)}
CAFFE_DEFAULT = Path("/work/caffe-venv/bin/python")

CAFFE_STEP = r'''
import os, sys, time, json
os.environ.setdefault("GLOG_minloglevel", "2")
import numpy as np, caffe
solver_path, data_path, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
caffe.set_mode_cpu()
solver = caffe.SGDSolver(solver_path)
d = np.load(data_path)
solver.net.blobs["data"].data[...] = d["data"]
solver.net.blobs["label"].data[...] = d["label"]
solver.step(1)  # warm-up
times = []
for _ in range(rounds):
    t0 = time.perf_counter()
    solver.step(1)
    times.append(time.perf_counter() - t0)
print(json.dumps({"times": times, "loss": float(solver.net.blobs["loss"].data)}))
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


def _learnable(net, module):
    import torch

    from convnet_io.train.solver import LearnableBlob

    learnable, seen = [], set()
    for node in net.graph.nodes:
        if not node.params or node.type == "BatchNorm":
            continue
        for i, (spec, t) in enumerate(zip(node.params, module.layer(node.name).caffe_blobs())):
            if id(t) in seen or not isinstance(t, torch.nn.Parameter):
                continue
            seen.add(id(t))
            learnable.append(LearnableBlob(t, spec.lr_mult, spec.decay_mult, f"{node.name}/{i}"))
    return learnable


def bench_in_memory(name: str, quick: bool) -> dict[str, Any]:
    import torch

    import convnet_io
    from convnet_io.caffe.proto import caffe_pb2
    from convnet_io.train.solver import CaffeSolver

    path, batch, item, classes = NETS[name]
    log(f"[train2] {name}, batch {batch}: one iteration, in memory")
    net = convnet_io.load(path, phase="TRAIN", input_shapes={"data": (batch, *item), "label": (batch,)}, seed=1)
    module = net.module.train()
    param = caffe_pb2.SolverParameter(base_lr=0.01, momentum=0.9, weight_decay=0.0005, lr_policy="fixed", type="SGD")
    solver = CaffeSolver(param, _learnable(net, module))
    rng = np.random.default_rng(0)
    scale = 1.0 if name == "LeNet" else 50.0
    data = (rng.standard_normal((batch, *item)) * scale).astype(np.float32)
    labels = rng.integers(0, classes, batch)
    feeds = {"data": torch.from_numpy(data), "label": torch.from_numpy(labels.astype(np.float32))}
    loss_tops = [(t, w) for n in net.graph.nodes for t, w in zip(n.tops, n.loss_weights) if w]

    def convnet_step():
        out = module.run(feeds, [t for t, _ in loss_tops])
        loss = sum(w * out[t].sum() for t, w in loss_tops)
        loss.backward()
        solver.step()

    seq = (hand_written_lenet() if name == "LeNet" else hand_written_alexnet()).train()
    opt = torch.optim.SGD(seq.parameters(), lr=0.01, momentum=0.9, weight_decay=0.0005)
    criterion = torch.nn.CrossEntropyLoss()
    x, target = torch.from_numpy(data), torch.from_numpy(labels).long()

    def hand_step():
        opt.zero_grad(set_to_none=True)
        criterion(seq(x), target).backward()
        opt.step()

    mon = CpuMonitor()
    rounds = (3 if quick else 10) if name == "AlexNet" else (10 if quick else 40)
    times = interleaved({"convnet (CaffeModule + CaffeSolver)": convnet_step,
                         "hand-written torch loop": hand_step}, rounds=rounds, warmup=2, label=f"{name} ")
    res = {k: summary(v) for k, v in times.items()}
    cp = caffe_python()
    if cp:
        with tempfile.TemporaryDirectory(prefix="convnet-caffe-train-") as tmp:
            tmp = Path(tmp)
            (tmp / "net.prototxt").write_text(input_train_net(path, batch, item))
            (tmp / "solver.prototxt").write_text(
                f'net: "{tmp / "net.prototxt"}"\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
                'lr_policy: "fixed"\nmax_iter: 1000000\ndisplay: 0\nsnapshot: 0\nsolver_mode: CPU\n')
            np.savez(tmp / "batch.npz", data=data, label=labels.astype(np.float32))
            (tmp / "step.py").write_text(CAFFE_STEP)
            proc = subprocess.run([str(cp), str(tmp / "step.py"), str(tmp / "solver.prototxt"), str(tmp / "batch.npz"),
                                   str(rounds)], capture_output=True, text=True)
            if proc.returncode == 0:
                out = json.loads(proc.stdout.strip().splitlines()[-1])
                res["BVLC Caffe SGDSolver.step (pycaffe)"] = summary(out["times"])
            else:
                res["BVLC Caffe SGDSolver.step (pycaffe)"] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    for r in res.values():
        if "median_s" in r:
            r["iterations_per_s"] = 1.0 / r["median_s"]
    conv = res["convnet (CaffeModule + CaffeSolver)"]["median_s"]
    hand = res["hand-written torch loop"]["median_s"]
    out: dict[str, Any] = {"batch": batch, "results": res, "others_cores": mon.others(), "vs_hand": conv / hand,
                           "targets": {f"{name}: training step at most 1.05x the hand-written torch loop": conv / hand <= 1.05}}
    caffe = res.get("BVLC Caffe SGDSolver.step (pycaffe)", {})
    if "median_s" in caffe:
        out["speed_vs_caffe"] = caffe["median_s"] / conv
        out["targets"][f"{name}: at least 1.5x real Caffe's iterations per second"] = out["speed_vs_caffe"] >= 1.5
    return out


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
    convnet = _convnet()
    subprocess.run(convnet + ["convert-imageset", "--gray", "-q", str(root), str(root / "train.txt"),
                              str(root / "train_lmdb")], check=True, capture_output=True)
    return root / "train_lmdb"


def _convnet() -> list[str]:
    script = Path(sys.executable).parent / "convnet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]


def bench_scaling(quick: bool, global_batch: int = 64) -> dict[str, Any]:
    log(f"[train2] LeNet, convnet train --nproc 1 vs 2 at global batch {global_batch}")
    short, long = (5, 45) if quick else (10, 210)
    res: dict[str, Any] = {"global_batch": global_batch, "iterations": [short, long], "results": {}}
    with tempfile.TemporaryDirectory(prefix="convnet-scaling-") as tmp:
        tmp = Path(tmp)
        db = _digits_lmdb(tmp / "digits")
        for nproc in (1, 2):
            walls = {}
            for iters in (short, long):
                cmd = _convnet() + ["train", "--solver", str(MODELS / "mnist" / "lenet_solver.prototxt"),
                                    "--data", f"TRAIN={db}", "--test-interval", "0", "--max-iter", str(iters),
                                    "--batch-size", str(global_batch // nproc), "--nproc", str(nproc),
                                    "--workers", "0", "--snapshot-prefix", str(tmp / f"p{nproc}_{iters}" / "lenet"),
                                    "--device", "cpu"]
                t0 = time.perf_counter()
                proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
                walls[iters] = time.perf_counter() - t0
                if proc.returncode != 0:
                    res["results"][f"{nproc} process"] = {"error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
                    break
            else:
                per_s = (long - short) / max(walls[long] - walls[short], 1e-9)
                res["results"][f"{nproc} process"] = {"walls_s": walls, "iterations_per_s": per_s}
    one, two = res["results"].get("1 process", {}), res["results"].get("2 process", {})
    if "iterations_per_s" in one and "iterations_per_s" in two:
        res["speedup"] = two["iterations_per_s"] / one["iterations_per_s"]
        res["targets"] = {"LeNet: 2 processes at least 1.6x one at the same global batch": res["speedup"] >= 1.6}
    return res


def run(quick: bool = False) -> dict[str, Any]:
    res: dict[str, Any] = {"nets": {}, "targets": {}}
    for name in NETS:
        r = bench_in_memory(name, quick)
        res["nets"][name] = r
        res["targets"].update(r["targets"])
    res["scaling"] = bench_scaling(quick)
    res["targets"].update(res["scaling"].get("targets", {}))
    return res


def markdown(res: dict[str, Any]) -> str:
    out = ["### h. Training iterations per second: convnet, the hand-written torch loop and BVLC Caffe", ""]
    for name, r in res["nets"].items():
        extra = f"; {r['speed_vs_caffe']:.2f}x Caffe" if "speed_vs_caffe" in r else ""
        out += [f"**{name}, batch {r['batch']}** (others: {r['others_cores']:.2f} cores): convnet at "
                f"{r['vs_hand']:.3f}x the hand-written loop's time{extra}.", "",
                "| loop | median / iteration | iterations/s |", "|---|---:|---:|"]
        for k, v in r["results"].items():
            if "error" in v:
                out.append(f"| {k} | failed: {v['error']} | |")
            else:
                out.append(f"| {k} | {1000 * v['median_s']:.1f} ms | {v['iterations_per_s']:.2f} |")
        out.append("")
    s = res["scaling"]
    out += [f"**2-process scaling** (LeNet, global batch {s['global_batch']}, iterations/s from the difference of "
            f"{s['iterations'][0]}- and {s['iterations'][1]}-iteration runs):", "", "| processes | iterations/s |",
            "|---|---:|"]
    for k, v in s["results"].items():
        out.append(f"| {k} | {v['iterations_per_s']:.2f} |" if "iterations_per_s" in v else f"| {k} | failed: {v['error']} |")
    if "speedup" in s:
        out += ["", f"2 processes: **{s['speedup']:.2f}x** one process."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
