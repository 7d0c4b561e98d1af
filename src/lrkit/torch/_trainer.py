"""What the trainer adapters (Lightning, Hugging Face) share on the torch side.

:func:`scalar` reads a loss, :func:`grad_norm` the total gradient norm, and
:class:`StepUndo` makes a step the :class:`~lrkit.torch.Guard` rejected change
nothing when the trainer runs ``optimizer.step()`` regardless.

Example:
    >>> import torch
    >>> m = torch.nn.Linear(2, 1)
    >>> m(torch.ones(1, 2)).sum().backward()  # grads: weight (1, 1), bias 1
    >>> round(grad_norm(m) ** 2, 6), scalar(torch.tensor([2.5])), scalar("x")
    (3.0, 2.5, None)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch

from .. import _check
from .._watch import config_from_dict, monitor_json, settings_key
from ._groups import get_lr, set_lr
from .state import Snapshot, snapshot

__all__ = [
    "StepUndo",
    "grad_norm",
    "guard_settings",
    "mean_over_ranks",
    "scalar",
    "step_loss",
]


def scalar(value: Any) -> float | None:
    """A float from a one-element tensor or a real number; None otherwise."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        return float(value.detach().float().item())
    if _check.is_real(value):
        return float(value)
    return None


def grad_norm(module: torch.nn.Module) -> float | None:
    """The total 2-norm of the module's gradients (one device sync), or None."""
    norms = [
        torch.linalg.vector_norm(p.grad.detach(), dtype=torch.float32)
        for p in module.parameters()
        if p.grad is not None
    ]
    if not norms:
        return None
    if len({n.device for n in norms}) > 1:  # model parallel: gather first
        norms = [n.cpu() for n in norms]
    return float(torch.linalg.vector_norm(torch.stack(norms)).item())


class StepUndo:
    """Make the coming ``optimizer.step()`` change nothing.

    A trainer clips, unscales and steps after the guard has restored a
    snapshot (it cannot skip its own step), and torch clipping and GradScaler
    want gradients. :meth:`arm` copies the state as the guard left it and
    gives every parameter a zero gradient; :meth:`undo`, after the step, writes
    the copy back (optimizer moments and step counts, the GradScaler) and
    drops it. The param groups' LRs are kept as they are
    at :meth:`undo`: a scheduler the trainer stepped in between (Lightning
    steps an epoch's scheduler before ``on_train_batch_end``) keeps its move.
    """

    def __init__(self) -> None:
        self._copy: Snapshot | None = None
        self._optimizer: torch.optim.Optimizer | None = None

    def arm(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scaler: Any = None,
    ) -> None:
        objects = {} if scaler is None else {"scaler": scaler}
        self._copy = snapshot(model, optimizer, objects=objects, rng=False)
        self._optimizer = optimizer
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    p.grad = torch.zeros_like(p)

    def undo(self) -> None:
        if self._copy is None or self._optimizer is None:
            return
        groups = self._optimizer.param_groups
        lrs = [get_lr(g) for g in groups]
        self._copy.restore()
        for g, lr in zip(groups, lrs, strict=True):
            set_lr(g, lr)
        self._copy.discard()
        self._copy = None


def step_loss(micro: list[float], *, summed: bool = False) -> float:
    """One optimizer step's loss from its micro-batches' (non-empty): their
    mean, or their sum when each is already divided by the step's item count
    (``summed``); the first non-finite one when there is one."""
    bad = [m for m in micro if not math.isfinite(m)]
    if bad:
        return bad[0]
    total = math.fsum(micro)
    return total if summed else total / len(micro)


_OWN = (
    "model",
    "optimizer",
    "scheduler",
    "scaler",
    "loaders",
    "skip_batches",
    "first_step",  # the trainer's own step count (a checkpoint's when resumed)
)


def guard_settings(settings: Mapping[str, Any], trainer: str) -> dict[str, Any]:
    """Check the :class:`~lrkit.torch.Guard` keyword arguments a trainer
    callback takes (not the objects it takes from ``trainer``, nor
    ``skip_batches``: the trainer owns the loop) by building a guard on a
    throwaway module now, not when training starts; return them."""
    import difflib
    import inspect

    from .guard import Guard

    names = list(inspect.signature(Guard).parameters)
    allowed = [n for n in names if n not in _OWN]
    for name, value in settings.items():
        if name not in names:  # a misspelt setting: the valid names
            close = difflib.get_close_matches(name, ["val_key", *allowed], n=1)
            _check.fail(
                name,
                "a GuardCallback setting (val_key, or a lrkit.torch.Guard "
                f"setting: {', '.join(allowed)})",
                value,
                f"Did you mean {close[0]}?" if close else None,
                exc=TypeError,
            )
    for name in _OWN:
        if name in settings:
            why = "; the trainer owns the loop" if name == "skip_batches" else ""
            _check.fail(
                name,
                f"left out (the callback takes it from {trainer}{why})",
                settings[name],
                exc=TypeError,
            )
    settings = dict(settings)
    if isinstance(settings.get("monitor"), dict):  # MonitorConfig settings (JSON)
        settings["monitor"] = config_from_dict("monitor", settings["monitor"])
    probe = torch.nn.Linear(1, 1)
    Guard(probe, torch.optim.SGD(probe.parameters(), lr=0.1), **settings).close()
    return settings


def settings_json(settings: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Checked guard settings as JSON (a callback's arguments saved with a
    Hugging Face checkpoint): the monitor as its config's dict, sequences as
    lists, paths as strings; and the names of those JSON cannot hold (the
    ``objects``, whose state the guard snapshots), left out."""
    out: dict[str, Any] = {}
    dropped: list[str] = []
    for k, v in settings.items():
        if k == "monitor":
            v = monitor_json(v)
        elif isinstance(v, (tuple, list, frozenset, set)):
            v = list(v)
        elif isinstance(v, os.PathLike):
            v = os.fspath(v)
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            dropped.append(k)
            continue
        out[k] = v
    return out, dropped


def guard_identity(
    val_key: str, settings: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str], str]:
    """A guard callback's arguments as JSON (``val_key`` and its
    :func:`settings_json`), the names left out, and the key that tells two
    such callbacks apart in a checkpoint (:func:`lrkit._watch.settings_key`)."""
    args, not_json = settings_json(settings)
    args = {"val_key": val_key, **args}
    return args, not_json, settings_key({**args, "objects": sorted(not_json)})


def mean_over_ranks(
    loss: float,
    val: float | None,
    device: torch.device,
    reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    world: int,
) -> tuple[float, float | None]:
    """The mean over ranks of a step's loss, and of the validation loss over
    the ranks that have one: what every rank's guard is fed, so that the
    guards decide alike and all ranks restore the same step together (their
    snapshots are of the same replicated state; the gradient norm is read
    after the gradients were averaged). One all-reduce (``reduce_sum``) of
    three numbers."""
    has_val = val is not None and math.isfinite(val)
    both = torch.tensor(
        [loss, val if has_val and val is not None else 0.0, 1.0 if has_val else 0.0],
        dtype=torch.float64,
        device=device,
    )
    total = reduce_sum(both).tolist()
    return float(total[0] / world), (total[1] / total[2] if total[2] > 0 else None)
