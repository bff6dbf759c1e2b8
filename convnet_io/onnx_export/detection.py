"""SSD's Permute, PriorBox, Normalize and DetectionOutput as ONNX.

DetectionOutput becomes box decoding, a per-class ``TopK`` (the fork's ``top_k`` candidates),
``NonMaxSuppression`` with every (image, class) pair as its own batch, so that the selected rows
come out as Caffe-SSD writes them (image, then label ascending, then score descending), and
``keep_top_k`` as a rank within the image. ONNX's NonMaxSuppression keeps a box whose overlap with
a kept one is at most the threshold and a score above ``score_threshold``, as ApplyNMSFast does;
the adaptive ``eta`` has no ONNX form and is refused.
"""
from __future__ import annotations

import numpy as np

from convnet_io.graph.layers.detection import permute_order, prior_box_values
from convnet_io.onnx_export.registry import exporter

INT64 = 7  # TensorProto.INT64
FLOAT = 1  # TensorProto.FLOAT


@exporter("Permute")
def export_permute(ctx, node):
    order = permute_order(node.attrs.order, len(ctx.shape(node.bottoms[0])))
    ctx.add("Transpose", [node.bottoms[0]], [node.tops[0]], name=node.name, perm=list(order))


@exporter("PriorBox")
def export_prior_box(ctx, node):
    """The priors depend only on the (static) spatial sizes: a constant."""
    feat, image = (ctx.shape(b) for b in node.bottoms)
    values = prior_box_values(node.attrs, feat[2], feat[3], image[2], image[3])
    ctx.add("Identity", [ctx.constant(f"{node.name}_priors", values)], [node.tops[0]], name=node.name)


def _reduce(ctx, op: str, x: str, axes: list[int], name: str, keepdims: int = 1) -> str:
    """ReduceSum takes its axes as an input from opset 13, the other reductions from opset 18."""
    if op == "ReduceSum" or ctx.opset >= 18:
        return ctx.add(op, [x, ctx.ints(f"{name}_axes", axes)], name=name, keepdims=keepdims)
    return ctx.add(op, [x], name=name, axes=axes, keepdims=keepdims)


@exporter("Normalize")
def export_normalize(ctx, node):
    a = node.attrs
    x, y = node.bottoms[0], node.tops[0]
    ndim = len(ctx.shape(x))
    axes = list(range(1, ndim)) if a.across_spatial else [1]
    sq = _reduce(ctx, "ReduceSumSquare", x, axes, f"{node.name}/sumsq")
    norm = ctx.add("Sqrt", [ctx.add("Add", [sq, ctx.constant(f"{node.name}_eps", a.eps)],
                                    name=f"{node.name}/eps")], name=f"{node.name}/norm")
    if a.across_spatial:  # Caffe multiplies by the reciprocal here, divides per pixel otherwise
        inv = ctx.add("Reciprocal", [norm], name=f"{node.name}/inv")
        normed = ctx.add("Mul", [x, inv], name=f"{node.name}/normed")
    else:
        normed = ctx.add("Div", [x, norm], name=f"{node.name}/normed")
    scale = ctx.blobs[node.name][0]
    scale = scale.reshape(()) if a.channel_shared else scale.reshape([-1] + [1] * (ndim - 2))
    ctx.add("Mul", [normed, ctx.blob(node, 0, scale, role="scale")], [y], name=node.name)


# -- DetectionOutput ------------------------------------------------------------------------------

def _column(ctx, x: str, i: int, name: str) -> str:
    """x[..., i] (the last axis dropped)."""
    return ctx.add("Gather", [x, ctx.ints(f"{name}_index", i)], name=name, axis=-1)


def _decode(ctx, node, loc: str, prior: str) -> str:
    """DecodeBBox for every (image, location class, prior): loc (N, L, P, 4) -> boxes, float32."""
    a = node.attrs
    n = node.name
    priors = ctx.add("Reshape", [prior, ctx.ints(f"{n}_prior_shape", [2, -1, 4])], name=f"{n}/priors")
    box = ctx.add("Gather", [priors, ctx.ints(f"{n}_box_row", 0)], name=f"{n}/prior_box", axis=0)
    var = ctx.add("Gather", [priors, ctx.ints(f"{n}_var_row", 1)], name=f"{n}/prior_var", axis=0)
    p = [_column(ctx, box, i, f"{n}/p{i}") for i in range(4)]
    v = [_column(ctx, var, i, f"{n}/v{i}") for i in range(4)]
    d = [_column(ctx, loc, i, f"{n}/d{i}") for i in range(4)]

    def op(kind, x, y, tag):
        return ctx.add(kind, [x, y], name=f"{n}/{tag}")

    if not a.variance_encoded_in_target:
        d = [op("Mul", v[i], d[i], f"vd{i}") for i in range(4)]
    if a.code_type == "CORNER":
        out = [op("Add", p[i], d[i], f"corner{i}") for i in range(4)]
    elif a.code_type == "CORNER_SIZE":
        pw, ph = op("Sub", p[2], p[0], "pw"), op("Sub", p[3], p[1], "ph")
        sides = [pw, ph, pw, ph]
        out = [op("Add", p[i], op("Mul", d[i], sides[i], f"scaled{i}"), f"corner{i}") for i in range(4)]
    else:  # CENTER_SIZE
        half = ctx.constant(f"{n}_half", 0.5)
        pw, ph = op("Sub", p[2], p[0], "pw"), op("Sub", p[3], p[1], "ph")
        pcx = op("Mul", op("Add", p[0], p[2], "px_sum"), half, "pcx")
        pcy = op("Mul", op("Add", p[1], p[3], "py_sum"), half, "pcy")
        cx = op("Add", op("Mul", d[0], pw, "dx"), pcx, "cx")
        cy = op("Add", op("Mul", d[1], ph, "dy"), pcy, "cy")
        w = op("Mul", ctx.add("Exp", [d[2]], name=f"{n}/exp_w"), pw, "w")
        h = op("Mul", ctx.add("Exp", [d[3]], name=f"{n}/exp_h"), ph, "h")
        hw, hh = op("Mul", w, half, "half_w"), op("Mul", h, half, "half_h")
        out = [op("Sub", cx, hw, "x0"), op("Sub", cy, hh, "y0"), op("Add", cx, hw, "x1"), op("Add", cy, hh, "y1")]
    last = ctx.ints(f"{n}_last_axis", [-1])
    cols = [ctx.add("Unsqueeze", [c, last], name=f"{n}/col{i}") for i, c in enumerate(out)]
    return ctx.add("Concat", cols, name=f"{n}/boxes", axis=-1)


@exporter("DetectionOutput")
def export_detection_output(ctx, node):
    a = node.attrs
    n = node.name
    if a.eta != 1.0:
        raise ValueError(f"nms_param eta {a.eta} (adaptive NMS) has no ONNX NonMaxSuppression form")
    loc, conf, prior = node.bottoms
    priors = ctx.shape(prior)[2] // 4
    classes = [c for c in range(a.num_classes) if c != a.background_label_id]
    k = priors if a.top_k < 0 else min(a.top_k, priors)
    ints = ctx.ints

    loc4 = ctx.add("Reshape", [loc, ints(f"{n}_loc_shape", [0, priors, a.num_loc_classes, 4])], name=f"{n}/loc")
    loc4 = ctx.add("Transpose", [loc4], name=f"{n}/loc_t", perm=[0, 2, 1, 3])  # (N, L, P, 4)
    boxes = _decode(ctx, node, loc4, prior)
    class_ids = ints(f"{n}_classes", classes)
    if a.share_location:
        boxes = ctx.add("Expand", [boxes, ints(f"{n}_expand", [1, len(classes), 1, 1])], name=f"{n}/per_class")
    else:
        boxes = ctx.add("Gather", [boxes, class_ids], name=f"{n}/class_boxes", axis=1)
    scores = ctx.add("Reshape", [conf, ints(f"{n}_conf_shape", [0, priors, a.num_classes])], name=f"{n}/conf")
    scores = ctx.add("Transpose", [scores], name=f"{n}/conf_t", perm=[0, 2, 1])  # (N, C, P)
    scores = ctx.add("Gather", [scores, class_ids], name=f"{n}/class_scores", axis=1)

    # The fork's top_k candidates per class (TopK keeps the lower index first among equals, as
    # the fork's stable sort does).
    top_scores = ctx.fresh(f"{n}_top_scores")
    top_index = ctx.fresh(f"{n}_top_index")
    ctx.add("TopK", [scores, ints(f"{n}_k", [k])], [top_scores, top_index], name=f"{n}/top_k", axis=2)
    index4 = ctx.add("Expand", [ctx.add("Unsqueeze", [top_index, ints(f"{n}_axis3", [3])], name=f"{n}/index4"),
                                ints(f"{n}_expand4", [1, 1, 1, 4])], name=f"{n}/index4_x")
    top_boxes = ctx.add("GatherElements", [boxes, index4], name=f"{n}/top_boxes", axis=2)
    flat_boxes = ctx.add("Reshape", [top_boxes, ints(f"{n}_boxes_shape", [-1, k, 4])], name=f"{n}/nms_boxes")
    flat_scores = ctx.add("Reshape", [top_scores, ints(f"{n}_scores_shape", [-1, 1, k])], name=f"{n}/nms_scores")
    nms_in = [flat_boxes, flat_scores, ints(f"{n}_max_out", [k]),
              ctx.constant(f"{n}_iou", np.array([a.nms_threshold], dtype=np.float32))]
    if a.confidence_threshold != -np.inf:
        nms_in.append(ctx.constant(f"{n}_score_threshold", np.array([a.confidence_threshold], dtype=np.float32)))
    selected = ctx.add("NonMaxSuppression", nms_in, name=f"{n}/nms", center_point_box=0)

    pair = ctx.add("Gather", [selected, ints(f"{n}_col0", 0)], name=f"{n}/pair", axis=1)  # image * C' + class
    slot = ctx.add("Gather", [selected, ints(f"{n}_col2", 2)], name=f"{n}/slot", axis=1)
    per_image = ints(f"{n}_num_fg", len(classes))
    image = ctx.add("Div", [pair, per_image], name=f"{n}/image")
    label = ctx.add("Gather", [class_ids, ctx.add("Mod", [pair, per_image], name=f"{n}/class_slot")],
                    name=f"{n}/label", axis=0)
    flat = ctx.add("Add", [ctx.add("Mul", [pair, ints(f"{n}_k_scalar", k)], name=f"{n}/pair_k"), slot],
                   name=f"{n}/flat")
    score = ctx.add("Gather", [ctx.add("Reshape", [top_scores, ints(f"{n}_all", [-1])], name=f"{n}/all_scores"),
                               flat], name=f"{n}/score", axis=0)
    box = ctx.add("Gather", [ctx.add("Reshape", [top_boxes, ints(f"{n}_all_boxes", [-1, 4])], name=f"{n}/all_boxes"),
                             flat], name=f"{n}/box", axis=0)
    batch = ctx.add("Slice", [ctx.add("Shape", [loc], name=f"{n}/loc_shape"), ints(f"{n}_s0", [0]),
                              ints(f"{n}_s1", [1])], name=f"{n}/batch")
    if a.keep_top_k > -1:
        image, label, score, box = _keep_top_k(ctx, n, a.keep_top_k, image, label, score, box, batch)

    columns = [ctx.add("Unsqueeze", [ctx.add("Cast", [v], name=f"{n}/{tag}_f", to=FLOAT), ints(f"{n}_{tag}_ax", [1])],
                       name=f"{n}/{tag}_col") for v, tag in ((image, "image"), (label, "label"))]
    columns.append(ctx.add("Unsqueeze", [score, ints(f"{n}_score_ax", [1])], name=f"{n}/score_col"))
    rows = ctx.add("Concat", [*columns, box], name=f"{n}/rows", axis=1)

    # No detection in the whole batch: one (i, -1, ..., -1) row per image, as the fork writes.
    ids = ctx.add("Cast", [ctx.add("Range", [ints(f"{n}_zero", 0),
                                             ctx.add("Squeeze", [batch, ints(f"{n}_sq", [0])], name=f"{n}/n"),
                                             ints(f"{n}_one", 1)], name=f"{n}/ids")], name=f"{n}/ids_f", to=FLOAT)
    ids = ctx.add("Unsqueeze", [ids, ints(f"{n}_ids_ax", [1])], name=f"{n}/ids_col")
    minus = ctx.add("Expand", [ctx.constant(f"{n}_minus_one", -np.ones((1, 6), dtype=np.float32)),
                               ctx.add("Concat", [batch, ints(f"{n}_six", [6])], name=f"{n}/fill_shape", axis=0)],
                    name=f"{n}/minus")
    empty_rows = ctx.add("Concat", [ids, minus], name=f"{n}/empty_rows", axis=1)
    both = ctx.add("Concat", [rows, empty_rows], name=f"{n}/both", axis=0)
    found = ctx.add("Slice", [ctx.add("Shape", [rows], name=f"{n}/rows_shape"), ints(f"{n}_r0", [0]),
                              ints(f"{n}_r1", [1])], name=f"{n}/found")
    none = ctx.add("Cast", [ctx.add("Equal", [found, ints(f"{n}_zero1", [0])], name=f"{n}/none_b")],
                   name=f"{n}/none", to=INT64)
    end = ctx.add("Add", [found, ctx.add("Mul", [none, batch], name=f"{n}/fallback")], name=f"{n}/end")
    out = ctx.add("Slice", [both, ints(f"{n}_start", [0]), end, ints(f"{n}_axis0", [0])], name=f"{n}/out")
    ctx.add("Reshape", [out, ints(f"{n}_out_shape", [1, 1, -1, 7])], [node.tops[0]], name=n)
    ctx.output_dims[node.tops[0]] = [1, 1, f"{n}_detections", 7]


def _keep_top_k(ctx, n: str, keep: int, image: str, label: str, score: str, box: str, batch: str):
    """The fork's keep_top_k: per image, the ``keep`` best-scoring rows (an earlier row first among
    equal scores); the kept rows stay in their order. Two stable TopK sorts (score descending, then
    image ascending) give each row's rank within its image; no rows x rows matrix is built."""
    ints = ctx.ints
    count = ctx.add("Shape", [score], name=f"{n}/count")
    by_score = ctx.fresh(f"{n}_by_score")
    ctx.add("TopK", [score, count], [ctx.fresh(f"{n}_sorted_scores"), by_score], name=f"{n}/sort_score",
            axis=0, largest=1, sorted=1)
    image_by_score = ctx.add("Gather", [image, by_score], name=f"{n}/image_by_score", axis=0)
    sorted_image, by_image = ctx.fresh(f"{n}_sorted_image"), ctx.fresh(f"{n}_by_image")
    ctx.add("TopK", [image_by_score, count], [sorted_image, by_image], name=f"{n}/sort_image",
            axis=0, largest=0, sorted=1)
    order = ctx.add("Gather", [by_score, by_image], name=f"{n}/order", axis=0)  # rows by (image, -score)
    # Rank within the image: position minus the number of rows of earlier images.
    per_image = ctx.add("ReduceSum", [ctx.add("OneHot", [image, batch, ints(f"{n}_onehot", [0, 1])],
                                              name=f"{n}/onehot", axis=-1), ints(f"{n}_rows_axis", [0])],
                        name=f"{n}/per_image", keepdims=0)
    starts = ctx.add("CumSum", [per_image, ints(f"{n}_cum_axis", 0)], name=f"{n}/starts", exclusive=1)
    position = ctx.add("Range", [ints(f"{n}_r_start", 0), ctx.add("Squeeze", [count, ints(f"{n}_sq0", [0])],
                                                                   name=f"{n}/m"),
                                 ints(f"{n}_r_step", 1)], name=f"{n}/position")
    rank = ctx.add("Sub", [position, ctx.add("Gather", [starts, sorted_image], name=f"{n}/start", axis=0)],
                   name=f"{n}/rank")
    kept_sorted = ctx.add("Cast", [ctx.add("Less", [rank, ints(f"{n}_keep", keep)], name=f"{n}/keep_b")],
                          name=f"{n}/keep_i", to=INT64)
    mask = ctx.add("ScatterElements", [ctx.add("Mul", [position, ints(f"{n}_zero_m", 0)], name=f"{n}/zeros"),
                                       order, kept_sorted], name=f"{n}/mask", axis=0)
    kept = ctx.add("NonZero", [mask], name=f"{n}/kept_nz")
    kept = ctx.add("Squeeze", [kept, ints(f"{n}_ax0", [0])], name=f"{n}/kept")
    return tuple(ctx.add("Gather", [v, kept], name=f"{n}/keep_{i}", axis=0)
                 for i, v in enumerate((image, label, score, box)))
