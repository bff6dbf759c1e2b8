"""Base class of converted layers: Caffe blobs in Caffe order, and the Caffe phase."""
from __future__ import annotations

import torch
from torch import nn


class CaffeLayer(nn.Module):
    """A converted Caffe layer. ``forward`` takes the bottoms and returns one tensor or a tuple of tops.

    ``caffe_blobs`` lists the layer's learnable blobs (parameters, or buffers such as BatchNorm's
    statistics) in the order Caffe stores them in a .caffemodel.
    """

    def caffe_blobs(self) -> list[torch.Tensor]:
        return []

    def share_blob(self, index: int, tensor: torch.Tensor) -> None:
        """Make Caffe blob ``index`` the given tensor (Caffe's parameter sharing by ParamSpec name,
        and a TEST net sharing the TRAIN net's weights)."""
        own = self.caffe_blobs()[index]
        for store in (self._parameters, self._buffers):
            for name, value in store.items():
                if value is own:
                    if tuple(tensor.shape) != tuple(own.shape):
                        raise ValueError(f"cannot share blob {index}: shape {list(tensor.shape)} "
                                         f"is not {list(own.shape)}")
                    store[name] = tensor
                    return
        raise ValueError(f"blob {index} is not a parameter or buffer of this layer")


def blob_shape_for_axis(param: torch.Tensor, ndim: int, axis: int) -> list[int]:
    """A view shape that broadcasts ``param`` over a blob of ``ndim`` axes, starting at ``axis``."""
    return [1] * axis + list(param.shape) + [1] * (ndim - axis - param.dim())
