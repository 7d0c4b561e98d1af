"""lrkit.suggest on synthetic curves with known shapes (framework-free)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lrkit.suggest import RULES, Suggestion, smooth_curve, suggest


def curve(
    n: int = 100,
    lo: float = -7.0,
    hi: float = 1.0,
    descent_at: float = -3.0,
    blowup_at: float = -0.5,
    noise: float = 0.0,
    seed: int = 0,
    start: float = 2.3,
    drop: float = 2.0,
) -> tuple[np.ndarray, np.ndarray]:
    """A range-test-like curve: flat, a sigmoid descent around 10**descent_at,
    then an exponential blow-up past 10**blowup_at."""
    lrs = np.logspace(lo, hi, n)
    x = np.log10(lrs)
    loss = start - drop / (1 + np.exp(-4 * (x - descent_at)))
    loss = loss + np.where(x > blowup_at, np.expm1(3 * (x - blowup_at)) * drop, 0.0)
    rng = np.random.default_rng(seed)
    return lrs, loss + noise * rng.standard_normal(n)


class TestShape:
    def test_suggestion_between_descent_and_blowup(self) -> None:
        lrs, loss = curve()
        s = suggest(lrs, loss)
        assert 10**-3.5 < s.lr < 10**-0.5
        assert s.low <= s.lr <= s.high
        assert 0.0 < s.confidence <= 1.0
        assert s.method == "lrkit"

    @pytest.mark.parametrize("descent", [-5.0, -3.0, -1.5])
    def test_follows_the_curve(self, descent: float) -> None:
        lrs, loss = curve(descent_at=descent, blowup_at=descent + 2.0)
        s = suggest(lrs, loss)
        assert 10 ** (descent - 0.5) < s.lr < 10 ** (descent + 2.0)

    def test_noise_moves_the_suggestion_little(self) -> None:
        lrs, clean = curve()
        ref = suggest(lrs, clean).lr
        picks = [suggest(*curve(noise=0.05, seed=k)).lr for k in range(8)]
        spread = np.std(np.log2(picks))
        assert spread < 0.7
        assert abs(np.median(np.log2(picks)) - math.log2(ref)) < 1.0

    def test_shift_and_scale_invariant(self) -> None:
        lrs, loss = curve(noise=0.02)
        a = suggest(lrs, loss)
        b = suggest(lrs, 1000.0 + 7.5 * loss)
        c = suggest(lrs, loss - 50.0)  # negative losses
        assert a.lr == pytest.approx(b.lr) == pytest.approx(c.lr)

    @pytest.mark.parametrize("method", sorted(RULES))
    def test_every_rule_gives_a_positive_lr_in_range(self, method: str) -> None:
        lrs, loss = curve(noise=0.01)
        s = suggest(lrs, loss, method=method)
        assert s.method == method
        assert lrs[0] <= s.lr <= lrs[-1]

    def test_classic_rules_match_their_definitions(self) -> None:
        lrs, loss = curve()
        _, smooth = smooth_curve(lrs, loss)
        i_min = int(np.argmin(smooth))
        assert suggest(lrs, loss, method="minimum").lr == pytest.approx(lrs[i_min] / 10)
        slope = np.gradient(smooth, np.log10(lrs))
        i_steep = int(np.argmin(slope[:i_min]))
        assert suggest(lrs, loss, method="steepest").lr == pytest.approx(lrs[i_steep])


class TestNoiseMatchedSmoothing:
    """On a noisy curve the kernel widens (up to twice) until its noise is
    below the bottom's tolerance, so the bottom stops jumping with the noise."""

    S = __import__("importlib").import_module("lrkit.suggest")

    def width(self, lrs: np.ndarray, loss: np.ndarray) -> float:
        x = np.log10(lrs)
        return float(self.S._noise_width(x, loss, self.S._smooth(x, loss, 0.15), 0.15))

    def test_clean_curve_keeps_the_bandwidth(self) -> None:
        assert self.width(*curve(n=200, noise=0.01)) == 0.15

    def test_width_follows_the_formula_between_its_limits(self) -> None:
        lrs, loss = curve(n=200, noise=0.3, seed=3)
        x = np.log10(lrs)
        smooth = self.S._smooth(x, loss, 0.15)
        drop = float(np.median(smooth[:20])) - float(smooth.min())
        sigma = self.S.robust_noise(loss)
        # points per decade within 0.3 decades of the minimum
        near = np.abs(x - x[int(np.argmin(smooth))]) <= 0.3
        density = (near.sum() - 1) / float(np.ptp(x[near]))
        expected = (sigma / (0.05 * drop)) ** 2 / (math.sqrt(2 * math.pi) * density)
        assert 0.15 < expected < 0.3  # the case under test: between the limits
        assert self.width(lrs, loss) == pytest.approx(expected)
        assert self.width(lrs, curve(n=200, noise=1.0, seed=3)[1]) == pytest.approx(0.3)

    def test_flat_noisy_curve_is_not_widened(self) -> None:
        lrs = np.logspace(-7, 1, 200)
        flat = 2.3 + 0.2 * np.random.default_rng(0).standard_normal(200)
        assert self.width(lrs, flat) == 0.15
        assert suggest(lrs, flat).lr is None

    def test_density_is_read_where_the_bottom_is(self) -> None:
        # a ladder linear in LR is denser in log-LR near its top, where the
        # bottom is: there the kernel averages more points, and noise that
        # the whole curve's mean density would call too much is not
        lrs = np.linspace(1e-4, 1.0, 400)
        x = np.log10(lrs)
        loss = 2.3 - 2.0 / (1 + np.exp(-4 * (x + 1.5)))
        loss = loss + np.where(x > -0.3, np.expm1(3 * (x + 0.3)) * 2.0, 0.0)
        noisy = loss + 0.25 * np.random.default_rng(2).standard_normal(400)
        smooth = self.S._smooth(x, noisy, 0.15)
        drop = float(np.median(smooth[:40])) - float(smooth.min())
        sigma = self.S.robust_noise(noisy)
        overall = (sigma / (0.05 * drop)) ** 2 / (math.sqrt(2 * math.pi) * 399 / 4)
        assert overall > 0.2  # the mean density would widen it
        assert self.width(lrs, noisy) == 0.15

    def test_display_smoothing_is_the_rules_smoothing(self) -> None:
        lrs, loss = curve(n=200, noise=0.45, seed=1)
        _, shown = smooth_curve(lrs, loss)
        used = self.S._prepare(lrs, loss, None, 0.15)
        assert used.bandwidth > 0.15
        np.testing.assert_allclose(shown, used.smooth)

    def test_confidence_counts_the_noise_at_the_nominal_width(self) -> None:
        lrs, loss = curve(n=200, noise=0.45, seed=1)
        s = suggest(lrs, loss)
        assert self.S._prepare(lrs, loss, None, 0.15).bandwidth > 0.15
        points = math.sqrt(2 * math.pi) * 0.15 * 199 / 8
        expected = self.S.robust_noise(loss) / math.sqrt(points)
        assert s.evidence["noise"] == pytest.approx(expected)

    def test_widening_steadies_the_suggestion_on_noisy_curves(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        clean = math.log2(suggest(*curve(n=200)).lr)

        def picks() -> np.ndarray:
            lrs = [suggest(*curve(n=200, noise=0.45, seed=k)).lr for k in range(30)]
            return np.log2([v for v in lrs if v is not None])

        widened = picks()
        monkeypatch.setattr(self.S, "MAX_WIDEN", 1.0)
        fixed = picks()
        assert len(widened) == len(fixed) == 30
        assert widened.std() < 0.75 * fixed.std()
        assert np.mean(np.abs(widened - clean)) < 0.75 * np.mean(np.abs(fixed - clean))


class TestReasons:
    def test_flat_curve_gives_no_suggestion(self) -> None:
        lrs = np.logspace(-7, 1, 100)
        rng = np.random.default_rng(1)
        s = suggest(lrs, 2.3 + 0.01 * rng.standard_normal(100))
        assert s.lr is None
        assert any("curve flat" in r and "raise end_lr" in r for r in s.reasons)

    @pytest.mark.parametrize(
        ("decades", "says", "not_says"),
        [
            # a blow-up within a decade of start_lr: it was already too high
            (0.8, "start_lr is likely already too high", "raise end_lr"),
            # flat over many decades before the blow-up: nothing left to learn
            (7.0, "likely already trained", "start_lr"),
        ],
    )
    def test_flat_until_a_blow_up_says_why(
        self, decades: float, says: str, not_says: str
    ) -> None:
        lrs = np.logspace(-decades, 0, 60)
        loss = 0.6 + 0.05 * np.random.default_rng(1).standard_normal(60)
        loss[-3:] = [5.0, 50.0, 500.0]
        s = suggest(lrs, loss, stop_reason="diverged")
        assert s.lr is None
        assert any(says in r for r in s.reasons)
        assert not any(not_says in r for r in s.reasons)

    def test_a_curve_lowest_at_its_start_says_lower_start_lr(self) -> None:
        # the ladder starts where the loss already rises: its bottom is the
        # first LR, and the rule's LR (a third of it) is below the ladder
        lrs = np.logspace(1, 2.5, 60)
        x = np.linspace(0, 1, 60)
        loss = 0.2 + 2 * np.exp(-60 * x) + 10 * np.maximum(x - 0.1, 0) ** 2
        s = suggest(lrs, loss, stop_reason="diverged")
        assert s.lr == pytest.approx(lrs[0])
        assert any("lowest at the start of the ladder" in r for r in s.reasons)
        assert any("lies below the first LR tested" in r for r in s.reasons)
        healthy = suggest(*curve())
        assert s.confidence < 0.3 * healthy.confidence
        assert not any("start of the ladder" in r for r in healthy.reasons)

    def test_no_divergence_says_raise_end_lr(self) -> None:
        lrs, loss = curve(hi=-2.0, blowup_at=5.0)  # still falling at the end
        s = suggest(lrs, loss, stop_reason="completed")
        assert any("raise end_lr" in r for r in s.reasons)
        assert s.confidence < 0.6

    def test_falling_at_start_says_lower_start_lr(self) -> None:
        lrs, loss = curve(lo=-3.0, descent_at=-3.2)
        s = suggest(lrs, loss)
        assert any("lower start_lr" in r for r in s.reasons)

    def test_noisy_curve_says_so_and_is_less_confident(self) -> None:
        clean = suggest(*curve(noise=0.0))
        noisy = [suggest(*curve(noise=1.2, seed=k)) for k in range(10)]
        said = [any("too noisy" in r or "flat" in r for r in s.reasons) for s in noisy]
        assert sum(said) >= 8
        assert all(s.confidence < 0.6 * clean.confidence for s in noisy)

    def test_nan_tail_is_cut_and_reported(self) -> None:
        lrs, loss = curve()
        loss = loss.copy()
        loss[80:] = np.nan
        s = suggest(lrs, loss)
        assert s.lr is not None and s.lr < lrs[80]
        assert any("NaN" in r for r in s.reasons)

    def test_too_few_points(self) -> None:
        s = suggest([1e-3, 1e-2, 1e-1], [1.0, 0.5, 0.7])
        assert s.lr is None
        assert any("usable points" in r for r in s.reasons)


class TestInput:
    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="losses must be as long as lrs"):
            suggest([1e-3, 1e-2], [1.0])
        with pytest.raises(ValueError, match="lrs must be strictly increasing"):
            suggest([1e-2, 1e-3], [1.0, 1.0])
        with pytest.raises(ValueError, match="lrs must be finite and > 0"):
            suggest([0.0, 1e-3], [1.0, 1.0])
        with pytest.raises(ValueError, match="method must be one of"):
            suggest([1e-3, 1e-2], [1.0, 1.0], method="magic")
        with pytest.raises(TypeError, match="lrs must be a sequence of numbers"):
            suggest(["a", "b"], [1.0, 1.0])

    def test_roundtrip_dict(self) -> None:
        s = suggest(*curve(noise=0.01))
        assert Suggestion.from_dict(s.to_dict()) == s


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(-1e9, 1e9), st.just(math.nan), st.just(math.inf)),
        min_size=1,
        max_size=120,
    ),
    st.sampled_from(sorted(RULES)),
)
def test_never_crashes_and_stays_in_bounds(values: list[float], method: str) -> None:
    lrs = np.logspace(-7, 1, len(values))
    s = suggest(lrs, values, method=method)
    assert 0.0 <= s.confidence <= 1.0
    if s.lr is not None:
        assert lrs[0] <= s.lr <= lrs[-1]
        assert s.low <= s.lr <= s.high


@settings(max_examples=40, deadline=None)
@given(st.floats(-100, 100), st.floats(0.01, 100), st.integers(0, 10_000))
def test_affine_invariance_property(shift: float, scale: float, seed: int) -> None:
    """The LR is invariant to a shift and a scaling of the loss; the confidence
    to a scaling (its "little learned" sign reads a non-negative loss's zero)."""
    lrs, loss = curve(noise=0.03, seed=seed)
    a = suggest(lrs, loss)
    b = suggest(lrs, shift + scale * loss)
    c = suggest(lrs, scale * loss)
    assert a.lr == pytest.approx(b.lr, rel=1e-6)
    assert a.confidence == pytest.approx(c.confidence, abs=1e-6)


class TestReasonsMatchTheResult:
    def test_no_edge_no_margin_and_the_reason_says_so(self) -> None:
        lrs, loss = curve(hi=-1.0, blowup_at=5.0)  # falls, then flattens: no edge
        s = suggest(lrs, loss, stop_reason="completed")
        assert s.evidence["margin"] == 1.0
        assert s.lr == pytest.approx(s.evidence["anchor"])
        assert any("as is" in r for r in s.reasons)
        assert not any("1/3" in r for r in s.reasons)

    def test_edge_gives_the_margin_and_the_reason_says_so(self) -> None:
        lrs, loss = curve()
        s = suggest(lrs, loss, stop_reason="diverged")
        assert s.evidence["margin"] == 3.0
        assert s.lr == pytest.approx(s.evidence["anchor"] / 3.0)
        assert any("1/3 of it" in r for r in s.reasons)

    def test_sparse_validation_is_not_acted_on(self) -> None:
        lrs, loss = curve()
        # five validation points, only one of them in the descent
        val_lrs = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2]
        val_losses = [2.3, 2.3, 2.3, 0.1, 2.0]
        s = suggest(lrs, loss, val_lrs=val_lrs, val_losses=val_losses)
        assert s.evidence["anchor"] == s.evidence["lr_bottom"]
        assert not any(r.startswith("validation loss reaches") for r in s.reasons)

    def test_dense_early_validation_bottom_is_followed(self) -> None:
        lrs, loss = curve()
        val_lrs = lrs[40:90]
        x = np.log10(val_lrs)
        val_losses = 1.0 + (x + 3.0) ** 2  # bottoms out at 1e-3, far before training
        s = suggest(lrs, loss, val_lrs=val_lrs, val_losses=val_losses)
        assert s.evidence["anchor"] == s.evidence["lr_bottom_val"]
        assert s.evidence["anchor"] < s.evidence["lr_bottom"]
        assert any("overfit" in r for r in s.reasons)


def _fastai_valley_index(y: np.ndarray) -> int:
    """fastai 2.x's valley loop, written out as fastai has it (the reference)."""
    n = len(y)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if y[i] < y[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return min(n - 1, max_start + int(sections) + int(sections / 2))


@settings(max_examples=60, deadline=None)
@given(st.integers(10, 120), st.integers(0, 10_000))
def test_valley_matches_fastais_loop(n: int, seed: int) -> None:
    import importlib

    S = importlib.import_module("lrkit.suggest")
    y = np.cumsum(np.random.default_rng(seed).standard_normal(n))
    c = S._Curve(np.linspace(-7, 1, n), y, y, 0.1, n, None)
    lr, _ = S._rule_valley(S._Inputs(c, None))
    assert np.log10(lr) == pytest.approx(c.x[_fastai_valley_index(y)], abs=1e-12)


PASSES_CURVE = curve(descent_at=-4.0, blowup_at=-0.5)


class TestConfidenceSigns:
    """Signs of a curve that predict picks far from the best LR lower the
    confidence and say why; only many passes over the data also move the LR."""

    def test_a_clean_wide_curve_is_trusted(self) -> None:
        lrs, loss = curve(descent_at=-4.0, blowup_at=-0.5)
        s = suggest(lrs, loss, epochs=2.0)
        assert s.confidence >= 0.9
        assert not any(
            "edge" in r or "fell only" in r or "times" in r for r in s.reasons
        )
        assert s.evidence["edge_gap_decades"] >= 1.0

    def test_sharp_edge_right_above_the_bottom(self) -> None:
        lrs, wide = curve(descent_at=-4.0, blowup_at=-0.5)
        # the same descent, but the loss turns up just past its bottom
        _, sharp = curve(descent_at=-4.0, blowup_at=-2.9)
        a, b = suggest(lrs, wide), suggest(lrs, sharp)
        assert b.evidence["edge_gap_decades"] < 0.6
        assert b.confidence < 0.6 * a.confidence
        assert any("sharp edge" in r for r in b.reasons)

    def test_little_learned_before_the_edge(self) -> None:
        lrs, loss = curve(start=2.3, drop=0.2)  # fell by 9% of its start
        s = suggest(lrs, loss)
        assert s.evidence["fell_frac"] == pytest.approx(0.087, abs=0.01)
        assert any("fell only 9%" in r for r in s.reasons)
        assert s.confidence < 0.5
        # a loss that is not non-negative has no zero to measure from
        neg = suggest(lrs, loss - 10.0)
        assert "fell_frac" not in neg.evidence
        assert neg.lr == pytest.approx(s.lr)

    def test_many_passes_over_the_data(self) -> None:
        lrs, loss = curve(descent_at=-4.0, blowup_at=-0.5)
        once = suggest(lrs, loss, epochs=1.0)
        many = suggest(lrs, loss, epochs=25.0)
        # the one sign that also moves the LR: the margin grows with the passes
        assert many.lr == pytest.approx(once.lr / 2.5)
        assert many.evidence["passes_margin"] == pytest.approx(2.5)
        assert many.evidence["margin"] == pytest.approx(3.0 * 2.5)
        assert many.confidence == pytest.approx(0.4 * once.confidence)
        assert many.evidence["epochs"] == 25.0
        (reason,) = [r for r in many.reasons if "times through" in r]
        assert "25 times" in reason and "pass validation data: val_loader=" in reason
        assert any("2.5x of that margin for the passes" in r for r in many.reasons)
        x = np.log10(lrs)
        with_val = suggest(
            lrs,
            loss,
            epochs=25.0,
            val_lrs=lrs[::2],
            val_losses=loss[::2] + 0.1 * x[::2],
        )
        assert not any("pass validation data" in r for r in with_val.reasons)

    @given(
        a=st.floats(0.0, 100.0, allow_nan=False),
        b=st.floats(0.0, 100.0, allow_nan=False),
    )
    @settings(max_examples=40, deadline=None)
    def test_passes_margin_is_clipped_proportional(self, a: float, b: float) -> None:
        """``lr(epochs) = lr(<= 10 epochs) / clip(epochs / 10, 1, 3)``: never
        higher for more passes, at most one more safety factor lower."""
        lrs, loss = PASSES_CURVE
        base = suggest(lrs, loss).lr
        lo, hi = sorted((a, b))
        few, more = suggest(lrs, loss, epochs=lo), suggest(lrs, loss, epochs=hi)
        assert base is not None and few.lr is not None and more.lr is not None
        assert more.lr <= few.lr * (1 + 1e-12)
        assert few.lr == pytest.approx(base / min(3.0, max(1.0, lo / 10.0)))
        assert base / 3.0 * (1 - 1e-12) <= more.lr

    def test_a_model_that_cannot_memorise_gets_no_passes_margin(self) -> None:
        lrs, loss = PASSES_CURVE
        once = suggest(lrs, loss, epochs=1.0)
        small = suggest(lrs, loss, epochs=25.0, params_per_example=0.3)
        big = suggest(lrs, loss, epochs=25.0, params_per_example=3.0)
        assert small.lr == once.lr and small.evidence["passes_margin"] == 1.0
        assert big.lr == pytest.approx(once.lr / 2.5)
        assert small.evidence["params_per_example"] == 0.3
        assert any(
            "fewer parameters than training examples" in r for r in small.reasons
        )
        assert small.confidence == pytest.approx(big.confidence)  # still a caution
        with pytest.raises(ValueError, match="params_per_example must be"):
            suggest(lrs, loss, params_per_example=-1.0)

    @pytest.mark.parametrize(
        ("ppe", "margin"), [(None, 2.5), (0.0, 2.5), (0.99, 1.0), (1.0, 2.5)]
    )
    def test_passes_margin_boundaries(self, ppe: float | None, margin: float) -> None:
        """Below 1 parameter per example: no passes margin; 0 means unknown."""
        lrs, loss = PASSES_CURVE
        s = suggest(lrs, loss, epochs=25.0, params_per_example=ppe)
        assert s.evidence["passes_margin"] == pytest.approx(margin)

    def test_passes_margin_without_an_edge(self) -> None:
        """No edge seen: the bottom itself, divided by the passes margin alone."""
        lrs, loss = curve(descent_at=-4.0, blowup_at=5.0)  # never turns up
        once = suggest(lrs, loss, epochs=1.0)
        many = suggest(lrs, loss, epochs=25.0)
        assert once.evidence["edge_seen"] == 0.0 and once.evidence["margin"] == 1.0
        assert many.evidence["margin"] == pytest.approx(2.5)
        assert many.lr == pytest.approx(once.lr / 2.5)

    def test_epochs_must_be_non_negative(self) -> None:
        lrs, loss = curve()
        with pytest.raises(ValueError, match=r"epochs must be .*got epochs=-1"):
            suggest(lrs, loss, epochs=-1)


def test_validation_after_the_blow_up_is_not_read() -> None:
    """A validation loss taken after the training loss turned up (the range
    test's last evaluation) must not drag the validation bottom down."""
    lrs, loss = curve(descent_at=-3.0, blowup_at=-1.5)
    x = np.log10(lrs)
    stop = int(np.argmax(loss > loss.min() + 2.0))  # the test stops here
    lrs, loss, x = lrs[: stop + 1], loss[: stop + 1], x[: stop + 1]
    # sparse validation that follows training, then one after the blow-up
    idx = [*range(3, stop, 6), stop]
    val = loss[idx] + 0.1
    val[-1] = 10.0
    s = suggest(lrs, loss, val_lrs=lrs[idx], val_losses=val)
    ev = s.evidence
    assert abs(math.log10(ev["lr_bottom_val"] / ev["lr_bottom"])) < 0.5, ev


@pytest.mark.parametrize("rise", [0.0, 0.02])
def test_a_flat_trough_that_never_turned_up_asks_for_a_wider_range(rise: float) -> None:
    """The loss falls, then stays flat to ``end_lr`` (or rises by less than a
    fifth of its drop): the edge that sets the margin was not seen, wherever
    the noise put the minimum in the trough (before, only a minimum in the
    last two points said so; one earlier got confidence 1)."""
    lrs = np.logspace(-7, 1, 120)
    x = np.log10(lrs)
    noise = 0.002 * np.random.default_rng(0).standard_normal(len(x))
    losses = 0.3 + 0.8 / (1 + np.exp((x + 2.0) * 3)) + noise + rise * (x > 0)
    s = suggest(lrs, losses, stop_reason="completed")
    assert "no divergence reached: raise end_lr" in s.reasons
    assert s.confidence <= 0.5
    assert s.evidence["margin"] == 1.0


def test_a_test_whose_steps_the_loss_scaler_skipped_says_so() -> None:
    """fp16 gradients that overflow on every step: no suggestion, and the reason
    names the scaler (not "lower start_lr or raise num_steps")."""
    lrs = np.logspace(-5, 0, 30)
    s = suggest(lrs, np.full(30, 0.69), skipped=[True] * 30)
    assert s.lr is None
    assert any("loss scaler skipped 30 of 30 steps" in r for r in s.reasons)
    few = suggest(lrs[:5], np.full(5, 0.69), skipped=[False] * 5)
    assert few.lr is None and any("usable points" in r for r in few.reasons)


def test_a_fall_at_start_lr_is_said_only_when_the_raw_loss_falls() -> None:
    """'already falling at start_lr' for a curve that falls from its first
    point; not for a flat noisy start, where the smoothing's edge alone bends
    (a review: the reason, and a 0.6x confidence, on two flat batch-32 curves)."""
    x = np.linspace(-7, 1, 200)
    rng = np.random.default_rng(0)
    blowup = np.where(x > -0.5, (x + 0.5) * 20, 0.0)
    falling = 2.0 - 1.5 / (1 + np.exp(-(x + 6.2) / 0.5)) + blowup
    flat = 1.0 - 0.7 / (1 + np.exp(-(x + 2.5) / 0.3)) + blowup
    said = "loss already falling at start_lr: lower start_lr"
    s = suggest(10**x, falling + 0.02 * rng.standard_normal(200))
    assert said in s.reasons
    for seed in range(5):
        noise = 0.15 * np.random.default_rng(seed).standard_normal(200)
        assert said not in suggest(10**x, flat + noise).reasons


# scikit-learn's MLPClassifier(hidden_layer_sizes=(16,), random_state=0), Adam,
# on all of iris (full batch), lrkit.sklearn.find_lr(num_steps=60): 1e-7 .. 10
# fmt: off
IRIS_LADDER = [
    *[1.3975] * 8, 1.3974, 1.3974, 1.3973, 1.3973, 1.3972, 1.3971, 1.3969, 1.3967,
    1.3963, 1.3959, 1.3953, 1.3945, 1.3934, 1.3919, 1.3898, 1.387, 1.3832, 1.3781,
    1.3711, 1.3618, 1.3495, 1.3331, 1.3117, 1.2841, 1.2493, 1.2068, 1.1572, 1.1046,
    1.0597, 1.0434, 1.0877, 1.2074, 1.3229, 1.2755, 1.0424, 0.8283, 0.6208, 0.6177,
    0.6572, 0.5663, 0.6671, 1.6688, 0.3781, 0.8357, 2.0738, 0.7832, 0.6581, 0.4864,
    1.7744, 1.7553, 1.2639, 0.4858,
]
# fmt: on


def test_one_low_loss_after_the_edge_is_not_the_bottom() -> None:
    """A real ladder that turned up above its start and whose last loss
    happened to be low (1.77, 1.76, 1.26, then 0.49 at end_lr): the suggestion
    was end_lr itself ('no divergence reached'; a full fit at 10 ends at
    chance, the best is ~0.03), the lone point being the running median at the
    end. A high last loss (the rise the test stops on) still counts in full."""
    lrs = np.logspace(-7, 1, 60)
    s = suggest(lrs, IRIS_LADDER, stop_reason="completed")
    assert s.lr is not None and s.evidence["edge_seen"] == 1.0
    assert 0.005 < s.lr < 0.3, s.lr
    assert "no divergence reached: raise end_lr" not in s.reasons
    # without the lucky last point, the same pick
    cut = suggest(lrs[:-1], IRIS_LADDER[:-1], stop_reason="completed")
    assert cut.lr == pytest.approx(s.lr, rel=0.2)
    # a rise at the very end is read as before: the last point is the edge
    x = np.linspace(-4, 1, 60)
    rng = np.random.default_rng(0)
    rise = 1.4 - 0.8 / (1 + np.exp(-(x + 1.5) / 0.2)) + 0.01 * rng.standard_normal(60)
    rise[-1] = 4.0
    high = suggest(10**x, rise, stop_reason="diverged")
    assert high.evidence["edge_seen"] == 1.0 and high.lr is not None
    assert high.lr < 10 ** (x[-1] - 1)


def test_a_ladder_too_coarse_to_read_says_so() -> None:
    """30 steps over 8 decades (the CLI's --num-steps 30): each LR gets a step
    or so; the reason says the ladder is too coarse (it said 'the model is
    likely already trained') and the confidence falls. The default density
    (about 12 per decade) is not affected."""
    x = np.linspace(-7, 1, 30)
    losses = 1.0 - 0.6 / (1 + np.exp(-(x + 2.0) / 0.3)) + np.where(x > 0, 5 * x, 0)
    s = suggest(10**x, losses)
    assert any("steps per decade of LR (fewer than 5)" in r for r in s.reasons)
    assert s.confidence <= 0.3
    flat = suggest(10**x, np.full(30, 1.0) + 0.01 * np.sin(np.arange(30)))
    assert flat.lr is None
    assert any("3.6 steps per decade" in r for r in flat.reasons), flat.reasons
    x = np.linspace(-7, 1, 100)
    losses = 1.0 - 0.6 / (1 + np.exp(-(x + 2.0) / 0.3)) + np.where(x > 0, 5 * x, 0)
    assert not any("per decade" in r for r in suggest(10**x, losses).reasons)
    # a linear ladder of 40 steps is sparse at its start only: dense where the
    # loss moves, not coarse (review: it read "4.9 steps per decade")
    lin = np.linspace(1e-7, 10, 40)
    x = np.log10(lin)
    losses = (
        1.0
        - 0.6 / (1 + np.exp(-(x - 0.3) / 0.1))
        + np.where(x > 0.8, 20 * (x - 0.8), 0)
    )
    assert not any("per decade" in r for r in suggest(lin, losses).reasons)
