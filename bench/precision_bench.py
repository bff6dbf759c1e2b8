"""Bench section "precision": what int8 (and bf16 where the CPU has it) costs and buys.

a. Accuracy: LeNet trained by ``convnet train`` on the scikit-learn digits (1,437 train / 360 held
   out, the split of tests/test_train.py, 500 iterations), exported fp32 and int8 (``convnet export
   --precision int8 --calibration``, 256 training digits), held-out accuracy of both in ONNX Runtime,
   top-1 agreement and the largest probability difference.
b. Speed: AlexNet at batch 32 (seeded weights, calibrated on 32 seeded inputs), ONNX Runtime fp32 vs
   int8 session, medians of interleaved rounds, top-1 agreement.
bf16 is measured only where /proc/cpuinfo lists avx512_bf16 or amx_bf16 (else reported as absent).

Run alone: ``python bench/precision_bench.py [--quick]``.
"""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np

from bench.run import CpuMonitor, interleaved, log, summary

MODELS = ROOT.parent / "shared" / "caffe-models"


def _convnet() -> list[str]:
    script = Path(sys.executable).parent / "convnet"
    return [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]


def _digits(root: Path):
    from PIL import Image
    from sklearn.datasets import load_digits

    (root / "img").mkdir(parents=True)
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))
    test_ids = set(order[:360].tolist())
    train, test, arrays = [], [], {"train": [], "test": []}
    for i, (image, label) in enumerate(zip(d.images, d.target)):
        p = f"img/{i:04d}.png"
        img = Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize((28, 28), Image.BILINEAR)
        img.save(root / p)
        kind = "test" if i in test_ids else "train"
        (test if kind == "test" else train).append(f"{p} {label}")
        arrays[kind].append((np.asarray(img, dtype=np.float32)[None] * 0.00390625, int(label)))
    (root / "train.txt").write_text("\n".join(train) + "\n")
    subprocess.run(_convnet() + ["convert-imageset", "--gray", "-q", str(root), str(root / "train.txt"),
                                 str(root / "train_lmdb")], check=True, capture_output=True)
    return {k: (np.stack([a for a, _ in v]), np.array([lab for _, lab in v])) for k, v in arrays.items()}


def _session(path):
    from convnet_io.runtimes.onnxruntime_session import make_session

    return make_session(str(path), "cpu")


def bench_digits(quick: bool) -> dict[str, Any]:
    log("[precision] LeNet on digits: train, export fp32 and int8, held-out accuracy")
    with tempfile.TemporaryDirectory(prefix="convnet-precision-") as tmp:
        tmp = Path(tmp)
        data = _digits(tmp / "digits")
        iters = 200 if quick else 500
        subprocess.run(_convnet() + ["train", "--solver", str(MODELS / "mnist" / "lenet_solver.prototxt"),
                                     "--data", f"TRAIN={tmp / 'digits' / 'train_lmdb'}", "--test-interval", "0",
                                     "--max-iter", str(iters), "--snapshot-prefix", str(tmp / "lenet"),
                                     "--workers", "0", "--device", "cpu"], check=True, capture_output=True, cwd=tmp)
        weights = tmp / f"lenet_iter_{iters}.caffemodel"
        np.save(tmp / "calib.npy", data["train"][0][:256])
        deploy = MODELS / "mnist" / "lenet.prototxt"
        out = {}
        for precision in ("fp32", "int8"):
            path = tmp / f"lenet_{precision}.onnx"
            cmd = _convnet() + ["export", str(deploy), "--weights", str(weights), "--onnx", str(path), "--json"]
            if precision == "int8":
                cmd += ["--precision", "int8", "--calibration", str(tmp / "calib.npy")]
            check = json.loads(subprocess.run(cmd, capture_output=True, text=True).stdout or "{}")
            s = _session(path)
            x, y = data["test"]
            probs = np.concatenate([s.run(None, {"data": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
            out[precision] = {"probs": probs, "accuracy": float((probs.argmax(1) == y).mean()),
                              "check": {k: v for k, v in check.get("outputs", {}).get("onnx", {}).items()
                                        if k in ("worst_rel", "top1_agreement", "ok")}}
    fp, q = out["fp32"], out["int8"]
    res = {"iterations": iters, "held_out": 360,
           "accuracy": {"fp32": fp["accuracy"], "int8": q["accuracy"]},
           "accuracy_drop_points": 100 * (fp["accuracy"] - q["accuracy"]),
           "top1_agreement": float((fp["probs"].argmax(1) == q["probs"].argmax(1)).mean()),
           "max_prob_diff": float(np.abs(fp["probs"] - q["probs"]).max()),
           "int8_export_check": q["check"]}
    res["targets"] = {"digits: int8 accuracy drop at most 0.5 points": res["accuracy_drop_points"] <= 0.5,
                      "digits: int8 top-1 agreement with fp32 at least 99 %": res["top1_agreement"] >= 0.99}
    return res


def bench_speed(quick: bool, batch: int = 32) -> dict[str, Any]:
    import convnet_io
    from convnet_io.onnx_export.writer import export_to_file
    from convnet_io.tools.export import seeded_inputs
    from convnet_io.tools.precision import cpu_has_bf16, quantize_int8

    log(f"[precision] AlexNet batch {batch}: fp32 vs int8 in ONNX Runtime")
    path = MODELS / "bvlc_alexnet" / "deploy.prototxt"
    net = convnet_io.load(path, input_shapes={"data": (batch, 3, 227, 227)}, seed=1, backend="torch")
    x = seeded_inputs(net.graph, batch, seed=batch)["data"]
    calib = seeded_inputs(net.graph, 32, seed=99)["data"]
    with tempfile.TemporaryDirectory(prefix="convnet-precision-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_to_file(net.graph, net.blobs(), fp32)
        quantize_int8(fp32, int8, "data", calib)
        sessions = {"fp32": _session(fp32), "int8": _session(int8)}
    outs = {k: s.run(None, {"data": x})[0] for k, s in sessions.items()}
    mon = CpuMonitor()
    times = interleaved({k: (lambda s=s: s.run(None, {"data": x})) for k, s in sessions.items()},
                        rounds=2 if quick else 6, warmup=1, label="precision ")
    res = {k: summary(v) for k, v in times.items()}
    ratio = res["fp32"]["median_s"] / res["int8"]["median_s"]
    agree = float((outs["fp32"].reshape(batch, -1).argmax(1) == outs["int8"].reshape(batch, -1).argmax(1)).mean())
    return {"batch": batch, "results": res, "int8_speedup": ratio, "top1_agreement": agree,
            "bf16": "available" if cpu_has_bf16() else "absent (no avx512_bf16 / amx_bf16 in /proc/cpuinfo)",
            "others_cores": mon.others(),
            "targets": {f"AlexNet batch {batch}: int8 at least 2x fp32": ratio >= 2.0}}


def run(quick: bool = False) -> dict[str, Any]:
    digits, speed = bench_digits(quick), bench_speed(quick)
    return {"digits": digits, "speed": speed, "targets": {**digits["targets"], **speed["targets"]}}


def markdown(res: dict[str, Any]) -> str:
    d, s = res["digits"], res["speed"]
    out = ["### i. Reduced precision (int8 through ONNX Runtime's static quantizer)", "",
           f"LeNet trained {d['iterations']} iterations on the digits, {d['held_out']} held out: accuracy fp32 "
           f"**{100 * d['accuracy']['fp32']:.2f}%**, int8 **{100 * d['accuracy']['int8']:.2f}%** (drop "
           f"{d['accuracy_drop_points']:.2f} points); top-1 agreement {100 * d['top1_agreement']:.2f}%, largest "
           f"probability difference {d['max_prob_diff']:.3g}.", "",
           f"AlexNet batch {s['batch']} in ONNX Runtime (others: {s['others_cores']:.2f} cores): fp32 "
           f"{1000 * s['results']['fp32']['median_s']:.1f} ms, int8 {1000 * s['results']['int8']['median_s']:.1f} ms "
           f"= **{s['int8_speedup']:.2f}x**; top-1 agreement {100 * s['top1_agreement']:.1f}% (seeded weights). "
           f"bf16: {s['bf16']}."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
