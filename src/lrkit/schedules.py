"""Pure learning-rate schedules: frozen dataclasses with ``__call__(step) -> float``.

A schedule is a pure function of the 0-based optimizer-step count ``t``. lrkit
applies it through one equation::

    lr(t) = base_lr × schedule(t) × plateau_scale × recovery_scale

**What a schedule returns.** ``schedule(t)`` is a *multiplier of base_lr*. Every
parameter named ``*_lr`` (``peak_lr``, ``end_lr``, ``low_lr``, ...) is in units
of ``base_lr`` and ``peak_lr`` defaults to 1.0, so
``Cosine(total_steps=1000, end_lr=0.01)`` goes from the optimizer's LR down to
1% of it. Set ``base_lr=1`` (``lrkit.torch.Scheduler(..., base_lr=1.0)``,
``lrkit.keras.Schedule(..., base_lr=1.0)``, the CLI's default) and the same
numbers are absolute learning rates: ``Cosine(peak_lr=3e-4, ...)``.

**Ends.** Schedules with a length (``total_steps`` and friends) *hold* their
final value after the end: a cosine never rises again, a one-cycle never raises.
:attr:`Schedule.end_step` tells where that is (``None`` for schedules that never
settle, such as :class:`Step` or :class:`Cyclic`). The step must be a whole
number >= 0 (an int, or an integral float such as ``3.0``): a negative or
fractional step raises ``ValueError``, text or ``None`` ``TypeError``.

**Units.** Durations are in optimizer steps. Where a duration is the natural
knob, it can also be given in epochs (``total_epochs=...`` with
``steps_per_epoch=...``) or as a fraction (``*_frac``); these are converted to
steps once, at construction, to the nearest step with halves rounded up
(``warmup_frac=0.25`` of 10 steps is 3 steps, 2.5 epochs of 1 step is 3), and
only the steps are stored.

Every schedule validates its arguments at construction (errors name the
parameter, the expectation and the value), serialises with :meth:`to_config` /
:func:`schedule_from_config`, and is registered by name (:func:`registry`) for
the text form (:func:`lrkit.parse_schedule`).

Example:
    >>> from lrkit import Cosine, Warmup
    >>> s = Warmup(steps=100, then=Cosine(total_steps=900, end_lr=0.01))
    >>> [round(s(t), 4) for t in (0, 50, 100, 550, 1000, 5000)]
    [0.0099, 0.505, 1.0, 0.505, 0.01, 0.01]
"""

from __future__ import annotations

import bisect
import contextlib
import dataclasses
import itertools
import math
import numbers
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import InitVar, dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeVar

from . import _check

__all__ = [
    "Constant",
    "Cosine",
    "CosineRestarts",
    "Cyclic",
    "Exponential",
    "InverseSqrt",
    "Linear",
    "MultiStep",
    "OneCycle",
    "Piecewise",
    "Polynomial",
    "Schedule",
    "ScheduleFn",
    "Step",
    "WarmupStableDecay",
    "register",
    "registry",
    "schedule_from_config",
]

#: Anything lrkit accepts where a schedule is expected.
ScheduleFn = Callable[[int], float]

S = TypeVar("S", bound="type[Schedule]")


_STEP_HINT = "Schedules are defined for optimizer steps 0, 1, 2, ..."


def _step(step: Any) -> int:
    """Validate the step a schedule is called with and return it as an ``int``.

    Every schedule's ``__call__`` starts here: the step must be a whole number
    >= 0. Ints (numpy's and 0-d integer tensors included) and integral floats
    such as ``3.0`` (0-d float tensors and arrays too) are accepted; ``2.5``,
    NaN, text, ``None`` and bools are not.
    """
    if type(step) is int:  # the common case, first
        value = step
    elif isinstance(step, numbers.Real) and not isinstance(
        step, (bool, numbers.Integral)
    ):
        v = float(step)
        if not (math.isfinite(v) and v.is_integer()):
            _check.fail("step", "a whole number", step, _STEP_HINT)
        value = int(v)
    else:
        index: int | None = None
        if not isinstance(step, (bool, str, bytes)):
            with contextlib.suppress(TypeError):  # int subclasses, numpy ints, ...
                index = operator.index(step)
        if index is None and getattr(step, "shape", None) == ():
            # a 0-d float tensor or array: a number like a float
            v = math.nan
            with contextlib.suppress(TypeError, ValueError):
                v = float(step)
            if not (math.isfinite(v) and v.is_integer()):
                _check.fail("step", "a whole number", step, _STEP_HINT)
            index = int(v)
        if index is None:
            _check.fail("step", "a whole number", step, _STEP_HINT, exc=TypeError)
        value = index
    if value < 0:
        _check.fail("step", ">= 0", step, _STEP_HINT)
    return value


def _set(obj: object, name: str, value: Any) -> None:
    """Assign to a frozen dataclass during ``__post_init__``."""
    object.__setattr__(obj, name, value)


# --------------------------------------------------------------------- units


def _round_steps(x: float) -> int:
    """A duration in epochs or fractions, converted to steps: the nearest step.

    Halves round *up* (2.5 -> 3, 3.5 -> 4; Python's ``round`` gives 2 and 4),
    and the product is first rounded to 9 decimals so that ``0.15 × 10``
    counts as the 1.5 it means on paper. Every place where a fraction or an
    epoch count becomes steps uses this.
    """
    return math.floor(round(x, 9) + 0.5)


def _steps_arg(
    name: str,
    steps: Any,
    *,
    epochs: Any = None,
    epochs_name: str | None = None,
    steps_per_epoch: int | None = None,
    frac: Any = None,
    frac_name: str | None = None,
    total_steps: int | None = None,
    default: int | None = None,
    minimum: int = 1,
) -> int:
    """Resolve one duration given in steps, epochs or a fraction of total_steps.

    Exactly one form may be given; ``default`` applies when none is. Epochs and
    fractions are rounded to the nearest step, halves up (:func:`_round_steps`).
    """
    forms = [(name, steps), (epochs_name, epochs), (frac_name, frac)]
    given = [(n, v) for n, v in forms if n is not None and v is not None]
    if len(given) > 1:
        _check.fail(
            given[1][0],
            f"omitted when {given[0][0]} is given",
            given[1][1],
            "Give the duration once.",
        )
    if not given:
        if default is not None:
            return default
        names = " or ".join(n for n, _ in forms if n)
        _check.fail(name, "given", None, f"Give {names}.", exc=TypeError)
    used, raw = given[0]
    if used == name:
        check = _check.positive_int if minimum >= 1 else _check.non_negative_int
        value = check(name, steps)
    elif used == epochs_name:
        e = _check.non_negative(used, epochs)
        if steps_per_epoch is None:
            _check.fail(
                "steps_per_epoch",
                f"an int >= 1 when {used} is given",
                None,
                "lrkit counts optimizer steps; say how many make an epoch.",
            )
        value = _round_steps(e * steps_per_epoch)
    else:
        f = _check.fraction(used, frac)
        if total_steps is None:
            _check.fail(
                "total_steps",
                f"an int >= 1 when {used} is given",
                None,
                f"{used} is a fraction of total_steps.",
            )
        value = _round_steps(f * total_steps)
    if value < minimum:
        unit = "step" if minimum == 1 else "steps"
        _check.fail(used, f"at least {minimum} {unit} long", raw)
    return value


def _spe(steps_per_epoch: Any, used: bool, epochs_names: str) -> int | None:
    """Validate steps_per_epoch; it must be given only with an epochs argument."""
    if steps_per_epoch is None:
        return None
    spe = _check.positive_int("steps_per_epoch", steps_per_epoch)
    if not used:
        _check.fail(
            "steps_per_epoch",
            f"given only together with {epochs_names}",
            steps_per_epoch,
        )
    return spe


def _total_for_frac(total_steps: Any, used: bool, frac_names: str) -> int | None:
    if total_steps is None:
        return None
    total = _check.positive_int("total_steps", total_steps)
    if not used:
        _check.fail(
            "total_steps", f"given only together with {frac_names}", total_steps
        )
    return total


def _int_seq(
    name: str,
    values: Any,
    *,
    minimum: int = 1,
    shown: Any = None,
    strict: bool = True,
) -> tuple[int, ...]:
    """A strictly increasing (non-decreasing with ``strict=False``) tuple of
    ints >= minimum (``shown`` in errors)."""
    shown = values if shown is None else shown
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        _check.fail(name, "a sequence of ints", values, exc=TypeError)
    out = tuple(values)
    if not all(
        isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in out
    ):
        _check.fail(name, "a sequence of ints", values, exc=TypeError)
    ints = tuple(int(v) for v in out)
    increasing = all(
        b > a or (b == a and not strict) for a, b in itertools.pairwise(ints)
    )
    if not increasing or any(v < minimum for v in ints):
        order = "strictly increasing" if strict else "non-decreasing"
        _check.fail(name, f"{order} ints >= {minimum}", shown)
    return ints


def _seq_arg(
    name: str,
    steps: Any,
    *,
    epochs: Any,
    epochs_name: str,
    steps_per_epoch: int | None,
    fracs: Any = None,
    fracs_name: str | None = None,
    total_steps: int | None = None,
    strict: bool = True,
) -> tuple[int, ...]:
    """Resolve a list of step positions given in steps, epochs or fractions
    (``strict=False``: a position may repeat)."""
    given = [
        n
        for n, v in ((name, steps), (epochs_name, epochs), (fracs_name, fracs))
        if n is not None and v is not None
    ]
    if len(given) > 1:
        _check.fail(
            given[1],
            f"omitted when {given[0]} is given",
            epochs if given[1] == epochs_name else fracs,
        )
    if not given:
        forms = " or ".join(n for n in (name, epochs_name, fracs_name) if n)
        _check.fail(name, "given", None, f"Give {forms}.", exc=TypeError)
    if steps is not None:
        return _int_seq(name, steps, strict=strict)
    if epochs is not None:
        if steps_per_epoch is None:
            _check.fail(
                "steps_per_epoch",
                f"an int >= 1 when {epochs_name} is given",
                None,
                "lrkit counts optimizer steps; say how many make an epoch.",
            )
        values = [
            _check.non_negative(f"{epochs_name}[{i}]", e)
            for i, e in enumerate(_floats(epochs_name, epochs))
        ]
        steps_list = [_round_steps(e * steps_per_epoch) for e in values]
        return _int_seq(epochs_name, steps_list, shown=epochs, strict=strict)
    assert fracs_name is not None
    if total_steps is None:
        _check.fail(
            "total_steps",
            f"an int >= 1 when {fracs_name} is given",
            None,
            f"{fracs_name} are fractions of total_steps.",
        )
    values = [
        _check.fraction(f"{fracs_name}[{i}]", f)
        for i, f in enumerate(_floats(fracs_name, fracs))
    ]
    steps_list = [_round_steps(f * total_steps) for f in values]
    return _int_seq(fracs_name, steps_list, shown=fracs, strict=strict)


def _floats(name: str, values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        _check.fail(name, "a sequence of numbers", values, exc=TypeError)
    return tuple(_check.real(f"{name}[{i}]", v) for i, v in enumerate(values))


def _le(name: str, value: float, other_name: str, other: float) -> None:
    if value > other:
        _check.fail(name, f"<= {other_name}={other!r}", value)


# ------------------------------------------------------------------ the base


class Schedule:
    """Base class of lrkit's schedules (and the type to subclass for your own).

    A subclass is a ``@dataclass(frozen=True, kw_only=True)`` that sets the
    class variable ``name`` (its registry name), validates in
    ``__post_init__`` and implements ``__call__(step) -> float``. Decorate it
    with :func:`register` to make it available by name in configs and in the
    text form. Plain functions ``Callable[[int], float]`` are accepted wherever
    lrkit expects a schedule; subclassing adds serialisation, ``end_step`` and
    ``>>``.

    ``a >> b`` runs ``a`` until its :attr:`end_step`, then ``b`` from its own
    step 0 (a :class:`~lrkit.Join`); ``Warmup(steps=n) >> b`` ramps into ``b``.

    Example:
        >>> from dataclasses import dataclass
        >>> import lrkit
        >>> @lrkit.register
        ... @dataclass(frozen=True, kw_only=True)
        ... class Halving(lrkit.Schedule):
        ...     name = "halving"
        ...     every_steps: int = 10
        ...     def __call__(self, step: int) -> float:
        ...         return 0.5 ** (step // self.every_steps)
        >>> lrkit.parse_schedule("halving(every_steps=5)")(10)
        0.25
    """

    name: ClassVar[str] = ""
    #: Parameters the text form accepts positionally, in order.
    positional: ClassVar[tuple[str, ...]] = ()

    def __call__(self, step: int) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def end_step(self) -> int | None:
        """The number of steps the schedule is designed for, or None.

        From this step on the value is constant (it may become constant
        earlier). ``None`` means the schedule never settles or its length is
        unknown.
        """
        return None

    def to_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict: ``{"name": ..., <every parameter>}``.

        Nested schedules become nested configs. Plain functions cannot be
        serialised and raise ``TypeError``.
        """
        config: dict[str, Any] = {"name": self.name}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if f.init:
                config[f.name] = _encode(f.name, getattr(self, f.name))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Schedule:
        """Rebuild a schedule from :meth:`to_config` output (after JSON too).

        Called on :class:`Schedule` it dispatches on ``config["name"]``; called
        on a subclass it checks the name matches.
        """
        if not isinstance(config, Mapping):
            _check.fail("config", "a mapping", config, exc=TypeError)
        name = config.get("name")
        table = registry()
        if not isinstance(name, str) or name not in table:
            _check.fail(
                "config['name']",
                "a registered schedule name",
                name,
                f"Valid names: {', '.join(table)}.",
            )
        target = table[name]
        if cls is not Schedule and target is not cls:
            _check.fail("config['name']", repr(cls.name), name)
        params = {k: _decode(v) for k, v in config.items() if k != "name"}
        valid = _init_names(target)
        for key in params:
            if key not in valid:
                _check.fail(
                    "config",
                    f"made of {name}'s parameters",
                    dict(config),
                    f"Unknown parameter {key!r}; valid: {', '.join(valid)}.",
                )
        for key in _required_names(target):
            if key not in params:
                _check.fail(
                    f"config[{key!r}]",
                    f"given (a required parameter of {name})",
                    None,
                    exc=TypeError,
                )
        return target(**params)

    def to_text(self) -> str:
        """The text form ``lrkit schedule`` and :func:`lrkit.parse_schedule`
        read (``str(schedule)`` gives it too): ``parse_schedule(s.to_text()) ==
        s``. Only the parameters that differ from their defaults are written.

        Example:
            >>> from lrkit import Cosine, Warmup
            >>> Warmup(steps=100, then=Cosine(total_steps=900)).to_text()
            'warmup(steps=100, then=cosine(total_steps=900))'
        """
        return _text(self.to_config())

    def __str__(self) -> str:
        try:
            return self.to_text()
        except TypeError:  # a part that cannot be serialised (a function)
            return repr(self)

    def __rshift__(self, other: ScheduleFn) -> Schedule:
        from .compose import chain

        return chain(self, other)


def _init_names(cls: type) -> list[str]:
    """Names accepted by the dataclass constructor (fields and InitVars)."""
    import inspect

    return list(inspect.signature(cls).parameters)


def _required_names(cls: type) -> list[str]:
    """Constructor parameters without a default."""
    import inspect

    params = inspect.signature(cls).parameters.values()
    return [p.name for p in params if p.default is inspect.Parameter.empty]


def _text(config: Mapping[str, Any]) -> str:
    """The text form of a schedule's config (see :meth:`Schedule.to_text`)."""
    import inspect

    cls = registry()[config["name"]]
    params = inspect.signature(cls).parameters
    first = next(iter(params))
    # Join's parts: written as positional arguments (``positional = ("*parts",)``)
    star = getattr(cls, "positional", ())[:1] == (f"*{first}",)
    args: list[str] = []
    for name, p in params.items():
        if name not in config:
            continue
        value = config[name]
        default = p.default
        if default is not inspect.Parameter.empty and _same_value(value, default):
            continue
        if star and name == first:
            args.extend(_text_value(v) for v in value)
        else:
            args.append(f"{name}={_text_value(value)}")
    return f"{config['name']}({', '.join(args)})"


def _same_value(value: Any, default: Any) -> bool:
    """A parameter's config value equals its default (True is not 1)."""
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(value, bool) or isinstance(default, bool):
        return value is default
    return bool(value == default)


def _text_value(value: Any) -> str:
    if isinstance(value, Mapping):
        return _text(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_text_value(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return str(value).lower()  # the grammar's none, true, false
    return repr(value)  # numbers, and strings quoted


def _encode(param: str, value: Any) -> Any:
    if isinstance(value, Schedule):
        return value.to_config()
    if isinstance(value, (tuple, list)):
        return [_encode(param, v) for v in value]
    if callable(value):
        _check.fail(
            param,
            "a registered lrkit Schedule to be serialised",
            value,
            "Subclass lrkit.Schedule and decorate it with lrkit.register.",
            exc=TypeError,
        )
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping) and "name" in value:
        return Schedule.from_config(value)
    if isinstance(value, list):
        return tuple(_decode(v) for v in value)
    return value


_REGISTRY: dict[str, type[Schedule]] = {}


def register(cls: S) -> S:
    """Class decorator: make a :class:`Schedule` subclass known by its ``name``.

    Registered names work in :func:`schedule_from_config` and in the text form.
    Registering the same class twice is harmless; another class under a taken
    name raises ``ValueError``.
    """
    if not (isinstance(cls, type) and issubclass(cls, Schedule)):
        _check.fail("cls", "a subclass of lrkit.Schedule", cls, exc=TypeError)
    if not dataclasses.is_dataclass(cls):
        _check.fail(
            "cls",
            "a dataclass",
            cls,
            "Decorate it with @dataclass(frozen=True, kw_only=True) first.",
            exc=TypeError,
        )
    name = cls.name
    if not isinstance(name, str) or not name.isidentifier():
        _check.fail(f"{cls.__name__}.name", "an identifier", name)
    taken = _REGISTRY.get(name)
    if taken is not None and taken is not cls:
        _check.fail(
            f"{cls.__name__}.name",
            "a name not registered yet",
            name,
            f"{name!r} is {taken.__module__}.{taken.__qualname__}.",
        )
    _REGISTRY[name] = cls
    return cls


def registry() -> Mapping[str, type[Schedule]]:
    """Read-only ``{name: class}`` of every registered schedule and composition.

    These are the names the text form (:func:`lrkit.parse_schedule`) and
    :func:`schedule_from_config` accept, sorted; :func:`register` adds yours.

    Example:
        >>> import lrkit
        >>> names = lrkit.registry()
        >>> names["cosine"] is lrkit.Cosine, names["warmup"] is lrkit.Warmup
        (True, True)
        >>> list(names)[:4]
        ['constant', 'cosine', 'cosine_restarts', 'cyclic']
    """
    from . import compose  # noqa: F401  (registers warmup, join, scale)

    return MappingProxyType(dict(sorted(_REGISTRY.items())))


def schedule_from_config(config: Mapping[str, Any]) -> Schedule:
    """Rebuild any schedule from its :meth:`Schedule.to_config` dict.

    Example:
        >>> import json
        >>> from lrkit import Cosine, schedule_from_config
        >>> s = Cosine(total_steps=100, end_lr=0.1)
        >>> schedule_from_config(json.loads(json.dumps(s.to_config()))) == s
        True
    """
    return Schedule.from_config(config)


# ------------------------------------------------------------------ schedules


@register
@dataclass(frozen=True, kw_only=True)
class Constant(Schedule):
    """A constant: ``lr(t) = lr``.

    Example:
        >>> Constant(lr=0.5)(0), Constant(lr=0.5)(10**9)
        (0.5, 0.5)
    """

    name: ClassVar[str] = "constant"
    positional: ClassVar[tuple[str, ...]] = ("lr",)

    lr: float = 1.0

    def __post_init__(self) -> None:
        _set(self, "lr", _check.non_negative("lr", self.lr))

    def __call__(self, step: int) -> float:
        step = _step(step)
        return self.lr

    @property
    def end_step(self) -> int | None:
        return 0


@register
@dataclass(frozen=True, kw_only=True)
class Step(Schedule):
    """Decay by ``factor`` every ``every_steps`` steps (torch's ``StepLR``).

    Formula: ``lr(t) = peak_lr × factor ** floor(t / every_steps)``.
    It never settles (``end_step`` is None). torch names: ``step_size`` ->
    ``every_steps`` (in optimizer steps; use ``every_epochs`` with
    ``steps_per_epoch`` for per-epoch decays), ``gamma`` -> ``factor``.

    Example:
        >>> s = Step(every_steps=10, factor=0.5)
        >>> s(0), s(9), s(10), s(25)
        (1.0, 1.0, 0.5, 0.25)
        >>> Step(every_epochs=2, steps_per_epoch=100, factor=0.1).every_steps
        200
    """

    name: ClassVar[str] = "step"
    positional: ClassVar[tuple[str, ...]] = ("every_steps", "factor")

    every_steps: int | None = None
    factor: float = 0.1
    peak_lr: float = 1.0
    every_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    def __post_init__(self, every_epochs: Any, steps_per_epoch: Any) -> None:
        spe = _spe(steps_per_epoch, every_epochs is not None, "every_epochs")
        every = _steps_arg(
            "every_steps",
            self.every_steps,
            epochs=every_epochs,
            epochs_name="every_epochs",
            steps_per_epoch=spe,
        )
        _set(self, "every_steps", every)
        _set(self, "factor", _check.fraction("factor", self.factor, low_open=True))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))

    def __call__(self, step: int) -> float:
        step = _step(step)
        every: int = self.every_steps  # type: ignore[assignment]
        return self.peak_lr * float(self.factor ** (step // every))

    @property
    def end_step(self) -> int | None:
        return 0 if self.factor == 1.0 else None


@register
@dataclass(frozen=True, kw_only=True)
class MultiStep(Schedule):
    """Decay by ``factor`` at each milestone (torch's ``MultiStepLR``).

    Formula: ``lr(t) = peak_lr × factor ** k(t)`` with ``k(t)`` the number of
    milestones ``<= t``. Milestones are optimizer steps, non-decreasing (one
    repeated decays as many times, as in torch);
    or give ``milestone_epochs`` (with ``steps_per_epoch``) or
    ``milestone_fracs`` (fractions of ``total_steps``). The value holds after
    the last milestone (``end_step``). torch: ``gamma`` -> ``factor``.

    Example:
        >>> s = MultiStep(milestones=[100, 150], factor=0.1)
        >>> s(99), round(s(100), 6), round(s(150), 6)
        (1.0, 0.1, 0.01)
        >>> MultiStep(milestone_fracs=[0.5, 0.75], total_steps=1000).milestones
        (500, 750)
    """

    name: ClassVar[str] = "multistep"
    positional: ClassVar[tuple[str, ...]] = ("milestones", "factor")

    milestones: tuple[int, ...] | None = None
    factor: float = 0.1
    peak_lr: float = 1.0
    milestone_epochs: InitVar[Iterable[float] | None] = None
    milestone_fracs: InitVar[Iterable[float] | None] = None
    steps_per_epoch: InitVar[int | None] = None
    total_steps: InitVar[int | None] = None

    _levels: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(
        self,
        milestone_epochs: Any,
        milestone_fracs: Any,
        steps_per_epoch: Any,
        total_steps: Any,
    ) -> None:
        spe = _spe(steps_per_epoch, milestone_epochs is not None, "milestone_epochs")
        total = _total_for_frac(
            total_steps, milestone_fracs is not None, "milestone_fracs"
        )
        ms = _seq_arg(
            "milestones",
            self.milestones,
            epochs=milestone_epochs,
            epochs_name="milestone_epochs",
            steps_per_epoch=spe,
            fracs=milestone_fracs,
            fracs_name="milestone_fracs",
            total_steps=total,
            strict=False,  # torch's MultiStepLR: a repeated milestone decays twice
        )
        if not ms:
            _check.fail("milestones", "non-empty", ms, "Use Constant for no decay.")
        _set(self, "milestones", ms)
        _set(self, "factor", _check.fraction("factor", self.factor, low_open=True))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(
            self,
            "_levels",
            tuple(self.peak_lr * self.factor**k for k in range(len(ms) + 1)),
        )

    def __call__(self, step: int) -> float:
        step = _step(step)
        return self._levels[bisect.bisect_right(self.milestones, step)]  # type: ignore[arg-type]

    @property
    def end_step(self) -> int | None:
        assert self.milestones is not None
        return self.milestones[-1]


@register
@dataclass(frozen=True, kw_only=True)
class Piecewise(Schedule):
    """Piecewise constant: ``values[i]`` from ``boundaries[i-1]`` to ``boundaries[i]``.

    Formula: ``lr(t) = values[k(t)]`` with ``k(t)`` the number of boundaries
    ``<= t``; ``len(values) == len(boundaries) + 1``. Boundaries are optimizer
    steps (or ``boundary_epochs`` with ``steps_per_epoch``). optax's
    ``piecewise_constant_schedule`` gives scales; here you give the values.

    Example:
        >>> s = Piecewise(boundaries=[10, 20], values=[1.0, 0.5, 0.1])
        >>> s(0), s(10), s(19), s(20), s(1000)
        (1.0, 0.5, 0.5, 0.1, 0.1)
    """

    name: ClassVar[str] = "piecewise"
    positional: ClassVar[tuple[str, ...]] = ("boundaries", "values")

    boundaries: tuple[int, ...] | None = None
    values: tuple[float, ...] = ()
    boundary_epochs: InitVar[Iterable[float] | None] = None
    steps_per_epoch: InitVar[int | None] = None

    def __post_init__(self, boundary_epochs: Any, steps_per_epoch: Any) -> None:
        spe = _spe(steps_per_epoch, boundary_epochs is not None, "boundary_epochs")
        bounds = _seq_arg(
            "boundaries",
            self.boundaries,
            epochs=boundary_epochs,
            epochs_name="boundary_epochs",
            steps_per_epoch=spe,
        )
        values = tuple(
            _check.non_negative(f"values[{i}]", v)
            for i, v in enumerate(_floats("values", self.values))
        )
        if len(values) != len(bounds) + 1:
            _check.fail(
                "values",
                f"one longer than boundaries ({len(bounds) + 1} values)",
                self.values,
            )
        _set(self, "boundaries", bounds)
        _set(self, "values", values)

    def __call__(self, step: int) -> float:
        step = _step(step)
        return self.values[bisect.bisect_right(self.boundaries, step)]  # type: ignore[arg-type]

    @property
    def end_step(self) -> int | None:
        assert self.boundaries is not None
        return self.boundaries[-1] if self.boundaries else 0


@register
@dataclass(frozen=True, kw_only=True)
class Exponential(Schedule):
    """Exponential decay, floored at ``end_lr`` (torch's ``ExponentialLR``).

    Formula: ``lr(t) = max(peak_lr × factor ** t, end_lr)`` with
    ``0 < factor <= 1``. With ``end_lr > 0`` it settles where it reaches
    ``end_lr`` (``end_step``); with ``end_lr = 0`` it never does. torch:
    ``gamma`` -> ``factor``.

    Example:
        >>> s = Exponential(factor=0.5, end_lr=0.1)
        >>> s(0), s(1), s(3), s(4), s.end_step
        (1.0, 0.5, 0.125, 0.1, 4)
    """

    name: ClassVar[str] = "exponential"
    positional: ClassVar[tuple[str, ...]] = ("factor",)

    factor: float
    peak_lr: float = 1.0
    end_lr: float = 0.0

    def __post_init__(self) -> None:
        _set(self, "factor", _check.fraction("factor", self.factor, low_open=True))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))
        _le("end_lr", self.end_lr, "peak_lr", self.peak_lr)

    def __call__(self, step: int) -> float:
        step = _step(step)
        value = self.peak_lr * self.factor**step
        return value if value > self.end_lr else self.end_lr

    @property
    def end_step(self) -> int | None:
        if self.factor == 1.0 or self.end_lr == self.peak_lr:
            return 0
        if self.end_lr == 0.0:
            return None
        # the first t with peak_lr × factor ** t <= end_lr; the log estimate can
        # be far off for factors near 1 and tiny end_lr, so bracket and bisect
        peak, end, factor = self.peak_lr, self.end_lr, self.factor

        def reached(t: int) -> bool:
            return peak * factor**t <= end

        # logs taken apart: end_lr / peak_lr can underflow to 0
        ratio = math.log(end) - math.log(peak)
        t = max(0, math.ceil(ratio / math.log(factor)))
        d = 1
        if reached(t):  # reached(0) is False: end_lr < peak_lr here
            while t - d > 0 and reached(t - d):
                d *= 2
            lo, hi = max(t - d, 0), t - d // 2
        else:
            while not reached(t + d):
                d *= 2
            lo, hi = t + d // 2, t + d
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if reached(mid) else (mid, hi)
        return hi


def _total(total_steps: Any, total_epochs: Any, steps_per_epoch: Any) -> int:
    spe = _spe(steps_per_epoch, total_epochs is not None, "total_epochs")
    return _steps_arg(
        "total_steps",
        total_steps,
        epochs=total_epochs,
        epochs_name="total_epochs",
        steps_per_epoch=spe,
    )


@register
@dataclass(frozen=True, kw_only=True)
class Linear(Schedule):
    """Linear from ``start_lr`` to ``end_lr`` (torch's ``LinearLR``).

    Formula: ``lr(t) = start_lr + (end_lr - start_lr) × min(t, T) / T`` with
    ``T = total_steps``; it can rise or fall and holds ``end_lr`` from step
    ``T`` on. torch: ``start_factor`` -> ``start_lr``, ``end_factor`` ->
    ``end_lr``, ``total_iters`` -> ``total_steps``.

    Example:
        >>> s = Linear(total_steps=10, start_lr=1.0, end_lr=0.0)
        >>> s(0), s(5), s(10), s(11)
        (1.0, 0.5, 0.0, 0.0)
    """

    name: ClassVar[str] = "linear"
    positional: ClassVar[tuple[str, ...]] = ("total_steps",)

    total_steps: int | None = None
    start_lr: float = 1.0
    end_lr: float = 0.0
    total_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    def __post_init__(self, total_epochs: Any, steps_per_epoch: Any) -> None:
        _set(
            self, "total_steps", _total(self.total_steps, total_epochs, steps_per_epoch)
        )
        _set(self, "start_lr", _check.non_negative("start_lr", self.start_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))

    def __call__(self, step: int) -> float:
        step = _step(step)
        n: int = self.total_steps  # type: ignore[assignment]
        if step >= n:
            return self.end_lr
        return self.start_lr + (self.end_lr - self.start_lr) * step / n

    @property
    def end_step(self) -> int | None:
        return self.total_steps


@register
@dataclass(frozen=True, kw_only=True)
class Polynomial(Schedule):
    """Polynomial decay from ``peak_lr`` to ``end_lr`` (torch's ``PolynomialLR``).

    Formula: ``lr(t) = end_lr + (peak_lr - end_lr) × (1 - min(t, T) / T) ** power``
    with ``T = total_steps``; ``power = 1`` is linear decay. torch:
    ``total_iters`` -> ``total_steps`` (torch has no ``end_lr``: it is 0).

    Example:
        >>> s = Polynomial(total_steps=10, power=2.0)
        >>> s(0), s(5), s(10), s(20)
        (1.0, 0.25, 0.0, 0.0)
    """

    name: ClassVar[str] = "polynomial"
    positional: ClassVar[tuple[str, ...]] = ("total_steps", "power")

    total_steps: int | None = None
    power: float = 1.0
    peak_lr: float = 1.0
    end_lr: float = 0.0
    total_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    def __post_init__(self, total_epochs: Any, steps_per_epoch: Any) -> None:
        _set(
            self, "total_steps", _total(self.total_steps, total_epochs, steps_per_epoch)
        )
        _set(self, "power", _check.positive("power", self.power))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))
        _le("end_lr", self.end_lr, "peak_lr", self.peak_lr)

    def __call__(self, step: int) -> float:
        step = _step(step)
        n: int = self.total_steps  # type: ignore[assignment]
        if step >= n:
            return self.end_lr
        if step == 0:  # exactly peak_lr (the formula can be off by one ulp)
            return self.peak_lr
        shape = float((1.0 - step / n) ** self.power)
        return self.end_lr + (self.peak_lr - self.end_lr) * shape

    @property
    def end_step(self) -> int | None:
        return self.total_steps


@register
@dataclass(frozen=True, kw_only=True)
class Cosine(Schedule):
    """Cosine decay from ``peak_lr`` to ``end_lr`` (torch's ``CosineAnnealingLR``).

    Formula: ``lr(t) = end_lr + (peak_lr - end_lr) × (1 + cos(π × min(t, T) / T)) / 2``
    with ``T = total_steps``. ``end_lr`` is reached at step ``T`` and held
    afterwards (torch's version rises again). torch: ``T_max`` ->
    ``total_steps``, ``eta_min`` -> ``end_lr`` (``eta_min / base_lr``: torch's
    is absolute, the same LR for every param group).

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983.

    Example:
        >>> s = Cosine(total_steps=100, end_lr=0.1)
        >>> s(0), round(s(50), 6), s(100), s(150)
        (1.0, 0.55, 0.1, 0.1)
    """

    name: ClassVar[str] = "cosine"
    positional: ClassVar[tuple[str, ...]] = ("total_steps",)

    total_steps: int | None = None
    peak_lr: float = 1.0
    end_lr: float = 0.0
    total_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    _half: float = field(init=False, repr=False, compare=False)
    _omega: float = field(init=False, repr=False, compare=False)

    def __post_init__(self, total_epochs: Any, steps_per_epoch: Any) -> None:
        n = _total(self.total_steps, total_epochs, steps_per_epoch)
        _set(self, "total_steps", n)
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))
        _le("end_lr", self.end_lr, "peak_lr", self.peak_lr)
        _set(self, "_half", (self.peak_lr - self.end_lr) / 2.0)
        _set(self, "_omega", math.pi / n)

    def __call__(self, step: int) -> float:
        step = _step(step)
        if step >= self.total_steps:  # type: ignore[operator]
            return self.end_lr
        if step == 0:  # exactly peak_lr (the formula can be off by one ulp)
            return self.peak_lr
        return self.end_lr + self._half * (1.0 + math.cos(self._omega * step))

    @property
    def end_step(self) -> int | None:
        return self.total_steps


@register
@dataclass(frozen=True, kw_only=True)
class CosineRestarts(Schedule):
    """Cosine with warm restarts (SGDR; torch's ``CosineAnnealingWarmRestarts``).

    Cycle ``n`` lasts ``L_n = cycle_steps × cycle_factor ** n`` steps; at
    position ``p`` in it::

        lr = end_lr + (peak_lr - end_lr) × peak_factor ** n × (1 + cos(π p / L_n)) / 2

    ``cycle_factor`` (torch's ``T_mult``) lengthens each cycle, ``peak_factor``
    (timm's ``cycle_decay``) shrinks each restart's height. With ``num_cycles``
    it holds ``end_lr`` after that many cycles (``end_step``, which must be at
    most ``2**53``, the largest step count a float holds exactly); without, it
    never settles. torch: ``T_0`` -> ``cycle_steps``, ``eta_min`` -> ``end_lr``
    (``eta_min / base_lr``: torch's is absolute, the same for every group).

    Reference: Loshchilov & Hutter, "SGDR: Stochastic Gradient Descent with Warm
    Restarts", ICLR 2017, https://arxiv.org/abs/1608.03983.

    Example:
        >>> s = CosineRestarts(cycle_steps=10, cycle_factor=2)
        >>> s(0), s(5), s(10), s(20), s(30)
        (1.0, 0.5, 1.0, 0.5, 1.0)
    """

    name: ClassVar[str] = "cosine_restarts"
    positional: ClassVar[tuple[str, ...]] = ("cycle_steps",)

    cycle_steps: int | None = None
    cycle_factor: float = 1.0
    peak_lr: float = 1.0
    end_lr: float = 0.0
    peak_factor: float = 1.0
    num_cycles: int | None = None
    cycle_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    _end: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self, cycle_epochs: Any, steps_per_epoch: Any) -> None:
        spe = _spe(steps_per_epoch, cycle_epochs is not None, "cycle_epochs")
        cycle = _steps_arg(
            "cycle_steps",
            self.cycle_steps,
            epochs=cycle_epochs,
            epochs_name="cycle_epochs",
            steps_per_epoch=spe,
        )
        _set(self, "cycle_steps", cycle)
        cf = _check.real("cycle_factor", self.cycle_factor)
        if not (1.0 <= cf < math.inf):
            _check.fail("cycle_factor", ">= 1", self.cycle_factor)
        _set(self, "cycle_factor", cf)
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))
        _le("end_lr", self.end_lr, "peak_lr", self.peak_lr)
        _set(
            self,
            "peak_factor",
            _check.fraction("peak_factor", self.peak_factor, low_open=True),
        )
        end = None
        if self.num_cycles is not None:
            _set(self, "num_cycles", _check.positive_int("num_cycles", self.num_cycles))
            end = self._last_step(cycle, cf, self.num_cycles)
        _set(self, "_end", end)

    @staticmethod
    def _last_step(cycle: int, cf: float, num_cycles: int) -> int:
        """Where ``num_cycles`` cycles end, as :meth:`_locate` sees it.

        Raises ``ValueError`` when that is past ``2**53``, the largest step
        count a float (the cycle arithmetic) holds exactly.
        """
        limit = 2**53
        if cf == 1.0:
            if cycle * num_cycles > limit:
                _check.fail(
                    "num_cycles",
                    f"small enough that the cycles end within 2**53 steps "
                    f"(cycle_steps={cycle})",
                    num_cycles,
                )
            return cycle * num_cycles
        start, length = 0.0, float(cycle)
        for _ in range(num_cycles):  # the same float arithmetic as _locate
            start += length
            length *= cf
            if not start <= limit:
                _check.fail(
                    "cycle_factor",
                    f"small enough that num_cycles={num_cycles} cycles of "
                    f"cycle_steps={cycle} × cycle_factor ** n end within 2**53 steps",
                    cf,
                    "Lower cycle_factor or num_cycles.",
                )
        return math.ceil(start)

    def _locate(self, step: int) -> tuple[int, float, float]:
        """(cycle index, position in it, its length)."""
        length = float(self.cycle_steps)  # type: ignore[arg-type]
        if self.cycle_factor == 1.0:
            n = int(step // length)
            return n, step - n * length, length
        start, n = 0.0, 0
        while step >= start + length:
            start += length
            length *= self.cycle_factor
            n += 1
        return n, step - start, length

    def __call__(self, step: int) -> float:
        step = _step(step)
        n, pos, length = self._locate(step)
        if self.num_cycles is not None and n >= self.num_cycles:
            return self.end_lr
        height = (self.peak_lr - self.end_lr) * self.peak_factor**n
        return self.end_lr + height * (1.0 + math.cos(math.pi * pos / length)) / 2.0

    @property
    def end_step(self) -> int | None:
        return self._end


_CYCLIC_MODES = ("triangular", "triangular2", "exp_range")


@register
@dataclass(frozen=True, kw_only=True)
class Cyclic(Schedule):
    """Cyclical learning rates between ``low_lr`` and ``peak_lr`` (``CyclicLR``).

    One cycle rises linearly for ``up_steps`` and falls for ``down_steps``
    (default: ``up_steps``). With ``c = floor(1 + t / (up + down))`` and
    ``x`` the position in the cycle::

        lr = low_lr + (peak_lr - low_lr) × ramp(x) × scale

    ``scale`` is 1 (``mode="triangular"``), ``1 / 2 ** (c - 1)``
    (``"triangular2"``: halve the height every cycle) or ``factor ** t``
    (``"exp_range"``). It never settles. torch: ``base_lr`` -> ``low_lr``,
    ``max_lr`` -> ``peak_lr``, ``step_size_up``/``step_size_down`` ->
    ``up_steps``/``down_steps``, ``gamma`` -> ``factor``. Only the LR: torch
    also cycles momentum by default (``cycle_momentum=True``, 0.8 to 0.9), so
    this equals torch with ``cycle_momentum=False``.

    Reference: Smith, "Cyclical Learning Rates for Training Neural Networks",
    WACV 2017, https://arxiv.org/abs/1506.01186.

    Example:
        >>> s = Cyclic(low_lr=0.1, peak_lr=1.0, up_steps=4)
        >>> [round(s(t), 3) for t in range(0, 10, 2)]
        [0.1, 0.55, 1.0, 0.55, 0.1]
    """

    name: ClassVar[str] = "cyclic"
    positional: ClassVar[tuple[str, ...]] = ("up_steps",)

    low_lr: float
    peak_lr: float = 1.0
    up_steps: int | None = None
    down_steps: int | None = None
    mode: str = "triangular"
    factor: float = 1.0
    up_epochs: InitVar[float | None] = None
    down_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    _total: float = field(init=False, repr=False, compare=False)
    _ratio: float = field(init=False, repr=False, compare=False)

    def __post_init__(
        self, up_epochs: Any, down_epochs: Any, steps_per_epoch: Any
    ) -> None:
        used = up_epochs is not None or down_epochs is not None
        spe = _spe(steps_per_epoch, used, "up_epochs or down_epochs")
        up = _steps_arg(
            "up_steps",
            self.up_steps,
            epochs=up_epochs,
            epochs_name="up_epochs",
            steps_per_epoch=spe,
        )
        down = _steps_arg(
            "down_steps",
            self.down_steps,
            epochs=down_epochs,
            epochs_name="down_epochs",
            steps_per_epoch=spe,
            default=up,
        )
        _set(self, "up_steps", up)
        _set(self, "down_steps", down)
        mode = "exp_range" if self.mode == "exp-range" else self.mode
        _set(self, "mode", _check.choice("mode", mode, _CYCLIC_MODES))
        _set(self, "low_lr", _check.non_negative("low_lr", self.low_lr))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _le("low_lr", self.low_lr, "peak_lr", self.peak_lr)
        _set(self, "factor", _check.fraction("factor", self.factor, low_open=True))
        if self.factor != 1.0 and self.mode != "exp_range":
            _check.fail("factor", "1.0 unless mode='exp_range'", self.factor)
        _set(self, "_total", float(up) + float(down))
        _set(self, "_ratio", float(up) / self._total)

    def __call__(self, step: int) -> float:
        step = _step(step)
        # the arithmetic follows torch.optim.lr_scheduler.CyclicLR exactly
        cycle = math.floor(1 + step / self._total)
        x = 1.0 + step / self._total - cycle
        if x <= self._ratio:
            scale_factor = x / self._ratio
        else:
            scale_factor = (x - 1) / (self._ratio - 1)
        height = (self.peak_lr - self.low_lr) * scale_factor
        if self.mode == "triangular":
            return self.low_lr + height * 1.0
        if self.mode == "triangular2":
            return self.low_lr + height * 0.5 ** (cycle - 1)  # = 1 / 2 ** (c - 1)
        return self.low_lr + height * self.factor**step


_ANNEALS = ("cosine", "linear")


@register
@dataclass(frozen=True, kw_only=True)
class OneCycle(Schedule):
    """The one-cycle policy (torch's ``OneCycleLR``, same arithmetic).

    Phase 1 anneals from ``start_lr`` up to ``peak_lr``, reached at step
    ``warmup_frac × T - 1``; phase 2 anneals down to ``end_lr``, reached at
    step ``T - 1`` (``T = total_steps``), then held (torch raises past ``T``).
    With ``three_phase=True`` phase 2 returns to ``start_lr`` at step
    ``2 × warmup_frac × T - 2`` and phase 3 anneals to ``end_lr``. Annealing is
    ``cos`` (``end + (start - end) × (1 + cos(π p)) / 2``) or ``linear``.
    Defaults as torch: ``start_lr = peak_lr / 25``, ``end_lr = start_lr / 1e4``.
    torch: ``max_lr`` -> ``peak_lr``, ``pct_start`` -> ``warmup_frac``,
    ``div_factor`` -> ``peak_lr / start_lr``, ``final_div_factor`` ->
    ``start_lr / end_lr``, ``anneal_strategy="cos"`` -> ``anneal="cosine"``.
    Only the LR: torch also cycles momentum by default (``cycle_momentum=True``,
    0.85 to 0.95), so this equals torch with ``cycle_momentum=False``.

    Reference: Smith & Topin, "Super-Convergence: Very Fast Training of Neural
    Networks Using Large Learning Rates", 2018, https://arxiv.org/abs/1708.07120.

    Example:
        >>> s = OneCycle(total_steps=100, warmup_frac=0.25)
        >>> round(s(0), 12), s(24), s(99), s(500)
        (0.04, 1.0, 4e-06, 4e-06)
    """

    name: ClassVar[str] = "one_cycle"
    positional: ClassVar[tuple[str, ...]] = ("total_steps",)

    total_steps: int | None = None
    peak_lr: float = 1.0
    warmup_frac: float = 0.3
    start_lr: float | None = None
    end_lr: float | None = None
    anneal: str = "cosine"
    three_phase: bool = False
    total_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    _phases: tuple[tuple[float, float, float], ...] = field(
        init=False, repr=False, compare=False
    )
    _start: float = field(init=False, repr=False, compare=False)
    _end: float = field(init=False, repr=False, compare=False)

    def __post_init__(self, total_epochs: Any, steps_per_epoch: Any) -> None:
        n = _total(self.total_steps, total_epochs, steps_per_epoch)
        _set(self, "total_steps", n)
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        frac = _check.fraction(
            "warmup_frac", self.warmup_frac, low_open=True, high_open=True
        )
        _set(self, "warmup_frac", frac)
        anneal = "cosine" if self.anneal == "cos" else self.anneal
        _set(self, "anneal", _check.choice("anneal", anneal, _ANNEALS))
        if not isinstance(self.three_phase, bool):
            _check.fail("three_phase", "a bool", self.three_phase, exc=TypeError)
        start = self.peak_lr / 25.0
        if self.start_lr is not None:
            start = _check.non_negative("start_lr", self.start_lr)
            _set(self, "start_lr", start)
            _le("start_lr", start, "peak_lr", self.peak_lr)
        end = start / 1e4
        if self.end_lr is not None:
            end = _check.non_negative("end_lr", self.end_lr)
            _set(self, "end_lr", end)
            _le("end_lr", end, "peak_lr", self.peak_lr)
        if n < 2:
            _check.fail(
                "total_steps",
                ">= 2 for a one-cycle schedule (a rise, then a fall)",
                n,
                "For a run of one step use Constant.",
            )
        up_end = float(frac * n) - 1
        if up_end <= 0:
            _check.fail(
                "warmup_frac",
                f"> 1/total_steps={1 / n:.4g} (and < 1)",
                frac,
                "The peak sits at step warmup_frac × total_steps - 1, which must be "
                "after step 0.",
            )
        if self.three_phase:
            down_end = float(2 * frac * n) - 2
            if down_end >= n - 1:
                _check.fail(
                    "warmup_frac",
                    "small enough that 2 × warmup_frac × total_steps - 2 < "
                    "total_steps - 1 (about < 0.5) with three_phase=True",
                    frac,
                )
            phases: tuple[tuple[float, float, float], ...] = (
                (up_end, start, self.peak_lr),
                (down_end, self.peak_lr, start),
                (float(n - 1), start, end),
            )
        else:
            phases = ((up_end, start, self.peak_lr), (float(n - 1), self.peak_lr, end))
        _set(self, "_phases", phases)
        _set(self, "_start", start)
        _set(self, "_end", end)

    def __call__(self, step: int) -> float:
        step = _step(step)
        if step >= self.total_steps - 1:  # type: ignore[operator]
            return self._end
        # the arithmetic follows torch.optim.lr_scheduler.OneCycleLR exactly
        start_step = 0.0
        last = len(self._phases) - 1
        for i, (end_step, a, b) in enumerate(self._phases):
            if step <= end_step or i == last:
                pct = (step - start_step) / (end_step - start_step)
                if self.anneal == "cosine":
                    return b + (a - b) / 2.0 * (math.cos(math.pi * pct) + 1)
                return (b - a) * pct + a
            start_step = end_step
        raise AssertionError("unreachable")  # pragma: no cover

    @property
    def end_step(self) -> int | None:
        return self.total_steps

    @property
    def peak_step(self) -> float:
        """The (possibly fractional) step where ``peak_lr`` is reached."""
        return self._phases[0][0]


@register
@dataclass(frozen=True, kw_only=True)
class InverseSqrt(Schedule):
    """Inverse-square-root decay (the Transformer / T5 / fairseq rule).

    Formula: ``lr(t) = peak_lr × sqrt(timescale_steps / (t + timescale_steps))``:
    ``peak_lr`` at step 0, ``1 / sqrt(t)`` for ``t >> timescale_steps``. It
    never settles. Put a :class:`~lrkit.Warmup` in front for the Transformer
    schedule: ``Warmup(steps=W, then=InverseSqrt(timescale_steps=W))`` equals
    ``peak_lr × sqrt(W / t)`` for ``t >= W``, the ``inverse_sqrt`` of fairseq.

    Reference: Vaswani et al., "Attention Is All You Need", NeurIPS 2017,
    https://arxiv.org/abs/1706.03762 (eq. 3).

    Example:
        >>> s = InverseSqrt(timescale_steps=100)
        >>> s(0), s(300), round(s(9900), 6)
        (1.0, 0.5, 0.1)
    """

    name: ClassVar[str] = "inverse_sqrt"
    positional: ClassVar[tuple[str, ...]] = ("timescale_steps",)

    timescale_steps: int
    peak_lr: float = 1.0

    def __post_init__(self) -> None:
        _set(
            self,
            "timescale_steps",
            _check.positive_int("timescale_steps", self.timescale_steps),
        )
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))

    def __call__(self, step: int) -> float:
        step = _step(step)
        tau = self.timescale_steps
        return self.peak_lr * math.sqrt(tau / (step + tau))


_DECAYS = ("linear", "cosine", "sqrt")
_DEFAULT_DECAY_FRAC = 0.2


def _ramp(shape: str, s0: float, frac: float) -> float:
    """Warmup ramp from s0 (frac=0) to 1 (frac=1)."""
    if shape == "linear":
        return s0 + (1.0 - s0) * frac
    if shape == "cosine":
        return s0 + (1.0 - s0) * (1.0 - math.cos(math.pi * frac)) / 2.0
    return float(s0 ** (1.0 - frac))  # exponential


@register
@dataclass(frozen=True, kw_only=True)
class WarmupStableDecay(Schedule):
    """Warmup-stable-decay (WSD, "trapezoidal"): ramp up, hold, then cool down.

    With ``W = warmup_steps``, ``D = decay_steps``, ``T = total_steps``:

    - ``t < W``: linear warmup ``peak_lr × (t + 1) / (W + 1)`` (never 0;
      the default ramp of :class:`~lrkit.Warmup`, computed by the same code);
    - ``W <= t < T - D``: ``peak_lr``;
    - ``T - D <= t < T``: with ``p = (t - T + D) / D``, ``end_lr + (peak_lr -
      end_lr) × g(p)`` where ``g`` is ``1 - p`` (``decay="linear"``),
      ``(1 + cos(π p)) / 2`` (``"cosine"``) or ``1 - sqrt(p)`` (``"sqrt"``,
      the 1-sqrt cooldown of Hägele et al.);
    - ``t >= T``: ``end_lr``.

    Durations in steps or as fractions of ``total_steps`` (``warmup_frac``,
    ``decay_frac``); the decay defaults to the last 20% (``decay_frac=0.2``).

    References: Hu et al., "MiniCPM", 2024, https://arxiv.org/abs/2404.06395;
    Hägele et al., "Scaling Laws and Compute-Optimal Training beyond Fixed
    Training Durations", 2024, https://arxiv.org/abs/2405.18392.

    Example:
        >>> s = WarmupStableDecay(total_steps=100, warmup_steps=9, decay_frac=0.5,
        ...                       decay="sqrt")
        >>> s(0), s(9), s(50), round(s(75), 4), s(100)
        (0.1, 1.0, 1.0, 0.2929, 0.0)
    """

    name: ClassVar[str] = "warmup_stable_decay"
    positional: ClassVar[tuple[str, ...]] = ("total_steps",)

    total_steps: int | None = None
    peak_lr: float = 1.0
    end_lr: float = 0.0
    warmup_steps: int | None = None
    decay_steps: int | None = None
    decay: str = "linear"
    warmup_frac: InitVar[float | None] = None
    decay_frac: InitVar[float | None] = None
    total_epochs: InitVar[float | None] = None
    steps_per_epoch: InitVar[int | None] = None

    def __post_init__(
        self,
        warmup_frac: Any,
        decay_frac: Any,
        total_epochs: Any,
        steps_per_epoch: Any,
    ) -> None:
        n = _total(self.total_steps, total_epochs, steps_per_epoch)
        _set(self, "total_steps", n)
        w = _steps_arg(
            "warmup_steps",
            self.warmup_steps,
            frac=warmup_frac,
            frac_name="warmup_frac",
            total_steps=n,
            default=0,
            minimum=0,
        )
        default = self.decay_steps is None and decay_frac is None
        if default:  # the decay takes the last 20% unless told otherwise
            decay_frac = _DEFAULT_DECAY_FRAC
            if n - _round_steps((1.0 - decay_frac) * n) < 1:
                _check.fail(
                    "decay_frac",
                    "at least 1 step long",
                    decay_frac,
                    f"That is the default (the last {decay_frac:.0%} of "
                    f"total_steps={n}); give decay_steps=... (or decay_frac=...) "
                    "or a longer total_steps.",
                )
        d = _steps_arg(
            "decay_steps",
            self.decay_steps,
            frac=decay_frac,
            frac_name="decay_frac",
            total_steps=n,
        )
        if self.decay_steps is None:
            # a fraction marks where the decay starts: rounded like the end of
            # the warmup, so fractions that add up to 1 fill the run exactly
            d = n - _round_steps((1.0 - float(decay_frac)) * n)
            if d < 1:
                _check.fail("decay_frac", "at least 1 step long", decay_frac)
        if w + d > n:
            _check.fail(
                "warmup_steps + decay_steps",
                f"<= total_steps={n}",
                w + d,
                f"decay_steps={d} comes from the default decay_frac="
                f"{_DEFAULT_DECAY_FRAC}; give decay_steps=... or decay_frac=... to "
                "change it."
                if default
                else None,
            )
        _set(self, "warmup_steps", w)
        _set(self, "decay_steps", d)
        _set(self, "decay", _check.choice("decay", self.decay, _DECAYS))
        _set(self, "peak_lr", _check.positive("peak_lr", self.peak_lr))
        _set(self, "end_lr", _check.non_negative("end_lr", self.end_lr))
        _le("end_lr", self.end_lr, "peak_lr", self.peak_lr)

    def __call__(self, step: int) -> float:
        step = _step(step)
        n: int = self.total_steps  # type: ignore[assignment]
        w: int = self.warmup_steps  # type: ignore[assignment]
        d: int = self.decay_steps  # type: ignore[assignment]
        if step < w:  # Warmup's default linear ramp: (step + 1) / (w + 1)
            return self.peak_lr * _ramp("linear", 1.0 / (w + 1), step / w)
        if step >= n:
            return self.end_lr
        start = n - d
        if step <= start:
            return self.peak_lr
        p = (step - start) / d
        if self.decay == "linear":
            g = 1.0 - p
        elif self.decay == "cosine":
            g = (1.0 + math.cos(math.pi * p)) / 2.0
        else:
            g = 1.0 - math.sqrt(p)
        return self.end_lr + (self.peak_lr - self.end_lr) * g

    @property
    def end_step(self) -> int | None:
        return self.total_steps
