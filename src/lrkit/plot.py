"""Figures (matplotlib, imported lazily) and terminal renderings.

Each section belongs to one part of lrkit; matplotlib is imported inside the
functions so that ``import lrkit`` never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._util import out_path

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .logs import History
    from .monitor import Diagnosis
    from .rangetest import RangeTestResult
    from .sweep import SweepResult


def _new_axes(ax: Any) -> tuple[Figure, Any]:
    """The figure and axes to draw on: ``ax``'s, or new ones.

    When the user's session already uses pyplot (a notebook, a script that
    calls ``plt.show()``) the figure is made through pyplot so it shows up there;
    otherwise a bare ``Figure`` is made, which needs no display and is never
    kept alive by pyplot.
    """
    import sys

    if ax is not None:
        return ax.figure, ax
    if "matplotlib.pyplot" in sys.modules:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.2), layout="constrained")
        return fig, ax
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.2), layout="constrained")
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path | None) -> None:
    if path is not None:
        fig.savefig(out_path(path), dpi=120)


# --- range test ---------------------------------------------------------------
def _rule_points(result: RangeTestResult) -> Any:
    """The points the suggestion rule reads: finite losses of steps the
    optimizer took (not ``skipped``), up to the first non-finite loss."""
    losses = np.asarray(result.losses, dtype=float)
    keep = np.isfinite(losses)
    if not keep.all():
        keep[int(np.argmin(keep)) :] = False
    if len(result.skipped) == len(losses):
        keep &= ~np.asarray(result.skipped, dtype=bool)
    return keep


def range_test_figure(
    result: RangeTestResult, *, path: str | Path | None = None, ax: Any = None
) -> Figure:
    """Loss vs LR: raw points, a lag-free smoothed curve, the validation losses
    (if any), the suggested LR and its low..high range.

    The LR axis is logarithmic for an ``exp`` ladder and linear for a
    ``linear`` one. The loss axis fits the smoothed curve and every finite
    validation loss before the training loss stopped being finite (the
    validation minimum a suggestion may rest on stays in view). Without a
    suggestion the axes say so and why (a test that diverged at once, a loss
    that was never finite).
    """
    from .suggest import smooth_curve

    fig, ax = _new_axes(ax)
    lrs = np.asarray(result.lrs, dtype=float)
    losses = np.asarray(result.losses, dtype=float)
    linear = result.settings.mode == "linear"
    if not linear:
        ax.set_xscale("log")
    ax.plot(lrs, losses, ".", color="0.7", ms=3, label="loss (raw)")
    positive = lrs[lrs > 0]
    if not linear and len(positive) > 1 and positive.max() < 10 * positive.min():
        # under a decade: a log axis's own ticks crowd into each other
        from matplotlib.ticker import FuncFormatter, MaxNLocator, NullLocator

        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
        ax.xaxis.set_minor_locator(NullLocator())
    if len(lrs) and float(np.min(lrs)) == float(np.max(lrs)):  # one LR: a decade
        x0 = float(lrs[0])
        ax.set_xlim(*((x0 * 0.5, x0 * 1.5) if linear else (x0 / 10**0.5, x0 * 10**0.5)))
    finite = _rule_points(result)
    vx = lrs[list(result.val_steps)] if result.val_losses else np.zeros(0)
    vy = np.asarray(result.val_losses, dtype=float)
    if finite.sum() >= 3:
        xs, ys = smooth_curve(lrs[finite], losses[finite])
        ax.plot(xs, ys, "-", color="C0", lw=2, label="loss (smoothed)")
        lo, hi = float(np.min(ys)), float(ys[0])
        # the validation losses while the training loss was finite (the
        # suggestion may rest on their minimum): in view
        last = int(np.flatnonzero(finite)[-1])
        in_test = np.isfinite(vy) & (np.asarray(result.val_steps[: len(vy)]) <= last)
        if in_test.any():
            lo = min(lo, float(np.min(vy[in_test])))
        pad = 0.25 * max(hi - lo, 1e-12)
        top = max(hi, float(np.median(losses[finite][: max(3, len(ys) // 10)])))
        ax.set_ylim(lo - pad, top + 2 * pad)
    if len(vy):
        ax.plot(vx, vy, "s-", color="C2", ms=3, lw=1, label="validation")
    s = result.suggestion
    if s is not None:
        if result.low is not None and result.high is not None:
            ax.axvspan(result.low, result.high, color="C1", alpha=0.12, label="range")
        ax.axvline(s, color="C1", lw=2, label=f"suggested {s:.3g}")
    if result.stop_reason != "completed" and len(lrs):
        ax.axvline(
            lrs[-1], color="C3", ls=":", lw=1, label=f"stopped ({result.stop_reason})"
        )
    if s is None:
        ax.text(
            0.5,
            0.5,
            _no_suggestion_text(result, int(finite.sum())),
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=9,
            wrap=True,
            bbox={
                "boxstyle": "round",
                "facecolor": "white",
                "edgecolor": "C3",
                "alpha": 0.85,
            },
        )
        if not np.isfinite(losses).any():  # nothing to scale the loss axis by
            ax.set_yticks([])
    ax.set_xlabel("learning rate" + (" (linear ladder)" if linear else ""))
    ax.set_ylabel("loss")
    conf = f", confidence {result.confidence:.2f}" if s is not None else ""
    ax.set_title(f"LR range test{conf}")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small", loc="best")
    _save(fig, path)
    return fig


def _no_suggestion_text(result: RangeTestResult, n_finite: int) -> str:
    """What the range-test figure says in place of a suggestion: none, and why."""
    import textwrap

    n = len(result.lrs)
    if n == 0:
        why = "no step was recorded"
    elif n_finite == 0:
        why = (
            f"the loss was NaN/inf from the first step (LR {result.lrs[0]:.3g}): "
            "not an LR effect; check the data, the loss and the model's output"
        )
    elif result.reasons:
        why = result.reasons[0]
    else:
        losses = "loss" if n_finite == 1 else "losses"
        why = f"{n_finite} finite {losses} before the stop ({result.stop_reason})"
    return "\n".join(textwrap.wrap(f"No suggestion: {why}".strip(), 60))


def sweep_figure(
    result: SweepResult, *, path: str | Path | None = None, ax: Any = None
) -> Figure:
    """Loss vs LR on a log axis for a sweep: every run, the diverged ones as
    crosses along the top, the best starred, the centre of the grid dotted.
    The loss axis is logarithmic when the losses are positive and span more
    than 30x (one exploded run would flatten the rest)."""
    fig, ax = _new_axes(ax)
    ax.set_xscale("log")
    lrs = np.asarray(result.lrs, dtype=float)
    losses = np.asarray(result.losses, dtype=float)
    ok = np.isfinite(losses) & (np.abs(losses) < _PLOTTABLE)
    huge = np.isfinite(losses) & ~ok  # finite, but no axis can hold it
    if len(lrs) == 1:  # one LR: show a decade around it
        ax.set_xlim(float(lrs[0]) / 10**0.5, float(lrs[0]) * 10**0.5)
        ax.set_autoscalex_on(False)
    if ok.any():
        ax.plot(lrs[ok], losses[ok], "o-", color="C0", ms=5, label="runs")
        lo, hi = float(losses[ok].min()), float(losses[ok].max())
        if lo > 0 and hi > 30 * lo:
            ax.set_yscale("log")
    # along the top of the axes, whatever the losses' scale: the diverged runs,
    # and apart from them a finite loss no axis can hold
    tops = (
        (huge, "^", 1.0, f"loss off scale (>= {_PLOTTABLE:.0e})"),
        (~np.isfinite(losses), "x", 2.0, "diverged"),
    )
    for mask, marker, mew, label in tops:
        if mask.any():
            ax.plot(
                lrs[mask],
                np.full(int(mask.sum()), 0.95),
                marker,
                color="C3",
                ms=8,
                mew=mew,
                label=label,
                transform=ax.get_xaxis_transform(),
            )
    if result.center is not None:
        ax.axvline(
            result.center,
            color="0.5",
            ls=":",
            lw=1,
            label=f"centre {result.center:.3g}",
        )
    best = result.best
    if best is not None and abs(best.loss) < _PLOTTABLE:
        ax.plot(
            [best.lr], [best.loss], "*", color="C1", ms=16, label=f"best {best.lr:.3g}"
        )
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss")
    ax.set_title(f"LR sweep ({len(lrs)} runs)")
    ax.grid(True, which="both", alpha=0.25)
    ax.legend(fontsize="small", loc="best")
    _save(fig, path)
    return fig


def terminal_curve(
    xs: Sequence[float] | np.ndarray[Any, Any],
    ys: Sequence[float] | np.ndarray[Any, Any],
    *,
    marks: Mapping[str, float] | None = None,
    width: int = 64,
    height: int = 14,
    log_x: bool = True,
    y_range: tuple[float, float] | None = None,
) -> str:
    """A plain-text plot of ``ys`` against ``xs`` (log x axis by default).

    ``marks`` maps a one-character label to an x value drawn as a vertical line.
    Non-finite values are left out. Returns the lines joined by newlines.
    """
    x = np.asarray(xs, dtype=float)
    y = np.asarray(ys, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y) & ((x > 0) if log_x else True)
    x, y = x[ok], y[ok]
    if len(x) < 2:
        return "(not enough points to plot)"
    tx = np.log10(x) if log_x else x
    x0, x1 = float(tx.min()), float(tx.max())
    if y_range is None:
        y0, y1 = float(y.min()), float(y.max())
    else:
        y0, y1 = y_range
    if y1 <= y0:
        y1 = y0 + 1.0
    grid = [[" "] * width for _ in range(height)]

    def col(v: float) -> int:
        return round((v - x0) / max(x1 - x0, 1e-12) * (width - 1))

    for label, xv in (marks or {}).items():
        if xv is None or not math.isfinite(xv) or (log_x and xv <= 0):
            continue
        c = col(math.log10(xv) if log_x else xv)
        if 0 <= c < width:
            for r in range(height):
                grid[r][c] = "|"
            grid[0][c] = label[:1]
    for xv, yv in zip(tx, y, strict=True):
        c = col(float(xv))
        r = round((y1 - min(max(yv, y0), y1)) / (y1 - y0) * (height - 1))
        grid[r][c] = "*" if grid[r][c] in (" ", "|") else grid[r][c]
    labels = [f"{y1:.4g}", f"{(y0 + y1) / 2:.4g}", f"{y0:.4g}"]
    pad = max(len(s) for s in labels)
    lines = []
    for r in range(height):
        lab = (
            labels[0]
            if r == 0
            else labels[1]
            if r == height // 2
            else labels[2]
            if r == height - 1
            else ""
        )
        lines.append(f"{lab:>{pad}} ┤" + "".join(grid[r]))
    left = f"{10**x0:.2g}" if log_x else f"{x0:.4g}"
    right = f"{10**x1:.2g}" if log_x else f"{x1:.4g}"
    lines.append(" " * pad + " └" + "─" * width)
    lines.append(
        " " * (pad + 2) + left + " " * max(1, width - len(left) - len(right)) + right
    )
    return "\n".join(lines)


def range_test_terminal(
    result: RangeTestResult, *, width: int = 64, height: int = 14
) -> str:
    """The range test as text: smoothed loss vs LR, the suggestion marked ``S``."""
    from .suggest import smooth_curve

    lrs = np.asarray(result.lrs, dtype=float)
    losses = np.asarray(result.losses, dtype=float)
    finite = _rule_points(result)
    if finite.sum() < 3:
        return "(not enough finite points to plot)"
    xs, ys = smooth_curve(lrs[finite], losses[finite])
    lo, start = float(np.min(ys)), float(ys[0])
    pad = 0.15 * max(start - lo, 1e-12)
    marks = {"S": result.suggestion} if result.suggestion is not None else {}
    return terminal_curve(
        xs,
        ys,
        marks=marks,
        width=width,
        height=height,
        y_range=(lo - pad, start + 3 * pad),
    )


# --- schedules ---------------------------------------------------------------

_BLOCKS = "▁▂▃▄▅▆▇█"


def schedule_sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line terminal picture of a schedule (the maximum of each column).

    Example:
        >>> schedule_sparkline([0.0, 0.5, 1.0, 0.5, 0.0], width=5)
        '▁▅█▅▁'
    """
    if not values:
        return ""
    n = len(values)
    width = max(1, min(width, n))
    cols = [
        max(values[i * n // width : max((i + 1) * n // width, i * n // width + 1)])
        for i in range(width)
    ]
    lo, hi = min(values), max(values)
    if hi <= lo:
        return _BLOCKS[-1] * width
    top = len(_BLOCKS) - 1
    return "".join(_BLOCKS[round((v - lo) / (hi - lo) * top)] for v in cols)


def plot_schedules(
    curves: Mapping[str, Sequence[float]],
    path: str | Path | None = None,
    *,
    log: bool = False,
    title: str | None = None,
    steps: Mapping[str, Sequence[int]] | None = None,
    ylabel: str = "learning rate",
) -> Figure:
    """Plot one or several LR curves (one value per step) on one axis.

    The legend (several curves, or one with a short label) goes below the
    axes, one row per curve, so that it never covers a curve.

    Args:
        curves: ``{label: lrs}``; several curves are overlaid.
        path: save the figure there (PNG, SVG, ... by suffix) when given.
        log: logarithmic LR axis.
        title: figure title.
        steps: ``{label: steps}``, the step of each LR of a curve sampled
            from a long schedule (default: 0, 1, 2, ...).
        ylabel: the y axis label (``"LR multiplier"`` for a schedule's values
            before a base LR scales them).

    Returns:
        The matplotlib ``Figure`` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5 + 0.2 * max(len(curves) - 1, 0)), layout="constrained")
    ax = fig.subplots()
    for label, lrs in curves.items():
        xs = steps[label] if steps is not None and label in steps else range(len(lrs))
        ax.plot(xs, lrs, label=label, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(curves) > 1 or any(len(k) <= 80 for k in curves):
        fig.legend(fontsize="small", loc="outside lower center", frameon=False)
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(out_path(path), dpi=120)
    return fig


# --- monitor ------------------------------------------------------------------
_SEVERITY_COLOR = {"info": "#4C72B0", "warning": "#DD8452", "critical": "#C44E52"}
#: Larger losses are drawn as off-scale marks: matplotlib cannot scale an axis
#: around values near the float range (an overflow logged as a number).
_PLOTTABLE = 1e150
# losses spanning more than this factor are drawn on a log scale
_LOG_RANGE = 1e3


def diagnosis_figure(
    history: History,
    diagnosis: Diagnosis | None = None,
    *,
    path: str | Path | None = None,
    ax: Any = None,
) -> Figure:
    """The training curve with the monitor's findings shaded.

    Draws the training loss (raw, and over it a centred running median: of 9
    losses up to 2 000 of them, of about 1/200 of the log on a longer one, the
    window narrowed at both ends so that the first and last points are not
    pulled towards the middle; a short log of under 30 losses as it is), the
    validation loss, non-finite losses as red marks along the top, each finding
    as a band from its first to its last step coloured by severity, with edge
    lines and, from the second kind on, a hatching of its own (labelled with its
    kind), and the LR (dashed) on a second axis when the history has one. The
    legend sits below the axes, clear of the data. When the run blew up (a
    ``critical`` finding) and the blow-up would flatten the rest of the curve,
    the y axis is scaled to the losses before it, with headroom, and the title
    says that higher values are clipped. The x axis is labelled with the log's
    step column (``epoch`` for a log per epoch). A log without one finite loss
    says so in the axes.

    Args:
        history: the run (:class:`lrkit.History`).
        diagnosis: its :class:`lrkit.Diagnosis`; computed when None.
        path: save the figure there (PNG by extension) when given.
        ax: draw on these matplotlib axes instead of a new figure.

    Returns:
        The matplotlib ``Figure``.
    """
    from .monitor import diagnose

    if diagnosis is None:
        diagnosis = diagnose(history)
    fig, ax = _new_axes(ax)
    steps = np.asarray(history.steps, dtype=float)
    loss = np.asarray(history.loss, dtype=float)
    # off the plottable range too: an overflow logged as a number (~1e308)
    finite = np.isfinite(loss) & (np.abs(loss) < _PLOTTABLE)
    # a centred running median (a line per epoch is already an average: a
    # short log is drawn as it is)
    half = median_half_window(int(finite.sum()))
    if half:
        ax.plot(steps[finite], loss[finite], lw=0.6, alpha=0.45, color="#4C72B0")
        at, med = centred_median(loss[finite], half)
        ax.plot(steps[finite][at], med, lw=1.6, color="#4C72B0", label="train loss")
    elif finite.any():
        ax.plot(
            steps[finite],
            loss[finite],
            ".-",
            ms=3,
            lw=1.4,
            color="#4C72B0",
            label="train loss",
        )
    val_steps = np.asarray(history.val_steps, dtype=float)
    val_loss = np.asarray(history.val_loss, dtype=float)
    val_ok = np.isfinite(val_loss) & (np.abs(val_loss) < _PLOTTABLE)
    if val_ok.any():
        ax.plot(
            val_steps[val_ok],
            val_loss[val_ok],
            "o-",
            ms=3,
            lw=1.2,
            color="#55A868",
            label="val loss",
        )
    values = np.concatenate([loss[finite], val_loss[val_ok]])
    clipped_at = _clip_step(diagnosis, steps[finite], loss[finite])
    if clipped_at is not None:
        # the blow-up would flatten the rest: scale to the part before it
        values = np.concatenate(
            [
                loss[finite & (steps < clipped_at)],
                val_loss[val_ok & (val_steps < clipped_at)],
            ]
        )
    every = np.concatenate([loss[finite], val_loss[val_ok]])
    top = math.inf
    log_y = (
        clipped_at is None
        and len(values) > 0
        and float(values.min()) > 0
        and float(values.max()) > _LOG_RANGE * float(values.min())
    )
    bad_marks: dict[str, Any] = {
        "color": "#C44E52",
        "label": "NaN / inf / overflow",
        "clip_on": False,
    }
    if log_y:  # a blow-up, or a loss falling by decades: every value shown
        lo, hi = float(values.min()), float(values.max())
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.3, hi * 1.3)
        pad = 0.0
        if (~finite).any():
            ax.plot(
                steps[~finite], np.full((~finite).sum(), hi * 1.15), "x", **bad_marks
            )
    elif len(values):
        lo, hi = np.percentile(values, [0.5, 99.5])
        pad = 0.08 * max(hi - lo, 1e-12)
        if clipped_at is not None:
            hi += 0.5 * max(hi - lo, 1e-12)  # headroom: the rise stays visible
        ax.set_ylim(lo - pad, hi + pad)
        top = hi + pad
        if (~finite).any():
            ax.plot(
                steps[~finite],
                np.full((~finite).sum(), hi + 0.5 * pad),
                "x",
                **bad_marks,
            )
    else:  # not one finite loss: the marks along the middle, and a word why
        if len(steps):
            ax.plot(
                steps,
                np.full(len(steps), 0.5),
                "x",
                transform=ax.get_xaxis_transform(),
                **bad_marks,
            )
        n_bad = int((~finite).sum())
        ax.text(
            0.5,
            0.62,
            f"no finite loss to draw: all {n_bad} logged losses are NaN, inf or "
            "overflowed"
            if n_bad
            else "no loss logged",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=9,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#C44E52"},
        )
        ax.set_yticks([])
    labelled: dict[str, int] = {}
    for f in diagnosis.findings:
        color = _SEVERITY_COLOR.get(f.severity, "#8172B3")
        left, right = f.first_step, max(f.last_step, f.first_step + 1)
        first_of_kind = f.kind not in labelled
        i = labelled.setdefault(f.kind, len(labelled))
        ax.axvspan(left, right, color=color, alpha=0.16, lw=0)
        # edge lines and a hatching per kind: overlapping bands stay apart
        ax.axvspan(
            left,
            right,
            fill=False,
            edgecolor=color,
            hatch=_HATCHES[i % len(_HATCHES)],
            lw=0.8,
            alpha=0.55,
        )
        if first_of_kind:  # each kind labelled once, staggered: legible
            ax.text(
                left,
                0.98 - 0.07 * (i % 4),
                f" {f.kind}",
                transform=ax.get_xaxis_transform(),
                va="top",
                ha="left",
                fontsize=7,
                color=color,
            )
    handles, labels = ax.get_legend_handles_labels()
    if len(history.lr):
        lr_ax = ax.twinx()
        (lr_line,) = lr_ax.plot(
            history.lr_steps, history.lr, "--", lw=0.9, color="0.45", label="LR"
        )
        handles.append(lr_line)
        labels.append("learning rate (right axis)")
        lr_ax.set_ylabel("learning rate")
        lr_values = history.lr[np.isfinite(history.lr)]
        if len(lr_values) and lr_values.min() > 0:
            if lr_values.max() / lr_values.min() > 100:
                lr_ax.set_yscale("log")
            else:
                lr_ax.set_ylim(0, 1.15 * float(lr_values.max()))
    ax.set_xlabel(history.columns.get("step") or "step")
    ax.set_ylabel("loss")
    title = f"{diagnosis.verdict}: {diagnosis.summary}"
    hidden = int(np.sum(every > top))
    if hidden:
        values_word = "values" if hidden > 1 else "value"
        title += f"\n({hidden} {values_word} above {top:.3g} not shown"
        if clipped_at is not None:
            title += f": the y axis fits the losses before step {clipped_at:g}"
        title += ")"
    elif log_y:
        title += "\n(log-scale y axis: the losses span several decades)"
    ax.set_title(title, fontsize=9)
    if handles:  # below the axes, clear of the data and of the NaN marks
        ax.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.13),
            ncols=len(handles),
            fontsize=8,
            frameon=False,
        )
    _save(fig, path)
    return fig


#: Hatchings of the finding bands, one per kind in order (the first plain).
_HATCHES = ("", "////", "\\\\\\\\", "..", "xx")
#: A longer series' running median is evaluated at this many indices (a
#: figure is about 800 pixels wide).
_MEDIAN_POINTS = 4000


def median_half_window(n: int) -> int:
    """Half the window of the running median drawn over ``n`` losses.

    0 (no median: the log is drawn as it is) under 30 losses, at most 4 (a
    median of 9) below 2 000, then ``n // 400`` (a window of about 1/200 of
    the log: a 9-point median is no smoother on a million steps).

    Example:
        >>> [median_half_window(n) for n in (20, 60, 600, 10_000, 1_000_000)]
        [0, 2, 4, 25, 2500]
    """
    return max(min(4, n // 30), n // 400)


def centred_median(y: np.ndarray, half: int) -> tuple[np.ndarray, np.ndarray]:
    """A centred running median of ``y`` over ``2 * half + 1`` points.

    Near either end the window narrows symmetrically (``min(half, i, n-1-i)``
    on each side), so the first and the last values are the data's own and a
    falling curve is not pulled down at its start. A long series is
    evaluated at about ``_MEDIAN_POINTS`` evenly spaced indices (less the
    two ends, whose windows would be a point or two).

    Returns:
        ``(indices, medians)``.

    Example:
        >>> centred_median(np.array([5.0, 1.0, 2.0, 3.0, 0.0]), 1)[1].tolist()
        [5.0, 2.0, 2.0, 2.0, 0.0]
    """
    n = len(y)
    long = n > _MEDIAN_POINTS
    at = (
        np.unique(np.linspace(0, n - 1, _MEDIAN_POINTS).round().astype(int))
        if long
        else np.arange(n)
    )
    wide = np.minimum(np.minimum(at, n - 1 - at), half)
    if long:
        # the ends' windows of a point or two would be raw noise: left out
        # (the curve starts one sample in)
        keep = wide >= min(half, (n - 1) // (_MEDIAN_POINTS - 1))
        at, wide = at[keep], wide[keep]
    out = np.empty(len(at))
    inner = wide == half
    if inner.any() and half > 0:  # full windows: in blocks, as strided views
        windows = np.lib.stride_tricks.sliding_window_view(y, 2 * half + 1)
        rows = at[inner] - half
        block = max(1, 20_000_000 // (2 * half + 1))
        parts = [
            np.median(windows[rows[k : k + block]], axis=1)
            for k in range(0, len(rows), block)
        ]
        out[inner] = np.concatenate(parts)
    for j in np.flatnonzero(~inner):
        i, h = int(at[j]), int(wide[j])
        out[j] = np.median(y[i - h : i + h + 1])
    return at, out


def _clip_step(
    diagnosis: Diagnosis, steps: np.ndarray, loss: np.ndarray
) -> float | None:
    """The step to scale the y axis before, or None to show every value.

    The first step of the first ``critical`` finding (NaN, diverged), when at
    least 5 finite losses precede it and a later loss would stretch the axis
    to more than twice the range of the losses before it.
    """
    critical = [f.first_step for f in diagnosis.findings if f.severity == "critical"]
    if not critical:
        return None
    at = float(min(critical))
    before = loss[steps < at]
    after = loss[steps >= at]
    if len(before) < 5 or not len(after):
        return None
    lo, hi = np.percentile(before, [0.5, 99.5])
    span = max(hi - lo, 1e-12)
    if float(np.max(after)) <= hi + span:
        return None
    return at
