"""Caffe's solvers (SGD, Nesterov, AdaGrad, RMSProp, AdaDelta, Adam) on torch tensors.

:class:`CaffeSolver` applies ``SGDSolver::ApplyUpdate`` to a list of learnable
blobs whose ``.grad`` holds the gradient summed over ``iter_size``
forward/backward passes, in Caffe's order:

1. ``ClipGradients``: when ``clip_gradients >= 0`` and the L2 norm of all the
   gradients together exceeds it, every gradient is scaled by
   ``clip_gradients / norm``.  This happens *before* normalization, so with
   ``iter_size > 1`` the norm compared is that of the accumulated sum.
2. per blob, ``Normalize`` (times ``1 / iter_size``), ``Regularize`` (L2:
   ``g += local_decay * w``; L1: ``g += local_decay * sign(w)``, with
   ``local_decay = weight_decay * decay_mult``) and ``ComputeUpdateValue``
   with ``local_rate = rate * lr_mult``, which turns the gradient into the
   update (below);
3. ``Net::Update``: ``w -= update`` for every blob, after all the updates are
   computed.

The update rules, with ``g`` the regularized gradient:

* SGD: ``h = momentum * h + local_rate * g``; update ``h``.  The rate is
  folded into the history, so after a learning-rate change the history still
  carries the old rate's steps (torch.optim.SGD applies the rate after).
* Nesterov: ``h' = momentum * h + local_rate * g``; update
  ``(1 + momentum) * h' - momentum * h``.
* AdaGrad: ``h += g^2``; update ``local_rate * g / (sqrt(h) + delta)``.
* RMSProp: ``h = rms_decay * h + (1 - rms_decay) * g^2``; update
  ``local_rate * g / (sqrt(h) + delta)``.
* AdaDelta: ``h = momentum * h + (1 - momentum) * g^2``;
  ``u = g * sqrt((h2 + delta) / (h + delta))``;
  ``h2 = momentum * h2 + (1 - momentum) * u^2``; update ``local_rate * u``
  (the rate is applied after ``h2`` is updated, so ``h2`` holds unscaled
  steps; Caffe's AdaDelta is meant for ``base_lr: 1``).
* Adam (``beta1 = momentum``, ``beta2 = momentum2``, ``eps = delta``):
  ``m = beta1 * m + (1 - beta1) * g``; ``v = beta2 * v + (1 - beta2) * g^2``;
  update ``local_rate * sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps)``
  with ``t = iter + 1``: the bias correction is folded into the rate and eps
  is added to the *uncorrected* ``sqrt(v)``.

Blobs with ``lr_mult: 0`` go through all of it like the others (as in Caffe,
where they are still among the learnable params): their history is updated,
and with a zero rate they move only by SGD/Nesterov momentum left in history.

History blobs are laid out as Caffe's ``history_`` vector, the order of
``SolverState.history``: one per blob; Adam appends the second moments ``v``
of every blob after the first moments ``m`` (``[m_0..m_{n-1}, v_0..v_{n-1}]``),
AdaDelta the squared-update averages after the squared-gradient averages.

Scalars are rounded to the blobs' dtype where Caffe computes them in ``Dtype``
(``rate * lr_mult``, ``weight_decay * decay_mult``, ``1 / iter_size``,
``1 - momentum``, ...), so float32 blobs follow Caffe's float solver and
float64 blobs its double solver.  Validation follows Caffe's ``CHECK``s
(AdaGrad and RMSProp reject momentum, RMSProp needs ``0 <= rms_decay < 1``,
the lr policy's own checks) and raises :class:`ConvnetError` naming the field;
Caffe does not require ``momentum`` for Adam or AdaDelta (0 is then used for
beta1 / the decay) and neither does this.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from convnet_io.caffe.proto import caffe_pb2
from convnet_io.errors import ConvnetError
from convnet_io.protowire import len_prefix
from convnet_io.train.lr_policy import check_lr_policy, learning_rate

__all__ = ["LearnableBlob", "CaffeSolver", "SOLVER_TYPES", "solver_type"]

SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")

# SolverParameter.SolverType (legacy enum) -> type string, as Caffe's UpgradeSolverType.
_LEGACY_TYPES = {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta", 5: "Adam"}

# Caffe's Dtype: float (Blob<float>) or double (Blob<double>).
_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}


@dataclass
class LearnableBlob:
    """One learnable parameter blob of a net, in ``Net::learnable_params`` order."""

    tensor: torch.Tensor  # a leaf tensor (nn.Parameter) whose .grad holds the gradient
    lr_mult: float = 1.0
    decay_mult: float = 1.0
    name: str = ""  # e.g. "conv1/0" (layer/blob index), for messages


def solver_type(param: caffe_pb2.SolverParameter) -> str:
    """The solver type string: ``type``, or the legacy ``solver_type`` enum when that is set."""
    if param.HasField("solver_type"):
        if param.HasField("type"):
            raise ConvnetError("solver: the old solver_type field (enum) and the new type field "
                               "(string) cannot both be specified")
        value = int(param.solver_type)
        if value not in _LEGACY_TYPES:
            raise ConvnetError(f"solver: unknown solver_type {value}")
        return _LEGACY_TYPES[value]
    name = param.type
    if name not in SOLVER_TYPES:
        raise ConvnetError(f"solver: unknown type '{name}'; known types: "
                           + ", ".join(SOLVER_TYPES))
    return name


def _validate(param: caffe_pb2.SolverParameter, kind: str) -> None:
    if kind in ("AdaGrad", "RMSProp") and param.momentum != 0:
        raise ConvnetError(f"solver: momentum cannot be used with {kind} "
                           f"(momentum: {param.momentum})")
    if kind == "RMSProp" and not 0 <= param.rms_decay < 1:
        raise ConvnetError(f"solver: rms_decay should lie between 0 and 1 "
                           f"(rms_decay: {param.rms_decay})")
    if param.iter_size < 1:
        raise ConvnetError(f"solver: iter_size must be at least 1 (iter_size: {param.iter_size})")
    if param.regularization_type not in ("L1", "L2"):
        raise ConvnetError(f"solver: unknown regularization_type '{param.regularization_type}'; "
                           "expected L1 or L2")
    check_lr_policy(param)


def _blob_label(blob: LearnableBlob, index: int) -> str:
    return f"blob {index}" + (f" '{blob.name}'" if blob.name else "")


# ---------------------------------------------------------------------------
# BlobProto data in and out without a Python float per value.
# ---------------------------------------------------------------------------

_BLOB_FIELDS = ("shape", "num", "channels", "height", "width",
                "data", "diff", "double_data", "double_diff")


def _blob_to_proto(tensor: torch.Tensor, blob: caffe_pb2.BlobProto) -> None:
    """Caffe's ``Blob::ToProto``: ``shape.dim`` and ``data`` (float) or ``double_data`` (double)."""
    arr = tensor.detach().to("cpu").contiguous().numpy()
    for d in arr.shape:
        blob.shape.dim.append(int(d))
    if arr.size:
        if arr.dtype == np.float64:
            number, raw = 8, arr.astype("<f8", copy=False).tobytes()
        else:
            number, raw = 5, arr.astype("<f4", copy=False).tobytes()
        # The packed field as protobuf encodes it: key, byte length, raw values.
        blob.MergeFromString(len_prefix(number, len(raw)) + raw)


def _packed_values(blob: caffe_pb2.BlobProto, field: str, dtype: str) -> np.ndarray:
    """The values of the repeated float/double ``field`` of ``blob``, read from their packed bytes."""
    only = caffe_pb2.BlobProto()
    only.CopyFrom(blob)
    for other in _BLOB_FIELDS:
        if other != field:
            only.ClearField(other)
    raw = only.SerializeToString()  # b"" or: key (1 byte), varint length, packed values
    if not raw:
        return np.zeros(0, dtype=dtype)
    pos, length, shift = 1, 0, 0
    while True:
        b = raw[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            break
    return np.frombuffer(raw, dtype=dtype, count=length // np.dtype(dtype).itemsize, offset=pos)


def _blob_from_proto(blob: caffe_pb2.BlobProto) -> tuple[tuple[int, ...], bool, np.ndarray]:
    """Caffe's ``Blob::FromProto``: (shape, legacy 4-D shape?, values); double_data wins if set."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    if legacy:
        shape = (blob.num, blob.channels, blob.height, blob.width)
    else:
        shape = tuple(int(d) for d in blob.shape.dim)
    if len(blob.double_data):
        values = _packed_values(blob, "double_data", "<f8")
    else:
        values = _packed_values(blob, "data", "<f4")
    return shape, legacy, values


def _shape_fits(proto_shape: tuple[int, ...], legacy: bool, shape: tuple[int, ...]) -> bool:
    """Caffe's ``Blob::ShapeEquals``: a legacy 4-D shape matches a blob of <= 4 axes
    padded on the left with 1s."""
    if legacy:
        return len(shape) <= 4 and (1,) * (4 - len(shape)) + shape == proto_shape
    return proto_shape == shape


def _fmt(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


class CaffeSolver:
    """Caffe's solver update for ``blobs`` (see the module docstring)."""

    def __init__(self, param: caffe_pb2.SolverParameter, blobs: list[LearnableBlob]):
        self.type = solver_type(param)
        _validate(param, self.type)
        self.param = caffe_pb2.SolverParameter()
        self.param.CopyFrom(param)
        self.blobs = list(blobs)
        dtypes = set()
        seen: set[int] = set()
        for i, b in enumerate(self.blobs):
            t = b.tensor
            if not isinstance(t, torch.Tensor):
                raise ConvnetError(f"solver: {_blob_label(b, i)} is not a tensor")
            if t.dtype not in _NP_DTYPES:
                raise ConvnetError(f"solver: {_blob_label(b, i)} has dtype {t.dtype}; "
                                   "Caffe's solvers run in float32 or float64")
            if id(t) in seen:
                raise ConvnetError(f"solver: {_blob_label(b, i)} is listed twice")
            seen.add(id(t))
            dtypes.add(t.dtype)
        if len(dtypes) > 1:
            raise ConvnetError("solver: learnable blobs mix dtypes "
                               + ", ".join(sorted(str(d) for d in dtypes)))
        self.dtype = dtypes.pop() if dtypes else torch.float32
        self._np = _NP_DTYPES[self.dtype]
        self.iteration = 0
        self.current_step = 0
        self.clear_diffs_after_update = True
        # ``convnet train``: a cleared diff is dropped (None, which reads as zero) rather than
        # zeroed, so the next backward stores its gradient instead of adding it to zeros.
        self.drop_diffs_after_update = False
        per_blob = 2 if self.type in ("Adam", "AdaDelta") else 1
        self._history = [torch.zeros_like(b.tensor, memory_format=torch.contiguous_format)
                         for _ in range(per_blob) for b in self.blobs]

    def match_layout(self) -> None:
        """History blobs in their learnable blob's memory format (after the net went channels-last),
        so the update's element-wise ops run on like-strided tensors."""
        n = len(self.blobs)
        with torch.no_grad():
            self._history = [torch.empty_like(self.blobs[j % n].tensor).copy_(h)
                             for j, h in enumerate(self._history)]

    # -- scalars in Caffe's Dtype ------------------------------------------
    def _d(self, x: float) -> float:
        return float(self._np(x))

    # -- the update --------------------------------------------------------
    def _grads(self) -> list[torch.Tensor]:
        grads = []
        for i, b in enumerate(self.blobs):
            g = b.tensor.grad
            if g is None:  # never backpropagated to (e.g. lr_mult 0): Caffe's diff is zero
                g = torch.zeros_like(b.tensor)
            elif g.shape != b.tensor.shape or g.dtype != b.tensor.dtype:
                raise ConvnetError(f"solver: {_blob_label(b, i)}: gradient {g.dtype} "
                                   f"{_fmt(g.shape)} does not fit the blob {b.tensor.dtype} "
                                   f"{_fmt(b.tensor.shape)}")
            grads.append(g)
        return grads

    def _clip(self, grads: list[torch.Tensor]) -> None:
        clip = self._d(self.param.clip_gradients)
        if clip < 0:
            return
        sumsq = self._np(0)
        for g in grads:
            sumsq = self._np(sumsq + self._np(torch.sum(g * g).item()))
        l2norm = self._np(math.sqrt(sumsq))
        if l2norm > clip:
            scale = self._d(self._np(clip) / l2norm)
            for g in grads:
                g.mul_(scale)

    def _regularize(self, blob: LearnableBlob, g: torch.Tensor) -> None:
        local_decay = self._d(self._np(self.param.weight_decay) * self._np(blob.decay_mult))
        if not local_decay:
            return
        w = blob.tensor.detach()
        if self.param.regularization_type == "L2":
            g.add_(w, alpha=local_decay)
        else:  # L1 (validated)
            g.add_(torch.sign(w), alpha=local_decay)

    def _compute_update(self, i: int, g: torch.Tensor, local_rate: float) -> None:
        """Caffe's ComputeUpdateValue: turn ``g`` (in place) into the update, advancing history."""
        d = self._d
        p = self.param
        n = len(self.blobs)
        kind = self.type
        if kind == "SGD":
            h = self._history[i]
            h.mul_(d(p.momentum)).add_(g, alpha=local_rate)
            g.copy_(h)
        elif kind == "Nesterov":
            h = self._history[i]
            momentum = d(p.momentum)
            prev = h.clone()
            h.mul_(momentum).add_(g, alpha=local_rate)
            prev.mul_(-momentum).add_(h, alpha=d(1.0 + momentum))
            g.copy_(prev)
        elif kind == "AdaGrad":
            h = self._history[i]
            h.add_(g * g)
            denom = torch.sqrt(h).add_(d(p.delta))
            g.copy_(torch.div(g, denom).mul_(local_rate))
        elif kind == "RMSProp":
            h = self._history[i]
            rms_decay = d(p.rms_decay)
            h.mul_(rms_decay).add_(g * g, alpha=d(1.0 - rms_decay))
            denom = torch.sqrt(h).add_(d(p.delta))
            g.copy_(torch.div(g, denom).mul_(local_rate))
        elif kind == "AdaDelta":
            h_grad, h_update = self._history[i], self._history[n + i]
            momentum, delta = d(p.momentum), d(p.delta)
            h_grad.mul_(momentum).add_(g * g, alpha=d(1.0 - momentum))
            ratio = torch.add(h_update, delta).div_(torch.add(h_grad, delta))
            g.mul_(torch.sqrt_(ratio))
            h_update.mul_(momentum).add_(g * g, alpha=d(1.0 - momentum))
            g.mul_(local_rate)
        else:  # Adam
            m, v = self._history[i], self._history[n + i]
            beta1, beta2 = d(p.momentum), d(p.momentum2)
            t = self.iteration + 1
            correction = d(math.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t))
            m.mul_(beta1).add_(g, alpha=d(1.0 - beta1))
            v.mul_(beta2).add_(g * g, alpha=d(1.0 - beta2))
            denom = torch.sqrt(v).add_(d(p.delta))
            g.copy_(torch.div(m, denom).mul_(d(self._np(local_rate) * self._np(correction))))

    def step(self) -> float:
        """Apply one Caffe update from the accumulated ``.grad`` s; returns the learning rate."""
        rate, self.current_step = learning_rate(self.param, self.iteration, self.current_step)
        rate = self._d(rate)
        with torch.no_grad():
            grads = self._grads()
            self._clip(grads)
            iter_size = int(self.param.iter_size)
            norm = self._d(self._np(1) / self._np(iter_size))
            # SGD's update is its history blob; when nobody reads the diff afterwards it is not
            # copied there first (one pass over every weight less).
            direct = self.type == "SGD" and self.clear_diffs_after_update
            updates = []
            for i, (blob, g) in enumerate(zip(self.blobs, grads)):
                if iter_size != 1:
                    g.mul_(norm)
                self._regularize(blob, g)
                local_rate = self._d(self._np(rate) * self._np(blob.lr_mult))
                if direct:
                    updates.append(self._history[i].mul_(self._d(self.param.momentum)).add_(g, alpha=local_rate))
                else:
                    self._compute_update(i, g, local_rate)
                    updates.append(g)
            for blob, u in zip(self.blobs, updates):
                blob.tensor.sub_(u)
            # pycaffe clears the diffs when the next step starts instead, so that a script sees
            # the update in them afterwards, as in Caffe.
            if self.clear_diffs_after_update:
                for blob in self.blobs:
                    if blob.tensor.grad is not None:
                        if self.drop_diffs_after_update:
                            blob.tensor.grad = None
                        else:
                            blob.tensor.grad.zero_()
        self.iteration += 1
        return rate

    # -- state -------------------------------------------------------------
    def history(self) -> list[torch.Tensor]:
        """The history blobs in Caffe's order (the live tensors, not copies)."""
        return list(self._history)

    def to_state(self, learned_net: str = "") -> caffe_pb2.SolverState:
        """A ``SolverState`` as Caffe's SnapshotSolverStateToBinaryProto writes it."""
        state = caffe_pb2.SolverState()
        state.iter = self.iteration
        if learned_net:
            state.learned_net = learned_net
        state.current_step = self.current_step
        for h in self._history:
            _blob_to_proto(h, state.history.add())
        return state

    def _history_label(self, j: int) -> str:
        n = len(self.blobs)
        blob = self.blobs[j % n]
        label = f"history blob {j} (" + _blob_label(blob, j % n)
        if len(self._history) > n:
            part = {"Adam": ("m", "v"), "AdaDelta": ("gradient", "update")}[self.type][j // n]
            label += f", {part}"
        return label + ")"

    def load_state(self, state: caffe_pb2.SolverState) -> None:
        """Restore ``iter``, ``current_step`` and the history from a ``SolverState``.

        The weights (``learned_net``) are not loaded here.  Nothing changes unless
        every history blob fits.
        """
        if len(state.history) != len(self._history):
            raise ConvnetError(
                f"solver state: {len(state.history)} history blobs, but a {self.type} solver "
                f"over {len(self.blobs)} learnable blobs keeps {len(self._history)}")
        restored = []
        for j, (proto, h) in enumerate(zip(state.history, self._history)):
            shape, legacy, values = _blob_from_proto(proto)
            if not _shape_fits(shape, legacy, tuple(h.shape)):
                raise ConvnetError(f"solver state: {self._history_label(j)} has shape "
                                   f"{_fmt(shape)}, expected {_fmt(h.shape)}")
            if values.size != h.numel():
                raise ConvnetError(f"solver state: {self._history_label(j)} holds "
                                   f"{values.size} values, expected {h.numel()}")
            restored.append(torch.from_numpy(values.astype(self._np).reshape(h.shape)))
        with torch.no_grad():
            for h, values in zip(self._history, restored):
                h.copy_(values)
        self.iteration = int(state.iter)
        self.current_step = int(state.current_step)
