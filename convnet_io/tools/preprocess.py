"""Caffe's image classification preprocessing, as pure NumPy functions.

This reproduces what Caffe's Python ``caffe.io`` and ``caffe.Classifier`` (used by
``python/classify.py``) do to an image before ImageNet-style classification:

1. ``load_image``: decode to an ``H x W x 3`` float32 RGB image in ``[0, 1]``
   (``caffe.io.load_image``: ``skimage.img_as_float(imread(...))``).
2. ``resize_image``: bilinear resize to the canonical image size, 256 x 256
   (``caffe.io.resize_image`` with ``interp_order=1``, done on the ``[0, 1]`` image).
3. ``center_crop`` to the net's input ``H x W`` (``Classifier.predict`` with
   ``oversample=False``), or ``oversample``: the four corner crops, the centre crop and
   their horizontal mirrors (``caffe.io.oversample``, same order).
4. ``to_blob``: ``HWC -> CHW``, channel swap RGB -> BGR, ``* raw_scale`` (255), minus the
   mean (``caffe.io.Transformer.preprocess``, in that order).

Choices, and where they differ from Caffe
-----------------------------------------
* **Resize.** Caffe calls ``skimage.transform.resize(order=1)``: bilinear interpolation
  with half-pixel centres (output pixel ``i`` samples the input at
  ``(i + 0.5) * in / out - 0.5``). ``resize_image`` implements exactly that mapping in
  NumPy (float64 arithmetic, float32 result) and clamps samples that fall outside the
  image to the edge pixel; where OpenCV is installed its float32 ``INTER_LINEAR`` resize,
  which samples the same grid, does it (within 1e-7 on ``[0, 1]`` images, 20x faster). Differences from Caffe: (a) at the border when *enlarging*
  an image, skimage of Caffe's era used ``mode='constant', cval=0`` (the outermost
  half pixel is blended towards the image minimum, since ``resize_image`` rescales to
  ``[0, 1]`` first), newer skimage uses ``mode='reflect'``; we repeat the edge pixel.
  Only output pixels sampled less than half a pixel from the border are affected
  (row/column 0 and the last one), which the centre crop cuts away anyway. (b) When
  *shrinking*, skimage >= 0.15 blurs with a Gaussian first (``anti_aliasing``); Caffe's
  era did not and neither do we: plain bilinear sampling, as Caffe's models were
  evaluated. Pillow's ``Image.resize(BILINEAR)`` was not used: when shrinking it
  widens its triangle filter to the scale factor (an area-like average), which gives
  visibly different values from Caffe's point sampling.
  Caffe's ``resize_image`` also rescales the image to ``[min, max] -> [0, 1]`` and back
  around the resize; bilinear weights sum to one, so that is the identity (up to float
  rounding) and is skipped.
* **Decoding.** Pillow instead of ``skimage.io.imread`` (which itself used Pillow).
  EXIF orientation is applied (Caffe did not), so a photo is classified the way it is
  displayed. Greyscale is repeated to three channels and an alpha channel dropped, as
  ``load_image`` does; 16-bit greyscale is scaled by 1/65535 as ``img_as_float`` does.
* **Centre crop.** ``Classifier.predict`` crops ``[c - crop/2, c + crop/2)`` around the
  image centre ``c = dims / 2``; with NumPy truncating the fractional bounds that is the
  offset ``(dims - crop) // 2`` (14 for 256 -> 227), which ``center_crop_offset`` returns.
* **Mean.** ``classify.py`` reduces its ``3 x 256 x 256`` mean file to per-channel
  values (``mean.mean(1).mean(1)``) and ``Transformer.set_mean`` only accepts a mean
  of one value per channel or of exactly the net's input shape. ``prepare_mean`` does
  the same: a ``C x h x w`` mean of the crop size is subtracted element-wise, a mean of
  any other size (e.g. the 256 x 256 ILSVRC mean for a 227 x 227 crop) is averaged to
  one value per channel. It is *not* centre-cropped as Caffe's C++ data layer does
  during training. Means are in the net's channel order (BGR), subtracted after
  scaling to ``[0, 255]``.
* **Input larger than 256.** Caffe would fail to crop; ``preprocess`` resizes to the
  larger of the canonical size and the crop size in each dimension.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from convnet_io.errors import ConvnetError
from convnet_io.limits import check_image

CAFFE_IMAGE_DIMS = (256, 256)
"""Canonical image size the classifier resizes to before cropping (classify.py ``--images_dim``)."""
RAW_SCALE = 255.0
RGB_TO_BGR = (2, 1, 0)
_EXIF_ORIENTATION = 0x0112


class ImageError(ConvnetError):
    """An image that cannot be read or decoded."""

    exit_code = 2

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# ---------------------------------------------------------------------------------------------
# decoding
# ---------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike, color: bool = True) -> np.ndarray:
    """Decode an image file: float32 ``H x W x 3`` RGB in ``[0, 1]`` (``H x W x 1`` when
    ``color`` is False). EXIF orientation is applied. Raises :class:`ImageError`."""
    from PIL import Image, ImageOps

    p = Path(path)
    if not p.exists():
        raise ImageError(path, "no such file")
    if p.is_dir():
        raise ImageError(path, "is a directory, not an image")
    try:
        with Image.open(p) as img:
            check_image(str(path), img.width, img.height, len(img.getbands()))  # header only, not decoded
            if img.getexif().get(_EXIF_ORIENTATION, 1) not in (1, None):
                img = ImageOps.exif_transpose(img)  # (without a turn to make it only copies the image)
            img.load()
            return image_to_array(img, color=color)
    except ConvnetError as e:
        if isinstance(e, ImageError):
            raise
        raise ImageError(path, str(e).removeprefix(f"{path}: ")) from None
    except Exception as e:  # noqa: BLE001 - decoders raise many kinds of errors on bad files
        from PIL import UnidentifiedImageError

        if isinstance(e, UnidentifiedImageError):
            reason = "not an image Pillow can decode"
        elif isinstance(e, PermissionError):
            reason = "permission denied"
        else:
            reason = f"cannot decode image: {e}"
        raise ImageError(path, reason) from None


def image_to_array(img, color: bool = True) -> np.ndarray:
    """A Pillow image as float32 ``H x W x C`` in ``[0, 1]`` (C = 3 RGB, or 1 for ``color=False``)."""
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(img, dtype=np.float64) / 65535.0
        arr = np.clip(arr, 0.0, 1.0).astype(np.float32)[:, :, None]
        return np.repeat(arr, 3, axis=2) if color else arr
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float32)[:, :, None]
        return np.repeat(arr, 3, axis=2) if color else arr
    if img.mode != ("RGB" if color else "L"):
        img = img.convert("RGB" if color else "L")
    # uint8 -> float32 and the division in one pass (the same float32 division as before)
    arr = np.divide(np.asarray(img), np.float32(255.0), dtype=np.float32)
    return arr if color else arr[:, :, None]


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for each output index, half-pixel centres,
    samples outside the image clamped to the edge."""
    src = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo


def resize_image(image: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    """Bilinear resize of an ``H x W x C`` image to ``dims = (height, width)``: float32.

    The sampling of ``skimage.transform.resize(order=1)`` (Caffe's ``caffe.io.resize_image``)
    without anti-aliasing; edge pixels repeat beyond the border (see the module notes)."""
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"expected an H x W x C image, got shape {image.shape}")
    h, w = int(dims[0]), int(dims[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"bad resize dimensions {tuple(dims)}")
    if image.shape[:2] == (h, w):
        return image.astype(np.float32, copy=True)
    out = _resize_opencv(image, h, w)
    if out is not None:
        return out
    if h * image.shape[1] > 4 * image.shape[0] * w:
        # A long thin image (9 x 57046) resized rows first would hold 256 x 57046 float64 values
        # in between: resize its columns first (the same separable filter, another order).
        return np.ascontiguousarray(resize_image(image.transpose(1, 0, 2), (w, h)).transpose(1, 0, 2))
    lo, hi, f = _bilinear_taps(image.shape[0], h)
    f = f[:, None, None]
    rows = image[lo].astype(np.float64) * (1.0 - f) + image[hi].astype(np.float64) * f
    lo, hi, f = _bilinear_taps(image.shape[1], w)
    f = f[None, :, None]
    out = rows[:, lo] * (1.0 - f) + rows[:, hi] * f
    return out.astype(np.float32)


_CV2: list = []


def _resize_opencv(image: np.ndarray, h: int, w: int) -> np.ndarray | None:
    """OpenCV's float32 INTER_LINEAR resize, None where OpenCV is missing or refuses the image.

    It samples the same grid (half-pixel centres, samples beyond the border clamped to the edge
    pixel, no anti-aliasing) with float32 weights: within 1e-7 of the float64 NumPy filter below
    on [0, 1] images (6e-8 measured on 1,000 JPEGs), and 20 to 30 times faster (exactly 2x
    shrinks take OpenCV's 2 x 2 average, which is the same bilinear sample)."""
    if not _CV2:
        try:
            import cv2
        except Exception:  # noqa: BLE001 - any import failure means "not available"
            cv2 = None
        _CV2.append(cv2)
    cv2 = _CV2[0]
    if cv2 is None or image.shape[2] > 4 or image.size == 0:
        return None
    try:
        out = cv2.resize(np.ascontiguousarray(image, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    except cv2.error:
        return None
    return out.reshape(h, w, image.shape[2])


def center_crop_offset(image_dims: Sequence[int], crop_dims: Sequence[int]) -> tuple[int, int]:
    """Top-left corner ``(y, x)`` of Caffe's centre crop: ``(dims - crop) // 2``."""
    (H, W), (h, w) = (int(d) for d in image_dims[:2]), (int(d) for d in crop_dims[:2])
    if h > H or w > W:
        raise ValueError(f"crop {h}x{w} is larger than the image {H}x{W}")
    return (H - h) // 2, (W - w) // 2


def crop_offsets(image_dims: Sequence[int], crop_dims: Sequence[int]) -> list[tuple[int, int]]:
    """The five crop corners of ``caffe.io.oversample``, in its order: top-left, top-right,
    bottom-left, bottom-right, centre."""
    H, W = int(image_dims[0]), int(image_dims[1])
    h, w = int(crop_dims[0]), int(crop_dims[1])
    centre = center_crop_offset((H, W), (h, w))
    return [(0, 0), (0, W - w), (H - h, 0), (H - h, W - w), centre]


def center_crop(image: np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """The centre ``h x w`` crop of an ``H x W x C`` image."""
    y, x = center_crop_offset(image.shape[:2], crop_dims)
    h, w = int(crop_dims[0]), int(crop_dims[1])
    return image[y:y + h, x:x + w]


def oversample(image: np.ndarray, crop_dims: Sequence[int]) -> np.ndarray:
    """``10 x h x w x C``: the crops of ``crop_offsets`` then the same five mirrored left-right
    (``caffe.io.oversample`` for one image)."""
    h, w = int(crop_dims[0]), int(crop_dims[1])
    crops = np.stack([image[y:y + h, x:x + w] for y, x in crop_offsets(image.shape[:2], (h, w))])
    return np.concatenate([crops, crops[:, :, ::-1]]).astype(np.float32, copy=False)


# ---------------------------------------------------------------------------------------------
# mean
# ---------------------------------------------------------------------------------------------


def parse_mean_value(text: str) -> np.ndarray:
    """``"104,117,123"`` -> float32 array of per-channel means (net channel order, BGR)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConvnetError(f"'{text}' is not a mean like 104,117,123") from None
    if not values:
        raise ConvnetError(f"'{text}' is not a mean like 104,117,123")
    return np.asarray(values, dtype=np.float32)


def load_mean(path: str | os.PathLike) -> np.ndarray:
    """A mean image from a ``.npy`` or ``.binaryproto`` file (told apart by content),
    squeezed to ``C x H x W`` (or ``C``)."""
    from convnet_io.caffe.caffemodel import read_blobproto

    p = Path(path)
    try:
        with open(p, "rb") as f:
            magic = f.read(6)
    except FileNotFoundError:
        raise ConvnetError(f"{path}: no such file") from None
    except OSError as e:
        raise ConvnetError(f"{path}: cannot read: {e.strerror or e}") from None
    if magic == b"\x93NUMPY":
        try:
            mean = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise ConvnetError(f"{path}: cannot read as .npy: {e}") from None
    else:
        mean = read_blobproto(p)
    mean = np.asarray(mean, dtype=np.float32)
    while mean.ndim > 3 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim not in (1, 3):
        raise ConvnetError(f"{path}: mean of shape {mean.shape}; expected C x H x W or C values")
    return mean


def prepare_mean(mean, crop_dims: Sequence[int], channels: int) -> np.ndarray:
    """The array subtracted from a ``C x h x w`` crop: ``C x 1 x 1`` per-channel values, or
    the full ``C x h x w`` mean when it has exactly the crop size. A ``C x H x W`` mean of
    another size is averaged over ``H, W`` (``classify.py``'s ``mean.mean(1).mean(1)``)."""
    mean = np.asarray(mean, dtype=np.float32)
    if mean.ndim == 0:
        mean = np.full((channels,), float(mean), dtype=np.float32)
    if mean.ndim == 2:
        mean = mean[None]
    if mean.ndim == 1:
        if mean.shape[0] != channels:
            raise ConvnetError(f"mean has {mean.shape[0]} values, the net takes {channels} channels")
        return mean[:, None, None]
    if mean.ndim != 3:
        raise ConvnetError(f"mean of shape {mean.shape}; expected C x H x W or C values")
    if mean.shape[0] != channels:
        raise ConvnetError(f"mean has {mean.shape[0]} channels, the net takes {channels}")
    if tuple(mean.shape[1:]) == (int(crop_dims[0]), int(crop_dims[1])):
        return mean
    return mean.astype(np.float64).mean(axis=(1, 2)).astype(np.float32)[:, None, None]


# ---------------------------------------------------------------------------------------------
# the whole pipeline
# ---------------------------------------------------------------------------------------------


def to_blob(crops: np.ndarray, mean: np.ndarray | None = None, raw_scale: float | None = RAW_SCALE,
            channel_swap: Sequence[int] | None = RGB_TO_BGR) -> np.ndarray:
    """``N x h x w x C`` crops in ``[0, 1]`` -> ``N x C x h x w`` float32 net input:
    transpose, channel swap, ``* raw_scale``, ``- mean`` (``Transformer.preprocess``'s order).
    ``mean`` broadcasts against ``C x h x w`` (see :func:`prepare_mean`)."""
    src = np.asarray(crops, dtype=np.float32).transpose(0, 3, 1, 2)
    if channel_swap is not None:
        swap = [int(c) for c in channel_swap]
        # RGB -> BGR is a reversed view; any other order is gathered
        src = src[:, ::-1] if swap == list(range(src.shape[1]))[::-1] else src[:, swap]
    # one pass writes the transposed, swapped and scaled crops (the same float32 product as before)
    blob = np.empty(src.shape, dtype=np.float32)
    if raw_scale is not None:
        np.multiply(src, np.float32(raw_scale), out=blob)
    else:
        blob[...] = src
    if mean is not None:
        blob -= np.asarray(mean, dtype=np.float32)
    return blob


def image_dims_for(crop_dims: Sequence[int], image_dims: Sequence[int] = CAFFE_IMAGE_DIMS) -> tuple[int, int]:
    """The size to resize to: ``image_dims``, grown to the crop where the crop is larger."""
    return max(int(image_dims[0]), int(crop_dims[0])), max(int(image_dims[1]), int(crop_dims[1]))


def preprocess(image: np.ndarray, crop_dims: Sequence[int], mean: np.ndarray | None = None,
               oversample_crops: bool = False, image_dims: Sequence[int] = CAFFE_IMAGE_DIMS,
               raw_scale: float | None = RAW_SCALE,
               channel_swap: Sequence[int] | None = RGB_TO_BGR) -> np.ndarray:
    """One ``H x W x C`` image in ``[0, 1]`` (RGB) -> the net input for it: ``1 x C x h x w``
    (centre crop) or ``10 x C x h x w`` (``oversample_crops``). ``mean`` as returned by
    :func:`prepare_mean`, or None."""
    crop_dims = (int(crop_dims[0]), int(crop_dims[1]))
    resized = resize_image(image, image_dims_for(crop_dims, image_dims))
    if oversample_crops:
        crops = oversample(resized, crop_dims)
    else:
        crops = center_crop(resized, crop_dims)[None]
    return to_blob(crops, mean=mean, raw_scale=raw_scale, channel_swap=channel_swap)
