"""Tests of the text form (lrkit._parse): grammar, round trips, error positions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import pytest
from hypothesis import given, settings, strategies as st

import lrkit
from lrkit import (
    Constant,
    Cosine,
    Cyclic,
    Join,
    Linear,
    MultiStep,
    OneCycle,
    Scale,
    ScheduleSyntaxError,
    Warmup,
    WarmupStableDecay,
    parse_schedule,
)
from lrkit._parse import parse_plateau
from lrkit.schedules import _REGISTRY


def test_the_required_text_parses() -> None:
    s = parse_schedule("warmup(steps=100) >> cosine(total_steps=1000, end_lr=0)")
    assert s == Warmup(steps=100, then=Cosine(total_steps=1000, end_lr=0.0))
    assert s(100) == 1.0
    assert s(1100) == 0.0


def test_issue_example_and_positional_arguments() -> None:
    s = parse_schedule("warmup(500) >> cosine(total_steps=10000, end_lr=1e-5)")
    assert s == Warmup(steps=500, then=Cosine(total_steps=10000, end_lr=1e-5))
    assert parse_schedule("cosine(1e4)") == Cosine(total_steps=10000)  # 1e4 is an int
    assert parse_schedule("multistep([30, 60], 0.5)") == MultiStep(
        milestones=[30, 60], factor=0.5
    )


def test_values_words_strings_lists_and_nesting() -> None:
    s = parse_schedule(
        "join(cosine(10, end_lr=.5), scale(linear(5, start_lr=1, end_lr=0), "
        "factor=0.5), boundaries=[10],)"
    )
    assert s == Join(
        parts=[
            Cosine(total_steps=10, end_lr=0.5),
            Scale(schedule=Linear(total_steps=5), factor=0.5),
        ],
        boundaries=[10],
    )
    assert parse_schedule(
        "one_cycle(100, three_phase=true, anneal='linear')"
    ) == OneCycle(total_steps=100, three_phase=True, anneal="linear")
    assert parse_schedule(
        'cyclic(up_steps=5, low_lr=0.1, mode="triangular2")'
    ) == Cyclic(low_lr=0.1, up_steps=5, mode="triangular2")
    assert parse_schedule(
        "wsd(1000, warmup_frac=0.05, decay=sqrt)"
    ) == WarmupStableDecay(total_steps=1000, warmup_steps=50, decay="sqrt")
    assert parse_schedule("  constant( lr = 3e-4 ) ") == Constant(lr=3e-4)
    assert parse_schedule("cosine_restarts(10, num_cycles=none)").num_cycles is None


def test_chain_folds_like_the_python_operator() -> None:
    text = (
        "warmup(10) >> cosine(90, end_lr=0.1) >> warmup(5) >> linear(20, start_lr=0.1)"
    )
    s = parse_schedule(text)
    py = (
        Warmup(steps=10)
        >> Cosine(total_steps=90, end_lr=0.1)
        >> Warmup(steps=5)
        >> Linear(total_steps=20, start_lr=0.1)
    )
    assert s == py
    assert s.end_step == 125


@pytest.mark.parametrize(
    ("text", "column", "length", "match"),
    [
        (
            "warmup(100) >> cosin(total_steps=1000)",
            16,
            5,
            "unknown schedule 'cosin'; valid names: constant, cosine",
        ),
        (
            "cosine(total_step=3)",
            8,
            10,
            "cosine\\(\\) has no parameter 'total_step'; valid: total_steps",
        ),
        (
            "cosine(total_steps=-3)",
            8,
            14,
            "total_steps must be an int >= 1, got total_steps=-3",
        ),
        ("step(10) >> cosine(10)", 10, 2, "never ends, so nothing can follow it"),
        ("cosine(10", 10, 1, "expected ',' or '\\)' in cosine\\(...\\), found the end"),
        (
            "cosine(10) cosine(5)",
            12,
            6,
            "after a complete schedule \\(join schedules with '>>'\\)",
        ),
        ("cosine 10", 8, 2, "expected '\\(' after 'cosine'"),
        (
            "cosine(10) >> ",
            15,
            1,
            "expected a schedule name, found the end of the text",
        ),
        (
            "cosine(10, 20)",
            12,
            2,
            "cosine\\(\\) takes 1 positional argument \\(total_steps\\)",
        ),
        ("cosine(total_steps=1, 5)", 23, 1, "positional argument after a keyword"),
        ("cosine(10, total_steps=20)", 12, 14, "'total_steps' twice"),
        ("cosine(10) ; x", 12, 1, "unexpected character ';'"),
        ("", 1, 1, "empty schedule"),
        ("cyclic(low_lr=2, up_steps=4)", 8, 8, "low_lr must be <= peak_lr"),
        (
            "warmup(3) >> exponential()",
            14,
            11,
            r"factor must be given, got factor=None\. "
            r"Write exponential\(factor=\.\.\.\) or give it as positional argument 1\.",
        ),
        (
            "cyclic(up_steps=4)",
            1,
            6,
            r"low_lr must be given, got low_lr=None\. Write cyclic\(low_lr=\.\.\.\)\.",
        ),
        (
            "multistep(milestones=[3, 1])",
            11,
            17,
            "milestones must be non-decreasing",
        ),
    ],
)
def test_errors_point_at_the_token(
    text: str, column: int, length: int, match: str
) -> None:
    with pytest.raises(ScheduleSyntaxError, match=match) as info:
        parse_schedule(text)
    e = info.value
    assert isinstance(e, ValueError)
    assert (e.column, e.length) == (column, length)
    lines = str(e).splitlines()
    assert lines[1] == "  " + text
    assert lines[2] == "  " + " " * (column - 1) + "^" * length
    assert "\n" not in e.one_line()
    assert f"column {column}" in e.one_line()


def test_overflow_is_a_syntax_error_at_the_argument() -> None:
    text = "cosine_restarts(10, cycle_factor=1e300, num_cycles=3)"
    for spec in (text, text + " >> constant()"):
        with pytest.raises(ScheduleSyntaxError, match="cycle_factor must be") as info:
            parse_schedule(spec)
        assert (info.value.column, info.value.length) == (21, 18)


@pytest.fixture
def overflowing() -> Any:
    """Registered schedules whose own arithmetic overflows (users write such)."""

    @dataclass(frozen=True, kw_only=True)
    class Boom(lrkit.Schedule):
        name: ClassVar[str] = "boom_test"
        positional: ClassVar[tuple[str, ...]] = ("power",)
        power: float = 1.0

        def __post_init__(self) -> None:
            math.exp(self.power)  # OverflowError past ~709

        def __call__(self, step: int) -> float:
            return 1.0

    @dataclass(frozen=True, kw_only=True)
    class Long(lrkit.Schedule):
        name: ClassVar[str] = "long_test"
        positional: ClassVar[tuple[str, ...]] = ("power",)
        power: float = 1.0

        def __call__(self, step: int) -> float:
            return 1.0

        @property
        def end_step(self) -> int | None:
            return math.ceil(10.0**self.power)  # OverflowError past ~308

    lrkit.register(Boom)
    lrkit.register(Long)
    yield
    del _REGISTRY["boom_test"], _REGISTRY["long_test"]


@pytest.mark.usefixtures("overflowing")
@pytest.mark.parametrize(
    ("text", "column", "length", "match"),
    [
        ("boom_test(1000)", 1, 9, r"boom_test\(...\): OverflowError while building"),
        (
            "warmup(5) >> boom_test(power=1e3)",
            14,
            9,
            r"boom_test\(...\): OverflowError while building",
        ),
        (
            "long_test(400) >> constant()",
            1,
            14,
            r"long_test\(...\): OverflowError computing its end_step",
        ),
        (
            "warmup(warmup_frac=0.5, then=long_test(400))",
            1,
            6,
            r"warmup\(...\): OverflowError while building",
        ),
    ],
)
def test_arithmetic_errors_become_syntax_errors(
    text: str, column: int, length: int, match: str
) -> None:
    with pytest.raises(ScheduleSyntaxError, match=match) as info:
        parse_schedule(text)
    assert (info.value.column, info.value.length) == (column, length)
    assert isinstance(info.value.__cause__, OverflowError)
    # the same schedules with small arguments work
    assert parse_schedule("long_test(2) >> boom_test(3)").end_step is None
    assert parse_schedule("long_test(2) >> constant()").end_step == 100


def test_parse_plateau() -> None:
    p = parse_plateau("plateau(patience=3, factor=0.5, mode=max)")
    assert (p.patience, p.factor, p.mode) == (3, 0.5, "max")
    with pytest.raises(
        ScheduleSyntaxError, match="unknown schedule 'cosine'; valid names: plateau"
    ):
        parse_plateau("cosine(10)")


names = st.sampled_from(
    [
        "cosine({n}, end_lr={f})",
        "linear({n}, start_lr={f}, end_lr=1)",
        "polynomial({n}, 2, end_lr={f})",
        "one_cycle({n}, warmup_frac=0.3)",
        "wsd({n}, decay_frac=0.5, end_lr={f})",
        "multistep([{n}], factor={f2})",
        "constant({f})",
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(
        st.tuples(
            names, st.integers(10, 500), st.floats(0.0, 1.0), st.floats(0.01, 1.0)
        ),
        min_size=1,
        max_size=4,
    ),
    warm=st.integers(0, 50),
)
def test_random_texts_round_trip(
    parts: list[tuple[str, int, float, float]], warm: int
) -> None:
    texts = [tpl.format(n=n, f=repr(f), f2=repr(f2)) for tpl, n, f, f2 in parts]
    # constant() has no length: only the last part may be one
    texts = [t for t in texts[:-1] if not t.startswith("constant")] + texts[-1:]
    text = " >> ".join([f"warmup({warm})", *texts])
    s = parse_schedule(text)
    again = lrkit.schedule_from_config(json.loads(json.dumps(s.to_config())))
    assert again == s
    assert [again(t) for t in range(0, 2000, 37)] == [s(t) for t in range(0, 2000, 37)]
