"""Tests of the framework-free range test (synthetic step functions)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lrkit.rangetest import (
    Progress,
    RangeTestResult,
    RangeTestSettings,
    StepOutcome,
    default_num_steps,
    lr_ladder,
    range_test,
)


def quadratic(curvature: float = 2.0, w0: float = 3.0, shift: float = 0.0):
    """Gradient descent on f(w) = c/2 (w - 1)^2 + shift: stable iff lr < 2 / c."""
    w = [w0]

    def step(lr: float) -> float:
        loss = 0.5 * curvature * (w[0] - 1.0) ** 2 + shift
        w[0] -= lr * curvature * (w[0] - 1.0)
        return loss

    return step


class TestLadder:
    def test_exp_endpoints_and_ratio(self) -> None:
        lrs = lr_ladder(1e-6, 1.0, 7)
        assert lrs[0] == 1e-6 and lrs[-1] == 1.0
        ratios = np.diff(np.log10(lrs))
        np.testing.assert_allclose(ratios, 1.0)

    def test_linear(self) -> None:
        assert lr_ladder(0.1, 0.5, 5, "linear") == pytest.approx(
            [0.1, 0.2, 0.3, 0.4, 0.5]
        )

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"start_lr": 0.0}, "start_lr must be > 0, got start_lr=0.0."),
            ({"start_lr": -1e-3}, "start_lr must be > 0"),
            ({"end_lr": 1e-8}, r"end_lr must be > start_lr=1e-07, got end_lr=1e-08"),
            ({"num_steps": 1}, "num_steps must be >= 2, got num_steps=1"),
            ({"num_steps": 10**8}, "num_steps must be <= 10,000,000, got num_steps"),
            ({"mode": "log"}, "mode must be one of 'exp', 'linear', got mode='log'"),
        ],
    )
    def test_bad_arguments(self, kwargs: dict, match: str) -> None:
        with pytest.raises(ValueError, match=match):
            lr_ladder(**kwargs)

    def test_type_errors(self) -> None:
        with pytest.raises(TypeError, match="num_steps must be an int"):
            lr_ladder(num_steps=10.5)
        with pytest.raises(TypeError, match="start_lr must be a real number"):
            lr_ladder(start_lr="1e-3")

    @given(
        st.floats(1e-9, 1e-2),
        st.floats(1.5, 1e6),
        st.integers(2, 400),
        st.sampled_from(["exp", "linear"]),
    )
    def test_monotone_and_bounded(self, start, ratio, n, mode) -> None:
        lrs = lr_ladder(start, start * ratio, n, mode)
        assert len(lrs) == n
        assert all(b > a for a, b in itertools.pairwise(lrs))
        assert lrs[0] == pytest.approx(start) and lrs[-1] == start * ratio

    def test_default_length_keeps_the_density(self) -> None:
        # 25 rungs per decade: a range widened 10x each way spends as many
        # steps on each decade of the default range as the default does
        base = range_test(lambda lr: 1.0, suggest=False)
        wide = range_test(lambda lr: 1.0, start_lr=1e-8, end_lr=100.0, suggest=False)
        assert len(base.lrs) == base.settings.num_steps == 200
        assert len(wide.lrs) == 250
        density = [
            (len(r.lrs) - 1) / math.log10(r.lrs[-1] / r.lrs[0]) for r in (base, wide)
        ]
        assert density == pytest.approx([25.0, 25.0], rel=0.01)
        assert default_num_steps(1e-3, 1e-2) == 50  # at least 50
        assert default_num_steps(1e-3, 1.0, "linear") == 200


class TestStopRules:
    def test_quadratic_diverges_above_known_lr(self) -> None:
        r = range_test(
            quadratic(curvature=4.0), start_lr=1e-4, end_lr=10.0, num_steps=80
        )
        assert r.stop_reason == "diverged"
        # GD on c/2 (w-1)^2 is unstable for lr > 2/c = 0.5: the stop comes after it
        assert r.lrs[-1] > 0.5
        # ... but not long after (within a decade of the edge)
        assert r.lrs[-1] < 5.0

    def test_stops_on_nan(self) -> None:
        def step(lr: float) -> float:
            return math.nan if lr > 1e-2 else 1.0 - math.log10(lr) * 0.01

        r = range_test(step, start_lr=1e-5, end_lr=1.0, num_steps=50)
        assert r.stop_reason == "nan"
        assert math.isnan(r.losses[-1]) and r.lrs[-1] > 1e-2
        assert all(math.isfinite(v) for v in r.losses[:-1])

    def test_completes_when_nothing_breaks(self) -> None:
        r = range_test(
            lambda lr: 1.0 / (1.0 + lr), start_lr=1e-3, end_lr=1.0, num_steps=30
        )
        assert r.stop_reason == "completed"
        assert len(r.lrs) == 30 and r.steps_done == 30

    @pytest.mark.parametrize("shift", [-1000.0, -3.0, 0.0, 1e-6, 50.0])
    def test_divergence_rule_is_shift_invariant(self, shift: float) -> None:
        ref = range_test(quadratic(), start_lr=1e-4, end_lr=10.0, num_steps=80)
        r = range_test(quadratic(shift=shift), start_lr=1e-4, end_lr=10.0, num_steps=80)
        assert r.stop_reason == ref.stop_reason == "diverged"
        assert len(r.lrs) == len(ref.lrs)

    def test_near_zero_loss_diverges_late_not_early(self) -> None:
        # a loss that falls to ~1e-9 then explodes: a ratio rule (loss > 4 * best)
        # would stop at the first tiny bump; lrkit stops where it really explodes
        def step(lr: float) -> float:
            return 1e-9 + 1.0 / (1.0 + 1e4 * lr) + (1e3 * (lr - 0.1) if lr > 0.1 else 0)

        r = range_test(step, start_lr=1e-6, end_lr=10.0, num_steps=100)
        assert r.stop_reason == "diverged"
        assert r.lrs[-1] > 0.1

    def test_lone_spike_does_not_stop_but_a_lasting_jump_does(self) -> None:
        # the loss falls by 0.6 from lr 1e-3 on; one batch (step 70, lr ~0.07)
        # spikes 3.0 above the curve, 5x its drop (training recovers from it);
        # the explosion from lr 0.1 on lasts
        def step(lr: float, spike: float = 0.0) -> float:
            fall = 0.5 * max(0.0, math.log10(lr / 1e-3))
            base = 2.3 - min(fall, 0.6) + (50.0 if lr > 0.1 else 0.0)
            return base + spike

        losses: list[float] = []

        def spiky(lr: float) -> float:
            losses.append(step(lr, 3.0 if len(losses) == 70 else 0.0))
            return losses[-1]

        r = range_test(spiky, start_lr=1e-4, end_lr=1.0, num_steps=100)
        assert r.stop_reason == "diverged"
        assert r.lrs[-1] > 0.1 > r.lrs[70]  # went on past the spike
        # with jump_steps=1 the spike alone ends the test
        losses.clear()
        one = range_test(spiky, start_lr=1e-4, end_lr=1.0, num_steps=100, jump_steps=1)
        assert one.stop_reason == "diverged" and len(one.lrs) == 71

    def test_noisy_flat_start_does_not_stop_early(self) -> None:
        rng = np.random.default_rng(0)

        def step(lr: float) -> float:
            return (
                2.3
                - 1.5 * (lr > 1e-3) * min(1.0, lr * 100)
                + 0.2 * rng.standard_normal()
            )

        r = range_test(step, start_lr=1e-7, end_lr=1.0, num_steps=100)
        assert len(r.lrs) > 50

    def test_batches_of_different_difficulty_in_a_fixed_order(self) -> None:
        """An unshuffled loader of 8 batches whose losses differ 3.5x: the
        step-to-step differences are often small while the loss swings widely,
        which once stopped a 50-step test at step 14 (LR 3e-6)."""
        cycle = [7.04, 2.6, 3.49, 3.62, 8.49, 9.28, 3.91, 4.66]
        steps = [0]

        def step(lr: float) -> float:
            i = steps[0]
            steps[0] += 1
            return cycle[i % 8] + (np.expm1(3 * (lr - 1.0)) * 10 if lr > 1 else 0.0)

        r = range_test(step, num_steps=50, suggest=False)
        assert r.lrs[-1] > 0.5  # it ran until the loss really blew up
        assert r.stop_reason in ("diverged", "completed")

    def test_skipped_steps_recorded_but_not_used(self) -> None:
        calls = []

        def step(lr: float) -> StepOutcome:
            calls.append(lr)
            skipped = len(calls) % 3 == 0
            return StepOutcome(1e6 if skipped else 1.0 / (1 + lr), skipped=skipped)

        r = range_test(step, start_lr=1e-3, end_lr=1.0, num_steps=30)
        assert r.stop_reason == "completed"  # the huge skipped losses did not stop it
        assert sum(r.skipped) == 10

    def test_batched_resolve_stops_late_by_at_most_a_batch(self) -> None:
        seen: list[int] = []

        def resolve(values):
            seen.append(len(values))
            return list(values)

        r1 = range_test(quadratic(4.0), start_lr=1e-4, end_lr=10.0, num_steps=80)
        r8 = range_test(
            quadratic(4.0),
            start_lr=1e-4,
            end_lr=10.0,
            num_steps=80,
            sync_every=8,
            resolve=resolve,
        )
        assert max(seen) == 8
        assert r8.lrs == r1.lrs  # the same recorded curve
        assert r1.steps_done <= r8.steps_done < r1.steps_done + 8


class TestValidationAndProgress:
    def test_val_fn_sparse_while_flat_dense_while_falling(self) -> None:
        n = [0]

        def val() -> float:
            n[0] += 1
            return 0.5

        def step(lr: float) -> float:  # flat until lr = 1e-2, then falling
            return 2.0 - (math.log10(lr) + 2.0 if lr > 1e-2 else 0.0)

        r = range_test(
            step, start_lr=1e-5, end_lr=1.0, num_steps=60, val_fn=val, val_every=2
        )
        gaps = np.diff(r.val_steps)
        flat = [g for i, g in zip(r.val_steps, gaps, strict=False) if r.lrs[i] < 3e-3]
        falling = [
            g for i, g in zip(r.val_steps, gaps, strict=False) if r.lrs[i] > 0.05
        ]
        assert flat and set(flat) == {8}
        assert falling and set(falling) <= {1, 2}
        assert r.val_steps[-1] == len(r.lrs) - 1  # and after the last step
        assert n[0] == len(r.val_steps) == len(r.val_losses)

    def test_progress_reports_every_step(self) -> None:
        events: list[Progress] = []
        range_test(
            lambda lr: 1.0,
            start_lr=1e-3,
            end_lr=1.0,
            num_steps=12,
            progress=events.append,
        )
        assert [e.step for e in events] == list(range(1, 13))
        assert all(e.total == 12 for e in events)


class TestResult:
    def test_roundtrip_json(self, tmp_path) -> None:
        r = range_test(quadratic(), start_lr=1e-4, end_lr=10.0, num_steps=60)
        path = r.save(tmp_path / "r.json")
        record = json.loads(path.read_text())
        assert record["format"] == "lrkit.range_test"
        assert all(v is None or math.isfinite(v) for v in record["losses"])
        back = RangeTestResult.load(path)
        assert back.lrs == r.lrs and back.stop_reason == r.stop_reason
        assert back.suggestion == r.suggestion
        assert back.suggestion_info == r.suggestion_info
        assert back.settings == r.settings

    def test_load_rejects_other_json(self, tmp_path) -> None:
        p = tmp_path / "x.json"
        p.write_text('{"format": "something else"}')
        with pytest.raises(
            ValueError, match="record must be an lrkit range-test record"
        ):
            RangeTestResult.load(p)

    def test_summary_and_repr_mention_suggestion(self) -> None:
        r = range_test(quadratic(), start_lr=1e-4, end_lr=10.0, num_steps=60)
        assert f"{r.suggestion:.3g}" in r.summary()
        assert "RangeTestResult(suggestion=" in repr(r)
        assert "<table>" in r._repr_html_()

    def test_plot_of_a_one_point_test_warns_nothing(self, tmp_path) -> None:
        import warnings

        r = range_test(lambda lr: 1.0, start_lr=1e-3, end_lr=1e-2, num_steps=10)
        one = dataclasses.replace(r, lrs=r.lrs[:1], losses=r.losses[:1])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            one.plot(tmp_path / "one.png")
        assert (tmp_path / "one.png").stat().st_size > 1000

    def test_plot_saves_png(self, tmp_path) -> None:
        r = range_test(quadratic(), start_lr=1e-4, end_lr=10.0, num_steps=60)
        fig = r.plot(tmp_path / "p.png")
        assert (tmp_path / "p.png").stat().st_size > 1000
        assert fig.axes[0].get_xscale() == "log"

    def test_settings_validation(self) -> None:
        with pytest.raises(ValueError, match="smooth_frac must be in"):
            RangeTestSettings(smooth_frac=1.5)
        with pytest.raises(TypeError, match="step_fn must be callable"):
            range_test(3.0)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e6, 1e6), st.just(math.nan), st.just(math.inf)),
        min_size=10,
        max_size=60,
    )
)
def test_any_loss_stream_gives_a_result(values: list[float]) -> None:
    it = iter(values)
    r = range_test(
        lambda lr: next(it), start_lr=1e-5, end_lr=1.0, num_steps=len(values)
    )
    assert r.stop_reason in ("completed", "diverged", "nan")
    assert len(r.lrs) == len(r.losses) == len(r.smoothed) <= len(values)
    assert r.suggestion is None or r.suggestion > 0
    assert 0.0 <= r.confidence <= 1.0


def test_a_blow_up_in_the_first_steps_stops_the_test() -> None:
    """A ladder that starts far too high: the loss explodes at step 2, inside
    the warm-up whose median sets the divergence scale (inflating it). The
    test stops there and says to lower start_lr (it ran on and read the
    curve as flat: "raise end_lr", review)."""

    def step(lr: float) -> float:
        return 1.0 if lr < 1.1e3 else 1e6 * (1 + 0.5 * math.sin(lr))

    r = range_test(step, start_lr=1e3, end_lr=1e6, num_steps=30, progress=False)
    assert r.stop_reason == "diverged" and len(r.lrs) == 3
    assert any("lower start_lr" in reason for reason in r.reasons)
    # a noisy start is no blow-up: batch losses up to 6x apart
    values = iter([1.0, 4.0, 0.6, 3.5, 1.0, 2.0, 0.8, 3.0, 1.1, 2.5] + [1.0] * 50)
    r = range_test(lambda lr: next(values), num_steps=40, progress=False)
    assert r.stop_reason == "completed" and len(r.lrs) == 40


def test_an_error_during_the_test_carries_the_curve_so_far(tmp_path: Path) -> None:
    """Ctrl-C (or any error) mid-test: the exception carries the points
    recorded so far as a RangeTestResult (lrkit_range_test, stop_reason
    'interrupted') and a note; plot and save work on it."""
    w = [3.0]

    def step(lr: float) -> float:
        if lr > 1e-2:
            raise KeyboardInterrupt
        loss = (w[0] - 1.0) ** 2
        w[0] -= lr * 2.0 * (w[0] - 1.0)
        return loss

    with pytest.raises(KeyboardInterrupt) as info:
        range_test(step, start_lr=1e-6, end_lr=10.0, num_steps=70, progress=False)
    partial = info.value.lrkit_range_test  # type: ignore[attr-defined]
    assert partial.stop_reason == "interrupted" and 0 < len(partial.lrs) < 70
    assert max(partial.lrs) <= 1e-2
    assert "lrkit_range_test" in info.value.__notes__[0]
    partial.save(tmp_path / "partial.json")
    assert RangeTestResult.load(tmp_path / "partial.json") == partial
    partial.plot(tmp_path / "partial.png")
