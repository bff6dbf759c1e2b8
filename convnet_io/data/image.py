"""Image decoding and resizing as Caffe's ``util/io.cpp`` does them with OpenCV, in Pillow + NumPy.

Arrays are ``H x W x C`` uint8 in OpenCV's channel order: BGR for colour, one channel for grey.

* ``cv::imread(IMREAD_COLOR)`` / ``imdecode``: any image becomes 3-channel BGR (grey repeated,
  alpha dropped, palette expanded). ``IMREAD_GRAYSCALE``: one channel (a JPEG decoded straight to
  its luma, as libjpeg does for OpenCV). ``IMREAD_ANYCOLOR`` (Caffe's "native" decode of an
  encoded Datum): one channel for grey images, three otherwise. 16-bit images keep their high
  byte (OpenCV without ``IMREAD_ANYDEPTH``). EXIF orientation is applied, as OpenCV >= 3.1 does.
* ``cv::resize(..., INTER_LINEAR)``: OpenCV itself when ``cv2`` is importable (exact); otherwise a
  NumPy version of OpenCV's fixed-point bilinear kernel (same sampling grid, 11-bit weights),
  which can differ from OpenCV's SIMD/IPP paths by one grey level on some pixels.
"""
from __future__ import annotations

import io
import os

import numpy as np

from convnet_io.data.base import BadRecord
from convnet_io.errors import ConvnetError
from convnet_io.limits import check_image

try:  # OpenCV is optional; Caffe resized with it, so use it where it is installed.
    import cv2 as _cv2
except Exception:  # noqa: BLE001 - any import failure means "not available"
    _cv2 = None

_GREY_MODES = {"1", "L", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_MODES = ("native", "color", "gray")


def _to_uint8(img) -> np.ndarray:
    """A single-channel Pillow image as 8-bit (16-bit and int images keep the high byte)."""
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(img).astype(np.int64)
        return np.clip(arr >> 8, 0, 255).astype(np.uint8)
    if img.mode == "F":
        return np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
    return np.asarray(img.convert("L"), dtype=np.uint8)


def _decode(src, mode: str, name: str) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if mode not in _MODES:
        raise ValueError(f"decode mode must be one of {_MODES}, not {mode!r}")
    try:
        with Image.open(src) as img:
            try:
                check_image(name, img.width, img.height, len(img.getbands()))  # header only
            except ConvnetError as e:
                raise BadRecord(name, str(e).removeprefix(f"{name}: ")) from None
            if mode == "gray" and img.format == "JPEG":
                img.draft("L", None)  # libjpeg's own colour -> grey (the Y channel), as OpenCV
            img.load()
            img = ImageOps.exif_transpose(img)
            grey = img.mode in _GREY_MODES
            if mode == "gray" or (mode == "native" and grey):
                arr = _to_uint8(img)[:, :, None]
            elif grey and img.mode != "L":
                arr = np.repeat(_to_uint8(img)[:, :, None], 3, axis=2)[:, :, ::-1]
            else:
                arr = np.asarray(img.convert("RGB"), dtype=np.uint8)[:, :, ::-1]
    except FileNotFoundError:
        raise BadRecord(name, "no such file") from None
    except IsADirectoryError:
        raise BadRecord(name, "is a directory, not an image") from None
    except PermissionError:
        raise BadRecord(name, "permission denied") from None
    except UnidentifiedImageError:
        raise BadRecord(name, "not an image (Pillow cannot identify it)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise BadRecord(name, f"cannot decode image: {e}") from None
    if arr.size == 0:
        raise BadRecord(name, "empty image")
    return np.ascontiguousarray(arr)


def decode_image(data: bytes, mode: str = "native", name: str = "<bytes>") -> np.ndarray:
    """Encoded image bytes -> ``H x W x C`` uint8 BGR (``cv::imdecode``). ``mode``: ``native``
    (IMREAD_ANYCOLOR), ``color`` (IMREAD_COLOR) or ``gray`` (IMREAD_GRAYSCALE)."""
    return _decode(io.BytesIO(bytes(data)), mode, name)


def read_image(path: str | os.PathLike, height: int = 0, width: int = 0, is_color: bool = True) -> np.ndarray:
    """Caffe's ``ReadImageToCVMat``: read in colour (BGR) or grey, resized to ``height x width``
    when both are positive. Raises :class:`BadRecord` naming ``path``."""
    name = os.fspath(path)
    if not os.path.exists(name):
        raise BadRecord(name, "no such file")
    img = _decode(name, "color" if is_color else "gray", name)
    if height > 0 and width > 0:
        img = resize(img, height, width)
    return img


def resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """``cv::resize(img, Size(width, height))`` with INTER_LINEAR on an ``H x W x C`` uint8 image."""
    height, width = int(height), int(width)
    if img.shape[:2] == (height, width):
        return img
    if _cv2 is not None:
        out = _cv2.resize(img, (width, height), interpolation=_cv2.INTER_LINEAR)
        return out.reshape(height, width, img.shape[2])
    return resize_linear_numpy(img, height, width)


_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """OpenCV's INTER_LINEAR source indices and 11-bit fixed-point weights along one axis."""
    scale = n_in / n_out
    f = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    low = s < 0
    s[low], f[low] = 0, 0.0
    high = s >= n_in - 1
    s[high], f[high] = n_in - 1, 0.0
    w1 = np.rint(f.astype(np.float64) * _COEF_SCALE).astype(np.int64)
    w0 = np.rint((1.0 - f.astype(np.float64)) * _COEF_SCALE).astype(np.int64)
    return s, np.minimum(s + 1, n_in - 1), w0, w1


def resize_linear_numpy(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """OpenCV's scalar fixed-point INTER_LINEAR resize of a uint8 ``H x W x C`` image, in NumPy."""
    src = np.asarray(img).astype(np.int64)
    x0, x1, a0, a1 = _linear_taps(src.shape[1], width)
    rows = src[:, x0] * a0[None, :, None] + src[:, x1] * a1[None, :, None]
    y0, y1, b0, b1 = _linear_taps(src.shape[0], height)
    out = rows[y0] * b0[:, None, None] + rows[y1] * b1[:, None, None]
    out = (out + (1 << (2 * _COEF_BITS - 1))) >> (2 * _COEF_BITS)
    return np.clip(out, 0, 255).astype(np.uint8)


def encode_image(img: np.ndarray, ext: str) -> bytes:
    """``cv::imencode("." + ext, img)`` for an ``H x W x C`` BGR (or grey) uint8 image; JPEG at
    OpenCV's default quality 95."""
    from PIL import Image

    ext = ext.lower().lstrip(".")
    if img.shape[2] == 1:
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, 0]), "L")
    else:
        pil = Image.fromarray(np.ascontiguousarray(img[:, :, ::-1]), "RGB")
    fmt = {"jpg": "JPEG", "jpeg": "JPEG", "jpe": "JPEG", "png": "PNG", "bmp": "BMP",
           "tif": "TIFF", "tiff": "TIFF", "webp": "WEBP", "ppm": "PPM", "pgm": "PPM"}.get(ext)
    if fmt is None:
        raise ValueError(f"cannot encode images as '.{ext}'")
    buf = io.BytesIO()
    pil.save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()
