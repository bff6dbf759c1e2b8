"""`convnet train` end to end: real digits to >= 97 %, exact resume, 1 vs 2 processes, signals,
AlexNet overfitting a small set, fine-tuning, metrics and plots."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from convnet_cli.main import cli
from convnet_io.caffe.caffemodel import read_caffemodel

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT.parent / "shared" / "caffe-models"
LENET_SOLVER = MODELS / "mnist" / "lenet_solver.prototxt"
needs_shared = pytest.mark.skipif(not MODELS.is_dir(), reason="../shared/caffe-models not present")


def invoke(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """scikit-learn's bundled 8x8 handwritten digits, scaled to 28x28 PNGs, as two LMDBs made by
    `convnet convert-imageset` (1437 train, 360 test, a fixed split)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("digits")
    (root / "img").mkdir()
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.images))
    test_ids = set(order[:360].tolist())
    train, test = [], []
    for i, (image, label) in enumerate(zip(d.images, d.target)):
        path = f"img/{i:04d}.png"
        Image.fromarray((image / 16.0 * 255).astype(np.uint8)).resize((28, 28), Image.BILINEAR).save(root / path)
        (test if i in test_ids else train).append(f"{path} {label}")
    (root / "train.txt").write_text("\n".join(train) + "\n")
    (root / "test.txt").write_text("\n".join(test) + "\n")
    for name in ("train", "test"):
        r = invoke("convert-imageset", "--gray", "-q", root, root / f"{name}.txt", root / f"{name}_lmdb")
        assert r.exit_code == 0, r.output
    return root


def lenet_train(digits, out: Path, *extra, nproc=1):
    args = ["train", "--solver", LENET_SOLVER, "--data", f"TRAIN={digits / 'train_lmdb'}",
            "--data", f"TEST={digits / 'test_lmdb'}", "--snapshot-prefix", out / "lenet", "--workers", "0",
            "--nproc", nproc, *extra]
    return invoke(*args)


def _weights(path: Path) -> dict[str, list[np.ndarray]]:
    return {lb.name: lb.blobs for lb in read_caffemodel(path)}


@needs_shared
def test_lenet_learns_real_digits_to_97_percent_and_opencv_agrees(digits, tmp_path):
    import cv2

    t0 = time.perf_counter()
    r = lenet_train(digits, tmp_path, "--max-iter", 500, "--test-interval", 250, "--test-iter", 4,
                    "--log-json", tmp_path / "metrics.jsonl")
    seconds = time.perf_counter() - t0
    assert r.exit_code == 0, r.output
    assert "Test net output #0: accuracy" in r.output
    assert "Iteration 500, loss = " in r.output  # Caffe's closing forward pass when display divides max_iter
    weights = tmp_path / "lenet_iter_500.caffemodel"
    assert weights.exists() and (tmp_path / "lenet_iter_500.solverstate").exists()

    # Every held-out digit through the deploy net: convnet and OpenCV on the trained caffemodel.
    import convnet_io
    from PIL import Image

    lines = (digits / "test.txt").read_text().split("\n")
    items = [line.rsplit(" ", 1) for line in lines if line]
    x = np.stack([np.asarray(Image.open(digits / p), dtype=np.float32)[None] for p, _ in items]) * 0.00390625
    labels = np.array([int(y) for _, y in items])
    net = convnet_io.load(MODELS / "mnist" / "lenet.prototxt", weights=weights, input_shapes={"data": x.shape})
    prob = net.forward({"data": x})["prob"]
    accuracy = float((prob.argmax(1) == labels).mean())
    cv_net = cv2.dnn.readNetFromCaffe(str(MODELS / "mnist" / "lenet.prototxt"), str(weights))
    cv_net.setInput(x)
    cv_prob = cv_net.forward()
    rel = np.abs(cv_prob - prob).max() / np.abs(prob).max()
    print(f"\nLeNet on 360 held-out digits: accuracy {accuracy:.4f} after 500 iterations in {seconds:.1f} s; "
          f"OpenCV max rel diff {rel:.2e}")
    assert accuracy >= 0.97
    assert rel <= 1e-4
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in records} == {"train", "test"}
    train = [r for r in records if r["phase"] == "train"]
    assert train[0]["iter"] == 0 and "lr" in train[0] and "images_per_s" in train[0]
    assert records[0] == {**records[0], "phase": "test", "iter": 0}  # test_initialization


@needs_shared
def test_resume_continues_exactly(digits, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    common = ("--test-interval", 0, "--snapshot-every", 0)
    assert lenet_train(digits, straight, "--max-iter", 12, *common).exit_code == 0
    assert lenet_train(digits, halves, "--max-iter", 6, *common).exit_code == 0
    r = lenet_train(digits, halves, "--max-iter", 12, *common, "--snapshot", halves / "lenet_iter_6.solverstate")
    assert r.exit_code == 0, r.output
    assert "Resuming from" in r.output
    a, b = _weights(straight / "lenet_iter_12.caffemodel"), _weights(halves / "lenet_iter_12.caffemodel")
    assert a.keys() == b.keys()
    for name in a:
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


@needs_shared
def test_two_processes_equal_one_with_twice_the_batch(digits, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ("--max-iter", 8, "--test-interval", 0, "--snapshot-every", 0)
    r1 = lenet_train(digits, one, *common, "--batch-size", 32)
    assert r1.exit_code == 0, r1.output
    r2 = lenet_train(digits, two, *common, "--batch-size", 16, nproc=2)
    assert r2.exit_code == 0, r2.output
    a, b = _weights(one / "lenet_iter_8.caffemodel"), _weights(two / "lenet_iter_8.caffemodel")
    worst = 0.0
    for name in a:
        for x, y in zip(a[name], b[name]):
            worst = max(worst, float(np.abs(x - y).max() / np.abs(x).max()))
    print(f"\n1 process x 32 vs 2 processes x 16: max relative weight difference {worst:.2e}")
    assert worst < 1e-4


@needs_shared
def test_sigterm_writes_a_snapshot_and_stops(digits, tmp_path):
    # Even with snapshot_after_train off, a stop signal snapshots (Caffe's --sigint_effect snapshot).
    solver = tmp_path / "solver.prototxt"
    solver.write_text(LENET_SOLVER.read_text().replace('net: "examples/mnist/lenet_train_test.prototxt"',
                                                       f'net: "{MODELS / "mnist" / "lenet_train_test.prototxt"}"')
                      + "\nsnapshot_after_train: false\n")
    cmd = [sys.executable, "-m", "convnet", "train", "--solver", str(solver),
           "--data", f"TRAIN={digits / 'train_lmdb'}", "--data", f"TEST={digits / 'test_lmdb'}",
           "--snapshot-prefix", str(tmp_path / "lenet"), "--workers", "0", "--max-iter", "100000",
           "--test-interval", "0", "--snapshot-every", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen = []
    deadline = time.time() + 120
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("Iteration 100 ") or time.time() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    output = "".join(seen) + rest
    assert proc.returncode == 0, output
    assert "SIGTERM received" in output and "Optimization stopped early." in output
    assert "Optimization Done." not in output
    snaps = sorted(tmp_path.glob("lenet_iter_*.caffemodel"))
    assert snaps and snaps[0].with_suffix(".solverstate").exists()
    assert int(snaps[0].stem.rsplit("_", 1)[1]) >= 100


def test_alexnet_overfits_a_small_generated_set(tmp_path):
    """The whole AlexNet training path: data layer, crops, mirror, mean, dropout, LRN, SGD."""
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "img").mkdir()
    lines = []
    for i in range(16):
        label = i % 4
        image = np.zeros((256, 256, 3), np.uint8)
        image[..., label % 3] = 60 + 60 * (label // 3)
        image = np.clip(image + rng.integers(0, 60, image.shape), 0, 255).astype(np.uint8)
        Image.fromarray(image).save(tmp_path / f"img/{i}.png")
        lines.append(f"img/{i}.png {label}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    assert invoke("convert-imageset", "-q", tmp_path, tmp_path / "list.txt", tmp_path / "db").exit_code == 0
    solver = tmp_path / "solver.prototxt"
    solver.write_text(f'net: "{ROOT / "prototxt" / "alexnet.prototxt"}"\nbase_lr: 0.001\nlr_policy: "fixed"\n'
                      "momentum: 0.9\nweight_decay: 0.0005\ndisplay: 1\nmax_iter: 50\naverage_loss: 1\n"
                      "snapshot_after_train: false\n")
    r = invoke("train", "--solver", solver, "--data", f"TRAIN={tmp_path / 'db'}", "--batch-size", 8,
               "--workers", 1, "--test-interval", 0, "--log-json", tmp_path / "m.jsonl")
    assert r.exit_code == 0, r.output
    losses = [json.loads(line)["loss"] for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    first, last = losses[0], float(np.mean(losses[-10:]))
    print(f"\nAlexNet, batch 8: loss {first:.3f} at the start, {last:.3f} over the last 10 of {len(losses)}")
    assert first > 6.0  # about ln(1000) for 1000 random classes
    assert last < 0.4 * first


@needs_shared
def test_fine_tuning_matches_layers_by_name(digits, tmp_path):
    base = tmp_path / "base"
    assert lenet_train(digits, base, "--max-iter", 2, "--test-interval", 0).exit_code == 0
    r = lenet_train(digits, tmp_path / "tuned", "--max-iter", 1, "--test-interval", 0, "--base-lr", 0,
                    "--weights", base / "lenet_iter_2.caffemodel")
    assert r.exit_code == 0, r.output
    a, b = _weights(base / "lenet_iter_2.caffemodel"), _weights(tmp_path / "tuned" / "lenet_iter_1.caffemodel")
    for name in a:  # base_lr 0: one step leaves the fine-tuned weights as loaded
        for x, y in zip(a[name], b[name]):
            np.testing.assert_array_equal(x, y)


def test_plot_log_writes_a_png(tmp_path):
    metrics = tmp_path / "m.jsonl"
    metrics.write_text("\n".join(json.dumps(r) for r in [
        {"phase": "train", "iter": 0, "loss": 2.3, "lr": 0.01, "images_per_s": 100},
        {"phase": "train", "iter": 100, "loss": 0.5, "lr": 0.01, "images_per_s": 100},
        {"phase": "test", "iter": 100, "loss": 0.6, "accuracy": 0.9}]) + "\n")
    r = invoke("plot-log", metrics, "-o", tmp_path / "plot.png")
    assert r.exit_code == 0, r.output
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_solver_is_a_located_error(tmp_path):
    bad = tmp_path / "solver.prototxt"
    bad.write_text('net: "x.prototxt"\nbase_lr: 0.01\nmax_iter 10\n')
    r = invoke("train", "--solver", bad)
    assert r.exit_code == 2
    assert f"{bad}:3:" in r.output
