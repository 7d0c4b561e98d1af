"""Record range tests once, then score suggestion rules on them offline.

A change to the suggestion rule (``lrkit.suggest``) does not change the range
test, so its regret can be measured without training anything: ``record`` runs
``find_lr(..., val_loader=...)`` with its defaults on every task and seed (this
suite, and the public tasks of ``../shared/bench`` when that folder is there)
and stores each ``RangeTestResult.to_dict()``; ``score`` feeds the recorded
curves to the current ``lrkit.suggest`` (with and without the validation
curve) and scores the picks against each task's oracle.

    PYTHONPATH=src:. python -m benchmarks.regret.rescore record --jobs 2 [--wide]
    PYTHONPATH=src:. python -m benchmarks.regret.rescore score [--per-task]

``--wide`` records the range widened 10x each way as well (the stability target).
Records go to ``benchmarks/regret/results/rangetests.jsonl`` (git-ignored).
``--holdout`` (record and score) works on the held-out group alone
(``holdout.py``), in ``rangetests_holdout.jsonl``: keep it out of rule tuning.
The training curve of a range test does not depend on whether validation ran
(validation runs without gradients and restores the model's mode and RNG), so
one recording serves both the ``lrkit`` and the ``lrkit_val`` rows.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import RESULTS_DIR, beginner_default_lr, setup_worker

SHARED = Path(__file__).resolve().parents[3] / "shared"
RECORDS = os.path.join(RESULTS_DIR, "rangetests.jsonl")
RECORDS_HOLDOUT = os.path.join(RESULTS_DIR, "rangetests_holdout.jsonl")


def _shared_tasks() -> dict[str, Any]:
    """The public tasks of ../shared/bench (empty when it is not there)."""
    if not (SHARED / "bench").is_dir():
        return {}
    if str(SHARED) not in sys.path:
        sys.path.insert(0, str(SHARED))
    from bench.tasks import TASKS as SHARED_TASKS  # type: ignore[import-not-found]

    return {n: make for n, (group, make) in SHARED_TASKS.items() if group == "public"}


def _make(group: str, task: str) -> Callable[[int], Any]:
    if group in ("suite", "holdout"):
        from .tasks import all_tasks

        return all_tasks()[task]
    return _shared_tasks()[task]


def record_one(group: str, task: str, seed: int, wide: bool) -> dict[str, Any]:
    """One range test with the defaults of ``find_lr`` (or 10x wider)."""
    setup_worker()
    import lrkit

    inst = _make(group, task)(seed)
    opt = inst.make_optimizer(inst.model.parameters(), beginner_default_lr(inst.family))
    kwargs: dict[str, Any] = {"val_loader": inst.val_loader}
    if wide:
        kwargs.update(start_lr=1e-8, end_lr=100.0)
    result = lrkit.find_lr(inst.model, opt, inst.loss_fn, inst.train_loader, **kwargs)
    return {
        "group": group,
        "task": task,
        "seed": seed,
        "wide": wide,
        "budget_steps": inst.budget_steps,
        "result": result.to_dict(),
    }


def cmd_record(args: argparse.Namespace) -> None:
    from .holdout import HOLDOUT
    from .tasks import TASKS

    jobs: list[tuple[str, str, int, bool]] = []
    seeds = [int(s) for s in args.seeds.split(",")]
    # the held-out group only when asked, and into its own file: a rule tuned
    # while looking at it would no longer be held out
    groups = (
        {"holdout": list(HOLDOUT)}
        if args.holdout
        else {"suite": list(TASKS), "public": list(_shared_tasks())}
    )
    for group, names in groups.items():
        for task in names:
            if args.tasks and task not in args.tasks.split(","):
                continue
            for seed in seeds:
                for wide in (False, True) if args.wide else (False,):
                    jobs.append((group, task, seed, wide))
    os.makedirs(RESULTS_DIR, exist_ok=True)
    ctx = mp.get_context("spawn")
    with (
        open(args.out, "w") as f,
        cf.ProcessPoolExecutor(args.jobs, mp_context=ctx) as ex,
    ):
        futures = {ex.submit(record_one, *job): job for job in jobs}
        for i, fut in enumerate(cf.as_completed(futures), 1):
            rec = fut.result()
            f.write(json.dumps(rec) + "\n")
            f.flush()
            print(f"[{i}/{len(jobs)}] {rec['group']} {rec['task']} seed {rec['seed']}")
    print(f"wrote {args.out}")


# ------------------------------------------------------------------ scoring
def _oracle_scorer(group: str, task: str) -> Callable[[float | None], dict[str, Any]]:
    """``lr -> {"regret", "log10_ratio", "divergent"}`` on the constant oracle."""
    if group in ("suite", "holdout"):
        from .regret import load_curves

        curve = load_curves(task)["constant"]

        def score(lr: float | None) -> dict[str, Any]:
            s = curve.score(lr)
            return {
                "regret": s["regret"],
                "log10_ratio": s["log10_ratio"],
                "divergent": s["divergent"],
            }

        return score
    _shared_tasks()
    from bench.analysis import load_curve  # type: ignore[import-not-found]

    shared = load_curve(task)

    def score_shared(lr: float | None) -> dict[str, Any]:
        if lr is None:
            return {
                "regret": shared.init_loss / shared.L_star - 1,
                "log10_ratio": None,
                "divergent": False,
            }
        s = shared.score(lr)
        return {
            "regret": s["regret"],
            "log10_ratio": math.log10(lr / shared.lr_star),
            "divergent": s["divergent"],
        }

    return score_shared


def suggest_record(rec: dict[str, Any], val: bool) -> Any:
    """The current ``lrkit.suggest`` on a recorded range test."""
    import lrkit

    r = rec["result"]
    lrs = r["lrs"]
    losses = [math.nan if v is None else v for v in r["losses"]]
    spe = r["settings"].get("steps_per_epoch")
    kwargs: dict[str, Any] = {}
    if val and r["val_steps"]:
        kwargs["val_lrs"] = [lrs[i] for i in r["val_steps"]]
        kwargs["val_losses"] = [math.nan if v is None else v for v in r["val_losses"]]
    return lrkit.suggest(
        lrs,
        losses,
        stop_reason=r["stop_reason"],
        skipped=r["skipped"],
        epochs=None if spe is None else r["steps_done"] / spe,
        params_per_example=r["settings"].get("params_per_example"),
        **kwargs,
    )


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _rows(records: str) -> list[dict[str, Any]]:
    """One scored row per record and per use of validation (off, on)."""
    with open(records) as f:
        recs = [json.loads(line) for line in f]
    scorers: dict[tuple[str, str], Any] = {}
    rows: list[dict[str, Any]] = []
    for rec in recs:
        key = (rec["group"], rec["task"])
        if key not in scorers:
            scorers[key] = _oracle_scorer(*key)
        for val in (False, True):
            s = suggest_record(rec, val)
            rows.append(
                {
                    **{k: rec[k] for k in ("group", "task", "seed", "wide")},
                    "val": val,
                    "lr": s.lr,
                    "conf": s.confidence,
                    **scorers[key](s.lr),
                }
            )
    return rows


def _select(rows: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in rows if all(r[k] == v for k, v in match.items())]


def _summary_line(group: str, val: bool, wide: bool, sel: list[dict[str, Any]]) -> str:
    reg = [100 * r["regret"] for r in sel]
    logs = [abs(r["log10_ratio"]) for r in sel if r["log10_ratio"] is not None]
    up = sum(1 for r in sel if (r["log10_ratio"] or 0) > 0.5 + 1e-9)
    div = sum(1 for r in sel if r["divergent"])
    hi = [100 * r["regret"] for r in sel if r["conf"] >= 0.5]
    hi_s = f"{statistics.median(hi):.1f} / {max(hi):.0f} ({len(hi)})" if hi else "-"
    cells = [
        group,
        "lrkit_val" if val else "lrkit",
        "wide" if wide else "default",
        str(len(sel)),
        f"{statistics.median(reg):.1f}",
        f"{_pct(reg, 0.9):.0f}",
        f"{max(reg):.0f}",
        f"{statistics.median(logs):.2f}",
        str(up),
        str(div),
        hi_s,
    ]
    return "| " + " | ".join(cells) + " |"


def cmd_score(args: argparse.Namespace) -> None:
    rows = _rows(args.records)
    keys = list(dict.fromkeys((r["group"], r["task"]) for r in rows))
    print(
        "| group | method | range | n | median % | p90 % | worst % | median abs "
        "log10 | > 0.5 dec above | divergent | conf >= 0.5: median / worst (n) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for group in ("suite", "public", "holdout"):
        for val in (False, True):
            for wide in (False, True):
                sel = _select(rows, group=group, val=val, wide=wide)
                if sel:
                    print(_summary_line(group, val, wide, sel))
    if args.per_task:
        print("\n| group | task | val | regret % per seed | log10(lr/lr*) | conf |")
        print("|---|---|---|---|---|---|")
        for group, task in keys:
            for val in (False, True):
                sel = _select(rows, group=group, task=task, val=val, wide=False)
                sel.sort(key=lambda r: r["seed"])
                regs = " ".join(f"{100 * r['regret']:.0f}" for r in sel)
                logs = " ".join(
                    "-" if r["log10_ratio"] is None else f"{r['log10_ratio']:+.2f}"
                    for r in sel
                )
                confs = " ".join(f"{r['conf']:.2f}" for r in sel)
                print(f"| {group} | {task} | {val} | {regs} | {logs} | {confs} |")
    if args.stability:
        print(
            "\n| group | task | val | sd of log2(lr) over seeds | wide: octaves moved |"
        )
        print("|---|---|---|---|---|")
        for group, task in keys:
            for val in (False, True):
                lrs = {
                    wide: {
                        r["seed"]: r["lr"]
                        for r in _select(
                            rows, group=group, task=task, val=val, wide=wide
                        )
                        if r["lr"]
                    }
                    for wide in (False, True)
                }
                base, wide_lrs = lrs[False], lrs[True]
                l2 = [math.log2(v) for v in base.values()]
                sd = f"{statistics.stdev(l2):.2f}" if len(l2) > 1 else "-"
                moves = [
                    abs(math.log2(wide_lrs[s] / base[s])) for s in base if s in wide_lrs
                ]
                mv = f"{statistics.mean(moves):.2f}" if moves else "-"
                print(f"| {group} | {task} | {val} | {sd} | {mv} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    rec = sub.add_parser("record", help="run and store range tests")
    rec.add_argument("--seeds", default="0,1,2,3,4")
    rec.add_argument("--tasks", default="")
    rec.add_argument("--jobs", type=int, default=2)
    rec.add_argument("--wide", action="store_true")
    rec.add_argument("--out", default=None, help=f"default {RECORDS}")
    rec.add_argument(
        "--holdout",
        action="store_true",
        help=f"record the held-out group (only), to {RECORDS_HOLDOUT}",
    )
    sc = sub.add_parser("score", help="score the current lrkit.suggest on them")
    sc.add_argument("--records", default=None, help=f"default {RECORDS}")
    sc.add_argument("--holdout", action="store_true", help=f"score {RECORDS_HOLDOUT}")
    sc.add_argument("--per-task", action="store_true")
    sc.add_argument("--stability", action="store_true")
    args = ap.parse_args(argv)
    default = RECORDS_HOLDOUT if args.holdout else RECORDS
    if args.cmd == "record":
        args.out = args.out or default
    else:
        args.records = args.records or default
    {"record": cmd_record, "score": cmd_score}[args.cmd](args)


if __name__ == "__main__":
    main()
