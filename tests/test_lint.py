"""Tests of lrkit.lint: each footgun is found, clean schedules pass."""

from __future__ import annotations

import pytest

from lrkit import (
    Constant,
    Cosine,
    CosineRestarts,
    Join,
    LintWarning,
    MultiStep,
    OneCycle,
    ReduceOnPlateau,
    Warmup,
    WarmupStableDecay,
    lint,
    parse_schedule,
)


def codes(ws: list[LintWarning]) -> list[str]:
    return [w.code for w in ws]


def test_clean_schedules_have_no_warnings() -> None:
    assert (
        lint(
            parse_schedule("warmup(100) >> cosine(total_steps=900, end_lr=1e-5)"), 1000
        )
        == []
    )
    assert lint(OneCycle(total_steps=1000), 1000) == []
    assert lint(WarmupStableDecay(total_steps=1000, warmup_frac=0.05), 1000) == []
    assert lint(Constant(lr=0.1), 1000) == []
    # piecewise-constant schedules are meant to hold their last value
    assert lint(MultiStep(milestones=[300, 600]), 1000) == []


def test_ends_early_cosine_and_one_cycle() -> None:
    (w,) = lint(Cosine(total_steps=800, end_lr=0.01), 1000)
    assert w.code == "ends-early"
    assert w.step == 800
    assert "last 200 steps (20%)" in w.message
    assert "rise again" in w.message
    (w,) = lint(OneCycle(total_steps=900), 1000)
    assert w.code == "ends-early"
    assert "would raise" in w.message


def test_ends_late_sequential_warmup_footgun() -> None:
    (w,) = lint(parse_schedule("warmup(500) >> cosine(total_steps=10000)"), 10000)
    assert w.code == "ends-late"
    assert w.step == 10000
    assert "designed for 10500 steps" in w.message


def test_warmup_too_long() -> None:
    ws = lint(Warmup(steps=1000, then=Cosine(total_steps=1000)), 1000)
    assert "warmup-too-long" in codes(ws)
    ws = lint(WarmupStableDecay(total_steps=100, warmup_steps=80, decay_steps=20), 50)
    assert "warmup-too-long" in codes(ws)
    ws = lint(OneCycle(total_steps=1000, warmup_frac=0.3), 200)
    assert "warmup-too-long" in codes(ws)


def test_zero_lr_where_training_happens() -> None:
    ws = lint(Warmup(steps=10, start_factor=0.0, then=Cosine(total_steps=90)), 100)
    assert codes(ws) == ["zero-lr"]
    assert ws[0].step == 0
    assert "steps 0)" in ws[0].message or "steps 0 " in ws[0].message
    ws = lint(Cosine(total_steps=50), 80)
    zero = next(w for w in ws if w.code == "zero-lr")
    assert "30 steps" in zero.message
    assert "50-79" in zero.message


def test_part_cut() -> None:
    j = Join(parts=[Cosine(total_steps=100), Constant(lr=0.1)], boundaries=[50])
    assert "part-cut" in codes(lint(j, 200))


def test_plateau_that_cannot_trigger() -> None:
    plateau = ReduceOnPlateau(patience=10)
    (w,) = lint(Constant(), 1000, plateau=plateau, eval_every_steps=100)
    assert w.code == "plateau-never-triggers"
    assert "10 evaluations" in w.message
    assert "at least 12" in w.message
    assert lint(Constant(), 1200, plateau=plateau, eval_every_steps=100) == []
    with pytest.raises(
        ValueError, match="eval_every_steps must be an int >= 1 when plateau"
    ):
        lint(Constant(), 1000, plateau=plateau)


def test_lint_validates_and_accepts_plain_callables() -> None:
    with pytest.raises(ValueError, match="total_steps must be an int >= 1"):
        lint(Constant(), 0)
    assert codes(lint(lambda t: 0.0 if t < 3 else 1.0, 10)) == ["zero-lr"]
    w = LintWarning("zero-lr", "msg", 3)
    assert str(w) == "zero-lr: msg"


def test_zero_lr_runs_are_counted_in_one_pass() -> None:
    """Lint reads every step once, in constant memory; runs of zero LR beyond
    the third are counted, not listed."""
    ws = lint(lambda t: 0.0 if t % 10 in (0, 1) else 1.0, 100)
    (zero,) = ws
    assert zero.step == 0 and "at 20 steps" in zero.message
    assert "(steps 0-1, 10-11, 20-21 and 7 more ranges)" in zero.message


def test_cosine_restarts_that_stop_inside_a_cycle() -> None:
    """Review: lint said nothing of cosine_restarts(30) over 100 steps (the
    last 10 steps at a high LR, 30% into a fresh cycle)."""
    (w,) = lint(CosineRestarts(cycle_steps=30), 100)
    assert w.code == "ends-mid-cycle" and w.step == 99
    assert "30% into a cycle" in w.message and "a run of 90 or 120 steps" in w.message
    assert lint(CosineRestarts(cycle_steps=25), 100) == []  # ends with a cycle
    assert lint(CosineRestarts(cycle_steps=10, cycle_factor=2), 70) == []
    (w,) = lint(CosineRestarts(cycle_steps=10, cycle_factor=2), 60)
    assert "a run of 30 or 70 steps" in w.message
    # after a warmup, the cycles count from its end
    assert lint(Warmup(steps=10, then=CosineRestarts(cycle_steps=30)), 100) == []
