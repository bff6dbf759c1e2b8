"""Shared test utilities: build graphs and modules from prototxt snippets, NumPy comparisons."""
from __future__ import annotations

import numpy as np

from convnet_io.caffe.builder import build_graph
from convnet_io.caffe.prototxt import parse_net_text


def graph_from_text(text: str, phase: str = "TEST", input_shapes=None):
    """A Graph from NetParameter text (V2 layers; use an Input layer to give shapes)."""
    return build_graph(parse_net_text(text, "<test>"), phase=phase, input_shapes=input_shapes)


def input_layer(shape, top: str = "data") -> str:
    dims = " ".join(f"dim: {d}" for d in shape)
    return f'layer {{ name: "{top}" type: "Input" top: "{top}" input_param {{ shape {{ {dims} }} }} }}\n'


def module_from_text(text: str, phase: str = "TEST", seed: int = 0):
    """A CaffeModule from NetParameter text, its learnable blobs filled with seeded normal noise."""
    import torch

    from convnet_io.torch_model import CaffeModule

    graph = graph_from_text(text, phase)
    module = CaffeModule(graph)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for blobs in module.caffe_blobs().values():
            for b in blobs:
                b.copy_(torch.randn(b.shape, generator=gen, dtype=b.dtype))
    return graph, module


def run_single(text: str, inputs: dict, phase: str = "TEST", seed: int = 0):
    """Run a net snippet; return (graph, module, {value: float64 ndarray})."""
    import torch

    graph, module = module_from_text(text, phase, seed)
    feeds = {k: torch.as_tensor(np.asarray(v, dtype=np.float32)) for k, v in inputs.items()}
    with torch.no_grad():
        out = module.run(feeds, graph.values)
    return graph, module, {k: v.detach().double().numpy() for k, v in out.items()}


def rel_err(actual, expected) -> float:
    """max |a - e| / max(|e|, tiny): one number per blob, as the parity tests report it."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(np.abs(expected).max(initial=0.0), 1e-12)
    return float(np.abs(actual - expected).max(initial=0.0) / scale)
