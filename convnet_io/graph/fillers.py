"""Caffe's weight fillers in NumPy, seeded and reproducible (``src/caffe/filler.hpp``)."""
from __future__ import annotations

import math

import numpy as np

from convnet_io.graph.types import Filler, Shape


def _fans(shape: Shape) -> tuple[int, int]:
    """Caffe's fan_in = count / shape[0]; fan_out = count / shape[1] (count for 1-D blobs)."""
    n = int(np.prod(shape)) if shape else 1
    fan_in = n // shape[0] if shape else n
    fan_out = n // shape[1] if len(shape) > 1 else n
    return fan_in, fan_out


def _variance_n(f: Filler, shape: Shape) -> float:
    fan_in, fan_out = _fans(shape)
    if f.variance_norm == "AVERAGE":
        return (fan_in + fan_out) / 2.0
    if f.variance_norm == "FAN_OUT":
        return float(fan_out)
    return float(fan_in)


def fill(f: Filler | None, shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A float32 array of ``shape`` filled as Caffe's filler ``f`` would (constant 0 when None)."""
    f = f or Filler()
    shape = tuple(int(d) for d in shape)
    t = f.type
    if t == "constant":
        out = np.full(shape, f.value, dtype=np.float64)
    elif t == "uniform":
        out = rng.uniform(f.min, f.max, size=shape)
    elif t == "gaussian":
        out = rng.normal(f.mean, f.std, size=shape)
        if f.sparse >= 0:
            # Caffe keeps each weight with probability sparse / num_outputs (shape[0]).
            if len(shape) < 1:
                raise ValueError("sparse gaussian filling needs a blob of at least 1 axis")
            keep = rng.random(shape) < (f.sparse / shape[0])
            out = out * keep
    elif t == "xavier":
        scale = math.sqrt(3.0 / _variance_n(f, shape))
        out = rng.uniform(-scale, scale, size=shape)
    elif t == "msra":
        out = rng.normal(0.0, math.sqrt(2.0 / _variance_n(f, shape)), size=shape)
    elif t == "positive_unitball":
        out = rng.uniform(0.0, 1.0, size=shape)
        rows = out.reshape(shape[0], -1)
        out = (rows / rows.sum(axis=1, keepdims=True)).reshape(shape)
    elif t == "bilinear":
        out = _bilinear(shape)
    else:
        raise ValueError(f"unknown filler type '{t}'")
    return out.astype(np.float32)


def _bilinear(shape: Shape) -> np.ndarray:
    """Caffe's BilinearFiller: an upsampling kernel for Deconvolution, same for every channel."""
    if len(shape) != 4 or shape[2] != shape[3]:
        raise ValueError(f"bilinear filling needs a 4-D blob with square kernels, got {list(shape)}")
    k = shape[3]
    f = math.ceil(k / 2.0)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    x = np.arange(k)
    kernel1d = 1 - np.abs(x / f - c)
    kernel = kernel1d[:, None] * kernel1d[None, :]
    return np.broadcast_to(kernel, shape).copy()
