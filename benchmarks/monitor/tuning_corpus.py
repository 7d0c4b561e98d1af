"""Tuning corpus for the monitor's thresholds (not the reported benchmark).

Trains small real models on CPU at a log-spaced grid of learning rates and writes
per-step curves in the regret suite's curve format (see ``corpus.py``), one
``<task>.json.gz`` per task under ``benchmarks/monitor/tuning_curves/``. The
thresholds of ``lrkit.Monitor`` were chosen on these curves; the quality report
(``run.py``) is computed on the regret suite's curves, which are separate tasks.

Run: ``PYTHONPATH=src python benchmarks/monitor/tuning_corpus.py`` (a few minutes).
"""

from __future__ import annotations

import gzip
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

OUT = Path(__file__).parent / "tuning_curves"
LRS = [float(x) for x in np.logspace(-5, 1, 19)]  # factor ~2.15
SEEDS = (0, 1)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target, dtype=torch.long)
    return x, y


def _blobs(seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(5, 20, generator=g) * 1.5
    y = torch.randint(0, 5, (3000,), generator=g)
    x = centers[y] + torch.randn(3000, 20, generator=g) * 2.0
    return x, y


def _illcond(seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, 1.3, 16)
    x = torch.randn(3000, 16, generator=g) * scales
    w = torch.randn(16, 1, generator=g)
    y = x @ w / 10 + 0.5 * torch.randn(3000, 1, generator=g)
    return x, y


def _sinreg(seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3000, 4, generator=g) * 4 - 2
    y = (torch.sin(2 * x[:, :1]) * x[:, 1:2] + x[:, 2:3] ** 2 - x[:, 3:4]) + 0.1 * (
        torch.randn(3000, 1, generator=g)
    )
    return x, y


def _text() -> tuple[torch.Tensor, torch.Tensor]:
    import inspect
    import textwrap

    src = "".join(inspect.getsource(m) for m in (json, gzip, textwrap))
    chars = sorted(set(src))
    ids = torch.tensor([chars.index(c) for c in src], dtype=torch.long)
    ctx = 8
    n = min(len(ids) - ctx - 1, 20000)
    x = torch.stack([ids[i : i + ctx] for i in range(n)])
    y = ids[ctx : ctx + n]
    return x, y


class CharMLP(nn.Module):
    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 16)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(128, 128), nn.Tanh())
        self.out = nn.Linear(128, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.out(self.net(self.emb(x)))
        return out


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Unflatten(1, (1, 8, 8)),
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(16 * 16, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


def warmup_cosine(total: int, warm: int) -> Callable[[int], float]:
    def f(t: int) -> float:
        if t < warm:
            return (t + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * (t - warm) / max(1, total - warm)))

    return f


# name -> (data, model factory, loss, optimizer name, steps, batch, schedule)
TASKS: dict[str, dict[str, Any]] = {
    "logreg_blobs_sgd": {
        "data": _blobs,
        "model": lambda: nn.Linear(20, 5),
        "loss": "ce",
        "opt": "sgd",
        "steps": 400,
    },
    "mlp_digits_adam": {
        "data": _digits,
        "model": lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
        "loss": "ce",
        "opt": "adam",
        "steps": 600,
    },
    "mlp_digits_sgdm": {
        "data": _digits,
        "model": lambda: nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
        "loss": "ce",
        "opt": "sgdm",
        "steps": 600,
    },
    "linreg_illcond_sgd": {
        "data": _illcond,
        "model": lambda: nn.Linear(16, 1),
        "loss": "mse",
        "opt": "sgd",
        "steps": 400,
    },
    "cnn_digits_adam_cosine": {
        "data": _digits,
        "model": SmallCNN,
        "loss": "ce",
        "opt": "adam",
        "steps": 500,
        "schedule": warmup_cosine(500, 50),
    },
    "mlp_sinreg_adam": {
        "data": _sinreg,
        "model": lambda: nn.Sequential(
            nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)
        ),
        "loss": "mse",
        "opt": "adam",
        "steps": 600,
    },
    "charmlp_adamw": {
        "data": _text,
        "model": None,
        "loss": "ce",
        "opt": "adamw",
        "steps": 600,
        "batch": 64,
    },
    "autoenc_digits_rmsprop": {
        "data": _digits,
        "model": lambda: nn.Sequential(
            nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 64), nn.Sigmoid()
        ),
        "loss": "ae",
        "opt": "rmsprop",
        "steps": 500,
    },
}


def run_one(name: str, spec: dict[str, Any], lr: float, seed: int) -> dict[str, Any]:
    x, y = spec["data"]()
    n_val = len(x) // 5
    xv, yv, xt, yt = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    torch.manual_seed(seed)
    if spec["model"] is None:
        model: nn.Module = CharMLP(int(y.max()) + 1)
    else:
        model = spec["model"]()
    kind = spec["loss"]
    lf: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    if kind == "ce":
        lf = lambda out, xb, yb: nn.functional.cross_entropy(out, yb)  # noqa: E731
    elif kind == "mse":
        lf = lambda out, xb, yb: nn.functional.mse_loss(out, yb)  # noqa: E731
    else:
        lf = lambda out, xb, yb: nn.functional.mse_loss(out, xb)  # noqa: E731
    opt_name = spec["opt"]
    params = model.parameters()
    opt: torch.optim.Optimizer
    if opt_name == "sgd":
        opt = torch.optim.SGD(params, lr=lr)
    elif opt_name == "sgdm":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    elif opt_name == "adam":
        opt = torch.optim.Adam(params, lr=lr)
    elif opt_name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    else:
        opt = torch.optim.RMSprop(params, lr=lr)
    sched = spec.get("schedule")
    steps = spec["steps"]
    batch = spec.get("batch", 32)
    g = torch.Generator().manual_seed(1000 + seed)
    train_loss: list[float] = []
    grad_norm: list[float] = []
    val_steps: list[int] = []
    val_loss: list[float] = []
    val_every = 25
    perm = torch.randperm(len(xt), generator=g)
    pos = 0
    for t in range(steps):
        if sched is not None:
            for group in opt.param_groups:
                group["lr"] = lr * sched(t)
        if pos + batch > len(xt):
            perm = torch.randperm(len(xt), generator=g)
            pos = 0
        idx = perm[pos : pos + batch]
        pos += batch
        xb, yb = xt[idx], yt[idx]
        model.train()
        loss = lf(model(xb), xb, yb)
        opt.zero_grad()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
        lv = float(loss)
        train_loss.append(lv)
        grad_norm.append(float(gn))
        if not math.isfinite(lv):
            break
        opt.step()
        if (t + 1) % val_every == 0 or t == steps - 1:
            model.eval()
            with torch.no_grad():
                v = float(lf(model(xv), xv, yv))
            val_steps.append(t)
            val_loss.append(v)
    finite = [v for v in train_loss if math.isfinite(v)]
    start = float(np.median(train_loss[:5]))
    end = (
        float(np.median(train_loss[-10:]))
        if len(finite) == len(train_loss)
        else math.nan
    )
    diverged = not math.isfinite(end) or end > start
    return {
        "lr": lr,
        "seed": seed,
        "train_loss": train_loss,
        "grad_norm": grad_norm,
        "val_steps": val_steps,
        "val_loss": val_loss,
        "diverged": bool(diverged),
        "final_val_loss": val_loss[-1]
        if val_loss and len(val_steps) and val_steps[-1] == steps - 1
        else math.nan,
    }


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    names = sys.argv[1:] or list(TASKS)
    for name in names:
        spec = TASKS[name]
        runs = [run_one(name, spec, lr, s) for lr in LRS for s in SEEDS]
        finals: dict[float, list[float]] = {}
        for r in runs:
            finals.setdefault(r["lr"], []).append(r["final_val_loss"])
        means = {
            lr: float(np.mean(v)) if all(math.isfinite(x) for x in v) else math.inf
            for lr, v in finals.items()
        }
        best_lr = min(means, key=lambda k: means[k])
        record = {
            "task": name,
            "description": f"tuning corpus: {name}",
            "budget_steps": spec["steps"],
            "family": spec["opt"],
            "val_every": 25,
            "best_lr": best_lr,
            "runs": runs,
        }
        text = json.dumps(record, allow_nan=True)
        with gzip.open(OUT / f"{name}.json.gz", "wt") as fh:
            fh.write(text)
        print(name, "best_lr", best_lr, flush=True)


if __name__ == "__main__":
    main()
