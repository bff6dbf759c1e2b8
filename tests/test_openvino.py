"""OpenVINO as a backend (the optional ``openvino`` extra; these tests skip without it).

OpenVINO runs convnet's ONNX export, so it is held to the same evidence as ONNX Runtime: every
per-layer case of test_onnx_export.py runs in OpenVINO with every value marked as an output and is
compared with that file's float64 NumPy transcription of Caffe's forward pass; whole nets are
compared with the PyTorch model on every blob through ``convnet diff --against openvino``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("openvino")

from helpers import input_layer, rel_err
from test_onnx_export import CASES

import convnet_io
from convnet_io.runtimes.runners import OpenVinoRunner
from convnet_io.tools.diff import DiffSetup, run_diff

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"
# OpenVINO's CPU kernels reassociate sums (and use their own exp/pow): a few ulps beyond ORT's 1e-5.
TOL = 2e-5
# Where OpenVINO 2026.4 does not compute what Caffe (and the ONNX definition) computes; convnet
# refuses these layers on OpenVINO (``openvino_blocker``) and ``auto`` keeps them on ONNX Runtime.
KNOWN = {
    "lrn_across_size_over_channels": "LRN window wider than the channel axis: rel. err 0.22",
    "argmax_2d_values": "ArgMax with out_max_val on a 2-D blob: an empty batch (shape (0, 2, 2))",
    "reduction_asum_axis1": "ReduceL1 over trailing axes: a scalar instead of one value per item",
    "reduction_asum_axis2": "ReduceL1 over trailing axes: the wrong shape",
}


# Every case compiles its own OpenVINO model (~0.3 s each): the default run takes the layer types of
# the common classification nets and the known differences; CONVNET_TEST_OPENVINO_ALL=1 runs all.
COMMON = ("conv", "pool", "lrn", "inner", "ip_", "relu", "softmax", "concat", "batchnorm", "scale", "eltwise")
SELECTED = [c for c in CASES if os.environ.get("CONVNET_TEST_OPENVINO_ALL") or c[0] in KNOWN
            or (c[0].startswith(COMMON) and c[0] != "pool_max_ceil_clip")]  # that one: 8 s


@pytest.mark.parametrize("layers,inputs,reference,blobs", [c[1:] for c in SELECTED], ids=[c[0] for c in SELECTED])
def test_layer_matches_caffe_in_openvino(tmp_path, request, layers, inputs, reference, blobs):
    name = request.node.callspec.id
    if name in KNOWN:
        request.applymarker(pytest.mark.xfail(reason=KNOWN[name], strict=True))
    path = tmp_path / "net.prototxt"
    path.write_text("".join(input_layer(v.shape, k) for k, v in inputs.items()) + layers)
    net = convnet_io.load(path, seed=1)
    rng = np.random.default_rng(1)
    values = {k: [rng.standard_normal(b.shape).astype(np.float32) for b in v] for k, v in net.blobs().items()}
    if blobs is not None:
        values.update(blobs(net.blobs(), rng))
    if values:
        net.set_blobs(values)
    runner = OpenVinoRunner(net, device="cpu")
    got = runner.run({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()})
    x = {k: np.float64(v.astype(np.float32)) for k, v in inputs.items()}
    expected = reference(x, {k: [np.float64(b) for b in v] for k, v in net.blobs().items()})
    for value, e in expected.items():
        e = np.asarray(e, dtype=np.float64)
        assert got[value].shape == e.shape, (value, got[value].shape, e.shape)
        assert rel_err(got[value], e) <= TOL, (value, rel_err(got[value], e))


@pytest.mark.parametrize("path,shape", [(MODELS / "mnist" / "lenet.prototxt", None),
                                        (MODELS / "cifar10" / "cifar10_quick.prototxt", None)],
                         ids=["lenet", "cifar10_quick"])
def test_whole_net_diff_against_openvino(path, shape):
    if not path.exists():
        pytest.skip(f"{path} is not present")
    setup = DiffSetup(a=str(path), against="openvino", batch=2, seed=3)
    report = run_diff(setup)
    assert report["b"].startswith("openvino")
    assert report["ok"], report.get("first_divergence")


def test_net_forward_on_openvino_matches_torch():
    net = convnet_io.load(MODELS / "mnist" / "lenet.prototxt", seed=2, backend="openvino")
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    got = net.forward({"data": x})["prob"]
    want = net.run_values({"data": x}, ["prob"])["prob"]
    assert rel_err(got, want) <= 1e-5
    assert ("openvino", ("prob",)) in net._ort  # one compiled model, cached for the next call


def test_known_differences_are_refused():
    from helpers import graph_from_text

    from convnet_io.runtimes.openvino_session import openvino_blocker

    g = graph_from_text(input_layer((1, 3, 4, 4)) + '''
        layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 7 } }''')
    assert "LRN" in openvino_blocker(g)
    ok = graph_from_text(input_layer((1, 8, 4, 4)) + '''
        layer { name: "n" type: "LRN" bottom: "data" top: "n" lrn_param { local_size: 5 } }''')
    assert openvino_blocker(ok) is None
