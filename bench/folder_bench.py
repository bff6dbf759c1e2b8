"""Bench section "folder": classifying a folder of JPEGs, decode and preprocessing included.

1,000 generated JPEGs of mixed sizes (64 to 640 pixels a side, seeded), AlexNet with seeded weights
(the same .caffemodel and deploy prototxt for everyone, its input batch set to 16 so that no side
pads a batch), batch 16, images per second of:

* ``convnet run NET --weights W DIR --mean-value 104,117,123 --batch-size 16 --json`` (a fresh
  process, as a user runs it: threads decode ahead of the net, from before the net is loaded);
* an idiomatic OpenCV script: ``cv2.imread`` + ``cv2.dnn.blobFromImages`` + ``net.forward`` in
  batches of 16 on the same deploy prototxt and caffemodel (a fresh process);
* pycaffe's ``caffe.Classifier`` (real BVLC Caffe, ``$CAFFE_PYTHON`` or /work/caffe-venv, Python 3.9):
  ``predict(images, oversample=False)`` in batches of 16, images read with skimage as
  ``caffe.io.load_image`` would (it is broken there).

The same work on every side: decode each JPEG, resize it to 256 x 256 (bilinear), take the centre
227 x 227 crop, BGR, 0..255, subtract the mean (104, 117, 123), one forward pass of the centre crop
(no 10-crop oversampling anywhere), top-1 read. Differences that are the tools' own: OpenCV resizes
the 8-bit image (Caffe resizes floats), and the installed scikit-image (0.22) behind pycaffe's
``caffe.io.resize_image`` blurs before shrinking (anti-aliasing, newer than Caffe), which costs
pycaffe time; the faster reference is the OpenCV script either way. Each round runs the three
commands one after the other (interleaved), the median of the rounds is reported. The wall time
includes interpreter start and net loading, as a user sees it; the load average is recorded.

Run alone: ``python bench/folder_bench.py [--quick]``.
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

NET = ROOT.parent / "shared" / "caffe-models" / "bvlc_alexnet" / "deploy.prototxt"
CAFFE_DEFAULT = Path("/work/caffe-venv/bin/python")
BATCH = 16

OPENCV_SCRIPT = r'''
import sys, time, glob, json
import numpy as np, cv2
proto, weights, folder, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
net = cv2.dnn.readNetFromCaffe(proto, weights)
files = sorted(glob.glob(folder + "/*.jpg"))
top, n = [], 0
for i in range(0, len(files), batch):
    imgs = [cv2.resize(cv2.imread(f), (256, 256))[14:241, 14:241] for f in files[i:i + batch]]
    net.setInput(cv2.dnn.blobFromImages(imgs, 1.0, (227, 227), (104, 117, 123), swapRB=False, crop=False))
    out = net.forward()
    top += out.reshape(len(imgs), -1).argmax(1).tolist()
    n += len(imgs)
print(json.dumps({"images": n, "seconds": time.perf_counter() - t0, "top1": top}))
'''

CAFFE_SCRIPT = r'''
import os, sys, time, glob, json
os.environ.setdefault("GLOG_minloglevel", "2")
import numpy as np, caffe, skimage.io
proto, weights, folder, batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
caffe.set_mode_cpu()
t0 = time.perf_counter()
clf = caffe.Classifier(proto, weights, mean=np.array([104.0, 117.0, 123.0]), channel_swap=(2, 1, 0),
                       raw_scale=255, image_dims=(256, 256))
files = sorted(glob.glob(folder + "/*.jpg"))
top, n = [], 0
for i in range(0, len(files), batch):
    imgs = [skimage.img_as_float(skimage.io.imread(f)).astype(np.float32) for f in files[i:i + batch]]
    probs = clf.predict(imgs, oversample=False)
    top += probs.argmax(1).tolist()
    n += len(imgs)
print(json.dumps({"images": n, "seconds": time.perf_counter() - t0, "top1": top}))
'''


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


def log(msg: str) -> None:
    print(msg, flush=True)


def make_images(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs of mixed sizes: smooth colour fields with noise (so they compress like photos)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        h, w = (int(v) for v in rng.integers(64, 641, 2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([np.sin(xx / rng.uniform(5, 60) + c) * np.cos(yy / rng.uniform(5, 60)) for c in range(3)], -1)
        img = ((base + 1) * 110 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"img{i:04d}.jpg", quality=90)
    return folder


def caffe_python() -> Path | None:
    p = Path(os.environ.get("CAFFE_PYTHON", CAFFE_DEFAULT))
    return p if p.exists() else None


def _timed(cmd: list[str], env: dict | None = None) -> tuple[float, dict | None, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return wall, None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:200]
    try:
        return wall, json.loads(proc.stdout.strip().splitlines()[-1]), ""
    except (ValueError, IndexError):
        return wall, json.loads(proc.stdout), ""


def run(quick: bool = False) -> dict[str, Any]:
    import convnet_io
    from convnet_io.caffe.deploy import deploy_text

    count = 200 if quick else 1000
    rounds = 1 if quick else 3
    log(f"[folder] classifying {count} JPEGs with AlexNet, batch {BATCH}; load average {_loadavg()}")
    res: dict[str, Any] = {"images": count, "batch": BATCH, "results": {}, "targets": {}, "load_before": _loadavg()}
    with tempfile.TemporaryDirectory(prefix="convnet-folder-") as tmp:
        tmp = Path(tmp)
        folder = make_images(tmp / "images", count)
        net = convnet_io.load(NET, seed=1, backend="torch")
        weights = tmp / "alexnet.caffemodel"
        net.save_caffemodel(weights)
        deploy = tmp / "deploy.prototxt"
        # the input's batch is the batch everyone runs: pycaffe's forward_all pads a batch of 16 to
        # two of the prototxt's 10 (25 % more work) otherwise
        text = deploy_text(net.graph)
        assert text.count("dim: 10\n") == 1, "AlexNet's deploy input is 10 x 3 x 227 x 227"
        deploy.write_text(text.replace("dim: 10\n", f"dim: {BATCH}\n"))
        (tmp / "opencv_folder.py").write_text(OPENCV_SCRIPT)
        (tmp / "caffe_folder.py").write_text(CAFFE_SCRIPT)
        script = Path(sys.executable).parent / "convnet"
        convnet = [str(script)] if script.exists() else [sys.executable, "-m", "convnet_cli.main"]
        cmds = {
            "convnet run (workers ahead of the net)": convnet + ["run", str(deploy), "--weights", str(weights), str(folder),
                                                                 "--mean-value", "104,117,123", "--batch-size", str(BATCH),
                                                                 "--no-progress", "--json"],
            "OpenCV script (imread + blobFromImages + forward)": [sys.executable, str(tmp / "opencv_folder.py"), str(deploy),
                                                                   str(weights), str(folder), str(BATCH)],
        }
        cp = caffe_python()
        if cp:
            cmds["pycaffe caffe.Classifier (BVLC Caffe)"] = [str(cp), str(tmp / "caffe_folder.py"), str(deploy),
                                                             str(weights), str(folder), str(BATCH)]
        else:
            res["notes"] = "pycaffe not found (set CAFFE_PYTHON)"
        walls: dict[str, list[float]] = {k: [] for k in cmds}
        tops: dict[str, list[int]] = {}
        errors: dict[str, str] = {}
        for r in range(rounds):
            for name, cmd in cmds.items():
                if name in errors:
                    continue
                wall, out, err = _timed(cmd)
                if out is None:
                    errors[name] = err
                    log(f"    {name}: failed: {err}")
                    continue
                walls[name].append(wall)
                if "top1" in out:
                    tops[name] = out["top1"]
                elif "images" in out and isinstance(out["images"], list):
                    tops[name] = [img["top_k"][0]["index"] for img in out["images"]]
                log(f"    round {r + 1}/{rounds}: {name} {wall:.1f} s = {count / wall:.1f} images/s")
        import statistics

        for name in cmds:
            if name in errors:
                res["results"][name] = {"error": errors[name]}
                continue
            med = statistics.median(walls[name])
            res["results"][name] = {"median_s": med, "images_per_s": count / med, "runs": len(walls[name])}
        conv = res["results"].get("convnet run (workers ahead of the net)", {})
        refs = {k: v for k, v in res["results"].items() if not k.startswith("convnet") and "images_per_s" in v}
        if "images_per_s" in conv and refs:
            best = max(refs, key=lambda k: refs[k]["images_per_s"])
            res["reference"] = best
            res["ratio_vs_reference"] = conv["images_per_s"] / refs[best]["images_per_s"]
            res["targets"]["folder: convnet run at least 1.5x the faster of the OpenCV script and pycaffe"] = \
                res["ratio_vs_reference"] >= 1.5
        res["load_after"] = _loadavg()
        if "ratio_vs_reference" in res:
            log(f"[folder] convnet {conv['images_per_s']:.1f} images/s, "
                + ", ".join(f"{k.split(' (')[0]} {v['images_per_s']:.1f}" for k, v in refs.items())
                + f": {res['ratio_vs_reference']:.2f}x the faster ({res['reference'].split(' (')[0]}); target 1.5x "
                + ("met" if res["ratio_vs_reference"] >= 1.5 else "not met") + f"; load average {res['load_after']}")
        base = tops.get("convnet run (workers ahead of the net)")
        res["top1_agreement"] = {k: (sum(a == b for a, b in zip(base, v)) / max(len(v), 1)) for k, v in tops.items()
                                 if base is not None}
    return res


def markdown(res: dict[str, Any]) -> str:
    out = [f"### g. Classifying a folder: {res['images']} JPEGs of mixed sizes, AlexNet, batch {res['batch']}", "",
           "Wall time of the whole command (interpreter start, loading, decode, preprocessing, inference).", "",
           "| command | wall | images/s | top-1 agreement with convnet |", "|---|---:|---:|---:|"]
    for k, v in res["results"].items():
        agree = res.get("top1_agreement", {}).get(k)
        agree = f"{100 * agree:.1f}%" if agree is not None else "–"
        if "error" in v:
            out.append(f"| {k} | failed: {v['error']} | | |")
        else:
            out.append(f"| {k} | {v['median_s']:.1f} s | {v['images_per_s']:.1f} | {agree} |")
    if "ratio_vs_reference" in res:
        met = "met" if res["ratio_vs_reference"] >= 1.5 else "not met"
        ratio = res["ratio_vs_reference"]
        out += ["", f"convnet vs the faster reference ({res['reference']}): **{ratio:.2f}x** (target 1.5x: {met})."]
    if res.get("load_before"):
        out += ["", f"Load average before / after: {res['load_before']} / {res.get('load_after', '?')}."]
    if res.get("notes"):
        out += ["", res["notes"]]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    report = run(quick="--quick" in sys.argv)
    print(markdown(report))
    print(json.dumps(report["targets"], indent=2))
