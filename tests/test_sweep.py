"""Tests for lrkit.sweep: the grid, the widening, divergence as a result, reset,
Optuna storage (a real SQLite file) and a real torch sweep restored exactly."""

from __future__ import annotations

import itertools
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import lrkit
from lrkit import SweepResult, SweepTrial, sweep, sweep_grid


def basin(best: float, width: float = 1.0) -> Any:
    """A loss that is a parabola in log10(lr) with its minimum at ``best``."""

    def fn(lr: float) -> float:
        return 1.0 + ((math.log10(lr) - math.log10(best)) / width) ** 2

    return fn


# ----------------------------------------------------------------------- grid
def test_grid_default_is_five_quarter_decades_around_the_centre() -> None:
    g = sweep_grid(0.01)
    assert len(g) == 5
    assert g[2] == pytest.approx(0.01)
    assert g[0] == pytest.approx(0.01 / 10**0.5)
    assert g[-1] == pytest.approx(0.01 * 10**0.5)


def test_even_grid_puts_the_extra_point_below() -> None:
    g = sweep_grid(1.0, 4, 0.5)
    assert [round(math.log10(x), 6) for x in g] == [-1.0, -0.5, 0.0, 0.5]


@given(
    center=st.floats(1e-8, 1e3),
    n=st.integers(1, 12),
    step=st.floats(0.01, 2.0),
)
def test_grid_properties(center: float, n: int, step: float) -> None:
    g = sweep_grid(center, n, step)
    assert len(g) == n
    assert any(x == pytest.approx(center, rel=1e-9) for x in g)
    assert all(b > a for a, b in itertools.pairwise(g))
    logs = np.diff(np.log10(g))
    assert np.allclose(logs, step, rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"center": 0.0}, "center"),
        ({"center": -1.0}, "center"),
        ({"center": 1.0, "num_lrs": 0}, "num_lrs"),
        ({"center": 1.0, "step_decades": 0.0}, "step_decades"),
    ],
)
def test_grid_rejects_bad_arguments(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(ValueError, match=f"{param} must be"):
        sweep_grid(**kwargs)


# ------------------------------------------------------------------ the sweep
@given(
    losses=st.lists(
        st.one_of(
            st.floats(-5, 5),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        ),
        min_size=1,
        max_size=8,
    )
)
@settings(max_examples=80)
def test_best_is_the_lowest_finite_loss_ties_to_the_lower_lr(
    losses: list[float],
) -> None:
    lrs = [10.0 ** (-k) for k in range(len(losses))]  # descending on purpose
    table = dict(zip(lrs, losses, strict=True))
    r = sweep(lambda lr: table[lr], lrs=lrs, extend=0)
    assert r.lrs == tuple(sorted(lrs))
    finite = [(v, lr) for lr, v in table.items() if math.isfinite(v)]
    if not finite:
        assert r.best_lr is None and r.best_loss is None
        assert any("every run diverged" in s for s in r.reasons)
    else:
        v, lr = min(finite)
        assert r.best_lr == lr and r.best_loss == v
    assert r.diverged == tuple(
        sorted(lr for lr, v in table.items() if not math.isfinite(v))
    )
    assert [t.lr for t in r.trials] == sorted(lrs)  # run in ascending order


@given(
    best_exp=st.floats(-6, 0),
    center_exp=st.floats(-6, 0),
)
@settings(max_examples=60)
def test_widening_walks_to_a_basin_within_reach(
    best_exp: float, center_exp: float
) -> None:
    best, center = 10.0**best_exp, 10.0**center_exp
    extend = 3
    r = sweep(basin(best), around=center, extend=extend)
    # the grid spans +-0.5 decade; the widening adds up to 3 quarter decades
    reach = 0.5 + 0.25 * extend
    distance = abs(math.log10(r.best_lr / best))  # type: ignore[operator]
    d = abs(best_exp - center_exp)
    tried = sorted(t.lr for t in r.trials)
    on_edge = r.best_lr in (tried[0], tried[-1])
    assert on_edge == any("may be better" in s for s in r.reasons)
    if d <= reach - 0.25 - 1e-6:  # within reach, a step to spare
        assert distance <= 0.125 + 1e-6  # the nearest grid point
        assert not on_edge
    elif d >= reach + 0.125 + 1e-6:  # out of reach: stopped on the edge
        assert distance > 0.125
        assert on_edge
    assert len(r.trials) <= 5 + extend


def test_widening_goes_down_when_the_lowest_lr_is_best() -> None:
    r = sweep(basin(1e-4), around=1e-3, extend=3)
    assert r.best_lr == pytest.approx(1e-3 * 10**-1.0)  # two widening steps
    assert len(r.trials) == 5 + 3  # the third one was worse
    assert "widened by 3" in r.reasons[0]


def test_no_widening_when_extend_is_zero_and_the_reason_says_so() -> None:
    r = sweep(basin(1.0), around=1e-3, extend=0)
    assert len(r.trials) == 5
    assert r.best_lr == pytest.approx(1e-3 * 10**0.5)
    assert any("highest tried" in s and "extend > 0" in s for s in r.reasons)


def test_a_repeated_lr_is_run_once() -> None:
    calls: list[float] = []

    def fn(lr: float) -> float:
        calls.append(lr)
        return lr

    r = sweep(fn, lrs=[0.1, 0.01, 0.1, 0.1 * (1 + 1e-12)], extend=0)
    assert calls == [0.01, 0.1]
    assert len(r.trials) == 2


def test_divergence_is_a_result_and_stops_no_sweep() -> None:
    def fn(lr: float) -> float:
        return math.nan if lr > 0.05 else basin(0.03)(lr)

    r = sweep(fn, around=0.03, extend=2)
    assert r.diverged == tuple(x for x in r.lrs if x > 0.05)
    assert r.best_lr == pytest.approx(0.03)
    assert any("diverged" in s for s in r.reasons)
    assert r.best is not None and not r.best.diverged


def test_a_tie_at_the_edge_is_a_flat_stretch_not_a_slope() -> None:
    # nothing learned at any LR, or a coarse metric: no walk down the grid
    r = sweep(lambda lr: 2.3026, around=1e-3)
    assert len(r.trials) == 5
    assert r.best_lr == pytest.approx(1e-3 / 10**0.5)  # ties go to the lower LR
    assert not any("may be better" in s for s in r.reasons)
    assert any("flat basin" in s for s in r.reasons)
    coarse = sweep(
        lambda lr: round(0.1 + 0.02 * abs(math.log10(lr) + 3), 1), around=1e-3
    )
    assert len(coarse.trials) == 5


def test_one_lr_says_there_is_nothing_to_compare() -> None:
    r = sweep(basin(0.1), lrs=[0.01])
    assert len(r.trials) == 1 and r.best_lr == 0.01
    assert any("one LR tried" in s for s in r.reasons)


def test_flat_basin_is_reported() -> None:
    r = sweep(lambda lr: 1.0 + 1e-4 * abs(math.log10(lr) + 2), around=0.01, extend=0)
    assert any("flat basin" in s for s in r.reasons)
    r2 = sweep(basin(0.01, width=0.1), around=0.01, extend=0)
    assert not any("flat basin" in s for s in r2.reasons)


def test_runs_that_all_end_at_the_same_loss_are_flagged() -> None:
    """The LR never reached the training (a scheduler built before the sweep
    reset it): every run gives the same loss, which no real basin does."""
    r = sweep(lambda lr: 0.7995, around=0.01, extend=0)
    assert any("exactly the same loss" in s and "base_lr=lr" in s for s in r.reasons)
    # a real torch setup: a Scheduler built before the snapshot; built again
    # inside train_fn with base_lr=lr, each run trains at its own LR
    torch = pytest.importorskip("torch")
    from lrkit.torch import Scheduler, snapshot

    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    Scheduler(opt, "cosine(100)")
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    snap = snapshot(model, opt)

    def train(lr: float, fixed: bool) -> float:
        for g in opt.param_groups:
            g["lr"] = lr
        s = (
            Scheduler(opt, "cosine(20)", base_lr=lr)
            if fixed
            else Scheduler(opt, "cosine(20)")
        )
        for _ in range(20):
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            s.step()
        return float(torch.nn.functional.mse_loss(model(x), y))

    lrs = [1e-3, 1e-2, 1e-1]
    stale = sweep(lambda lr: train(lr, False), lrs=lrs, reset=snap.restore, extend=0)
    assert any("exactly the same loss" in s for s in stale.reasons)
    fixed = sweep(lambda lr: train(lr, True), lrs=lrs, reset=snap.restore, extend=0)
    assert len({t.loss for t in fixed.trials}) == 3
    assert not any("exactly the same loss" in s for s in fixed.reasons)


def test_lrs_may_be_a_numpy_array_or_a_generator() -> None:
    r = sweep(basin(1e-3), lrs=np.logspace(-5, -1, 9), extend=0)
    assert r.best_lr == pytest.approx(1e-3)
    r = sweep(basin(1e-3), lrs=(10.0**-k for k in range(1, 6)), extend=0)
    assert r.best_lr == pytest.approx(1e-3)
    with pytest.raises(TypeError, match=r"lrs\[0\] must be a real number"):
        sweep(basin(1e-3), lrs=np.ones((2, 2)))
    with pytest.raises(TypeError, match="lrs must be a sequence"):
        sweep(basin(1e-3), lrs={0.1: 1})


def test_train_fn_may_return_numpy_and_tensor_scalars() -> None:
    torch = pytest.importorskip("torch")
    r = sweep(lambda lr: np.float32(lr), lrs=[0.1, 0.2], extend=0)
    assert r.best_lr == 0.1
    r = sweep(lambda lr: torch.tensor(lr), lrs=[0.1, 0.2], extend=0)
    assert r.best_lr == 0.1
    r = sweep(lambda lr: torch.tensor([lr]), lrs=[0.1, 0.2], extend=0)  # one element
    assert r.best_lr == 0.1 and r.losses == pytest.approx((0.1, 0.2))
    assert sweep(lambda lr: np.array([lr]), lrs=[0.1, 0.2], extend=0).best_lr == 0.1
    with pytest.raises(TypeError, match="a number"):
        sweep(lambda lr: torch.tensor([lr, lr]), lrs=[0.1], extend=0)


def test_scalars_of_numpy_and_torch_are_numbers_everywhere() -> None:
    torch = pytest.importorskip("torch")
    r = sweep(basin(1e-3), around=torch.tensor(1e-3), extend=0)
    assert r.center == pytest.approx(1e-3)
    assert sweep(basin(1e-3), around=np.array(1e-3), extend=0).center == pytest.approx(
        1e-3
    )
    r = sweep(basin(1e-3), lrs=torch.logspace(-5, -1, 5, dtype=torch.float64), extend=0)
    assert r.best_lr == pytest.approx(1e-3)
    w = torch.ones(1, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor that requires grad"
        r = sweep(lambda lr: (w * lr).sum(), lrs=[0.1, 0.2], extend=0)
    assert r.best_lr == 0.1
    r = sweep(lambda lr: 10**400 if lr > 0.15 else 1.0, lrs=[0.1, 0.2], extend=0)
    assert r.diverged == (0.2,)


@pytest.mark.parametrize(
    "bad", ["0.1", None, True, np.bool_(True), [0.1], np.array([0.1, 0.2])]
)
def test_train_fn_returning_a_non_number_is_a_clear_error(bad: Any) -> None:
    with pytest.raises(TypeError, match=r"train_fn\(0\.1\) must be a number"):
        sweep(lambda lr: bad, lrs=[0.1], extend=0)


def test_progress_reports_every_lr() -> None:
    seen: list[lrkit.SweepProgress] = []
    r = sweep(basin(1.0), around=0.1, extend=3, progress=seen.append)
    assert [p.done for p in seen] == list(range(1, len(r.trials) + 1))
    assert [p.lr for p in seen] == [t.lr for t in r.trials]
    assert all(p.total >= p.done for p in seen)
    assert seen[-1].best_lr == r.best_lr
    # widened (its best was on an edge): the bar was full only at the end
    assert len(r.trials) > 3
    assert [p.done == p.total for p in seen] == [False] * (len(seen) - 1) + [True]


def test_progress_is_full_at_the_end_when_the_widening_stops() -> None:
    """The best moves inside the grid after one widening, or the widening
    budget runs out: the last report is full either way."""
    for extend in (1, 8):
        seen: list[lrkit.SweepProgress] = []
        r = sweep(
            basin(0.3), lrs=[0.01, 0.03, 0.1], extend=extend, progress=seen.append
        )
        assert seen[-1].done == seen[-1].total == len(r.trials)
        assert all(p.done < p.total for p in seen[:-1])


# ---------------------------------------------------------------------- reset
def test_reset_before_every_run_and_once_after() -> None:
    log: list[str] = []
    sweep(
        lambda lr: log.append(f"run {lr:g}") or lr,
        lrs=[1.0, 2.0],
        reset=lambda: log.append("reset"),
        extend=0,
    )
    assert log == ["reset", "run 1", "reset", "run 2", "reset"]


def test_reset_runs_when_train_fn_raises_and_the_error_propagates() -> None:
    log: list[str] = []

    def fn(lr: float) -> float:
        if lr > 1.5:
            raise RuntimeError("boom")
        return lr

    with pytest.raises(RuntimeError, match="boom") as info:
        sweep(fn, lrs=[1.0, 2.0, 3.0], reset=lambda: log.append("reset"), extend=0)
    assert log == ["reset", "reset", "reset"]  # before 1, before 2, after
    # the run that finished is not lost with the one that failed
    done = info.value.lrkit_sweep  # type: ignore[attr-defined]
    assert isinstance(done, lrkit.SweepResult) and done.lrs == (1.0,)
    assert done.best_lr == 1.0


@pytest.mark.parametrize("bad", [None, "0.3", [0.1, 0.2]])
def test_a_bad_return_value_keeps_the_finished_runs(bad: object) -> None:
    """An hour of sweep should not go with its last run's bad return value."""

    def fn(lr: float) -> Any:
        return bad if lr > 0.05 else basin(0.01)(lr)

    with pytest.raises(TypeError, match=r"train_fn\(0\.1\) must be a number") as info:
        sweep(fn, lrs=[0.003, 0.01, 0.03, 0.1], extend=0)
    done = info.value.lrkit_sweep  # type: ignore[attr-defined]
    assert done.lrs == pytest.approx([0.003, 0.01, 0.03])
    assert done.best_lr == pytest.approx(0.01)
    notes = getattr(info.value, "__notes__", None)
    if sys.version_info >= (3, 11):
        assert notes and "3 run(s) finished before this error" in notes[0]
    # nothing finished: nothing attached
    with pytest.raises(TypeError) as first:
        sweep(lambda lr: None, lrs=[0.1], extend=0)
    assert not hasattr(first.value, "lrkit_sweep")


# ------------------------------------------------------------- around objects
def test_around_a_range_test_result_and_a_suggestion() -> None:
    def step_fn(lr: float) -> float:  # falls from 1e-4, blows up past 1e-1
        x = math.log10(lr)
        return 2.0 - min(max(x + 4, 0), 2.5) + (20 * (x + 1) if x > -1 else 0)

    rt = lrkit.range_test(step_fn, start_lr=1e-7, end_lr=10)
    assert rt.suggestion is not None
    r = sweep(basin(rt.suggestion), around=rt, extend=0)
    assert r.center == pytest.approx(rt.suggestion)
    assert r.best_lr == pytest.approx(rt.suggestion)
    info = rt.suggestion_info
    assert info is not None
    assert sweep(basin(1.0), around=info, extend=0).center == pytest.approx(info.lr)


def test_around_a_result_without_suggestion_is_a_clear_error() -> None:
    flat = lrkit.suggest(np.logspace(-6, 0, 50), np.ones(50))
    assert flat.lr is None
    called: list[float] = []
    with pytest.raises(ValueError, match="around must be .*no suggestion.*lrs="):
        sweep(called.append, around=flat)  # type: ignore[arg-type]
    assert called == []


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({}, ValueError, "lrs must be given when around is not"),
        ({"lrs": [0.1], "around": 0.1}, ValueError, "lrs must be given when around"),
        ({"lrs": []}, ValueError, "lrs must be a non-empty"),
        ({"lrs": "0.1"}, TypeError, "lrs must be a sequence"),
        ({"lrs": [0.1, -1.0]}, ValueError, r"lrs\[1\] must be > 0"),
        ({"lrs": [0.1, math.nan]}, ValueError, r"lrs\[1\] must be"),
        ({"around": 0}, ValueError, "around must be > 0"),
        ({"around": "x"}, TypeError, "around must be an LR > 0"),
        ({"around": 0.1, "num_lrs": 0}, ValueError, "num_lrs must be"),
        ({"lrs": [0.1], "num_lrs": 0}, ValueError, "num_lrs must be"),
        ({"around": 1e300, "step_decades": 5.0}, ValueError, "step_decades must be"),
        ({"around": 0.1, "extend": -1}, ValueError, "extend must be"),
        ({"around": 0.1, "extend": 1.5}, TypeError, "extend must be an int"),
        ({"around": 0.1, "reset": 3}, TypeError, "reset must be callable"),
        ({"around": 0.1, "progress": "x"}, TypeError, "progress must be callable"),
        ({"around": 0.1, "param_name": ""}, TypeError, "param_name must be"),
        ({"around": 0.1, "study": object()}, TypeError, "study must be an optuna"),
    ],
)
def test_bad_arguments_fail_before_any_run(
    kwargs: dict[str, Any], exc: type[Exception], match: str
) -> None:
    called: list[float] = []
    with pytest.raises(exc, match=match):
        sweep(lambda lr: called.append(lr) or 1.0, **kwargs)
    assert called == []


def test_train_fn_must_be_callable() -> None:
    with pytest.raises(TypeError, match="train_fn must be callable"):
        sweep(1.0, lrs=[0.1])  # type: ignore[arg-type]


# ---------------------------------------------------------------------- output
def test_record_round_trip_and_summary(tmp_path: Path) -> None:
    r = sweep(
        lambda lr: math.inf if lr > 0.05 else basin(0.02)(lr), around=0.02, extend=1
    )
    path = r.save(tmp_path / "sweep.json")
    record = json.loads(path.read_text())
    assert record["format"] == "lrkit.sweep"
    assert record["best_lr"] == r.best_lr
    assert any(t["diverged"] and t["loss"] is None for t in record["trials"])
    back = SweepResult.load(path)
    assert back.lrs == r.lrs and back.best_lr == r.best_lr
    assert back.diverged == r.diverged and back.reasons == r.reasons
    text = r.summary()
    assert f"best lr {r.best_lr:.3g}" in text and "diverged" in text
    with pytest.raises(ValueError, match="record must be an lrkit sweep record"):
        SweepResult.from_dict({"format": "lrkit.range_test"})


def test_record_keeps_nan_and_infinities_apart(tmp_path: Path) -> None:
    table = {0.1: 1.0, 0.2: math.nan, 0.3: math.inf, 0.4: -math.inf}
    r = sweep(lambda lr: table[lr], lrs=list(table), extend=0)
    back = SweepResult.load(r.save(tmp_path / "s.json"))
    assert [repr(v) for v in back.losses] == ["1.0", "nan", "inf", "-inf"]
    assert back.diverged == r.diverged == (0.2, 0.3, 0.4)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"version": 99}, r"record\['version'\] must be an int from 1 to 1"),
        ({"trials": None}, r"record\['trials'\] must be a list"),
        ({"trials": [{"lr": None, "loss": 1.0}]}, r"record\['trials'\]\[0\] must be"),
    ],
)
def test_bad_records_are_clear_errors(change: dict[str, Any], match: str) -> None:
    record = sweep(basin(0.1), lrs=[0.1], extend=0).to_dict()
    with pytest.raises((ValueError, TypeError), match=match):
        SweepResult.from_dict({**record, **change})


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = sweep(lambda lr: math.nan if lr > 0.05 else lr, around=0.02, extend=0)
    fig = r.plot(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "diverged" in labels and any(lab.startswith("best") for lab in labels)
    one = SweepResult(trials=(SweepTrial(lr=0.1, loss=1.0),))
    one.plot(tmp_path / "one.png")
    assert (tmp_path / "one.png").exists()
    none = SweepResult(trials=(SweepTrial(lr=0.1, loss=math.nan),))
    labels = none.plot(tmp_path / "none.png").axes[0].get_legend_handles_labels()[1]
    assert none.best_lr is None and labels == ["diverged"]  # no empty "runs"
    exploded = sweep(lambda lr: 3.9e7 if lr > 0.3 else lr, lrs=[0.1, 0.2, 1.0])
    assert exploded.plot().axes[0].get_yscale() == "log"
    # a finite loss no axis can hold is marked along the top, not lost
    huge = sweep(lambda lr: 1e308 if lr > 0.3 else 1 + lr, lrs=[0.1, 0.2, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow in matplotlib
        ax = huge.plot().axes[0]
    assert any("off scale" in lab for lab in ax.get_legend_handles_labels()[1])
    assert ax.get_ylim()[1] < 10
    negative = sweep(lambda lr: -lr, lrs=[0.1, 0.2], extend=0)
    assert negative.plot().axes[0].get_yscale() == "linear"


# ------------------------------------------------------------------- Optuna
optuna = pytest.importorskip("optuna")


@pytest.fixture
def storage(tmp_path: Path) -> str:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return f"sqlite:///{tmp_path / 'study.db'}"


def _study(storage: str, **kw: Any) -> Any:
    return optuna.create_study(
        storage=storage, study_name="lr", load_if_exists=True, **kw
    )


def test_study_records_every_run_and_a_rerun_trains_nothing(storage: str) -> None:
    calls: list[float] = []

    def fn(lr: float) -> float:
        calls.append(lr)
        return math.nan if lr > 0.05 else basin(0.01)(lr)

    r1 = sweep(fn, around=0.02, study=_study(storage))
    n = len(calls)
    assert n == len(r1.trials)
    study = _study(storage)  # a new process would load it the same way
    states = optuna.trial.TrialState
    done = [t for t in study.trials if t.state == states.COMPLETE]
    failed = [t for t in study.trials if t.state == states.FAIL]
    assert len(done) + len(failed) == n
    assert sorted(t.params["lr"] for t in done) == pytest.approx(
        [x for x in r1.lrs if x <= 0.05]
    )
    assert all(t.user_attrs["lrkit_diverged"] for t in failed)
    assert study.best_params["lr"] == pytest.approx(r1.best_lr)
    r2 = sweep(fn, around=0.02, study=study)
    assert len(calls) == n  # nothing trained again
    assert r2.best_lr == pytest.approx(r1.best_lr)
    assert r2.diverged == pytest.approx(r1.diverged)
    # the runs that diverged come back with the loss they ended with (nan)
    assert [t.loss for t in r2.trials if t.diverged] == pytest.approx(
        [t.loss for t in r1.trials if t.diverged], nan_ok=True
    )
    assert all(math.isnan(t.loss) for t in r2.trials if t.diverged)
    assert all(t.reused for t in r2.trials)
    assert any("taken from the study" in s for s in r2.reasons)


def test_an_interrupted_sweep_resumes_where_it_stopped(storage: str) -> None:
    calls: list[float] = []
    log: list[str] = []

    def fn(lr: float) -> float:
        calls.append(lr)
        if len(calls) == 3 and not log[-1:] == ["second"]:
            # a crash, a killed job (pytest owns Ctrl-C itself)
            raise RuntimeError("interrupted")
        return basin(0.01)(lr)

    with pytest.raises(RuntimeError, match="interrupted"):
        sweep(fn, around=0.01, study=_study(storage), reset=lambda: log.append("r"))
    assert log == ["r", "r", "r", "r"]  # three runs, then the final reset
    study = _study(storage)
    # the two finished runs; nothing for the crashed one (no RUNNING trial left)
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2
    calls.clear()
    log.append("second")
    r = sweep(fn, around=0.01, study=study)
    assert len(calls) == 3  # the interrupted LR and the two after it
    assert sum(t.reused for t in r.trials) == 2
    assert r.best_lr == pytest.approx(0.01)


def test_a_queued_trial_of_the_user_is_left_alone(storage: str) -> None:
    # the user (or another worker) queued a trial: each sweep result must be
    # stored under the LR that was trained, and the queued one stay queued
    study = _study(storage)
    study.enqueue_trial({"lr": 0.5, "wd": 0.1})
    f = basin(0.01)
    sweep(f, lrs=[0.001, 0.01], study=study, extend=0)
    states = optuna.trial.TrialState
    done = [t for t in study.trials if t.state == states.COMPLETE]
    assert sorted((t.params["lr"], t.value) for t in done) == [
        (0.001, f(0.001)),
        (0.01, f(0.01)),
    ]
    waiting = [t for t in study.trials if t.state == states.WAITING]
    assert [t.system_attrs["fixed_params"] for t in waiting] == [{"lr": 0.5, "wd": 0.1}]


def test_trials_of_another_objective_are_not_taken_for_the_sweeps(
    storage: str,
) -> None:
    study = _study(storage)
    f = basin(0.01)
    study.enqueue_trial({"lr": 0.01, "wd": 0.5})
    study.optimize(
        lambda t: (
            f(t.suggest_float("lr", 1e-4, 1e-1, log=True))
            + 10 * t.suggest_float("wd", 0, 1)
        ),
        n_trials=1,
    )
    study.enqueue_trial({"lr": 0.001})  # an lr alone, but not a sweep's
    study.optimize(
        lambda t: 99.0 + t.suggest_float("lr", 1e-4, 1e-1, log=True), n_trials=1
    )
    calls: list[float] = []
    r = sweep(lambda lr: calls.append(lr) or f(lr), lrs=[0.001, 0.01, 0.1], study=study)
    assert calls == [0.001, 0.01, 0.1]
    assert r.best_lr == 0.01 and r.best_loss == f(0.01)


@pytest.mark.parametrize(
    "suggest",
    [
        lambda t: t.suggest_categorical("lr", ["auto", "1e-3"]),
        lambda t: t.suggest_float("lr", 1e-4, 1e-1),  # not on a log scale
    ],
)
def test_a_study_holding_the_lr_otherwise_is_a_clear_error(
    storage: str, suggest: Any
) -> None:
    study = _study(storage)
    study.optimize(lambda t: float(suggest(t) == "auto"), n_trials=1)
    called: list[float] = []
    with pytest.raises(ValueError, match="param_name must be .*param_name="):
        sweep(lambda lr: called.append(lr) or lr, lrs=[0.1], study=study)
    assert called == []
    r = sweep(lambda lr: lr, lrs=[0.1], study=study, param_name="sweep_lr")
    assert r.best_lr == 0.1


def test_a_maximising_or_multi_objective_study_is_refused(storage: str) -> None:
    with pytest.raises(ValueError, match="study.direction must be MINIMIZE"):
        sweep(lambda lr: lr, lrs=[0.1], study=_study(storage, direction="maximize"))
    multi = optuna.create_study(directions=["minimize", "minimize"])
    with pytest.raises(ValueError, match="single-objective"):
        sweep(lambda lr: lr, lrs=[0.1], study=multi)


def test_param_name_in_the_study(storage: str) -> None:
    study = _study(storage)
    sweep(lambda lr: lr, lrs=[0.1, 0.2], study=study, param_name="learning_rate")
    assert {tuple(t.params) for t in study.trials} == {("learning_rate",)}


# --------------------------------------------------------------- real torch
def test_real_torch_sweep_starts_each_run_alike_and_restores_everything() -> None:
    torch = pytest.importorskip("torch")
    from lrkit.torch import snapshot

    torch.manual_seed(0)
    x = torch.randn(128, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]]) + 0.05 * torch.randn(128, 1)
    model = torch.nn.Sequential(
        torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x[:96], y[:96]), batch_size=16, shuffle=True
    )
    # one step so the optimizer has state to restore
    torch.nn.functional.mse_loss(model(x[:8]), y[:8]).backward()
    opt.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt_before = json.dumps(opt.state_dict()["param_groups"])
    moments = [s["exp_avg"].clone() for s in opt.state.values()]
    rng = torch.get_rng_state()
    snap = snapshot(model, opt, loaders=[loader])
    starts: list[torch.Tensor] = []

    def train_fn(lr: float) -> float:
        starts.append(model[0].weight.detach().clone())
        for g in opt.param_groups:
            g["lr"] = lr
        for _ in range(4):
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.mse_loss(model(xb), yb).backward()
                opt.step()
        with torch.no_grad():
            return torch.nn.functional.mse_loss(model(x[96:]), y[96:])

    r = sweep(train_fn, lrs=[1e-4, 1e-3, 1e-2, 1e-1, 10.0], reset=snap.restore)
    assert all(torch.equal(s, starts[0]) for s in starts)
    assert r.best_lr in (1e-2, 1e-1)  # 1e-4 barely moves in 24 steps; 10 is wild
    assert r.best_loss is not None and r.best_loss < r.losses[0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert json.dumps(opt.state_dict()["param_groups"]) == opt_before
    assert all(
        torch.equal(a, s["exp_avg"])
        for a, s in zip(moments, opt.state.values(), strict=True)
    )
    assert torch.equal(torch.get_rng_state(), rng)


# ---------------------------------------------------------------- real Keras
def test_the_documented_keras_reset_starts_every_run_alike() -> None:
    """docs/find.md's Keras recipe, reset=lrkit.keras.snapshot(model).restore:
    two sweeps give the same losses bit for bit, the first run of the first
    sweep included (a model's first fit builds its compiled loss and metrics
    from a draw that later fits skip), every run starts from the same optimizer
    state, and the user's model and optimizer are left as they were."""
    keras = pytest.importorskip("keras")
    import lrkit.keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]])).astype("float32")
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dropout(0.1),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    snap = lrkit.keras.snapshot(model)
    weights = model.get_weights()
    opt_state = [np.array(v) for v in model.optimizer.variables]
    reset = snap.restore

    starts: list[list[np.ndarray]] = []

    def train_fn(lr: float) -> float:
        starts.append([np.array(v) for v in model.optimizer.variables])
        model.optimizer.learning_rate = lr
        h = model.fit(
            x[:48],
            y[:48],
            validation_data=(x[48:], y[48:]),
            epochs=3,
            batch_size=16,
            verbose=0,
        )
        return float(h.history["val_loss"][-1])

    r1 = sweep(train_fn, lrs=[1e-2, 1e-3], reset=reset, extend=0)
    r2 = sweep(train_fn, lrs=[1e-2, 1e-3], reset=reset, extend=0)
    # the same start, the same runs, bit for bit: r1's first run is the model's
    # first fit, and it matches r2's first, a later one
    assert r1.losses == r2.losses
    assert r1.losses[0] != r1.losses[1]
    for state in starts[1:]:  # every run began with the moments and count of the first
        for a, b in zip(state[2:], starts[0][2:], strict=True):
            np.testing.assert_array_equal(a, b)
    for w, w0 in zip(model.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(w, w0)
    for v, value in zip(model.optimizer.variables, opt_state, strict=True):
        np.testing.assert_array_equal(np.array(v), value)
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3)


def test_a_failing_last_reset_keeps_the_finished_runs() -> None:
    """The reset after the last run raises: the error carries the runs
    (lrkit_sweep and a note), as any error after finished runs does."""
    calls = []

    def reset() -> None:
        calls.append(1)
        if len(calls) == 6:  # once before each of 5 runs, then the last
            raise RuntimeError("restore failed")

    with pytest.raises(RuntimeError, match="restore failed") as info:
        sweep(basin(0.01), around=0.01, reset=reset, extend=0, progress=False)
    done = info.value.lrkit_sweep  # type: ignore[attr-defined]
    assert len(done.trials) == 5 and done.best_lr == pytest.approx(0.01)
    assert "5 run(s) finished" in info.value.__notes__[0]


def test_widened_lrs_carry_no_float_noise() -> None:
    r = sweep(basin(10.0), lrs=[0.1, 0.3], extend=3, progress=False)
    assert [t.lr for t in r.trials] == [0.1, 0.3, 0.9, 2.7, 8.1]  # not 0.8999...


def test_a_damaged_record_names_the_trial() -> None:
    record = sweep(basin(0.01), around=0.01, extend=0, progress=False).to_dict()
    for bad in ({"lr": 0.01}, {"lr": 0.01, "loss": "low"}):
        damaged = {**record, "trials": [record["trials"][0], bad]}
        with pytest.raises(ValueError, match=r"record\['trials'\]\[1\] must be"):
            lrkit.SweepResult.from_dict(damaged)


def test_a_rerun_with_a_centre_a_little_off_reuses_the_runs(storage: str) -> None:
    """A range test that is not bit-reproducible (a GPU) gives the re-run a
    centre off in its 7th digit: the finished runs are reused (all five were
    trained again, on a second grid beside the first, review)."""
    calls: list[float] = []

    def fn(lr: float) -> float:
        calls.append(lr)
        return basin(0.01)(lr)

    sweep(fn, around=0.01, study=_study(storage), extend=0, progress=False)
    n = len(calls)
    r = sweep(
        fn, around=0.01 * (1 + 3e-7), study=_study(storage), extend=0, progress=False
    )
    assert len(calls) == n and all(t.reused for t in r.trials)
    assert len(_study(storage).trials) == n


def test_an_lr_at_the_edge_of_the_floats_names_the_centre() -> None:
    """around=5e-324 blamed step_decades (review)."""
    for around in (5e-324, 1e308):
        with pytest.raises(ValueError, match="center must be an LR within"):
            sweep(lambda lr: 1.0, around=around, progress=False)
    with pytest.raises(ValueError, match="step_decades must be small enough"):
        sweep(lambda lr: 1.0, around=0.01, step_decades=200.0, progress=False)
