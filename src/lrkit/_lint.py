"""``lint``: known schedule footguns, found before training starts."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _check
from .compose import Join, Scale, Warmup
from .plateau import ReduceOnPlateau
from .schedules import (
    Cosine,
    CosineRestarts,
    Exponential,
    Linear,
    MultiStep,
    OneCycle,
    Piecewise,
    Polynomial,
    ScheduleFn,
    WarmupStableDecay,
)

__all__ = ["LintWarning", "lint"]

#: Schedules that change continuously towards their end value.
_DECAYS = (
    Cosine,
    CosineRestarts,
    Exponential,
    Linear,
    OneCycle,
    Polynomial,
    WarmupStableDecay,
)


@dataclass(frozen=True)
class LintWarning:
    """One finding of :func:`lint`.

    Attributes:
        code: a stable identifier: ``ends-early``, ``ends-late``,
            ``warmup-too-long``, ``part-cut``, ``zero-lr`` or
            ``plateau-never-triggers``.
        message: one sentence for people.
        step: the step it is about, where there is one.
    """

    code: str
    message: str
    step: int | None = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def walk(schedule: ScheduleFn, offset: int = 0) -> Iterator[tuple[int, ScheduleFn]]:
    """Every node of a composed schedule with the absolute step it starts at."""
    yield offset, schedule
    if isinstance(schedule, Warmup) and schedule.then is not None:
        yield from walk(schedule.then, offset + (schedule.steps or 0))
    elif isinstance(schedule, Join):
        for start, part in zip(
            (0, *(schedule.boundaries or ())), schedule.parts, strict=True
        ):
            yield from walk(part, offset + start)
    elif isinstance(schedule, Scale):
        yield from walk(schedule.schedule, offset)


def _final(schedule: ScheduleFn) -> ScheduleFn:
    """The leaf schedule active at the end."""
    while True:
        if isinstance(schedule, Warmup) and schedule.then is not None:
            schedule = schedule.then
        elif isinstance(schedule, Join):
            schedule = schedule.parts[-1]
        elif isinstance(schedule, Scale):
            schedule = schedule.schedule
        else:
            return schedule


def _label(schedule: ScheduleFn) -> str:
    name = getattr(schedule, "name", None)
    return f"{name}(...)" if isinstance(name, str) and name else repr(schedule)


def _mid_cycle(node: CosineRestarts, offset: int, n: int) -> LintWarning | None:
    """``ends-mid-cycle``: a run of cosine restarts that stops inside a cycle,
    at an LR far above the cycle's end (not in its last tenth); None when it
    stops near a cycle's end, or the schedule's own end comes first."""
    end = node.end_step
    if end is not None and offset + end <= n:
        return None  # it settles before the run ends (ends-early's business)
    length = float(node.cycle_steps or 0)
    start, cycle = float(offset), 0
    ends: list[int] = []
    while length >= 1 and start + length <= n - 1 and cycle < 10_000:
        start += length
        ends.append(round(start))
        length *= node.cycle_factor
        cycle += 1
    if length < 1:
        return None
    into = (n - 1 - start) / length  # how far the last step is into its cycle
    if into >= 0.9:
        return None
    nxt = round(start + length)
    near = f"{ends[-1]} or {nxt}" if ends else f"{nxt}"
    return LintWarning(
        "ends-mid-cycle",
        f"the run ends {into:.0%} into a cycle of cosine restarts (step {n - 1} "
        f"of the cycle from step {round(start)} to {nxt}): its last steps train "
        f"at a high LR, not annealed; end the run at a cycle's end (a run of "
        f"{near} steps)",
        n - 1,
    )


def lint(
    schedule: ScheduleFn,
    total_steps: int,
    *,
    plateau: ReduceOnPlateau | None = None,
    eval_every_steps: int | None = None,
) -> list[LintWarning]:
    """Check a schedule against a run of ``total_steps`` optimizer steps.

    Finds the known footguns and returns them as data (empty list: all clear):

    - ``ends-early``: a decay ends before the run does, so the rest trains at
      its final value (torch's cosine would rise again, its one-cycle raise);
    - ``ends-late``: the schedule is longer than the run, so its end is never
      reached (e.g. ``warmup(500) >> cosine(total_steps=N)`` for a run of N);
    - ``warmup-too-long``: a warmup (or one-cycle/WSD ramp) ends at or after
      the last step, so the peak is never reached;
    - ``part-cut``: a part of a join is cut off before its own end;
    - ``zero-lr``: the LR is 0 at steps where training happens;
    - ``ends-mid-cycle``: cosine restarts stop inside a cycle (not in its last
      tenth), so the run ends at a high LR instead of annealed;
    - ``plateau-never-triggers``: with an evaluation every
      ``eval_every_steps`` steps, there are too few evaluations for the
      plateau's patience to ever reduce the LR.

    It evaluates the schedule at every step of the run (O(total_steps)).

    Args:
        schedule: any schedule.
        total_steps: optimizer steps in the run.
        plateau: the reduce-on-plateau settings, if any.
        eval_every_steps: steps between evaluations (needed with ``plateau``).

    Example:
        >>> from lrkit import Cosine, Warmup, lint
        >>> [w.code for w in lint(Warmup(steps=100) >> Cosine(total_steps=1000), 1000)]
        ['ends-late']
        >>> lint(Warmup(steps=100) >> Cosine(total_steps=900), 1000)
        []
    """
    _check.callable_("schedule", schedule)
    n = _check.positive_int("total_steps", total_steps)
    if plateau is not None:
        if not isinstance(plateau, ReduceOnPlateau):
            _check.fail(
                "plateau", "a lrkit.ReduceOnPlateau or None", plateau, exc=TypeError
            )
        if eval_every_steps is None:
            _check.fail(
                "eval_every_steps",
                "an int >= 1 when plateau is given",
                None,
                "How many optimizer steps between two evaluations?",
            )
    if eval_every_steps is not None:
        eval_every_steps = _check.positive_int("eval_every_steps", eval_every_steps)

    out: list[LintWarning] = []
    end: Any = getattr(schedule, "end_step", None)
    end = end if isinstance(end, int) else None
    final = _final(schedule)
    # one pass over the steps, in constant memory (a preview of 1e8 steps)
    peak_to_end = -math.inf  # the highest LR up to the end step
    last = math.nan
    zeros = runs = 0  # steps at LR 0, and their runs
    spans: list[tuple[int, int]] = []  # the first 3 runs
    prev_zero = -2
    for t in range(n):
        v = float(schedule(t))
        if end is not None and t <= end and v > peak_to_end:
            peak_to_end = v
        last = v
        if v == 0.0:
            zeros += 1
            if t != prev_zero + 1:
                runs += 1
                if runs <= 3:
                    spans.append((t, t))
            elif runs <= 3:
                spans[-1] = (spans[-1][0], t)
            prev_zero = t
    more_spans = runs - len(spans)

    if end is not None and end < n and isinstance(final, _DECAYS):
        settled = float(schedule(end))
        if settled < peak_to_end:
            held = n - end
            note = ""
            if isinstance(final, OneCycle):
                note = " (torch's OneCycleLR would raise an error there)"
            elif isinstance(final, Cosine):
                note = " (torch's CosineAnnealingLR would rise again there)"
            out.append(
                LintWarning(
                    "ends-early",
                    f"the schedule ends at step {end} but the run has {n} steps: the "
                    f"last {held} steps ({held / n:.0%}) train at its final value "
                    f"{settled:.3g}{note}",
                    end,
                )
            )
    if end is not None and end > n:
        target = float(schedule(end))
        if not math.isclose(last, target, rel_tol=1e-9, abs_tol=0.0):
            out.append(
                LintWarning(
                    "ends-late",
                    f"the schedule is designed for {end} steps but the run stops after "
                    f"{n}: its last {end - n} steps never run and the final LR is "
                    f"{last:.3g} instead of {target:.3g}",
                    n,
                )
            )

    for offset, node in walk(schedule):
        if isinstance(node, CosineRestarts):
            w = _mid_cycle(node, offset, n)
            if w is not None:
                out.append(w)
        ramp_end = None
        if isinstance(node, Warmup) and node.steps:
            ramp_end, what = offset + node.steps, "the warmup"
        elif isinstance(node, WarmupStableDecay) and node.warmup_steps:
            ramp_end, what = offset + node.warmup_steps, "the warmup"
        elif isinstance(node, OneCycle):
            ramp_end, what = offset + math.ceil(node.peak_step), "the one-cycle ramp"
        if ramp_end is not None and ramp_end >= n:
            out.append(
                LintWarning(
                    "warmup-too-long",
                    f"{what} lasts until step {ramp_end} but the run has {n} steps, so "
                    "the LR never reaches its peak",
                    ramp_end,
                )
            )
        if isinstance(node, Join):
            starts = (0, *(node.boundaries or ()))
            for i, part in enumerate(node.parts[:-1]):
                length = starts[i + 1] - starts[i]
                part_end = getattr(part, "end_step", None)
                if isinstance(part_end, int) and part_end > length:
                    out.append(
                        LintWarning(
                            "part-cut",
                            f"part {i} of a join ({_label(part)}) is designed for "
                            f"{part_end} steps but runs for {length}: it is cut at "
                            f"step {offset + starts[i + 1]} before reaching its end",
                            offset + starts[i + 1],
                        )
                    )

    if zeros:
        shown = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)
        more = f" and {more_spans} more ranges" if more_spans else ""
        out.append(
            LintWarning(
                "zero-lr",
                f"the LR is 0 at {zeros} step{'s' if zeros != 1 else ''} "
                f"where training happens (steps {shown}{more}); those steps are "
                "wasted",
                spans[0][0],
            )
        )

    if plateau is not None and eval_every_steps is not None:
        evals = n // eval_every_steps
        needed = plateau.patience + 2
        if evals < needed:
            out.append(
                LintWarning(
                    "plateau-never-triggers",
                    f"with an evaluation every {eval_every_steps} steps the run has "
                    f"{evals} evaluations, but a reduction needs at least {needed} "
                    f"(one to set the best value, then patience + 1 = "
                    f"{plateau.patience + 1} without improvement)",
                    None,
                )
            )
    return out


def milestones(schedule: ScheduleFn, total_steps: int) -> list[tuple[int, str]]:
    """Structural key steps inside ``[0, total_steps)`` (for previews)."""
    marks: dict[int, str] = {0: "start"}
    for offset, node in walk(schedule):
        if isinstance(node, Warmup) and node.steps:
            marks.setdefault(offset + node.steps, "warmup end")
        elif isinstance(node, Join):
            for b in node.boundaries or ():
                marks.setdefault(offset + b, "next part")
        elif isinstance(node, (MultiStep,)):
            for m in node.milestones or ():
                marks.setdefault(offset + m, "milestone")
        elif isinstance(node, Piecewise):
            for b in node.boundaries or ():
                marks.setdefault(offset + b, "boundary")
        elif isinstance(node, WarmupStableDecay):
            if node.warmup_steps:
                marks.setdefault(offset + node.warmup_steps, "warmup end")
            marks.setdefault(
                offset + (node.total_steps or 0) - (node.decay_steps or 0),
                "decay start",
            )
        elif isinstance(node, OneCycle):
            marks.setdefault(offset + round(node.peak_step), "peak")
    end = getattr(schedule, "end_step", None)
    if isinstance(end, int):
        marks.setdefault(end, "end")
    marks.setdefault(total_steps - 1, "last step")
    return sorted((s, label) for s, label in marks.items() if 0 <= s < total_steps)
