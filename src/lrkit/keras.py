"""The Keras 3 adapter: lrkit schedules and reduce-on-plateau in ``model.fit``.

Needs Keras 3 (``pip install 'lrkit[keras]'``) with any backend.

- :class:`Schedule` wraps an lrkit schedule as a
  ``keras.optimizers.schedules.LearningRateSchedule``. It is written with
  ``keras.ops`` only, so it is correct when Keras calls it with a symbolic step
  inside a compiled train function (``jit_compile``, ``tf.function``, ``jax.jit``).
  In Keras the schedule object *is* the optimizer's learning rate, so
  ``base_lr`` (default 1.0) plays the role of the optimizer's LR:
  ``lr = base_lr × schedule(iterations) × plateau_scale``.
- :class:`PlateauCallback` runs :class:`lrkit.ReduceOnPlateau` at the end of
  each epoch and scales a :class:`Schedule` (or a plain float LR). Keras's own
  ``ReduceLROnPlateau`` raises ``TypeError`` when the LR is a schedule.
- :class:`MonitorCallback` watches ``model.fit`` with :class:`lrkit.Monitor`
  (each batch's loss, the validation loss, the LR) and stops a run that
  diverged.

Example:
    >>> import keras, lrkit
    >>> import lrkit.keras as lk
    >>> lr = lk.Schedule("warmup(10) >> cosine(100)", base_lr=1e-3)
    >>> opt = keras.optimizers.Adam(learning_rate=lr)
    >>> round(float(lr(10)), 6)
    0.001
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

try:
    import keras
    from keras import ops
except ImportError as e:  # pragma: no cover - exercised only without keras
    raise ImportError(
        "lrkit.keras needs Keras 3, which is not installed or could not load its "
        "backend: pip install 'lrkit[keras]' (and set KERAS_BACKEND, e.g. torch)."
    ) from e

from . import _check
from ._check import LRKitError
from ._watch import StepState, Watch, Watched, check_key
from .compose import Join, Scale, Warmup
from .monitor import Finding, Monitor, MonitorConfig, from_json_float, json_float
from .plateau import PlateauState, ReduceOnPlateau
from .schedules import (
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    InverseSqrt,
    Linear,
    MultiStep,
    OneCycle,
    Piecewise,
    Polynomial,
    Schedule as _Schedule,
    ScheduleFn,
    Step,
    WarmupStableDecay,
    _step,
    schedule_from_config,
)

__all__ = [
    "MonitorCallback",
    "PlateauCallback",
    "Schedule",
    "Snapshot",
    "find_lr",
    "snapshot",
    "symbolic",
    "tables",
]

logger = logging.getLogger(__name__)

#: What Schedule.get_config() returns (configs saved before accumulation_steps
#: existed lack that key and still load).
_CONFIG_KEYS = {"accumulation_steps", "base_lr", "schedule"}

#: Largest table used for schedules that have no keras.ops form.
_TABLE_LIMIT = 1_000_000

#: Leaves with an exact keras.ops form in :func:`symbolic`.
_BUILTIN = (
    Constant,
    Step,
    MultiStep,
    Piecewise,
    Exponential,
    Linear,
    Polynomial,
    Cosine,
    CosineRestarts,
    Cyclic,
    OneCycle,
    InverseSqrt,
    WarmupStableDecay,
)


def _f(x: Any) -> Any:
    return ops.convert_to_tensor(x, dtype="float32")


def _ramp(shape: str, s0: float, x: Any) -> Any:
    if shape == "linear":
        return s0 + (1.0 - s0) * x
    if shape == "cosine":
        return s0 + (1.0 - s0) * (1.0 - ops.cos(math.pi * x)) / 2.0
    return ops.exp((1.0 - x) * math.log(s0))  # s0 ** (1 - x), s0 > 0


def symbolic(
    schedule: ScheduleFn, t: Any, *, tables: Mapping[int, Any] | None = None
) -> Any:
    """``schedule(t)`` in ``keras.ops`` for a float32 tensor step ``t``.

    Every built-in schedule and composition has an exact ``keras.ops`` form, so
    it traces inside compiled functions. Other callables with a finite
    ``end_step`` (up to a million steps) are tabulated; the rest are evaluated
    eagerly, which works on the torch backend outside compilation only.

    Args:
        schedule: an lrkit schedule or any ``Callable[[int], float]``.
        t: the step, a float32 tensor (symbolic or not).
        tables: the lookup tables of :func:`tables` (built once); without
            them, every call to ``symbolic`` tabulates the callables again.

    Example:
        >>> import keras, lrkit
        >>> from lrkit.keras import symbolic
        >>> t = keras.ops.convert_to_tensor(50.0)
        >>> round(float(symbolic(lrkit.Cosine(total_steps=100), t)), 6)
        0.5
    """
    s = schedule
    if isinstance(s, Constant):
        return ops.zeros_like(t) + s.lr
    if isinstance(s, Step):
        return s.peak_lr * ops.power(
            _f(s.factor), ops.floor(t / float(s.every_steps or 1))
        )
    if isinstance(s, MultiStep):
        value = ops.zeros_like(t) + s.peak_lr
        for m, level in zip(s.milestones or (), s._levels[1:], strict=True):
            value = ops.where(t >= float(m), _f(level), value)
        return value
    if isinstance(s, Piecewise):
        value = ops.zeros_like(t) + s.values[0]
        for b, v in zip(s.boundaries or (), s.values[1:], strict=True):
            value = ops.where(t >= float(b), _f(v), value)
        return value
    if isinstance(s, Exponential):
        return ops.maximum(s.peak_lr * ops.power(_f(s.factor), t), s.end_lr)
    if isinstance(s, Linear):
        n = float(s.total_steps or 1)
        return s.start_lr + (s.end_lr - s.start_lr) * ops.minimum(t, n) / n
    if isinstance(s, Polynomial):
        n = float(s.total_steps or 1)
        x = 1.0 - ops.minimum(t, n) / n
        return s.end_lr + (s.peak_lr - s.end_lr) * ops.power(x, s.power)
    if isinstance(s, Cosine):
        n = float(s.total_steps or 1)
        return s.end_lr + s._half * (1.0 + ops.cos(s._omega * ops.minimum(t, n)))
    if isinstance(s, CosineRestarts):
        return _cosine_restarts(s, t)
    if isinstance(s, Cyclic):
        cycle = ops.floor(1.0 + t / s._total)
        x = 1.0 + t / s._total - cycle
        up = x / s._ratio
        down = (x - 1.0) / (s._ratio - 1.0)
        height = (s.peak_lr - s.low_lr) * ops.where(x <= s._ratio, up, down)
        if s.mode == "triangular":
            return s.low_lr + height
        if s.mode == "triangular2":
            return s.low_lr + height / ops.power(_f(2.0), cycle - 1.0)
        return s.low_lr + height * ops.power(_f(s.factor), t)
    if isinstance(s, OneCycle):
        return _one_cycle(s, t)
    if isinstance(s, InverseSqrt):
        tau = float(s.timescale_steps)
        return s.peak_lr * ops.sqrt(tau / (t + tau))
    if isinstance(s, WarmupStableDecay):
        return _wsd(s, t)
    if isinstance(s, Warmup):
        w = float(s.steps or 0)
        inner = (
            ops.ones_like(t)
            if s.then is None
            else symbolic(s.then, ops.maximum(t - w, 0.0), tables=tables)
        )
        if w == 0:
            return inner
        ramp = s._target * _ramp(s.shape, s._s0, ops.minimum(t, w) / w)
        return ops.where(t < w, ramp, inner)
    if isinstance(s, Join):
        value = symbolic(s.parts[0], t, tables=tables)
        for start, part in zip(s._starts[1:], s.parts[1:], strict=True):
            at = float(start)
            later = symbolic(part, ops.maximum(t - at, 0.0), tables=tables)
            value = ops.where(t >= at, later, value)
        return value
    if isinstance(s, Scale):
        return s.factor * symbolic(s.schedule, t, tables=tables)
    table = None if tables is None else tables.get(id(s))
    return _fallback(s, t, table)


def _cosine_restarts(s: CosineRestarts, t: Any) -> Any:
    length0 = float(s.cycle_steps or 1)
    cf = s.cycle_factor
    if cf == 1.0:
        n = ops.floor(t / length0)
        pos = t - n * length0
        length = ops.zeros_like(t) + length0
    else:

        def bounds(k: Any) -> tuple[Any, Any]:
            grow = ops.power(_f(cf), k)
            return length0 * (grow - 1.0) / (cf - 1.0), length0 * grow

        n = ops.floor(ops.log(t * (cf - 1.0) / length0 + 1.0) / math.log(cf))
        start, length = bounds(n)
        n = ops.where(t < start, n - 1.0, n)  # float rounding at a restart
        start, length = bounds(n)
        n = ops.where(t >= start + length, n + 1.0, n)
        start, length = bounds(n)
        pos = t - start
    height = (s.peak_lr - s.end_lr) * ops.power(_f(s.peak_factor), n)
    value = s.end_lr + height * (1.0 + ops.cos(math.pi * pos / length)) / 2.0
    if s.num_cycles is not None:
        value = ops.where(n >= float(s.num_cycles), _f(s.end_lr), value)
    return value


def _one_cycle(s: OneCycle, t: Any) -> Any:
    def anneal(a: float, b: float, pct: Any) -> Any:
        if s.anneal == "cosine":
            return b + (a - b) / 2.0 * (ops.cos(math.pi * pct) + 1.0)
        return (b - a) * pct + a

    starts = [0.0] + [p[0] for p in s._phases[:-1]]
    values = [
        anneal(a, b, (t - start) / (end - start))
        for start, (end, a, b) in zip(starts, s._phases, strict=True)
    ]
    value = values[-1]
    for (end, _, _), v in zip(
        reversed(s._phases[:-1]), reversed(values[:-1]), strict=True
    ):
        value = ops.where(t <= end, v, value)
    return ops.where(t >= float((s.total_steps or 1) - 1), _f(s._end), value)


def _wsd(s: WarmupStableDecay, t: Any) -> Any:
    n = float(s.total_steps or 1)
    w = float(s.warmup_steps or 0)
    d = float(s.decay_steps or 1)
    start = n - d
    p = ops.clip((t - start) / d, 0.0, 1.0)
    if s.decay == "linear":
        g = 1.0 - p
    elif s.decay == "cosine":
        g = (1.0 + ops.cos(math.pi * p)) / 2.0
    else:
        g = 1.0 - ops.sqrt(p)
    value = ops.where(t < start, _f(s.peak_lr), s.end_lr + (s.peak_lr - s.end_lr) * g)
    value = ops.where(t >= n, _f(s.end_lr), value)
    if w > 0:  # Warmup's default linear ramp, (t + 1) / (w + 1)
        ramp = s.peak_lr * _ramp("linear", 1.0 / (w + 1.0), ops.minimum(t, w) / w)
        value = ops.where(t < w, ramp, value)
    return value


def _builtin(schedule: ScheduleFn) -> bool:
    return isinstance(schedule, _BUILTIN)


def _table(schedule: ScheduleFn) -> Any:
    """``[schedule(0), ..., schedule(end_step)]`` as a float32 tensor, or None."""
    end = getattr(schedule, "end_step", None)
    if not (isinstance(end, int) and 0 <= end <= _TABLE_LIMIT):
        return None
    values = np.fromiter(
        (float(schedule(i)) for i in range(end + 1)), dtype=np.float64, count=end + 1
    )
    return _f(values)


def tables(schedule: ScheduleFn) -> dict[int, Any]:
    """Lookup tables for the parts of ``schedule`` that have no ``keras.ops`` form.

    Keyed by ``id(part)``; pass them to :func:`symbolic` so the (possibly long)
    tabulation happens once, not at every training step. :class:`Schedule`
    builds them when it is created.

    Example:
        >>> import lrkit
        >>> from lrkit.keras import tables
        >>> class Halving:
        ...     end_step = 3
        ...     def __call__(self, t):
        ...         return 0.5 ** t
        >>> part = Halving()
        >>> found = tables(lrkit.Warmup(steps=2, then=part))
        >>> [round(float(v), 3) for v in found[id(part)]]
        [1.0, 0.5, 0.25, 0.125]
    """
    out: dict[int, Any] = {}

    def walk(s: ScheduleFn) -> None:
        if isinstance(s, Warmup):
            if s.then is not None:
                walk(s.then)
        elif isinstance(s, Join):
            for part in s.parts:
                walk(part)
        elif isinstance(s, Scale):
            walk(s.schedule)
        elif not _builtin(s) and id(s) not in out:
            table = _table(s)
            if table is not None:
                out[id(s)] = table

    walk(schedule)
    return out


def _fallback(schedule: ScheduleFn, t: Any, table: Any = None) -> Any:
    if table is None:
        table = _table(schedule)
    if table is not None:
        end = int(ops.shape(table)[0]) - 1
        index = ops.cast(ops.minimum(t, float(end)), "int32")
        return ops.take(table, index)
    try:
        step = int(ops.convert_to_numpy(t))
    except Exception as e:
        raise TypeError(
            _check.message(
                "schedule",
                "an lrkit schedule or a callable with a finite end_step (at most "
                f"{_TABLE_LIMIT:,} steps) to be evaluated on a symbolic step",
                schedule,
                "It has no keras.ops form, so inside a compiled function (jit, "
                "tf.function) it cannot be evaluated. Use lrkit's schedules, give "
                "it an end_step, or compile without jit.",
            )
        ) from e
    return _f(float(schedule(step)))


@keras.saving.register_keras_serializable(package="lrkit", name="Schedule")
class Schedule(keras.optimizers.schedules.LearningRateSchedule):  # type: ignore[misc]
    """An lrkit schedule as a Keras ``LearningRateSchedule``.

    ``lr(step) = base_lr × schedule(step) × plateau_scale``; the plateau scale
    is a non-trainable ``keras.Variable`` that :class:`PlateauCallback` sets.
    ``get_config()`` / ``from_config()`` round-trip (the schedule must be an
    lrkit :class:`~lrkit.Schedule`), so models save and load with it; the
    plateau scale is not part of the config (:class:`PlateauCallback` sets it
    from its state when training begins). Parts without a ``keras.ops`` form
    (your own callables with an ``end_step``) are tabulated once, here.

    **Gradient accumulation.** With ``gradient_accumulation_steps=k`` Keras
    calls the schedule with its micro-batch count; pass the same
    ``accumulation_steps=k`` here and the schedule sees optimizer updates
    (``step // k``), so its durations are optimizer steps as everywhere in
    lrkit. (A schedule cannot see its optimizer; :class:`PlateauCallback`
    checks that the two agree.)

    **JAX.** The jit-compiled JAX train step reads only the optimizer's own
    variables, so it would keep the plateau scale it was traced with:
    :class:`PlateauCallback` raises there instead (see its docs). The
    schedule itself works on every backend, in float32: step counts are
    exact up to 2**24 (16.7M) iterations, micro-batches under accumulation;
    beyond, a boundary may switch one step early.

    Args:
        schedule: an lrkit schedule (or its text form), or any callable.
        base_lr: the LR the schedule multiplies (1.0: its values are absolute).
        accumulation_steps: the optimizer's ``gradient_accumulation_steps``
            (1 without accumulation).

    Example:
        >>> import lrkit
        >>> from lrkit.keras import Schedule
        >>> lr = Schedule(lrkit.Cosine(total_steps=100), base_lr=0.1)
        >>> round(float(lr(50)), 6), Schedule.from_config(lr.get_config()).base_lr
        (0.05, 0.1)
    """

    def __init__(
        self,
        schedule: ScheduleFn | str,
        base_lr: float = 1.0,
        *,
        accumulation_steps: int = 1,
    ) -> None:
        if isinstance(schedule, str):
            from ._parse import parse_schedule

            schedule = parse_schedule(schedule)
        _check.callable_("schedule", schedule)
        self.base_lr = _check.non_negative("base_lr", base_lr)
        self.accumulation_steps = _check.positive_int(
            "accumulation_steps",
            accumulation_steps,
            "Give the optimizer's gradient_accumulation_steps (1 without).",
        )
        self.schedule: ScheduleFn = schedule
        # tabulate custom parts once here, not at every training step
        self._tables = tables(schedule)
        self._scale = keras.Variable(
            1.0, dtype="float32", trainable=False, name="lrkit_plateau_scale"
        )
        # the plateau's min_lr: it never takes the LR below it (0: none)
        self._floor = keras.Variable(
            0.0, dtype="float32", trainable=False, name="lrkit_plateau_floor"
        )

    def unscaled(self, step: Any) -> Any:
        """``base_lr × schedule(step)`` without the plateau scale.

        ``step`` is what Keras passes: the optimizer's iteration count, which
        counts micro-batches under gradient accumulation, so the schedule is
        evaluated at ``step // accumulation_steps``, the optimizer update. A
        plain number is checked as the pure schedules check it (a whole
        number >= 0).
        """
        if not (
            ops.is_tensor(step) or isinstance(step, (keras.Variable, keras.KerasTensor))
        ):
            step = _step(step)
        t = ops.cast(step, "float32")
        if self.accumulation_steps > 1:
            t = ops.floor(t / float(self.accumulation_steps))
        return self._at(t)

    def _at(self, t: Any) -> Any:
        """``base_lr × schedule(t)`` for ``t`` optimizer updates (float32)."""
        return self.base_lr * symbolic(self.schedule, t, tables=self._tables)

    def __call__(self, step: Any) -> Any:
        # min(u, max(u × plateau_scale, min_lr)): the plateau never takes the
        # LR below min_lr, the schedule itself may (as lrkit.torch.Scheduler)
        u = self.unscaled(step)
        scaled = ops.multiply(u, ops.cast(self._scale, "float32"))
        return ops.minimum(u, ops.maximum(scaled, ops.cast(self._floor, "float32")))

    @property
    def plateau_scale(self) -> float:
        """The plateau factor now applied."""
        return float(ops.convert_to_numpy(self._scale))

    def set_plateau_scale(self, value: float) -> None:
        """Set the plateau factor (used by :class:`PlateauCallback`)."""
        self._scale.assign(_check.positive("plateau_scale", value))

    @property
    def plateau_floor(self) -> float:
        """The LR the plateau scale never takes the LR below (its ``min_lr``)."""
        return float(ops.convert_to_numpy(self._floor))

    def set_plateau_floor(self, value: float) -> None:
        """Set the plateau's ``min_lr`` (used by :class:`PlateauCallback`)."""
        self._floor.assign(_check.non_negative("min_lr", value))

    def get_config(self) -> dict[str, Any]:
        if not isinstance(self.schedule, _Schedule):
            _check.fail(
                "schedule",
                "an lrkit Schedule to be saved in a Keras config",
                self.schedule,
                exc=TypeError,
            )
        return {
            "schedule": self.schedule.to_config(),
            "base_lr": self.base_lr,
            "accumulation_steps": self.accumulation_steps,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Schedule:
        if not isinstance(config, Mapping):
            _check.fail("config", "a mapping", config, exc=TypeError)
        keys = set(config)
        if keys != _CONFIG_KEYS and keys != _CONFIG_KEYS - {"accumulation_steps"}:
            _check.fail(
                "config",
                f"a dict with keys {sorted(_CONFIG_KEYS)}",
                dict(config),
                "Pass what Schedule.get_config() returned.",
            )
        return cls(
            schedule_from_config(config["schedule"]),
            base_lr=config["base_lr"],
            accumulation_steps=config.get("accumulation_steps", 1),
        )


_T = TypeVar("_T")


def _backup_dir(value: Any) -> Path | None:
    """A callback's ``backup_dir`` argument, checked (None: no backup)."""
    if value is None:
        return None
    if not isinstance(value, (str, os.PathLike)):
        _check.fail("backup_dir", "a directory path", value, exc=TypeError)
    if not os.fspath(value):  # "" would write into the current directory
        _check.fail("backup_dir", "a non-empty directory path", value)
    return Path(value)


def _read_backup(path: Path | None, load: Callable[[dict[str, Any]], _T]) -> _T | None:
    """What ``load`` makes of the state a callback wrote to ``path`` with
    :func:`_write_backup` (``load`` checks it and applies it), or None when
    there is none. A file that is not such a state is a ``ValueError`` naming
    ``backup_dir``; one that ``load`` refuses with lrkit's own message, that
    message after the file's path."""
    if path is None or not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict):
            raise TypeError(f"a JSON {type(state).__name__}, not an object")
        return load(state)
    except (OSError, ValueError, TypeError, AttributeError, KeyError) as e:
        if _check.is_ours(e):
            raise type(e)(f"{path}: {e}") from None
        _check.fail(
            "backup_dir",
            f"a directory whose {path.name} this callback wrote",
            f"{path} ({e})",
            "Delete the file to start the callback's state afresh.",
            shown=True,
        )


def _write_backup(path: Path | None, state: Mapping[str, Any]) -> None:
    """Write a callback's state (plain JSON) to ``path``, atomically: a crash
    while writing leaves the last one whole. Nothing without a ``backup_dir``."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, allow_nan=False))
    os.replace(tmp, path)


def _drop_backup(path: Path | None) -> None:
    """The run ended: delete its state, as ``BackupAndRestore`` does its own."""
    if path is not None:
        path.unlink(missing_ok=True)


class PlateauCallback(keras.callbacks.Callback):  # type: ignore[misc]
    """Reduce-on-plateau for ``model.fit`` that also works with a schedule.

    At the end of every epoch it reads ``logs[monitor]``, updates an
    :class:`lrkit.ReduceOnPlateau` (patience counts epochs, torch's meaning:
    Keras's ``patience=p`` is ``p - 1`` here) and applies the plateau scale:
    to the :class:`Schedule` when the optimizer's learning rate is one, else to
    a plain float learning rate. Another kind of Keras schedule raises
    ``TypeError`` (wrap its shape in an lrkit schedule instead). The scale is
    also logged as ``logs["plateau_scale"]``.

    **Resume.** Save :attr:`state` (``cb.state.to_dict()``) with your
    checkpoint; on resume, set ``cb.state = lrkit.PlateauState.from_dict(...)``
    before ``fit``. When training begins the callback applies the restored
    scale: to a :class:`Schedule` directly (its scale is not part of the saved
    model); for a float learning rate, the optimizer's LR is taken to include
    the scale already (as it does after a reduction, and as Keras saves it), so
    the base LR is ``lr / state.scale``. Repeated ``fit`` calls with the same
    callback continue the same way.

    **Resume after a crash.** Keras saves no callback state, so with
    ``backup_dir`` the callback writes its state (and a float LR's base) as
    JSON to ``backup_dir/lrkit_plateau.json`` at the end of each epoch, reads
    it back when a ``fit`` starts (a new process after a crash, or a ``fit``
    retried with this callback; not over a :attr:`state` set by hand), and
    deletes it when training ends, as ``MonitorCallback(backup_dir=...)`` and
    ``keras.callbacks.BackupAndRestore`` do: give both the same directory
    (either listed first) and a resumed ``fit`` uses the LRs of the
    uninterrupted run. A float LR is set from the saved base: listed first,
    ``BackupAndRestore`` saves the optimizer before this callback's reduction
    of the epoch. A state from another epoch than the one training resumes
    at is warned about.

    Args:
        plateau: the settings (default ``ReduceOnPlateau()``).
        monitor: the log key to watch (``"val_loss"``).
        backup_dir: a directory (created when missing) for the state of a
            run that may be interrupted; the one given to
            ``BackupAndRestore``. None: nothing is written.

    Attributes:
        state: the :class:`lrkit.PlateauState` (set it to resume).

    Example:
        >>> import keras, numpy as np, lrkit
        >>> from lrkit.keras import PlateauCallback, Schedule
        >>> keras.utils.set_random_seed(0)
        >>> lr = Schedule("warmup(2) >> cosine(20)", base_lr=0.1)
        >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
        >>> x, y = np.ones((8, 2), "float32"), np.zeros((8, 1), "float32")
        >>> # improvements must be 99% better: the second epoch reduces
        >>> plateau = lrkit.ReduceOnPlateau(patience=0, factor=0.5, threshold=0.99)
        >>> cb = PlateauCallback(plateau, monitor="loss")
        >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
        >>> cb.state.reductions, lr.plateau_scale
        (1, 0.5)
        >>> saved = cb.state.to_dict()  # store it with the checkpoint
        >>> resumed = PlateauCallback(plateau, monitor="loss")
        >>> resumed.state = lrkit.PlateauState.from_dict(saved)
    """

    def __init__(
        self,
        plateau: ReduceOnPlateau | None = None,
        *,
        monitor: str = "val_loss",
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if plateau is None:
            plateau = ReduceOnPlateau()
        if not isinstance(plateau, ReduceOnPlateau):
            _check.fail("plateau", "a lrkit.ReduceOnPlateau", plateau, exc=TypeError)
        floors = plateau.min_lr
        if isinstance(floors, tuple) and len(floors) != 1:
            _check.fail(
                "plateau.min_lr",
                "one number (a Keras optimizer has one LR)",
                list(floors),
            )
        self.plateau = plateau
        self.monitor = check_key("monitor", monitor)
        self.backup_dir = _backup_dir(backup_dir)
        self._missing_warned = False
        self._seen = False
        self._state: PlateauState = plateau.init()
        self._base: float | None = None
        self._set_by_hand = False  # state set since the last fit: no backup read
        self._resumed_after: int | None = None  # the epoch a backup was written at

    @property
    def state(self) -> PlateauState:
        """The plateau's state; set it (a :class:`lrkit.PlateauState`) to resume."""
        return self._state

    @state.setter
    def state(self, value: PlateauState) -> None:
        if not isinstance(value, PlateauState):
            _check.fail(
                "state",
                "a lrkit.PlateauState",
                value,
                "Rebuild a saved one with lrkit.PlateauState.from_dict(...).",
                exc=TypeError,
            )
        _check.positive("state.scale", value.scale)
        self._state = value
        self._set_by_hand = True  # a backup is not read over it

    def _target(self) -> tuple[Any, Schedule | None]:
        """The optimizer that holds the learning rate, and the Schedule if any.

        A ``LossScaleOptimizer`` (mixed precision) is unwrapped: its inner
        optimizer holds the learning rate.
        """
        opt = self.model.optimizer
        while getattr(opt, "inner_optimizer", None) is not None:
            opt = opt.inner_optimizer
        lr = getattr(opt, "_learning_rate", None)
        if isinstance(lr, Schedule):
            return opt, lr
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            _check.fail(
                "optimizer.learning_rate",
                "an lrkit.keras.Schedule or a float",
                lr,
                "Express the schedule with lrkit and wrap it: "
                "lrkit.keras.Schedule(lrkit.parse_schedule('...'), base_lr=...).",
                exc=TypeError,
            )
        return opt, None

    def _check_fit(self, opt: Any, schedule: Schedule) -> None:
        """Raise (before training) where the scale or the steps would be wrong."""
        k = getattr(opt, "gradient_accumulation_steps", None) or 1
        if schedule.accumulation_steps != k:
            _check.fail(
                "accumulation_steps",
                f"the optimizer's gradient_accumulation_steps={k}",
                schedule.accumulation_steps,
                "Keras calls the schedule with its micro-batch count; "
                f"lrkit.keras.Schedule(..., accumulation_steps={k}) makes the "
                "schedule count optimizer updates, as this callback does.",
            )
        model = self.model
        compiled = getattr(model, "jit_compile", False) and not getattr(
            model, "run_eagerly", False
        )
        if keras.backend.backend() == "jax" and compiled:
            raise LRKitError(
                _check.message(
                    "model.jit_compile",
                    "False on the JAX backend for a PlateauCallback to scale an "
                    "lrkit.keras.Schedule",
                    True,
                    "The jit-compiled JAX train step reads only the optimizer's "
                    "own variables, so it would keep the plateau scale it was "
                    "traced with and ignore every reduction. Compile with "
                    "jit_compile=False, give the optimizer a float learning rate "
                    "(the callback then scales it, compiled or not), or use the "
                    "torch or TensorFlow backend.",
                )
            )

    def _state_path(self) -> Path | None:
        return None if self.backup_dir is None else self.backup_dir / _PLATEAU_FILE

    def _load_backup(self) -> float | None:
        """Load the state ``backup_dir`` holds, if any; the base of a float
        LR it holds (None: none, or a schedule's)."""

        def load(saved: dict[str, Any]) -> tuple[PlateauState, float | None, int]:
            state = dict(saved["state"])
            state["best"] = from_json_float(state["best"])
            plateau = PlateauState.from_dict(state)
            base = saved["base"]
            base = None if base is None else _check.positive("base", base)
            epoch = _check.non_negative_int("epoch", saved["epoch"])
            return plateau, base, epoch

        loaded = _read_backup(self._state_path(), load)
        if loaded is None:
            return None
        self._state, base, self._resumed_after = loaded
        return base

    def _save_backup(self, epoch: int) -> None:
        state = self._state.to_dict()
        state["best"] = json_float(state["best"])
        _write_backup(
            self._state_path(), {"state": state, "base": self._base, "epoch": epoch}
        )

    def _apply(self, opt: Any, schedule: Schedule | None) -> None:
        """Put the state's scale on the schedule, or on the float LR."""
        if schedule is not None:
            schedule.set_plateau_scale(self._state.scale)
            schedule.set_plateau_floor(self.plateau.min_lr_of(0))
        elif self._base is not None:
            opt.learning_rate = self._base * self._state.scale

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        opt, schedule = self._target()
        # a backup exists while a fit did not end: this one resumes it (in a
        # new process, or again with this callback)
        base = None if self._set_by_hand else self._load_backup()
        self._set_by_hand = False
        if schedule is not None:
            self._check_fit(opt, schedule)
            self._apply(opt, schedule)
        elif base is not None:  # the backup's: the optimizer's may lag a reduction
            self._base = base
            self._apply(opt, schedule)
        else:  # the float LR already includes the scale (see Resume)
            lr = float(ops.convert_to_numpy(opt.learning_rate))
            self._base = lr / self._state.scale
        self._seen = False  # the monitored key in this fit's logs

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if self._resumed_after is None:
            return
        after, self._resumed_after = self._resumed_after, None
        if epoch != after + 1:
            logger.warning(
                "lrkit PlateauCallback: its state in %s is from the end of epoch "
                "%d but training starts at epoch %d: restore the model from the "
                "same point (keras.callbacks.BackupAndRestore with the same "
                "backup_dir), or the plateau goes on from another epoch",
                self._state_path(),
                after,
                epoch,
            )

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if not self._seen and not self._missing_warned:
            self._missing_warned = True
            logger.warning(
                "PlateauCallback: %r was in no epoch's logs of this fit (no "
                "validation data?); the LR was never updated",
                self.monitor,
            )
        _drop_backup(self._state_path())

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._update(logs if logs is not None else {})
        self._save_backup(epoch)

    def _update(self, logs: dict[str, Any]) -> None:
        value = logs.get(self.monitor)
        if value is None:
            if self.monitor.startswith("val_") and not any(
                k.startswith("val_") for k in logs
            ):
                # an epoch without validation (validation_freq > 1); a fit
                # without any is warned about at its end
                return
            if not self._missing_warned:
                self._missing_warned = True
                logger.warning(
                    "PlateauCallback: %r is not in the logs (available: %s); no update",
                    self.monitor,
                    ", ".join(sorted(logs)),
                )
            return
        self._seen = True
        opt, schedule = self._target()
        if schedule is not None:  # at the optimizer-update count, as the schedule
            t = ops.cast(opt.iterations, "float32")
            unscaled = float(ops.convert_to_numpy(schedule._at(t)))
            # eps judged at base_lr, or the schedule's value now if higher
            ref = max(unscaled, schedule.base_lr)
            refs = [ref] if ref > 0.0 else []
            self._state = self.plateau.update_clamped(self._state, value, refs)
        else:
            unscaled = self._base if self._base is not None else 1.0
            self._state = self.plateau.update(self._state, value, lr=unscaled)
        self._apply(opt, schedule)
        logs["plateau_scale"] = self.state.scale


def _optimizer(model: Any) -> Any:
    """The optimizer that holds the learning rate (mixed precision unwrapped)."""
    opt = model.optimizer
    while getattr(opt, "inner_optimizer", None) is not None:
        opt = opt.inner_optimizer
    return opt


class MonitorCallback(StepState, Watched, keras.callbacks.Callback):  # type: ignore[misc]
    """Watch ``model.fit`` with :class:`lrkit.Monitor`; stop a run that diverged.

    Each batch's training loss goes to the monitor with the optimizer's
    current LR, and each epoch's ``val_loss`` with the batch after it (Keras
    3 logs the running mean of the epoch at every batch: the batch's own loss
    is read back from two consecutive means, ``(b+1)·m_b - b·m_(b-1)``, exact
    for equal batches up to the float32 rounding of Keras's running mean,
    which grows with the batch index: about 1e-4 of the loss a thousand
    batches into an epoch, 1e-2 after 100 000). The LR is the one the batch
    trained with (read before the optimizer counts the step). New findings of
    warning or critical severity are printed with their advice (``verbose``;
    the ``lrkit.keras`` logger gets them at INFO level); while a finding of a
    kind in ``stop_on`` (any severity) is raised or extended by a batch,
    ``model.stop_training`` is set (the run ends after the batch), in every
    ``fit``. When training ends the monitor judges the whole run
    (:meth:`lrkit.Monitor.finish`). Steps are counted across ``fit`` calls, so
    a second ``fit`` continues the same run; a new callback on a model that
    trained before counts from the optimizer's ``iterations``.

    Resuming: Keras saves no callback state, so with ``backup_dir`` the
    callback writes its :meth:`state_dict` as JSON to
    ``backup_dir/lrkit_monitor.json`` at the end of each epoch, reads it back
    when a ``fit`` starts it fresh (a new process after a crash), and deletes
    it when training ends, as ``keras.callbacks.BackupAndRestore`` does with
    its own backup: give both the same directory and a resumed ``fit`` judges
    the run from its start, with its own step numbers.

    Args:
        monitor: a :class:`lrkit.Monitor` to feed, or the
            :class:`lrkit.MonitorConfig` of a new one (default: the defaults).
        stop_on: finding kinds that stop training (``nan``, ``diverged`` by
            default; ``()`` never stops).
        verbose: print new warnings.
        loss_key: the training loss's key in the logs (``"loss"``; a custom
            ``train_step`` may report another); warned about once when absent.
        backup_dir: a directory (created when missing) for the state of a
            run that may be interrupted; the one given to
            ``BackupAndRestore``. None: nothing is written.

    Attributes:
        monitor: the :class:`lrkit.Monitor`.
        losses: the per-batch training losses read back (data, one per step).
        stopped_by: the :class:`lrkit.Finding` that stopped the latest ``fit``,
            or None.

    Example:
        >>> import keras, numpy as np
        >>> from lrkit.keras import MonitorCallback
        >>> keras.utils.set_random_seed(0)
        >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=keras.optimizers.SGD(50.0), loss="mse")
        >>> x = np.random.rand(256, 4).astype("float32"); y = x.sum(1, keepdims=True)
        >>> cb = MonitorCallback(verbose=False)
        >>> history = model.fit(x, y, epochs=20, verbose=0, callbacks=[cb])
        >>> cb.stopped_by.kind in ("nan", "diverged"), len(history.epoch) < 20
        (True, True)
    """

    def __init__(
        self,
        monitor: Monitor | MonitorConfig | None = None,
        *,
        stop_on: tuple[str, ...] | list[str] = ("nan", "diverged"),
        verbose: bool = True,
        loss_key: str = "loss",
        backup_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.backup_dir = _backup_dir(backup_dir)
        self._watch = Watch(
            monitor, stop_on=stop_on, verbose=verbose, logger_name=__name__
        )
        self.loss_key = check_key("loss_key", loss_key)
        self._check_step: int | None = None  # the step a loaded state expects
        self.losses: list[float] = []
        self._step = 0
        self._prev = (-1, 0.0)  # (batch index, running mean) within the epoch
        self._val: float | None = None
        self._batch_lr: float | None = None  # the LR the current batch uses
        self._missing_warned = False

    def _lr(self) -> float | None:
        try:
            return float(ops.convert_to_numpy(_optimizer(self.model).learning_rate))
        except (AttributeError, TypeError, ValueError):  # pragma: no cover
            return None

    def _report(self, found: list[Finding]) -> None:
        if self._watch.report(found) is not None and self.model is not None:
            self.model.stop_training = True

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Go on from :meth:`state_dict` (before ``fit``).

        Raises:
            ValueError: not a dict :meth:`state_dict` returned (nothing is
                changed).
        """
        super().load_state_dict(state_dict)
        self._check_step = self._step  # compared with the model's at fit

    def _state_path(self) -> Path | None:
        return None if self.backup_dir is None else self.backup_dir / _STATE_FILE

    def _load_backup(self) -> bool:
        """Load the state ``backup_dir`` holds, if any; True when loaded."""

        def load(state: dict[str, Any]) -> bool:
            val = state.get("val")
            state["val"] = None if val is None else from_json_float(val)
            self.load_state_dict(state)
            return True

        return _read_backup(self._state_path(), load) is not None

    def _save_backup(self) -> None:
        state = self.state_dict()
        state["val"] = None if self._val is None else json_float(self._val)
        _write_backup(self._state_path(), state)

    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        try:
            trained = int(ops.convert_to_numpy(_optimizer(self.model).iterations))
        except (AttributeError, TypeError, ValueError):  # pragma: no cover
            trained = 0
        fresh = self._step == 0 and self.monitor.updates == 0
        if fresh and not self._load_backup() and trained > 0:
            self._step = trained  # the run's own step numbers
        # a model that trained before this callback saw it
        self._watch.begin(trained_before=trained > 0)

    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._prev = (-1, 0.0)

    def on_train_batch_begin(
        self, batch: int, logs: Mapping[str, Any] | None = None
    ) -> None:
        self._batch_lr = self._lr()
        expected, self._check_step = self._check_step, None
        if expected is not None:
            try:
                done = int(ops.convert_to_numpy(_optimizer(self.model).iterations))
            except (AttributeError, TypeError, ValueError):  # pragma: no cover
                return
            if done != expected:
                logger.warning(
                    "lrkit MonitorCallback: its state is at step %d but the "
                    "model's optimizer at step %d: restore the model from the "
                    "same point (keras.callbacks.BackupAndRestore with the same "
                    "backup_dir, listed before this callback), or the curve is "
                    "judged across the jump",
                    expected,
                    done,
                )

    def on_train_batch_end(
        self, batch: int, logs: Mapping[str, Any] | None = None
    ) -> None:
        mean = None if logs is None else logs.get(self.loss_key)
        if mean is None:
            if not self._missing_warned:
                self._missing_warned = True
                keys = ", ".join(sorted(logs or {})) or "none"
                logger.warning(
                    "lrkit MonitorCallback: no %r in the training logs (keys: %s); "
                    "nothing is watched. Pass loss_key=...",
                    self.loss_key,
                    keys,
                )
            return
        mean = float(mean)
        last, last_mean = self._prev
        n = max(batch - last, 1)  # more than 1 with steps_per_execution
        loss = ((batch + 1) * mean - (last + 1) * last_mean) / n
        if not math.isfinite(mean):
            loss = mean
        self._prev = (batch, mean)
        self.losses.append(loss)
        lr = self._batch_lr if self._batch_lr is not None else self._lr()
        found = self.monitor.update(self._step, loss, val_loss=self._val, lr=lr)
        self._val = None
        self._report(found)
        self._step += n

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        value = None if logs is None else logs.get("val_loss")
        if value is not None:
            self._val = float(value)
        self._save_backup()

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._val is not None:
            self.monitor.update(self._step, None, val_loss=self._val)
            self._step += 1
            self._val = None
        self._watch.finish()
        _drop_backup(self._state_path())


#: The file ``MonitorCallback(backup_dir=...)`` keeps its state in.
_STATE_FILE = "lrkit_monitor.json"

#: The file ``PlateauCallback(backup_dir=...)`` keeps its state in.
_PLATEAU_FILE = "lrkit_plateau.json"


from ._keras_find import Snapshot, find_lr, snapshot  # noqa: E402
