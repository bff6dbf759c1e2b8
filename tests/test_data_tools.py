"""`convnet convert-imageset` and `convnet compute-mean`: Caffe's dataset tools, read back with
the Data layer's source and checked against NumPy."""
from __future__ import annotations

import io
import os

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convnet_cli.main import cli
from convnet_io.caffe.caffemodel import read_blobproto
from convnet_io.data import LMDBSource
from convnet_io.tools.imageset import compute_image_mean, convert_imageset
from convnet_io.data.lmdb_source import iter_records, key_text
from convnet_io.errors import ConvnetError
from convnet_io.caffe.proto import caffe_pb2


def make_images(tmp_path, sizes=((10, 14), (12, 9), (10, 14), (16, 16), (8, 20)), fmt="png"):
    """A handful of RGB images with distinct colour channels, and their list file."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, lines = [], []
    for i, (h, w) in enumerate(sizes):
        rgb = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        rgb[..., 0] = 10 + i  # R, G, B distinguishable
        rgb[..., 2] = 250 - i
        name = f"sub/img{i}.{fmt}"
        Image.fromarray(rgb).save(root / name)
        images.append(rgb)
        lines.append(f"{name} {i % 3}")
    lst = tmp_path / "list.txt"
    lst.write_text("\n".join(lines) + "\n")
    return str(root) + "/", str(lst), images


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_convert_imageset_raw_reads_back_bgr_with_labels_and_keys(tmp_path):
    root, lst, images = make_images(tmp_path)
    db = tmp_path / "train_lmdb"
    result = run("convert-imageset", root, lst, db, "-q")
    assert result.exit_code == 0, result.output + result.stderr
    assert "wrote" in result.output and "5 images" in result.output
    keys = [key_text(k) for k, _ in iter_records(db)]
    assert keys == [f"{i:08d}_sub/img{i}.png" for i in range(5)]  # Caffe's "%08d_%s"
    src = LMDBSource(db)
    for i, rgb in enumerate(images):
        chw, label = src.read(i)
        assert label == i % 3 and chw.dtype == np.uint8
        np.testing.assert_array_equal(chw, rgb[:, :, ::-1].transpose(2, 0, 1))  # BGR, C x H x W
    datum = caffe_pb2.Datum.FromString(next(iter_records(db))[1])
    assert (datum.channels, datum.height, datum.width, datum.encoded) == (3, 10, 14, False)


def test_convert_imageset_resize_gray_encoded(tmp_path):
    root, lst, images = make_images(tmp_path)
    resized = convert_imageset(root, lst, str(tmp_path / "r"), resize=(12, 10), progress=False)
    assert resized.written == 5
    src = LMDBSource(tmp_path / "r")
    assert all(src.read(i)[0].shape == (3, 12, 10) for i in range(5))
    try:  # Caffe resizes with cv::resize(INTER_LINEAR)
        import cv2

        want = cv2.resize(images[1][:, :, ::-1].copy(), (10, 12), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_array_equal(src.read(1)[0], want.transpose(2, 0, 1))
    except ImportError:
        pass

    convert_imageset(root, lst, str(tmp_path / "g"), gray=True, progress=False)
    g = LMDBSource(tmp_path / "g").read(0)[0]
    assert g.shape == (1, 10, 14)

    convert_imageset(root, lst, str(tmp_path / "e"), encoded=True, progress=False)
    datum = caffe_pb2.Datum.FromString(next(iter_records(tmp_path / "e"))[1])
    assert datum.encoded and datum.data == (tmp_path / "images" / "sub" / "img0.png").read_bytes()  # the file itself
    e = LMDBSource(tmp_path / "e")
    np.testing.assert_array_equal(e.read(2)[0], images[2][:, :, ::-1].transpose(2, 0, 1))

    convert_imageset(root, lst, str(tmp_path / "ej"), encode_type="jpg", resize=(8, 8), progress=False)
    datum = caffe_pb2.Datum.FromString(next(iter_records(tmp_path / "ej"))[1])
    assert datum.encoded and datum.data[:2] == b"\xff\xd8"  # re-encoded as JPEG
    assert Image.open(io.BytesIO(datum.data)).size == (8, 8)


def test_convert_imageset_shuffle_is_seeded(tmp_path):
    root, lst, _ = make_images(tmp_path)
    convert_imageset(root, lst, str(tmp_path / "s1"), shuffle=True, seed=4, progress=False)
    convert_imageset(root, lst, str(tmp_path / "s2"), shuffle=True, seed=4, progress=False)
    k1 = [key_text(k) for k, _ in iter_records(tmp_path / "s1")]
    k2 = [key_text(k) for k, _ in iter_records(tmp_path / "s2")]
    assert k1 == k2 and sorted(k.split("_", 1)[1] for k in k1) == [f"sub/img{i}.png" for i in range(5)]
    assert [k.split("_", 1)[1] for k in k1] != [f"sub/img{i}.png" for i in range(5)]
    assert [k[:8] for k in k1] == [f"{i:08d}" for i in range(5)]


def test_convert_imageset_refuses_an_existing_db_and_leaves_no_temp(tmp_path):
    root, lst, _ = make_images(tmp_path)
    db = tmp_path / "db"
    db.mkdir()
    result = run("convert-imageset", root, lst, db, "-q")
    assert result.exit_code == 2
    assert "already exists" in result.stderr and "Traceback" not in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("nothing.png 0\n")
    result = run("convert-imageset", root, bad, tmp_path / "db2", "-q")
    assert result.exit_code == 2 and "none of the 1 images" in result.stderr
    assert not any(p.name.startswith(".db2") for p in tmp_path.iterdir())  # temp dir removed
    assert not (tmp_path / "db2").exists()


def test_convert_imageset_leaves_out_unreadable_images_and_says_so(tmp_path):
    root, lst, _ = make_images(tmp_path)
    with open(lst, "a") as f:
        f.write("sub/missing.png 1\n")
    warnings = []
    res = convert_imageset(root, lst, str(tmp_path / "db"), progress=False, warn=warnings.append)
    assert res.written == 5 and len(res.failed) == 1 and "missing.png" in warnings[0]
    assert len(LMDBSource(tmp_path / "db")) == 5


def test_compute_mean_equals_numpy_mean(tmp_path):
    sizes = ((10, 14),) * 4
    root, lst, images = make_images(tmp_path, sizes)
    db = tmp_path / "db"
    convert_imageset(root, lst, str(db), progress=False)
    result = run("compute-mean", db, tmp_path / "mean.binaryproto", "-q")
    assert result.exit_code == 0, result.stderr
    mean = read_blobproto(tmp_path / "mean.binaryproto")
    assert mean.shape == (1, 3, 10, 14)
    want = np.mean([img[:, :, ::-1].transpose(2, 0, 1).astype(np.float64) for img in images], axis=0)
    np.testing.assert_allclose(mean[0], want, rtol=1e-6)
    lines = [ln for ln in result.output.splitlines() if ln.startswith("mean_value channel")]
    assert len(lines) == 3
    for c, line in enumerate(lines):
        assert abs(float(line.split(":")[1]) - want[c].mean()) < 1e-3 * max(1.0, want[c].mean())
    # encoded records are decoded first; the same mean
    convert_imageset(root, lst, str(tmp_path / "enc"), encoded=True, progress=False)
    np.testing.assert_allclose(compute_image_mean(str(tmp_path / "enc"), progress=False).mean, want, rtol=1e-6)


def test_compute_mean_needs_one_size_and_a_database(tmp_path):
    root, lst, _ = make_images(tmp_path)
    convert_imageset(root, lst, str(tmp_path / "db"), progress=False)
    with pytest.raises(ConvnetError, match="a mean needs records of one size"):
        compute_image_mean(str(tmp_path / "db"), progress=False)
    result = run("compute-mean", tmp_path / "nope", tmp_path / "m.binaryproto")
    assert result.exit_code == 2 and "no such LMDB database" in result.stderr
    assert not os.path.exists(tmp_path / "m.binaryproto")


def test_bad_resize_option(tmp_path):
    result = run("convert-imageset", tmp_path, tmp_path / "l.txt", tmp_path / "db", "--resize", "256")
    assert result.exit_code == 2 and "256,256" in result.output + result.stderr
