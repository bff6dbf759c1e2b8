"""Caffe's solvers: update rules against a float64 NumPy transcription of Caffe's C++
(sgd_solver.cpp, nesterov/adagrad/rmsprop/adadelta/adam_solver.cpp), lr policies
against their formulas, solver state layout and round trips, and Caffe's checks."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from convnet_io.errors import ConvnetError
from convnet_io.caffe.proto import caffe_pb2
from convnet_io.train.lr_policy import learning_rate
from convnet_io.train.solver import CaffeSolver, LearnableBlob

SHAPES = [(2, 3), (3,), (2, 2)]
LR_MULTS = [1.0, 2.0, 0.0]
DECAY_MULTS = [1.0, 0.0, 1.0]
TYPES = ["SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam"]


# ---------------------------------------------------------------------------
# Reference: Caffe's ApplyUpdate in float64 NumPy, transcribed from the C++.
# ---------------------------------------------------------------------------

def ref_rate(p, it, current_step):
    """SGDSolver::GetLearningRate."""
    pol = p.lr_policy
    if pol == "fixed":
        return p.base_lr, current_step
    if pol == "step":
        current_step = it // p.stepsize
        return p.base_lr * p.gamma ** current_step, current_step
    if pol == "exp":
        return p.base_lr * p.gamma ** it, current_step
    if pol == "inv":
        return p.base_lr * (1 + p.gamma * it) ** (-p.power), current_step
    if pol == "multistep":
        if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
            current_step += 1
        return p.base_lr * p.gamma ** current_step, current_step
    if pol == "poly":
        return p.base_lr * (1 - it / p.max_iter) ** p.power, current_step
    if pol == "sigmoid":
        return p.base_lr * (1 / (1 + math.exp(-p.gamma * (it - p.stepsize)))), current_step
    raise AssertionError(pol)


class RefSolver:
    def __init__(self, p, kind, weights, lr_mults, decay_mults):
        self.p, self.kind = p, kind
        self.w = [np.array(w, dtype=np.float64) for w in weights]
        self.lr, self.decay = lr_mults, decay_mults
        n = len(self.w)
        # PreSolve: one history blob per param; AdamPreSolve/AdaDeltaPreSolve append n more.
        self.history = [np.zeros_like(w) for w in self.w]
        if kind in ("Adam", "AdaDelta"):
            self.history += [np.zeros_like(w) for w in self.w]
        self.n = n
        self.iter = 0
        self.current_step = 0

    def step(self, diffs):
        p = self.p
        diff = [np.array(d, dtype=np.float64) for d in diffs]
        rate, self.current_step = ref_rate(p, self.iter, self.current_step)
        # ClipGradients
        if p.clip_gradients >= 0:
            l2 = math.sqrt(sum(float(np.sum(d * d)) for d in diff))
            if l2 > p.clip_gradients:
                for d in diff:
                    d *= p.clip_gradients / l2
        for i in range(self.n):
            w, d = self.w[i], diff[i]
            # Normalize
            if p.iter_size != 1:
                d *= 1.0 / p.iter_size
            # Regularize
            local_decay = p.weight_decay * self.decay[i]
            if local_decay:
                if p.regularization_type == "L2":
                    d += local_decay * w
                else:
                    d += local_decay * np.sign(w)
            # ComputeUpdateValue
            local_rate = rate * self.lr[i]
            h = self.history[i]
            if self.kind == "SGD":
                h[...] = p.momentum * h + local_rate * d
                d[...] = h
            elif self.kind == "Nesterov":
                update = h.copy()
                h[...] = local_rate * d + p.momentum * h
                update = (1 + p.momentum) * h - p.momentum * update
                d[...] = update
            elif self.kind == "AdaGrad":
                h += d ** 2
                update = d / (np.sqrt(h) + p.delta)
                d[...] = local_rate * update
            elif self.kind == "RMSProp":
                h[...] = (1 - p.rms_decay) * d ** 2 + p.rms_decay * h
                update = d / (np.sqrt(h) + p.delta)
                d[...] = local_rate * update
            elif self.kind == "AdaDelta":
                h2 = self.history[self.n + i]
                h[...] = (1 - p.momentum) * d ** 2 + p.momentum * h
                update = (h2 + p.delta) / (h + p.delta)
                d *= np.sqrt(update)
                h2[...] = (1 - p.momentum) * d ** 2 + p.momentum * h2
                d *= local_rate
            elif self.kind == "Adam":
                m, v = h, self.history[self.n + i]
                b1, b2 = p.momentum, p.momentum2
                t = self.iter + 1
                correction = math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
                m[...] = (1 - b1) * d + b1 * m
                v[...] = (1 - b2) * d * d + b2 * v
                d[...] = local_rate * correction * (m / (np.sqrt(v) + p.delta))
            else:
                raise AssertionError(self.kind)
        # Net::Update
        for w, d in zip(self.w, diff):
            w -= d
        self.iter += 1
        return rate


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------

def make_param(kind, policy="step", iter_size=1, **extra):
    p = caffe_pb2.SolverParameter()
    p.type = kind
    p.base_lr = 1.0 if kind == "AdaDelta" else 0.05
    p.lr_policy = policy
    p.gamma = 0.5
    p.stepsize = 3
    p.stepvalue.extend([2, 5, 6])
    p.power = 0.75
    p.max_iter = 20
    p.weight_decay = 0.01
    p.iter_size = iter_size
    if kind in ("SGD", "Nesterov"):
        p.momentum = 0.9
    elif kind == "AdaDelta":
        p.momentum = 0.95
        p.delta = 1e-6
    elif kind == "Adam":
        p.momentum = 0.9
        p.momentum2 = 0.999
    elif kind == "RMSProp":
        p.rms_decay = 0.95
    for k, v in extra.items():
        setattr(p, k, v)
    return p


def make_blobs(dtype=torch.float64, seed=0, shapes=SHAPES, lr_mults=LR_MULTS,
               decay_mults=DECAY_MULTS):
    rng = np.random.default_rng(seed)
    blobs = []
    for j, (shape, lr, dec) in enumerate(zip(shapes, lr_mults, decay_mults)):
        t = torch.nn.Parameter(torch.tensor(rng.standard_normal(shape), dtype=dtype))
        blobs.append(LearnableBlob(t, lr_mult=lr, decay_mult=dec, name=f"layer{j}/0"))
    return blobs


def grads_for(step, iter_size, shapes=SHAPES, seed=1):
    """The iter_size pseudo-gradients of iteration ``step`` (float64), per blob."""
    rng = np.random.default_rng([seed, step])
    return [[rng.standard_normal(s) * 0.5 for s in shapes] for _ in range(iter_size)]


def accumulate(blobs, passes):
    """Accumulate each pass's gradient into .grad, as iter_size backward passes would."""
    for k, grads in enumerate(passes):
        for b, g in zip(blobs, grads):
            gt = torch.tensor(g, dtype=b.tensor.dtype)
            if k == 0:
                b.tensor.grad = gt
            else:
                b.tensor.grad += gt


def summed(passes):
    out = [np.array(g, dtype=np.float64) for g in passes[0]]
    for grads in passes[1:]:
        for o, g in zip(out, grads):
            o += g
    return out


def assert_close(actual, expected, rtol=1e-6, atol=0.0):
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    err = np.abs(a - e) - atol
    assert np.all(err <= rtol * np.abs(e)), f"max abs err {np.max(np.abs(a - e))}\n{a}\n{e}"


def run_compare(param, kind, steps, dtype=torch.float64, rtol=1e-6, atol=0.0):
    blobs = make_blobs(dtype)
    ref = RefSolver(param, kind, [b.tensor.detach().numpy() for b in blobs], LR_MULTS, DECAY_MULTS)
    solver = CaffeSolver(param, blobs)
    for it in range(steps):
        passes = grads_for(it, param.iter_size)
        accumulate(blobs, passes)
        rate = solver.step()
        ref_r = ref.step(summed(passes))
        assert rate == pytest.approx(ref_r, rel=1e-6)
        for b, w in zip(blobs, ref.w):
            assert_close(b.tensor.detach().numpy(), w, rtol, atol)
            assert not b.tensor.grad.any(), "grads are zeroed after the update"
        for h, rh in zip(solver.history(), ref.history):
            assert_close(h.numpy(), rh, rtol, atol)
    assert solver.iteration == steps
    assert solver.current_step == ref.current_step
    return solver, ref


# ---------------------------------------------------------------------------
# every solver type against the reference
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("iter_size", [1, 2])
@pytest.mark.parametrize("policy", ["step", "multistep"])
@pytest.mark.parametrize("kind", TYPES)
def test_solver_matches_caffe(kind, policy, iter_size):
    param = make_param(kind, policy, iter_size)
    run_compare(param, kind, 8)


@pytest.mark.parametrize("policy", ["fixed", "exp", "inv", "poly", "sigmoid"])
@pytest.mark.parametrize("kind", ["SGD", "Adam", "AdaDelta"])
def test_solver_other_policies(kind, policy):
    run_compare(make_param(kind, policy), kind, 6)


@pytest.mark.parametrize("kind", TYPES)
def test_l1_and_clipping_match_caffe(kind):
    # clip 2.0 triggers on some iterations and not others (the summed grads have norms 1.6-3.3)
    param = make_param(kind, "step", 2, regularization_type="L1", weight_decay=0.05,
                       clip_gradients=2.0)
    run_compare(param, kind, 8)


@pytest.mark.parametrize("kind", TYPES)
def test_float32_solver_close_to_float64_reference(kind):
    param = make_param(kind, "multistep", 2)
    run_compare(param, kind, 8, dtype=torch.float32, rtol=2e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# SGD, regularization and clipping by hand
# ---------------------------------------------------------------------------

def _one_blob(values, lr_mult=1.0, decay_mult=1.0, dtype=torch.float64):
    t = torch.nn.Parameter(torch.tensor(values, dtype=dtype))
    return LearnableBlob(t, lr_mult=lr_mult, decay_mult=decay_mult, name="ip/0")


def test_sgd_history_keeps_old_rate_unlike_torch():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="step", gamma=0.5,
                                  stepsize=1, momentum=0.5)
    b = _one_blob([0.0])
    s = CaffeSolver(p, [b])
    rates, ws = [], []
    for _ in range(3):
        b.tensor.grad = torch.ones(1, dtype=torch.float64)
        rates.append(s.step())
        ws.append(b.tensor.item())
    assert rates == [1.0, 0.5, 0.25]
    # h1 = 1*1 = 1, w = -1;  h2 = 0.5*1 + 0.5*1 = 1, w = -2;  h3 = 0.5*1 + 0.25*1 = 0.75
    assert ws == [-1.0, -2.0, -2.75]
    assert s.history()[0].item() == 0.75
    # torch.optim.SGD puts the rate outside the momentum buffer: a different trajectory
    t = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([t], lr=1.0, momentum=0.5)
    for lr in (1.0, 0.5):
        opt.param_groups[0]["lr"] = lr
        t.grad = torch.ones(1, dtype=torch.float64)
        opt.step()
    assert t.item() == -1.75 != ws[1]


def test_sgd_weight_decay_and_mults():
    # update = momentum*h + lr*lr_mult*(g + weight_decay*decay_mult*w)
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=0.5, lr_policy="fixed", momentum=0.5,
                                  weight_decay=0.25)
    a = _one_blob([2.0, -4.0], lr_mult=2.0, decay_mult=2.0)
    c = _one_blob([2.0], lr_mult=1.0, decay_mult=0.0)
    s = CaffeSolver(p, [a, c])
    a.tensor.grad = torch.tensor([1.0, 1.0], dtype=torch.float64)
    c.tensor.grad = torch.tensor([1.0], dtype=torch.float64)
    s.step()
    # a: g + 0.5*w = [2, -1]; h = 1.0 * [2, -1]; w = [0, -3]
    assert a.tensor.tolist() == [0.0, -3.0]
    # c: no decay; h = 0.5 * 1; w = 1.5
    assert c.tensor.tolist() == [1.5]
    a.tensor.grad = torch.zeros(2, dtype=torch.float64)
    c.tensor.grad = torch.zeros(1, dtype=torch.float64)
    s.step()
    # a: g = 0.5*[0, -3] = [0, -1.5]; h = 0.5*[2, -1] + 1.0*[0, -1.5] = [1, -2]; w = [-1, -1]
    assert a.tensor.tolist() == [-1.0, -1.0]
    assert c.tensor.tolist() == [1.25]


def test_l1_regularization_by_hand():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="fixed",
                                  weight_decay=0.5, regularization_type="L1")
    b = _one_blob([3.0, -2.0, 0.0])
    s = CaffeSolver(p, [b])
    b.tensor.grad = torch.zeros(3, dtype=torch.float64)
    s.step()
    assert b.tensor.tolist() == [2.5, -1.5, 0.0]  # sign(0) = 0


def test_clip_gradients_by_hand():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="fixed", clip_gradients=1.0)
    a, c = _one_blob([0.0, 0.0]), _one_blob([0.0])
    s = CaffeSolver(p, [a, c])
    a.tensor.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    c.tensor.grad = torch.tensor([4.0], dtype=torch.float64)
    s.step()  # global L2 norm 5 > 1: everything scaled by 1/5
    assert a.tensor.tolist() == pytest.approx([-0.6, 0.0], abs=1e-15)
    assert c.tensor.tolist() == pytest.approx([-0.8], abs=1e-15)
    # under the threshold: untouched
    a.tensor.grad = torch.tensor([0.3, 0.0], dtype=torch.float64)
    c.tensor.grad = torch.tensor([0.4], dtype=torch.float64)
    s.step()
    assert c.tensor.tolist() == pytest.approx([-1.2], abs=1e-15)


def test_clip_applies_before_iter_size_normalization():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="fixed", clip_gradients=1.0,
                                  iter_size=2)
    b = _one_blob([0.0, 0.0])
    s = CaffeSolver(p, [b])
    b.tensor.grad = torch.tensor([3.0, 4.0], dtype=torch.float64)
    b.tensor.grad += torch.tensor([3.0, 4.0], dtype=torch.float64)
    s.step()  # sum [6, 8] has norm 10 -> [0.6, 0.8], then / iter_size
    assert b.tensor.tolist() == pytest.approx([-0.3, -0.4], abs=1e-15)


def test_clip_negative_disables():
    p = caffe_pb2.SolverParameter(type="SGD", base_lr=1.0, lr_policy="fixed")
    assert p.clip_gradients == -1
    b = _one_blob([0.0])
    s = CaffeSolver(p, [b])
    b.tensor.grad = torch.tensor([100.0], dtype=torch.float64)
    s.step()
    assert b.tensor.tolist() == [-100.0]


@pytest.mark.parametrize("kind", TYPES)
def test_lr_mult_zero_blob_still_keeps_history(kind):
    # No gradient (as a blob with lr_mult 0 gets none): Caffe still regularizes and updates
    # history with rate 0; the weights stay put.
    param = make_param(kind, "fixed", weight_decay=0.1)
    b = _one_blob([1.0, -2.0], lr_mult=0.0, decay_mult=1.0)
    s = CaffeSolver(param, [b])
    for _ in range(3):
        assert b.tensor.grad is None
        s.step()
    assert b.tensor.tolist() == [1.0, -2.0]
    ref = RefSolver(param, kind, [np.array([1.0, -2.0])], [0.0], [1.0])
    for _ in range(3):
        ref.step([np.zeros(2)])
    for h, rh in zip(s.history(), ref.history):
        assert_close(h.numpy(), rh, 1e-12)
    if kind in ("SGD", "Nesterov"):
        assert not s.history()[0].any()  # rate 0: nothing enters the momentum
    else:
        assert s.history()[0].any()


# ---------------------------------------------------------------------------
# learning-rate policies
# ---------------------------------------------------------------------------

def _policy(policy, **kw):
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy=policy)
    for k, v in kw.items():
        if k == "stepvalue":
            p.stepvalue.extend(v)
        else:
            setattr(p, k, v)
    return p


def _f32(x):
    return float(np.float32(x))


def test_lr_fixed():
    assert learning_rate(_policy("fixed"), 123, 4) == (_f32(0.1), 4)


def test_lr_step():
    p = _policy("step", gamma=0.1, stepsize=3)
    got = [learning_rate(p, it, 0) for it in range(8)]
    base, g = _f32(0.1), _f32(0.1)
    assert [r for r, _ in got] == pytest.approx([base * g ** (it // 3) for it in range(8)], rel=1e-12)
    assert [r for r, _ in got][:4] == pytest.approx([0.1, 0.1, 0.1, 0.01], rel=1e-6)
    assert [c for _, c in got] == [0, 0, 0, 1, 1, 1, 2, 2]


def test_lr_exp():
    p = _policy("exp", gamma=0.9)
    assert learning_rate(p, 0, 0)[0] == pytest.approx(0.1, rel=1e-6)
    assert learning_rate(p, 5, 0)[0] == pytest.approx(0.1 * 0.9 ** 5, rel=1e-6)
    assert learning_rate(p, 5, 0)[0] == pytest.approx(0.059049, rel=1e-6)


def test_lr_inv():
    p = _policy("inv", gamma=1e-4, power=0.75)
    assert learning_rate(p, 0, 0)[0] == pytest.approx(0.1, rel=1e-6)
    assert learning_rate(p, 10000, 0)[0] == pytest.approx(0.1 * 2 ** -0.75, rel=1e-6)
    assert learning_rate(p, 100, 0)[0] == pytest.approx(0.1 * (1 + 1e-4 * 100) ** -0.75, rel=1e-6)


def test_lr_multistep_advances_one_step_per_call():
    p = _policy("multistep", gamma=0.5, stepvalue=[2, 4])
    step, rates, steps = 0, [], []
    for it in range(7):
        r, step = learning_rate(p, it, step)
        rates.append(r)
        steps.append(step)
    assert steps == [0, 0, 1, 1, 2, 2, 2]
    assert rates == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.025], rel=1e-6)
    # resumed far past both step values with current_step 0: Caffe's `if` moves one per iteration
    assert learning_rate(p, 10, 0) == (pytest.approx(0.05, rel=1e-6), 1)
    assert learning_rate(p, 11, 1) == (pytest.approx(0.025, rel=1e-6), 2)


def test_lr_poly():
    p = _policy("poly", power=2.0, max_iter=10)
    assert learning_rate(p, 0, 0)[0] == pytest.approx(0.1, rel=1e-6)
    assert learning_rate(p, 5, 0)[0] == pytest.approx(0.025, rel=1e-6)
    assert learning_rate(p, 10, 0)[0] == 0.0


def test_lr_sigmoid():
    p = _policy("sigmoid", gamma=0.5, stepsize=4)
    assert learning_rate(p, 4, 0)[0] == pytest.approx(0.05, rel=1e-6)
    assert learning_rate(p, 0, 0)[0] == pytest.approx(0.1 / (1 + math.exp(2.0)), rel=1e-6)
    assert learning_rate(p, 8, 0)[0] == pytest.approx(0.1 / (1 + math.exp(-2.0)), rel=1e-6)


@pytest.mark.parametrize("policy,kw,field", [
    ("", {}, "lr_policy"),
    ("plateau", {}, "lr_policy"),
    ("step", {"gamma": 0.1}, "stepsize"),
    ("step", {"gamma": -0.1, "stepsize": 2}, "gamma"),
    ("sigmoid", {"gamma": 0.1}, "stepsize"),
    ("poly", {"power": 1.0}, "max_iter"),
])
def test_lr_policy_errors(policy, kw, field):
    with pytest.raises(ConvnetError, match=field):
        learning_rate(_policy(policy, **kw), 0, 0)
    p = _policy(policy, **kw)
    p.type = "SGD"
    with pytest.raises(ConvnetError, match=field):
        CaffeSolver(p, [])


# ---------------------------------------------------------------------------
# state: layout and round trips
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", TYPES)
def test_state_round_trip_continues_identically(kind, dtype):
    param = make_param(kind, "multistep", 2)
    n_first, n_more = 4, 5

    full = make_blobs(dtype)
    solver = CaffeSolver(param, full)
    for it in range(n_first + n_more):
        accumulate(full, grads_for(it, 2))
        solver.step()

    part = make_blobs(dtype)
    first = CaffeSolver(param, part)
    for it in range(n_first):
        accumulate(part, grads_for(it, 2))
        first.step()
    raw = first.to_state("snap_iter_4.caffemodel").SerializeToString()
    state = caffe_pb2.SolverState()
    state.ParseFromString(raw)
    assert state.iter == n_first and state.learned_net == "snap_iter_4.caffemodel"
    assert state.current_step == first.current_step == 1
    for hp in state.history:
        assert len(hp.double_data if dtype == torch.float64 else hp.data) > 0
        assert len(hp.data if dtype == torch.float64 else hp.double_data) == 0

    resumed = [LearnableBlob(torch.nn.Parameter(b.tensor.detach().clone()), b.lr_mult,
                             b.decay_mult, b.name) for b in part]
    second = CaffeSolver(param, resumed)
    second.load_state(state)
    assert second.iteration == n_first and second.current_step == 1
    for it in range(n_first, n_first + n_more):
        accumulate(resumed, grads_for(it, 2))
        second.step()
    for a, b in zip(full, resumed):
        assert torch.equal(a.tensor, b.tensor)
    for a, b in zip(solver.history(), second.history()):
        assert torch.equal(a, b)
    assert second.iteration == solver.iteration and second.current_step == solver.current_step


@pytest.mark.parametrize("kind", ["Adam", "AdaDelta"])
def test_two_history_blobs_per_param_in_caffe_order(kind):
    param = make_param(kind, "fixed")
    solver, ref = run_compare(param, kind, 3)
    hist = solver.history()
    n = len(SHAPES)
    assert len(hist) == 2 * n
    # [first moment (Adam m / AdaDelta grad^2 average) of every blob, then the second]
    assert [tuple(h.shape) for h in hist] == SHAPES + SHAPES
    state = solver.to_state()
    assert len(state.history) == 2 * n
    for j, (hp, rh) in enumerate(zip(state.history, ref.history)):
        assert tuple(hp.shape.dim) == SHAPES[j % n]
        assert_close(np.array(hp.double_data).reshape(SHAPES[j % n]), rh, 1e-12)
    if kind == "Adam":
        # after the first steps m ~ g scale, v ~ g^2 scale: v_j is the square-type entry
        blob0_m, blob0_v = ref.history[0], ref.history[n]
        assert np.all(blob0_v >= 0) and np.any(blob0_m < 0)
        assert np.all(hist[n].numpy() >= 0) and np.any(hist[0].numpy() < 0)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "AdaGrad", "RMSProp"])
def test_one_history_blob_per_param(kind):
    solver = CaffeSolver(make_param(kind), make_blobs())
    assert [tuple(h.shape) for h in solver.history()] == SHAPES
    assert len(solver.to_state().history) == len(SHAPES)


def test_state_serializes_like_caffe_blob_to_proto():
    blobs = make_blobs(torch.float32)
    s = CaffeSolver(make_param("SGD"), blobs)
    accumulate(blobs, grads_for(0, 1))
    s.step()
    state = s.to_state()
    assert not state.HasField("learned_net")
    for hp, h in zip(state.history, s.history()):
        assert list(hp.shape.dim) == list(h.shape)
        assert np.array_equal(np.array(hp.data, dtype=np.float32), h.numpy().ravel())
        assert not hp.HasField("num")
    # byte-identical to protobuf building the same message value by value
    manual = caffe_pb2.SolverState(iter=1, current_step=0)
    for h in s.history():
        bp = manual.history.add()
        bp.shape.dim.extend(h.shape)
        bp.data.extend(h.numpy().ravel().tolist())
    assert manual.SerializeToString() == state.SerializeToString()


def test_load_state_accepts_legacy_4d_and_float_data_for_double():
    blobs = make_blobs(torch.float64, shapes=[(2, 3), (3,)], lr_mults=[1, 1], decay_mults=[1, 1])
    s = CaffeSolver(make_param("SGD"), blobs)
    state = caffe_pb2.SolverState(iter=7, current_step=2)
    h0 = state.history.add()
    h0.num, h0.channels, h0.height, h0.width = 1, 1, 2, 3
    h0.data.extend([1, 2, 3, 4, 5, 6])
    h1 = state.history.add()
    h1.shape.dim.append(3)
    h1.data.extend([0.5, 0.5, 0.5])
    h1.double_data.extend([7.0, 8.0, 9.0])  # double_data wins, as in Blob::FromProto
    s.load_state(state)
    assert s.iteration == 7 and s.current_step == 2
    assert s.history()[0].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert s.history()[1].tolist() == [7.0, 8.0, 9.0]


def test_load_state_errors_leave_solver_unchanged():
    blobs = make_blobs()
    s = CaffeSolver(make_param("Adam"), blobs)
    good = s.to_state()
    with pytest.raises(ConvnetError, match="3 history blobs.*keeps 6"):
        bad = caffe_pb2.SolverState()
        bad.CopyFrom(good)
        del bad.history[3:]
        s.load_state(bad)
    bad = caffe_pb2.SolverState()
    bad.CopyFrom(good)
    bad.iter = 5
    bad.history[4].shape.dim[0] = 4  # v of blob 1 ('layer1/0'), (3,) -> (4,)
    with pytest.raises(ConvnetError, match=r"history blob 4 \(blob 1 'layer1/0', v\).*\(4\)"):
        s.load_state(bad)
    bad.CopyFrom(good)
    del bad.history[0].double_data[-1]  # float64 blobs: Blob<double> writes double_data
    with pytest.raises(ConvnetError, match="5 values, expected 6"):
        s.load_state(bad)
    assert s.iteration == 0 and all(not h.any() for h in s.history())


# ---------------------------------------------------------------------------
# solver types and Caffe's checks
# ---------------------------------------------------------------------------

def test_legacy_solver_type_enum():
    p = caffe_pb2.SolverParameter(base_lr=0.1, lr_policy="fixed")
    p.solver_type = caffe_pb2.SolverParameter.ADAM
    s = CaffeSolver(p, make_blobs())
    assert s.type == "Adam" and len(s.history()) == 6
    p.solver_type = caffe_pb2.SolverParameter.NESTEROV
    assert CaffeSolver(p, []).type == "Nesterov"
    assert CaffeSolver(caffe_pb2.SolverParameter(lr_policy="fixed"), []).type == "SGD"
    p.type = "Adam"
    with pytest.raises(ConvnetError, match="solver_type.*type"):
        CaffeSolver(p, [])


@pytest.mark.parametrize("kind,kw,field", [
    ("AdaGrad", {"momentum": 0.9}, "momentum"),
    ("RMSProp", {"momentum": 0.9}, "momentum"),
    ("RMSProp", {"rms_decay": 1.0}, "rms_decay"),
    ("SGD", {"regularization_type": "L3"}, "regularization_type"),
    ("SGD", {"iter_size": 0}, "iter_size"),
    ("Adamax", {}, "type"),
])
def test_solver_checks(kind, kw, field):
    p = caffe_pb2.SolverParameter(type=kind, base_lr=0.1, lr_policy="fixed", **kw)
    with pytest.raises(ConvnetError, match=field):
        CaffeSolver(p, make_blobs())


def test_adam_and_adadelta_run_without_momentum_like_caffe():
    # Caffe has no momentum check for these: beta1 / the decay are then 0
    for kind in ("Adam", "AdaDelta"):
        p = caffe_pb2.SolverParameter(type=kind, base_lr=0.1, lr_policy="fixed")
        run_compare(p, kind, 3)


def test_blob_checks():
    t = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(ConvnetError, match="twice"):
        CaffeSolver(make_param("SGD"), [LearnableBlob(t), LearnableBlob(t)])
    with pytest.raises(ConvnetError, match="float16"):
        CaffeSolver(make_param("SGD"), [LearnableBlob(torch.nn.Parameter(torch.zeros(2).half()))])
    with pytest.raises(ConvnetError, match="mix dtypes"):
        CaffeSolver(make_param("SGD"), [LearnableBlob(t),
                                        LearnableBlob(torch.nn.Parameter(torch.zeros(2).double()))])
