"""torch.compile as an inference engine: the module's pass for fixed input shapes and fetched
blobs, compiled once per (shapes, blobs) by its owner and reused. Inductor's on-disk graph cache
(on by default) keeps later processes from paying the full compile again.

Compiled with inductor's freezing: the weights become constants of the graph, so convolution
weights are laid out once for oneDNN (prepacked) and BatchNorm/Scale folded into the convolution
before them, instead of on every call. The owner drops the compiled graph when weights change
(``Net._weights_key``)."""
from __future__ import annotations

import torch


class _Fetch(torch.nn.Module):
    """The module with named feeds in and the requested values out: what compiling needs."""

    def __init__(self, module, values: list[str]):
        super().__init__()
        self.module = module
        self.values = list(values)

    def forward(self, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.module.run(feeds, self.values)


def compile_fetch(module, values: list[str]):
    """A compiled callable ``feeds -> {value: tensor}`` for inputs of one fixed shape."""
    return torch.compile(_Fetch(module, values).eval(), dynamic=False)


def run_compiled(compiled, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # freezing is read when a call compiles (the first one per shape), so it is set around calls
    from torch._inductor import config

    with torch.inference_mode(), config.patch(freezing=True):
        return compiled(feeds)
