"""Deploy-prototxt writers for the forks' segmentation, two-stage and YOLO layers (the parameter
messages and field names of SegNet, PSPNet, Fast R-CNN, R-FCN, ShuffleNet and the YOLO ports)."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

Writer = Callable[[Any, Any, Any, Any], None]


def fork_writers(put: Callable, put_always: Callable, convolution: Writer) -> dict[str, Writer]:
    """``put`` / ``put_always`` are deploy.py's field setters (default-skipping / always)."""

    def upsample(layer, a, node, graph):
        p = layer.upsample_param
        p.SetInParent()
        if a.size is not None:
            put_always(p, upsample_h=a.size[0], upsample_w=a.size[1])
        elif a.scale[0] != a.scale[1]:
            put_always(p, scale_h=a.scale[0], scale_w=a.scale[1])
        else:
            put_always(p, scale=a.scale[0])
        put(p, pad_out_h=a.pad_out[0], pad_out_w=a.pad_out[1])

    def interp(layer, a, node, graph):
        p = layer.interp_param
        p.SetInParent()
        # Presence decides the output size (InterpLayer::Reshape), so given fields are always written.
        given = {k: v for k, v in (("zoom_factor", a.zoom_factor), ("shrink_factor", a.shrink_factor),
                                   ("height", a.height), ("width", a.width)) if v is not None}
        put_always(p, **given)
        put(p, pad_beg=a.pad_beg, pad_end=a.pad_end)

    def roi_pooling(layer, a, node, graph):
        p = layer.roi_pooling_param
        put_always(p, pooled_h=a.pooled[0], pooled_w=a.pooled[1])
        put(p, spatial_scale=a.spatial_scale)

    def psroi_pooling(layer, a, node, graph):
        put_always(layer.psroi_pooling_param, spatial_scale=a.spatial_scale, output_dim=a.output_dim,
                   group_size=a.group_size)

    def reorg(layer, a, node, graph):
        put_always(layer.reorg_param, stride=a.stride)

    def region(layer, a, node, graph):
        put_always(layer.region_param, classes=a.classes, coords=a.coords, boxes_of_each_grid=a.anchors,
                   softmax=a.softmax)

    def shuffle_channel(layer, a, node, graph):
        put_always(layer.shuffle_channel_param, group=a.group)

    def proposal(layer, a, node, graph):
        p = layer.proposal_param
        p.SetInParent()
        put(p, feat_stride=a.feat_stride, base_size=a.base_size, min_size=a.min_size,
            pre_nms_topn=a.pre_nms_topn, post_nms_topn=a.post_nms_topn, nms_thresh=a.nms_thresh)
        p.ratio.extend(a.ratios)
        p.scale.extend(a.scales)

    def none(layer, a, node, graph):
        return None

    return {"Upsample": upsample, "Interp": interp, "ROIPooling": roi_pooling, "PSROIPooling": psroi_pooling,
            "Proposal": proposal, "Reorg": reorg, "Region": region, "ShuffleChannel": shuffle_channel, "ReLU6": none, "Axpy": none,
            "ConvolutionDepthwise": convolution, "DepthwiseConvolution": convolution}
