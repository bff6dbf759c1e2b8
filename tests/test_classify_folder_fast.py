"""`convnet run` over a folder, the fast path: decoding threads started before the net is loaded,
OpenCV's resize, fewer copies. Behaviour only: the same predictions as one image at a time, input
order kept, a bad file reported on one line with exit 2, the progress bar only when asked for or on
a terminal, the resize within 1e-6 of Caffe's bilinear sampling computed in float64."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from convnet_cli.main import cli
from helpers import input_layer
from PIL import Image

import convnet_io
from convnet_io.api import load_graph
from convnet_io.tools import preprocess as pre
from convnet_io.tools.classify import classify, iter_classify, start_prefetch
from convnet_io.tools.prefetch import Prefetcher, expand_folders

NET = input_layer((1, 3, 24, 24)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 5 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 6 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""
MEAN = np.array([104.0, 117.0, 123.0], dtype=np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("fast")
    images = d / "images"
    images.mkdir()
    rng = np.random.default_rng(3)
    for i in range(19):
        h, w = int(rng.integers(16, 120)), int(rng.integers(16, 120))
        base = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(base).save(images / f"img{i:02d}.{'jpg' if i % 4 else 'png'}")
    (d / "net.prototxt").write_text(NET)
    net = convnet_io.load(d / "net.prototxt", seed=4, backend="torch")
    blobs = net.blobs()
    blobs["conv1"][0] *= 0.01  # inputs are 0..255: logits of order one
    net.set_blobs(blobs)
    net.save_caffemodel(d / "w.caffemodel")
    return {"dir": d, "images": images, "net": net, "files": expand_folders([images])}


def _run(setup, *args):
    d = setup["dir"]
    return CliRunner().invoke(cli, ["run", str(d / "net.prototxt"), "--weights", str(d / "w.caffemodel"),
                                    "--mean-value", "104,117,123", "--backend", "torch", *map(str, args)])


# -- resize -----------------------------------------------------------------------------------------


def _reference_resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """skimage's order-1 sampling without anti-aliasing, in float64: half-pixel centres, samples
    beyond the border clamped to the edge pixel."""
    def taps(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
        lo = np.floor(src).astype(int)
        return lo, np.minimum(lo + 1, n_in - 1), src - lo
    img = img.astype(np.float64)
    lo, hi, f = taps(img.shape[0], h)
    rows = img[lo] * (1 - f)[:, None, None] + img[hi] * f[:, None, None]
    lo, hi, f = taps(img.shape[1], w)
    return rows[:, lo] * (1 - f)[None, :, None] + rows[:, hi] * f[None, :, None]


@pytest.mark.parametrize("shape,dims", [((480, 640, 3), (256, 256)), ((512, 512, 3), (256, 256)),
                                        ((64, 97, 3), (256, 256)), ((1, 1, 3), (5, 4)),
                                        ((33, 17, 1), (256, 256)), ((300, 200, 3), (227, 227))])
def test_opencv_resize_is_caffes_bilinear_sampling(shape, dims):
    img = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    out = pre.resize_image(img, dims)
    assert out.dtype == np.float32 and out.shape == (*dims, shape[2])
    np.testing.assert_allclose(out, _reference_resize(img, *dims), rtol=0, atol=1e-6)


def test_resize_without_opencv_gives_the_same(monkeypatch):
    img = np.random.default_rng(0).random((150, 211, 3)).astype(np.float32)
    fast = pre.resize_image(img, (256, 256))
    monkeypatch.setattr(pre, "_CV2", [None])
    slow = pre.resize_image(img, (256, 256))
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-6)


def test_to_blob_is_transpose_swap_scale_mean():
    crops = np.random.default_rng(1).random((2, 5, 6, 3)).astype(np.float32)
    mean = np.array([1.0, 2.0, 3.0], dtype=np.float32)[:, None, None]
    for swap in [(2, 1, 0), (1, 0, 2), None]:
        expected = crops.transpose(0, 3, 1, 2)
        if swap is not None:
            expected = expected[:, list(swap)]
        expected = expected * np.float32(255.0) - mean
        blob = pre.to_blob(crops, mean=mean, raw_scale=255.0, channel_swap=swap)
        assert blob.flags.c_contiguous and blob.dtype == np.float32
        np.testing.assert_array_equal(blob, expected)
    np.testing.assert_array_equal(pre.to_blob(crops, raw_scale=None, channel_swap=None), crops.transpose(0, 3, 1, 2))


# -- the folder path ----------------------------------------------------------------------------------


def test_folder_gives_the_one_by_one_predictions_in_order(setup):
    net, files = setup["net"], setup["files"]
    folder = classify(net, [setup["images"]], mean=MEAN, batch_size=4, workers=2)
    assert [r.path for r in folder] == files
    for r, f in zip(folder, files):
        one = classify(net, [f], mean=MEAN, batch_size=1, workers=0)[0]
        # a batch of 4 and a batch of 1 differ in the last float bits only (the GEMMs' blocking)
        assert [p.index for p in r.top_k] == [p.index for p in one.top_k]
        np.testing.assert_allclose(r.probs, one.probs, rtol=1e-5, atol=1e-7)


def test_decoding_started_from_the_graph_before_the_net(setup):
    net, files = setup["net"], setup["files"]
    graph = load_graph(setup["dir"] / "net.prototxt")
    early = start_prefetch(graph, [setup["images"]], mean=MEAN, batch_size=4, workers=2)
    used = list(iter_classify(net, [setup["images"]], mean=MEAN, batch_size=4, prefetched=early))
    plain = classify(net, files, mean=MEAN, batch_size=4, workers=0)
    assert [r.path for r in used] == files
    assert all(a.top_k == b.top_k and np.array_equal(a.probs, b.probs) for a, b in zip(used, plain))
    # started with other settings (another mean): not used, its threads stopped, the right answer given
    other = start_prefetch(graph, [setup["images"]], mean=None, batch_size=4, workers=2)
    again = list(iter_classify(net, [setup["images"]], mean=MEAN, batch_size=4, prefetched=other))
    assert all(a.top_k == b.top_k for a, b in zip(again, plain))
    assert not any(t.name.startswith("convnet-decode") for t in threading.enumerate())


def test_prefetcher_order_close_and_errors(setup, tmp_path):
    files = setup["files"]
    settings = {"channels": 3, "crop": (24, 24), "mean": None, "oversample": False, "image_dims": (32, 32),
                "raw_scale": 255.0, "channel_swap": (2, 1, 0), "batch_size": 2}
    inline = [b for b, _ in Prefetcher(files, settings, workers=0)]
    with Prefetcher(files, settings, workers=3, ahead=2, startup=3) as ahead:
        got = [b for b, _ in ahead]
    assert all(np.array_equal(a, b) for a, b in zip(inline, got)) and len(got) == len(files)
    half = Prefetcher(files, settings, workers=2)
    next(half)
    half.close()  # stops mid-way: no thread left behind
    assert not any(t.name.startswith("convnet-decode") for t in threading.enumerate())
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not really")
    blob, why = next(Prefetcher([str(bad)], settings, workers=1))
    assert blob is None and why


def test_cli_bad_image_one_line_exit_2_others_classified(setup, tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for f in setup["files"][:6]:
        (folder / f.split("/")[-1]).write_bytes(Path(f).read_bytes())
    (folder / "img02_broken.jpg").write_bytes(b"not a jpeg")
    result = _run(setup, folder, "--batch-size", "2", "--top-k", "1")
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {folder / 'img02_broken.jpg'}: not an image Pillow can decode"]
    assert "Traceback" not in result.output
    listed = [line for line in result.stdout.splitlines() if not line.startswith("  ")]
    assert listed == sorted(str(p) for p in folder.iterdir() if "broken" not in p.name)


def test_cli_workers_and_progress(setup):
    plain = _run(setup, setup["images"], "--json", "--workers", "0", "--batch-size", "4")
    threaded = _run(setup, setup["images"], "--json", "--workers", "2", "--batch-size", "4")
    assert plain.exit_code == threaded.exit_code == 0, plain.output
    assert plain.stdout == threaded.stdout
    assert "image/s" not in plain.stderr  # stderr is no terminal here: no bar by default
    shown = _run(setup, setup["images"], "--progress", "--batch-size", "4")
    assert shown.exit_code == 0 and "image/s" in shown.stderr


# -- the net without its torch module ---------------------------------------------------------------


def test_engine_net_runs_without_building_the_module(setup):
    from convnet_io.tools.engine_net import EngineNet, load_for_inference

    d = setup["dir"]
    x = np.random.default_rng(2).normal(0, 50, (3, 3, 24, 24)).astype(np.float32)
    plain = convnet_io.load(d / "net.prototxt", weights=d / "w.caffemodel", backend="onnxruntime")
    fast = load_for_inference(d / "net.prototxt", weights=d / "w.caffemodel", backend="onnxruntime")
    assert isinstance(fast, EngineNet)
    got = fast.forward({"data": x}, blobs=["prob"])["prob"]
    assert fast._module is None  # the engine ran on the weights read straight from the file
    np.testing.assert_array_equal(got, plain.forward({"data": x}, blobs=["prob"])["prob"])
    # what only the module computes builds it, from the same weights
    np.testing.assert_allclose(fast.run_values({"data": x}, ["prob"])["prob"], got, rtol=1e-5, atol=1e-6)
    assert fast._module is not None
    assert not isinstance(load_for_inference(d / "net.prototxt", weights=d / "w.caffemodel", backend="torch"),
                          EngineNet)
    assert not isinstance(load_for_inference(d / "net.prototxt", backend="auto", precision="int8"), EngineNet)


def test_the_folder_runs_auto_on_openvinos_throughput_mode_beside_decoding(setup, tmp_path, monkeypatch):
    """With decoding threads beside it, ``auto`` takes one OpenVINO stream per core (no layer waits
    on a core busy decoding); the same predictions; one image at a time keeps the table's engine."""
    pytest.importorskip("openvino")
    import os

    from convnet_io.runtimes import engine_table

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one core: a single stream")
    table = tmp_path / "t.json"
    engine_table.write_table(table, {"cpu": {"*": {1: "openvino"}}}, "host", "now")
    monkeypatch.setenv("CONVNET_ENGINE_TABLE", str(table))
    monkeypatch.setenv("CONVNET_DISABLE_CUDA", "1")
    d = setup["dir"]
    net = convnet_io.load(d / "net.prototxt", weights=d / "w.caffemodel", backend="auto")
    folder = classify(net, [setup["images"]], mean=MEAN, batch_size=4, workers=1)
    assert ("openvino-streams", ("prob",)) in net._ort and ("openvino", ("prob",)) not in net._ort
    session, _ = net._ort[("openvino-streams", ("prob",))]
    # the streams' threads are free to move off a core the decoding thread is using
    assert session.compiled.get_property("ENABLE_CPU_PINNING") is False
    assert net.throughput is False  # restored once the folder is done
    one = classify(net, [setup["files"][0]], mean=MEAN, batch_size=4, workers=0)[0]
    assert ("openvino", ("prob",)) in net._ort
    assert [p.index for p in one.top_k] == [p.index for p in folder[0].top_k]
    reference = setup["net"]
    for r in folder:
        want = classify(reference, [r.path], mean=MEAN, batch_size=1, workers=0)[0]
        np.testing.assert_allclose(r.probs, want.probs, rtol=1e-5, atol=1e-7)
