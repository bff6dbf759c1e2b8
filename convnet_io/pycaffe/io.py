"""``caffe.io``: images in, ``Transformer`` preprocessing, and proto <-> array converters.

Image decoding and resizing are convnet's own (``convnet_io.tools.preprocess``: Pillow decoding,
the bilinear sampling of ``skimage.transform.resize(order=1)``), so no scikit-image is needed."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.tools import preprocess as _pre


# -- proto / datum / ndarray ------------------------------------------------------------------------
def blobproto_to_array(blob: Any, return_diff: bool = False) -> np.ndarray:
    """A BlobProto's data (or diff) as an array of its shape (legacy 4-D fields win)."""
    data = np.array(blob.diff if return_diff else blob.data)
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return data.reshape(blob.num, blob.channels, blob.height, blob.width)
    return data.reshape(tuple(blob.shape.dim))


def array_to_blobproto(arr: np.ndarray, diff: np.ndarray | None = None) -> Any:
    blob = caffe_pb2.BlobProto()
    blob.shape.dim.extend(arr.shape)
    blob.data.extend(np.asarray(arr).astype(float).flat)
    if diff is not None:
        blob.diff.extend(np.asarray(diff).astype(float).flat)
    return blob


def arraylist_to_blobprotovector_str(arraylist: Sequence[np.ndarray]) -> bytes:
    vec = caffe_pb2.BlobProtoVector()
    vec.blobs.extend([array_to_blobproto(a) for a in arraylist])
    return vec.SerializeToString()


def blobprotovector_str_to_arraylist(data: bytes) -> list[np.ndarray]:
    vec = caffe_pb2.BlobProtoVector()
    vec.ParseFromString(data)
    return [blobproto_to_array(b) for b in vec.blobs]


def array_to_datum(arr: np.ndarray, label: int | None = None) -> Any:
    """A C x H x W array as a Datum: uint8 as bytes, anything else as float_data."""
    from convnet_io.data.datum import array_to_datum as _to_datum

    if np.ndim(arr) != 3:
        raise ValueError("Incorrect array shape.")
    datum = _to_datum(arr, 0 if label is None else label)
    if label is None:  # pycaffe leaves the field unset
        datum.ClearField("label")
    return datum


def datum_to_array(datum: Any) -> np.ndarray:
    """A Datum's values as C x H x W (uint8 for byte data, float64 for float_data, as pycaffe
    returns them); the label aside."""
    if len(datum.data):
        return np.frombuffer(datum.data, dtype=np.uint8).reshape(datum.channels, datum.height, datum.width)
    return np.array(datum.float_data).astype(float).reshape(datum.channels, datum.height, datum.width)


# -- images -----------------------------------------------------------------------------------------
def load_image(filename: str, color: bool = True) -> np.ndarray:
    """float32 H x W x 3 RGB in [0, 1] (H x W x 1 for ``color=False``)."""
    return _pre.load_image(filename, color=color)


def resize_image(im: np.ndarray, new_dims: Sequence[int], interp_order: int = 1) -> np.ndarray:
    """Bilinear resize of H x W x K to ``new_dims``; a constant image stays constant."""
    if interp_order != 1:
        raise NotImplementedError("caffe.io.resize_image on convnet interpolates linearly only "
                                  "(interp_order=1)")
    im = np.asarray(im)
    if im.min() == im.max():
        return np.full((int(new_dims[0]), int(new_dims[1]), im.shape[-1]), im.min(), dtype=np.float32)
    return _pre.resize_image(im, new_dims)


def oversample(images: Sequence[np.ndarray], crop_dims: Sequence[int]) -> np.ndarray:
    """10 crops per image: four corners and centre, then the same mirrored."""
    return np.concatenate([_pre.oversample(np.asarray(im), crop_dims) for im in images])


class Transformer:
    """Caffe's input preprocessing per input blob: resize, transpose, channel swap, raw scale,
    mean, input scale (``preprocess``) and its inverse (``deprocess``)."""

    def __init__(self, inputs: dict[str, Sequence[int]]):
        self.inputs = {k: tuple(v) for k, v in inputs.items()}
        self.transpose: dict[str, Any] = {}
        self.channel_swap: dict[str, Any] = {}
        self.raw_scale: dict[str, float] = {}
        self.mean: dict[str, np.ndarray] = {}
        self.input_scale: dict[str, float] = {}

    def _check_input(self, in_: str) -> None:
        if in_ not in self.inputs:
            raise Exception(  # noqa: TRY002 - pycaffe raises a plain Exception
                f"{in_} is not one of the net inputs: {self.inputs}")

    def preprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        """H' x W' x K image -> K x H x W net input."""
        self._check_input(in_)
        caffe_in = np.asarray(data).astype(np.float32, copy=False)
        in_dims = self.inputs[in_][2:]
        if caffe_in.shape[:2] != tuple(in_dims):
            caffe_in = resize_image(caffe_in, in_dims)
        if in_ in self.transpose:
            caffe_in = caffe_in.transpose(self.transpose[in_])
        if in_ in self.channel_swap:
            caffe_in = caffe_in[list(self.channel_swap[in_]), :, :]
        caffe_in = np.array(caffe_in, dtype=np.float32)  # in-place float32 arithmetic, as pycaffe
        if in_ in self.raw_scale:
            caffe_in *= self.raw_scale[in_]
        if in_ in self.mean:
            caffe_in -= self.mean[in_]
        if in_ in self.input_scale:
            caffe_in *= self.input_scale[in_]
        return caffe_in

    def deprocess(self, in_: str, data: np.ndarray) -> np.ndarray:
        self._check_input(in_)
        out = np.array(data, copy=True).squeeze()
        if in_ in self.input_scale:
            out /= self.input_scale[in_]
        if in_ in self.mean:
            out += self.mean[in_]
        if in_ in self.raw_scale:
            out /= self.raw_scale[in_]
        if in_ in self.channel_swap:
            out = out[np.argsort(self.channel_swap[in_]), :, :]
        if in_ in self.transpose:
            out = out.transpose(np.argsort(self.transpose[in_]))
        return out

    def set_transpose(self, in_: str, order: Sequence[int]) -> None:
        self._check_input(in_)
        if len(order) != len(self.inputs[in_]) - 1:
            raise Exception(  # noqa: TRY002 - pycaffe raises a plain Exception
                "Transpose order needs to have the same number of dimensions as the input.")
        self.transpose[in_] = order

    def set_channel_swap(self, in_: str, order: Sequence[int]) -> None:
        self._check_input(in_)
        if len(order) != self.inputs[in_][1]:
            raise Exception(  # noqa: TRY002 - pycaffe raises a plain Exception
                "Channel swap needs to have the same number of dimensions as the input channels.")
        self.channel_swap[in_] = order

    def set_raw_scale(self, in_: str, scale: float) -> None:
        self._check_input(in_)
        self.raw_scale[in_] = scale

    def set_mean(self, in_: str, mean: np.ndarray) -> None:
        """Per-channel values (broadcast) or an elementwise mean (resized to the input if needed)."""
        self._check_input(in_)
        mean = np.asarray(mean)
        ms = mean.shape
        if mean.ndim == 1:
            if ms[0] != self.inputs[in_][1]:
                raise ValueError("Mean channels incompatible with input.")
            mean = mean[:, np.newaxis, np.newaxis]
        else:
            if len(ms) == 2:
                ms = (1,) + ms
            if len(ms) != 3:
                raise ValueError("Mean shape invalid")
            if ms != tuple(self.inputs[in_][1:]):
                in_shape = self.inputs[in_][1:]
                m_min, m_max = mean.min(), mean.max()
                normal = (mean - m_min) / (m_max - m_min)
                mean = resize_image(normal.transpose((1, 2, 0)), in_shape[1:]).transpose((2, 0, 1)) \
                    * (m_max - m_min) + m_min
        self.mean[in_] = mean

    def set_input_scale(self, in_: str, scale: float) -> None:
        self._check_input(in_)
        self.input_scale[in_] = scale
