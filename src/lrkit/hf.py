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
import weakref
from collections.abc import Mapping, MutableMapping
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

    The callback has the Trainer log the first step of a run from step 0
    (``control.should_log`` at ``global_step`` 1, as
    ``logging_first_step=True`` does: one more line in the logs, and the next
    line's loss is then the mean of steps 2 to ``logging_steps``): its loss
    is the level the run starts from. Without it, the first logged mean of a
    run whose LR blows it up within a few steps is already high, and the
    monitor, seeing no start below it, reads the run as healthy. Not with
    ``logging_strategy="epoch"`` (each line stays its epoch's mean).

    Without a ``monitor``, each ``train`` builds one for the number of
    points the run will log (:meth:`lrkit.MonitorConfig.for_points` of
    ``max_steps / logging_steps``, plus the first step), as
    :func:`lrkit.diagnose` reads the same run's log afterwards. A run that
    will log fewer points than the monitor needs (``min_updates``, 10: the
    Trainer's default ``logging_steps=500`` on a short run) is warned about
    when it starts. Detection is as fast as the logging: a NaN is seen at the
    first log after it, so log often (``logging_steps=10`` costs little). By
    default the Trainer hides non-finite losses from its logs
    (``logging_nan_inf_filter=True``: a NaN step counts as the running mean);
    the NaN gradient norm of such a step is still caught (the Trainer logs
    ``grad_norm`` whether it clips or not), and
    ``logging_nan_inf_filter=False`` shows the loss itself.

    Each ``train`` that starts from step 0 (not resumed from a checkpoint)
    is a run of its own, judged by a new monitor with the same settings:
    each trial of ``Trainer.hyperparameter_search``, or the same model
    trained again (its monitor then built with ``resumed=True``). The earlier
    runs' monitors stay readable in :attr:`runs`.

    Args:
        monitor: a :class:`lrkit.Monitor` to feed (the first run's; a later
            run gets a new one with its config), or the
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
        monitor: the :class:`lrkit.Monitor` of the latest ``train``.
        runs: the monitors of the earlier ``train`` calls, oldest first.
        losses: the logged training losses fed in the latest ``train`` (data,
            one per training log).
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
        # the config each run's monitor is built with (None: sized to the run)
        self._config = None if monitor is None else self.monitor.config
        self.losses: list[float] = []
        self.runs: list[Monitor] = []
        self._val: float | None = None  # waiting for the next point
        self._last: int | None = None  # the step of the latest point
        self._missing_warned = False
        self._begun = False  # a train() has started
        self._pre_train_evals: list[tuple[int, float]] = []  # before it
        self._model: weakref.ref[Any] | None = None  # the latest run's model
        self._log_first = False  # make the Trainer log global_step 1

    def on_train_begin(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        saved = _saved_state(self, state)
        start = int(state.global_step or 0)
        model = kwargs.get("model")
        trained = start > 0  # from a checkpoint: the run trained before
        if self._begun:
            # a later train(): a run of its own (a trial of
            # hyperparameter_search, a model trained again from step 0), judged
            # alone by a new monitor with the same settings
            self.runs.append(self.monitor)
            again = self._model is not None and self._model() is model
            trained = trained or (again and model is not None)  # its weights
            self._watch = Watch(
                self._config,
                stop_on=tuple(self.stop_on),
                verbose=self.verbose,
                logger_name=__name__,
            )
            self._scale = self._config is None
            self.losses, self._val, self._last = [], None, None
        self._begun = True
        try:
            self._model = weakref.ref(model)
        except TypeError:  # None
            self._model = None
        strategy = _strategy(args)
        logging_on = strategy != "no"
        # the first step's loss is the level the run starts from: without it,
        # the first logged mean of a run blown up at once reads as its start
        # (not with a log per epoch: each line is then the epoch's mean, which
        # a first line would change)
        self._log_first = logging_on and start == 0 and strategy != "epoch"
        first = self._log_first or bool(getattr(args, "logging_first_step", False))
        points = _points(args, state, first=first and start == 0)
        # (evaluations before the first train(), a baseline trainer.evaluate(),
        # are fed again to the monitor sized to the run)
        early = self._pre_train_evals
        if self._scale and self.monitor.updates == len(early):
            self._scale = False
            if saved is not None:  # sized to the whole run, as it was
                config = config_from_dict("monitor", saved["monitor"]["config"])
                self._watch.monitor = Monitor(config)
            elif points is not None:
                config = MonitorConfig.for_points(max(1, points))
                self._watch.monitor = Monitor(config)
                for at, v in early:
                    self.monitor.update(at, None, val_loss=v)
        self._pre_train_evals = []
        if saved is not None:  # resumed: the monitor knows the run so far
            self._watch.load(saved["monitor"])
            self._last, self._val = saved["last"], saved["val"]
        self._watch.begin(trained_before=trained)
        self._warn_few(args, state, points, logging_on)

    def _warn_few(
        self, args: Any, state: Any, points: int | None, logging_on: bool
    ) -> None:
        """Warn when the run logs too few training losses for the monitor."""
        need = self.monitor.config.min_updates
        if not logging_on:
            logger.warning(
                "lrkit MonitorCallback: logging_strategy='no': the Trainer logs "
                "no training loss and the monitor sees nothing. Log the run "
                "(logging_strategy='steps', logging_steps=10)."
            )
            return
        if points is None or self.monitor.updates + points >= need:
            return
        left = int(state.max_steps or 0) - int(state.global_step or 0)
        logger.warning(
            "lrkit MonitorCallback: this run logs %d training loss%s "
            "(max_steps=%d, logging_strategy=%r, logging_steps=%s): too few for "
            "the monitor, whose checks of the curve start after %d "
            "(MonitorConfig.min_updates); it sees a NaN at most. Log more often: "
            "logging_strategy='steps', logging_steps=%d.",
            points,
            "" if points == 1 else "es",
            int(state.max_steps or 0),
            _strategy(args),
            getattr(args, "logging_steps", None),
            need,
            max(1, left // (3 * need)),
        )

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._log_first and int(state.global_step) == 1:
            control.should_log = True

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
        elif not self._missing_warned:
            self._missing_warned = _warn_no_val(
                "MonitorCallback", self.val_key, logs, "validation is not watched"
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
            if not self._begun:  # before any train(): see on_train_begin
                self._pre_train_evals.append((step, val))
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


def _strategy(args: Any) -> str:
    """The Trainer's ``logging_strategy`` as a lower-case name."""
    return str(getattr(args, "logging_strategy", "steps")).rsplit(".", 1)[-1].lower()


def _points(args: Any, state: Any, *, first: bool = False) -> int | None:
    """How many training logs a run will write (None when unknown); ``first``:
    global_step 1 is logged too (``logging_first_step``, or MonitorCallback)."""
    strategy = _strategy(args)
    max_steps = int(getattr(state, "max_steps", 0) or 0)
    max_steps -= int(getattr(state, "global_step", 0) or 0)  # a resumed run
    if strategy == "epoch":
        epochs = _number(getattr(state, "num_train_epochs", None))
        if epochs is None or epochs <= 0:
            return None
        return max(1, int(epochs)) + (1 if first and max_steps > 1 else 0)
    if strategy != "steps" or max_steps <= 0:
        return None
    every = float(getattr(args, "logging_steps", 0) or 0)
    if every <= 0:
        return None
    if every < 1:  # a fraction of the run
        every = math.ceil(max_steps * every)
    every = max(1, int(every))
    return max_steps // every + (1 if first and every > 1 else 0)


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
    validation ``eval_loss`` after each evaluation (warned about once when
    the evaluations log no ``val_key``) and the gradient norm: every step's
    with ``max_grad_norm=0`` (the gradients the callback sees are then the
    step's own, and ``exploding_grad`` in ``on`` works), else only a
    non-finite one (the Trainer has clipped the gradients by then, so a
    finite norm says little; ``exploding_grad`` in ``on`` is refused when
    training starts). When the guard restores (or skips
    a spike's update), the step runs on zero gradients and the state the guard
    restored is written back after it (``on_optimizer_step``), so the update
    changes nothing; the Trainer's LR scheduler still steps (it advances on the
    rejected step, from the state the guard restored; a restore rewinds it
    with the rest, so the schedule ends the restored steps short of its end:
    the Trainer stops at ``max_steps`` all the same). After
    ``max_recoveries`` recoveries in a row :class:`lrkit.torch.GuardError`
    ends ``train`` with the history (the hook removed, the model no longer
    marked as guarded for a MonitorCallback).

    With ``logging_nan_inf_filter=False`` the Trainer adds every loss to a
    running loss that it resets by subtracting it from itself, so one NaN
    would leave every later log NaN after the guard recovered: the callback
    hands the Trainer, for a non-finite loss the guard rejects, the mean of
    the losses since the last log (what the Trainer's own filter adds). That
    step's log shows the stand-in; its gradient norm is still logged.

    With several processes every rank's guard gets the mean over ranks of the
    step's loss (one all-reduce of three numbers a step) and the gradient norm
    after the gradients were averaged: the guards decide alike and all ranks
    restore the same step together. When the Trainer computes the loss
    outside the model (``label_smoothing_factor``, ``compute_loss_func``, a
    custom ``compute_loss``: the model is called without labels) there is no
    loss to read: warned about (when training starts for
    ``label_smoothing_factor``, at the first step otherwise), the guard
    watches the gradient norm only (a NaN or inf gradient; an exploding one
    with ``max_grad_norm=0``). No ``skip_batches``: the Trainer owns the loop.

    Each ``train`` builds a guard of its own; one from step 0 (a trial of
    ``hyperparameter_search``) is a run of its own, and a ``monitor`` passed
    in as a :class:`lrkit.Monitor` judges the first one only: a later one
    gets a new monitor with its config.

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
        runs: the guards of the earlier ``train`` calls, oldest first (their
            snapshots freed; ``events`` and ``monitor`` readable).

    Raises:
        TypeError: a setting neither this callback nor the guard takes (the
            message lists them).
        ValueError: (at ``train``) ``exploding_grad`` in ``on`` while the
            Trainer clips the gradients (``max_grad_norm > 0``).

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
        self.runs: list[Guard] = []
        self._micro: list[float] = []
        self._summed = False  # the micro-batch losses add up to the step's
        self._val: float | None = None
        self._hook: Any = None
        self._warned = False
        self._val_warned = False
        self._training = False
        self._clipped = True  # the Trainer clips the gradients (max_grad_norm > 0)
        self._stand_in = False  # hand the Trainer a finite stand-in for a NaN loss
        # the sum and count of the finite losses read since the Trainer's last
        # log, and their mean over the window before (the stand-in's value)
        self._window = (0.0, 0)
        self._before: float | None = None
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
        self._clipped = float(getattr(args, "max_grad_norm", 0) or 0) > 0
        on = self.settings.get("on", ())
        if self._clipped and "exploding_grad" in on:
            _check.fail(
                "on",
                "free of 'exploding_grad' when the Trainer clips the gradients "
                f"(max_grad_norm={args.max_grad_norm})",
                on,
                "The Trainer clips them before its callbacks see them, so the "
                "guard never gets the norm of an exploding gradient: set "
                "max_grad_norm=0 in TrainingArguments, or leave 'exploding_grad' "
                "out.",
            )
        if _warn_outside_loss(args):
            self._warned = True  # not again at the first step
        self._finish()
        if self.guard is not None:
            self.runs.append(self.guard)
        settings = dict(self.settings)
        given = settings.get("monitor")
        if self.runs and isinstance(given, Monitor):
            # a later train(): a run of its own (a trial of
            # hyperparameter_search, a resumed one), not the first one's curve
            settings["monitor"] = Monitor(given.config)
        loader = kwargs.get("train_dataloader")
        self.guard = Guard(
            model,
            inner,
            scheduler=kwargs.get("lr_scheduler"),
            scaler=getattr(optimizer, "scaler", None),
            loaders=[loader] if isinstance(loader, torch.utils.data.DataLoader) else (),
            # a resumed run numbers its steps on from its checkpoint's
            first_step=int(state.global_step or 0),
            **settings,
        )
        self._micro, self._val, self._undo = [], None, StepUndo()
        self._window, self._before, self._training = (0.0, 0), None, True
        # the Trainer's NaN filter off, a non-finite loss would stay in its
        # running loss (reset by subtracting it from itself) for good
        self._stand_in = (
            not getattr(args, "logging_nan_inf_filter", True) and "nan" in self.guard.on
        )
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

    def _read_loss(self, module: Any, args: Any, kwargs: Any, output: Any) -> Any:
        if not module.training:
            return None
        loss = _output_loss(output)
        value = scalar(loss)
        if value is None:
            return None
        # given num_items_in_batch (the step's count of items, over its
        # micro-batches), the model divides its summed loss by it: the
        # step's loss is the sum of the micro-batches', not their mean
        self._summed = kwargs.get("num_items_in_batch") is not None
        self._micro.append(value)
        if math.isfinite(value):
            total, n = self._window
            self._window = (total + value, n + 1)
            return None
        if not self._stand_in or not isinstance(loss, torch.Tensor):
            return None
        # the guard rejects this step; the Trainer adds the loss to its running
        # loss, which a NaN would spoil for the rest of the run: it gets the
        # mean of the losses since its last log (what its own NaN filter adds)
        total, n = self._window
        mean = total / n if n else self._before
        if mean is None:
            return None
        fill = loss.new_tensor(mean)
        return _with_loss(output, torch.where(torch.isfinite(loss), loss, fill))

    def on_log(
        self,
        args: Any,
        state: Any,
        control: Any,
        logs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        total, n = self._window
        if logs and "loss" in logs and n:
            self._before, self._window = total / n, (0.0, 0)

    def on_pre_optimizer_step(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        g = self.guard
        if g is None:
            return
        norm = grad_norm(g.model)
        if self._clipped and norm is not None and math.isfinite(norm):
            norm = None  # clipped already: only a non-finite norm tells
        if self._micro:
            loss = step_loss(self._micro, summed=self._summed)
            self._micro = []
        else:
            # no loss to read (label_smoothing_factor, compute_loss_func, a
            # custom compute_loss): the guard watches the gradient norm only
            loss = 0.0
            if not self._warned:
                self._warned = True
                logger.warning(
                    "lrkit GuardCallback: the model's output has no loss (the "
                    "Trainer computes it outside the model: label_smoothing_factor, "
                    "compute_loss_func or a custom compute_loss); the guard "
                    "watches only the gradient norm (a NaN or inf gradient%s): "
                    "loss spikes and divergence go unseen.",
                    "" if self._clipped else ", an exploding one",
                )
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = next(g.model.parameters()).device
            loss, self._val = mean_over_ranks(
                loss, self._val, device, _all_reduce_sum, dist.get_world_size()
            )
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
        metrics = metrics or {}
        value = _number(metrics.get(self.val_key))
        if value is not None:
            self._val = value
        elif self._training and not self._val_warned:
            self._val_warned = _warn_no_val(
                "GuardCallback",
                self.val_key,
                metrics,
                "the guard gets no validation loss",
            )

    def _finish(self) -> None:
        """The run is over (or failed): the hook off the model, the model no
        longer marked guarded, the snapshots freed."""
        self._training = False
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self.guard is not None:
            set_guarded(self.guard.model, None)
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


def _with_loss(output: Any, loss: torch.Tensor) -> Any:
    """``output`` (a model's, read by :func:`_output_loss`) with ``loss`` in
    place of its loss."""
    if isinstance(output, MutableMapping):
        output["loss"] = loss  # a ModelOutput sets its attribute too
        return output
    if isinstance(output, tuple):
        return (loss, *output[1:])
    if isinstance(output, list):
        return [loss, *output[1:]]
    output.loss = loss
    return output


def _warn_no_val(who: str, key: str, logs: Mapping[str, Any], lost: str) -> bool:
    """Warn when evaluation logs (``eval_*`` keys) hold no ``key``, saying what
    is ``lost``; True if warned (a training log without it says nothing)."""
    if not any(str(k).startswith("eval_") for k in logs):
        return False
    logger.warning(
        "lrkit %s: no %r in the evaluation logs (keys: %s); %s. Pass val_key=...",
        who,
        key,
        ", ".join(sorted(map(str, logs))),
        lost,
    )
    return True


def _warn_outside_loss(args: Any) -> bool:
    """Warn when the Trainer computes the loss outside the model (the model
    is called without labels): GuardCallback cannot read it. True if warned."""
    smoothing = _number(getattr(args, "label_smoothing_factor", 0)) or 0.0
    if smoothing > 0:
        logger.warning(
            "lrkit GuardCallback: label_smoothing_factor=%s: the Trainer computes "
            "the loss outside the model (called without labels), so the guard "
            "cannot read it and watches only the gradient norm (a NaN or inf "
            "gradient); loss spikes and divergence go unseen. Smooth the labels "
            "in the model's own loss instead (label_smoothing_factor=0) to guard "
            "the loss.",
            smoothing,
        )
        return True
    return False


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
