"""`convnet run`: Caffe classification preprocessing, batched classification, the command."""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from convnet_cli.main import cli
from convnet_io import load
from convnet_io.caffe.caffemodel import write_blobproto
from convnet_io.tools.classify import classify, load_labels, softmax
from convnet_io.tools.preprocess import (ImageError, center_crop_offset, crop_offsets, load_image, load_mean,
                                   oversample, prepare_mean, preprocess, resize_image)

ROOT = Path(__file__).resolve().parent.parent

TINY_NET = """
name: "tiny"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 stride: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "fc" type: "InnerProduct" bottom: "pool1" top: "fc" inner_product_param { num_output: 10 } }
"""
SOFTMAX = 'layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }\n'


# ---------------------------------------------------------------------------------------------
# independent float64 reference (written from Caffe's definitions, not from preprocess.py)
# ---------------------------------------------------------------------------------------------


def ref_resize(img, out_h, out_w):
    """skimage.transform.resize(order=1) sampling, edge-clamped, one pixel at a time."""
    in_h, in_w, c = img.shape
    out = np.zeros((out_h, out_w, c))
    for i in range(out_h):
        sy = min(max((i + 0.5) * in_h / out_h - 0.5, 0.0), in_h - 1)
        y0 = int(np.floor(sy))
        y1 = min(y0 + 1, in_h - 1)
        fy = sy - y0
        for j in range(out_w):
            sx = min(max((j + 0.5) * in_w / out_w - 0.5, 0.0), in_w - 1)
            x0 = int(np.floor(sx))
            x1 = min(x0 + 1, in_w - 1)
            fx = sx - x0
            out[i, j] = ((1 - fy) * (1 - fx) * img[y0, x0] + (1 - fy) * fx * img[y0, x1]
                         + fy * (1 - fx) * img[y1, x0] + fy * fx * img[y1, x1])
    return out


def ref_preprocess(rgb_uint8, image_dims, crop, mean_bgr):
    """classify.py on one image: [0,1], resize, centre crop as Classifier.predict, HWC->CHW,
    RGB->BGR, *255, -mean."""
    img = rgb_uint8.astype(np.float64) / 255.0
    img = ref_resize(img, *image_dims)
    center = np.array(image_dims) / 2.0
    box = np.concatenate([center - np.array(crop) / 2.0, center + np.array(crop) / 2.0]).astype(int)
    img = img[box[0]:box[2], box[1]:box[3]]
    chw = img.transpose(2, 0, 1)[[2, 1, 0]] * 255.0
    return chw - np.asarray(mean_bgr, dtype=np.float64).reshape(3, 1, 1)


def write_image(path, array):
    Image.fromarray(np.asarray(array, dtype=np.uint8), "RGB").save(path)
    return str(path)


def random_image(seed, h=40, w=52):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# preprocessing
# ---------------------------------------------------------------------------------------------


def test_resize_known_values():
    img = np.array([[[0.0], [1.0]], [[2.0], [3.0]]])  # 2x2, one channel
    out = resize_image(img, (4, 4))[:, :, 0]
    # output i samples the input at (i + 0.5) / 2 - 0.5: -0.25 (clamped to 0), 0.25, 0.75, 1.25 (-> 1)
    axis = np.array([0.0, 0.25, 0.75, 1.0])
    expected = 2.0 * axis[:, None] + axis[None, :]
    np.testing.assert_allclose(out, expected, atol=1e-7)
    assert out.dtype == np.float32
    # shrinking 4 -> 2 samples at 0.5 and 2.5: the mean of neighbours, no wider filter
    img = np.arange(16, dtype=np.float64).reshape(4, 4, 1)
    np.testing.assert_allclose(resize_image(img, (2, 2))[:, :, 0], [[2.5, 4.5], [10.5, 12.5]])


@pytest.mark.parametrize("dims", [(9, 4), (3, 11), (7, 7), (40, 52)])
def test_resize_matches_reference(dims):
    img = np.random.default_rng(1).random((7, 5, 3))
    np.testing.assert_allclose(resize_image(img, dims), ref_resize(img, *dims), atol=1e-6)


def test_crop_offsets_are_caffes():
    assert center_crop_offset((256, 256), (227, 227)) == (14, 14)
    assert center_crop_offset((256, 256), (224, 224)) == (16, 16)
    assert center_crop_offset((255, 256), (224, 227)) == (15, 14)
    for dims, crop in [((256, 256), (227, 227)), ((255, 257), (224, 226)), ((10, 9), (3, 4))]:
        # Classifier.predict: center +- crop/2, fractional bounds truncated by the slicing
        lo = np.array(dims) / 2.0 - np.array(crop) / 2.0
        assert center_crop_offset(dims, crop) == tuple(int(v) for v in lo)
    assert crop_offsets((256, 256), (227, 227)) == [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]


def test_oversample_positions_and_mirrors():
    img = np.arange(12 * 10 * 2, dtype=np.float32).reshape(12, 10, 2)
    crops = oversample(img, (7, 6))
    assert crops.shape == (10, 7, 6, 2)
    expected = [img[0:7, 0:6], img[0:7, 4:10], img[5:12, 0:6], img[5:12, 4:10], img[2:9, 2:8]]
    for k in range(5):
        np.testing.assert_array_equal(crops[k], expected[k])
        np.testing.assert_array_equal(crops[5 + k], expected[k][:, ::-1])


def test_preprocess_matches_reference(tmp_path):
    rgb = random_image(2, 9, 13)
    path = write_image(tmp_path / "a.png", rgb)
    img = load_image(path)
    assert img.shape == (9, 13, 3) and img.dtype == np.float32
    np.testing.assert_allclose(img, rgb / 255.0, atol=1e-7)
    mean = [10.0, 20.0, 30.0]
    blob = preprocess(img, (5, 6), prepare_mean(mean, (5, 6), 3), image_dims=(8, 11))
    assert blob.shape == (1, 3, 5, 6)
    np.testing.assert_allclose(blob[0], ref_preprocess(rgb, (8, 11), (5, 6), mean), atol=1e-4)


def test_channel_order_is_bgr(tmp_path):
    rgb = np.zeros((4, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # red
    rgb[..., 2] = 50   # blue
    blob = preprocess(load_image(write_image(tmp_path / "r.png", rgb)), (2, 2), image_dims=(4, 4))
    np.testing.assert_allclose(blob[0, :, 0, 0], [50.0, 0.0, 200.0], atol=1e-4)


def test_oversample_preprocess_matches_crops():
    img = np.random.default_rng(3).random((20, 30, 3)).astype(np.float32)
    blob = preprocess(img, (8, 8), prepare_mean([1.0, 2.0, 3.0], (8, 8), 3), oversample_crops=True,
                      image_dims=(12, 16))
    resized = ref_resize(img.astype(np.float64), 12, 16)
    for k, (y, x) in enumerate(crop_offsets((12, 16), (8, 8))):
        crop = resized[y:y + 8, x:x + 8]
        for mirrored, idx in ((crop, k), (crop[:, ::-1], k + 5)):
            ref = mirrored.transpose(2, 0, 1)[[2, 1, 0]] * 255.0 - np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
            np.testing.assert_allclose(blob[idx], ref, atol=1e-3)


def test_mean_files(tmp_path):
    big = np.random.default_rng(4).random((3, 16, 16)).astype(np.float32) * 255
    np.save(tmp_path / "m.npy", big)
    write_blobproto(tmp_path / "m.binaryproto", big[None])
    for name in ("m.npy", "m.binaryproto"):
        mean = load_mean(tmp_path / name)
        np.testing.assert_allclose(mean, big)
        # another size than the crop: one value per channel, as classify.py's mean.mean(1).mean(1)
        per_channel = prepare_mean(mean, (8, 8), 3)
        assert per_channel.shape == (3, 1, 1)
        np.testing.assert_allclose(per_channel[:, 0, 0], big.astype(np.float64).mean(1).mean(1), rtol=1e-6)
        # the crop's size: element-wise, as Transformer.set_mean accepts
        np.testing.assert_array_equal(prepare_mean(mean, (16, 16), 3), big)


def test_load_image_errors(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(np.random.default_rng(5).bytes(500))
    with pytest.raises(ImageError, match="bad.jpg"):
        load_image(bad)


def test_load_image_exif_and_grey(tmp_path):
    rgb = random_image(6, 4, 6)
    img = Image.fromarray(rgb, "RGB")
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "rot.png", exif=exif)
    np.testing.assert_allclose(load_image(tmp_path / "rot.png"), np.rot90(rgb, -1) / 255.0, atol=1e-7)
    Image.fromarray(rgb[..., 0], "L").save(tmp_path / "grey.png")
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (4, 6, 3)
    np.testing.assert_allclose(grey[..., 2], rgb[..., 0] / 255.0, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# classify
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    (d / "deploy.prototxt").write_text(TINY_NET + SOFTMAX)
    (d / "logits.prototxt").write_text(TINY_NET)
    net = load(d / "deploy.prototxt", seed=3)
    blobs = net.blobs()
    blobs["conv1"][0] *= 0.01  # inputs are in 0..255: keep the logits of order one, probabilities spread
    net.set_blobs(blobs)
    net.save_caffemodel(d / "w.caffemodel")
    images = [write_image(d / f"img{i}.png", random_image(10 + i)) for i in range(3)]
    return {"dir": d, "net": net, "images": images}


def test_classify_probabilities_and_top_k(tiny):
    results = classify(tiny["net"], tiny["images"], mean=[100.0, 110.0, 120.0], top_k=4, batch_size=2)
    assert [r.path for r in results] == tiny["images"]
    for r, path in zip(results, tiny["images"]):
        assert r.ok and r.probs.shape == (10,)
        assert abs(r.probs.sum() - 1.0) < 1e-5
        probs = [p.prob for p in r.top_k]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True)
        assert r.top_k[0].index == int(np.argmax(r.probs)) and r.top_k[0].label is None
        # the same as preprocessing by hand and one forward pass
        blob = preprocess(load_image(path), (32, 32), prepare_mean([100.0, 110.0, 120.0], (32, 32), 3))
        np.testing.assert_allclose(r.probs, tiny["net"].forward(blob)["prob"][0], rtol=1e-5, atol=1e-7)


def test_classify_applies_softmax_to_logits(tiny):
    logits_net = load(tiny["dir"] / "logits.prototxt", weights=tiny["dir"] / "w.caffemodel")
    with_softmax = classify(tiny["net"], tiny["images"][:2])
    from_logits = classify(logits_net, tiny["images"][:2])
    for a, b in zip(with_softmax, from_logits):
        np.testing.assert_allclose(a.probs, b.probs, rtol=1e-5, atol=1e-7)
    blob = preprocess(load_image(tiny["images"][0]), (32, 32))
    np.testing.assert_allclose(from_logits[0].probs, softmax(logits_net.forward(blob)["fc"])[0], rtol=1e-6)


def test_oversample_averages_ten_forward_calls(tiny):
    net, path = tiny["net"], tiny["images"][1]
    mean = prepare_mean([90.0, 100.0, 110.0], (32, 32), 3)
    (result,) = classify(net, [path], mean=[90.0, 100.0, 110.0], oversample=True)
    crops = oversample(resize_image(load_image(path), (256, 256)), (32, 32))
    singles = []
    for crop in crops:
        blob = crop.transpose(2, 0, 1)[[2, 1, 0]][None] * 255.0 - mean
        singles.append(net.forward(blob.astype(np.float32))["prob"][0])
    np.testing.assert_allclose(result.probs, np.mean(singles, axis=0), rtol=1e-5, atol=1e-7)
    (centre,) = classify(net, [path], mean=[90.0, 100.0, 110.0])
    assert not np.allclose(result.probs, centre.probs)


def test_classify_batches_agree_and_skip_errors(tiny, tmp_path):
    paths = tiny["images"] + [str(tmp_path / "missing.png")] + tiny["images"][:1]
    one = classify(tiny["net"], paths, batch_size=1, skip_errors=True)
    many = classify(tiny["net"], paths, batch_size=16, skip_errors=True)
    assert [r.ok for r in many] == [True, True, True, False, True]
    assert many[3].error == "no such file"
    for a, b in zip(one, many):
        if a.ok:
            np.testing.assert_allclose(a.probs, b.probs, rtol=1e-5, atol=1e-7)
    with pytest.raises(ImageError):
        classify(tiny["net"], paths)


def test_labels(tiny, tmp_path):
    labels = [f"n{i:08d} class {i}, thing" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(labels) + "\n")
    assert load_labels(tmp_path / "labels.txt") == labels
    (r,) = classify(tiny["net"], tiny["images"][:1], labels=load_labels(tmp_path / "labels.txt"))
    assert all(p.label == labels[p.index] for p in r.top_k)
    from convnet_io.errors import ConvnetError

    with pytest.raises(ConvnetError, match="3 labels for 10 classes"):
        classify(tiny["net"], tiny["images"][:1], labels=labels[:3])


# ---------------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------------


def _run(tiny, *args):
    d = tiny["dir"]
    return CliRunner().invoke(cli, ["run", str(d / "deploy.prototxt"), "--weights", str(d / "w.caffemodel"),
                                    "--mean-value", "104,117,123", *map(str, args)])


def test_cli_missing_image(tiny, tmp_path):
    missing = tmp_path / "nope.jpg"
    result = _run(tiny, tiny["images"][0], missing, tiny["images"][1], "--top-k", "3")
    assert result.exit_code == 2, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == tiny["images"][0] and lines[4] == tiny["images"][1]
    assert sum(line.startswith("  ") for line in lines) == 6 and len(lines) == 8
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {missing}: no such file"]
    top = lines[lines.index(tiny["images"][0]) + 1]
    assert top.startswith("  ") and top.split()[1].isdigit()  # class index without labels


def test_cli_corrupt_image(tiny, tmp_path):
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(np.random.default_rng(7).bytes(1000))
    result = _run(tiny, bad, tiny["images"][2])
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith(f"error: {bad}: ")
    assert tiny["images"][2] in result.stdout


def test_cli_json_and_labels(tiny, tmp_path):
    labels = [f"n{i:08d} label {i}" for i in range(10)]
    (tmp_path / "synsets.txt").write_text("\n".join(labels) + "\n")
    missing = tmp_path / "gone.png"
    result = _run(tiny, *tiny["images"][:2], missing, "--json", "--labels", tmp_path / "synsets.txt",
                  "--top-k", "2", "--oversample")
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert set(doc) == {"images", "errors"}
    assert [im["path"] for im in doc["images"]] == tiny["images"][:2]
    for im in doc["images"]:
        assert len(im["top_k"]) == 2
        assert im["top_k"][0]["prob"] >= im["top_k"][1]["prob"]
        for p in im["top_k"]:
            assert set(p) == {"index", "label", "prob"} and p["label"] == labels[p["index"]]
    assert doc["errors"] == [{"path": str(missing), "error": "no such file"}]

    text = _run(tiny, tiny["images"][0], "--labels", tmp_path / "synsets.txt", "--top-k", "1")
    assert text.exit_code == 0
    line = text.stdout.splitlines()[1]
    assert line.startswith("  ") and line.split("  ")[2] in labels


def test_cli_bad_arguments(tiny, tmp_path):
    d = tiny["dir"]
    result = CliRunner().invoke(cli, ["run", str(tmp_path / "no.prototxt"), "--weights", str(d / "w.caffemodel"),
                                      tiny["images"][0]])
    assert result.exit_code == 2 and result.stderr.startswith("error:")
    both = _run(tiny, tiny["images"][0], "--mean", tmp_path / "m.npy")
    assert both.exit_code == 2
    (tmp_path / "few.txt").write_text("a\nb\n")
    few = _run(tiny, tiny["images"][0], "--labels", tmp_path / "few.txt")
    assert few.exit_code == 2 and "2 labels for 10 classes" in few.stderr


def test_demo_image_is_deterministic(tmp_path):
    tool = runpy.run_path(str(ROOT / "tools/make_demo_image.py"))
    assert tool["main"]([str(tmp_path / "a.png")]) == 0
    tool["main"]([str(tmp_path / "b.png")])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    img = load_image(tmp_path / "a.png")
    assert img.shape == (240, 320, 3) and img.std() > 0.1


def test_progress_bar_on_stderr(tiny, capsys):
    results = classify(tiny["net"], tiny["images"], batch_size=1, progress=True)
    assert len(results) == 3
    err = capsys.readouterr().err
    assert "/3 [" in err and "image" in err
    classify(tiny["net"], tiny["images"], batch_size=16, progress=True)  # one batch: no bar
    assert capsys.readouterr().err == ""
