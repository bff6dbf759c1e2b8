"""`convnet run` over a folder: files decoded and preprocessed in worker processes ahead of the net
give exactly what the in-process path gives, in input order, with unreadable files reported in place."""
from __future__ import annotations

import multiprocessing

import numpy as np
import pytest
from helpers import input_layer
from PIL import Image

import convnet_io
from convnet_io.tools.classify import classify
from convnet_io.tools.prefetch import expand_folders
from convnet_io.tools.preprocess import ImageError

NET = input_layer((1, 3, 24, 24)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 5 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 6 } }
layer { name: "prob" type: "Softmax" bottom: "ip1" top: "prob" }
"""


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(21):
        h, w = int(rng.integers(20, 90)), int(rng.integers(20, 90))
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        img.save(d / f"img{i:02d}.{'jpg' if i % 3 else 'png'}")
    (d / "img10_broken.jpg").write_bytes(b"not a jpeg")
    (d / "notes.txt").write_text("not an image")
    return d


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    path = tmp_path_factory.mktemp("net") / "net.prototxt"
    path.write_text(NET)
    return convnet_io.load(path, seed=5, backend="torch")


def test_folder_expands_to_its_images_sorted(folder):
    files = expand_folders([folder])
    assert len(files) == 22 and files == sorted(files) and not any(f.endswith(".txt") for f in files)


def test_workers_give_the_in_process_results_in_order(net, folder):
    files = expand_folders([folder])
    mean = np.array([104.0, 117.0, 123.0])
    ahead = classify(net, [folder], mean=mean, batch_size=4, workers=2, skip_errors=True)
    inline = classify(net, files, mean=mean, batch_size=4, workers=0, skip_errors=True)
    assert [r.path for r in ahead] == files == [r.path for r in inline]
    broken = [r for r in ahead if not r.ok]
    assert [r.path for r in broken] == [str(folder / "img10_broken.jpg")]
    for a, b in zip(ahead, inline):
        assert a.error == b.error
        if a.ok:
            assert np.array_equal(a.probs, b.probs) and a.top_k == b.top_k
    assert multiprocessing.active_children() == []  # the pool is gone


def test_unreadable_file_raises_without_skip(net, folder):
    with pytest.raises(ImageError, match="img10_broken"):
        classify(net, [folder], batch_size=4, workers=1)
    assert multiprocessing.active_children() == []


def test_progress_bar_reports_images_per_second(net, folder, capsys):
    classify(net, [folder], batch_size=4, workers=0, skip_errors=True, progress=True)
    assert "image/s" in capsys.readouterr().err
