"""Binary weights: convnet_io.caffe.caffemodel against protobuf, Caffe's blob rules and OpenCV."""
from __future__ import annotations

import os
import stat
import struct

import numpy as np
import pytest

from convnet_io.caffe.caffemodel import (
    LayerBlobs,
    read_blobproto,
    read_caffemodel,
    write_blobproto,
    write_caffemodel,
)
from convnet_io.caffe.caffemodel import reader as cm
from convnet_io.caffe.caffemodel import writer as cm_writer
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError

RNG = np.random.default_rng(20240607)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def assert_same(actual: np.ndarray, expected: np.ndarray):
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    np.testing.assert_array_equal(actual, expected)


def add_blob(msg, arr: np.ndarray, *, legacy: bool = False, double: bool = False):
    b = msg.blobs.add()
    if legacy:
        n, c, h, w = arr.shape
        b.num, b.channels, b.height, b.width = n, c, h, w
    else:
        b.shape.dim.extend(arr.shape)
    if double:
        b.double_data.extend(arr.ravel().tolist())
    else:
        b.data.extend(arr.ravel().tolist())
    return b


# --- hand-rolled wire encoding, independent of the module under test -------


def varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = v & 0x7F
        v >>= 7
        if v:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(field: int, wt: int) -> bytes:
    return varint(field << 3 | wt)


def ld(field: int, payload: bytes) -> bytes:
    return key(field, 2) + varint(len(payload)) + payload


# ---------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------


def sample_layers():
    return [
        LayerBlobs("conv1", "Convolution", [rand(4, 3, 3, 3), rand(4)]),
        LayerBlobs("relu1", "ReLU", []),
        LayerBlobs("fc", "InnerProduct", [rand(5, 36).astype(np.float64), rand(5)]),
        LayerBlobs("scale\u00e9", "Scale", [np.array(2.5, np.float32), np.zeros((0, 3), np.float32)]),
    ]


def test_write_is_protobuf_serialization(tmp_path):
    layers = sample_layers()
    p = tmp_path / "w.caffemodel"
    write_caffemodel(p, layers, net_name="tiny")

    raw = p.read_bytes()
    net = caffe_pb2.NetParameter.FromString(raw)
    assert net.name == "tiny"
    assert len(net.layers) == 0
    assert [(l.name, l.type, len(l.blobs)) for l in net.layer] == [
        (l.name, l.type, len(l.blobs)) for l in layers]
    for layer, pl in zip(layers, net.layer):
        for arr, b in zip(layer.blobs, pl.blobs):
            assert tuple(b.shape.dim) == arr.shape
            assert not b.HasField("num")
            got = np.array(b.data, np.float32).reshape(arr.shape)
            np.testing.assert_array_equal(got, arr.astype(np.float32))

    # Exactly the bytes protobuf itself produces for the same message.
    expected = caffe_pb2.NetParameter(name="tiny")
    for layer in layers:
        pl = expected.layer.add(name=layer.name, type=layer.type)
        for arr in layer.blobs:
            b = pl.blobs.add()
            b.shape.SetInParent()
            b.shape.dim.extend(arr.shape)
            b.data.extend(arr.astype(np.float32).ravel().tolist())
    assert raw == expected.SerializeToString()


def test_write_read_round_trip(tmp_path):
    layers = sample_layers()
    p = tmp_path / "w.caffemodel"
    write_caffemodel(p, iter(layers))  # any iterable
    got = read_caffemodel(p)
    want = [l for l in layers if l.blobs]  # layers without blobs are left out
    assert [(l.name, l.type) for l in got] == [(l.name, l.type) for l in want]
    for g, w in zip(got, want):
        assert len(g.blobs) == len(w.blobs)
        for a, b in zip(g.blobs, w.blobs):
            assert_same(a, b.astype(np.float32))


def test_write_accepts_other_layouts_and_dtypes(tmp_path):
    base = rand(2, 3, 4)
    blobs = [base.transpose(2, 0, 1), base.astype(">f4"), base.astype(np.float16),
             np.arange(6, dtype=np.int64).reshape(2, 3), base[:, ::2]]
    p = tmp_path / "w.caffemodel"
    write_caffemodel(p, [LayerBlobs("x", "Python", blobs)])
    got = read_caffemodel(p)[0].blobs
    for g, b in zip(got, blobs):
        assert_same(g, np.asarray(b, np.float32))


def test_write_rejects_bad_input_and_leaves_file_alone(tmp_path):
    p = tmp_path / "w.caffemodel"
    p.write_bytes(b"old")
    bad = [
        [LayerBlobs("a", "Convolution", [np.array(["x"])])],
        [LayerBlobs("a", "Convolution", [np.ones(2, np.complex64)])],
        [LayerBlobs(3, "Convolution", [])],  # type: ignore[arg-type]
        [],
    ]
    for layers in bad:
        with pytest.raises(ConvnetError):
            write_caffemodel(p, layers)
        assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["w.caffemodel"]


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "w.caffemodel"
    p.write_bytes(b"old")
    calls = []

    def failing_write(self, f):
        calls.append(1)
        f.write(b"partial" * 1000)
        if len(calls) == 2:
            raise RuntimeError("boom")

    monkeypatch.setattr(cm_writer._EncodedBlob, "write", failing_write)
    with pytest.raises(RuntimeError, match="boom"):
        write_caffemodel(p, [LayerBlobs("a", "InnerProduct", [rand(3, 2), rand(3)])])
    assert p.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["w.caffemodel"]


def test_write_into_missing_directory_is_convnet_error(tmp_path):
    with pytest.raises(ConvnetError, match="cannot write"):
        write_caffemodel(tmp_path / "nope" / "w.caffemodel", [LayerBlobs("a", "B", [rand(2)])])


def test_written_file_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        p = tmp_path / "w.caffemodel"
        write_caffemodel(p, [LayerBlobs("a", "B", [rand(2)])])
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


# ---------------------------------------------------------------------------
# reading protobuf-written files
# ---------------------------------------------------------------------------


def test_read_v2_net_built_by_protobuf(tmp_path):
    w1, b1, w2 = rand(6, 2, 5, 5), rand(6), rand(10, 150)
    net = caffe_pb2.NetParameter(name="v2")
    net.layer.add(name="data", type="Input").input_param.shape.add(dim=[1, 2, 9, 9])
    conv = net.layer.add(name="conv", type="Convolution", bottom=["data"], top=["conv"])
    conv.convolution_param.num_output = 6
    conv.convolution_param.kernel_size.append(5)
    conv.param.add(lr_mult=1)
    add_blob(conv, w1)
    add_blob(conv, b1).diff.extend(np.ones(6).tolist())  # diff is ignored
    fc = net.layer.add(name="fc", type="InnerProduct")
    fc.inner_product_param.num_output = 10
    add_blob(fc, w2)
    p = tmp_path / "v2.caffemodel"
    p.write_bytes(net.SerializeToString())

    got = read_caffemodel(p)
    assert [(l.name, l.type, len(l.blobs)) for l in got] == [
        ("conv", "Convolution", 2), ("fc", "InnerProduct", 1)]
    assert_same(got[0].blobs[0], w1)
    assert_same(got[0].blobs[1], b1)
    assert_same(got[1].blobs[0], w2)
    for arr in got[0].blobs + got[1].blobs:
        assert arr.flags.c_contiguous and arr.flags.aligned and arr.flags.writeable
        assert arr.flags.owndata or arr.base is None or isinstance(arr.base, np.ndarray)
        assert not isinstance(arr.base, (bytes, memoryview))


def test_read_v1_net_with_legacy_shapes_and_double_data(tmp_path):
    w = rand(8, 3, 3, 3)
    b = rand(1, 1, 1, 8)
    fcw = rand(1, 1, 4, 72)
    fcb64 = rand(1, 1, 1, 4, dtype=np.float64)
    net = caffe_pb2.NetParameter(name="v1")
    L = caffe_pb2.V1LayerParameter
    conv = net.layers.add(name="conv1", type=L.CONVOLUTION)
    add_blob(conv, w, legacy=True)
    add_blob(conv, b, legacy=True)
    net.layers.add(name="relu1", type=L.RELU)
    fc = net.layers.add(name="fc", type=L.INNER_PRODUCT)
    add_blob(fc, fcw, legacy=True)
    add_blob(fc, fcb64, legacy=True, double=True)
    net.layers.add(name="prob", type=L.SOFTMAX_LOSS)
    odd = net.layers.add(name="odd", type=L.TANH)
    odd_w = rand(1, 1, 1, 3)
    add_blob(odd, odd_w)
    p = tmp_path / "v1.caffemodel"
    p.write_bytes(net.SerializeToString())

    got = read_caffemodel(p)
    assert [(l.name, l.type) for l in got] == [
        ("conv1", "Convolution"), ("fc", "InnerProduct"), ("odd", "TanH")]
    assert_same(got[0].blobs[0], w)
    assert_same(got[0].blobs[1], b)  # legacy blobs stay 4-D, as in Caffe
    assert_same(got[1].blobs[0], fcw)
    assert_same(got[1].blobs[1], fcb64)  # double_data -> float64, exact
    assert_same(got[2].blobs[0], odd_w)


def test_v1_type_names_follow_caffe_upgrade():
    enum = caffe_pb2.V1LayerParameter.LayerType
    expected = {
        "CONVOLUTION": "Convolution", "INNER_PRODUCT": "InnerProduct", "SOFTMAX_LOSS":
        "SoftmaxWithLoss", "TANH": "TanH", "IM2COL": "Im2col", "HDF5_DATA": "HDF5Data",
        "ABSVAL": "AbsVal", "BNLL": "BNLL", "SIGMOID_CROSS_ENTROPY_LOSS":
        "SigmoidCrossEntropyLoss", "NONE": "", "DECONVOLUTION": "Deconvolution",
    }
    assert set(cm.V1_LAYER_TYPES) == set(enum.values())
    for name, v2 in expected.items():
        assert cm.V1_LAYER_TYPES[enum.Value(name)] == v2


def test_read_v0_net(tmp_path):
    w, b = rand(1, 1, 3, 20), rand(1, 1, 1, 3)
    net = caffe_pb2.NetParameter(name="v0")
    data = net.layers.add(top=["data"])
    data.layer.name, data.layer.type = "data", "data"
    ip = net.layers.add(bottom=["data"], top=["ip"])
    ip.layer.name, ip.layer.type = "ip", "innerproduct"
    for arr in (w, b):
        blob = ip.layer.blobs.add(num=1, channels=1, height=arr.shape[2], width=arr.shape[3])
        blob.data.extend(arr.ravel().tolist())
    p = tmp_path / "v0.caffemodel"
    p.write_bytes(net.SerializeToString())
    (got,) = read_caffemodel(p)
    assert (got.name, got.type) == ("ip", "InnerProduct")
    assert_same(got.blobs[0], w)
    assert_same(got.blobs[1], b)


def test_legacy_dims_rules(tmp_path):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="l", type="Bias")
    only_width = layer.blobs.add(width=4)  # missing legacy dims count as 1
    only_width.data.extend([1, 2, 3, 4])
    both = layer.blobs.add(num=1, channels=2, height=1, width=3)  # legacy wins over shape
    both.shape.dim.extend([6])
    both.data.extend(range(6))
    no_shape = layer.blobs.add()  # no shape at all: 0 axes, one value
    no_shape.data.append(7)
    empty_shape = layer.blobs.add()
    empty_shape.shape.SetInParent()
    empty_shape.data.append(8)
    p = tmp_path / "l.caffemodel"
    p.write_bytes(net.SerializeToString())
    blobs = read_caffemodel(p)[0].blobs
    assert_same(blobs[0], np.array([1, 2, 3, 4], np.float32).reshape(1, 1, 1, 4))
    assert_same(blobs[1], np.arange(6, dtype=np.float32).reshape(1, 2, 1, 3))
    assert_same(blobs[2], np.array(7, np.float32))
    assert_same(blobs[3], np.array(8, np.float32))


def test_double_data_wins_over_data(tmp_path):
    d = rand(2, 2, dtype=np.float64)
    net = caffe_pb2.NetParameter()
    b = add_blob(net.layer.add(name="l", type="Scale"), d, double=True)
    b.data.extend([9.0] * 3)  # ignored, as in Caffe, even though its size is wrong
    p = tmp_path / "d.caffemodel"
    p.write_bytes(net.SerializeToString())
    assert_same(read_caffemodel(p)[0].blobs[0], d)


def test_unpacked_and_split_float_encodings(tmp_path):
    vals = rand(1000)
    unpacked = b"".join(key(5, 5) + struct.pack("<f", v) for v in vals[:600])
    packed = ld(5, vals[600:900].tobytes())
    non_minimal_tag = bytes([0xAD, 0x00]) + struct.pack("<f", vals[900])  # field 5, wt 5
    rest = b"".join(key(5, 5) + struct.pack("<f", v) for v in vals[901:])
    shape = ld(7, ld(1, varint(10) + varint(100)))
    blob = shape + unpacked + packed + non_minimal_tag + rest + ld(6, b"\0" * 8)
    d = rand(3, dtype=np.float64)
    dblob = ld(7, ld(1, varint(3))) + b"".join(key(8, 1) + struct.pack("<d", v) for v in d)
    layer = ld(1, b"x") + ld(2, b"InnerProduct") + ld(7, blob) + ld(7, dblob)
    raw = ld(1, b"net") + ld(100, layer)
    p = tmp_path / "u.caffemodel"
    p.write_bytes(raw)

    # protobuf agrees on what these bytes mean
    pnet = caffe_pb2.NetParameter.FromString(raw)
    np.testing.assert_array_equal(np.array(pnet.layer[0].blobs[0].data, np.float32), vals)

    (got,) = read_caffemodel(p)
    assert_same(got.blobs[0], vals.reshape(10, 100))
    assert_same(got.blobs[1], d)


def test_protobuf_merge_rules(tmp_path):
    # name: last wins; a repeated singular `shape` merges (dims concatenate);
    # unknown fields, wrong wire types and groups are skipped.
    blob = (ld(7, ld(1, varint(2))) + key(5, 0) + varint(9)  # field 5 as varint: unknown
            + key(99, 3) + key(1, 0) + varint(1) + key(99, 4)  # a group
            + ld(5, np.arange(6, dtype="<f4").tobytes()) + ld(7, ld(1, varint(3))))
    layer = (ld(1, b"first") + key(2, 0) + varint(3) + ld(2, b"Scale") + ld(7, blob)
             + ld(1, b"last") + ld(1000, b"\x01\x02"))
    raw = ld(100, layer) + key(5, 0) + varint(1)
    p = tmp_path / "m.caffemodel"
    p.write_bytes(raw)
    pnet = caffe_pb2.NetParameter.FromString(raw)
    assert pnet.layer[0].name == "last" and list(pnet.layer[0].blobs[0].shape.dim) == [2, 3]
    (got,) = read_caffemodel(p)
    assert (got.name, got.type) == ("last", "Scale")
    assert_same(got.blobs[0], np.arange(6, dtype=np.float32).reshape(2, 3))


# ---------------------------------------------------------------------------
# blobproto
# ---------------------------------------------------------------------------


def test_blobproto_round_trip(tmp_path):
    mean = rand(3, 16, 16) * 100
    p = tmp_path / "mean.binaryproto"
    write_blobproto(p, mean)
    b = caffe_pb2.BlobProto.FromString(p.read_bytes())
    assert list(b.shape.dim) == [3, 16, 16]
    assert_same(read_blobproto(p), mean)


def test_blobproto_legacy_mean_written_by_protobuf(tmp_path):
    mean = rand(1, 3, 4, 5) * 100
    b = caffe_pb2.BlobProto(num=1, channels=3, height=4, width=5)
    b.data.extend(mean.ravel().tolist())
    p = tmp_path / "mean.binaryproto"
    p.write_bytes(b.SerializeToString())
    assert_same(read_blobproto(p), mean)


def test_blobproto_and_caffemodel_are_not_confused(tmp_path):
    mean = tmp_path / "mean.binaryproto"
    write_blobproto(mean, rand(3, 2, 2))
    with pytest.raises(ConvnetError, match="no layers"):
        read_caffemodel(mean)
    model = tmp_path / "m.caffemodel"
    write_caffemodel(model, [LayerBlobs("a", "B", [rand(2)])], net_name="n")
    with pytest.raises(ConvnetError, match="not a BlobProto"):
        read_blobproto(model)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def write_sample(tmp_path):
    p = tmp_path / "s.caffemodel"
    write_caffemodel(p, [LayerBlobs("conv1", "Convolution", [rand(2, 1, 3, 3), rand(2)]),
                         LayerBlobs("fc", "InnerProduct", [rand(3, 8), rand(3)])],
                     net_name="sample")
    return p


def test_every_truncation_is_a_convnet_error_or_a_layer_prefix(tmp_path):
    p = write_sample(tmp_path)
    raw = p.read_bytes()
    full = read_caffemodel(p)
    cut = tmp_path / "cut.caffemodel"
    errors = 0
    for n in range(len(raw)):
        cut.write_bytes(raw[:n])
        try:
            got = read_caffemodel(cut)
        except ConvnetError as e:
            errors += 1
            assert str(cut) in str(e)
            continue
        # a cut exactly between two top-level fields is a valid, shorter message
        assert [l.name for l in got] == [l.name for l in full[:len(got)]]
    assert errors >= len(raw) - 3


def test_truncation_inside_a_layer_names_the_layer(tmp_path):
    p = write_sample(tmp_path)
    raw = p.read_bytes()
    p.write_bytes(raw[:-5])
    with pytest.raises(ConvnetError, match=r"s\.caffemodel.*truncated") as info:
        read_caffemodel(p)
    assert "corrupt" in str(info.value)
    # A corrupt byte inside the last layer's blob is reported with that layer.
    # The file ends with fc's bias blob: ... shape {dim: 3} = 3a 03 0a 01 03.
    assert raw[-5:] == bytes([0x3A, 0x03, 0x0A, 0x01, 0x03])
    bad = bytearray(raw)
    bad[-4] = 0x7F  # the shape's length now runs past the blob
    p.write_bytes(bytes(bad))
    with pytest.raises(ConvnetError, match=r"layer 'fc'.*blob 1"):
        read_caffemodel(p)


def test_random_corruption_never_escapes_as_other_errors(tmp_path):
    p = write_sample(tmp_path)
    raw = p.read_bytes()
    q = tmp_path / "bad.caffemodel"
    rng = np.random.default_rng(1)
    for _ in range(400):
        bad = bytearray(raw)
        for i in rng.integers(0, len(raw), size=int(rng.integers(1, 4))):
            bad[i] = int(rng.integers(0, 256))
        q.write_bytes(bytes(bad))
        try:
            read_caffemodel(q)
        except ConvnetError:
            pass


def test_count_mismatch_names_layer_and_numbers(tmp_path):
    net = caffe_pb2.NetParameter()
    layer = net.layer.add(name="conv9", type="Convolution")
    b = layer.blobs.add()
    b.shape.dim.extend([2, 3])
    b.data.extend([1.0] * 5)
    p = tmp_path / "c.caffemodel"
    p.write_bytes(net.SerializeToString())
    with pytest.raises(ConvnetError) as info:
        read_caffemodel(p)
    msg = str(info.value)
    assert "conv9" in msg and "5" in msg and "6" in msg and str(p) in msg


def test_bad_packed_length_and_negative_dim(tmp_path):
    p = tmp_path / "c.caffemodel"
    p.write_bytes(ld(100, ld(1, b"w") + ld(7, ld(5, b"\0" * 7))))
    with pytest.raises(ConvnetError, match="layer 'w'.*multiple of 4"):
        read_caffemodel(p)
    p.write_bytes(ld(100, ld(1, b"w") + ld(7, ld(7, ld(1, varint(-2))))))
    with pytest.raises(ConvnetError, match="layer 'w'.*negative"):
        read_caffemodel(p)


def test_file_level_errors(tmp_path):
    with pytest.raises(ConvnetError, match="no such file"):
        read_caffemodel(tmp_path / "missing.caffemodel")
    with pytest.raises(ConvnetError, match="directory"):
        read_caffemodel(tmp_path)
    empty = tmp_path / "empty.caffemodel"
    empty.write_bytes(b"")
    with pytest.raises(ConvnetError, match="empty"):
        read_caffemodel(empty)
    with pytest.raises(ConvnetError, match="empty"):
        read_blobproto(empty)
    text = tmp_path / "deploy.caffemodel"
    text.write_bytes(b'name: "AlexNet"\nlayer {\n  name: "data"\n}\n')
    with pytest.raises(ConvnetError, match=str(text)):
        read_caffemodel(text)
    both = tmp_path / "both.caffemodel"
    both.write_bytes(ld(100, ld(1, b"a")) + ld(2, ld(4, b"b")))
    with pytest.raises(ConvnetError, match="both"):
        read_caffemodel(both)


# ---------------------------------------------------------------------------
# the mmap scan + read-into-place path
# ---------------------------------------------------------------------------


def random_bits(n: int, dtype, seed: int) -> np.ndarray:
    """Values of every bit pattern (NaN payloads, infinities, subnormals, -0.0)."""
    udt = np.uint32 if np.dtype(dtype).itemsize == 4 else np.uint64
    rng = np.random.default_rng(seed)
    return rng.integers(0, np.iinfo(udt).max, size=n, dtype=udt, endpoint=True).view(dtype)


def assert_bits(actual: np.ndarray, expected: np.ndarray):
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    udt = np.uint32 if expected.dtype.itemsize == 4 else np.uint64
    np.testing.assert_array_equal(actual.view(udt), expected.view(udt))


def big_model(tmp_path):
    """A ~20 MB file: written float32 layers, then a hand-built layer whose float32
    blob is split into packed and unpacked pieces and whose float64 blob is packed."""
    written = [
        LayerBlobs("conv", "Convolution", [random_bits(64 * 32 * 5 * 5, np.float32, 1)
                                           .reshape(64, 32, 5, 5), random_bits(64, np.float32, 2)]),
        LayerBlobs("fc", "InnerProduct", [random_bits(4096 * 1150, np.float32, 3)
                                          .reshape(4096, 1150), random_bits(4096, np.float32, 4)]),
        LayerBlobs("empty", "Scale", [np.zeros((0, 3), np.float32)]),
    ]
    p = tmp_path / "big.caffemodel"
    write_caffemodel(p, written, net_name="big")
    split = random_bits(300_000, np.float32, 5)
    unpacked = b"".join(key(5, 5) + v.tobytes() for v in split[100_000:100_010])
    f32_blob = (ld(7, ld(1, varint(300) + varint(1000))) + ld(5, split[:100_000].tobytes())
                + unpacked + ld(5, split[100_010:].tobytes()))
    doubles = random_bits(50_000, np.float64, 6)
    f64_blob = ld(7, ld(1, varint(50_000))) + ld(8, doubles.astype("<f8").tobytes())
    layer = ld(1, b"mixed") + ld(2, b"Scale") + ld(7, f32_blob) + ld(7, f64_blob)
    with open(p, "ab") as f:
        f.write(ld(100, layer))
    expected = written + [LayerBlobs("mixed", "Scale", [split.reshape(300, 1000), doubles])]
    return p, expected


def assert_model(got, expected):
    assert [(l.name, l.type, len(l.blobs)) for l in got] == \
        [(l.name, l.type, len(l.blobs)) for l in expected]
    for g, e in zip(got, expected):
        for a, b in zip(g.blobs, e.blobs):
            assert_bits(a, b)
            assert (a if a.base is None else a.base).flags.owndata
            assert a.flags.c_contiguous and a.flags.aligned and a.flags.writeable


def test_large_file_reads_back_bit_exactly(tmp_path):
    p, expected = big_model(tmp_path)
    assert p.stat().st_size > 20e6
    got = read_caffemodel(p)
    assert_model(got, expected)
    assert got[0].blobs[0].dtype == np.float32 and got[-1].blobs[1].dtype == np.float64
    # every array is independent of the file and of the others
    got[1].blobs[0][...] = 0
    assert_model(read_caffemodel(p), expected)


def mapped(path) -> bool:
    with open("/proc/self/maps") as f:
        return any(line.rstrip().endswith(str(path)) for line in f)


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc/self/maps")
def test_file_is_not_mapped_after_reading_or_failing(tmp_path):
    p, _ = big_model(tmp_path)
    got = read_caffemodel(p)
    assert not mapped(p)
    del got
    raw = p.read_bytes()
    for bad in (raw[:-7], raw + b"\x0f", raw[:1000]):  # truncated, a bad tag, a cut blob
        p.write_bytes(bad)
        with pytest.raises(ConvnetError, match=str(p)):
            read_caffemodel(p)
        assert not mapped(p)


def test_unmappable_file_is_read_into_memory(tmp_path, monkeypatch):
    p, expected = big_model(tmp_path)

    class NoMap(cm.mmap.mmap):
        def __new__(cls, *args, **kwargs):
            raise OSError(19, "No such device")

    monkeypatch.setattr(cm.mmap, "mmap", NoMap)
    assert_model(read_caffemodel(p), expected)


def test_without_preadv_and_with_byte_swapping(tmp_path, monkeypatch):
    p, expected = big_model(tmp_path)
    monkeypatch.setattr(cm, "_PREADV", False)
    assert_model(read_caffemodel(p), expected)
    # a big-endian host swaps each payload in place; here that must give the swapped bits
    monkeypatch.setattr(cm, "_SWAP", True)
    got = read_caffemodel(p)
    for g, e in zip(got[:2], expected[:2]):
        for a, b in zip(g.blobs, e.blobs):
            assert_bits(a, b.byteswap())
    assert_bits(got[-1].blobs[1], expected[-1].blobs[1].byteswap())


def test_file_shrinking_after_the_scan_is_a_convnet_error(tmp_path, monkeypatch):
    p, _ = big_model(tmp_path)
    size = p.stat().st_size
    scan = cm._plan_caffemodel

    def scan_then_truncate(path, buf):
        plans = scan(path, buf)
        os.truncate(path, size // 2)
        return plans

    monkeypatch.setattr(cm, "_plan_caffemodel", scan_then_truncate)
    with pytest.raises(ConvnetError, match=f"{p}: cannot read: the file changed"):
        read_caffemodel(p)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_read_from_a_pipe(tmp_path):
    import threading

    src = write_sample(tmp_path)
    raw = src.read_bytes()
    fifo = tmp_path / "pipe.caffemodel"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "wb") as f:
            f.write(raw)

    t = threading.Thread(target=feed)
    t.start()
    try:
        got = read_caffemodel(fifo)
    finally:
        t.join()
    for g, e in zip(got, read_caffemodel(src)):
        assert (g.name, g.type) == (e.name, e.type)
        for a, b in zip(g.blobs, e.blobs):
            assert_same(a, b)


# ---------------------------------------------------------------------------
# OpenCV reads what we write
# ---------------------------------------------------------------------------

TINY_DEPLOY = """\
name: "tiny"
layer {
  name: "data"
  type: "Input"
  top: "data"
  input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } }
}
layer {
  name: "conv1"
  type: "Convolution"
  bottom: "data"
  top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 }
}
layer {
  name: "fc1"
  type: "InnerProduct"
  bottom: "conv1"
  top: "fc1"
  inner_product_param { num_output: 5 }
}
"""


def test_opencv_runs_written_weights(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(7)
    cw = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    cb = rng.standard_normal(4).astype(np.float32)
    fw = rng.standard_normal((5, 4 * 6 * 6)).astype(np.float32)
    fb = rng.standard_normal(5).astype(np.float32)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)

    proto = tmp_path / "deploy.prototxt"
    proto.write_text(TINY_DEPLOY)
    weights = tmp_path / "tiny.caffemodel"
    write_caffemodel(weights, [LayerBlobs("conv1", "Convolution", [cw, cb]),
                               LayerBlobs("fc1", "InnerProduct", [fw, fb])], net_name="tiny")

    net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))
    net.setInput(x)
    out = net.forward().astype(np.float64)

    x64 = x.astype(np.float64)
    patches = np.lib.stride_tricks.sliding_window_view(x64[0], (3, 3), axis=(1, 2))  # c,6,6,3,3
    conv = np.einsum("cijkl,ockl->oij", patches, cw.astype(np.float64)) + cb[:, None, None]
    ref = fw.astype(np.float64) @ conv.reshape(-1) + fb
    assert out.shape == (1, 5)
    rel = np.abs(out[0] - ref).max() / np.abs(ref).max()
    assert rel <= 1e-4, rel
