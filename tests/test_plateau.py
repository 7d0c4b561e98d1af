"""Tests of lrkit.plateau: exact semantics, immutability, equivalence with torch."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from lrkit import PlateauState, ReduceOnPlateau


def run(plateau: ReduceOnPlateau, metrics: list[float], lr: float = 1.0) -> list[float]:
    state = plateau.init()
    scales = []
    for m in metrics:
        state = plateau.update(state, m, lr=lr)
        scales.append(state.scale)
    return scales


def test_patience_counts_like_torch() -> None:
    # first evaluation sets best; reduction at the (patience + 1)-th bad one in a row
    p = ReduceOnPlateau(patience=2, factor=0.5)
    assert run(p, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]) == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    # an improvement resets the count
    assert run(p, [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5]) == [1, 1, 1, 1, 1, 1, 0.5]
    z = ReduceOnPlateau(patience=0, factor=0.5)
    assert run(z, [1.0, 2.0, 3.0]) == [1, 0.5, 0.25]


def test_cooldown_ignores_bad_evaluations() -> None:
    p = ReduceOnPlateau(patience=0, factor=0.5, cooldown=2)
    assert run(p, [1.0] * 8) == [1, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125]


def test_thresholds_and_modes() -> None:
    rel = ReduceOnPlateau(patience=0, factor=0.5, threshold=0.1)
    # 0.95 is not 10% better than 1.0: counts as bad
    assert run(rel, [1.0, 0.95]) == [1, 0.5]
    assert run(rel, [1.0, 0.89]) == [1, 1]
    ab = ReduceOnPlateau(patience=0, factor=0.5, threshold=0.1, threshold_mode="abs")
    assert run(ab, [1.0, 0.91]) == [1, 0.5]
    assert run(ab, [1.0, 0.89]) == [1, 1]
    mx = ReduceOnPlateau(mode="max", patience=0, factor=0.5, threshold=0.0)
    assert run(mx, [0.5, 0.6, 0.6]) == [1, 1, 0.5]


def test_relative_threshold_is_sign_correct() -> None:
    # torch's best * (1 - threshold) would count -9.5 as better than best=-10
    p = ReduceOnPlateau(patience=0, factor=0.5, threshold=0.1)
    state = p.update(p.init(), -10.0)
    assert not p.improves(-9.5, state.best)
    assert p.improves(-11.5, state.best)
    assert run(p, [-10.0, -9.5]) == [1, 0.5]
    mx = ReduceOnPlateau(mode="max", patience=0, factor=0.5, threshold=0.1)
    assert not mx.improves(-9.5, -10.0)
    assert mx.improves(-8.5, -10.0)


def test_nan_and_inf_metrics_count_as_no_improvement() -> None:
    p = ReduceOnPlateau(patience=0, factor=0.5)
    assert run(p, [1.0, math.nan, math.inf]) == [1, 0.5, 0.25]
    state = p.update(p.init(), math.nan)
    assert state.best == math.inf
    # -inf in mode "min" (+inf in "max") is not a new best either (torch says it is)
    for mode, bad in (("min", -math.inf), ("max", math.inf)):
        q = ReduceOnPlateau(mode=mode, patience=0, factor=0.5)
        assert run(q, [1.0, bad, 1.0]) == [1, 0.5, 0.25]
        state = q.update(q.update(q.init(), 1.0), bad)
        assert state.best == 1.0
        assert state.bad_evals == 0 and state.reductions == 1


def test_floors_min_scale_min_lr_and_eps() -> None:
    p = ReduceOnPlateau(patience=0, factor=0.1, min_scale=0.05)
    assert run(p, [1.0, 1.0, 1.0]) == pytest.approx([1, 0.1, 0.05])
    m = ReduceOnPlateau(patience=0, factor=0.1, min_lr=0.004)
    # with lr=0.1: 0.1 -> 0.01 -> 0.004 (LR units), scale 0.04
    assert run(m, [1.0, 1.0, 1.0, 1.0], lr=0.1) == pytest.approx([1, 0.1, 0.04, 0.04])
    e = ReduceOnPlateau(patience=0, factor=0.5, eps=1e-3)
    # a reduction of the LR by <= eps is skipped: 1e-3 * 0.5 = 5e-4 change
    assert run(e, [1.0, 1.0], lr=1e-3) == [1, 1]
    state = e.update(e.update(e.init(), 1.0, lr=1e-3), 1.0, lr=1e-3)
    assert state.reductions == 0
    assert state.bad_evals == 0  # the attempt still resets the count, as torch


def test_state_is_immutable_and_serialises() -> None:
    p = ReduceOnPlateau(patience=1)
    s0 = p.init()
    s1 = p.update(s0, 1.0)
    assert s0 == PlateauState(scale=1.0, best=math.inf)
    assert s1.evals == 1
    assert s1.best == 1.0
    with pytest.raises(AttributeError):
        s1.scale = 0.5  # type: ignore[misc]
    assert PlateauState.from_dict(s1.to_dict()) == s1
    assert PlateauState.from_dict(s0.to_dict()) == s0  # inf best
    with pytest.raises(ValueError, match="state must be a dict with keys"):
        PlateauState.from_dict({"scale": 1.0})
    bad = dict(s1.to_dict(), scale=0.0)
    with pytest.raises(ValueError, match=r"state\['scale'\] must be > 0"):
        PlateauState.from_dict(bad)
    assert ReduceOnPlateau.from_config(p.to_config()) == p


def test_from_config_names_unknown_keys() -> None:
    with pytest.raises(
        ValueError,
        match=r"config must be made of ReduceOnPlateau's parameters, got "
        r"config=\{'patience': 2, 'gamma': 0\.5\}\. Unknown key 'gamma'; "
        r"valid: mode, factor, patience, threshold, threshold_mode, cooldown, "
        r"min_scale, min_lr, eps\.",
    ):
        ReduceOnPlateau.from_config({"patience": 2, "gamma": 0.5})
    with pytest.raises(TypeError, match="config must be a mapping"):
        ReduceOnPlateau.from_config([("patience", 2)])  # type: ignore[arg-type]
    assert ReduceOnPlateau.from_config({"patience": 2}).patience == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"factor": 1.0}, r"factor must be in \(0, 1\)"),
        ({"factor": 0.0}, r"factor must be in \(0, 1\)"),
        ({"mode": "minimum"}, "mode must be one of 'min', 'max'"),
        ({"patience": -1}, "patience must be an int >= 0"),
        ({"threshold_mode": "relative"}, "threshold_mode must be one of"),
        ({"threshold": 1.5}, "threshold must be < 1 with threshold_mode='rel'"),
        ({"cooldown": 1.5}, "cooldown must be an int"),
        ({"min_scale": 2.0}, r"min_scale must be in \[0, 1\]"),
        ({"min_lr": -1.0}, "min_lr must be >= 0"),
    ],
)
def test_validation(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        ReduceOnPlateau(**kwargs)  # type: ignore[arg-type]


def test_update_rejects_bad_input() -> None:
    p = ReduceOnPlateau()
    expected = "metric must be a real number or a one-element tensor, got metric="
    for bad in ("low", "0.5", True, None, [0.5], np.ones(3)):
        with pytest.raises(TypeError, match=expected):
            p.update(p.init(), bad)  # type: ignore[arg-type]
    # one-element arrays (and tensors) are scalars
    assert p.update(p.init(), np.array([0.5])).best == 0.5
    assert p.update(p.init(), np.float32(0.25)).best == 0.25
    with pytest.raises(TypeError, match="state must be a PlateauState"):
        p.update({}, 1.0)  # type: ignore[arg-type]


# ---------------------------------------------------------- torch reference

metric_streams = st.lists(
    st.one_of(st.floats(0.01, 10.0), st.sampled_from([1.0, 0.5, 2.0])),
    min_size=1,
    max_size=60,
)


@settings(max_examples=80, deadline=None)
@given(
    metrics=metric_streams,
    mode=st.sampled_from(["min", "max"]),
    factor=st.sampled_from([0.1, 0.5, 0.3]),
    patience=st.integers(0, 4),
    threshold=st.sampled_from([0.0, 1e-4, 0.05]),
    threshold_mode=st.sampled_from(["rel", "abs"]),
    cooldown=st.integers(0, 3),
    min_lr=st.sampled_from([0.0, 1e-3, 0.02]),
)
def test_same_lr_sequence_as_torch(
    metrics: list[float],
    mode: str,
    factor: float,
    patience: int,
    threshold: float,
    threshold_mode: str,
    cooldown: int,
    min_lr: float,
) -> None:
    torch = pytest.importorskip("torch")
    base = 0.1
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt,
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
    )
    ours = ReduceOnPlateau(
        mode=mode,
        factor=factor,
        patience=patience,
        threshold=threshold,
        threshold_mode=threshold_mode,
        cooldown=cooldown,
        min_lr=min_lr,
    )
    state = ours.init()
    for m in metrics:
        ref.step(m)
        state = ours.update(state, m, lr=base)
        assert base * state.scale == pytest.approx(
            opt.param_groups[0]["lr"], abs=1e-12, rel=0
        )
        assert state.bad_evals == ref.num_bad_epochs
        assert state.cooldown_left == ref.cooldown_counter
        assert state.best == ref.best
