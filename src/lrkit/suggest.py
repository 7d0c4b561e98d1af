"""Suggest a learning rate from a range-test curve (framework-free, numpy only).

:func:`suggest` reads ``(lrs, losses)`` (and, when available, validation losses
recorded along the same ladder) and returns a :class:`Suggestion`: the LR to
train with, a ``low .. high`` range usable as the bounds of a one-cycle or cyclic
schedule, a confidence in [0, 1] and reasons in plain words.

Rules, by name (``method=``):

- ``"lrkit"`` (default): see :func:`_rule_lrkit`;
- ``"valley"``: fastai's valley rule (the middle of the longest descending run);
- ``"steepest"``: the LR of steepest descent of the smoothed loss in log-LR
  (torch-lr-finder's and Lightning's idea, on a lag-free smoothing);
- ``"minimum"``: the LR of minimum smoothed loss divided by 10 (fastai's
  ``minimum``).

Example:
    >>> import numpy as np
    >>> from lrkit.suggest import suggest
    >>> lrs = np.logspace(-6, 1, 100)
    >>> x = np.log10(lrs)
    >>> losses = 2.3 - 2.0 / (1 + np.exp(-3 * (x + 3))) + np.exp(3 * (x - 0.3))
    >>> s = suggest(lrs, losses)
    >>> 1e-4 < s.lr < 1e-1 and s.low < s.lr < s.high
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import _check
from ._util import robust_noise

__all__ = ["RULES", "Suggestion", "smooth_curve", "suggest"]

Array = NDArray[np.float64]


@dataclass(frozen=True)
class Suggestion:
    """A suggested learning rate with its range, confidence and reasons.

    Attributes:
        lr: the learning rate to train with (``None`` if the curve allows none).
        low: lower end of the usable range (where the loss starts to fall).
        high: upper end of the usable range (just before the loss stops falling).
        confidence: in [0, 1]; low values come with reasons saying why.
        reasons: plain-language notes on the curve and what to change.
        method: the rule that produced it.
        evidence: the numbers the rule used (e.g. ``lr_bottom``, ``margin``).

    Example:
        >>> s = Suggestion(3e-3, low=1e-3, high=9e-3, confidence=0.8)
        >>> Suggestion.from_dict(s.to_dict()) == s
        True
    """

    lr: float | None
    low: float | None = None
    high: float | None = None
    confidence: float = 0.0
    reasons: tuple[str, ...] = ()
    method: str = "lrkit"
    evidence: Mapping[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (non-finite numbers become ``None``)."""

        def num(x: float | None) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {
            "lr": num(self.lr),
            "low": num(self.low),
            "high": num(self.high),
            "confidence": float(self.confidence),
            "reasons": list(self.reasons),
            "method": self.method,
            "evidence": {k: num(v) for k, v in self.evidence.items()},
        }

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Suggestion:
        """Inverse of :meth:`to_dict`."""
        evidence = {
            k: (math.nan if v is None else float(v))
            for k, v in record.get("evidence", {}).items()
        }
        return cls(
            lr=record.get("lr"),
            low=record.get("low"),
            high=record.get("high"),
            confidence=float(record.get("confidence", 0.0)),
            reasons=tuple(record.get("reasons", ())),
            method=str(record.get("method", "lrkit")),
            evidence=evidence,
        )


# ---------------------------------------------------------------- curve tools
@dataclass(frozen=True)
class _Curve:
    """A cleaned range-test curve in log10-LR space."""

    x: Array  # log10(lr) of usable points, increasing
    y: Array  # raw loss there
    smooth: Array  # lag-free robust smoothing of y
    sigma: float  # step-to-step noise of y
    n_input: int  # points handed in
    nan_lr: float | None  # first LR with a non-finite loss, if any
    bandwidth: float = 0.15  # kernel width of ``smooth``, in decades
    nominal: Array | None = None  # y smoothed at the nominal bandwidth

    @cached_property
    def i_min(self) -> int:
        """Index of the smoothed curve's minimum."""
        return int(np.argmin(self.smooth))

    @cached_property
    def start(self) -> float:
        """Starting level: the median of the first tenth of the smoothed curve."""
        return float(np.median(self.smooth[: max(3, len(self.smooth) // 10)]))

    @cached_property
    def drop(self) -> float:
        """How far the smoothed loss fell from its start to its minimum (>= 0)."""
        return max(self.start - float(self.smooth[self.i_min]), 0.0)


def _to_array(name: str, values: Any) -> Array:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        _check.fail(name, "a sequence of numbers", values, exc=TypeError)
    if arr.ndim != 1:
        _check.fail(
            name, "one-dimensional", f"an array of shape {arr.shape}", shown=True
        )
    return arr


def _smooth(x: Array, y: Array, bandwidth: float, *, ladder: bool = True) -> Array:
    """Robust, lag-free smoothing: a running median of 5, then at each point a
    local-linear fit with Gaussian weights ``exp(-((x_j - x_i) / bandwidth)^2 / 2)``
    (``x`` in decades of LR). Vectorised in blocks of rows. ``ladder``: the
    curve is a range test's training loss, which stops on a rise (see the
    padding of its end)."""
    n = len(y)
    if n < 3:
        return np.array(y, dtype=np.float64)
    k = 2
    # padded with the end points, except that a last loss below the median of
    # the last three is padded with that median: the ladder stops on a rise
    # (a high last loss is the signal the test looks for), never on a fall, so
    # a low one after high ones is one lucky batch past the edge, which
    # padded as is would be the median there, and the minimum
    tail = float(y[-1])
    if ladder:
        tail = max(tail, float(np.median(y[-3:])))
    padded = np.concatenate([np.full(k, y[0]), y, np.full(k, tail)])
    med = np.median(np.lib.stride_tricks.sliding_window_view(padded, 2 * k + 1), axis=1)
    out = np.empty(n)
    block = max(1, 2_000_000 // n)  # rows per block: a few MB of weights
    for lo in range(0, n, block):
        xi = x[lo : lo + block, None]
        w = np.exp(-0.5 * ((x[None, :] - xi) / bandwidth) ** 2)
        sw = w.sum(axis=1, keepdims=True)
        mx = (w * x).sum(axis=1, keepdims=True) / sw
        my = (w * med).sum(axis=1, keepdims=True) / sw
        dx = x[None, :] - mx
        vx = (w * dx**2).sum(axis=1, keepdims=True)
        cov = (w * dx * (med[None, :] - my)).sum(axis=1, keepdims=True)
        slope = np.where(vx > 1e-18, cov / np.where(vx > 1e-18, vx, 1.0), 0.0)
        out[lo : lo + block] = (my + slope * (xi - mx))[:, 0]
    return out


def _kernel_points(bandwidth: float, density: float) -> float:
    """Points one smoothing kernel averages: ``sqrt(2 pi) * bandwidth * density``
    (``density`` in points per decade), at least 1."""
    return max(1.0, math.sqrt(2.0 * math.pi) * bandwidth * density)


def _density(x: Array, at: float | None = None, half: float = 0.0) -> float:
    """Points per decade of LR: over the whole curve, or within ``half``
    decades of ``at`` (a ladder linear in LR is denser at its top)."""
    if at is not None and half > 0.0:
        near = x[np.abs(x - at) <= half]
        if len(near) > 1 and near[-1] > near[0]:
            return (len(near) - 1) / float(near[-1] - near[0])
    return (len(x) - 1) / max(float(x[-1] - x[0]), 1e-12) if len(x) > 1 else 1.0


def _noise_width(x: Array, y: Array, nominal: Array, bandwidth: float) -> float:
    """The kernel width for a curve: ``bandwidth``, widened on a noisy curve.

    The bottom of a curve is read to ``BOTTOM_FRAC`` of its drop; when the
    smoothed curve's own noise, ``sigma / sqrt(points per kernel)``, is larger
    than that, where the bottom starts is a matter of chance. The width then
    grows until the two match,

        width = (sigma / (BOTTOM_FRAC * drop))^2 / (sqrt(2 pi) * density),

    up to ``MAX_WIDEN`` times ``bandwidth`` (wider, the kernel would flatten
    the descent itself, a fraction of a decade long). ``sigma`` is the raw
    step-to-step noise, ``drop`` the fall of ``nominal`` (the curve smoothed at
    ``bandwidth``) from its start to its minimum, ``density`` the points per
    decade around that minimum. A curve shorter than ``MIN_POINTS``, or one
    whose drop is within 3 noise units of the nominal kernel (the rule calls
    it flat: no bottom to place), keeps ``bandwidth``.
    """
    if len(y) < MIN_POINTS:
        return bandwidth
    i_min = int(np.argmin(nominal))
    drop = float(np.median(nominal[: max(3, len(nominal) // 10)]) - nominal[i_min])
    sigma = robust_noise(y)
    per_decade = _density(x, float(x[i_min]), 2.0 * bandwidth)
    points = _kernel_points(bandwidth, per_decade)
    if sigma <= 0.0 or drop <= 3.0 * sigma / math.sqrt(points):
        return bandwidth
    needed = (sigma / (BOTTOM_FRAC * drop)) ** 2 / (
        math.sqrt(2.0 * math.pi) * per_decade
    )
    return min(MAX_WIDEN * bandwidth, max(bandwidth, needed))


def _smooth_for_noise(
    x: Array, y: Array, bandwidth: float
) -> tuple[Array, Array, float]:
    """``(smoothed at bandwidth, smoothed at the noise-matched width, width)``."""
    nominal = _smooth(x, y, bandwidth)
    width = _noise_width(x, y, nominal, bandwidth)
    return nominal, nominal if width == bandwidth else _smooth(x, y, width), width


def smooth_curve(
    lrs: Sequence[float] | Array,
    losses: Sequence[float] | Array,
    bandwidth: float = 0.15,
) -> tuple[Array, Array]:
    """The lag-free robust smoothing the rules use (also for display).

    A running median of 5 points (at the top of the ladder a last loss below
    the median of the last three is padded with that median: a lone lucky
    batch past the edge is not the curve's end), then at each LR a weighted
    straight-line fit
    in ``x = log10(lr)`` with Gaussian weights
    ``w_j = exp(-((x_j - x_i) / width)^2 / 2)``, evaluated at ``x_i``. Unlike
    an exponential moving average it does not lag the curve. ``width`` is
    ``bandwidth``, widened on a curve whose noise would otherwise hide where
    its bottom starts:

        width = clip((sigma / (0.05 * drop))^2 / (sqrt(2 pi) * density),
                     bandwidth, 2 * bandwidth)

    with ``sigma`` the step-to-step noise of the losses, ``drop`` the fall of
    the curve smoothed at ``bandwidth`` from its start to its minimum and
    ``density`` the points per decade around that minimum. Curves of fewer
    than 10 points, and curves with no drop beyond 3 noise units of the
    ``bandwidth`` kernel, are not widened.

    Args:
        lrs: increasing learning rates (> 0).
        losses: finite losses at those LRs.
        bandwidth: kernel width in decades of LR (before widening).

    Returns:
        ``(lrs, smoothed_losses)`` as arrays.

    Example:
        >>> import numpy as np
        >>> lrs = np.logspace(-4, 0, 50)
        >>> _, s = smooth_curve(lrs, np.log10(lrs) ** 2)  # a parabola in log-LR
        >>> int(np.argmin(s)) == 49  # minimum at the right end, no lag
        True
    """
    lr = np.asarray(lrs, dtype=np.float64)
    y = np.asarray(losses, dtype=np.float64)
    return lr, _smooth_for_noise(np.log10(lr), y, bandwidth)[1]


def _check_lrs(name: str, arr: Array, given: Any) -> None:
    """LRs must be finite, > 0 and strictly increasing."""
    if np.any(~np.isfinite(arr)) or np.any(arr <= 0):
        _check.fail(name, "finite and > 0", given)
    if len(arr) > 1 and np.any(np.diff(arr) <= 0):
        _check.fail(name, "strictly increasing", given)


def _falls_at_start(c: _Curve) -> bool:
    """The raw loss fell from the first tenth of the ladder to the second by
    more than twice the noise of that difference of means: a real fall, not
    the smoothing's edge on a flat, noisy start."""
    t = max(2, len(c.y) // 10)
    if len(c.y) < 2 * t:
        return False
    fall = float(np.mean(c.y[:t]) - np.mean(c.y[t : 2 * t]))
    return fall > 2.0 * c.sigma * math.sqrt(2.0 / t)


def _prepare(
    lrs: Any, losses: Any, skipped: Sequence[bool] | None, bandwidth: float
) -> _Curve:
    lr = _to_array("lrs", lrs)
    loss = _to_array("losses", losses)
    if len(lr) != len(loss):
        _check.fail(
            "losses",
            f"as long as lrs ({len(lr)} values)",
            f"{len(loss)} values",
            shown=True,
        )
    _check_lrs("lrs", lr, lrs)
    keep = np.ones(len(lr), dtype=bool)
    if skipped is not None:
        if len(skipped) != len(lr):
            _check.fail(
                "skipped",
                f"as long as lrs ({len(lr)} values)",
                f"{len(skipped)} values",
                shown=True,
            )
        keep &= ~np.asarray(skipped, dtype=bool)
    bad = ~np.isfinite(loss)
    nan_lr = None
    if np.any(bad & keep):
        first = int(np.argmax(bad & keep))
        nan_lr = float(lr[first])
        keep[first:] = False  # nothing after a NaN is trustworthy
    x = np.log10(lr[keep])
    y = loss[keep]
    nominal, smooth, width = (
        _smooth_for_noise(x, y, bandwidth) if len(y) else (y, y, bandwidth)
    )
    return _Curve(x, y, smooth, robust_noise(y), len(lr), nan_lr, width, nominal)


def _bottom(c: _Curve) -> int:
    """Index where the smoothed curve reaches its bottom: the first point, before
    the minimum, within ``BOTTOM_FRAC`` of the total drop of the minimum."""
    near = c.smooth[: c.i_min + 1] <= c.smooth[c.i_min] + BOTTOM_FRAC * c.drop
    return int(np.argmax(near))


def _low(c: _Curve) -> int:
    """Index where training starts to respond: the loss has fallen by a tenth of
    its total drop (first crossing: what the validation rule counts from; the
    range's reported low end is the stricter :func:`_low_bound`)."""
    fallen = c.smooth[: c.i_min + 1] <= c.start - 0.1 * c.drop
    return int(np.argmax(fallen)) if np.any(fallen) else 0


def _low_bound(c: _Curve) -> int:
    """Index of the range's low end: where the smoothed loss falls below its
    start by a tenth of its drop (and by twice its noise) for good before the
    minimum. A flat, noisy start dips below such a line by chance (the
    smoothing's edge makes the start look high): the last crossing counts, not
    the first (a review saw low = 1e-7 on curves flat up to 1e-4)."""
    noise = c.sigma / math.sqrt(_kernel_points(c.bandwidth, _density(c.x)))
    line = c.start - max(0.1 * c.drop, 2.0 * noise)
    above = np.nonzero(c.smooth[: c.i_min + 1] > line)[0]
    return min(int(above[-1]) + 1, c.i_min) if len(above) else 0


def _edge_seen(c: _Curve) -> bool:
    """True when the loss rose again after its minimum (by a fifth of its drop)
    or turned NaN: the ladder reached an instability edge."""
    if c.nan_lr is not None:
        return True
    return float(np.max(c.smooth[c.i_min :]) - c.smooth[c.i_min]) > 0.2 * c.drop


def _edge_x(c: _Curve) -> float | None:
    """log10 of the LR where the loss turned up after its minimum (rose by a
    fifth of its drop), or of the first non-finite loss; None without an edge."""
    rise = np.nonzero(c.smooth[c.i_min :] > c.smooth[c.i_min] + 0.2 * c.drop)[0]
    if len(rise):
        return float(c.x[c.i_min + int(rise[0])])
    return None if c.nan_lr is None else math.log10(c.nan_lr)


def _descent(c: _Curve) -> tuple[int, Array]:
    """Index of the minimum of the smoothed curve and the slope d(loss)/d(log lr)."""
    slope = np.gradient(c.smooth, c.x) if len(c.x) > 1 else np.zeros(1)
    return c.i_min, slope


# ---------------------------------------------------------------- the rules
MIN_POINTS = 10
#: Fewer steps per decade of LR than this and the ladder is too coarse to read:
#: a reason, and the confidence falls (the default ladder has ~12).
MIN_PER_DECADE = 5
MIN_VAL_POINTS = 5
#: Validation points needed across the descent before validation can lower the
#: suggestion.
MIN_VAL_DESCENT = 8
#: A flat curve that blew up within this many decades of ``start_lr`` says
#: ``start_lr`` was already too high; one flat for longer, a trained model.
FLAT_DECADES = 1.0
#: The default rule's margin below the bottom of the curve (half a decade).
SAFETY_FACTOR = 3.0
#: The bottom of a curve starts where the loss is within this fraction of its
#: total drop from the minimum (stable where the minimum itself sits in a flat,
#: noisy trough).
BOTTOM_FRAC = 0.05
#: The smoothing kernel widens on a noisy curve, up to this many times the
#: bandwidth, until its noise is below ``BOTTOM_FRAC`` of the drop.
MAX_WIDEN = 2.0
#: Confidence falls when the bottom sits less than this many decades below the
#: LR where the loss turns up again: a sharp edge, whose place varies from run
#: to run, and the suggestion's margin below it is then a guess.
EDGE_DECADES = 1.0
#: Confidence falls when a non-negative loss lost less than this fraction of
#: its starting value before the edge: the test saw only the first steps of
#: training, where the stable LR can differ from later in the run.
LEARNED_FRAC = 0.25
#: Confidence falls, and the default rule's margin grows, when the range test
#: passed over the training data more than this many times: its loss then
#: measures memorisation, and the best LR of a full run may be set by
#: overfitting and by the run's length.
MAX_EPOCHS = 10.0


def _cannot_memorise(params_per_example: float | None) -> bool:
    """Fewer trainable parameters than training examples (0 or None: unknown)."""
    return params_per_example is not None and 0 < params_per_example < 1


@dataclass(frozen=True)
class _Inputs:
    """What a rule sees: the training curve and, optionally, the validation one."""

    train: _Curve
    val: _Curve | None
    epochs: float | None = None  # passes over the training data, when known
    params_per_example: float | None = None  # trainable parameters per example


RuleFn = Callable[[_Inputs], tuple[float, dict[str, float]]]


def _rule_steepest(d: _Inputs) -> tuple[float, dict[str, float]]:
    """The LR of steepest descent of the smoothed training loss in log-LR."""
    c = d.train
    i_min, slope = _descent(c)
    i = int(np.argmin(slope[: max(i_min, 1)]))
    return float(10 ** c.x[i]), {"lr_steepest": float(10 ** c.x[i])}


def _rule_minimum(d: _Inputs) -> tuple[float, dict[str, float]]:
    """fastai's ``minimum``: the LR of minimum smoothed loss divided by 10."""
    i_min, _ = _descent(d.train)
    lr_min = float(10 ** d.train.x[i_min])
    return lr_min / 10.0, {"lr_min_loss": lr_min}


def _rule_valley(d: _Inputs) -> tuple[float, dict[str, float]]:
    """fastai's ``valley`` (fastai 2.x): the longest decreasing subsequence of
    the smoothed loss, then the point ``start + len // 3 + len // 6`` into it
    (about half way), with fastai's exact bookkeeping of where it starts."""
    c = d.train
    y = c.smooth
    n = len(y)
    lds = np.ones(n, dtype=np.int64)
    max_start = max_end = 0
    for i in range(1, n):
        # fastai grows lds[i] over j = 0..i-1; its running values, vectorised
        running = np.maximum.accumulate(np.where(y[:i] > y[i], lds[:i] + 1, 1))
        lds[i] = max(1, int(running[-1]))
        if lds[max_end] < lds[i]:
            first = int(running[running > lds[max_end]][0])  # when fastai moved
            max_end = i
            max_start = max_end - first
    sections = (max_end - max_start) / 3
    idx = min(n - 1, max_start + int(sections) + int(sections / 2))
    return float(10 ** c.x[idx]), {"lr_valley": float(10 ** c.x[idx])}


def _rule_lrkit(d: _Inputs) -> tuple[float, dict[str, float]]:
    """The default rule.

    ``lr = anchor / margin`` with ``anchor = min(lr_bottom_train, lr_bottom_val)``
    (the validation bottom counts only where at least ``MIN_VAL_DESCENT``
    validation points resolve the descent) and ``margin = edge_margin ×
    passes_margin``: ``edge_margin = SAFETY_FACTOR`` (3) when the ladder reached
    an instability edge, else 1; ``passes_margin = clip(epochs / MAX_EPOCHS, 1,
    SAFETY_FACTOR)``, 1 up to 10 passes over the training data (or when the
    number of passes is unknown, or the model has fewer trainable parameters
    than training examples), then growing with the passes up to 3.
    ``lr_bottom`` is the LR at which the (lag-free smoothed) loss reaches the
    bottom of its curve (within ``BOTTOM_FRAC`` of its lowest value).

    Why: the bottom of a range test marks the LR at which a few steps stop
    helping; when the loss then rises again (an instability edge was seen), a
    full run at a constant LR needs a margin below it, and the margin errs low
    because the basin is asymmetric (an LR 2x too low costs a little, 3x too
    high can wreck the run). When the loss never turned up within the ladder,
    no edge was seen and the bottom itself is suggested (with a reason to
    raise ``end_lr``). The validation bottom comes first when the model starts
    to overfit; taking the lower of the two is the safe side.

    The passes margin: a range test that went through the training data more
    than ``MAX_EPOCHS`` times measured memorisation, and the full run it
    stands for passes over the data more often still. On such small data the
    best constant LR is the one at which the model has not yet overfit when
    the run ends, which neither curve of a range test can show (at that LR the
    test has barely started to learn), and which lies lower the more passes a
    run makes; the margin grows with the passes the test itself made, by at
    most one more safety factor, on the same asymmetric-basin reasoning. A
    model with fewer trainable parameters than training examples (a linear or
    logistic model on a few hundred examples) cannot memorise its data, and
    its best LR is not set by overfitting: no passes margin.
    """
    lr_bottom = float(10 ** d.train.x[_bottom(d.train)])
    edge = _edge_seen(d.train)
    evidence = {"lr_bottom": lr_bottom, "edge_seen": float(edge)}
    anchor = lr_bottom
    if d.val is not None:
        lr_vbottom = float(10 ** d.val.x[_bottom(d.val)])
        evidence["lr_bottom_val"] = lr_vbottom
        # the validation curve may only pull the anchor down where it resolves
        # the descent: enough validation points between where training starts
        # to respond and the training bottom
        x_low = float(d.train.x[_low(d.train)])
        resolved = np.sum((d.val.x >= x_low) & (d.val.x <= np.log10(lr_bottom)))
        evidence["val_points_in_descent"] = float(resolved)
        if resolved >= MIN_VAL_DESCENT:
            anchor = min(anchor, lr_vbottom)
    passes = 1.0
    if not _cannot_memorise(d.params_per_example):
        passes = min(SAFETY_FACTOR, max(1.0, (d.epochs or 0.0) / MAX_EPOCHS))
    margin = (SAFETY_FACTOR if edge else 1.0) * passes
    evidence["anchor"] = anchor
    evidence["passes_margin"] = passes
    if d.params_per_example is not None:
        evidence["params_per_example"] = d.params_per_example
    evidence["margin"] = margin
    lr = max(anchor / margin, float(10 ** d.train.x[0]))
    return lr, evidence


RULES: dict[str, RuleFn] = {
    "lrkit": _rule_lrkit,
    "valley": _rule_valley,
    "steepest": _rule_steepest,
    "minimum": _rule_minimum,
}


def _val_curve(
    val_lrs: Sequence[float] | None,
    val_losses: Sequence[float] | None,
    train: _Curve,
    bandwidth: float,
) -> _Curve | None:
    """The validation curve over the LRs where the training curve is usable."""
    if val_lrs is None or val_losses is None:
        return None
    vl = _to_array("val_lrs", val_lrs)
    vy = _to_array("val_losses", val_losses)
    if len(vl) != len(vy):
        _check.fail(
            "val_losses",
            f"as long as val_lrs ({len(vl)} values)",
            f"{len(vy)} values",
            shown=True,
        )
    if len(vl) == 0:
        return None
    _check_lrs("val_lrs", vl, val_lrs)
    x = np.log10(vl)
    # validation is read where training is stable: up to the last usable
    # training point, and not past the LR where the training loss turned up
    # (a validation taken after the blow-up would drag the smoothed bottom down)
    edge = _edge_x(train)
    x_end = train.x[-1] if edge is None else min(float(train.x[-1]), edge)
    keep = np.isfinite(vy) & (x <= x_end + 1e-12)
    if not np.all(np.isfinite(vy)):  # nothing after a non-finite validation loss
        keep[int(np.argmax(~np.isfinite(vy))) :] = False
    if keep.sum() < MIN_VAL_POINTS:
        return None
    x, y = x[keep], vy[keep]
    # validation is sparse where the curve is flat and dense where it falls:
    # the kernel follows the dense part
    spacing = float(np.percentile(np.diff(x), 25)) if len(x) > 1 else bandwidth
    width = max(bandwidth, 1.5 * spacing)
    smooth = _smooth(x, y, width, ladder=False)
    return _Curve(x, y, smooth, robust_noise(y), len(vl), None, width)


def _lrkit_reasons(evidence: Mapping[str, float]) -> list[str]:
    """Plain words for what the default rule read and did (from its evidence)."""
    t_bottom = evidence["lr_bottom"]
    v_bottom = evidence.get("lr_bottom_val")
    anchor = evidence["anchor"]
    used_val = v_bottom is not None and anchor == v_bottom and v_bottom < t_bottom
    out: list[str] = []
    if v_bottom is not None and v_bottom < t_bottom / 3.0:
        if used_val:
            out.append(
                f"validation loss bottoms out at LR {v_bottom:.3g}, before the "
                f"training loss ({t_bottom:.3g}): the model may start to overfit"
            )
        else:
            out.append(
                f"validation loss bottoms out early (LR {v_bottom:.3g}) but with too "
                "few validation points in the descent to act on"
            )
    which = "validation" if used_val else "training"
    passes = evidence.get("passes_margin", 1.0)
    if evidence["margin"] > 1.0:
        how = (
            f"suggested 1/{evidence['margin']:.3g} of it (the best constant LR sits "
            "below the range test's bottom, and too high costs more than too low"
            + (
                f"; {passes:.2g}x of that margin for the passes over small data"
                if passes > 1.0
                else ""
            )
            + ")"
        )
    else:
        how = "suggested it as is: the loss never turned up, so no margin is needed"
    out.append(f"{which} loss reaches its bottom at LR {anchor:.3g}; {how}")
    return out


@dataclass(frozen=True)
class _Shape:
    factor: float
    reasons: list[str]
    evidence: dict[str, float]


def _shape_confidence(
    c: _Curve, epochs: float | None, has_val: bool, params_per_example: float | None
) -> _Shape:
    """What the curve's shape says about how far to trust its bottom.

    Three signs, each lowering the confidence (the LR only through the
    default rule's passes margin, see :func:`_rule_lrkit`), each measured on
    past tasks to go with picks far from the best LR of a full run:

    - a sharp edge: the loss turns up less than ``EDGE_DECADES`` above the
      bottom; factor ``max(0.3, gap / EDGE_DECADES)``;
    - little learned: a non-negative loss fell by less than ``LEARNED_FRAC``
      of its start before the edge (the test saw only the first steps, near
      the initialisation); factor ``max(0.3, fell / LEARNED_FRAC)``;
    - many passes: more than ``MAX_EPOCHS`` epochs of the training data;
      factor 0.4 (on its own, below the 0.5 that separates trusted picks).
    """
    factor = 1.0
    reasons: list[str] = []
    evidence: dict[str, float] = {}

    def graded(key: str, value: float, limit: float, reason: str) -> None:
        """Below ``limit`` the sign lowers the confidence in proportion."""
        nonlocal factor
        evidence[key] = value
        if value < limit:
            factor *= max(0.3, value / limit)
            reasons.append(reason)

    edge = _edge_x(c)
    if edge is not None:
        gap = edge - float(c.x[_bottom(c)])
        graded(
            "edge_gap_decades",
            gap,
            EDGE_DECADES,
            f"the loss turns up {gap:.2g} decades above its bottom: a sharp "
            "edge whose place varies from run to run, so the margin below it "
            "is uncertain (try a second seed, or a short sweep around the "
            "suggestion: lrkit.sweep)",
        )
        if float(np.min(c.y)) >= 0.0 and c.start > 0.0:
            fell = c.drop / c.start
            graded(
                "fell_frac",
                fell,
                LEARNED_FRAC,
                f"the loss fell only {fell:.0%} before it turned up: the test "
                "saw just the first steps of training, and the stable LR of a "
                "longer run can differ",
            )
    if epochs is not None:
        evidence["epochs"] = epochs
        if epochs > MAX_EPOCHS:
            factor *= 0.4
            reasons.append(
                f"the range test went {epochs:.0f} times through the training data: "
                + (
                    "the model has fewer parameters than training examples, so "
                    "its best LR is not set by overfitting (no extra margin), but "
                    "the test saw the same examples over and over"
                    if _cannot_memorise(params_per_example)
                    else "its loss measures memorisation, and on small data the best "
                    "LR of a full run is set by overfitting and by the run's length"
                )
                + (
                    ""
                    if has_val
                    else " (pass validation data: val_loader=, or validation_data= "
                    "in Keras and scikit-learn)"
                )
            )
    return _Shape(factor, reasons, evidence)


# ---------------------------------------------------------------- public entry
def suggest(
    lrs: Sequence[float] | Array,
    losses: Sequence[float] | Array,
    *,
    method: str = "lrkit",
    val_lrs: Sequence[float] | None = None,
    val_losses: Sequence[float] | None = None,
    stop_reason: str | None = None,
    skipped: Sequence[bool] | None = None,
    bandwidth: float = 0.15,
    epochs: float | None = None,
    params_per_example: float | None = None,
) -> Suggestion:
    """Suggest a learning rate from a range-test curve.

    The default rule (``method="lrkit"``) is

        lr = anchor / margin,   anchor = min(lr_bottom_train, lr_bottom_val)

    where ``lr_bottom_train`` and ``lr_bottom_val`` are the LRs at which the
    lag-free smoothed training and validation losses reach the bottom of their
    curves (the validation bottom counts only with at least
    ``MIN_VAL_DESCENT`` validation points across the descent), and ``margin``
    is 3 when the loss turned up again or went NaN (an instability edge was
    seen), else 1, times ``clip(epochs / 10, 1, 3)`` when the test passed over
    the training data more than 10 times and the model has at least as many
    trainable parameters as training examples (see :func:`_rule_lrkit` for
    the reasoning). ``low`` is where the training loss has fallen by a tenth
    of its total drop, ``high`` the anchor (for the other rules: the minimum of
    the smoothed loss).

    Args:
        lrs: learning rates, strictly increasing, > 0.
        losses: training loss at each LR (NaN/inf allowed: everything from the
            first non-finite loss on is ignored).
        method: the rule: ``"lrkit"`` (default), ``"valley"``, ``"steepest"``
            or ``"minimum"``.
        val_lrs: LRs at which a validation loss was recorded (optional).
        val_losses: those validation losses.
        stop_reason: how the range test ended (``"completed"``, ``"diverged"``,
            ``"nan"``), used for the reasons.
        skipped: per point, True where the optimizer skipped the update.
        bandwidth: smoothing bandwidth in decades of LR; the training curve's
            kernel widens up to twice this on a noisy curve (see
            :func:`smooth_curve`).
        epochs: passes the range test made over the training data (optional;
            :func:`~lrkit.find_lr` fills it in when the loader has a length).
            More than 10 lower the confidence and widen the default rule's
            margin (unless ``params_per_example`` is below 1).
        params_per_example: trainable parameters per training example
            (optional; :func:`~lrkit.find_lr` fills it in when it knows the
            examples per epoch). Below 1 (and above 0) the model cannot
            memorise its training data, and many passes do not widen the
            margin; 0 or None: unknown.

    Returns:
        A :class:`Suggestion`; its ``lr`` is ``None`` when the curve holds no
        usable descent (``reasons`` says why).

    Raises:
        ValueError: on mismatched lengths, non-increasing or non-positive LRs,
            or an unknown method.
    """
    _check.choice("method", method, RULES)
    bandwidth = _check.positive("bandwidth", bandwidth)
    if epochs is not None:
        epochs = _check.non_negative("epochs", epochs)
    if params_per_example is not None:
        params_per_example = _check.non_negative(
            "params_per_example", params_per_example
        )
    c = _prepare(lrs, losses, skipped, bandwidth)
    reasons: list[str] = []
    if c.nan_lr is not None:
        reasons.append(f"loss became NaN/inf at LR {c.nan_lr:.3g}")
    if len(c.y) < MIN_POINTS:
        if c.nan_lr is not None and len(c.y) == 0:
            reasons.append(
                "the loss was NaN/inf from the first step, at the lowest LR: not "
                "an LR effect; check the data, the loss function and the model's "
                "output (log(0), a division by zero, fp16 overflow)"
            )
        elif (n_skip := sum(map(bool, flags := list(skipped or ())))) and len(
            flags
        ) >= MIN_POINTS:  # steps enough, too few of them made: the scaler's doing
            reasons.append(
                f"the fp16 loss scaler skipped {n_skip} of {len(flags)} steps "
                "(their gradients overflowed), so the test made too few updates "
                "to read: not an LR effect; train in bf16 or fp32, or check the "
                "model for values that overflow fp16"
            )
        else:
            reasons.append(
                f"only {len(c.y)} usable points (need {MIN_POINTS}): "
                "lower start_lr or raise num_steps"
            )
        return Suggestion(None, reasons=tuple(reasons), method=method)
    val = _val_curve(val_lrs, val_losses, c, bandwidth)

    # the flat check and the signal-to-noise confidence read the curve smoothed
    # at the nominal bandwidth, and its noise: the raw step-to-step noise
    # averaged over the points inside one such kernel (a kernel widened on a
    # noisy curve blurs where the bottom is: it does not make the curve any
    # more trustworthy)
    nominal = c.smooth if c.nominal is None else c.nominal
    start = float(np.median(nominal[: max(3, len(nominal) // 10)]))
    drop = float(start - nominal.min())
    sigma_s = c.sigma / math.sqrt(_kernel_points(bandwidth, _density(c.x)))
    diverged = stop_reason in ("diverged", "nan") or c.nan_lr is not None
    # (around the curve's minimum: a linear ladder is sparse only at its start)
    per_decade = _density(c.x, float(c.x[int(np.argmin(nominal))]), 2.0 * bandwidth)
    coarse = (
        f"the ladder has {per_decade:.1f} steps per decade of LR (fewer than "
        f"{MIN_PER_DECADE}): each LR got too few steps to move the loss, and the "
        "bottom's place is a guess; raise num_steps (or narrow start_lr..end_lr)"
        if per_decade < MIN_PER_DECADE
        else None
    )
    if drop <= 3.0 * sigma_s or drop <= 1e-9 * max(1.0, abs(start)):
        last = float(10 ** c.x[-1])
        if not diverged:
            why = (
                f"curve flat: no LR up to {last:.3g} made the loss fall; raise "
                "end_lr, or the model is already trained (or not learning: check "
                "the loss and the data)"
            )
        elif c.x[-1] - c.x[0] < FLAT_DECADES:  # it blew up soon after the start
            why = (
                f"curve flat until the loss blew up above LR {last:.3g}, within "
                f"{FLAT_DECADES:g} decade of start_lr: start_lr is likely already "
                "too high (lower it), or the model is already trained"
            )
        else:
            why = (
                f"curve flat over {c.x[-1] - c.x[0]:.1f} decades until the loss "
                f"blew up above LR {last:.3g}: the model is likely already trained "
                "(nothing left to learn), or not learning (check the loss and the "
                "data)"
            )
        reasons.append(why if coarse is None else coarse)
        return Suggestion(
            None,
            reasons=tuple(reasons),
            method=method,
            evidence={"drop": drop, "noise": sigma_s},
        )

    lr, evidence = RULES[method](_Inputs(c, val, epochs, params_per_example))
    i_min, slope = _descent(c)
    lr_min = float(10 ** c.x[i_min])
    low = min(float(10 ** c.x[_low_bound(c)]), lr)
    high = max(evidence.get("anchor", lr_min), lr)

    conf = 1.0
    snr = drop / max(sigma_s, 1e-12)
    conf *= min(1.0, snr / 10.0)
    if snr < 8.0:
        reasons.append("curve too noisy: more steps or a larger batch")
    if coarse is not None:
        reasons.append(coarse)
        conf *= 0.3
    if not diverged and not _edge_seen(c):
        # the loss never turned up (its minimum at the end, or a flat trough):
        # the edge above the bottom, which sets the margin, was not seen
        reasons.append("no divergence reached: raise end_lr")
        conf *= 0.5
    first = slope[: max(2, len(slope) // 10)]
    if float(np.min(first)) <= 0.5 * float(np.min(slope[: max(i_min, 1)])) and (
        _falls_at_start(c)
    ):
        reasons.append("loss already falling at start_lr: lower start_lr")
        conf *= 0.6
    if _edge_seen(c) and _bottom(c) < max(2, len(c.x) // 10):
        reasons.append(
            "the loss was lowest at the start of the ladder and rose after it: "
            "start_lr is likely already too high; lower it and rerun"
        )
        conf *= 0.3
    if lr <= float(10 ** c.x[0]) and evidence.get("margin", 1.0) > 1.0:
        reasons.append(
            f"the rule's LR ({evidence['anchor'] / evidence['margin']:.3g}) lies "
            f"below the first LR tested: {lr:.3g} is returned; lower start_lr and "
            "rerun"
        )
        conf *= 0.3
    shape = _shape_confidence(c, epochs, val is not None, params_per_example)
    conf *= shape.factor
    reasons += shape.reasons
    if method == "lrkit":
        reasons += _lrkit_reasons(evidence)
        v_bottom = evidence.get("lr_bottom_val")
        if v_bottom is not None:
            conf *= max(
                0.3, 1.0 - abs(math.log10(v_bottom / evidence["lr_bottom"])) / 2
            )
    evidence = {
        **evidence,
        "lr_min_loss": lr_min,
        "min_loss": float(c.smooth[i_min]),
        "drop": drop,
        "span": float(np.ptp(c.smooth)),
        "noise": sigma_s,
        **shape.evidence,
    }
    if stop_reason == "diverged":
        reasons.append(f"loss diverged above LR {float(10 ** c.x[-1]):.3g}")
    return Suggestion(
        lr=float(lr),
        low=low,
        high=high,
        confidence=float(max(0.0, min(1.0, conf))),
        reasons=tuple(reasons),
        method=method,
        evidence=evidence,
    )
