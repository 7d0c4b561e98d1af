"""lrkit with and without ``confirm_steps`` on the public tasks of ../shared/bench.

The independent benchmark beside the project (``../shared/bench``, not shipped
with lrkit) scores ``find_lr``'s default call with its own command; this script
adds the ``confirm_steps=budget_steps // 10`` variant, scored on the same oracle
(its ``analysis.load_curve(task).score(lr)``), with and without a validation
loader, and prints both side by side.

Run from the repository root (exits with a message when the folder is missing):
    PYTHONPATH=src:. python -m benchmarks.regret.shared_bench_confirm [--seeds 0,1,2]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from pathlib import Path
from typing import Any

SHARED = Path(__file__).resolve().parents[3] / "shared"


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def summary(rows: list[dict[str, Any]], key: str) -> str:
    regs = [r[key]["regret"] * 100 for r in rows]
    logs = [r[key]["abs_log10_ratio"] for r in rows]
    up = sum(math.log10(r[key]["lr"] / r["lr_star"]) > 0.5 for r in rows)
    return (
        f"{statistics.median(regs):.1f}% / {percentile(regs, 0.9):.0f}% / "
        f"{max(regs):.0f}% | {statistics.median(logs):.2f} | {up}"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default="0,1,2")
    args = ap.parse_args(argv)
    if not (SHARED / "bench").is_dir():
        raise SystemExit(f"{SHARED / 'bench'} not found: this script needs it")
    sys.path.insert(0, str(SHARED))
    import torch
    from bench.analysis import load_curve  # type: ignore[import-not-found]
    from bench.tasks import TASKS  # type: ignore[import-not-found]

    import lrkit

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    names = [n for n, (group, _) in TASKS.items() if group == "public"]
    for name in names:
        curve = load_curve(name)
        for seed in (int(s) for s in args.seeds.split(",")):
            for val in (True, False):
                inst = TASKS[name][1](seed)
                lr0 = 0.01 if inst.family == "sgd" else 0.001
                opt = inst.make_optimizer(inst.model.parameters(), lr0)
                kw: dict[str, Any] = {"val_loader": inst.val_loader} if val else {}
                r = lrkit.find_lr(
                    inst.model,
                    opt,
                    inst.loss_fn,
                    inst.train_loader,
                    confirm_steps=max(1, inst.budget_steps // 10),
                    **kw,
                )
                assert r.suggestion_info is not None
                assert r.suggestion is not None
                plain = r.suggestion_info.evidence.get("lr_unconfirmed", r.suggestion)
                rows.append(
                    {
                        "task": name,
                        "seed": seed,
                        "val": val,
                        "plain": curve.score(plain),
                        "confirm": curve.score(r.suggestion),
                        "ran": "confirm_loss" in r.suggestion_info.evidence,
                        "lr_star": curve.lr_star,
                    }
                )
                print(
                    f"{name} seed {seed} val={val}: {plain:.3g} -> {r.suggestion:.3g}",
                    flush=True,
                )
    print(
        "\n| call | n | default: median / p90 / worst regret | median abs log10 "
        "| > 0.5 decade above | + confirm: median / p90 / worst | median abs log10 "
        "| > 0.5 decade above |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for val in (True, False):
        sel = [r for r in rows if r["val"] == val]
        call = "val_loader" if val else "no val_loader"
        plain, conf = summary(sel, "plain"), summary(sel, "confirm")
        print(f"| {call} | {len(sel)} | {plain} | {conf} |")


if __name__ == "__main__":
    main()
