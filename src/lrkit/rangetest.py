"""The LR range test, framework-free.

A range test trains for a short while with the learning rate rising along a
ladder, one rung per optimizer step, and records the loss at every rung. The
shape of that curve (flat, falling, bottoming out, blowing up) tells which
learning rates train and which break training; :mod:`lrkit.suggest` reads it.

This module drives any ``step_fn(lr) -> loss`` (one optimizer step at ``lr``),
so it knows no framework; :func:`lrkit.find_lr` builds ``step_fn`` for PyTorch.
The test is L. N. Smith's, "Cyclical Learning Rates for Training Neural
Networks" (WACV 2017, arXiv:1506.01186), with an exponential ladder as in
fastai's ``lr_find``.

Ladder (``mode="exp"``, the default), for ``i = 0 .. num_steps-1``::

    lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))

(``mode="linear"``: ``lr_i = start_lr + (end_lr - start_lr) * i / (num_steps - 1)``.)
By default (``num_steps=None``) an exponential ladder has ``STEPS_PER_DECADE``
(25) rungs per decade of LR, 200 for 1e-7 .. 10: how much training each LR gets
sets where the curve bottoms out, so a wider or narrower range changes what
the test covers but not how it tests each LR. A linear ladder defaults to 200.

Stop rules, checked on every recorded step:

- ``"nan"``: the loss is NaN or infinite;
- ``"diverged"``: the causally smoothed loss ``s_t`` (an exponential moving average
  with time constant ``smooth_frac * num_steps`` steps, debiased) rose above its
  running minimum ``b_t`` by more than ``diverge_factor`` times the curve's own
  scale::

      s_t - b_t > diverge_factor * max(r - b_t, noise_factor * sigma)

  where ``r`` is the median of the first losses (the starting level) and ``sigma``
  a robust estimate of the noise of the raw loss: the larger of the median
  absolute step-to-step difference (over all losses so far) and the median
  absolute deviation of the first losses from a straight line through them
  (batches of very different difficulty, in a fixed order, make consecutive
  losses alike while the loss still swings widely). The rule only uses
  differences of losses, so it is unchanged by a constant shift of the loss
  and scales with it: it works for negative and near-zero losses, where
  ``loss > k * best`` does not. Raw losses above ``b_t + jump_factor * scale``
  on ``jump_steps`` (2) consecutive steps also stop the test (an explosion
  within a step); a lone spike does not, since training often recovers from one
  right where it starts to learn, and a run at that LR trains fine. The scale is
  known once the first losses are in (a warm-up of ``max(10, num_steps // 10,
  the smoothing window)`` steps); during them a non-negative loss above
  ``BLOWUP_FACTOR`` (10) times the median of the first 3 on ``jump_steps``
  consecutive steps stops the test (a ladder starting far too high, which
  would inflate the scale it is judged by).

Example:
    >>> from lrkit.rangetest import range_test
    >>> w = [3.0]                           # minimise (w - 1)^2 by gradient descent
    >>> def step(lr):
    ...     loss = (w[0] - 1.0) ** 2
    ...     w[0] -= lr * 2.0 * (w[0] - 1.0)
    ...     return loss
    >>> r = range_test(step, start_lr=1e-4, end_lr=10.0, num_steps=60)
    >>> r.stop_reason, r.lrs[-1] > 1.0     # diverges above lr = 1 (factor |1-2 lr| > 1)
    ('diverged', True)
"""

from __future__ import annotations

import bisect
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import _check
from ._util import (
    attach_partial,
    check_progress,
    json_clean,
    progress_hook,
    write_json,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .suggest import Suggestion

__all__ = [
    "Progress",
    "RangeTestResult",
    "RangeTestSettings",
    "StepOutcome",
    "default_num_steps",
    "lr_ladder",
    "range_test",
]

Mode = Literal["exp", "linear"]
StopReason = Literal["completed", "diverged", "nan", "interrupted"]
FORMAT_VERSION = 1
#: Rungs per decade of LR of the default exponential ladder.
STEPS_PER_DECADE = 25
#: The most rungs a ladder may have (it is built up front, 8 bytes per rung).
MAX_STEPS = 10_000_000
#: Rungs of the default linear ladder, and the fewest of a default ladder.
DEFAULT_STEPS = 200
MIN_DEFAULT_STEPS = 50


def default_num_steps(start_lr: float, end_lr: float, mode: Mode = "exp") -> int:
    """Rungs of the default ladder: ``STEPS_PER_DECADE`` per decade (at least
    ``MIN_DEFAULT_STEPS``) for ``mode="exp"``, ``DEFAULT_STEPS`` for linear.

    Example:
        >>> default_num_steps(1e-7, 10.0), default_num_steps(1e-8, 100.0)
        (200, 250)
    """
    if mode != "exp":
        return DEFAULT_STEPS
    decades = math.log10(end_lr / start_lr)
    return max(MIN_DEFAULT_STEPS, round(STEPS_PER_DECADE * decades))


def lr_ladder(
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int = 100,
    mode: Mode = "exp",
) -> list[float]:
    """The learning rates of a range test, one per optimizer step.

    Args:
        start_lr: first LR (> 0).
        end_lr: last LR (> start_lr); it is reached at the last step.
        num_steps: number of rungs (>= 2).
        mode: ``"exp"`` (geometric spacing, the default) or ``"linear"``.

    Returns:
        ``num_steps`` learning rates from ``start_lr`` to ``end_lr``.

    Example:
        >>> [round(x, 6) for x in lr_ladder(1e-3, 1e-1, 3)]
        [0.001, 0.01, 0.1]
    """
    start_lr, end_lr, num_steps, mode = check_ladder(
        start_lr, end_lr, num_steps, mode, min_steps=2
    )
    i = np.arange(num_steps, dtype=np.float64) / (num_steps - 1)
    if mode == "exp":
        lrs = start_lr * (end_lr / start_lr) ** i
    else:
        lrs = start_lr + (end_lr - start_lr) * i
    lrs[-1] = end_lr
    return [float(x) for x in lrs]


def check_ladder(
    start_lr: Any, end_lr: Any, num_steps: Any, mode: Any, min_steps: int = 10
) -> tuple[float, float, int, Mode]:
    """Validated ladder arguments; ``num_steps=None`` becomes the default."""
    start_lr = _check.positive("start_lr", start_lr)
    end_lr = _check.positive("end_lr", end_lr)
    if not end_lr > start_lr:
        _check.fail(
            "end_lr",
            f"> start_lr={start_lr!r}",
            end_lr,
            "The ladder rises from start_lr to end_lr.",
        )
    mode = _check.choice("mode", mode, ("exp", "linear"))
    if num_steps is None:
        num_steps = default_num_steps(start_lr, end_lr, mode)
    num_steps = _check.positive_int("num_steps", num_steps)
    if num_steps < min_steps:
        _check.fail(
            "num_steps",
            f">= {min_steps}",
            num_steps,
            "Fewer steps leave too few points to suggest a learning rate."
            if min_steps > 2
            else None,
        )
    if num_steps > MAX_STEPS:
        _check.fail(
            "num_steps",
            f"<= {MAX_STEPS:,}",
            num_steps,
            "A range test is a short run; its ladder is built up front.",
        )
    return start_lr, end_lr, num_steps, mode


@dataclass(frozen=True)
class StepOutcome:
    """What one step of the range test reports, when a bare loss is not enough.

    Attributes:
        loss: the training loss of the step (any float, NaN allowed).
        skipped: True when the optimizer did not update (a mixed-precision
            ``GradScaler`` found inf/NaN gradients and skipped the step); the
            point is recorded but not used by the stop rules.
    """

    loss: float
    skipped: bool = False


@dataclass(frozen=True)
class Progress:
    """Progress report passed to the ``progress`` callback after each step.

    Attributes:
        step: 1-based count of steps recorded so far.
        total: steps planned (``num_steps``).
        lr: the learning rate of this step.
        loss: its raw loss.
        best_loss: the lowest smoothed loss so far.
    """

    step: int
    total: int
    lr: float
    loss: float
    best_loss: float


@dataclass(frozen=True)
class RangeTestSettings:
    """The settings a range test ran with (recorded in its result).

    Attributes:
        start_lr: first LR of the ladder (reference param group).
        end_lr: last LR of the ladder.
        num_steps: planned steps.
        mode: ladder spacing, ``"exp"`` or ``"linear"``.
        smooth_frac: EMA time constant of the stop rule, as a fraction of
            ``num_steps``.
        diverge_factor: stop when the smoothed loss rose above its minimum by
            this many times the curve's scale.
        jump_factor: stop when raw losses exceed the minimum by this many
            times the scale ...
        jump_steps: ... on this many consecutive steps.
        noise_factor: lower bound of the scale in units of the loss noise.
        val_every: validation every this many steps (0: no validation).
        steps_per_epoch: steps in one pass over the training data, when known
            (the suggestion reads how many passes the test made).
        params_per_example: trainable parameters per training example, when
            known (below 1 the model cannot memorise its data; see
            :func:`lrkit.suggest`).
        extra: adapter-specific settings (accumulation, amp, groups, ...).
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_steps: int = 200
    mode: Mode = "exp"
    smooth_frac: float = 0.05
    diverge_factor: float = 1.0
    jump_factor: float = 4.0
    jump_steps: int = 2
    noise_factor: float = 3.0
    val_every: int = 0
    steps_per_epoch: int | None = None
    params_per_example: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_ladder(self.start_lr, self.end_lr, self.num_steps, self.mode)
        _check.fraction("smooth_frac", self.smooth_frac, high_open=True)
        _check.positive("diverge_factor", self.diverge_factor)
        _check.positive("jump_factor", self.jump_factor)
        _check.positive_int("jump_steps", self.jump_steps)
        _check.non_negative("noise_factor", self.noise_factor)
        _check.non_negative_int("val_every", self.val_every)
        if self.steps_per_epoch is not None:
            _check.positive_int("steps_per_epoch", self.steps_per_epoch)
        if self.params_per_example is not None:
            _check.non_negative("params_per_example", self.params_per_example)


@dataclass(frozen=True, repr=False)
class RangeTestResult:
    """The record of one range test: the curve, why it stopped, the suggestion.

    Attributes:
        lrs: LR of each recorded step (of the reference param group).
        losses: raw training loss of each step (NaN where non-finite).
        smoothed: the causal smoothed loss the stop rule used.
        skipped: per step, True when the optimizer skipped the update.
        val_steps: indices into ``lrs`` at which validation ran.
        val_losses: the validation loss at those steps.
        stop_reason: ``"completed"``, ``"diverged"`` or ``"nan"``; ``"interrupted"``
            for the partial result an error or Ctrl-C during the test carries
            (its ``lrkit_range_test`` attribute).
        suggestion_info: the :class:`~lrkit.suggest.Suggestion` (LR, range,
            confidence, reasons), or ``None`` if none was computed.
        settings: the :class:`RangeTestSettings`.
        timings: seconds spent: ``total`` (the ladder: ``steps`` plus
            ``validation``), ``restore`` (putting the state back), and
            ``confirm`` (the short runs of ``confirm_steps``, apart from
            ``total``); the CLI's summary adds the snapshot and setup.
        steps_done: optimizer steps taken (including any run past the stop
            point while losses were read in batches).
        reference_group: index of the param group the LRs refer to.
        group_factors: LR of each param group relative to the reference group.

    Example:
        >>> r = range_test(lambda lr: 1.0 / (1.0 + lr), start_lr=1e-3, end_lr=1.0,
        ...                num_steps=20, suggest=False)
        >>> r.stop_reason, len(r.lrs), r.suggestion
        ('completed', 20, None)
        >>> RangeTestResult.from_dict(r.to_dict()).lrs == r.lrs
        True
    """

    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    smoothed: tuple[float, ...]
    skipped: tuple[bool, ...]
    val_steps: tuple[int, ...]
    val_losses: tuple[float, ...]
    stop_reason: StopReason
    settings: RangeTestSettings
    suggestion_info: Suggestion | None = None
    timings: Mapping[str, float] = field(default_factory=dict)
    steps_done: int = 0
    reference_group: int = 0
    group_factors: tuple[float, ...] = (1.0,)

    # ---------------------------------------------------------------- shortcuts
    @property
    def suggestion(self) -> float | None:
        """The learning rate to train with, or ``None`` if the curve allows none."""
        return None if self.suggestion_info is None else self.suggestion_info.lr

    @property
    def low(self) -> float | None:
        """Lower end of the usable LR range (e.g. one-cycle's start LR)."""
        return None if self.suggestion_info is None else self.suggestion_info.low

    @property
    def high(self) -> float | None:
        """Upper end of the usable LR range (e.g. one-cycle's peak LR)."""
        return None if self.suggestion_info is None else self.suggestion_info.high

    @property
    def confidence(self) -> float:
        """How sure the suggestion is, in [0, 1]."""
        return 0.0 if self.suggestion_info is None else self.suggestion_info.confidence

    @property
    def reasons(self) -> tuple[str, ...]:
        """Plain-language notes on the curve and the suggestion."""
        return () if self.suggestion_info is None else self.suggestion_info.reasons

    @property
    def group_suggestions(self) -> tuple[float | None, ...]:
        """The suggestion for every param group (their ratios kept)."""
        s = self.suggestion
        return tuple(None if s is None else s * f for f in self.group_factors)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (NaN and inf become ``None``)."""
        from .suggest import Suggestion

        info = self.suggestion_info
        record: dict[str, Any] = json_clean(
            {
                "format": "lrkit.range_test",
                "version": FORMAT_VERSION,
                "suggestion": self.suggestion,
                "low": self.low,
                "high": self.high,
                "confidence": self.confidence,
                "reasons": list(self.reasons),
                "stop_reason": self.stop_reason,
                "steps_done": self.steps_done,
                "reference_group": self.reference_group,
                "group_factors": list(self.group_factors),
                "lrs": list(self.lrs),
                "losses": list(self.losses),
                "smoothed": list(self.smoothed),
                "skipped": list(self.skipped),
                "val_steps": list(self.val_steps),
                "val_losses": list(self.val_losses),
                "settings": asdict(self.settings),
                "timings": dict(self.timings),
                "suggestion_info": None if info is None else Suggestion.to_dict(info),
            }
        )
        return record

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        return write_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> RangeTestResult:
        """Rebuild a result from :meth:`to_dict` output."""
        from .suggest import Suggestion

        if record.get("format") != "lrkit.range_test":
            _check.fail(
                "record",
                "an lrkit range-test record (format 'lrkit.range_test')",
                record.get("format"),
            )

        def floats(key: str) -> tuple[float, ...]:
            return tuple(math.nan if v is None else float(v) for v in record[key])

        settings = dict(record["settings"])
        info = record.get("suggestion_info")
        return cls(
            lrs=floats("lrs"),
            losses=floats("losses"),
            smoothed=floats("smoothed"),
            skipped=tuple(bool(v) for v in record["skipped"]),
            val_steps=tuple(int(v) for v in record["val_steps"]),
            val_losses=floats("val_losses"),
            stop_reason=record["stop_reason"],
            settings=RangeTestSettings(**settings),
            suggestion_info=None if info is None else Suggestion.from_dict(info),
            timings={k: float(v) for k, v in record.get("timings", {}).items()},
            steps_done=int(record.get("steps_done", len(record["lrs"]))),
            reference_group=int(record.get("reference_group", 0)),
            group_factors=tuple(float(v) for v in record.get("group_factors", [1.0])),
        )

    @classmethod
    def load(cls, path: str | Path) -> RangeTestResult:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, path: str | Path | None = None, *, ax: Any = None) -> Figure:
        """Loss vs LR (log axis) with the suggestion and its range marked.

        Args:
            path: if given, the figure is saved there (PNG, SVG, PDF by suffix).
            ax: a matplotlib Axes to draw into (a new figure otherwise).

        Returns:
            The matplotlib ``Figure``.
        """
        from .plot import range_test_figure

        return range_test_figure(self, path=path, ax=ax)

    def summary(self) -> str:
        """A few lines of plain text: the suggestion, range, confidence, reasons."""
        lines = [
            f"suggested LR: {_fmt(self.suggestion)}"
            + (
                f"  (range {_fmt(self.low)} .. {_fmt(self.high)})"
                if self.low is not None
                else ""
            ),
            f"confidence:   {self.confidence:.2f}",
            f"stopped:      {self.stop_reason} after {len(self.lrs)} steps "
            f"(LR {_fmt(self.lrs[0] if self.lrs else None)} .. "
            f"{_fmt(self.lrs[-1] if self.lrs else None)})",
        ]
        lines += [f"- {r}" for r in self.reasons]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (
            f"RangeTestResult(suggestion={_fmt(self.suggestion)}, "
            f"low={_fmt(self.low)}, high={_fmt(self.high)}, "
            f"confidence={self.confidence:.2f}, stop_reason={self.stop_reason!r}, "
            f"steps={len(self.lrs)})"
        )

    def _repr_html_(self) -> str:
        import base64
        import html
        import io

        rows = "".join(
            f"<tr><th style='text-align:left'>{k}</th><td>{html.escape(v)}</td></tr>"
            for k, v in [
                ("suggested LR", _fmt(self.suggestion)),
                ("range", f"{_fmt(self.low)} .. {_fmt(self.high)}"),
                ("confidence", f"{self.confidence:.2f}"),
                ("stop reason", self.stop_reason),
                ("steps", str(len(self.lrs))),
            ]
        )
        reasons = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        img = ""
        try:
            import matplotlib.pyplot as plt

            fig = self.plot()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
            plt.close(fig)
            b64 = base64.b64encode(buf.getvalue()).decode()
            img = f"<img src='data:image/png;base64,{b64}'/>"
        except Exception:  # pragma: no cover - display must never raise
            img = ""
        return f"<div><table>{rows}</table><ul>{reasons}</ul>{img}</div>"


def _fmt(x: float | None) -> str:
    return "none" if x is None or not math.isfinite(x) else f"{x:.3g}"


def check_hooks(suggest: Any, progress: Any) -> None:
    """Validate ``suggest`` (True, False or a rule name) and ``progress``."""
    check_progress(progress)
    if not isinstance(suggest, (bool, str)):
        _check.fail("suggest", "True, False or a rule name", suggest, exc=TypeError)
    if isinstance(suggest, str):
        from .suggest import RULES

        _check.choice("suggest", suggest, RULES)


def _show_step(p: Progress) -> tuple[int, int, str]:
    """The progress bar's numbers for a range-test step."""
    return p.step, p.total, f"lr {p.lr:.2e}  loss {p.loss:.4g}"


#: In the first steps of a range test (before the curve's scale is known), a
#: non-negative loss this many times the first losses, on ``jump_steps`` steps
#: in a row, is a divergence (start_lr far too high).
BLOWUP_FACTOR = 10.0


class _StopRule:
    """Causal smoothing and the divergence rule (see the module docstring).

    Cheap per step: the starting level is fixed once the warm-up is over, and
    the noise (the median absolute step-to-step difference of all losses so
    far) is kept in a sorted list, so no step re-reads the whole history.
    """

    def __init__(self, settings: RangeTestSettings) -> None:
        self.s = settings
        tau = max(1.0, settings.smooth_frac * settings.num_steps)
        self.beta = math.exp(-1.0 / tau)
        self.n_ref = max(3, round(tau))
        # no stop before enough points to know the curve's start and its noise
        self.warm = max(self.n_ref, 10, settings.num_steps // 10)
        self.avg = 0.0
        self.count = 0
        self.best = math.inf
        self.ref: float | None = None
        self.first: list[float] = []  # the losses of the warm-up
        self.prev: float | None = None
        self.diffs: list[float] = []  # |loss[i+1] - loss[i]|, sorted
        self.descending = False  # the loss has clearly started to fall
        self.warm_sigma = 0.0  # spread of the warm-up losses around their trend
        self.jumps = 0  # consecutive raw losses above the jump line
        self.early_jumps = 0  # consecutive warm-up losses above the blow-up line

    def update(self, loss: float) -> tuple[float, StopReason | None]:
        """Feed one finite, non-skipped loss; returns (smoothed, stop reason)."""
        self.count += 1
        if self.count <= self.warm:
            self.first.append(loss)
            if self._blew_up(loss):
                self.prev = loss
                return loss, "diverged"

        if self.prev is not None:
            bisect.insort(self.diffs, abs(loss - self.prev))
        self.prev = loss
        self.avg = self.beta * self.avg + (1.0 - self.beta) * loss
        smooth = self.avg / (1.0 - self.beta**self.count)
        if self.count >= self.n_ref:  # the first averages are single noisy losses
            self.best = min(self.best, smooth)
        if self.count <= self.warm:
            return smooth, None
        if self.ref is None:
            self.ref = float(np.median(self.first))
            first = np.asarray(self.first)
            t = np.arange(len(first), dtype=np.float64)
            resid = first - np.polyval(np.polyfit(t, first, 1), t)
            self.warm_sigma = 1.4826 * float(
                np.median(np.abs(resid - np.median(resid)))
            )
        sigma = self._sigma()
        if not self.descending and self.ref - smooth > 2.0 * sigma:
            self.descending = True
        scale = max(
            self.ref - self.best, self.s.noise_factor * sigma, 1e-12 * abs(self.ref)
        )
        if smooth - self.best > self.s.diverge_factor * scale:
            return smooth, "diverged"
        if loss - self.best > self.s.jump_factor * scale:
            self.jumps += 1
            if self.jumps >= self.s.jump_steps:
                return smooth, "diverged"
        else:
            self.jumps = 0
        return smooth, None

    def _blew_up(self, loss: float) -> bool:
        """During the warm-up, before the scale of the curve is known: a
        non-negative loss above ``BLOWUP_FACTOR`` times the median of the
        first 3 on ``jump_steps`` steps in a row. The divergence rule measures
        from the median of the warm-up losses, which a blow-up inside them
        inflates: a ladder that starts far too high then ran on and read as
        flat ("already trained", or "raise end_lr")."""
        first = self.first
        if len(first) < 2 or min(first) < 0.0:  # a loss's zero is read: >= 0 only
            self.early_jumps = 0
            return False
        ref = float(np.median(first[:3])) if len(first) > 3 else first[0]
        if ref > 0.0 and loss > BLOWUP_FACTOR * ref:
            self.early_jumps += 1
        else:
            self.early_jumps = 0
        return self.early_jumps >= self.s.jump_steps

    def _sigma(self) -> float:
        """``robust_noise`` of all losses so far (from the sorted differences),
        at least the spread of the warm-up losses around their trend."""
        d, n = self.diffs, len(self.diffs)
        if n < 2:
            return self.warm_sigma
        med = d[n // 2] if n % 2 else 0.5 * (d[n // 2 - 1] + d[n // 2])
        return max(med / (0.6745 * math.sqrt(2.0)), self.warm_sigma)


def _attach_partial(error: BaseException, partial: RangeTestResult) -> None:
    """Give ``error`` the range test's curve so far (``lrkit_range_test``, a note)."""
    attach_partial(
        error,
        "lrkit_range_test",
        partial,
        f"lrkit: the range test had recorded {len(partial.lrs)} steps (LR "
        f"{partial.lrs[0]:.3g} to {partial.lrs[-1]:.3g}) before this error; "
        "they are in this exception's lrkit_range_test attribute (a "
        "RangeTestResult, stop_reason 'interrupted': plot() and save() work).",
    )


def range_test(
    step_fn: Callable[[float], Any],
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    mode: Mode = "exp",
    val_fn: Callable[[], Any] | None = None,
    val_every: int = 2,
    smooth_frac: float = 0.05,
    diverge_factor: float = 1.0,
    jump_factor: float = 4.0,
    jump_steps: int = 2,
    noise_factor: float = 3.0,
    sync_every: int = 1,
    resolve: Callable[[Sequence[Any]], Sequence[Any]] | None = None,
    progress: bool | Callable[[Progress], None] | None = True,
    suggest: bool | str = True,
    steps_per_epoch: int | None = None,
    params_per_example: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> RangeTestResult:
    """Run a range test over any ``step_fn(lr) -> loss``.

    Args:
        step_fn: takes one optimizer step at learning rate ``lr`` and returns the
            loss (a float, a :class:`StepOutcome`, or a lazy value that
            ``resolve`` turns into one of those).
        start_lr: first LR of the ladder.
        end_lr: last LR of the ladder.
        num_steps: rungs of the ladder, one optimizer step each (default:
            ``default_num_steps``, 25 per decade; 200 for the default range).
        mode: ``"exp"`` or ``"linear"`` spacing.
        val_fn: optional cheap validation: returns a validation loss (a float,
            or a value ``float()`` reads later, with the step losses). It is
            called every ``val_every`` steps once the training loss has
            started to fall (where the curve is informative), every
            ``4 * val_every`` steps before that, and after the last step.
        val_every: steps between validations (ignored without ``val_fn``).
        smooth_frac: EMA time constant of the stop rule, as a fraction of
            ``num_steps``.
        diverge_factor: see the module docstring.
        jump_factor: see the module docstring.
        jump_steps: see the module docstring.
        noise_factor: see the module docstring.
        sync_every: read losses in batches of this many steps (``resolve`` is
            called once per batch), so that an accelerator is not synchronised
            on every step; stop rules then act up to ``sync_every - 1`` steps late.
        resolve: turns a batch of ``step_fn`` return values into floats or
            :class:`StepOutcome` (default: identity).
        progress: ``True`` (default): a progress bar on stderr while the test
            runs, when stderr is a terminal or a notebook (none in a log file
            or under CI); ``False`` or ``None``: none; or a function called with
            a :class:`Progress` after each step (no bar).
        suggest: ``True`` for the default suggestion rule, a rule name (see
            :func:`lrkit.suggest`), or ``False`` for none.
        steps_per_epoch: steps in one pass over the training data, if known:
            when the test made many passes, the suggestion's confidence falls
            and its margin grows.
        params_per_example: trainable parameters per training example, if
            known: below 1 (a model that cannot memorise its data) many passes
            do not widen the margin.
        extra: adapter settings to record in ``result.settings.extra``.

    Returns:
        A :class:`RangeTestResult`. Divergence is a result, not an error.

    Raises:
        ValueError, TypeError: on bad arguments (nothing is run).
    """
    start_lr, end_lr, num_steps, mode = check_ladder(start_lr, end_lr, num_steps, mode)
    settings = RangeTestSettings(
        start_lr=start_lr,
        end_lr=end_lr,
        num_steps=num_steps,
        mode=mode,
        smooth_frac=smooth_frac,
        diverge_factor=diverge_factor,
        jump_factor=jump_factor,
        jump_steps=jump_steps,
        noise_factor=noise_factor,
        val_every=_check.positive_int("val_every", val_every) if val_fn else 0,
        steps_per_epoch=steps_per_epoch,
        params_per_example=params_per_example,
        extra=dict(extra or {}),
    )
    _check.callable_("step_fn", step_fn)
    if val_fn is not None:
        _check.callable_("val_fn", val_fn)
    sync_every = _check.positive_int("sync_every", sync_every)
    if resolve is None:
        resolve = list
    _check.callable_("resolve", resolve)
    check_hooks(suggest, progress)
    ladder = lr_ladder(start_lr, end_lr, num_steps, mode)

    rule = _StopRule(settings)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    skipped: list[bool] = []
    val_steps: list[int] = []
    val_losses: list[float] = []
    t_start = time.perf_counter()
    t_val = 0.0
    stop: StopReason = "completed"
    pending: list[Any] = []
    steps_done = 0

    def record(batch_start: int, values: Sequence[Any]) -> StopReason | None:
        for k, value in enumerate(values):
            i = batch_start + k
            skip = False
            if isinstance(value, StepOutcome):
                loss, skip = float(value.loss), value.skipped
            else:
                loss = float(value)
            lrs.append(ladder[i])
            losses.append(loss if math.isfinite(loss) else math.nan)
            skipped.append(skip)
            reason: StopReason | None = None
            if skip:
                smoothed.append(smoothed[-1] if smoothed else math.nan)
            elif not math.isfinite(loss):
                smoothed.append(math.nan)
                reason = "nan"
            else:
                smooth, reason = rule.update(loss)
                smoothed.append(smooth)
            if hook is not None:
                hook(Progress(len(lrs), num_steps, ladder[i], loss, rule.best))
            if reason is not None:
                return reason
        return None

    pending_val: list[tuple[int, Any]] = []  # (step, value not yet read)

    def flush_val() -> None:
        for i, value in pending_val:
            if i < len(lrs):  # validations after a stop point are dropped
                v = float(value)
                val_steps.append(i)
                val_losses.append(v if math.isfinite(v) else math.nan)
        pending_val.clear()

    def build(stop: StopReason, total: float) -> RangeTestResult:
        """The result of the points recorded so far."""
        info = None
        if suggest is not False:
            from .suggest import suggest as suggest_fn

            info = suggest_fn(
                lrs,
                losses,
                method="lrkit" if suggest is True else str(suggest),
                val_lrs=[lrs[i] for i in val_steps],
                val_losses=val_losses,
                stop_reason=stop,
                skipped=skipped,
                epochs=None
                if steps_per_epoch is None
                else steps_done / steps_per_epoch,
                params_per_example=params_per_example,
            )
        return RangeTestResult(
            lrs=tuple(lrs),
            losses=tuple(losses),
            smoothed=tuple(smoothed),
            skipped=tuple(skipped),
            val_steps=tuple(val_steps),
            val_losses=tuple(val_losses),
            stop_reason=stop,
            settings=settings,
            suggestion_info=info,
            timings={"total": total, "steps": total - t_val, "validation": t_val},
            steps_done=steps_done,
        )

    batch_start = 0
    with progress_hook(progress, "range test", _show_step) as hook:
        try:
            for i, lr in enumerate(ladder):
                pending.append(step_fn(lr))
                steps_done += 1
                every = settings.val_every * (1 if rule.descending else 4)
                if val_fn is not None and ((i + 1) % every == 0 or i == num_steps - 1):
                    t0 = time.perf_counter()
                    pending_val.append((i, val_fn()))
                    t_val += time.perf_counter() - t0
                if len(pending) >= sync_every or i == num_steps - 1:
                    reason = record(batch_start, resolve(pending))
                    batch_start += len(pending)
                    pending = []
                    flush_val()
                    if reason is not None:
                        stop = reason
                        break
        except BaseException as e:
            # the curve so far is not lost with the error (Ctrl-C included)
            if lrs:
                try:
                    partial = build("interrupted", time.perf_counter() - t_start)
                except Exception:  # pragma: no cover - the error itself goes on
                    partial = None
                if partial is not None:
                    _attach_partial(e, partial)
            raise
    return build(stop, time.perf_counter() - t_start)
