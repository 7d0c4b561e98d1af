"""Peers' range tests and suggestion rules, implemented from their published code.

fastai 2.8 (``Learner.lr_find`` and ``fastai.callback.schedule``):
    start_lr=1e-7, end_lr=10, num_it=100; the LR of iteration i (0-based) is
    ``start * (end / start) ** (i / num_it)``; the recorded loss is the debiased
    EMA ``avg = lerp(loss, avg, 0.98); smooth = avg / (1 - 0.98 ** n)``; the test
    stops after the iteration whose smoothed loss exceeds 4x the best smoothed
    loss. The suggestion functions run on ``lrs[num_it // 10 : -5]`` and
    ``losses[num_it // 10 : -5]``, truncated at the first NaN:
    ``valley`` (longest strictly decreasing run of losses, then the point 1/3 +
    1/6 of the way along it), ``steep`` (the LR where the slope of loss over
    log(lr) is most negative), ``minimum`` (the LR of the minimum loss / 10) and
    ``slide`` (interval slide rule over ``np.gradient`` of the losses).

Lightning 2.6 (``Tuner.lr_find`` and ``_LRFinder.suggestion``):
    min_lr=1e-8, max_lr=1, num_training=100, exponential mode. Its scheduler
    gives the first batch ``min_lr`` and batch k >= 1
    ``min_lr * (max_lr / min_lr) ** ((k + 1) / num_training)``; the logged loss
    is ``avg = 0.98 avg + 0.02 loss; smooth = avg / (1 - 0.98 ** (k + 2))`` (it
    debiases with the optimizer-step count + 1); from the second batch on the
    test stops once ``smooth > 4 * best``. Suggestion: the LR at ``argmin`` of
    ``torch.gradient(losses, spacing=[lrs])`` over ``[10:-1]`` (finite points).

Both range tests are pure functions of a ``step_fn(lr) -> loss`` that trains one
batch at ``lr`` and returns the batch loss, so they run on any task.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

StepFn = Callable[[float], float]

# ------------------------------------------------------------------ fastai
FASTAI_START, FASTAI_END, FASTAI_NUM_IT, FASTAI_BETA = 1e-7, 10.0, 100, 0.98


def fastai_record(
    step_fn: StepFn,
    start_lr: float = FASTAI_START,
    end_lr: float = FASTAI_END,
    num_it: int = FASTAI_NUM_IT,
) -> tuple[list[float], list[float]]:
    """The (lrs, smoothed losses) fastai's Recorder holds after ``lr_find``."""
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, math.inf
    for it in range(num_it):
        lr = start_lr * (end_lr / start_lr) ** (it / num_it)
        loss = step_fn(lr)
        avg = loss + FASTAI_BETA * (avg - loss)  # torch.lerp(loss, avg, beta)
        smooth = avg / (1 - FASTAI_BETA ** (it + 1))
        lrs.append(lr)
        losses.append(smooth)
        if smooth < best:
            best = smooth
        if smooth > 4 * best:  # a NaN loss does not stop it (NaN compares False)
            break
    return lrs, losses


def fastai_window(
    lrs: Sequence[float], losses: Sequence[float], num_it: int = FASTAI_NUM_IT
) -> tuple[np.ndarray, np.ndarray]:
    """The slice ``lr_find`` hands to the suggestion functions."""
    lr = np.asarray(lrs[num_it // 10 : -5], dtype=np.float64)
    ls = np.asarray(losses[num_it // 10 : -5], dtype=np.float64)
    nan = np.flatnonzero(np.isnan(ls))
    if len(nan):
        lr, ls = lr[: nan[0]], ls[: nan[0]]
    return lr, ls


def fastai_valley(lrs: np.ndarray, losses: np.ndarray) -> float:
    """Longest valley: the longest (not necessarily contiguous) decreasing
    subsequence ending at ``max_end``; suggestion 1/3 + 1/6 of the way along it.
    A line-by-line port of ``fastai.callback.schedule.valley``."""
    n = len(losses)
    max_start, max_end = 0, 0
    lds = [1] * n
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    idx = max_start + int(sections) + int(sections / 2)
    return float(lrs[idx])


def fastai_steep(lrs: np.ndarray, losses: np.ndarray) -> float:
    """``lrs[argmin((loss[i+1] - loss[i]) / (log lr[i+1] - log lr[i]))]``."""
    grads = (losses[1:] - losses[:-1]) / (np.log(lrs[1:]) - np.log(lrs[:-1]))
    return float(lrs[int(np.argmin(grads))])


def fastai_minimum(lrs: np.ndarray, losses: np.ndarray) -> float:
    """The LR of the minimum smoothed loss, divided by 10."""
    return float(lrs[int(np.argmin(losses))]) / 10


def fastai_slide(
    lrs: np.ndarray,
    losses: np.ndarray,
    lr_diff: int = 15,
    thresh: float = 0.005,
    adjust_value: float = 1.0,
) -> float:
    """Interval slide rule (a port of ``fastai.callback.schedule.slide``)."""
    loss_grad = np.gradient(losses)
    r_idx = -1
    l_idx = r_idx - lr_diff
    local_min_lr = lrs[l_idx]
    while l_idx >= -len(losses) and abs(loss_grad[r_idx] - loss_grad[l_idx]) > thresh:
        local_min_lr = lrs[l_idx]
        r_idx -= 1
        l_idx -= 1
    return float(local_min_lr) * adjust_value


FASTAI_RULES: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "valley": fastai_valley,
    "steep": fastai_steep,
    "minimum": fastai_minimum,
    "slide": fastai_slide,
}


# ------------------------------------------------------------------ Lightning
LIGHTNING_MIN, LIGHTNING_MAX, LIGHTNING_NUM, LIGHTNING_BETA = 1e-8, 1.0, 100, 0.98


def lightning_lr(k: int, min_lr: float, max_lr: float, num_training: int) -> float:
    """The LR Lightning's ``_ExponentialLR`` gives batch ``k`` (0-based)."""
    if k == 0:
        return min_lr
    return min_lr * (max_lr / min_lr) ** ((k + 1) / num_training)


def lightning_record(
    step_fn: StepFn,
    min_lr: float = LIGHTNING_MIN,
    max_lr: float = LIGHTNING_MAX,
    num_training: int = LIGHTNING_NUM,
    early_stop_threshold: float = 4.0,
) -> tuple[list[float], list[float]]:
    """The (lrs, smoothed losses) of Lightning's ``lr_finder.results``."""
    lrs: list[float] = []
    losses: list[float] = []
    avg, best = 0.0, 0.0
    for k in range(num_training):
        lr = lightning_lr(k, min_lr, max_lr, num_training)
        lrs.append(lr)
        loss = step_fn(lr)
        current_step = k + 1  # trainer.global_step after this batch's step
        avg = LIGHTNING_BETA * avg + (1 - LIGHTNING_BETA) * loss
        smooth = avg / (1 - LIGHTNING_BETA ** (current_step + 1))
        stop = current_step > 1 and smooth > early_stop_threshold * best
        if smooth < best or current_step == 1:
            best = smooth
        losses.append(smooth)
        if stop:
            break
    return lrs, losses


def lightning_suggestion(
    lrs: Sequence[float],
    losses: Sequence[float],
    skip_begin: int = 10,
    skip_end: int = 1,
) -> float | None:
    """``_LRFinder.suggestion``: steepest negative gradient w.r.t. the (linear) LR."""
    ls = torch.tensor(list(losses[skip_begin:-skip_end]), dtype=torch.float64)
    lr = torch.tensor(list(lrs[skip_begin:-skip_end]), dtype=torch.float64)
    finite = torch.isfinite(ls)
    ls, lr = ls[finite], lr[finite]
    if len(ls) < 2:
        return None
    grads = torch.gradient(ls, spacing=[lr])[0]
    return float(lr[int(torch.argmin(grads))])
