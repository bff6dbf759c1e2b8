"""The Python API: ``net = convnet_io.load(NET, weights=None, phase="TEST")``."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from .api_graph import load_graph
from .builder import reshape_graph
from .errors import ConvnetError
from .graph import Graph, Shape


class Net:
    """A Caffe net ready to run: ``graph`` (the IR), ``module`` (the torch.nn.Module)."""

    def __init__(self, graph: Graph, module: Any):
        self.graph = graph
        self.module = module
        self._reshaped: dict[tuple, Any] = {}

    # -- running -----------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return list(self.graph.inputs)

    @property
    def outputs(self) -> list[str]:
        return list(self.graph.outputs)

    def forward(self, inputs: Any, blobs: str | Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Run the net. ``inputs``: a dict of input blob name -> NumPy array or tensor (or one array
        for a single-input net). ``blobs``: None for the net's outputs, ``"all"`` for every blob
        (each write of an in-place blob separately: ``conv1``, ``conv1:1``), or a list of names; a
        plain Caffe name means the blob as Caffe holds it after the pass (its last write)."""
        wanted = self._resolve(self.graph, blobs)
        out = self.run_values(inputs, [v for _, v in wanted])
        return {name: out[v] for name, v in wanted}

    def run_values(self, inputs: Any, values: Iterable[str]) -> dict[str, np.ndarray]:
        """Run the net and return the given value ids (``conv1``, ``conv1:1``) exactly."""
        import torch

        feeds = self._feeds(inputs)
        module, _ = self._module_for({k: tuple(v.shape) for k, v in feeds.items()})
        with torch.no_grad():
            out = module.run(feeds, list(values))
        return {v: t.detach().cpu().numpy() for v, t in out.items()}

    def _feeds(self, inputs: Any) -> dict[str, Any]:
        import torch

        if not isinstance(inputs, Mapping):
            data_inputs = [v for v in self.graph.inputs if len(self.graph.shapes[v]) > 1] or self.graph.inputs
            if len(data_inputs) != 1:
                raise ConvnetError(f"the net has inputs {', '.join(self.graph.inputs)}: pass a dict")
            inputs = {data_inputs[0]: inputs}
        feeds = {}
        for name, value in inputs.items():
            if name not in self.graph.inputs:
                raise ConvnetError(f"'{name}' is not an input of the net (inputs: {', '.join(self.graph.inputs)})")
            t = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(value))
            feeds[name] = t.to(torch.float32)
        return feeds

    def _module_for(self, shapes: dict[str, Shape]):
        """The module for these input shapes: the loaded one, or a reshaped copy sharing weights."""
        current = {k: self.graph.shapes[k] for k in shapes}
        if shapes == current:
            return self.module, self.graph
        key = tuple(sorted(shapes.items()))
        if key not in self._reshaped:
            from .torch_model import CaffeModule

            graph = reshape_graph(self.graph, shapes)
            module = CaffeModule(graph)
            module.load_state_dict(self.module.state_dict())
            module.train(self.module.training)
            self._reshaped[key] = (module, graph)
        module, graph = self._reshaped[key]
        module.load_state_dict(self.module.state_dict())
        return module, graph

    @staticmethod
    def _resolve(graph: Graph, blobs) -> list[tuple[str, str]]:
        """(name to report, value id) pairs."""
        if blobs is None:
            return [(graph.blob_of[v], v) for v in graph.outputs]
        if blobs == "all":
            return [(v, v) for v in graph.values]
        if isinstance(blobs, str):
            blobs = [blobs]
        out = []
        for name in blobs:
            if name in graph.shapes and name not in graph.blob_of.values():
                out.append((name, name))
                continue
            try:
                out.append((name, graph.final_value(name)))
            except KeyError:
                raise ConvnetError(f"no blob named '{name}' in the net") from None
        return out

    # -- weights -----------------------------------------------------------------------------------
    def blobs(self) -> dict[str, list[np.ndarray]]:
        """Learnable blobs per layer, in Caffe order, as NumPy arrays."""
        return {k: [b.detach().cpu().numpy().copy() for b in v] for k, v in self.module.caffe_blobs().items()}

    def set_blobs(self, blobs: Mapping[str, list[np.ndarray]]) -> None:
        import torch

        targets = self.module.caffe_blobs()
        with torch.no_grad():
            for layer, arrays in blobs.items():
                for t, a in zip(targets[layer], arrays):
                    t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(t.shape))

    def save_caffemodel(self, path: str | Path) -> None:
        """Write the weights as a V2 .caffemodel (atomically)."""
        from .caffemodel import write_caffemodel
        from .weights import layer_blobs

        write_caffemodel(path, layer_blobs(self.graph, self.blobs()), net_name=self.graph.name)


def load(net: str | Path, weights: str | Path | None = None, phase: str = "TEST",
         input_shapes: dict[str, Shape] | Shape | None = None, seed: int = 0,
         strict: bool = True) -> Net:
    """Load a net definition (prototxt or Caffe2 listing) and optionally its .caffemodel weights.

    Without weights, blobs are filled from the net's fillers (seeded), as ``convnet init`` does.
    """
    from .torch_model import CaffeModule

    graph = load_graph(net, phase=phase.upper(), input_shapes=input_shapes)
    module = CaffeModule(graph)
    result = Net(graph, module)
    if weights is None:
        from .initialize import initial_blobs

        result.set_blobs(initial_blobs(graph, seed))
    else:
        from .weights import check_weights

        report = check_weights(graph, weights, strict=strict)
        graph.notices.extend(report.warnings)
        result.set_blobs(report.blobs)
    return result
