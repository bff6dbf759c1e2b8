"""torch.compile as an inference engine: the module's pass for fixed input shapes and fetched
blobs, compiled once per (shapes, blobs) by its owner and reused. Inductor's on-disk graph cache
(on by default) keeps later processes from paying the full compile again."""
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
    with torch.inference_mode():
        return compiled(feeds)
