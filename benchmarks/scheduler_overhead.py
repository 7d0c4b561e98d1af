"""Per-step overhead of lrkit.torch.Scheduler vs the equivalent torch schedulers.

Main columns: the time per ``scheduler.step()`` over ``--steps`` steps (for
lrkit including the optimizer step hook that counts steps), median over
``--repeats`` interleaved runs, and the torch/lrkit ratio (> 1: lrkit is
cheaper). For context, the same loops with a real ``optimizer.step()`` (SGD on
one small parameter) and the optimizer alone. Both sides produce the same LR
sequence (the final LRs are checked equal).

    python benchmarks/scheduler_overhead.py            # 100k steps, 5 repeats
    python benchmarks/scheduler_overhead.py --steps 20000 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler as tls

import lrkit
from lrkit.torch import Scheduler

BASE = 0.1


def make_optimizer() -> torch.optim.Optimizer:
    p = torch.nn.Parameter(torch.zeros(8))
    p.grad = torch.zeros(8)
    return torch.optim.SGD([p], lr=BASE)


def time_loop(
    make_sched: Callable[[Any], Any] | None, steps: int, *, real_optimizer: bool
) -> tuple[float, float]:
    """Seconds per step of the loop, and the final LR.

    With ``real_optimizer`` each step calls ``optimizer.step()`` (an SGD update)
    before ``scheduler.step()``. Without, it isolates the scheduler: torch's
    schedulers advance on ``step()`` alone; for lrkit the loop runs the
    optimizer's step post-hooks (lrkit's step counter), which is what
    ``optimizer.step()`` does after its update, so the hook's cost is counted.
    """
    opt = make_optimizer()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make_sched(opt) if make_sched else None
    hooks = list(opt._optimizer_step_post_hooks.values())
    ostep = opt.step
    sstep = sched.step if sched is not None else (lambda: None)
    empty: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t0 = time.perf_counter()
        if real_optimizer:
            for _ in range(steps):
                ostep()
                sstep()
        else:
            for _ in range(steps):
                for h in hooks:
                    h(opt, (), empty)
                sstep()
        dt = time.perf_counter() - t0
    return dt / steps, float(opt.param_groups[0]["lr"])


def cases(n: int) -> list[tuple[str, Callable[[Any], Any], Callable[[Any], Any]]]:
    w = n // 20
    return [
        (
            "warmup + cosine (torch: SequentialLR[LinearLR, CosineAnnealingLR])",
            lambda o: tls.SequentialLR(
                o,
                [
                    tls.LinearLR(o, start_factor=0.01, total_iters=w),
                    tls.CosineAnnealingLR(o, T_max=n - w + 1),
                ],
                milestones=[w],
            ),
            lambda o: Scheduler(
                o,
                lrkit.Warmup(
                    steps=w, start_factor=0.01, then=lrkit.Cosine(total_steps=n - w + 1)
                ),
            ),
        ),
        (
            "one-cycle (torch: OneCycleLR, cycle_momentum=False)",
            lambda o: tls.OneCycleLR(
                o, max_lr=BASE, total_steps=n + 1, cycle_momentum=False
            ),
            lambda o: Scheduler(
                o, lrkit.OneCycle(total_steps=n + 1, peak_lr=BASE), base_lr=1.0
            ),
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n, r = args.steps, args.repeats
    torch.set_num_threads(1)

    print(
        f"Scheduler cost per step: {n} steps, median of {r} interleaved runs, "
        f"torch {torch.__version__}\n"
    )
    print(
        "| schedule | torch step() µs | lrkit step() µs | torch/lrkit | "
        "loop with optimizer.step(): torch µs | lrkit µs | optimizer alone µs |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, make_torch, make_lrkit in cases(n):
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in "TLtlb"}
        for _ in range(r):  # interleaved, so machine noise hits all alike
            runs["T"].append(time_loop(make_torch, n, real_optimizer=False))
            runs["L"].append(time_loop(make_lrkit, n, real_optimizer=False))
            runs["t"].append(time_loop(make_torch, n, real_optimizer=True))
            runs["l"].append(time_loop(make_lrkit, n, real_optimizer=True))
            runs["b"].append(time_loop(None, n, real_optimizer=True))
        med = {k: statistics.median(x for x, _ in v) * 1e6 for k, v in runs.items()}
        for k in "TLtl":  # same LR sequence: same final LR
            assert abs(runs[k][0][1] - runs["T"][0][1]) <= 1e-12, (name, k)
        print(
            f"| {name} | {med['T']:.2f} | {med['L']:.2f} | {med['T'] / med['L']:.1f}x "
            f"| {med['t']:.2f} | {med['l']:.2f} | {med['b']:.2f} |"
        )


if __name__ == "__main__":
    main()
