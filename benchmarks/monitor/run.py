"""Measured quality of lrkit.Monitor on a labelled corpus of real loss curves.

Prints markdown tables: per-label detection rates, precision and recall per
finding kind, steps to detection of divergence, the false-warning rate on healthy
runs, the cost of ``Monitor.update``, and (``--guard``) the Guard's recovery from
an LR 4x too high on the regret suite's tasks.

Run from the repository root:
    PYTHONPATH=src python benchmarks/monitor/run.py            # regret curves
    PYTHONPATH=src python benchmarks/monitor/run.py --tuning   # tuning corpus
    PYTHONPATH=src python benchmarks/monitor/run.py --holdout  # held-out curves
    PYTHONPATH=src python benchmarks/monitor/run.py --curves DIR
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

import lrkit
from lrkit.monitor import KINDS, VERDICTS, Finding, Monitor, MonitorConfig

HIGH = {"oscillating", "spike", "exploding_grad", "diverged", "nan"}
WARN = ("warning", "critical")


def high_warning(fs: tuple[Finding, ...]) -> bool:
    """An LR-too-high finding of warning or critical severity."""
    return any(f.kind in HIGH and f.severity in WARN for f in fs)


# --points N: each run read as a log of N averaged points by lrkit.diagnose
POINTS = 0


def run_monitor(run: corpus.Run, **settings: float) -> tuple[Finding, ...]:
    if POINTS:  # a short log (a line per epoch): what lrkit diagnose FILE reads
        history = lrkit.History(**corpus.averaged(run, POINTS))
        return lrkit.diagnose(history, **settings).findings
    mon = Monitor(**settings)  # type: ignore[arg-type]
    val = dict(zip(run.val_steps, run.val_loss, strict=True))
    gn = run.grad_norm
    for t, loss in enumerate(run.train_loss):
        mon.update(
            t,
            loss,
            val_loss=val.get(t),
            grad_norm=gn[t] if t < len(gn) else None,
        )
    mon.finish()  # the run is over: as lrkit.diagnose does
    return mon.findings


def p90(values: list[int]) -> int:
    return sorted(values)[int(0.9 * (len(values) - 1))]


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:.0f}% ({a}/{b})" if b else "n/a"


def evaluate(directory: Path, tune_subset: bool = False) -> None:
    per_label: dict[str, list[tuple[corpus.Run, tuple[Finding, ...]]]] = defaultdict(
        list
    )
    tasks = 0
    for _record, runs in corpus.load(directory):
        tasks += 1
        for run in runs:
            per_label[run.label].append((run, run_monitor(run)))
    total = sum(len(v) for v in per_label.values())
    print(f"\nCorpus: {directory} ({tasks} tasks, {total} runs)\n")

    # --- per label: what the monitor said
    print(
        "| label | runs | any warning | LR-too-high warning | LR-too-high "
        "(incl. info) | too_slow | diverged/nan |"
    )
    print("|---|---|---|---|---|---|---|")
    for label in corpus.LABELS:
        items = per_label.get(label, [])
        n = len(items)
        warn = sum(any(f.severity in WARN for f in fs) for _, fs in items)
        highw = sum(high_warning(fs) for _, fs in items)
        high = sum(any(f.kind in HIGH for f in fs) for _, fs in items)
        slow = sum(any(f.kind == "too_slow" for f in fs) for _, fs in items)
        div = sum(any(f.kind in ("nan", "diverged") for f in fs) for _, fs in items)
        cells = [label, str(n), pct(warn, n), pct(highw, n), pct(high, n)]
        cells += [pct(slow, n), pct(div, n)]
        print("| " + " | ".join(cells) + " |")

    # --- precision / recall per finding kind
    too_high = {"diverged", "oscillating", "stuck"}
    truth = {
        "nan": {"diverged"},
        "diverged": {"diverged"},
        "spike": too_high,
        "exploding_grad": too_high,
        "oscillating": too_high,
        "too_slow": {"too_low", "low"},
    }
    print("\n| finding kind | runs flagged | precision (label it implies) |")
    print("|---|---|---|")
    labelled = [
        (r, fs) for lbl, items in per_label.items() if lbl != "low" for r, fs in items
    ]
    for kind in KINDS:
        flagged = [(r, fs) for r, fs in labelled if any(f.kind == kind for f in fs)]
        if kind in truth:
            ok = sum(r.label in truth[kind] for r, _ in flagged)
            prec = pct(ok, len(flagged))
            implied = "/".join(sorted(truth[kind]))
        else:
            prec, implied = "n/a", "no label"
        print(f"| {kind} | {len(flagged)} | {prec} ({implied}) |")

    def rate(label: str, test: object) -> str:
        items = per_label.get(label, [])
        return pct(sum(bool(test(fs)) for _, fs in items), len(items))  # type: ignore[operator]

    print("\n| recall | rate |")
    print("|---|---|")
    print(
        "| diverged runs with a nan/diverged finding | "
        + rate("diverged", lambda fs: any(f.kind in ("nan", "diverged") for f in fs))
        + " |"
    )
    print(
        "| diverged runs with an LR-too-high warning | "
        + rate("diverged", high_warning)
        + " |"
    )
    print(
        "| oscillating runs with an LR-too-high warning | "
        + rate("oscillating", high_warning)
        + " |"
    )
    print(
        "| stuck runs with an LR-too-high warning | "
        + rate("stuck", high_warning)
        + " |"
    )
    print(
        "| too_low runs with too_slow | "
        + rate("too_low", lambda fs: any(f.kind == "too_slow" for f in fs))
        + " |"
    )

    # --- oscillating recall by what the LR cost: a run's own regret is its final
    # validation loss over the mean final validation loss of the task's best-LR
    # runs, minus 1 (how much worse than the best the run ended)
    best_final: dict[str, list[float]] = defaultdict(list)
    for items in per_label.values():
        for run, _ in items:
            if abs(run.mult - 1.0) < 1e-6 and run.val_loss:
                best_final[run.task].append(run.val_loss[-1])

    def by_regret(label: str, hit_of: Any, what: str) -> None:
        rows = []
        for run, fs in per_label.get(label, []):
            ref = best_final.get(run.task)
            final = run.val_loss[-1] if run.val_loss else float("nan")
            if ref and math.isfinite(final):
                rows.append((final / statistics.mean(ref) - 1.0, hit_of(fs)))
        if not rows:
            return
        print(f"\n| {label} runs whose own regret is at least | runs | {what} |")
        print("|---|---|---|")
        for floor in (-math.inf, 0.1, 0.3, 0.5, 1.0):
            sel = [hit for reg, hit in rows if reg >= floor]
            name = "any" if floor == -math.inf else f"{floor:.0%}"
            print(f"| {name} | {len(sel)} | {pct(sum(sel), len(sel))} |")

    by_regret("oscillating", high_warning, "with an LR-too-high warning")
    by_regret(
        "too_low",
        lambda fs: any(f.kind == "too_slow" and f.severity in WARN for f in fs),
        "with a too_slow warning",
    )

    # --- steps to detection of divergence: the first nan/diverged finding
    # still open at or raised after the onset (one raised before it and still
    # open counts as 0 steps)
    early = MonitorConfig().min_updates
    print(
        "\n| divergence onset | runs | nan/diverged within 10 steps | median steps "
        "| p90 | undetected |"
    )
    print("|---|---|---|---|---|---|")
    groups = {
        "all": lambda o: True,
        f"in the first {early} steps (no noise measured yet)": lambda o: o < early,
        f"after step {early}": lambda o: o >= early,
    }
    for name, sel in groups.items():
        lat = []
        missed = 0
        for run, fs in per_label.get("diverged", []):
            assert run.onset is not None
            if not sel(run.onset):
                continue
            det = [
                f.detected_step
                for f in fs
                if f.kind in ("nan", "diverged") and f.last_step >= run.onset
            ]
            if not det:
                missed += 1
                continue
            lat.append(max(0, min(det) - run.onset))
        n = len(lat) + missed
        within = sum(v <= 10 for v in lat)
        med = f"{statistics.median(lat):.0f}" if lat else "n/a"
        print(
            f"| {name} | {n} | {pct(within, n)} | {med} | "
            f"{p90(lat) if lat else 'n/a'} | {missed} |"
        )
    good = per_label.get("good", [])
    by_task: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for run, fs in good:
        by_task[run.task][1] += 1
        by_task[run.task][0] += any(f.severity in WARN for f in fs)
    print("\n| task | good runs with a warning |")
    print("|---|---|")
    for task, (warned, n) in sorted(by_task.items()):
        print(f"| {task} | {warned}/{n} |")
    kinds = Counter(f.kind for _, fs in good for f in fs if f.severity in WARN)
    print(
        f"\nWarning findings on good runs, by kind (findings, not runs): {dict(kinds)}"
    )


PRESETS: dict[str, dict[str, float]] = {
    "default": {},
    "fewer alarms": {
        "spike_z": 8.0,
        "grad_factor": 20.0,
        "osc_rise_frac": 0.15,
        "overfit_frac": 0.2,
    },
    "more alarms": {
        "spike_z": 5.0,
        "grad_factor": 6.0,
        "osc_rise_frac": 0.07,
        "osc_spikes": 2,
    },
    "rise: span 16, 1σ (before)": {"smooth_span": 16, "osc_rise_z": 1.0},
    "rise 1.25σ": {"osc_rise_z": 1.25},
    "overfitting without the noise test": {"overfit_z": 0.0},
    "flat_z 3": {"slow_flat_z": 3.0},
}


def sweep(directory: Path) -> None:
    """The trade-off between false warnings and recall for a few settings."""
    runs = [r for _, rs in corpus.load(directory) for r in rs]
    print(
        "\n| settings | good: any warning | diverged: nan/diverged"
        " | oscillating: LR-too-high warning | too_low: too_slow |"
    )
    print("|---|---|---|---|---|")
    for name, settings in PRESETS.items():
        found = [(r, run_monitor(r, **settings)) for r in runs]

        def rate(label: str, test: object, found: list = found) -> str:  # type: ignore[type-arg]
            sel = [fs for r, fs in found if r.label == label]
            return pct(sum(bool(test(fs)) for fs in sel), len(sel))  # type: ignore[operator]

        print(
            f"| {name} | "
            + " | ".join(
                [
                    rate("good", lambda fs: any(f.severity in WARN for f in fs)),
                    rate(
                        "diverged",
                        lambda fs: any(f.kind in ("nan", "diverged") for f in fs),
                    ),
                    rate("oscillating", high_warning),
                    rate("too_low", lambda fs: any(f.kind == "too_slow" for f in fs)),
                ]
            )
            + " |"
        )
    for name, settings in PRESETS.items():
        if settings:
            print(f"- {name}: " + ", ".join(f"{k}={v:g}" for k, v in settings.items()))


def null_curves(kind: str, n: int, seed: int) -> list[float]:
    """A healthy run with nothing to find: fast convergence, then a long
    plateau of batch noise (Gaussian, or right-skewed as mini-batch losses are);
    ``resumed (log-normal, sigma S)``: the plateau from the first step on, as
    when a monitor starts on a resumed run (its first loss may be a low batch).
    """
    import numpy as np

    r = np.random.default_rng(seed)
    t = np.arange(n)
    trend = 0.45 + np.exp(-t / 8)
    if kind.startswith("resumed"):  # a plateau from the first step on
        sigma = float(kind.split("sigma ")[1].rstrip(")"))
        return [float(v) for v in 0.45 * np.exp(sigma * r.standard_normal(n))]
    if kind == "gaussian":
        y = trend + 0.1 * r.standard_normal(n)
    elif kind == "chi-square(16)":
        y = trend * r.chisquare(16, n) / 16
    else:  # log-normal
        y = trend * np.exp(0.3 * r.standard_normal(n))
    return [float(v) for v in y]


def verdicts(directory: Path) -> None:
    """``lrkit.diagnose``'s verdict on every run (training and validation
    losses), counted per label."""
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for _record, runs in corpus.load(directory):
        for run in runs:
            history = lrkit.History(
                loss=run.train_loss,
                val_loss=run.val_loss or None,
                val_steps=run.val_steps or None,
            )
            counts[run.label][lrkit.diagnose(history).verdict] += 1
    names = list(VERDICTS)
    print(f"\n| label | runs | {' | '.join(names)} |")
    print("|---|---|" + "---|" * len(names))
    for label in ("good", "low", "too_low", "oscillating", "stuck", "diverged"):
        c = counts.get(label)
        if c:
            cells = " | ".join(str(c[n]) for n in names)
            print(f"| {label} | {sum(c.values())} | {cells} |")


def bench_null(**settings: float) -> None:
    """False warnings on synthetic healthy runs (no labels involved)."""
    print(
        "\n| plateau noise | steps | runs with a warning (synthetic, healthy) "
        "| with `resumed=True` |"
    )
    print("|---|---|---|---|")
    for n, runs in ((600, 100), (3000, 30)):
        for kind in (
            "gaussian",
            "chi-square(16)",
            "log-normal",
            "resumed (log-normal, sigma 0.3)",
            "resumed (log-normal, sigma 0.6)",
        ):
            cells = []
            for resumed in (False, True) if kind.startswith("resumed") else (False,):
                hit = 0
                for seed in range(runs):
                    mon = Monitor(resumed=resumed, **settings)  # type: ignore[arg-type]
                    for t, v in enumerate(null_curves(kind, n, seed)):
                        mon.update(t, v)
                    mon.finish()
                    hit += any(f.severity in WARN for f in mon.findings)
                cells.append(pct(hit, runs))
            print(f"| {kind} | {n} | {' | '.join(cells)}{' | -' * (2 - len(cells))} |")


def bench_update_cost() -> None:
    import random

    rnd = random.Random(0)
    n = 200_000
    losses = [2.0 * math.exp(-t / 5000) + 0.1 * rnd.random() for t in range(n)]
    grads = [1.0 + 0.2 * rnd.random() for _ in range(n)]
    rows = []
    for label, with_grad in (("loss only", False), ("loss + grad_norm", True)):
        mon = Monitor()
        t0 = time.perf_counter()
        if with_grad:
            for t in range(n):
                mon.update(t, losses[t], grad_norm=grads[t])
        else:
            for t in range(n):
                mon.update(t, losses[t])
        dt = (time.perf_counter() - t0) / n * 1e6
        rows.append((label, dt))
    print("\n| Monitor.update | µs per call (CPU, mean over one 200k-step run) |")
    print("|---|---|")
    for label, dt in rows:
        print(f"| {label} | {dt:.1f} |")


# ------------------------------------------------------------------ the guard
def _regret(root: Path) -> tuple[object, object]:
    """The regret suite's task registry and training helpers (repo import)."""
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    from benchmarks.regret import tasks as regret_tasks, train as regret_train

    return regret_tasks, regret_train


GUARD_FACTOR = 0.3  # the Guard's default
GUARD_ON = ("nan", "diverged", "spike")  # the Guard's default


def guarded_run(
    name: str,
    seed: int,
    lr: float,
    root: Path,
    *,
    guard: bool,
    every: int,
    make: Any = None,
) -> dict[str, float]:
    """Train a regret task (or ``make(seed)``'s) for its budget at a constant ``lr``.

    With ``guard``: an lrkit Guard (``GUARD_FACTOR``, snapshots every ``every`` steps)
    checks each step; a rolled-back step consumes its batch without an update,
    so both runs see the same number of batches.
    """
    from lrkit.torch import Guard, GuardError

    tasks, train = _regret(root)
    # all_tasks: the suite and the held-out group (an older checkout: TASKS)
    registry = getattr(tasks, "all_tasks", lambda: tasks.TASKS)()  # type: ignore[attr-defined]
    inst = (make or registry[name])(seed)
    params = [p for p in inst.model.parameters() if p.requires_grad]
    opt = inst.make_optimizer(params, lr)
    g = (
        Guard(
            inst.model,
            opt,
            loaders=[inst.train_loader],
            every=every,
            factor=GUARD_FACTOR,
            on=GUARD_ON,
        )
        if guard
        else None
    )
    batches = train.infinite_batches(inst.train_loader)  # type: ignore[attr-defined]
    init = train.evaluate(inst)  # type: ignore[attr-defined]
    inst.model.train()
    failed = False
    t0 = time.perf_counter()
    for _ in range(inst.budget_steps):
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = inst.loss_fn(inst.model(x), y)
        if g is None:
            if not math.isfinite(float(loss.detach())):
                failed = True
                break
            loss.backward()
            opt.step()
            continue
        loss.backward()
        try:
            if g.step(loss):
                opt.step()
        except GuardError:
            failed = True
            break
    wall = time.perf_counter() - t0
    final = math.nan if failed else train.evaluate(inst)  # type: ignore[attr-defined]
    return {
        "final": final,
        # restores (a skipped spike restores nothing: counted apart)
        "recoveries": float(
            sum(e.restored_step is not None for e in g.events) if g is not None else 0
        ),
        "skips": float(
            sum(e.restored_step is None for e in g.events) if g is not None else 0
        ),
        "scale": g.recovery_scale if g is not None else 1.0,
        "wall": wall,
        "init": init,
    }


def bench_guard(curves: Path, root: Path, seeds: tuple[int, ...]) -> None:
    """The Guard started at 4x the best LR, and at the lowest LR >= 4x that diverges.

    A run diverges as the regret suite defines it (``train.DIVERGE_FACTOR``): a
    non-finite loss, or a final validation loss above 1.5x the untrained one.
    The lowest diverging LR comes from the curve file's ``diverged`` flags
    (same seed), then is re-run here without and with the guard.
    """
    import gzip
    import json

    rows = []
    overhead = []
    false_alarms = 0
    skipped_runs = 0  # best-LR runs with a skipped spike
    alarm_costs: list[str] = []  # what a false alarm cost the final loss
    best_runs = 0
    quiet4: list[str] = []
    _, train = _regret(root)
    limit = train.DIVERGE_FACTOR  # type: ignore[attr-defined]

    def diverges(r: dict[str, float]) -> bool:
        return not math.isfinite(r["final"]) or r["final"] > limit * r["init"]

    for path in sorted(curves.glob("*.json.gz")):
        with gzip.open(path, "rt") as fh:
            record = json.load(fh)
        name, best = record["task"], float(record["best_lr"])
        every = max(10, int(record["budget_steps"]) // 20)
        for seed in seeds:
            ref = guarded_run(name, seed, best, root, guard=False, every=every)
            ref_g = guarded_run(name, seed, best, root, guard=True, every=every)
            best_runs += 1
            false_alarms += ref_g["recoveries"] > 0
            skipped_runs += ref_g["skips"] > 0
            if ref_g["recoveries"] > 0 or ref_g["skips"] > 0:
                alarm_costs.append(
                    f"{name}/{seed} {ref_g['final'] / ref['final'] - 1:+.1%}"
                    f" ({int(ref_g['recoveries'])} restores, "
                    f"{int(ref_g['skips'])} skipped spikes)"
                )
            if (
                math.isfinite(ref["final"])
                and ref_g["recoveries"] == 0
                and ref_g["skips"] == 0
            ):
                overhead.append(ref_g["wall"] / ref["wall"])
            starts = []
            plain4 = guarded_run(name, seed, 4 * best, root, guard=False, every=every)
            if diverges(plain4):
                starts.append(("4x", 4.0, plain4))
            else:
                quiet4.append(f"{name}/{seed}")
            grid = sorted(
                float(r["lr"])
                for r in record["runs"]
                if r["seed"] == seed and r["diverged"] and float(r["lr"]) >= 4 * best
            )
            if grid:
                m = grid[0] / best
                plain = guarded_run(name, seed, grid[0], root, guard=False, every=every)
                if diverges(plain) and abs(m - 4) > 1e-6:
                    starts.append(("lowest diverging", m, plain))
            for which, m, plain in starts:
                g = guarded_run(name, seed, m * best, root, guard=True, every=every)
                gap = g["final"] / ref["final"] - 1
                rows.append(
                    (which, name, seed, m, ref["final"], plain["final"], g, gap)
                )
    print(
        "\n| start | task | seed | LR / best | best-LR final | plain final | "
        "guarded final | restores (skipped spikes) | LR scale | gap | within 2% |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for which, name, seed, m, best_final, plain_final, g, gap in rows:
        good = math.isfinite(gap) and gap <= 0.02
        print(
            f"| {which} | {name} | {seed} | {m:.3g} | {best_final:.4g} | "
            f"{plain_final:.4g} | {g['final']:.4g} | {int(g['recoveries'])} "
            f"({int(g['skips'])}) | "
            f"{g['scale']:.3g} | {100 * gap:+.1f}% | {'yes' if good else 'no'} |"
        )
    for which in ("4x", "lowest diverging"):
        sel = [r for r in rows if r[0] == which]
        ok = sum(math.isfinite(r[7]) and r[7] <= 0.02 for r in sel)
        saved = sum(
            math.isfinite(r[6]["final"]) and not r[6]["final"] > limit * r[6]["init"]
            for r in sel
        )
        print(
            f"\nGuard started at the {which} LR, on runs that diverge there: "
            f"{pct(ok, len(sel))} finish within 2% of the best-LR run's final "
            f"validation loss; {pct(saved, len(sel))} no longer diverge."
        )
    print(
        f"\nRuns that do not diverge at 4x the best LR: {', '.join(quiet4) or 'none'}"
    )
    print(
        f"Guard restores on best-LR runs (false alarms): {false_alarms} of "
        f"{best_runs} runs; runs with a skipped spike: {skipped_runs}"
        + (
            f"; final loss vs unguarded: {', '.join(alarm_costs)}"
            if alarm_costs
            else ""
        )
    )
    if overhead:
        print(
            f"Guard overhead when nothing happens (wall time guarded / plain, "
            f"median over {len(overhead)} best-LR runs): "
            f"{statistics.median(overhead):.3f}x"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--curves", type=Path, default=None)
    ap.add_argument("--tuning", action="store_true")
    ap.add_argument(
        "--holdout",
        action="store_true",
        help="the regret benchmark's held-out group (curves the rules never saw)",
    )
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--guard", action="store_true", help="also run the Guard test")
    ap.add_argument("--sweep", action="store_true", help="also compare settings")
    ap.add_argument(
        "--verdicts",
        action="store_true",
        help="also count diagnose()'s verdicts per label",
    )
    ap.add_argument(
        "--null",
        action="store_true",
        help="also count warnings on synthetic healthy plateaus",
    )
    ap.add_argument(
        "--points",
        type=int,
        default=0,
        help="read each run as a log of N averaged points (a line per epoch) "
        "with lrkit.diagnose, as `lrkit diagnose FILE` does",
    )
    ap.add_argument("--only-guard", action="store_true", help="skip the monitor tables")
    ap.add_argument("--seeds", default="0,1", help="seeds for the Guard test")
    ap.add_argument(
        "--guard-on",
        default=None,
        help="the Guard's `on` kinds, comma-separated (default: its own)",
    )
    ap.add_argument(
        "--guard-factor", type=float, default=None, help="the Guard's LR factor"
    )
    ap.add_argument(
        "--regret-root",
        type=Path,
        default=corpus.ROOT,
        help="the repository holding benchmarks/regret (default: this one)",
    )
    args = ap.parse_args()
    directory = args.curves or (
        corpus.TUNING_CURVES
        if args.tuning
        else corpus.HOLDOUT_CURVES
        if args.holdout
        else corpus.REGRET_CURVES
    )
    if not any(directory.glob("*.json.gz")):
        sys.exit(f"no curves in {directory}: run the regret suite's oracle first")
    if args.points:
        global POINTS
        POINTS = args.points
        print(f"\nEach run read as a log of {POINTS} averaged points by lrkit.diagnose")
    if not args.only_guard:
        evaluate(directory)
    if args.sweep:
        sweep(directory)
    if args.verdicts:
        verdicts(directory)
    if args.null:
        bench_null()
    if not args.no_timing:
        bench_update_cost()
    if args.guard:
        import torch

        torch.set_num_threads(1)
        seeds = tuple(int(s) for s in args.seeds.split(","))
        global GUARD_FACTOR
        if args.guard_factor is not None:
            GUARD_FACTOR = args.guard_factor
        global GUARD_ON
        if args.guard_on is not None:
            GUARD_ON = tuple(args.guard_on.split(","))
        print(
            f"\nGuard: factor={GUARD_FACTOR}, on={','.join(GUARD_ON)}, "
            "snapshots every budget/20 steps"
        )
        bench_guard(directory, args.regret_root, seeds)
    _ = lrkit


if __name__ == "__main__":
    main()
