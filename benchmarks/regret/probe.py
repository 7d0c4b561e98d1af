"""Where does the best LR sit on a range-test curve?

For every task and seed, run one LR range test (exponential ladder
``start_lr .. end_lr`` over ``num_steps`` optimizer steps, the optimizer built at
the beginner default LR and its LR overwritten each step) and evaluate the
validation loss after every step. Report, next to the oracle's lr* (constant)
and lr*cos (warmup+cosine), these landmarks of the curve (geometric mean over
seeds) and the distance ``log10(lr* / landmark)`` in decades:

- ``min_ema``: LR of the minimum of fastai's smoothed loss (debiased EMA 0.98;
  it lags the raw curve);
- ``min_med``: LR of the minimum of a centred running median (9 points) of the
  raw training loss (no lag);
- ``steep``: LR of the steepest descent of that median curve against log10(lr);
- ``val_min``: LR of the minimum validation loss (centred 3-point median);
- ``stop``: the LR where the EMA first exceeds 4x its minimum (the end of the
  test, fastai's stop rule), or the end of the ladder;
- ``valley``: fastai's valley pick on the same test.

    python -m benchmarks.regret.probe [--tasks a,b] [--seeds 0,1,2] [--jobs 2]
        [--num-steps 100] [--start-lr 1e-7] [--end-lr 10]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import statistics
import time
from typing import Any

import numpy as np

from .common import RESULTS_DIR, setup_worker

LANDMARKS = ("min_ema", "min_med", "steep", "val_min", "stop", "valley")


def running_median(x: np.ndarray, k: int) -> np.ndarray:
    """Centred running median with a window of ``k`` points (shrinks at the ends)."""
    h = k // 2
    return np.array([np.median(x[max(0, i - h) : i + h + 1]) for i in range(len(x))])


def landmarks(lrs: np.ndarray, train: np.ndarray, val: np.ndarray) -> dict[str, float]:
    """The landmark LRs of one range test (see the module docstring)."""
    from . import rules

    n = len(train)
    ema = np.empty(n)
    avg = 0.0
    for i, v in enumerate(train):
        avg = v + rules.FASTAI_BETA * (avg - v)
        ema[i] = avg / (1 - rules.FASTAI_BETA ** (i + 1))
    ok = np.isfinite(ema)
    best = np.minimum.accumulate(np.where(ok, ema, np.inf))
    over = np.flatnonzero(~ok | (ema > 4 * best))
    end = int(over[0]) if len(over) else n - 1
    lr, tr, va, em = lrs[: end + 1], train[: end + 1], val[: end + 1], ema[: end + 1]
    med = running_median(np.where(np.isfinite(tr), tr, np.inf), 9)
    slope = np.gradient(med, np.log10(lr)) if len(lr) > 2 else np.zeros(len(lr))
    vmed = running_median(np.where(np.isfinite(va), va, np.inf), 3)
    lr_w, loss_w = rules.fastai_window(list(lrs), list(ema))
    valley = rules.fastai_valley(lr_w, loss_w) if len(loss_w) > 2 else math.nan
    return {
        "min_ema": float(lr[int(np.argmin(em))]),
        "min_med": float(lr[int(np.argmin(med))]),
        "steep": float(lr[int(np.argmin(np.where(np.isfinite(slope), slope, np.inf)))]),
        "val_min": float(lr[int(np.argmin(vmed))]),
        "stop": float(lrs[end]),
        "valley": valley,
    }


def probe(
    task: str, seed: int, num_steps: int, start_lr: float, end_lr: float
) -> dict[str, Any]:
    setup_worker()
    from .common import beginner_default_lr
    from .tasks import all_tasks
    from .train import evaluate, infinite_batches

    inst = all_tasks()[task](seed)
    opt = inst.make_optimizer(inst.model.parameters(), beginner_default_lr(inst.family))
    batches = infinite_batches(inst.train_loader)
    lrs, train, val = [], [], []
    for i in range(num_steps):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))
        for g in opt.param_groups:
            g["lr"] = lr
        inst.model.train()
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = inst.loss_fn(inst.model(x), y)
        loss.backward()
        opt.step()
        lrs.append(lr)
        train.append(float(loss.detach()))
        v = evaluate(inst) if math.isfinite(train[-1]) else math.nan
        val.append(v)
        if not math.isfinite(v):
            break
    marks = landmarks(np.array(lrs), np.array(train), np.array(val))
    return {
        "task": task,
        "seed": seed,
        "landmarks": marks,
        "lrs": lrs,
        "train": train,
        "val": val,
    }


def _gmean(xs: list[float]) -> float:
    xs = [x for x in xs if x and math.isfinite(x)]
    return math.exp(statistics.mean(math.log(x) for x in xs)) if xs else math.nan


def main(argv: list[str] | None = None) -> None:
    from .regret import load_curves
    from .tasks import parse_tasks

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", default=None)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--num-steps", type=int, default=100)
    ap.add_argument("--start-lr", type=float, default=1e-7)
    ap.add_argument("--end-lr", type=float, default=10.0)
    ap.add_argument("--out", default=RESULTS_DIR)
    a = ap.parse_args(argv)
    tasks = parse_tasks(a.tasks)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(a.jobs, mp_context=ctx) as ex:
        futs = [
            ex.submit(probe, t, s, a.num_steps, a.start_lr, a.end_lr)
            for t in tasks
            for s in seeds
        ]
        results = [f.result() for f in futs]

    head = "| task | lr* | lr*cos | " + " | ".join(LANDMARKS) + " |"
    lines = [
        f"Range test {a.start_lr:g}..{a.end_lr:g}, {a.num_steps} steps, seeds {seeds}. "
        "Cells: landmark LR (geometric mean over seeds) and, in brackets, "
        "log10(lr* / landmark) in decades (negative: lr* is below the landmark).",
        "",
        head,
        "|---|---|---|" + "---|" * len(LANDMARKS),
    ]
    ratios: dict[str, list[float]] = {k: [] for k in LANDMARKS}
    for t in tasks:
        cs = load_curves(t)
        star = cs["constant"].lr_star if "constant" in cs else math.nan
        star_c = cs["cosine"].lr_star if "cosine" in cs else math.nan
        cells = []
        for k in LANDMARKS:
            g = _gmean([r["landmarks"][k] for r in results if r["task"] == t])
            d = (
                math.log10(star / g)
                if math.isfinite(star) and math.isfinite(g)
                else math.nan
            )
            if math.isfinite(d):
                ratios[k].append(d)
            cells.append(f"{g:.2g} ({d:+.2f})")
        lines.append(f"| {t} | {star:.2g} | {star_c:.2g} | " + " | ".join(cells) + " |")
    lines.append(
        "| **median (min..max) decades** | | | "
        + " | ".join(
            f"{statistics.median(v):+.2f} ({min(v):+.2f}..{max(v):+.2f})" if v else "—"
            for v in ratios.values()
        )
        + " |"
    )
    report = "\n".join(lines)
    print(report)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    with open(os.path.join(a.out, f"probe-{stamp}.json"), "w") as f:
        json.dump(results, f, default=float)
    with open(os.path.join(a.out, f"probe-{stamp}.md"), "w") as f:
        f.write(report + "\n")


if __name__ == "__main__":
    main()
