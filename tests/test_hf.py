"""Tests of lrkit.hf: MonitorCallback in real Hugging Face ``Trainer.train`` runs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from tests.helpers import Recording, hf_trainer, run_ranks  # noqa: E402

import lrkit  # noqa: E402
from lrkit.hf import GuardCallback, MonitorCallback  # noqa: E402


def _logged(trainer: Any, key: str) -> list[tuple[int, float]]:
    return [(e["step"], e[key]) for e in trainer.state.log_history if key in e]


def test_healthy_run_is_silent_and_feeds_what_the_trainer_logs(
    tmp_path: Path,
) -> None:
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    trainer = hf_trainer(tmp_path, 40, callbacks=[cb], save_strategy="no")
    trainer.train()
    assert cb.stopped_by is None and trainer.state.global_step == 40
    assert not [f for f in mon.findings if f.severity != "info"]
    train = [c for c in mon.calls if c[1] is not None]
    assert [(c[0], c[1]) for c in train] == _logged(trainer, "loss")
    assert [c[2]["lr"] for c in train] == [
        v for _, v in _logged(trainer, "learning_rate")
    ]
    norms = [v for _, v in _logged(trainer, "grad_norm")]
    np.testing.assert_allclose([c[2]["grad_norm"] for c in train], norms)
    assert cb.losses == [v for _, v in _logged(trainer, "loss")]
    # each evaluation (steps 10, 20, 30, 40) goes with the next point; the
    # last one alone at the end
    vals = [(c[0], c[2]["val_loss"]) for c in mon.calls if c[2].get("val_loss")]
    evals = _logged(trainer, "eval_loss")
    assert [v for _, v in vals] == [v for _, v in evals]
    assert [s for s, _ in vals] == [11, 21, 31, 41]
    assert mon.stats()["val_losses"] == 4


def test_a_diverging_run_is_stopped_early(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cb = MonitorCallback(verbose=True)
    trainer = hf_trainer(
        tmp_path,
        200,
        callbacks=[cb],
        save_strategy="no",
        eval_strategy="no",
        optim="sgd",
        learning_rate=1.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
    )
    trainer.train()
    assert cb.stopped_by is not None and cb.stopped_by.kind in ("nan", "diverged")
    assert trainer.state.global_step < 200
    assert cb.stopped_by.first_step <= trainer.state.global_step
    assert "LR" in cb.stopped_by.advice
    assert capsys.readouterr().out.count(f"lrkit: {cb.stopped_by.kind} at step") == 1


@pytest.mark.parametrize("nan_filter", [True, False])
def test_an_injected_nan_stops_the_run(tmp_path: Path, nan_filter: bool) -> None:
    """With the Trainer's NaN filter on (its default) the logged loss stays
    finite, but the logged gradient norm is NaN; with it off the loss is."""
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    trainer = hf_trainer(
        tmp_path,
        100,
        callbacks=[cb],
        nan_after=30,
        save_strategy="no",
        eval_strategy="no",
        logging_nan_inf_filter=nan_filter,
    )
    trainer.train()
    assert cb.stopped_by is not None and cb.stopped_by.kind == "nan"
    assert cb.stopped_by.first_step == 31 and trainer.state.global_step == 31
    _, loss, kw = mon.calls[-1]
    assert math.isnan(kw["grad_norm"]) and math.isnan(loss) is not nan_filter


def test_the_default_monitor_is_sized_to_the_logged_points(tmp_path: Path) -> None:
    cb = MonitorCallback(verbose=False)
    before = cb.monitor
    trainer = hf_trainer(
        tmp_path, 60, callbacks=[cb], save_strategy="no", logging_steps=5
    )
    trainer.train()
    assert cb.monitor is not before
    assert cb.monitor.config == lrkit.MonitorConfig.for_points(12)
    assert [c for c, _ in _logged(trainer, "loss")] == list(range(5, 61, 5))
    assert len(cb.losses) == 12
    # a given monitor (or config) is used as it is
    config = lrkit.MonitorConfig(plateau_patience=3)
    cb = MonitorCallback(config, verbose=False)
    hf_trainer(tmp_path, 10, callbacks=[cb], save_strategy="no").train()
    assert cb.monitor.config == config


def test_a_missing_eval_key_is_warned_about_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cb = MonitorCallback(val_key="eval_accuracy", verbose=False)
    trainer = hf_trainer(tmp_path, 30, callbacks=[cb], save_strategy="no")
    with caplog.at_level("WARNING", logger="lrkit.hf"):
        trainer.train()
    text = [r.message for r in caplog.records]
    assert sum("no 'eval_accuracy' in the evaluation logs" in t for t in text) == 1
    assert any("eval_loss" in t for t in text)
    assert cb.monitor.stats()["val_losses"] == 0 and len(cb.losses) == 30


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stop_on must be"):
        MonitorCallback(stop_on=("explode",))
    with pytest.raises(TypeError, match="monitor must be"):
        MonitorCallback(monitor=0.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_key must be a non-empty log key"):
        MonitorCallback(loss_key=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
        MonitorCallback(val_key="")
    with pytest.raises(TypeError, match="verbose must be True or False"):
        MonitorCallback(verbose="loud")  # type: ignore[arg-type]


def test_evaluations_more_frequent_than_training_logs_are_all_fed(
    tmp_path: Path,
) -> None:
    mon = Recording()
    cb = MonitorCallback(mon, verbose=False)
    trainer = hf_trainer(
        tmp_path, 40, callbacks=[cb], save_strategy="no", logging_steps=20, eval_steps=5
    )
    trainer.train()
    evals = [v for _, v in _logged(trainer, "eval_loss")]
    fed = [c[2]["val_loss"] for c in mon.calls if c[2].get("val_loss") is not None]
    assert len(evals) == 8 and fed == evals
    steps = [c[0] for c in mon.calls]
    assert steps == sorted(set(steps))


def test_a_run_that_recovered_from_an_early_blowup_is_not_stopped(
    tmp_path: Path,
) -> None:
    """The first steps blow up, the run converges; the monitor finds the early
    divergence once it knows the noise (a warning) but the run goes on."""
    import torch

    torch.manual_seed(10)
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(tmp_path, 60, callbacks=[cb], save_strategy="no")
    trainer.train()
    dated = [f for f in cb.monitor.findings if f.kind == "diverged"]
    assert dated and dated[0].last_step < dated[0].detected_step
    assert cb.stopped_by is None and trainer.state.global_step == 60


# ------------------------------------------------------------ GuardCallback
def test_guard_recovers_from_an_injected_nan_and_finishes(tmp_path: Path) -> None:
    """... and a MonitorCallback beside it (stops on nan, diverged by default)
    reports the NaN but does not stop for what the guard recovers from."""
    cb = GuardCallback(every=10, nan_action="restore")
    mon = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path,
        80,
        callbacks=[mon, cb],
        nan_after=35,
        nan_once=True,
        save_strategy="no",
        eval_strategy="no",
        lr_scheduler_type="constant",
    )
    trainer.train()
    assert trainer.state.global_step == 80 and mon.stopped_by is None
    assert "nan" in [f.kind for f in mon.monitor.findings]
    assert [(e.kind, e.step, e.restored_step) for e in cb.guard.events] == [
        ("nan", 35, 30)
    ]
    model = trainer.model
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.05 * 0.3)
    losses = [v for _, v in _logged(trainer, "loss")]
    assert math.isfinite(losses[-1]) and losses[-1] < losses[0] / 10


@pytest.mark.parametrize("tuple_output", [False, True])
def test_guard_brings_an_lr_too_high_back(tmp_path: Path, tuple_output: bool) -> None:
    """SGD at 1.5 with no clipping diverges within steps (MonitorCallback stops
    it); the guard cuts the LR until it trains, and the run ends healthy."""
    cb = GuardCallback(every=10)
    trainer = hf_trainer(
        tmp_path,
        120,
        callbacks=[cb],
        tuple_output=tuple_output,
        save_strategy="no",
        eval_strategy="no",
        optim="sgd",
        learning_rate=1.5,
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
    )
    trainer.train()
    assert trainer.state.global_step == 120 and cb.guard.events
    assert trainer.optimizer.param_groups[0]["lr"] <= 1.5 * 0.3 * (1 + 1e-9)
    losses = [v for _, v in _logged(trainer, "loss")]
    assert math.isfinite(losses[-1]) and losses[-1] < 0.1 * losses[0]


def test_guard_undoes_the_rejected_step_of_adamw(tmp_path: Path) -> None:
    """The Trainer's AdamW steps after the guard restored: its step counts
    show the rejected step left nothing behind."""
    cb = GuardCallback(every=10, nan_action="restore")
    trainer = hf_trainer(
        tmp_path,
        50,
        callbacks=[cb],
        nan_after=25,
        nan_once=True,
        save_strategy="no",
        eval_strategy="no",
    )
    trainer.train()
    assert [e.restored_step for e in cb.guard.events] == [20]
    inner = trainer.optimizer.optimizer
    steps = {int(inner.state[p]["step"]) for p in trainer.model.parameters()}
    assert steps == {20 + (50 - 26)}  # 20 before the snapshot, 26..49 after


def test_guard_callback_bad_arguments() -> None:
    with pytest.raises(TypeError, match="skip_batches must be left out"):
        GuardCallback(skip_batches=1)
    with pytest.raises(TypeError, match="scheduler must be left out"):
        GuardCallback(scheduler=None)
    with pytest.raises(ValueError, match="every"):
        GuardCallback(every=0)
    with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
        GuardCallback(val_key=3)  # type: ignore[arg-type]


@pytest.mark.parametrize("items_kw", [False, True])
def test_guard_reads_the_step_loss_under_gradient_accumulation(
    tmp_path: Path, items_kw: bool
) -> None:
    """Four micro-batches a step: the guard's loss is the step's loss the
    Trainer logs, whether the model averages each micro-batch (the mean of
    four) or divides by the step's item count it is given (their sum)."""
    mon = Recording()
    cb = GuardCallback(monitor=mon)
    trainer = hf_trainer(
        tmp_path,
        12,
        callbacks=[cb],
        items_kw=items_kw,
        gradient_accumulation_steps=4,
        per_device_train_batch_size=4,
        save_strategy="no",
        eval_strategy="no",
    )
    trainer.train()
    logged = [v for _, v in _logged(trainer, "loss")]
    assert len(mon.calls) == len(logged) == 12
    np.testing.assert_allclose([c[1] for c in mon.calls], logged, rtol=1e-4)


def test_guard_with_a_monitor_of_its_own_across_two_trainings(tmp_path: Path) -> None:
    mon = lrkit.Monitor()
    cb = GuardCallback(every=10, monitor=mon)
    for out in ("a", "b"):
        trainer = hf_trainer(
            tmp_path / out, 20, callbacks=[cb], save_strategy="no", eval_strategy="no"
        )
        trainer.train()
    assert mon.last_step == 39 and mon.updates == 40


def test_guard_error_leaves_no_hook_on_the_model(tmp_path: Path) -> None:
    cb = GuardCallback(every=5, max_recoveries=2)
    trainer = hf_trainer(
        tmp_path,
        60,
        callbacks=[cb],
        nan_after=20,
        save_strategy="no",
        eval_strategy="no",
    )
    with pytest.raises(lrkit.torch.GuardError, match="recoveries in a row"):
        trainer.train()
    assert not trainer.model._forward_hooks
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


HF_DDP_SCRIPT = """
import os, sys, warnings
warnings.simplefilter("ignore")
sys.path[:0] = [{root!r}]
import torch
from pathlib import Path
from tests.helpers import hf_trainer
from lrkit.hf import GuardCallback

torch.manual_seed(0)
rank = int(os.environ["RANK"])
cb = GuardCallback(every=5, nan_action="restore")
trainer = hf_trainer(Path("out"), 40, callbacks=[cb], save_strategy="no",
                     eval_strategy="no", lr_scheduler_type="constant")
calls = [0]


def poison(module, args, output):
    # the loss (not the gradients) NaN on rank 0 only, at its 14th step
    if module.training:
        calls[0] += 1
        if rank == 0 and calls[0] == 14:
            output["loss"] = output["loss"] + torch.tensor(float("nan"))
    return output


trainer.model.register_forward_hook(poison)
trainer.train()
w = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
events = [(e.kind, e.step, e.restored_step) for e in cb.guard.events]
with open(f"result_{{rank}}.txt", "w") as fh:
    fh.write(repr((trainer.state.global_step, events,
                   trainer.optimizer.param_groups[0]["lr"], w.tolist())))
# the results are written: leave without the interpreter's teardown, where
# gloo's threads abort the process now and then ("terminate called without an
# active exception", after training and these results, about 1 run in 20)
if torch.distributed.is_initialized():
    torch.distributed.destroy_process_group()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
"""


def test_guard_under_two_processes_restores_every_rank_together(
    tmp_path: Path,
) -> None:
    """Two real processes (torchrun, gloo, CPU): the loss goes NaN on rank 0
    only; each guard sees the mean loss over ranks, so both restore the same
    snapshot, cut the LR and end with the same weights."""
    root = Path(__file__).resolve().parents[1]
    script = tmp_path / "hf_ddp.py"
    script.write_text(HF_DDP_SCRIPT.format(root=str(root)))
    rows = run_ranks(script, torchrun=True)
    assert rows[0] == rows[1]
    steps, events, lr, _ = rows[0]
    assert (steps, events) == (40, [("nan", 13, 10)])
    assert lr == pytest.approx(0.05 * 0.3)


def _callbacks(trainer: Any) -> tuple[Any, Any]:
    """The trainer's GuardCallback and MonitorCallback (with
    ``restore_callback_states_from_checkpoint`` the Trainer replaces them)."""
    cbs = trainer.callback_handler.callbacks
    return (
        next(c for c in cbs if isinstance(c, GuardCallback)),
        next(c for c in cbs if isinstance(c, MonitorCallback)),
    )


@pytest.mark.parametrize("rebuild", [False, True])
def test_train_from_a_checkpoint_goes_on_with_the_guard_and_monitor_state(
    tmp_path: Path, rebuild: bool
) -> None:
    """The callbacks' state goes into each checkpoint's trainer_state.json: a
    run resumed from step 20 (its NaN at step 15 recovered before) goes on
    with the guard's history and the monitors' knowledge of the run from its
    start, whether the Trainer rebuilds the callbacks from their saved
    arguments or not. (Not bit for bit: the Trainer does not save the loader's
    generator, which the guard's recovery moved to a fresh stream, so the
    resumed run's batches differ.)"""
    import json

    def run(resume: Path | None) -> Any:
        trainer = hf_trainer(
            tmp_path,
            40,
            callbacks=[
                GuardCallback(every=5, monitor={"spike_z": 8.0}),
                MonitorCallback(stop_on=(), verbose=False),
            ],
            nan_after=None if resume else 15,
            nan_once=True,
            save_steps=20,
            lr_scheduler_type="constant",
            restore_callback_states_from_checkpoint=rebuild,
        )
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return _callbacks(trainer)

    guard_cb, mon_cb = run(None)
    saved = json.loads((tmp_path / "checkpoint-20" / "trainer_state.json").read_text())
    assert saved["stateful_callbacks"]["GuardCallback"]["args"] == {
        "val_key": "eval_loss",
        "every": 5,
        "monitor": lrkit.MonitorConfig(spike_z=8.0).to_dict(),
    }
    resumed_guard, resumed_mon = run(tmp_path / "checkpoint-20")
    assert [(e.kind, e.step) for e in resumed_guard.guard.events] == [("nan", 15)]
    assert resumed_guard.guard.monitor.config.spike_z == 8.0
    assert resumed_guard.guard.steps == guard_cb.guard.steps == 40
    for a, b in (
        (resumed_guard.guard.monitor, guard_cb.guard.monitor),
        (resumed_mon.monitor, mon_cb.monitor),
    ):
        # both know the run from step 0 (its first loss, every update since)
        assert a.last_step == b.last_step and a.updates == b.updates
        assert a.state_dict()["state"]["_start"] == b.state_dict()["state"]["_start"]


def test_checkpoints_with_other_objects_and_without_lrkit_state_resume(
    tmp_path: Path,
) -> None:
    """objects= (an EMA: not JSON) leaves the checkpoint writable; the
    callbacks' state in trainer_state.json is strict JSON; a checkpoint saved
    without lrkit's callbacks (before this version, or lrkit added on
    resume) resumes, and the next checkpoint is written."""
    import json

    def run(callbacks: list[Any], resume: Path | None, steps: int) -> Any:
        trainer = hf_trainer(
            tmp_path, steps, callbacks=callbacks, save_steps=20, eval_strategy="no"
        )
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        return trainer

    run([], None, 20)  # no lrkit callback: its checkpoint holds no lrkit state
    ema = torch.optim.swa_utils.AveragedModel(torch.nn.Linear(4, 1))
    cbs = [
        GuardCallback(every=5, objects={"ema": ema}),
        MonitorCallback(stop_on=(), verbose=False),
    ]
    run(cbs, tmp_path / "checkpoint-20", 40)
    text = (tmp_path / "checkpoint-40" / "trainer_state.json").read_text()
    saved = json.loads(text)["stateful_callbacks"]
    json.dumps(saved, allow_nan=False)  # strict JSON
    assert "objects" not in saved["GuardCallback"]["args"]
    assert cbs[0].guard.steps == 20 and cbs[1].monitor.config.resumed
    # and on from that one, with lrkit's state this time
    again = [GuardCallback(every=5), MonitorCallback(stop_on=(), verbose=False)]
    run(again, tmp_path / "checkpoint-40", 60)
    assert again[0].guard.steps == 40 and again[1].monitor.updates == 40


def test_two_monitor_callbacks_resume_each_with_its_own_state(tmp_path: Path) -> None:
    def make() -> list[Any]:
        return [
            MonitorCallback(monitor={"spike_z": 4.0}, stop_on=(), verbose=False),
            MonitorCallback(monitor={"spike_z": 12.0}, stop_on=(), verbose=False),
        ]

    first = make()
    trainer = hf_trainer(
        tmp_path, 40, callbacks=first, save_steps=20, eval_strategy="no"
    )
    trainer.train()
    resumed = make()
    trainer = hf_trainer(
        tmp_path, 40, callbacks=resumed, save_steps=20, eval_strategy="no"
    )
    trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-20"))
    for a, b in zip(resumed, first, strict=True):
        assert a.monitor.config == b.monitor.config
        assert a.monitor.updates == b.monitor.updates == 40
        assert not a.monitor.config.resumed
