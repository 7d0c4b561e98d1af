"""``lrkit.torch.Guard``: roll a run back and cut the LR when it blows up.

The classic recovery from a loss spike or divergence (PaLM, OPT): go back to a
recent good state, lower the learning rate, skip the batches that were involved,
carry on. The guard does it inside the training loop::

    guard = lrkit.torch.Guard(model, optimizer, scheduler=sched, scaler=scaler)
    for batch in guard.batches(loader):          # skips batches after a recovery
        loss = loss_fn(model(batch.x), batch.y)
        optimizer.zero_grad()
        loss.backward()
        if guard.step(loss):                     # False: rolled back, skip the update
            optimizer.step()
            sched.step()

:meth:`Guard.step` feeds the loss (and optionally the gradient norm and the
validation loss) to a :class:`lrkit.Monitor`. While nothing is wrong it takes a
snapshot (:func:`lrkit.torch.state.snapshot`: model, optimizer, scheduler,
GradScaler, RNG and loader generators, a bit-exact copy in CPU memory, or on
disk with ``spill_dir``) every ``every`` steps, keeping the last ``keep``. When a
finding of a kind in ``on`` (``nan``, ``diverged``, ``spike`` by default) shows
up, it (a ``spike`` only once the monitor has measured the noise over a full
``noise_window`` of losses (a restore puts back the snapshot's, measured
noise included): before that a
classifier at chance is quieter than it will be once it learns, and a blow-up
there is ``diverged`` within steps)

1. restores the newest snapshot taken before the problem began (the finding's
   ``first_step``), in place, and the monitor's statistics of that moment;
2. multiplies the learning rate by ``factor`` (the *recovery scale* of lrkit's
   one equation ``lr = base_lr × schedule(t) × plateau_scale ×
   recovery_scale``), cumulatively over recoveries, and by ``factor**k`` for
   the k-th cut in a row (a recovery that did not hold means the LR is
   further off than one cut);
3. asks :meth:`batches` to drop the next ``skip_batches`` batches;
4. records a :class:`GuardEvent` and returns ``False`` so the caller skips the
   optimizer step of the offending batch.

A ``spike`` is different (``spike_action="skip"``, the default): one batch's
loss far above the rest, usually the batch's doing (a hard or a small last
batch), not the LR's. The guard only returns ``False``, so that batch's update
is not applied, and records the event (``restored_step`` None); nothing is
restored and the LR is kept (times ``spike_factor``, 1 by default). A problem
that outlasts the batch raises the level and is ``diverged``, which restores
and cuts; spikes that repeat (while the monitor's ``oscillating`` finding is
open: three within its window) restore as with ``"restore"``.
``spike_action="restore"`` treats a spike like the rest, except that a lone one
(the first recovery in a row) cuts by ``spike_factor``. A lone ``nan`` (a
non-finite loss from finite weights, not right after another: a NaN in one
batch's data) is skipped the same way (``nan_action="skip"``); one that stays
or comes with broken weights restores and cuts. A skipped batch's BatchNorm
running statistics are put back as they were before it.

For ``every`` steps after a recovery the guard also watches the line the
problem crossed (its threshold above the higher of its reference level and the
restored state's level, in loss units): the monitor restarts from the
snapshot's statistics and, after a restore to the first steps, has not measured
the noise yet, but a median of the last 5 losses above that line is the same
problem back, and triggers the next recovery. When the restored state predates
the monitor's first noise estimate (a blow-up in the first steps, whose
threshold came from noise the blow-up inflated), the line sits a quarter of the
way from the restored level to the level that triggered the recovery, if that
is lower; a problem the watch itself caught keeps the line it crossed.

The batches between the snapshot and the problem are not replayed: like the
skipping of PaLM, the run continues with fresh data from the restored state.
When problems keep coming, ``max_recoveries`` recoveries in a row without a
clean stretch of ``every`` steps in between raise :class:`GuardError` with the
history of events.

How the LR cut reaches the optimizer:

- an :class:`lrkit.torch.Scheduler` (anything with ``recovery_scale`` and
  ``set_recovery_scale``): ``set_recovery_scale(scale)``; the scale is part of
  the scheduler's ``state_dict()``, so a resumed run keeps it;
- no scheduler: every param group's ``lr`` is multiplied;
- a torch ``LRScheduler``: every group's ``lr`` is multiplied, and so are the
  LRs it computes from: its ``base_lrs`` (``max_lrs``, ``min_lrs``), those of
  the schedulers it chains (SequentialLR, ChainedScheduler), and the
  ``initial_lr``/``max_lr``/``min_lr`` kept in the param groups (OneCycleLR).
  Exact for schedulers whose LR is proportional to those; CosineAnnealingLR's
  ``eta_min`` is not scaled. ``lrkit.torch.Scheduler`` always cuts exactly.

With a GradScaler, skip ``scaler.step()`` and ``scaler.update()`` too when
:meth:`Guard.step` returns False: the scaler is back at its snapshot.

Overhead when nothing happens: one ``float(loss)`` (a device sync, as for
logging), a monitor update (5-20 µs), and a CPU copy of model and optimizer every
``every`` steps; ``benchmarks/monitor/run.py --guard`` measures it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import weakref
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch

from .. import _check
from .._check import LRKitError
from .._watch import config_from_dict
from ..monitor import (
    _DEAD_GAIN,
    _DEAD_UPDATES,
    KINDS,
    Finding,
    Monitor,
    MonitorConfig,
    MonitorState,
    from_json_float,
    json_float,
)
from ._groups import get_lr, set_lr
from .state import (
    Snapshot,
    _check_stateful,
    _loader_objects,
    _loader_rngs,
    _reseed_rng,
    snapshot,
)

__all__ = ["Guard", "GuardError", "GuardEvent"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, kw_only=True)
class GuardEvent:
    """One recovery.

    Attributes:
        step: the guard step (call to :meth:`Guard.step`) at which it happened.
        kind: the finding that triggered it (``nan``, ``diverged``, ``spike``...).
        first_step: where the finding says the problem began.
        restored_step: the guard step of the snapshot put back; None when
            nothing was (a ``spike`` whose batch's update was skipped, or a
            problem that began before every kept snapshot in a run that has
            trained on past it: the LR is cut in place).
        recovery_scale: the cumulative LR factor in force after the cut.
        lrs: each param group's learning rate after the cut.
        attempt: recoveries in a row so far (1 for the first after a clean run).
        skipped_batches: batches :meth:`Guard.batches` drops after it.
        evidence: the finding's numbers.
    """

    step: int
    kind: str
    first_step: int
    restored_step: int | None
    recovery_scale: float
    lrs: tuple[float, ...]
    attempt: int
    skipped_batches: int
    evidence: Mapping[str, float] = field(default_factory=dict, hash=False)

    def __eq__(self, other: object) -> bool:
        """Field by field, NaN evidence equal to NaN (an event loaded from a
        checkpoint equals the one saved)."""
        if not isinstance(other, GuardEvent):
            return NotImplemented
        names = [f.name for f in dataclasses.fields(self) if f.name != "evidence"]
        mine, theirs = dict(self.evidence), dict(other.evidence)
        return (
            all(getattr(self, n) == getattr(other, n) for n in names)
            and mine.keys() == theirs.keys()
            and all(
                mine[k] == theirs[k] or (mine[k] != mine[k] and theirs[k] != theirs[k])
                for k in mine
            )
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (non-finite evidence numbers are ``None``)."""
        return {
            "step": self.step,
            "kind": self.kind,
            "first_step": self.first_step,
            "restored_step": self.restored_step,
            "recovery_scale": self.recovery_scale,
            "lrs": list(self.lrs),
            "attempt": self.attempt,
            "skipped_batches": self.skipped_batches,
            # strict JSON: a non-finite number (a NaN loss) is null
            "evidence": {
                k: (v if math.isfinite(v) else None) for k, v in self.evidence.items()
            },
        }

    def __str__(self) -> str:
        lrs = ", ".join(f"{lr:.3g}" for lr in self.lrs)
        if self.restored_step is not None:
            done = f"restored step {self.restored_step}"
        elif self.kind == "spike" or self.attempt == 0:
            done = "update skipped"
        else:  # every kept snapshot came after the problem began
            done = "update skipped, no snapshot before it: LR cut in place"
        return (
            f"step {self.step}: {self.kind} (from step {self.first_step}) -> "
            f"{done}, recovery_scale {self.recovery_scale:.3g}, lr [{lrs}]"
        )


class GuardError(LRKitError):
    """Raised when recoveries keep failing; ``events`` holds the history."""

    def __init__(self, message: str, events: Sequence[GuardEvent]) -> None:
        self.events = tuple(events)
        history = "; ".join(str(e) for e in self.events[-10:])
        super().__init__(f"{message} Recoveries: {history}" if history else message)


@dataclass
class _Saved:
    step: int
    snap: Snapshot
    monitor: MonitorState
    scale: float  # the guard's recovery scale when it was taken
    shape: tuple[int, ...]  # params per optimizer param group then
    applied: int  # updates in force then (the snapshot precedes its step's)
    first: bool = False  # the oldest state the guard has (see Guard._pinned)


class _NormStats:
    """The running statistics of a model's norm layers (BatchNorm,
    InstanceNorm with ``track_running_stats``), kept from one step to the next
    in place (no allocation per step) so that a batch whose update is skipped
    leaves no trace: its forward pass moved them already (a review measured a
    running variance of 1129 against 0.06 after one corrupted batch)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _buffers(self) -> list[torch.Tensor]:
        out: list[torch.Tensor] = []
        for m in self._model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._NormBase):
                for name in ("running_mean", "running_var", "num_batches_tracked"):
                    b = getattr(m, name, None)
                    if isinstance(b, torch.Tensor):
                        out.append(b)
        return out

    def remember(self) -> None:
        pairs = self._pairs
        if pairs is None:
            pairs = self._pairs = [(b, b.detach().clone()) for b in self._buffers()]
            return
        with torch.no_grad():
            for i, (b, kept) in enumerate(pairs):
                if kept.shape != b.shape or kept.device != b.device:
                    pairs[i] = (b, b.detach().clone())
                else:
                    kept.copy_(b)

    def put_back(self) -> None:
        if not self._pairs:
            return
        with torch.no_grad():
            for b, kept in self._pairs:
                if kept.shape == b.shape and kept.device == b.device:
                    b.copy_(kept)


def _scale_of(scaler: Any) -> float:
    """A GradScaler's current scale (1.0 when it cannot tell)."""
    try:
        return float(scaler.get_scale())
    except Exception:  # not a torch GradScaler, or one that is disabled
        return 1.0


def _new_streams(loaders: Sequence[Any], rng: bool, salt: int) -> None:
    """Move the restored random streams to new ones, derived from the restored
    state and ``salt`` (the recovery count): reproducible, and the run goes on
    with fresh data. Restored as they were, the loaders' generators (and the
    global torch RNG a loader without a generator draws from) would draw the
    epoch order of the snapshot again, and every dropout mask would repeat.

    Each generator ``g`` (a loader's or its samplers': torch, NumPy or
    ``random.Random``) is re-seeded with ``draw(g) XOR (salt * K) mod 2**62``,
    ``K`` the 64-bit golden-ratio constant.
    """

    def mixed(seed: int) -> int:
        return (seed ^ (salt * 0x9E3779B97F4A7C15)) % 2**62

    for loader in loaders:
        for g in _loader_rngs(loader):
            _reseed_rng(g, mixed)
        # a sampler that seeds each epoch's order with seed + epoch
        # (accelerate's SeedableRandomSampler): the restored epoch counter
        # would draw the orders of the epochs since the snapshot again
        for obj in _loader_objects(loader):
            seed = getattr(obj, "initial_seed", None)
            if type(seed) is int and type(getattr(obj, "epoch", None)) is int:
                obj.initial_seed = mixed(seed)
    if rng:
        random.seed(mixed(random.getrandbits(62)))
        np.random.seed(mixed(int(np.random.randint(2**31))) % 2**32)
        torch.manual_seed(mixed(int(torch.randint(2**62, (1,)))))  # CUDA too


class Guard:
    """Watch a training loop; on NaN or divergence roll back and cut the LR.

    A loss spike only has its batch's update skipped (``spike_action``); a
    problem that comes back within ``every`` steps of a recovery is cut deeper.

    See the module docstring for the loop and the recovery semantics.

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its optimizer.
        scheduler: an :class:`lrkit.torch.Scheduler` (exact LR cut), a torch
            ``LRScheduler``, or None.
        scaler: a ``torch.amp.GradScaler`` (its state is snapshotted too).
        loaders: a data loader, or a list of them, whose shuffling generators
            are snapshotted.
        objects: more objects with ``state_dict()`` / ``load_state_dict()`` to
            snapshot (an EMA of the weights, ...).
        every: take a snapshot every ``every`` clean steps.
        keep: how many snapshots to keep (each is one copy of the model and the
            optimizer state); the first one is kept beyond them early in the
            run and while the run has not trained past its first loss (see
            the docs: a run an LR far too high killed goes back to it).
        factor: the LR multiplier per cut, in (0, 1); the k-th cut in a row
            of recoveries (recoveries less than ``every`` steps apart)
            multiplies by ``factor**k``.
        spike_action: what a ``spike`` finding does: ``"skip"`` (the
            default) only skips the update of its batch (:meth:`step` returns
            False), restoring nothing; ``"restore"`` restores a snapshot like
            the other kinds.
        spike_factor: the LR multiplier, in (0, 1], of a spike: with
            ``"skip"`` each skipped spike multiplies the LR by it; with
            ``"restore"``, a recovery from a lone spike (one that starts a row
            of recoveries) does, and below 1 it counts as the row's first cut.
            The default 1 keeps the LR.
        nan_action: what a lone ``nan`` finding does: ``"skip"`` (the
            default) skips its batch's update like a spike's (no restore, no
            cut) when the model's weights are still finite and the step
            before was not skipped for a NaN too: a NaN from one batch (bad
            data) is the batch's, not the LR's. A NaN right after another,
            in a row of recoveries, or with non-finite weights restores and
            cuts. ``"restore"``: every ``nan`` restores and cuts.
        skip_batches: batches :meth:`batches` drops after each recovery.
        max_recoveries: recoveries in a row (without ``every`` clean steps in
            between) before :class:`GuardError`.
        min_scale: the lowest cumulative LR factor the cuts go to, in (0, 1):
            a problem that an LR this many times lower than the one set still
            shows is not the LR's (trains of spikes from heavy-tailed batches
            cut a run to 1e-13 without it); recoveries then only restore.
        on: the finding kinds that trigger a recovery, among those of an LR
            too high (``nan``, ``diverged``, ``spike``, ``exploding_grad``,
            ``oscillating``).
        monitor: a :class:`lrkit.MonitorConfig` (or a :class:`lrkit.Monitor`
            to use) for the detection.
        spill_dir: write snapshots to a temporary directory there instead of
            CPU memory.
        rng: snapshot the global Python, NumPy and torch RNG states too.
        first_step: the number of the first :meth:`step` (default 0): a run
            resumed from a checkpoint at optimizer step N passes N, so events
            and findings carry the run's own step numbers.

    When the optimizer's parameters change (``add_param_group`` to unfreeze a
    backbone), the snapshots taken before no longer fit it: the guard drops
    them and takes a new one at the next clean step.

    Example:
        >>> import torch, lrkit
        >>> torch.manual_seed(0)
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.05)
        >>> guard = lrkit.torch.Guard(model, opt, every=10)
        >>> x = torch.randn(64, 4); y = x.sum(1, keepdim=True)
        >>> for t in range(60):
        ...     loss = torch.nn.functional.mse_loss(model(x), y)
        ...     if t == 20 or t in (40, 41):  # a bad batch; then a NaN that stays
        ...         loss = loss * float("nan")
        ...     opt.zero_grad(); loss.backward()
        ...     if guard.step(loss):
        ...         opt.step()
        >>> [(e.kind, e.step, e.restored_step) for e in guard.events]
        [('nan', 20, None), ('nan', 40, None), ('nan', 41, 31)]
        >>> round(opt.param_groups[0]["lr"], 6)
        0.015
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        scheduler: Any = None,
        scaler: Any = None,
        loaders: Iterable[Any] = (),
        objects: Mapping[str, Any] | None = None,
        every: int = 100,
        keep: int = 2,
        factor: float = 0.3,
        spike_action: str = "skip",
        spike_factor: float = 1.0,
        nan_action: str = "skip",
        skip_batches: int = 0,
        max_recoveries: int = 5,
        min_scale: float = 1e-4,
        on: Sequence[str] = ("nan", "diverged", "spike"),
        monitor: MonitorConfig | Monitor | None = None,
        spill_dir: str | Path | None = None,
        rng: bool = True,
        first_step: int | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            _check.fail("model", "a torch.nn.Module", model, exc=TypeError)
        if not isinstance(optimizer, torch.optim.Optimizer):
            _check.fail(
                "optimizer", "a torch.optim.Optimizer", optimizer, exc=TypeError
            )
        self.every = _check.positive_int("every", every)
        self.keep = _check.positive_int("keep", keep)
        self.factor = _check.fraction("factor", factor, low_open=True, high_open=True)
        self.spike_action = _check.choice(
            "spike_action", spike_action, ("skip", "restore")
        )
        self.spike_factor = _check.fraction("spike_factor", spike_factor, low_open=True)
        self.nan_action = _check.choice("nan_action", nan_action, ("skip", "restore"))
        self.skip_batches = _check.non_negative_int("skip_batches", skip_batches)
        self.max_recoveries = _check.positive_int("max_recoveries", max_recoveries)
        self.min_scale = _check.fraction(
            "min_scale", min_scale, low_open=True, high_open=True
        )
        kinds = (
            tuple(on)
            if isinstance(on, Iterable) and not isinstance(on, (str, bytes))
            else None
        )
        if not kinds or not all(k in _RECOVERABLE for k in kinds):
            bad = [k for k in kinds or () if k not in _RECOVERABLE]
            _check.fail(
                "on",
                "a non-empty sequence of finding kinds of an LR too high "
                f"({', '.join(_RECOVERABLE)})",
                on,
                (f"{bad[0]!r} is not one. " if bad else "")
                + "A cut cannot help an LR too low, a plateau or overfitting.",
            )
        self.on = frozenset(kinds)
        if objects is not None and not isinstance(objects, Mapping):
            _check.fail("objects", "a dict of name -> object", objects, exc=TypeError)
        objs = dict(objects or {})
        for name, obj in objs.items():
            _check_stateful(f"objects[{name!r}]", obj)
        if not _reiterable(loaders):
            _check.fail(
                "loaders",
                "a data loader or a list of them",
                loaders,
                "An iterator (iter(loader), a generator) has no shuffling state "
                "to snapshot; pass the loader itself, or a list.",
                exc=TypeError,
            )
        if isinstance(loaders, (list, tuple, set)):
            for i, one in enumerate(loaders):
                if not _reiterable(one):
                    _check.fail(
                        f"loaders[{i}]",
                        "a data loader (re-iterable, not an iterator)",
                        one,
                        exc=TypeError,
                    )
        if not isinstance(rng, bool):
            _check.fail("rng", "True or False", rng, exc=TypeError)
        if spill_dir is not None:
            if not isinstance(spill_dir, (str, Path)):
                _check.fail("spill_dir", "a directory path", spill_dir, exc=TypeError)
            if not Path(spill_dir).is_dir():
                _check.fail("spill_dir", "an existing directory", str(spill_dir))
        driven = getattr(scheduler, "optimizer", None)
        if driven is not None and (
            getattr(driven, "param_groups", None) is not optimizer.param_groups
        ):
            _check.fail(
                "scheduler",
                "a scheduler of the guard's optimizer",
                f"one of another optimizer ({type(driven).__name__})",
                "Its LR cut would not reach the optimizer being trained.",
                shown=True,
            )
        for name, obj in (("scheduler", scheduler), ("scaler", scaler)):
            if obj is not None:
                if name in objs:
                    _check.fail(
                        "objects",
                        f"free of the key {name!r}",
                        list(objs),
                        exc=ValueError,
                    )
                _check_stateful(name, obj)
                objs[name] = obj
        if monitor is None:
            self.monitor = Monitor()
        elif isinstance(monitor, Monitor):
            self.monitor = monitor
        elif isinstance(monitor, MonitorConfig):
            self.monitor = Monitor(monitor)
        elif isinstance(monitor, Mapping):  # MonitorConfig's settings by name
            self.monitor = Monitor(config_from_dict("monitor", dict(monitor)))
        else:
            _check.fail(
                "monitor",
                "a MonitorConfig, a Monitor, a dict of MonitorConfig settings or None",
                monitor,
                exc=TypeError,
            )
        if scheduler is None and getattr(optimizer.step, "_wrapped_by_lr_sched", False):
            logger.warning(
                "lrkit Guard: a torch LR scheduler drives this optimizer (it "
                "wrapped optimizer.step) but none was given: pass it as "
                "Guard(scheduler=...), or its next step() sets the LR back and "
                "undoes the guard's cut"
            )
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.scaler = scaler
        self._objects = objs
        # one loader or several (a DataLoader is iterable: never iterate it)
        self._loaders = (
            list(loaders) if isinstance(loaders, (list, tuple, set)) else [loaders]
        )
        self._spill_dir = spill_dir
        self._rng = rng
        # the object holding the recovery scale: an lrkit Scheduler, or the
        # one an accelerate wrapper holds
        self._scaled: Any = next(
            (
                s
                for s in (scheduler, _wrapped(scheduler))
                if s is not None and hasattr(s, "set_recovery_scale")
            ),
            None,
        )
        scaled = self._scaled
        self._scale = float(scaled.recovery_scale) if scaled is not None else 1.0
        self._saved: deque[_Saved] = deque()
        # the guard's step count; a monitor that has seen a run already (a
        # second trainer run with the same one) is continued, not restarted
        last = self.monitor.last_step
        if first_step is not None:
            first_step = _check.non_negative_int("first_step", first_step)
        self._t = (first_step or 0) if last is None else last + 1
        self._t_first = self._t
        self._last_snap = -(10**18)
        self._attempt = 0
        self._cuts = 0  # LR cuts in the current row of recoveries
        self._last_recovery = -(10**18)
        self._applied = 0  # updates in force (True returns not undone since)
        self._to_skip = 0
        self._loaded = False  # load_state_dict gave it the run before
        self._snap_pending = False  # snapshot the loaded state at the next step
        self._watch: tuple[float, int] | None = None  # (line, until step)
        self._watch_recent: deque[tuple[int, float]] = deque(
            maxlen=self.monitor.config.level_window
        )
        self._watch_ref = (math.nan, math.nan)  # (reference level, threshold)
        self.events: list[GuardEvent] = []
        self._nan_skipped = -(10**18)  # the step of the last lone NaN skipped
        # the running statistics of the model's norm layers as of the last
        # step: a skipped batch's forward pass has already moved them
        self._norms = _NormStats(model)
        # spill files go with the guard even without close()
        weakref.finalize(self, _discard_all, self._saved)

    # ------------------------------------------------------------------ steps
    @property
    def steps(self) -> int:
        """How many times :meth:`step` was called."""
        return self._t - self._t_first

    @property
    def recovery_scale(self) -> float:
        """The cumulative LR factor the guard has applied (1.0 before any cut;
        an :class:`lrkit.torch.Scheduler`'s own, which a loaded checkpoint
        sets)."""
        self._sync_scale()
        return self._scale

    @property
    def undone_steps(self) -> int:
        """Calls of :meth:`step` whose update is not in the model now (undone
        by a restore, or skipped): a loop that counts batches ends that many
        optimizer (and scheduler) steps short of its schedule's end."""
        return self._t - self._t_first - self._applied

    def _sync_scale(self) -> None:
        """An lrkit Scheduler holds the recovery scale itself (a checkpoint
        loaded after the guard was built sets it): read it from there."""
        if self._scaled is not None:
            self._scale = float(self._scaled.recovery_scale)

    @property
    def last_event(self) -> GuardEvent | None:
        """The latest recovery, or None."""
        return self.events[-1] if self.events else None

    def step(
        self,
        loss: Any,
        *,
        grad_norm: Any = None,
        val_loss: Any = None,
        lr: float | None = None,
    ) -> bool:
        """Check one training step; roll back when it went wrong.

        Call it after ``loss.backward()`` and before ``optimizer.step()``.

        Args:
            loss: the step's loss (a tensor or a number; one ``float()``).
            grad_norm: the total gradient norm, if you compute it (e.g. the
                return value of ``clip_grad_norm_``). With a ``scaler`` a
                non-finite norm is the scaler's overflow (it skips the step and
                lowers its scale) and is not fed to the monitor, while the
                scale is at least 1: below, the gradients overflow unscaled
                and every step is skipped (a ``nan`` finding).
            val_loss: a validation loss, on the steps you compute one.
            lr: the LR (default: param group 0's).

        Returns:
            True: all is well, take the optimizer step. False: the guard
            restored a snapshot (and cut the LR, unless it was a lone spike);
            skip this optimizer step (and the scheduler step) and carry on
            with the next batch.

        Raises:
            GuardError: ``max_recoveries`` recoveries in a row did not help.
        """
        x = _to_float("loss", loss)
        g = None if grad_norm is None else _to_float("grad_norm", grad_norm)
        if g is not None and g < 0:
            _check.fail("grad_norm", ">= 0 (a norm)", g)
        if (
            g is not None
            and self.scaler is not None
            and not math.isfinite(g)
            and _scale_of(self.scaler) >= 1.0
        ):
            # the scaler's own overflow: it skips this step and lowers its
            # scale; no problem of the LR's. Once its scale is below 1 the
            # gradients overflow unscaled: no scale can help, the steps are
            # skipped for good (a NaN gradient), and that is a finding
            g = None
        v = None if val_loss is None else _to_float("val_loss", val_loss)
        lr = (
            get_lr(self.optimizer.param_groups[0])
            if lr is None
            else _to_float("lr", lr)
        )
        shape = self._shape()
        if self._saved and self._saved[-1].shape != shape:
            # the optimizer's parameters changed (add_param_group): the
            # snapshots no longer fit it; a new one is taken at once
            _discard_all(self._saved)
            self._last_snap = -(10**18)
        t = self._t
        if self._snap_pending:
            # the state a checkpoint loaded: as it was after the step before
            self._snap_pending = False
            regular = self._last_snap
            self._take(t - 1, shape)
            self._last_snap = regular  # the snapshots every `every` go on
        found = self.monitor.update(t, x, val_loss=v, grad_norm=g, lr=lr)
        self._t = t + 1
        trigger = self._trigger(found, t)
        if trigger is None:
            trigger = self._watch_check(t, x)
        if trigger is not None:
            if (
                trigger[0] == "spike"
                and self.spike_action == "skip"
                # spikes that repeat (the monitor's `oscillating`: three within
                # its window) are no longer one batch's doing: restore
                and not any(f.kind == "oscillating" for f in self.monitor.active)
            ):
                self._skip(*trigger, t)
            elif (
                trigger[0] == "nan" and self.nan_action == "skip" and self._lone_nan(t)
            ):
                # a non-finite loss from finite weights, not right after
                # another: the batch's (a NaN in the data), not the LR's
                self._nan_skipped = t
                self._skip(*trigger, t, factor=1.0)
            else:
                self._recover(*trigger, t)
                if self.events[-1].restored_step is not None:
                    self._norms.remember()  # the snapshot's statistics
                    return False
            self._norms.put_back()  # the batch's BatchNorm statistics too
            return False
        self._norms.remember()
        if t - self._last_recovery >= self.every:
            self._attempt = 0  # a clean stretch: the last recovery worked
            self._cuts = 0
        healthy = math.isfinite(x) and not any(
            f.kind in self.on or f.kind == "exploding_grad" for f in self.monitor.active
        )
        if healthy and t - self._last_snap >= self.every:
            self._take(t, shape)
        self._applied += 1
        return True

    def _shape(self) -> tuple[int, ...]:
        return tuple(len(g["params"]) for g in self.optimizer.param_groups)

    def _trigger(
        self, found: Sequence[Finding], t: int
    ) -> tuple[str, int, Mapping[str, float]] | None:
        # findings that reach this step, and those raised by it (a divergence
        # of the first steps, judged again once the noise is known, is dated
        # back: the run may look recovered, but a restore and a cut, which
        # cost little, still help it; a trainer callback does not stop on it)
        hits = [
            f
            for f in found
            if f.kind in self.on
            and (f.last_step == t or (f.is_new and f.detected_step == t))
        ]
        if hits and self.monitor.stats()["losses"] <= self.monitor.config.noise_window:
            # a spike is an outlier against the noise: before a full window of
            # it was measured (the start of a run; a restore puts back the
            # snapshot's statistics, measured noise included),
            # the noise of a classifier at chance is smaller than it will be
            # once it learns; a real blow-up there is `diverged` within steps
            hits = [f for f in hits if f.kind != "spike"]
        if not hits:
            return None
        order = {k: i for i, k in enumerate(KINDS)}
        f = min(hits, key=lambda f: order[f.kind])
        return f.kind, f.first_step, f.evidence

    def _watch_check(
        self, t: int, x: float
    ) -> tuple[str, int, Mapping[str, float]] | None:
        """After a recovery: has the loss gone back over the line it crossed?

        The monitor restarts from the snapshot's statistics and, right after a
        restore to the first steps, has no noise estimate yet; the line the
        problem crossed (its reference level plus its threshold, in loss units)
        still tells whether the same problem is back. Watched for ``every``
        steps after each recovery: the median of the last ``level_window`` (5)
        losses above it triggers the next recovery at once.
        """
        if self._watch is None:
            return None
        line, until = self._watch
        if t >= until:
            self._watch = None
            return None
        recent = self._watch_recent
        recent.append((t, x))
        if len(recent) < recent.maxlen:  # type: ignore[operator]
            return None
        values = sorted(v for _, v in recent)
        level = values[len(values) // 2]
        if not level > line:
            return None
        first = next(s for s, v in recent if v > line)
        ref, thr = self._watch_ref
        return (
            "diverged",
            first,
            {"loss": x, "level": level, "line": line, "best": ref, "threshold": thr},
        )

    def _take(self, t: int, shape: tuple[int, ...]) -> None:
        self._sync_scale()
        snap = snapshot(
            self.model,
            self.optimizer,
            objects=self._objects,
            loaders=self._loaders,
            rng=self._rng,
            spill_dir=self._spill_dir,
            data_positions=False,
            grads=False,  # cleared after every restore: no copy needed
        )
        first = not self._saved
        self._saved.append(
            _Saved(
                t, snap, self.monitor.state(), self._scale, shape, self._applied, first
            )
        )
        self._last_snap = t
        pinned = self._pinned()
        while len(self._saved) > self.keep + pinned:
            victim = self._saved[pinned]  # the oldest, or the one after the first
            del self._saved[pinned]
            victim.snap.discard()

    def _give_up(self, kind: str, t: int, why: str) -> NoReturn:
        """Raise :class:`GuardError`, the run left at its last snapshot."""
        if self._saved and self._attempt > 2 and self._cuts <= 1:
            why += (
                " The problem came back at once after each restore, before any "
                "update at the lower LR: the LR is not its cause (look for NaN "
                "or inf in the data, the loss or the model's code)."
            )
        if self._saved:  # leave the run in its last good state, not broken
            last = self._saved[-1]
            last.snap.restore()
            self._after_restore()
            self._scale = last.scale  # the LR is back at the snapshot's
            self._applied = last.applied
            why += (
                f" The model, optimizer and the rest are back at the snapshot "
                f"of step {last.step}."
            )
        if self._t_first > 0 and not self._loaded:
            why += (
                f" This guard started at step {self._t_first} without the "
                "state of the run before it: give it the checkpoint's "
                "Guard.state_dict() with load_state_dict(), or the curve is "
                "judged from the resume alone (near a loss of 0 a healthy "
                "run's noise can then read as a divergence)."
            )
        raise GuardError(f"Guard: {kind} at step {t}: {why}", self.events)

    def _pinned(self) -> int:
        """1 while the oldest snapshot, the first state the guard has, is kept
        beyond ``keep``, else 0. It is kept during the monitor's first
        ``4·min_updates`` losses (a blow-up of the first steps may be found,
        and dated back, only then: the snapshots taken meanwhile may hold
        it); then, until the run trains past its first loss, for 200 losses
        (the monitor's dead-run rule needs 100 back at the first loss), and
        for good after a ``nan``, ``diverged`` or ``oscillating`` finding (a
        run an LR far too high killed: its first state is the only good
        one). A healthy run trains past its first loss within its first
        steps, so the extra copy is short-lived."""
        if not self._saved or not self._saved[0].first:
            return 0
        mon = self.monitor
        losses = mon.stats()["losses"]
        if losses <= 4 * mon.config.min_updates:
            return 1
        if self._past_start():
            return 0
        return int(losses <= 2 * _DEAD_UPDATES or mon._broken or mon._shaken)

    def _past_start(self) -> bool:
        """The loss level has trained past the run's first loss: below it by
        more than 3 noise and a tenth of it (the monitor's dead-run margin)."""
        st = self.monitor.stats()
        start, level, noise = st["start"], st["level"], st["noise"]
        if not (math.isfinite(start) and math.isfinite(level)):
            return False
        margin = max(
            3.0 * noise if math.isfinite(noise) else 0.0, _DEAD_GAIN * abs(start)
        )
        return level < start - margin

    def _lone_nan(self, t: int) -> bool:
        """A non-finite loss (or gradient norm) to skip rather than recover
        from: not in a row of recoveries, not right after another skipped one,
        and the model's weights still finite (the update before it did not
        break them)."""
        if self._attempt or self._nan_skipped == t - 1:
            return False
        with torch.no_grad():
            flags = [p.isfinite().all() for p in self.model.parameters()]
            return not flags or bool(torch.stack(flags).all())

    def _skip(
        self,
        kind: str,
        first_step: int,
        evidence: Mapping[str, float],
        t: int,
        factor: float | None = None,
    ) -> None:
        """A spike, or a lone non-finite loss: its batch's update is not
        applied (the caller puts back its BatchNorm statistics); nothing is
        restored; the LR times ``factor`` (``spike_factor`` by default)."""
        self._sync_scale()
        before = self._scale
        factor = self.spike_factor if factor is None else factor
        self._scale = max(self._scale * factor, min(self.min_scale, before))
        if self._scale != before:
            self._apply_scale(before)
        self._after_restore()  # the batch's gradients, a scaler's unscale_()
        self._record(kind, t, first_step, evidence, None, 0, 0)

    def _recover(
        self, kind: str, first_step: int, evidence: Mapping[str, float], t: int
    ) -> None:
        self._sync_scale()
        self._attempt += 1
        last_recovery = self._last_recovery
        if self._attempt > self.max_recoveries or not self._saved:
            self._give_up(
                kind,
                t,
                f"the run kept failing: {self._attempt - 1} recoveries in a row did "
                "not help (lower the LR, add warmup or clipping, or check the data)."
                if self._saved
                else "no snapshot to restore: the problem came before the first "
                "clean step (or the first since the optimizer's parameters "
                "changed).",
            )
        # the newest snapshot taken before the problem began
        good = [s for s in self._saved if s.step < first_step]
        if not good and evidence.get("stuck"):
            self._give_up(
                kind,
                t,
                f"the run has been back at its untrained loss since step "
                f"{first_step}: an LR far too high broke the model (dead units, a "
                "collapsed output) before every kept snapshot, and no cut or "
                "rollback to those revives it. Start again from the initial "
                "weights at a lower LR (a range test, lrkit.find_lr, tells which)"
                ", or keep more snapshots (keep=, every=).",
            )
        saved = good[-1] if good else self._saved[0]
        if (
            good
            and saved.first
            and saved is not self._saved[-1]
            and self._saved[-1].step >= first_step
            and self._past_start()
        ):
            # a blow-up of the first steps found late (judged again once the
            # noise was known), which the run has trained past: going back to
            # its start would lose that progress. Cut the LR in place.
            self._cut_in_place(kind, first_step, evidence, t)
            return
        if not good and self._better_now_than(saved):
            # every kept snapshot came after the problem began (a divergence
            # in the first steps, judged again once the noise was known), and
            # the run has trained on past it: a rollback cannot undo it and
            # would only lose the progress since. Cut the LR in place.
            self._cut_in_place(kind, first_step, evidence, t)
            return
        while self._saved and self._saved[-1] is not saved:
            self._saved.pop().snap.discard()  # newer ones may hold the problem
        saved.snap.restore()
        self._after_restore()
        self._applied = saved.applied  # the updates since it are undone
        self.monitor.restore(saved.monitor)
        # judge the next divergence from the level restored, not from a best
        # the run had left before this snapshot was taken (a snapshot of a run
        # that had already drifted up would otherwise be "diverged" at once,
        # again and again, cutting the LR to nothing)
        self.monitor._rebase()
        # every kept snapshot was taken after the problem began (it was found
        # late): the restored state already holds part of it, and its monitor
        # statistics would find it again at once, whatever the LR. The monitor
        # starts afresh from this state instead.
        tainted = saved.step >= first_step
        if tainted:
            self.monitor.reset()
        # the statistics are the snapshot's, but the run did blow up: a run
        # back at its untrained loss for long after this is dead, not slow
        # (the monitor's dead-run rule), and the first snapshot is kept for it
        self.monitor._shaken = True
        # salt: this recovery's number (its event is recorded below)
        _new_streams(self._loaders, self._rng, len(self.events) + 1)
        # back off: the k-th cut in a row cuts by factor**k; a lone spike (the
        # first recovery of a row) by spike_factor; none when no update was
        # made since the last recovery (a run of bad batches: the loss came
        # from the restored weights, which no step at the new LR had moved)
        if t == last_recovery + 1:
            pass
        elif kind == "spike" and self._attempt == 1:
            self._scale *= self.spike_factor
            if self.spike_factor < 1.0:
                self._cuts += 1  # it was a cut: the next one goes deeper
        else:
            self._cut()
        self._scale = max(self._scale, min(self.min_scale, saved.scale))
        self._apply_scale(saved.scale)
        self._last_recovery = t
        self._last_snap = t  # the restored state is the newest good one
        self._to_skip += self.skip_batches
        # the line the problem crossed, measured from the higher of its own
        # reference level and the level the restored state had then
        ref = evidence.get("best", evidence.get("level"))
        thr = evidence.get("threshold")
        line: float | None = None
        if ref is not None and thr is not None and not tainted:
            stats = self.monitor.stats()
            if math.isfinite(stats["level"]):
                ref = max(ref, stats["level"])
            bad = evidence.get("level", evidence.get("loss", math.nan))
            if (
                stats["losses"] < self.monitor.config.min_updates
                and bad > ref
                and "line" not in evidence
            ):
                # restored to before the monitor knew the noise: the threshold
                # came from noise inflated by the blow-up itself; a return of a
                # quarter of the blow-up is the problem back (once: a problem
                # the watch found crossed the line it drew, which stays)
                thr = min(thr, 0.25 * (bad - ref))
            line = ref + thr
        self._watch = None if line is None else (float(line), t + 1 + self.every)
        if ref is not None and thr is not None:
            self._watch_ref = (float(ref), float(thr))
        self._watch_recent.clear()
        self._record(
            kind, t, first_step, evidence, saved.step, self._attempt, self.skip_batches
        )

    def _record(
        self,
        kind: str,
        t: int,
        first_step: int,
        evidence: Mapping[str, float],
        restored_step: int | None,
        attempt: int,
        skipped_batches: int,
    ) -> None:
        """Record and log an event, with the LRs now in force."""
        event = GuardEvent(
            step=t,
            kind=kind,
            first_step=first_step,
            restored_step=restored_step,
            recovery_scale=self._scale,
            lrs=tuple(get_lr(g) for g in self.optimizer.param_groups),
            attempt=attempt,
            skipped_batches=skipped_batches,
            evidence=dict(evidence),
        )
        self.events.append(event)
        logger.warning("lrkit Guard: %s", event)

    def _cut(self) -> None:
        """The k-th cut in a row: the scale times ``factor**k``. The caller
        floors it at ``min_scale`` times the scale before (a problem that an
        LR that much lower still shows is not the LR's: no deeper cut)."""
        self._cuts += 1
        self._scale *= self.factor**self._cuts

    def _better_now_than(self, saved: _Saved) -> bool:
        """The monitor's level now is at or below the one it had when
        ``saved`` was taken."""
        now = self.monitor.stats()["level"]
        then = saved.monitor._values.get("_level", math.nan)
        return math.isfinite(now) and math.isfinite(then) and now <= then

    def _cut_in_place(
        self, kind: str, first_step: int, evidence: Mapping[str, float], t: int
    ) -> None:
        """A recovery without a rollback: the LR cut, the batch's update
        skipped, the divergence judged from the level now."""
        prev = self._scale
        if t != self._last_recovery + 1:  # an update at the LR since the last
            self._cut()
        self._scale = max(self._scale, min(self.min_scale, prev))
        self._apply_scale(prev)
        self.monitor._rebase()
        self._last_recovery = t
        self._watch = None
        self._watch_recent.clear()
        self._record(kind, t, first_step, evidence, None, self._attempt, 0)

    def _after_restore(self) -> None:
        """Clear what a restore must not carry over: the gradients of a step
        already applied (a loop that zeroes them after ``optimizer.step()``
        would add them to the next batch's), and the GradScaler's record of
        an ``unscale_()`` since its last ``update()`` (the next ``unscale_()``
        would raise)."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None and hasattr(self.scaler, "_per_optimizer_states"):
            try:
                from torch.amp.grad_scaler import _refresh_per_optimizer_state
            except ImportError:  # pragma: no cover - older torch
                return
            self.scaler._per_optimizer_states = defaultdict(
                _refresh_per_optimizer_state
            )

    def _apply_scale(self, scale_at_snapshot: float) -> None:
        """Bring the LR from the snapshot's scale to the guard's current scale."""
        if self._scaled is not None:
            self._scaled.set_recovery_scale(self._scale)
            return
        ratio = self._scale / scale_at_snapshot
        for group in self.optimizer.param_groups:
            set_lr(group, get_lr(group) * ratio)
        if self.scheduler is not None:  # a torch scheduler
            # the LRs a torch scheduler computes from: its own lists, those of
            # the schedulers it chains (SequentialLR, ChainedScheduler), and
            # the ones it keeps in the param groups (OneCycleLR)
            _scale_torch_scheduler(self.scheduler, ratio)
            for group in self.optimizer.param_groups:
                for key in _GROUP_LR_KEYS:
                    if isinstance(group.get(key), (int, float)):
                        group[key] = group[key] * ratio
            for sched in (self.scheduler, _wrapped(self.scheduler)):
                if isinstance(getattr(sched, "_last_lr", None), list):
                    sched._last_lr = [get_lr(g) for g in self.optimizer.param_groups]

    # ------------------------------------------------------------ batches
    def batches(self, iterable: Iterable[T]) -> Iterator[T]:
        """Yield from ``iterable``, dropping ``skip_batches`` after each recovery."""
        for item in iterable:
            if self._to_skip > 0:
                self._to_skip -= 1
                continue
            yield item

    # ----------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """The guard's state, as plain data, to save with a checkpoint.

        Holds the step count, the recovery history (:attr:`events`), the rows
        of recoveries and the monitor's :meth:`~lrkit.Monitor.state_dict`: a
        guard built for the resumed run and given it by :meth:`load_state_dict`
        goes on as the uninterrupted one would have (a fresh guard knows
        neither where the curve started nor how noisy it was, and judges the
        first steps after a resume against those steps alone: near a loss of 0
        a healthy run's noise can then read as a divergence). Not the
        snapshots: the checkpoint itself holds the model; the resumed guard
        snapshots the loaded state at its first step. Only dicts, lists,
        strings, finite numbers and None: ``torch.save`` (``weights_only=True``
        loads it) or strict JSON.

        Example:
            >>> import torch, lrkit
            >>> model = torch.nn.Linear(2, 1)
            >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
            >>> guard = lrkit.torch.Guard(model, opt)
            >>> for t in range(30):
            ...     _ = guard.step(1.0 / (t + 1))
            >>> resumed = lrkit.torch.Guard(model, opt)
            >>> resumed.load_state_dict(guard.state_dict())
            >>> resumed.steps, resumed.monitor.last_step
            (30, 29)
        """
        return {
            "format": _STATE_FORMAT,
            "version": 1,
            "counters": {k: int(getattr(self, k)) for k in _COUNTERS},
            "scale": self.recovery_scale,
            "watch": None
            if self._watch is None
            else [json_float(self._watch[0]), self._watch[1]],
            "watch_recent": [[t, json_float(x)] for t, x in self._watch_recent],
            "watch_ref": [json_float(x) for x in self._watch_ref],
            "events": [_event_state(e) for e in self.events],
            "monitor": self.monitor.state_dict(),
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Go on from :meth:`state_dict` (after loading the checkpoint it was
        saved with). The snapshots taken so far are dropped (they are of the
        run before the checkpoint was loaded); the loaded state is snapshotted
        at the next step, before its update. The LR is not touched: the
        optimizer's (and scheduler's) own state holds the cuts.

        Raises:
            ValueError: ``state_dict`` is not one :meth:`state_dict` returned
                (nothing is changed).
        """
        expected = "a dict returned by Guard.state_dict()"
        try:
            if not isinstance(state_dict, Mapping) or (
                state_dict.get("format"),
                state_dict.get("version"),
            ) != (_STATE_FORMAT, 1):
                raise ValueError("not one")
            counters = {k: state_dict["counters"][k] for k in _COUNTERS}
            for k, v in counters.items():
                if not isinstance(v, int) or isinstance(v, bool):
                    raise ValueError(f"{k} is {v!r}, not an int")
            scale = float(state_dict["scale"])
            if not (scale > 0.0 and math.isfinite(scale)):
                raise ValueError(f"recovery scale {scale!r}, not > 0")
            w = state_dict["watch"]
            watch = None if w is None else (from_json_float(w[0]), int(w[1]))
            recent = [
                (int(t), from_json_float(x)) for t, x in state_dict["watch_recent"]
            ]
            ref = state_dict["watch_ref"]
            watch_ref = (from_json_float(ref[0]), from_json_float(ref[1]))
            events = [_event_from_state(e) for e in state_dict["events"]]
            monitor = state_dict["monitor"]
        except (KeyError, TypeError, ValueError, IndexError) as e:
            _check.bad_state_dict(expected, state_dict, f" ({e})")
        self.monitor.load_state_dict(monitor)  # checks it; changes nothing on error
        for k, v in counters.items():
            setattr(self, k, v)
        self._scale = scale
        self._sync_scale()  # an lrkit Scheduler's own (its checkpoint) holds
        self._watch = watch
        self._watch_recent.clear()
        self._watch_recent.extend(recent)
        self._watch_ref = watch_ref
        self.events = events
        _discard_all(self._saved)
        # the loaded state (the checkpoint's) is snapshotted at the next
        # step, before its update: a problem right after the resume has a
        # state to go back to
        self._loaded = self._snap_pending = True

    # ------------------------------------------------------------ lifetime
    def close(self) -> None:
        """Free the snapshots (and their spill files; they also go when the
        guard is garbage-collected)."""
        _discard_all(self._saved)

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Guard(step={self._t}, steps={self.steps}, recoveries={len(self.events)}, "
            f"recovery_scale={self._scale:.3g}, snapshots={len(self._saved)})"
        )


_STATE_FORMAT = "lrkit.Guard"
#: the integer counters of Guard.state_dict
_COUNTERS = (
    "_t",
    "_t_first",
    "_last_snap",
    "_attempt",
    "_cuts",
    "_last_recovery",
    "_applied",
    "_to_skip",
)


def _event_state(e: GuardEvent) -> dict[str, Any]:
    """A GuardEvent as strict JSON (to_dict, its non-finite numbers kept)."""
    d = e.to_dict()
    d["evidence"] = {k: json_float(v) for k, v in e.evidence.items()}
    return d


def _event_from_state(d: Mapping[str, Any]) -> GuardEvent:
    return GuardEvent(
        step=int(d["step"]),
        kind=str(d["kind"]),
        first_step=int(d["first_step"]),
        restored_step=None if d["restored_step"] is None else int(d["restored_step"]),
        recovery_scale=float(d["recovery_scale"]),
        lrs=tuple(float(x) for x in d["lrs"]),
        attempt=int(d["attempt"]),
        skipped_batches=int(d["skipped_batches"]),
        evidence={str(k): from_json_float(v) for k, v in d["evidence"].items()},
    )


#: Finding kinds a recovery (roll back, cut the LR) can answer.
_RECOVERABLE = ("nan", "diverged", "spike", "exploding_grad", "oscillating")
#: LRs that torch schedulers keep in the param groups (OneCycleLR).
_GROUP_LR_KEYS = ("initial_lr", "max_lr", "min_lr")
#: LR lists that torch schedulers keep on themselves (CyclicLR: max_lrs;
#: ReduceLROnPlateau: min_lrs).
_SCHED_LR_LISTS = ("base_lrs", "max_lrs", "min_lrs")


def _scale_torch_scheduler(sched: Any, ratio: float, depth: int = 0) -> None:
    """Multiply the LR lists of a torch scheduler and of those it chains."""
    for name in _SCHED_LR_LISTS:
        values = getattr(sched, name, None)
        if isinstance(values, list) and all(
            isinstance(v, (int, float)) for v in values
        ):
            setattr(sched, name, [v * ratio for v in values])
    if depth < 4:
        for child in getattr(sched, "_schedulers", None) or ():
            _scale_torch_scheduler(child, ratio, depth + 1)
        inner = _wrapped(sched)
        if inner is not None:
            _scale_torch_scheduler(inner, ratio, depth + 1)


def _wrapped(sched: Any) -> Any:
    """The scheduler a wrapper holds (accelerate's ``AcceleratedScheduler``
    keeps the one it steps in ``.scheduler``), or None."""
    inner = getattr(sched, "scheduler", None)
    if inner is None or inner is sched or not hasattr(inner, "state_dict"):
        return None
    return inner


def _reiterable(x: Any) -> bool:
    """A loader-like object: iterable again and again (not an iterator, whose
    shuffling state cannot be snapshotted, nor a string)."""
    return isinstance(x, Iterable) and not isinstance(x, (str, bytes, Iterator))


def _discard_all(saved: deque[_Saved]) -> None:
    while saved:
        saved.popleft().snap.discard()


def _to_float(name: str, value: Any) -> float:
    if isinstance(value, (torch.Tensor, np.ndarray)):
        if value.size != 1 if isinstance(value, np.ndarray) else value.numel() != 1:
            _check.fail(name, "a scalar (one element)", tuple(value.shape))
        real = (
            value.dtype.kind in "iuf"  # not bool, complex, dates, text, objects
            if isinstance(value, np.ndarray)
            else value.dtype != torch.bool and not value.is_complex()
        )
        if not real:
            _check.fail(
                name,
                "a real number",
                f"a {value.dtype} value",
                shown=True,
                exc=TypeError,
            )
        return float(value.item())
    if isinstance(value, float):
        return value
    return _check.real(name, value)
