"""The Hugging Face adapter: watch ``transformers.Trainer`` with :class:`lrkit.Monitor`.

Needs ``transformers`` with PyTorch (``pip install 'lrkit[hf]'``).

- :class:`MonitorCallback` reads what the Trainer logs (the training loss,
  ``grad_norm``, ``learning_rate`` every ``logging_steps``; ``eval_loss`` after
  each evaluation), prints new warnings with their advice and stops a run that
  went NaN or diverged (``control.should_training_stop``).
- :class:`GuardCallback` runs :class:`lrkit.torch.Guard` inside the Trainer: on
  NaN, divergence or a loss spike it restores the last good snapshot, cuts the
  LR and carries on.

lrkit's schedules reach the Trainer through :class:`lrkit.torch.Scheduler`,
passed as ``optimizers=(optimizer, scheduler)``.

Example:
    >>> from lrkit.hf import MonitorCallback
    >>> cb = MonitorCallback(verbose=False)
    >>> sorted(cb.stop_on), cb.val_key
    (['diverged', 'nan'], 'eval_loss')
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - exercised only without transformers
    raise ImportError(
        "lrkit.hf needs Hugging Face transformers, which is not installed: "
        "pip install 'lrkit[hf]'."
    ) from e

try:  # transformers >= 4.41: callback state saved with checkpoints
    from transformers.trainer_callback import ExportableState
except ImportError:  # pragma: no cover - older transformers: no resume of it

    class ExportableState:  # type: ignore[no-redef]
        """Stand-in: this transformers saves no callback state."""


import torch

from . import _check
from ._check import LRKitError
from ._watch import (
    Watch,
    Watched,
    check_key,
    config_from_dict,
    guarded,
    monitor_json,
    set_guarded,
    settings_key,
)
from .monitor import Finding, Monitor, MonitorConfig
from .torch._trainer import (
    StepUndo,
    grad_norm,
    guard_identity,
    guard_settings,
    mean_over_ranks,
    scalar,
    step_loss,
)
from .torch.guard import Guard

__all__ = ["GuardCallback", "MonitorCallback"]

logger = logging.getLogger(__name__)


def _number(value: Any) -> float | None:
    return float(value) if _check.is_real(value) else None


class MonitorCallback(Watched, TrainerCallback, ExportableState):
    """Watch ``transformers.Trainer`` with :class:`lrkit.Monitor`; stop a diverged run.

    Each training log (every ``logging_steps``) is one point at the Trainer's
    ``global_step``, the step numbering of its ``trainer_state.json``: the
    logged loss (the mean over the steps since the last log), ``grad_norm``
    (the last step's, before clipping) and ``learning_rate`` (the LR that step
    used). Each evaluation's ``eval_loss`` is a point of its own at its step,
    or goes with the next training point when one was just logged at that step. New
    findings of warning or critical severity are printed with their advice
    (``verbose``; the ``lrkit.hf`` logger gets them at INFO level); while a
    finding of a kind in ``stop_on`` (any severity) is raised or extended,
    ``control.should_training_stop`` is set and the Trainer ends the run
    after the step. When training ends the monitor judges the whole run
    (:meth:`lrkit.Monitor.finish`).

    Without a ``monitor``, the first ``train`` builds one for the number of
    points the run will log (:meth:`lrkit.MonitorConfig.for_points` of
    ``max_steps / logging_steps``), as :func:`lrkit.diagnose` reads the same
    run's log afterwards. Detection is as fast as the logging: a NaN is seen
    at the first log after it, so log often (``logging_steps=10`` costs little).
    By default the Trainer hides non-finite losses from its logs
    (``logging_nan_inf_filter=True``: a NaN step counts as the running mean);
    the NaN gradient norm of such a step is still caught when gradients are
    clipped (``max_grad_norm > 0``, the default), and
    ``logging_nan_inf_filter=False`` shows the loss itself.

    Args:
        monitor: a :class:`lrkit.Monitor` to feed, or the
            :class:`lrkit.MonitorConfig` of a new one, or a dict of its
            settings (default: the defaults scaled to the run's logged
            points, see above). Its state is saved with each checkpoint
            (:meth:`state`) and a run resumed from one goes on with it.
        stop_on: finding kinds that stop training (``nan``, ``diverged`` by
            default; ``()`` never stops).
        verbose: print new warnings.
        loss_key: the training loss's key in the logs (``"loss"``).
        val_key: the validation loss's key (``"eval_loss"``; the Trainer names
            it ``f"{metric_key_prefix}_loss"``); warned about once when an
            evaluation logs metrics without it.

    Attributes:
        monitor: the :class:`lrkit.Monitor`.
        losses: the logged training losses fed (data, one per training log).
        stopped_by: the :class:`lrkit.Finding` that stopped the latest
            ``train``, or None.
    """

    def __init__(
        self,
        monitor: Monitor | MonitorConfig | dict[str, Any] | None = None,
        *,
        stop_on: tuple[str, ...] | list[str] = ("nan", "diverged"),
        verbose: bool = True,
        loss_key: str = "loss",
        val_key: str = "eval_loss",
    ) -> None:
        super().__init__()
        self._watch = Watch(
            monitor, stop_on=stop_on, verbose=verbose, logger_name=__name__
        )
        self._scale = monitor is None  # size the default monitor to the run
        self.loss_key = check_key("loss_key", loss_key)
        self.val_key = check_key("val_key", val_key)
        # the arguments, as JSON: saved with each checkpoint (see state())
        self._args = {
            "monitor": monitor_json(monitor),
            "stop_on": sorted(self.stop_on),
            "verbose": self.verbose,
            "loss_key": self.loss_key,
            "val_key": self.val_key,
        }
        self._key = settings_key(self._args)
        self.losses: list[float] = []
        self._val: float | None = None  # waiting for the next point
        self._last: int | None = None  # the step of the latest point
        self._missing_warned = False

    def on_train_begin(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        saved = _saved_state(self, state)
        if self._scale and self.monitor.updates == 0:
            self._scale = False
            points = _points(args, state)
            if saved is not None:  # sized to the whole run, as it was
                config = config_from_dict("monitor", saved["monitor"]["config"])
                self._watch.monitor = Monitor(config)
            elif points is not None:
                self._watch.monitor = Monitor(MonitorConfig.for_points(points))
        if saved is not None:  # resumed: the monitor knows the run so far
            self._watch.load(saved["monitor"])
            self._last, self._val = saved["last"], saved["val"]
        # from a checkpoint: the run trained before
        self._watch.begin(trained_before=int(state.global_step or 0) > 0)

    def _feed(self, step: int, loss: float | None, **kw: Any) -> list[Finding]:
        if self._last is not None and step <= self._last:
            step = self._last + 1  # a resumed or repeated step: keep order
        self._last = step
        return self.monitor.update(step, loss, **kw)

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs:
            return
        # a GuardCallback training the model recovers from its kinds
        self._watch.guarded = guarded(kwargs.get("model"))
        val = _number(logs.get(self.val_key))
        if val is not None:
            self._evaluated(int(state.global_step), val, control)
        elif any(str(k).startswith("eval_") for k in logs) and not self._missing_warned:
            self._missing_warned = True
            logger.warning(
                "lrkit MonitorCallback: no %r in the evaluation logs (keys: %s); "
                "validation is not watched. Pass val_key=...",
                self.val_key,
                ", ".join(sorted(map(str, logs))),
            )
        loss = _number(logs.get(self.loss_key))
        if loss is None:
            return
        self.losses.append(loss)
        step = int(state.global_step)
        found = self._feed(
            step,
            loss,
            val_loss=self._val,
            grad_norm=_number(logs.get("grad_norm")),
            lr=_number(logs.get("learning_rate")),
        )
        self._val = None
        self._stop_if(found, control)

    def _stop_if(self, found: list[Finding], control: Any) -> None:
        if self._watch.report(found) is not None:
            control.should_training_stop = True

    def _evaluated(self, step: int, val: float, control: Any) -> None:
        """An evaluation at ``step``: its own point when no training point has
        that step yet; else (the Trainer evaluates right after logging the
        same step) it goes with the next training point."""
        last = self._last
        if self._val is not None and last is not None and last + 1 < step:
            # an earlier evaluation is still waiting (no training log since)
            self._stop_if(self._feed(last + 1, None, val_loss=self._val), control)
            last = self._last
        self._val = None
        if last is None or step > last:
            self._stop_if(self._feed(step, None, val_loss=val), control)
        else:
            self._val = val

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._val is not None:
            self._feed(int(state.global_step), None, val_loss=self._val)
            self._val = None
        self._watch.finish()

    def state(self) -> dict[str, Any]:
        """What the Trainer saves in each checkpoint's ``trainer_state.json``
        (``ExportableState``): the arguments and the monitor's
        :meth:`~lrkit.Monitor.state_dict`, with which ``train(
        resume_from_checkpoint=...)`` goes on judging the run from its start."""
        saved = {
            "monitor": self.monitor.state_dict(),
            "last": self._last,
            "val": self._val,
            "key": self._key,
        }
        return {"args": dict(self._args), "attributes": {"lrkit_state": saved}}


def _points(args: Any, state: Any) -> int | None:
    """How many training logs a run will write (None when unknown)."""
    strategy = str(getattr(args, "logging_strategy", "steps")).rsplit(".", 1)[-1]
    max_steps = int(getattr(state, "max_steps", 0) or 0)
    max_steps -= int(getattr(state, "global_step", 0) or 0)  # a resumed run
    if strategy.lower() == "epoch":
        epochs = _number(getattr(state, "num_train_epochs", None))
        return max(1, int(epochs)) if epochs is not None and epochs > 0 else None
    if strategy.lower() != "steps" or max_steps <= 0:
        return None
    every = float(getattr(args, "logging_steps", 0) or 0)
    if every <= 0:
        return None
    if every < 1:  # a fraction of the run
        every = math.ceil(max_steps * every)
    return max(1, max_steps // max(1, int(every)))


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    torch.distributed.all_reduce(t)
    return t


def _output_loss(output: Any) -> Any:
    """The loss of a model's output as the Trainer's ``compute_loss`` takes
    it: ``output["loss"]`` of a dict (a ModelOutput), else ``output[0]``."""
    if isinstance(output, Mapping):
        return output.get("loss")
    if isinstance(output, (tuple, list)) and output:
        return output[0]
    return getattr(output, "loss", None)


class GuardCallback(TrainerCallback, ExportableState):
    """Run :class:`lrkit.torch.Guard` inside the HF Trainer: roll back, cut the LR.

    The guard is built when training starts, on the Trainer's model, optimizer
    (the torch optimizer inside accelerate's wrapper), LR scheduler, GradScaler
    (fp16) and training loader. The loss of each training forward pass is read
    from the model's output (``outputs.loss``, what the Trainer's default
    ``compute_loss`` uses) through a forward hook; in
    ``on_pre_optimizer_step`` the guard gets the step's loss (the mean over
    its micro-batches; their sum when the Trainer passes ``num_items_in_batch``,
    with which the model already divides by the step's item count), the
    validation ``eval_loss`` after each evaluation and, when it is not
    finite, the gradient norm (the Trainer has clipped the gradients
    by then, so a finite norm says little). When the guard restores (or skips
    a spike's update), the step runs on zero gradients and the state the guard
    restored is written back after it (``on_optimizer_step``), so the update
    changes nothing; the Trainer's LR scheduler still steps (it advances on the
    rejected step, from the state the guard restored). After
    ``max_recoveries`` recoveries in a row :class:`lrkit.torch.GuardError`
    ends ``train`` with the history.

    With several processes every rank's guard gets the mean over ranks of the
    step's loss (one all-reduce of three numbers a step) and the gradient norm
    after the gradients were averaged: the guards decide alike and all ranks
    restore the same step together. A ``compute_loss`` that does not take the
    model's ``loss`` (a custom loss on the logits) leaves nothing to read:
    warned about once, nothing is guarded. No ``skip_batches``: the Trainer
    owns the loop.

    Args:
        val_key: the evaluation metric fed as the validation loss
            (``"eval_loss"``).
        **guard_settings: :class:`lrkit.torch.Guard` keyword arguments
            (``every``, ``keep``, ``factor``, ``spike_action``, ``on``,
            ``monitor``, ``max_recoveries``, ``spill_dir``, ...; not the
            objects, which come from the Trainer, and not ``skip_batches``).
            ``monitor`` may also be a dict of ``MonitorConfig`` settings.
            The guard's ``state_dict`` is saved with each checkpoint and a
            run resumed from one goes on with it.

    Attributes:
        guard: the :class:`lrkit.torch.Guard` of the latest ``train`` (None
            before); ``guard.events`` is its history of recoveries.

    Example:
        >>> from lrkit.hf import GuardCallback
        >>> GuardCallback(every=50).guard is None
        True
    """

    def __init__(self, *, val_key: str = "eval_loss", **settings: Any) -> None:
        super().__init__()
        self.val_key = check_key("val_key", val_key)
        self.settings = guard_settings(settings, "the Trainer")
        self._args, self._not_json, self._key = guard_identity(
            self.val_key, self.settings
        )
        self.guard: Guard | None = None
        self._micro: list[float] = []
        self._summed = False  # the micro-batch losses add up to the step's
        self._val: float | None = None
        self._hook: Any = None
        self._warned = False
        self._undo = StepUndo()  # makes a rejected step change nothing

    def on_train_begin(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        if not isinstance(model, torch.nn.Module) or not isinstance(
            inner, torch.optim.Optimizer
        ):
            raise LRKitError(
                "GuardCallback needs the Trainer's model and torch optimizer at "
                f"train begin; got {type(model).__name__} and "
                f"{type(inner).__name__}."
            )
        self._finish()
        loader = kwargs.get("train_dataloader")
        self.guard = Guard(
            model,
            inner,
            scheduler=kwargs.get("lr_scheduler"),
            scaler=getattr(optimizer, "scaler", None),
            loaders=[loader] if isinstance(loader, torch.utils.data.DataLoader) else (),
            # a resumed run numbers its steps on from its checkpoint's
            **{"first_step": int(state.global_step or 0), **self.settings},
        )
        self._micro, self._val, self._undo = [], None, StepUndo()
        saved = _saved_state(self, state)
        if saved is not None:  # resumed: go on as the uninterrupted run
            self.guard.load_state_dict(saved["guard"])
            self._val = saved["val"]
            lost = sorted(set(saved.get("not_json") or ()) - set(self.settings))
            if lost:
                logger.warning(
                    "lrkit GuardCallback: rebuilt by the Trainer from the "
                    "arguments saved in the checkpoint "
                    "(restore_callback_states_from_checkpoint=True), without %s, "
                    "which JSON cannot hold: those objects are not snapshotted. "
                    "Leave that option off (lrkit's state is resumed either way).",
                    ", ".join(lost),
                )
        self._hook = model.register_forward_hook(self._read_loss, with_kwargs=True)
        # a MonitorCallback on the model does not stop for what it recovers
        set_guarded(model, self.guard.on)

    def _read_loss(self, module: Any, args: Any, kwargs: Any, output: Any) -> None:
        if not module.training:
            return
        value = scalar(_output_loss(output))
        if value is not None:
            # given num_items_in_batch (the step's count of items, over its
            # micro-batches), the model divides its summed loss by it: the
            # step's loss is the sum of the micro-batches', not their mean
            self._summed = kwargs.get("num_items_in_batch") is not None
            self._micro.append(value)

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        g = self.guard
        if g is None:
            return
        if not self._micro:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "lrkit GuardCallback: the model's output has no loss (a custom "
                    "compute_loss?); nothing is guarded."
                )
            return
        loss = step_loss(self._micro, summed=self._summed)
        self._micro = []
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = next(g.model.parameters()).device
            loss, self._val = mean_over_ranks(
                loss, self._val, device, _all_reduce_sum, dist.get_world_size()
            )
        norm = grad_norm(g.model)
        if norm is not None and math.isfinite(norm):
            norm = None  # clipped already: only a non-finite norm tells
        try:
            ok = g.step(loss, grad_norm=norm, val_loss=self._val)
        except Exception:  # GuardError: train() ends without on_train_end
            self._finish()
            raise
        self._val = None
        if not ok:  # the scheduler is not undone: the Trainer steps it each step
            self._undo.arm(g.model, g.optimizer, g.scaler)

    def on_optimizer_step(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        self._undo.undo()

    def on_evaluate(
        self,
        args: Any,
        state: Any,
        control: Any,
        metrics: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        value = _number((metrics or {}).get(self.val_key))
        if value is not None:
            self._val = value

    def _finish(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.guard is not None:
            self.guard.close()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        set_guarded(kwargs.get("model"), None)
        self._finish()

    def state(self) -> dict[str, Any]:
        """What the Trainer saves in each checkpoint's ``trainer_state.json``
        (``ExportableState``): the arguments and the guard's
        :meth:`~lrkit.torch.Guard.state_dict`, with which ``train(
        resume_from_checkpoint=...)`` goes on as the uninterrupted run would."""
        saved = (
            None
            if self.guard is None
            else {
                "guard": self.guard.state_dict(),
                "val": self._val,
                "key": self._key,
                "not_json": self._not_json,
            }
        )
        return {"args": dict(self._args), "attributes": {"lrkit_state": saved}}


def _saved_state(callback: Any, state: Any) -> dict[str, Any] | None:
    """The callback's state saved with the checkpoint a run resumes from; None
    for a run from scratch. The Trainer loads ``trainer_state.json``, its
    ``stateful_callbacks`` included, before ``on_train_begin``; with
    ``restore_callback_states_from_checkpoint`` it has also rebuilt the
    callback and set its ``lrkit_state``. Of several entries of the class
    (several callbacks; the Trainer appends one per callback at each save)
    the newest with the callback's settings is taken, or the newest when
    they all have the same settings (changed since)."""
    name = type(callback).__name__
    held = getattr(state, "stateful_callbacks", None)
    rebuilt = callback.__dict__.pop("lrkit_state", None)
    if isinstance(held, dict) and name not in held:
        # a checkpoint saved without lrkit's state (or a first start): the
        # Trainer's next save expects an entry for every ExportableState
        held[name] = callback.state()
        return None
    if not int(state.global_step or 0):
        return None
    if isinstance(rebuilt, dict) and rebuilt.get("key") == callback._key:
        return rebuilt
    entries = (held or {}).get(name) if isinstance(held, dict) else None
    if not isinstance(entries, list):
        entries = [entries]
    found: list[dict[str, Any]] = [
        e["attributes"]["lrkit_state"]
        for e in entries
        if isinstance(e, Mapping)
        and isinstance(e.get("attributes"), Mapping)
        and isinstance(e["attributes"].get("lrkit_state"), dict)
    ]
    mine = [f for f in found if f.get("key") == callback._key]
    if mine:
        return mine[-1]
    if found and len({str(f.get("key")) for f in found}) == 1:
        return found[-1]
    return None
