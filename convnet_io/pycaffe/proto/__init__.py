"""``caffe.proto``: the project's Caffe schema (``caffe_pb2``)."""
from convnet_io.pycaffe.proto import caffe_pb2

__all__ = ["caffe_pb2"]
