"""SPP, BatchReindex, Filter and HDF5Output with Caffe's semantics (``src/caffe/layers/``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from convnet_io.graph import Graph, Node
from convnet_io.graph.layers.pyramid import spp_levels
from convnet_io.torch_model.base import CaffeLayer
from convnet_io.torch_model.converters.vision import Pooling
from convnet_io.torch_model.registry import converter


class SPP(CaffeLayer):
    """Caffe's pooling of every pyramid level (each a Pooling layer with Caffe's windows), each
    flattened, concatenated; a one-level pyramid is that pooling's 4-D top."""

    def __init__(self, levels, in_hw):
        super().__init__()
        self.levels = nn.ModuleList(Pooling(p, in_hw, tuple(shape[2:])) for p, shape in levels)

    def forward(self, x):
        if len(self.levels) == 1:
            return self.levels[0](x)
        return torch.cat([pool(x).flatten(1) for pool in self.levels], dim=1)


@converter("SPP")
def convert_spp(node: Node, graph: Graph) -> nn.Module:
    bottom = graph.shapes[node.bottoms[0]]
    return SPP(spp_levels(node.attrs, bottom), (bottom[2], bottom[3]))


class BatchReindex(CaffeLayer):
    """top[i] = bottom[int(permut[i])]; the gradient of a row picked twice is summed, as Caffe's
    Backward_cpu accumulates it."""

    def forward(self, x, permut):
        index = permut.reshape(-1).to(torch.int64)
        if not (torch.jit.is_tracing() or torch.compiler.is_compiling()) and index.numel() and (int(index.min()) < 0 or int(index.max()) >= x.shape[0]):
            raise ValueError(f"BatchReindex index out of range [0, {x.shape[0]})")
        return x.index_select(0, index)


@converter("BatchReindex")
def convert_batch_reindex(node: Node, graph: Graph) -> nn.Module:
    return BatchReindex()


class Filter(CaffeLayer):
    """The rows whose selector is non-zero (Caffe tests the float itself, not its integer part)."""

    def forward(self, *bottoms):
        keep = bottoms[-1].reshape(-1) != 0
        outs = tuple(b[keep] for b in bottoms[:-1])
        return outs[0] if len(outs) == 1 else outs


@converter("Filter")
def convert_filter(node: Node, graph: Graph) -> nn.Module:
    return Filter()


class HDF5Output(CaffeLayer):
    """Writes ``data`` (bottom 0) and ``label`` (bottom 1) as float32 datasets of their blob shapes,
    the file created anew on each forward pass (Caffe opens it with H5F_ACC_TRUNC)."""

    side_effect = True  # runs although nothing reads its (absent) tops

    def __init__(self, file_name: str):
        super().__init__()
        self.file_name = file_name

    def forward(self, data, label):
        import h5py

        if torch.jit.is_tracing():
            return ()
        try:
            with h5py.File(Path(self.file_name), "w") as f:
                f.create_dataset("data", data=data.detach().to("cpu", torch.float32).numpy())
                f.create_dataset("label", data=label.detach().to("cpu", torch.float32).numpy())
        except OSError as e:
            raise ValueError(f"cannot write HDF5 file {self.file_name}: {e}") from None
        return ()

    def extra_repr(self):
        return f"file_name={self.file_name!r}"


@converter("HDF5Output")
def convert_hdf5_output(node: Node, graph: Graph) -> nn.Module:
    return HDF5Output(node.attrs.file_name)
