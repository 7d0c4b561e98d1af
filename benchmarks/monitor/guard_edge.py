"""The Guard started at 4x the best LR, on tasks that diverge there.

No task of the regret suite diverges at 4x its best constant LR (their best LRs
sit well inside the stable range), so issue 4's Guard target cannot be measured
on them. Full-batch gradient descent is the classic case where it can: the best
LR for a fixed budget sits just under the stability edge ``2 / lambda_max`` (a
larger step speeds up the slow directions until the fastest one diverges), so 4x
the best LR diverges. This script builds three such tasks from the regret
suite's data, finds each one's best LR with a small grid (4 per decade, 1e-3 to
10, seeds 0-2, final validation loss; a diverged run counts as untrained), and
then, per seed, trains at 4x that LR without and with ``lrkit.torch.Guard``
(``--factor``, default the Guard's own, 0.3, as in ``run.py --guard``; snapshots every
``max(10, budget // 20)`` steps; defaults otherwise). Printed: the table per
run and the share of guarded runs that end within 2% of the best-LR run's final
validation loss (the target: >= 90%).

    PYTHONPATH=src:. python benchmarks/monitor/guard_edge.py
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import run as R  # noqa: E402
from benchmarks.regret import tasks as T  # noqa: E402
from benchmarks.regret.train import DIVERGE_FACTOR  # noqa: E402

GRID = [10 ** (k / 4) for k in range(-12, 5)]  # 1e-3 .. 10
SEEDS = (0, 1, 2)


def _full_batch(name: str, seed: int, model: nn.Module, data: Any, **kw: Any) -> Any:
    return T._instance(name, seed, model, data, batch=len(data[1]), **kw)


def diabetes_linreg_gd(seed: int) -> Any:
    torch.manual_seed(seed)
    return _full_batch(
        "diabetes_linreg_gd",
        seed,
        nn.Linear(10, 1),
        T.diabetes_data(),
        budget=100,
        optimizer=(T.sgd(), "SGD"),
        loss_fn=T.mse,
        family="sgd",
        description="diabetes, linear regression, MSE, full-batch gradient descent",
    )


def digits_mlp_gd(seed: int) -> Any:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return _full_batch(
        "digits_mlp_gd",
        seed,
        model,
        T.digits_data(),
        budget=150,
        optimizer=(T.sgd(), "SGD"),
        loss_fn=T.cross_entropy,
        family="sgd",
        description="digits, MLP 64-64-10 ReLU, full-batch gradient descent",
    )


def friedman1_mlp_gd(seed: int) -> Any:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(10, 64), nn.Tanh(), nn.Linear(64, 1))
    return _full_batch(
        "friedman1_mlp_gd",
        seed,
        model,
        T.friedman1_data(),
        budget=150,
        optimizer=(T.sgd(), "SGD"),
        loss_fn=T.mse,
        family="sgd",
        description="Friedman #1, MLP 10-64-1 tanh, full-batch gradient descent",
    )


TASKS: dict[str, Callable[[int], Any]] = {
    "diabetes_linreg_gd": diabetes_linreg_gd,
    "digits_mlp_gd": digits_mlp_gd,
    "friedman1_mlp_gd": friedman1_mlp_gd,
}


def effective(r: dict[str, float]) -> float:
    """Final validation loss; a diverged run counts as the untrained loss."""
    f = r["final"]
    return r["init"] if not math.isfinite(f) or f > DIVERGE_FACTOR * r["init"] else f


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--factor", type=float, default=R.GUARD_FACTOR)
    R.GUARD_FACTOR = ap.parse_args().factor
    torch.set_num_threads(1)
    rows = []
    for name, make in TASKS.items():
        budget = make(0).budget_steps
        every = max(10, budget // 20)

        def run(
            seed: int,
            lr: float,
            guard: bool,
            name: str = name,
            mk: Any = make,
            every: int = every,
        ) -> dict[str, float]:
            return R.guarded_run(
                name, seed, lr, ROOT, guard=guard, every=every, make=mk
            )

        curve = []
        for lr in GRID:
            curve.append(sum(effective(run(s, lr, False)) for s in SEEDS) / len(SEEDS))
        best = GRID[min(range(len(GRID)), key=curve.__getitem__)]
        print(f"{name}: best LR {best:.3g} (grid 1e-3..10, seeds {SEEDS})", flush=True)
        for seed in SEEDS:
            ref = run(seed, best, False)
            plain = run(seed, 4 * best, False)
            diverged = effective(plain) == plain["init"]
            guarded = run(seed, 4 * best, True) if diverged else None
            rows.append((name, seed, best, ref, plain, diverged, guarded))
    print(
        "\n| task | seed | best LR | best-LR final | 4x: plain final | diverges "
        "| 4x: guarded final | recoveries | LR scale | gap | within 2% |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    ok = n = 0
    for name, seed, best, ref, plain, _, g in rows:
        if g is None:
            print(
                f"| {name} | {seed} | {best:.3g} | {ref['final']:.4g} | "
                f"{plain['final']:.4g} | no | | | | | |"
            )
            continue
        gap = g["final"] / ref["final"] - 1 if math.isfinite(g["final"]) else math.inf
        good = gap <= 0.02
        n += 1
        ok += good
        print(
            f"| {name} | {seed} | {best:.3g} | {ref['final']:.4g} | "
            f"{plain['final']:.4g} | yes | {g['final']:.4g} | {int(g['recoveries'])} "
            f"| {g['scale']:.3g} | {100 * gap:+.1f}% | {'yes' if good else 'no'} |"
        )
    print(
        f"\nGuard started at 4x the best LR, on runs that diverge there: "
        f"{R.pct(ok, n)} finish within 2% of the best-LR run's final validation loss."
    )


if __name__ == "__main__":
    main()
