"""Opt-in: RNN and LSTM against real BVLC Caffe (pycaffe), forward and backward.

Run with ``CONVNET_CAFFE_PYTHON=/path/to/caffe/python`` set (a Python with pycaffe built with the
recurrent layers). Caffe fills the weights from the net's fillers, runs forward and backward through
a EuclideanLoss and saves its .caffemodel, outputs and gradients; convnet loads the same prototxt
and .caffemodel and must agree. ``cont`` mixes 0, 1 and non-binary values, so the comparison covers
Caffe's LSTMUnit gradient, and a second pass with cont_0 = 1 covers the state Caffe carries between
passes.
"""
from __future__ import annotations

import os
import subprocess
import textwrap

import numpy as np
import pytest
import torch

import convnet_io

CAFFE_PYTHON = os.environ.get("CONVNET_CAFFE_PYTHON")
pytestmark = pytest.mark.skipif(not CAFFE_PYTHON, reason="set CONVNET_CAFFE_PYTHON to a pycaffe Python")

T, N, H = 20, 3, 4


def net_text(kind: str, static: bool, expose: bool) -> str:
    def inp(name, dims):
        return (f'layer {{ name: "{name}" type: "Input" top: "{name}" input_param {{ shape {{ '
                + " ".join(f"dim: {d}" for d in dims) + " } } }\n")

    text = 'name: "rec" force_backward: true\n' + inp("x", (T, N, 2, 3)) + inp("cont", (T, N)) + inp("target", (T, N, H))
    bottoms = ["x", "cont"]
    if static:
        text += inp("x_static", (N, 5))
        bottoms.append("x_static")
    states = ["h", "c"] if kind == "LSTM" else ["h"]
    tops = ["y"]
    if expose:
        for s in states:
            text += inp(f"{s}0", (1, N, H))
        bottoms += [f"{s}0" for s in states]
        tops += [f"{s}T" for s in states]
    text += (f'layer {{ name: "rec" type: "{kind}" ' + " ".join(f'bottom: "{b}"' for b in bottoms) + " "
             + " ".join(f'top: "{t}"' for t in tops)
             + f' recurrent_param {{ num_output: {H} expose_hidden: {str(expose).lower()} '
               'weight_filler { type: "uniform" min: -0.5 max: 0.5 } '
               'bias_filler { type: "uniform" min: -0.5 max: 0.5 } } }\n')
    text += 'layer { name: "loss" type: "EuclideanLoss" bottom: "y" bottom: "target" top: "loss" }\n'
    if expose:  # the exposed state tops are consumed so Caffe does not print them as outputs
        text += 'layer { name: "silence" type: "Silence" ' + " ".join(f'bottom: "{t}"' for t in tops[1:]) + " }\n"
    return text


CAFFE_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    caffe.set_random_seed(7)
    proto, model, inputs, out = sys.argv[1:5]
    feeds = dict(np.load(inputs))
    net = caffe.Net(proto, caffe.TRAIN)
    result = {}
    for rnd in range(2):
        for k, v in feeds.items():
            if k.startswith("second_"):
                continue
            key = "second_" + k if rnd == 1 and "second_" + k in feeds else k
            net.blobs[k].data[...] = feeds[key]
        net.forward()
        for p in net.params["rec"]:
            p.diff[...] = 0
        net.backward()
        for name in net.blobs:
            result["%d/%s" % (rnd, name)] = net.blobs[name].data.copy()
        for name in ("x", "x_static"):
            if name in net.blobs:
                result["%d/%s_diff" % (rnd, name)] = net.blobs[name].diff.copy()
        for i, p in enumerate(net.params["rec"]):
            result["%d/blob%d_diff" % (rnd, i)] = p.diff.copy()
        if rnd == 0:
            net.save(model)
    np.savez(out, **result)
""")


@pytest.mark.parametrize("kind, static, expose", [
    ("LSTM", False, False), ("LSTM", True, False), ("LSTM", False, True), ("LSTM", True, True),
    ("RNN", False, False), ("RNN", True, True),
])
def test_matches_caffe(tmp_path, kind, static, expose):
    proto = tmp_path / "net.prototxt"
    proto.write_text(net_text(kind, static, expose))
    rng = np.random.default_rng(11)
    cont = np.ones((T, N))
    cont[0] = 0
    cont[7, 0] = 0
    cont[12, 1:] = 0
    cont[15, 2] = 0.5  # non-binary: Caffe scales the state and the forget gate by it
    feeds = {"x": rng.standard_normal((T, N, 2, 3)), "cont": cont, "target": rng.standard_normal((T, N, H))}
    if static:
        feeds["x_static"] = rng.standard_normal((N, 5))
    if expose:
        for s in (["h", "c"] if kind == "LSTM" else ["h"]):
            feeds[f"{s}0"] = rng.standard_normal((1, N, H)) * 0.5
    second_cont = cont.copy()
    second_cont[0] = 1  # continues the previous pass's sequences: Caffe's carried state matters
    feeds["second_cont"] = second_cont
    feeds["second_x"] = rng.standard_normal((T, N, 2, 3))
    feeds = {k: v.astype(np.float32) for k, v in feeds.items()}
    np.savez(tmp_path / "in.npz", **feeds)
    env = dict(os.environ, GLOG_minloglevel="2")
    subprocess.run([CAFFE_PYTHON, "-c", CAFFE_SCRIPT, str(proto), str(tmp_path / "w.caffemodel"),
                    str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], check=True, env=env)
    caffe = dict(np.load(tmp_path / "out.npz"))

    net = convnet_io.load(proto, weights=tmp_path / "w.caffemodel", phase="TRAIN")
    module = net.module
    module.train()
    layer = module.layer("rec")
    worst = {}
    for rnd in range(2):
        t = {k: torch.tensor(feeds[f"second_{k}" if rnd and f"second_{k}" in feeds else k], requires_grad=k in ("x", "x_static"))
             for k in feeds if not k.startswith("second_")}
        for b in layer.caffe_blobs():
            b.grad = None
        tops = ["y"] + (["hT", "cT"][:2 if kind == "LSTM" else 1] if expose else []) + ["loss"]
        out = module.run(t, tops)
        out["loss"].backward()
        pairs = [(f"{rnd}/{top}", out[top].detach().numpy()) for top in tops]
        pairs += [(f"{rnd}/{k}_diff", t[k].grad.numpy()) for k in ("x", "x_static") if k in t]
        pairs += [(f"{rnd}/blob{i}_diff", b.grad.numpy()) for i, b in enumerate(layer.caffe_blobs())]
        for key, got in pairs:
            want = caffe[key]
            assert got.shape == want.shape, key
            worst[key] = float(np.abs(got - want).max())
    print(f"{kind} static={static} expose={expose}: max |convnet - caffe| = {max(worst.values()):.3g}")
    for key, err in worst.items():
        assert err <= 1e-5, (key, err)


UNIT_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import caffe
    caffe.set_mode_cpu()
    proto, inputs, out = sys.argv[1:4]
    feeds = dict(np.load(inputs))
    net = caffe.Net(proto, caffe.TRAIN)
    for k in ("c_prev", "gates", "cont", "c_target", "h_target"):
        net.blobs[k].data[...] = feeds[k]
    net.forward()
    net.backward()
    np.savez(out, c=net.blobs["c"].data, h=net.blobs["h"].data, c_prev_diff=net.blobs["c_prev"].diff,
             gates_diff=net.blobs["gates"].diff)
""")


def test_lstm_unit_matches_caffe(tmp_path):
    """LSTMUnit on its own, cont in {0, 1, 0.5, -0.7, 2}: forward and Caffe's backward."""
    streams, hidden = 5, 3
    dims = {"c_prev": (1, streams, hidden), "gates": (1, streams, 4 * hidden), "cont": (1, streams),
            "c_target": (1, streams, hidden), "h_target": (1, streams, hidden)}
    text = 'name: "unit" force_backward: true\n' + "".join(
        f'layer {{ name: "{k}" type: "Input" top: "{k}" input_param {{ shape {{ '
        + " ".join(f"dim: {d}" for d in v) + " } } }\n" for k, v in dims.items())
    text += ('layer { name: "unit" type: "LSTMUnit" bottom: "c_prev" bottom: "gates" bottom: "cont" top: "c" top: "h" }\n'
             'layer { name: "lc" type: "EuclideanLoss" bottom: "c" bottom: "c_target" top: "lc" }\n'
             'layer { name: "lh" type: "EuclideanLoss" bottom: "h" bottom: "h_target" top: "lh" }\n')
    proto = tmp_path / "unit.prototxt"
    proto.write_text(text)
    rng = np.random.default_rng(12)
    feeds = {k: rng.standard_normal(v).astype(np.float32) for k, v in dims.items()}
    feeds["cont"] = np.array([[0, 1, 0.5, -0.7, 2]], np.float32)
    np.savez(tmp_path / "in.npz", **feeds)
    subprocess.run([CAFFE_PYTHON, "-c", UNIT_SCRIPT, str(proto), str(tmp_path / "in.npz"), str(tmp_path / "out.npz")],
                   check=True, env=dict(os.environ, GLOG_minloglevel="2"))
    caffe = dict(np.load(tmp_path / "out.npz"))
    net = convnet_io.load(proto, phase="TRAIN")
    t = {k: torch.tensor(v, requires_grad=k in ("c_prev", "gates")) for k, v in feeds.items()}
    out = net.module.run(t, ["c", "h", "lc", "lh"])
    (out["lc"] + out["lh"]).backward()
    got = {"c": out["c"].detach().numpy(), "h": out["h"].detach().numpy(),
           "c_prev_diff": t["c_prev"].grad.numpy(), "gates_diff": t["gates"].grad.numpy()}
    worst = {k: float(np.abs(got[k] - caffe[k]).max()) for k in got}
    print(f"LSTMUnit: max |convnet - caffe| = {max(worst.values()):.3g}")
    assert max(worst.values()) <= 1e-6, worst
