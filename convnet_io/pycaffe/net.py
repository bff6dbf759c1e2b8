"""pycaffe's ``Net`` on convnet: the graph and ``CaffeModule`` of ``convnet_io`` behind Caffe's
blob-and-layer interface. Nothing here computes a layer: each step calls the layer's converted
torch submodule; this module keeps Caffe's blobs (NumPy arrays) in step with it."""
from __future__ import annotations

from collections import OrderedDict
from itertools import zip_longest
from pathlib import Path
from typing import Any

import numpy as np

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError
from convnet_io.pycaffe.blob import Blob, LayerView

TRAIN = caffe_pb2.TRAIN
TEST = caffe_pb2.TEST
_PHASE_NAMES = {TRAIN: "TRAIN", TEST: "TEST", "TRAIN": "TRAIN", "TEST": "TEST"}


def phase_name(phase: Any) -> str:
    try:
        return _PHASE_NAMES[phase.upper() if isinstance(phase, str) else int(phase)]
    except (KeyError, TypeError, ValueError):
        raise ConvnetError(f"phase must be caffe.TRAIN or caffe.TEST, not {phase!r}") from None


def build_net_graph(net_param: Any, phase: str, stages=(), level: int | None = None, source_path: str = ""):
    """The graph of ``net_param`` for ``phase``; data layers' shapes come from their first record
    where the source is readable (Caffe's DataLayerSetUp), else from the definition."""
    from convnet_io.caffe.builder import build_graph
    from convnet_io.data import probe_source_shapes

    try:
        shapes = probe_source_shapes(net_param, phase, stages=tuple(stages), level=level)
    except ConvnetError:
        shapes = {}
    return build_graph(net_param, phase=phase, input_shapes=shapes or None, stages=tuple(stages),
                       level=level, source_path=source_path, notices=[])


class Net:
    """``caffe.Net``: ``Net(prototxt, phase)``, ``Net(prototxt, weights, phase)``,
    ``Net(prototxt, phase, level=0, stages=None, weights=None)``.

    ``allow_python_layers=True`` lets ``type: "Python"`` layers import and run their module."""

    def __init__(self, network_file: str, *args: Any, phase: Any = None, level: int = 0,
                 stages: Any = None, weights: str | None = None, allow_python_layers: bool | None = None):
        from convnet_io.caffe.prototxt import read_net
        from convnet_io.torch_model import CaffeModule

        if len(args) == 2:  # Net(prototxt, weights, phase): pycaffe's older form
            weights, phase = args
        elif len(args) == 1:
            if isinstance(args[0], (str, Path)):
                raise TypeError("Net(prototxt, weights, phase): the phase is missing")
            phase = args[0]
        elif args:
            raise TypeError(f"Net() takes at most 3 positional arguments ({len(args) + 1} given)")
        if phase is None:
            raise TypeError("Net(prototxt, phase): the phase (caffe.TRAIN or caffe.TEST) is missing")
        net_param, _ = read_net(network_file)
        from convnet_io.pycaffe.python_layer import python_layers_allowed

        self._allow_python = allow_python_layers
        with python_layers_allowed(allow_python_layers):
            graph = build_net_graph(net_param, phase_name(phase), tuple(stages or ()), level,
                                    str(network_file))
            module = CaffeModule(graph)
        from convnet_io.graph.initialize import initial_blobs
        from convnet_io.pycaffe.globals import filler_seed

        report = None
        if weights is not None:
            from convnet_io.caffe.weights import check_weights

            report = check_weights(graph, weights, strict=False)
        if report is None or report.missing:  # layers without weights start from their fillers
            blobs = initial_blobs(graph, filler_seed())
            _copy_into(module, {k: v for k, v in blobs.items() if report is None or k in report.missing})
        if report is not None:
            _copy_into(module, report.blobs)
        self._setup(graph, module, net_param)

    @classmethod
    def _wrap(cls, graph: Any, module: Any, net_param: Any, feeder: Any = None) -> Net:
        """A Net over an existing module (the solver's train and test nets)."""
        net = cls.__new__(cls)
        net._setup(graph, module, net_param, feeder)
        return net

    def _setup(self, graph: Any, module: Any, net_param: Any, feeder: Any = None) -> None:
        self._allow_python = getattr(self, "_allow_python", None)
        self._graph = self._base_graph = graph
        self._module = self._base_module = module
        self._net_param = net_param
        self._feeder = feeder
        self._reshaped: dict[tuple, tuple[Any, Any]] = {}
        self._memory: dict[str, list] = {}
        self._env: dict[str, Any] | None = None
        self._force_backward = bool(getattr(net_param, "force_backward", False))
        nodes = graph.nodes
        self._layer_names = [n.name for n in nodes]
        names = list(dict.fromkeys(graph.blob_of[v] for v in graph.values))
        self._blobs = OrderedDict((b, Blob.zeros(graph.shapes[graph.final_value(b)])) for b in names)
        weights = OrderedDict((b, 0.0) for b in names)
        for n in nodes:
            for t, w in zip(n.tops, n.loss_weights):
                if w:  # Caffe keeps a loss top's weight in its diff: backward starts from it
                    weights[graph.blob_of[t]] = float(w)
                    self._blobs[graph.blob_of[t]].diff[...] = w
        self._blob_loss_weights = weights
        self._make_layers()

    def _make_layers(self) -> None:
        import torch

        self.layers = []
        for n in self._base_graph.nodes:
            blobs, sub = [], None
            if not n.is_source:
                sub = self._base_module.layer(n.name)
                for t in sub.caffe_blobs():
                    if t.device.type != "cpu":
                        raise ConvnetError("pycaffe nets keep their weights on the CPU")
                    diff = None
                    if t.requires_grad:
                        if t.grad is None:
                            t.grad = torch.zeros_like(t)
                        diff = t.grad.numpy()
                    blobs.append(Blob(t.detach().numpy(), diff, tensor=t))
            self.layers.append(LayerView(n.name, n.type, blobs, sub))

    # -- pycaffe's properties -----------------------------------------------------------------------
    @property
    def blobs(self) -> OrderedDict[str, Blob]:
        return self._blobs

    @property
    def params(self) -> OrderedDict[str, list[Blob]]:
        return OrderedDict((lr.name, lr.blobs) for lr in self.layers if lr.blobs)

    @property
    def blob_loss_weights(self) -> OrderedDict[str, float]:
        return self._blob_loss_weights

    _blob_loss_weights_dict = blob_loss_weights

    @property
    def layer_dict(self) -> OrderedDict[str, LayerView]:
        return OrderedDict(zip(self._layer_names, self.layers))

    @property
    def _blob_names(self) -> list[str]:
        return list(self._blobs)

    @property
    def inputs(self) -> list[str]:
        """Blobs of Input layers (Caffe's net input blobs; data layers are layers)."""
        g = self._base_graph
        return list(dict.fromkeys(g.blob_of[t] for n in g.nodes if n.type == "Input" for t in n.tops))

    @property
    def outputs(self) -> list[str]:
        """Blobs no later layer reads, in name order (Caffe walks its std::set of available blobs)."""
        g = self._base_graph
        available: set[str] = set()
        for n in g.nodes:
            available.difference_update(g.blob_of[b] for b in n.bottoms)
            available.update(g.blob_of[t] for t in n.tops)
        return sorted(available)

    @property
    def top_names(self) -> OrderedDict[str, list[str]]:
        g = self._base_graph
        return OrderedDict((n.name, [g.blob_of[t] for t in n.tops]) for n in g.nodes)

    @property
    def bottom_names(self) -> OrderedDict[str, list[str]]:
        g = self._base_graph
        return OrderedDict((n.name, [g.blob_of[b] for b in n.bottoms]) for n in g.nodes)

    @property
    def name(self) -> str:
        return self._base_graph.name

    @property
    def graph(self) -> Any:
        """convnet's graph of the net at its current input shapes."""
        return self._graph

    @property
    def module(self) -> Any:
        """The torch module convnet runs (``CaffeModule``)."""
        return self._module

    # -- running ------------------------------------------------------------------------------------
    def _index(self, layer: str | None, default: int) -> int:
        if layer is None:
            return default
        try:
            return self._layer_names.index(layer)
        except ValueError:
            raise ConvnetError(f"no layer named '{layer}' in the net") from None

    def forward(self, blobs: list[str] | None = None, start: str | None = None, end: str | None = None,
                **kwargs: Any) -> dict[str, np.ndarray]:
        """Run layers ``start`` .. ``end`` (inclusive); ``kwargs`` set input blobs first. Returns
        the output blobs (``end``'s tops when ``end`` is given) plus ``blobs``."""
        blobs = list(blobs or [])
        start_ind = self._index(start, 0)
        end_ind = self._index(end, len(self.layers) - 1)
        outputs = set((self.top_names[end] if end is not None else self.outputs) + blobs)
        if kwargs:
            if set(kwargs) != set(self.inputs):
                raise ConvnetError(f"input blob arguments {sorted(kwargs)} do not match the net's inputs "
                                   f"{sorted(self.inputs)}")
            for name, value in kwargs.items():
                value = np.asarray(value)
                if value.shape[0] != self._blobs[name].shape[0]:
                    raise ConvnetError(f"input '{name}' is not batch sized: {value.shape[0]} items, "
                                       f"the blob holds {self._blobs[name].shape[0]}")
                self._blobs[name].data[...] = value
        self._forward(start_ind, end_ind)
        return {out: self._blobs[out].data for out in outputs}

    def backward(self, diffs: list[str] | None = None, start: str | None = None, end: str | None = None,
                 **kwargs: Any) -> dict[str, np.ndarray]:
        """Back-propagate from layer ``start`` down to ``end``; ``kwargs`` set output diffs first.
        Learnable blobs' diffs accumulate, as Caffe's do until the solver clears them."""
        diffs = list(diffs or [])
        start_ind = self._index(start, len(self.layers) - 1)
        end_ind = self._index(end, 0)
        outputs = set((self.bottom_names[end] if end is not None else self.inputs) + diffs)
        if kwargs:
            if set(kwargs) != set(self.outputs):
                raise ConvnetError(f"top diff arguments {sorted(kwargs)} do not match the net's outputs "
                                   f"{sorted(self.outputs)}")
            for name, value in kwargs.items():
                value = np.asarray(value)
                if value.shape[0] != self._blobs[name].shape[0]:
                    raise ConvnetError(f"diff '{name}' is not batch sized")
                self._blobs[name].diff[...] = value
        self._backward(start_ind, end_ind)
        return {out: self._blobs[out].diff for out in outputs}

    def reshape(self) -> None:
        """Re-infer every blob's shape from the input blobs' shapes (Caffe's Net::Reshape)."""
        self._sync_shapes()

    def _input_shapes(self) -> dict[str, tuple[int, ...]]:
        g = self._base_graph
        return {t: self._blobs[g.blob_of[t]].shape for n in g.nodes if n.type == "Input" for t in n.tops}

    def _sync_shapes(self, fed: dict[str, tuple[int, ...]] | None = None) -> None:
        """Pick (or build) the module for the current input shapes and size the blobs to it."""
        shapes = self._input_shapes()
        shapes.update(fed or {})
        if all(tuple(self._graph.shapes[k]) == v for k, v in shapes.items()):
            return
        base = self._base_graph
        if all(tuple(base.shapes[k]) == v for k, v in shapes.items()):
            self._graph, self._module = base, self._base_module
        else:
            key = tuple(sorted(shapes.items()))
            if key not in self._reshaped:
                from convnet_io.graph.reshape import reshape_graph
                from convnet_io.pycaffe.python_layer import python_layers_allowed
                from convnet_io.torch_model import CaffeModule

                with python_layers_allowed(self._allow_python):
                    graph = reshape_graph(base, shapes)
                    module = CaffeModule(graph)
                module.share_weights_with(self._base_module)
                self._reshaped[key] = (graph, module)
            self._graph, self._module = self._reshaped[key]
        self._module.train(self._base_module.training)
        for b, blob in self._blobs.items():
            blob.reshape(*self._graph.shapes[self._graph.final_value(b)])

    def _tensor(self, value: str, grad: bool) -> Any:
        import torch

        t = torch.from_numpy(np.array(self._blobs[self._graph.blob_of[value]].data, dtype=np.float32))
        return t.requires_grad_(True) if grad else t

    def _store(self, value: str, tensor: Any) -> None:
        arr = tensor.detach().cpu().numpy()
        blob = self._blobs[self._graph.blob_of[value]]
        if blob.shape != arr.shape:
            blob.reshape(*arr.shape)
        blob.data[...] = arr

    def _feed_sources(self, nodes: list[Any], env: dict[str, Any]) -> None:
        """Data layers produce their next batch (one batch for all of them, as one feeder)."""
        fed: dict[str, Any] = {}
        if any(n.type not in ("Input", "MemoryData") for n in nodes):
            if self._feeder is None:
                from convnet_io.data import DataFeeder

                self._feeder = DataFeeder(self._base_graph, self._base_graph.phase, net=self._net_param,
                                          workers=0)
            fed.update(next(self._feeder))
        for n in nodes:
            if n.type == "MemoryData":
                fed.update(self._memory_batch(n))
        for value, t in fed.items():
            self._store(value, t)
        if fed:
            self._sync_shapes({v: tuple(t.shape) for v, t in fed.items()
                               if v in self._base_graph.inputs and self._base_graph.blob_of[v] not in self.inputs})

    def _forward(self, start: int, end: int) -> None:
        import torch

        self._sync_shapes()
        nodes = self._graph.nodes
        env: dict[str, Any] = {}
        sources = [n for n in nodes[start:end + 1] if n.is_source]
        if sources:
            self._feed_sources(sources, env)
            nodes = self._graph.nodes
        module = self._module
        with torch.enable_grad():
            for node in nodes[start:end + 1]:
                if node.is_source:
                    continue
                bottoms = []
                for b in node.bottoms:
                    if b not in env:
                        env[b] = self._tensor(b, self._force_backward)
                    bottoms.append(env[b])
                result = module._modules[module.module_names[node.name]](*bottoms)
                if isinstance(result, torch.Tensor):
                    result = (result,)
                for t, r in zip(node.tops, result):
                    if r.requires_grad:
                        r.retain_grad()
                    env[t] = r
                    self._store(t, r)
        self._env = env
        self._ran = (start, end)

    def _backward(self, start: int, end: int) -> None:
        import torch

        if self._env is None:
            raise ConvnetError("backward() needs a forward() first (convnet keeps the forward's "
                               "graph for the gradients)")
        env = self._env
        nodes = [n for n in self._graph.nodes[end:start + 1] if not n.is_source]
        read = {b for n in nodes for b in n.bottoms}
        roots, grads = [], []
        for n in nodes:
            for t in n.tops:
                if t in read or t not in env or not env[t].requires_grad:
                    continue
                diff = self._blobs[self._graph.blob_of[t]].diff
                if not diff.any():
                    continue
                roots.append(env[t])
                grads.append(torch.from_numpy(np.array(diff, dtype=np.float32)).reshape(env[t].shape))
        for t in env.values():
            if t.requires_grad and t.grad is not None:
                t.grad = None
        if roots:
            torch.autograd.backward(roots, grads, retain_graph=True)
        # In-place chains share one diff in Caffe; the earliest write's gradient is what it holds.
        values = [b for n in nodes for b in n.bottoms] + [t for n in nodes for t in n.tops]
        done = set()
        for v in reversed(list(dict.fromkeys(values))):
            t = env.get(v)
            if t is None or v in done or t.grad is None:
                continue
            done.add(v)
            self._blobs[self._graph.blob_of[v]].diff[...] = t.grad.detach().cpu().numpy().reshape(
                self._blobs[self._graph.blob_of[v]].shape)

    def _batch(self, blobs: dict[str, np.ndarray]):
        """Batches of the net's batch size; the last padded with zeros."""
        num = len(next(iter(blobs.values())))
        batch_size = next(iter(self._blobs.values())).shape[0]
        remainder = num % batch_size
        for b in range(num // batch_size):
            i = b * batch_size
            yield {name: blobs[name][i:i + batch_size] for name in blobs}
        if remainder > 0:
            padded = {}
            for name in blobs:
                padding = np.zeros((batch_size - remainder,) + tuple(blobs[name].shape[1:]))
                padded[name] = np.concatenate([blobs[name][-remainder:], padding])
            yield padded

    def forward_all(self, blobs: list[str] | None = None, **kwargs: Any) -> dict[str, np.ndarray]:
        """Forward over inputs of any length, in batches of the net's batch size."""
        all_outs: dict[str, list] = {out: [] for out in set(self.outputs + (blobs or []))}
        for batch in self._batch(kwargs):
            outs = self.forward(blobs=blobs, **batch)
            for out, value in outs.items():
                all_outs[out].extend(value.copy())
        result = {out: np.asarray(v) for out, v in all_outs.items()}
        pad = len(next(iter(result.values()))) - len(next(iter(kwargs.values())))
        if pad:
            result = {out: v[:-pad] for out, v in result.items()}
        return result

    def forward_backward_all(self, blobs: list[str] | None = None, diffs: list[str] | None = None,
                             **kwargs: Any) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """forward and backward in batches: inputs and output diffs as keyword arrays."""
        all_outs: dict[str, list] = {out: [] for out in set(self.outputs + (blobs or []))}
        all_diffs: dict[str, list] = {d: [] for d in set(self.inputs + (diffs or []))}
        forward_batches = self._batch({k: kwargs[k] for k in self.inputs if k in kwargs}) \
            if any(k in kwargs for k in self.inputs) else iter(())
        backward_batches = self._batch({k: kwargs[k] for k in self.outputs if k in kwargs}) \
            if any(k in kwargs for k in self.outputs) else iter(())
        for fb, bb in zip_longest(forward_batches, backward_batches, fillvalue={}):
            outs = self.forward(blobs=blobs, **fb)
            ds = self.backward(diffs=diffs, **bb)
            for out, value in outs.items():
                all_outs[out].extend(value.copy())
            for d, value in ds.items():
                all_diffs[d].extend(value.copy())
        outs_arr = {k: np.asarray(v) for k, v in all_outs.items()}
        diffs_arr = {k: np.asarray(v) for k, v in all_diffs.items()}
        pad = len(next(iter(outs_arr.values()))) - len(next(iter(kwargs.values())))
        if pad:
            outs_arr = {k: v[:-pad] for k, v in outs_arr.items()}
            diffs_arr = {k: v[:-pad] for k, v in diffs_arr.items()}
        return outs_arr, diffs_arr

    # -- MemoryData ---------------------------------------------------------------------------------
    def set_input_arrays(self, data: np.ndarray, labels: np.ndarray) -> None:
        """The arrays a MemoryData layer serves, batch by batch (its first such layer)."""
        layer = next((n for n in self._base_graph.nodes if n.type == "MemoryData"), None)
        if layer is None:
            raise ConvnetError("set_input_arrays needs a net with a MemoryData layer")
        labels = np.asarray(labels)
        if labels.ndim == 1:
            labels = labels[:, None, None, None]
        data = np.asarray(data)
        if data.dtype != np.float32 or labels.dtype != np.float32:
            raise ConvnetError("set_input_arrays: data and labels must be float32 arrays")
        if data.ndim != 4 or labels.ndim != 4:
            raise ConvnetError("set_input_arrays: data and labels must be 4-D")
        if data.shape[0] != labels.shape[0]:
            raise ConvnetError("set_input_arrays: data and labels must have the same first dimension")
        batch = self._base_graph.shapes[layer.tops[0]][0]
        if data.shape[0] % batch:
            raise ConvnetError(f"set_input_arrays: the first dimension ({data.shape[0]}) must be a "
                               f"multiple of the batch size {batch}")
        self._memory[layer.name] = [np.ascontiguousarray(data), np.ascontiguousarray(labels), 0]

    def _memory_batch(self, node: Any) -> dict[str, Any]:
        import torch

        if node.name not in self._memory:
            raise ConvnetError(f"MemoryData layer '{node.name}': call set_input_arrays first")
        data, labels, pos = self._memory[node.name]
        batch = self._base_graph.shapes[node.tops[0]][0]
        self._memory[node.name][2] = (pos + batch) % data.shape[0]
        arrays = [data[pos:pos + batch], labels[pos:pos + batch].reshape(batch)]
        return {t: torch.from_numpy(np.array(a)) for t, a in zip(node.tops, arrays)}

    # -- weights ------------------------------------------------------------------------------------
    def copy_from(self, path: str) -> None:
        """Weights of the layers a .caffemodel names (Caffe's CopyTrainedLayersFrom)."""
        from convnet_io.caffe.weights import check_weights

        report = check_weights(self._base_graph, path, strict=False)
        _copy_into(self._base_module, report.blobs)

    def save(self, path: str) -> None:
        """The weights as a V2 .caffemodel."""
        from convnet_io.caffe.caffemodel import write_caffemodel
        from convnet_io.caffe.weights import layer_blobs

        blobs = {k: [t.detach().cpu().numpy() for t in v] for k, v in self._base_module.caffe_blobs().items()}
        write_caffemodel(path, layer_blobs(self._base_graph, blobs), net_name=self._base_graph.name)

    def share_with(self, other: Net) -> None:
        """Use ``other``'s weights for the layers both have (Caffe's ShareTrainedLayersWith)."""
        self._base_module.share_weights_with(other._base_module)
        for _, module in self._reshaped.values():
            module.share_weights_with(other._base_module)
        self._make_layers()

    def __repr__(self) -> str:
        return f"<caffe.Net {self.name!r} ({self._base_graph.phase}) on convnet>"


def _copy_into(module: Any, blobs: dict[str, list[np.ndarray]]) -> None:
    import torch

    targets = module.caffe_blobs()
    with torch.no_grad():
        for layer, arrays in blobs.items():
            for t, a in zip(targets.get(layer, []), arrays):
                t.copy_(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).reshape(t.shape))
