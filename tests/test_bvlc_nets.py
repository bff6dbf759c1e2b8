"""Every example and model prototxt of BVLC Caffe's repository (copied under tests/bvlc_nets/, each
with its origin on the first line) builds in both phases; its TEST phase runs and exports to ONNX,
checked in ONNX Runtime against PyTorch. Nets whose data layers read a source that is not here
are given the shape ``--input-shape`` would give.

The ImageNet-sized nets run and export only with CONVNET_SLOW=1 (they build in every run).
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from convnet_io.api.loading import load_graph

NETS = Path(__file__).resolve().parent / "bvlc_nets"
SLOW = bool(os.environ.get("CONVNET_SLOW"))

# net -> (what --input-shape gives where a data source must exist, TEST stages, ImageNet-sized)
MNIST, CIFAR = {"data": (2, 1, 28, 28)}, {"data": (2, 3, 32, 32)}
HDF5 = {"data": (2, 4), "label": (2,)}
BVLC = {
    "examples/cifar10/cifar10_full.prototxt": (None, (), False),
    "examples/cifar10/cifar10_full_sigmoid_train_test.prototxt": (CIFAR, (), False),
    "examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt": (CIFAR, (), False),
    "examples/cifar10/cifar10_full_train_test.prototxt": (CIFAR, (), False),
    "examples/cifar10/cifar10_quick.prototxt": (None, (), False),
    "examples/cifar10/cifar10_quick_train_test.prototxt": (CIFAR, (), False),
    "examples/feature_extraction/imagenet_val.prototxt": (None, (), True),
    "examples/finetune_pascal_detection/pascal_finetune_trainval_test.prototxt": (None, (), True),
    "examples/hdf5_classification/nonlinear_auto_test.prototxt": (HDF5, (), False),
    "examples/hdf5_classification/nonlinear_auto_train.prototxt": (HDF5, (), False),
    "examples/hdf5_classification/nonlinear_train_val.prototxt": (HDF5, (), False),
    "examples/hdf5_classification/train_val.prototxt": (HDF5, (), False),
    "examples/mnist/lenet.prototxt": (None, (), False),
    "examples/mnist/lenet_train_test.prototxt": (MNIST, (), False),
    # Two layers named 'loss'; its TEST data layers need the solver's stage.
    "examples/mnist/mnist_autoencoder.prototxt": (MNIST, ("test-on-test",), False),
    "examples/net_surgery/bvlc_caffenet_full_conv.prototxt": (None, (), True),
    "examples/net_surgery/conv.prototxt": (None, (), False),
    "examples/siamese/mnist_siamese.prototxt": (None, (), False),
    "examples/siamese/mnist_siamese_train_test.prototxt": ({"pair_data": (2, 2, 28, 28)}, (), False),
    "models/bvlc_alexnet/deploy.prototxt": (None, (), True),
    "models/bvlc_alexnet/train_val.prototxt": (None, (), True),
    "models/bvlc_googlenet/deploy.prototxt": (None, (), True),
    "models/bvlc_googlenet/train_val.prototxt": (None, (), True),
    "models/bvlc_reference_caffenet/deploy.prototxt": (None, (), True),
    "models/bvlc_reference_caffenet/train_val.prototxt": (None, (), True),
    "models/bvlc_reference_rcnn_ilsvrc13/deploy.prototxt": (None, (), True),
    "models/finetune_flickr_style/deploy.prototxt": (None, (), True),
    "models/finetune_flickr_style/train_val.prototxt": (None, (), True),
}
# A Python layer (examples/pycaffe/linreg.prototxt) needs the pycaffe layer support: not here.
PYTHON_LAYER_NETS = ["examples/pycaffe/linreg.prototxt"]


def test_every_bvlc_prototxt_is_listed():
    found = {str(p.relative_to(NETS)) for p in NETS.rglob("*.prototxt") if "solver" not in p.name}
    assert found == set(BVLC) | set(PYTHON_LAYER_NETS)


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("net", sorted(BVLC))
def test_bvlc_net_builds(net, phase):
    shapes, stages, _ = BVLC[net]
    graph = load_graph(NETS / net, phase=phase, input_shapes=shapes, stages=stages if phase == "TEST" else ())
    assert graph.nodes


def test_repeated_layer_names_load_as_in_caffe():
    graph = load_graph(NETS / "examples/mnist/mnist_autoencoder.prototxt", phase="TRAIN", input_shapes=MNIST)
    losses = [(n.name, n.caffe_name, n.type) for n in graph.nodes if n.type.endswith("Loss")]
    assert losses == [("loss", "", "SigmoidCrossEntropyLoss"), ("loss_1", "loss", "EuclideanLoss")]
    assert any("two layers are named 'loss'" in m for m in graph.notices)


@pytest.mark.parametrize("net", sorted(n for n, (_, _, big) in BVLC.items() if SLOW or not big))
def test_bvlc_net_test_phase_runs_and_exports(net):
    import numpy as np

    from convnet_io.api.net import Net
    from convnet_io.graph.initialize import initial_blobs
    from convnet_io.onnx_export import check_onnx, export_onnx
    from convnet_io.runtimes.compare import Tolerance, compare_blob
    from convnet_io.runtimes.onnxruntime_session import make_session
    from convnet_io.tools.export import seeded_inputs
    from convnet_io.torch_model import CaffeModule

    shapes, stages, _ = BVLC[net]
    graph = load_graph(NETS / net, phase="TEST", input_shapes=shapes, stages=stages)
    runner = Net(graph, CaffeModule(graph), backend="torch")
    blobs = initial_blobs(graph, 0)
    runner.set_blobs(blobs)
    model = export_onnx(graph, runner.blobs())
    check_onnx(model)
    session = make_session(model.SerializeToString(), "cpu")
    names = [i.name for i in session.get_inputs()]
    feeds = {k: v for k, v in seeded_inputs(graph, 1, 0).items() if k in names}
    outputs = [o.name for o in session.get_outputs()]
    got = dict(zip(outputs, session.run(outputs, feeds)))
    want = runner.run_values(feeds, outputs)
    for name in outputs:
        assert np.isfinite(want[name]).all(), name
        c = compare_blob(name, got[name], want[name], Tolerance(atol=1e-5, rtol=1e-4))
        assert c.ok, (name, c)


def test_weights_go_to_the_first_layer_of_a_repeated_name():
    """Caffe's CopyTrainedLayersFrom: each file layer fills the first net layer of its name (a
    repeated file name: the last one wins); a later net layer of the same name keeps its fillers."""
    import numpy as np

    from convnet_io.caffe.caffemodel import LayerBlobs
    from convnet_io.caffe.weights import match_weights
    from helpers import graph_from_text, input_layer

    graph = graph_from_text(input_layer((2, 3)) + (
        'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "a" inner_product_param { num_output: 2 } }'
        'layer { name: "ip" type: "InnerProduct" bottom: "a" top: "b" inner_product_param { num_output: 2 } }'))
    assert [n.name for n in graph.nodes[1:]] == ["ip", "ip_1"]
    first = [np.full((2, 3), 1, np.float32), np.zeros(2, np.float32)]
    last = [np.full((2, 3), 2, np.float32), np.zeros(2, np.float32)]
    report = match_weights(graph, [LayerBlobs("ip", "InnerProduct", first), LayerBlobs("ip", "InnerProduct", last)],
                           strict=False)
    assert list(report.blobs) == ["ip"] and report.missing == ["ip_1"]
    assert (report.blobs["ip"][0] == 2).all()
