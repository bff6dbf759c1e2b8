"""Caffe's published recurrent nets build, run and export; an LSTM language model trains.

The prototxts under ``tests/recurrent_nets/`` are copied unchanged (origin in each file's first
line) from the recurrent branch of github.com/jeffdonahue/caffe (COCO captioning: the LSTM
language model and LRCN) and from github.com/LisaAnne/lisa-caffe-public (LRCN activity
recognition). Their data sources are not here: ``input_shapes`` stands in, as ``--input-shape`` on
the command line, and the activity net's Python data layers are replaced by Input layers.
The full-size runs (25M to 98M parameters) are opt-in with ``CONVNET_FULL_NETS=1``; the default
tests run the same nets with their widths shrunk by a text substitution.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from convnet_cli.main import cli
from test_recurrent import lstm_ref

import convnet_io
from convnet_io.api.loading import load_graph
from convnet_io.onnx_export import check_onnx, export_onnx
from convnet_io.tools.export import validate_onnx

NETS = Path(__file__).resolve().parent / "recurrent_nets"
FULL = os.environ.get("CONVNET_FULL_NETS") == "1"
SENTENCES = {"cont_sentence": (20, 100), "input_sentence": (20, 100), "target_sentence": (20, 100)}


def lstm_params(graph, name):
    return [p.shape for p in next(n for n in graph.nodes if n.name == name).params]


@pytest.mark.parametrize("phase, stages", [("TRAIN", ("embed-drop", "lstm-drop")), ("TEST", ("test-on-val",)),
                                           ("TEST", ("test-on-train",))])
def test_lstm_language_model_builds(phase, stages):
    g = load_graph(NETS / "lstm_language_model.prototxt", phase=phase, input_shapes=SENTENCES, stages=stages)
    assert lstm_params(g, "lstm1") == [(4000, 1000), (4000,), (4000, 1000)]
    assert g.shapes["predict"] == (20, 100, 8801)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("variant, static_in", [(("factored", "2-layer"), "lstm2"), (("unfactored", "1-layer"), "lstm1"),
                                                (("unfactored", "2-layer"), "lstm1")])
def test_lrcn_captioning_builds(phase, variant, static_in):
    stages = variant + (("freeze-convnet",) if phase == "TRAIN" else ("test-on-val",))
    shapes = dict(SENTENCES, data=(100, 3, 227, 227), label=(100,))
    g = load_graph(NETS / "lrcn.prototxt", phase=phase, input_shapes=shapes, stages=stages)
    # The image features (fc8, 100 x 1000) are the LSTM's static input: W_xc_static is blob 2.
    assert lstm_params(g, static_in)[2] == (4000, 1000)
    assert g.shapes["predict"] == (20, 100, 8801)


def _python_data_as_input(text: str, shapes: dict[str, tuple[int, ...]]) -> str:
    """The activity net's Python data layers (a pycaffe video reader) replaced by Input layers."""
    dims = " ".join("shape { " + " ".join(f"dim: {d}" for d in s) + " }" for s in shapes.values())
    text = re.sub(r"python_param \{[^}]*\}", f"input_param {{ {dims} }}", text)
    return text.replace('type: "Python"', 'type: "Input"')


@pytest.mark.parametrize("phase, frames, streams", [("TRAIN", 384, 24), ("TEST", 48, 3)])
def test_lrcn_activity_recognition_builds(tmp_path, phase, frames, streams):
    text = (NETS / "lrcn_activity_train_test_lstm_RGB.prototxt").read_text()
    path = tmp_path / "net.prototxt"
    path.write_text(_python_data_as_input(text, {"data": (frames, 3, 227, 227), "label": (frames,),
                                                 "clip_markers": (frames,)}))
    g = load_graph(path, phase=phase, stages=("test-on-test",) if phase == "TEST" else ())
    assert g.shapes["lstm1"] == (16, streams, 256)
    assert lstm_params(g, "lstm1") == [(1024, 4096), (1024,), (1024, 256)]
    deploy = load_graph(NETS / "lrcn_activity_deploy_lstm.prototxt")
    assert deploy.shapes["probs"] == (16, 10, 101)


def _shrunk(name: str, widths: dict[str, str]) -> str:
    text = (NETS / name).read_text()
    for old, new in widths.items():
        text = re.sub(rf"\b{old}\b", new, text)
    return text


def _sentence_feeds(rng, steps, streams, vocab):
    cont = np.ones((steps, streams), np.float32)
    cont[0] = 0
    cont[steps // 2, 0] = 0
    return {"cont_sentence": cont, "input_sentence": rng.integers(0, vocab, (steps, streams)).astype(np.float32)}


def _onnxruntime(net, feeds):
    """The net's probs from its checked ONNX export in ONNX Runtime (Embed needs word ids, so not
    the export command's random feeds)."""
    from convnet_io.runtimes.onnxruntime_session import make_session

    model = export_onnx(net.graph, net.blobs())
    check_onnx(model)
    session = make_session(model.SerializeToString(), "cpu")
    return session.run(["probs"], {i.name: feeds[i.name] for i in session.get_inputs()})[0]


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.skipif(not FULL, reason="CONVNET_FULL_NETS=1"))])
def test_lstm_lm_deploy_runs_and_exports(tmp_path, full):
    vocab = 8801 if full else 41
    path = tmp_path / "lm.prototxt"
    path.write_text(_shrunk("lstm_lm.deploy.prototxt", {} if full else {"8801": "41", "1000": "12"}))
    steps, streams = 9, 4
    net = convnet_io.load(path, input_shapes={"cont_sentence": (steps, streams), "input_sentence": (steps, streams)})
    feeds = _sentence_feeds(np.random.default_rng(0), steps, streams, vocab)
    got = net.run_values(feeds, ["probs"])["probs"]
    b = {k: [np.float64(x) for x in v] for k, v in net.blobs().items()}
    emb = b["embedding"][0][feeds["input_sentence"].astype(int)]
    h = lstm_ref(emb, feeds["cont_sentence"].astype(np.float64), *b["lstm1"])[0]
    want = _softmax(h @ b["predict"][0].T + b["predict"][1], axis=2)
    assert got.shape == (steps, streams, vocab)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(_onnxruntime(net, feeds) - want).max() <= 1e-5
    # `convnet export`'s own check: 1 and 7 steps, seeded word ids, ONNX Runtime against PyTorch.
    result = validate_onnx(net, export_onnx(net.graph, net.blobs()), device="cpu")
    assert result.ok, result


@pytest.mark.parametrize("full", [False, pytest.param(True, marks=pytest.mark.skipif(not FULL, reason="CONVNET_FULL_NETS=1"))])
def test_lrcn_word_to_preds_deploy_runs_and_exports(tmp_path, full):
    """Two stacked LSTMs, the second with the image features as its static input."""
    vocab, width = (8801, 1000) if full else (41, 12)
    path = tmp_path / "lrcn.prototxt"
    path.write_text(_shrunk("lrcn_word_to_preds.deploy.prototxt", {} if full else {"8801": "41", "1000": "12"}))
    streams = 5
    net = convnet_io.load(path, input_shapes={"cont_sentence": (1, streams), "input_sentence": (1, streams),
                                              "image_features": (streams, width)})
    rng = np.random.default_rng(1)
    feeds = _sentence_feeds(rng, 1, streams, vocab)
    feeds["image_features"] = rng.standard_normal((streams, width)).astype(np.float32)
    got = net.run_values(feeds, ["probs"])["probs"]
    b = {k: [np.float64(x) for x in v] for k, v in net.blobs().items()}
    cont = feeds["cont_sentence"].astype(np.float64)
    emb = b["embedding"][0][feeds["input_sentence"].astype(int)]
    h1 = lstm_ref(emb, cont, *b["lstm1"])[0]
    W_xc, b_c, W_static, W_hc = b["lstm2"]
    h2 = lstm_ref(h1, cont, W_xc, b_c, W_hc, x_static=np.float64(feeds["image_features"]), W_xc_static=W_static)[0]
    want = _softmax(h2 @ b["predict"][0].T + b["predict"][1], axis=2)
    assert np.abs(got - want).max() <= 1e-5
    assert np.abs(_onnxruntime(net, feeds) - want).max() <= 1e-5


# ------------------------------------------------------------------------------------------------
# Training: a character-level LSTM language model on a small text, with `convnet train`
# ------------------------------------------------------------------------------------------------
TEXT = ("the quick brown fox jumps over the lazy dog. a stitch in time saves nine. all that glitters "
        "is not gold. the early bird catches the worm. where there is smoke there is fire. actions speak "
        "louder than words. fortune favours the bold. practice makes perfect.")
LM_NET = """name: "char_lstm_lm"
layer {{ name: "data" type: "HDF5Data" top: "cont_sentence" top: "input_sentence" top: "target_sentence"
  hdf5_data_param {{ source: "{source}" batch_size: {steps} }} }}
layer {{ name: "embedding" type: "Embed" bottom: "input_sentence" top: "embedded_input_sentence"
  embed_param {{ bias_term: false input_dim: {vocab} num_output: 16
                 weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }} }} }}
layer {{ name: "lstm1" type: "LSTM" bottom: "embedded_input_sentence" bottom: "cont_sentence" top: "lstm1"
  recurrent_param {{ num_output: 48 weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }}
                     bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "predict" type: "InnerProduct" bottom: "lstm1" top: "predict"
  param {{ lr_mult: 1 decay_mult: 1 }} param {{ lr_mult: 2 decay_mult: 0 }}
  inner_product_param {{ num_output: {vocab} axis: 2 weight_filler {{ type: "uniform" min: -0.08 max: 0.08 }}
                         bias_filler {{ type: "constant" value: 0 }} }} }}
layer {{ name: "cross_entropy_loss" type: "SoftmaxWithLoss" bottom: "predict" bottom: "target_sentence"
  top: "cross_entropy_loss" loss_weight: {steps} loss_param {{ ignore_label: -1 }} softmax_param {{ axis: 2 }} }}
"""
LM_SOLVER = """net: "{net}"
base_lr: 0.1
lr_policy: "fixed"
momentum: 0.9
clip_gradients: 10
weight_decay: 0
display: 10
max_iter: {iters}
random_seed: 1
snapshot_prefix: "{prefix}"
"""


def write_char_lm(root: Path, steps=20, streams=8, chunks=12, seed=0):
    """The text as Caffe's captioning data: streams of sentences back to back, chunks of ``steps``
    timesteps (HDF5 rows) per batch, cont 0 at each sentence start, 0 as the end-of-sentence word."""
    import h5py

    chars = sorted(set(TEXT))
    index = {c: i + 1 for i, c in enumerate(chars)}
    sentences = [s.strip() + "." for s in TEXT.split(".") if s.strip()]
    rng = np.random.default_rng(seed)
    total = steps * chunks
    cols = {"cont_sentence": [], "input_sentence": [], "target_sentence": []}
    for _ in range(streams):
        cont, inp, target = [], [], []
        while len(inp) < total:
            ids = [index[c] for c in sentences[rng.integers(len(sentences))]]
            cont += [0] + [1] * len(ids)
            inp += [0] + ids
            target += ids + [0]
        for k, v in zip(cols, (cont, inp, target)):
            cols[k].append(v[:total])
    with h5py.File(root / "text.h5", "w") as f:
        for k, v in cols.items():
            f[k] = np.asarray(v, dtype=np.float32).T  # (time, streams)
    (root / "list.txt").write_text(str(root / "text.h5") + "\n")
    return len(chars) + 1


def test_lstm_language_model_trains_and_its_loss_falls(tmp_path):
    steps = 20
    vocab = write_char_lm(tmp_path, steps=steps)
    (tmp_path / "net.prototxt").write_text(LM_NET.format(source=tmp_path / "list.txt", steps=steps, vocab=vocab))
    (tmp_path / "solver.prototxt").write_text(LM_SOLVER.format(net=tmp_path / "net.prototxt", iters=150,
                                                               prefix=tmp_path / "lm"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many tiny per-step ops: one thread is faster on a shared CPU
    try:
        r = CliRunner().invoke(cli, ["train", "--solver", str(tmp_path / "solver.prototxt"), "--workers", "0",
                                     "--log-json", str(tmp_path / "metrics.jsonl")])
    finally:
        torch.set_num_threads(threads)
    assert r.exit_code == 0, r.output
    losses = [rec["loss"] for rec in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
              if rec.get("phase") == "train" and "loss" in rec]
    print(f"char LSTM LM, loss per displayed iteration (x{steps} loss_weight): "
          + ", ".join(f"{v:.2f}" for v in losses))
    # Uniform guessing costs ln(vocab) nats per character; the model must beat it by far.
    assert losses[0] > 0.9 * steps * np.log(vocab)
    assert losses[-1] < 0.5 * losses[0]
    assert (tmp_path / "lm_iter_150.caffemodel").exists()


@pytest.mark.skipif(not FULL, reason="CONVNET_FULL_NETS=1 (160 frames through a CaffeNet-sized net)")
def test_lrcn_activity_deploy_runs():
    """The LRCN video deploy net: 16 steps of 10 clips, fc6 features into the LSTM."""
    net = convnet_io.load(NETS / "lrcn_activity_deploy_lstm.prototxt")
    rng = np.random.default_rng(2)
    markers = np.ones((160, 1, 1, 1), np.float32)
    markers[:10] = 0  # frame-major: the first 10 frames start the 10 clips
    feeds = {"data": (rng.standard_normal((160, 3, 227, 227)) * 50).astype(np.float32), "clip_markers": markers}
    out = net.run_values(feeds, ["fc6-reshape", "reshape-cm", "lstm1", "probs"])
    b = [np.float64(x) for x in net.blobs()["lstm1"]]
    want = lstm_ref(np.float64(out["fc6-reshape"]), np.float64(out["reshape-cm"]), *b)[0]
    assert np.abs(out["lstm1"] - want).max() <= 1e-5
    assert np.allclose(out["probs"].sum(axis=2), 1, atol=1e-5)


@pytest.mark.skipif(not FULL, reason="CONVNET_FULL_NETS=1 (98M parameters)")
def test_lrcn_captioning_runs():
    """LRCN captioning (factored, 2 layers) at TEST: CaffeNet's fc8 of 2 images is the second
    LSTM's static input over 20 words."""
    from convnet_io.api.loading import load_blobs
    from convnet_io.torch_model import CaffeModule

    shapes = {"cont_sentence": (20, 2), "input_sentence": (20, 2), "target_sentence": (20, 2),
              "data": (2, 3, 227, 227), "label": (2,)}
    g = load_graph(NETS / "lrcn.prototxt", phase="TEST", input_shapes=shapes,
                   stages=("test-on-val", "factored", "2-layer"))
    blobs, _ = load_blobs(g)
    module = CaffeModule(g)
    with torch.no_grad():
        for layer, arrays in blobs.items():
            for t, a in zip(module.caffe_blobs()[layer], arrays):
                t.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))
    rng = np.random.default_rng(3)
    feeds = _sentence_feeds(rng, 20, 2, 8801)
    feeds.update(target_sentence=rng.integers(0, 8801, (20, 2)).astype(np.float32),
                 data=(rng.standard_normal((2, 3, 227, 227)) * 50).astype(np.float32),
                 label=np.zeros(2, np.float32))
    with torch.no_grad():
        out = module.run({k: torch.from_numpy(v) for k, v in feeds.items()},
                         ["fc8", "lstm1", "lstm2", "cross_entropy_loss", "accuracy"])
    out = {k: v.double().numpy() for k, v in out.items()}
    W_xc, b_c, W_static, W_hc = (np.float64(x) for x in blobs["lstm2"])
    want = lstm_ref(out["lstm1"], np.float64(feeds["cont_sentence"]), W_xc, b_c, W_hc,
                    x_static=out["fc8"], W_xc_static=W_static)[0]
    assert np.abs(out["lstm2"] - want).max() <= 1e-5
    assert np.isfinite(out["cross_entropy_loss"]).all()
