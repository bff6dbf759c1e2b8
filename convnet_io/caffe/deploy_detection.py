"""Deploy-prototxt writers for SSD's layers (Permute, PriorBox, Normalize, DetectionOutput), with
the fork's field names and defaults; ``deploy.py`` hands in its field helpers."""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Writer = Callable[[Any, Any, Any, Any], None]


def detection_writers(put: Callable, put_always: Callable, filler: Callable) -> dict[str, Writer]:
    def permute(layer, a, node, graph):
        p = layer.permute_param
        p.SetInParent()
        p.order.extend(a.order)

    def prior_box(layer, a, node, graph):
        p = layer.prior_box_param
        p.min_size.extend(a.min_sizes)
        p.max_size.extend(a.max_sizes)
        given = a.aspect_ratios[1::2] if a.flip else a.aspect_ratios[1:]  # undo Caffe's expansion
        p.aspect_ratio.extend(given)
        put_always(p, flip=a.flip, clip=a.clip)  # OpenCV's copy defaults clip to true: be explicit
        put(p, offset=a.offset)
        if a.variance != (0.1,):  # the fork's default when none is given
            p.variance.extend(a.variance)
        if a.img_h and a.img_w:
            put_always(p, img_h=a.img_h, img_w=a.img_w)
        if a.step_h and a.step_w:
            if a.step_h == a.step_w:
                put_always(p, step=a.step_h)
            else:
                put_always(p, step_h=a.step_h, step_w=a.step_w)

    def normalize(layer, a, node, graph):
        p = layer.norm_param
        p.SetInParent()
        put_always(p, across_spatial=a.across_spatial, channel_shared=a.channel_shared)
        put(p, eps=a.eps)
        filler(p.scale_filler, a.scale_filler)

    def detection_output(layer, a, node, graph):
        p = layer.detection_output_param
        # OpenCV's importer requires these even where the fork has defaults.
        put_always(p, num_classes=a.num_classes, share_location=a.share_location,
                   background_label_id=a.background_label_id, code_type=a.code_type,
                   keep_top_k=a.keep_top_k)
        put(p, variance_encoded_in_target=a.variance_encoded_in_target)
        if a.confidence_threshold != -math.inf:
            put_always(p, confidence_threshold=a.confidence_threshold)
        p.nms_param.SetInParent()
        put_always(p.nms_param, nms_threshold=a.nms_threshold)
        put(p.nms_param, eta=a.eta)
        if a.top_k > -1:
            put_always(p.nms_param, top_k=a.top_k)

    return {"Permute": permute, "PriorBox": prior_box, "Normalize": normalize,
            "DetectionOutput": detection_output}
