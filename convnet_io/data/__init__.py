"""Caffe's data layers in Python: record sources, the DataTransformer, a feeder, dataset tools.

* Sources (one per Caffe data layer type), each giving ``C x H x W`` records and labels:
  :class:`LMDBSource` (``Data``), :class:`ImageListSource` (``ImageData``),
  :class:`HDF5Source` (``HDF5Data``), :class:`ArraySource` (``Input`` fed by the user); DummyData
  is filled by the feeder from its fillers.
* :class:`DataTransformer`: Caffe's crop / mirror / mean / scale, exactly; :class:`PCALighting`,
  AlexNet's colour augmentation (opt-in, not Caffe).
* :class:`DataFeeder`: ``{top value id: torch.Tensor}`` batches for every source layer of a graph,
  sharded over ranks, deterministic per seed, resumable, with worker processes.
* :func:`convert_imageset`, :func:`compute_image_mean`: Caffe's tools.
"""
from .base import BadRecord, RecordSource, read_list_file
from .datum import array_to_datum, datum_to_array, encoded_datum, image_to_datum, parse_datum, read_datum
from .feeder import DataFeeder, FeederOptions, make_source, probe_source_shapes
from .hdf5_source import HDF5Source
from .image import decode_image, read_image, resize
from .image_list import ImageListSource
from .lmdb_source import LMDBSource, LMDBWriter
from .synthetic import ArraySource
from .tools import compute_image_mean, convert_imageset
from .transform import IMAGENET_EIGVAL, IMAGENET_EIGVEC, DataTransformer, PCALighting

__all__ = [
    "ArraySource", "BadRecord", "DataFeeder", "DataTransformer", "FeederOptions", "HDF5Source",
    "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "ImageListSource", "LMDBSource", "LMDBWriter", "PCALighting",
    "RecordSource", "array_to_datum", "compute_image_mean", "convert_imageset", "datum_to_array",
    "decode_image", "encoded_datum", "image_to_datum", "make_source", "parse_datum", "probe_source_shapes",
    "read_datum", "read_image", "read_list_file", "resize",
]
