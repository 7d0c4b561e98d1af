"""A held-out group of tasks: never used to choose or tune the suggestion rule.

Every constant of ``lrkit.suggest`` was chosen on the suite (``tasks.py``) and
the public tasks of ``../shared/bench`` before these tasks existed (rule as of
commit 8264dfc). They differ from both in data, model and optimizer: two
classic synthetic problems (moons, circles), Friedman #3 regression, breast
cancer with a linear model, digits with dropout, a convolutional character
model; Adagrad, NAdam, Adamax, SGD with Nesterov momentum and weight decay,
plain SGD, Adam. Their regret is reported as its own group, to show how the
rule does on tasks it was not fitted to; a change to the rule that is judged
on them stops them being held out (say so when it happens).

Each task is ``make(seed) -> TaskInstance``; the registry is ``HOLDOUT``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .tasks import (
    MakeOptimizer,
    Tensors,
    _classification,
    _instance,
    _standardize,
    _tensors,
    cross_entropy,
    digits_data,
    lm_cross_entropy,
    mlp,
    mse,
    pydoc_chars,
    sgd,
)
from .train import TaskInstance


# ------------------------------------------------------------------ data
@functools.cache
def moons_data() -> Tensors:
    """Two moons (noise 0.3), 1000 train, 500 val."""
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=1500, noise=0.3, random_state=5)
    return _tensors(x[:1000], y[:1000], x[1000:], y[1000:], y_float=False)


@functools.cache
def circles_data() -> Tensors:
    """Two noisy concentric circles (radius ratio 0.5, noise 0.15), 800 / 400."""
    from sklearn.datasets import make_circles

    x, y = make_circles(n_samples=1200, noise=0.15, factor=0.5, random_state=9)
    return _tensors(x[:800], y[:800], x[800:], y[800:], y_float=False)


@functools.cache
def friedman3_data() -> Tensors:
    """Friedman #3 (4 features, noise 0.1), standardized X and y, 1200 / 400."""
    from sklearn.datasets import make_friedman3

    x, y = make_friedman3(n_samples=1600, noise=0.1, random_state=3)
    y = y[:, None]
    xtr, xva = _standardize(x[:1200], x[1200:])
    ytr, yva = _standardize(y[:1200], y[1200:])
    return _tensors(xtr, ytr, xva, yva, y_float=True)


@functools.cache
def breast_cancer_data() -> Tensors:
    from sklearn.datasets import load_breast_cancer

    return _classification(load_breast_cancer, scale=True)


# ------------------------------------------------------------------ models
class ResMLP(nn.Module):
    """Linear in, ``blocks`` pre-LayerNorm residual blocks (Linear-GELU-Linear),
    LayerNorm, linear head."""

    def __init__(self, d_in: int, d: int, d_out: int, blocks: int) -> None:
        super().__init__()
        self.inp = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
            for _ in range(blocks)
        )
        self.out = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for block in self.blocks:
            h = h + block(h)
        return self.out(h)


class CharCNN(nn.Module):
    """Causal convolutional character model: embedding, two left-padded
    convolutions (kernel 3, dilation 1 then 2) with ReLU, per-position head."""

    def __init__(self, vocab: int, emb: int = 32, channels: int = 64) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.c1 = nn.Conv1d(emb, channels, 3)
        self.c2 = nn.Conv1d(channels, channels, 3, dilation=2)
        self.head = nn.Linear(channels, vocab)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        h = self.emb(idx).transpose(1, 2)  # (batch, emb, time)
        h = torch.relu(self.c1(nn.functional.pad(h, (2, 0))))
        h = torch.relu(self.c2(nn.functional.pad(h, (4, 0))))
        return self.head(h.transpose(1, 2))


# ------------------------------------------------------------------ optimizers
def _torch_optimizer(cls: Callable[..., torch.optim.Optimizer]) -> MakeOptimizer:
    def make(params: Any, lr: float) -> torch.optim.Optimizer:
        return cls(params, lr=lr)

    return make


# ------------------------------------------------------------------ the tasks
def make_ho_moons_mlp_tanh_adagrad(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "ho_moons_mlp_tanh_adagrad",
        seed,
        mlp([2, 32, 32, 2], act=nn.Tanh),
        moons_data(),
        batch=32,
        budget=400,
        optimizer=(_torch_optimizer(torch.optim.Adagrad), "Adagrad"),
        loss_fn=cross_entropy,
        family="adam",
        description="two moons (noise 0.3), MLP 2-32-32-2 tanh, Adagrad, batch 32",
    )


def make_ho_breast_logreg_adam(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "ho_breast_logreg_adam",
        seed,
        nn.Linear(30, 2),
        breast_cancer_data(),
        batch=32,
        budget=300,
        optimizer=(_torch_optimizer(torch.optim.Adam), "Adam"),
        loss_fn=cross_entropy,
        family="adam",
        description="breast cancer (standardized), logistic regression 30->2, Adam, "
        "batch 32",
    )


def make_ho_digits_mlp_dropout_nadam(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 128),
        nn.GELU(),
        nn.Dropout(0.2),
        nn.Linear(128, 128),
        nn.GELU(),
        nn.Dropout(0.2),
        nn.Linear(128, 10),
    )
    return _instance(
        "ho_digits_mlp_dropout_nadam",
        seed,
        model,
        digits_data(),
        batch=32,
        budget=400,
        optimizer=(_torch_optimizer(torch.optim.NAdam), "NAdam"),
        loss_fn=cross_entropy,
        family="adam",
        description="digits, MLP 64-128-128-10 GELU with dropout 0.2, NAdam, batch 32",
    )


def make_ho_friedman3_mlp_bn_sgdn(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "ho_friedman3_mlp_bn_sgdn",
        seed,
        mlp([4, 64, 64, 1], norm=nn.BatchNorm1d),
        friedman3_data(),
        batch=64,
        budget=400,
        optimizer=(
            sgd(0.9, 1e-4, nesterov=True),
            "SGD(momentum=0.9, nesterov=True, weight_decay=1e-4)",
        ),
        loss_fn=mse,
        family="sgd",
        momentum=0.9,
        weight_decay=1e-4,
        has_batchnorm=True,
        description="Friedman #3 (standardized X, y), MLP 4-64-64-1 with BatchNorm, "
        "MSE, SGD Nesterov 0.9 wd 1e-4, batch 64",
    )


def make_ho_pydoc_charcnn_adamax(seed: int) -> TaskInstance:
    vocab, data = pydoc_chars(32)
    torch.manual_seed(seed)
    return _instance(
        "ho_pydoc_charcnn_adamax",
        seed,
        CharCNN(vocab),
        data,
        batch=32,
        budget=300,
        optimizer=(_torch_optimizer(torch.optim.Adamax), "Adamax"),
        loss_fn=lm_cross_entropy,
        family="adam",
        val_batch=256,
        description="char-level LM on pydoc_data.topics, causal CNN emb 32, two "
        "convolutions of 64 (kernel 3, dilation 1, 2), ctx 32, Adamax, batch 32",
    )


def make_ho_circles_resmlp_ln_sgd(seed: int) -> TaskInstance:
    torch.manual_seed(seed)
    return _instance(
        "ho_circles_resmlp_ln_sgd",
        seed,
        ResMLP(2, 64, 2, blocks=3),
        circles_data(),
        batch=16,
        budget=500,
        optimizer=(sgd(), "SGD"),
        loss_fn=cross_entropy,
        family="sgd",
        description="two circles (noise 0.15), residual MLP width 64, 3 pre-LayerNorm "
        "blocks, plain SGD, batch 16",
    )


HOLDOUT: dict[str, Callable[[int], TaskInstance]] = {
    "ho_moons_mlp_tanh_adagrad": make_ho_moons_mlp_tanh_adagrad,
    "ho_breast_logreg_adam": make_ho_breast_logreg_adam,
    "ho_digits_mlp_dropout_nadam": make_ho_digits_mlp_dropout_nadam,
    "ho_friedman3_mlp_bn_sgdn": make_ho_friedman3_mlp_bn_sgdn,
    "ho_pydoc_charcnn_adamax": make_ho_pydoc_charcnn_adamax,
    "ho_circles_resmlp_ln_sgd": make_ho_circles_resmlp_ln_sgd,
}
