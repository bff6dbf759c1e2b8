"""OpenVINO sessions freed in any order leave the process able to take a signal (skipped without
the ``openvino`` extra).

OpenVINO's CPU plugin installs an alternate signal stack on the thread that creates it and unmaps
it when the plugin is destroyed; with one plugin per ``ov.Core``, sessions freed in the order they
were made left the main thread on an unmapped stack, and the next
signal Python handles — Ctrl-C, or the SIGCHLD handler torch's DataLoader installs — killed the
process with SIGSEGV, no traceback. It runs in a fresh interpreter so that a crash fails this test
instead of killing the test process."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("openvino")

from helpers import input_layer

TESTS = Path(__file__).resolve().parent

SCRIPT = """
import gc, os, signal, subprocess, sys, time
import numpy as np
import signal_stack
import convnet_io
from convnet_io.onnx_export import export_onnx
from convnet_io.runtimes.openvino_session import OpenVinoSession

net = convnet_io.load(sys.argv[1], seed=1, backend="torch")
model = export_onnx(net.graph, net.blobs()).SerializeToString()
x = np.random.default_rng(0).standard_normal((4, 3, 12, 12)).astype(np.float32)
# two sessions alive at once, freed in the order they were made
one, two = OpenVinoSession(model), OpenVinoSession(model)
assert np.array_equal(one.run(None, {"data": x})[0], two.run(None, {"data": x})[0])
del one, two
gc.collect()
assert signal_stack.dangling() is None, "sessions: " + signal_stack.dangling()
# two nets on OpenVINO, dropped in the order they were loaded
nets = [convnet_io.load(sys.argv[1], seed=1, backend="openvino") for _ in range(2)]
for n in nets:
    n.forward({"data": x})
del nets, n
gc.collect()
assert signal_stack.dangling() is None, "nets: " + signal_stack.dangling()
# the signals themselves: Python's SIGINT handler, and a SIGCHLD handler as torch's DataLoader sets
signal.signal(signal.SIGCHLD, lambda *a: None)
subprocess.run([sys.executable, "-c", "pass"], check=True)
try:
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(5)
except KeyboardInterrupt:
    print("interrupted cleanly")
"""

NET = 'name: "Tiny"\n' + input_layer((4, 3, 12, 12)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 5 } }
"""


def test_sessions_freed_in_any_order_leave_signals_working(tmp_path):
    (tmp_path / "net.prototxt").write_text(NET)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "net.prototxt")], check=False,
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "interrupted cleanly" in r.stdout, (r.returncode, r.stderr[-2000:])
