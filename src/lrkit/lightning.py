"""The Lightning adapter: watch ``Trainer.fit`` with :class:`lrkit.Monitor`.

Needs Lightning 2 (``pip install 'lrkit[lightning]'``; the standalone
``pytorch_lightning`` package works too).

- :class:`MonitorCallback` feeds the monitor one point per optimizer step (the
  training loss, the total gradient norm before clipping, the LR the step used)
  and the validation loss after each validation run; it prints new warnings
  with their advice and stops a run that went NaN or diverged.
- :class:`GuardCallback` runs :class:`lrkit.torch.Guard` inside ``Trainer.fit``:
  on NaN, divergence or a loss spike it restores the last good snapshot (model,
  optimizer, scheduler, GradScaler, RNG), cuts the LR and carries on.

lrkit's schedules and reduce-on-plateau reach Lightning through
:class:`lrkit.torch.Scheduler`, a ``torch.optim.lr_scheduler.LRScheduler``
returned from ``configure_optimizers`` like any other.

Example:
    >>> from lrkit.lightning import MonitorCallback
    >>> cb = MonitorCallback(stop_on=("nan", "diverged"), verbose=False)
    >>> sorted(cb.stop_on), cb.losses
    (['diverged', 'nan'], [])
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - exercised only without lightning
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError(
            "lrkit.lightning needs Lightning 2, which is not installed: "
            "pip install 'lrkit[lightning]'."
        ) from e

from . import _check
from ._check import LRKitError
from ._watch import (
    StepState,
    Watch,
    Watched,
    check_key,
    config_from_dict,
    guarded,
    monitor_json,
    set_guarded,
    settings_key,
    step_and_val,
)
from .monitor import Monitor, MonitorConfig
from .torch._trainer import (
    StepUndo,
    grad_norm as _grad_norm,
    guard_identity,
    guard_settings as guard_settings_checked,
    mean_over_ranks,
    scalar as _scalar,
    step_loss,
)

__all__ = ["GuardCallback", "MonitorCallback"]

logger = logging.getLogger(__name__)


class _Keyed:
    """A callback whose checkpoint state is named by its settings (``_key``)."""

    _key: str

    @property
    def state_key(self) -> str:
        """The name of its state in a checkpoint: the class and its settings
        (two callbacks of the class with other settings each get their own)."""
        return str(self._generate_state_key(settings=self._key))  # type: ignore[attr-defined]

    def on_load_checkpoint(
        self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]
    ) -> None:
        """Say so when the checkpoint holds this class's state under other
        settings only: the run's history is not loaded (Lightning loads a
        state by its key alone, silently)."""
        saved = checkpoint.get("callbacks") or {}
        mine = self.state_key
        name = type(self).__qualname__ + "{"
        others = [k for k in saved if str(k).startswith(name) and k != mine]
        if others and mine not in saved:
            logger.warning(
                "lrkit %s: the checkpoint holds the state of a %s with other "
                "settings (%s), not of this one (%s): this callback starts "
                "without the run's history. Give it the settings it was saved "
                "with to go on from that state.",
                type(self).__name__,
                type(self).__name__,
                ", ".join(map(str, others)),
                mine,
            )


class MonitorCallback(StepState, Watched, _Keyed, pl.Callback):
    """Watch ``Trainer.fit`` with :class:`lrkit.Monitor`; stop a run that diverged.

    One point per optimizer step: the training loss (the mean of the step's
    micro-batches under gradient accumulation: ``training_step``'s returned
    loss, or ``trainer.callback_metrics[loss_key]`` when ``loss_key`` is
    given), the total gradient norm before clipping (read in
    ``on_before_optimizer_step``, after AMP unscaling; under ``16-mixed`` a
    non-finite norm is the scaler skipping a step and is not passed on) and
    the LR the step used (the first param group of the stepping optimizer).
    Each point is at the step Lightning's loggers give it
    (``trainer.fit_loop.epoch_loop._batches_that_stepped``: ``global_step``
    less one under automatic optimization, the batch count under manual
    optimization), so findings name the steps of the logs, of
    :class:`GuardCallback` and of ``lrkit diagnose``, on a resumed run too.
    After each validation run (sanity check excluded),
    ``trainer.callback_metrics[val_key]`` goes with the next point (the
    loggers put it at the step before); the last one, with no point after
    it, is fed alone at the step after the last when training ends (a later
    ``fit`` of the run takes it back and gives it to its first point). New
    findings of warning or critical severity are printed with their advice
    (``verbose``; the ``lrkit.lightning`` logger gets them at INFO level);
    while a finding of a kind in ``stop_on`` (any severity) is raised or
    extended, ``trainer.should_stop`` is set and Lightning ends the run after
    the batch (once ``min_steps``/``min_epochs`` are met). With several
    processes each rank watches its own loss and the stop is agreed across
    ranks (any rank stopping stops all; a one-boolean all-reduce per step).
    When training ends the monitor judges the whole run
    (:meth:`lrkit.Monitor.finish`). A later ``fit`` goes on with the run (on
    a new Trainer, whose steps start at 0 again, its points follow the last).

    Without a ``monitor``, the first ``fit`` builds one for the number of
    points the run will feed (:meth:`lrkit.MonitorConfig.for_points` of
    ``trainer.estimated_stepping_batches`` less the steps already taken), as
    :func:`lrkit.diagnose` sizes the monitor of the run's log (with
    ``log_every_n_steps=1``) afterwards: on a short run the two agree. Its
    config is saved with the state, and a run resumed from a checkpoint
    goes on with it.

    Args:
        monitor: a :class:`lrkit.Monitor` to feed, or the
            :class:`lrkit.MonitorConfig` of a new one, or a dict of its
            settings (default: sized to the run, see above). Its state is
            saved with each
            checkpoint (:meth:`state_dict`) and ``fit(ckpt_path=...)`` goes
            on with it.
        stop_on: finding kinds that stop training (``nan``, ``diverged`` by
            default; ``()`` never stops).
        verbose: print new warnings.
        loss_key: None (default) reads the loss ``training_step`` returns (a
            tensor, or a dict's ``"loss"``); a key reads that logged metric
            instead (log it with ``on_step=True``), for manual optimization
            or a step that returns something else.
        val_key: the validation loss's key among the logged metrics
            (``"val_loss"``); warned about once when validation runs without it.
        grad_norm: compute and watch the total gradient norm (one extra
            device sync per step; per rank under sharded strategies).

    Attributes:
        monitor: the :class:`lrkit.Monitor`.
        losses: the training losses fed, one per optimizer step (data).
        stopped_by: the :class:`lrkit.Finding` that stopped the latest ``fit``,
            or None.

    Example:
        >>> import lightning.pytorch as pl, torch
        >>> from lrkit.lightning import MonitorCallback
        >>> class Reg(pl.LightningModule):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.net = torch.nn.Linear(4, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return torch.nn.functional.mse_loss(self.net(x), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=50.0)
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(256, 4); y = x.sum(1, keepdim=True)
        >>> data = torch.utils.data.DataLoader(list(zip(x, y)), batch_size=32)
        >>> cb = MonitorCallback(verbose=False)
        >>> trainer = pl.Trainer(max_epochs=20, callbacks=[cb], logger=False,
        ...     enable_checkpointing=False, enable_progress_bar=False,
        ...     enable_model_summary=False, accelerator="cpu")
        >>> trainer.fit(Reg(), data)
        >>> cb.stopped_by.kind in ("nan", "diverged"), trainer.global_step < 160
        (True, True)
    """

    def __init__(
        self,
        monitor: Monitor | MonitorConfig | dict[str, Any] | None = None,
        *,
        stop_on: tuple[str, ...] | list[str] = ("nan", "diverged"),
        verbose: bool = True,
        loss_key: str | None = None,
        val_key: str = "val_loss",
        grad_norm: bool = True,
    ) -> None:
        super().__init__()
        self._watch = Watch(
            monitor, stop_on=stop_on, verbose=verbose, logger_name=__name__
        )
        self.loss_key = None if loss_key is None else check_key("loss_key", loss_key)
        self.val_key = check_key("val_key", val_key)
        if not isinstance(grad_norm, bool):
            _check.fail("grad_norm", "True or False", grad_norm, exc=TypeError)
        self.grad_norm = grad_norm
        self._key = settings_key(
            {
                "monitor": monitor_json(monitor),
                "stop_on": sorted(self.stop_on),
                "loss_key": self.loss_key,
                "val_key": self.val_key,
                "grad_norm": grad_norm,
            }
        )
        self._scale = monitor is None  # size the default monitor to the run
        self._stopped = False
        self.losses: list[float] = []
        self._step = 0  # the smallest step the next point may take
        # a validation loss fed at the end of a fit that a later fit goes on
        # from: the monitor's state before it, that loss and _step
        self._end: tuple[dict[str, Any], float, int] | None = None
        self._micro: list[float] = []  # losses of the current step's micro-batches
        self._norm: float | None = None  # of the step being taken
        self._lr: float | None = None  # that the step being taken uses
        self._stepped = False  # an optimizer step since the last point
        self._val: float | None = None  # waiting for the next point
        self._warned: set[str] = set()

    def _warn_once(self, what: str, text: str, keys: Any) -> None:
        if what in self._warned:
            return
        self._warned.add(what)
        shown = ", ".join(sorted(str(k) for k in keys)) or "none"
        logger.warning("lrkit MonitorCallback: %s (logged: %s)", text, shown)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if self._end is not None:
            # a later fit goes on with the run: the last fit's final validation
            # loss goes with its first point, as within a fit (fed alone at the
            # end, it took the step Lightning gives that point)
            state, self._val, self._step = self._end
            self._end = None
            self._watch.rewind(state)
        if self._scale:
            # the first fit, not from a checkpoint with this callback's state:
            # sized to the run as lrkit.diagnose sizes its log's monitor
            self._scale = False
            points = _points(trainer)
            if points is not None and self.monitor.updates == 0:
                config = MonitorConfig.for_points(points)
                self._watch.monitor = Monitor(config)
        self._stopped = False  # this callback stopped the fit
        # fit(ckpt_path=...): the run trained before
        self._watch.begin(trained_before=trainer.global_step > 0)
        self._micro = []
        self._stepped = False

    def on_before_optimizer_step(
        self, trainer: Any, pl_module: Any, optimizer: Any
    ) -> None:
        inner = getattr(optimizer, "optimizer", optimizer)  # LightningOptimizer
        try:
            self._lr = float(inner.param_groups[0]["lr"])
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            self._lr = None
        self._stepped = True
        if not self.grad_norm:
            return
        norm = _grad_norm(pl_module)
        scaled = str(getattr(trainer, "precision", "")) == "16-mixed"
        if norm is not None and scaled and not math.isfinite(norm):
            norm = None  # the GradScaler skips this step: by design
        self._norm = norm

    def _batch_loss(self, trainer: Any, outputs: Any) -> float | None:
        if self.loss_key is not None:
            metrics = trainer.callback_metrics
            value = _scalar(metrics.get(self.loss_key))
            if value is None:
                self._warn_once(
                    "loss",
                    f"no {self.loss_key!r} among the logged metrics; nothing is "
                    "watched. Log it with on_step=True or pass another loss_key",
                    metrics,
                )
            return value
        if isinstance(outputs, dict):
            outputs = outputs.get("loss")
        value = _scalar(outputs)
        automatic = getattr(trainer.lightning_module, "automatic_optimization", True)
        if value is None:
            if outputs is None and automatic:  # training_step skipped the batch
                return None
            self._warn_once(
                "loss",
                "training_step returned no loss tensor; nothing is watched. "
                "Pass loss_key= naming a metric logged with on_step=True",
                trainer.callback_metrics,
            )
            return None
        if automatic:
            # Lightning divides the returned loss by the accumulation count
            value *= trainer.accumulate_grad_batches
        return value

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = self._batch_loss(trainer, outputs)
        if loss is not None:
            self._micro.append(loss)
        if not self._stepped:
            return  # accumulating: the optimizer has not stepped yet
        self._stepped = False
        if not self._micro:
            return
        loss = step_loss(self._micro)
        self._micro = []
        self.losses.append(loss)
        # the step Lightning's loggers give this one (a new Trainer on the same
        # run numbers from 0 again: the points go on after the last)
        step = max(_logged_step(trainer), self._step)
        found = self.monitor.update(
            step, loss, val_loss=self._val, grad_norm=self._norm, lr=self._lr
        )
        self._watch.guarded = guarded(pl_module)  # a GuardCallback's kinds
        hit = self._watch.report(found) is not None
        self._step = step + 1
        self._val = None
        self._norm = None
        strategy = getattr(trainer, "strategy", None)
        if strategy is not None and getattr(trainer, "world_size", 1) > 1:
            hit = bool(strategy.reduce_boolean_decision(hit, all=False))
        if hit:
            trainer.should_stop = True
            self._stopped = True

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        value = _scalar(trainer.callback_metrics.get(self.val_key))
        if value is None:
            self._warn_once(
                "val",
                f"no {self.val_key!r} among the logged metrics after validation; "
                "validation is not watched. Pass val_key=...",
                trainer.callback_metrics,
            )
            return
        self._val = value

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._val is not None:
            # judged with the run, at the step after its last point; a later
            # fit on the run takes it back (on_train_start), so that its steps
            # stay Lightning's
            self._end = (self.monitor.state_dict(), self._val, self._step)
            self.monitor.update(self._step, None, val_loss=self._val)
            self._step += 1
            self._val = None
        if not self._stopped:
            # (a run this callback stopped, on this rank's finding or another
            # rank's, is not judged as a whole: its end is the problem's, and
            # a curve cut short while falling is no "still steep" run)
            self._watch.finish()

    def state_dict(self) -> dict[str, Any]:
        """The monitor's :meth:`~lrkit.Monitor.state_dict` (its config
        included), the next step and a validation loss not fed yet (plain
        data): what a resumed run needs to go on judging the run from its
        start, with the monitor sized as it was. Saved after ``fit`` ended,
        the final validation loss is the one not fed yet."""
        if self._end is not None:
            state, val, step = self._end
            return {"monitor": state, "step": step, "val": val}
        return super().state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Go on from :meth:`state_dict`; a monitor built here (no
        ``monitor`` given) takes the saved config, sized to the whole run.

        Raises:
            ValueError: not a dict :meth:`state_dict` returned (nothing is
                changed).
        """
        expected = "a dict returned by MonitorCallback.state_dict()"
        saved = state_dict.get("monitor") if isinstance(state_dict, Mapping) else None
        config = saved.get("config") if isinstance(saved, Mapping) else None
        old = self._watch.monitor
        if self._scale and isinstance(config, Mapping):
            try:
                self._watch.monitor = Monitor(config_from_dict("monitor", dict(config)))
            except (TypeError, ValueError):
                _check.bad_state_dict(expected, state_dict, " (monitor config)")
        try:
            super().load_state_dict(state_dict)
        except BaseException:
            self._watch.monitor = old
            raise
        self._scale = False
        self._end = None


def _logged_step(trainer: Any) -> int:
    """The step Lightning's loggers give the optimizer step being taken
    (``fit_loop.epoch_loop._batches_that_stepped``: one a step under
    automatic optimization, one a batch under manual optimization whatever
    the optimizers do; read in ``on_train_batch_end``)."""
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    n = getattr(loop, "_batches_that_stepped", None)
    if isinstance(n, int) and not isinstance(n, bool) and n >= 0:
        return n
    return max(0, int(trainer.global_step) - 1)  # pragma: no cover - older Lightning


def _points(trainer: Any) -> int | None:
    """How many points the coming fit feeds (None when unknown or unbounded):
    ``trainer.estimated_stepping_batches`` less the steps already taken."""
    try:
        total = float(trainer.estimated_stepping_batches)
    except Exception:  # no loader length (an IterableDataset), ...
        return None
    if not math.isfinite(total) or total < 1:
        return None
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    done = getattr(loop, "_batches_that_stepped", 0)
    done = done if isinstance(done, int) else int(trainer.global_step)
    return max(1, int(total) - done)


class GuardCallback(_Keyed, pl.Callback):
    """Run :class:`lrkit.torch.Guard` inside ``Trainer.fit``: roll back and cut the LR.

    The guard is built when training starts, on the LightningModule, its
    optimizer, its LR scheduler (an :class:`lrkit.torch.Scheduler` is cut
    exactly; a torch scheduler as :class:`~lrkit.torch.Guard` describes), the
    GradScaler of ``precision="16-mixed"`` and the training loader. Each
    optimizer step it gets the step's loss (the mean of its micro-batches,
    read in ``on_before_backward``, AMP scaling and Lightning's division by
    ``accumulate_grad_batches`` undone), the total gradient norm before
    clipping and the validation loss after each validation run. Snapshots
    are taken every ``every`` clean steps. When the guard restores (or skips
    a spike's update), Lightning still clips, unscales and steps: the step
    runs on zero gradients and the state the guard restored is written back
    after it, so the update leaves nothing behind; the LR scheduler advances
    as on every step. After ``max_recoveries`` recoveries in a row
    :class:`lrkit.torch.GuardError` ends ``fit`` with the history, the module
    back at its last good snapshot.

    With several processes (DDP) every rank's guard gets the mean over ranks
    of the step's loss (one all-reduce of three numbers per step) and the
    gradient norm DDP has averaged: the guards decide alike and all ranks
    restore the same step together. Automatic optimization only (with manual
    optimization call :meth:`lrkit.torch.Guard.step` yourself between
    ``manual_backward`` and ``opt.step()``). ``skip_batches`` is not
    available: Lightning owns the loop; the restored RNG and loader generators
    are moved to fresh streams, so the run does not replay the batches that
    blew up.

    Args:
        val_key: the validation loss's key among the logged metrics
            (``"val_loss"``).
        **guard_settings: :class:`lrkit.torch.Guard` keyword arguments
            (``every``, ``keep``, ``factor``, ``spike_action``, ``on``,
            ``monitor``, ``max_recoveries``, ``spill_dir``, ...; not the
            objects, which come from the trainer, and not ``skip_batches``).
            ``monitor`` may also be a dict of ``MonitorConfig`` settings.
            The guard's ``state_dict`` is saved with each checkpoint and a
            run resumed from one goes on with it.

    Attributes:
        guard: the :class:`lrkit.torch.Guard` of the latest ``fit`` (None
            before training starts; each ``fit`` builds one, as Lightning
            builds new optimizers); ``guard.events`` is its history of
            recoveries.

    Example:
        >>> from lrkit.lightning import GuardCallback
        >>> cb = GuardCallback(every=50, factor=0.5)
        >>> cb.guard is None
        True
    """

    def __init__(self, *, val_key: str = "val_loss", **guard_settings: Any) -> None:
        super().__init__()
        self.val_key = check_key("val_key", val_key)
        self.settings = guard_settings_checked(guard_settings, "the trainer")
        self._key = guard_identity(self.val_key, self.settings)[2]
        self.guard: Any = None
        self._micro: list[float] = []
        self._val: float | None = None
        self._undo = StepUndo()  # makes a rejected step change nothing
        self._resume: dict[str, Any] | None = None  # a checkpoint's guard state
        self._logged = 0  # guard events logged to the trainer's loggers

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from .torch.guard import Guard

        self._undo = StepUndo()
        if not getattr(pl_module, "automatic_optimization", True):
            raise LRKitError(
                "GuardCallback needs automatic optimization; with manual "
                "optimization call lrkit.torch.Guard.step(loss) between "
                "manual_backward and opt.step()."
            )
        if self.guard is not None:
            self.guard.close()
        configs = getattr(trainer, "lr_scheduler_configs", None) or []
        loader = getattr(trainer, "train_dataloader", None)
        self.guard = Guard(
            pl_module,
            trainer.optimizers[0],
            scheduler=configs[0].scheduler if configs else None,
            scaler=getattr(trainer.precision_plugin, "scaler", None),
            loaders=[loader] if isinstance(loader, torch.utils.data.DataLoader) else (),
            # a resumed run numbers its steps on from its checkpoint's
            first_step=int(trainer.global_step),
            **self.settings,
        )
        if self._resume is not None:
            self.guard.load_state_dict(self._resume)
            self._resume = None
        # a MonitorCallback on the module does not stop for what it recovers
        set_guarded(pl_module, self.guard.on)
        self._micro = []
        self._logged = len(self.guard.events)  # events already in the loggers

    def on_before_backward(self, trainer: Any, pl_module: Any, loss: Any) -> None:
        value = _scalar(loss)
        if value is None:
            return
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        if scaler is not None:  # the loss arrives scaled by the GradScaler
            value /= float(scaler.get_scale())
        self._micro.append(value * trainer.accumulate_grad_batches)

    def on_before_optimizer_step(
        self, trainer: Any, pl_module: Any, optimizer: Any
    ) -> None:
        if self.guard is None or not self._micro:
            return
        loss = step_loss(self._micro)
        self._micro = []
        if getattr(trainer, "world_size", 1) > 1:  # the ranks decide alike
            loss, self._val = mean_over_ranks(
                loss,
                self._val,
                pl_module.device,
                lambda t: trainer.strategy.reduce(t, reduce_op="sum"),
                trainer.world_size,
            )
        ok = self.guard.step(loss, grad_norm=_grad_norm(pl_module), val_loss=self._val)
        self._val = None
        if ok:
            return
        # restored (or a spike skipped): this step's update must not count.
        # Lightning clips and steps regardless (and its GradScaler wants
        # gradients to unscale), so the state as the guard left it is copied,
        # the step runs on zero gradients, and the copy is written back after
        # it (on_train_batch_end). Not the scheduler: it advances on every
        # step (Lightning steps it before on_train_batch_end, as HF does).
        g = self.guard
        self._undo.arm(g.model, g.optimizer, g.scaler)

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._undo.undo()
        g = self.guard
        if g is not None and len(g.events) > self._logged:
            # to the trainer's loggers (TensorBoard, CSV, W&B), at the steps
            # where the guard acted: its events so far and the LR factor
            self._logged = len(g.events)
            pl_module.log_dict(
                {
                    "lrkit/guard_events": float(self._logged),
                    "lrkit/recovery_scale": float(g.recovery_scale),
                },
                on_step=True,
                on_epoch=False,
            )

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._val = _scalar(trainer.callback_metrics.get(self.val_key))

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(pl_module)

    def on_exception(
        self, trainer: Any, pl_module: Any, exception: BaseException
    ) -> None:
        # a GuardError (or any error, a KeyboardInterrupt) ends fit without
        # on_fit_end: a MonitorCallback in a later fit of the module must stop
        # for NaN again, and the snapshots must not outlive the run
        self._finish(pl_module)

    def _finish(self, pl_module: Any) -> None:
        """The run is over (or failed): the module no longer marked guarded,
        the guard's snapshots (memory, spill files) freed."""
        self._undo.undo()  # a step the guard rejected: as the guard left it
        self._micro = []
        set_guarded(pl_module, None)
        if self.guard is not None:
            set_guarded(self.guard.model, None)
            self.guard.close()

    def state_dict(self) -> dict[str, Any]:
        """Saved in Lightning's checkpoints: the guard's
        :meth:`~lrkit.torch.Guard.state_dict` (empty before training), so
        that ``fit(ckpt_path=...)`` goes on as the uninterrupted run would."""
        if self.guard is None:
            return {}
        return {"guard": self.guard.state_dict(), "val": self._val}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep :meth:`state_dict` for the guard ``fit`` builds (Lightning
        calls it when resuming, before training starts).

        Raises:
            ValueError: not a dict :meth:`state_dict` returned (nothing is
                changed).
        """
        from .torch.guard import Guard

        expected = "a dict returned by GuardCallback.state_dict()"
        if isinstance(state_dict, Mapping) and not state_dict:
            return  # saved before training started
        _, val = step_and_val(state_dict, "guard", expected)
        probe = torch.nn.Linear(1, 1)  # checks the guard's state now
        Guard(probe, torch.optim.SGD(probe.parameters(), lr=0.1)).load_state_dict(
            state_dict["guard"]
        )
        self._resume = state_dict["guard"]
        self._val = val  # a validation run just before the checkpoint, not fed yet
