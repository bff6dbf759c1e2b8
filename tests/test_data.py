"""convnet_io.data: Caffe's DataTransformer against a float64 NumPy reference, Datum records,
the ImageData / Data / HDF5Data / DummyData / Input sources, sharding, bad records, the feeder."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.caffemodel import write_blobproto
from convnet_io.data import (BadRecord, DataFeeder, DataTransformer, HDF5Source, ImageListSource, LMDBSource,
                             LMDBWriter, PCALighting, array_to_datum, decode_image, encoded_datum, read_datum,
                             read_image, probe_source_shapes)
from convnet_io.data.image import resize_linear_numpy
from convnet_io.errors import ConvnetError
from convnet_io.graph.layers.data import Transform
from convnet_io.caffe.prototxt import parse_net_text

# ---------------------------------------------------------------------------------------------
# float64 reference of Caffe's DataTransformer::Transform(const Datum&, Dtype*), index by index
# ---------------------------------------------------------------------------------------------


def ref_transform(x, crop, phase, mirror_flag, h_off, w_off, scale=1.0, mean=None, mean_values=()):
    """Caffe's loop: data_index = (c*H + h_off + h)*W + w_off + w; top_index mirrored when
    do_mirror; value (x - mean[data_index]) * scale or (x - mean_value[c]) * scale."""
    C, H, W = x.shape
    h_out, w_out = (crop, crop) if crop else (H, W)
    if crop and phase == "TEST":
        h_off, w_off = (H - crop) // 2, (W - crop) // 2
    if not crop:
        h_off = w_off = 0
    flat = x.astype(np.float64).reshape(-1)
    mflat = None if mean is None else np.asarray(mean, np.float64).reshape(-1)
    mv = list(mean_values) * C if len(mean_values) == 1 else list(mean_values)
    out = np.zeros(C * h_out * w_out)
    for c in range(C):
        for h in range(h_out):
            for w in range(w_out):
                data_index = (c * H + h_off + h) * W + w_off + w
                top_index = (c * h_out + h) * w_out + ((w_out - 1 - w) if mirror_flag else w)
                v = flat[data_index]
                if mflat is not None:
                    out[top_index] = (v - mflat[data_index]) * scale
                elif mv:
                    out[top_index] = (v - mv[c]) * scale
                else:
                    out[top_index] = v * scale
    return out.reshape(C, h_out, w_out)


def draws(seed, mirror, crop, phase, H, W):
    """The random numbers the transformer takes, in Caffe's order: Rand(2) for mirror, then the
    crop offsets Rand(H - crop + 1), Rand(W - crop + 1) at TRAIN."""
    rng = np.random.default_rng(seed)
    m = bool(rng.integers(2)) if mirror else False
    h_off = w_off = 0
    if crop and phase == "TRAIN":
        h_off, w_off = int(rng.integers(H - crop + 1)), int(rng.integers(W - crop + 1))
    return m, h_off, w_off


RECORD = np.random.default_rng(7).integers(0, 256, size=(3, 11, 14), dtype=np.uint8)
MEAN = np.random.default_rng(8).uniform(0, 255, size=(3, 11, 14)).astype(np.float32)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("crop", [0, 5, 8])
@pytest.mark.parametrize("mean_kind", ["none", "file", "one", "per_channel"])
@pytest.mark.parametrize("mirror", [False, True])
def test_transformer_matches_caffe_reference(phase, crop, mean_kind, mirror):
    scale = 0.00390625 if mean_kind != "one" else 1.7
    mean_values = {"one": (104.0,), "per_channel": (104.0, 117.0, 123.0)}.get(mean_kind, ())
    t = Transform(scale=scale, mirror=mirror, crop_size=crop, mean_value=mean_values)
    tr = DataTransformer(t, phase, mean=MEAN if mean_kind == "file" else None)
    for seed in range(6):
        got = tr(RECORD, np.random.default_rng(seed))
        m, h_off, w_off = draws(seed, mirror, crop, phase, 11, 14)
        want = ref_transform(RECORD, crop, phase, m, h_off, w_off, scale,
                             MEAN if mean_kind == "file" else None, mean_values)
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-4)


def test_test_phase_centre_crop_offsets_and_full_size_mean():
    # (11 - 4) // 2 = 3 rows, (14 - 4) // 2 = 5 columns: the mean is taken at the same offset.
    t = Transform(crop_size=4, mean_file="unused.binaryproto")
    got = DataTransformer(t, "TEST", mean=MEAN)(RECORD)
    want = RECORD[:, 3:7, 5:9].astype(np.float64) - MEAN[:, 3:7, 5:9]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_scale_applies_after_the_mean():
    t = Transform(scale=0.5, mean_value=(10.0,))
    x = np.full((1, 2, 2), 30, dtype=np.uint8)
    assert np.all(DataTransformer(t, "TEST")(x) == (30 - 10) * 0.5)


def test_train_crop_offsets_cover_the_range_and_mirror_flips():
    tr = DataTransformer(Transform(crop_size=9, mirror=True), "TRAIN")
    x = np.arange(11 * 14, dtype=np.float32).reshape(1, 11, 14)
    seen, flips = set(), set()
    for s in range(300):
        out = tr(x, np.random.default_rng(s))[0]
        mirrored = out[0, 0] > out[0, -1]
        flips.add(mirrored)
        row = out if not mirrored else out[:, ::-1]
        seen.add((int(row[0, 0]) // 14, int(row[0, 0]) % 14))
    assert seen == {(h, w) for h in range(3) for w in range(6)}
    assert flips == {True, False}


def test_mirror_at_test_is_caffes_coin_flip_unless_turned_off():
    x = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    caffe = DataTransformer(Transform(mirror=True), "TEST")
    assert {bool(caffe(x, np.random.default_rng(s))[0, 0, 0] == 3) for s in range(20)} == {True, False}
    off = DataTransformer(Transform(mirror=True), "TEST", mirror_at_test=False)
    assert not off.random
    np.testing.assert_array_equal(off(x), x.astype(np.float32))


def test_transformer_errors():
    with pytest.raises(ConvnetError, match="mean_file and mean_value"):
        DataTransformer(Transform(mean_file="m", mean_value=(1.0,)))
    with pytest.raises(BadRecord, match="smaller than crop_size"):
        DataTransformer(Transform(crop_size=20), "TEST")(RECORD, name="rec7")
    with pytest.raises(BadRecord, match="mean_file"):
        DataTransformer(Transform(mean_file="m.binaryproto"), "TEST", mean=MEAN[:, :10])(RECORD)
    with pytest.raises(BadRecord, match="2 mean_value for 3 channels"):
        DataTransformer(Transform(mean_value=(1.0, 2.0)), "TEST")(RECORD)


def test_mean_file_read_from_binaryproto(tmp_path):
    path = tmp_path / "mean.binaryproto"
    write_blobproto(path, MEAN[None])
    got = DataTransformer(Transform(crop_size=5, mean_file=str(path)), "TEST")(RECORD)
    np.testing.assert_allclose(got, RECORD[:, 3:8, 4:9] - MEAN[:, 3:8, 4:9].astype(np.float64), rtol=1e-6)


def test_pca_lighting_is_opt_in_and_follows_alexnet():
    x = np.full((3, 4, 4), 100, dtype=np.uint8)
    plain = DataTransformer(Transform(), "TRAIN")
    assert not plain.random
    pca = PCALighting()
    tr = DataTransformer(Transform(), "TRAIN", pca=pca)
    got = tr(x, np.random.default_rng(3))
    alpha = np.random.default_rng(3).normal(0.0, 0.1, size=3)
    vec = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
    rgb = vec @ (alpha * np.array([0.2175, 0.0188, 0.0045])) * 255.0
    np.testing.assert_allclose(got[:, 0, 0], 100 + rgb[::-1], rtol=1e-5)  # BGR records
    assert np.ptp(got, axis=(1, 2)).max() == 0  # the same offset for every pixel
    assert DataTransformer(Transform(), "TEST", pca=pca).pca is None  # training only


# ---------------------------------------------------------------------------------------------
# images and Datums
# ---------------------------------------------------------------------------------------------


def rgb_image(seed, h=12, w=16):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def png_bytes(rgb):
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "PNG")
    return buf.getvalue()


def test_decode_is_bgr_and_modes():
    rgb = rgb_image(1)
    bgr = decode_image(png_bytes(rgb), "native")
    np.testing.assert_array_equal(bgr, rgb[:, :, ::-1])
    grey = np.random.default_rng(2).integers(0, 256, size=(5, 6), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(grey, "L").save(buf, "PNG")
    assert decode_image(buf.getvalue(), "native").shape == (5, 6, 1)
    colour = decode_image(buf.getvalue(), "color")
    assert colour.shape == (5, 6, 3) and all(np.array_equal(colour[:, :, c], grey) for c in range(3))
    assert decode_image(png_bytes(rgb), "gray").shape == (12, 16, 1)
    with pytest.raises(BadRecord, match="not an image"):
        decode_image(b"not an image at all", name="k1")


def test_datum_round_trip_raw_float_and_encoded():
    chw = rgb_image(3).transpose(2, 0, 1)[::-1].copy()  # BGR C x H x W
    arr, label = read_datum(array_to_datum(chw, 7).SerializeToString())
    assert arr.dtype == np.uint8 and label == 7
    np.testing.assert_array_equal(arr, chw)
    f = np.random.default_rng(4).normal(size=(2, 3, 4)).astype(np.float32)
    arr, label = read_datum(array_to_datum(f, 3).SerializeToString())
    assert arr.dtype == np.float32 and label == 3
    np.testing.assert_array_equal(arr, f)
    rgb = rgb_image(5)
    arr, label = read_datum(encoded_datum(png_bytes(rgb), 9).SerializeToString())
    np.testing.assert_array_equal(arr, rgb[:, :, ::-1].transpose(2, 0, 1))
    assert label == 9
    gray, _ = read_datum(encoded_datum(png_bytes(rgb), 9).SerializeToString(), decode="gray")
    assert gray.shape == (1, 12, 16)


def test_corrupt_datums_are_bad_records():
    from convnet_io.caffe.proto import caffe_pb2

    with pytest.raises(BadRecord, match="k1: corrupt record"):
        read_datum(b"\xff\xff\xff\xff", "k1")
    short = caffe_pb2.Datum(channels=3, height=4, width=4, data=b"\x00" * 10)
    with pytest.raises(BadRecord, match="10 bytes"):
        read_datum(short.SerializeToString(), "k2")


def test_numpy_resize_matches_opencv_within_one_level():
    cv2 = pytest.importorskip("cv2")
    img = rgb_image(6, 37, 53)
    for h, w in [(20, 30), (64, 80), (37, 26), (11, 90)]:
        ours = resize_linear_numpy(img, h, w).astype(int)
        ref = cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR).astype(int)
        assert ours.shape == ref.shape and np.abs(ours - ref).max() <= 1


# ---------------------------------------------------------------------------------------------
# ImageData: list files, shuffling, sharding, bad records
# ---------------------------------------------------------------------------------------------


def make_image_list(tmp_path, n, size=(10, 12), missing=(), labels=None):
    root = tmp_path / "imgs"
    root.mkdir(exist_ok=True)
    lines = []
    for i in range(n):
        name = f"im{i:03d}.png"
        if i not in missing:
            rgb = np.full((*size, 3), i, dtype=np.uint8)
            rgb[0, 0] = (i, 100, 200)
            Image.fromarray(rgb).save(root / name)
        lines.append(f"{name} {labels[i] if labels is not None else i}")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    return str(root) + "/", str(lst)


def image_data_net(lst, root, batch, shuffle=False, crop=0, phase_rule=""):
    return parse_net_text(f'''
layer {{ name: "img" type: "ImageData" top: "data" top: "label" {phase_rule}
  transform_param {{ crop_size: {crop} }}
  image_data_param {{ source: "{lst}" root_folder: "{root}" batch_size: {batch}
                     shuffle: {str(shuffle).lower()} new_height: 10 new_width: 12 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: 2 }} }}
''')


def image_graph(tmp_path, n, batch, shuffle=False, **kw):
    root, lst = make_image_list(tmp_path, n, **kw)
    return build_graph(image_data_net(lst, root, batch, shuffle), phase="TRAIN")


def test_image_source_reads_bgr_with_labels(tmp_path):
    root, lst = make_image_list(tmp_path, 3)
    src = ImageListSource(lst, root)
    img, label = src.read(2)
    assert img.shape == (3, 10, 12) and label == 2
    assert tuple(img[:, 0, 0]) == (200, 100, 2)  # B, G, R
    assert src.name_of(1).endswith("imgs/im001.png")


def test_list_file_errors_name_the_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("a.png 1\nb.png x\n")
    with pytest.raises(ConvnetError, match=r"bad.txt:2: 'x' is not an integer label"):
        ImageListSource(bad)
    bad.write_text("a.png 1\nlonely.png\n")
    with pytest.raises(ConvnetError, match=r"bad.txt:2: expected 'path label'"):
        ImageListSource(bad)


def test_image_data_shuffle_is_seeded_and_changes_every_epoch(tmp_path):
    g = image_graph(tmp_path, 12, 4, shuffle=True)
    a = DataFeeder(g, workers=0, seed=3)
    b = DataFeeder(g, workers=0, seed=3)
    c = DataFeeder(g, workers=0, seed=4)
    epoch0 = [i for bt in range(3) for _, i in a.record_indices(bt)]
    epoch1 = [i for bt in range(3, 6) for _, i in a.record_indices(bt)]
    assert sorted(epoch0) == sorted(epoch1) == list(range(12))
    assert epoch0 != list(range(12)) and epoch0 != epoch1
    assert epoch0 == [i for bt in range(3) for _, i in b.record_indices(bt)]
    assert epoch0 != [i for bt in range(3) for _, i in c.record_indices(bt)]
    labels = np.concatenate([a.batch(bt)["label"].numpy() for bt in range(3)])
    np.testing.assert_array_equal(labels, epoch0)  # label i belongs to image i


@pytest.mark.parametrize("n", [12, 11])
def test_two_ranks_cover_every_record_once_per_epoch(tmp_path, n):
    g = image_graph(tmp_path, n, 3)
    ranks = [DataFeeder(g, workers=0, seed=0, rank=r, world_size=2) for r in range(2)]
    per_rank = [[er for bt in range(6) for er in f.record_indices(bt)] for f in ranks]
    assert not set(per_rank[0]) & set(per_rank[1])  # disjoint, also across epochs
    for epoch in range(2):
        got = sorted(i for recs in per_rank for e, i in recs if e == epoch)
        assert got == list(range(n))
    # and the batches hold those records: label i is image i
    for r, f in enumerate(ranks):
        labels = f.batch(0)["label"].numpy()
        np.testing.assert_array_equal(labels, [i for _, i in per_rank[r][:3]])
    assert [i for _, i in per_rank[0][:3]] == [0, 2, 4] and [i for _, i in per_rank[1][:3]] == [1, 3, 5]


def test_data_loops_forever_like_caffe(tmp_path):
    g = image_graph(tmp_path, 5, 2)
    f = DataFeeder(g, workers=0)
    labels = [int(v) for _ in range(5) for v in next(f)["label"]]
    assert labels == [0, 1, 2, 3, 4] * 2


def test_missing_image_is_an_error_naming_it_and_skip_bad_counts(tmp_path):
    g = image_graph(tmp_path, 6, 3, missing=(1,))
    with pytest.raises(ConvnetError, match=r"layer 'img': .*im001\.png: no such file"):
        DataFeeder(g, workers=0).batch(0)
    f = DataFeeder(g, workers=0, skip_bad=True)
    batch = f.batch(0)
    assert batch["data"].shape == (3, 3, 10, 12)
    assert f.skipped == 1 and any(k.endswith("im001.png") for k in f.bad_records)
    labels = [int(v) for v in batch["label"]]
    assert 1 not in labels and labels == [0, 4, 2]  # the slot is refilled from the next batch's slot
    # the image in each slot is the one its label names
    assert [int(v) for v in batch["data"][:, 2, 0, 0]] == labels


def test_label_out_of_range_is_an_error_or_skipped(tmp_path):
    g = image_graph(tmp_path, 4, 2, labels=[0, 1, 5, 1])
    assert DataFeeder(g, workers=0).batch(1)["label"].tolist() == [5.0, 1.0]  # unchecked by default
    with pytest.raises(ConvnetError, match=r"im002\.png: label 5 is out of range for 3 classes"):
        DataFeeder(g, workers=0, num_classes=3).batch(1)
    f = DataFeeder(g, workers=0, num_classes=3, skip_bad=True)
    assert all(0 <= v < 3 for v in f.batch(1)["label"].tolist()) and f.skipped == 1


def test_shape_mismatch_with_the_net_names_the_record(tmp_path):
    root, lst = make_image_list(tmp_path, 2)
    net = image_data_net(lst, root, 2)
    g = build_graph(net, phase="TRAIN", input_shapes={"data": (2, 1, 10, 12)})
    want = r"im000\.png: top 'data' is 3x10x12 after the transform but the net takes 1x10x12"
    with pytest.raises(ConvnetError, match=want):
        DataFeeder(g, workers=0).batch(0)


def test_bad_options_and_unknown_source_override(tmp_path):
    g = image_graph(tmp_path, 2, 1)
    with pytest.raises(ConvnetError, match="rank 2"):
        DataFeeder(g, rank=2, world_size=2)
    with pytest.raises(ConvnetError, match="unknown data layer"):
        DataFeeder(g, sources={"nope": "x"})
    with pytest.raises(TypeError, match="unknown feeder option"):
        DataFeeder(g, wrkers=1)


# ---------------------------------------------------------------------------------------------
# Data (LMDB), the feeder on a train_val net, workers, resuming
# ---------------------------------------------------------------------------------------------


def write_lmdb(path, n, shape=(3, 14, 16)):
    images = np.random.default_rng(11).integers(0, 256, size=(n, *shape), dtype=np.uint8)
    with LMDBWriter(path) as w:
        for i in range(n):
            w.put(f"{i:08d}_img{i}", array_to_datum(images[i], i % 5).SerializeToString())
        w.finish()
    return images


TRAIN_VAL = """
name: "tiny_train_val"
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TRAIN }}
  transform_param {{ crop_size: 12 mirror: true mean_file: "{mean}" scale: 0.0078125 }}
  data_param {{ source: "{db}" batch_size: 4 backend: LMDB }} }}
layer {{ name: "data" type: "Data" top: "data" top: "label" include {{ phase: TEST }}
  transform_param {{ crop_size: 12 mean_value: 104 mean_value: 117 mean_value: 123 }}
  data_param {{ source: "{db}" batch_size: 3 backend: LMDB }} }}
layer {{ name: "conv" type: "Convolution" bottom: "data" top: "conv"
  convolution_param {{ num_output: 2 kernel_size: 3 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "conv" top: "fc" inner_product_param {{ num_output: 5 }} }}
layer {{ name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }}
layer {{ name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc" include {{ phase: TEST }} }}
"""


@pytest.fixture(scope="module")
def lmdb_net(tmp_path_factory):
    d = tmp_path_factory.mktemp("lmdb")
    images = write_lmdb(str(d / "train_lmdb"), 10)
    mean = images.astype(np.float64).mean(axis=0).astype(np.float32)
    write_blobproto(d / "mean.binaryproto", mean[None])
    net = parse_net_text(TRAIN_VAL.format(db=d / "train_lmdb", mean=d / "mean.binaryproto"))
    return net, images, mean, d


def test_lmdb_source_reads_records_in_key_order(lmdb_net):
    _, images, _, d = lmdb_net
    src = LMDBSource(str(d / "train_lmdb"))
    assert len(src) == 10 and "key '00000003_img3'" in src.name_of(3)
    img, label = src.read(3)
    np.testing.assert_array_equal(img, images[3])
    assert label == 3


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("phase,batch", [("TRAIN", 4), ("TEST", 3)])
def test_feeder_on_train_val_net(lmdb_net, phase, batch, workers):
    net, images, mean, _ = lmdb_net
    g = build_graph(net, phase=phase)
    f = DataFeeder(g, workers=workers, seed=5)
    assert f.tops == ["data", "label"] and f.shapes == {"data": (batch, 3, 12, 12), "label": (batch,)}
    b = next(f)
    assert b["data"].shape == (batch, 3, 12, 12) and b["data"].dtype.is_floating_point
    assert b["label"].shape == (batch,)
    np.testing.assert_array_equal(b["label"].numpy(), [i % 5 for i in range(batch)])
    if phase == "TEST":  # centre crop (14-12)//2 = 1, (16-12)//2 = 2, minus per-channel means
        want = images[0, :, 1:13, 2:14].astype(np.float64) - np.array([104, 117, 123])[:, None, None]
        np.testing.assert_allclose(b["data"][0].numpy(), want, rtol=1e-6)
    else:  # some crop and flip of image 0 minus the same crop of the mean, times the scale
        x = (images[0].astype(np.float64) - mean) * 0.0078125
        got = b["data"][0].numpy()
        cands = [x[:, h:h + 12, w:w + 12] for h in range(3) for w in range(5)]
        assert any(np.allclose(got, c, atol=1e-5) or np.allclose(got, c[:, :, ::-1], atol=1e-5) for c in cands)
    assert f.batches_per_epoch() == 10 / batch
    f.close()


def test_corrupt_lmdb_record_names_its_key(tmp_path):
    db = str(tmp_path / "db")
    with LMDBWriter(db) as w:
        for i in range(4):
            good = array_to_datum(np.full((1, 4, 4), i, np.uint8), i).SerializeToString()
            value = b"\xff\xfe garbage" if i == 2 else good
            w.put(f"{i:08d}_r{i}", value)
        w.finish()
    net = parse_net_text(f'''
layer {{ name: "d" type: "Data" top: "data" top: "label"
        data_param {{ source: "{db}" batch_size: 2 backend: LMDB }} }}''')
    g = build_graph(net, "TRAIN", input_shapes={"data": (2, 1, 4, 4)})
    with pytest.raises(ConvnetError, match=r"layer 'd': .*db: key '00000002_r2': corrupt record"):
        DataFeeder(g, workers=0).batch(1)
    with DataFeeder(g, workers=2) as f:  # the same error, raised from a worker process
        next(f)
        with pytest.raises(ConvnetError, match=r"batch 1: layer 'd': .*key '00000002_r2'"):
            next(f)
    f = DataFeeder(g, workers=0, skip_bad=True)
    assert f.batch(1)["label"].tolist() == [0.0, 3.0] and f.skipped == 1


def test_workers_give_the_same_batches_and_resume_exactly(lmdb_net):
    net, _, _, _ = lmdb_net
    g = build_graph(net, phase="TRAIN")
    ref = DataFeeder(g, workers=0, seed=9)
    want = [ref.batch(b) for b in range(6)]
    with DataFeeder(g, workers=2, prefetch=2, seed=9) as f:
        got = [next(f) for _ in range(4)]
        for w, b in zip(want, got):
            assert all(np.array_equal(w[k].numpy(), b[k].numpy()) for k in w)
        f.seek(1)
        assert np.array_equal(next(f)["data"].numpy(), want[1]["data"].numpy())
    resumed = DataFeeder(g, workers=0, seed=9, start_batch=4)
    assert np.array_equal(next(resumed)["data"].numpy(), want[4]["data"].numpy())
    other_seed = DataFeeder(g, workers=0, seed=10).batch(0)["data"].numpy()
    assert not np.array_equal(other_seed, want[0]["data"].numpy())


def test_probe_source_shapes_and_missing_lmdb(lmdb_net, tmp_path):
    net, _, _, _ = lmdb_net
    assert probe_source_shapes(net, "TRAIN") == {"data": (4, 3, 12, 12), "label": (4,)}
    g = build_graph(net, phase="TRAIN")
    with pytest.raises(ConvnetError, match="no such LMDB database"):
        DataFeeder(g, workers=0, sources={"data": str(tmp_path / "nope_lmdb")})


# ---------------------------------------------------------------------------------------------
# HDF5Data, DummyData, Input
# ---------------------------------------------------------------------------------------------


def test_hdf5_source_and_feeder(tmp_path):
    import h5py

    rng = np.random.default_rng(0)
    files, rows = [], []
    for k, n in enumerate([3, 4]):
        data = rng.normal(size=(n, 2, 3, 3)).astype(np.float32)
        label = np.arange(n, dtype=np.float64) + 10 * k
        with h5py.File(tmp_path / f"part{k}.h5", "w") as h:
            h["data"], h["label"] = data, label
        files.append(f"part{k}.h5")  # relative to the list file
        rows += [(data[i], label[i]) for i in range(n)]
    lst = tmp_path / "h5list.txt"
    lst.write_text("\n".join(files) + "\n")
    src = HDF5Source(str(lst), ["data", "label"])
    assert len(src) == 7 and src.name_of(4).endswith("part1.h5: row 1")
    net = parse_net_text(f'''
layer {{ name: "h5" type: "HDF5Data" top: "data" top: "label" hdf5_data_param {{ source: "{lst}" batch_size: 5 }} }}
layer {{ name: "fc" type: "InnerProduct" bottom: "data" top: "fc" inner_product_param {{ num_output: 2 }} }}''')
    shapes = probe_source_shapes(net, "TRAIN")
    assert shapes == {"data": (5, 2, 3, 3), "label": (5,)}
    f = DataFeeder(build_graph(net, "TRAIN", input_shapes=shapes), workers=0)
    b0, b1 = next(f), next(f)
    np.testing.assert_array_equal(b0["label"].numpy(), [0, 1, 2, 10, 11])
    np.testing.assert_array_equal(b1["label"].numpy(), [12, 13, 0, 1, 2])  # wraps around
    np.testing.assert_array_equal(b0["data"][3].numpy(), rows[3][0])
    with pytest.raises(ConvnetError, match="no dataset 'weights'"):
        HDF5Source(str(lst), ["data", "weights"])
    shuffled = HDF5Source(str(lst), ["data", "label"], shuffle=True, layer="h5")
    order = shuffled.epoch_order(0, seed=1)
    assert sorted(order) == list(range(7)) and np.array_equal(order, shuffled.epoch_order(0, seed=1))
    assert not np.array_equal(order, shuffled.epoch_order(1, seed=1))


def test_dummy_data_and_input(tmp_path):
    net = parse_net_text('''
layer { name: "dummy" type: "DummyData" top: "a" top: "b"
  dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
                     data_filler { type: "constant" value: 1.5 } data_filler { type: "gaussian" std: 2 } } }
layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 2 dim: 4 } } }
layer { name: "in2" type: "Input" top: "y" input_param { shape { dim: 3 dim: 1 } } }''')
    g = build_graph(net, "TEST")
    rows = np.arange(20, dtype=np.float32).reshape(5, 4)
    f = DataFeeder(g, workers=0, net=net, seed=2, inputs={"x": rows})
    assert f.unfed == ["y"] and set(f.tops) == {"a", "b", "x"}
    b0, b1 = next(f), next(f)
    assert np.all(b0["a"].numpy() == 1.5) and b0["a"].shape == (2, 3)
    assert b0["b"].shape == (2,) and not np.array_equal(b0["b"].numpy(), b1["b"].numpy())
    np.testing.assert_array_equal(b0["b"].numpy(), DataFeeder(g, workers=0, net=net, seed=2,
                                                              inputs={"x": rows}).batch(0)["b"].numpy())
    np.testing.assert_array_equal(b1["x"].numpy(), rows[[2, 3]])
    plain = DataFeeder(g, workers=0)  # without the net the fillers are unknown: Caffe's constant 0
    assert np.all(plain.batch(0)["b"].numpy() == 0) and plain.notices


def test_read_image_resizes_like_caffe(tmp_path):
    rgb = rgb_image(9, 20, 30)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    img = read_image(tmp_path / "a.png", 10, 12)
    assert img.shape == (10, 12, 3)
    try:
        import cv2

        np.testing.assert_array_equal(img, cv2.resize(rgb[:, :, ::-1].copy(), (12, 10)))
    except ImportError:
        pass
    assert read_image(tmp_path / "a.png", is_color=False).shape == (20, 30, 1)
    with pytest.raises(BadRecord, match="no such file"):
        read_image(tmp_path / "missing.png")
