"""Data-dependent BatchNorm statistics for freshly initialised nets."""
from __future__ import annotations

import torch

from convnet_io.torch_model.model import CaffeModule


@torch.no_grad()
def calibrate_batchnorm(module: CaffeModule, feeds: dict[str, torch.Tensor]) -> int:
    """Set every BatchNorm's mean/variance (scale factor 1) to the statistics of its own input on
    ``feeds``, layer by layer, so each normalises to zero mean and unit variance. Returns how many."""
    count = 0
    env = dict(feeds)
    was_training = module.training
    module.eval()
    # Only what some BatchNorm reads is run: a loss or accuracy layer fed random "labels" would
    # index out of range, and says nothing about the statistics anyway.
    needed: set[str] = set()
    wanted: set[int] = set()
    for node in reversed(module.graph.nodes):
        if node.type == "BatchNorm" or any(t in needed for t in node.tops):
            wanted.add(id(node))
            needed.update(node.bottoms)
    try:
        for node in module.graph.nodes:
            if node.is_source or id(node) not in wanted:
                continue
            layer = module.layer(node.name)
            bottoms = [env[b] for b in node.bottoms]
            if node.type == "BatchNorm":
                x = bottoms[0]
                dims = [d for d in range(x.dim()) if d != 1]
                mean, var, factor = layer.caffe_blobs()
                mean.copy_(x.mean(dim=dims))
                var.copy_(x.var(dim=dims, unbiased=False))
                factor.fill_(1.0)
                count += 1
            result = layer(*bottoms)
            if isinstance(result, torch.Tensor):
                result = (result,)
            env.update(zip(node.tops, result))
    finally:
        module.train(was_training)
    return count
