"""The grid-search oracle and the per-step training curves.

For every task: train the full budget at every LR of the grid (1e-6 .. 10,
4 per decade, 29 values) with a constant LR (3 seeds by default) and with 5%
linear warmup then cosine to zero (the LR being the peak; 2 seeds), and record
the final validation loss of each run. Results are cached per task in
``oracle/<task>.json`` together with the settings and ``code_hash``, a hash of
everything that determines them (the training loop's source, the task factory's
source, the model, optimizer, data checksums, loader order, the untrained loss
and the torch version). Cells already cached under the same ``code_hash`` are
skipped; a cache with another hash is moved to ``<task>.json.stale`` and the
task recomputed.

While training the constant-LR grid, the runs of the curve seeds (0 and 1) also
record per-step curves for the monitor benchmark, written to
``curves/<task>.json.gz`` (format in README.md); the held-out group's
(``holdout.py``) go to ``curves_holdout/``, a corpus of their own.

    python -m benchmarks.regret.oracle --jobs 2 [--tasks a,b] [--seeds 0,1,2]
        [--cos-seeds 0,1] [--cos-every 1] [--curve-seeds 0,1] [--no-cosine]
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import gzip
import hashlib
import inspect
import json
import math
import multiprocessing as mp
import os
import time
from typing import Any

from .common import (
    CURVES_DIR,
    GRID,
    GRID_EXP,
    HOLDOUT_CURVES_DIR,
    ORACLE_DIR,
    setup_worker,
)

VAL_POINTS = 20  # validation evaluations per recorded run (val_every = budget / 20)


# ------------------------------------------------------------------ worker side
def val_every(budget_steps: int) -> int:
    return max(1, budget_steps // VAL_POINTS)


def task_fingerprint(name: str) -> dict[str, Any]:
    """Everything that determines the task's oracle, and its hash (``code_hash``)."""
    import torch

    from . import train
    from .tasks import all_tasks

    setup_worker()
    make = all_tasks()[name]
    inst = make(0)
    xtr, ytr = inst.train_loader.dataset.tensors  # type: ignore[attr-defined]
    xva, yva = inst.val_loader.dataset.tensors  # type: ignore[attr-defined]
    order = [int(y.double().sum()) for _, y in inst.train_loader]
    probe = torch.nn.Parameter(torch.zeros(1))
    desc: dict[str, Any] = {
        "task": name,
        "description": inst.description,
        "model": repr(inst.model),
        "n_params": sum(p.numel() for p in inst.model.parameters()),
        "param_sum_seed0": round(
            float(sum(p.detach().double().sum() for p in inst.model.parameters())), 6
        ),
        "optimizer": inst.optimizer_desc,
        "optimizer_defaults": repr(inst.make_optimizer([probe], 0.125).defaults),
        "family": inst.family,
        "budget_steps": inst.budget_steps,
        "train_batch": inst.train_loader.batch_size,
        "val_batch": inst.val_loader.batch_size,
        "train_shapes": [list(xtr.shape), list(ytr.shape)],
        "val_shapes": [list(xva.shape), list(yva.shape)],
        "data_sums": [round(float(t.double().sum()), 4) for t in (xtr, ytr, xva, yva)],
        "epoch0_order_seed0": hashlib.sha256(repr(order).encode()).hexdigest()[:12],
        "init_val_loss_seed0": round(train.evaluate(inst), 6),
        "diverge_factor": train.DIVERGE_FACTOR,
        "warmup_frac": train.WARMUP_FRAC,
        "train_py_sha": hashlib.sha256(inspect.getsource(train).encode()).hexdigest()[
            :16
        ],
        "factory_sha": hashlib.sha256(inspect.getsource(make).encode()).hexdigest()[
            :16
        ],
        "torch": torch.__version__.split("+")[0],
    }
    blob = json.dumps(desc, sort_keys=True).encode()
    desc["code_hash"] = hashlib.sha256(blob).hexdigest()[:16]
    return desc


def run_cell(
    name: str, schedule: str, lr_idx: int, seed: int, record_every: int
) -> dict[str, Any]:
    from .tasks import all_tasks
    from .train import train_run

    setup_worker()
    inst = all_tasks()[name](seed)
    c0 = time.process_time()
    r = train_run(inst, GRID[lr_idx], schedule, record_every=record_every)
    r["cpu_s"] = time.process_time() - c0
    r.update(task=name, schedule=schedule, lr_idx=lr_idx, lr=GRID[lr_idx], seed=seed)
    return r


# ------------------------------------------------------------------ cache files
def cell_key(schedule: str, lr_idx: int, seed: int) -> str:
    return f"{schedule}|{lr_idx}|{seed}"


def oracle_path(name: str) -> str:
    return os.path.join(ORACLE_DIR, f"{name}.json")


def curves_path(name: str) -> str:
    from .holdout import HOLDOUT

    directory = HOLDOUT_CURVES_DIR if name in HOLDOUT else CURVES_DIR
    return os.path.join(directory, f"{name}.json.gz")


def load_oracle(name: str) -> dict[str, Any] | None:
    p = oracle_path(name)
    if not os.path.exists(p):
        return None
    with open(p) as f:
        data: dict[str, Any] = json.load(f)
    return data


def load_curves(name: str) -> dict[str, Any] | None:
    p = curves_path(name)
    if not os.path.exists(p):
        return None
    with gzip.open(p, "rt") as f:
        data: dict[str, Any] = json.load(f)
    return data


def _atomic_write(path: str, payload: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(payload)
    os.replace(tmp, path)


def save_oracle(name: str, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, allow_nan=False)
    _atomic_write(oracle_path(name), (text + "\n").encode())


def save_curves(name: str, data: dict[str, Any]) -> None:
    """Write a task's curves file; nothing when no run was recorded (a file
    without runs would join the monitor's corpus as an empty task)."""
    if not data.get("runs"):
        return
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    # mtime=0: regenerating identical curves gives identical bytes
    _atomic_write(curves_path(name), gzip.compress(text.encode(), 9, mtime=0))


def _num(x: Any, digits: int = 6) -> Any:
    if isinstance(x, float):
        return float(f"{x:.{digits}g}") if math.isfinite(x) else None
    return x


def effective_loss(cell: dict[str, Any]) -> float:
    """The cell's final val loss, or its untrained loss when the run diverged."""
    if cell.get("diverged") or cell.get("final_loss") is None:
        return float(cell["init_loss"])
    return float(cell["final_loss"])


def best_lr(oracle: dict[str, Any]) -> float | None:
    """argmin over the grid of the seed-mean effective constant-LR loss."""
    sums: dict[int, list[float]] = {}
    for c in oracle["cells"].values():
        if c["schedule"] == "constant":
            sums.setdefault(c["lr_idx"], []).append(effective_loss(c))
    if not sums:
        return None
    idx = min(sums, key=lambda i: sum(sums[i]) / len(sums[i]))
    return GRID[idx]


def _log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


# ------------------------------------------------------------------ driver
def _prepare(
    name: str, fp: dict[str, Any], settings: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    oracle = load_oracle(name)
    if oracle is not None and oracle.get("code_hash") != fp["code_hash"]:
        os.replace(oracle_path(name), oracle_path(name) + ".stale")
        _log(
            f"{name}: code hash changed ({oracle.get('code_hash')} -> "
            f"{fp['code_hash']}); old cache moved to {name}.json.stale"
        )
        oracle = None
    if oracle is None:
        oracle = {"task": name, "code_hash": fp["code_hash"], "cells": {}}
    oracle.update(description=fp["description"], fingerprint=fp, settings=settings)
    curves = load_curves(name)
    if curves is None or curves.get("code_hash") != fp["code_hash"]:
        curves = {"runs": []}
    curves.update(
        task=name,
        description=fp["description"],
        code_hash=fp["code_hash"],
        budget_steps=fp["budget_steps"],
        family=fp["family"],
        val_every=val_every(fp["budget_steps"]),
    )
    return oracle, curves


def _finish_curves(curves: dict[str, Any], oracle: dict[str, Any]) -> dict[str, Any]:
    curves["best_lr"] = best_lr(oracle)
    curves["runs"].sort(key=lambda r: (r["lr"], r["seed"]))
    keys = ["task", "description", "code_hash", "budget_steps", "family", "val_every"]
    out = {k: curves[k] for k in keys}
    out["best_lr"] = curves["best_lr"]
    out["runs"] = curves["runs"]
    return out


def main(argv: list[str] | None = None) -> None:
    from .tasks import parse_tasks

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--tasks",
        default=None,
        help="comma-separated names, all (the suite; default) or holdout",
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the constant-LR grid")
    ap.add_argument("--cos-seeds", default="0,1", help="seeds of the cosine grid")
    ap.add_argument(
        "--cos-every", type=int, default=1, help="cosine on every k-th grid point"
    )
    ap.add_argument("--curve-seeds", default="0,1", help="constant-LR runs to record")
    ap.add_argument("--no-cosine", action="store_true")
    a = ap.parse_args(argv)
    names = parse_tasks(a.tasks)
    seeds = [int(s) for s in a.seeds.split(",") if s]
    cos_seeds = [] if a.no_cosine else [int(s) for s in a.cos_seeds.split(",") if s]
    curve_seeds = {int(s) for s in a.curve_seeds.split(",") if s}
    # every second grid point first, so a partial cosine oracle is still usable
    cos_idx = sorted(range(0, len(GRID), max(1, a.cos_every)), key=lambda i: (i % 2, i))

    t_start = time.time()
    _log(
        f"oracle: tasks={names} seeds={seeds} cos_seeds={cos_seeds} "
        f"cos_idx={cos_idx} curve_seeds={sorted(curve_seeds)} jobs={a.jobs}"
    )
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(a.jobs, mp_context=ctx, initializer=setup_worker) as ex:
        fps = {n: ex.submit(task_fingerprint, n) for n in names}
        oracles: dict[str, dict[str, Any]] = {}
        curves: dict[str, dict[str, Any]] = {}
        for n in names:
            fp = fps[n].result()
            settings = {
                "grid_lrs": GRID,
                "grid_log10": GRID_EXP,
                "budget_steps": fp["budget_steps"],
                "schedules": {
                    "constant": "constant LR for budget_steps",
                    "cosine": f"linear warmup over {fp['warmup_frac']:.0%} of "
                    "budget_steps (from lr/warmup_steps), then cosine to 0; lr = peak",
                },
                "diverged": "non-finite training loss at any step, non-finite final "
                f"val loss, or final val loss > {fp['diverge_factor']} x the "
                "untrained val loss of the same seed; counts as the untrained loss",
            }
            oracles[n], curves[n] = _prepare(n, fp, settings)
            have = {
                (r["lr_idx"], r["seed"])
                for r in curves[n]["runs"]  # runs recorded under this code hash
            }
            curves[n]["_have"] = have
            save_oracle(n, oracles[n])

        todo: list[tuple[str, str, int, int, int]] = []
        for sched, idxs, sseeds in (
            ("constant", range(len(GRID)), seeds),
            ("cosine", cos_idx, cos_seeds),
        ):
            for n in names:
                every = val_every(oracles[n]["fingerprint"]["budget_steps"])
                for i in idxs:
                    for s in sseeds:
                        want_curve = sched == "constant" and s in curve_seeds
                        cached = cell_key(sched, i, s) in oracles[n]["cells"]
                        if cached and not (
                            want_curve and (i, s) not in curves[n]["_have"]
                        ):
                            continue
                        todo.append((n, sched, i, s, every if want_curve else 0))
        _log(f"{len(todo)} cells to run")
        futs = {ex.submit(run_cell, *job): job for job in todo}
        cpu_total = 0.0
        last_save, dirty = time.time(), set()
        for done, fut in enumerate(cf.as_completed(futs), 1):
            n, sched, i, s, every = futs[fut]
            try:
                r = fut.result()
            except Exception as e:  # recorded nowhere: a rerun retries the cell
                _log(f"ERROR {n} {sched} lr_idx={i} seed={s}: {type(e).__name__}: {e}")
                continue
            cell = {
                k: _num(r[k])
                for k in (
                    "schedule",
                    "lr_idx",
                    "lr",
                    "seed",
                    "init_loss",
                    "final_loss",
                    "diverged",
                    "reason",
                    "steps_done",
                    "wall_s",
                    "cpu_s",
                )
            }
            oracles[n]["cells"][cell_key(sched, i, s)] = cell
            if every:
                curves[n]["runs"].append(
                    {
                        "lr": GRID[i],
                        "lr_idx": i,
                        "seed": s,
                        "train_loss": r["train_loss"],
                        "grad_norm": r["grad_norm"],
                        "val_steps": r["val_steps"],
                        "val_loss": r["val_loss"],
                        "diverged": r["diverged"],
                        "final_val_loss": _num(r["final_loss"], 5),
                    }
                )
                curves[n]["_have"].add((i, s))
            cpu_total += r["cpu_s"]
            dirty.add(n)
            if time.time() - last_save > 60:  # flush every task with new cells
                for d in dirty:
                    save_oracle(d, oracles[d])
                    save_curves(d, _finish_curves(curves[d], oracles[d]))
                dirty.clear()
                last_save = time.time()
            if done % 25 == 0 or done == len(todo):
                el = time.time() - t_start
                _log(
                    f"{done}/{len(todo)} cells, {el / 60:.1f} min, cpu "
                    f"{cpu_total / 60:.1f} min, eta "
                    f"{el / done * (len(todo) - done) / 60:.1f} min; last {n} "
                    f"{sched} lr={GRID[i]:.2g} seed {s}: {cell['final_loss']}"
                )
        for n in names:
            cells = oracles[n]["cells"].values()
            for sched in ("constant", "cosine"):
                sub = [c for c in cells if c["schedule"] == sched]
                oracles[n]["settings"][f"seeds_{sched}"] = sorted(
                    {c["seed"] for c in sub}
                )
                oracles[n]["settings"][f"grid_idx_{sched}"] = sorted(
                    {c["lr_idx"] for c in sub}
                )
            oracles[n]["timing"] = {
                "cpu_s_all_cells": round(sum(c.get("cpu_s") or 0 for c in cells), 1),
                "wall_s_all_cells": round(sum(c.get("wall_s") or 0 for c in cells), 1),
            }
            save_oracle(n, oracles[n])
            save_curves(n, _finish_curves(curves[n], oracles[n]))
    _log(f"oracle done in {(time.time() - t_start) / 60:.1f} min")


if __name__ == "__main__":
    main()
