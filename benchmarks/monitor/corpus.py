"""The labelled corpus of real loss curves behind the monitor benchmark.

Curves come from real training runs over a grid of learning rates, one
``<task>.json.gz`` per task in the regret suite's format::

    {"task", "description", "budget_steps", "family", "val_every", "best_lr",
     "runs": [{"lr", "seed", "train_loss": [...per step], "grad_norm": [...],
               "val_steps": [...], "val_loss": [...], "diverged", "final_val_loss"}]}

Labels come from each run's place on the grid relative to the task's best LR
(``m = lr / best_lr``) and, above the good band, from what the run did:

- ``too_low``: ``m <= 1/30``;
- ``low``: ``1/30 < m < 1/3`` (a grey zone: in no recall or false-warning rate);
- ``good``: ``1/3 <= m <= 3``;
- ``diverged``: any run whose loss became non-finite, or that ended no better
  than it began (its final level, the median of its last 10 losses, gained less
  than 10% of what the task's best run gained: ``start - final < 0.1
  (start - best_final)``, ``start`` = first loss) after a divergence it shows:
  it lost half of the progress it had made and never got it back, or it blew
  up from the start (see ``_onset``, which also gives where it began);
- ``stuck``: ``m > 1/3``, ended no better than it began, and shows no
  divergence: it never made progress beyond its noise nor rose beyond it
  (loss noise around its start: an LR so high that nothing is learned, with
  no blow-up to see);
- ``oscillating``: ``m > 3`` and neither diverged nor stuck (an LR too high
  that still trains).

Runs of the good band are labelled by the grid alone unless they diverged or
got stuck by these rules: a good-band run that lost its progress for a while
and recovered stays ``good``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
REGRET_CURVES = ROOT / "benchmarks" / "regret" / "curves"
TUNING_CURVES = ROOT / "benchmarks" / "monitor" / "tuning_curves"
# the regret benchmark's held-out group (benchmarks/regret/holdout.py), built
# after the monitor's rules were fixed
HOLDOUT_CURVES = ROOT / "benchmarks" / "regret" / "curves_holdout"

LABELS = ("too_low", "low", "good", "oscillating", "stuck", "diverged")
TOO_LOW_BELOW = 1 / 30
GOOD_LOW, GOOD_HIGH = 1 / 3, 3.0
_EPS = 1e-6  # grid values are rounded floats
_NOISE = 1.4826  # median absolute deviation -> standard deviation (Gaussian)
_EVENT_Z = 3.0  # progress or a rise beyond 3 noise: not the noise itself
_EVENT_STEPS = 10  # a divergence lasts: the line stays crossed this long


@dataclass(frozen=True)
class Run:
    task: str
    lr: float
    seed: int
    mult: float  # lr / best_lr
    label: str
    onset: int | None  # divergence onset (diverged runs; see _onset)
    train_loss: list[float]
    grad_norm: list[float]
    val_steps: list[int]
    val_loss: list[float]


def averaged(run: Run, points: int) -> dict[str, list[Any]]:
    """The run as a log of ``points`` averages (a line per epoch, or one every
    few hundred steps): the training losses cut into ``points`` equal stretches,
    each logged at its last step as its mean (a stretch holding a non-finite
    loss is logged as NaN and ends the log, as a trainer stops there); each
    validation loss is logged at the end of the stretch it falls in (the first
    of several in one stretch is kept). Gradient norms are not logged.

    Returns the keyword arguments of ``lrkit.History``.
    """
    y = np.asarray(run.train_loss, dtype=float)
    edges = np.unique(np.linspace(0, len(y), points + 1).astype(int))
    steps: list[int] = []
    loss: list[float] = []
    for a, b in itertools.pairwise(edges.tolist()):
        part = y[a:b]
        finite = bool(np.all(np.isfinite(part)))
        steps.append(int(b - 1))
        loss.append(float(part.mean()) if finite else math.nan)
        if not finite:
            break
    val_steps: list[int] = []
    val_loss: list[float] = []
    for s, v in zip(run.val_steps, run.val_loss, strict=True):
        k = int(np.searchsorted(edges[1:], s + 1))
        if k < len(steps) and (not val_steps or steps[k] > val_steps[-1]):
            val_steps.append(steps[k])
            val_loss.append(v)
    return {
        "loss": loss,
        "steps": steps,
        "val_loss": val_loss or None,
        "val_steps": val_steps or None,
    }


def _num(v: float | None) -> float:
    """Curves store non-finite values as null."""
    return math.nan if v is None else float(v)


def _final_level(y: list[float]) -> float:
    tail = y[-10:]
    if not tail or not all(math.isfinite(v) for v in tail):
        return math.nan
    return float(np.median(tail))


def _onset(y: list[float]) -> int | None:
    """Where the divergence began, in hindsight; None when there was none.

    With ``med`` the centred median of 5 losses (up to the first non-finite
    one), ``noise`` the median absolute deviation of the losses from ``med``
    (times 1.4826: the standard deviation of Gaussian noise), ``start`` the
    first loss and ``best`` the lowest ``med``:

    - a run that made progress (``start - best > 3 noise``) and lost at least
      half of it by the end (the median of its last 10 losses above the
      midpoint between ``start`` and ``best``) or turned non-finite: the step
      after the last one whose ``med`` was within a quarter of its progress
      from ``best`` (``med <= best + (start - best) / 4``), where it left its
      best region for good;
    - a run that made none: the first step from which ``med`` stays above
      ``start + 3 noise`` for ``_EVENT_STEPS`` steps (or up to the first
      non-finite loss): it rose beyond its noise, and not for a lone spike.

    Without either: the first non-finite loss, else None (no divergence to
    see: a run that kept its progress, or loss noise around its start).
    """
    stop = next((i for i, v in enumerate(y) if not math.isfinite(v)), len(y))
    nonfinite = stop if stop < len(y) else None
    arr = np.asarray(y[:stop], dtype=float)
    if len(arr) < 5:
        return nonfinite
    med = np.array([np.median(arr[max(0, i - 2) : i + 3]) for i in range(len(arr))])
    noise = _NOISE * float(np.median(np.abs(arr - med)))
    start = float(arr[0])
    best = float(med.min())
    if start - best > _EVENT_Z * noise:
        if nonfinite is None and float(np.median(arr[-10:])) <= 0.5 * (start + best):
            return None  # it kept half its progress: no divergence
        good = np.nonzero(med <= best + 0.25 * (start - best))[0]
        last_good = int(good[-1])
        return last_good + 1 if last_good + 1 < len(med) else nonfinite
    line = start + _EVENT_Z * noise
    for t in range(1, len(med)):
        stretch = med[t : t + _EVENT_STEPS]
        long_enough = len(stretch) == _EVENT_STEPS or nonfinite is not None
        if long_enough and bool(np.all(stretch > line)):
            return t
    return nonfinite


def label_task(record: dict[str, Any]) -> list[Run]:
    best = float(record["best_lr"])
    runs = record["runs"]
    finals = {}
    for r in runs:
        y = [_num(v) for v in r["train_loss"]]
        if y and all(math.isfinite(v) for v in y):
            finals.setdefault(r["lr"], []).append(y[0] - _final_level(y))
    best_gain = max((float(np.mean(v)) for v in finals.values()), default=0.0)
    out = []
    for r in runs:
        y = [_num(v) for v in r["train_loss"]]
        if len(y) < 2:
            continue
        mult = float(r["lr"]) / best
        nonfinite = not all(math.isfinite(v) for v in y)
        final = _final_level(y)
        no_gain = not nonfinite and (y[0] - final) < 0.1 * best_gain
        onset = _onset(y) if nonfinite or (no_gain and mult > GOOD_LOW) else None
        if nonfinite or onset is not None:
            label = "diverged"
        elif no_gain and mult > GOOD_LOW:
            label = "stuck"
        elif mult <= TOO_LOW_BELOW * (1 + _EPS):
            label = "too_low"
        elif mult < GOOD_LOW * (1 - _EPS):
            label = "low"
        elif mult <= GOOD_HIGH * (1 + _EPS):
            label = "good"
        else:
            label = "oscillating"
        out.append(
            Run(
                task=record["task"],
                lr=float(r["lr"]),
                seed=int(r["seed"]),
                mult=mult,
                label=label,
                onset=onset,
                train_loss=y,
                grad_norm=[_num(v) for v in r.get("grad_norm", [])],
                val_steps=[int(s) for s in r.get("val_steps", [])],
                val_loss=[_num(v) for v in r.get("val_loss", [])],
            )
        )
    return out


def load(directory: Path) -> Iterator[tuple[dict[str, Any], list[Run]]]:
    for path in sorted(directory.glob("*.json.gz")):
        with gzip.open(path, "rt") as fh:
            record = json.load(fh)
        yield record, label_task(record)
