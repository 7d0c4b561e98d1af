"""Composing schedules: :class:`Warmup`, :class:`Join`, :class:`Scale` and ``>>``.

Any ``Callable[[int], float]`` is accepted where a schedule is expected; lrkit
schedules add serialisation and a known length (``end_step``).

- ``Warmup(steps=W, then=s)`` ramps from ``start_factor × s(0)`` up to ``s(0)``
  over ``W`` steps, then runs ``s`` from *its* step 0: ``s(t - W)``.
- ``Join(parts, boundaries)`` runs ``parts[i]`` from ``boundaries[i-1]`` on,
  each part seeing the steps since its own boundary.
- ``Scale(schedule, factor)`` multiplies a schedule by a constant.
- ``a >> b`` is ``Join([a, b], [a.end_step])``, and ``Warmup(steps=W) >> b`` is
  ``Warmup(steps=W, then=b)``.

So ``Warmup(steps=500) >> Cosine(total_steps=9500)`` lasts 10 000 steps: the
cosine starts at step 500 from its peak and ends at step 10 000.

Example:
    >>> from lrkit import Constant, Cosine, Join, Warmup
    >>> s = Warmup(steps=10) >> Cosine(total_steps=90, end_lr=0.1) >> Constant(lr=0.1)
    >>> s(10), s(100), s.end_step
    (1.0, 0.1, 100)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field, replace
from typing import Any, ClassVar

from . import _check
from .schedules import (
    Schedule,
    ScheduleFn,
    _ramp,
    _round_steps,
    _seq_arg,
    _set,
    _spe,
    _step,
    _steps_arg,
    _total_for_frac,
    register,
)

__all__ = ["Join", "Scale", "Warmup", "chain"]

_SHAPES = ("linear", "cosine", "exponential")


def _end_of(schedule: ScheduleFn | None) -> int | None:
    """``end_step`` of a schedule (None for plain callables)."""
    if schedule is None:
        return 0
    end = getattr(schedule, "end_step", None)
    return end if isinstance(end, int) else None


@register
@dataclass(frozen=True, kw_only=True)
class Warmup(Schedule):
    """Ramp up into any schedule: warmup as a wrapper, not a flag.

    With ``W = steps``, ``target = then(0)`` (1.0 without ``then``) and
    ``s0 = start_factor``::

        t <  W:  target × ramp(t / W)        ramp: s0 -> 1
        t >= W:  then(t - W)

    ``ramp`` is ``s0 + (1 - s0) × x`` (``shape="linear"``),
    ``s0 + (1 - s0) × (1 - cos(π x)) / 2`` (``"cosine"``) or ``s0 ** (1 - x)``
    (``"exponential"``, needs ``s0 > 0``). The default ``start_factor`` is
    ``1 / (W + 1)``, which makes the linear ramp ``(t + 1) / (W + 1)``: it
    never trains at LR 0 and reaches ``then(0)`` exactly at step ``W``. Pass
    ``start_factor=0`` to start from 0 (the Hugging Face convention).

    The length is given once, in one unit: ``steps``; or ``epochs`` with
    ``steps_per_epoch``; or ``warmup_frac``, a fraction of ``total_steps`` if
    given, else of the whole schedule (warmup included, so ``then`` needs an
    ``end_step``): ``W = warmup_frac × L / (1 - warmup_frac)`` for a ``then``
    of length ``L``. Epochs and fractions become the nearest step, halves
    rounded up (as everywhere in lrkit); only ``steps`` is stored.

    torch: ``LinearLR(start_factor=a, total_iters=W)`` followed by another
    scheduler in ``SequentialLR(milestones=[W])`` is
    ``Warmup(steps=W, start_factor=a, then=...)``.

    Reference: Goyal et al., "Accurate, Large Minibatch SGD: Training ImageNet
    in 1 Hour", 2017, https://arxiv.org/abs/1706.02677 (gradual warmup).

    Example:
        >>> from lrkit import Cosine
        >>> s = Warmup(steps=4, then=Cosine(total_steps=10))
        >>> [round(s(t), 2) for t in range(6)], s.end_step
        ([0.2, 0.4, 0.6, 0.8, 1.0, 0.98], 14)
        >>> Warmup(warmup_frac=0.1, then=Cosine(total_steps=900)).steps
        100
    """

    name: ClassVar[str] = "warmup"
    positional: ClassVar[tuple[str, ...]] = ("steps",)

    steps: int | None = None
    then: ScheduleFn | None = None
    shape: str = "linear"
    start_factor: float | None = None
    epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None
    warmup_frac: InitVar[float | None] = None
    total_steps: InitVar[int | None] = None

    _target: float = field(init=False, repr=False, compare=False)
    _s0: float = field(init=False, repr=False, compare=False)

    def __post_init__(
        self,
        epochs: Any,
        steps_per_epoch: Any,
        warmup_frac: Any,
        total_steps: Any,
    ) -> None:
        if self.then is not None:
            _check.callable_("then", self.then)
        spe = _spe(steps_per_epoch, epochs is not None, "epochs")
        total = _total_for_frac(total_steps, warmup_frac is not None, "warmup_frac")
        if warmup_frac is not None and total is None:
            frac = _check.fraction("warmup_frac", warmup_frac, high_open=True)
            if self.then is None:  # a fraction of nothing would be 0 steps
                _check.fail(
                    "then",
                    "the schedule to warm up into when warmup_frac is given "
                    "without total_steps",
                    None,
                    "warmup_frac is a fraction of the whole schedule: write "
                    "Warmup(warmup_frac=0.05, then=...), give total_steps=..., or "
                    "use steps=... (in the text form: warmup(steps=N) >> ...).",
                )
            length = _end_of(self.then)
            if length is None:
                _check.fail(
                    "total_steps",
                    "given when warmup_frac is used with a `then` of unknown length",
                    None,
                    "Give total_steps, or steps=... directly.",
                )
            if self.steps is not None or epochs is not None:
                _check.fail(
                    "warmup_frac", "omitted when steps or epochs is given", warmup_frac
                )
            w = _round_steps(frac * length / (1.0 - frac))
        else:
            w = _steps_arg(
                "steps",
                self.steps,
                epochs=epochs,
                epochs_name="epochs",
                steps_per_epoch=spe,
                frac=warmup_frac,
                frac_name="warmup_frac",
                total_steps=total,
                minimum=0,
            )
        _set(self, "steps", w)
        _set(self, "shape", _check.choice("shape", self.shape, _SHAPES))
        if self.start_factor is None:
            s0 = 1.0 / (w + 1)
        else:
            s0 = _check.fraction("start_factor", self.start_factor)
            _set(self, "start_factor", s0)
        if self.shape == "exponential" and s0 == 0.0:
            _check.fail(
                "start_factor",
                "> 0 with shape='exponential'",
                self.start_factor,
                "An exponential ramp cannot start from 0.",
            )
        target = 1.0 if self.then is None else float(self.then(0))
        if not (target >= 0.0 and math.isfinite(target)):
            _check.fail("then(0)", "a finite value >= 0", target)
        _set(self, "_target", target)
        _set(self, "_s0", s0)

    def __call__(self, step: int) -> float:
        step = _step(step)
        w: int = self.steps  # type: ignore[assignment]
        if step < w:
            return self._target * _ramp(self.shape, self._s0, step / w)
        if self.then is None:
            return 1.0
        return float(self.then(step - w))

    @property
    def end_step(self) -> int | None:
        end = _end_of(self.then)
        return None if end is None else self.steps + end  # type: ignore[operator]


@register
@dataclass(frozen=True, kw_only=True)
class Join(Schedule):
    """Run schedules one after another; each sees the steps since its boundary.

    Formula: with ``b_0 = 0`` and ``b_i = boundaries[i-1]``,
    ``lr(t) = parts[i](t - b_i)`` for ``b_i <= t < b_{i+1}``.

    ``boundaries`` (strictly increasing, one fewer than ``parts``) are
    optimizer steps; or give ``boundary_epochs`` (with ``steps_per_epoch``) or
    ``boundary_fracs`` (fractions of ``total_steps``); or leave them out to
    switch at each part's ``end_step``. The join is continuous at a boundary
    when the part before it has reached its final value there and the next
    part starts from that value (``Cosine(..., end_lr=a)`` then anything with
    ``peak_lr=a``).

    torch: ``SequentialLR(schedulers, milestones)`` is
    ``Join(parts, boundaries=milestones)``, without its resume bugs.

    Example:
        >>> from lrkit import Constant, Linear
        >>> s = Join(parts=[Linear(total_steps=10, start_lr=0.0, end_lr=1.0),
        ...                 Constant(lr=1.0)])
        >>> s.boundaries, s(5), s(10), s(99)
        ((10,), 0.5, 1.0, 1.0)
    """

    name: ClassVar[str] = "join"
    positional: ClassVar[tuple[str, ...]] = ("*parts",)

    parts: tuple[ScheduleFn, ...] = ()
    boundaries: tuple[int, ...] | None = None
    boundary_epochs: InitVar[Iterable[float] | None] = None
    boundary_fracs: InitVar[Iterable[float] | None] = None
    steps_per_epoch: InitVar[int | None] = None
    total_steps: InitVar[int | None] = None

    _starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(
        self,
        boundary_epochs: Any,
        boundary_fracs: Any,
        steps_per_epoch: Any,
        total_steps: Any,
    ) -> None:
        if isinstance(self.parts, (str, bytes)) or not isinstance(self.parts, Iterable):
            _check.fail("parts", "a sequence of schedules", self.parts, exc=TypeError)
        parts = tuple(self.parts)
        if not parts:
            _check.fail("parts", "non-empty", self.parts)
        for i, p in enumerate(parts):
            _check.callable_(
                f"parts[{i}]", p, "Every part must be a schedule (a callable)."
            )
        spe = _spe(steps_per_epoch, boundary_epochs is not None, "boundary_epochs")
        total = _total_for_frac(
            total_steps, boundary_fracs is not None, "boundary_fracs"
        )
        if (
            self.boundaries is None
            and boundary_epochs is None
            and boundary_fracs is None
        ):
            bounds: list[int] = []
            at = 0
            for i, p in enumerate(parts[:-1]):
                end = _end_of(p)
                if end is None or end < 1:
                    _check.fail(
                        "boundaries",
                        "given",
                        None,
                        f"parts[{i}] has no end_step to switch at; "
                        "give boundaries=[...] explicitly.",
                        exc=TypeError,
                    )
                at += end
                bounds.append(at)
            boundaries = tuple(bounds)
        else:
            boundaries = _seq_arg(
                "boundaries",
                self.boundaries,
                epochs=boundary_epochs,
                epochs_name="boundary_epochs",
                steps_per_epoch=spe,
                fracs=boundary_fracs,
                fracs_name="boundary_fracs",
                total_steps=total,
            )
        if len(boundaries) != len(parts) - 1:
            _check.fail(
                "boundaries",
                f"one fewer than parts ({len(parts) - 1} for {len(parts)} parts)",
                boundaries,
            )
        _set(self, "parts", parts)
        _set(self, "boundaries", boundaries)
        _set(self, "_starts", (0, *boundaries))

    def __call__(self, step: int) -> float:
        step = _step(step)
        i = bisect.bisect_right(self._starts, step) - 1
        return float(self.parts[i](step - self._starts[i]))

    @property
    def end_step(self) -> int | None:
        end = _end_of(self.parts[-1])
        return None if end is None else self._starts[-1] + end


@register
@dataclass(frozen=True, kw_only=True)
class Scale(Schedule):
    """Multiply a schedule by a constant: ``lr(t) = factor × schedule(t)``.

    Useful to reuse one shape at several heights (per-param-group schedules)
    or to turn a unit-peak schedule into absolute learning rates.

    Example:
        >>> from lrkit import Cosine
        >>> s = Scale(schedule=Cosine(total_steps=10), factor=3e-4)
        >>> s(0), s(10)
        (0.0003, 0.0)
    """

    name: ClassVar[str] = "scale"
    positional: ClassVar[tuple[str, ...]] = ("schedule", "factor")

    schedule: ScheduleFn
    factor: float

    def __post_init__(self) -> None:
        _check.callable_("schedule", self.schedule)
        _set(self, "factor", _check.positive("factor", self.factor))

    def __call__(self, step: int) -> float:
        step = _step(step)
        return self.factor * float(self.schedule(step))

    @property
    def end_step(self) -> int | None:
        return _end_of(self.schedule)


def chain(*parts: ScheduleFn) -> Schedule:
    """``parts[0] >> parts[1] >> ...``: run each part until its ``end_step``.

    A :class:`Warmup` without ``then`` wraps everything after it. Joins are
    flattened. Every part but the last needs an ``end_step``.

    Example:
        >>> from lrkit import Constant, Cosine, Warmup
        >>> s = chain(Warmup(steps=5), Cosine(total_steps=10), Constant(lr=0.0))
        >>> type(s).__name__, type(s.then).__name__, s.then.boundaries
        ('Warmup', 'Join', (10,))
    """
    if not parts:
        _check.fail("parts", "non-empty", parts)
    acc: ScheduleFn = parts[0]
    for part in parts[1:]:
        acc = _join2(acc, part)
    if not isinstance(acc, Schedule):
        _check.fail("parts", "lrkit schedules when given alone", acc, exc=TypeError)
    return acc


def _open(schedule: ScheduleFn) -> bool:
    """Whether the schedule ends in a Warmup still waiting for its ``then``."""
    if isinstance(schedule, Warmup):
        return schedule.then is None or _open(schedule.then)
    if isinstance(schedule, Join):
        return _open(schedule.parts[-1])
    return False


def _join2(first: ScheduleFn, rest: ScheduleFn) -> Schedule:
    """``first >> rest`` in canonical form (warmups wrap what follows them)."""
    if isinstance(first, Warmup):
        then = rest if first.then is None else _join2(first.then, rest)
        return replace(first, then=then)
    if isinstance(first, Join) and _open(first):
        last = _join2(first.parts[-1], rest)
        return replace(first, parts=(*first.parts[:-1], last))
    end = _end_of(first)
    if end is None or end < 1:
        _check.fail(
            "first",
            "a schedule with an end_step >= 1 to put `>>` after it",
            first,
            "It never ends (or has no length), so nothing can follow it; "
            "use Join(parts=[...], boundaries=[...]).",
        )
    parts: list[ScheduleFn] = []
    bounds: list[int] = []
    if isinstance(first, Join):
        parts.extend(first.parts)
        bounds.extend(first.boundaries or ())
    else:
        parts.append(first)
    bounds.append(end)
    if isinstance(rest, Join):
        parts.extend(rest.parts)
        bounds.extend(end + b for b in rest.boundaries or ())
    else:
        parts.append(rest)
    return Join(parts=tuple(parts), boundaries=tuple(bounds))
