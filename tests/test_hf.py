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


@pytest.mark.parametrize("clip", [1.0, 0.0])
@pytest.mark.parametrize("nan_filter", [True, False])
def test_an_injected_nan_stops_the_run(
    tmp_path: Path, nan_filter: bool, clip: float
) -> None:
    """With the Trainer's NaN filter on (its default) the logged loss stays
    finite, but the logged gradient norm is NaN (the Trainer logs it whether
    it clips or not); with it off the loss is."""
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
        max_grad_norm=clip,
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
    # the callback has the Trainer log step 1 too: 12 logs every 5 steps + 1
    assert cb.monitor.config == lrkit.MonitorConfig.for_points(13)
    assert [c for c, _ in _logged(trainer, "loss")] == [1, *range(5, 61, 5)]
    assert len(cb.losses) == 13
    # a given monitor (or config) is used as it is
    config = lrkit.MonitorConfig(plateau_patience=3)
    cb = MonitorCallback(config, verbose=False)
    hf_trainer(tmp_path, 10, callbacks=[cb], save_strategy="no").train()
    assert cb.monitor.config == config


def test_an_evaluation_before_train_keeps_the_monitor_sized(tmp_path: Path) -> None:
    """A baseline trainer.evaluate() before train(): the default monitor is
    still sized to the run (it kept the defaults, windows of 64 on a run of
    13 points; review), and that evaluation is part of the curve."""
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path, 60, callbacks=[cb], save_strategy="no", logging_steps=5
    )
    trainer.evaluate()
    trainer.train()
    assert cb.monitor.config == lrkit.MonitorConfig.for_points(13)
    assert cb.monitor.stats()["val_losses"] >= 1 and len(cb.losses) == 13


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
    # the restore rewound the LR scheduler too; the Trainer stops at max_steps:
    # the schedule ends the 5 restored steps short (docs/monitor.md)
    assert trainer.lr_scheduler.last_epoch == 50 - 5


def test_guard_callback_bad_arguments() -> None:
    with pytest.raises(TypeError, match="skip_batches must be left out"):
        GuardCallback(skip_batches=1)
    with pytest.raises(TypeError, match="scheduler must be left out"):
        GuardCallback(scheduler=None)
    # the trainer's step (a checkpoint's when resumed): overriding it put the
    # guard's steps out of line with the trainer's (review)
    with pytest.raises(TypeError, match="first_step must be left out"):
        GuardCallback(first_step=1000)
    with pytest.raises(ValueError, match="every"):
        GuardCallback(every=0)
    with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
        GuardCallback(val_key=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError) as e:  # was Guard.__init__'s own TypeError
        GuardCallback(evry=10)
    text = str(e.value)
    assert text.startswith("evry must be a GuardCallback setting (val_key, or a")
    assert "every, keep, factor" in text and "skip_batches" not in text
    assert text.endswith("got evry=10. Did you mean every?")


def test_guard_warns_once_when_evaluations_lack_its_val_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cb = GuardCallback(every=5, val_key="eval_accuracy")
    trainer = hf_trainer(tmp_path, 30, callbacks=[cb], save_strategy="no")
    with caplog.at_level("WARNING", logger="lrkit.hf"):
        trainer.train()
        trainer.evaluate()  # after training: not the guard's business
    text = [r.message for r in caplog.records if r.name == "lrkit.hf"]
    assert len(text) == 1 and "no 'eval_accuracy' in the evaluation" in text[0]
    assert "eval_loss" in text[0] and "val_key=" in text[0]


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


def _search(trainer: Any, trials: int) -> list[tuple[int, Any]]:
    """``trainer.hyperparameter_search`` (optuna) over ``trials`` trials, each
    from fresh weights (``model_init``, after the Trainer's ``set_seed``: the
    same run each time, at one LR); each trial's (global step, the
    MonitorCallback's ``stopped_by``) at its end."""
    optuna = pytest.importorskip("optuna")
    from transformers import TrainerCallback

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    make = type(trainer.model)
    trainer.model_init = lambda trial=None: make()
    cbs = trainer.callback_handler.callbacks
    mons = [c for c in cbs if isinstance(c, MonitorCallback)]
    ends: list[tuple[int, Any]] = []

    class End(TrainerCallback):  # type: ignore[misc]
        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            ends.append((state.global_step, mons[0].stopped_by if mons else None))

    trainer.add_callback(End())
    trainer.hyperparameter_search(
        direction="minimize",
        backend="optuna",
        n_trials=trials,
        hp_space=lambda trial: {
            "learning_rate": trial.suggest_categorical("learning_rate", [0.03])
        },
    )
    return ends


def test_each_trial_of_a_hyperparameter_search_is_a_run_of_its_own(
    tmp_path: Path,
) -> None:
    """Each trial trains new weights from step 0: a monitor of its own judges
    it (one monitor over all trials read each restart as a spike, or as a
    divergence that stopped the trial); the earlier trials' monitors stay in
    ``runs``."""
    torch.manual_seed(0)
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(tmp_path, 40, callbacks=[cb], save_strategy="no")
    assert _search(trainer, 3) == [(40, None)] * 3
    assert len(cb.runs) == 2 and cb.monitor not in cb.runs
    mons = [*cb.runs, cb.monitor]
    for mon in mons:  # the same run three times: the same findings
        assert mon.last_step == 41 and mon.stats()["val_losses"] == 4
        kinds = [(f.kind, f.first_step, f.last_step) for f in mon.findings]
        assert kinds == [(f.kind, f.first_step, f.last_step) for f in mons[0].findings]
    assert len(cb.losses) == 40


def test_train_again_on_the_same_model_is_a_resumed_run_of_its_own(
    tmp_path: Path,
) -> None:
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(tmp_path, 20, callbacks=[cb], save_strategy="no")
    trainer.train()
    first = cb.monitor
    trainer.train()  # from step 0 again, on the weights trained already
    assert cb.runs == [first] and cb.monitor is not first
    assert cb.monitor.config.resumed and not first.config.resumed
    assert cb.monitor.last_step == first.last_step == 21


def test_guard_with_a_monitor_of_its_own_in_a_hyperparameter_search(
    tmp_path: Path,
) -> None:
    """The monitor passed in judges the first trial; each later one (new
    weights from step 0) gets a new monitor with its config, not the first
    trial's curve (which read each restart as a divergence to recover from)."""
    torch.manual_seed(0)
    mon = lrkit.Monitor(lrkit.MonitorConfig(spike_z=9.0))
    cb = GuardCallback(every=10, monitor=mon)
    trainer = hf_trainer(tmp_path, 40, callbacks=[cb], save_strategy="no")
    assert [s for s, _ in _search(trainer, 3)] == [40, 40, 40]
    guards = [*cb.runs, cb.guard]
    assert len(guards) == 3 and guards[0].monitor is mon
    for g in guards:  # the same run three times
        assert g.events == guards[0].events and g.monitor.updates == 40
        assert g.monitor.config.spike_z == 9.0


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


def test_the_first_step_is_logged_so_an_lr_far_too_high_is_seen(
    tmp_path: Path,
) -> None:
    """SGD at 10 (200x the LR this regression trains at) blows the loss up
    within the first steps: every mean logged every 10 steps is already high.
    The callback has the Trainer log step 1 too (its loss is the level the
    run starts from), and the monitor stops the run; without it the run
    read as healthy to its end."""
    torch.manual_seed(0)
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path,
        150,
        callbacks=[cb],
        save_strategy="no",
        eval_strategy="no",
        logging_steps=10,
        optim="sgd",
        learning_rate=10.0,
        lr_scheduler_type="constant",
    )
    trainer.train()
    steps = [s for s, _ in _logged(trainer, "loss")]
    assert steps[:3] == [1, 10, 20]
    assert cb.stopped_by is not None and cb.stopped_by.kind == "diverged"
    assert trainer.state.global_step < 150


def test_a_log_per_epoch_keeps_its_epoch_means(tmp_path: Path) -> None:
    """With logging_strategy="epoch" no first-step line is forced: each line
    stays its epoch's mean (review: the first epoch's loss changed)."""
    torch.manual_seed(0)
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path,
        60,
        callbacks=[cb],
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="epoch",
    )
    trainer.train()
    steps = [s for s, _ in _logged(trainer, "loss")]
    assert steps and 1 not in steps and len(cb.losses) == len(steps)


@pytest.mark.parametrize("every", [500, 1])
def test_too_few_logged_points_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, every: int
) -> None:
    cb = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path, 30, callbacks=[cb], save_strategy="no", logging_steps=every
    )
    with caplog.at_level("WARNING", logger="lrkit.hf"):
        trainer.train()
    text = [r.message for r in caplog.records if "too few" in r.message]
    if every == 1:
        assert not text and len(cb.losses) == 30
    else:  # the Trainer's default logging_steps on a short run: step 1 only
        assert len(text) == 1 and "logs 1 training loss " in text[0]
        assert "logging_steps=500" in text[0] and "logging_steps=1." in text[0]
        assert len(cb.losses) == 1


def test_guard_leaves_the_logs_finite_after_a_nan_with_the_filter_off(
    tmp_path: Path,
) -> None:
    """With ``logging_nan_inf_filter=False`` the Trainer adds each loss to a
    running loss it resets by subtracting it from itself: one NaN left every
    later log NaN although the guard had recovered. The callback hands the
    Trainer the mean of the losses since its last log for that step (here
    the step before's); its NaN gradient norm is still logged, and a
    MonitorCallback beside it reports the NaN."""
    cb = GuardCallback(every=10)
    mon = MonitorCallback(verbose=False)
    trainer = hf_trainer(
        tmp_path,
        60,
        callbacks=[mon, cb],
        nan_after=35,
        nan_once=True,
        save_strategy="no",
        eval_strategy="no",
        logging_nan_inf_filter=False,
    )
    trainer.train()
    assert [(e.kind, e.step) for e in cb.guard.events] == [("nan", 35)]
    losses = dict(_logged(trainer, "loss"))
    assert len(losses) == 60 and all(math.isfinite(v) for v in losses.values())
    assert losses[36] == pytest.approx(losses[35])  # the guard's step 35
    norms = dict(_logged(trainer, "grad_norm"))
    assert math.isnan(norms[36]) and math.isfinite(norms[37])
    nans = [(f.kind, f.first_step) for f in mon.monitor.findings if f.kind == "nan"]
    assert nans == [("nan", 36)]
    assert mon.stopped_by is None and trainer.state.global_step == 60


def test_a_guard_error_leaves_the_model_unguarded(tmp_path: Path) -> None:
    """After a GuardError ends train(), a MonitorCallback alone on the same
    model stops on the NaN (the model was still marked as guarded, and the
    monitor trained on through the NaN)."""
    trainer = hf_trainer(
        tmp_path,
        30,
        callbacks=[GuardCallback(every=5, max_recoveries=2)],
        nan_after=0,
        save_strategy="no",
        eval_strategy="no",
        logging_nan_inf_filter=False,
    )
    with pytest.raises(lrkit.torch.GuardError):
        trainer.train()
    trainer.remove_callback(GuardCallback)
    mon = MonitorCallback(verbose=False)
    trainer.add_callback(mon)
    trainer.train()
    assert mon.stopped_by is not None and mon.stopped_by.kind == "nan"
    assert trainer.state.global_step == 1


def _classifier(
    tmp_path: Path,
    steps: int,
    callbacks: list[Any],
    nan_calls: tuple[int, ...] = (),
    trainer_kw: dict[str, Any] | None = None,
    **args: Any,
) -> Any:
    """A Trainer on a tiny BERT classifier built from its config (no
    download), 3 classes of token sequences; its logits are NaN at the
    ``nan_calls``-th training forward passes (1-based)."""
    import transformers

    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=20,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config)
    calls = [0]

    def poison(module: Any, inputs: Any, output: Any) -> Any:
        if module.training:
            calls[0] += 1
            if calls[0] in nan_calls:
                output["logits"] = output["logits"] * float("nan")
        return output

    model.register_forward_hook(poison)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (64, 8), generator=g)
    labels = ids.sum(1) % 3
    data = [
        {"input_ids": i, "attention_mask": torch.ones_like(i), "labels": y}
        for i, y in zip(ids, labels, strict=True)
    ]
    settings: dict[str, Any] = {
        "report_to": [],
        "use_cpu": True,
        "disable_tqdm": True,
        "logging_steps": 5,
        "per_device_train_batch_size": 8,
        "learning_rate": 1e-3,
        "save_strategy": "no",
        **args,
    }
    return transformers.Trainer(
        model=model,
        args=transformers.TrainingArguments(
            output_dir=str(tmp_path), max_steps=steps, **settings
        ),
        train_dataset=data,
        callbacks=callbacks,
        **(trainer_kw or {}),
    )


@pytest.mark.parametrize("option", ["label_smoothing_factor", "compute_loss_func"])
def test_guard_without_a_readable_loss_still_catches_nan_gradients(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, option: str
) -> None:
    """With label smoothing or a compute_loss_func the Trainer computes the
    loss outside the model, called without labels: no loss to read. The
    callback says so (up front for label_smoothing_factor, at the first step
    otherwise) and guards the gradient norm: NaN logits at steps 15-17 are
    recovered from (the weights ended NaN, with no event)."""

    def ce(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
        return torch.nn.functional.cross_entropy(outputs["logits"], labels)

    kw: dict[str, Any] = (
        {"label_smoothing_factor": 0.1}
        if option == "label_smoothing_factor"
        else {"trainer_kw": {"compute_loss_func": ce}}
    )
    cb = GuardCallback(every=5)
    trainer = _classifier(tmp_path, 30, [cb], nan_calls=(16, 17, 18), **kw)
    with caplog.at_level("WARNING", logger="lrkit.hf"):
        trainer.train()
    warned = [r.message for r in caplog.records if r.name == "lrkit.hf"]
    assert len(warned) == 1 and option in warned[0]
    assert "only the gradient norm" in warned[0]
    assert [(e.kind, e.step) for e in cb.guard.events] == [
        ("nan", 15),
        ("nan", 16),
        ("nan", 17),
    ]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert trainer.state.global_step == 30


def test_guard_gets_the_gradient_norm_when_the_trainer_does_not_clip(
    tmp_path: Path,
) -> None:
    """With ``max_grad_norm=0`` the gradients the callback reads are the
    step's own: the guard gets their norm, and ``exploding_grad`` in ``on``
    restores before the update of a step whose gradients are 1e4 times too
    large (before, only a non-finite norm reached it: the update blew the
    weights up and the next loss was caught, a step late)."""
    from transformers import TrainerCallback

    class Blow(TrainerCallback):  # type: ignore[misc]
        step = -1

        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.step = state.global_step

    blow = Blow()
    torch.manual_seed(0)
    cb = GuardCallback(every=5, on=("nan", "diverged", "spike", "exploding_grad"))
    trainer = hf_trainer(
        tmp_path,
        40,
        callbacks=[blow, cb],
        save_strategy="no",
        eval_strategy="no",
        max_grad_norm=0.0,
        optim="sgd",
        learning_rate=0.01,
        lr_scheduler_type="constant",
    )
    for p in trainer.model.parameters():
        p.register_hook(lambda g: g * 1e4 if blow.step == 20 else g)
    trainer.train()
    assert [(e.kind, e.step, e.restored_step) for e in cb.guard.events] == [
        ("exploding_grad", 20, 15)
    ]
    losses = [v for _, v in _logged(trainer, "loss")]
    assert max(losses[20:]) < 10 * max(losses[:20])  # never blown up


def test_guard_refuses_exploding_grad_when_the_trainer_clips(tmp_path: Path) -> None:
    cb = GuardCallback(on=("nan", "exploding_grad"))
    trainer = hf_trainer(tmp_path, 10, callbacks=[cb], save_strategy="no")
    with pytest.raises(ValueError, match=r"on must be free of 'exploding_grad'") as e:
        trainer.train()
    assert "max_grad_norm=1.0" in str(e.value) and "max_grad_norm=0" in str(e.value)
    assert trainer.state.global_step == 0 and not trainer.model._forward_hooks
