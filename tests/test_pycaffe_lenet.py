"""BVLC's examples/01-learning-lenet.ipynb with only the import changed (digits from scikit-learn
for MNIST): NetSpec writes LeNet, SGDSolver trains it, the script's own loops read the blobs.
Every figure is checked against a float64 NumPy reference computed here."""
# ruff: noqa: C408  (the BVLC examples' code, kept as written: dict(...) calls)
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pycaffe_reference import (
    digits_images,
    lenet_forward,
    make_digits,
    softmax,
    softmax_loss,
)

import convnet_io.pycaffe as caffe
from convnet_io.pycaffe import layers as L
from convnet_io.pycaffe import params as P


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return make_digits(tmp_path_factory.mktemp("digits"))


# -- the notebook's code, import changed -------------------------------------------------------------
def lenet(lmdb, batch_size):
    # our version of LeNet: a series of linear and simple nonlinear transformations
    n = caffe.NetSpec()
    n.data, n.label = L.Data(batch_size=batch_size, backend=P.Data.LMDB, source=lmdb,
                             transform_param=dict(scale=1. / 255), ntop=2)
    n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'))
    n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.conv2 = L.Convolution(n.pool1, kernel_size=5, num_output=50, weight_filler=dict(type='xavier'))
    n.pool2 = L.Pooling(n.conv2, kernel_size=2, stride=2, pool=P.Pooling.MAX)
    n.fc1 = L.InnerProduct(n.pool2, num_output=500, weight_filler=dict(type='xavier'))
    n.relu1 = L.ReLU(n.fc1, in_place=True)
    n.score = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='xavier'))
    n.loss = L.SoftmaxWithLoss(n.score, n.label)
    return n.to_proto()


SOLVER = """train_net: "mnist/lenet_auto_train.prototxt"
test_net: "mnist/lenet_auto_test.prototxt"
test_iter: 4
test_interval: 500
base_lr: 0.01
momentum: 0.9
weight_decay: 0.0005
lr_policy: "inv"
gamma: 0.0001
power: 0.75
display: 100
max_iter: 10000
snapshot: 5000
snapshot_prefix: "mnist/lenet"
"""


@pytest.fixture
def in_workdir(digits, tmp_path):
    (tmp_path / "mnist").mkdir()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    with open('mnist/lenet_auto_train.prototxt', 'w') as f:
        f.write(str(lenet(str(digits / 'train_lmdb'), 64)))
    with open('mnist/lenet_auto_test.prototxt', 'w') as f:
        f.write(str(lenet(str(digits / 'test_lmdb'), 90)))
    Path('mnist/lenet_auto_solver.prototxt').write_text(SOLVER)
    yield tmp_path
    os.chdir(cwd)


def params_of(net):
    return {k: [b.data.astype(np.float64) for b in v] for k, v in net.params.items()}


def test_netspec_writes_pycaffe_text(in_workdir):
    text = Path('mnist/lenet_auto_train.prototxt').read_text()
    # pycaffe's str(NetParameter): protobuf text, layers named after the assigned tops
    assert text.startswith('layer {\n  name: "data"\n  type: "Data"\n  top: "data"\n  top: "label"\n'
                           '  transform_param {\n    scale: ')
    assert 'layer {\n  name: "relu1"\n  type: "ReLU"\n  bottom: "fc1"\n  top: "fc1"\n}' in text
    assert 'pool: MAX' in text and 'backend: LMDB' in text


def test_learning_lenet_notebook(in_workdir, digits):
    caffe.set_mode_cpu()
    solver = caffe.SGDSolver('mnist/lenet_auto_solver.prototxt')

    # each output is (batch size, feature dim, spatial dim)
    shapes = [(k, v.data.shape) for k, v in solver.net.blobs.items()]
    assert shapes == [('data', (64, 1, 28, 28)), ('label', (64,)), ('conv1', (64, 20, 24, 24)),
                      ('pool1', (64, 20, 12, 12)), ('conv2', (64, 50, 8, 8)), ('pool2', (64, 50, 4, 4)),
                      ('fc1', (64, 500)), ('score', (64, 10)), ('loss', ())]
    # just print the weight sizes (we'll omit the biases)
    assert [(k, v[0].data.shape) for k, v in solver.net.params.items()] == [
        ('conv1', (20, 1, 5, 5)), ('conv2', (50, 20, 5, 5)), ('fc1', (500, 800)), ('score', (10, 500))]

    solver.net.forward()  # train net
    solver.test_nets[0].forward()  # test net (there can be more than one)
    # the train batch is the first 64 records, scaled by 1/255, and the loss is LeNet's on it
    x, y = digits_images(digits, "train.txt")
    np.testing.assert_allclose(solver.net.blobs['data'].data[:, 0], x[:64, 0] / 255, atol=1e-6)
    np.testing.assert_array_equal(solver.net.blobs['label'].data, y[:64])
    p0 = params_of(solver.net)
    ref = lenet_forward(x[:64] / 255, p0)
    assert abs(float(solver.net.blobs['loss'].data) - softmax_loss(ref["score"], y[:64])) < 1e-5
    xt, yt = digits_images(digits, "test.txt")
    np.testing.assert_allclose(solver.test_nets[0].blobs['score'].data,
                               lenet_forward(xt[:90] / 255, p0)["score"], atol=1e-4)

    solver.step(1)
    # after the step the diffs hold the update (Caffe's ComputeUpdateValue): w_new = w - diff, and
    # at iteration 0 the update is lr * (gradient + decay * w); the gradient of the score layer is
    # (softmax - onehot) / N times fc1, on the batch the step used (records 64..127).
    step_ref = lenet_forward(x[64:128] / 255, p0)
    prob = softmax(step_ref["score"])
    prob[np.arange(64), y[64:128]] -= 1
    grad = prob.T @ step_ref["fc1"] / 64
    update = 0.01 * (grad + 0.0005 * p0['score'][0])
    np.testing.assert_allclose(solver.net.params['score'][0].diff, update, atol=2e-7)
    np.testing.assert_allclose(solver.net.params['score'][0].data, p0['score'][0] - update, atol=1e-6)
    assert solver.net.params['conv1'][0].diff[:, 0].shape == (20, 5, 5)

    niter = 20
    test_interval = 10
    # losses will also be stored in the log
    train_loss = np.zeros(niter)
    test_acc = np.zeros(int(np.ceil(niter / test_interval)))
    output = np.zeros((niter, 8, 10))
    checked = []
    # the main solver loop
    for it in range(niter):
        before = params_of(solver.net)
        solver.step(1)  # SGD by Caffe
        # store the train loss
        train_loss[it] = solver.net.blobs['loss'].data
        if it in (0, niter - 1):
            xb = solver.net.blobs['data'].data.astype(np.float64)
            yb = solver.net.blobs['label'].data.astype(int)
            checked.append(abs(train_loss[it] - softmax_loss(lenet_forward(xb, before)["score"], yb)))
        # store the output on the first test batch
        # (start the forward pass at conv1 to avoid loading new data)
        solver.test_nets[0].forward(start='conv1')
        output[it] = solver.test_nets[0].blobs['score'].data[:8]
        # run a full test every so often
        # (Caffe can also do this for us and write to a log, but we show here
        #  how to do it directly in Python, where more complicated things are easier.)
        if it % test_interval == 0:
            correct = 0
            for test_it in range(4):
                solver.test_nets[0].forward()
                correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1)
                               == solver.test_nets[0].blobs['label'].data)
            test_acc[it // test_interval] = correct / 360.
    assert max(checked) < 1e-4
    assert train_loss[-5:].mean() < train_loss[:5].mean() * 0.6
    # the final accuracy, recomputed in float64 from the learned weights over the 360 test digits
    final = params_of(solver.net)
    ref_acc = (lenet_forward(xt / 255, final)["score"].argmax(1) == yt).mean()
    correct = 0
    for test_it in range(4):
        solver.test_nets[0].forward()
        correct += sum(solver.test_nets[0].blobs['score'].data.argmax(1) == solver.test_nets[0].blobs['label'].data)
    assert abs(correct / 360. - ref_acc) <= 1 / 360.
    assert ref_acc > 0.7
    print(f"train loss {train_loss[0]:.4f} -> {train_loss[-1]:.4f}; test accuracy {test_acc.tolist()} "
          f"final {correct / 360.:.4f} (float64 reference {ref_acc:.4f})")
