"""The task container, data loaders, evaluation and the training loop.

The oracle's numbers depend on this file and on ``tasks.py``; both enter the
oracle's cache key (see ``oracle.task_fingerprint``).

A run is *diverged* when the training loss is non-finite at any step, the final
validation loss is non-finite, or the final validation loss exceeds
``DIVERGE_FACTOR`` x the validation loss of the untrained model (same seed).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

DIVERGE_FACTOR = 1.5
WARMUP_FRAC = 0.05  # warmup+cosine oracle: linear warmup over 5% of the budget


@dataclass
class TaskInstance:
    """One freshly initialised instance of a task (model, data, optimizer recipe).

    The protocol every method sees: ``model``, ``make_optimizer(params, lr)``,
    ``loss_fn(output, target)`` (criterion style), ``train_loader`` and
    ``val_loader`` (torch DataLoaders yielding ``(x, y)``), ``budget_steps``,
    ``family`` ("sgd" or "adam": the Adam family includes RMSprop) and
    ``description``.
    """

    name: str
    seed: int
    model: nn.Module
    make_optimizer: Callable[[Any, float], torch.optim.Optimizer]
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_loader: DataLoader[Any]
    val_loader: DataLoader[Any]
    budget_steps: int
    family: str
    description: str
    optimizer_desc: str
    weight_decay: float = 0.0
    momentum: float = 0.0
    decoupled_wd: bool = False
    has_batchnorm: bool = False


# ------------------------------------------------------------------ loaders
class BatchTensorDataset(TensorDataset):
    """A TensorDataset a DataLoader fetches a whole batch from with one index.

    Still an ordinary map-style dataset (``len(ds)``, ``ds[i]`` work); the
    loader calls ``__getitems__`` with the batch's indices instead of indexing
    sample by sample and collating.
    """

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(idx)
        return tuple(t[index] for t in self.tensors)


def _identity_collate(batch: Any) -> Any:
    return batch


def make_loader(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader[Any]:
    """A real DataLoader yielding ``(x, y)`` tuples; shuffling seeded by ``seed``."""
    gen = None
    if shuffle:
        gen = torch.Generator()
        gen.manual_seed(1_000 + seed)
    return DataLoader(
        BatchTensorDataset(x, y),
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=drop_last,
        generator=gen,
        collate_fn=_identity_collate,
    )


def infinite_batches(loader: DataLoader[Any]) -> Iterator[Any]:
    """Iterate a loader forever (a fresh shuffle each epoch)."""
    while True:
        n = 0
        for batch in loader:
            n += 1
            yield batch
        if n == 0:
            raise RuntimeError("empty loader")


# ------------------------------------------------------------------ evaluation
@torch.no_grad()
def evaluate(inst: TaskInstance) -> float:
    """Mean validation loss over the validation loader (model in eval mode)."""
    model = inst.model
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in inst.val_loader:
        n = int(y.shape[0])
        total += float(inst.loss_fn(model(x), y)) * n
        count += n
    model.train(was_training)
    return total / count


def lr_at(step: int, total_steps: int, peak_lr: float, schedule: str) -> float:
    """LR of optimizer step ``step`` (0-based) of ``total_steps``.

    ``constant``: ``peak_lr``. ``cosine``: linear warmup over
    ``w = max(1, round(0.05 * total_steps))`` steps,
    ``peak_lr * (step + 1) / w``, then ``peak_lr * (1 + cos(pi * p)) / 2`` with
    ``p = (step - w) / (total_steps - w)`` (reaches 0 after the last step).
    """
    if schedule == "constant":
        return peak_lr
    if schedule == "cosine":
        warm = max(1, round(WARMUP_FRAC * total_steps))
        if step < warm:
            return peak_lr * (step + 1) / warm
        progress = (step - warm) / max(1, total_steps - warm)
        return peak_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule must be 'constant' or 'cosine', got {schedule!r}")


def grad_norm(params: list[torch.Tensor]) -> float:
    """Total L2 norm of the gradients of ``params`` (those that have one)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    norms = torch._foreach_norm(grads)
    return float(torch.linalg.vector_norm(torch.stack(norms)))


def _round(x: float, digits: int = 5) -> float | None:
    if not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def train_run(
    inst: TaskInstance,
    lr: float | None,
    schedule: str = "constant",
    *,
    optimizer: torch.optim.Optimizer | None = None,
    record_every: int = 0,
    before_eval: Callable[[], None] | None = None,
    after_eval: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train ``inst.model`` for ``inst.budget_steps`` optimizer steps, then evaluate.

    Args:
        inst: a fresh task instance.
        lr: the (peak) learning rate; ignored when ``optimizer`` is given.
        schedule: "constant" or "cosine" (see ``lr_at``).
        optimizer: use this optimizer as is (LR-free optimizers).
        record_every: if > 0, record the per-step training loss and gradient
            norm and the validation loss every ``record_every`` steps (and at
            the first and last step); evaluation does not change the run.
        before_eval: called before each evaluation (schedule-free's ``eval()``).
        after_eval: called after each evaluation.

    Returns:
        ``init_loss``, ``final_loss`` (NaN when diverged on a non-finite loss),
        ``diverged``, ``reason``, ``steps_done``, ``wall_s`` and, when
        recording, ``train_loss``, ``grad_norm``, ``val_steps``, ``val_loss``.
    """
    t0 = time.perf_counter()
    model = inst.model
    steps = inst.budget_steps
    params = [p for p in model.parameters() if p.requires_grad]

    def _eval() -> float:
        if before_eval is not None:
            before_eval()
        value = evaluate(inst)
        if after_eval is not None:
            after_eval()
        return value

    init_loss = _eval()
    if optimizer is None:
        if lr is None:
            raise ValueError("lr is required without an optimizer")
        opt = inst.make_optimizer(params, lr_at(0, steps, lr, schedule))
    else:
        opt = optimizer
    record = record_every > 0
    train_curve: list[float | None] = []
    gnorm_curve: list[float | None] = []
    val_steps: list[int] = [0] if record else []
    val_curve: list[float | None] = [_round(init_loss)] if record else []
    model.train()
    batches = infinite_batches(inst.train_loader)
    diverged, reason, done = False, "", 0
    for t in range(steps):
        if optimizer is None and schedule != "constant":
            assert lr is not None
            cur = lr_at(t, steps, lr, schedule)
            for group in opt.param_groups:
                group["lr"] = cur
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = inst.loss_fn(model(x), y)
        value = float(loss.detach())
        if record:
            train_curve.append(_round(value))
        if not math.isfinite(value):
            diverged, reason = True, f"non-finite training loss at step {t}"
            if record:
                gnorm_curve.append(None)
            break
        loss.backward()
        if record:
            gnorm_curve.append(_round(grad_norm(params)))
        opt.step()
        done += 1
        if record and done < steps and done % record_every == 0:
            val_steps.append(done)
            val_curve.append(_round(_eval()))
    final_loss = float("nan")
    if not diverged:
        final_loss = _eval()
        if record:
            val_steps.append(done)
            val_curve.append(_round(final_loss))
        if not math.isfinite(final_loss):
            diverged, reason = True, "non-finite final validation loss"
        elif final_loss > DIVERGE_FACTOR * init_loss:
            diverged, reason = True, f"final val loss > {DIVERGE_FACTOR} x untrained"
    out: dict[str, Any] = {
        "init_loss": init_loss,
        "final_loss": final_loss,
        "diverged": diverged,
        "reason": reason,
        "steps_done": done,
        "wall_s": time.perf_counter() - t0,
    }
    if record:
        out.update(
            train_loss=train_curve,
            grad_norm=gnorm_curve,
            val_steps=val_steps,
            val_loss=val_curve,
        )
    return out
