"""``caffe.proto.caffe_pb2``: convnet's generated Caffe schema, under pycaffe's module name."""
from convnet_io.caffe.proto.caffe_pb2 import *
from convnet_io.caffe.proto.caffe_pb2 import DESCRIPTOR  # noqa: F401
