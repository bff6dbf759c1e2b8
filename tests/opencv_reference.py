"""OpenCV's Caffe importer as an independent second implementation of Caffe, for parity tests.

``run_case`` loads a net with convnet (seeded weights, BatchNorm statistics calibrated as ``convnet
init`` does), writes the weights as a .caffemodel and a deploy prototxt (the reference deploy file
where one exists, else ``deploy_text(graph)``), loads both with ``cv2.dnn.readNetFromCaffe`` on the
plain OpenCV CPU backend with fusion off, and compares every output OpenCV exposes with the value
convnet computes for the same Caffe top.

Name mapping: OpenCV names each layer output after the Caffe *layer*; its value is the top that
layer writes. For convnet that is ``graph.node(name).tops[i]``: relu1's output is ``conv1:1``,
conv1's is ``conv1`` (the pre-ReLU value; OpenCV keeps the two apart when fusion is off).

OpenCV behaviour found with opencv-python-headless 4.14 (the quirks the tests handle, each checked
in ``test_parity_opencv.py``; source references are to opencv/opencv ``modules/dnn/src``):

* in-place layers, Dropout and Softmax keep their Caffe names and each get their own output; OpenCV
  adds no Split layers and does not expose the Input layer. ``forward(layer)`` returns only a
  layer's first output, so ``forwardAndRetrieve`` is used to get every top (Slice). A MAX Pooling
  layer has a second OpenCV-only output (the argmax mask) that no Caffe top matches: ignored.
* ``forwardAndRetrieve(names)`` protects only output 0 of each named layer from buffer reuse
  (net_impl.cpp, Net::Impl::forward(std::vector<std::vector<Mat>>&, ...): ``setUpNet`` gets
  ``getPinByAlias(name)`` pins, output 0, while the results are read with ``getLayerOutPins``). A
  later in-place layer can overwrite a Slice's second top before it is read (seen: PReLU on it);
  layers with several tops are therefore fetched again by a pass that stops at them.
* BatchNorm with ``use_global_stats: false`` (batch statistics at test time) runs in OpenCV only
  for batch 1 ("Batch normalization in training mode with batch size > 1"), and OpenCV adds a
  helper layer ``<name>/mvn`` of its own; it is allowed and not compared.
* MVN: OpenCV 4.14 divides by sqrt(var + eps), Caffe by sqrt(var) + eps (MVNLayer::Forward_cpu:
  ``caffe_powx(variance, 0.5)`` then ``caffe_add_scalar(eps)``). Older OpenCV mvn_layer.cpp
  (``alpha = 1/(eps + dev[0])``) agreed with Caffe. Invisible at the default eps 1e-9; compared
  against NumPy with eps 0.5.
* InnerProduct ``transpose: true``: OpenCV ignores it (fully_connected_layer.cpp,
  FullyConnectedLayerImpl(): reads transA/transB, never ``transpose``, and takes blobs[0] as
  num_output x K). Compared against NumPy instead.
* ``caffe.proto`` fields OpenCV's own copy lacks make its text parser drop the *whole* layer
  parameter message without an error: ``round_mode: FLOOR`` leaves a Pooling layer with no kernel
  ("kernel[i] > 0 in getKernelSize"). OpenCV spells that option ``ceil_mode: false``; the tests give
  OpenCV that spelling (``opencv_dialect``) and give Caffe's to convnet.
* Pooling with neither ``pool`` nor a kernel size (global MAX with the default method unwritten) is
  refused: layers/pooling_layer.cpp, PoolingLayerImpl(): "Cannot determine pooling type".
* AVE pooling with padding: OpenCV divides by the window clipped at H + pad, padding counted and
  the ceil-mode overhang not, as Caffe (pooling_layer.cpp, PoolingInvoker: ``xend = min(xstart +
  kernel_w, inp_width + pad_r); xdelta = xend - xstart``; ``avePoolPaddedArea`` is true for Caffe).
  No deviation; still checked against a float64 NumPy transcription of Caffe's loop as well.
* Pooled size with padding on one axis only: Caffe drops a last window that starts in the padding
  on *both* axes as soon as either has padding (``if (pad_h_ || pad_w_)`` in
  PoolingLayer::Reshape); OpenCV tests each axis alone (pooling_layer.cpp, getMemoryShapes:
  ``if (pads_end[i] && (outShape[2 + i] - 1) * strides[i] >= inpShape[i] + pads_end[i])``), so it
  keeps one more column than Caffe. Compared against NumPy instead.
* LRN: OpenCV reads the additive constant as ``bias`` (layers/lrn_layer.cpp: ``bias =
  params.get<double>("bias", 1)``); Caffe's LRNParameter calls it ``k``, so OpenCV computes an
  ACROSS_CHANNELS LRN with k != 1 as if k were 1. Compared against NumPy instead.
* Log: OpenCV maps Caffe's Log to its natural-log element-wise layer (layers/elementwise_layers.cpp,
  LogLayer::create builds ElementWiseLayer<LogFunctor> from no parameter), ignoring base, scale and
  shift. Compared against NumPy instead.
* Not implemented by OpenCV's Caffe importer: Threshold, Bias, ArgMax, Reduction and Caffe's Tile
  (OpenCV's Tile wants ONNX "repeats"); Clip and Swish parameters are unknown to its caffe.proto.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from helpers import rel_err

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT.parent / "shared" / "caffe-models"
TOLERANCE = 1e-4

# Layer types OpenCV may leave out of getLayerNames() (identities it can elide). opencv 4.14 with
# fusion off exposes every one of them; a skipped layer is reported, never silently passed.
OPENCV_MAY_SKIP = frozenset({"Dropout", "Split", "Silence"})


# -- NumPy transcriptions of Caffe's loops (float64), for layers where OpenCV deviates ----------------

def caffe_pooled_size(size: int, kernel: int, stride: int, pad: int, ceil: bool, any_pad: bool) -> int:
    """PoolingLayer::Reshape: ceil (or floor) division, then clip a last window starting in the pad
    when the layer has padding on *either* axis."""
    span = size + 2 * pad - kernel
    out = (math.ceil(span / stride) if ceil else span // stride) + 1
    if any_pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def caffe_pooling(x: np.ndarray, method: str, kernel, stride, pad, ceil: bool = True) -> np.ndarray:
    """PoolingLayer::Forward_cpu for MAX and AVE, window by window, in float64."""
    x = np.asarray(x, dtype=np.float64)
    n, c, h, w = x.shape
    any_pad = pad[0] != 0 or pad[1] != 0
    oh = caffe_pooled_size(h, kernel[0], stride[0], pad[0], ceil, any_pad)
    ow = caffe_pooled_size(w, kernel[1], stride[1], pad[1], ceil, any_pad)
    out = np.empty((n, c, oh, ow))
    for ph in range(oh):
        for pw in range(ow):
            hs, ws = ph * stride[0] - pad[0], pw * stride[1] - pad[1]
            if method == "MAX":
                he, we = min(hs + kernel[0], h), min(ws + kernel[1], w)
                win = x[:, :, max(hs, 0):he, max(ws, 0):we]
                out[:, :, ph, pw] = win.max(axis=(2, 3))
            elif method == "AVE":
                he, we = min(hs + kernel[0], h + pad[0]), min(ws + kernel[1], w + pad[1])
                pool_size = (he - hs) * (we - ws)  # padding counts; overhang past H + pad does not
                win = x[:, :, max(hs, 0):min(he, h), max(ws, 0):min(we, w)]
                out[:, :, ph, pw] = win.sum(axis=(2, 3)) / pool_size
            else:
                raise ValueError(method)
    return out


def caffe_lrn(x: np.ndarray, local_size: int, alpha: float, beta: float, k: float, region: str) -> np.ndarray:
    """LRNLayer: ACROSS_CHANNELS x / (k + alpha/n sum x^2)^beta over n channels (zero-padded);
    WITHIN_CHANNEL x / (1 + alpha/n^2 sum x^2)^beta over an n x n window (k unused)."""
    x = np.asarray(x, dtype=np.float64)
    half = (local_size - 1) // 2
    sq = x * x
    if region == "ACROSS_CHANNELS":
        padded = np.pad(sq, ((0, 0), (half, half), (0, 0), (0, 0)))
        s = sum(padded[:, i:i + x.shape[1]] for i in range(local_size))
        return x * (k + alpha / local_size * s) ** -beta
    padded = np.pad(sq, ((0, 0), (0, 0), (half, half), (half, half)))
    s = sum(padded[:, :, i:i + x.shape[2], j:j + x.shape[3]] for i in range(local_size) for j in range(local_size))
    return x * (1.0 + alpha / (local_size * local_size) * s) ** -beta


def caffe_log(x: np.ndarray, base: float, scale: float, shift: float) -> np.ndarray:
    """LogLayer: log_base(shift + scale * x); base -1 means e."""
    y = np.log(shift + scale * np.asarray(x, dtype=np.float64))
    return y if base == -1 else y / math.log(base)


def caffe_mvn(x: np.ndarray, normalize_variance: bool, across_channels: bool, eps: float) -> np.ndarray:
    """MVNLayer: x - mean over each (n, c) slice (each n with across_channels); with
    normalize_variance divided by sqrt(E((X - EX)^2)) + eps: eps is added to the standard
    deviation (caffe_powx(variance, 0.5) then caffe_add_scalar(eps)), not to the variance."""
    x = np.asarray(x, dtype=np.float64)
    axes = tuple(range(1 if across_channels else 2, x.ndim))
    centered = x - x.mean(axis=axes, keepdims=True)
    if not normalize_variance:
        return centered
    return centered / (np.sqrt((centered ** 2).mean(axis=axes, keepdims=True)) + eps)


def caffe_inner_product(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, axis: int,
                        transpose: bool) -> np.ndarray:
    """InnerProductLayer: x flattened from ``axis`` times W^T (W is num_output x K), or times W when
    ``transpose`` (W stored K x num_output), plus the bias."""
    x = np.asarray(x, dtype=np.float64)
    lead = x.shape[:axis]
    w = np.asarray(weight, dtype=np.float64)
    y = x.reshape(int(np.prod(lead)), -1) @ (w if transpose else w.T)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y.reshape(*lead, y.shape[-1])


def node_reference(node, bottoms: list[np.ndarray], blobs: list[np.ndarray]) -> np.ndarray:
    """Caffe's result for one node (types with a transcription above), from its bottom values and
    learnable blobs."""
    a = node.attrs
    if node.type == "Pooling":
        if a.global_pooling:
            h, w = bottoms[0].shape[2:]
            return caffe_pooling(bottoms[0], a.method, (h, w), (1, 1), (0, 0))
        return caffe_pooling(bottoms[0], a.method, a.kernel, a.stride, a.pad, a.round_mode == "CEIL")
    if node.type == "LRN":
        return caffe_lrn(bottoms[0], a.local_size, a.alpha, a.beta, a.k, a.norm_region)
    if node.type == "Log":
        return caffe_log(bottoms[0], a.base, a.scale, a.shift)
    if node.type == "MVN":
        return caffe_mvn(bottoms[0], a.normalize_variance, a.across_channels, a.eps)
    if node.type == "InnerProduct":
        axis = a.axis % len(bottoms[0].shape)
        return caffe_inner_product(bottoms[0], blobs[0], blobs[1] if a.bias_term else None, axis, a.transpose)
    raise NotImplementedError(node.type)


# -- loading and running both ------------------------------------------------------------------------

def seeded_net(path: Path, input_shape: tuple[int, ...], seed: int, phase: str = "TEST"):
    """convnet's net with seeded initial weights; BatchNorm statistics calibrated on a seeded batch
    (``convnet init``'s calibrate path) so that they are not the all-zero fillers."""
    import convnet_io

    net = convnet_io.load(path, phase=phase, input_shapes={"data": tuple(input_shape)}, seed=seed)
    if any(n.type == "BatchNorm" for n in net.graph.nodes):
        from convnet_io.tools.weights_io import calibrate

        calibrate(net, seed)
    return net


def opencv_dialect(text: str) -> str:
    """A deploy prototxt as OpenCV's own caffe.proto spells it: ``round_mode`` (BVLC Caffe) is
    ``ceil_mode`` there, and an unknown field would silently empty the whole pooling_param."""
    text = re.sub(r"\bround_mode:\s*FLOOR\b", "ceil_mode: false", text)
    return re.sub(r"\bround_mode:\s*CEIL\b", "ceil_mode: true", text)


def opencv_net(prototxt: Path, caffemodel: Path | None):
    import cv2

    net = cv2.dnn.readNetFromCaffe(str(prototxt), str(caffemodel) if caffemodel else "")
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    net.enableFusion(False)  # keep every layer's own output (no conv+ReLU+BN folding)
    return net


def opencv_outputs(net, x: np.ndarray, multi_top: frozenset[str] = frozenset()
                   ) -> tuple[dict[str, list[np.ndarray]], dict[str, np.ndarray]]:
    """({layer name: all its outputs}, {unconnected output layer: its output}) for input ``x``.

    ``multi_top``: layers with several Caffe tops, fetched again by a pass that stops at them:
    forwardAndRetrieve keeps only output 0 of each named layer out of buffer reuse, so a later
    in-place layer (PReLU on a Slice's second top) may overwrite output 1 before it is read.
    """
    names = list(net.getLayerNames())
    net.setInput(x)
    per_layer = net.forwardAndRetrieve(names)
    layers = {name: [np.asarray(o) for o in outs] for name, outs in zip(names, per_layer)}
    for name in multi_top:
        if name in layers:
            net.setInput(x)
            layers[name] = [np.asarray(o) for o in net.forwardAndRetrieve([name])[0]]
    final_names = list(net.getUnconnectedOutLayersNames())
    net.setInput(x)
    finals = net.forward(final_names)
    return layers, {name: np.asarray(o) for name, o in zip(final_names, finals)}


def convnet_values(net, x: np.ndarray, values: list[str]) -> dict[str, np.ndarray]:
    """Values by id (``conv1`` and ``conv1:1`` apart), fed only the data input (no labels needed)."""
    import torch

    data = net.graph.inputs[0]
    with torch.no_grad():
        out = net.module.run({data: torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}, values)
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


# -- one comparison ----------------------------------------------------------------------------------

@dataclass
class Blob:
    layer: str        # the OpenCV (= Caffe) layer name
    value: str        # convnet's value id for that layer's top
    rel_err: float
    against: str = "opencv"  # or "numpy": where OpenCV deviates from Caffe


@dataclass
class Deviation:
    """A layer where OpenCV itself deviates from Caffe: convnet is compared with NumPy there."""

    reason: str
    reference: Callable = node_reference


@dataclass
class Result:
    name: str
    blobs: list[Blob] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    skipped_by_opencv: list[str] = field(default_factory=list)
    opencv_only: list[str] = field(default_factory=list)  # layers OpenCV adds (BatchNorm helpers)
    opencv_deviates: dict[str, float] = field(default_factory=dict)  # layer -> OpenCV vs NumPy

    @property
    def max_rel_err(self) -> float:
        return max((b.rel_err for b in self.blobs), default=0.0)

    def failures(self, tol: float = TOLERANCE) -> list[str]:
        out = list(self.problems)
        out += [f"{b.layer} ({b.value}, vs {b.against}): rel err {b.rel_err:.3g} > {tol:g}"
                for b in self.blobs if not b.rel_err <= tol]
        return out


@dataclass
class Case:
    name: str
    net: Path                    # what convnet loads
    input_shape: tuple[int, ...]
    deploy: Path | None = None   # OpenCV's prototxt; None: deploy_text(graph)
    phase: str = "TEST"
    seed: int = 0
    input_scale: float = 1.0
    deviations: dict[str, Deviation] = field(default_factory=dict)
    also_numpy: tuple[str, ...] = ()  # layers also checked against the NumPy transcription


def run_case(case: Case, workdir: Path) -> Result:
    from convnet_io.caffe.deploy import deploy_nodes, deploy_text

    net = seeded_net(case.net, case.input_shape, case.seed, case.phase)
    graph = net.graph
    kept, _ = deploy_nodes(graph)
    workdir.mkdir(parents=True, exist_ok=True)
    stem = re.sub(r"[^\w.-]", "_", case.name)
    if case.deploy is None:
        prototxt = workdir / f"{stem}.deploy.prototxt"
        prototxt.write_text(opencv_dialect(deploy_text(graph)))
    else:
        prototxt = case.deploy
    weights = None
    if graph.param_count:
        weights = workdir / f"{stem}.caffemodel"
        net.save_caffemodel(weights)
    try:
        cv_net = opencv_net(prototxt, weights)
    finally:
        if weights is not None:
            weights.unlink(missing_ok=True)  # AlexNets write 240 MB each: do not keep them

    rng = np.random.default_rng(case.seed)
    x = (rng.standard_normal(case.input_shape) * case.input_scale).astype(np.float32)
    layers, finals = opencv_outputs(cv_net, x, frozenset(n.name for n in kept if len(n.tops) > 1))
    wanted = [v for n in kept for v in [*n.bottoms, *n.tops]]
    ours = convnet_values(net, x, list(dict.fromkeys(wanted)))

    result = Result(case.name)
    names = {n.name for n in graph.nodes}
    batch_stats_bn = {n.name for n in kept if n.type == "BatchNorm" and n.attrs.use_global_stats is False}
    for layer in layers:
        if layer in names:
            continue
        parent = layer.rsplit("/", 1)[0] if "/" in layer else None
        if parent in batch_stats_bn:
            result.opencv_only.append(layer)  # OpenCV's helper layer for batch statistics
        else:
            result.problems.append(f"OpenCV layer '{layer}' is no convnet layer")
    for node in kept:
        if node.name not in layers:
            if node.type in OPENCV_MAY_SKIP:
                result.skipped_by_opencv.append(node.name)
            else:
                result.problems.append(f"convnet layer '{node.name}' ({node.type}) is missing from OpenCV")

    for node in kept:
        outs = layers.get(node.name)
        if outs is None:
            continue
        if len(outs) < len(node.tops):
            result.problems.append(f"{node.name}: OpenCV gives {len(outs)} outputs for {len(node.tops)} tops")
        dev = case.deviations.get(node.name)
        for i, value in enumerate(node.tops[:len(outs)]):
            actual, theirs = ours[value], outs[i]
            if dev is not None or node.name in case.also_numpy:
                blobs = [b.detach().cpu().numpy() for b in net.module.layer(node.name).caffe_blobs()]
                reference = dev.reference if dev is not None else node_reference
                ref = reference(node, [ours[b] for b in node.bottoms], blobs)
                if actual.shape != ref.shape:
                    result.problems.append(f"{node.name}: convnet shape {actual.shape}, Caffe's rule {ref.shape}")
                    continue
                result.blobs.append(Blob(node.name, value, rel_err(actual, ref), "numpy"))
                if dev is not None:
                    result.opencv_deviates[node.name] = (
                        math.inf if theirs.shape != ref.shape else rel_err(theirs, ref))
                    continue
            if actual.shape != theirs.shape:
                result.problems.append(f"{node.name} ({value}): convnet shape {actual.shape}, OpenCV {theirs.shape}")
                continue
            result.blobs.append(Blob(node.name, value, rel_err(actual, theirs)))

    # The net's final outputs: OpenCV's unconnected layers against the values no kept layer reads.
    read = {b for n in kept for b in n.bottoms}
    ends = {n.name: n for n in kept if any(t not in read for t in n.tops)}
    if set(finals) != set(ends):
        result.problems.append(f"final outputs differ: OpenCV {sorted(finals)}, convnet {sorted(ends)}")
    for name, theirs in finals.items():
        node = ends.get(name)
        if node is None or name in case.deviations:
            continue
        actual = ours[node.tops[0]]
        if actual.shape != theirs.shape:
            result.problems.append(f"final {name}: convnet shape {actual.shape}, OpenCV {theirs.shape}")
            continue
        result.blobs.append(Blob(f"{name} (final)", node.tops[0], rel_err(actual, theirs)))
    for name in case.deviations:
        if name not in {n.name for n in kept}:
            result.problems.append(f"deviation listed for '{name}', which the net lacks")
    return result
