"""Deploy-prototxt writers for SPP, Im2col, BatchReindex, Filter and HDF5Output."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from convnet_io.graph.layers.conv_nd import ConvSpatial

Writer = Callable[[Any, Any, Any, Any], None]


def write_spatial(p: Any, s: ConvSpatial, put: Callable) -> None:
    """A ConvolutionParameter's spatial fields exactly as the net wrote them."""
    p.kernel_size.extend(s.kernel_size)
    p.stride.extend(s.stride)
    p.pad.extend(s.pad)
    p.dilation.extend(s.dilation)
    for name, hw in (("kernel", s.kernel_hw), ("stride", s.stride_hw), ("pad", s.pad_hw)):
        if hw is not None:
            setattr(p, f"{name}_h", hw[0])
            setattr(p, f"{name}_w", hw[1])
    put(p, axis=s.axis, force_nd_im2col=s.force_nd_im2col)


def bvlc_writers(put: Callable, put_always: Callable) -> dict[str, Writer]:
    """``put`` / ``put_always`` are deploy.py's field setters (default-skipping / always)."""

    def spp(layer, a, node, graph):
        put_always(layer.spp_param, pyramid_height=a.pyramid_height)
        put(layer.spp_param, pool=a.method)

    def im2col(layer, a, node, graph):
        write_spatial(layer.convolution_param, a.spatial, put)

    def hdf5_output(layer, a, node, graph):
        put_always(layer.hdf5_output_param, file_name=a.file_name)

    def nothing(layer, a, node, graph):
        return None

    return {"SPP": spp, "Im2col": im2col, "HDF5Output": hdf5_output, "BatchReindex": nothing, "Filter": nothing}
