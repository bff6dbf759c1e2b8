"""Caffe's learning-rate policies (``SGDSolver::GetLearningRate``).

With ``iter`` the number of updates already applied (the solver's iteration
counter before the update whose rate is asked for):

* ``fixed``: ``base_lr``
* ``step``: ``base_lr * gamma ^ floor(iter / stepsize)``; ``current_step``
  becomes ``iter / stepsize``
* ``exp``: ``base_lr * gamma ^ iter``
* ``inv``: ``base_lr * (1 + gamma * iter) ^ (-power)``
* ``multistep``: ``base_lr * gamma ^ current_step``, where ``current_step``
  is advanced by at most one per call, when ``iter >= stepvalue[current_step]``
  (Caffe's ``if``, not a ``while``: two step values passed at once are taken
  on two consecutive iterations)
* ``poly``: ``base_lr * (1 - iter / max_iter) ^ power``
* ``sigmoid``: ``base_lr / (1 + exp(-gamma * (iter - stepsize)))``

The rate is computed in double precision; a float32 solver rounds it (and
``rate * lr_mult``) to float32 the way Caffe's ``Dtype`` arithmetic does.
Caffe's ``CHECK``s (``stepsize > 0``, ``gamma >= 0``) and an unknown policy
raise :class:`~convnet_io.errors.ConvnetError` naming the field; so does
``poly`` with ``max_iter <= 0``, where Caffe would divide by zero.
"""
from __future__ import annotations

import math

from convnet_io.errors import ConvnetError

__all__ = ["LR_POLICIES", "learning_rate", "check_lr_policy"]

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def _cpow(base: float, exponent: float) -> float:
    """C's ``pow``: NaN for a negative base with a non-integer exponent, inf for 0^-x."""
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf
    except ValueError:
        return math.inf if base == 0 else math.nan


def _cexp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def check_lr_policy(param) -> None:
    """Raise ConvnetError for what Caffe's GetLearningRate would reject (CHECK/LOG(FATAL))."""
    policy = param.lr_policy
    if policy not in LR_POLICIES:
        shown = f"'{policy}'" if policy else "(unset)"
        raise ConvnetError(f"solver: unknown lr_policy {shown}; expected one of "
                           + ", ".join(LR_POLICIES))
    if policy in ("step", "sigmoid") and param.stepsize <= 0:
        raise ConvnetError(f"solver: lr_policy '{policy}' needs stepsize > 0 "
                           f"(got {param.stepsize})")
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and not param.gamma >= 0:
        raise ConvnetError(f"solver: lr_policy '{policy}' needs gamma >= 0 (got {param.gamma})")
    if policy == "poly" and param.max_iter <= 0:
        raise ConvnetError(f"solver: lr_policy 'poly' needs max_iter > 0 (got {param.max_iter})")


def learning_rate(param, iteration: int, current_step: int) -> tuple[float, int]:
    """Caffe's ``SGDSolver::GetLearningRate`` for ``param`` (a SolverParameter).

    Returns ``(rate, current_step)``: the rate for the update applied at
    ``iteration`` and the solver's ``current_step`` after the call (changed by
    ``step``, which recomputes it, and ``multistep``, which may advance it by one;
    the other policies return it unchanged).
    """
    check_lr_policy(param)
    policy = param.lr_policy
    base_lr = float(param.base_lr)
    gamma = float(param.gamma)
    it = int(iteration)
    if policy == "fixed":
        rate = base_lr
    elif policy == "step":
        current_step = it // int(param.stepsize)  # iter >= 0: C++'s truncation == floor
        rate = base_lr * _cpow(gamma, current_step)
    elif policy == "exp":
        rate = base_lr * _cpow(gamma, it)
    elif policy == "inv":
        rate = base_lr * _cpow(1.0 + gamma * it, -float(param.power))
    elif policy == "multistep":
        if current_step < len(param.stepvalue) and it >= param.stepvalue[current_step]:
            current_step += 1
        rate = base_lr * _cpow(gamma, current_step)
    elif policy == "poly":
        rate = base_lr * _cpow(1.0 - it / float(param.max_iter), float(param.power))
    else:  # sigmoid
        rate = base_lr * (1.0 / (1.0 + _cexp(-gamma * (it - float(param.stepsize)))))
    return float(rate), int(current_step)
