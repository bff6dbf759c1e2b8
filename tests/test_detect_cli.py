"""`convnet run --detect`: an SSD net's boxes on an image, listed, as JSON and drawn."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from PIL import Image
from test_ssd_parity import mobilenet_ssd

from convnet_io import load
from convnet_io.tools.detect import rows_to_detections


@pytest.fixture(scope="module")
def ssd(tmp_path_factory):
    """A MobileNet-SSD-shaped net with seeded weights, and a test image."""
    root = tmp_path_factory.mktemp("ssd")
    net_path = root / "ssd.prototxt"
    net_path.write_text(mobilenet_ssd(96))
    weights = root / "ssd.caffemodel"
    net = load(net_path, seed=3)
    from convnet_io.tools.weights_io import calibrate

    calibrate(net, 3)  # BatchNorm statistics from a seeded batch, as `convnet init` does
    net.save_caffemodel(weights)
    rng = np.random.default_rng(0)
    image = root / "street.png"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image)
    return net_path, weights, image


def _expected_rows(net_path, weights, image):
    """The net on the image prepared by hand: bilinear resize to 96 x 96, BGR, (x - 127.5) * scale."""
    net = load(net_path, weights=weights, backend="torch")
    rgb = np.asarray(Image.open(image).convert("RGB"), dtype=np.float64)
    h, w = rgb.shape[:2]

    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo

    lo, hi, f = taps(h, 96)
    rows = rgb[lo] * (1 - f)[:, None, None] + rgb[hi] * f[:, None, None]
    lo, hi, f = taps(w, 96)
    img = rows[:, lo] * (1 - f)[None, :, None] + rows[:, hi] * f[None, :, None]
    blob = ((img[:, :, ::-1].transpose(2, 0, 1) - 127.5) * 0.007843)[None].astype(np.float32)
    return net.forward({"data": blob}, ["detection_out"])["detection_out"].reshape(-1, 7), (w, h)


def test_run_detect_lists_the_boxes(ssd, tmp_path):
    net_path, weights, image = ssd
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["background"] + [f"class{i}" for i in range(1, 21)]))
    drawn = tmp_path / "drawn.png"
    args = ["run", str(net_path), str(image), "--weights", str(weights), "--detect", "--mean-value",
            "127.5,127.5,127.5", "--scale", "0.007843", "--threshold", "0.2", "--labels", str(labels)]
    result = CliRunner().invoke(cli, [*args, "--json", "--draw", str(drawn)])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{"):])["images"][0]
    rows, (w, h) = _expected_rows(net_path, weights, image)
    expected = [r for r in rows if r[1] >= 0 and r[2] >= 0.2]
    assert (found["width"], found["height"]) == (w, h)
    assert len(found["detections"]) == len(expected) > 0
    by_score = sorted(expected, key=lambda r: -r[2])
    for d, r in zip(found["detections"], by_score):
        assert d["label"] == int(r[1]) and d["name"] == f"class{int(r[1])}"
        assert d["score"] == pytest.approx(r[2], abs=1e-5)
        box = np.clip(r[3:] * [w, h, w, h], 0, [w, h, w, h])
        np.testing.assert_allclose(d["box"], box, atol=1e-3)
    with Image.open(drawn) as img:
        assert img.size == (w, h)
        assert np.asarray(img).astype(int).sum() != np.asarray(Image.open(image)).astype(int).sum()

    text = CliRunner().invoke(cli, args)
    assert text.exit_code == 0, text.output
    assert f"({w} x {h}): {len(expected)} boxes" in text.stdout
    assert "class" in text.stdout


def test_rows_to_detections_skips_empty_rows_and_clips():
    rows = np.array([[0, -1, -1, -1, -1, -1, -1], [0, 2, 0.9, -0.1, 0.5, 0.5, 1.2], [0, 1, 0.3, 0, 0, 1, 1]])
    dets = rows_to_detections(rows, 100, 50, 0.5)
    assert len(dets) == 1 and dets[0].label == 2
    assert dets[0].box == (0.0, 25.0, 50.0, 50.0)


def test_run_detect_needs_a_detection_net(tmp_path):
    net = tmp_path / "plain.prototxt"
    net.write_text('layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }\n'
                   'layer { name: "c" type: "Convolution" bottom: "data" top: "c" convolution_param { num_output: 2 kernel_size: 3 } }\n')
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    weights = tmp_path / "plain.caffemodel"
    load(net).save_caffemodel(weights)
    result = CliRunner().invoke(cli, ["run", str(net), str(image), "--weights", str(weights), "--detect"])
    assert result.exit_code == 2
    assert "DetectionOutput" in result.output


def test_run_detect_on_a_folder_draws_each_image(ssd, tmp_path):
    net_path, weights, image = ssd
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(image.read_bytes())
    out = tmp_path / "drawn"
    out.mkdir()
    result = CliRunner().invoke(cli, ["run", str(net_path), str(folder), "--weights", str(weights), "--detect",
                                      "--mean-value", "127.5,127.5,127.5", "--scale", "0.007843",
                                      "--threshold", "0.2", "--json", "--draw", str(out)])
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout[result.stdout.index("{"):])["images"]
    assert [Path(f["path"]).name for f in found] == ["a.png", "b.png"]
    assert found[0]["detections"] == found[1]["detections"]
    assert sorted(p.name for p in out.iterdir()) == ["a_detections.png", "b_detections.png"]
