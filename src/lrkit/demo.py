"""The embedded demo task of ``lrkit find``: handwritten digits and a small MLP.

The data (1,797 8x8 digit images, 45 KB) ships inside the package, so the demo
runs anywhere without a download. :func:`make_task` follows the task-factory
protocol of ``lrkit find module:factory``: it returns a mapping with ``model``,
``optimizer``, ``loss_fn``, ``train_loader`` and ``val_loader``.

Example:
    >>> from lrkit.demo import load_digits, make_task
    >>> images, labels = load_digits()
    >>> images.shape, int(labels.max())
    ((1797, 64), 9)
    >>> sorted(make_task())
    ['loss_fn', 'model', 'optimizer', 'train_loader', 'val_loader']
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["load_digits", "make_task"]

SPLIT_SEED = 1234
VAL_FRAC = 0.2


def load_digits() -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """The bundled digits: images scaled to [0, 1] (shape (1797, 64)) and labels."""
    with resources.files("lrkit.data").joinpath("digits.npz").open("rb") as f:
        data = np.load(f)
        images = data["images"].astype(np.float32) / 16.0
        labels = data["labels"].astype(np.int64)
    return images, labels


def make_task(seed: int = 0) -> dict[str, Any]:
    """Build the demo task: an MLP 64-128-64-10 trained with SGD (momentum 0.9).

    Args:
        seed: seeds the model initialisation and the shuffling order (the
            train/validation split is fixed).

    Returns:
        ``{"model", "optimizer", "loss_fn", "train_loader", "val_loader"}``; the
        optimizer is built at a beginner's LR of 0.01, which the range test
        overrides and restores.
    """
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    images, labels = load_digits()
    perm = np.random.RandomState(SPLIT_SEED).permutation(len(labels))
    n_val = round(VAL_FRAC * len(labels))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    x = torch.from_numpy(images)
    y = torch.from_numpy(labels)
    gen = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(
        TensorDataset(x[train_idx], y[train_idx]),
        batch_size=32,
        shuffle=True,
        drop_last=True,
        generator=gen,
    )
    val_loader = DataLoader(TensorDataset(x[val_idx], y[val_idx]), batch_size=128)
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 10)
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    return {
        "model": model,
        "optimizer": optimizer,
        "loss_fn": nn.functional.cross_entropy,
        "train_loader": train_loader,
        "val_loader": val_loader,
    }
