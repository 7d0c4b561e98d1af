"""Run LR-selection methods on the suite and report their regret against the oracle.

    python -m benchmarks.regret.run [--methods a,b|anchors|lrkit|all] [--tasks a,b]
        [--seeds 0,1,2] [--jobs 2] [--out DIR] [--stability] [--no-plots]
        [--update-readme]

Prints a markdown report (tasks x methods: mean / worst regret over seeds, for
the constant-LR and the warmup+cosine oracle; a per-method summary; lrkit's
regret split by confidence; with ``--stability`` the seed spread of lrkit's
suggestion and how far it moves when the range test is widened 10x each way)
and writes it with the raw results (JSON) and one plot per task to ``--out``
(default ``benchmarks/regret/results/``, git-ignored).
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
import time
import traceback
from typing import Any

import numpy as np

from .common import BENCH_DIR, RESULTS_DIR, StepCounter, setup_worker

SCHEDULES = ("constant", "cosine")
CONF_THRESHOLD = 0.5
README = os.path.join(BENCH_DIR, "README.md")
README_START = "<!-- regret-table:start -->"
README_END = "<!-- regret-table:end -->"
SUITE_START = "<!-- suite-table:start -->"
SUITE_END = "<!-- suite-table:end -->"
LATEST = os.path.join(BENCH_DIR, "latest.json")


# ------------------------------------------------------------------ worker
def run_job(runner: str, task: str, seed: int) -> list[dict[str, Any]]:
    setup_worker()
    from . import methods as M
    from .tasks import all_tasks

    base: dict[str, Any] = {"runner": runner, "task": task, "seed": seed}
    base["kind"] = "trained" if runner in M.TRAINED_RUNNERS else "pick"
    names = M.RUNNERS[runner][1]
    counter = StepCounter()
    try:
        M.warm_imports(runner)
        inst = all_tasks()[task](seed)
        base["budget_steps"] = inst.budget_steps
        with counter:
            out = M.run_runner(runner, inst)
    except M.NotInstalledError as e:
        return [
            {**base, "method": m, "status": "not_installed", "error": str(e)}
            for m in names
        ]
    except Exception as e:
        tb = traceback.format_exc().strip().splitlines()[-4:]
        err = f"{type(e).__name__}: {e}"[:400]
        return [
            {**base, "method": m, "status": "error", "error": err, "traceback": tb}
            for m in names
        ]
    records = []
    for m, res in out.items():
        rec = {
            **base,
            "method": m,
            **res,
            "steps": counter.steps,
            "wall_s": counter.wall_s,
        }
        if res["kind"] == "pick":
            rec["status"] = "ok" if res.get("lr") is not None else "none"
        else:
            rec["status"] = "ok"
        records.append(rec)
    return records


# ------------------------------------------------------------------ scoring
def score(records: list[dict[str, Any]], curves: dict[str, dict[str, Any]]) -> None:
    """Adds ``score[schedule]`` (and ``cost_pct``) to every record, in place."""
    for r in records:
        r["cost_pct"] = (
            100.0 * r.get("steps", 0) / r["budget_steps"]
            if "budget_steps" in r
            else None
        )
        r["score"] = {}
        if r.get("status") not in ("ok", "none", "error"):
            continue
        for sched, curve in curves.get(r["task"], {}).items():
            if r["kind"] == "pick":  # None or a crash: a failed pick
                r["score"][sched] = curve.score(r.get("lr"))
            elif r.get("status") == "error":
                reg = curve.score_loss(None, True, curve.init_loss)
                r["score"][sched] = {"regret": reg, "L": curve.init_loss,
                                     "divergent": False, "failed": True}  # fmt: skip
            else:
                reg = curve.score_loss(r["final_loss"], r["diverged"], r["init_loss"])
                r["score"][sched] = {
                    "regret": reg,
                    "L": curve.L_star * (1 + reg),
                    "divergent": bool(r["diverged"]),
                    "failed": False,
                }


def _scored(rows: list[dict[str, Any]], sched: str) -> list[dict[str, Any]]:
    return [r["score"][sched] for r in rows if sched in r.get("score", {})]


def summarize(rows: list[dict[str, Any]], sched: str) -> dict[str, Any]:
    sc = _scored(rows, sched)
    costs = [r["cost_pct"] for r in rows if r.get("cost_pct") is not None]
    walls = [r["wall_s"] for r in rows if r.get("wall_s") is not None]
    if not sc:
        return {"n": 0, "status": sorted({str(r.get("status")) for r in rows})}
    regs = [s["regret"] for s in sc]
    logs = [s["abs_log10"] for s in sc if s.get("abs_log10") is not None]
    return {
        "n": len(sc),
        "median_regret": statistics.median(regs),
        "p90_regret": float(np.percentile(regs, 90)),
        "worst_regret": max(regs),
        "mean_regret": statistics.mean(regs),
        "median_abs_log10": statistics.median(logs) if logs else None,
        "n_above_half_decade": sum(bool(s.get("above_half_decade")) for s in sc),
        "n_divergent": sum(bool(s.get("divergent")) for s in sc),
        "n_failed": sum(bool(s.get("failed")) for s in sc),
        "n_outside_grid": sum(bool(s.get("outside_grid")) for s in sc),
        "mean_cost_pct": statistics.mean(costs) if costs else None,
        "mean_wall_s": statistics.mean(walls) if walls else None,
    }


def _pct(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    v = 100 * x
    return f"{v:.1f}" if abs(v) < 10 else f"{v:.0f}"


def _num(x: float | None, fmt: str = ".2f") -> str:
    return "—" if x is None or not math.isfinite(x) else format(x, fmt)


def cell_text(rows: list[dict[str, Any]], sched: str) -> str:
    if not rows:
        return "—"
    if all(r.get("status") == "not_installed" for r in rows):
        return "n/a"
    sc = _scored(rows, sched)
    if not sc:
        bad = sorted({str(r.get("status")) for r in rows} - {"ok", "none"})
        return "/".join(bad) if bad else "no oracle"
    regs = [s["regret"] for s in sc]
    txt = f"{_pct(statistics.mean(regs))} / {_pct(max(regs))}"
    flags = [
        ("✗", sum(bool(s.get("divergent")) for s in sc)),
        ("∅", sum(bool(s.get("failed")) for s in sc)),
        ("⇡", sum(bool(s.get("above_half_decade")) for s in sc)),
        ("⇥", sum(bool(s.get("outside_grid")) for s in sc)),
    ]
    extra = "".join(f"{sym}{n}" for sym, n in flags if n)
    errors = sum(r.get("status") == "error" for r in rows)
    if errors:
        extra += f" err{errors}"
    return f"{txt} {extra}".strip()


# ------------------------------------------------------------------ report
def oracle_table(curves: dict[str, dict[str, Any]], tasks: list[str]) -> list[str]:
    from .oracle import load_oracle

    lines = [
        "| task | budget | s/run | L_init | L* | lr* | regret at lr*/1.78, "
        "lr*x1.78 % | seed sd at lr* % | L*cos | lr*cos |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        c = curves.get(t, {}).get("constant")
        if c is None:
            lines.append(f"| {t} | oracle missing |||||||||")
            continue
        o = load_oracle(t) or {"cells": {}}
        cpu = [x["cpu_s"] for x in o["cells"].values() if x.get("cpu_s")]
        cos = curves[t].get("cosine")
        lo, hi = c.neighbour_regret()
        miss = f" ({c.n_missing} missing)" if c.n_missing else ""
        lines.append(
            f"| {t} | {c.budget_steps} | {_num(statistics.mean(cpu) if cpu else None)} "
            f"| {c.init_loss:.4g} | {c.L_star:.4g}{miss} | {c.lr_star:.3g} | "
            f"{_pct(lo)} / {_pct(hi)} | {_pct(c.seed_std_at_star())} | "
            f"{'—' if cos is None else f'{cos.L_star:.4g}'} | "
            f"{'—' if cos is None else f'{cos.lr_star:.3g}'} |"
        )
    return lines


def suite_table(curves: dict[str, dict[str, Any]], tasks: list[str]) -> list[str]:
    """The suite as the oracle caches describe it."""
    from .oracle import load_oracle

    lines = [
        "| task | description | train / val examples | budget (steps) | s/run | lr* "
        "| lr*cos |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tasks:
        o = load_oracle(t)
        if o is None:
            lines.append(f"| {t} | oracle missing ||||||")
            continue
        fp = o["fingerprint"]
        cpu = [x["cpu_s"] for x in o["cells"].values() if x.get("cpu_s")]
        cs = curves.get(t, {})
        star = "—" if "constant" not in cs else f"{cs['constant'].lr_star:.2g}"
        star_c = "—" if "cosine" not in cs else f"{cs['cosine'].lr_star:.2g}"
        ntr, nva = fp["train_shapes"][0][0], fp["val_shapes"][0][0]
        sec = _num(statistics.mean(cpu) if cpu else None, ".1f")
        lines.append(
            f"| {t} | {fp['description']} | {ntr} / {nva} | {fp['budget_steps']} | "
            f"{sec} | {star} | {star_c} |"
        )
    return lines


def regret_table(
    records: list[dict[str, Any]], methods: list[str], tasks: list[str], sched: str
) -> list[str]:
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for t in tasks:
        cells = [
            cell_text(
                [r for r in records if r["task"] == t and r["method"] == m], sched
            )
            for m in methods
        ]
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


def summary_table(
    records: list[dict[str, Any]], methods: list[str], tasks: list[str], sched: str
) -> list[str]:
    lines = [
        "| method | n | median regret % | p90 % | worst % | median abs log10(lr/lr*) "
        "| > 0.5 decade above lr* | divergent | failed | cost % of budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for m in methods:
        rows = [r for r in records if r["method"] == m and r["task"] in tasks]
        s = summarize(rows, sched)
        if s["n"] == 0:
            bad = sorted(set(s["status"]) - {"ok", "none"}) or ["no oracle"]
            lines.append(f"| {m} | 0 | {'/'.join(bad)} ||||||||")
            continue
        lines.append(
            f"| {m} | {s['n']} | {_pct(s['median_regret'])} | {_pct(s['p90_regret'])} "
            f"| {_pct(s['worst_regret'])} | {_num(s['median_abs_log10'])} | "
            f"{s['n_above_half_decade']} | {s['n_divergent']} | {s['n_failed']} | "
            f"{_num(s['mean_cost_pct'], '.0f')} |"
        )
    return lines


def picks_table(
    records: list[dict[str, Any]],
    methods: list[str],
    tasks: list[str],
    curves: dict[str, dict[str, Any]],
) -> list[str]:
    picks = [
        m
        for m in methods
        if any(r["method"] == m and r.get("kind") == "pick" for r in records)
    ]
    if not picks:
        return []
    lines = [
        "| task | lr* | lr*cos | " + " | ".join(picks) + " |",
        "|---|---|---|" + "---|" * len(picks),
    ]
    for t in tasks:
        cs = curves.get(t, {})
        star = "—" if "constant" not in cs else f"{cs['constant'].lr_star:.2g}"
        star_c = "—" if "cosine" not in cs else f"{cs['cosine'].lr_star:.2g}"
        cells = []
        for m in picks:
            lrs = [
                r["lr"]
                for r in records
                if r["task"] == t and r["method"] == m and r.get("lr")
            ]
            cells.append(
                f"{math.exp(statistics.mean(math.log(x) for x in lrs)):.2g}"
                if lrs
                else "—"
            )
        lines.append(f"| {t} | {star} | {star_c} | " + " | ".join(cells) + " |")
    return lines


def confidence_table(records: list[dict[str, Any]], methods: list[str]) -> list[str]:
    lines = []
    for m in methods:
        rows = [
            r for r in records if r["method"] == m and "constant" in r.get("score", {})
        ]
        with_conf = [r for r in rows if r.get("confidence") is not None]
        if not with_conf:
            continue
        if not lines:
            lines = [
                "| method | confidence | n | median regret % | p90 % | worst % | "
                "median regret % (cosine) |",
                "|---|---|---|---|---|---|---|",
            ]
        for label, sel in (
            (
                f">= {CONF_THRESHOLD}",
                [r for r in with_conf if r["confidence"] >= CONF_THRESHOLD],
            ),
            (
                f"< {CONF_THRESHOLD}",
                [r for r in with_conf if r["confidence"] < CONF_THRESHOLD],
            ),
        ):
            s = summarize(sel, "constant")
            sc = summarize(sel, "cosine")
            if s["n"] == 0:
                lines.append(f"| {m} | {label} | 0 |||||")
                continue
            lines.append(
                f"| {m} | {label} | {s['n']} | {_pct(s['median_regret'])} | "
                f"{_pct(s['p90_regret'])} | {_pct(s['worst_regret'])} | "
                f"{_pct(sc.get('median_regret'))} |"
            )
    return lines


def stability_table(records: list[dict[str, Any]], tasks: list[str]) -> list[str]:
    lines = [
        "| task | method | seeds with a suggestion | sd of log2(suggestion) | octaves "
        "moved by the 10x wider range (mean / max) |",
        "|---|---|---|---|---|",
    ]
    found = False
    for t in tasks:
        for m in ("lrkit", "lrkit_val", "lrkit_confirm", "lrkit_val_confirm"):
            base = {
                r["seed"]: r["lr"]
                for r in records
                if r["task"] == t and r["method"] == m and r.get("lr")
            }
            wide = {
                r["seed"]: r["lr"]
                for r in records
                if r["task"] == t and r["method"] == f"{m}_wide" and r.get("lr")
            }
            n_runs = sum(r["task"] == t and r["method"] == m for r in records)
            if not n_runs:
                continue
            found = True
            logs = [math.log2(x) for x in base.values()]
            sd = statistics.stdev(logs) if len(logs) > 1 else float("nan")
            moved = [abs(math.log2(wide[s] / base[s])) for s in base if s in wide]
            mv = f"{statistics.mean(moved):.2f} / {max(moved):.2f}" if moved else "—"
            lines.append(f"| {t} | {m} | {len(base)}/{n_runs} | {_num(sd)} | {mv} |")
    return lines if found else []


def build_report(
    records: list[dict[str, Any]],
    methods: list[str],
    tasks: list[str],
    curves: dict[str, dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    out = [
        f"# Regret benchmark — {meta['timestamp']}",
        "",
        f"Methods {', '.join(methods)}; seeds {meta['seeds']}; jobs {meta['jobs']}; "
        f"wall {meta['wall_s'] / 60:.1f} min.",
        "",
        "Regret = L(lr) / L* − 1 with L the seed-mean final validation loss of the "
        "oracle grid (1e-6..10, 4 per decade) interpolated in log10(lr), diverged "
        "cells counted as the untrained loss; LR-free optimizers: their own final "
        "loss / L* − 1. Cells: mean % / worst % over seeds; ✗n divergent picks, "
        "∅n no suggestion (scored as untrained), ⇡n picks > 0.5 decade above lr*, "
        "⇥n outside the grid (clamped).",
        "",
        "## Oracle",
        "",
        *oracle_table(curves, tasks),
    ]
    for sched, title in (("constant", "constant-LR"), ("cosine", "warmup+cosine")):
        out += ["", f"## Regret against the {title} oracle (mean % / worst %)", ""]
        out += regret_table(records, methods, tasks, sched)
        out += ["", f"### Summary per method ({title} oracle)", ""]
        out += summary_table(records, methods, tasks, sched)
    pt = picks_table(records, methods, tasks, curves)
    if pt:
        out += ["", "## Picks (geometric mean over seeds)", "", *pt]
    ct = confidence_table(records, methods)
    if ct:
        out += ["", "## lrkit: regret by confidence (constant oracle)", "", *ct]
    has_wide = any(r["method"].endswith("_wide") for r in records)
    st = stability_table(records, tasks) if has_wide else []
    if st:
        out += ["", "## lrkit stability", "", *st]
    errs = [r for r in records if r.get("status") in ("error", "not_installed")]
    if errs:
        out += ["", "## Errors / not installed", ""]
        seen = set()
        for r in errs:
            key = (r["method"], r.get("error"))
            if key not in seen:
                seen.add(key)
                out.append(f"- {r['method']} ({r['status']}): `{r.get('error')}`")
    return "\n".join(out) + "\n"


def make_plots(
    records: list[dict[str, Any]],
    methods: list[str],
    tasks: list[str],
    curves: dict[str, dict[str, Any]],
    outdir: str,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(outdir, exist_ok=True)
    cmap = plt.get_cmap("tab20")
    markers = "o^vsPDX*<>hpd"
    paths = []
    for t in tasks:
        cs = curves.get(t, {})
        c = cs.get("constant")
        if c is None:
            continue
        fig, ax = plt.subplots(figsize=(9, 5.5))
        for row in c.seed_loss:
            ax.plot(c.lrs, row, color="0.8", lw=0.7, zorder=1)
        ax.plot(c.lrs, c.mean_loss, "k.-", lw=2, label="oracle, constant LR", zorder=2)
        cos = cs.get("cosine")
        if cos is not None:
            ax.plot(
                cos.lrs,
                cos.mean_loss,
                color="0.4",
                ls="--",
                lw=1.3,
                label="oracle, warmup+cosine",
                zorder=2,
            )
        div = c.div_frac >= 0.5
        if div.any():
            ax.scatter(
                c.lrs[div],
                c.mean_loss[div],
                marker="x",
                color="red",
                s=40,
                zorder=3,
                label="diverged (untrained loss)",
            )
        ax.axhline(c.init_loss, color="0.5", ls=":", lw=1, label="untrained")
        ax.scatter(
            [c.lr_star],
            [c.L_star],
            marker="*",
            s=260,
            color="gold",
            edgecolor="k",
            zorder=6,
            label=f"lr* = {c.lr_star:.2g}",
        )
        for k, m in enumerate(methods):
            rows = [
                r
                for r in records
                if r["task"] == t
                and r["method"] == m
                and "constant" in r.get("score", {})
            ]
            if not rows:
                continue
            col, mk = cmap(k % 20), markers[k % len(markers)]
            mean_reg = statistics.mean(r["score"]["constant"]["regret"] for r in rows)
            if rows[0]["kind"] == "pick":
                pts = [
                    (
                        min(max(r["lr"], c.lrs[0]), c.lrs[-1]),
                        r["score"]["constant"]["L"],
                    )
                    for r in rows
                    if r.get("lr")
                ]
                if pts:
                    ax.scatter(
                        *zip(*pts, strict=True),
                        marker=mk,
                        s=60,
                        color=col,
                        edgecolor="k",
                        zorder=7,
                        alpha=0.85,
                        label=f"{m}: {_pct(mean_reg)}%",
                    )
            else:
                ax.axhline(
                    statistics.mean(r["score"]["constant"]["L"] for r in rows),
                    color=col,
                    ls="-.",
                    lw=1.1,
                    label=f"{m} (trained): {_pct(mean_reg)}%",
                )
        ax.set_xscale("log")
        finite = c.mean_loss[np.isfinite(c.mean_loss)]
        if finite.size and finite.max() / max(finite.min(), 1e-12) > 20:
            ax.set_yscale("log")
        ax.set_xlabel("learning rate")
        ax.set_ylabel("final validation loss")
        ax.set_title(f"{t} (budget {c.budget_steps} steps)")
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        p = os.path.join(outdir, f"{t}.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def _replace_block(text: str, start: str, end: str, lines: list[str]) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{README} lacks the {start} / {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + "\n".join([start, *lines, end]) + tail


def _round(x: Any) -> Any:
    """Floats to 5 significant digits (non-finite to None), recursively."""
    if isinstance(x, float):
        return float(f"{x:.5g}") if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _round(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_round(v) for v in x]
    return x


SLIM_KEYS = (
    "method", "task", "seed", "kind", "status", "lr", "confidence", "steps",
    "budget_steps", "cost_pct", "wall_s", "final_loss", "diverged", "score", "error",
)  # fmt: skip


def update_readme(
    records: list[dict[str, Any]],
    methods: list[str],
    meta: dict[str, Any],
    curves: dict[str, dict[str, Any]],
) -> None:
    """Merge this run into ``latest.json`` (replacing the methods it ran) and
    rewrite the README's suite and results blocks from the merged records."""
    from . import methods as M
    from .tasks import TASKS

    latest: dict[str, Any] = {"runs": {}, "records": []}
    if os.path.exists(LATEST):
        with open(LATEST) as f:
            latest = json.load(f)
    latest["records"] = [r for r in latest["records"] if r["method"] not in methods]
    latest["records"] += [{k: r[k] for k in SLIM_KEYS if k in r} for r in records]
    for m in methods:
        latest["runs"][m] = {"timestamp": meta["timestamp"], "seeds": meta["seeds"]}
    present = {r["method"] for r in latest["records"]}
    order = [m for m in (*M.DEFAULT_METHODS, *M.METHOD_RUNNER) if m in present]
    all_methods = list(dict.fromkeys(order))
    tasks = [t for t in TASKS if any(r["task"] == t for r in latest["records"])]
    with open(LATEST, "w") as f:  # one record per line: small diffs
        f.write('{"runs": ' + json.dumps(latest["runs"], sort_keys=True) + ",\n")
        f.write('"records": [\n')
        lines = [json.dumps(_round(r), sort_keys=True) for r in latest["records"]]
        f.write(",\n".join(lines) + "\n]}\n")

    with open(README) as f:
        text = f.read()
    text = _replace_block(text, SUITE_START, SUITE_END, suite_table(curves, tasks))
    runs = latest["runs"]
    stamp_of = {m: (runs[m]["timestamp"], str(runs[m]["seeds"])) for m in all_methods}
    parts = []
    for st in sorted(set(stamp_of.values())):
        names = ", ".join(m for m in all_methods if stamp_of[m] == st)
        parts.append(f"{names}: measured {st[0]} (seeds {st[1]})")
    when = "; ".join(parts)
    block = [
        f"{when}. `python -m benchmarks.regret.run --update-readme` replaces the rows "
        "of the methods it runs (records in `latest.json`).",
        "",
    ]
    lat = latest["records"]
    for sched, title in (("constant", "constant-LR"), ("cosine", "warmup+cosine")):
        block += [f"**Summary, {title} oracle**", ""]
        block += summary_table(lat, all_methods, tasks, sched)
        block += ["", f"**Per task, {title} oracle (mean % / worst %)**", ""]
        block += regret_table(lat, all_methods, tasks, sched)
        block += [""]
    ct = confidence_table(lat, all_methods)
    if ct:
        block += ["**lrkit: regret by confidence (constant oracle)**", "", *ct, ""]
    text = _replace_block(text, README_START, README_END, block)
    with open(README, "w") as f:
        f.write(text)


# ------------------------------------------------------------------ main
def parse_methods(spec: str, stability: bool) -> list[str]:
    from . import methods as M

    groups = {
        "anchors": list(M.ANCHORS),
        "lrkit": list(M.LRKIT),
        "all": list(M.DEFAULT_METHODS),
    }
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        for m in groups.get(item, [item] if item else []):
            if m not in M.METHOD_RUNNER:
                raise SystemExit(
                    f"unknown method {m!r}; known: {', '.join(M.METHOD_RUNNER)}"
                )
            if m not in out:
                out.append(m)
    if stability:
        out += [
            f"{m}_wide"
            for m in M.LRKIT
            if m in out and f"{m}_wide" in M.METHOD_RUNNER and f"{m}_wide" not in out
        ]
    return out


def main(argv: list[str] | None = None) -> None:
    from . import methods as M
    from .regret import load_curves
    from .tasks import parse_tasks

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--methods",
        default="all",
        help="comma-separated names or groups: all, lrkit, anchors",
    )
    ap.add_argument(
        "--tasks",
        default=None,
        help="comma-separated names, all (the suite; default) or holdout",
    )
    ap.add_argument(
        "--seeds", default=None, help="default 0,1,2 (0..4 with --stability)"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=RESULTS_DIR)
    ap.add_argument(
        "--stability",
        action="store_true",
        help="also lrkit with a 10x wider range; 5 seeds by default",
    )
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--update-readme",
        action="store_true",
        help="rewrite the results block of benchmarks/regret/README.md",
    )
    a = ap.parse_args(argv)
    methods = parse_methods(a.methods, a.stability)
    tasks = parse_tasks(a.tasks)
    if a.update_readme and any(t not in parse_tasks("all") for t in tasks):
        raise SystemExit(
            "--update-readme: the README's tables hold the suite; the held-out "
            "group is reported on its own (see README.md, 'The held-out group')"
        )
    seeds_spec = a.seeds or ("0,1,2,3,4" if a.stability else "0,1,2")
    seeds = [int(s) for s in seeds_spec.split(",") if s]
    runners = []
    for m in methods:
        if M.METHOD_RUNNER[m] not in runners:
            runners.append(M.METHOD_RUNNER[m])

    curves = {t: load_curves(t) for t in tasks}
    for t in tasks:
        if "constant" not in curves[t]:
            print(
                f"warning: no oracle for {t}; run python -m benchmarks.regret.oracle",
                file=sys.stderr,
            )

    t0 = time.time()
    jobs = [(rn, t, s) for t in tasks for s in seeds for rn in runners]
    records: list[dict[str, Any]] = []
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(a.jobs, mp_context=ctx, initializer=setup_worker) as ex:
        futs = {ex.submit(run_job, *j): j for j in jobs}
        for i, f in enumerate(cf.as_completed(futs), 1):
            rn, t, s = futs[f]
            try:
                recs = f.result()
            except Exception as e:  # the worker died
                recs = [
                    {
                        "runner": rn,
                        "task": t,
                        "seed": s,
                        "method": m,
                        "status": "error",
                        "kind": "trained" if rn in M.TRAINED_RUNNERS else "pick",
                        "error": f"worker: {type(e).__name__}: {e}",
                    }
                    for m in M.RUNNERS[rn][1]
                ]
            records += [r for r in recs if r["method"] in methods]
            for r in recs:
                if r.get("status") == "error":
                    print(
                        f"[{i}/{len(jobs)}] {r['method']} {t} seed {s}: {r['error']}",
                        file=sys.stderr,
                    )
            if i % 10 == 0 or i == len(jobs):
                print(f"[{i}/{len(jobs)}] {time.time() - t0:.0f}s", file=sys.stderr)
    wall = time.time() - t0

    score(records, curves)
    records.sort(
        key=lambda r: (tasks.index(r["task"]), methods.index(r["method"]), r["seed"])
    )
    meta = {
        "timestamp": time.strftime("%Y-%m-%d %H:%M"),
        "seeds": seeds,
        "jobs": a.jobs,
        "wall_s": wall,
        "methods": methods,
        "tasks": tasks,
    }
    report = build_report(records, methods, tasks, curves, meta)
    print(report)
    os.makedirs(a.out, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    summary = {
        sched: {
            m: summarize([r for r in records if r["method"] == m], sched)
            for m in methods
        }
        for sched in SCHEDULES
    }
    oracle_ref = {
        t: {
            s: {"lr_star": c.lr_star, "L_star": c.L_star, "init_loss": c.init_loss}
            for s, c in cs.items()
        }
        for t, cs in curves.items()
    }
    with open(os.path.join(a.out, f"regret-{stamp}.json"), "w") as f:
        json.dump(
            {
                "meta": meta,
                "oracle": oracle_ref,
                "summary": summary,
                "records": records,
            },
            f,
            indent=1,
            default=float,
        )
    with open(os.path.join(a.out, f"regret-{stamp}.md"), "w") as f:
        f.write(report)
    print(f"wrote {a.out}/regret-{stamp}.json and .md", file=sys.stderr)
    if not a.no_plots:
        paths = make_plots(
            records, methods, tasks, curves, os.path.join(a.out, "plots")
        )
        print(f"wrote {len(paths)} plots to {a.out}/plots", file=sys.stderr)
    if a.update_readme:
        update_readme(records, methods, meta, curves)
        print(f"updated {README}", file=sys.stderr)


if __name__ == "__main__":
    main()
