"""Scoring a proposed learning rate against the grid-search oracle.

Per oracle cell (task, schedule, lr, seed) the *effective* loss is the final
validation loss, or the untrained validation loss of that seed when the run
diverged (non-finite, or final val loss > 1.5x untrained).

- ``L(lr)``: the seed-mean effective loss, linearly interpolated in log10(lr)
  between grid points; a pick outside the grid takes the edge value and is
  flagged ``outside_grid``.
- ``L* = min L`` over the grid and ``lr*`` its argmin.
- ``regret(lr) = L(lr) / L* - 1``; also ``|log2(lr / lr*)|``,
  ``|log10(lr / lr*)|`` and ``above_half_decade = log10(lr / lr*) > 0.5``.
- ``divergent``: the fraction of diverged seeds, interpolated the same way, is
  >= 0.5 at the pick (the pick lands in a diverged cell).
- LR-free optimizers are scored by their own final loss: ``loss / L* - 1``
  (their untrained loss when they diverged), the "effective" regret.

The same definitions apply to the constant-LR oracle and to the warmup+cosine
oracle (each with its own ``L*`` and ``lr*``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .common import GRID


def interp_log(lrs: np.ndarray, values: np.ndarray, lr: float) -> tuple[float, bool]:
    """``values`` interpolated linearly in log10(lr); clamps outside the grid.

    Returns ``(value, outside_grid)``. ``lrs`` must be increasing.

    >>> interp_log(np.array([0.01, 0.1]), np.array([1.0, 3.0]), 10**-1.5)
    (2.0, False)
    >>> interp_log(np.array([0.01, 0.1]), np.array([1.0, 3.0]), 1.0)
    (3.0, True)
    """
    x = math.log10(lr)
    logs = np.log10(lrs)
    outside = bool(x < logs[0] - 1e-9 or x > logs[-1] + 1e-9)
    return float(np.interp(x, logs, values)), outside


@dataclass(frozen=True)
class OracleCurve:
    """One oracle (a task under one schedule) reduced to what scoring needs."""

    task: str
    schedule: str
    budget_steps: int
    lrs: np.ndarray  # grid LRs with at least one cell, increasing
    seed_loss: np.ndarray  # (n_seeds, n_lrs) effective loss; NaN where missing
    seed_div: np.ndarray  # (n_seeds, n_lrs) diverged flag (float 0/1; NaN missing)
    init_loss: float  # seed-mean untrained val loss
    seeds: tuple[int, ...]
    n_missing: int

    @property
    def mean_loss(self) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanmean(self.seed_loss, axis=0)

    @property
    def div_frac(self) -> np.ndarray:
        with np.errstate(all="ignore"):
            return np.nanmean(self.seed_div, axis=0)

    @property
    def idx_star(self) -> int:
        return int(np.nanargmin(self.mean_loss))

    @property
    def L_star(self) -> float:
        return float(self.mean_loss[self.idx_star])

    @property
    def lr_star(self) -> float:
        return float(self.lrs[self.idx_star])

    def L(self, lr: float) -> tuple[float, bool]:
        return interp_log(self.lrs, self.mean_loss, lr)

    def neighbour_regret(self) -> tuple[float, float]:
        """Regret of the grid points just below and above lr* (the noise floor)."""
        i, m = self.idx_star, self.mean_loss
        lo = float(m[i - 1] / self.L_star - 1) if i > 0 else float("nan")
        hi = float(m[i + 1] / self.L_star - 1) if i + 1 < len(m) else float("nan")
        return lo, hi

    def seed_std_at_star(self) -> float:
        """Seed-to-seed std of the loss at lr*, relative to L*."""
        col = self.seed_loss[:, self.idx_star]
        col = col[np.isfinite(col)]
        return float(np.std(col, ddof=1) / self.L_star) if len(col) > 1 else math.nan

    def score(self, lr: float | None) -> dict[str, Any]:
        """All metrics of a proposed LR (None or a non-positive/non-finite value
        is a failed pick, scored as the untrained model)."""
        if lr is None or not math.isfinite(lr) or lr <= 0:
            return {
                "L": self.init_loss,
                "regret": self.init_loss / self.L_star - 1,
                "failed": True,
                "divergent": False,
                "outside_grid": False,
                "abs_log2": None,
                "abs_log10": None,
                "log10_ratio": None,
                "above_half_decade": False,
            }
        loss, outside = self.L(lr)
        div, _ = interp_log(self.lrs, self.div_frac, lr)
        ratio = math.log10(lr / self.lr_star)
        return {
            "L": loss,
            "regret": loss / self.L_star - 1,
            "failed": False,
            "divergent": div >= 0.5,
            "outside_grid": outside,
            "abs_log2": abs(ratio) / math.log10(2),
            "abs_log10": abs(ratio),
            "log10_ratio": ratio,
            "above_half_decade": ratio > 0.5 + 1e-9,
        }

    def score_loss(self, loss: float | None, diverged: bool, init_loss: float) -> float:
        """Effective regret of an achieved final loss (LR-free optimizers); a
        diverged run, or one without a finite loss, counts as ``init_loss``."""
        if diverged or loss is None or not math.isfinite(loss):
            loss = init_loss
        return loss / self.L_star - 1


def curve_from_oracle(oracle: dict[str, Any], schedule: str) -> OracleCurve | None:
    """Build the curve of one schedule from an oracle JSON (None if no cell)."""
    cells = [c for c in oracle["cells"].values() if c["schedule"] == schedule]
    if not cells:
        return None
    seeds = tuple(sorted({c["seed"] for c in cells}))
    idxs = sorted({c["lr_idx"] for c in cells})
    loss = np.full((len(seeds), len(idxs)), np.nan)
    div = np.full((len(seeds), len(idxs)), np.nan)
    inits = []
    for c in cells:
        si, j = seeds.index(c["seed"]), idxs.index(c["lr_idx"])
        diverged = bool(c["diverged"]) or c["final_loss"] is None
        loss[si, j] = c["init_loss"] if diverged else c["final_loss"]
        div[si, j] = 1.0 if diverged else 0.0
        inits.append(c["init_loss"])
    return OracleCurve(
        task=oracle["task"],
        schedule=schedule,
        budget_steps=int(oracle["settings"]["budget_steps"]),
        lrs=np.array([GRID[i] for i in idxs]),
        seed_loss=loss,
        seed_div=div,
        init_loss=float(np.mean(inits)),
        seeds=seeds,
        n_missing=int(np.isnan(loss).sum()),
    )


def load_curves(task: str) -> dict[str, OracleCurve]:
    """``{"constant": ..., "cosine": ...}`` for a task (schedules with cells)."""
    from .oracle import load_oracle

    oracle = load_oracle(task)
    out: dict[str, OracleCurve] = {}
    if oracle is None:
        return out
    for schedule in ("constant", "cosine"):
        c = curve_from_oracle(oracle, schedule)
        if c is not None:
            out[schedule] = c
    return out
