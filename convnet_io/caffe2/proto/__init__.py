"""Caffe2 protobuf schema subset (generated from caffe2.proto by tools/gen_proto.py)."""

from convnet_io.caffe2.proto import caffe2_pb2

__all__ = ["caffe2_pb2"]
