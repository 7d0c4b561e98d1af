"""Argument validation: the only place lrkit builds error text.

Every message follows one template::

    "{param} must be {constraint}, got {param}={value!r}." [+ " " + hint]

Validators return the (possibly converted) value so constructors can write
``steps = _check.positive_int("steps", steps)``. Bad arguments raise
``ValueError`` (wrong value) or ``TypeError`` (wrong type); problems found while
running raise subclasses of :class:`LRKitError`.

Example:
    >>> from lrkit import _check
    >>> _check.positive("peak_lr", 0.1)
    0.1
    >>> _check.positive("peak_lr", 0)
    Traceback (most recent call last):
    ...
    ValueError: peak_lr must be > 0, got peak_lr=0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NoReturn, TypeVar

T = TypeVar("T")

__all__ = [
    "LRKitError",
    "callable_",
    "choice",
    "fail",
    "finite",
    "fraction",
    "is_ours",
    "is_real",
    "message",
    "non_negative",
    "non_negative_int",
    "positive",
    "positive_int",
    "real",
]


class LRKitError(RuntimeError):
    """Base class of the errors lrkit raises while running (not for bad arguments)."""


def message(
    param: str,
    constraint: str,
    value: Any,
    hint: str | None = None,
    *,
    shown: bool = False,
) -> str:
    """Build the one error message template.

    Args:
        param: the parameter's name as the user wrote it (``"end_lr"``).
        constraint: what was expected, phrased to follow "must be" (``"> start_lr"``).
        value: the value given.
        hint: optional sentence on how to fix it.
        shown: ``value`` is a description of what was given (``"3 values"``),
            shown as is instead of as ``param=repr(value)``.

    Returns:
        ``"{param} must be {constraint}, got {param}={value!r}."`` (or
        ``"..., got {value}."`` when ``shown``) plus the hint.

    Example:
        >>> message("losses", "as long as lrs (3 values)", "2 values", shown=True)
        'losses must be as long as lrs (3 values), got 2 values.'
    """
    got = str(value) if shown else f"{param}={_short_repr(value)}"
    text = f"{param} must be {constraint}, got {got}."
    if hint:
        text += " " + hint.strip()
    return text


def _short_repr(value: Any) -> str:
    """``repr(value)``, or the type's name for a repr over several lines (a
    model or an optimizer prints its whole structure and tensors), cut to
    200 characters."""
    text = repr(value)
    if "\n" in text:
        return f"<{type(value).__module__}.{type(value).__qualname__} object>"
    return text if len(text) <= 200 else text[:197] + "..."


def fail(
    param: str,
    constraint: str,
    value: Any,
    hint: str | None = None,
    *,
    exc: type[Exception] = ValueError,
    shown: bool = False,
) -> NoReturn:
    """Raise ``exc`` (``ValueError`` by default) with the template message."""
    raise exc(message(param, constraint, value, hint, shown=shown))


def bad_state_dict(expected: str, value: Any, why: str = "") -> NoReturn:
    """Refuse a ``state_dict`` argument: a dict is shown by its keys (and
    ``why``), anything else as it is."""
    if isinstance(value, Mapping):
        keys = sorted(map(str, value))
        fail("state_dict", expected, f"a dict with keys {keys}{why}", shown=True)
    fail("state_dict", expected, value)


def is_ours(error: BaseException) -> bool:
    """An error lrkit raised with its own message (``"{param} must be ..., got ..."``)
    rather than one a framework or the user's code raised inside lrkit's work."""
    return " must be " in str(error) and ", got " in str(error)


def is_real(value: Any) -> bool:
    """True for ints and floats (numpy scalars included), False for bool and others."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def real(param: str, value: Any, hint: str | None = None) -> float:
    """Check ``value`` is a real number (not bool) and return it as ``float``."""
    if not is_real(value):
        fail(param, "a real number", value, hint, exc=TypeError)
    return float(value)


def finite(param: str, value: Any, hint: str | None = None) -> float:
    """Check ``value`` is a finite real number."""
    v = real(param, value, hint)
    if not math.isfinite(v):
        fail(param, "finite", value, hint)
    return v


def positive(param: str, value: Any, hint: str | None = None) -> float:
    """Check ``value`` is a finite real number > 0."""
    v = real(param, value, hint)
    if not (v > 0 and math.isfinite(v)):
        fail(param, "finite and > 0" if v > 0 else "> 0", value, hint)
    return v


def non_negative(param: str, value: Any, hint: str | None = None) -> float:
    """Check ``value`` is a finite real number >= 0."""
    v = real(param, value, hint)
    if not (v >= 0 and math.isfinite(v)):
        fail(param, "finite and >= 0" if v >= 0 else ">= 0", value, hint)
    return v


def fraction(
    param: str,
    value: Any,
    hint: str | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Check ``value`` is a real number in [0, 1] (ends open where asked)."""
    v = real(param, value, hint)
    lo = "(0" if low_open else "[0"
    hi = "1)" if high_open else "1]"
    ok = (v > 0 if low_open else v >= 0) and (v < 1 if high_open else v <= 1)
    if not ok:
        fail(param, f"in {lo}, {hi}", value, hint)
    return v


def _int(param: str, value: Any, hint: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(param, "an int", value, hint, exc=TypeError)
    return int(value)


def positive_int(param: str, value: Any, hint: str | None = None) -> int:
    """Check ``value`` is an int >= 1."""
    v = _int(param, value, hint)
    if v < 1:
        fail(param, "an int >= 1", value, hint)
    return v


def non_negative_int(param: str, value: Any, hint: str | None = None) -> int:
    """Check ``value`` is an int >= 0."""
    v = _int(param, value, hint)
    if v < 0:
        fail(param, "an int >= 0", value, hint)
    return v


def choice(param: str, value: T, choices: Iterable[T], hint: str | None = None) -> T:
    """Check ``value`` is one of ``choices``; the message lists them."""
    options = list(choices)
    if value not in options:
        listed = ", ".join(repr(c) for c in options)
        fail(param, f"one of {listed}", value, hint)
    return value


def callable_(param: str, value: Any, hint: str | None = None) -> Callable[..., Any]:
    """Check ``value`` is callable."""
    if not callable(value):
        fail(param, "callable", value, hint, exc=TypeError)
    return value  # type: ignore[no-any-return]
