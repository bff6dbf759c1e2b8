"""Two-stage and YOLO heads as ONNX: ROIPooling (MaxRoiPool, whose rounding and bins are Fast
R-CNN's), PSROIPooling (bin masks and one Einsum) and Region (decode, then NonMaxSuppression per
class in OpenCV's order)."""
from __future__ import annotations

import numpy as np

from convnet_io.onnx_export.registry import exporter, refuse

INT64, FLOAT = 7, 1


def _regions(ctx, node, rois: str) -> str:
    return ctx.add("Reshape", [rois, ctx.ints(f"{node.name}_rois_shape", [-1, 5])], name=f"{node.name}/rois")


def _column(ctx, node, rois: str, index: int, tag: str) -> str:
    return ctx.add("Gather", [rois, ctx.ints(f"{node.name}_col{index}", [index])], name=f"{node.name}/{tag}", axis=1)


@exporter("ROIPooling")
def export_roi_pooling(ctx, node):
    a = node.attrs
    features, rois = node.bottoms
    ctx.add("MaxRoiPool", [features, _regions(ctx, node, rois)], [node.tops[0]], name=node.name,
            pooled_shape=list(a.pooled), spatial_scale=float(a.spatial_scale))


def _c_round(ctx, node, v: str, tag: str) -> str:
    """C's round(), halves away from zero (ONNX Round goes to even): sign(v) * floor(|v| + 0.5)."""
    half = ctx.add("Add", [ctx.add("Abs", [v], name=f"{node.name}/{tag}_abs"), ctx.constant(f"{node.name}_half", 0.5)],
                   name=f"{node.name}/{tag}_half")
    return ctx.add("Mul", [ctx.add("Sign", [v], name=f"{node.name}/{tag}_sign"),
                           ctx.add("Floor", [half], name=f"{node.name}/{tag}_floor")], name=f"{node.name}/{tag}_round")


def _bin_mask(ctx, node, start: str, size: str, group: int, limit: int, tag: str) -> tuple[str, str]:
    """(mask (R, group, limit) of the pixels in each bin, bin extent (R, group)): R-FCN's bins
    floor(i * bin + start) to ceil((i + 1) * bin + start), clipped to [0, limit]."""
    bin_size = ctx.add("Div", [size, ctx.constant(f"{node.name}_{tag}_group", float(group))], name=f"{node.name}/{tag}_bin")
    steps = ctx.constant(f"{node.name}_{tag}_steps", np.arange(group, dtype=np.float32)[None])
    lo = ctx.add("Floor", [ctx.add("Add", [ctx.add("Mul", [steps, bin_size], name=f"{node.name}/{tag}_lo_off"), start],
                                   name=f"{node.name}/{tag}_lo_raw")], name=f"{node.name}/{tag}_lo_floor")
    steps1 = ctx.constant(f"{node.name}_{tag}_steps1", np.arange(1, group + 1, dtype=np.float32)[None])
    hi = ctx.add("Ceil", [ctx.add("Add", [ctx.add("Mul", [steps1, bin_size], name=f"{node.name}/{tag}_hi_off"), start],
                                  name=f"{node.name}/{tag}_hi_raw")], name=f"{node.name}/{tag}_hi_ceil")
    zero, top = ctx.constant(f"{node.name}_{tag}_zero", 0.0), ctx.constant(f"{node.name}_{tag}_limit", float(limit))
    lo = ctx.add("Clip", [lo, zero, top], name=f"{node.name}/{tag}_lo")
    hi = ctx.add("Clip", [hi, zero, top], name=f"{node.name}/{tag}_hi")
    pixels = ctx.constant(f"{node.name}_{tag}_pixels", np.arange(limit, dtype=np.float32)[None, None])
    lo3 = ctx.add("Unsqueeze", [lo, ctx.ints(f"{node.name}_{tag}_ax", [2])], name=f"{node.name}/{tag}_lo3")
    hi3 = ctx.add("Unsqueeze", [hi, ctx.ints(f"{node.name}_{tag}_ax2", [2])], name=f"{node.name}/{tag}_hi3")
    inside = ctx.add("And", [ctx.add("GreaterOrEqual", [pixels, lo3], name=f"{node.name}/{tag}_ge"),
                             ctx.add("Less", [pixels, hi3], name=f"{node.name}/{tag}_lt")], name=f"{node.name}/{tag}_in")
    extent = ctx.add("Relu", [ctx.add("Sub", [hi, lo], name=f"{node.name}/{tag}_span")], name=f"{node.name}/{tag}_extent")
    return ctx.add("Cast", [inside], name=f"{node.name}/{tag}_mask", to=FLOAT), extent


@exporter("PSROIPooling")
def export_psroi_pooling(ctx, node):
    a = node.attrs
    features, rois = node.bottoms
    _, _, h, w = ctx.shape(features)
    g = a.group_size
    r = _regions(ctx, node, rois)
    scale = ctx.constant(f"{node.name}_scale", a.spatial_scale)
    one = ctx.constant(f"{node.name}_one", 1.0)
    tenth = ctx.constant(f"{node.name}_tenth", 0.1)
    corners = []
    for i, tag in enumerate(("x1", "y1", "x2", "y2")):
        v = _c_round(ctx, node, _column(ctx, node, r, i + 1, tag), tag)
        if i >= 2:
            v = ctx.add("Add", [v, one], name=f"{node.name}/{tag}_end")
        corners.append(ctx.add("Mul", [v, scale], name=f"{node.name}/{tag}_scaled"))
    x1, y1, x2, y2 = corners
    width = ctx.add("Max", [ctx.add("Sub", [x2, x1], name=f"{node.name}/w"), tenth], name=f"{node.name}/width")
    height = ctx.add("Max", [ctx.add("Sub", [y2, y1], name=f"{node.name}/h"), tenth], name=f"{node.name}/height")
    mask_h, extent_h = _bin_mask(ctx, node, y1, height, g, h, "rows")
    mask_w, extent_w = _bin_mask(ctx, node, x1, width, g, w, "cols")
    batch = ctx.add("Cast", [ctx.add("Squeeze", [_column(ctx, node, r, 0, "batch"), ctx.ints(f"{node.name}_sq", [1])],
                                     name=f"{node.name}/batch_index")], name=f"{node.name}/batch_int", to=INT64)
    maps = ctx.add("Gather", [features, batch], name=f"{node.name}/maps", axis=0)
    maps = ctx.add("Reshape", [maps, ctx.ints(f"{node.name}_maps_shape", [-1, a.output_dim, g, g, h, w])],
                   name=f"{node.name}/groups")
    sums = ctx.add("Einsum", [maps, mask_h, mask_w], name=f"{node.name}/sums", equation="rcijyx,riy,rjx->rcij")
    area = ctx.add("Mul", [ctx.add("Unsqueeze", [extent_h, ctx.ints(f"{node.name}_ax_h", [2])], name=f"{node.name}/eh"),
                           ctx.add("Unsqueeze", [extent_w, ctx.ints(f"{node.name}_ax_w", [1])], name=f"{node.name}/ew")],
                   name=f"{node.name}/area")
    area = ctx.add("Unsqueeze", [area, ctx.ints(f"{node.name}_ax_c", [1])], name=f"{node.name}/area_c")
    empty = ctx.add("Equal", [area, ctx.constant(f"{node.name}_zero", 0.0)], name=f"{node.name}/empty")
    safe = ctx.add("Where", [empty, one, area], name=f"{node.name}/safe_area")
    mean = ctx.add("Div", [sums, safe], name=f"{node.name}/mean")
    ctx.add("Where", [empty, ctx.constant(f"{node.name}_zero_out", 0.0), mean], [node.tops[0]], name=node.name)


@exporter("Region")
def export_region(ctx, node):
    a = node.attrs
    x = node.bottoms[0]
    _, rows, cols, _ = ctx.shape(x)
    cell = a.coords + 1 + a.classes
    k = a.anchors
    v = ctx.add("Reshape", [x, ctx.ints(f"{node.name}_cells", [-1, rows, cols, k, cell])], name=f"{node.name}/cells")

    def part(start, end, tag):
        return ctx.add("Slice", [v, ctx.ints(f"{node.name}_{tag}_s", [start]), ctx.ints(f"{node.name}_{tag}_e", [end]),
                                 ctx.ints(f"{node.name}_{tag}_a", [4])], name=f"{node.name}/{tag}")

    grid = np.zeros((1, rows, cols, 1, 2), dtype=np.float32)
    grid[..., 0] = np.arange(cols, dtype=np.float32)[None, :, None]
    grid[..., 1] = np.arange(rows, dtype=np.float32)[:, None, None]
    biases = ctx.add("Reshape", [ctx.blob(node, 0), ctx.ints(f"{node.name}_anchor_shape", [1, 1, 1, k, 2])],
                     name=f"{node.name}/anchors")
    # x, y: (grid + sigmoid) / (cols, rows); w, h: exp * anchor / (rows, cols), OpenCV's divisors.
    xy = ctx.add("Add", [ctx.add("Sigmoid", [part(0, 2, "txy")], name=f"{node.name}/sxy"),
                         ctx.constant(f"{node.name}_grid", grid)], name=f"{node.name}/gxy")
    xy = ctx.add("Div", [xy, ctx.constant(f"{node.name}_xy_div", np.array([cols, rows], dtype=np.float32))],
                 name=f"{node.name}/xy")
    wh = ctx.add("Mul", [ctx.add("Exp", [part(2, 4, "twh")], name=f"{node.name}/ewh"), biases], name=f"{node.name}/awh")
    wh = ctx.add("Div", [wh, ctx.constant(f"{node.name}_wh_div", np.array([rows, cols], dtype=np.float32))],
                 name=f"{node.name}/wh")
    obj = ctx.add("Sigmoid", [part(4, 5, "tobj")], name=f"{node.name}/objectness")
    scores = part(5, cell, "tcls")
    cls = (ctx.add("Softmax", [scores], name=f"{node.name}/softmax", axis=-1) if a.softmax
           else ctx.add("Sigmoid", [scores], name=f"{node.name}/logistic"))
    prob = ctx.add("Mul", [obj, cls], name=f"{node.name}/prob")
    zero = ctx.constant(f"{node.name}_zero", 0.0)
    keep = ctx.add("Greater", [prob, ctx.constant(f"{node.name}_thresh", a.thresh)], name=f"{node.name}/above")
    prob = ctx.add("Where", [keep, prob, zero], name=f"{node.name}/thresholded")
    boxes = ctx.add("Concat", [xy, wh], name=f"{node.name}/boxes", axis=4)
    flat_boxes = ctx.add("Reshape", [boxes, ctx.ints(f"{node.name}_box_rows", [-1, rows * cols * k, 4])],
                         name=f"{node.name}/box_rows")
    flat_prob = ctx.add("Reshape", [prob, ctx.ints(f"{node.name}_prob_rows", [-1, rows * cols * k, a.classes])],
                        name=f"{node.name}/prob_rows")
    if a.nms_threshold > 0:
        flat_prob = _region_nms(ctx, node, flat_boxes, flat_prob, rows * cols * k, a)
    obj_rows = ctx.add("Reshape", [obj, ctx.ints(f"{node.name}_obj_rows", [-1, rows * cols * k, 1])],
                       name=f"{node.name}/obj_rows")
    out = ctx.add("Concat", [flat_boxes, obj_rows, flat_prob], name=f"{node.name}/rows", axis=2)
    ctx.add("Reshape", [out, ctx.ints(f"{node.name}_out", [-1, cell])], [node.tops[0]], name=node.name)


def _region_nms(ctx, node, boxes: str, prob: str, count: int, a) -> str:
    """Per image and class, NonMaxSuppression on (cx, cy, w, h) boxes: scores above ``thresh``,
    a box dropped when it overlaps a kept one by more than ``nms_threshold`` (OpenCV's NMSFast_);
    the scores of the dropped boxes set to 0."""
    per_class = ctx.add("Transpose", [prob], name=f"{node.name}/per_class", perm=[0, 2, 1])
    selected = ctx.add("NonMaxSuppression", [boxes, per_class, ctx.ints(f"{node.name}_max_boxes", [count]),
                                             ctx.constant(f"{node.name}_iou", a.nms_threshold),
                                             ctx.constant(f"{node.name}_score", a.thresh)],
                       name=f"{node.name}/nms", center_point_box=1)
    kept = ctx.add("GatherND", [per_class, selected], name=f"{node.name}/kept_scores")
    zeros = ctx.add("Mul", [per_class, ctx.constant(f"{node.name}_nms_zero", 0.0)], name=f"{node.name}/zeros")
    cleared = ctx.add("ScatterND", [zeros, selected, kept], name=f"{node.name}/kept")
    return ctx.add("Transpose", [cleared], name=f"{node.name}/per_box", perm=[0, 2, 1])



refuse("Proposal", "Proposal has no exact ONNX form: OpenCV's (and py-faster-rcnn's) NMS measures pixel "
       "boxes with + 1 areas, which ONNX NonMaxSuppression cannot; export the net up to the RPN outputs "
       "and run the proposal step on the host")
