"""Regret of LR suggestions for Keras 3 and scikit-learn models, against a
grid-search oracle.

The same yardstick as the PyTorch suite (``benchmarks/regret``), on tasks
written in Keras (run here on the torch backend; ``k_*``) and with
scikit-learn's ``MLPClassifier`` / ``MLPRegressor`` (``s_*``): for each task,
every LR of
the grid (1e-6 .. 10, 4 per decade) is trained for the task's budget of
optimizer steps with 2 seeds, and the final validation loss recorded (a run
that turns non-finite, or ends above 1.5x its untrained loss, counts as
untrained). Regret of a pick = L(pick) / L* - 1, with L the seed-mean curve
interpolated in log10(lr).

Methods, side by side, each on fresh models with 3 seeds:

- ``lrkit.keras.find_lr`` / ``lrkit.sklearn.find_lr`` with and without
  validation data;
- the rules users apply by hand or through the community LR-finder
  callbacks, from their published definitions on the same kind of range test:
  fastai's ``valley``, ``steep`` (steepest slope, the rule of most Keras
  LR-finder callbacks) and ``minimum`` (minimum loss / 10), and Lightning's
  steepest-gradient rule (``rules.py``: each runs its own range test through
  one ``train_on_batch`` / ``partial_fit`` per LR);
- the defaults: Keras's 1e-3 for the Adam family and 1e-2 for SGD;
  scikit-learn's ``learning_rate_init=0.001``.

Training is one ``train_on_batch`` / ``partial_fit`` per optimizer step, on
batches shuffled by the seed, for exactly the budget's steps.

Run from the repository root:
    KERAS_BACKEND=torch PYTHONPATH=src:. python -m benchmarks.regret.adapters_bench
    ... --framework keras|sklearn   # one of them
    ... --oracle   # regenerate the oracles (benchmarks/regret/oracle/[ks]_*.json)
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

# one thread per process (parallelism is by processes): set before NumPy loads
# its BLAS, which scikit-learn's MLPs spend their time in
os.environ.setdefault("KERAS_BACKEND", "torch")
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402

from lrkit._util import IndexBatches  # noqa: E402

from .common import GRID, ORACLE_DIR  # noqa: E402
from .regret import interp_log  # noqa: E402

SPLIT_SEED = 2024
ORACLE_SEEDS = (0, 1)
PICK_SEEDS = (0, 1, 2)
DIVERGED_FACTOR = 1.5


# ------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class Task:
    name: str
    family: str  # "adam" or "sgd": the default LR
    budget_steps: int
    batch_size: int
    data: Callable[[], tuple[np.ndarray, ...]]
    build: Callable[[float], Any]  # lr -> compiled model (seeded by the caller)

    @property
    def framework(self) -> str:
        return "keras" if self.name.startswith("k_") else "sklearn"


def _split(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, ...]:
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(x))
    n_val = round(0.25 * len(x))
    tr, va = perm[n_val:], perm[:n_val]
    mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-8
    xs = ((x - mu) / sd).astype("float32")
    return xs[tr], y[tr], xs[va], y[va]


def _digits() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _split(x.astype("float64"), y.astype("int64"))


def _breast() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    return _split(x.astype("float64"), y.astype("float32")[:, None])


def _diabetes() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    y = ((y - y.mean()) / y.std()).astype("float32")[:, None]
    return _split(x.astype("float64"), y)


def _wine() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_wine

    x, y = load_wine(return_X_y=True)
    return _split(x.astype("float64"), y.astype("int64"))


def _compile(model: Any, opt: Any, loss: str) -> Any:
    import keras

    losses = {
        "ce": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        "bce": keras.losses.BinaryCrossentropy(from_logits=True),
        "mse": "mse",
    }
    model.compile(optimizer=opt, loss=losses[loss])
    return model


def _digits_bn_adam(lr: float) -> Any:
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((64,)),
            layers.Dense(128, activation="relu"),
            layers.BatchNormalization(),
            layers.Dropout(0.2),
            layers.Dense(10),
        ]
    )
    return _compile(model, keras.optimizers.Adam(lr), "ce")


def _digits_sgdm(lr: float) -> Any:
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((64,)), layers.Dense(64, activation="tanh"), layers.Dense(10)]
    )
    return _compile(model, keras.optimizers.SGD(lr, momentum=0.9), "ce")


def _breast_adamw(lr: float) -> Any:
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((30,)), layers.Dense(32, activation="relu"), layers.Dense(1)]
    )
    return _compile(model, keras.optimizers.AdamW(lr, weight_decay=0.01), "bce")


def _diabetes_rmsprop(lr: float) -> Any:
    import keras

    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((10,)),
            layers.Dense(64, activation="relu"),
            layers.LayerNormalization(),
            layers.Dense(1),
        ]
    )
    return _compile(model, keras.optimizers.RMSprop(lr), "mse")


def _wine_logreg_sgd(lr: float) -> Any:
    import keras

    model = keras.Sequential([keras.Input((13,)), keras.layers.Dense(3)])
    return _compile(model, keras.optimizers.SGD(lr), "ce")


def _sk(kind: str, hidden: tuple[int, ...], solver: str) -> Callable[[float], Any]:
    def build(lr: float) -> Any:
        from sklearn.neural_network import MLPClassifier, MLPRegressor

        cls = MLPClassifier if kind == "clf" else MLPRegressor
        return cls(
            hidden_layer_sizes=hidden,
            solver=solver,
            momentum=0.9,
            learning_rate_init=lr,
        )

    return build


def _int_targets(data: Callable[[], tuple[np.ndarray, ...]]) -> Callable[..., Any]:
    def load() -> tuple[np.ndarray, ...]:
        xt, yt, xv, yv = data()
        return xt, yt.ravel().astype("int64"), xv, yv.ravel().astype("int64")

    return load


def _flat_targets(data: Callable[[], tuple[np.ndarray, ...]]) -> Callable[..., Any]:
    def load() -> tuple[np.ndarray, ...]:
        xt, yt, xv, yv = data()
        return xt, yt.ravel(), xv, yv.ravel()

    return load


TASKS = {
    t.name: t
    for t in (
        Task("k_digits_mlp_bn_adam", "adam", 300, 64, _digits, _digits_bn_adam),
        Task("k_digits_mlp_sgdm", "sgd", 400, 32, _digits, _digits_sgdm),
        Task("k_breast_mlp_adamw", "adam", 300, 32, _breast, _breast_adamw),
        Task(
            "k_diabetes_mlp_ln_rmsprop", "adam", 400, 32, _diabetes, _diabetes_rmsprop
        ),
        Task("k_wine_logreg_sgd", "sgd", 300, 16, _wine, _wine_logreg_sgd),
        Task("s_digits_mlp_adam", "adam", 300, 64, _digits, _sk("clf", (64,), "adam")),
        Task("s_digits_mlp_sgdm", "sgd", 400, 32, _digits, _sk("clf", (64,), "sgd")),
        Task(
            "s_breast_mlp_adam",
            "adam",
            300,
            32,
            _int_targets(_breast),
            _sk("clf", (32,), "adam"),
        ),
        Task(
            "s_diabetes_mlp_sgdm",
            "sgd",
            400,
            32,
            _flat_targets(_diabetes),
            _sk("reg", (32,), "sgd"),
        ),
        Task("s_wine_mlp_adam", "adam", 300, 16, _wine, _sk("clf", (16,), "adam")),
    )
}


def _train_step(task: Task, model: Any, xb: Any, yb: Any, lr: float) -> float:
    """One optimizer update at ``lr``; the batch loss."""
    if task.framework == "keras":
        model.optimizer.learning_rate = lr
        return float(model.train_on_batch(xb, yb))
    from lrkit.sklearn import _blew_up, _partial_fit, _set_lr

    _set_lr(model, lr)
    classes = None
    if hasattr(model, "predict_proba") and not hasattr(model, "classes_"):
        classes = np.arange(int(task.data()[1].max()) + 1)  # at the first call
    try:
        _partial_fit(model, xb, yb, classes)
    except ValueError as e:
        if not _blew_up(model, e):
            raise
        return math.nan
    return float(model.loss_)


def _model(task: Task, lr: float, seed: int) -> Any:
    if task.framework == "sklearn":
        return task.build(lr).set_params(random_state=seed, batch_size=task.batch_size)
    import keras

    keras.utils.set_random_seed(seed)
    return task.build(lr)


def _val_loss(task: Task, model: Any, xv: np.ndarray, yv: np.ndarray) -> float:
    if task.framework == "sklearn":
        from lrkit.sklearn import _val_loss as sk_val_loss

        if not hasattr(model, "coefs_"):  # untrained: predicting needs weights,
            # made by a first partial_fit (on a copy, at an LR of ~0)
            model = copy.deepcopy(model)
            _train_step(task, model, xv[:1], yv[:1], 1e-300)
        return sk_val_loss(model, xv, yv)
    out = model.evaluate(xv, yv, batch_size=len(xv), verbose=0, return_dict=True)
    return float(out["loss"])


# ------------------------------------------------------------------ oracle
def oracle_cell(name: str, lr_idx: int, seed: int) -> dict[str, Any]:
    task = TASKS[name]
    xt, yt, xv, yv = task.data()
    model = _model(task, GRID[lr_idx], seed)
    init = _val_loss(task, model, xv, yv)
    batches = IndexBatches(len(xt), task.batch_size, seed)
    diverged = False
    for _ in range(task.budget_steps):
        idx = batches.next()
        if not math.isfinite(_train_step(task, model, xt[idx], yt[idx], GRID[lr_idx])):
            diverged = True
            break
    final = math.nan if diverged else _val_loss(task, model, xv, yv)
    diverged = diverged or not math.isfinite(final) or final > DIVERGED_FACTOR * init
    return {
        "lr_idx": lr_idx,
        "seed": seed,
        "init_loss": init,
        "final_loss": None if not math.isfinite(final) else final,
        "diverged": diverged,
    }


def oracle_path(name: str) -> str:
    return os.path.join(ORACLE_DIR, f"{name}.json")


def build_oracle(name: str, jobs: int) -> dict[str, Any]:
    task = TASKS[name]
    keys = [(i, s) for i in range(len(GRID)) for s in ORACLE_SEEDS]
    with ProcessPoolExecutor(jobs) as pool:
        cells = list(
            pool.map(oracle_cell, [name] * len(keys), *zip(*keys, strict=True))
        )
    if task.framework == "keras":
        import keras

        versions = {"keras": keras.__version__, "backend": keras.backend.backend()}
    else:
        import sklearn

        versions = {"sklearn": sklearn.__version__}
    record = {
        "task": name,
        "settings": {
            "budget_steps": task.budget_steps,
            "batch_size": task.batch_size,
            "family": task.family,
            "grid": GRID,
            "seeds": list(ORACLE_SEEDS),
            **versions,
            "diverged_factor": DIVERGED_FACTOR,
        },
        "cells": cells,
    }
    with open(oracle_path(name), "w") as f:
        json.dump(record, f, indent=1)
    return record


@dataclass(frozen=True)
class Curve:
    lrs: np.ndarray
    loss: np.ndarray  # seed-mean effective loss
    div: np.ndarray  # fraction of seeds diverged

    @property
    def lr_star(self) -> float:
        return float(self.lrs[int(np.argmin(self.loss))])

    @property
    def L_star(self) -> float:
        return float(self.loss.min())

    def score(self, lr: float | None) -> tuple[float, float | None, bool]:
        """(regret, log10(lr / lr*), divergent) of a pick."""
        if lr is None or not math.isfinite(lr) or lr <= 0:
            return (float(np.max(self.loss)) / self.L_star - 1, None, False)
        loss, _ = interp_log(self.lrs, self.loss, lr)
        div, _ = interp_log(self.lrs, self.div, lr)
        return (loss / self.L_star - 1, math.log10(lr / self.lr_star), div >= 0.5)


def curve(record: dict[str, Any]) -> Curve:
    n = len(GRID)
    loss = np.zeros(n)
    div = np.zeros(n)
    count = np.zeros(n)
    for c in record["cells"]:
        i = c["lr_idx"]
        eff = c["init_loss"] if c["diverged"] else c["final_loss"]
        loss[i] += eff
        div[i] += float(c["diverged"])
        count[i] += 1
    return Curve(np.array(GRID), loss / count, div / count)


# ------------------------------------------------------------------ methods
def _step_fn(task: Task, model: Any, xt: Any, yt: Any, seed: int) -> Any:
    batches = IndexBatches(len(xt), task.batch_size, seed)

    def step(lr: float) -> float:
        idx = batches.next()
        return _train_step(task, model, xt[idx], yt[idx], lr)

    return step


def picks(name: str, seed: int) -> dict[str, tuple[float | None, int]]:
    """Each method's LR (and the optimizer steps its finder took)."""
    from . import rules

    task = TASKS[name]
    xt, yt, xv, yv = task.data()
    out: dict[str, tuple[float | None, int]] = {}
    for key, val in (("lrkit", None), ("lrkit_val", (xv, yv))):
        model = _model(task, 1e-3, seed)
        if task.framework == "keras":
            import lrkit.keras

            r = lrkit.keras.find_lr(
                model,
                xt,
                yt,
                batch_size=task.batch_size,
                validation_data=val,
                seed=seed,
            )
        else:
            import lrkit.sklearn

            r = lrkit.sklearn.find_lr(model, xt, yt, validation_data=val, seed=seed)
        out[key] = (r.suggestion, r.steps_done)
    model = _model(task, rules.FASTAI_START, seed)
    lrs, losses = rules.fastai_record(_step_fn(task, model, xt, yt, seed))
    lr_w, loss_w = rules.fastai_window(lrs, losses)
    for rule_name, rule in rules.FASTAI_RULES.items():
        if rule_name == "slide":
            continue
        lr = rule(lr_w, loss_w) if len(loss_w) >= 2 else None
        out[f"fastai_{rule_name}"] = (
            lr if lr is not None and math.isfinite(lr) else None,
            len(lrs),
        )
    model = _model(task, rules.LIGHTNING_MIN, seed)
    lrs, losses = rules.lightning_record(_step_fn(task, model, xt, yt, seed))
    out["lightning"] = (rules.lightning_suggestion(lrs, losses), len(lrs))
    if task.framework == "keras":
        out["default"] = (1e-3 if task.family == "adam" else 1e-2, 0)
    else:
        out["default"] = (1e-3, 0)
    return out


def _picks_job(args: tuple[str, int]) -> tuple[str, int, dict[str, Any]]:
    import torch

    torch.set_num_threads(1)
    name, seed = args
    return name, seed, picks(name, seed)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--oracle", action="store_true", help="regenerate the oracle")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--framework", choices=("keras", "sklearn", "all"), default="all")
    ap.add_argument("--tasks", default="")
    args = ap.parse_args(argv)
    names = [t for t in args.tasks.split(",") if t] or [
        n for n, t in TASKS.items() if args.framework in ("all", t.framework)
    ]
    for name in names:
        if name not in TASKS:
            sys.exit(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    records = {}
    for name in names:
        path = oracle_path(name)
        if args.oracle or not os.path.exists(path):
            t0 = time.perf_counter()
            records[name] = build_oracle(name, args.jobs)
            print(f"oracle {name}: {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        else:
            with open(path) as f:
                records[name] = json.load(f)
    curves = {n: curve(r) for n, r in records.items()}
    jobs = [(n, s) for n in names for s in PICK_SEEDS]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(_picks_job, jobs))
    methods = list(results[0][2])
    table: dict[str, dict[str, list[tuple[float, float | None, bool, int]]]] = {
        m: {n: [] for n in names} for m in methods
    }
    for name, _seed, got in results:
        for m, (lr, steps) in got.items():
            table[m][name].append((*curves[name].score(lr), steps))

    print("\n### Oracle\n")
    print("| task | budget steps | lr* | L* | untrained |")
    print("|---|---|---|---|---|")
    for n in names:
        c, rec = curves[n], records[n]
        init = statistics.mean(x["init_loss"] for x in rec["cells"])
        print(
            f"| {n} | {TASKS[n].budget_steps} | {c.lr_star:.3g} | {c.L_star:.4g} "
            f"| {init:.4g} |"
        )
    print("\n### Regret % per task (mean / worst of 3 seeds)\n")
    print("| task | " + " | ".join(methods) + " |")
    print("|---" * (len(methods) + 1) + "|")
    for n in names:
        cells = []
        for m in methods:
            regs = [100 * r[0] for r in table[m][n]]
            cells.append(f"{statistics.mean(regs):.0f} / {max(regs):.0f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    groups = {
        f: [n for n in names if TASKS[n].framework == f] for f in ("keras", "sklearn")
    }
    groups = {f: g for f, g in groups.items() if g}
    if len(groups) > 1:
        groups["all"] = names
    for group, members in groups.items():
        print(f"\n### Summary per method: {group} tasks (all task-seeds)\n")
        print(
            "| method | median regret % | p90 | worst | median abs log10(lr/lr*) "
            "| picks > 0.5 decade above | divergent | finder steps % of budget |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for m in methods:
            print(_summary_row(m, [(r, n) for n in members for r in table[m][n]]))


def _summary_row(method: str, rows: list[tuple[Any, str]]) -> str:
    regs = sorted(100 * r[0] for r, _ in rows)
    logs = [abs(r[1]) for r, _ in rows if r[1] is not None]
    above = sum(r[1] is not None and r[1] > 0.5 for r, _ in rows)
    div = sum(r[2] for r, _ in rows)
    cost = statistics.median(100 * r[3] / TASKS[n].budget_steps for r, n in rows)
    p90 = regs[min(len(regs) - 1, round(0.9 * (len(regs) - 1)))]
    med_log = f"{statistics.median(logs):.2f}" if logs else "n/a"
    return (
        f"| {method} | {statistics.median(regs):.1f} | {p90:.0f} | {regs[-1]:.0f} | "
        f"{med_log} | {above}/{len(rows)} | {div} | {cost:.0f} |"
    )


if __name__ == "__main__":
    main()
