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
- ``diverged``: any run whose loss became non-finite, or whose final level (the
  median of its last 10 losses) gained less than 10% of what the task's best run
  gained (``start - final < 0.1 (start - best_final)``, ``start`` = first loss):
  a run that ends no better than it began;
- ``oscillating``: ``m > 3`` and not diverged (an LR too high that still trains).

The divergence onset of a ``diverged`` run is found in hindsight (``_onset``):
where the final climb back above the midpoint between its start and its best
level began, or where the loss first went non-finite or above its start.
"""

from __future__ import annotations

import gzip
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

LABELS = ("too_low", "low", "good", "oscillating", "diverged")
TOO_LOW_BELOW = 1 / 30
GOOD_LOW, GOOD_HIGH = 1 / 3, 3.0
_EPS = 1e-6  # grid values are rounded floats


@dataclass(frozen=True)
class Run:
    task: str
    lr: float
    seed: int
    mult: float  # lr / best_lr
    label: str
    onset: int | None  # divergence onset (diverged runs)
    train_loss: list[float]
    grad_norm: list[float]
    val_steps: list[int]
    val_loss: list[float]


def _num(v: float | None) -> float:
    """Curves store non-finite values as null."""
    return math.nan if v is None else float(v)


def _final_level(y: list[float]) -> float:
    tail = y[-10:]
    if not tail or not all(math.isfinite(v) for v in tail):
        return math.nan
    return float(np.median(tail))


def _onset(y: list[float]) -> int:
    """Where the divergence began, in hindsight.

    The first step of the final stretch (up to the end, or to the first
    non-finite loss) in which the centred median of 5 losses stays above the
    midpoint between the run's start and its best level; when there is none, the
    first step whose loss is non-finite or above the start.
    """
    start = y[0]
    stop = next((i for i, v in enumerate(y) if not math.isfinite(v)), len(y))
    arr = np.asarray(y[:stop], dtype=float)
    if len(arr) >= 5:
        med = np.array([np.median(arr[max(0, i - 2) : i + 3]) for i in range(len(arr))])
        best = float(med.min())
        mid = start - 0.5 * (start - best)
        if best < start:
            i = len(med)
            while i > 0 and med[i - 1] > mid:
                i -= 1
            if i < len(med) or stop < len(y):
                return i if i < len(med) else stop
    for i, v in enumerate(y):
        if not math.isfinite(v) or v > start:
            return i
    return len(y) - 1


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
        if nonfinite or (no_gain and mult > GOOD_LOW):
            label = "diverged"
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
                onset=_onset(y) if label == "diverged" else None,
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
