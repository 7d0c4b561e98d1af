"""lrkit.torch.Guard on real tiny torch runs: NaN, an LR 100x too high, schedulers."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.helpers import OwnRngSampler
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lrkit
from lrkit.torch.guard import Guard, GuardError, GuardEvent

GOOD_LR = 0.05


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1024, 8, generator=g)
    w = torch.randn(8, 1, generator=g)
    return x, x @ w + 0.1 * torch.randn(1024, 1, generator=g)


def make(
    lr: float, seed: int = 0
) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    x, y = data()
    g = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=g)
    return model, opt, loader


def full_loss(model: nn.Module) -> float:
    x, y = data()
    with torch.no_grad():
        return float(nn.functional.mse_loss(model(x), y))


def train(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    loader: DataLoader,
    guard: Guard | None,
    epochs: int = 4,
    poison: set[int] = frozenset(),  # type: ignore[assignment]
    sched: object | None = None,
    record: dict[int, dict[str, torch.Tensor]] | None = None,
) -> int:
    """A plain training loop; returns the number of optimizer steps taken."""
    t = 0
    taken = 0
    for _ in range(epochs):
        batches = loader if guard is None else guard.batches(loader)
        for xb, yb in batches:
            if record is not None:
                record[t] = {k: v.clone() for k, v in model.state_dict().items()}
            loss = nn.functional.mse_loss(model(xb), yb)
            if t in poison:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            t += 1
            if guard is None or guard.step(loss):
                opt.step()
                taken += 1
                if sched is not None:
                    sched.step()  # type: ignore[attr-defined]
    return taken


def test_recovers_from_an_injected_nan() -> None:
    ref_model, ref_opt, ref_loader = make(GOOD_LR)
    train(ref_model, ref_opt, ref_loader, None)
    reference = full_loss(ref_model)

    model, opt, loader = make(GOOD_LR)
    guard = Guard(
        model, opt, loaders=[loader], every=20, keep=2, factor=0.5, nan_action="restore"
    )
    record: dict[int, dict[str, torch.Tensor]] = {}
    train(model, opt, loader, guard, poison={50}, record=record)
    assert len(guard.events) == 1
    e = guard.events[0]
    assert isinstance(e, GuardEvent)
    assert (e.kind, e.step, e.first_step, e.restored_step) == ("nan", 50, 50, 40)
    assert e.recovery_scale == 0.5 and e.lrs == (GOOD_LR * 0.5,)
    assert opt.param_groups[0]["lr"] == GOOD_LR * 0.5
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # the run trained on to the reference's quality despite the bad batch
    final = full_loss(model)
    assert final < 1.2 * reference + 0.01, (final, reference)


def test_restores_the_snapshot_bit_exactly() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, keep=3, nan_action="restore")
    record: dict[int, dict[str, torch.Tensor]] = {}
    # stop right after the recovery and compare with the state at step 20
    seen = {}
    for t, (xb, yb) in enumerate(loader):
        record[t] = {k: v.clone() for k, v in model.state_dict().items()}
        loss = nn.functional.mse_loss(model(xb), yb)
        if t == 25:
            loss = loss + float("inf")
        opt.zero_grad()
        loss.backward()
        ok = guard.step(loss)
        if not ok:
            seen = {k: v.clone() for k, v in model.state_dict().items()}
            break
        opt.step()
    assert guard.last_event is not None and guard.last_event.restored_step == 20
    for k, v in record[20].items():
        assert torch.equal(seen[k], v), k


def test_recovers_from_an_lr_100x_too_high() -> None:
    model, opt, loader = make(100 * GOOD_LR)
    guard = Guard(model, opt, every=20, factor=0.5)  # backing off in a row
    train(model, opt, loader, guard)
    events = guard.events
    assert events and all(e.kind in ("nan", "diverged", "spike") for e in events)
    # the k-th recovery in a row cuts by 0.5**k: 0.5, 0.125, 0.0078, ...
    scale = 1.0
    for e in events:
        scale *= 0.5**e.attempt
        assert e.recovery_scale == pytest.approx(scale)
    assert guard.recovery_scale == pytest.approx(scale)
    assert opt.param_groups[0]["lr"] == pytest.approx(100 * GOOD_LR * scale)
    assert 100 * scale <= 2  # brought to at most 2x the good LR
    assert all(e.restored_step == 0 for e in events)
    # as good as a plain run at the LR the guard landed on, for the same steps
    ref_model, ref_opt, ref_loader = make(100 * GOOD_LR * scale)
    train(ref_model, ref_opt, ref_loader, None)
    reference = full_loss(ref_model)
    final = full_loss(model)
    assert math.isfinite(final) and final < 1.2 * reference + 0.01, (final, reference)
    assert final < 0.2 * full_loss(make(GOOD_LR)[0])  # far below the untrained


def test_the_default_cut_rescues_an_lr_100x_too_high() -> None:
    # factor 0.3 backs off 100x -> 30x -> 2.7x: no divergence any more and the
    # run trains, though 2.7x is a poor LR for this task (a plain run there ends
    # at 4.3 against 0.31 at the good LR) that the monitor does not flag
    model, opt, loader = make(100 * GOOD_LR)
    guard = Guard(model, opt, every=20)
    train(model, opt, loader, guard)
    assert [e.recovery_scale for e in guard.events] == pytest.approx([0.3, 0.027])
    final = full_loss(model)
    assert math.isfinite(final) and final < full_loss(make(GOOD_LR)[0])


def test_without_guard_the_same_run_is_lost() -> None:
    model, opt, loader = make(100 * GOOD_LR)
    train(model, opt, loader, None, epochs=1)
    assert not math.isfinite(full_loss(model)) or full_loss(model) > 1e3


def test_torch_lr_scheduler_is_scaled() -> None:
    model, opt, loader = make(GOOD_LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1 + t / 100))
    guard = Guard(
        model, opt, scheduler=sched, every=20, factor=0.5, nan_action="restore"
    )
    steps = train(model, opt, loader, guard, epochs=2, poison={45}, sched=sched)
    assert len(guard.events) == 1 and guard.events[0].restored_step == 40
    assert sched.base_lrs == [GOOD_LR * 0.5]
    # the scheduler state was rolled back to step 40, then counted on
    expected = GOOD_LR * 0.5 / (1 + sched.last_epoch / 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert sched.last_epoch == steps - 5  # steps 41..45 were undone


def test_lrkit_scheduler_recovery_scale() -> None:
    model, opt, loader = make(GOOD_LR)
    sched = lrkit.torch.Scheduler(opt, "cosine(total_steps=200)")
    guard = Guard(
        model, opt, scheduler=sched, every=20, factor=0.5, nan_action="restore"
    )
    train(model, opt, loader, guard, epochs=2, poison={45}, sched=sched)
    assert sched.recovery_scale == 0.5 == guard.recovery_scale
    assert sched.state_dict()["recovery_scale"] == 0.5
    t = sched.state_dict()["step"]
    cos = 0.5 * (1 + math.cos(math.pi * min(t, 200) / 200))
    assert opt.param_groups[0]["lr"] == pytest.approx(GOOD_LR * cos * 0.5)


def amp_run(
    scaler: Any, clip: bool = False, steps: int | None = None
) -> tuple[nn.Module, Guard, dict[int, float]]:
    """The AMP loop (bf16 autocast, a GradScaler) with a NaN at step 25; with
    ``clip``, gradients are unscaled and clipped before ``guard.step``.
    Returns the model, the guard and the scale before each step."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, scaler=scaler, every=10, nan_action="restore")
    scales = {}
    for t, (xb, yb) in enumerate(loader):
        if steps is not None and t == steps:
            break
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.mse_loss(model(xb).float(), yb)
        if t == 25:
            loss = loss * float("nan")
        opt.zero_grad()
        scaler.scale(loss).backward()
        scales[t] = scaler.get_scale()
        gn = None
        if clip:
            scaler.unscale_(opt)  # raised after a recovery before the fix
            gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if guard.step(loss, grad_norm=gn):
            scaler.step(opt)
            scaler.update()
    return model, guard, scales


def test_grad_scaler_state_is_restored() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=5)
    _, guard, scales = amp_run(scaler)
    event = guard.events[0]
    assert (event.step, event.restored_step) == (25, 20)
    assert scales[26] == scales[20]  # the scale of the snapshot came back


def test_repeated_failures_raise_with_history() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, max_recoveries=3, nan_action="restore")
    with pytest.raises(GuardError, match="3 recoveries in a row did not help") as info:
        train(model, opt, loader, guard, poison=set(range(30, 400)))
    assert len(info.value.events) == 3
    assert "restored step 20" in str(info.value)
    assert isinstance(info.value, lrkit.LRKitError)


def test_clean_stretch_resets_the_count() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, max_recoveries=1, nan_action="restore")
    train(model, opt, loader, guard, poison={30, 60, 90})
    assert [e.attempt for e in guard.events] == [1, 1, 1]


def guarded_step(
    guard: Guard,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    xb: torch.Tensor,
    yb: torch.Tensor,
    *,
    nan: bool = False,
) -> None:
    """One training step under the guard; ``nan`` poisons its loss."""
    loss = nn.functional.mse_loss(model(xb), yb)
    if nan:
        loss = loss * float("nan")
    opt.zero_grad()
    loss.backward()
    if guard.step(loss):
        opt.step()


def spiked_run(
    guard: Guard,
    spikes: set[int],
    steps: int = 120,
    batches: Any = None,
    nan: frozenset[int] | set[int] = frozenset(),
) -> list[int]:
    """Train under ``guard`` for ``steps`` steps (on ``batches``, by default the
    data in order); at the steps in ``spikes`` the loss value jumps by 50 (its
    gradient is unchanged), at those in ``nan`` it is NaN. Returns the steps
    that were rolled back."""
    model, opt = guard.model, guard.optimizer
    rolled = []
    if batches is None:
        x, y = data()
        batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)] * 4
    for t, (xb, yb) in zip(range(steps), batches, strict=False):
        loss = nn.functional.mse_loss(model(xb), yb)
        if t in spikes:
            loss = loss + 50.0
        if t in nan:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        if guard.step(loss):
            opt.step()
        else:
            rolled.append(t)
    return rolled


def test_a_spike_only_skips_its_batchs_update() -> None:
    """By default a spike restores nothing and keeps the LR: the parameters
    after the spiking step are those before it (its update not applied), and
    the run goes on from there; a second one is skipped the same way."""
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    x, y = data()
    batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)] * 4
    for t, (xb, yb) in enumerate(batches[:120]):
        loss = nn.functional.mse_loss(model(xb), yb)
        if t in (85, 105):
            loss = loss + 50.0
        opt.zero_grad()
        loss.backward()
        before = [p.detach().clone() for p in model.parameters()]
        if guard.step(loss):
            opt.step()
        elif t == 85:
            assert all(
                torch.equal(a, b)
                for a, b in zip(before, model.parameters(), strict=True)
            )
            assert all(p.grad is None for p in model.parameters())
    events = [(e.kind, e.step, e.restored_step, e.attempt) for e in guard.events]
    assert events == [("spike", t, None, 0) for t in (85, 105)]
    assert "update skipped" in str(guard.events[0])
    assert guard.recovery_scale == 1.0 and opt.param_groups[0]["lr"] == GOOD_LR
    assert guard.undone_steps == 2


def test_spikes_that_repeat_restore() -> None:
    """Three spikes within the monitor's window are `oscillating`: the third is
    no longer one batch's doing, and restores (a lone one, so no cut yet)."""
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    assert spiked_run(guard, {85, 88, 95}) == [85, 88, 95]
    events = [(e.kind, e.step, e.restored_step) for e in guard.events]
    assert events == [("spike", 85, None), ("spike", 88, None), ("spike", 95, 80)]
    assert guard.recovery_scale == 1.0


def test_a_lone_spike_rolls_back_without_cutting_the_lr_when_asked() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10, spike_action="restore")
    assert spiked_run(guard, {85}) == [85]
    (event,) = guard.events
    assert (event.kind, event.restored_step, event.attempt) == ("spike", 80, 1)
    assert guard.recovery_scale == 1.0 and event.recovery_scale == 1.0
    assert opt.param_groups[0]["lr"] == GOOD_LR
    assert guard.undone_steps == 6  # the updates of steps 80-84, and 85's


def test_a_spike_that_comes_back_is_cut() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10, factor=0.5, spike_action="restore")
    spiked_run(guard, {85, 88})
    assert [(e.kind, e.attempt) for e in guard.events] == [("spike", 1), ("spike", 2)]
    assert [e.recovery_scale for e in guard.events] == [1.0, 0.5]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * GOOD_LR)


def test_a_spike_before_the_noise_is_measured_is_left_alone() -> None:
    """Before the monitor measured the noise over a full window (64 losses)
    a spike is no evidence (a classifier at chance is quieter than it will be
    once it learns): the guard lets it pass; the same spike later rolls back."""
    for action in ("skip", "restore"):
        model, opt, _ = make(GOOD_LR)
        guard = Guard(model, opt, every=10, spike_action=action)
        assert spiked_run(guard, {30}) == []
        assert guard.events == []
        assert any(f.kind == "spike" for f in guard.monitor.findings)
        model, opt, _ = make(GOOD_LR)
        guard = Guard(model, opt, every=10, spike_action=action)
        assert spiked_run(guard, {30, 85}) == [85]


@pytest.mark.parametrize("action", ["skip", "restore"])
def test_spike_factor_cuts_a_lone_spike_when_asked(action: str) -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10, spike_factor=0.5, spike_action=action)
    spiked_run(guard, {85})
    assert guard.recovery_scale == 0.5
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * GOOD_LR)


def test_a_spike_factor_cut_counts_as_the_rows_first_cut() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(
        model, opt, every=10, factor=0.5, spike_factor=0.5, spike_action="restore"
    )
    spiked_run(guard, {85, 88})  # a spike, and another within `every` steps
    assert [e.recovery_scale for e in guard.events] == [0.5, 0.5 * 0.5**2]


def test_a_spike_after_a_nan_in_the_same_row_is_cut_deeper() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(
        model, opt, every=10, factor=0.5, spike_action="restore", nan_action="restore"
    )
    spiked_run(guard, {88}, nan={85})
    assert [(e.kind, e.attempt) for e in guard.events] == [("nan", 1), ("spike", 2)]
    assert [e.recovery_scale for e in guard.events] == [0.5, 0.5 * 0.5**2]


def test_the_cut_count_starts_again_after_a_clean_stretch() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt, every=10, factor=0.5, nan_action="restore")
    spiked_run(guard, set(), nan={35, 70})  # two rows, 35 steps apart
    assert [e.attempt for e in guard.events] == [1, 1]
    assert [e.recovery_scale for e in guard.events] == [0.5, 0.25]


def test_skip_batches_and_spill(tmp_path: Path) -> None:
    model, opt, loader = make(GOOD_LR)
    with Guard(
        model, opt, every=10, skip_batches=3, spill_dir=tmp_path, nan_action="restore"
    ) as guard:
        seen = []
        for t, (xb, yb) in enumerate(guard.batches(loader)):
            seen.append(t)
            guarded_step(guard, model, opt, xb, yb, nan=t == 12)
        assert list(tmp_path.iterdir())  # snapshots on disk
        assert guard.events[0].skipped_batches == 3
    assert len(seen) == len(loader) - 3
    assert not list(tmp_path.iterdir())  # removed on close


def test_snapshots_are_bounded() -> None:
    """``keep`` snapshots, plus the first one while the monitor is in its
    first 4·min_updates losses (a blow-up of the first steps is found late)."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=5, keep=2)
    sizes = []
    for _ in range(3):
        for xb, yb in loader:
            guarded_step(guard, model, opt, xb, yb)
            sizes.append((guard.steps, len(guard._saved), guard._saved[0].step))
    early = [(n, first) for t, n, first in sizes if t <= 40]
    later = [n for t, n, _ in sizes if t > 45]
    assert max(n for n, _ in early) == 3 and all(first == 0 for _, first in early)
    assert later and set(later) == {2}  # a healthy run: back to keep


def test_bad_arguments() -> None:
    model, opt, _ = make(GOOD_LR)
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\)"):
        Guard(model, opt, factor=1.0)
    with pytest.raises(ValueError, match=r"spike_factor must be in \(0, 1\]"):
        Guard(model, opt, spike_factor=0.0)
    with pytest.raises(ValueError, match="on must be a non-empty sequence"):
        Guard(model, opt, on=("explode",))
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        Guard("model", opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="scheduler must be an object with state_dict"):
        Guard(model, opt, scheduler=object())
    guard = Guard(model, opt)
    with pytest.raises(ValueError, match="loss must be a scalar"):
        guard.step(torch.ones(3))
    assert guard.steps == 0  # bad input changed nothing


def test_watch_catches_a_problem_that_comes_back_after_a_restore() -> None:
    """Right after a restore to step 0 the monitor has no noise estimate yet;
    the line the first problem crossed still catches its return."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=20, factor=0.5)
    bad = set(range(3, 10)) | {11, 12, 13}  # a blow-up, and its return
    events_at = spiked_run(guard, bad, steps=61, batches=loader)
    assert len(guard.events) == 2, guard.events
    first, second = guard.events
    assert (first.kind, first.first_step, first.step) == ("diverged", 3, 9)
    assert first.restored_step == 0
    # the monitor, back at step 0's statistics, cannot judge yet: the watch can
    # 3 of the last 5 losses over the line: the median is
    assert (second.kind, second.first_step, second.step) == ("diverged", 11, 14)
    # restored to step 0, before the monitor knew the noise: a quarter of the
    # way from the restored level to the level that triggered the recovery
    ref = second.evidence["best"]
    assert ref >= first.evidence["best"]
    expected = min(first.evidence["threshold"], 0.25 * (first.evidence["level"] - ref))
    assert second.evidence["threshold"] == pytest.approx(expected)
    assert second.evidence["line"] == pytest.approx(ref + expected)
    assert second.attempt == 2 and second.recovery_scale == 0.5 * 0.25
    assert events_at == [9, 14]


def test_the_watch_line_holds_over_repeated_returns() -> None:
    """A problem the watch caught crossed the line the watch drew: the next
    watch keeps that line. Shrinking it by a quarter at each return drew it
    towards the restored level, until an untrained model's own batch noise
    crossed it and every cut led to the next."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=20, factor=0.5, max_recoveries=9)
    batches = list(loader)
    for t in range(40):
        xb, yb = batches[t % len(batches)]
        loss = nn.functional.mse_loss(model(xb), yb)
        if 3 <= t < 10 or 11 <= t < 14:  # a blow-up, and its return
            loss = loss + 50.0
        elif 16 <= t < 19:  # it returns again, just over the watch's line
            line = guard.events[-1].evidence["line"]
            thr = guard.events[-1].evidence["threshold"]
            loss = loss + max(0.0, line + 0.2 * thr - float(loss.detach()))
        opt.zero_grad()
        loss.backward()
        if guard.step(loss):
            opt.step()
    assert [e.kind for e in guard.events] == ["diverged"] * 3, guard.events
    second, third = guard.events[1:]
    assert third.first_step == 16 and third.restored_step == 0
    assert third.evidence["line"] == pytest.approx(second.evidence["line"])
    # the line the third recovery draws is the same again
    assert guard._watch is not None
    assert guard._watch[0] == pytest.approx(second.evidence["line"])


def _epoch_orders(kind: str) -> tuple[list[list[int]], list]:
    """First index of every batch over 4 epochs of a 10-batch loader, with a
    NaN at step 12 (a recovery to the snapshot of step 8, in epoch 0). The
    loader shuffles with its own torch generator, the global RNG, or a
    sampler's NumPy / Python RNG."""
    torch.manual_seed(0)
    x = torch.randn(320, 4)
    y = x.sum(1, keepdim=True)
    idx = torch.arange(320).float().unsqueeze(1)
    data = TensorDataset(x, y, idx)
    if kind in ("numpy", "random"):
        rng = np.random.default_rng(0) if kind == "numpy" else random.Random(0)
        loader = DataLoader(data, batch_size=32, sampler=OwnRngSampler(320, rng))
    elif kind == "accelerate":  # seeds each epoch with initial_seed + epoch
        from accelerate.data_loader import SeedableRandomSampler

        sampler = SeedableRandomSampler(data, data_seed=0)
        loader = DataLoader(data, batch_size=32, sampler=sampler)
    else:
        gen = torch.Generator().manual_seed(0) if kind == "torch" else None
        loader = DataLoader(data, batch_size=32, shuffle=True, generator=gen)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = Guard(
        model,
        opt,
        loaders=[] if kind == "global" else [loader],
        every=8,
        nan_action="restore",
    )
    t = 0
    orders = []
    for _ in range(4):
        order = []
        for xb, yb, ib in guard.batches(loader):
            order.append(int(ib[0]))
            guarded_step(guard, model, opt, xb, yb, nan=t == 12)
            t += 1
        orders.append(order)
    return orders, [(e.step, e.restored_step) for e in guard.events]


@pytest.mark.parametrize("kind", ["torch", "global", "numpy", "random", "accelerate"])
def test_after_a_recovery_the_data_order_does_not_repeat(kind: str) -> None:
    # restoring the RNG of step 8 as it was would make epoch 2 draw epoch 1's
    # order again; the guard moves every stream to a new (reproducible) one
    # (accelerate's sampler: its epoch counter, restored, would seed it again)
    if kind == "accelerate":
        pytest.importorskip("accelerate")
    orders, events = _epoch_orders(kind)
    assert events == [(12, 8)]
    assert len({tuple(o) for o in orders}) == 4  # four different epoch orders
    assert _epoch_orders(kind) == (orders, events)  # reproducible


# ------------------------------------------------- from a review with real loops
def test_grad_scaler_unscale_and_clipping_survive_a_recovery() -> None:
    """The AMP loop with clipping: unscale_, clip, guard.step; after a restore
    the scaler must not remember the unscale_ of the step it rolled back."""
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    model, guard, _ = amp_run(scaler, clip=True, steps=41)
    assert [(e.kind, e.step) for e in guard.events] == [("nan", 25)]
    assert math.isfinite(full_loss(model))


def test_a_scaler_overflow_is_not_a_finding() -> None:
    """With a scaler, an infinite gradient norm is the scaler's business: it
    skips the step and lowers its scale. Without one it is a nan finding."""
    for scaler, events in ((torch.amp.GradScaler("cpu"), 0), (None, 1)):
        model, opt, _ = make(GOOD_LR)
        guard = Guard(model, opt, scaler=scaler, every=5)
        oks = [guard.step(1.0 / (t + 1), grad_norm=1.0) for t in range(20)]
        oks.append(guard.step(0.05, grad_norm=math.inf))
        assert all(oks[:20]) and oks[-1] is (events == 0)
        assert len(guard.events) == events


@pytest.mark.parametrize("kind", ["onecycle", "warmup_cosine"])
def test_the_cut_holds_under_onecycle_and_sequential_schedulers(kind: str) -> None:
    """OneCycleLR keeps its LRs in the param groups, SequentialLR in the
    schedulers it chains: the cut scales those, so it holds at every later step."""

    def scheduler(opt: torch.optim.Optimizer) -> Any:
        if kind == "onecycle":
            return torch.optim.lr_scheduler.OneCycleLR(opt, GOOD_LR, total_steps=200)
        warm = torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=10)
        cos = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 190)
        return torch.optim.lr_scheduler.SequentialLR(opt, [warm, cos], [10])

    model, opt, loader = make(GOOD_LR)
    sched = scheduler(opt)
    guard = Guard(model, opt, scheduler=sched, every=5, nan_action="restore")
    train(model, opt, loader, guard, epochs=1, poison={12}, sched=sched)
    assert len(guard.events) == 1
    # the same schedule, uncut, stepped as often
    ref_opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=GOOD_LR)
    ref = scheduler(ref_opt)
    for _ in range(sched.last_epoch):
        ref_opt.step()
        ref.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(
        0.3 * ref_opt.param_groups[0]["lr"], rel=1e-6
    )


def test_an_lr_100x_too_high_under_warmup_cosine_is_not_cut_to_nothing() -> None:
    """Digits MLP, Adam at 100x its best LR, warmup then cosine (SequentialLR):
    the loss creeps up under noise that hides it, a snapshot is taken there,
    then the noise falls. Judged from the best the run had left, the restored
    state read as diverged again and again (7 recoveries, LR 1e-7, worse than
    no guard); judged from the level restored, the guard helps."""
    from sklearn.datasets import load_digits

    d = load_digits()
    xs = torch.tensor(d.data[:1400], dtype=torch.float32) / 16.0
    ys = torch.tensor(d.target[:1400])

    def run(guarded: bool) -> tuple[float, Guard | None]:
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Linear(64, 128),
            nn.ReLU(),
            nn.Linear(128, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        opt = torch.optim.Adam(model.parameters(), lr=0.3)
        sched = torch.optim.lr_scheduler.SequentialLR(
            opt,
            [
                torch.optim.lr_scheduler.LinearLR(opt, 0.1, total_iters=50),
                torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=600),
            ],
            milestones=[50],
        )
        guard = Guard(model, opt, scheduler=sched) if guarded else None
        g = torch.Generator().manual_seed(0)
        losses = []
        for t in range(600):
            if t % 43 == 0:
                order = torch.randperm(1400, generator=g)
            i = order[(t % 43) * 32 : (t % 43) * 32 + 32]
            loss = nn.functional.cross_entropy(model(xs[i]), ys[i])
            opt.zero_grad()
            loss.backward()
            if guard is None or guard.step(loss):
                opt.step()
                sched.step()
            losses.append(loss.item())
        return float(torch.tensor(losses[-20:]).median()), guard

    unguarded, _ = run(False)
    guarded, guard = run(True)
    assert guard is not None and guard.events
    assert guard.recovery_scale > 1e-3  # 5e-7 before the fix
    assert guarded < unguarded


def test_guard_error_leaves_the_last_good_state() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, max_recoveries=2)
    with pytest.raises(GuardError, match="back at the snapshot of step"):
        train(model, opt, loader, guard, poison=set(range(30, 400)))
    assert math.isfinite(full_loss(model))
    assert all(p.grad is None for p in model.parameters())


def test_spill_files_go_with_the_guard(tmp_path: Path) -> None:
    import gc

    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=5, spill_dir=tmp_path)
    train(model, opt, loader, guard, epochs=1)
    assert list(tmp_path.glob("lrkit-snapshot-*"))
    del guard
    gc.collect()
    assert not list(tmp_path.glob("lrkit-snapshot-*"))


def test_one_loader_is_taken_as_a_list_of_one_without_iterating_it() -> None:
    class Counting(TensorDataset):
        reads = 0

        def __getitem__(self, i: int) -> Any:
            Counting.reads += 1
            return super().__getitem__(i)

    model, opt, _ = make(GOOD_LR)
    x, y = data()
    gen = torch.Generator().manual_seed(0)
    loader = DataLoader(Counting(x, y), batch_size=32, shuffle=True, generator=gen)
    guard = Guard(model, opt, loaders=loader)
    assert Counting.reads == 0 and guard._loaders == [loader]


def test_more_bad_arguments_change_nothing(tmp_path: Path) -> None:
    model, opt, _ = make(GOOD_LR)
    with pytest.raises(ValueError, match="on must be a non-empty sequence"):
        Guard(model, opt, on=("too_slow",))  # a cut cannot help an LR too low
    with pytest.raises(ValueError, match="on must be"):
        Guard(model, opt, on=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"objects\['ema'\] must be an object"):
        Guard(model, opt, objects={"ema": 3})
    with pytest.raises(ValueError, match="spill_dir must be an existing directory"):
        Guard(model, opt, spill_dir=tmp_path / "missing")
    with pytest.raises(TypeError, match="loaders must be"):
        Guard(model, opt, loaders=None)  # type: ignore[arg-type]
    guard = Guard(model, opt, on=(k for k in ("nan", "diverged")))
    assert guard.on == {"nan", "diverged"}


def test_event_records_are_strict_json() -> None:
    import json

    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    train(model, opt, loader, guard, epochs=1, poison={25})
    record = guard.events[0].to_dict()
    assert record["evidence"]["loss"] is None  # the NaN loss
    assert json.loads(json.dumps(record, allow_nan=False)) == record


def test_cuts_stop_at_min_scale() -> None:
    """Problems that keep coming back after clean stretches (a NaN every 30
    steps: not the LR's doing) cut down to min_scale and no further."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=5, min_scale=0.01, nan_action="restore")
    train(model, opt, loader, guard, epochs=4, poison=set(range(20, 128, 12)))
    assert len(guard.events) >= 4
    assert guard.recovery_scale == pytest.approx(0.01)
    assert opt.param_groups[0]["lr"] == pytest.approx(GOOD_LR * 0.01)
    with pytest.raises(ValueError, match=r"min_scale must be in \(0, 1\)"):
        Guard(model, opt, min_scale=0.0, nan_action="restore")


def test_a_checkpoint_loaded_after_the_guard_keeps_its_cut() -> None:
    """Resume in the usual order (build everything, then load the checkpoint):
    the guard reads an lrkit Scheduler's recovery scale from the scheduler, so
    the next recovery cuts from the checkpoint's 0.5, not from 1."""
    model, opt, loader = make(GOOD_LR)
    sched = lrkit.torch.Scheduler(opt, "constant()")
    first = Guard(
        model, opt, scheduler=sched, every=20, factor=0.5, nan_action="restore"
    )
    train(model, opt, loader, first, epochs=2, poison={45}, sched=sched)
    state = {"model": model.state_dict(), "opt": opt.state_dict()}
    state["sched"] = sched.state_dict()
    assert state["sched"]["recovery_scale"] == 0.5
    model, opt, loader = make(GOOD_LR)
    sched = lrkit.torch.Scheduler(opt, "constant()")
    guard = Guard(
        model, opt, scheduler=sched, every=20, factor=0.5, nan_action="restore"
    )
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    assert guard.recovery_scale == 0.5
    train(model, opt, loader, guard, epochs=2, poison={45}, sched=sched)
    assert [e.recovery_scale for e in guard.events] == [0.25]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25 * GOOD_LR)


def test_the_cut_holds_under_an_accelerate_wrapped_scheduler() -> None:
    """accelerate's AcceleratedScheduler steps the scheduler it wraps: the
    cut reaches that one's base LRs, and survives its next steps."""
    accelerate = pytest.importorskip("accelerate")
    model, opt, loader = make(GOOD_LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s / 100))
    acc = accelerate.Accelerator(cpu=True)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    guard = Guard(
        model, opt, scheduler=sched, every=20, factor=0.3, nan_action="restore"
    )
    train(model, opt, loader, guard, epochs=2, poison={45}, sched=sched)
    inner = sched.scheduler
    assert len(guard.events) == 1 and inner.base_lrs == [pytest.approx(0.3 * GOOD_LR)]
    expected = 0.3 * GOOD_LR / (1 + inner.last_epoch / 100)
    assert opt.param_groups[0]["lr"] == pytest.approx(expected)
    assert sched.get_last_lr() == [pytest.approx(expected)]


def test_unfreezing_mid_run_drops_the_snapshots_that_no_longer_fit() -> None:
    """Progressive unfreezing (add_param_group): the snapshots taken before
    hold fewer parameters than the optimizer; the guard takes a new one and a
    later NaN restores that, with a GuardEvent, not a crash."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
    model[0].requires_grad_(False)
    opt = torch.optim.Adam(model[2].parameters(), lr=1e-3)
    guard = Guard(model, opt, every=10, nan_action="restore")
    x, y = data()
    for t in range(80):
        if t == 45:  # between two snapshots
            model[0].requires_grad_(True)
            opt.add_param_group({"params": model[0].parameters(), "lr": 1e-4})
        xb, yb = (
            x[(t % 32) * 32 : (t % 32 + 1) * 32],
            y[(t % 32) * 32 : (t % 32 + 1) * 32],
        )
        loss = nn.functional.mse_loss(model(xb), yb)
        if t == 48:
            loss = loss * float("nan")
        opt.zero_grad()
        loss.backward()
        if guard.step(loss):
            opt.step()
    (event,) = guard.events
    assert event.kind == "nan" and event.restored_step == 45
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([3e-4, 3e-5])
    assert math.isfinite(full_loss(model))


def test_oscillating_recoveries_judge_the_lr_after_the_cut() -> None:
    """With `oscillating` in `on`, one recovery cuts once: the spikes and the
    smoothed low the rule measured were the old LR's, not evidence against
    the new one (they cut a run to min_scale within 30 steps before)."""
    mon = lrkit.Monitor()
    rng_ = np.random.default_rng(0)
    for t in range(200):
        mon.update(t, 1.0 + 0.05 * rng_.standard_normal() + (3.0 if t % 20 == 0 else 0))
    state = mon.state()
    assert any(f.kind == "oscillating" for f in mon.findings)
    mon.restore(state)
    mon._rebase()
    found = [
        f
        for t in range(200, 230)
        for f in mon.update(t, 1.0 + 0.05 * rng_.standard_normal())
        if f.kind == "oscillating"
    ]
    assert found == []


def test_step_inputs_are_checked_and_change_nothing() -> None:
    model, opt, _ = make(GOOD_LR)
    guard = Guard(model, opt)
    for bad, match in (
        (torch.tensor(1.0 + 1j), "loss must be a real number, got a torch.complex64"),
        (torch.tensor(True), "loss must be a real number, got a torch.bool"),
        (np.ones(3), r"loss must be a scalar \(one element\)"),
        ("1.0", "loss must be a real number"),
    ):
        with pytest.raises((TypeError, ValueError), match=match):
            guard.step(bad)
    with pytest.raises(ValueError, match="grad_norm must be >= 0"):
        guard.step(1.0, grad_norm=-1.0)
    assert guard.steps == 0
    assert guard.step(np.float32(1.0)) and guard.step(np.array([1.0]))
    assert guard.step(torch.tensor([1.0]), lr=torch.tensor(0.05))
    assert guard.steps == 3


def test_constructor_arguments_are_checked() -> None:
    model, opt, loader = make(GOOD_LR)
    with pytest.raises(TypeError, match="rng must be True or False, got rng='no'"):
        Guard(model, opt, rng="no")  # type: ignore[arg-type]
    for bad in (5, "data", iter(loader), (dl for dl in [loader])):
        with pytest.raises(TypeError, match="loaders must be a data loader"):
            Guard(model, opt, loaders=bad)
    with pytest.raises(TypeError, match=r"loaders\[1\] must be a data loader"):
        Guard(model, opt, loaders=[loader, iter(loader)])
    with pytest.raises(
        ValueError, match="spike_action must be one of 'skip', 'restore'"
    ):
        Guard(model, opt, spike_action="ignore")
    other = torch.optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    with pytest.raises(ValueError, match="scheduler must be a scheduler of the guard"):
        Guard(model, opt, scheduler=torch.optim.lr_scheduler.StepLR(other, 10))
    # a model given as the optimizer: its type, not its whole repr
    with pytest.raises(TypeError) as info:
        Guard(model, model)  # type: ignore[arg-type]
    assert "torch.nn.modules.container.Sequential object>" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_guard_error_reports_the_restored_scale() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, max_recoveries=2)
    with pytest.raises(GuardError):
        train(model, opt, loader, guard, poison=set(range(30, 400)))
    assert guard.recovery_scale == 1.0  # the snapshot's: taken before any cut
    assert opt.param_groups[0]["lr"] == GOOD_LR


def test_undone_steps_counts_the_updates_not_in_force() -> None:
    """Restores of the same snapshot, and skips a later restore covers, count
    once: undone_steps is the guard's calls minus the updates the model now
    holds (Adam's own step counter)."""
    model, _, loader = make(GOOD_LR)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    guard = Guard(model, opt, every=20, max_recoveries=10)
    train(model, opt, loader, guard, epochs=3, poison={50, 52, 53, 70})
    held = int(next(iter(opt.state.values()))["step"])
    assert len(guard.events) >= 3
    assert guard.undone_steps == guard.steps - held > 0


def test_an_lrkit_scheduler_wrapped_by_accelerate_is_cut_exactly() -> None:
    accelerate = pytest.importorskip("accelerate")
    model, opt, loader = make(GOOD_LR)
    sched = lrkit.torch.Scheduler(opt, "constant()")
    acc = accelerate.Accelerator(cpu=True)
    model, opt, loader, sched = acc.prepare(model, opt, loader, sched)
    guard = Guard(
        model, opt, scheduler=sched, every=20, factor=0.5, nan_action="restore"
    )
    # 47: a cut that did not hold (an update at the new LR came between)
    train(model, opt, loader, guard, epochs=2, poison={45, 47}, sched=sched)
    inner = sched.scheduler
    assert [e.recovery_scale for e in guard.events] == [0.5, 0.125]
    assert inner.recovery_scale == guard.recovery_scale == 0.125
    assert opt.param_groups[0]["lr"] == pytest.approx(0.125 * GOOD_LR)


def test_a_resumable_streams_position_is_not_rewound() -> None:
    """A stream that keeps its position (for checkpoints) with one corrupt
    batch: the restore does not rewind it, so the run goes on with fresh data
    instead of replaying the batch that broke it until GuardError."""
    n = 2000
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x.sum(1, keepdim=True)
    y[16 * 45 : 16 * 46] = float("nan")  # the 46th batch

    class Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.pos = 0  # samples served

        def __iter__(self):  # type: ignore[no-untyped-def]
            while self.pos < n:
                i = self.pos
                self.pos += 1
                yield x[i], y[i]

    torch.manual_seed(0)
    dl = DataLoader(Stream(), batch_size=16)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    guard = Guard(
        model, opt, loaders=dl, every=10, max_recoveries=3, nan_action="restore"
    )
    for t, (xb, yb) in enumerate(dl):
        loss = nn.functional.mse_loss(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        if guard.step(loss):
            opt.step()
        if t > 100:
            break
    assert [(e.kind, e.step, e.restored_step) for e in guard.events] == [
        ("nan", 45, 40)
    ]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_an_early_divergence_judged_again_still_restores() -> None:
    """The monitor dates a divergence of the first steps back once it knows
    the noise (a trainer callback does not stop on it); the guard still
    restores and cuts on it, which costs little and helps a run at too high
    an LR."""
    from tests.test_monitor import EARLY_BLOWUP

    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    guard = lrkit.torch.Guard(
        model, opt, every=5, monitor=lrkit.MonitorConfig.for_points(60)
    )
    for x in EARLY_BLOWUP:
        guard.step(x)
    dated = [f for f in guard.monitor.findings if f.kind == "diverged"]
    assert dated and dated[0].last_step < dated[0].detected_step
    assert [e.kind for e in guard.events][:1] == ["diverged"]
    assert guard.events[0].step == dated[0].detected_step
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * 0.3)


def test_a_problem_older_than_every_snapshot_is_cut_in_place() -> None:
    """A healthy run (the calls a GuardCallback made in a real HF Trainer run,
    bf16, warmup): at step 33 the monitor judges the noisy first batches again
    as a divergence from step 1. Every kept snapshot (steps 20, 30) came after
    it and the run is far better now than then: a rollback cannot undo it and
    would lose the progress (it restored step 20, loss ~1.26 against 0.19). The
    LR is cut in place, the batch's update skipped, the weights kept."""
    losses = [2.5968, 4.159, 3.4015, 2.3521, 3.8767, 4.1655, 2.3395, 2.5239, 2.5931,
              3.0395, 2.8612, 2.3854, 2.458, 3.0715, 2.3812, 2.2667, 1.2185, 1.6146,
              1.2986, 1.257, 1.2627, 0.8855, 0.971, 0.5936, 0.6983, 0.4638, 0.3288,
              0.4623, 0.2654, 0.2762, 0.2588, 0.1834, 0.2663, 0.1933]  # fmt: skip
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    guard = Guard(model, opt, every=10)
    for t, v in enumerate(losses):
        model(torch.ones(1, 2)).sum().backward()
        before = [p.detach().clone() for p in model.parameters()]
        if guard.step(v, val_loss=1.2527 if t == 20 else None):
            opt.step()
        elif guard.events and guard.events[-1].step == t:
            after = list(model.parameters())
            assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True))
        opt.zero_grad()
    assert len(guard.events) == 1
    e = guard.events[0]
    assert (e.kind, e.first_step, e.restored_step) == ("diverged", 1, None)
    assert e.recovery_scale == pytest.approx(0.3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.003)
    assert "LR cut in place" in str(e)


def test_bad_batches_in_a_row_restore_without_deeper_cuts() -> None:
    """Three NaN batches in a row: the 2nd and 3rd losses come from the
    restored weights before any update at the new LR, so they say nothing
    about it: each restores, one cut in all (it was 0.3 x 0.09 x 0.027)."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, nan_action="restore")
    train(model, opt, loader, guard, poison={40, 41, 42})
    assert [e.step for e in guard.events] == [40, 41, 42]
    assert [e.recovery_scale for e in guard.events] == pytest.approx([0.3] * 3)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.3 * GOOD_LR)
    # with a clean update between them, the second is a cut that did not hold
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, nan_action="restore")
    train(model, opt, loader, guard, poison={40, 42})
    assert [e.recovery_scale for e in guard.events] == pytest.approx([0.3, 0.027])


def test_first_step_numbers_a_resumed_run_as_its_own() -> None:
    """A run resumed at optimizer step 500: events, findings and snapshots
    carry the run's step numbers; ``steps`` still counts this guard's calls."""
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, first_step=500, nan_action="restore")
    train(model, opt, loader, guard, poison={40})
    assert [(e.step, e.restored_step) for e in guard.events] == [(540, 530)]
    assert guard.monitor.findings[0].first_step == 540
    assert guard.steps == guard.monitor.last_step - 500 + 1
    with pytest.raises(ValueError, match="first_step must be"):
        Guard(model, opt, first_step=-1, nan_action="restore")


def test_a_gradient_nan_on_every_step_under_a_scaler_is_found() -> None:
    """fp16 with a GradScaler: a non-finite gradient norm is the scaler's
    overflow while its scale is at least 1; a NaN gradient on every step (a
    numerical bug) halves the scale below 1, where no scale helps: a ``nan``
    finding then, and GuardError once recoveries do not help (it stalled
    silently: every update skipped, the scale at 4e-44)."""
    torch.manual_seed(0)
    model, opt, loader = make(GOOD_LR)
    scaler = torch.amp.GradScaler("cpu")
    guard = Guard(model, opt, scaler=scaler, every=20)

    def run() -> None:
        t = 0
        for _ in range(20):
            for xb, yb in loader:
                with torch.autocast("cpu", dtype=torch.float16):
                    loss = nn.functional.mse_loss(model(xb).float(), yb)
                opt.zero_grad()
                scaler.scale(loss).backward()
                if t >= 50:
                    next(model.parameters()).grad[0, 0] = math.nan
                scaler.unscale_(opt)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                if guard.step(loss, grad_norm=norm):
                    scaler.step(opt)
                    scaler.update()
                t += 1

    with pytest.raises(GuardError, match="recoveries in a row"):
        run()
    first = guard.events[0]
    assert first.kind == "nan" and 60 <= first.step <= 75  # after ~16 halvings
    # an ordinary overflow (a lone inf) is still the scaler's business
    torch.manual_seed(0)
    model, opt, loader = make(GOOD_LR)
    scaler = torch.amp.GradScaler("cpu")
    guard = Guard(model, opt, scaler=scaler, every=20)
    assert guard.step(1.0, grad_norm=math.inf) and not guard.events


def _digits_run(resume: str | None) -> Guard:
    """The demo's digits MLP at lr 0.1 (SGD momentum): 10 epochs, a checkpoint
    (through torch.save, loaded weights-only), 6 more epochs. ``resume``: None
    goes on with the same guard; "state" builds a new guard from the
    checkpoint's Guard.state_dict."""
    import io

    from lrkit.demo import make_task

    task = make_task(seed=1)
    model, opt, loader = task["model"], task["optimizer"], task["train_loader"]
    for group in opt.param_groups:
        group["lr"] = 0.1
    guard = Guard(model, opt, loaders=loader)
    for epoch in range(16):
        if epoch == 10 and resume is not None:
            ck = {
                "model": model.state_dict(),
                "opt": opt.state_dict(),
                "data": loader.generator.get_state(),
                "guard": guard.state_dict(),
            }
            buf = io.BytesIO()
            torch.save(ck, buf)
            buf.seek(0)
            ck = torch.load(buf, weights_only=True)
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["opt"])
            loader.generator.set_state(ck["data"])
            guard = Guard(model, opt, loaders=loader)
            guard.load_state_dict(ck["guard"])
        for x, y in guard.batches(loader):
            loss = task["loss_fn"](model(x), y)
            opt.zero_grad()
            loss.backward()
            if guard.step(loss):
                opt.step()
    return guard


def test_a_guard_resumed_from_its_state_dict_goes_on_as_the_uninterrupted_one() -> None:
    """A healthy run near a loss of 0: a fresh guard after the resume knows
    neither the curve's start nor its noise, and its tail of hard batches read
    as a divergence (rolled back until GuardError); from the checkpoint's
    state the resumed guard decides exactly as the uninterrupted one."""
    import json

    whole = _digits_run(None)
    resumed = _digits_run("state")
    assert whole.events == [] and resumed.events == []
    assert resumed.steps == whole.steps == 16 * 44
    assert json.dumps(resumed.state_dict()) == json.dumps(whole.state_dict())


def test_guard_state_dict_keeps_the_history_and_refuses_bad_input() -> None:
    import json

    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, loaders=loader, every=10)
    train(model, opt, loader, guard, epochs=1, poison={20})
    assert [e.kind for e in guard.events] == ["nan"]
    state = json.loads(json.dumps(guard.state_dict()))  # NaN evidence survives
    other = Guard(model, opt, every=10)
    other.load_state_dict(state)
    assert [str(e) for e in other.events] == [str(e) for e in guard.events]
    assert math.isnan(other.events[0].evidence["loss"])
    assert other.steps == guard.steps and other.undone_steps == guard.undone_steps
    assert other.step(0.5) and other.monitor.last_step == guard.monitor.last_step + 1
    fresh = Guard(model, opt)
    before = json.dumps(fresh.state_dict())
    for bad, says in [
        ({"format": "lrkit.Guard"}, "got a dict with keys ['format']"),
        ({**state, "events": [{"step": 1}]}, "state_dict must be a dict returned"),
        ({**state, "monitor": {}}, "a dict returned by Monitor.state_dict()"),
        ({**state, "scale": -1.0}, "recovery scale -1.0, not > 0"),
        (
            {**state, "counters": {**state["counters"], "_t": "12"}},
            "_t is '12', not an int",
        ),
        ("guard.pt", "state_dict must be a dict returned by Guard.state_dict()"),
    ]:
        with pytest.raises(ValueError, match=re.escape(says)):
            fresh.load_state_dict(bad)  # type: ignore[arg-type]
        assert json.dumps(fresh.state_dict()) == before


def test_a_guard_error_on_a_resumed_run_without_its_state_says_so() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=5, max_recoveries=1, first_step=500)
    with pytest.raises(GuardError, match="started at step 500 without the state"):
        train(model, opt, loader, guard, epochs=1, poison=set(range(20, 40)))
    # given the state of the run before, the hint is not given
    model, opt, loader = make(GOOD_LR)
    before = Guard(model, opt, every=5, first_step=500)
    resumed = Guard(model, opt, every=5, max_recoveries=1)
    resumed.load_state_dict(before.state_dict())
    with pytest.raises(GuardError) as info:
        train(model, opt, loader, resumed, epochs=1, poison=set(range(20, 40)))
    assert "without the state" not in str(info.value)


def test_a_problem_right_after_a_resume_restores_the_loaded_state() -> None:
    """A bad batch at the first step after the resume (with a fixed data order
    it comes back at every resume) has the checkpoint's state to go back to."""
    import json

    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10, nan_action="restore")
    train(model, opt, loader, guard, epochs=1)  # 32 clean steps
    state = json.loads(json.dumps(guard.state_dict(), allow_nan=False))
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    resumed = Guard(model, opt, every=10, nan_action="restore")
    resumed.load_state_dict(state)
    train(model, opt, loader, resumed, epochs=1, poison={0})
    (event,) = resumed.events
    assert (event.kind, event.step, event.restored_step) == ("nan", 32, 31)
    # the run went on from the loaded weights (the first update skipped)
    assert resumed.undone_steps == guard.undone_steps + 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(weights[k], v) for k, v in model.state_dict().items())


def _digits_mlp(lr: float) -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    ds = TensorDataset(
        torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
    )
    g = torch.Generator().manual_seed(0)
    loader = DataLoader(ds, batch_size=64, shuffle=True, generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9), loader


def test_a_run_killed_in_its_first_steps_goes_back_to_its_start() -> None:
    """SGD at 60x its good LR on the digits: the ReLU net blows up in its first
    steps, found (dated back) only at step 17. Snapshots every step, keep=2:
    those taken meanwhile hold the blow-up. The first snapshot is kept until
    the run trains past its first loss, so the guard goes back to it and cuts;
    before, it cut in place and the run ended dead at chance (2.316), no error."""
    model, opt, loader = _digits_mlp(3.0)
    guard = Guard(model, opt, loaders=loader, every=1, keep=2)
    for _ in range(10):
        for xb, yb in guard.batches(loader):
            loss = nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            if guard.step(loss):
                opt.step()
    x, y = loader.dataset.tensors  # type: ignore[attr-defined]
    with torch.no_grad():
        final = float(nn.functional.cross_entropy(model(x), y))
    assert final < 0.5  # trained (chance: 2.30)
    assert 0 in [e.restored_step for e in guard.events]
    assert len(guard._saved) <= 2  # the first one let go once past the start


def test_lone_nan_batches_are_skipped_not_cut() -> None:
    """A NaN loss from finite weights (a NaN in one batch's data) skips that
    batch's update; the LR is kept. Review: four such batches in a run cut
    the LR to 0.0081x for good (final loss 0.18 against 0.03 skipping them
    by hand). The run is bit for bit the one that skips them by hand."""
    poison = {100, 300, 500, 700}
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    train(model, opt, loader, guard, epochs=25, poison=poison)
    assert [(e.kind, e.step, e.restored_step) for e in guard.events] == [
        ("nan", t, None) for t in sorted(poison)
    ]
    assert guard.recovery_scale == 1.0 and opt.param_groups[0]["lr"] == GOOD_LR
    assert "update skipped" in str(guard.events[0])
    by_hand, opt2, loader2 = make(GOOD_LR)
    t = 0
    for _ in range(25):
        for xb, yb in loader2:
            loss = nn.functional.mse_loss(by_hand(xb), yb)
            opt2.zero_grad()
            loss.backward()
            if t not in poison:
                opt2.step()
            t += 1
    for a, b in zip(model.parameters(), by_hand.parameters(), strict=True):
        assert torch.equal(a, b)


def test_a_nan_that_stays_or_broken_weights_restore_and_cut() -> None:
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    train(model, opt, loader, guard, epochs=2, poison={40, 41})  # NaN again at once
    assert [(e.step, e.restored_step is not None) for e in guard.events] == [
        (40, False),
        (41, True),
    ]
    assert guard.recovery_scale == pytest.approx(0.3)
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    for t, (xb, yb) in enumerate(loader):
        if t == 30:
            with torch.no_grad():
                model[0].weight[0, 0] = float("nan")  # the weights broke
        guarded_step(guard, model, opt, xb, yb)
    assert [(e.step, e.restored_step) for e in guard.events] == [(30, 20)]
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(ValueError, match="nan_action must be one of"):
        Guard(model, opt, nan_action="ignore")


def test_a_skipped_batch_leaves_no_trace_in_batchnorm_statistics() -> None:
    """A spike's update is skipped; its forward pass had moved the BatchNorm
    running statistics already: they are put back (review: running variance
    1129 against 0.06 after one corrupted batch, eval loss 2.25 vs 0.64)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y, dtype=torch.long)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10)
    )
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    guard = Guard(model, opt, every=10)
    g = torch.Generator().manual_seed(0)
    bn = model[1]
    for t in range(100):
        idx = torch.randint(0, len(y), (64,), generator=g)
        xb, yb = x[idx], y[idx]
        if t == 80:  # a corrupted batch: huge inputs, wrong labels
            xb = xb.clone()
            xb[:2] *= 1e3
            yb = (yb + 1) % 10
            before = (bn.running_mean.clone(), bn.running_var.clone())
            count = int(bn.num_batches_tracked)
        loss = nn.functional.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        if guard.step(loss):
            opt.step()
        if t == 80:
            assert [(e.kind, e.restored_step) for e in guard.events] == [
                ("spike", None)
            ]
            assert torch.equal(bn.running_mean, before[0])
            assert torch.equal(bn.running_var, before[1])
            assert int(bn.num_batches_tracked) == count
    assert float(bn.running_var.max()) < 1.0


def test_small_things_a_review_found(caplog: pytest.LogCaptureFixture) -> None:
    model, opt, loader = make(GOOD_LR)
    g = Guard(model, opt, first_step=1000)
    assert repr(g).startswith("Guard(step=1000, steps=0,") and g.steps == 0
    # a dict of MonitorConfig settings, as the trainer callbacks take
    assert Guard(model, opt, monitor={"spike_z": 8.0}).monitor.config.spike_z == 8.0
    with pytest.raises(ValueError, match="'diverge' is not one"):
        Guard(model, opt, on=["nan", "diverge"])
    # a torch scheduler driving the optimizer, not given: its next step would
    # undo the cut
    torch.optim.lr_scheduler.StepLR(opt, 10)
    with caplog.at_level("WARNING", logger="lrkit.torch.guard"):
        Guard(model, opt)
    assert sum("pass it as Guard(scheduler=...)" in r.message for r in caplog.records)
    # events loaded from a checkpoint equal the ones saved, NaN evidence included
    model, opt, loader = make(GOOD_LR)
    guard = Guard(model, opt, every=10)
    train(model, opt, loader, guard, epochs=1, poison={12})
    assert math.isnan(guard.events[0].evidence["loss"])
    other = Guard(*make(GOOD_LR)[:2])
    other.load_state_dict(json.loads(json.dumps(guard.state_dict())))
    assert other.events == guard.events
    # snapshots hold no gradients (a restore clears them): params + momentum
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    assert guard._saved[-1].snap.nbytes == 2 * params
