"""Caffe's ``DataTransformer`` (``src/caffe/data_transformer.cpp``) on one ``C x H x W`` record.

For every record, in Caffe's order:

1. ``do_mirror = mirror && Rand(2)``: a coin flip whenever ``mirror`` is set, in either phase
   (Caffe's transformer does not look at the phase for mirroring; ``mirror_at_test=False`` turns
   that off at TEST).
2. With ``crop_size``: offsets ``Rand(H - crop + 1)``, ``Rand(W - crop + 1)`` at TRAIN, and
   ``(H - crop) / 2``, ``(W - crop) / 2`` (integer division) at TEST.
3. Each output pixel is ``(x - mean) * scale`` in float32, where ``mean`` is the ``mean_file``
   blob at the *same* position of the full-size image (so the mean must have the record's full
   size: Caffe checks it), or ``mean_value[c]`` (one value is used for every channel), or 0.
4. The mirrored crop is written flipped left-right.

The random numbers come from the generator the caller passes (the feeder seeds one per record),
so a record is transformed the same way on every run with the same seed.

Not Caffe: :class:`PCALighting`, AlexNet's colour augmentation (Krizhevsky et al. 2012, section
4.1), added to the pixels before the mean, at TRAIN only, when asked for.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from convnet_io.data.base import BadRecord, fmt_shape
from convnet_io.errors import ConvnetError
from convnet_io.graph.layers.data import Transform

# ImageNet's RGB pixel covariance, pixels in [0, 1] (as fb.resnet.torch and torchvision recipes use).
IMAGENET_EIGVAL = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC = ((-0.5675, 0.7192, 0.4009),
                   (-0.5808, -0.0045, -0.8140),
                   (-0.5836, -0.6948, 0.4203))


@dataclass(frozen=True)
class PCALighting:
    """AlexNet's "fancy PCA" colour augmentation: add ``sum_i alpha_i * eigval_i * eigvec_i`` to
    every RGB pixel, ``alpha_i ~ N(0, sigma)`` drawn per image.

    ``eigvec`` rows are RGB components, columns the eigenvectors; eigenvalues are for pixels in
    ``[0, 1]`` and ``pixel_scale`` (255) converts to the record's units. Records are BGR as Caffe
    stores them unless ``bgr`` is False."""

    sigma: float = 0.1
    eigval: tuple[float, ...] = IMAGENET_EIGVAL
    eigvec: tuple[tuple[float, ...], ...] = IMAGENET_EIGVEC
    pixel_scale: float = 255.0
    bgr: bool = True

    def delta(self, rng: np.random.Generator) -> np.ndarray:
        """The per-channel offset for one image, in the record's channel order."""
        alpha = rng.normal(0.0, self.sigma, size=len(self.eigval))
        rgb = np.asarray(self.eigvec, dtype=np.float64) @ (alpha * np.asarray(self.eigval, dtype=np.float64))
        rgb *= self.pixel_scale
        return (rgb[::-1] if self.bgr else rgb).astype(np.float32)


def load_mean_file(path: str) -> np.ndarray:
    """A ``.binaryproto`` mean as ``C x H x W`` float32 (the first image of a 4-D blob)."""
    from convnet_io.caffe.caffemodel import read_blobproto

    try:
        mean = np.asarray(read_blobproto(path), dtype=np.float32)
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such mean file") from None
    while mean.ndim > 3:
        mean = mean[0]
    if mean.ndim == 2:
        mean = mean[None]
    if mean.ndim != 3:
        raise ConvnetError(f"{path}: mean of shape {fmt_shape(mean.shape)}; expected 1 x C x H x W")
    return np.ascontiguousarray(mean)


class DataTransformer:
    """Caffe's DataTransformer for one layer and phase; call it on ``C x H x W`` records."""

    def __init__(self, param: Transform, phase: str = "TEST", *, layer: str = "",
                 mean: np.ndarray | None = None, pca: PCALighting | None = None,
                 mirror_at_test: bool = True):
        self.param = param
        self.phase = phase.upper()
        self.layer = layer
        self.scale = np.float32(param.scale)
        self.crop = int(param.crop_size)
        self.mirror = bool(param.mirror) and (self.phase == "TRAIN" or mirror_at_test)
        self.pca = pca if self.phase == "TRAIN" else None
        where = f"layer '{layer}': " if layer else ""
        if param.force_color and param.force_gray:
            raise ConvnetError(f"{where}cannot set both force_color and force_gray")
        if param.mean_file and param.mean_value:
            raise ConvnetError(f"{where}cannot specify mean_file and mean_value at the same time")
        self.mean = None
        if mean is not None:
            self.mean = np.asarray(mean, dtype=np.float32)
        elif param.mean_file:
            self.mean = load_mean_file(param.mean_file)
        self.mean_values = np.asarray(param.mean_value, dtype=np.float32)

    @property
    def random(self) -> bool:
        """Whether records draw random numbers (mirror, TRAIN crop, PCA lighting)."""
        return self.mirror or (self.phase == "TRAIN" and self.crop > 0) or self.pca is not None

    def output_shape(self, shape: Sequence[int]) -> tuple[int, int, int]:
        c, h, w = (int(d) for d in shape)
        return (c, self.crop, self.crop) if self.crop else (c, h, w)

    def __call__(self, record: np.ndarray, rng: np.random.Generator | None = None,
                 name: str = "<record>") -> np.ndarray:
        """The transformed record: float32 ``C x crop x crop`` (or ``C x H x W``)."""
        x = np.asarray(record)
        if x.ndim != 3:
            raise BadRecord(name, f"expected a C x H x W record, got {fmt_shape(x.shape)}")
        c, h, w = x.shape
        if self.random and rng is None:
            raise ValueError("this transform is random: pass a numpy Generator")
        do_mirror = bool(self.mirror and rng.integers(2))
        h_off = w_off = 0
        oh, ow = h, w
        if self.crop:
            if h < self.crop or w < self.crop:
                raise BadRecord(name, f"{fmt_shape(x.shape)} is smaller than crop_size {self.crop}")
            oh = ow = self.crop
            if self.phase == "TRAIN":
                h_off = int(rng.integers(h - self.crop + 1))
                w_off = int(rng.integers(w - self.crop + 1))
            else:
                h_off, w_off = (h - self.crop) // 2, (w - self.crop) // 2
        out = x[:, h_off:h_off + oh, w_off:w_off + ow].astype(np.float32)
        if self.pca is not None:
            if c != 3:
                raise BadRecord(name, f"PCA lighting needs 3 channels, the record has {c}")
            out += self.pca.delta(rng)[:, None, None]
        if self.mean is not None:
            if self.mean.shape != (c, h, w):
                raise BadRecord(name, f"the record is {fmt_shape((c, h, w))} but mean_file "
                                f"'{self.param.mean_file}' is {fmt_shape(self.mean.shape)}; Caffe "
                                "subtracts the mean at the crop offset of the full-size record, "
                                "so their sizes must match")
            out -= self.mean[:, h_off:h_off + oh, w_off:w_off + ow]
        elif self.mean_values.size:
            if self.mean_values.size not in (1, c):
                raise BadRecord(name, f"{self.mean_values.size} mean_value for {c} channels "
                                f"(give 1 or {c})")
            mv = np.broadcast_to(self.mean_values, (c,)) if self.mean_values.size == 1 else self.mean_values
            out -= mv[:, None, None]
        out *= self.scale
        if do_mirror:
            out = out[:, :, ::-1]
        return np.ascontiguousarray(out)
