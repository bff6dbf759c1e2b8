"""NetSpec: every net of ../shared/caffe-models rebuilt as NetSpec calls (layers by type, params
as nested dicts, in_place, ntop, name) writes a prototxt that convnet parses to the same graph in
both phases; the text is pycaffe's (checked against real pycaffe when CONVNET_CAFFE_PYTHON names
a Python with it)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from google.protobuf import text_format

import convnet_io.pycaffe as caffe
from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.prototxt import parse_net_text, read_net
from convnet_io.pycaffe import layers as L
from convnet_io.pycaffe import params as P

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT.parent / "shared" / "caffe-models"
NETS = sorted(p for p in MODELS.glob("*/*.prototxt") if "solver" not in p.name) if MODELS.is_dir() else []
SKIP_FIELDS = {"name", "type", "bottom", "top"}


def as_python(message):
    """A message as NetSpec keyword values: dicts for messages, lists for repeated fields."""
    out = {}
    for f, value in message.ListFields():
        if f.message_type is not None:
            out[f.name] = [as_python(v) for v in value] if hasattr(value, "add") else as_python(value)
        else:
            out[f.name] = list(value) if hasattr(value, "extend") else value
    return out


def netspec_of(net) -> caffe.NetSpec:
    """The NetSpec calls that write ``net``: tops by blob name, in-place layers by layer name."""
    n = caffe.NetSpec()
    latest = {}
    for layer in net.layer:
        kwargs = {k: v for k, v in as_python(layer).items() if k not in SKIP_FIELDS}
        in_place = len(layer.top) == 1 and list(layer.top) == list(layer.bottom)
        first = layer.top[0] if len(layer.top) else None
        if in_place or layer.name != first:
            kwargs["name"] = layer.name
        if in_place:
            kwargs["in_place"] = True
        fn = getattr(L, layer.type)
        result = fn(*[latest[b] for b in layer.bottom], ntop=len(layer.top), **kwargs)
        tops = [] if len(layer.top) == 0 else ([result] if len(layer.top) == 1 else list(result))
        if not tops:
            n[layer.name] = result
        for blob, top in zip(layer.top, tops):
            latest[blob] = top
            n[layer.name if in_place else blob] = top
    return n


def graph_signature(net, phase, data_shape=None):
    g = build_graph(net, phase=phase, notices=[], input_shapes=data_shape)
    return [(node.name, node.type, node.bottoms, node.tops, [g.shapes[t] for t in node.tops], repr(node.attrs),
             [(p.shape, p.lr_mult, p.decay_mult, p.share_name, repr(p.filler)) for p in node.params],
             node.loss_weights) for node in g.nodes]


@pytest.mark.skipif(not NETS, reason="../shared/caffe-models not present")
@pytest.mark.parametrize("path", NETS, ids=[f"{p.parent.name}/{p.name}" for p in NETS])
def test_netspec_round_trip(path):
    """Per phase, as pycaffe scripts write train and test nets: the phase's layers (Caffe's
    FilterNet) as NetSpec calls, written, parsed again, built to the same graph."""
    from convnet_io.caffe.netstate import filter_layers, state_for
    from convnet_io.caffe.proto import caffe_pb2

    net, _ = read_net(path)
    for phase in ("TRAIN", "TEST"):
        phase_net = caffe_pb2.NetParameter()
        phase_net.layer.extend(filter_layers(net, state_for(net, phase, None, ())))
        text = str(netspec_of(phase_net).to_proto())
        again = parse_net_text(text, f"<netspec of {path.name}, {phase}>")
        # LMDB sources are not on this machine: the size a Data layer without crop_size reads
        shape = {"mnist": (64, 1, 28, 28), "cifar10": (100, 3, 32, 32)}.get(path.parent.name)
        shape = {"data": shape} if shape else None
        assert graph_signature(again, phase, shape) == graph_signature(net, phase, shape)


LENET = '''
n = caffe.NetSpec()
n.data, n.label = L.Data(batch_size=64, backend=P.Data.LMDB, source="train_lmdb",
                         transform_param=dict(scale=1. / 255), ntop=2)
n.conv1 = L.Convolution(n.data, kernel_size=5, num_output=20, weight_filler=dict(type='xavier'),
                        param=[dict(lr_mult=1), dict(lr_mult=2, decay_mult=0)])
n.pool1 = L.Pooling(n.conv1, kernel_size=2, stride=2, pool=P.Pooling.MAX)
n.relu1 = L.ReLU(n.pool1, in_place=True)
n.ip = L.InnerProduct(n.relu1, num_output=10, weight_filler=dict(type='gaussian', std=0.01))
n.loss = L.SoftmaxWithLoss(n.ip, n.label, include=dict(phase=caffe.TRAIN), loss_weight=[1])
n.acc = L.Accuracy(n.ip, n.label, include={'phase': caffe.TEST})
n.silence = L.Silence(n.label, ntop=0)
print(str(n.to_proto()), end="")
print(caffe.to_proto(L.Pooling(L.Convolution(L.Input(shape=dict(dim=[1, 3, 8, 8])), num_output=2),
                               pool=P.Pooling.AVE)), end="")
'''


def run_lenet_netspec() -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        exec(LENET, {"caffe": caffe, "L": L, "P": P})  # noqa: S102 - the same script real pycaffe runs
    return buf.getvalue()


def test_netspec_naming_and_params():
    text = run_lenet_netspec()
    net = parse_net_text(text)
    names = [(layer.name, layer.type, list(layer.bottom), list(layer.top)) for layer in net.layer]
    assert names[:7] == [("data", "Data", [], ["data", "label"]), ("conv1", "Convolution", ["data"], ["conv1"]),
                         ("pool1", "Pooling", ["conv1"], ["pool1"]), ("relu1", "ReLU", ["pool1"], ["pool1"]),
                         ("ip", "InnerProduct", ["pool1"], ["ip"]), ("loss", "SoftmaxWithLoss", ["ip", "label"], ["loss"]),
                         ("acc", "Accuracy", ["ip", "label"], ["acc"])]
    # a layer with no top is named by its NetSpec key; to_proto names the others by type and counter
    assert names[7] == ("silence", "Silence", ["label"], [])
    assert [x[:2] for x in names[8:]] == [("Input1", "Input"), ("Convolution1", "Convolution"), ("Pooling1", "Pooling")]
    conv = net.layer[1]
    assert [p.lr_mult for p in conv.param] == [1, 2] and conv.param[1].decay_mult == 0
    assert net.layer[5].include[0].phase == caffe.TRAIN and list(net.layer[5].loss_weight) == [1]
    assert net.layer[2].pooling_param.pool == P.Pooling.MAX == 0
    with pytest.raises(TypeError, match="is not a Top"):
        L.ReLU("conv1")


def _float_fields_as_doubles(text: str) -> str:
    """protobuf 3.x (pycaffe's era) prints float fields as the double they widen to; newer
    protobuf prints the shortest float. Same values: compare after one parse and print."""
    from convnet_io.caffe.proto import caffe_pb2

    out = []
    for chunk in text.split("layer {")[1:]:
        msg = caffe_pb2.NetParameter()
        text_format.Parse("layer {" + chunk, msg)
        out.append(text_format.MessageToString(msg))
    return "".join(out)


CAFFE_PYTHON = os.environ.get("CONVNET_CAFFE_PYTHON")


@pytest.mark.skipif(not CAFFE_PYTHON, reason="set CONVNET_CAFFE_PYTHON to a Python with BVLC pycaffe")
def test_netspec_text_matches_real_pycaffe():
    script = "import caffe\nfrom caffe import layers as L, params as P\n" + LENET
    real = subprocess.run([CAFFE_PYTHON, "-c", script], capture_output=True, text=True, check=True,
                          env={**os.environ, "GLOG_minloglevel": "2"}).stdout
    ours = run_lenet_netspec()
    assert [line.split(":")[0] for line in real.splitlines()] == [line.split(":")[0] for line in ours.splitlines()]
    assert _float_fields_as_doubles(real) == _float_fields_as_doubles(ours)
