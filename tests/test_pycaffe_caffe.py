"""Opt-in: one pycaffe script run by real BVLC pycaffe and by convnet (`python -m
convnet_io.pycaffe`, the script unchanged) on the same weights and digits LMDB: Net forward and
backward, blob and param diffs, SGDSolver steps and the test net. Set CONVNET_CAFFE_PYTHON to a
Python with pycaffe (e.g. /work/caffe-venv/bin/python)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycaffe_reference import make_digits

CAFFE_PYTHON = os.environ.get("CONVNET_CAFFE_PYTHON")
pytestmark = pytest.mark.skipif(not CAFFE_PYTHON, reason="set CONVNET_CAFFE_PYTHON to a Python with BVLC pycaffe")

SCRIPT = r'''
import json, sys
import numpy as np
import caffe
from caffe import layers as L, params as P

def lenet(lmdb, batch_size):
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool1, num_output=50, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()

root = sys.argv[1]
open('train.prototxt', 'w').write(str(lenet(root + '/train_lmdb', 32)))
open('test.prototxt', 'w').write(str(lenet(root + '/test_lmdb', 50)))
open('solver.prototxt', 'w').write('train_net: "train.prototxt"\ntest_net: "test.prototxt"\ntest_iter: 2\n'
    'test_interval: 1000\ntest_initialization: false\nbase_lr: 0.01\nmomentum: 0.9\nweight_decay: 0.0005\n'
    'lr_policy: "step"\ngamma: 0.5\nstepsize: 3\nmax_iter: 100\ndisplay: 0\nsnapshot_prefix: "snap"\n')
out = {}
solver = caffe.SGDSolver('solver.prototxt')
solver.net.copy_from(root + '/init.caffemodel')
solver.test_nets[0].copy_from(root + '/init.caffemodel')
solver.net.forward()
solver.net.backward()
out['loss0'] = float(solver.net.blobs['loss'].data)
out['data0'] = float(solver.net.blobs['data'].data.sum())
out['conv1_diff'] = solver.net.params['conv1'][0].diff.astype(float).ravel()[:50].tolist()
out['fc1_blob_diff'] = solver.net.blobs['fc1'].diff.astype(float).ravel()[:50].tolist()
losses = []
for it in range(6):
    solver.step(1)
    losses.append(float(solver.net.blobs['loss'].data))
out['losses'] = losses
out['score_w'] = solver.net.params['score'][0].data.astype(float).ravel()[:50].tolist()
out['score_update'] = solver.net.params['score'][0].diff.astype(float).ravel()[:50].tolist()
solver.test_nets[0].share_with(solver.net)
solver.test_nets[0].forward()
out['test_score'] = solver.test_nets[0].blobs['score'].data.astype(float).ravel()[:50].tolist()
out['blobs'] = [(k, list(v.data.shape)) for k, v in solver.net.blobs.items()]
out['iter'] = solver.iter
print('RESULT ' + json.dumps(out))
'''


def run(cmd, cwd):
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, check=False,
                          env={**os.environ, "GLOG_minloglevel": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


def test_script_agrees_with_real_pycaffe(tmp_path):
    import convnet_io

    root = make_digits(tmp_path / "digits")
    (tmp_path / "script.py").write_text(SCRIPT)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # the initial weights: convnet's fillers, written once, read by both
    (tmp_path / "init.prototxt").write_text(
        "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 1 dim: 28 dim: 28 } } }\n"
        "layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1' convolution_param { num_output: 20 kernel_size: 5 weight_filler { type: 'xavier' } } }\n"
        "layer { name: 'pool1' type: 'Pooling' bottom: 'conv1' top: 'pool1' pooling_param { pool: MAX kernel_size: 2 stride: 2 } }\n"
        "layer { name: 'fc1' type: 'InnerProduct' bottom: 'pool1' top: 'fc1' inner_product_param { num_output: 50 weight_filler { type: 'xavier' } } }\n"
        "layer { name: 'score' type: 'InnerProduct' bottom: 'fc1' top: 'score' inner_product_param { num_output: 10 weight_filler { type: 'xavier' } } }\n")
    net = convnet_io.load(tmp_path / "init.prototxt", seed=5)
    net.set_blobs({k: [b + 0.01 for b in v] if len(v) > 1 else v for k, v in net.blobs().items()})
    net.save_caffemodel(root / "init.caffemodel")
    real = run([CAFFE_PYTHON, str(tmp_path / "script.py"), str(root)], tmp_path / "a")
    ours = run([sys.executable, "-m", "convnet_io.pycaffe", str(tmp_path / "script.py"), str(root)], tmp_path / "b")
    assert ours["blobs"] == real["blobs"] and ours["iter"] == real["iter"] == 6
    assert ours["data0"] == pytest.approx(real["data0"], rel=1e-6)
    for key in ("loss0", "losses", "conv1_diff", "fc1_blob_diff", "score_w", "score_update", "test_score"):
        a, b = np.asarray(ours[key]), np.asarray(real[key])
        assert np.abs(a - b).max() <= 1e-4 * max(np.abs(b).max(), 1e-3), key
    print(f"losses: real pycaffe {np.round(real['losses'], 6).tolist()}, convnet {np.round(ours['losses'], 6).tolist()}")
