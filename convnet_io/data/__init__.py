"""Caffe's data layers in Python: record sources, the DataTransformer, a feeder.

* Sources (one per Caffe data layer type), each giving ``C x H x W`` records and labels:
  :class:`LMDBSource` (``Data``), :class:`ImageListSource` (``ImageData``),
  :class:`HDF5Source` (``HDF5Data``), :class:`ArraySource` (``Input`` fed by the user); DummyData
  is filled by the feeder from its fillers.
* :class:`DataTransformer`: Caffe's crop / mirror / mean / scale, exactly; :class:`PCALighting`,
  AlexNet's colour augmentation (opt-in, not Caffe).
* :class:`DataFeeder`: ``{top value id: torch.Tensor}`` batches for every source layer of a graph,
  sharded over ranks, deterministic per seed, resumable, with worker processes.

Caffe's dataset tools built on these (``convert_imageset``, ``compute_image_mean``) are in
:mod:`convnet_io.tools.imageset`.
"""
from convnet_io.data.base import BadRecord, RecordSource, read_list_file
from convnet_io.data.datum import array_to_datum, datum_to_array, encoded_datum, image_to_datum, parse_datum, read_datum
from convnet_io.data.feeder import DataFeeder
from convnet_io.data.feeds import FeederOptions, make_source
from convnet_io.data.hdf5_source import HDF5Source
from convnet_io.data.image import decode_image, read_image, resize
from convnet_io.data.image_list import ImageListSource
from convnet_io.data.lmdb_source import LMDBSource, LMDBWriter
from convnet_io.data.probe import probe_source_shapes
from convnet_io.data.synthetic import ArraySource
from convnet_io.data.transform import IMAGENET_EIGVAL, IMAGENET_EIGVEC, DataTransformer, PCALighting

__all__ = [
    "ArraySource", "BadRecord", "DataFeeder", "DataTransformer", "FeederOptions", "HDF5Source",
    "IMAGENET_EIGVAL", "IMAGENET_EIGVEC", "ImageListSource", "LMDBSource", "LMDBWriter", "PCALighting",
    "RecordSource", "array_to_datum", "datum_to_array",
    "decode_image", "encoded_datum", "image_to_datum", "make_source", "parse_datum", "probe_source_shapes",
    "read_datum", "read_image", "read_list_file", "resize",
]
