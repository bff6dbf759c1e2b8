"""Initial weights for a graph: the prototxt's fillers, or a sound default where it names none."""
from __future__ import annotations

import math

import numpy as np

from convnet_io.graph.fillers import fill
from convnet_io.graph.ir import Filler, Graph, ParamSpec


def default_filler(spec: ParamSpec, index: int) -> Filler:
    """For blobs with no filler (deploy nets): fan-in-scaled Gaussian weights (He et al., suited to
    ReLU nets, so activations stay of order one through depth) and small random biases."""
    if index == 0 and len(spec.shape) >= 2:
        fan_in = max(spec.count // spec.shape[0], 1)
        return Filler(type="gaussian", std=math.sqrt(2.0 / fan_in))
    return Filler(type="uniform", min=-0.05, max=0.05)


def initial_blobs(graph: Graph, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """Learnable blobs for every layer, filled reproducibly from ``seed``.

    BatchNorm statistics come out as zeros here; ``convnet_io.torch_model.calibrate`` sets them
    from a forward pass so that activations keep unit scale.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {}
    for node in graph.nodes:
        if not node.params:
            continue
        blobs = []
        # A layer that names some fillers gets Caffe's default (constant 0) for the others; only
        # a layer that names none (a deploy net) gets the fan-in default.
        names_fillers = any(spec.filler is not None for spec in node.params)
        for i, spec in enumerate(node.params):
            if spec.filler is not None:
                f = spec.filler
            else:
                f = Filler() if names_fillers else default_filler(spec, i)
            try:
                blobs.append(fill(f, spec.shape, rng))
            except ValueError as e:
                from convnet_io.errors import LayerError

                raise LayerError(node.name, f"blob {i}: {e}", node.type) from None
        out[node.name] = blobs
    return out
