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
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

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


def _lr_value(value: Any) -> float:
    return float(value.item() if isinstance(value, torch.Tensor) else value)


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
            bases = [
                _lr_value(g["initial_lr"] if "initial_lr" in g else g["lr"])
                for g in groups
            ]
        elif isinstance(base_lr, Sequence):
            if len(base_lr) != len(groups):
                _check.fail(
                    "base_lr", f"one float or {len(groups)} (one per group)", base_lr
                )
            bases = [_check.non_negative("base_lr", b) for b in base_lr]
        else:
            bases = [_check.non_negative("base_lr", base_lr)] * len(groups)
        for i, f in enumerate(fns):  # fail before touching the optimizer
            v = float(f(0))
            if not (v >= 0.0 and v < float("inf")):
                _check.fail(f"schedule(0) for param group {i}", "finite and >= 0", v)

        if base_lr is None:
            for g in groups:
                if "initial_lr" not in g:
                    lr = g["lr"]
                    g["initial_lr"] = lr.clone() if isinstance(lr, torch.Tensor) else lr
        self.optimizer = optimizer
        self.schedule = schedule
        self.plateau = plateau
        self.base_lrs = list[float | torch.Tensor](bases)  # torch's attribute
        self._bases = bases
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
        register = getattr(optimizer, "register_step_post_hook", None)
        self._counts_optimizer = callable(register)
        if self._counts_optimizer:
            handle = register(_counter(weakref.ref(self)))  # type: ignore[misc]
            weakref.finalize(self, handle.remove)
        else:  # pragma: no cover - every torch.optim.Optimizer has hooks
            logger.info("optimizer has no step hooks; counting Scheduler.step() calls")
        self._apply()

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
            plateau, state = self._plateau()
            value = _metric(metric)
            state = plateau.update(state, value, lr=max(self._unscaled(t)))
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
        if n or metric is not None:
            self._apply()

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
        """Each group's ``base_lr × schedule(t) × recovery_scale``."""
        return [
            b * float(f(t)) * self._recovery
            for b, f in zip(self._bases, self._fns, strict=True)
        ]

    def _check_groups(self) -> None:
        n_groups = len(self.optimizer.param_groups)
        if n_groups != len(self._fns):
            raise LRKitError(
                f"the optimizer has {n_groups} param groups but the Scheduler was "
                f"built for {len(self._fns)}; add param groups before creating it."
            )

    def _apply(self) -> None:
        self._check_groups()
        groups = self.optimizer.param_groups
        fns = self._fns
        t = self._t
        state = self._state
        scale = 1.0 if state is None else state.scale
        k = scale * self._recovery
        floor = 0.0 if self.plateau is None or scale == 1.0 else self.plateau.min_lr
        last: list[float | torch.Tensor] = []
        shared = float(fns[0](t)) if self._shared else 0.0
        # lengths were checked above; plain loops keep the per-step cost small
        for group, base, fn in zip(groups, self._bases, fns):  # noqa: B905
            v = shared if self._shared else float(fn(t))
            lr = base * (v * k)
            if floor and lr < floor:
                # the plateau never takes a group below min_lr (torch clamps each
                # group); the schedule and the recovery scale still may
                lr = min(base * (v * self._recovery), floor)
            set_lr(group, lr)
            last.append(lr)
        self._last_lr = last

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
    def last_epoch(self) -> int:  # type: ignore[override]
        """torch's name for :attr:`step_count` (read-only)."""
        return self._t

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
        self._recovery = _check.positive("recovery_scale", value)
        self._apply()

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
        self._t = step
        self._pending = 0
        self._recovery = recovery
        self._state = state
        self._apply()

    def __repr__(self) -> str:
        return (
            f"Scheduler(step={self._t}, lr={self._last_lr}, "
            f"plateau_scale={self.plateau_scale}, recovery_scale={self._recovery})"
        )
