"""``lrkit.torch.Scheduler``: any lrkit schedule as a torch LR scheduler.

It applies lrkit's one equation to every param group ``g``::

    lr_g(t) = base_lr_g × schedule_g(t) × plateau_scale × recovery_scale

**Step count.** ``t`` is the number of optimizer steps actually taken. The
scheduler counts them with an optimizer step hook, so a step that GradScaler
skipped (inf/NaN gradients) does not advance the schedule, calling ``step()``
before or after ``optimizer.step()`` gives the same LRs, and there is no
"scheduler before optimizer" warning to get wrong. ``step()`` brings the LR up
to date with the optimizer-step count; calling it once per batch (usual) or
once per epoch (the LR then changes in a staircase) both evaluate the schedule
at the true optimizer step. Calling ``step()`` without optimizer steps does
nothing: to preview a schedule, call it directly or run ``lrkit schedule``.
(An optimizer without step hooks falls back to counting ``step()`` calls.)
A deep copy or an unpickled scheduler counts the steps of the optimizer it
holds (copied with it, as for torch's schedulers). ``last_epoch`` is this
count and read-only, so torch's ``SequentialLR`` cannot rewind it: use
``lrkit.Join`` / ``>>`` instead.

**Bad LRs.** A base LR must be finite and >= 0, and so must every LR the
equation gives: a schedule returning NaN, inf or a negative value makes
``step()`` raise :class:`lrkit.LRKitError` (naming the param group and the
step) and change nothing.

**Base LR.** By default each group's ``initial_lr`` (set from its ``lr`` on
first use, as torch does, and saved with the optimizer's state), so the
schedule is a multiplier of the LR you gave the optimizer. ``base_lr=1.0``
makes the schedule's values absolute learning rates.

**Plateau.** With ``plateau=ReduceOnPlateau(...)``, report each evaluation
with ``scheduler.step(metric)``: it feeds the plateau and brings the step
count up to date (it never counts a step twice), so calling ``step()`` every
batch and ``step(val_loss)`` every evaluation is right. The plateau's
``min_lr`` holds per param group, as in torch: the plateau scale never takes a
group's LR below ``min_lr`` (that group is held at ``min_lr`` while the others
keep being reduced), though the schedule itself may go lower::

    lr_g(t) = min(u_g(t), max(u_g(t) × plateau_scale, min_lr))
    u_g(t)  = base_lr_g × schedule_g(t) × recovery_scale

A reduction happens while it lowers some group's LR by more than ``eps``.

**Resume.** ``state_dict()`` is ``{"step", "plateau", "recovery_scale"}``:
the optimizer-step count, the plateau state and the guard's scale. Loading it
(before or after the optimizer's own state, before or after building the
scheduler) continues the exact LR sequence. The schedule itself is code, not
state: pass a different one on resume (say a longer ``total_steps``) and the
run continues at the saved step on the new curve.
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import torch
from torch.optim.lr_scheduler import LRScheduler

from .. import _check
from .._check import LRKitError
from ..plateau import PlateauState, ReduceOnPlateau, _metric
from ..schedules import ScheduleFn
from ._groups import set_lr

__all__ = ["Scheduler"]

logger = logging.getLogger(__name__)

_KEYS = ("step", "plateau", "recovery_scale")


def _as_schedules(schedule: Any, n_groups: int) -> list[Callable[[int], float]]:
    from .._parse import parse_schedule

    if isinstance(schedule, str):
        return [parse_schedule(schedule)] * n_groups
    if callable(schedule):
        return [schedule] * n_groups
    if isinstance(schedule, Sequence):
        entries = list(schedule)
        if len(entries) != n_groups:
            _check.fail(
                "schedule",
                f"one schedule or one per param group ({n_groups})",
                schedule,
            )
        fns: list[Callable[[int], float]] = []
        for i, f in enumerate(entries):
            if isinstance(f, str):
                fns.append(parse_schedule(f))
            else:
                fns.append(
                    _check.callable_(
                        f"schedule[{i}]",
                        f,
                        "Each entry must be a schedule or its text.",
                    )
                )
        return fns
    _check.fail(
        "schedule",
        "a schedule (callable), a text spec or a list of them (one per param group)",
        schedule,
        exc=TypeError,
    )


def _base(name: str, value: Any, hint: str | None = None) -> float:
    """One base LR: a finite real number >= 0 (a one-element tensor is read)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    return _check.non_negative(name, value, hint)


def _bases_arg(name: str, value: Any, n_groups: int, *, one: bool) -> list[float]:
    """``n_groups`` base LRs from one number (where ``one``) or one per group."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        if not one:
            _check.fail(
                name,
                f"a list of {n_groups} floats (one per group)",
                value,
                exc=TypeError,
            )
        return [_base(name, value)] * n_groups
    if len(value) != n_groups:
        wanted = f"one float or {n_groups}" if one else f"{n_groups} floats"
        _check.fail(name, f"{wanted} (one per group)", value)
    return [_base(f"{name}[{i}]", b) for i, b in enumerate(value)]


def _reapply(ref: weakref.ReferenceType[Scheduler]) -> Callable[..., None]:
    def hook(optimizer: Any) -> None:
        sched = ref()
        if sched is not None and sched._last_lr:
            sched._write(sched._lrs(sched._t, sched._state))

    return hook


def _counter(ref: weakref.ReferenceType[Scheduler]) -> Callable[..., None]:
    def hook(optimizer: Any, args: Any, kwargs: Any) -> None:
        sched = ref()
        if sched is not None:
            sched._pending += 1

    return hook


class Scheduler(LRScheduler):
    """Apply an lrkit schedule (plus plateau and recovery scales) to an optimizer.

    A drop-in for torch's ``LRScheduler`` protocol (``step()``,
    ``get_last_lr()``, ``state_dict()``, ``load_state_dict()``; it is an
    instance of ``torch.optim.lr_scheduler.LRScheduler``), so plain loops,
    Lightning (``configure_optimizers`` with ``"interval": "step"``) and the
    Hugging Face Trainer (``optimizers=(opt, sched)``) drive it unchanged. See
    the module docstring for the step-count, base-LR and resume semantics.

    Args:
        optimizer: a ``torch.optim.Optimizer``.
        schedule: a schedule (any ``Callable[[int], float]``), its text form
            (``"warmup(500) >> cosine(10000)"``), or a list with one schedule
            per param group.
        plateau: optional :class:`lrkit.ReduceOnPlateau`; feed it with
            ``step(metric)``.
        base_lr: ``None`` (each group's ``initial_lr``), a float for every
            group, or one float per group.

    Example:
        >>> import torch
        >>> import lrkit.torch
        >>> model = torch.nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> sched = lrkit.torch.Scheduler(opt, "warmup(2) >> cosine(total_steps=4)")
        >>> lrs = []
        >>> for _ in range(7):
        ...     lrs.append(round(opt.param_groups[0]["lr"], 4))
        ...     model(torch.ones(1, 2)).sum().backward()
        ...     opt.step()
        ...     sched.step()
        >>> lrs
        [0.0333, 0.0667, 0.1, 0.0854, 0.05, 0.0146, 0.0]
        >>> sched.state_dict()
        {'step': 7, 'plateau': None, 'recovery_scale': 1.0}
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        schedule: ScheduleFn | str | Sequence[ScheduleFn | str],
        *,
        plateau: ReduceOnPlateau | None = None,
        base_lr: float | Sequence[float] | None = None,
    ) -> None:
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(groups, list) or not groups:
            _check.fail(
                "optimizer",
                "a torch optimizer with param groups",
                optimizer,
                exc=TypeError,
            )
        fns = _as_schedules(schedule, len(groups))
        if plateau is not None and not isinstance(plateau, ReduceOnPlateau):
            _check.fail(
                "plateau", "a lrkit.ReduceOnPlateau or None", plateau, exc=TypeError
            )
        if base_lr is None:
            bases = []
            for i, g in enumerate(groups):
                key = "initial_lr" if "initial_lr" in g else "lr"
                name = f"optimizer.param_groups[{i}][{key!r}]"
                bases.append(_base(name, g[key], "It is the base LR (base_lr=None)."))
        else:
            bases = _bases_arg("base_lr", base_lr, len(groups), one=True)
        for i, f in enumerate(fns):  # fail before touching the optimizer
            v = float(f(0))
            if not (v >= 0.0 and v < float("inf")):
                _check.fail(f"schedule(0) for param group {i}", "finite and >= 0", v)
        floors = getattr(plateau, "min_lr", None)
        if isinstance(floors, tuple) and len(floors) != len(groups):
            _check.fail(
                "plateau.min_lr",
                f"one value per param group ({len(groups)})",
                list(floors),
                "Or give one number for every group.",
            )

        self.optimizer = optimizer
        self.schedule = schedule
        self.plateau = plateau
        self._bases = bases  # torch's base_lrs (a property here, validated)
        self._fns = fns
        self._shared = all(f is fns[0] for f in fns)
        self._t = 0
        self._pending = 0
        self._recovery = 1.0
        self._state: PlateauState | None = plateau.init() if plateau else None
        self._step_count = 1
        self._told_idle = False
        self._told_multi = False
        self._last_lr: list[float | torch.Tensor] = []
        lrs = self._lrs(self._t, self._state)  # the last check: now change things
        if base_lr is None:
            for g in groups:
                if "initial_lr" not in g:
                    lr = g["lr"]
                    g["initial_lr"] = lr.clone() if isinstance(lr, torch.Tensor) else lr
        self._count_optimizer_steps()
        self._write(lrs)

    def _count_optimizer_steps(self) -> None:
        """Register the step hook that counts the optimizer's steps."""
        register = getattr(self.optimizer, "register_step_post_hook", None)
        self._counts_optimizer = callable(register)
        if self._counts_optimizer:
            handle = register(_counter(weakref.ref(self)))  # type: ignore[misc]
            weakref.finalize(self, handle.remove)
        else:  # pragma: no cover - every torch.optim.Optimizer has hooks
            logger.info("optimizer has no step hooks; counting Scheduler.step() calls")
        # loading the optimizer's state brings back the LRs it was saved with:
        # put this scheduler's back (the scheduler's state may be loaded first)
        on_load = getattr(self.optimizer, "register_load_state_dict_post_hook", None)
        if callable(on_load):
            handle = on_load(_reapply(weakref.ref(self)))
            weakref.finalize(self, handle.remove)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling or ``copy.deepcopy``: count the (copied) optimizer's steps.

        The step hook is not part of an optimizer's pickled state, so the copy
        registers its own on the optimizer it now holds, and continues from
        the same step as the original.
        """
        self.__dict__.update(state)
        self._count_optimizer_steps()

    # ------------------------------------------------------------ stepping

    def step(self, metric: Any = None) -> None:
        """Bring the LR up to date; with ``metric``, also record an evaluation.

        Advances the step count by the optimizer steps taken since the last
        call (0 after a skipped AMP step: the LR then stays). ``metric`` (a
        real number or a one-element tensor) goes to the plateau; it needs
        ``plateau=...``. A bad ``metric`` raises and changes nothing.
        """
        self._check_groups()
        n = self._pending if self._counts_optimizer else 1
        t = self._t + n
        state = self._state
        if metric is not None:
            state = self._evaluate(t, _metric(metric))
        lrs = self._lrs(t, state) if n or metric is not None else None
        # validated and computed: now change the state
        self._step_count += 1
        self._pending = 0
        self._t = t
        self._state = state
        if n > 1 and not self._told_multi:
            self._told_multi = True
            logger.info(
                "Scheduler.step() saw %d optimizer steps since its last call; "
                "lrkit schedules count optimizer steps, not step() calls",
                n,
            )
        elif n == 0 and metric is None and not self._told_idle:
            self._told_idle = True
            logger.info(
                "Scheduler.step(): no optimizer step since the last call "
                "(skipped by GradScaler?); the LR stays at step %d",
                self._t,
            )
        if lrs is not None:
            self._write(lrs)

    def _evaluate(self, t: int, value: float) -> PlateauState:
        """The plateau state after the evaluation ``value`` at step ``t``
        (:meth:`ReduceOnPlateau.update_clamped`: ``min_lr`` bounds each
        group's LR at every step, see :meth:`_lrs`, and ``eps`` is judged at
        each group's base LR, or the schedule's value now if higher)."""
        plateau, state = self._plateau()
        refs = [
            b * max(1.0, float(f(t))) * self._recovery
            for b, f in zip(self._bases, self._fns, strict=True)
        ]
        return plateau.update_clamped(state, value, refs)

    def _plateau(self) -> tuple[ReduceOnPlateau, PlateauState]:
        """The plateau and its state, or raise (before any change) without one."""
        if self.plateau is None or self._state is None:
            _check.fail(
                "plateau",
                "a ReduceOnPlateau to report a metric with step(metric)",
                None,
                "Build the scheduler with plateau=lrkit.ReduceOnPlateau(...).",
            )
        return self.plateau, self._state

    def _unscaled(self, t: int) -> list[float]:
        """Each group's ``base_lr × schedule(t) × recovery_scale`` (validated)."""
        out = []
        for i, (b, f) in enumerate(zip(self._bases, self._fns, strict=True)):
            v = float(f(t))
            lr = b * v * self._recovery
            if not 0.0 <= lr < math.inf:
                self._bad_lr(i, t, lr, b, v, self._recovery)
            out.append(lr)
        return out

    def _bad_lr(
        self, i: int, t: int, lr: float, base: float, v: float, k: float
    ) -> NoReturn:
        raise LRKitError(
            _check.message(
                f"the LR of param group {i} at step {t}",
                "finite and >= 0",
                f"lr={lr!r} (base_lr={base!r} × schedule({t})={v!r} × scales={k!r})",
                "Nothing was changed: the optimizer's LRs and the step count are "
                "as before. Check the schedule and the base LR.",
                shown=True,
            )
        )

    def _check_groups(self) -> None:
        n_groups = len(self.optimizer.param_groups)
        if n_groups != len(self._fns):
            raise LRKitError(
                f"the optimizer has {n_groups} param groups but the Scheduler was "
                f"built for {len(self._fns)}; add param groups before creating it."
            )

    def _lrs(
        self,
        t: int,
        state: PlateauState | None,
        *,
        recovery: float | None = None,
        bases: list[float] | None = None,
    ) -> list[float]:
        """The LR of each group at step ``t``; raises (changing nothing) on a bad one.

        ``recovery`` and ``bases`` default to the current ones.
        """
        self._check_groups()
        fns = self._fns
        recovery = self._recovery if recovery is None else recovery
        bases = self._bases if bases is None else bases
        scale = 1.0 if state is None else state.scale
        k = scale * recovery
        plateau = None if self.plateau is None or scale == 1.0 else self.plateau
        lrs: list[float] = []
        shared = float(fns[0](t)) if self._shared else 0.0
        # lengths were checked; plain loops keep the per-step cost small
        for i, (base, fn) in enumerate(zip(bases, fns)):  # noqa: B905
            v = shared if self._shared else float(fn(t))
            lr = base * (v * k)
            floor = 0.0 if plateau is None else plateau.min_lr_of(i)
            if floor and lr < floor:
                # the plateau never takes a group below min_lr (torch clamps each
                # group); the schedule and the recovery scale still may
                lr = min(base * (v * recovery), floor)
            if not 0.0 <= lr < math.inf:  # NaN, inf or negative
                self._bad_lr(i, t, lr, base, v, k)
            lrs.append(lr)
        return lrs

    def _write(self, lrs: list[float]) -> None:
        """Set each group's LR (all validated by :meth:`_lrs`)."""
        for group, lr in zip(self.optimizer.param_groups, lrs):  # noqa: B905
            set_lr(group, lr)
        self._last_lr = list[float | torch.Tensor](lrs)

    # ------------------------------------------------------------ reading

    def get_last_lr(self) -> list[float | torch.Tensor]:
        """The LR applied to each param group (a copy)."""
        return list(self._last_lr)

    def get_lr(self) -> list[float | torch.Tensor]:
        """Same as :meth:`get_last_lr` (the LR is always up to date)."""
        return list(self._last_lr)

    @property
    def step_count(self) -> int:
        """``t``: the optimizer steps the applied LR corresponds to."""
        return self._t

    @property
    def last_epoch(self) -> int:
        """torch's name for :attr:`step_count` (read-only).

        Setting it raises ``AttributeError``: the count follows the optimizer.
        So torch's ``SequentialLR`` (which moves its schedulers' ``last_epoch``)
        cannot hold a lrkit Scheduler; join the schedules instead,
        ``lrkit.Join(parts=[a, b], boundaries=[m])`` or ``a >> b``, and give
        the result to one Scheduler. ``ChainedScheduler`` works, and like
        torch's ``LambdaLR`` this scheduler sets the LR outright each step
        rather than multiplying the current one.
        """
        return self._t

    @last_epoch.setter
    def last_epoch(self, value: int) -> None:
        _check.fail(
            "last_epoch",
            "left to the Scheduler (it is the optimizer-step count, read-only)",
            value,
            "To move the count, use load_state_dict({'step': n, 'plateau': None, "
            "'recovery_scale': 1.0}). To run schedules one after another (what "
            "torch's SequentialLR does), join them: lrkit.Join(parts=[a, b], "
            "boundaries=[m]) or a >> b, and give that to one Scheduler.",
            exc=AttributeError,
        )

    @property  # type: ignore[override]
    def base_lrs(self) -> list[float]:
        """Each group's base LR (torch's attribute; assign a list to change them).

        Assigning ``scheduler.base_lrs = [...]`` (one finite float >= 0 per
        param group) re-applies the LR at once; bad values raise and change
        nothing. The list returned is the one in use: changing an element in
        place takes effect at the next LR update.
        """
        return self._bases

    @base_lrs.setter  # type: ignore[override]
    def base_lrs(self, value: Sequence[float]) -> None:
        bases = _bases_arg("base_lrs", value, len(self._fns), one=False)
        lrs = self._lrs(self._t, self._state, bases=bases)
        self._bases = bases
        self._write(lrs)

    @property
    def plateau_scale(self) -> float:
        """The reduce-on-plateau factor now applied (1.0 without a plateau)."""
        return 1.0 if self._state is None else self._state.scale

    @property
    def plateau_state(self) -> PlateauState | None:
        """The plateau's immutable state, or None without a plateau."""
        return self._state

    @property
    def recovery_scale(self) -> float:
        """The guard's LR factor now applied (1.0 unless a guard cut the LR)."""
        return self._recovery

    def set_recovery_scale(self, value: float) -> None:
        """Set the recovery scale and re-apply the current LR immediately.

        This is the interface :class:`lrkit.torch.Guard` uses after a
        divergence or spike; it is saved in :meth:`state_dict`.
        """
        recovery = _check.positive("recovery_scale", value)
        lrs = self._lrs(self._t, self._state, recovery=recovery)
        self._recovery = recovery
        self._write(lrs)

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """``{"step": t, "plateau": dict | None, "recovery_scale": float}``.

        ``step`` counts every optimizer step taken, including one not yet
        followed by ``step()``.
        """
        return {
            "step": self._t + self._pending,
            "plateau": None if self._state is None else self._state.to_dict(),
            "recovery_scale": self._recovery,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output and re-apply the LR at once.

        Bad input raises and changes nothing. A saved plateau state is
        ignored (with a log warning) when this scheduler has no plateau; a
        plateau without saved state starts fresh.
        """
        if not isinstance(state_dict, Mapping):
            _check.fail("state_dict", "a mapping", state_dict, exc=TypeError)
        if set(state_dict) != set(_KEYS):
            _check.fail(
                "state_dict",
                f"a dict with keys {list(_KEYS)}",
                dict(state_dict),
                "Pass what Scheduler.state_dict() returned. From a torch scheduler, "
                "use {'step': its last_epoch, 'plateau': None, 'recovery_scale': 1.0}.",
            )
        step = _check.non_negative_int("state_dict['step']", state_dict["step"])
        recovery = _check.positive(
            "state_dict['recovery_scale']", state_dict["recovery_scale"]
        )
        raw = state_dict["plateau"]
        state = None if raw is None else PlateauState.from_dict(raw)
        if self.plateau is None:
            if state is not None:
                logger.warning(
                    "load_state_dict: the saved plateau state is ignored because this "
                    "Scheduler has no plateau"
                )
            state = None
        elif state is None:
            state = self.plateau.init()
        lrs = self._lrs(step, state, recovery=recovery)
        self._t = step
        self._pending = 0
        self._recovery = recovery
        self._state = state
        self._write(lrs)

    def __repr__(self) -> str:
        return (
            f"Scheduler(step={self._t}, lr={self._last_lr}, "
            f"plateau_scale={self.plateau_scale}, recovery_scale={self._recovery})"
        )
