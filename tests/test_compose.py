"""Tests of lrkit.compose: Warmup, Join, Scale and `>>`."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings, strategies as st

from lrkit import (
    Constant,
    Cosine,
    Exponential,
    InverseSqrt,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    Scale,
    Step,
    Warmup,
    parse_schedule,
    schedule_from_config,
)
from lrkit.compose import chain

steps_ = st.integers(min_value=1, max_value=300)
lr_ = st.floats(min_value=1e-6, max_value=10.0)
frac_ = st.floats(min_value=0.0, max_value=1.0)


@settings(max_examples=60, deadline=None)
@given(
    w=st.integers(1, 200),
    s0=st.floats(0.0, 1.0),
    shape=st.sampled_from(["linear", "cosine", "exponential"]),
    target=st.floats(0.0, 5.0),
)
def test_warmups_never_decrease(w: int, s0: float, shape: str, target: float) -> None:
    if shape == "exponential":
        s0 = max(s0, 1e-6)
    s = Warmup(steps=w, then=Constant(lr=target), shape=shape, start_factor=s0)
    values = [s(t) for t in range(w + 3)]
    assert all(b >= a for a, b in itertools.pairwise(values))
    assert s(w) == target
    assert s(0) == pytest.approx(target * s0, rel=1e-12, abs=1e-300)


@settings(max_examples=60, deadline=None)
@given(n1=steps_, n2=steps_, a=lr_, b_frac=frac_, c_frac=frac_)
def test_join_is_continuous_when_parts_meet(
    n1: int, n2: int, a: float, b_frac: float, c_frac: float
) -> None:
    """Documented: continuous at a boundary when the part before has reached its
    end value there and the next part starts from it."""
    b = a * b_frac
    first = Cosine(total_steps=n1, peak_lr=a, end_lr=b)
    second = Linear(total_steps=n2, start_lr=b, end_lr=b * c_frac)
    joined = first >> second
    assert isinstance(joined, Join)
    assert joined.boundaries == (n1,)
    # the value at the boundary is the limit of the first part
    assert joined(n1) == first(n1) == second(0)
    # and the jump across it is no bigger than the largest step inside the parts
    inside = max(abs(first(t + 1) - first(t)) for t in range(n1))
    inside = max(inside, max(abs(second(t + 1) - second(t)) for t in range(n2)))
    assert abs(joined(n1) - joined(n1 - 1)) <= inside + 1e-15
    assert joined.end_step == n1 + n2


@settings(max_examples=40, deadline=None)
@given(w=st.integers(0, 50), n=st.integers(1, 100), end=frac_)
def test_warmup_then_cosine_peaks_exactly_at_warmup_end(
    w: int, n: int, end: float
) -> None:
    s = Warmup(steps=w, then=Cosine(total_steps=n, end_lr=end))
    assert s(w) == 1.0
    assert s(w + n) == end
    assert s.end_step == w + n
    assert max(s(t) for t in range(w + n + 2)) == 1.0


def test_warmup_frac_units() -> None:
    # fraction of the whole schedule (warmup included) by default
    s = Warmup(warmup_frac=0.1, then=Cosine(total_steps=900))
    assert s.steps == 100
    assert s.end_step == 1000
    # fraction of an explicit total
    assert (
        Warmup(warmup_frac=0.05, total_steps=2000, then=Cosine(total_steps=10)).steps
        == 100
    )
    assert Warmup(epochs=1.5, steps_per_epoch=10).steps == 15
    with pytest.raises(ValueError, match="total_steps must be given when warmup_frac"):
        Warmup(warmup_frac=0.1, then=lambda t: 1.0)
    # a fraction of nothing: an error, not a silent 0-step warmup
    with pytest.raises(ValueError, match="then must be the schedule to warm up into"):
        Warmup(warmup_frac=0.05)
    with pytest.raises(ValueError, match="then must be the schedule to warm up into"):
        parse_schedule("warmup(warmup_frac=0.05) >> cosine(total_steps=9500)")
    assert Warmup(warmup_frac=0.05, total_steps=10_000).steps == 500
    # W = f × L / (1 - f) rounds to the nearest step, halves up as everywhere:
    # 0.2 × 10 / 0.8 = 2.5 -> 3 (Python's round() would give 2)
    assert Warmup(warmup_frac=0.2, then=Cosine(total_steps=10)).steps == 3
    assert Warmup(epochs=2.5, steps_per_epoch=1).steps == 3
    with pytest.raises(
        ValueError, match="start_factor must be > 0 with shape='exponential'"
    ):
        Warmup(steps=10, shape="exponential", start_factor=0.0)
    with pytest.raises(TypeError, match="then must be callable"):
        Warmup(steps=10, then=3)  # type: ignore[arg-type]


def test_warmup_default_start_never_zero_and_hf_convention() -> None:
    s = Warmup(steps=4, then=Constant(lr=1.0))
    assert [s(t) for t in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    hf = Warmup(steps=4, start_factor=0.0, then=Constant(lr=1.0))
    assert [hf(t) for t in range(5)] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("linear", [0.0, 0.25, 0.5, 0.75]),
        ("cosine", [0.0, (1 - 0.5**0.5) / 2, 0.5, (1 + 0.5**0.5) / 2]),
    ],
)
def test_warmup_shapes_from_zero(shape: str, expected: list[float]) -> None:
    s = Warmup(steps=4, shape=shape, start_factor=0.0, then=Constant(lr=2.0))
    assert [s(t) for t in range(4)] == pytest.approx(
        [2 * e for e in expected], abs=1e-15
    )
    assert s(4) == 2.0


def test_warmup_exponential_is_geometric() -> None:
    s = Warmup(steps=4, shape="exponential", start_factor=1e-4)
    values = [s(t) for t in range(5)]
    assert values == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1, 1.0], rel=1e-12)
    ratios = {round(b / a, 9) for a, b in itertools.pairwise(values)}
    assert ratios == {10.0}


def test_warmup_then_sees_steps_since_warmup_end() -> None:
    seen: list[int] = []

    def probe(t: int) -> float:
        seen.append(t)
        return 1.0

    s = Warmup(steps=5, then=probe)
    seen.clear()
    for t in (5, 6, 12):
        s(t)
    assert seen == [0, 1, 7]


def test_warmup_without_then_holds_one_and_zero_length_is_identity() -> None:
    s = Warmup(steps=3)
    assert s.end_step == 3
    assert [s(3), s(100)] == [1.0, 1.0]
    c = Cosine(total_steps=10)
    w0 = Warmup(steps=0, then=c)
    assert [w0(t) for t in range(12)] == [c(t) for t in range(12)]


def test_join_parts_see_steps_since_boundary() -> None:
    seen: list[tuple[str, int]] = []

    def part(name: str):  # type: ignore[no-untyped-def]
        def f(t: int) -> float:
            seen.append((name, t))
            return 1.0

        return f

    j = Join(parts=[part("a"), part("b"), part("c")], boundaries=[10, 25])
    for t in (0, 9, 10, 24, 25, 100):
        j(t)
    assert seen == [("a", 0), ("a", 9), ("b", 0), ("b", 14), ("c", 0), ("c", 75)]
    assert j.end_step is None  # plain callables have no known length


def test_join_boundaries_from_lengths_and_units() -> None:
    j = Join(parts=[Linear(total_steps=10), Cosine(total_steps=20), Constant(lr=0.1)])
    assert j.boundaries == (10, 30)
    assert j.end_step == 30
    assert Join(
        parts=[Constant(), Constant()], boundary_epochs=[2], steps_per_epoch=50
    ).boundaries == (100,)
    assert Join(
        parts=[Constant(), Constant()], boundary_fracs=[0.3], total_steps=1000
    ).boundaries == (300,)
    with pytest.raises(TypeError, match="parts\\[0\\] has no end_step"):
        Join(parts=[Step(every_steps=5), Constant()])
    with pytest.raises(ValueError, match="boundaries must be one fewer than parts"):
        Join(parts=[Constant(), Constant()], boundaries=[5, 6])
    with pytest.raises(ValueError, match="boundaries must be strictly increasing"):
        Join(parts=[Constant(), Constant(), Constant()], boundaries=[6, 6])
    with pytest.raises(ValueError, match="parts must be non-empty"):
        Join(parts=[])
    with pytest.raises(
        TypeError, match=r"parts\[0\] must be callable, got parts\[0\]=1\."
    ):
        Join(parts=[1, 2], boundaries=[3])  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"parts\[1\] must be callable"):
        Join(parts=[Constant(), "cosine(10)"], boundaries=[3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"boundary_fracs\[0\] must be in \[0, 1\]"):
        Join(parts=[Constant(), Constant()], boundary_fracs=[1.5], total_steps=10)


def test_scale() -> None:
    s = Scale(schedule=Cosine(total_steps=10), factor=3e-4)
    assert s(0) == 3e-4
    assert s(5) == pytest.approx(1.5e-4)
    assert s.end_step == 10
    with pytest.raises(ValueError, match="factor must be > 0"):
        Scale(schedule=Constant(), factor=0.0)
    with pytest.raises(ValueError, match="step must be >= 0"):
        Scale(schedule=lambda t: 1.0, factor=2.0)(-1)  # even around a plain callable
    with pytest.raises(ValueError, match="step must be a whole number"):
        Scale(schedule=lambda t: 1.0, factor=2.0)(0.5)
    seen: list[object] = []
    Warmup(steps=2, then=lambda t: seen.append(t) or 1.0)(5.0)
    assert seen[-1] == 3 and type(seen[-1]) is int  # parts get whole ints


def test_rshift_chains_and_flattens() -> None:
    s = (
        Warmup(steps=10)
        >> Cosine(total_steps=90, end_lr=0.1)
        >> Linear(total_steps=50, start_lr=0.1, end_lr=0.0)
    )
    assert isinstance(s, Warmup)
    assert isinstance(s.then, Join)
    assert s.then.boundaries == (90,)
    assert s.end_step == 150
    assert s(10) == 1.0
    assert s(100) == pytest.approx(0.1)
    assert s(150) == 0.0
    flat = Linear(total_steps=5) >> Linear(total_steps=5) >> Linear(total_steps=5)
    assert isinstance(flat, Join)
    assert len(flat.parts) == 3
    assert flat.boundaries == (5, 10)
    with pytest.raises(ValueError, match="nothing can follow it"):
        Step(every_steps=3) >> Constant()
    # a warmup in the middle ramps into what follows
    mid = chain(
        Cosine(total_steps=10, end_lr=0.0), Warmup(steps=5), OneCycle(total_steps=20)
    )
    assert isinstance(mid, Join)
    assert mid(10 + 5) == pytest.approx(OneCycle(total_steps=20)(0))


def test_compositions_round_trip_through_json() -> None:
    s = Warmup(steps=7, shape="cosine") >> Join(
        parts=[
            MultiStep(milestones=[5], factor=0.5),
            Scale(schedule=Exponential(factor=0.9), factor=0.5),
        ],
        boundaries=[20],
    )
    back = schedule_from_config(json.loads(json.dumps(s.to_config())))
    assert back == s
    assert [back(t) for t in range(60)] == [s(t) for t in range(60)]


def test_inverse_sqrt_after_warmup_is_continuous() -> None:
    s = Warmup(steps=100, then=InverseSqrt(timescale_steps=100))
    assert s(99) < s(100) == 1.0 > s(101)
