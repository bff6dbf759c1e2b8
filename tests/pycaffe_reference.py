"""Shared by the pycaffe tests: the digits LMDBs and float64 NumPy references of the layers the
BVLC example scripts use (written from Caffe's C++ formulas, not from convnet)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def make_digits(root: Path) -> Path:
    """scikit-learn's 8x8 digits scaled to 28x28 PNGs, as train (1437) and test (360) LMDBs made
    by `convnet convert-imageset`."""
    from click.testing import CliRunner
    from convnet_cli.main import cli
    from PIL import Image
    from sklearn.datasets import load_digits

    (root / "img").mkdir(parents=True)
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
        r = CliRunner().invoke(cli, ["convert-imageset", "--gray", "-q", str(root), str(root / f"{name}.txt"),
                                     str(root / f"{name}_lmdb")])
        assert r.exit_code == 0, r.output
    return root


def digits_images(root: Path, listing: str = "test.txt") -> tuple[np.ndarray, np.ndarray]:
    """The list's images as N x 1 x 28 x 28 float64 in 0..255, and their labels."""
    from PIL import Image

    items = [line.split() for line in (root / listing).read_text().splitlines() if line]
    x = np.stack([np.asarray(Image.open(root / p), dtype=np.float64)[None] for p, _ in items])
    return x, np.array([int(lab) for _, lab in items])


def conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Caffe's convolution (one group) in float64."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[2:]
    win = sliding_window_view(x, k, axis=(2, 3))[:, :, ::stride, ::stride]  # N C Ho Wo kh kw
    return np.tensordot(win, w.astype(np.float64), axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) + b.astype(np.float64)[None, :, None, None]


def max_pool(x: np.ndarray, k: int, s: int) -> np.ndarray:
    """Caffe's MAX pooling where the windows fit exactly (no ceil overhang)."""
    win = sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    return win.max(axis=(4, 5))


def inner_product(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    return x.reshape(len(x), -1) @ w.astype(np.float64).T + b.astype(np.float64)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def lenet_forward(x: np.ndarray, p: dict[str, list[np.ndarray]], names=("conv1", "conv2", "fc1", "score")) -> dict:
    """LeNet (conv 5x5/20, pool, conv 5x5/50, pool, ip 500, relu, ip 10) in float64."""
    c1, c2, f1, f2 = names
    out = {"conv1": conv(x, *p[c1])}
    out["pool1"] = max_pool(out["conv1"], 2, 2)
    out["conv2"] = conv(out["pool1"], *p[c2])
    out["pool2"] = max_pool(out["conv2"], 2, 2)
    out["fc1"] = np.maximum(inner_product(out["pool2"], *p[f1]), 0)
    out["score"] = inner_product(out["fc1"], *p[f2])
    return out


def softmax_loss(score: np.ndarray, label: np.ndarray) -> float:
    p = softmax(score)
    return float(-np.log(np.maximum(p[np.arange(len(label)), label.astype(int)], np.finfo(np.float32).tiny)).mean())
