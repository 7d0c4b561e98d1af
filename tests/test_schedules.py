"""Tests of lrkit.schedules: contract, boundary values, properties, units, config."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lrkit
from lrkit import (
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    InverseSqrt,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    Piecewise,
    Polynomial,
    Scale,
    Schedule,
    Step,
    Warmup,
    WarmupStableDecay,
    schedule_from_config,
)
from lrkit.schedules import _REGISTRY

# At least one instance of every registered schedule (the contract runs on all).
EXAMPLES: dict[str, list[Schedule]] = {
    "constant": [Constant(), Constant(lr=0.0), Constant(lr=3e-4)],
    "step": [Step(every_steps=7, factor=0.5), Step(every_steps=3, factor=1.0)],
    "multistep": [
        MultiStep(milestones=[10, 30], factor=0.3),
        MultiStep(milestone_fracs=[0.5, 0.9], total_steps=40, peak_lr=2.0),
    ],
    "piecewise": [
        Piecewise(boundaries=[5, 20], values=[1.0, 0.5, 0.2]),
        Piecewise(boundaries=[], values=[0.7]),
    ],
    "exponential": [Exponential(factor=0.9), Exponential(factor=0.8, end_lr=0.05)],
    "linear": [
        Linear(total_steps=40),
        Linear(total_steps=25, start_lr=0.1, end_lr=1.0),
    ],
    "polynomial": [Polynomial(total_steps=50, power=2.0, end_lr=0.1)],
    "cosine": [Cosine(total_steps=60, end_lr=0.1), Cosine(total_steps=1)],
    "cosine_restarts": [
        CosineRestarts(cycle_steps=7),
        CosineRestarts(cycle_steps=5, cycle_factor=2, peak_factor=0.5, num_cycles=3),
        CosineRestarts(cycle_steps=4, cycle_factor=1.5, end_lr=0.2),
    ],
    "cyclic": [
        Cyclic(low_lr=0.1, up_steps=6, down_steps=4),
        Cyclic(low_lr=0.1, up_steps=5, mode="triangular2"),
        Cyclic(low_lr=0.0, up_steps=5, mode="exp_range", factor=0.99),
    ],
    "one_cycle": [
        OneCycle(total_steps=50),
        OneCycle(total_steps=40, warmup_frac=0.25, three_phase=True, anneal="linear"),
    ],
    "inverse_sqrt": [InverseSqrt(timescale_steps=10)],
    "warmup_stable_decay": [
        WarmupStableDecay(total_steps=60, warmup_steps=5, decay="sqrt"),
        WarmupStableDecay(total_steps=50, decay_frac=0.5, decay="cosine", end_lr=0.1),
    ],
    "warmup": [
        Warmup(steps=10),
        Warmup(steps=10, then=Cosine(total_steps=30), shape="cosine", start_factor=0),
        Warmup(steps=8, then=InverseSqrt(timescale_steps=8), shape="exponential"),
    ],
    "join": [
        Join(parts=[Linear(total_steps=10), Constant(lr=0.3)]),
        Join(parts=[Step(every_steps=5), Cosine(total_steps=10)], boundaries=[12]),
    ],
    "scale": [Scale(schedule=Cosine(total_steps=20), factor=0.5)],
}

ALL = [s for group in EXAMPLES.values() for s in group]


def ids(s: Schedule) -> str:
    return repr(s)[:60]


def test_every_registered_schedule_has_examples() -> None:
    assert set(EXAMPLES) == set(lrkit.registry())
    for name, group in EXAMPLES.items():
        assert all(type(s).name == name for s in group)


# ------------------------------------------------------------------ contract


@pytest.mark.parametrize("s", ALL, ids=ids)
def test_contract(s: Schedule) -> None:
    end = s.end_step
    probe = sorted({0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 10**4, 10**6})
    if end is not None:
        probe += [end - 1, end, end + 1] if end > 0 else [end, end + 1]
    for t in probe:
        v = s(t)
        assert type(v) is float, (t, v)
        assert math.isfinite(v), (t, v)
        assert v >= 0.0, (t, v)
        assert s(t) == v  # deterministic
    if end is not None:  # holds after the end
        for k in (1, 2, 7, 1000, 10**6):
            assert s(end + k) == s(end)
    for bad in (-1, -100, -1.0):
        with pytest.raises(ValueError, match="step must be >= 0"):
            s(bad)
    # the step is a whole number: integral floats and numpy ints are that number
    assert s(3.0) == s(np.int64(3)) == s(np.float32(3.0)) == s(3)
    for bad in (2.5, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"step must be a whole number, got step="):
            s(bad)
    for wrong in ("3", None, True, [3]):
        with pytest.raises(TypeError, match=r"step must be a whole number, got step="):
            s(wrong)
    # JSON round-trip: equal object, equal values
    cfg = json.loads(json.dumps(s.to_config()))
    back = schedule_from_config(cfg)
    assert back == s
    assert type(back) is type(s)
    assert [back(t) for t in probe] == [s(t) for t in probe]
    assert type(s).from_config(cfg) == s
    hash(s)


def test_schedules_are_frozen() -> None:
    s = Cosine(total_steps=10)
    with pytest.raises(AttributeError):
        s.total_steps = 20  # type: ignore[misc]


# ------------------------------------------------------- hand-computed values


def test_constant_step_multistep_piecewise_values() -> None:
    assert Constant(lr=0.25)(0) == 0.25
    s = Step(every_steps=10, factor=0.5, peak_lr=2.0)
    assert [s(0), s(9), s(10), s(19), s(20)] == [2.0, 2.0, 1.0, 1.0, 0.5]
    assert s.end_step is None
    m = MultiStep(milestones=[100, 150], factor=0.1)
    assert [m(0), m(99), m(100), m(149), m(150), m(151)] == [
        1.0,
        1.0,
        0.1,
        0.1,
        0.1 * 0.1,
        0.1 * 0.1,
    ]
    assert m.end_step == 150
    p = Piecewise(boundaries=[10, 20], values=[1.0, 0.5, 0.1])
    assert [p(0), p(9), p(10), p(20), p(21)] == [1.0, 1.0, 0.5, 0.1, 0.1]


def test_exponential_values_and_end() -> None:
    s = Exponential(factor=0.5, peak_lr=1.0, end_lr=0.1)
    assert [s(0), s(1), s(2), s(3), s(4), s(5)] == [1.0, 0.5, 0.25, 0.125, 0.1, 0.1]
    assert s.end_step == 4
    assert Exponential(factor=0.5).end_step is None
    assert Exponential(factor=1.0).end_step == 0
    # end exactly on a power: 0.5**3 == 0.125 reached at step 3
    assert Exponential(factor=0.5, end_lr=0.125).end_step == 3


@pytest.mark.parametrize(
    ("factor", "peak_lr", "end_lr"),
    [
        (1e-300, 1e308, 5e-324),  # end_lr / peak_lr underflows to 0
        (0.9999999999999999, 1.0, 5e-324),  # a walk from the log estimate never ends
        (0.9999999999999999, 1e308, 1e-300),
        (0.5, 1.0, 1e-300),
    ],
)
def test_exponential_end_step_at_extremes(
    factor: float, peak_lr: float, end_lr: float
) -> None:
    s = Exponential(factor=factor, peak_lr=peak_lr, end_lr=end_lr)
    e = s.end_step
    assert isinstance(e, int) and e >= 1
    # the first step at end_lr: the value holds from there, not one step before
    assert s(e) == end_lr and s(e + 1) == end_lr
    assert peak_lr * factor ** (e - 1) > end_lr


@settings(max_examples=60, deadline=None)
@given(
    factor=st.floats(0.01, 0.999999),
    end=st.floats(1e-300, 0.99),
)
def test_exponential_end_step_is_the_first_step_at_end_lr(
    factor: float, end: float
) -> None:
    s = Exponential(factor=factor, end_lr=end)
    e = s.end_step
    assert e is not None
    assert s(e) == end
    assert e == 0 or s(e - 1) > end


def test_linear_polynomial_cosine_values() -> None:
    lin = Linear(total_steps=10, start_lr=1.0, end_lr=0.0)
    assert [lin(0), lin(5), lin(10), lin(11)] == [1.0, 0.5, 0.0, 0.0]
    up = Linear(total_steps=4, start_lr=0.2, end_lr=1.0)
    assert up(2) == pytest.approx(0.6, abs=1e-15)
    poly = Polynomial(total_steps=10, power=2.0, peak_lr=1.0, end_lr=0.1)
    assert poly(5) == pytest.approx(0.1 + 0.9 * 0.25, abs=1e-15)
    assert [poly(0), poly(10), poly(11)] == [1.0, 0.1, 0.1]
    cos = Cosine(total_steps=100, peak_lr=2.0, end_lr=0.5)
    assert cos(0) == 2.0
    assert cos(50) == pytest.approx(1.25, abs=1e-15)
    assert cos(25) == pytest.approx(
        0.5 + 1.5 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-15
    )
    assert [cos(100), cos(101), cos(10**9)] == [0.5, 0.5, 0.5]


def test_cosine_restarts_values() -> None:
    s = CosineRestarts(cycle_steps=10, cycle_factor=2, end_lr=0.0)
    # cycles: [0, 10), [10, 30), [30, 70)
    assert [s(0), s(10), s(30), s(70)] == [1.0, 1.0, 1.0, 1.0]
    assert s(5) == pytest.approx(0.5, abs=1e-15)
    assert s(20) == pytest.approx(0.5, abs=1e-15)
    assert s(50) == pytest.approx(0.5, abs=1e-15)
    assert s(9) == pytest.approx((1 + math.cos(math.pi * 0.9)) / 2, abs=1e-15)
    d = CosineRestarts(cycle_steps=10, peak_factor=0.5, num_cycles=2, end_lr=0.1)
    assert d(10) == pytest.approx(0.1 + 0.9 * 0.5, abs=1e-15)
    assert d.end_step == 20
    assert [d(20), d(21), d(1000)] == [0.1, 0.1, 0.1]


def test_cosine_restarts_length_must_fit_in_exact_steps() -> None:
    # 10 + 1e301 + 1e601 steps: the float sum overflowed (OverflowError) before
    with pytest.raises(
        ValueError,
        match=r"cycle_factor must be small enough that num_cycles=3 cycles of "
        r"cycle_steps=10 × cycle_factor \*\* n end within 2\*\*53 steps, got "
        r"cycle_factor=1e\+300\. Lower",
    ):
        CosineRestarts(cycle_steps=10, cycle_factor=1e300, num_cycles=3)
    with pytest.raises(ValueError, match="num_cycles must be small enough"):
        CosineRestarts(cycle_steps=10, num_cycles=2**53)
    # without num_cycles there is no end to compute: any cycle_factor works
    s = CosineRestarts(cycle_steps=10, cycle_factor=1e300)
    assert s.end_step is None
    assert s(10**6) == pytest.approx((1 + math.cos(math.pi * (10**6 - 10) / 1e301)) / 2)
    big = CosineRestarts(cycle_steps=3, cycle_factor=1e5, num_cycles=3)
    assert big.end_step == 3 + 300_000 + 30_000_000_000


@settings(max_examples=80, deadline=None)
@given(
    cycle=st.integers(1, 50),
    cf=st.floats(1.0, 3.0),
    n=st.integers(1, 8),
    end_lr=st.sampled_from([0.0, 0.1]),
)
def test_cosine_restarts_end_step_is_where_the_last_cycle_ends(
    cycle: int, cf: float, n: int, end_lr: float
) -> None:
    s = CosineRestarts(cycle_steps=cycle, cycle_factor=cf, num_cycles=n, end_lr=end_lr)
    e = s.end_step
    assert e is not None
    assert s(e) == end_lr and s(e + 1) == end_lr
    # e is the first step past the last cycle, as the cycle lookup sees it
    assert s._locate(e)[0] == n
    assert s._locate(e - 1)[0] == n - 1


def test_cyclic_values() -> None:
    s = Cyclic(low_lr=0.1, peak_lr=1.1, up_steps=4, down_steps=6)
    assert s(0) == pytest.approx(0.1)
    assert s(4) == pytest.approx(1.1)
    assert s(7) == pytest.approx(0.6)
    assert s(10) == pytest.approx(0.1)
    t2 = Cyclic(low_lr=0.0, peak_lr=1.0, up_steps=5, mode="triangular2")
    assert [t2(5), t2(15), t2(25)] == pytest.approx([1.0, 0.5, 0.25])
    ex = Cyclic(low_lr=0.0, peak_lr=1.0, up_steps=5, mode="exp-range", factor=0.9)
    assert ex.mode == "exp_range"
    assert ex(5) == pytest.approx(0.9**5)


def test_one_cycle_values() -> None:
    s = OneCycle(total_steps=100, peak_lr=1.0, warmup_frac=0.25)
    assert s(0) == pytest.approx(1 / 25, abs=1e-15)
    assert s(24) == 1.0  # peak at warmup_frac * total_steps - 1
    assert s(99) == pytest.approx(1 / 25 / 1e4, abs=1e-18)
    assert s(100) == s(99) == s(10**6)  # held, where torch raises
    mid_up = s(12)
    assert mid_up == pytest.approx(
        1.0 + (0.04 - 1.0) / 2 * (math.cos(math.pi * 0.5) + 1)
    )
    t3 = OneCycle(total_steps=100, warmup_frac=0.25, three_phase=True, anneal="linear")
    assert t3(24) == 1.0
    assert t3(48) == pytest.approx(0.04)  # back to start at 2 * f * T - 2
    custom = OneCycle(total_steps=10, start_lr=0.5, end_lr=0.0)
    assert custom(0) == pytest.approx(0.5)
    assert custom(9) == 0.0


def test_inverse_sqrt_and_warmup_transformer_rule() -> None:
    s = InverseSqrt(timescale_steps=100, peak_lr=2.0)
    assert s(0) == 2.0
    assert s(300) == pytest.approx(1.0)
    w = Warmup(steps=100, then=InverseSqrt(timescale_steps=100))
    for t in (100, 400, 2500):  # fairseq inverse_sqrt: sqrt(W / t) after warmup
        assert w(t) == pytest.approx(math.sqrt(100 / t), abs=1e-15)


def test_wsd_values() -> None:
    s = WarmupStableDecay(
        total_steps=100, warmup_steps=9, decay_steps=50, decay="linear", end_lr=0.2
    )
    assert s(0) == pytest.approx(0.1)
    assert s(8) == pytest.approx(0.9)
    assert [s(9), s(49), s(50)] == [1.0, 1.0, 1.0]
    assert s(75) == pytest.approx(0.6)
    assert [s(100), s(101)] == [0.2, 0.2]
    sq = WarmupStableDecay(total_steps=100, decay_frac=0.5, decay="sqrt")
    assert sq(75) == pytest.approx(1 - math.sqrt(0.5))
    co = WarmupStableDecay(total_steps=100, decay_frac=0.5, decay="cosine")
    assert co(75) == pytest.approx(0.5)
    default = WarmupStableDecay(total_steps=1000)
    assert (default.warmup_steps, default.decay_steps) == (0, 200)


@settings(max_examples=60, deadline=None)
@given(w=st.integers(1, 300), peak=st.floats(1e-6, 10.0))
def test_wsd_warmup_is_the_warmup_wrappers_ramp(w: int, peak: float) -> None:
    """WSD's warmup is Warmup's default linear ramp: same code, same floats."""
    s = WarmupStableDecay(
        total_steps=w + 1, warmup_steps=w, decay_steps=1, peak_lr=peak
    )
    wrapped = Warmup(steps=w, then=Constant(lr=peak))
    for t in range(w + 1):
        assert s(t) == wrapped(t)
        assert s(t) == pytest.approx(peak * (t + 1) / (w + 1), rel=1e-12, abs=0)


# ------------------------------------------------------------------- units


def test_units_epochs_and_fractions() -> None:
    assert Step(every_epochs=2, steps_per_epoch=100).every_steps == 200
    assert Cosine(total_epochs=2.5, steps_per_epoch=100).total_steps == 250
    assert MultiStep(milestone_epochs=[3, 6], steps_per_epoch=10).milestones == (30, 60)
    assert MultiStep(milestone_fracs=[0.5, 0.75], total_steps=1000).milestones == (
        500,
        750,
    )
    assert Piecewise(
        boundary_epochs=[1, 2], steps_per_epoch=5, values=[3, 2, 1]
    ).boundaries == (5, 10)
    assert CosineRestarts(cycle_epochs=1, steps_per_epoch=7).cycle_steps == 7
    c = Cyclic(low_lr=0.1, up_epochs=0.5, down_epochs=1, steps_per_epoch=10)
    assert (c.up_steps, c.down_steps) == (5, 10)
    wsd = WarmupStableDecay(total_steps=1000, warmup_frac=0.05, decay_frac=0.1)
    assert (wsd.warmup_steps, wsd.decay_steps) == (50, 100)
    # only the steps are stored: the config has no epochs or fractions
    cfg = Cosine(total_epochs=3, steps_per_epoch=10).to_config()
    assert cfg == {"name": "cosine", "total_steps": 30, "peak_lr": 1.0, "end_lr": 0.0}


def test_epochs_and_fractions_round_half_up() -> None:
    """Every fraction or epoch count rounds to the nearest step, halves up.

    (Python's round() sends halves to the even neighbour: 2.5 -> 2, 3.5 -> 4.)
    """
    wsd = [WarmupStableDecay(total_steps=10, warmup_frac=f) for f in (0.15, 0.25, 0.35)]
    assert [w.warmup_steps for w in wsd] == [2, 3, 4]
    # a decay fraction marks where the decay starts (7.5 -> 8): 2 steps long
    assert WarmupStableDecay(total_steps=10, decay_frac=0.25).decay_steps == 2
    # fractions that add up to 1 fill the run
    for w, d in ((0.25, 0.75), (0.05, 0.95), (0.35, 0.65)):
        s = WarmupStableDecay(total_steps=10, warmup_frac=w, decay_frac=d)
        assert s.warmup_steps + s.decay_steps == 10
    assert MultiStep(milestone_fracs=[0.25, 0.75], total_steps=10).milestones == (3, 8)
    assert MultiStep(milestone_epochs=[0.5, 2.5], steps_per_epoch=1).milestones == (
        1,
        3,
    )
    assert Cosine(total_epochs=2.5, steps_per_epoch=1).total_steps == 3
    assert Step(every_epochs=0.5, steps_per_epoch=1).every_steps == 1
    assert Piecewise(
        boundary_epochs=[1.5, 2.5], steps_per_epoch=1, values=[1, 0.5, 0.1]
    ).boundaries == (2, 3)
    c = Cyclic(low_lr=0.1, up_epochs=2.5, down_epochs=1.15, steps_per_epoch=10)
    assert (c.up_steps, c.down_steps) == (25, 12)  # 1.15 × 10 is 11.5 on paper
    assert Warmup(epochs=2.5, steps_per_epoch=1).steps == 3
    assert Warmup(warmup_frac=0.25, total_steps=10).steps == 3
    assert Join(
        parts=[Constant(), Constant()], boundary_fracs=[0.45], total_steps=10
    ).boundaries == (5,)
    # not halves: the nearest step, as before
    assert Cosine(total_epochs=2.4, steps_per_epoch=1).total_steps == 2
    assert Cosine(total_epochs=2.6, steps_per_epoch=1).total_steps == 3


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (
            lambda: Cosine(total_steps=10, total_epochs=1, steps_per_epoch=10),
            "total_epochs must be omitted",
        ),
        (
            lambda: Cosine(total_epochs=1),
            "steps_per_epoch must be an int >= 1 when total_epochs",
        ),
        (
            lambda: Cosine(total_steps=10, steps_per_epoch=10),
            "steps_per_epoch must be given only together",
        ),
        (
            lambda: Cosine(total_epochs=0.001, steps_per_epoch=10),
            "total_epochs must be at least 1 step",
        ),
        (
            lambda: MultiStep(milestone_fracs=[0.5]),
            "total_steps must be an int >= 1 when milestone_fracs",
        ),
        (
            lambda: WarmupStableDecay(total_steps=10, warmup_steps=5, decay_steps=6),
            "warmup_steps \\+ decay_steps must be <= total_steps=10",
        ),
    ],
)
def test_unit_errors(build: Any, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        build()


# -------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("build", "exc", "match"),
    [
        (lambda: Cosine(), TypeError, "total_steps must be given"),
        (
            lambda: Cosine(total_steps=0),
            ValueError,
            r"total_steps must be an int >= 1, got total_steps=0\.",
        ),
        (lambda: Cosine(total_steps=10.0), TypeError, "total_steps must be an int"),
        (
            lambda: Cosine(total_steps=10, end_lr=2.0),
            ValueError,
            r"end_lr must be <= peak_lr=1.0, got end_lr=2.0\.",
        ),
        (
            lambda: Cosine(total_steps=10, peak_lr=float("nan")),
            ValueError,
            "peak_lr must be > 0",
        ),
        (
            lambda: Step(every_steps=3, factor=1.5),
            ValueError,
            r"factor must be in \(0, 1\]",
        ),
        (
            lambda: Step(every_steps=3, factor=True),
            TypeError,
            "factor must be a real number",
        ),
        (
            lambda: MultiStep(milestones=[30, 10]),
            ValueError,
            "milestones must be non-decreasing",
        ),
        (lambda: MultiStep(milestones=[]), ValueError, "milestones must be non-empty"),
        (
            lambda: MultiStep(milestones=[1.5]),
            TypeError,
            "milestones must be a sequence of ints",
        ),
        (
            lambda: Piecewise(boundaries=[5], values=[1.0]),
            ValueError,
            "values must be one longer",
        ),
        (
            lambda: Cyclic(low_lr=2.0, up_steps=5),
            ValueError,
            "low_lr must be <= peak_lr",
        ),
        (
            lambda: Cyclic(low_lr=0.1, up_steps=5, factor=0.9),
            ValueError,
            "factor must be 1.0 unless mode='exp_range'",
        ),
        (
            lambda: Cyclic(low_lr=0.1, up_steps=5, mode="sine"),
            ValueError,
            "mode must be one of",
        ),
        (
            lambda: OneCycle(total_steps=10, warmup_frac=0.05),
            ValueError,
            "warmup_frac must be > 1/total_steps",
        ),
        (
            lambda: OneCycle(total_steps=1),
            ValueError,
            "total_steps must be >= 2 for a one-cycle schedule",
        ),
        (
            lambda: OneCycle(total_steps=10, warmup_frac=0.6, three_phase=True),
            ValueError,
            "three_phase=True",
        ),
        (
            lambda: OneCycle(total_steps=10, anneal="cubic"),
            ValueError,
            "anneal must be one of",
        ),
        (
            lambda: CosineRestarts(cycle_steps=5, cycle_factor=0.5),
            ValueError,
            "cycle_factor must be >= 1",
        ),
        (
            lambda: InverseSqrt(timescale_steps=0),
            ValueError,
            "timescale_steps must be an int >= 1",
        ),
        (
            lambda: WarmupStableDecay(total_steps=10, decay="exp"),
            ValueError,
            "decay must be one of",
        ),
        (lambda: Exponential(factor=0.0), ValueError, r"factor must be in \(0, 1\]"),
        (lambda: Constant(lr=-1.0), ValueError, "lr must be >= 0"),
        (
            lambda: Piecewise(boundaries=[3, 5], values=[1.0, math.nan, 0.5]),
            ValueError,
            r"values\[1\] must be >= 0, got values\[1\]=nan\.",
        ),
        (
            lambda: Piecewise(boundaries=[3], values=[1.0, "0.5"]),
            TypeError,
            r"values\[1\] must be a real number, got values\[1\]='0\.5'\.",
        ),
        (
            lambda: MultiStep(milestone_epochs=[1, -2], steps_per_epoch=3),
            ValueError,
            r"milestone_epochs\[1\] must be >= 0, got milestone_epochs\[1\]=-2",
        ),
        (
            lambda: MultiStep(milestone_fracs=[0.5, 1.5], total_steps=10),
            ValueError,
            r"milestone_fracs\[1\] must be in \[0, 1\]",
        ),
        (  # the decay the user did not ask for is named, with its default
            lambda: WarmupStableDecay(total_steps=10, warmup_steps=20),
            ValueError,
            r"warmup_steps \+ decay_steps must be <= total_steps=10, got "
            r"warmup_steps \+ decay_steps=22\. decay_steps=2 comes from the default "
            r"decay_frac=0\.2; give decay_steps=\.\.\. or decay_frac=\.\.\.",
        ),
        (
            lambda: WarmupStableDecay(total_steps=2),
            ValueError,
            r"decay_frac must be at least 1 step long, got decay_frac=0\.2\. That is "
            r"the default \(the last 20% of total_steps=2\)",
        ),
    ],
)
def test_validation_messages(build: Any, exc: type[Exception], match: str) -> None:
    with pytest.raises(exc, match=match):
        build()


# ---------------------------------------------------------------- registry


def test_from_config_errors_list_valid_names() -> None:
    with pytest.raises(
        ValueError,
        match=r"config\['name'\] must be a registered.*Valid names: constant, cosine",
    ):
        schedule_from_config({"name": "cosin", "total_steps": 3})
    with pytest.raises(
        ValueError, match="Unknown parameter 'total_step'; valid: total_steps"
    ):
        schedule_from_config({"name": "cosine", "total_step": 3})
    with pytest.raises(ValueError, match="config\\['name'\\] must be 'cosine'"):
        Cosine.from_config({"name": "linear", "total_steps": 3})
    with pytest.raises(TypeError, match="config must be a mapping"):
        schedule_from_config("cosine")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"config must be made of cosine's parameters, got config=\{'name': "
        r"'cosine', 'total_step': 3\}\. Unknown parameter 'total_step'",
    ):
        schedule_from_config({"name": "cosine", "total_step": 3})


@pytest.mark.parametrize(
    ("config", "missing"),
    [
        ({"name": "exponential"}, "factor"),
        ({"name": "cyclic", "up_steps": 4}, "low_lr"),
        ({"name": "inverse_sqrt"}, "timescale_steps"),
        ({"name": "scale", "factor": 0.5}, "schedule"),
    ],
)
def test_from_config_names_a_missing_required_parameter(
    config: dict[str, Any], missing: str
) -> None:
    name = config["name"]
    with pytest.raises(
        TypeError,
        match=rf"config\['{missing}'\] must be given \(a required parameter of "
        rf"{name}\), got config\['{missing}'\]=None\.",
    ):
        schedule_from_config(config)


def test_plain_callables_work_but_do_not_serialise() -> None:
    s = Warmup(steps=4, then=lambda t: 0.5)
    assert s(4) == 0.5
    assert s(0) == pytest.approx(0.5 / 5)
    assert s.end_step is None
    with pytest.raises(TypeError, match="then must be a registered lrkit Schedule"):
        s.to_config()


@pytest.fixture
def halving() -> Any:
    @dataclass(frozen=True, kw_only=True)
    class Halving(Schedule):
        name: ClassVar[str] = "halving_test"
        positional: ClassVar[tuple[str, ...]] = ("every_steps",)
        every_steps: int = 10

        def __call__(self, step: int) -> float:
            if step < 0:
                raise ValueError("step must be >= 0")
            return 0.5 ** (step // self.every_steps)

    lrkit.register(Halving)
    yield Halving
    del _REGISTRY["halving_test"]


def test_register_custom_schedule(halving: Any) -> None:
    assert lrkit.registry()["halving_test"] is halving
    s = lrkit.parse_schedule("warmup(4) >> halving_test(5)")
    assert s(4 + 10) == 0.25
    assert schedule_from_config(json.loads(json.dumps(s.to_config()))) == s
    lrkit.register(halving)  # idempotent

    @dataclass(frozen=True, kw_only=True)
    class Other(Schedule):
        name: ClassVar[str] = "halving_test"

    with pytest.raises(ValueError, match="a name not registered yet"):
        lrkit.register(Other)
    with pytest.raises(TypeError, match=r"subclass of lrkit\.Schedule"):
        lrkit.register(int)  # type: ignore[type-var]


def test_registry_is_read_only() -> None:
    reg = lrkit.registry()
    with pytest.raises(TypeError):
        reg["x"] = Cosine  # type: ignore[index]


# -------------------------------------------------------------- properties

steps_ = st.integers(min_value=1, max_value=300)
lr_ = st.floats(min_value=1e-6, max_value=10.0)
frac_ = st.floats(min_value=0.0, max_value=1.0)


def assert_non_increasing(s: Any, n: int) -> None:
    values = [s(t) for t in range(n)]
    for t, (a, b) in enumerate(itertools.pairwise(values)):
        assert b <= a, (t, a, b)


@settings(max_examples=60, deadline=None)
@given(n=steps_, peak=lr_, end_frac=frac_, power=st.floats(0.1, 5.0))
def test_decays_never_increase(
    n: int, peak: float, end_frac: float, power: float
) -> None:
    end = peak * end_frac
    for s in (
        Cosine(total_steps=n, peak_lr=peak, end_lr=end),
        Linear(total_steps=n, start_lr=peak, end_lr=end),
        Polynomial(total_steps=n, power=power, peak_lr=peak, end_lr=end),
        WarmupStableDecay(
            total_steps=n,
            peak_lr=peak,
            end_lr=end,
            decay_steps=max(1, round(end_frac * n)),
        ),
    ):
        assert_non_increasing(s, n + 5)


@settings(max_examples=60, deadline=None)
@given(
    every=st.integers(1, 50),
    factor=st.floats(0.01, 1.0),
    peak=lr_,
    end_frac=frac_,
    ms=st.lists(st.integers(1, 400), min_size=1, max_size=5, unique=True),
)
def test_step_decays_never_increase(
    every: int, factor: float, peak: float, end_frac: float, ms: list[int]
) -> None:
    assert_non_increasing(Step(every_steps=every, factor=factor, peak_lr=peak), 400)
    assert_non_increasing(
        Exponential(factor=factor, peak_lr=peak, end_lr=peak * end_frac), 400
    )
    assert_non_increasing(
        MultiStep(milestones=sorted(ms), factor=factor, peak_lr=peak), 420
    )
    assert_non_increasing(InverseSqrt(timescale_steps=every, peak_lr=peak), 400)


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(20, 400),
    frac=st.floats(0.1, 0.45),
    three=st.booleans(),
    anneal=st.sampled_from(["cosine", "linear"]),
)
def test_one_cycle_rises_to_peak_then_falls(
    n: int, frac: float, three: bool, anneal: str
) -> None:
    s = OneCycle(total_steps=n, warmup_frac=frac, three_phase=three, anneal=anneal)
    peak = math.floor(s.peak_step)
    values = [s(t) for t in range(n + 3)]
    assert all(b >= a - 1e-15 for a, b in itertools.pairwise(values[: peak + 1]))
    assert all(
        b <= a + 1e-15
        for a, b in zip(values[peak + 1 :], values[peak + 2 :], strict=False)
    )
    assert max(values) <= 1.0


W_HF, T_HF = 10, 100


def _hf_cases() -> list[tuple[str, Any, Any]]:
    from lrkit import (
        Constant,
        Cosine,
        CosineRestarts,
        InverseSqrt,
        Linear,
        Polynomial,
        Warmup,
        WarmupStableDecay,
    )

    W, T = W_HF, T_HF

    def warm(then: Any, start: float = 0.0) -> Any:
        return Warmup(steps=W, start_factor=start, then=then)

    cases = [
        (
            "get_linear_schedule_with_warmup",
            (W, T),
            {},
            warm(Linear(total_steps=T - W)),
        ),
        (
            "get_cosine_schedule_with_warmup",
            (W, T),
            {},
            warm(Cosine(total_steps=T - W)),
        ),
        (
            "get_cosine_with_min_lr_schedule_with_warmup",
            (W, T),
            {"min_lr_rate": 0.1},
            warm(Cosine(total_steps=T - W, end_lr=0.1)),
        ),
        ("get_constant_schedule_with_warmup", (W,), {}, warm(Constant())),
        (
            "get_polynomial_decay_schedule_with_warmup",
            (W, T),
            {"lr_end": 0.01, "power": 2.0},
            warm(Polynomial(total_steps=T - W, power=2.0, end_lr=0.01)),
        ),
        (
            "get_inverse_sqrt_schedule",
            (),
            {"num_warmup_steps": W},
            warm(InverseSqrt(timescale_steps=W)),
        ),
        (
            "get_cosine_with_hard_restarts_schedule_with_warmup",
            (W, T),
            {"num_cycles": 3},
            warm(CosineRestarts(cycle_steps=(T - W) // 3, num_cycles=3)),
        ),
        (
            # 4 cycles do not divide T - W = 90 steps: cycles of (T - W) // 4
            # = 22 steps drift, up to 0.999 off; the exact form runs a cycle
            # of T - W steps c times as fast
            "get_cosine_with_hard_restarts_schedule_with_warmup",
            (W, T),
            {"num_cycles": 4},
            warm(lambda t: CosineRestarts(cycle_steps=T - W, num_cycles=4)(4 * t)),
        ),
    ]
    for hf, ours in (("linear", "linear"), ("cosine", "cosine"), ("1-sqrt", "sqrt")):
        cases.append(
            (
                "get_wsd_schedule",
                (),
                {
                    "num_warmup_steps": W,
                    "num_decay_steps": 20,
                    "num_stable_steps": T - W - 20,
                    "min_lr_ratio": 0.1,
                    "decay_type": hf,
                },
                warm(
                    WarmupStableDecay(
                        total_steps=T - W, decay_steps=20, end_lr=0.1, decay=ours
                    ),
                    start=0.1,
                ),
            )
        )
    return [(f"{n}{kw}", (n, args, kw), ours) for n, args, kw, ours in cases]


@pytest.mark.parametrize(
    ("name", "hf", "ours"), _hf_cases(), ids=[c[0] for c in _hf_cases()]
)
def test_the_hugging_face_migration_table_holds(name: str, hf: Any, ours: Any) -> None:
    """docs/schedules.md's transformers table, step by step (base LR 1)."""
    torch = pytest.importorskip("torch")
    optimization = pytest.importorskip("transformers.optimization")
    fn, args, kw = hf
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = getattr(optimization, fn)(opt, *args, **kw)
    for t in range(T_HF + 1):  # past the end, transformers cosines rise again
        assert opt.param_groups[0]["lr"] == pytest.approx(ours(t), abs=1e-12), t
        opt.step()
        sched.step()


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: repr(s)[:60])
def test_the_text_form_round_trips(schedule: Schedule) -> None:
    """str(schedule) is the text form lrkit schedule reads (review: it was
    the dataclass repr, so a config could not be logged in that form)."""
    text = schedule.to_text()
    assert str(schedule) == text
    assert lrkit.parse_schedule(text) == schedule
