"""Bench section "precision": what int8 (and bf16 where the CPU has it) costs and buys.

a. Accuracy: LeNet trained by ``convnet train`` on the scikit-learn digits (1,437 train / 360 held
   out, the split of tests/test_train.py, 500 iterations), exported fp32 and int8 (``convnet export
   --precision int8 --calibration``, 256 training digits); held-out accuracy of fp32 (ONNX Runtime)
   and of int8 on the engine convnet runs it on (OpenVINO when installed) and on ONNX Runtime, top-1
   agreement, the largest probability difference and the error per blob (``layer_errors``).
b. Speed at batch 32: AlexNet, GoogLeNet and ResNet-50 (``--quick``: AlexNet) with the engines
   bench's seeded weights (BatchNorm statistics measured, logits of unit spread), calibrated on 64
   crops of the two BVLC sample images (random scale, crop, mirror; ImageNet mean subtracted) and
   timed on 32 other crops: fp32 and int8 on ONNX Runtime and on OpenVINO, medians of interleaved
   rounds. The target compares convnet's int8 engine with the *fastest* fp32 engine (what
   ``backend="auto"`` picks, OpenVINO in the recorded table), and the same-engine ratios are printed
   beside it. Top-1 agreement int8 vs fp32 on 96 crops; the kernels OpenVINO runs each
   convolution/inner product on (``get_runtime_model()``: u8 = int8 arithmetic).
bf16 is measured only where /proc/cpuinfo lists avx512_bf16 or amx_bf16 (else reported as absent).

Run alone: ``python bench/precision_bench.py [--quick]``.
"""
from __future__ import annotations

import json
import os
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
    from convnet_io.tools.precision import int8_engine, int8_session, layer_errors

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
        out, paths = {}, {}
        x, y = data["test"]

        def evaluate(session):
            probs = np.concatenate([session.run(None, {"data": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
            return {"probs": probs, "accuracy": float((probs.argmax(1) == y).mean())}

        for precision in ("fp32", "int8"):
            path = paths[precision] = tmp / f"lenet_{precision}.onnx"
            cmd = _convnet() + ["export", str(deploy), "--weights", str(weights), "--onnx", str(path), "--json"]
            if precision == "int8":
                cmd += ["--precision", "int8", "--calibration", str(tmp / "calib.npy")]
            check = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=False).stdout or "{}")
            session = _session(path) if precision == "fp32" else int8_session(str(path))
            out[precision] = evaluate(session)
            out[precision]["check"] = {k: v for k, v in check.get("outputs", {}).get("onnx", {}).items()
                                       if k in ("worst_rel", "top1_agreement", "ok")}
        on_ort = evaluate(int8_session(str(paths["int8"]), engine="onnxruntime"))
        import convnet_io

        blobs = [v for n in convnet_io.load_graph(deploy).nodes for v in n.tops]
        errors = layer_errors(paths["fp32"], paths["int8"], {"data": x}, blobs)
    fp, q = out["fp32"], out["int8"]
    res = {"iterations": iters, "held_out": 360, "int8_engine": int8_engine(),
           "accuracy": {"fp32": fp["accuracy"], "int8": q["accuracy"], "int8 ONNX Runtime": on_ort["accuracy"]},
           "accuracy_drop_points": 100 * (fp["accuracy"] - q["accuracy"]),
           "top1_agreement": float((fp["probs"].argmax(1) == q["probs"].argmax(1)).mean()),
           "max_prob_diff": float(np.abs(fp["probs"] - q["probs"]).max()),
           "layer_errors": errors, "int8_export_check": q["check"]}
    res["targets"] = {"digits: int8 accuracy drop at most 0.5 points": res["accuracy_drop_points"] <= 0.5,
                      "digits: int8 top-1 agreement with fp32 at least 99 %": res["top1_agreement"] >= 0.99}
    return res


def real_looking(n: int, seed: int, size: int) -> np.ndarray:
    """``n`` inputs as Caffe's ImageNet nets are fed (BGR, 0-255, mean subtracted) from random
    crops of the BVLC sample images: scale 1-1.6x of ``size``, random position, half mirrored."""
    from convnet_io.tools.preprocess import load_image, resize_image

    rng = np.random.default_rng(seed)
    images = [load_image(MODELS / "images" / f) for f in ("cat.jpg", "fish-bike.jpg")]
    mean = np.load(MODELS / "imagenet" / "ilsvrc_2012_mean.npy").mean(axis=(1, 2)).astype(np.float32)
    out = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        img = images[i % len(images)]
        short = int(size * rng.uniform(1.0, 1.6))
        h, w = img.shape[:2]
        r = resize_image(img, (max(short, round(h * short / min(h, w))), max(short, round(w * short / min(h, w)))))
        y, x = rng.integers(0, r.shape[0] - size + 1), rng.integers(0, r.shape[1] - size + 1)
        crop = r[y:y + size, x:x + size, ::-1] * 255.0  # RGB -> BGR as Caffe's Transformer
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out[i] = crop.transpose(2, 0, 1) - mean[:, None, None]
    return out


KINDS = (("convolution", ("Conv", "QLinearConv", "Convolution", "GroupConvolution")),
         ("inner product", ("Gemm", "FusedGemm", "QGemm", "MatMul", "FullyConnected", "FullyConnectedQuantizedLegacy")),
         ("LRN", ("LRN", "Lrn")), ("pooling", ("MaxPool", "AveragePool", "NhwcMaxPool", "Pooling")),
         ("layout and (de)quantize", ("Reorder", "ReorderInput", "ReorderOutput", "Transpose", "QuantizeLinear",
                                      "DequantizeLinear", "FakeQuantize", "Convert")))


def _kind(op: str) -> str:
    return next((k for k, ops in KINDS if op in ops or op.split("_")[0] in ops), "other")


def layer_profile(path: Path, x: np.ndarray, engine: str, runs: int = 2) -> dict[str, float]:
    """Milliseconds per call spent in each kind of layer (convolution, inner product, LRN, ...),
    from the engine's own profiler: ONNX Runtime's session profiling, OpenVINO's PERF_COUNT."""
    totals: dict[str, float] = {}
    if engine == "openvino":
        from convnet_io.runtimes.openvino_session import shared_core

        core = shared_core()
        compiled = core.compile_model(core.read_model(str(path)), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": True})
        request = compiled.create_infer_request()
        for _ in range(runs):
            request.infer({0: x})
        for info in request.profiling_info:  # the last call's
            kind = _kind(info.node_type)
            totals[kind] = totals.get(kind, 0.0) + info.real_time.total_seconds() * 1000
        return totals
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="convnet-profile-") as tmp:
        opts = ort.SessionOptions()
        opts.enable_profiling, opts.log_severity_level = True, 3
        opts.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        for _ in range(runs + 1):
            session.run(None, {"data": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            kind = _kind(e["args"].get("op_name", ""))
            totals[kind] = totals.get(kind, 0.0) + e["dur"] / 1000 / (runs + 1)
    return totals


def bench_speed(name: str, path: Path, quick: bool, batch: int = 32) -> dict[str, Any]:
    from bench.engines_bench import seeded_net
    from convnet_io.onnx_export.writer import export_to_file
    from convnet_io.runtimes.openvino_session import OpenVinoSession, openvino_available
    from convnet_io.tools.precision import (
        int8_engine,
        int8_kernels,
        int8_session,
        layer_errors,
        quantize_int8,
    )

    log(f"[precision] {name} batch {batch}: fp32 vs int8 on ONNX Runtime and OpenVINO")
    net = seeded_net(path, batch, "torch")
    size = net.graph.shapes["data"][2]
    calib, x = real_looking(64, seed=99, size=size), real_looking(96, seed=batch, size=size)
    engine = int8_engine(net.graph)
    with tempfile.TemporaryDirectory(prefix="convnet-precision-") as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_to_file(net.graph, net.blobs(), fp32)
        quantize_int8(fp32, int8, "data", calib)
        sessions = {"fp32 ONNX Runtime": _session(fp32), "int8 ONNX Runtime": int8_session(str(int8), engine="onnxruntime")}
        if openvino_available():
            sessions["fp32 OpenVINO"] = OpenVinoSession(str(fp32), "cpu")
            sessions["int8 OpenVINO"] = int8_session(str(int8), engine="openvino")
        blobs = [v for n in net.graph.nodes for v in n.tops]
        errors = layer_errors(fp32, int8, {"data": x[:8]}, blobs) if not quick or name == "AlexNet" else {}
        profile = {}
        if name == "AlexNet":
            log("[precision] AlexNet: time per kind of layer from each engine's profiler")
            for p, label in ((fp32, "fp32"), (int8, "int8")):
                for e, ename in (("onnxruntime", "ONNX Runtime"), ("openvino", "OpenVINO")):
                    if e == "onnxruntime" or openvino_available():
                        profile[f"{label} {ename}"] = layer_profile(p, x[:batch], e)
    outs = {k: np.concatenate([s.run(None, {"data": x[i:i + batch]})[0].reshape(len(x[i:i + batch]), -1)
                               for i in range(0, len(x), batch)]) for k, s in sessions.items()}
    feed = {"data": x[:batch]}
    mon = CpuMonitor()
    times = interleaved({k: (lambda s=s: s.run(None, feed)) for k, s in sessions.items()},
                        rounds=3 if quick else 6, warmup=1, label="precision ")
    res = {k: summary(v) for k, v in times.items()}
    med = {k: v["median_s"] for k, v in res.items()}
    fp32_best = min((k for k in med if k.startswith("fp32")), key=med.get)
    int8_key = "int8 OpenVINO" if engine == "openvino" else "int8 ONNX Runtime"
    same = {e: med[f"fp32 {e}"] / med[f"int8 {e}"] for e in ("ONNX Runtime", "OpenVINO") if f"int8 {e}" in med}
    ref = outs["fp32 ONNX Runtime"].argmax(1)
    agree = {k: float((v.argmax(1) == ref).mean()) for k, v in outs.items() if k.startswith("int8")}
    top5 = {k: float(np.mean([r in np.argsort(v[i])[-5:] for i, r in enumerate(ref)]))
            for k, v in outs.items() if k.startswith("int8")}
    # how fragile the seeded net's top class is in fp32 itself: the same crops with noise of one
    # grey level (sd 1 on the 0-255 scale) added
    noisy = x + np.random.default_rng(7).standard_normal(x.shape).astype(np.float32)
    fp32_noise = np.concatenate([sessions["fp32 ONNX Runtime"].run(None, {"data": noisy[i:i + batch]})[0]
                                 .reshape(len(noisy[i:i + batch]), -1) for i in range(0, len(x), batch)])
    noise_agree = float((fp32_noise.argmax(1) == ref).mean())
    kernels = int8_kernels(sessions.get("int8 OpenVINO"))
    ratio = med[fp32_best] / med[int8_key]
    return {"net": name, "batch": batch, "results": res, "int8_engine": int8_key, "fastest_fp32": fp32_best,
            "int8_speedup": ratio, "same_engine_speedup": same, "top1_agreement": agree, "agreement_inputs": len(x),
            "top5_contains_fp32_top1": top5, "fp32_top1_agreement_under_1_grey_level_noise": noise_agree,
            "kernels": kernels, "layer_errors": errors, "profile": profile, "others_cores": mon.others(),
            "targets": {f"{name} batch {batch}: int8 on {int8_key[5:]} at least 2x the fastest fp32 engine "
                        f"({fp32_best[5:]})": ratio >= 2.0,
                        f"{name}: int8 top-1 agreement with fp32 at least 99 % ({len(x)} image crops)":
                            agree[int8_key] >= 0.99}}


def run(quick: bool = False) -> dict[str, Any]:
    from bench.engines_bench import NETS

    nets = {"AlexNet": NETS["AlexNet"]} if quick else NETS
    digits = bench_digits(quick)
    speed = [bench_speed(name, path, quick) for name, path in nets.items()]
    from convnet_io.tools.precision import cpu_has_bf16

    targets = dict(digits["targets"])
    for s in speed:
        targets.update(s["targets"])
    return {"digits": digits, "speed": speed, "load_average": os.getloadavg(),
            "bf16": "available" if cpu_has_bf16() else "absent (no avx512_bf16 / amx_bf16 in /proc/cpuinfo)",
            "targets": targets}


def _errors_line(errors: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in errors.items())


def markdown(res: dict[str, Any]) -> str:
    d = res["digits"]
    out = ["### i. Reduced precision (int8: ONNX Runtime's static quantizer, run on OpenVINO's int8 kernels)", "",
           (f"LeNet trained {d['iterations']} iterations on the digits, {d['held_out']} held out: accuracy fp32 "
           f"**{100 * d['accuracy']['fp32']:.2f}%**, int8 on {d['int8_engine']} **{100 * d['accuracy']['int8']:.2f}%** "
           f"(drop {d['accuracy_drop_points']:.2f} points; on ONNX Runtime {100 * d['accuracy']['int8 ONNX Runtime']:.2f}%); "
           f"top-1 agreement {100 * d['top1_agreement']:.2f}%, largest probability difference {d['max_prob_diff']:.3g}. "
           f"Error per blob (max |int8 - fp32| / max |fp32|): {_errors_line(d['layer_errors'])}."), "",
           ("| net, batch 32 | fp32 ORT | fp32 OpenVINO | int8 ORT | int8 OpenVINO | int8 vs fastest fp32 | "
            "same engine (ORT / OpenVINO) | top-1 agreement | others |"),
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in res["speed"]:
        r = s["results"]

        def ms(k, r=r):
            return f"{1000 * r[k]['median_s']:.0f} ms" if k in r else "-"

        same = " / ".join(f"{v:.2f}x" for v in s["same_engine_speedup"].values())
        out.append(f"| {s['net']} | {ms('fp32 ONNX Runtime')} | {ms('fp32 OpenVINO')} | {ms('int8 ONNX Runtime')} | "
                   f"{ms('int8 OpenVINO')} | **{s['int8_speedup']:.2f}x** | {same} | "
                   f"{100 * s['top1_agreement'][s['int8_engine']]:.1f}% | {s['others_cores']:.2f} cores |")
    out.append("")
    for s in res["speed"]:
        if s.get("profile"):
            prof = s["profile"]
            kinds = [k for k, _ in KINDS] + ["other"]
            out += [(f"{s['net']} batch {s['batch']}, ms per call in each kind of layer (the engines' profilers; the "
                     "int8 models keep LRN in fp32):"), "",
                    "| layers | " + " | ".join(prof) + " |", "|---|" + "---:|" * len(prof)]
            for k in kinds:
                out.append(f"| {k} | " + " | ".join(f"{v.get(k, 0.0):.0f}" for v in prof.values()) + " |")
            out.append("| total | " + " | ".join(f"{sum(v.values()):.0f}" for v in prof.values()) + " |")
            out.append("")
    for s in res["speed"]:
        kernels = s["kernels"]
        if kernels and s["net"] == "AlexNet":
            out.append(f"{s['net']}: OpenVINO runs " + ", ".join(f"{k} {v}" for k, v in kernels.items()) + ".")
        elif kernels:
            floats = [k for k, v in kernels.items() if not v.startswith(("u8", "i8"))]
            out.append(f"{s['net']}: OpenVINO runs {len(kernels) - len(floats)} of {len(kernels)} convolutions and "
                       f"inner products in u8/i8; in float32: {', '.join(floats) or 'none'}.")
        out.append(f"{s['net']} (seeded weights): int8 top-5 holds the fp32 top class on "
                   f"{100 * s['top5_contains_fp32_top1'][s['int8_engine']]:.1f}% of the crops; fp32 itself keeps its top "
                   f"class on {100 * s['fp32_top1_agreement_under_1_grey_level_noise']:.1f}% of them under noise of one "
                   f"grey level (random weights leave close top classes: the trained LeNet above is the accuracy measure).")
        errors = s["layer_errors"]
        if errors and s["net"] == "AlexNet":
            out.append(f"{s['net']} error per blob: {_errors_line(errors)}.")
        elif errors:
            worst = dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5])
            out.append(f"{s['net']} error per blob, the 5 largest of {len(errors)}: {_errors_line(worst)}.")
    out += ["", f"bf16: {res['bf16']}. Load average at the end: {res['load_average'][0]:.2f}."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
