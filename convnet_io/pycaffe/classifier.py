"""``caffe.Classifier`` and ``caffe.Detector``: pycaffe's ready-made image nets, on ``Net``."""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from convnet_io.pycaffe import io as caffe_io
from convnet_io.pycaffe.net import TEST, Net


def _transformer(net: Net, mean, input_scale, raw_scale, channel_swap) -> caffe_io.Transformer:
    in_ = net.inputs[0]
    t = caffe_io.Transformer({in_: net.blobs[in_].data.shape})
    t.set_transpose(in_, (2, 0, 1))
    if mean is not None:
        t.set_mean(in_, mean)
    if input_scale is not None:
        t.set_input_scale(in_, input_scale)
    if raw_scale is not None:
        t.set_raw_scale(in_, raw_scale)
    if channel_swap is not None:
        t.set_channel_swap(in_, channel_swap)
    return t


class Classifier(Net):
    """Resize to ``image_dims``, centre crop or 10 crops (``oversample``), preprocess, forward,
    average the crops' predictions."""

    def __init__(self, model_file: str, pretrained_file: str, image_dims: Sequence[int] | None = None,
                 mean=None, input_scale=None, raw_scale=None, channel_swap=None, **kwargs: Any):
        Net.__init__(self, model_file, pretrained_file, TEST, **kwargs)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.crop_dims = np.array(self.blobs[self.inputs[0]].data.shape[2:])
        self.image_dims = self.crop_dims if not image_dims else image_dims

    def predict(self, inputs: Sequence[np.ndarray], oversample: bool = True) -> np.ndarray:
        """Class scores (N x classes) for H x W x K images in [0, 1]."""
        input_ = np.zeros((len(inputs), self.image_dims[0], self.image_dims[1], inputs[0].shape[2]),
                          dtype=np.float32)
        for ix, in_ in enumerate(inputs):
            input_[ix] = caffe_io.resize_image(in_, self.image_dims)
        if oversample:
            input_ = caffe_io.oversample(input_, self.crop_dims)
        else:
            center = np.array(self.image_dims) / 2.0
            crop = np.tile(center, (1, 2))[0] + np.concatenate([-self.crop_dims / 2.0, self.crop_dims / 2.0])
            crop = crop.astype(int)
            input_ = input_[:, crop[0]:crop[2], crop[1]:crop[3], :]
        caffe_in = np.zeros(np.array(input_.shape)[[0, 3, 1, 2]], dtype=np.float32)
        for ix, in_ in enumerate(input_):
            caffe_in[ix] = self.transformer.preprocess(self.inputs[0], in_)
        out = self.forward_all(**{self.inputs[0]: caffe_in})
        predictions = out[self.outputs[0]]
        if oversample:
            predictions = predictions.reshape((len(predictions) // 10, 10, -1)).mean(1)
        return predictions


class Detector(Net):
    """R-CNN style windowed detection: each window (ymin, xmin, ymax, xmax) cropped, with
    ``context_pad`` pixels of context, warped to the net's input and classified."""

    def __init__(self, model_file: str, pretrained_file: str, mean=None, input_scale=None,
                 raw_scale=None, channel_swap=None, context_pad=None, **kwargs: Any):
        Net.__init__(self, model_file, TEST, weights=pretrained_file, **kwargs)
        self.transformer = _transformer(self, mean, input_scale, raw_scale, channel_swap)
        self.configure_crop(context_pad)

    def detect_windows(self, images_windows: Iterable) -> list[dict[str, Any]]:
        """``[{window, prediction, filename}]`` for (image filename, windows) pairs."""
        images_windows = [(f, list(w)) for f, w in images_windows]
        window_inputs = []
        for image_fname, windows in images_windows:
            image = caffe_io.load_image(image_fname).astype(np.float32)
            for window in windows:
                window_inputs.append(self.crop(image, window))
        in_ = self.inputs[0]
        caffe_in = np.zeros((len(window_inputs), window_inputs[0].shape[2]) + self.blobs[in_].data.shape[2:],
                            dtype=np.float32)
        for ix, window_in in enumerate(window_inputs):
            caffe_in[ix] = self.transformer.preprocess(in_, window_in)
        predictions = self.forward_all(**{in_: caffe_in})[self.outputs[0]]
        detections, ix = [], 0
        for image_fname, windows in images_windows:
            for window in windows:
                detections.append({"window": window, "prediction": predictions[ix], "filename": image_fname})
                ix += 1
        return detections

    def detect_selective_search(self, image_fnames: Sequence[str]):
        """Selective Search proposals need the external MATLAB tool pycaffe called."""
        raise NotImplementedError(
            "Detector.detect_selective_search is not supported on convnet: it runs the external "
            "selective_search_ijcv_with_python MATLAB tool; compute the windows elsewhere and call "
            f"detect_windows ({len(image_fnames)} image(s) given: {', '.join(map(os.fspath, image_fnames))})")

    def crop(self, im: np.ndarray, window: Sequence[int]) -> np.ndarray:
        """The window of ``im``, with ``context_pad`` context warped in when configured."""
        window = np.asarray(window)
        crop = im[window[0]:window[2], window[1]:window[3]]
        if not self.context_pad:
            return crop
        box = window.copy()
        crop_size = self.blobs[self.inputs[0]].width  # assumes square
        scale = crop_size / (1. * crop_size - self.context_pad * 2)
        half_h = (box[2] - box[0] + 1) / 2.
        half_w = (box[3] - box[1] + 1) / 2.
        center = (box[0] + half_h, box[1] + half_w)
        scaled_dims = scale * np.array((-half_h, -half_w, half_h, half_w))
        box = np.round(np.tile(center, 2) + scaled_dims)
        full_h, full_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        scale_h, scale_w = crop_size / full_h, crop_size / full_w
        pad_y = round(float(max(0, -box[0]) * scale_h))
        pad_x = round(float(max(0, -box[1]) * scale_w))
        im_h, im_w = im.shape[:2]
        box = np.clip(box, 0., [im_h, im_w, im_h, im_w]).astype(int)
        clip_h, clip_w = box[2] - box[0] + 1, box[3] - box[1] + 1
        crop_h, crop_w = round(float(clip_h * scale_h)), round(float(clip_w * scale_w))
        crop_h = min(crop_h, crop_size - pad_y)
        crop_w = min(crop_w, crop_size - pad_x)
        context_crop = caffe_io.resize_image(im[box[0]:box[2], box[1]:box[3]], (crop_h, crop_w))
        crop = np.ones(self.crop_dims, dtype=np.float32) * self.crop_mean
        crop[pad_y:pad_y + crop_h, pad_x:pad_x + crop_w] = context_crop
        return crop

    def configure_crop(self, context_pad: int | None) -> None:
        """Crop size from the net input; with context, the mean that pads out-of-image context."""
        in_ = self.inputs[0]
        tpose = self.transformer.transpose[in_]
        inv_tpose = [tpose[t] for t in tpose]
        self.crop_dims = np.array(self.blobs[in_].data.shape[1:])[inv_tpose]
        self.context_pad = context_pad
        if self.context_pad:
            channel_order = self.transformer.channel_swap.get(in_)
            raw_scale = self.transformer.raw_scale.get(in_)
            mean = self.transformer.mean.get(in_)
            if mean is not None:
                crop_mean = mean.copy().transpose(inv_tpose)
                if channel_order is not None:
                    inverse = [list(channel_order).index(i) for i in range(crop_mean.shape[2])]
                    crop_mean = crop_mean[:, :, inverse]
                if raw_scale is not None:
                    crop_mean /= raw_scale
                self.crop_mean = crop_mean
            else:
                self.crop_mean = np.zeros(self.crop_dims, dtype=np.float32)
