"""Tests of lrkit.lightning: MonitorCallback in real Lightning ``Trainer.fit`` runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("lightning.pytorch")

from tests.helpers import Recording, run_ranks  # noqa: E402

import lrkit  # noqa: E402
from lrkit.lightning import GuardCallback, MonitorCallback  # noqa: E402


class Reg(pl.LightningModule):  # type: ignore[misc]
    """A small tanh MLP on a linear regression; records what it computes."""

    def __init__(
        self,
        lr: float,
        *,
        nan_at: int | None = None,
        scheduler: bool | str = False,
        log_key: str | None = None,
    ) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
        )
        self.lr = lr
        self.nan_at = nan_at
        self.scheduler = scheduler
        self.log_key = log_key
        self.nan_once = False  # NaN from nan_at on, or at nan_at only
        self.adam = False
        self.batch_losses: list[float] = []
        self.val_losses: list[float] = []
        self.norms: list[float] = []
        self.lrs: list[float] = []

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        n = len(self.batch_losses)
        if self.nan_at is not None and (
            n == self.nan_at or (n > self.nan_at and not self.nan_once)
        ):
            loss = loss * float("nan")
        self.batch_losses.append(float(loss.detach()))
        if self.log_key is not None:
            self.log(self.log_key, 2 * loss, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_losses.append(float(self.trainer.callback_metrics["val_loss"]))

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.norms.append(float(torch.nn.utils.get_total_norm(grads)))
        self.lrs.append(optimizer.param_groups[0]["lr"])

    def configure_optimizers(self) -> Any:
        if self.adam:
            opt = torch.optim.Adam(self.parameters(), lr=self.lr)
        else:
            opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        if not self.scheduler:
            return opt
        if self.scheduler == "epoch":
            halve = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
            return {"optimizer": opt, "lr_scheduler": halve}
        sched = lrkit.torch.Scheduler(opt, "warmup(steps=10) >> constant()")
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "interval": "step"},
        }


def _data(n: int = 512, seed: int = 0) -> Any:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = x @ torch.randn(8, 1, generator=g) + 0.1 * torch.randn(n, 1, generator=g)
    return torch.utils.data.TensorDataset(x, y)


def _fit(
    module: Reg,
    cb: MonitorCallback,
    *,
    epochs: int = 4,
    val: bool = False,
    batch_size: int = 32,
    **trainer_kw: Any,
) -> Any:
    torch.manual_seed(0)
    train = torch.utils.data.DataLoader(_data(), batch_size=batch_size)
    vloader = torch.utils.data.DataLoader(_data(128, seed=1), batch_size=64)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[cb],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=2 if val else 0,
        **trainer_kw,
    )
    trainer.fit(module, train, vloader if val else None)
    return trainer


def test_healthy_run_is_silent_and_every_step_is_fed_with_its_lr_norm_and_val() -> None:
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    module = Reg(0.05, scheduler=True)
    trainer = _fit(module, cb, epochs=5, val=True)
    assert cb.stopped_by is None and trainer.global_step == 80
    assert not [f for f in mon.findings if f.severity != "info"]
    train = [c for c in mon.calls if c[1] is not None]
    assert [c[0] for c in mon.calls] == list(range(len(mon.calls)))
    np.testing.assert_allclose(cb.losses, module.batch_losses, rtol=1e-6)
    np.testing.assert_allclose([c[1] for c in train], module.batch_losses, rtol=1e-6)
    # the LR each step used: warmup rises over the first 10 steps
    np.testing.assert_allclose([c[2]["lr"] for c in train], module.lrs)
    assert module.lrs[0] < module.lrs[9] < module.lrs[10] == pytest.approx(0.05)
    np.testing.assert_allclose(
        [c[2]["grad_norm"] for c in train], module.norms, rtol=1e-5
    )
    # validation after each epoch (not the sanity check) goes with the next
    # point, the last one alone at the end
    vals = [c[2]["val_loss"] for c in mon.calls if c[2].get("val_loss") is not None]
    np.testing.assert_allclose(vals, module.val_losses, rtol=1e-6)
    assert len(vals) == 5 and mon.calls[-1][1] is None
    assert mon.stats()["val_losses"] == 5


def test_a_diverging_run_is_stopped_early() -> None:
    cb = MonitorCallback(verbose=False)
    trainer = _fit(Reg(3.0), cb, epochs=20)
    assert cb.stopped_by is not None and cb.stopped_by.kind in ("nan", "diverged")
    assert trainer.global_step < 16 * 20
    assert len(cb.losses) == trainer.global_step
    assert "LR" in cb.stopped_by.advice


def test_an_injected_nan_stops_the_run_after_that_step(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cb = MonitorCallback(verbose=True)
    module = Reg(0.05, nan_at=20)
    trainer = _fit(module, cb, epochs=10)
    assert cb.stopped_by is not None and cb.stopped_by.kind == "nan"
    assert cb.stopped_by.first_step == 20 and trainer.global_step == 21
    assert math.isnan(cb.losses[-1])
    assert capsys.readouterr().out.count("lrkit: nan at step 20") == 1


def test_gradient_accumulation_feeds_one_point_per_optimizer_step() -> None:
    """Lightning divides the returned loss by the accumulation count; the
    point is the mean of the step's micro-batch losses, at the step's LR."""
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    module = Reg(0.05)
    trainer = _fit(module, cb, epochs=2, accumulate_grad_batches=4)
    assert trainer.global_step == 8 and len(cb.losses) == 8
    micro = np.asarray(module.batch_losses).reshape(8, 4).mean(axis=1)
    np.testing.assert_allclose(cb.losses, micro, rtol=1e-6)
    assert len(module.norms) == 8
    np.testing.assert_allclose([c[2]["grad_norm"] for c in mon.calls], module.norms)


def test_the_norm_is_read_before_clipping_and_can_be_turned_off() -> None:
    mon = Recording()
    module = Reg(0.05)
    _fit(module, MonitorCallback(mon, verbose=False), epochs=1, gradient_clip_val=1e-3)
    norms = [c[2]["grad_norm"] for c in mon.calls]
    assert min(norms) > 1e-2  # far above the clip: the unclipped norm
    mon = Recording()
    _fit(Reg(0.05), MonitorCallback(mon, verbose=False, grad_norm=False), epochs=1)
    assert all(c[2]["grad_norm"] is None for c in mon.calls) and len(mon.calls) == 16


def test_loss_key_reads_a_logged_metric_instead_of_the_returned_loss() -> None:
    module = Reg(0.05, log_key="train_loss")  # logs twice the loss it returns
    cb = MonitorCallback(loss_key="train_loss", verbose=False)
    _fit(module, cb, epochs=1)
    np.testing.assert_allclose(
        cb.losses, 2 * np.asarray(module.batch_losses), rtol=1e-6
    )


class Manual(Reg):
    """Manual optimization: one step per batch, the loss logged, not returned."""

    def __init__(self, lr: float) -> None:
        super().__init__(lr)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.batch_losses.append(float(loss.detach()))
        opt.zero_grad()
        self.manual_backward(loss)
        opt.step()
        self.log("train_loss", loss, on_step=True, on_epoch=False)


def test_manual_optimization_with_a_loss_key(caplog: pytest.LogCaptureFixture) -> None:
    module = Manual(0.05)
    cb = MonitorCallback(loss_key="train_loss", verbose=False)
    trainer = _fit(module, cb, epochs=2)
    assert trainer.global_step == 32
    np.testing.assert_allclose(cb.losses, module.batch_losses, rtol=1e-6)
    # without the key nothing is returned to read: warned once, nothing fed
    cb = MonitorCallback(verbose=False)
    with caplog.at_level("WARNING", logger="lrkit.lightning"):
        _fit(Manual(0.05), cb, epochs=2)
    assert cb.losses == []
    assert sum("returned no loss" in r.message for r in caplog.records) == 1


def test_missing_keys_are_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    cb = MonitorCallback(loss_key="nope", val_key="val_acc", verbose=False)
    with caplog.at_level("WARNING", logger="lrkit.lightning"):
        _fit(Reg(0.05), cb, epochs=3, val=True)
    text = [r.message for r in caplog.records]
    assert sum("no 'nope' among the logged metrics" in t for t in text) == 1
    assert sum("no 'val_acc' among the logged metrics" in t for t in text) == 1
    assert any("val_loss" in t for t in text)  # the keys that are there
    assert cb.losses == [] and cb.monitor.updates == 0


def test_a_second_fit_continues_the_steps() -> None:
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    module = Reg(0.05)
    _fit(module, cb, epochs=1)
    _fit(module, cb, epochs=1)  # a new Trainer, the same callback and run
    assert [c[0] for c in mon.calls] == list(range(32))


def _csv_fit(
    module: Reg,
    cbs: list[Any],
    root: Path,
    *,
    epochs: int,
    val: bool = False,
    ckpt: Path | None = None,
    checkpoint: bool = False,
) -> Any:
    """Fit with a CSVLogger logging every step under ``root``."""
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=cbs,
        logger=CSVLogger(root, name="run"),
        log_every_n_steps=1,
        default_root_dir=root,
        enable_checkpointing=checkpoint,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    train = torch.utils.data.DataLoader(_data(), batch_size=32)
    vloader = torch.utils.data.DataLoader(_data(128, seed=1), batch_size=64)
    trainer.fit(module, train, vloader if val else None, ckpt_path=ckpt)
    return trainer


def test_points_take_the_step_the_loggers_use_on_a_resume_without_its_state(
    tmp_path: Path,
) -> None:
    """A checkpoint saved without the callback (added on resume): its points
    used to be numbered from 0 (the NaN at global step 20 reported at 4)."""
    _csv_fit(NaNAtStep(0.05), [], tmp_path / "a", epochs=1, checkpoint=True)
    (ckpt,) = (tmp_path / "a").rglob("*.ckpt")
    mon = Recording()
    cb = MonitorCallback(mon, loss_key="train_loss", stop_on=(), verbose=False)
    module = NaNAtStep(0.05, log_key="train_loss")
    _csv_fit(module, [cb], tmp_path / "b", epochs=2, ckpt=ckpt)
    assert [c[0] for c in mon.calls] == list(range(16, 32))
    # the steps of the log that lrkit diagnose reads, and the same findings
    (run,) = (tmp_path / "b").glob("run/version_*")
    log = lrkit.read_log(run, loss_key="train_loss")
    assert log.steps.tolist() == list(range(16, 32))
    assert (mon.findings[0].kind, mon.findings[0].first_step) == ("nan", 20)


def test_a_second_fit_on_the_same_trainer_keeps_lightnings_steps(
    tmp_path: Path,
) -> None:
    """The final validation loss of a fit used to take a step of its own, and
    the next fit's points were one step late (the NaN at 20 reported at 21).
    Two fits of one Trainer are judged as the one fit of them both."""
    mon = lrkit.Monitor()
    cb = MonitorCallback(mon, stop_on=(), verbose=False)
    torch.manual_seed(0)
    module = NaNAtStep(0.05)
    module.nan_once = True
    trainer = _csv_fit(module, [cb], tmp_path / "a", epochs=1, val=True)
    assert mon.last_step == 16  # the validation loss, judged with the run
    trainer.fit_loop.max_epochs = 2
    train = torch.utils.data.DataLoader(_data(), batch_size=32)
    vloader = torch.utils.data.DataLoader(_data(128, seed=1), batch_size=64)
    trainer.fit(module, train, vloader)
    assert trainer.global_step == 32 and mon.last_step == 32
    assert [(f.kind, f.first_step) for f in mon.findings] == [("nan", 20)]
    # as one fit of two epochs: bit for bit
    whole = MonitorCallback(lrkit.Monitor(), stop_on=(), verbose=False)
    torch.manual_seed(0)
    module = NaNAtStep(0.05)
    module.nan_once = True
    _csv_fit(module, [whole], tmp_path / "b", epochs=2, val=True)
    assert json.dumps(mon.state_dict()) == json.dumps(whole.monitor.state_dict())


def test_the_default_monitor_is_sized_to_the_run_as_diagnose_sizes_its_log(
    tmp_path: Path,
) -> None:
    """A short run (64 steps) at an LR too low: lrkit diagnose of its log
    (sized with MonitorConfig.for_points) finds it too slow; the live
    callback with the default Monitor() found nothing."""
    cb = MonitorCallback(loss_key="train_loss", verbose=False)
    module = Reg(0.002, log_key="train_loss")
    trainer = _csv_fit(module, [cb], tmp_path, epochs=4)
    assert cb.monitor.config == lrkit.MonitorConfig.for_points(64)
    assert cb.state_dict()["monitor"]["config"] == cb.monitor.config.to_dict()
    (run,) = tmp_path.glob("run/version_*")
    log = lrkit.diagnose(lrkit.read_log(run, loss_key="train_loss"))
    live = [(f.kind, f.first_step) for f in cb.monitor.findings]
    assert live == [(f.kind, f.first_step) for f in log.findings] == [("too_slow", 20)]
    assert trainer.global_step == 64


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stop_on must be"):
        MonitorCallback(stop_on=("explode",))
    with pytest.raises(TypeError, match="stop_on must be a sequence"):
        MonitorCallback(stop_on="nan")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="monitor must be"):
        MonitorCallback(monitor={"nan": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_key must be a non-empty log key"):
        MonitorCallback(loss_key="")
    with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
        MonitorCallback(val_key=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grad_norm must be True or False"):
        MonitorCallback(grad_norm="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="verbose must be True or False"):
        MonitorCallback(verbose=1)  # type: ignore[arg-type]


# ------------------------------------------------------------ GuardCallback
def test_guard_recovers_from_an_injected_nan_and_finishes_the_run() -> None:
    cb = GuardCallback(every=10, nan_action="restore")
    module = Reg(0.05, nan_at=25)
    module.nan_once = True
    trainer = _fit(module, cb, epochs=4)
    assert trainer.global_step == 64  # the run went on to its end
    events = cb.guard.events
    assert [(e.kind, e.step, e.restored_step) for e in events] == [("nan", 25, 20)]
    # the restored model trained on: finite weights, a loss below the start
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert module.batch_losses[-1] < module.batch_losses[0] / 3
    # the LR was cut once by the default factor
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.05 * 0.3)


@pytest.mark.parametrize("clip", ["value", "norm"])
def test_a_recovered_step_leaves_no_update_behind(clip: str) -> None:
    """Lightning clips and steps after the guard restored: the step's update
    (Adam's moments and step count included) is undone, with either clipping."""
    cb = GuardCallback(every=10, nan_action="restore")
    module = Reg(0.01, nan_at=25)
    module.nan_once = module.adam = True
    trainer = _fit(
        module, cb, epochs=4, gradient_clip_val=1.0, gradient_clip_algorithm=clip
    )
    assert trainer.global_step == 64
    assert [(e.kind, e.restored_step) for e in cb.guard.events] == [("nan", 20)]
    opt = trainer.optimizers[0]
    # 20 updates before the snapshot, step 25 skipped, steps 26..63 applied
    assert {int(opt.state[p]["step"]) for p in module.parameters()} == {20 + 38}
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_guard_recovers_under_a_grad_scaler() -> None:
    """precision "16-mixed" (Lightning's MixedPrecision plugin with a
    GradScaler; on the CPU here, as on a GPU): the recovery goes through the
    scaler's unscale/step/update."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    plugin = MixedPrecision("16-mixed", device="cpu", scaler=scaler)
    cb = GuardCallback(every=10, nan_action="restore")
    module = Reg(0.05, nan_at=25)
    module.nan_once = True
    trainer = _fit(module, cb, epochs=4, plugins=[plugin])
    assert trainer.global_step == 64
    assert [(e.kind, e.restored_step) for e in cb.guard.events] == [("nan", 20)]
    assert all(torch.isfinite(p).all() for p in module.parameters())
    assert module.batch_losses[-1] < module.batch_losses[0] / 3


def test_guard_brings_an_lr_100x_too_high_back_to_a_working_one() -> None:
    good = Reg(0.02)
    _fit(good, GuardCallback(every=10), epochs=6)
    module = Reg(2.0)  # 100x the good LR: diverges within a few steps
    cb = GuardCallback(every=10)
    trainer = _fit(module, cb, epochs=6)
    assert trainer.global_step == 96
    assert len(cb.guard.events) >= 1
    final_lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert final_lr < 2.0 * 0.3
    assert all(torch.isfinite(p).all() for p in module.parameters())
    tail = float(np.mean(module.batch_losses[-16:]))
    assert math.isfinite(tail) and tail < 2 * float(np.mean(good.batch_losses[-16:]))


def test_guard_with_gradient_accumulation_reads_the_step_loss() -> None:
    mon = Recording()
    cb = GuardCallback(every=5, monitor=mon)
    module = Reg(0.05)
    trainer = _fit(module, cb, epochs=2, accumulate_grad_batches=4)
    assert trainer.global_step == 8 and cb.guard.steps == 8
    micro = np.asarray(module.batch_losses).reshape(8, 4).mean(axis=1)
    np.testing.assert_allclose([c[1] for c in mon.calls], micro, rtol=1e-6)
    assert [c[2]["grad_norm"] for c in mon.calls] == pytest.approx(module.norms)
    assert not cb.guard.events and micro[-1] < micro[0]


def test_guard_callback_refuses_what_it_cannot_do() -> None:
    with pytest.raises(TypeError, match="skip_batches must be left out"):
        GuardCallback(skip_batches=2)
    with pytest.raises(TypeError, match="optimizer must be left out"):
        GuardCallback(optimizer=None)
    # the trainer's step (a checkpoint's when resumed): overriding it put the
    # guard's steps out of line with the trainer's (review)
    with pytest.raises(TypeError, match="first_step must be left out"):
        GuardCallback(first_step=1000)
    # a misspelt setting names the valid ones (it was Guard.__init__'s bare
    # TypeError; review)
    with pytest.raises(
        TypeError,
        match=r"evry must be a GuardCallback setting.*"
        r"Did you mean every\?",
    ):
        GuardCallback(evry=10)
    with pytest.raises(ValueError, match="factor"):
        GuardCallback(factor=3.0)  # the Guard's own check, at construction
    with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
        GuardCallback(val_key="")
    with pytest.raises(lrkit.LRKitError, match="needs automatic optimization"):
        _fit(Manual(0.05), GuardCallback(), epochs=1)


@pytest.mark.parametrize("nan_at", [30, 31])
def test_a_rejected_last_batch_keeps_the_epoch_schedule(nan_at: int) -> None:
    """Lightning steps an epoch scheduler before on_train_batch_end: a
    rejected step on an epoch's last batch (31) must not undo it."""
    cb = GuardCallback(every=10, nan_action="restore")
    module = Reg(0.05, nan_at=nan_at, scheduler="epoch")
    module.nan_once = True
    trainer = _fit(module, cb, epochs=4)
    assert [e.kind for e in cb.guard.events] == ["nan"]
    sched = trainer.lr_scheduler_configs[0].scheduler
    assert sched.last_epoch == 4
    # the cut (0.3x) times 4 halvings of the epoch schedule
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(0.05 * 0.3 * 0.5**4)


def test_guard_with_a_monitor_of_its_own_across_two_fits() -> None:
    mon = lrkit.Monitor()
    cb = GuardCallback(every=10, monitor=mon)
    module = Reg(0.05)
    _fit(module, cb, epochs=1)
    _fit(module, cb, epochs=1)
    assert mon.last_step == 31 and mon.updates == 32


class NaNAtStep(Reg):
    """A NaN loss at global step 20 (numbered on across a resume)."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if self.trainer.global_step == 20 else loss


class Crash(pl.Callback):  # type: ignore[misc]
    """Ends fit with an error when epoch ``at`` starts (after the checkpoint
    of the epoch before): an interrupted run."""

    def __init__(self, at: int | None) -> None:
        self.at = at

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        if trainer.current_epoch == self.at:
            raise RuntimeError("interrupted")


def _resumable(
    tmp_path: Path,
    epochs: int,
    ckpt: Path | None,
    factor: float = 0.3,
    crash_at: int | None = None,
) -> list[Any]:
    """Fit Reg (a NaN at step 20) with a guard and a monitor, checkpointing
    every epoch; from ``ckpt`` when given; interrupted at epoch ``crash_at``."""
    torch.manual_seed(0)
    module = NaNAtStep(0.05)
    cbs = [
        GuardCallback(every=10, factor=factor),
        MonitorCallback(stop_on=(), verbose=False),
    ]
    checkpoint = pl.callbacks.ModelCheckpoint(tmp_path, save_top_k=-1)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=[*cbs, checkpoint, Crash(crash_at)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        num_sanity_val_steps=0,
    )
    train = torch.utils.data.DataLoader(_data(), batch_size=32)
    vloader = torch.utils.data.DataLoader(_data(128, seed=1), batch_size=64)
    trainer.fit(module, train, vloader, ckpt_path=ckpt)
    return cbs


def test_fit_from_a_checkpoint_goes_on_with_the_guard_and_monitor_state(
    tmp_path: Path,
) -> None:
    whole = _resumable(tmp_path / "a", 4, None)
    with pytest.raises(RuntimeError, match="interrupted"):
        _resumable(tmp_path / "b", 4, None, crash_at=2)
    (ckpt,) = (tmp_path / "b").glob("epoch=1-*.ckpt")
    # the callbacks' state is plain data: a weights-only load reads it
    saved = torch.load(ckpt, weights_only=True)["callbacks"]
    assert any("GuardCallback" in k for k in saved)
    resumed = _resumable(tmp_path / "b", 4, ckpt)
    guard, mon = resumed[0].guard, resumed[1].monitor
    # the guard's recovery (step 20, before the checkpoint) is in the resumed
    # history, and the resumed run is judged exactly as the uninterrupted one
    assert [e.kind for e in guard.events] == ["nan"]
    assert json.dumps(guard.state_dict()) == json.dumps(whole[0].guard.state_dict())
    assert guard.steps == whole[0].guard.steps == 64
    assert mon.last_step == whole[1].monitor.last_step == 64  # the last val
    assert [f.kind for f in mon.findings] == ["nan"]
    assert json.dumps(mon.state_dict()) == json.dumps(whole[1].monitor.state_dict())
    # sized to the whole run (64 steps) when it started, and resumed so
    assert mon.config == lrkit.MonitorConfig.for_points(64)


DDP_SCRIPT = """
import sys, warnings
import torch, lightning.pytorch as pl
warnings.simplefilter("ignore")
sys.path[:0] = [{tests!r}, {root!r}]
from test_lightning import Reg, _data
from lrkit.lightning import GuardCallback, MonitorCallback


class OneRankNaN(Reg):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if self.global_rank == 0 and self.global_step == 13:
            # on one rank only, and the loss only: the gradients (averaged
            # over ranks by DDP) stay finite, so only that rank's loss tells
            loss = loss + torch.tensor(float("nan"))
        return loss


class Report(pl.Callback):
    # each rank writes what it ends with, then waits for the other (rank 0
    # ending first would end rank 1's process)

    def __init__(self, cb):
        self.cb = cb

    def on_train_end(self, trainer, module):
        w = torch.cat([p.detach().flatten() for p in module.parameters()])
        if isinstance(self.cb, GuardCallback):
            events = [(e.kind, e.step, e.restored_step) for e in self.cb.guard.events]
        else:  # the monitor: what stopped it on this rank (rank 0's NaN)
            events = [(f.kind, f.first_step) for f in self.cb.monitor.findings]
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        with open(f"result_{{trainer.global_rank}}.txt", "w") as fh:
            fh.write(repr((trainer.global_step, events, lr,
                           bool(torch.isfinite(w).all()), w.tolist())))
        trainer.strategy.barrier()


if __name__ == "__main__":
    torch.manual_seed(0)
    cb = (
        GuardCallback(every=5, nan_action="restore")
        if sys.argv[1] == "guard"
        else MonitorCallback()
    )
    module = OneRankNaN(0.05)
    loader = torch.utils.data.DataLoader(_data(), batch_size=32)
    trainer = pl.Trainer(
        max_epochs=4, callbacks=[cb, Report(cb)], logger=False,
        enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=2, strategy="ddp",
        num_sanity_val_steps=0,
    )
    trainer.fit(module, loader)
    # a process group left to the interpreter's exit can abort it under load
    # ("terminate called without an active exception", seen once in CI)
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
"""


def _ddp(tmp_path: Path, which: str) -> list[Any]:
    """Run DDP_SCRIPT in two real DDP processes (gloo, CPU): each rank's
    (global_step, events or findings, lr, finite weights, weights)."""
    tests = Path(__file__).resolve().parent
    script = tmp_path / "ddp_guard.py"
    script.write_text(DDP_SCRIPT.format(tests=str(tests), root=str(tests.parent)))
    return run_ranks(script, which)


def test_guard_under_ddp_restores_every_rank_together(tmp_path: Path) -> None:
    """The loss (not the gradients) goes NaN on rank 0 only. The ranks agree
    (each guard sees the mean loss over ranks): both restore the same
    snapshot, cut the LR, and end with the same weights."""
    rank0, rank1 = _ddp(tmp_path, "guard")
    assert rank0 == rank1  # same steps, events, LR, weights on both ranks
    steps, events, lr, finite, _ = rank0
    assert (steps, events, finite) == (32, [("nan", 13, 10)], True)
    assert lr == pytest.approx(0.05 * 0.3)


def test_monitor_under_ddp_stops_every_rank_together(tmp_path: Path) -> None:
    """Rank 0's monitor sees the NaN, rank 1's does not: the stop is agreed,
    both ranks end after the same step with the same weights."""
    rank0, rank1 = _ddp(tmp_path, "monitor")
    assert rank0[0] == rank1[0] == 14
    assert [k for k, _ in rank0[1]] == ["nan"]
    # rank 1 saw no NaN, and its run, stopped while still falling, is not
    # judged whole ('still steep': too slow) at the end
    assert rank1[1] == []
    assert rank0[4] == rank1[4]


def test_callbacks_of_one_class_with_other_settings_keep_their_own_state(
    tmp_path: Path,
) -> None:
    """Two monitors (or guards) with other settings in one Trainer: each
    has its own state in the checkpoint, and a bad state is refused."""
    cbs = [
        MonitorCallback(stop_on=(), verbose=False),
        MonitorCallback(monitor={"spike_z": 10.0}, stop_on=(), verbose=False),
        GuardCallback(every=10),
        GuardCallback(every=20, on=("nan",)),
    ]
    assert len({cb.state_key for cb in cbs}) == 4
    # the same settings in another process: the same key
    again = MonitorCallback(monitor=lrkit.MonitorConfig(spike_z=10.0), stop_on=())
    assert cbs[1].state_key == again.state_key
    _fit(Reg(0.05), cbs[0], epochs=1)
    state = cbs[0].state_dict()
    cbs[1].load_state_dict(state)
    assert cbs[1].monitor.last_step == 15 and cbs[1].monitor.config.spike_z == 10.0
    for bad in (None, {}, {"monitor": 5}, {**state, "step": -1}, {**state, "val": "x"}):
        with pytest.raises(ValueError, match="a dict returned by MonitorCallback"):
            cbs[0].load_state_dict(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="a dict returned by Guard.state_dict"):
        cbs[2].load_state_dict({"guard": {"format": "lrkit.Guard"}})
    with pytest.raises(ValueError, match="a dict returned by GuardCallback"):
        cbs[2].load_state_dict({"guard": 5})
    assert cbs[0].monitor.last_step == 15 and cbs[2]._resume is None


def test_a_monitor_beside_a_guard_does_not_stop_for_what_the_guard_recovers() -> None:
    """The guard recovers from the NaN at step 20: the default MonitorCallback
    (stop_on nan, diverged) reports it, saying so, and lets the run finish."""
    module = NaNAtStep(0.05)
    mon = MonitorCallback(verbose=False)
    trainer = pl.Trainer(
        max_epochs=2,
        callbacks=[GuardCallback(every=10), mon],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, torch.utils.data.DataLoader(_data(), batch_size=32))
    assert trainer.global_step == 32 and mon.stopped_by is None
    assert [f.kind for f in mon.monitor.findings] == ["nan"]
    # without the guard the same run stops at the NaN
    alone = MonitorCallback(verbose=False)
    _fit(NaNAtStep(0.05), alone, epochs=2)
    assert alone.stopped_by is not None and alone.stopped_by.kind == "nan"


def test_a_guard_error_leaves_the_module_unguarded_for_a_later_monitor() -> None:
    """A GuardError ends fit without on_fit_end: the module used to stay
    marked as guarded, and a MonitorCallback in a later fit of it no longer
    stopped on NaN (the run went on to its end on NaN weights)."""
    from lrkit.torch import GuardError

    module = Reg(0.05, nan_at=3)  # NaN from the 4th batch on
    guard = GuardCallback(every=1, max_recoveries=2)
    with pytest.raises(GuardError):
        _fit(module, guard, epochs=1)
    assert not guard.guard._saved  # closed: its snapshots freed
    module.batch_losses = []
    module.nan_at = 5
    mon = MonitorCallback(verbose=False)
    trainer = _fit(module, mon, epochs=1)
    assert mon.stopped_by is not None and mon.stopped_by.kind == "nan"
    assert trainer.global_step == 6


def test_guard_events_reach_the_trainers_logger(tmp_path: Path) -> None:
    """Recoveries are logged as metrics (lrkit/guard_events, lrkit/recovery_scale)
    at the steps where they happen: a CSVLogger's metrics.csv holds them."""
    from lightning.pytorch.loggers import CSVLogger

    cb = GuardCallback(every=10, nan_action="restore")
    module = Reg(0.05, nan_at=25)
    module.nan_once = True
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_epochs=4,
        callbacks=[cb],
        logger=CSVLogger(tmp_path, name="run"),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, torch.utils.data.DataLoader(_data(), batch_size=32))
    (csv,) = tmp_path.glob("run/*/metrics.csv")
    import csv as csv_module

    rows = [r for r in csv_module.DictReader(csv.open()) if r.get("lrkit/guard_events")]
    # from the event's step (Lightning repeats a value logged on a step until
    # the epoch ends)
    assert int(rows[0]["step"]) == cb.guard.events[0].step == 25
    assert {float(r["lrkit/guard_events"]) for r in rows} == {1.0}
    assert float(rows[0]["lrkit/recovery_scale"]) == pytest.approx(0.3)
    assert len(cb.guard.events) == 1


def test_resuming_with_other_guard_settings_says_the_state_is_not_loaded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Lightning loads a callback's state by its key (class and settings): a
    guard resumed with another factor starts without the run's history. It
    used to do so silently."""
    _resumable(tmp_path, 2, None)
    (ckpt,) = tmp_path.glob("epoch=1-*.ckpt")
    with caplog.at_level("WARNING", logger="lrkit.lightning"):
        cbs = _resumable(tmp_path, 3, ckpt, factor=0.5)
    said = [r.message for r in caplog.records if "with other settings" in r.message]
    assert len(said) == 1 and "GuardCallback" in said[0]
    assert cbs[0].guard.events == []  # the recovery at step 20 is not there
