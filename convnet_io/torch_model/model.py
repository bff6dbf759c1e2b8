"""The graph as one ``torch.nn.Module`` with a submodule per Caffe layer, named after it."""
from __future__ import annotations

from typing import Iterable, Mapping

import torch
from torch import nn

from convnet_io.errors import ConvnetError
from convnet_io.graph import Graph
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.registry import convert_node


def _module_name(layer: str, taken: set[str], owner: nn.Module) -> str:
    name = layer.replace(".", "_") or "layer"
    base, i = name, 1
    while name in taken or (hasattr(owner, name) and name not in owner._modules):
        name = f"{base}_{i}"
        i += 1
    taken.add(name)
    return name


class CaffeModule(nn.Module):
    """Runs a Graph. ``forward(*inputs)`` takes the net's inputs in ``input_names`` order and
    returns its outputs in ``output_names`` order; ``run`` feeds and fetches blobs by name."""

    def __init__(self, graph: Graph):
        super().__init__()
        self.graph = graph
        self.input_names: list[str] = list(graph.inputs)
        self.output_names: list[str] = list(graph.outputs)
        self.module_names: dict[str, str] = {}  # Caffe layer name -> submodule name
        taken: set[str] = set()
        for node in graph.nodes:
            if node.is_source:
                continue
            module = convert_node(node, graph)
            name = _module_name(node.name, taken, self)
            self.add_module(name, module)
            self.module_names[node.name] = name
        self._share_named_params(graph)
        self._steps = [(self.module_names[n.name], n.bottoms, n.tops)
                       for n in graph.nodes if not n.is_source]
        self.train(graph.phase == "TRAIN")

    def _share_named_params(self, graph: Graph) -> None:
        """Blobs whose ParamSpec has the same ``name`` are one tensor, as in Caffe."""
        owners: dict[str, torch.Tensor] = {}
        for node in graph.nodes:
            for i, spec in enumerate(node.params):
                if not spec.share_name:
                    continue
                layer = self.layer(node.name)
                if spec.share_name in owners:
                    try:
                        layer.share_blob(i, owners[spec.share_name])
                    except ValueError as e:
                        raise ConvnetError(f"layer '{node.name}': param '{spec.share_name}': {e}") from None
                else:
                    owners[spec.share_name] = layer.caffe_blobs()[i]

    def share_weights_with(self, other: "CaffeModule") -> int:
        """Use ``other``'s blobs for every layer of the same name and blob shapes (Caffe's
        ShareTrainedLayersWith: a TEST net runs on the TRAIN net's weights). Returns how many layers."""
        shared = 0
        for name in self.module_names:
            if name not in other.module_names:
                continue
            mine, theirs = self.layer(name), other.layer(name)
            a, b = mine.caffe_blobs(), theirs.caffe_blobs()
            if not a or len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
                continue
            for i, t in enumerate(b):
                mine.share_blob(i, t)
            shared += 1
        return shared

    def layer(self, name: str) -> CaffeLayer:
        """The submodule converted from Caffe layer ``name``."""
        return self._modules[self.module_names[name]]  # type: ignore[return-value]

    def forward(self, *inputs: torch.Tensor):
        feeds = dict(zip(self.input_names, inputs))
        out = self.run(feeds, self.output_names)
        values = tuple(out[name] for name in self.output_names)
        return values[0] if len(values) == 1 else values

    def run(self, feeds: Mapping[str, torch.Tensor], outputs: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Run the net on ``feeds`` (input value -> tensor); return the requested values by id."""
        wanted = list(self.output_names if outputs is None else outputs)
        last_use = self._last_use(wanted)
        missing = [v for v in self.input_names if v not in feeds and v in last_use]
        if missing:
            raise ConvnetError(f"missing input(s): {', '.join(missing)} (the net's inputs are "
                               f"{', '.join(self.input_names)})")
        env: dict[str, torch.Tensor] = dict(feeds)
        keep = set(wanted)
        for step, (module_name, bottoms, tops) in enumerate(self._steps):
            if not any(t in last_use or t in keep for t in tops) and not self._side_effect(module_name):
                continue
            result = self._modules[module_name](*[env[b] for b in bottoms])
            if isinstance(result, torch.Tensor):
                result = (result,)
            for t, r in zip(tops, result):
                env[t] = r
            for b in set(bottoms):
                if last_use.get(b) == step and b not in keep:
                    env.pop(b, None)
        return {v: env[v] for v in wanted}

    def _side_effect(self, module_name: str) -> bool:
        """A layer run for what it does, not what it writes (HDF5Output's file)."""
        return bool(getattr(self._modules[module_name], "side_effect", False))

    def _last_use(self, wanted: list[str]) -> dict[str, int]:
        """Step index after which each value is no longer read, for values needed by ``wanted``."""
        needed = set(wanted)
        last: dict[str, int] = {}
        for step in range(len(self._steps) - 1, -1, -1):
            module_name, bottoms, tops = self._steps[step]
            if any(t in needed for t in tops) or self._side_effect(module_name):
                for b in bottoms:
                    needed.add(b)
                    last.setdefault(b, step)
        for t in wanted:
            last.setdefault(t, len(self._steps))
        return last

    # -- Caffe blobs ------------------------------------------------------------------------------
    def caffe_blobs(self) -> dict[str, list[torch.Tensor]]:
        """Learnable blobs per Caffe layer name, in Caffe order (what a .caffemodel holds)."""
        out = {}
        for layer, module_name in self.module_names.items():
            blobs = self._modules[module_name].caffe_blobs()
            if blobs:
                out[layer] = blobs
        return out
