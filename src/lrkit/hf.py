"""The Hugging Face adapter: watch ``transformers.Trainer`` with :class:`lrkit.Monitor`.

Needs ``transformers`` with PyTorch (``pip install 'lrkit[hf]'``).

- :class:`MonitorCallback` reads what the Trainer logs (the training loss,
  ``grad_norm``, ``learning_rate`` every ``logging_steps``; ``eval_loss`` after
  each evaluation), prints new warnings with their advice and stops a run that
  went NaN or diverged (``control.should_training_stop``).

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

from . import _check
from ._watch import Watch, Watched, check_key
from .monitor import Finding, Monitor, MonitorConfig

__all__ = ["MonitorCallback"]

logger = logging.getLogger(__name__)


def _number(value: Any) -> float | None:
    return float(value) if _check.is_real(value) else None


class MonitorCallback(Watched, TrainerCallback):
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
            :class:`lrkit.MonitorConfig` of a new one (default: the defaults
            scaled to the run's logged points, see above).
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
        monitor: Monitor | MonitorConfig | None = None,
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
        self.losses: list[float] = []
        self._val: float | None = None  # waiting for the next point
        self._last: int | None = None  # the step of the latest point
        self._missing_warned = False

    def on_train_begin(
        self, args: Any, state: Any, control: Any, **kwargs: Any
    ) -> None:
        if self._scale and self.monitor.updates == 0:
            self._scale = False
            points = _points(args, state)
            if points is not None:
                self._watch.monitor = Monitor(MonitorConfig.for_points(points))
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
