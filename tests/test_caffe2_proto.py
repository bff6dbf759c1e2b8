"""convnet's caffe2.proto subset against Caffe2's schema.

The expected field tables are transcribed from caffe2/proto/caffe2.proto in PyTorch's last
Caffe2 tree, not from convnet's file, so a wrong number shows up as a mismatch here.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.protobuf import descriptor

from convnet_io.caffe2.proto import caffe2_pb2

REPO_ROOT = Path(__file__).resolve().parent.parent
FD = descriptor.FieldDescriptor

UPSTREAM = {
    "TensorProto": (
        "dims=1:int64* data_type=2:DataType data_format=15:uint32 float_data=3:float* "
        "int32_data=4:int32* byte_data=5:bytes string_data=6:bytes* double_data=9:double* "
        "int64_data=10:int64* raw_data=13:bytes name=7:string device_detail=8:DeviceOption "
        "segment=11:Segment"),
    "Segment": "begin=1:int64! end=2:int64!",
    "QTensorProto": (
        "dims=1:int64* precision=2:int32! scale=3:double! bias=4:double! is_signed=5:bool! "
        "data=6:int32* name=7:string data_type=8:DataType scales=9:double* biases=10:double* "
        "axis=11:int32 is_multiparam=12:bool"),
    "TensorProtos": "protos=1:TensorProto*",
    "Argument": (
        "name=1:string f=2:float i=3:int64 s=4:bytes t=10:TensorProto n=8:NetDef floats=5:float* "
        "ints=6:int64* strings=7:bytes* tensors=11:TensorProto* nets=9:NetDef* "
        "qtensors=12:QTensorProto*"),
    "DeviceOption": (
        "device_type=1:int32 device_id=2:int32 random_seed=3:uint32 node_name=4:string "
        "numa_node_id=5:int32 extra_info=6:string*"),
    "OperatorDef": (
        "input=1:string* output=2:string* name=3:string type=4:string arg=5:Argument* "
        "device_option=6:DeviceOption engine=7:string control_input=8:string* "
        "is_gradient_op=9:bool debug_info=10:string domain=11:string op_version=12:int64"),
    "MapFieldEntry": "key=1:string! val=2:string!",
    "BackendOptions": "backend_name=1:string! option=2:MapFieldEntry*",
    "PartitionInfo": ("name=1:string! device_id=2:int32* extra_info=3:string "
                      "backend_options=4:BackendOptions*"),
    "NetDef": (
        "name=1:string op=2:OperatorDef* type=3:string num_workers=4:int32 "
        "device_option=5:DeviceOption arg=6:Argument* external_input=7:string* "
        "external_output=8:string* partition_info=9:PartitionInfo*"),
}

DATA_TYPES = ("UNDEFINED=0 FLOAT=1 INT32=2 BYTE=3 STRING=4 BOOL=5 UINT8=6 INT8=7 UINT16=8 INT16=9 "
              "INT64=10 FLOAT16=12 DOUBLE=13 ZERO_COLLISION_HASH=14 REBATCHING_BUFFER=15")

_SCALARS = {FD.TYPE_INT32: "int32", FD.TYPE_UINT32: "uint32", FD.TYPE_INT64: "int64", FD.TYPE_FLOAT: "float",
            FD.TYPE_DOUBLE: "double", FD.TYPE_BOOL: "bool", FD.TYPE_STRING: "string", FD.TYPE_BYTES: "bytes"}


def _signature(f: descriptor.FieldDescriptor) -> str:
    kind = (f.message_type.name if f.message_type is not None else
            f.enum_type.name if f.enum_type is not None else _SCALARS[f.type])
    kind += "*" if f.is_repeated else "!" if f.is_required else ""
    return f"{f.name}={f.number}:{kind}"


def _messages():
    out = {}

    def walk(m):
        out[m.name] = m
        for n in m.nested_types:
            walk(n)

    for m in caffe2_pb2.DESCRIPTOR.message_types_by_name.values():
        walk(m)
    return out


def test_generated_code_is_fresh():
    """tools/gen_proto.py --check covers caffe2.proto as well as caffe.proto."""
    pytest.importorskip("grpc_tools")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "gen_proto.py"), "--check"],
                            cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "caffe2.proto are up to date" in result.stdout


def test_package_and_messages():
    assert caffe2_pb2.DESCRIPTOR.package == "caffe2"
    assert caffe2_pb2.DESCRIPTOR.name == "caffe2.proto"
    assert set(_messages()) == set(UPSTREAM)


@pytest.mark.parametrize("name", sorted(UPSTREAM))
def test_fields_match_caffe2(name):
    assert sorted(_signature(f) for f in _messages()[name].fields) == sorted(UPSTREAM[name].split())


def test_enums_and_defaults():
    dt = caffe2_pb2.TensorProto.DataType.DESCRIPTOR
    assert sorted(f"{v.name}={v.number}" for v in dt.values) == sorted(DATA_TYPES.split())
    assert caffe2_pb2.TensorProto().data_type == caffe2_pb2.TensorProto.FLOAT
    assert caffe2_pb2.QTensorProto().data_type == caffe2_pb2.TensorProto.INT32
    assert caffe2_pb2.DeviceOption().device_type == 0
    assert caffe2_pb2.PROTO_CUDA == 1


def test_packing_as_caffe2():
    t = caffe2_pb2.TensorProto.DESCRIPTOR.fields_by_name
    for name in ("float_data", "int32_data", "double_data", "int64_data"):
        assert t[name].is_packed, name
    a = caffe2_pb2.Argument.DESCRIPTOR.fields_by_name
    assert not a["floats"].is_packed and not a["ints"].is_packed


def test_known_wire_bytes():
    """Hand-assembled bytes fix the tags independently of the schema."""
    op = caffe2_pb2.OperatorDef(input=["x"], output=["y"], type="Relu")
    # input (1, string) "x", output (2) "y", type (4) "Relu"
    assert op.SerializeToString() == b"\x0a\x01x" + b"\x12\x01y" + b"\x22\x04Relu"
    arg = caffe2_pb2.Argument(name="k", i=3, floats=[1.0])
    # name (1) "k", i (3, varint) 3, floats (5, unpacked fixed32: tag 0x2d) 1.0
    assert arg.SerializeToString() == b"\x0a\x01k" + b"\x18\x03" + b"\x2d\x00\x00\x80\x3f"
    net = caffe2_pb2.NetDef(name="n", external_input=["data"], external_output=["prob"])
    assert net.SerializeToString() == b"\x0a\x01n" + b"\x3a\x04data" + b"\x42\x04prob"
