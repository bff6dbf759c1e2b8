"""Caffe's ``ImageData`` layer source: a list file of ``path label`` lines, images read from disk.

Each image is read as ``ReadImageToCVMat(root_folder + path, new_height, new_width, is_color)``:
BGR (or one grey channel), resized with OpenCV's bilinear rule when both sizes are given. With
``shuffle`` the list is shuffled before the first epoch and again at every epoch, from the seed.
"""
from __future__ import annotations

import os

import numpy as np

from convnet_io.data.base import RecordSource, join_root, layer_salt, read_list_file, rng_for
from convnet_io.data.image import read_image
from convnet_io.errors import ConvnetError


class ImageListSource(RecordSource):
    kind = "ImageData"

    def __init__(self, list_file: str | os.PathLike, root_folder: str = "", new_height: int = 0,
                 new_width: int = 0, is_color: bool = True, shuffle: bool = False, layer: str = ""):
        if (new_height > 0) != (new_width > 0):
            raise ConvnetError(f"layer '{layer}': new_height and new_width must be set together "
                               f"(got {new_height} and {new_width})")
        self.list_file = os.fspath(list_file)
        self.root_folder = root_folder
        self.new_height, self.new_width = int(new_height), int(new_width)
        self.is_color = bool(is_color)
        self.shuffle = bool(shuffle)
        self.layer = layer
        lines = read_list_file(self.list_file)
        if not lines:
            raise ConvnetError(f"{self.list_file}: the image list is empty")
        self.paths = [join_root(root_folder, name) for name, _ in lines]
        self.labels = np.array([label for _, label in lines], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.paths)

    def name_of(self, index: int) -> str:
        return self.paths[index]

    def read(self, index: int) -> list:
        img = read_image(self.paths[index], self.new_height, self.new_width, self.is_color)
        return [img.transpose(2, 0, 1), int(self.labels[index])]

    def epoch_order(self, epoch: int, seed: int) -> np.ndarray | None:
        if not self.shuffle:
            return None
        return rng_for(seed, layer_salt(self.layer), 0x5EED, epoch).permutation(len(self.paths))
