"""The PyTorch module the export check compares ONNX Runtime with, built over the blobs' memory.

``CaffeModule(graph)`` allocates every blob as zeros and ``Net.set_blobs`` copies the weights in:
for AlexNet 61 M parameters written twice (a quarter of a second of page faults and copies) for a
module that runs once. Here the module is built with its blobs on torch's meta device (shapes, no
memory) and each Caffe blob becomes a tensor over the NumPy array the caffemodel reader filled. The
computation is the same module's; only where its weights live differs. A module left holding any
meta tensor that is not a Caffe blob, or sharing blobs by ParamSpec name, is built the ordinary way.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from convnet_io.api.net import Net
from convnet_io.torch_model import CaffeModule


def module_net(graph, blobs: Mapping[str, list[np.ndarray]]) -> Net:
    """A torch-backed Net over ``graph`` holding ``blobs`` (over their memory when it can)."""
    net = net_over_blobs(graph, blobs)
    if net is None:
        net = Net(graph, CaffeModule(graph), backend="torch")
        net.set_blobs(blobs)
    return net


def net_over_blobs(graph, blobs: Mapping[str, list[np.ndarray]]) -> Net | None:
    """The Net with its Caffe blobs viewing ``blobs``' arrays, or None where the module holds
    other tensors or its blobs do not match ``blobs`` one for one."""
    if any(spec.share_name for node in graph.nodes for spec in node.params):
        return None  # one tensor for several layers' blobs: set_blobs' copies keep that right
    try:
        with _ZerosOnMeta():
            module = CaffeModule(graph)
        targets = module.caffe_blobs()
        if set(targets) != set(blobs) or any(len(targets[k]) != len(v) for k, v in blobs.items()):
            return None
        for layer, arrays in blobs.items():
            owner = module.layer(layer)
            for i, (own, a) in enumerate(zip(targets[layer], arrays)):
                a = np.ascontiguousarray(a, dtype=np.float32)
                if not a.flags.writeable:
                    a = a.copy()  # torch tensors are writable views
                if a.size != own.numel():
                    return None
                t = torch.from_numpy(a).reshape(own.shape)
                owner.share_blob(i, nn.Parameter(t, requires_grad=False) if isinstance(own, nn.Parameter) else t)
    except (RuntimeError, ValueError, NotImplementedError, TypeError):
        return None  # a constructor that needs real values: build it the ordinary way
    if holds_meta(module):
        return None
    return Net(graph, module, backend="torch")


class _ZerosOnMeta(TorchFunctionMode):
    """``torch.zeros`` (how converters allocate Caffe blobs) on the meta device; everything else as
    usual. (All of torch on meta would send a constructor's arange or clamp through torch's Python
    reference implementations: a second of imports the first time.)"""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.zeros:
            kwargs = {**kwargs, "device": "meta"}
        return func(*args, **kwargs)


def holds_meta(module: nn.Module) -> bool:
    """Whether any submodule keeps a meta tensor: a parameter, a buffer, or a plain attribute
    (directly or in a list, tuple or dict)."""
    def meta(v) -> bool:
        if isinstance(v, torch.Tensor):
            return v.is_meta
        if isinstance(v, (list, tuple)):
            return any(meta(x) for x in v)
        if isinstance(v, dict):
            return any(meta(x) for x in v.values())
        return False

    for m in module.modules():
        if any(meta(v) for v in (*m._parameters.values(), *m._buffers.values())):
            return True
        if any(meta(v) for k, v in vars(m).items() if k not in ("_parameters", "_buffers", "_modules")):
            return True
    return False
