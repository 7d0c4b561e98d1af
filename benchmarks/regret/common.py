"""Shared pieces: the LR grid, worker setup, paths and the optimizer-step counter."""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

import torch

# the oracle grid: 1e-6 .. 10, 4 points per decade (29 values)
GRID_EXP: list[float] = [-6 + i / 4 for i in range(29)]
GRID: list[float] = [10.0**e for e in GRID_EXP]

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ORACLE_DIR = os.path.join(BENCH_DIR, "oracle")
CURVES_DIR = os.path.join(BENCH_DIR, "curves")
# the held-out group's curves: a monitor corpus of its own (not mixed with the suite's)
HOLDOUT_CURVES_DIR = os.path.join(BENCH_DIR, "curves_holdout")
RESULTS_DIR = os.path.join(BENCH_DIR, "results")


def setup_worker() -> None:
    """One CPU thread per process; parallelism is by processes."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    # saturated recurrent nets produce subnormal floats that slow CPU math down
    torch.set_flush_denormal(True)
    # raises when already set or when parallel work has started
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def beginner_default_lr(family: str) -> float:
    """The folk default: 0.01 for the SGD family, 0.001 for the Adam family."""
    return 0.01 if family == "sgd" else 0.001


class StepCounter:
    """Counts real optimizer steps (every optimizer, via torch's global step hook)."""

    def __init__(self) -> None:
        self.steps = 0
        self.wall_s = 0.0
        self._handle: Any = None
        self._t0 = 0.0

    def __enter__(self) -> StepCounter:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        def _hook(opt: Any, args: Any, kwargs: Any) -> None:
            self.steps += 1

        self._handle = register_optimizer_step_post_hook(_hook)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._t0
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
