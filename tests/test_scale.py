"""Building scales linearly: a long chain of layers and a huge single-line name are read in time
proportional to their size (CPU time is measured: the machine may be shared)."""
from __future__ import annotations

import time

import pytest

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.prototxt import read_net


def _chain(n: int) -> str:
    lines = ['name: "chain"\nlayer { name: "data" type: "Input" top: "r0" input_param { shape { dim: 1 dim: 4 } } }']
    lines += [f'layer {{ name: "relu{i}" type: "ReLU" bottom: "r{i - 1}" top: "r{i}" }}' for i in range(1, n)]
    return "\n".join(lines) + "\n"


def _cpu_build(path) -> tuple[float, object]:
    t0 = time.process_time()
    net, _ = read_net(path)
    graph = build_graph(net, source_path=str(path))
    return time.process_time() - t0, graph


def test_a_10k_layer_chain_builds_in_linear_time(tmp_path):
    small, large = tmp_path / "s.prototxt", tmp_path / "l.prototxt"
    small.write_text(_chain(2_500))
    large.write_text(_chain(10_000))
    t_small, _ = _cpu_build(small)
    t_large, graph = _cpu_build(large)
    assert len(graph.nodes) == 10_000 and graph.outputs == ["r9999"]
    assert graph.node("relu1234").tops == ["r1234"] and graph.producer("r9999").name == "relu9999"
    # protobuf's own text parser alone took ~0.3 ms per layer (3 s here); quadratic lookups grow 16x
    assert t_large < 2.0, t_large
    assert t_large < 8 * max(t_small, 0.05), (t_small, t_large)


def test_a_50_mb_single_line_layer_name_is_read_quickly(tmp_path):
    name = "x" * (50 * 2**20)
    p = tmp_path / "long.prototxt"
    p.write_text('layer { name: "in" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }\n'
                 f'layer {{ name: "{name}" type: "ReLU" bottom: "data" top: "r" }}\n')
    t, graph = _cpu_build(p)
    assert graph.nodes[1].name == name
    assert t < 10.0, t  # was 50 s


# -- the compact reading load_graph uses: the same graph and the same errors as the NetParameter --

_MIXED_HEAD = '''name: "mixed"
# a comment long enough to take the large-net path: ''' + "x" * 70_000 + '''
layer { name: "data" type: "Input" top: "data" top: "label" input_param { shape { dim: 2 dim: 3 } shape { dim: 2 } } }
'''


def _mixed(body: str) -> str:
    return _MIXED_HEAD + body


_MIXED_BODY = '''layer { name: "r1" type: "ReLU" bottom: "data" top: "r1" }
layer { name: "r1i" type: "ReLU" bottom: "r1" top: "r1" }
layer {
  name: "r2"
  type: "Sigmoid"
  bottom: "r1"
  top: "r2"
}
layer { name: "cat" type: "Concat" bottom: "r1" bottom: "r2" top: "cat" }
layer { type: "ReLU" name: "swapped" bottom: "cat" top: "swapped" }
layer { name: "tr" type: "ReLU" bottom: "swapped" top: "tr" include { phase: TRAIN } }
layer { name: "r1" type: "TanH" bottom: "swapped" top: "dup" }
layer { name: "ip" type: "InnerProduct" bottom: "dup" top: "ip" inner_product_param { num_output: 5 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" }
layer { name: "bn" type: "BatchNorm" bottom: "ip" top: "bn" }
layer { name: "eloss" type: "EuclideanLoss" bottom: "bn" top: "el" bottom: "ip" }
layer { name: "é" type: "ReLU" bottom: "bn" top: "bn" }
'''


def _graphs_agree(text: str, tmp_path, **kw):
    from convnet_io.api import load_graph
    from convnet_io.caffe.plain_net import PlainNet
    from convnet_io.caffe.prototxt import parse_net_text

    p = tmp_path / "m.prototxt"
    p.write_text(text)
    assert isinstance(parse_net_text(text, compact=True), PlainNet)
    full = build_graph(parse_net_text(text), source_path=str(p), **kw)
    compact = load_graph(p, **kw)
    assert compact.nodes == full.nodes
    assert (compact.shapes, compact.blob_of, compact.notices) == (full.shapes, full.blob_of, full.notices)
    return compact


def test_compact_reading_builds_the_same_graph(tmp_path):
    for phase in ("TEST", "TRAIN"):
        g = _graphs_agree(_mixed(_MIXED_BODY), tmp_path, phase=phase)
        assert [n.name for n in g.nodes][:3] == ["data", "r1", "r1i"] and g.node("r1i").tops == ["r1:1"]
        assert ("tr" in [n.name for n in g.nodes]) == (phase == "TRAIN")
        assert g.node("r1_1").caffe_name == "r1" and g.node("loss").tops == ["loss(automatic)"]


def test_compact_reading_gives_the_same_errors(tmp_path):
    from convnet_io.api import load_graph
    from convnet_io.caffe.prototxt import parse_net_text
    from convnet_io.errors import ConvnetError

    bad = [
        'layer { name: "a" type: "ReLU" bottom: "nowhere" top: "a" }\n',
        'layer { name: "a" type: "ReLU" bottom: "b" top: "a" }\nlayer { name: "b" type: "ReLU" bottom: "data" top: "b" }\n',
        ('layer { name: "a" type: "Nope" bottom: "data" top: "a" }\nlayer { name: "b" type: "ReLU" bottom: "x" top: "b" }\n'
         'layer { name: "c" type: "ReLU" bottom: "data" top: "x" }\n'),
        ('layer { name: "a" type: "Nope" bottom: "data" top: "a" }\n'
         'layer { name: "b" type: "ReLU" bottom: "data" top: "b" include { phase: TEST } exclude { phase: TRAIN } }\n'),
        'layer { name: "a" type: "ReLU" bottom: "data" top: "a" }\nlayer { name: "b" type: "ReLU" bottom: "a" top: "data" }\n',
        'layer { name: "a" type: "Convolution" bottom: "data" top: "a" }\n',
    ]
    for i, body in enumerate(bad):
        p = tmp_path / f"bad{i}.prototxt"
        p.write_text(_mixed(body))
        with pytest.raises(ConvnetError) as want:
            build_graph(parse_net_text(_mixed(body)), source_path=str(p))
        with pytest.raises(ConvnetError) as got:
            load_graph(p)
        assert str(got.value) == str(want.value), body


def test_a_net_needing_an_upgrade_is_read_whole(tmp_path):
    from convnet_io.caffe.prototxt import parse_net_text

    text = 'input: "data" input_dim: 1 input_dim: 3 input_dim: 2 input_dim: 2\n' + "#" + "x" * 70_000 + "\n" + \
        "".join(f'layer {{ name: "r{i}" type: "ReLU" bottom: "{"data" if i == 0 else f"r{i - 1}"}" top: "r{i}" }}\n'
                for i in range(3))
    net = parse_net_text(text, compact=True)
    assert net.DESCRIPTOR.full_name == "caffe.NetParameter"
    g = _graphs_agree(text.replace('input: "data" input_dim: 1 input_dim: 3 input_dim: 2 input_dim: 2\n',
                                   'layer { name: "input" type: "Input" top: "data" '
                                   'input_param { shape { dim: 1 dim: 3 dim: 2 dim: 2 } } }\n'), tmp_path)
    assert g.outputs == ["r2"]


_MEASURE = r'''
import json, resource, sys, time
from convnet_io.api import load_graph
def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()
base = rss_now()
times = {}
for path in sys.argv[1:]:
    t0 = time.process_time()
    g = load_graph(path)
    times[path] = time.process_time() - t0
    n = len(g.nodes)
    del g
with open("/proc/self/status") as f:  # this process's own peak (ru_maxrss may be the parent's)
    peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
print(json.dumps({"times": times, "base": base, "peak": peak}))
'''


def _in_place_chain(n: int) -> str:
    lines = ['name: "inplace"\nlayer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 dim: 4 } } }']
    lines += [f'layer {{ name: "relu{i}" type: "ReLU" bottom: "x" top: "x" }}' for i in range(1, n)]
    return "\n".join(lines) + "\n"


def test_a_100k_layer_in_place_chain_builds_in_linear_time_and_memory(tmp_path):
    """load_graph (what `convnet build` runs) on 25k and 100k in-place ReLUs, in a fresh process:
    CPU time grows by about the size ratio and the peak memory per layer stays bounded (the
    NetParameter alone would hold 850 bytes per layer; a 700k net must fit in 1 GB)."""
    import json
    import subprocess
    import sys

    small, large = tmp_path / "s.prototxt", tmp_path / "l.prototxt"
    small.write_text(_in_place_chain(25_000))
    large.write_text(_in_place_chain(100_000))
    out = subprocess.run([sys.executable, "-c", _MEASURE, str(small), str(large)], capture_output=True, text=True,
                         check=True).stdout
    m = json.loads(out)
    t_small, t_large = m["times"][str(small)], m["times"][str(large)]
    per_layer = (m["peak"] - m["base"]) / 100_000
    assert t_large < 4.0, t_large  # about 1 s on a quiet machine
    assert t_large < 8 * max(t_small, 0.05), (t_small, t_large)
    assert per_layer < 1_200, per_layer  # about 750 bytes: a 700k-layer net in well under 1 GB


def test_the_table_of_a_huge_net_shows_both_ends(tmp_path):
    from convnet_io.api import load_graph
    from convnet_io.graph.summary import SHOWN_ROWS, TABLE_ROWS, format_table, summarize

    p = tmp_path / "c.prototxt"
    p.write_text(_chain(TABLE_ROWS + 5))
    g = load_graph(p)
    short = summarize(g, all_rows=False)
    full = summarize(g)
    assert len(full["layers"]) == TABLE_ROWS + 5 and len(short["layers"]) == 2 * SHOWN_ROWS
    assert {k: full[k] for k in ("total_params", "total_macs", "output_shapes")} == \
        {k: short[k] for k in ("total_params", "total_macs", "output_shapes")}
    table = format_table(short)
    assert table == format_table(full)
    lines = table.splitlines()
    assert len(lines) == 3 + 2 * SHOWN_ROWS + 1 + 4
    assert lines[3 + SHOWN_ROWS] == f"... {TABLE_ROWS + 5 - 2 * SHOWN_ROWS:,} more layers ..."
    assert f"layers: {TABLE_ROWS + 5:,} (ReLU {TABLE_ROWS + 4:,}, Input 1)" in table
    assert lines[-1] == f"outputs: r{TABLE_ROWS + 4} 1×4"


def test_every_seed_net_builds_the_same_through_the_large_net_paths(monkeypatch):
    """Every prototxt of the repository and of ../shared/caffe-models, read as if it were huge
    (the wire-bytes path and the PlainNet path) builds the graph, or raises the error, that
    protobuf's own parser gives, in both phases."""
    from pathlib import Path

    from convnet_io.caffe import prototxt
    from convnet_io.caffe.plain_net import PlainNet
    from convnet_io.caffe.upgrade import upgrade_net
    from convnet_io.errors import ConvnetError
    from convnet_io.graph import Graph

    root = Path(__file__).resolve().parent.parent
    files = sorted([*root.glob("prototxt/**/*.prototxt"), *root.glob("tests/**/*.prototxt"),
                    *(root.parent / "shared" / "caffe-models").glob("**/*.prototxt")])
    assert len(files) > 20
    plain = 0
    for f in files:
        text = f.read_text()
        for phase in ("TEST", "TRAIN"):
            got = {}
            for mode, fast_from, compact in (("protobuf", 10**12, False), ("wire", 0, False), ("plain", 0, True)):
                monkeypatch.setattr(prototxt, "_FAST_FROM", fast_from)
                try:
                    net = prototxt.parse_net_text(text, str(f), compact=compact)
                    if isinstance(net, PlainNet):
                        plain += 1
                    else:
                        upgrade_net(net)
                    g = build_graph(net, phase=phase, source_path=str(f))
                    got[mode] = (g.nodes, g.shapes, g.blob_of, g.notices, g.outputs)
                    assert g.outputs == Graph.outputs.func(g)  # the builder's equals the property's
                except (ConvnetError, ValueError) as e:
                    got[mode] = str(e)
            assert got["wire"] == got["protobuf"] and got["plain"] == got["protobuf"], (f, phase)
    assert plain > len(files) // 2
