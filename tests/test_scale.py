"""Building scales linearly: a long chain of layers and a huge single-line name are read in time
proportional to their size (CPU time is measured: the machine may be shared)."""
from __future__ import annotations

import time

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
