"""What the trainer callbacks share (Keras, Lightning, Hugging Face): framework-free.

A :class:`Watch` holds the :class:`~lrkit.Monitor` a callback feeds, the finding
kinds that stop a run, and the printing of new warnings; each adapter only reads
its trainer's numbers and sets its trainer's stop flag.

Example:
    >>> from lrkit._watch import Watch
    >>> w = Watch(None, stop_on=("nan",), verbose=False, logger_name="lrkit")
    >>> hit = w.report(w.monitor.update(0, float("nan")))
    >>> hit.kind, w.stopped_by is hit
    ('nan', True)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import weakref
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from . import _check
from .monitor import KINDS, Finding, Monitor, MonitorConfig

__all__ = [
    "Watch",
    "Watched",
    "check_key",
    "config_from_dict",
    "guarded",
    "monitor_json",
    "set_guarded",
    "settings_key",
]


def check_key(param: str, value: Any) -> str:
    """A log key: a non-empty string, else a TypeError naming ``param``."""
    if not isinstance(value, str) or not value:
        _check.fail(param, "a non-empty log key", value, exc=TypeError)
    return value


def config_from_dict(param: str, settings: dict[str, Any]) -> MonitorConfig:
    """A :class:`~lrkit.MonitorConfig` from a dict of its settings (a
    callback's ``monitor`` as saved in JSON), else an error naming ``param``."""
    names = {f.name for f in dataclasses.fields(MonitorConfig)}
    unknown = sorted(str(k) for k in settings if k not in names)
    if unknown:
        _check.fail(
            param,
            "a lrkit.Monitor, a MonitorConfig, a dict of its settings or None",
            f"a dict with unknown settings {unknown}",
            exc=TypeError,
            shown=True,
        )
    return MonitorConfig(**settings)


#: model -> the finding kinds a guard callback training it recovers from
_GUARDED: weakref.WeakKeyDictionary[Any, frozenset[str]] = weakref.WeakKeyDictionary()


def set_guarded(model: Any, kinds: Iterable[str] | None) -> None:
    """A guard callback trains ``model`` and recovers from ``kinds`` (None:
    it is done): a monitor callback on the same model does not stop the run
    for them."""
    try:
        if kinds is None:
            _GUARDED.pop(model, None)
        else:
            _GUARDED[model] = frozenset(kinds)
    except TypeError:  # not weakly referable (None)
        pass


def guarded(model: Any) -> frozenset[str]:
    """The kinds a guard callback training ``model`` recovers from."""
    try:
        return _GUARDED.get(model, frozenset())
    except TypeError:  # not weakly referable
        return frozenset()


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable name for a callback's settings (the same in every
    process): what tells two callbacks of one class apart in a checkpoint."""
    text = json.dumps(settings, sort_keys=True, default=repr)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def monitor_json(monitor: Any) -> Any:
    """A callback's ``monitor`` argument as JSON: None, or its config's dict."""
    if isinstance(monitor, Monitor):
        monitor = monitor.config
    elif isinstance(monitor, dict):
        monitor = config_from_dict("monitor", monitor)
    return monitor.to_dict() if isinstance(monitor, MonitorConfig) else monitor


class Watch:
    """A monitor, the kinds that stop training, and the reporting of findings.

    Args:
        monitor: a :class:`~lrkit.Monitor` to feed, the
            :class:`~lrkit.MonitorConfig` of a new one (or a dict of its
            settings), or None (the defaults).
        stop_on: finding kinds that stop training (any severity).
        verbose: print new warnings (and withdrawals) with their advice.
        logger_name: the logger that gets them at INFO level.
    """

    def __init__(
        self,
        monitor: Monitor | MonitorConfig | dict[str, Any] | None,
        *,
        stop_on: Sequence[str] | Iterable[str],
        verbose: bool,
        logger_name: str,
    ) -> None:
        self._owned = not isinstance(monitor, Monitor)  # built here
        if isinstance(monitor, dict):  # MonitorConfig settings (JSON)
            monitor = config_from_dict("monitor", monitor)
        if monitor is None:
            monitor = Monitor()
        elif isinstance(monitor, MonitorConfig):
            monitor = Monitor(monitor)
        elif not isinstance(monitor, Monitor):
            _check.fail(
                "monitor",
                "a lrkit.Monitor, a MonitorConfig, a dict of its settings or None",
                monitor,
                exc=TypeError,
            )
        kinds = (
            None
            if isinstance(stop_on, (str, bytes)) or not isinstance(stop_on, Iterable)
            else tuple(stop_on)
        )
        if kinds is None or not all(isinstance(k, str) and k in KINDS for k in kinds):
            _check.fail(
                "stop_on",
                f"a sequence of finding kinds ({', '.join(KINDS)})",
                stop_on,
                exc=TypeError if kinds is None else ValueError,
            )
        if not isinstance(verbose, bool):
            _check.fail("verbose", "True or False", verbose, exc=TypeError)
        self.monitor = monitor
        self.stop_on = frozenset(kinds)
        self.verbose = verbose
        self.logger = logging.getLogger(logger_name)
        self.stopped_by: Finding | None = None
        self._withdrawn_shown = 0  # withdrawals printed (training may run again)
        self._begun = False  # a training run has started
        self._loaded = False  # the monitor goes on from a checkpoint's state
        #: kinds a guard training the same model recovers from: not stopped for
        self.guarded: frozenset[str] = frozenset()

    def begin(self, *, trained_before: bool) -> None:
        """A training run starts: ``stopped_by`` is cleared. At the first
        start only, when the model ``trained_before`` (a checkpoint, a model
        trained earlier), a monitor built here is rebuilt with
        ``resumed=True`` (a resumed run on its plateau is not "too slow"),
        unless :meth:`load` gave it the checkpoint's state; a
        :class:`~lrkit.Monitor` passed in is left as it is."""
        self.stopped_by = None
        first, self._begun = not self._begun, True
        mon = self.monitor
        if (
            first
            and trained_before
            and self._owned
            and not self._loaded
            and not mon.config.resumed
        ):
            self.monitor = Monitor(dataclasses.replace(mon.config, resumed=True))

    def load(self, state: Any) -> None:
        """Go on from a checkpoint: ``state`` is a
        :meth:`~lrkit.Monitor.state_dict` (the monitor is not rebuilt as a
        resumed one: it knows the run from its start)."""
        self.monitor.load_state_dict(state)
        self._loaded = True

    def rewind(self, state: Any) -> None:
        """Go back to an earlier :meth:`~lrkit.Monitor.state_dict` of this
        same run (a later fit takes back what the last one fed at its end);
        the withdrawals it holds were printed already."""
        self.monitor.load_state_dict(state)
        self._withdrawn_shown = len(self.monitor.withdrawn)

    def say(self, text: str) -> None:
        """Log ``text`` at INFO level; print it too when ``verbose``."""
        self.logger.info(text)
        if self.verbose:
            print(f"\n{text}")

    def report(self, found: Iterable[Finding]) -> Finding | None:
        """Print the new warnings among ``found``; return the first finding of a
        ``stop_on`` kind raised or extended (new or not, any severity: a second
        run on weights that already went NaN stops too), else None. A finding
        that ended before it was raised (the first steps judged again once the
        noise is known: a blow-up the run has recovered from) is printed but
        stops nothing. The first such finding of a run becomes ``stopped_by``."""
        hit = None
        for f in found:
            if f.severity != "info" and f.is_new:
                note = " (the guard recovers from it)" if f.kind in self.guarded else ""
                self.say(f"lrkit: {f.kind} at step {f.first_step}{note}: {f.advice}")
            ongoing = f.last_step >= f.detected_step
            stops = f.kind in self.stop_on and f.kind not in self.guarded
            if hit is None and stops and ongoing:
                hit = f
        if hit is not None and self.stopped_by is None:
            self.stopped_by = hit
        return hit

    def finish(self) -> None:
        """The run is over: the monitor judges it whole (``Monitor.finish``);
        new findings and withdrawals are reported (each withdrawal once)."""
        self.report(self.monitor.finish())
        withdrawn = self.monitor.withdrawn
        for f in withdrawn[self._withdrawn_shown :]:
            self.say(
                f"lrkit: {f.kind} from step {f.first_step} withdrawn: the run "
                "converged within its length"
            )
        self._withdrawn_shown = len(withdrawn)


def step_and_val(state_dict: Any, key: str, expected: str) -> tuple[int, float | None]:
    """Check a callback's saved state (a dict holding ``key``, an int
    ``step`` when given, a number or None as ``val``); its step and val."""
    if not isinstance(state_dict, Mapping) or not isinstance(
        state_dict.get(key), Mapping
    ):
        _check.bad_state_dict(expected, state_dict)
    step, val = state_dict.get("step", 0), state_dict.get("val")
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        _check.bad_state_dict(expected, state_dict, f" (step {step!r})")
    if val is not None and not _check.is_real(val):
        _check.bad_state_dict(expected, state_dict, f" (val {val!r})")
    return step, None if val is None else float(val)


class Watched:
    """The read-only views a trainer callback gives of its :class:`Watch`
    (mixed in before the trainer's callback class; ``_watch`` is set in
    ``__init__``)."""

    _watch: Watch

    @property
    def monitor(self) -> Monitor:
        """The :class:`lrkit.Monitor` being fed."""
        return self._watch.monitor

    @property
    def stop_on(self) -> frozenset[str]:
        """The finding kinds that stop training."""
        return self._watch.stop_on

    @property
    def verbose(self) -> bool:
        """Whether new warnings are printed."""
        return self._watch.verbose

    @property
    def stopped_by(self) -> Finding | None:
        """The finding that stopped the latest run (``fit``, ``train``), or None."""
        return self._watch.stopped_by


class StepState:
    """``state_dict`` / ``load_state_dict`` of a trainer's MonitorCallback that
    counts its own steps (``_step``) and holds a validation loss until the next
    training point (``_val``): Lightning's (saved in its checkpoints) and
    Keras's (written to ``backup_dir``)."""

    _watch: Watch
    _step: int
    _val: float | None

    def state_dict(self) -> dict[str, Any]:
        """The monitor's :meth:`~lrkit.Monitor.state_dict`, the step count and
        a validation loss not fed yet (plain data): what a resumed run needs
        to go on judging the run from its start."""
        return {
            "monitor": self._watch.monitor.state_dict(),
            "step": self._step,
            "val": self._val,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Go on from :meth:`state_dict`.

        Raises:
            ValueError: not a dict :meth:`state_dict` returned (nothing is
                changed).
        """
        step, val = step_and_val(
            state_dict, "monitor", "a dict returned by MonitorCallback.state_dict()"
        )
        self._watch.load(state_dict["monitor"])  # checks it first
        self._step = step
        # a validation run just before the checkpoint, not fed yet
        self._val = val
