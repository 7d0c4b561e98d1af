"""Tests of lrkit.torch.Scheduler: torch equivalence, resume, AMP skips, frameworks."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

torch = pytest.importorskip("torch")

import lrkit  # noqa: E402
from lrkit import (  # noqa: E402
    Constant,
    Cosine,
    CosineRestarts,
    Cyclic,
    Exponential,
    Linear,
    MultiStep,
    OneCycle,
    Polynomial,
    ReduceOnPlateau,
    Step,
    Warmup,
    WarmupStableDecay,
)
from lrkit.torch import Scheduler  # noqa: E402

lrs_sched = torch.optim.lr_scheduler


def make_opt(lr: float = 0.1, groups: int = 1, **kw: Any) -> Any:
    params = [{"params": [torch.nn.Parameter(torch.zeros(2))]} for _ in range(groups)]
    return torch.optim.SGD(params, lr=lr, **kw)


def train_step(opt: Any) -> None:
    for g in opt.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    opt.step()


def drive(opt: Any, sched: Any, n: int, *, before: bool = False) -> list[float]:
    """LR applied at each of n optimizer steps (scheduler stepped after each)."""
    out = []
    for _ in range(n):
        if before:
            sched.step()
        out.append(float(opt.param_groups[0]["lr"]))
        train_step(opt)
        if not before:
            sched.step()
    return out


# ----------------------------------------------------- torch reference tests

BASE = 0.1
REFERENCES: list[tuple[str, Callable[[Any], Any], Any, float | None, int]] = [
    # name, torch factory, lrkit schedule, Scheduler base_lr (None: optimizer), steps
    (
        "StepLR",
        lambda o: lrs_sched.StepLR(o, step_size=7, gamma=0.5),
        Step(every_steps=7, factor=0.5),
        None,
        60,
    ),
    (
        "MultiStepLR",
        lambda o: lrs_sched.MultiStepLR(o, [10, 25], gamma=0.3),
        MultiStep(milestones=[10, 25], factor=0.3),
        None,
        60,
    ),
    (
        "MultiStepLR, a repeated milestone",  # decays twice there, as in torch
        lambda o: lrs_sched.MultiStepLR(o, [10, 25, 25], gamma=0.3),
        MultiStep(milestones=[10, 25, 25], factor=0.3),
        None,
        60,
    ),
    (
        "ExponentialLR",
        lambda o: lrs_sched.ExponentialLR(o, gamma=0.95),
        Exponential(factor=0.95),
        None,
        200,
    ),
    (
        "CosineAnnealingLR",
        lambda o: lrs_sched.CosineAnnealingLR(o, T_max=50, eta_min=0.001),
        Cosine(total_steps=50, end_lr=0.01),
        None,
        51,
    ),
    (
        "CosineAnnealingLR-long",
        lambda o: lrs_sched.CosineAnnealingLR(o, T_max=1000),
        Cosine(total_steps=1000),
        None,
        1001,
    ),
    (
        "CosineAnnealingWarmRestarts",
        lambda o: lrs_sched.CosineAnnealingWarmRestarts(
            o, T_0=10, T_mult=2, eta_min=0.001
        ),
        CosineRestarts(cycle_steps=10, cycle_factor=2, end_lr=0.01),
        None,
        160,
    ),
    (
        "CosineAnnealingWarmRestarts-1",
        lambda o: lrs_sched.CosineAnnealingWarmRestarts(o, T_0=7),
        CosineRestarts(cycle_steps=7),
        None,
        50,
    ),
    (
        "CyclicLR-triangular",
        lambda o: lrs_sched.CyclicLR(
            o, 0.01, 0.1, step_size_up=5, step_size_down=3, cycle_momentum=False
        ),
        Cyclic(low_lr=0.01, peak_lr=0.1, up_steps=5, down_steps=3),
        1.0,
        60,
    ),
    (
        "CyclicLR-triangular2",
        lambda o: lrs_sched.CyclicLR(
            o, 0.01, 0.1, step_size_up=4, mode="triangular2", cycle_momentum=False
        ),
        Cyclic(low_lr=0.01, peak_lr=0.1, up_steps=4, mode="triangular2"),
        1.0,
        60,
    ),
    (
        "CyclicLR-exp_range",
        lambda o: lrs_sched.CyclicLR(
            o,
            0.01,
            0.1,
            step_size_up=4,
            mode="exp_range",
            gamma=0.97,
            cycle_momentum=False,
        ),
        Cyclic(low_lr=0.01, peak_lr=0.1, up_steps=4, mode="exp_range", factor=0.97),
        1.0,
        60,
    ),
    (
        "OneCycleLR",
        lambda o: lrs_sched.OneCycleLR(
            o, max_lr=0.1, total_steps=60, cycle_momentum=False
        ),
        OneCycle(total_steps=60, peak_lr=0.1),
        1.0,
        60,
    ),
    (
        "OneCycleLR-linear",
        lambda o: lrs_sched.OneCycleLR(
            o,
            max_lr=0.1,
            total_steps=77,
            pct_start=0.25,
            anneal_strategy="linear",
            div_factor=10.0,
            final_div_factor=100.0,
            cycle_momentum=False,
        ),
        OneCycle(
            total_steps=77,
            peak_lr=0.1,
            warmup_frac=0.25,
            anneal="linear",
            start_lr=0.01,
            end_lr=1e-4,
        ),
        1.0,
        77,
    ),
    (
        "OneCycleLR-three-phase",
        lambda o: lrs_sched.OneCycleLR(
            o, max_lr=0.1, total_steps=100, three_phase=True, cycle_momentum=False
        ),
        OneCycle(total_steps=100, peak_lr=0.1, three_phase=True),
        1.0,
        100,
    ),
    (
        "LinearLR",
        lambda o: lrs_sched.LinearLR(
            o, start_factor=0.25, end_factor=1.0, total_iters=20
        ),
        Linear(total_steps=20, start_lr=0.25, end_lr=1.0),
        None,
        40,
    ),
    (
        "PolynomialLR",
        lambda o: lrs_sched.PolynomialLR(o, total_iters=30, power=2.0),
        Polynomial(total_steps=30, power=2.0),
        None,
        40,
    ),
    (
        "SequentialLR-warmup-cosine",
        lambda o: lrs_sched.SequentialLR(
            o,
            [
                lrs_sched.LinearLR(o, start_factor=0.1, total_iters=10),
                lrs_sched.CosineAnnealingLR(o, T_max=90),
            ],
            milestones=[10],
        ),
        Warmup(steps=10, start_factor=0.1, then=Cosine(total_steps=90)),
        None,
        101,
    ),
]


@pytest.mark.parametrize(
    ("name", "make", "schedule", "base_lr", "steps"),
    REFERENCES,
    ids=[r[0] for r in REFERENCES],
)
def test_same_lrs_as_torch(
    name: str, make: Any, schedule: Any, base_lr: float | None, steps: int
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own SequentialLR/OneCycle warnings
        opt_t = make_opt(BASE)
        expected = drive(opt_t, make(opt_t), steps)
    opt = make_opt(BASE)
    got = drive(opt, Scheduler(opt, schedule, base_lr=base_lr), steps)
    scale = BASE if base_lr is None else base_lr
    pure = [scale * schedule(t) for t in range(steps)]
    assert max(abs(a - b) for a, b in zip(got, expected, strict=True)) <= 1e-12
    assert max(abs(a - b) for a, b in zip(pure, expected, strict=True)) <= 1e-12


@pytest.mark.parametrize("group_lrs", [(BASE,), (BASE, 0.03)], ids=["1-group", "2"])
def test_plateau_through_scheduler_matches_torch(group_lrs: tuple[float, ...]) -> None:
    """Same LRs as torch's ReduceLROnPlateau, min_lr clamped per param group."""
    metrics = [
        1.0,
        0.9,
        0.9,
        0.95,
        0.91,
        0.9,
        0.8,
        0.85,
        0.85,
        0.86,
        0.9,
        0.99,
        0.8,
        0.81,
        0.82,
    ]

    def make() -> Any:
        opt = make_opt(BASE, groups=len(group_lrs))
        for g, lr in zip(opt.param_groups, group_lrs, strict=True):
            g["lr"] = lr
        return opt

    opt_t = make()
    ref = lrs_sched.ReduceLROnPlateau(
        opt_t, patience=1, factor=0.5, cooldown=1, min_lr=0.02
    )
    opt = make()
    sched = Scheduler(
        opt,
        Constant(),
        plateau=ReduceOnPlateau(patience=1, factor=0.5, cooldown=1, min_lr=0.02),
    )
    for m in metrics:
        train_step(opt_t)
        ref.step(m)
        train_step(opt)
        sched.step(m)
        for g, g_t in zip(opt.param_groups, opt_t.param_groups, strict=True):
            assert g["lr"] == pytest.approx(g_t["lr"], abs=1e-12, rel=0)
        assert sched.get_last_lr() == [g["lr"] for g in opt.param_groups]
    # the stream drives the larger group to the floor too: 0.1 -> 0.05 -> 0.025 -> 0.02
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02] * len(group_lrs))


def test_plateau_min_lr_per_group_with_a_schedule() -> None:
    """lr_g = min(u_g, max(u_g × plateau_scale, min_lr)), u_g = base_g × s(t)."""
    s = Warmup(steps=4) >> Cosine(total_steps=36)
    opt = make_opt(groups=2)
    opt.param_groups[1]["lr"] = 0.01
    plateau = ReduceOnPlateau(patience=0, factor=0.5, min_lr=0.004)
    sched = Scheduler(opt, s, plateau=plateau)
    floors_seen = set()
    for t in range(1, 45):
        train_step(opt)
        sched.step(1.0)  # never improves: a reduction attempt at every step
        scale = sched.plateau_scale
        for g, base in zip(opt.param_groups, (0.1, 0.01), strict=True):
            u = base * s(t)
            assert g["lr"] == pytest.approx(min(u, max(u * scale, 0.004)), rel=1e-12)
            floors_seen.add(u * scale < 0.004 < u)
    assert floors_seen == {True, False}  # some steps clamp, some do not
    assert sched.get_last_lr() == [0.0, 0.0]  # the schedule itself may reach 0


def test_a_reduction_in_warmup_keeps_its_factor_with_min_lr() -> None:
    """A reduction made while the warmup's LR is small keeps its full factor
    once the warmup is over (review: flooring the scale at min_lr / the LR of
    that moment left it at 0.168 instead of 0.1, the LR 0.0168 for good); a
    reduction that changes no LR (held at min_lr) is not made, as in torch."""
    opt = make_opt()
    plateau = ReduceOnPlateau(factor=0.1, patience=0, min_lr=1e-3)
    sched = Scheduler(opt, "warmup(100) >> constant()", plateau=plateau)
    for _ in range(5):
        train_step(opt)
        sched.step()
    sched.step(1.0)
    sched.step(2.0)  # no improvement: a reduction at step 5 of the warmup
    assert sched.plateau_scale == pytest.approx(0.1, rel=1e-12)
    for _ in range(200):
        train_step(opt)
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01, rel=1e-12)
    for _ in range(3):  # 0.001, then held at min_lr: that one is not made
        sched.step(3.0)
    assert sched.plateau_scale == pytest.approx(0.01, rel=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3, rel=1e-12)
    assert sched.plateau_state.reductions == 2


def test_bad_step_input_changes_nothing() -> None:
    s = Linear(total_steps=10)
    opt = make_opt()
    sched = Scheduler(opt, s)
    for _ in range(3):
        train_step(opt)
    before = (sched.step_count, sched.state_dict(), sched.get_last_lr())
    with pytest.raises(ValueError, match="plateau must be a ReduceOnPlateau to report"):
        sched.step(0.5)
    assert (sched.step_count, sched.state_dict(), sched.get_last_lr()) == before
    assert before[1]["step"] == 3  # the optimizer steps are still pending
    sched.step()
    assert sched.step_count == 3
    assert sched.get_last_lr() == [BASE * s(3)]

    opt = make_opt()
    sched = Scheduler(opt, s, plateau=ReduceOnPlateau(patience=0))
    for _ in range(3):
        train_step(opt)
    before = (sched.step_count, sched.state_dict(), sched.get_last_lr())
    msg = "metric must be a real number or a one-element tensor, got metric="
    for bad in ("abc", torch.ones(3), [0.5], True):
        with pytest.raises(TypeError, match=msg):
            sched.step(bad)
        assert (sched.step_count, sched.state_dict(), sched.get_last_lr()) == before
    sched.step(torch.tensor([0.5]))  # one element: fine
    assert sched.plateau_state is not None
    assert sched.plateau_state.best == 0.5
    assert sched.step_count == 3


def test_a_bad_lr_from_the_schedule_raises_and_changes_nothing() -> None:
    """NaN, inf or negative values after step 0 are an error, not a written LR."""
    for bad in (math.nan, -0.5, math.inf):

        def schedule(t: int, bad: float = bad) -> float:
            return bad if t == 3 else 1.0

        opt = make_opt(groups=2)
        sched = Scheduler(opt, [Constant(), schedule])
        for _ in range(3):
            train_step(opt)
        before = ([g["lr"] for g in opt.param_groups], sched.state_dict())
        with pytest.raises(
            lrkit.LRKitError,
            match=rf"the LR of param group 1 at step 3 must be finite and >= 0, got "
            rf"lr={bad * BASE!r} \(base_lr=0\.1 × schedule\(3\)={bad!r} × "
            rf"scales=1\.0\)\. Nothing was changed",
        ):
            sched.step()
        assert [g["lr"] for g in opt.param_groups] == before[0] == [BASE, BASE]
        assert sched.state_dict() == before[1]  # the 3 steps are still pending
        assert sched.step_count == 0
        with pytest.raises(lrkit.LRKitError, match="param group 1 at step 3"):
            Scheduler(make_opt(groups=2), [Constant(), schedule]).load_state_dict(
                {"step": 3, "plateau": None, "recovery_scale": 1.0}
            )

    # with a plateau the bad value is found before the plateau sees it
    opt = make_opt()
    sched = Scheduler(
        opt, lambda t: math.nan if t >= 2 else 1.0, plateau=ReduceOnPlateau()
    )
    train_step(opt)
    sched.step(1.0)
    train_step(opt)
    with pytest.raises(lrkit.LRKitError, match="param group 0 at step 2"):
        sched.step(0.5)
    assert sched.plateau_state is not None and sched.plateau_state.evals == 1
    assert sched.step_count == 1


def test_a_nan_or_inf_lr_in_the_optimizer_is_refused() -> None:
    for bad in (math.nan, math.inf):
        opt = make_opt()
        opt.param_groups[0]["lr"] = bad
        with pytest.raises(
            ValueError,
            match=r"optimizer\.param_groups\[0\]\['lr'\] must be .*>= 0, got "
            r"optimizer\.param_groups\[0\]\['lr'\]=(nan|inf)\. It is the base LR",
        ):
            Scheduler(opt, Cosine(total_steps=10))
        assert "initial_lr" not in opt.param_groups[0]  # nothing changed
        opt = make_opt(groups=2)
        opt.param_groups[1]["initial_lr"] = bad
        with pytest.raises(
            ValueError, match=r"optimizer\.param_groups\[1\]\['initial_lr'\]"
        ):
            Scheduler(opt, Cosine(total_steps=10))


def test_base_lr_argument_errors_name_the_element() -> None:
    opt = make_opt(groups=2)
    with pytest.raises(
        TypeError, match=r"base_lr must be a real number, got base_lr='0\.1'\."
    ):
        Scheduler(opt, Constant(), base_lr="0.1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"base_lr\[1\] must be >= 0, got base_lr"):
        Scheduler(opt, Constant(), base_lr=[0.1, math.nan])
    with pytest.raises(TypeError, match=r"base_lr\[0\] must be a real number"):
        Scheduler(opt, Constant(), base_lr=["0.1", 0.2])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"base_lr must be one float or 2 \(one per"):
        Scheduler(opt, Constant(), base_lr=[0.1])
    assert all("initial_lr" not in g for g in opt.param_groups)


def test_assigning_base_lrs_is_honoured_and_validated() -> None:
    s = Cosine(total_steps=10)
    opt = make_opt(groups=2)
    sched = Scheduler(opt, s)
    drive(opt, sched, 2)
    sched.base_lrs = [1.0, 0.5]  # torch's attribute: takes effect at once
    assert sched.base_lrs == [1.0, 0.5]
    assert [g["lr"] for g in opt.param_groups] == [s(2), 0.5 * s(2)]
    assert drive(opt, sched, 3) == [1.0 * s(t) for t in (2, 3, 4)]
    sched.base_lrs[1] = 0.25  # in place, as on a torch scheduler: the next update
    train_step(opt)
    sched.step()
    assert sched.get_last_lr() == [s(6), 0.25 * s(6)]
    before = (sched.get_last_lr(), list(sched.base_lrs))
    for bad, exc, match in [
        ([1.0], ValueError, r"base_lrs must be 2 floats \(one per group\)"),
        ([1.0, math.nan], ValueError, r"base_lrs\[1\] must be >= 0"),
        ([1.0, -1.0], ValueError, r"base_lrs\[1\] must be >= 0"),
        (["1", 1.0], TypeError, r"base_lrs\[0\] must be a real number"),
        (1.0, TypeError, r"base_lrs must be a list of 2 floats"),
    ]:
        with pytest.raises(exc, match=match):
            sched.base_lrs = bad  # type: ignore[assignment]
        assert (sched.get_last_lr(), sched.base_lrs) == before
    sched.base_lrs = [torch.tensor(0.3), 0.2]  # torch keeps tensors there too
    assert sched.get_last_lr() == [pytest.approx(0.3 * s(6)), 0.2 * s(6)]


def test_last_epoch_is_read_only_and_sequential_lr_says_what_to_do() -> None:
    opt = make_opt()
    sched = Scheduler(opt, Cosine(total_steps=10))
    drive(opt, sched, 2)
    assert sched.last_epoch == sched.step_count == 2
    with pytest.raises(
        AttributeError,
        match=r"last_epoch must be left to the Scheduler \(it is the optimizer-step "
        r"count, read-only\), got last_epoch=5\. To move the count, use "
        r"load_state_dict",
    ):
        sched.last_epoch = 5
    assert sched.last_epoch == 2
    opt = make_opt()
    first = Scheduler(opt, "warmup(5)")
    then = lrs_sched.CosineAnnealingLR(opt, 10)
    with pytest.raises(AttributeError, match=r"lrkit\.Join\(parts=\[a, b\]"):
        lrs_sched.SequentialLR(opt, [first, then], milestones=[5])
    # ChainedScheduler only calls step(): it works, and the lrkit scheduler sets
    # the LR outright each step, as torch's LambdaLR does
    s = Cosine(total_steps=10)
    opt = make_opt()
    chained = lrs_sched.ChainedScheduler(
        [Scheduler(opt, s), lrs_sched.ExponentialLR(opt, 0.9)]
    )
    for _ in range(3):
        train_step(opt)
        chained.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(BASE * s(3) * 0.9)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_a_copy_counts_its_own_optimizer_steps(how: str) -> None:
    import pickle

    s = Warmup(steps=3) >> Cosine(total_steps=20, end_lr=0.1)
    opt = make_opt()
    sched = Scheduler(opt, s, plateau=ReduceOnPlateau(patience=0, factor=0.5))
    drive(opt, sched, 4)
    sched.step(1.0)
    train_step(opt)  # a step still pending when copied
    copied = (
        copy.deepcopy(sched) if how == "deepcopy" else pickle.loads(pickle.dumps(sched))
    )
    opt2 = copied.optimizer
    assert opt2 is not opt
    assert copied.state_dict() == sched.state_dict()

    def run(o: Any, sc: Any) -> list[float]:
        out = drive(o, sc, 6)
        sc.step(2.0)  # no improvement: a reduction
        return out + drive(o, sc, 6)

    original = run(opt, sched)
    assert run(opt2, copied) == original
    assert copied.state_dict() == sched.state_dict()
    assert copied.step_count == 17 and copied.plateau_scale == 0.5
    # the pending step is applied at the first step() after the copy
    assert original[:2] == [BASE * s(4), BASE * s(6)]


# ---------------------------------------------------------------- semantics


def test_order_of_step_calls_does_not_matter() -> None:
    s = Warmup(steps=5) >> Cosine(total_steps=20)
    o1, o2 = make_opt(), make_opt()
    after = drive(o1, Scheduler(o1, s), 30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        before = drive(o2, Scheduler(o2, s), 30, before=True)
    assert after == before == [BASE * s(t) for t in range(30)]


def test_step_without_optimizer_step_does_not_advance(
    caplog: pytest.LogCaptureFixture,
) -> None:
    opt = make_opt()
    sched = Scheduler(opt, Linear(total_steps=10))
    with caplog.at_level(logging.INFO, logger="lrkit.torch.scheduler"):
        for _ in range(5):
            sched.step()
    assert sched.step_count == 0
    assert sched.get_last_lr() == [BASE]
    assert sum("no optimizer step" in r.message for r in caplog.records) == 1


def test_stepping_once_per_epoch_uses_the_optimizer_step_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    s = Cosine(total_steps=40)
    opt = make_opt()
    sched = Scheduler(opt, s)
    seen = []
    with caplog.at_level(logging.INFO, logger="lrkit.torch.scheduler"):
        for _epoch in range(4):
            for _ in range(10):
                seen.append(opt.param_groups[0]["lr"])
                train_step(opt)
            sched.step()
    assert seen == [BASE * s(10 * (i // 10)) for i in range(40)]
    assert sched.step_count == 40
    assert any("saw 10 optimizer steps" in r.message for r in caplog.records)


def test_gradscaler_skipped_steps_do_not_advance_and_do_not_warn() -> None:
    s = Warmup(steps=4) >> Cosine(total_steps=16)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=BASE)
    sched = Scheduler(opt, s)
    scaler = torch.amp.GradScaler("cpu")
    x = torch.ones(4, 3)
    skip_at = {0, 3, 4, 9}
    applied, counts = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for i in range(20):
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            if i in skip_at:
                loss = loss * float("inf")  # inf gradients: GradScaler skips this step
            scaler.scale(loss).backward()
            applied.append(opt.param_groups[0]["lr"])
            scaler.step(opt)
            scaler.update()
            sched.step()
            counts.append(sched.step_count)
    taken = [i for i in range(20) if i not in skip_at]
    assert counts[-1] == len(taken)
    # the LR of the k-th real step is schedule(k): skips neither advance nor repeat
    real_lrs = [applied[i] for i in taken]
    assert real_lrs == [BASE * s(k) for k in range(len(taken))]


def test_torch_warns_falsely_on_a_skipped_first_step_we_do_not() -> None:
    """The false "lr_scheduler.step() before optimizer.step()" warning torch gives."""

    def run(make: Callable[[Any], Any]) -> list[str]:
        model = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(model.parameters(), lr=BASE)
        sched = make(opt)
        scaler = torch.amp.GradScaler("cpu")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for i in range(3):
                opt.zero_grad()
                loss = model(torch.ones(2, 3)).sum() * (float("inf") if i == 0 else 1.0)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                sched.step()
        return [str(w.message) for w in caught]

    torch_msgs = run(lambda o: lrs_sched.LambdaLR(o, lambda t: 1.0))
    assert any("before `optimizer.step()`" in m for m in torch_msgs)
    assert run(lambda o: Scheduler(o, Constant())) == []


def test_per_group_schedules_and_base_lrs() -> None:
    opt = make_opt(groups=2)
    opt.param_groups[1]["lr"] = 0.01
    a, b = Cosine(total_steps=10), Linear(total_steps=10, start_lr=0.0, end_lr=1.0)
    sched = Scheduler(opt, [a, b])
    assert sched.base_lrs == [0.1, 0.01]
    for t in range(12):
        assert sched.get_last_lr() == [0.1 * a(t), 0.01 * b(t)]
        assert [g["lr"] for g in opt.param_groups] == sched.get_last_lr()
        train_step(opt)
        sched.step()
    # one schedule scaling each group's base LR
    opt2 = make_opt(groups=2)
    opt2.param_groups[1]["lr"] = 0.5
    s2 = Scheduler(opt2, a)
    assert s2.get_last_lr() == [0.1, 0.5]
    # absolute values with base_lr=1.0; per-group explicit bases
    opt3 = make_opt(groups=2)
    assert Scheduler(opt3, Constant(lr=3e-4), base_lr=1.0).get_last_lr() == [3e-4, 3e-4]
    opt4 = make_opt(groups=2)
    assert Scheduler(opt4, Constant(), base_lr=[0.2, 0.3]).get_last_lr() == [0.2, 0.3]


def test_a_list_of_text_specs_one_per_group() -> None:
    opt = make_opt(groups=2)
    opt.param_groups[1]["lr"] = 0.01
    sched = Scheduler(opt, ["cosine(10)", Linear(total_steps=10, start_lr=0.0)])
    a, b = Cosine(total_steps=10), Linear(total_steps=10, start_lr=0.0)
    for t in range(12):
        assert sched.get_last_lr() == [0.1 * a(t), 0.01 * b(t)]
        train_step(opt)
        sched.step()
    with pytest.raises(ValueError, match="unknown schedule 'cosin'"):
        Scheduler(make_opt(groups=2), ["cosin(10)", "cosine(10)"])


def test_tensor_lr_is_updated_in_place() -> None:
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p], lr=torch.tensor(0.01))
    lr_tensor = opt.param_groups[0]["lr"]
    sched = Scheduler(opt, Linear(total_steps=4, start_lr=1.0, end_lr=0.0))
    p.grad = torch.ones_like(p)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] is lr_tensor
    assert float(lr_tensor) == pytest.approx(0.0075)


def test_text_spec_and_validation() -> None:
    opt = make_opt()
    sched = Scheduler(opt, "warmup(2) >> cosine(total_steps=4)")
    assert sched.get_last_lr() == [pytest.approx(0.1 / 3)]
    assert isinstance(sched, torch.optim.lr_scheduler.LRScheduler)
    with pytest.raises(TypeError, match="optimizer must be a torch optimizer"):
        Scheduler(object(), Constant())  # type: ignore[arg-type]
    with pytest.raises(
        TypeError,
        match=r"schedule must be a schedule \(callable\), a text spec or a list of "
        r"them \(one per param group\), got schedule=3\.",
    ):
        Scheduler(make_opt(), 3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"schedule\[1\] must be callable"):
        Scheduler(make_opt(groups=2), [Constant(), 3])  # type: ignore[list-item]
    with pytest.raises(
        ValueError, match="schedule must be one schedule or one per param group"
    ):
        Scheduler(make_opt(groups=2), [Constant()])
    with pytest.raises(TypeError, match=r"plateau must be a lrkit\.ReduceOnPlateau"):
        Scheduler(make_opt(), Constant(), plateau=0.5)  # type: ignore[arg-type]
    untouched = make_opt()
    with pytest.raises(ValueError, match="base_lr must be >= 0"):
        Scheduler(untouched, Constant(), base_lr=-1.0)
    assert "initial_lr" not in untouched.param_groups[0]  # bad input changes nothing
    with pytest.raises(ValueError, match="plateau must be a ReduceOnPlateau to report"):
        sched.step(0.5)


def test_param_group_added_later_is_a_clear_error() -> None:
    opt = make_opt()
    sched = Scheduler(opt, Cosine(total_steps=5))
    opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))]})
    train_step(opt)
    with pytest.raises(
        lrkit.LRKitError, match="2 param groups but the Scheduler was built for 1"
    ):
        sched.step()


def test_warmup_cosine_plateau_compose() -> None:
    s = Warmup(steps=5) >> Cosine(total_steps=45, end_lr=0.01)
    opt = make_opt()
    sched = Scheduler(opt, s, plateau=ReduceOnPlateau(patience=0, factor=0.5))
    metrics = iter([1.0, 0.5, 0.6, 0.7, 0.4, 0.45])
    for t in range(60):
        train_step(opt)
        sched.step()
        if t % 10 == 9:
            sched.step(next(metrics))
        assert sched.get_last_lr()[0] == pytest.approx(
            BASE * s(t + 1) * sched.plateau_scale
        )
    assert sched.plateau_scale == 0.125
    assert sched.plateau_state is not None
    assert sched.plateau_state.evals == 6


def test_recovery_scale_interface() -> None:
    opt = make_opt()
    sched = Scheduler(opt, Cosine(total_steps=10))
    train_step(opt)
    sched.step()
    assert sched.recovery_scale == 1.0
    sched.set_recovery_scale(0.25)
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.25 * BASE * Cosine(total_steps=10)(1)
    )
    assert sched.get_last_lr() == [opt.param_groups[0]["lr"]]
    assert sched.state_dict()["recovery_scale"] == 0.25
    with pytest.raises(ValueError, match="recovery_scale must be > 0"):
        sched.set_recovery_scale(0.0)
    assert sched.recovery_scale == 0.25
    other = Scheduler(make_opt(), Cosine(total_steps=10))
    other.load_state_dict(sched.state_dict())
    assert other.recovery_scale == 0.25
    assert other.get_last_lr() == sched.get_last_lr()


def test_state_dict_contents_and_validation() -> None:
    opt = make_opt()
    sched = Scheduler(opt, Cosine(total_steps=10), plateau=ReduceOnPlateau(patience=0))
    train_step(opt)  # not yet followed by sched.step(): still counted
    sd = sched.state_dict()
    assert sd == {
        "step": 1,
        "plateau": {
            "scale": 1.0,
            "best": math.inf,
            "bad_evals": 0,
            "cooldown_left": 0,
            "evals": 0,
            "reductions": 0,
        },
        "recovery_scale": 1.0,
    }
    before = sched.get_last_lr()
    for bad, exc, match in [
        ({"step": 3}, ValueError, "state_dict must be a dict with keys"),
        ({**sd, "step": -1}, ValueError, r"state_dict\['step'\] must be an int >= 0"),
        ({**sd, "recovery_scale": 0}, ValueError, "recovery_scale"),
        (
            {**sd, "plateau": {"scale": 1.0}},
            ValueError,
            "state must be a dict with keys",
        ),
        ([1, 2], TypeError, "state_dict must be a mapping"),
    ]:
        with pytest.raises(exc, match=match):
            sched.load_state_dict(bad)
        assert sched.get_last_lr() == before
        assert sched.state_dict() == sd


def test_plateau_state_mismatch_on_load(caplog: pytest.LogCaptureFixture) -> None:
    with_plateau = Scheduler(
        make_opt(), Constant(), plateau=ReduceOnPlateau(patience=0)
    )
    with_plateau.step(1.0)
    with_plateau.step(2.0)
    without = Scheduler(make_opt(), Constant())
    with caplog.at_level(logging.WARNING, logger="lrkit.torch.scheduler"):
        without.load_state_dict(with_plateau.state_dict())
    assert "ignored" in caplog.text
    fresh = Scheduler(make_opt(), Constant(), plateau=ReduceOnPlateau())
    fresh.load_state_dict(without.state_dict())
    assert fresh.plateau_state == ReduceOnPlateau().init()


def test_run_length_may_change_on_resume() -> None:
    opt = make_opt()
    sched = Scheduler(opt, Cosine(total_steps=100))
    drive(opt, sched, 40)
    sd = sched.state_dict()
    opt2 = make_opt()
    longer = Cosine(total_steps=200)
    sched2 = Scheduler(opt2, longer)
    sched2.load_state_dict(sd)
    assert sched2.step_count == 40
    assert sched2.get_last_lr() == [BASE * longer(40)]
    assert drive(opt2, sched2, 3) == [BASE * longer(t) for t in (40, 41, 42)]


# ------------------------------------------------------------------- resume

RESUME_SCHEDULES = [
    Warmup(steps=7) >> Cosine(total_steps=40, end_lr=0.01),
    OneCycle(total_steps=50),
    Step(every_steps=6, factor=0.5),
    WarmupStableDecay(total_steps=45, warmup_frac=0.1, decay="sqrt"),
    Cyclic(low_lr=0.1, up_steps=5),
]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(RESUME_SCHEDULES) - 1),
    total=st.integers(2, 60),
    cut=st.floats(0.0, 1.0),
    order=st.sampled_from(
        ["sched-opt-load", "opt-load-sched", "sched-load-opt", "load-both-late"]
    ),
    plateau=st.booleans(),
    eval_every=st.integers(1, 7),
    between=st.booleans(),
)
def test_resume_continues_the_exact_sequence(
    which: int,
    total: int,
    cut: float,
    order: str,
    plateau: bool,
    eval_every: int,
    between: bool,
) -> None:
    """``between``: the checkpoint is taken between ``optimizer.step()`` and
    ``scheduler.step()`` (the optimizer's saved LR is the step before's), and
    the resumed loop makes that ``scheduler.step()`` first."""
    schedule = RESUME_SCHEDULES[which]
    k = min(total - 1, int(cut * total))
    between = between and k > 0 and not plateau

    def make_plateau() -> ReduceOnPlateau | None:
        return ReduceOnPlateau(patience=1, factor=0.5) if plateau else None

    def metric(t: int) -> float:
        return 1.0 / (1 + (t // 9))  # improves every 9 steps, plateaus in between

    def run(opt: Any, sched: Any, start: int, stop: int) -> list[float]:
        out = []
        for t in range(start, stop):
            out.append(float(opt.param_groups[0]["lr"]))
            train_step(opt)
            sched.step()
            if plateau and (t + 1) % eval_every == 0:
                sched.step(metric(t))
        return out

    opt = make_opt()
    full = run(opt, Scheduler(opt, schedule, plateau=make_plateau()), 0, total)

    opt_a = make_opt()
    sched_a = Scheduler(opt_a, schedule, plateau=make_plateau())
    if between:
        first = run(opt_a, sched_a, 0, k - 1)
        first.append(float(opt_a.param_groups[0]["lr"]))
        train_step(opt_a)
    else:
        first = run(opt_a, sched_a, 0, k)
    saved_opt = copy.deepcopy(opt_a.state_dict())
    saved_sched = copy.deepcopy(sched_a.state_dict())

    opt_b = make_opt()
    if order == "sched-opt-load":
        sched_b = Scheduler(opt_b, schedule, plateau=make_plateau())
        opt_b.load_state_dict(saved_opt)
        sched_b.load_state_dict(saved_sched)
    elif order == "opt-load-sched":
        opt_b.load_state_dict(saved_opt)
        sched_b = Scheduler(opt_b, schedule, plateau=make_plateau())
        sched_b.load_state_dict(saved_sched)
    elif order == "sched-load-opt":
        sched_b = Scheduler(opt_b, schedule, plateau=make_plateau())
        sched_b.load_state_dict(saved_sched)
        opt_b.load_state_dict(saved_opt)
    else:  # both states loaded after the scheduler already ran a step
        sched_b = Scheduler(opt_b, schedule, plateau=make_plateau())
        train_step(opt_b)
        sched_b.step()
        sched_b.load_state_dict(saved_sched)
        opt_b.load_state_dict(saved_opt)
    if between:
        sched_b.step()  # the interrupted iteration's
    rest = run(opt_b, sched_b, k, total)
    assert first + rest == full


# --------------------------------------------------------------- frameworks


def test_lightning_fit_and_resume(tmp_path: Any) -> None:
    pl = pytest.importorskip("lightning.pytorch")
    torch.manual_seed(0)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [0.0]])
    data = torch.utils.data.TensorDataset(x, y)
    schedule = Warmup(steps=4) >> Cosine(total_steps=28, end_lr=0.1)

    class Tiny(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)
            self.seen: list[float] = []

        def training_step(self, batch: Any, _: int) -> Any:
            self.seen.append(self.trainer.optimizers[0].param_groups[0]["lr"])
            xb, yb = batch
            return torch.nn.functional.mse_loss(self.net(xb), yb)

        def validation_step(self, batch: Any, _: int) -> None:
            xb, yb = batch
            self.log("val_loss", torch.nn.functional.mse_loss(self.net(xb), yb))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking:
                self.lr_schedulers().step(self.trainer.callback_metrics["val_loss"])

        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.05)
            sched = Scheduler(
                opt, schedule, plateau=ReduceOnPlateau(patience=0, factor=0.5)
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "interval": "step"},
            }

    def loader() -> Any:
        return torch.utils.data.DataLoader(data, batch_size=16)

    kw = {
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "num_sanity_val_steps": 0,
    }
    model = Tiny()
    trainer = pl.Trainer(max_epochs=2, enable_checkpointing=False, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        trainer.fit(model, loader(), loader())
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.step_count == 8  # 2 epochs x 4 batches
    assert model.seen[:8] == pytest.approx([0.05 * schedule(t) for t in range(8)])
    ckpt = tmp_path / "two.ckpt"
    trainer.save_checkpoint(ckpt)
    state_at_2 = sched.state_dict()

    # resume from the checkpoint for 2 more epochs
    resumed = Tiny()
    t2 = pl.Trainer(max_epochs=4, enable_checkpointing=False, **kw)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        t2.fit(resumed, loader(), loader(), ckpt_path=ckpt)
    assert state_at_2["step"] == 8
    resumed_sched = t2.lr_scheduler_configs[0].scheduler
    assert resumed_sched.step_count == 16
    # the first resumed step runs at schedule(8) times the plateau scale saved
    saved_scale = state_at_2["plateau"]["scale"]
    assert resumed.seen[0] == pytest.approx(0.05 * schedule(8) * saved_scale)
    assert resumed_sched.get_last_lr()[0] == pytest.approx(
        0.05 * schedule(16) * resumed_sched.plateau_scale
    )


def test_hugging_face_trainer() -> None:
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    transformers = pytest.importorskip("transformers")

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Linear(4, 1)

        def forward(self, x: Any, labels: Any) -> Any:
            return {"loss": torch.nn.functional.mse_loss(self.net(x), labels)}

    x = torch.randn(32, 4)
    data = [{"x": x[i], "labels": x[i, :1]} for i in range(32)]
    model = Tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    schedule = Warmup(steps=2) >> Cosine(total_steps=6)
    sched = Scheduler(opt, schedule)
    args = transformers.TrainingArguments(
        output_dir="/tmp/lrkit_hf",
        max_steps=8,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
    )
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, optimizers=(opt, sched)
    )
    trainer.train()
    assert sched.step_count == 8
    assert sched.get_last_lr()[0] == pytest.approx(0.05 * schedule(8))


def test_plateau_min_lr_per_group_matches_torch() -> None:
    """torch's ReduceLROnPlateau takes a list of min_lr, one per param group;
    so does ReduceOnPlateau (review: it was refused)."""
    from torch.optim.lr_scheduler import ReduceLROnPlateau

    def two_groups() -> torch.optim.Optimizer:
        a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
        return torch.optim.SGD(
            [{"params": [a], "lr": 0.1}, {"params": [b], "lr": 0.01}]
        )

    theirs_opt, ours_opt = two_groups(), two_groups()
    theirs = ReduceLROnPlateau(theirs_opt, factor=0.5, patience=0, min_lr=[0.02, 0.004])
    plateau = ReduceOnPlateau(factor=0.5, patience=0, min_lr=[0.02, 0.004])
    ours = Scheduler(ours_opt, Constant(), plateau=plateau)
    for i in range(8):
        theirs_opt.step()
        ours_opt.step()
        metric = 1.0 if i == 0 else 2.0
        theirs.step(metric)
        ours.step(metric)
        assert [g["lr"] for g in ours_opt.param_groups] == pytest.approx(
            [g["lr"] for g in theirs_opt.param_groups], rel=1e-12
        )
    assert [g["lr"] for g in ours_opt.param_groups] == pytest.approx([0.02, 0.004])
    assert plateau.to_config()["min_lr"] == (0.02, 0.004)
    assert ReduceOnPlateau.from_config(plateau.to_config()) == plateau
    with pytest.raises(ValueError, match=r"plateau\.min_lr must be one value per"):
        Scheduler(two_groups(), Constant(), plateau=ReduceOnPlateau(min_lr=[0.1]))
    with pytest.raises(ValueError, match=r"min_lr\[1\] must be >= 0"):
        ReduceOnPlateau(min_lr=[0.1, -1.0])
    text = "plateau(factor=0.5, patience=0, min_lr=[0.02, 0.004])"
    from lrkit._parse import parse_plateau

    assert parse_plateau(text) == plateau
