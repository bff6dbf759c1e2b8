"""float64 NumPy transcriptions of the forks' C++ forward loops (SegNet, PSPNet, Fast R-CNN,
R-FCN, darknet / OpenCV's YOLO layers), written from their sources, for the fork-layer tests.

Where the C++ computes an intermediate in ``float`` (Caffe's Dtype: bin sizes, interpolation
ratios), the transcription does too (np.float32), so that a floor or ceil lands where the fork's
does; the sums and products themselves are float64."""
from __future__ import annotations

import math

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
f32 = np.float32


def c_round(v: float) -> int:
    """C's round(): halves away from zero."""
    return math.floor(abs(v) + 0.5) * (1 if v >= 0 else -1)


def pooled_size(size, kernel, stride, pad, ceil=True, any_pad=False):
    span = size + 2 * pad - kernel
    out = (-(-span // stride) if ceil else span // stride) + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def max_pool_with_mask(x, kernel, stride, pad=(0, 0), ceil=True):
    """PoolingLayer::Forward_cpu, MAX with a mask top: each window starts at -FLT_MAX with index
    -1 and takes a value only when it is greater (so the first maximum in row-major order wins);
    the mask holds ``h * width + w`` in the unpadded input."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    any_pad = bool(pad[0] or pad[1])
    oh = pooled_size(h, kernel[0], stride[0], pad[0], ceil, any_pad)
    ow = pooled_size(w, kernel[1], stride[1], pad[1], ceil, any_pad)
    out = np.full((n, c, oh, ow), -FLT_MAX)
    mask = np.full((n, c, oh, ow), -1.0)
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            he, we = min(hs + kernel[0], h), min(ws + kernel[1], w)
            for hh in range(max(hs, 0), he):
                for ww in range(max(ws, 0), we):
                    v = x[:, :, hh, ww]
                    better = v > out[:, :, ph, pw]
                    out[:, :, ph, pw] = np.where(better, v, out[:, :, ph, pw])
                    mask[:, :, ph, pw] = np.where(better, hh * w + ww, mask[:, :, ph, pw])
    return out, mask


def segnet_upsample(x, mask, out_hw):
    """UpsampleLayer::Forward_cpu (caffe-segnet): zeros, then top[mask[i]] = bottom[i] per plane."""
    x = np.asarray(x, dtype=np.float64)
    n, c = x.shape[:2]
    top = np.zeros((n, c, out_hw[0] * out_hw[1]))
    for b in range(n):
        for ch in range(c):
            for i, (v, idx) in enumerate(zip(x[b, ch].ravel(), np.asarray(mask)[b, ch].ravel())):
                top[b, ch, int(idx)] = v
    return top.reshape(n, c, *out_hw)


def nearest_upsample(x, scale):
    """The YOLOv3 ports' upsample: top[h, w] = bottom[h / scale, w / scale]."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    out = np.empty((n, c, h * scale, w * scale))
    for i in range(h * scale):
        for j in range(w * scale):
            out[:, :, i, j] = x[:, :, i // scale, j // scale]
    return out


def interp(x, pad_beg, pad_end, out_hw):
    """PSPNet's caffe_cpu_interp2 as InterpLayer calls it: the input cropped by -pad_beg from the
    top-left to an effective size in + pad_beg + pad_end, ratio (in - 1) / (out - 1) in float
    (0 for a one-pixel output), h1 = int(h1r), the next row only while h1 < in - 1."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    h1, w1 = h + pad_beg + pad_end, w + pad_beg + pad_end
    src = x[:, :, -pad_beg:-pad_beg + h1, -pad_beg:-pad_beg + w1]
    h2, w2 = out_hw
    if (h1, w1) == (h2, w2):
        return src.copy()
    rh = f32(h1 - 1) / f32(h2 - 1) if h2 > 1 else f32(0)
    rw = f32(w1 - 1) / f32(w2 - 1) if w2 > 1 else f32(0)
    out = np.empty((n, c, h2, w2))
    for i in range(h2):
        hr = f32(rh * f32(i))
        hi = int(hr)
        hp = 1 if hi < h1 - 1 else 0
        l1 = float(hr - f32(hi))
        for j in range(w2):
            wr = f32(rw * f32(j))
            wi = int(wr)
            wp = 1 if wi < w1 - 1 else 0
            m1 = float(wr - f32(wi))
            out[:, :, i, j] = ((1 - l1) * ((1 - m1) * src[:, :, hi, wi] + m1 * src[:, :, hi, wi + wp])
                               + l1 * ((1 - m1) * src[:, :, hi + hp, wi] + m1 * src[:, :, hi + hp, wi + wp]))
    return out


def roi_pooling(features, rois, pooled, spatial_scale):
    """ROIPoolingLayer::Forward_cpu (caffe-fast-rcnn)."""
    x = np.asarray(features, dtype=np.float64)
    rois = np.asarray(rois, dtype=np.float32).reshape(-1, 5)
    _, c, h, w = x.shape
    ph_n, pw_n = pooled
    out = np.zeros((len(rois), c, ph_n, pw_n))
    scale = f32(spatial_scale)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw, sh, ew, eh = (c_round(float(f32(v) * scale)) for v in roi[1:])
        rh, rw = max(eh - sh + 1, 1), max(ew - sw + 1, 1)
        bh, bw = f32(rh) / f32(ph_n), f32(rw) / f32(pw_n)
        for ph in range(ph_n):
            for pw in range(pw_n):
                hs = min(max(math.floor(f32(ph) * bh) + sh, 0), h)
                he = min(max(math.ceil(f32(ph + 1) * bh) + sh, 0), h)
                ws = min(max(math.floor(f32(pw) * bw) + sw, 0), w)
                we = min(max(math.ceil(f32(pw + 1) * bw) + sw, 0), w)
                if he <= hs or we <= ws:
                    continue  # an empty bin is 0
                best = np.full(c, -FLT_MAX)
                for yy in range(hs, he):
                    for xx in range(ws, we):
                        best = np.maximum(best, x[b, :, yy, xx])
                out[r, :, ph, pw] = best
    return out


def psroi_pooling(features, rois, output_dim, group_size, spatial_scale):
    """PSROIPoolingLayer::Forward_cpu (caffe-rfcn): corners rounded then scaled (the end + 1),
    sizes at least 0.1, bins floor/ceil of float offsets, average of channel
    (c * group + gh) * group + gw."""
    x = np.asarray(features, dtype=np.float64)
    rois = np.asarray(rois, dtype=np.float32).reshape(-1, 5)
    _, _, h, w = x.shape
    g = group_size
    out = np.zeros((len(rois), output_dim, g, g))
    scale = f32(spatial_scale)
    for r, roi in enumerate(rois):
        b = int(roi[0])
        sw = f32(c_round(float(roi[1]))) * scale
        sh = f32(c_round(float(roi[2]))) * scale
        ew = f32(c_round(float(roi[3])) + 1.0) * scale
        eh = f32(c_round(float(roi[4])) + 1.0) * scale
        bh = max(eh - sh, f32(0.1)) / f32(g)
        bw = max(ew - sw, f32(0.1)) / f32(g)
        for ct in range(output_dim):
            for ph in range(g):
                for pw in range(g):
                    hs = min(max(math.floor(f32(ph) * bh + sh), 0), h)
                    he = min(max(math.ceil(f32(ph + 1) * bh + sh), 0), h)
                    ws = min(max(math.floor(f32(pw) * bw + sw), 0), w)
                    we = min(max(math.ceil(f32(pw + 1) * bw + sw), 0), w)
                    if he <= hs or we <= ws:
                        continue
                    ch = (ct * g + ph) * g + pw
                    out[r, ct, ph, pw] = x[b, ch, hs:he, ws:we].sum() / ((he - hs) * (we - ws))
    return out


def reorg(x, stride):
    """darknet's reorg_cpu(x, w, h, c, batch, stride, forward=0, out) with the input's w, h, c, as
    OpenCV's ReorgLayer runs it: out[in_index] = x[out_index], flat indices."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    s = stride
    out_c = c // (s * s)
    src = x.reshape(n, -1)
    dst = np.empty_like(src)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2, offset = k % out_c, k // out_c
                w2, h2 = i * s + offset % s, j * s + offset // s
                out_index = w2 + w * s * (h2 + h * s * c2)
                dst[:, in_index] = src[:, out_index]
    return dst.reshape(n, c * s * s, h // s, w // s)


def _rect_overlap(a, b):
    """1 - jaccardDistance of two (x, y, w, h) rectangles, as OpenCV's Rect2f."""
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    inter = max(iw, 0.0) * max(ih, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def region(x, biases, classes, anchors, softmax=True, thresh=0.2, nms_threshold=0.4):
    """OpenCV's RegionLayerImpl::forward on a channels-last (N, H, W, A * (5 + classes)) input,
    rows (y * W + x) * A + a per image, then do_nms_sort (per class: candidates above thresh in
    stable descending order, kept when no kept box overlaps more than nms_threshold)."""
    x = np.asarray(x, dtype=np.float64)
    n, rows, cols, _ = x.shape
    cell = 5 + classes
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    result = []
    for b in range(n):
        src = x[b].reshape(-1, cell)
        dst = np.zeros_like(src)
        for y in range(rows):
            for xx in range(cols):
                for a in range(anchors):
                    i = (y * cols + xx) * anchors + a
                    v = src[i]
                    dst[i, 0] = (xx + sig(v[0])) / cols
                    dst[i, 1] = (y + sig(v[1])) / rows
                    dst[i, 2] = math.exp(v[2]) * biases[2 * a] / rows
                    dst[i, 3] = math.exp(v[3]) * biases[2 * a + 1] / cols
                    dst[i, 4] = sig(v[4])
                    if softmax:
                        e = np.exp(v[5:] - v[5:].max())
                        p = e / e.sum()
                    else:
                        p = sig(v[5:])
                    p = dst[i, 4] * p
                    dst[i, 5:] = np.where(p > thresh, p, 0.0)
        if nms_threshold > 0:
            boxes = [(r[0] - r[2] / 2, r[1] - r[3] / 2, r[2], r[3]) for r in dst]
            for k in range(classes):
                scores = dst[:, 5 + k].copy()
                order = sorted((i for i in range(len(scores)) if scores[i] > thresh), key=lambda i: -scores[i])
                kept = []
                for i in order:
                    if all(_rect_overlap(boxes[i], boxes[j]) <= nms_threshold for j in kept):
                        kept.append(i)
                dst[:, 5 + k] = 0.0
                dst[kept, 5 + k] = scores[kept]
        result.append(dst)
    return np.concatenate(result)


def shuffle_channel(x, group):
    """ShuffleChannelLayer: output channel c' * group + g is input channel g * (C / group) + c'."""
    x = np.asarray(x, dtype=np.float64)
    c = x.shape[1]
    per = c // group
    out = np.empty_like(x)
    for g in range(group):
        for cp in range(per):
            out[:, cp * group + g] = x[:, g * per + cp]
    return out


def axpy(scale, x, y):
    """AxpyLayer: top = a * X + Y, a one value per (n, c)."""
    scale = np.asarray(scale, dtype=np.float64).reshape(x.shape[0], x.shape[1], 1, 1)
    return scale * np.asarray(x, dtype=np.float64) + np.asarray(y, dtype=np.float64)


def bilinear_filler(shape):
    """Caffe's BilinearFiller: f = ceil(k / 2), c = (2f - 1 - f % 2) / (2f), weight
    (1 - |x / f - c|) (1 - |y / f - c|) for every filter."""
    k = shape[-1]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    w = np.empty(shape)
    flat = w.reshape(-1)
    for i in range(flat.size):
        xx, yy = i % k, (i // k) % shape[-2]
        flat[i] = (1 - abs(xx / f - c)) * (1 - abs(yy / f - c))
    return w


def proposal(scores, deltas, im_info, feat_stride, base_size, ratios, scales, pre_nms_topn, post_nms_topn,
             nms_thresh):
    """OpenCV's ProposalLayer (proposal_layer.cpp): its PriorBox (explicit sizes, step = stride,
    offset = base / (2 stride), pixel boxes with xmax = cx + w/2 - 1), then its DetectionOutput
    (CENTER_SIZE, variance in target, not normalized: prior sizes + 1; clipped to [0, cols - 1] x
    [0, rows - 1]; scores > 0, stable sort, top_k = pre_nms_topn, NMSFast_ with JaccardOverlap
    over (w + 1)(h + 1) areas, at most post_nms_topn kept); rows (0, x1, y1, x2, y2), zeros after."""
    scores, deltas = np.asarray(scores, np.float32), np.asarray(deltas, np.float32)
    _, c, h, w = scores.shape
    count = c // 2
    sizes = []
    for r in ratios:
        width = math.floor(f32(base_size) / math.sqrt(f32(r)) + 0.5)
        height = math.floor(f32(width) * f32(r) + f32(0.5))
        sizes += [(f32(s) * f32(width), f32(s) * f32(height)) for s in scales]
    offset = f32(0.5 * base_size / feat_stride)
    boxes, conf = [], []
    rows, cols = int(np.asarray(im_info).ravel()[0]), int(np.asarray(im_info).ravel()[1])

    def size(b):
        if b[2] < b[0] or b[3] < b[1]:
            return f32(0)
        return f32((b[2] - b[0] + f32(1)) * (b[3] - b[1] + f32(1)))

    for y in range(h):
        for x in range(w):
            for i, (bw, bh) in enumerate(sizes):
                cx, cy = (f32(x) + offset) * f32(feat_stride), (f32(y) + offset) * f32(feat_stride)
                prior = [cx - bw * f32(0.5), cy - bh * f32(0.5), cx + bw * f32(0.5) - f32(1), cy + bh * f32(0.5) - f32(1)]
                pw, ph = prior[2] - prior[0] + f32(1), prior[3] - prior[1] + f32(1)
                pcx, pcy = prior[0] + pw * f32(0.5), prior[1] + ph * f32(0.5)
                dx, dy, dw, dh = (deltas[0, 4 * i + k, y, x] for k in range(4))
                ccx, ccy = dx * pw + pcx, dy * ph + pcy
                ww, hh = f32(math.exp(dw)) * pw, f32(math.exp(dh)) * ph
                b = [ccx - ww * f32(0.5), ccy - hh * f32(0.5), ccx + ww * f32(0.5), ccy + hh * f32(0.5)]
                bounds = [cols - 1, rows - 1, cols - 1, rows - 1]
                boxes.append([f32(max(min(v, f32(m)), f32(0))) for v, m in zip(b, bounds)])
                conf.append(scores[0, count + i, y, x])
    order = sorted((i for i in range(len(conf)) if conf[i] > 0), key=lambda i: -conf[i])[:pre_nms_topn]
    kept = []
    for i in order:
        keep = True
        for j in kept:
            a, b = boxes[i], boxes[j]
            inter = size([max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])])
            overlap = inter / (size(a) + size(b) - inter) if inter > 0 else 0.0
            if not overlap <= f32(nms_thresh):
                keep = False
                break
        if keep:
            kept.append(i)
            if len(kept) >= post_nms_topn:
                break
    rois = np.zeros((post_nms_topn, 5))
    out = np.zeros((post_nms_topn, 1))
    for r, i in enumerate(kept):
        rois[r, 1:] = boxes[i]
        out[r, 0] = conf[i]
    return rois, out
