"""Convolution, Deconvolution, InnerProduct, Pooling and LRN as ONNX, Caffe semantics kept."""
from __future__ import annotations

import numpy as np

from convnet_io.graph.layers.common import canonical_axis
from convnet_io.graph.layers.vision import Pooling as PoolingSpec
from convnet_io.graph.layers.vision import convolution_tail
from convnet_io.graph.layers.conv_nd import is_nd
from convnet_io.onnx_export.conv_nd import export_convolution_nd
from convnet_io.onnx_export.registry import exporter


@exporter("Convolution", "Deconvolution")
def export_convolution(ctx, node):
    if is_nd(node.attrs.spatial, ctx.shape(node.bottoms[0])):
        return export_convolution_nd(ctx, node)
    a = node.attrs
    op = "ConvTranspose" if node.type == "Deconvolution" else "Conv"
    inputs_w = [ctx.blob(node, i) for i in range(len(node.params))]
    tail = (0, 0) if op == "ConvTranspose" else convolution_tail(a, ctx.shape(node.bottoms[0]), ctx.shape(node.tops[0]))
    for bottom, top in zip(node.bottoms, node.tops):
        ctx.add(op, [bottom, *inputs_w], [top], name=node.name,
                kernel_shape=list(a.kernel), strides=list(a.stride), dilations=list(a.dilation),
                pads=[a.pad[0], a.pad[1], a.pad[0] + tail[0], a.pad[1] + tail[1]], group=a.group)


@exporter("InnerProduct")
def export_inner_product(ctx, node):
    a = node.attrs
    bottom, top = node.bottoms[0], node.tops[0]
    axis = canonical_axis(a.axis, len(ctx.shape(bottom)))
    w = ctx.blobs[node.name][0]
    bias = ctx.blob(node, 1) if a.bias_term else None
    if axis == 1 and len(ctx.shape(bottom)) >= 2:
        flat = bottom if len(ctx.shape(bottom)) == 2 else ctx.add("Flatten", [bottom], name=f"{node.name}/flatten", axis=1)
        ctx.add("Gemm", [flat, ctx.blob(node, 0)] + ([bias] if bias else []), [top], name=node.name,
                transB=0 if a.transpose else 1)
        return
    # Other axes: keep the leading axes (copied with 0s), flatten the rest, multiply.
    shape = ctx.ints(f"{node.name}_shape", [0] * axis + [-1])
    flat = ctx.add("Reshape", [bottom, shape], name=f"{node.name}/reshape")
    wt = w if a.transpose else w.T
    out = ctx.add("MatMul", [flat, ctx.blob(node, 0, np.ascontiguousarray(wt), role="wt")], None if bias else [top],
                  name=node.name)
    if bias:
        ctx.add("Add", [out, bias], [top], name=f"{node.name}/bias")


@exporter("Pooling")
def export_pooling(ctx, node):
    bottom, top = node.bottoms[0], node.tops[0]
    (n, c, h, w), (_, _, oh, ow) = ctx.shape(bottom), ctx.shape(top)
    a = PoolingSpec.resolved(node.attrs, ctx.shape(bottom))
    if a.global_pooling and a.method in ("MAX", "AVE") and len(node.tops) == 1:
        ctx.add("GlobalMaxPool" if a.method == "MAX" else "GlobalAveragePool", [bottom], [top], name=node.name)
        return
    if a.method not in ("MAX", "AVE"):
        raise ValueError(f"{a.method} pooling cannot be exported")
    # Caffe's output size (ceil with its clip rule, or floor) made explicit: pad the end so the
    # windows cover exactly (out - 1) * stride + kernel, or crop what no window reads.
    extra = [(oh - 1) * a.stride[0] + a.kernel[0] - h - a.pad[0],
             (ow - 1) * a.stride[1] + a.kernel[1] - w - a.pad[1]]
    x = bottom
    if min(extra) < 0:
        ends = [h + min(extra[0], 0), w + min(extra[1], 0)]
        x = ctx.add("Slice", [x, ctx.ints(f"{node.name}_starts", [0, 0]), ctx.ints(f"{node.name}_ends", ends),
                              ctx.ints(f"{node.name}_axes", [2, 3])], name=f"{node.name}/crop")
        extra = [max(e, 0) for e in extra]
    pads = [a.pad[0], a.pad[1], extra[0], extra[1]]
    if max(pads) >= min(a.kernel):
        # ONNX pooling wants pads smaller than the kernel (a stride past the kernel can ask for
        # more): pad explicitly, with -FLT_MAX for MAX (what Caffe's empty windows hold), 0 for AVE.
        value = float(np.finfo(np.float32).min) if a.method == "MAX" else 0.0
        x = ctx.add("Pad", [x, ctx.ints(f"{node.name}_pads", [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]),
                            ctx.constant(f"{node.name}_pad_value", value)], name=f"{node.name}/pad", mode="constant")
        pads = [0, 0, 0, 0]
    kw = dict(kernel_shape=list(a.kernel), strides=list(a.stride), pads=pads)
    if a.method == "MAX" and len(node.tops) > 1:
        _max_with_mask(ctx, node, x, kw, (h, w), (oh, ow), a)
        return
    if a.method == "MAX":
        ctx.add("MaxPool", [x], [top], name=node.name, **kw)
        return
    # AVE: Caffe divides by the window clipped at H + pad (padding counts, the overhang past it
    # does not). AveragePool with count_include_pad divides by k*k; a constant map corrects it.
    correction = _ave_correction(a, (h, w), (oh, ow))
    if np.allclose(correction, 1.0):
        ctx.add("AveragePool", [x], [top], name=node.name, count_include_pad=1, **kw)
        return
    avg = ctx.add("AveragePool", [x], name=node.name, count_include_pad=1, **kw)
    ctx.add("Mul", [avg, ctx.constant(f"{node.name}_divisor", correction[None, None])], [top],
            name=f"{node.name}/divisor")


def _max_with_mask(ctx, node, x, kw, in_hw, out_hw, a):
    """MaxPool and Caffe's mask top: MaxPool's Indices count over the tensor it read (ONNX Runtime
    counts the ``pads`` attribute's padding in, so the padding is made explicit here, with
    -FLT_MAX as Caffe's empty start), turned back into the plane index ``h * W + w`` of the
    input, as float."""
    (h, w), (oh, ow) = in_hw, out_hw
    extra = [((oh, ow)[i] - 1) * a.stride[i] + a.kernel[i] - (h, w)[i] - a.pad[i] for i in range(2)]
    xh, xw = h + min(extra[0], 0), w + min(extra[1], 0)
    pads = kw["pads"]
    if any(pads):
        low = float(np.finfo(np.float32).min)
        x = ctx.add("Pad", [x, ctx.ints(f"{node.name}_mask_pads", [0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]]),
                            ctx.constant(f"{node.name}_mask_pad_value", low)], name=f"{node.name}/pad", mode="constant")
        kw = dict(kw, pads=[0, 0, 0, 0])
    explicit = a.pad  # the tensor MaxPool reads starts pad rows / columns before the input
    xh, xw = xh + a.pad[0] + max(extra[0], 0), xw + a.pad[1] + max(extra[1], 0)
    index = ctx.fresh(f"{node.name}_indices")
    ctx.add("MaxPool", [x], [node.tops[0], index], name=node.name, **kw)
    plane = ctx.add("Mod", [index, ctx.ints(f"{node.name}_plane", [xh * xw])], name=f"{node.name}/plane")
    width = ctx.ints(f"{node.name}_width", [xw])
    row = ctx.add("Sub", [ctx.add("Div", [plane, width], name=f"{node.name}/row"),
                          ctx.ints(f"{node.name}_pad_h", [explicit[0]])], name=f"{node.name}/row_unpadded")
    col = ctx.add("Sub", [ctx.add("Mod", [plane, width], name=f"{node.name}/col"),
                          ctx.ints(f"{node.name}_pad_w", [explicit[1]])], name=f"{node.name}/col_unpadded")
    offset = ctx.add("Mul", [row, ctx.ints(f"{node.name}_in_width", [w])], name=f"{node.name}/row_offset")
    flat = ctx.add("Add", [offset, col], name=f"{node.name}/mask_index")
    ctx.add("Cast", [flat], [node.tops[1]], name=f"{node.name}/mask", to=1)  # FLOAT


def _ave_correction(a, in_hw, out_hw) -> np.ndarray:
    sizes = []
    for i in range(2):
        starts = np.arange(out_hw[i]) * a.stride[i] - a.pad[i]
        ends = np.minimum(starts + a.kernel[i], in_hw[i] + a.pad[i])
        sizes.append(ends - starts)
    pool = sizes[0][:, None] * sizes[1][None, :]
    return (a.kernel[0] * a.kernel[1]) / pool.astype(np.float64)


@exporter("LRN")
def export_lrn(ctx, node):
    a = node.attrs
    x, top = node.bottoms[0], node.tops[0]
    if a.norm_region == "ACROSS_CHANNELS":
        # ONNX LRN: x / (bias + alpha/size * sum over size channels)^beta, as Caffe.
        ctx.add("LRN", [x], [top], name=node.name, size=a.local_size, alpha=a.alpha, beta=a.beta, bias=a.k)
        return
    # WITHIN_CHANNEL, as Caffe builds it: x * (1 + alpha * avgpool(x^2))^-beta, k unused.
    half = (a.local_size - 1) // 2
    sq = ctx.add("Mul", [x, x], name=f"{node.name}/square")
    avg = ctx.add("AveragePool", [sq], name=f"{node.name}/pool", kernel_shape=[a.local_size] * 2,
                  strides=[1, 1], pads=[half] * 4, count_include_pad=1)
    scaled = ctx.add("Mul", [avg, ctx.constant(f"{node.name}_alpha", a.alpha)], name=f"{node.name}/alpha")
    shifted = ctx.add("Add", [scaled, ctx.constant(f"{node.name}_one", 1.0)], name=f"{node.name}/shift")
    power = ctx.add("Pow", [shifted, ctx.constant(f"{node.name}_beta", -a.beta)], name=f"{node.name}/power")
    ctx.add("Mul", [x, power], [top], name=node.name)
