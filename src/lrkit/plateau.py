"""Reduce-on-plateau as pure data: a frozen config and an immutable state.

:class:`ReduceOnPlateau` yields the ``plateau_scale`` of lrkit's one equation::

    lr(t) = base_lr × schedule(t) × plateau_scale × recovery_scale

so it multiplies whatever the schedule says: warmup + cosine + plateau works,
which torch's ``ReduceLROnPlateau`` (it owns the LR outright) cannot do.

Semantics (each call to :meth:`ReduceOnPlateau.update` is one *evaluation*)::

    improved = metric beats best by more than the threshold
    if improved: best = metric; bad_evals = 0   else: bad_evals += 1
    if cooldown_left > 0: cooldown_left -= 1; bad_evals = 0
    if bad_evals > patience: scale = max(scale × factor, floor)
                             cooldown_left = cooldown; bad_evals = 0

So the first reduction comes at the ``patience + 1``-th evaluation in a row
without improvement. This is exactly torch's ``ReduceLROnPlateau``. Keras's
callback reduces after ``patience`` bad evaluations (``wait >= patience``), so
Keras ``patience=p`` is lrkit ``patience=p - 1``, Keras ``cooldown=c`` is lrkit
``cooldown=c - 1`` (Keras counts the reducing evaluation itself), and Keras only
supports an absolute ``min_delta``. Differences from torch: a *relative* threshold is
measured against ``|best|`` (torch's ``best × (1 - threshold)`` lets a worse
value count as an improvement when the metric is negative); a NaN or infinite
metric always counts as "no improvement" (torch and Keras agree for NaN, but
take ``-inf`` in mode ``"min"`` and ``+inf`` in mode ``"max"`` as a new best
that nothing can ever beat again).

Example:
    >>> from lrkit import ReduceOnPlateau
    >>> plateau = ReduceOnPlateau(patience=1, factor=0.5)
    >>> state = plateau.init()
    >>> for loss in [1.0, 0.9, 0.9, 0.9, 0.9, 0.9]:
    ...     state = plateau.update(state, loss)
    >>> state.scale, state.reductions
    (0.25, 2)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from . import _check

__all__ = ["PlateauState", "ReduceOnPlateau"]


def _metric(value: Any) -> float:
    """A monitored value as a float: a real number or a one-element tensor/array.

    Strings and bools are refused (``float("0.5")`` would parse text).
    """
    if _check.is_real(value):
        return float(value)
    try:
        item = getattr(value, "item", None)  # tensors and arrays of one element
        v = item() if callable(item) else value
        if not isinstance(v, (str, bytes, bool)) and hasattr(type(v), "__float__"):
            return float(v)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor of 3 elements
        pass
    _check.fail("metric", "a real number or a one-element tensor", value, exc=TypeError)


@dataclass(frozen=True)
class PlateauState:
    """Where a reduce-on-plateau stands; returned by ``init()`` / ``update()``.

    Attributes:
        scale: the current ``plateau_scale`` (1.0 until the first reduction).
        best: the best metric so far (``inf`` / ``-inf`` before the first).
        bad_evals: evaluations in a row without improvement (torch's
            ``num_bad_epochs``).
        cooldown_left: evaluations left in the cooldown after a reduction.
        evals: evaluations seen.
        reductions: reductions made.
    """

    scale: float
    best: float
    bad_evals: int = 0
    cooldown_left: int = 0
    evals: int = 0
    reductions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (for ``state_dict()`` and JSON; ``best`` may be inf)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlateauState:
        """Rebuild from :meth:`to_dict` output, validating every field."""
        if not isinstance(data, Mapping):
            _check.fail("state", "a mapping", data, exc=TypeError)
        expected = {
            "scale",
            "best",
            "bad_evals",
            "cooldown_left",
            "evals",
            "reductions",
        }
        if set(data) != expected:
            _check.fail("state", f"a dict with keys {sorted(expected)}", dict(data))
        best = _check.real("state['best']", data["best"])
        if math.isnan(best):
            _check.fail("state['best']", "a number (not NaN)", best)
        return cls(
            scale=_check.positive("state['scale']", data["scale"]),
            best=best,
            bad_evals=_check.non_negative_int("state['bad_evals']", data["bad_evals"]),
            cooldown_left=_check.non_negative_int(
                "state['cooldown_left']", data["cooldown_left"]
            ),
            evals=_check.non_negative_int("state['evals']", data["evals"]),
            reductions=_check.non_negative_int(
                "state['reductions']", data["reductions"]
            ),
        )


def _min_lrs(value: Any) -> float | tuple[float, ...]:
    """``min_lr``: a number >= 0, or a non-empty sequence of them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return _check.non_negative("min_lr", value)
    values = tuple(value)
    if not values:
        _check.fail("min_lr", "a number >= 0 or a non-empty sequence of them", value)
    return tuple(_check.non_negative(f"min_lr[{i}]", v) for i, v in enumerate(values))


@dataclass(frozen=True, kw_only=True)
class ReduceOnPlateau:
    """Reduce-on-plateau settings; pure ``init()`` / ``update(state, metric)``.

    Args:
        mode: ``"min"`` (a loss) or ``"max"`` (an accuracy).
        factor: multiply the scale by this at a reduction, in (0, 1).
        patience: evaluations without improvement tolerated; the reduction
            happens at the ``patience + 1``-th in a row (torch's meaning;
            Keras's ``patience=p`` is ``p - 1`` here).
        threshold: how much better than ``best`` counts as an improvement.
        threshold_mode: ``"rel"`` (better by ``threshold × |best|``) or
            ``"abs"`` (better by ``threshold``; Keras's ``min_delta``).
        cooldown: evaluations after a reduction during which bad evaluations
            are not counted.
        min_scale: lower bound of the plateau scale.
        min_lr: lower bound, in LR units, of the LR a reduction produces (torch's
            ``min_lr``), or a sequence of them, one per param group (torch's list;
            :class:`lrkit.torch.Scheduler` checks its length, :meth:`update`
            uses the smallest); needs the LR passed to :meth:`update`. The schedule may
            still take the LR lower later; for a bound that always holds use
            ``min_scale``. :class:`lrkit.torch.Scheduler` applies it to each
            param group at every step, as torch does (see its docs).
        eps: a reduction that changes the LR by ``eps`` or less is skipped
            (torch's ``eps``, LR units).

    Example:
        >>> plateau = ReduceOnPlateau(mode="max", patience=0, factor=0.1)
        >>> s = plateau.init()
        >>> s = plateau.update(s, 0.80)
        >>> s = plateau.update(s, 0.79)
        >>> round(s.scale, 12), s.best
        (0.1, 0.8)
    """

    mode: str = "min"
    factor: float = 0.1
    patience: int = 10
    threshold: float = 1e-4
    threshold_mode: str = "rel"
    cooldown: int = 0
    min_scale: float = 0.0
    min_lr: float | tuple[float, ...] = 0.0
    eps: float = 1e-8

    def __post_init__(self) -> None:
        _check.choice("mode", self.mode, ("min", "max"))
        factor = _check.real("factor", self.factor)
        if not 0.0 < factor < 1.0:
            _check.fail("factor", "in (0, 1)", self.factor, "It multiplies the LR.")
        object.__setattr__(self, "factor", factor)
        object.__setattr__(
            self, "patience", _check.non_negative_int("patience", self.patience)
        )
        object.__setattr__(
            self, "threshold", _check.non_negative("threshold", self.threshold)
        )
        _check.choice("threshold_mode", self.threshold_mode, ("rel", "abs"))
        if self.threshold_mode == "rel" and self.threshold >= 1.0:
            _check.fail(
                "threshold",
                "< 1 with threshold_mode='rel'",
                self.threshold,
                "A relative threshold is a fraction of |best|.",
            )
        object.__setattr__(
            self, "cooldown", _check.non_negative_int("cooldown", self.cooldown)
        )
        object.__setattr__(
            self, "min_scale", _check.fraction("min_scale", self.min_scale)
        )
        object.__setattr__(self, "min_lr", _min_lrs(self.min_lr))
        object.__setattr__(self, "eps", _check.non_negative("eps", self.eps))

    def min_lr_of(self, group: int | None) -> float:
        """``min_lr`` of param group ``group`` (None: the smallest)."""
        m = self.min_lr
        if isinstance(m, tuple):
            return min(m) if group is None else m[group]
        return m

    def init(self) -> PlateauState:
        """The state before any evaluation (scale 1.0)."""
        worst = math.inf if self.mode == "min" else -math.inf
        return PlateauState(scale=1.0, best=worst)

    def improves(self, metric: float, best: float) -> bool:
        """Whether ``metric`` counts as an improvement over ``best``."""
        thr = self.threshold
        if self.threshold_mode == "abs":
            return metric < best - thr if self.mode == "min" else metric > best + thr
        # relative: better by thr × |best|, written as torch writes it for best >= 0
        if self.mode == "min":
            return metric < best * (1.0 - thr if best >= 0 else 1.0 + thr)
        return metric > best * (1.0 + thr if best >= 0 else 1.0 - thr)

    def update(
        self, state: PlateauState, metric: float, *, lr: float = 1.0
    ) -> PlateauState:
        """Record one evaluation and return the new state (``state`` is unchanged).

        Args:
            state: from :meth:`init` or a previous :meth:`update`.
            metric: the monitored value (a real number or a one-element
                tensor or array). NaN and ±inf count as no improvement.
            lr: the LR the plateau scale multiplies right now
                (``base_lr × schedule(t) × recovery_scale``), for ``min_lr`` and
                ``eps``, which are in LR units. Leave at 1.0 to think in scales.
        """
        if not isinstance(state, PlateauState):
            _check.fail("state", "a PlateauState", state, exc=TypeError)
        value = _metric(metric)
        lr = _check.non_negative("lr", lr)
        best, bad = state.best, state.bad_evals
        if math.isfinite(value) and self.improves(value, best):  # NaN/inf never do
            best, bad = value, 0
        else:
            bad += 1
        cooldown = state.cooldown_left
        if cooldown > 0:
            cooldown -= 1
            bad = 0
        scale, reductions = state.scale, state.reductions
        if bad > self.patience:
            new = max(scale * self.factor, self.min_scale)
            floor = self.min_lr_of(None)
            if floor > 0.0 and lr > 0.0:
                new = max(new, floor / lr)
            if (scale - new) * lr > self.eps:
                scale, reductions = new, reductions + 1
            cooldown = self.cooldown
            bad = 0
        return replace(
            state,
            scale=scale,
            best=best,
            bad_evals=bad,
            cooldown_left=cooldown,
            evals=state.evals + 1,
            reductions=reductions,
        )

    def update_clamped(
        self, state: PlateauState, metric: float, refs: Sequence[float]
    ) -> PlateauState:
        """:meth:`update` for a scale applied as ``min(u, max(u × scale,
        min_lr))`` at every step, ``u`` each param group's LR before the
        plateau (what :class:`lrkit.torch.Scheduler` and the Keras
        ``Schedule`` do).

        ``min_lr`` then bounds the LR, not the scale: a reduction made while
        the schedule is low (in a warmup) keeps its full factor once it is
        back up. A reduction is not made when it would change no group's LR
        by more than ``eps`` at its reference LR in ``refs`` (its base LR, or
        the schedule's value now if higher): the plateau has taken it to
        ``min_lr`` already. With a constant schedule that is torch's rule. An
        empty ``refs`` skips that check.
        """
        new = replace(self, min_lr=0.0, eps=0.0).update(state, metric)
        if new.reductions > state.reductions and refs:

            def lr(u: float, scale: float, g: int) -> float:
                return min(u, max(u * scale, self.min_lr_of(g)))

            if all(
                lr(u, state.scale, g) - lr(u, new.scale, g) <= self.eps
                for g, u in enumerate(refs)
            ):
                new = replace(new, scale=state.scale, reductions=state.reductions)
        return new

    def to_config(self) -> dict[str, Any]:
        """The settings as a JSON-serialisable dict."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ReduceOnPlateau:
        """Rebuild from :meth:`to_config` output (every key is optional).

        Example:
            >>> ReduceOnPlateau.from_config({"patience": 3}).patience
            3
            >>> ReduceOnPlateau.from_config({"gamma": 0.5})  # doctest: +ELLIPSIS
            Traceback (most recent call last):
            ...
            ValueError: config must be made of ReduceOnPlateau's parameters, ...
        """
        if not isinstance(config, Mapping):
            _check.fail("config", "a mapping", config, exc=TypeError)
        valid = [f.name for f in fields(cls)]
        for key in config:
            if key not in valid:
                _check.fail(
                    "config",
                    "made of ReduceOnPlateau's parameters",
                    dict(config),
                    f"Unknown key {key!r}; valid: {', '.join(valid)}.",
                )
        return cls(**config)
