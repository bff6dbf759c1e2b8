"""Phase and NetStateRule filtering, as Caffe's ``Net::FilterNet`` / ``Net::StateMeetsRule`` do it.

Reference (BVLC/caffe, src/caffe/net.cpp):

* ``Net(param_file, phase, level, stages)`` sets ``state.phase = phase`` (the requested phase
  overrides the file's ``state { phase }``), *appends* the requested stages to the file's
  ``state { stage }`` and sets ``state.level``.
* ``FilterNet``: a layer with both include and exclude rules is a fatal error ("Specify either
  include rules or exclude rules; not both."); with no include rules a layer is kept unless some
  exclude rule is met; with include rules it is kept when *any* include rule is met.
* ``StateMeetsRule``: a rule is met when its phase (if set) equals the state's, the state's level
  is within ``[min_level, max_level]`` (each only if set), the state has *all* of the rule's
  ``stage`` values and *none* of its ``not_stage`` values. An empty rule is always met.

The ``FilterNetTest`` cases of src/caffe/test/test_net.cpp are ported below (``test_caffe_*``):
each filters the same layer list and checks which layer names survive, and that filtering is
idempotent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from convnet_io.caffe.builder import build_graph
from convnet_io.errors import ConvnetError, LayerError
from convnet_io.caffe.netstate import NetState, filter_layers, layer_included, state_for, state_meets_rule
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.caffe.prototxt import parse_net_text

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"


# -- helpers -----------------------------------------------------------------------------------------

def rule(text: str = "") -> caffe_pb2.NetStateRule:
    from google.protobuf import text_format

    return text_format.Parse(text, caffe_pb2.NetStateRule())


def caffe_filter(text: str) -> list[str]:
    """Caffe's static ``Net::FilterNet(param)``: the net's own ``state`` decides (phase default
    TEST). Returns the names of the kept layers, and checks idempotence as Caffe's test does."""
    net = parse_net_text(text, "<filter-test>")
    phase = caffe_pb2.Phase.Name(net.state.phase)
    state = state_for(net, phase)
    kept = filter_layers(net, state)
    again = caffe_pb2.NetParameter()
    again.CopyFrom(net)
    del again.layer[:]
    for layer in kept:
        again.layer.add().CopyFrom(layer)
    assert [l.name for l in filter_layers(again, state_for(again, phase))] == [l.name for l in kept]
    return [l.name for l in kept]


def names(graph) -> list[str]:
    return [n.name for n in graph.nodes]


# The three-layer net Caffe's FilterNetTest uses throughout; rules are spliced into each layer.
def three_layers(data: str = "", innerprod: str = "", loss: str = "", state: str = "") -> str:
    head = f"state: {{ {state} }} " if state else ""
    return head + f"""
name: 'TestNetwork'
layer {{ name: 'data' type: 'Data' top: 'data' top: 'label' {data} }}
layer {{ name: 'innerprod' type: 'InnerProduct' bottom: 'data' top: 'innerprod' {innerprod} }}
layer {{ name: 'loss' type: 'SoftmaxWithLoss' bottom: 'innerprod' bottom: 'label' {loss} }}
"""


ALL = ["data", "innerprod", "loss"]


# -- ported from Caffe's FilterNetTest (src/caffe/test/test_net.cpp) ---------------------------------

def test_caffe_no_filter():
    assert caffe_filter(three_layers()) == ALL


LENET = """
name: 'LeNet'
layer { name: 'mnist' type: 'Data' top: 'data' top: 'label'
        data_param { source: 'mnist-train-leveldb' batch_size: 64 }
        transform_param { scale: 0.00390625 } include: { phase: TRAIN } }
layer { name: 'mnist' type: 'Data' top: 'data' top: 'label'
        data_param { source: 'mnist-test-leveldb' batch_size: 100 }
        transform_param { scale: 0.00390625 } include: { phase: TEST } }
layer { name: 'conv1' type: 'Convolution' bottom: 'data' top: 'conv1'
        convolution_param { num_output: 20 kernel_size: 5 stride: 1 } }
layer { name: 'ip1' type: 'InnerProduct' bottom: 'conv1' top: 'ip1'
        inner_product_param { num_output: 10 } }
layer { name: 'accuracy' type: 'Accuracy' bottom: 'ip1' bottom: 'label' top: 'accuracy'
        include: { phase: TEST } }
layer { name: 'loss' type: 'SoftmaxWithLoss' bottom: 'ip2' bottom: 'label' top: 'loss' }
"""


def test_caffe_filter_lenet_train_test():
    for phase, source in (("TRAIN", "mnist-train-leveldb"), ("TEST", "mnist-test-leveldb")):
        net = parse_net_text(f"state: {{ phase: {phase} }} " + LENET)
        kept = filter_layers(net, state_for(net, phase))
        assert [l.name for l in kept] == (["mnist", "conv1", "ip1", "loss"] if phase == "TRAIN"
                                          else ["mnist", "conv1", "ip1", "accuracy", "loss"])
        assert kept[0].data_param.source == source
        assert caffe_filter(f"state: {{ phase: {phase} }} " + LENET) == [l.name for l in kept]


def test_caffe_filter_out_by_stage():
    assert caffe_filter(three_layers(data="include: { stage: 'mystage' }")) == ["innerprod", "loss"]
    assert caffe_filter(three_layers(innerprod="include: { stage: 'mystage' }")) == ["data", "loss"]


def test_caffe_filter_in_by_stage():
    assert caffe_filter(three_layers(innerprod="include: { stage: 'mystage' }",
                                     state="stage: 'mystage'")) == ALL
    # TestFilterInByStage2: an exclude on a stage the state lacks keeps the layer
    assert caffe_filter(three_layers(innerprod="exclude: { stage: 'mystage' }")) == ALL


def test_caffe_filter_out_by_multiple_stage():
    # one rule listing two stages: the state must have both
    text = three_layers(innerprod="include: { stage: 'mystage' stage: 'myotherstage' }",
                        loss="include: { stage: 'mystage' }", state="stage: 'mystage'")
    assert caffe_filter(text) == ["data", "loss"]


def test_caffe_filter_in_by_multiple_stage():
    # two include rules: either one suffices
    text = three_layers(innerprod="include: { stage: 'myotherstage' } include: { stage: 'mystage' }",
                        loss="include: { stage: 'mystage' }", state="stage: 'mystage'")
    assert caffe_filter(text) == ALL
    # TestFilterInByMultipleStage2: the state has both stages
    text = three_layers(innerprod="include: { stage: 'mystage' stage: 'myotherstage' }",
                        loss="include: { stage: 'mystage' }",
                        state="stage: 'mystage' stage: 'myotherstage'")
    assert caffe_filter(text) == ALL


def test_caffe_filter_by_not_stage():
    text = three_layers(innerprod="include: { not_stage: 'myotherstage' }",
                        loss="include: { not_stage: 'myotherstage' }", state="stage: 'mystage'")
    assert caffe_filter(text) == ALL
    text = three_layers(innerprod="include: { not_stage: 'mystage' }",
                        loss="include: { not_stage: 'mystage' }", state="stage: 'mystage'")
    assert caffe_filter(text) == ["data"]


def test_caffe_filter_by_level():
    assert caffe_filter(three_layers(innerprod="include: { min_level: 3 }")) == ["data", "loss"]
    assert caffe_filter(three_layers(innerprod="include: { max_level: -3 }")) == ["data", "loss"]
    assert caffe_filter(three_layers(innerprod="include: { min_level: 0 }")) == ALL
    assert caffe_filter(three_layers(innerprod="include: { min_level: 3 }", state="level: 7")) == ALL
    assert caffe_filter(three_layers(innerprod="include: { max_level: 0 }")) == ALL
    assert caffe_filter(three_layers(innerprod="include: { max_level: -3 }", state="level: -7")) == ALL


def test_caffe_filter_in_out_by_include_multi_rule():
    layers = dict(innerprod="include: { min_level: 2  phase: TRAIN }",
                  loss="include: { min_level: 2  phase: TEST }")
    assert caffe_filter(three_layers(**layers, state="level: 4 phase: TRAIN")) == ["data", "innerprod"]
    assert caffe_filter(three_layers(**layers, state="level: 4 phase: TEST")) == ["data", "loss"]


def test_caffe_filter_in_by_include_multi_rule():
    layers = dict(innerprod="include: { min_level: 2  phase: TRAIN } include: { phase: TEST }",
                  loss="include: { min_level: 2  phase: TEST } include: { phase: TRAIN }")
    assert caffe_filter(three_layers(**layers, state="level: 2 phase: TRAIN")) == ALL
    assert caffe_filter(three_layers(**layers, state="level: 2 phase: TEST")) == ALL


def test_caffe_filter_in_out_by_exclude_multi_rule():
    layers = dict(innerprod="exclude: { min_level: 2  phase: TRAIN }",
                  loss="exclude: { min_level: 2  phase: TEST }")
    assert caffe_filter(three_layers(**layers, state="level: 4 phase: TRAIN")) == ["data", "loss"]
    assert caffe_filter(three_layers(**layers, state="level: 4 phase: TEST")) == ["data", "innerprod"]


# -- StateMeetsRule, rule by rule --------------------------------------------------------------------

@pytest.mark.parametrize("text, state, met", [
    ("", NetState("TEST"), True),  # an empty rule is always met
    ("", NetState("TRAIN", 5, ("a",)), True),
    ("phase: TRAIN", NetState("TRAIN"), True),
    ("phase: TRAIN", NetState("TEST"), False),
    ("phase: TEST", NetState("TEST"), True),
    ("min_level: 2", NetState("TEST", 2), True),  # bounds are inclusive
    ("min_level: 2", NetState("TEST", 1), False),
    ("max_level: 2", NetState("TEST", 2), True),
    ("max_level: 2", NetState("TEST", 3), False),
    ("min_level: 1 max_level: 3", NetState("TEST", 0), False),
    ("min_level: 1 max_level: 3", NetState("TEST", 2), True),
    ("min_level: 1 max_level: 3", NetState("TEST", 4), False),
    ("min_level: 0", NetState("TEST", -1), False),  # a set min_level of 0 still counts
    ("max_level: 0", NetState("TEST", 1), False),
    ("stage: 'a'", NetState("TEST", 0, ("a", "b")), True),
    ("stage: 'a' stage: 'b'", NetState("TEST", 0, ("a",)), False),  # all stages are needed
    ("stage: 'a' stage: 'b'", NetState("TEST", 0, ("b", "a")), True),
    ("stage: 'A'", NetState("TEST", 0, ("a",)), False),  # stage names are case-sensitive
    ("not_stage: 'a'", NetState("TEST"), True),
    ("not_stage: 'a'", NetState("TEST", 0, ("b", "a")), False),
    ("not_stage: 'a' not_stage: 'b'", NetState("TEST", 0, ("b",)), False),  # none may be present
    ("stage: 'a' not_stage: 'b'", NetState("TEST", 0, ("a",)), True),
    ("stage: 'a' not_stage: 'b'", NetState("TEST", 0, ("a", "b")), False),
    ("phase: TRAIN min_level: 1 stage: 'x'", NetState("TRAIN", 1, ("x",)), True),
    ("phase: TRAIN min_level: 1 stage: 'x'", NetState("TEST", 1, ("x",)), False),
    ("phase: TRAIN min_level: 1 stage: 'x'", NetState("TRAIN", 0, ("x",)), False),
    ("phase: TRAIN min_level: 1 stage: 'x'", NetState("TRAIN", 1, ()), False),
])
def test_state_meets_rule(text, state, met):
    assert state_meets_rule(state, rule(text)) is met


def _layer(text: str) -> caffe_pb2.LayerParameter:
    from google.protobuf import text_format

    return text_format.Parse(text, caffe_pb2.LayerParameter())


def test_layer_included_include_exclude_and_defaults():
    train, test = NetState("TRAIN"), NetState("TEST")
    plain = _layer("name: 'x' type: 'ReLU'")
    assert layer_included(plain, train) and layer_included(plain, test)
    only_train = _layer("name: 'x' type: 'ReLU' include { phase: TRAIN }")
    assert layer_included(only_train, train) and not layer_included(only_train, test)
    not_train = _layer("name: 'x' type: 'ReLU' exclude { phase: TRAIN }")
    assert not layer_included(not_train, train) and layer_included(not_train, test)
    # an empty include rule is always met, an empty exclude rule always removes the layer
    assert layer_included(_layer("name: 'x' type: 'ReLU' include {}"), test)
    assert not layer_included(_layer("name: 'x' type: 'ReLU' exclude {}"), test)
    # two exclude rules: meeting either one removes it
    two_ex = _layer("name: 'x' type: 'ReLU' exclude { phase: TRAIN } exclude { stage: 's' }")
    assert not layer_included(two_ex, NetState("TEST", 0, ("s",)))
    assert layer_included(two_ex, NetState("TEST", 0, ("t",)))


def test_include_and_exclude_together_is_an_error():
    both = _layer("name: 'confused' type: 'ReLU' include { phase: TRAIN } exclude { phase: TEST }")
    with pytest.raises(LayerError, match="confused"):
        layer_included(both, NetState("TRAIN"))
    # also when no rule would be met, and from filter_layers / build_graph (Caffe CHECKs every layer)
    with pytest.raises(LayerError):
        layer_included(both, NetState("TEST", 3, ("x",)))
    net = parse_net_text(three_layers(innerprod="include { stage: 'a' } exclude { stage: 'b' }"))
    with pytest.raises(LayerError, match="innerprod"):
        filter_layers(net, state_for(net, "TEST"))
    with pytest.raises(ConvnetError, match="include .*exclude|exclude .*include"):
        build_graph(parse_net_text(INPUT + """
            layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r'
                    include { phase: TEST } exclude { phase: TRAIN } }"""), phase="TEST")


# -- state_for: the net's own state combined with what is asked for ---------------------------------

def test_state_for_phase_overrides_the_nets_own():
    net = parse_net_text("state { phase: TRAIN level: 2 stage: 'own' } name: 'n'")
    assert state_for(net, "TEST") == NetState("TEST", 2, ("own",))
    assert state_for(net, "train").phase == "TRAIN"  # case-insensitive
    with pytest.raises(ValueError):
        state_for(net, "VAL")


def test_state_for_adds_stages_and_sets_level():
    net = parse_net_text("state { level: 2 stage: 'own' } name: 'n'")
    st = state_for(net, "TEST", stages=("extra",))
    assert set(st.stages) == {"own", "extra"}  # Caffe: add_stage, the file's stages stay
    assert st.level == 2  # no level asked for: the file's (as a solver's train_state merge leaves it)
    assert state_for(net, "TEST", level=5).level == 5  # Caffe: set_level(level) overrides
    assert state_for(net, "TEST", level=0).level == 0  # 0 is a level too, not "unset"
    bare = parse_net_text("name: 'n'")
    assert state_for(bare, "TRAIN") == NetState("TRAIN", 0, ())


# -- through build_graph -----------------------------------------------------------------------------

INPUT = "layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 2 dim: 3 } } }\n"


def _relu(name: str, rules: str = "") -> str:
    return f"layer {{ name: '{name}' type: 'ReLU' bottom: 'data' top: '{name}' {rules} }}\n"


def test_build_graph_phase_filtering():
    net = parse_net_text(INPUT + _relu("both") + _relu("tr", "include { phase: TRAIN }")
                         + _relu("te", "include { phase: TEST }") + _relu("not_tr", "exclude { phase: TRAIN }"))
    g_train = build_graph(net, phase="TRAIN")
    g_test = build_graph(net, phase="TEST")
    assert names(g_train) == ["data", "both", "tr"]
    assert names(g_test) == ["data", "both", "te", "not_tr"]
    assert g_train.phase == "TRAIN" and g_test.phase == "TEST"
    assert names(build_graph(net)) == names(g_test)  # TEST is the default, as in Caffe's NetState


def test_build_graph_requested_phase_overrides_state_phase():
    net = parse_net_text("state { phase: TRAIN }\n" + INPUT + _relu("tr", "include { phase: TRAIN }")
                         + _relu("te", "include { phase: TEST }"))
    g = build_graph(net, phase="TEST")
    assert g.phase == "TEST" and names(g) == ["data", "te"]
    assert names(build_graph(net, phase="TRAIN")) == ["data", "tr"]


def test_build_graph_stages_and_not_stages():
    net = parse_net_text(INPUT + _relu("deploy_only", "include { stage: 'deploy' }")
                         + _relu("not_deploy", "include { not_stage: 'deploy' }")
                         + _relu("a_and_b", "include { stage: 'a' stage: 'b' }")
                         + _relu("a_or_b", "include { stage: 'a' } include { stage: 'b' }")
                         + _relu("excl_a", "exclude { stage: 'a' }"))
    assert names(build_graph(net)) == ["data", "not_deploy", "excl_a"]
    assert names(build_graph(net, stages=["deploy"])) == ["data", "deploy_only", "excl_a"]
    assert names(build_graph(net, stages=("a",))) == ["data", "not_deploy", "a_or_b"]
    assert names(build_graph(net, stages=("b",))) == ["data", "not_deploy", "a_or_b", "excl_a"]
    assert names(build_graph(net, stages=("a", "b"))) == ["data", "not_deploy", "a_and_b", "a_or_b"]
    # stages may be any iterable (a generator too)
    assert names(build_graph(net, stages=(s for s in ["b", "a"]))) == ["data", "not_deploy", "a_and_b", "a_or_b"]


def test_build_graph_stages_add_to_the_nets_own():
    net = parse_net_text("state { stage: 'a' }\n" + INPUT
                         + _relu("a_and_b", "include { stage: 'a' stage: 'b' }")
                         + _relu("only_a", "include { stage: 'a' not_stage: 'b' }"))
    assert names(build_graph(net)) == ["data", "only_a"]
    assert names(build_graph(net, stages=["b"])) == ["data", "a_and_b"]


def test_build_graph_levels():
    net = parse_net_text(INPUT + _relu("ge2", "include { min_level: 2 }")
                         + _relu("le0", "include { max_level: 0 }")
                         + _relu("in1_3", "include { min_level: 1 max_level: 3 }"))
    assert names(build_graph(net)) == ["data", "le0"]
    assert names(build_graph(net, level=1)) == ["data", "in1_3"]
    assert names(build_graph(net, level=2)) == ["data", "ge2", "in1_3"]
    assert names(build_graph(net, level=4)) == ["data", "ge2"]
    assert names(build_graph(net, level=-1)) == ["data", "le0"]
    own = parse_net_text("state { level: 2 }\n" + INPUT + _relu("ge2", "include { min_level: 2 }"))
    assert names(build_graph(own)) == ["data", "ge2"]
    assert names(build_graph(own, level=0)) == ["data"]


def test_build_graph_same_name_in_two_phases_is_not_a_duplicate():
    # train_val files name both data layers "data": only one survives filtering
    net = parse_net_text("""
        layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 4 dim: 3 } }
                include { phase: TRAIN } }
        layer { name: 'data' type: 'Input' top: 'data' input_param { shape { dim: 1 dim: 3 } }
                include { phase: TEST } }
        layer { name: 'r' type: 'ReLU' bottom: 'data' top: 'r' }""")
    g_train, g_test = build_graph(net, phase="TRAIN"), build_graph(net, phase="TEST")
    assert g_train.shapes[g_train.final_value("r")] == (4, 3)
    assert g_test.shapes[g_test.final_value("r")] == (1, 3)


def test_build_graph_filtered_out_producer_leaves_a_dangling_bottom():
    net = parse_net_text(INPUT + "layer { name: 'p' type: 'ReLU' bottom: 'data' top: 'p' "
                         "include { phase: TRAIN } }\n"
                         "layer { name: 'q' type: 'ReLU' bottom: 'p' top: 'q' }")
    assert names(build_graph(net, phase="TRAIN")) == ["data", "p", "q"]
    with pytest.raises(LayerError, match="'q'.*'p'"):
        build_graph(net, phase="TEST")


# -- the BVLC model zoo's train_val files ------------------------------------------------------------

def _zoo(model: str) -> Path:
    path = MODELS / model / "train_val.prototxt"
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def _read(path: Path):
    from convnet_io.caffe.prototxt import read_net

    return read_net(path)[0]


def test_alexnet_train_val_phases():
    net = _read(_zoo("bvlc_alexnet"))
    g_train, g_test = build_graph(net, phase="TRAIN"), build_graph(net, phase="TEST")
    for g, source, batch, mirror in ((g_train, "ilsvrc12_train_lmdb", 256, True),
                                     (g_test, "ilsvrc12_val_lmdb", 50, False)):
        data = [n for n in g.nodes if n.type == "Data"]
        assert len(data) == 1 and data[0].name == "data"
        assert data[0].attrs.source.endswith(source)
        assert data[0].attrs.batch_size == batch
        assert data[0].attrs.transform.mirror is mirror
        assert [n.name for n in g.nodes if n.type == "SoftmaxWithLoss"] == ["loss"]
    assert [n.name for n in g_test.nodes if n.type == "Accuracy"] == ["accuracy"]
    assert not [n for n in g_train.nodes if n.type == "Accuracy"]
    # everything else is common to both phases
    assert [n for n in names(g_train)] == [n for n in names(g_test) if n != "accuracy"]


def test_googlenet_train_val_losses_per_phase():
    net = _read(_zoo("bvlc_googlenet"))
    g_train, g_test = build_graph(net, phase="TRAIN"), build_graph(net, phase="TEST")
    losses = ["loss1/loss", "loss2/loss", "loss3/loss3"]
    for g in (g_train, g_test):
        found = [n for n in g.nodes if n.type == "SoftmaxWithLoss"]
        assert [n.name for n in found] == losses
        assert [round(n.loss_weights[0], 6) for n in found] == [0.3, 0.3, 1.0]
    assert not [n for n in g_train.nodes if n.type == "Accuracy"]
    assert [n.name for n in g_test.nodes if n.type == "Accuracy"] == [
        "loss1/top-1", "loss1/top-5", "loss2/top-1", "loss2/top-5", "loss3/top-1", "loss3/top-5"]
    tops = {n.name: n.attrs.top_k for n in g_test.nodes if n.type == "Accuracy"}
    assert {k: v for k, v in tops.items()} == {
        f"loss{i}/top-{k}": k for i in (1, 2, 3) for k in (1, 5)}
    data_train = [n for n in g_train.nodes if n.type == "Data"]
    data_test = [n for n in g_test.nodes if n.type == "Data"]
    assert len(data_train) == len(data_test) == 1
    assert data_train[0].attrs.source.endswith("train_lmdb")
    assert data_test[0].attrs.source.endswith("val_lmdb")


# -- the data feeder's shape probe filters layers with the same state as build_graph ----------------

def _hdf5_stage_net(tmp_path: Path, rules_a: str, rules_b: str):
    """Two HDF5Data layers writing the same tops: 'a' reads a real 2x3x4x5 file, 'b' a list file
    that does not exist (probing it fails), each kept by its own rules."""
    h5py = pytest.importorskip("h5py")
    import numpy as np

    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["data"] = np.zeros((2, 3, 4, 5), np.float32)
        f["label"] = np.zeros((2,), np.float32)
    (tmp_path / "a.txt").write_text(f"{tmp_path / 'a.h5'}\n")
    return parse_net_text(f"""
        layer {{ name: 'a' type: 'HDF5Data' top: 'data' top: 'label'
                 hdf5_data_param {{ source: '{tmp_path / "a.txt"}' batch_size: 2 }} {rules_a} }}
        layer {{ name: 'b' type: 'HDF5Data' top: 'data' top: 'label'
                 hdf5_data_param {{ source: '{tmp_path / "missing.txt"}' batch_size: 7 }} {rules_b} }}
    """)


def test_probe_source_shapes_honours_stages(tmp_path):
    """BUG: ``convnet_io.data.probe.probe_source_shapes(net, phase, stages=..., level=...)`` takes
    stages and level but filters with ``state_for(net, phase)``, dropping them. The trainer calls it
    with the solver's ``train_state``/``test_state`` stages and level, so it probes the layers of
    the wrong state: here it opens layer 'b' (``not_stage: 'a'``) although stage 'a' is asked for."""
    from convnet_io.data import probe_source_shapes

    net = _hdf5_stage_net(tmp_path, "include { stage: 'a' }", "include { not_stage: 'a' }")
    assert [l.name for l in filter_layers(net, state_for(net, "TRAIN", stages=("a",)))] == ["a"]
    assert probe_source_shapes(net, "TRAIN", stages=("a",)) == {"data": (2, 3, 4, 5), "label": (2,)}


def test_probe_source_shapes_honours_level(tmp_path):
    """BUG (same cause): ``level`` is ignored by ``probe_source_shapes`` too."""
    from convnet_io.data import probe_source_shapes

    net = _hdf5_stage_net(tmp_path, "include { min_level: 1 }", "include { max_level: 0 }")
    assert probe_source_shapes(net, "TRAIN", level=1) == {"data": (2, 3, 4, 5), "label": (2,)}
