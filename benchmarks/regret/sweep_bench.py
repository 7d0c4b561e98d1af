"""What a sweep around the suggestion buys: ``lrkit.sweep`` after ``find_lr``.

For every task and seed: the range test with ``val_loader`` (its suggestion is
the baseline row), then ``lrkit.sweep(train_fn, around=result)`` with runs of a
tenth, a third and the whole of the task's budget at a constant LR, each from
the state before the sweep (``lrkit.torch.snapshot(...).restore`` as ``reset``:
the same initialisation and batch order for every run), scored by the final
validation loss. Every pick is scored against the constant-LR oracle, like the
other methods of this benchmark; the cost is the optimizer steps spent, as a
percentage of one training run (range test included).

    PYTHONPATH=src:. python -m benchmarks.regret.sweep_bench [--seeds 0,1,2]
        [--tasks a,b] [--holdout] [--jobs 2]

The peer: Optuna at its defaults (``TPESampler``, log-uniform over the
oracle's range 1e-6 .. 10), given as many full-budget runs as the full sweep
made for the same task and seed.

Prints a markdown summary (median / p90 / worst regret, median |log10(lr/lr*)|,
cost) and the mean regret per task.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import math
import multiprocessing as mp
import statistics
from typing import Any

FRACS = (0.1, 1 / 3, 1.0)


def run_one(task: str, seed: int) -> dict[str, Any]:
    from .common import beginner_default_lr, setup_worker

    setup_worker()
    import torch

    import lrkit
    from lrkit.torch import snapshot

    from .regret import load_curves
    from .tasks import all_tasks
    from .train import evaluate, infinite_batches

    inst = all_tasks()[task](seed)
    curve = load_curves(task)["constant"]
    params = [p for p in inst.model.parameters() if p.requires_grad]
    opt = inst.make_optimizer(params, beginner_default_lr(inst.family))
    result = lrkit.find_lr(
        inst.model, opt, inst.loss_fn, inst.train_loader, val_loader=inst.val_loader
    )
    budget = inst.budget_steps
    rows: dict[str, Any] = {
        "find_lr": {
            "lr": result.suggestion,
            "cost": result.steps_done / budget,
            **curve.score(result.suggestion),
        }
    }
    if result.suggestion is None:
        return {"task": task, "seed": seed, "rows": rows}
    snap = snapshot(inst.model, opt, loaders=[inst.train_loader])
    for frac in FRACS:
        steps = max(1, round(frac * budget))

        def train_fn(lr: float, steps: int = steps) -> float:
            for g in opt.param_groups:
                g["lr"] = lr
            inst.model.train()
            batches = infinite_batches(inst.train_loader)
            for _ in range(steps):
                x, y = next(batches)
                opt.zero_grad(set_to_none=True)
                loss = inst.loss_fn(inst.model(x), y)
                if not torch.isfinite(loss):
                    return math.nan
                loss.backward()
                opt.step()
            return evaluate(inst)

        s = lrkit.sweep(train_fn, around=result, reset=snap.restore)
        rows[f"sweep {frac:.0%}"] = {
            "lr": s.best_lr,
            "cost": (result.steps_done + steps * len(s.trials)) / budget,
            "runs": len(s.trials),
            **curve.score(s.best_lr),
        }
    # the peer: Optuna at its defaults (TPE), as many full runs as the full sweep
    # made, over the oracle's range (1e-6 .. 10, log-uniform)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    n_runs = rows["sweep 100%"]["runs"]
    full = train_fn  # the last one defined: the whole budget

    def objective(trial: optuna.Trial) -> float:
        snap.restore()
        loss = full(trial.suggest_float("lr", 1e-6, 10.0, log=True))
        return loss if math.isfinite(loss) else math.inf

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(objective, n_trials=n_runs)
    snap.restore()
    best = study.best_params["lr"] if math.isfinite(study.best_value) else None
    rows["optuna TPE"] = {
        "lr": best,
        "cost": n_runs,
        "runs": n_runs,
        **curve.score(best),
    }
    return {"task": task, "seed": seed, "rows": rows}


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--tasks", default="")
    ap.add_argument("--holdout", action="store_true", help="the held-out group")
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args(argv)
    from .holdout import HOLDOUT
    from .tasks import TASKS

    names = list(HOLDOUT if args.holdout else TASKS)
    if args.tasks:
        names = [n for n in names if n in args.tasks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(t, s) for t in names for s in seeds]
    ctx = mp.get_context("spawn")
    out: list[dict[str, Any]] = []
    with cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as ex:
        futures = [ex.submit(run_one, *j) for j in jobs]
        for i, fut in enumerate(cf.as_completed(futures), 1):
            r = fut.result()
            out.append(r)
            print(f"[{i}/{len(jobs)}] {r['task']} seed {r['seed']}", flush=True)
    methods = list(dict.fromkeys(m for r in out for m in r["rows"]))
    print(
        "\n| method | n | median regret % | p90 % | worst % | median abs log10 "
        "| > 0.5 decade above | median runs | median cost % of budget |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for m in methods:
        sel = [r["rows"][m] for r in out if m in r["rows"]]
        reg = [100 * x["regret"] for x in sel]
        logs = [x["abs_log10"] for x in sel if x["abs_log10"] is not None]
        up = sum(1 for x in sel if x["above_half_decade"])
        runs = [x.get("runs", 0) for x in sel]
        cost = [100 * x["cost"] for x in sel]
        print(
            f"| {m} | {len(sel)} | {statistics.median(reg):.1f} | {_pct(reg, 0.9):.0f} "
            f"| {max(reg):.0f} | {statistics.median(logs):.2f} | {up} "
            f"| {statistics.median(runs):.0f} | {statistics.median(cost):.0f} |"
        )
    print("\n| task | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for t in names:
        cells = []
        for m in methods:
            reg = [100 * r["rows"][m]["regret"] for r in out if r["task"] == t]
            cells.append(f"{statistics.mean(reg):.1f}" if reg else "-")
        print(f"| {t} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
