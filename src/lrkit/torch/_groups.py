"""Reading and writing a param group's learning rate, float or tensor.

Optimizers may hold ``group["lr"]`` as a float or, for capturable/fused
optimizers, as a tensor; a tensor is written in place so references to it
(CUDA graphs, shared LRs) stay valid.

Example:
    >>> import torch
    >>> g = {"lr": torch.tensor(0.1)}
    >>> t = g["lr"]; set_lr(g, 0.5)
    >>> get_lr(g), g["lr"] is t
    (0.5, True)
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import torch

__all__ = ["get_lr", "set_lr"]


def get_lr(group: Mapping[str, Any]) -> float:
    """The group's LR as a float."""
    lr = group["lr"]
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


def set_lr(group: MutableMapping[str, Any], value: float) -> None:
    """Set the group's LR; a tensor LR is filled in place."""
    cur = group["lr"]
    if type(cur) is not float and isinstance(cur, torch.Tensor):
        cur.fill_(value)
    else:
        group["lr"] = value
