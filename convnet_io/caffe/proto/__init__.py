"""Caffe protobuf schema (generated from caffe.proto by tools/gen_proto.py)."""

from convnet_io.caffe.proto import caffe_pb2

__all__ = ["caffe_pb2"]
