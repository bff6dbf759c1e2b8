"""BVLC's examples/siamese on scikit-learn's digits: pair LMDBs, ``convnet train`` with the
example's own net and solver, then how well the learned 2-D features separate same/different pairs.

Used by tests/test_siamese_train.py and runnable on its own for the full figure:
``python tests/siamese_digits.py WORKDIR [ITERATIONS]``.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
NETS = HERE / "bvlc_nets"


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 8x8 digits scaled to MNIST's 28x28 uint8 (bilinear)."""
    import cv2
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = np.stack([cv2.resize((im * (255.0 / 16)).astype(np.float32), (28, 28), interpolation=cv2.INTER_LINEAR)
                     for im in d.images])
    return np.clip(np.rint(imgs), 0, 255).astype(np.uint8), d.target


def pairs(images, labels, count, seed):
    """Half same-digit, half different-digit pairs: (count, 2, 28, 28) uint8 and the flags."""
    rng = np.random.default_rng(seed)
    by_digit = [np.flatnonzero(labels == k) for k in range(10)]
    a = rng.integers(0, len(images), count)
    same = np.arange(count) % 2 == 0
    b = np.empty(count, dtype=np.int64)
    for i in range(count):
        if same[i]:
            b[i] = rng.choice(by_digit[labels[a[i]]])
        else:
            other = (labels[a[i]] + rng.integers(1, 10)) % 10
            b[i] = rng.choice(by_digit[other])
    return np.stack([images[a], images[b]], axis=1), same.astype(np.int64)


def write_lmdb(path: Path, data: np.ndarray, flags: np.ndarray) -> None:
    import lmdb

    from convnet_io.data.datum import array_to_datum

    env = lmdb.open(str(path), map_size=1 << 30)
    with env.begin(write=True) as txn:
        for i, (x, y) in enumerate(zip(data, flags)):
            txn.put(f"{i:08d}".encode(), array_to_datum(x, int(y)).SerializeToString())
    env.close()


def separation(net_path: Path, weights: Path, data: np.ndarray, flags: np.ndarray, margin: float = 1.0) -> dict:
    """The deploy net's 2-D features of both images of each pair: ROC AUC of -distance for
    'same', and the accuracy of calling a pair 'same' when its distance is below margin / 2."""
    from convnet_io.api import load

    net = load(net_path, weights=weights, input_shapes={"data": (len(data), 1, 28, 28)})
    x = data.astype(np.float32) * 0.00390625
    fa = net.forward({"data": x[:, :1]}, blobs=["feat"])["feat"]
    fb = net.forward({"data": x[:, 1:]}, blobs=["feat"])["feat"]
    dist = np.sqrt(((fa - fb) ** 2).sum(1))
    same = flags.astype(bool)
    pos, neg = dist[same], dist[~same]
    auc = float((pos[:, None] < neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())
    acc = float(((dist < margin / 2) == same).mean())
    return {"auc": auc, "accuracy": acc, "same_mean": float(pos.mean()), "different_mean": float(neg.mean())}


def run(work: Path, iterations: int, train_pairs: int = 4000, test_pairs: int = 1000, seed: int = 0) -> dict:
    """Write the LMDBs, train with ``convnet train`` on BVLC's solver and net, score the test pairs."""
    work.mkdir(parents=True, exist_ok=True)
    images, labels = digit_images()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(images))
    cut = int(len(images) * 0.7)
    tr, te = order[:cut], order[cut:]  # test pairs use digits never seen in training
    xtr, ytr = pairs(images[tr], labels[tr], train_pairs, seed + 1)
    xte, yte = pairs(images[te], labels[te], test_pairs, seed + 2)
    write_lmdb(work / "train_lmdb", xtr, ytr)
    write_lmdb(work / "test_lmdb", xte, yte)
    solver = (NETS / "examples" / "siamese" / "mnist_siamese_solver.prototxt").read_text()
    solver = re.sub(r'net: "[^"]*"', f'net: "{NETS / "examples" / "siamese" / "mnist_siamese_train_test.prototxt"}"', solver)
    solver = re.sub(r'snapshot_prefix: "[^"]*"', f'snapshot_prefix: "{work / "siamese"}"', solver)
    (work / "solver.prototxt").write_text(solver)
    cmd = [str(Path(sys.executable).parent / "convnet"), "train", "--solver", str(work / "solver.prototxt"),
           "--data", f"TRAIN={work / 'train_lmdb'}", "--data", f"TEST={work / 'test_lmdb'}",
           "--max-iter", str(iterations), "--test-interval", str(iterations), "--test-iter", "10",
           "--device", "cpu", "--seed", "1", "--workers", "0"]
    out = subprocess.run(cmd, cwd=HERE.parent, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"convnet train failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    weights = work / f"siamese_iter_{iterations}.caffemodel"
    result = separation(NETS / "examples" / "siamese" / "mnist_siamese.prototxt", weights, xte, yte)
    losses = [float(m) for m in re.findall(r"loss = ([0-9.eE+-]+)", out.stdout + out.stderr)]
    result["first_loss"], result["last_loss"] = (losses[0], losses[-1]) if losses else (None, None)
    return result


if __name__ == "__main__":
    print(run(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 2000))
