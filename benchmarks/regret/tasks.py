"""The regret suite: small real training tasks, a few seconds each on one CPU thread.

Data comes only from installed packages (scikit-learn's bundled data sets and
Python's ``pydoc_data.topics`` text); the two synthetic tasks are synthetic by
nature (Friedman #1 regression, the two-spirals problem). Every train/validation
split is fixed by ``SPLIT_SEED`` and independent of the run seed; the run seed
sets the model's initialisation and the shuffling order.

Each task is ``make(seed) -> TaskInstance``; the registry is ``TASKS``.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .train import TaskInstance, make_loader

SPLIT_SEED = 2024
VAL_FRAC = 0.25

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
MakeOptimizer = Callable[[Any, float], torch.optim.Optimizer]


# ------------------------------------------------------------------ data
def _split(n: int, val_frac: float = VAL_FRAC) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.RandomState(SPLIT_SEED).permutation(n)
    n_val = round(val_frac * n)
    return perm[n_val:], perm[:n_val]


def _standardize(xtr: np.ndarray, xva: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu = xtr.mean(0, keepdims=True)
    sd = xtr.std(0, keepdims=True) + 1e-8
    return (xtr - mu) / sd, (xva - mu) / sd


def _tensors(xtr: Any, ytr: Any, xva: Any, yva: Any, y_float: bool) -> Tensors:
    ydt = torch.float32 if y_float else torch.int64
    return (
        torch.tensor(xtr, dtype=torch.float32),
        torch.tensor(ytr, dtype=ydt),
        torch.tensor(xva, dtype=torch.float32),
        torch.tensor(yva, dtype=ydt),
    )


def _classification(load: Callable[[], Any], scale: bool) -> Tensors:
    d = load()
    x = d.data.astype(np.float64)
    y = d.target.astype(np.int64)
    tr, va = _split(len(y))
    xtr, xva = x[tr], x[va]
    if scale:
        xtr, xva = _standardize(xtr, xva)
    return _tensors(xtr, y[tr], xva, y[va], y_float=False)


@functools.cache
def wine_data() -> Tensors:
    from sklearn.datasets import load_wine

    return _classification(load_wine, scale=True)


@functools.cache
def iris_data() -> Tensors:
    from sklearn.datasets import load_iris

    return _classification(load_iris, scale=True)


@functools.cache
def digits_data() -> Tensors:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.data.astype(np.float64) / 16.0
    y = d.target.astype(np.int64)
    tr, va = _split(len(y))
    return _tensors(x[tr], y[tr], x[va], y[va], y_float=False)


@functools.cache
def diabetes_data() -> Tensors:
    from sklearn.datasets import load_diabetes

    d = load_diabetes(scaled=False)
    x = d.data.astype(np.float64)
    y = d.target.astype(np.float64)[:, None]
    tr, va = _split(len(y))
    xtr, xva = _standardize(x[tr], x[va])
    ytr, yva = _standardize(y[tr], y[va])
    return _tensors(xtr, ytr, xva, yva, y_float=True)


@functools.cache
def friedman1_data() -> Tensors:
    """Friedman #1 (10 features, 5 informative, noise sd 1), 1200 train, 400 val."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=1600, n_features=10, noise=1.0, random_state=7)
    y = y[:, None]
    xtr, xva, ytr, yva = x[:1200], x[1200:], y[:1200], y[1200:]
    xtr, xva = _standardize(xtr, xva)
    ytr, yva = _standardize(ytr, yva)
    return _tensors(xtr, ytr, xva, yva, y_float=True)


@functools.cache
def spirals_data() -> Tensors:
    """Two interleaved spirals (1.5 turns), 800 train, 400 val.

    The Gaussian noise (sd 0.8; neighbouring arms are pi apart) makes the
    classes overlap, so the best validation loss stays well above zero (the
    regret ratio L / L* is degenerate when L* tends to 0)."""
    rng = np.random.RandomState(11)
    n = 600  # per class
    theta = np.sqrt(rng.rand(2 * n)) * 3 * math.pi
    cls = np.repeat([0, 1], n)
    sign = np.where(cls == 0, 1.0, -1.0)
    x = np.stack([sign * theta * np.cos(theta), sign * theta * np.sin(theta)], 1)
    x = x + rng.randn(2 * n, 2) * 0.8
    x = x / 10.0
    perm = rng.permutation(2 * n)
    x, cls = x[perm], cls[perm]
    return _tensors(x[:800], cls[:800], x[800:], cls[800:], y_float=False)


@functools.cache
def _pydoc_text() -> str:
    import pydoc_data.topics as topics

    return "".join(topics.topics[k] for k in sorted(topics.topics))


def _windows(
    ids: torch.Tensor, ctx: int, val_frac: float, n_val: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train: the first (1 - val_frac) of the stream cut into non-overlapping
    windows of ctx + 1 tokens; val: ``n_val`` evenly spaced windows of the tail."""
    n_tr = int(len(ids) * (1 - val_frac))

    def cut(stream: torch.Tensor) -> torch.Tensor:
        nw = (len(stream) - 1) // ctx
        idx = torch.arange(nw)[:, None] * ctx + torch.arange(ctx + 1)[None, :]
        return stream[idx]

    wtr, wva = cut(ids[:n_tr]), cut(ids[n_tr:])
    sel = torch.linspace(0, len(wva) - 1, min(n_val, len(wva))).round().long()
    wva = wva[sel]
    return (
        wtr[:, :-1].contiguous(),
        wtr[:, 1:].contiguous(),
        wva[:, :-1].contiguous(),
        wva[:, 1:].contiguous(),
    )


@functools.cache
def pydoc_chars(ctx: int) -> tuple[int, Tensors]:
    text = _pydoc_text()
    vocab = sorted(set(text))
    stoi = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.int64)
    return len(vocab), _windows(ids, ctx, 0.1, 128)


@functools.cache
def pydoc_words(ctx: int, vocab_size: int) -> tuple[int, Tensors]:
    """Lower-cased word/number/punctuation tokens; the ``vocab_size - 1`` most
    frequent ones in the training part, all others mapped to one unknown id."""
    toks = re.findall(r"[a-z_]+|[0-9]+|[^\sa-z_0-9]", _pydoc_text().lower())
    n_tr = int(len(toks) * 0.9)
    common = Counter(toks[:n_tr]).most_common(vocab_size - 1)
    stoi = {w: i + 1 for i, (w, _) in enumerate(sorted(common))}
    ids = torch.tensor([stoi.get(w, 0) for w in toks], dtype=torch.int64)
    return vocab_size, _windows(ids, ctx, 0.1, 128)


# ------------------------------------------------------------------ models
def mlp(
    sizes: list[int],
    act: Callable[[], nn.Module] = nn.ReLU,
    norm: Callable[[int], nn.Module] | None = None,
) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            if norm is not None:
                layers.append(norm(sizes[i + 1]))
            layers.append(act())
    return nn.Sequential(*layers)


class BNConvNet(nn.Module):
    """conv16-BN-ReLU, conv32-BN-ReLU, maxpool, conv32-BN-ReLU, global avg pool, fc."""

    def __init__(self) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
            ]

        self.net = nn.Sequential(
            *block(1, 16),
            *block(16, 32),
            nn.MaxPool2d(2),
            *block(32, 32),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(32, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.view(-1, 1, 8, 8))


class RowLSTM(nn.Module):
    """Reads an 8x8 digit row by row (8 steps of 8 pixels); classifies the end."""

    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.lstm = nn.LSTM(8, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.view(-1, 8, 8))
        return self.head(out[:, -1])


class CharGRU(nn.Module):
    def __init__(self, vocab: int, emb: int = 32, hidden: int = 128) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.gru = nn.GRU(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.emb(idx))
        return self.head(out)


class Block(nn.Module):
    """Pre-LayerNorm causal self-attention block."""

    def __init__(self, d: int, heads: int, ctx: int) -> None:
        super().__init__()
        self.heads = heads
        mask = torch.triu(torch.ones(ctx, ctx, dtype=torch.bool), 1)
        self.register_buffer("mask", mask, persistent=False)
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        h = self.heads
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q = q.view(b, t, h, c // h).transpose(1, 2)
        k = k.view(b, t, h, c // h).transpose(1, 2)
        v = v.view(b, t, h, c // h).transpose(1, 2)
        # explicit attention: faster than SDPA on one CPU thread at this size
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(c // h))
        att = att.masked_fill(self.mask[:t, :t], float("-inf")).softmax(-1)
        x = x + self.proj((att @ v).transpose(1, 2).reshape(b, t, c))
        return x + self.ff(self.ln2(x))


class WordTransformer(nn.Module):
    def __init__(self, vocab: int, ctx: int, d: int = 64, layers: int = 2) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Embedding(ctx, d)
        self.blocks = nn.Sequential(*[Block(d, 4, ctx) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        x = self.tok(idx) + self.pos(torch.arange(t))
        return self.head(self.ln(self.blocks(x)))


# ------------------------------------------------------------------ losses
def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def lm_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out, y)


# ------------------------------------------------------------------ optimizers
def sgd(
    momentum: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False
) -> MakeOptimizer:
    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.SGD(
            params,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
        )

    return make


def adam() -> MakeOptimizer:
    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr)

    return make


def adamw(
    weight_decay: float, betas: tuple[float, float] = (0.9, 0.999)
) -> MakeOptimizer:
    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=betas)

    return make


def rmsprop() -> MakeOptimizer:
    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(params, lr=lr)

    return make


def _instance(
    name: str,
    seed: int,
    model: nn.Module,
    data: Tensors,
    *,
    batch: int,
    budget: int,
    optimizer: tuple[Callable[[Any, float], torch.optim.Optimizer], str],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    family: str,
    description: str,
    val_batch: int = 512,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    decoupled_wd: bool = False,
    has_batchnorm: bool = False,
) -> TaskInstance:
    xtr, ytr, xva, yva = data
    make_opt, opt_desc = optimizer
    return TaskInstance(
        name=name,
        seed=seed,
        model=model,
        make_optimizer=make_opt,
        loss_fn=loss_fn,
        train_loader=make_loader(
            xtr, ytr, batch, shuffle=True, seed=seed, drop_last=True
        ),
        val_loader=make_loader(xva, yva, val_batch, shuffle=False),
        budget_steps=budget,
        family=family,
        description=description,
        optimizer_desc=opt_desc,
        weight_decay=weight_decay,
        momentum=momentum,
        decoupled_wd=decoupled_wd,
        has_batchnorm=has_batchnorm,
    )


# ------------------------------------------------------------------ the suite
def make_wine_logreg_sgd(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "wine_logreg_sgd",
        seed,
        nn.Linear(13, 3),
        wine_data(),
        batch=16,
        budget=300,
        optimizer=(sgd(), "SGD"),
        loss_fn=cross_entropy,
        family="sgd",
        description="wine (standardized), logistic regression 13->3, plain SGD, "
        "batch 16",
    )


def make_diabetes_linreg_sgd(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "diabetes_linreg_sgd",
        seed,
        nn.Linear(10, 1),
        diabetes_data(),
        batch=16,
        budget=300,
        optimizer=(sgd(), "SGD"),
        loss_fn=mse,
        family="sgd",
        description="diabetes (standardized X, y), linear regression, MSE, plain SGD, "
        "batch 16",
    )


def make_digits_cnn_bn_sgdm(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "digits_cnn_bn_sgdm",
        seed,
        BNConvNet(),
        digits_data(),
        batch=64,
        budget=300,
        optimizer=(sgd(0.9, 5e-4), "SGD(momentum=0.9, weight_decay=5e-4)"),
        loss_fn=cross_entropy,
        family="sgd",
        momentum=0.9,
        weight_decay=5e-4,
        has_batchnorm=True,
        description="digits as 1x8x8 images, conv16-conv32-pool-conv32 with BatchNorm, "
        "global avg pool, SGD momentum 0.9 wd 5e-4, batch 64",
    )


def make_spirals_mlp_sgdm(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "spirals_mlp_sgdm",
        seed,
        mlp([2, 64, 64, 64, 2]),
        spirals_data(),
        batch=32,
        budget=600,
        optimizer=(sgd(0.9, nesterov=True), "SGD(momentum=0.9, nesterov=True)"),
        loss_fn=cross_entropy,
        family="sgd",
        momentum=0.9,
        description="two spirals (synthetic), MLP 2-64-64-64-2 ReLU, SGD Nesterov "
        "momentum 0.9, batch 32",
    )


def make_digits_mlp_bn_adam(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "digits_mlp_bn_adam",
        seed,
        mlp([64, 128, 128, 10], norm=nn.BatchNorm1d),
        digits_data(),
        batch=64,
        budget=300,
        optimizer=(adam(), "Adam"),
        loss_fn=cross_entropy,
        family="adam",
        has_batchnorm=True,
        description="digits, MLP 64-128-128-10 with BatchNorm, ReLU, Adam, batch 64",
    )


def make_pydoc_gru_charlm_adam(seed: int) -> TaskInstance:
    vocab, data = pydoc_chars(32)
    torch.manual_seed(seed)
    return _instance(
        "pydoc_gru_charlm_adam",
        seed,
        CharGRU(vocab, emb=32, hidden=96),
        data,
        batch=32,
        budget=200,
        optimizer=(adam(), "Adam"),
        loss_fn=lm_cross_entropy,
        family="adam",
        val_batch=256,
        description="char-level LM on pydoc_data.topics, GRU emb 32 hidden 96, "
        "ctx 32, Adam, batch 32",
    )


def make_pydoc_words_transformer_adamw(seed: int) -> TaskInstance:
    ctx = 24
    vocab, data = pydoc_words(ctx, 512)
    torch.manual_seed(seed)
    return _instance(
        "pydoc_words_transformer_adamw",
        seed,
        WordTransformer(vocab, ctx, d=48),
        data,
        batch=16,
        budget=200,
        optimizer=(
            adamw(0.1, (0.9, 0.95)),
            "AdamW(weight_decay=0.1, betas=(0.9, 0.95))",
        ),
        loss_fn=lm_cross_entropy,
        family="adam",
        weight_decay=0.1,
        decoupled_wd=True,
        val_batch=128,
        description="word-level LM on pydoc_data.topics (512-word vocab), pre-LN "
        "transformer d48 2 layers 4 heads, ctx 24, AdamW wd 0.1 betas (0.9, 0.95), "
        "batch 16",
    )


def make_friedman1_mlp_ln_adamw(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "friedman1_mlp_ln_adamw",
        seed,
        mlp([10, 64, 64, 1], act=nn.SiLU, norm=nn.LayerNorm),
        friedman1_data(),
        batch=32,
        budget=400,
        optimizer=(adamw(0.01), "AdamW(weight_decay=0.01)"),
        loss_fn=mse,
        family="adam",
        weight_decay=0.01,
        decoupled_wd=True,
        description="Friedman #1 regression (synthetic), MLP 10-64-64-1 with "
        "LayerNorm, SiLU, MSE, AdamW wd 0.01, batch 32",
    )


def make_iris_mlp_rmsprop(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "iris_mlp_rmsprop",
        seed,
        mlp([4, 32, 32, 3], act=nn.Tanh),
        iris_data(),
        batch=16,
        budget=300,
        optimizer=(rmsprop(), "RMSprop"),
        loss_fn=cross_entropy,
        family="adam",
        description="iris (standardized), MLP 4-32-32-3 tanh, RMSprop, batch 16",
    )


def make_digits_rows_lstm_rmsprop(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "digits_rows_lstm_rmsprop",
        seed,
        RowLSTM(),
        digits_data(),
        batch=64,
        budget=300,
        optimizer=(rmsprop(), "RMSprop"),
        loss_fn=cross_entropy,
        family="adam",
        description="digits read row by row (8 steps x 8 pixels), LSTM 64, RMSprop, "
        "batch 64",
    )


TASKS: dict[str, Callable[[int], TaskInstance]] = {
    "wine_logreg_sgd": make_wine_logreg_sgd,
    "diabetes_linreg_sgd": make_diabetes_linreg_sgd,
    "digits_cnn_bn_sgdm": make_digits_cnn_bn_sgdm,
    "spirals_mlp_sgdm": make_spirals_mlp_sgdm,
    "digits_mlp_bn_adam": make_digits_mlp_bn_adam,
    "pydoc_gru_charlm_adam": make_pydoc_gru_charlm_adam,
    "pydoc_words_transformer_adamw": make_pydoc_words_transformer_adamw,
    "friedman1_mlp_ln_adamw": make_friedman1_mlp_ln_adamw,
    "iris_mlp_rmsprop": make_iris_mlp_rmsprop,
    "digits_rows_lstm_rmsprop": make_digits_rows_lstm_rmsprop,
}


def all_tasks() -> dict[str, Callable[[int], TaskInstance]]:
    """The suite and the held-out group (``holdout.py``) together."""
    from .holdout import HOLDOUT

    return {**TASKS, **HOLDOUT}


def parse_tasks(spec: str | None) -> list[str]:
    """Comma-separated task names (None / "all": the suite; "holdout": the
    held-out group), validated."""
    if spec in (None, "", "all"):
        return list(TASKS)
    known = all_tasks()
    if spec == "holdout":
        return [n for n in known if n not in TASKS]
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for n in names:
        if n not in known:
            raise SystemExit(
                f"unknown task {n!r}; known: {', '.join(known)} "
                "(or all: the suite; holdout: the held-out group)"
            )
    return names
