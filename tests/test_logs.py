"""lrkit.read_log on files written by the real libraries, and broken files."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from tests.helpers import hf_trainer

import lrkit
from lrkit import History, LogFormatError, read_log


def tiny_run(
    steps: int = 60, seed: int = 0, lr: float = 0.05
) -> list[dict[str, float]]:
    """A real tiny torch regression run: per-step loss, grad norm, LR, val loss."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    rows = []
    for t in range(steps):
        idx = torch.randint(0, 192, (16,), generator=g)
        loss = torch.nn.functional.mse_loss(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        gn = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        opt.step()
        row = {"step": t, "loss": loss.item(), "grad_norm": gn, "lr": lr}
        if t % 10 == 9:
            with torch.no_grad():
                row["val_loss"] = float(
                    torch.nn.functional.mse_loss(model(x[192:]), y[192:])
                )
        rows.append(row)
    return rows


# ----------------------------------------------------------------- real writers
def _lightning_fit(
    tmp_path: Path,
    progress_bar: bool = False,
    epochs: int = 3,
    per_step: bool = True,
    val_every: int = 1,
    lr: float = 0.1,
) -> Path:
    """A real 3-epoch Lightning fit (8 batches an epoch) logged with its
    CSVLogger; with ``progress_bar``, its tqdm bar's output goes to
    ``train.log`` as a terminal would show it; ``per_step=False`` logs the
    training loss once an epoch only."""
    L = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import LearningRateMonitor, TQDMProgressBar
    from lightning.pytorch.loggers import CSVLogger

    class Model(L.LightningModule):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)

        def training_step(self, batch, i):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.lin(x), y)
            self.log("train_loss", loss, on_step=per_step, on_epoch=True, prog_bar=True)
            return loss

        def validation_step(self, batch, i):  # type: ignore[no-untyped-def]
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.lin(x), y)
            self.log("val_loss", loss, prog_bar=True)

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=lr)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    data = torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    callbacks: list[Any] = [LearningRateMonitor()]
    if progress_bar:
        callbacks.append(TQDMProgressBar())
    trainer = L.Trainer(
        max_epochs=epochs,
        check_val_every_n_epoch=val_every,
        logger=CSVLogger(tmp_path),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
    )
    out = io.StringIO()
    with contextlib.redirect_stderr(out), contextlib.redirect_stdout(out):
        trainer.fit(Model(), loader, loader)
    (tmp_path / "train.log").write_text(out.getvalue())
    return tmp_path / "lightning_logs" / "version_0"


def test_lightning_csvlogger_from_a_real_fit(tmp_path: Path) -> None:
    version_dir = _lightning_fit(tmp_path)
    for path in (version_dir, version_dir / "metrics.csv"):
        h = read_log(path)
        assert h.columns["loss"] == "train_loss_step"
        assert h.columns["val_loss"] == "val_loss"
        assert h.columns["lr"] == "lr-SGD" and h.columns["step"] == "step"
        assert h.steps.tolist() == list(range(24))  # 3 epochs x 8 batches
        assert h.val_steps.tolist() == [7, 15, 23]  # sparse rows, own steps
        assert np.all(h.lr == 0.1) and np.all(np.isfinite(h.loss))
    assert lrkit.diagnose(h).verdict in ("healthy", "too short")
    # the logger's folder: its only version is read; with two, they are listed
    assert read_log(tmp_path / "lightning_logs").steps.tolist() == list(range(24))
    import shutil

    shutil.copytree(version_dir, version_dir.parent / "version_1")
    with pytest.raises(LogFormatError) as info:
        read_log(tmp_path / "lightning_logs")
    assert "2 runs with a metrics.csv" in str(info.value)
    assert "version_0" in str(info.value) and "version_1" in str(info.value)


def test_lightning_progress_bar_from_a_real_fit(tmp_path: Path) -> None:
    """The tqdm bar redraws each count several times (the last shows the
    batch's loss), starts each epoch at 0/8 with the last values, and shows
    the last validation loss on every redraw until the next evaluation: one
    loss per batch and one validation loss per epoch are read, as the same
    fit's CSVLogger wrote them."""
    csv_log = read_log(_lightning_fit(tmp_path, progress_bar=True))
    h = read_log(tmp_path / "train.log")
    # train_loss_step and, from the second epoch, train_loss_epoch on the bar
    assert h.columns == {"loss": "train_loss_step", "val_loss": "val_loss"}
    assert len(h) == 24 and h.val_steps.tolist() == [7, 15, 23]
    # the bar prints 3 significant digits
    np.testing.assert_allclose(h.loss, csv_log.loss, rtol=5e-3)
    np.testing.assert_allclose(h.val_loss, csv_log.val_loss, rtol=5e-3)


def test_lightning_progress_bar_with_a_loss_logged_per_epoch(tmp_path: Path) -> None:
    """A loss logged once an epoch is on every redraw of the next epoch's bar:
    it is read once an epoch, as the CSVLogger wrote it."""
    csv_log = read_log(_lightning_fit(tmp_path, True, epochs=5, per_step=False))
    h = read_log(tmp_path / "train.log")
    assert h.columns["loss"] == "train_loss" and len(h) == len(csv_log) == 5
    np.testing.assert_allclose(h.loss, csv_log.loss, rtol=5e-3)
    assert len(h.val_loss) == 5


def test_lightning_progress_bar_validating_every_other_epoch(tmp_path: Path) -> None:
    """The bar keeps showing the last validation loss through the epochs
    without one: a value counts only after a validation bar was drawn."""
    csv_log = read_log(_lightning_fit(tmp_path, True, epochs=6, val_every=2))
    h = read_log(tmp_path / "train.log")
    assert h.val_steps.tolist() == csv_log.val_steps.tolist() == [15, 31, 47]
    np.testing.assert_allclose(h.val_loss, csv_log.val_loss, rtol=5e-3, atol=1e-4)


def test_keras_redraw_then_a_tqdm_bar_in_one_log(tmp_path: Path) -> None:
    """Keras' full counter drawn twice, then a tqdm batch bar (a TqdmCallback):
    read without losing track of which record came from a bar."""
    bar = "".join(
        f"\rTraining: {k * 25}%|##   | {k}/4 [00:01<00:00, loss={0.6 - k / 100:.3f}]"
        for k in range(1, 5)
    )
    path = tmp_path / "fit.log"
    path.write_text(
        "Epoch 1/2\n43/43 ━━━━━━━━ 0s 5ms/step - loss: 0.91\n"
        "43/43 ━━━━━━━━ 0s 6ms/step - loss: 0.91 - val_loss: 0.57\n"
        f"Epoch 2/2\n{bar}\n"
    )
    h = read_log(path)
    assert h.val_loss.tolist() == [0.57] and h.loss[0] == 0.91


def test_summary_writer_directory_and_file(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    rows = tiny_run()
    writer = SummaryWriter(log_dir=str(tmp_path / "run"))
    for r in rows:
        writer.add_scalar("train/loss", r["loss"], r["step"])
        writer.add_scalar("train/grad_norm", r["grad_norm"], r["step"])
        writer.add_scalar("lr", r["lr"], r["step"])
        if "val_loss" in r:
            writer.add_scalar("val/loss", r["val_loss"], r["step"])
    writer.close()
    h = read_log(tmp_path / "run")
    assert h.columns == {
        "step": "step",
        "loss": "train/loss",
        "val_loss": "val/loss",
        "lr": "lr",
        "grad_norm": "train/grad_norm",
    }
    assert h.steps.tolist() == [r["step"] for r in rows]
    np.testing.assert_allclose(h.loss, [r["loss"] for r in rows], rtol=1e-6)
    assert h.val_steps.tolist() == [9, 19, 29, 39, 49, 59]
    event_file = next((tmp_path / "run").glob("*tfevents*"))
    assert read_log(event_file).steps.tolist() == h.steps.tolist()


def test_summary_writer_keras_style_runs(tmp_path: Path) -> None:
    """train/ and validation/ sub-runs with the same tag, as Keras writes them."""
    from torch.utils.tensorboard import SummaryWriter

    for run, offset in (("train", 0.0), ("validation", 0.1)):
        w = SummaryWriter(log_dir=str(tmp_path / run))
        for epoch in range(12):
            w.add_scalar("epoch_loss", 1.0 / (epoch + 1) + offset, epoch)
        w.close()
    h = read_log(tmp_path)
    assert h.columns["loss"] == "train/epoch_loss"
    assert h.columns["val_loss"] == "validation/epoch_loss"
    assert h.val_loss[0] == pytest.approx(1.1)


@pytest.mark.parametrize(
    ("with_val", "zero"), [(True, False), (False, False), (True, True)]
)
def test_keras_tensorboard_batch_logging(
    tmp_path: Path, with_val: bool, zero: bool
) -> None:
    """The layout of Keras' TensorBoard callback with ``update_freq="batch"``
    (keras/src/callbacks/tensorboard.py; the callback needs TensorFlow, so
    torch's SummaryWriter writes it here): ``train/batch_loss`` at iterations
    1, 2, ... holding the epoch's running mean, ``train/epoch_*`` and
    ``validation/epoch_loss`` at epoch numbers, and
    ``validation/evaluation_loss_vs_iterations`` at the iteration of each
    validation. Read back: the batch losses themselves, and one axis."""
    from torch.utils.tensorboard import SummaryWriter

    spe, epochs = 13, 6
    rng = np.random.default_rng(0)
    x = 1.0 / np.arange(1, spe * epochs + 1) ** 0.5 + 0.05 * rng.random(spe * epochs)
    if zero:  # a loss that reaches 0: float32 running means turn back to -1e-8
        x[20:] = 0.0
    train = SummaryWriter(log_dir=str(tmp_path / "train"))
    val = SummaryWriter(
        log_dir=str(tmp_path / ("validation" if with_val else "unused"))
    )
    for e in range(epochs):
        batch = x[e * spe : (e + 1) * spe]
        for b in range(spe):
            it = e * spe + b + 1
            train.add_scalar("batch_loss", float(batch[: b + 1].mean()), it)
        train.add_scalar("epoch_loss", float(batch.mean()), e)
        train.add_scalar("epoch_learning_rate", 0.01 * 0.5**e, e)
        if with_val:
            val.add_scalar("epoch_loss", 0.9 / (e + 1), e)
            val.add_scalar(
                "evaluation_loss_vs_iterations", 0.9 / (e + 1), (e + 1) * spe
            )
    train.close()
    val.close()
    # without validation Keras writes train/ alone: the folder is one run
    h = read_log(tmp_path if with_val else tmp_path / "train")
    assert h.columns["loss"] == ("train/batch_loss" if with_val else "batch_loss")
    assert h.steps.tolist() == list(range(1, spe * epochs + 1))
    np.testing.assert_allclose(h.loss, x, rtol=1e-4, atol=1e-6)  # batches, not means
    ends = [spe * (e + 1) for e in range(epochs)]
    assert h.val_steps.tolist() == (ends if with_val else [])
    assert h.lr_steps.tolist() == ends
    assert h.lr.tolist() == pytest.approx([0.01 * 0.5**e for e in range(epochs)])
    assert len(h.notes) == 1 and "(13 an epoch)" in h.notes[0]


def test_add_scalars_training_vs_validation(tmp_path: Path) -> None:
    """PyTorch's TensorBoard tutorial: ``add_scalars("Training vs. Validation
    Loss", {"Training": ..., "Validation": ...})``, both curves under one tag
    naming both words; each curve's own name tells which is which."""
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path))
    for step in range(30):
        curves = {"Training": 1.0 / (step + 1)}
        if step % 5 == 4:
            curves["Validation"] = 1.2 / (step + 1)
        w.add_scalars("Training vs. Validation Loss", curves, step)
    w.close()
    h = read_log(tmp_path)
    assert h.columns["loss"] == "Training loss"
    assert h.columns["val_loss"] == "Validation loss"
    assert h.steps.tolist() == list(range(30)) and h.val_steps.tolist() == [
        4,
        9,
        14,
        19,
        24,
        29,
    ]
    assert h.loss[0] == pytest.approx(1.0) and h.val_loss[0] == pytest.approx(0.24)
    assert len(h.notes) == 1
    assert "add_scalars('Training vs. Validation Loss'" in h.notes[0]
    # run folders merely named after a tag ("loss_adam" holding loss and
    # val_loss) are runs, not add_scalars curves
    for name in ("loss_adam", "loss_sgd"):
        w = SummaryWriter(log_dir=str(tmp_path / "runs" / name))
        for step in range(12):
            w.add_scalar("loss", 1.0 / (step + 1), step)
            w.add_scalar("val_loss", 1.1 / (step + 1), step)
        w.close()
    with pytest.raises(LogFormatError, match="2 TensorBoard runs"):
        read_log(tmp_path / "runs")
    a = read_log(tmp_path / "runs", loss_key="loss_adam/loss")
    assert a.columns["val_loss"] == "loss_adam/val_loss" and len(a.val_loss) == 12


def test_per_batch_losses_named_batch_loss_are_left_as_logged(tmp_path: Path) -> None:
    """A loop of one's own logging each batch's loss as ``batch_loss`` (not
    Keras' running means) beside ``epoch_loss``: nothing is turned back."""
    from torch.utils.tensorboard import SummaryWriter

    rng = np.random.default_rng(1)
    x = 0.5 + 0.3 * rng.random(40)
    w = SummaryWriter(log_dir=str(tmp_path))
    for it in range(1, 41):
        w.add_scalar("batch_loss", float(x[it - 1]), it)
    for e in range(4):
        w.add_scalar("epoch_loss", float(x[e * 10 : e * 10 + 10].mean()), e)
    w.close()
    h = read_log(tmp_path, loss_key="batch_loss")
    np.testing.assert_allclose(h.loss, x, rtol=1e-6)
    assert h.notes == ()


def write_tb_run(directory: Path, scale: float) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(directory))
    for step in range(30):
        w.add_scalar("train/loss", scale / (step + 1), step)
        w.add_scalar("train/lr", scale * 1e-3, step)
        if step % 10 == 9:
            w.add_scalar("val/loss", scale / (step + 1) + 0.1, step)
    w.close()


def test_tensorboard_run_again_into_the_same_folder(tmp_path: Path) -> None:
    """The same script run twice into ``runs/exp`` leaves two event files that
    both start at step 0: the newest run is read, with a note. A resume that
    starts later continues the run (the newer file wins where they overlap)."""
    from torch.utils.tensorboard import SummaryWriter

    def write(directory: Path, steps: range, scale: float) -> None:
        w = SummaryWriter(log_dir=str(directory))
        for step in steps:
            w.add_scalar("train/loss", scale / (step + 1), step)
        w.close()

    write(tmp_path / "again", range(30), 1.0)
    older = set((tmp_path / "again").glob("*tfevents*"))
    write(tmp_path / "again", range(12), 5.0)
    (newest,) = set((tmp_path / "again").glob("*tfevents*")) - older
    h = read_log(tmp_path / "again")
    assert h.steps.tolist() == list(range(12)) and h.loss[0] == pytest.approx(5.0)
    assert len(h.notes) == 1 and "2 runs were written to the folder" in h.notes[0]
    assert newest.name in h.notes[0]
    write(tmp_path / "resumed", range(30), 1.0)
    write(tmp_path / "resumed", range(20, 40), 2.0)
    w = SummaryWriter(log_dir=str(tmp_path / "resumed"))
    w.add_scalar("hp/lr", 0.1, 0)  # logged at step 0 when the script starts
    w.close()
    # a resume whose file holds one loss so far, and a rerun that renamed its
    # loss tag (no tag in common: the newest run, with a note)
    write(tmp_path / "short", range(30), 1.0)
    write(tmp_path / "short", range(30, 31), 2.0)
    assert read_log(tmp_path / "short").steps.tolist() == list(range(31))
    write(tmp_path / "renamed", range(30), 1.0)
    w = SummaryWriter(log_dir=str(tmp_path / "renamed"))
    for step in range(10):
        w.add_scalar("loss", 3.0, step)
    w.close()
    renamed = read_log(tmp_path / "renamed")
    assert renamed.loss.tolist() == [3.0] * 10 and len(renamed.notes) == 1
    r = read_log(tmp_path / "resumed")
    assert r.steps.tolist() == list(range(40)) and r.notes == ()
    assert r.loss[25] == pytest.approx(2.0 / 26) and r.loss[5] == pytest.approx(1 / 6)


def test_event_files_sort_in_the_order_written() -> None:
    """File names hold the start time and the writer's counter: numbers."""
    from lrkit.logs import _written

    names = [
        "events.out.tfevents.1700000001.host.a.7.10",
        "events.out.tfevents.1700000001.host.a.7.9",
        "events.out.tfevents.999999999.host.7.11",
        "events.out.tfevents.1700000000.host.v2",
    ]
    order = sorted((Path("runs") / n for n in names), key=_written)
    assert [p.name for p in order] == [names[2], names[3], names[1], names[0]]


def test_several_tensorboard_runs_in_one_folder(tmp_path: Path) -> None:
    """Two runs (lightning_logs/version_N, runs/<name>): the error lists them
    as the folders that read them alone; with --loss-key naming one run's
    loss, its validation loss and LR come from that run, not the other."""
    write_tb_run(tmp_path / "exp_a", 1.0)
    write_tb_run(tmp_path / "exp_b", 5.0)
    for f in (tmp_path / "exp_a").glob("*tfevents*"):  # written an hour before
        os.utime(f, (f.stat().st_atime - 3600, f.stat().st_mtime - 3600))
    with pytest.raises(LogFormatError) as info:
        read_log(tmp_path)
    message = str(info.value)
    assert "2 TensorBoard runs with a training loss" in message
    assert str(tmp_path / "exp_a") in message and str(tmp_path / "exp_b") in message
    # the most recent first, as for CSV and MLflow runs (exp_b written last)
    assert message.index(str(tmp_path / "exp_b")) < message.index(
        str(tmp_path / "exp_a")
    )
    assert "a+b" not in message
    h = read_log(tmp_path, loss_key="exp_b/train/loss")
    # the run's own series, named as the folder given names them; a note
    assert h.columns == {
        "step": "step",
        "loss": "exp_b/train/loss",
        "val_loss": "exp_b/val/loss",
        "lr": "exp_b/train/lr",
    }
    assert h.notes == (
        f"read the run {str(tmp_path / 'exp_b')!r} of the folder's runs",
    )
    assert h.lr[0] == pytest.approx(5e-3) and h.val_loss[0] == pytest.approx(0.6)
    assert read_log(tmp_path / "exp_a").columns["loss"] == "train/loss"
    # a run named like a split ("test") is a run: with no train/ beside it
    write_tb_run(tmp_path / "test", 2.0)
    with pytest.raises(LogFormatError, match="3 TensorBoard runs with a training loss"):
        read_log(tmp_path)
    t = read_log(tmp_path, loss_key="test/train/loss")
    assert t.columns["loss"] == "test/train/loss"
    assert t.columns["val_loss"] == "test/val/loss"  # not its training loss
    assert t.loss[0] == pytest.approx(2.0)
    # another run's series is never mixed in: one line naming the run's tags
    with pytest.raises(ValueError, match="val_key must be a tag of the run 'exp_b'"):
        read_log(tmp_path, loss_key="exp_b/train/loss", val_key="exp_a/val/loss")


# ----------------------------------------------------------------------- MLflow
@pytest.fixture
def mlflow_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], Any]]:
    """The real mlflow, logging to a tracking URI (reset after the test)."""
    mlflow = pytest.importorskip("mlflow")
    # MLflow 3 keeps its file store in maintenance mode behind this switch
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")

    def at(uri: str) -> Any:
        mlflow.set_tracking_uri(uri)
        return mlflow

    yield at
    mlflow.set_tracking_uri(None)


def log_to_mlflow(mlflow: Any, rows: list[dict[str, float]], name: str) -> str:
    """Log a run as a training loop does: the loss (a nested key), LR and grad
    norm every step, the validation loss every epoch (10 steps); its id."""
    mlflow.set_experiment("lrkit")
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_param("lr", rows[0]["lr"])
        for r in rows:
            step = int(r["step"])
            mlflow.log_metrics(
                {"train/loss": r["loss"], "lr": r["lr"], "grad_norm": r["grad_norm"]},
                step=step,
            )
            if "val_loss" in r:
                mlflow.log_metric("val_loss", r["val_loss"], step=step)
    return str(run.info.run_id)


MLFLOW_COLUMNS = {
    "loss": "train/loss",
    "step": "step",
    "val_loss": "val_loss",
    "lr": "lr",
    "grad_norm": "grad_norm",
}


def assert_logged(h: History, rows: list[dict[str, float]]) -> None:
    assert h.columns == MLFLOW_COLUMNS
    assert h.steps.tolist() == [r["step"] for r in rows]
    assert h.loss.tolist() == [r["loss"] for r in rows]  # exact: no rounding
    assert h.grad_norm.tolist() == [r["grad_norm"] for r in rows]
    assert h.val_steps.tolist() == [r["step"] for r in rows if "val_loss" in r]
    assert h.val_loss.tolist() == [r["val_loss"] for r in rows if "val_loss" in r]
    assert np.all(h.lr == rows[0]["lr"]) and len(h.lr_steps) == len(rows)


def test_mlflow_file_store(tmp_path: Path, mlflow_at: Callable[[str], Any]) -> None:
    mlruns = tmp_path / "mlruns"
    mlflow = mlflow_at("file:" + str(mlruns))
    rows = tiny_run()
    run_id = log_to_mlflow(mlflow, rows, "first")
    run_dir = next(mlruns.glob(f"*/{run_id}"))
    for path in (mlruns, run_dir.parent, run_dir, run_dir / "metrics"):
        h = read_log(path)  # the root, the experiment, the run, its metrics
        assert_logged(h, rows)
    assert read_log(mlruns).source == str(run_dir)
    with mlflow.start_run(run_name="params only") as empty:  # no metric at all
        mlflow.log_param("lr", 0.1)
    assert read_log(mlruns).source == str(run_dir)  # the one run with metrics
    empty_dir = run_dir.parent / empty.info.run_id
    with pytest.raises(LogFormatError, match="no metric values logged in this run"):
        read_log(empty_dir)
    second = log_to_mlflow(mlflow, rows[:20], "second")
    with pytest.raises(LogFormatError) as info:
        read_log(mlruns)
    message = str(info.value)
    assert message.startswith(f"{mlruns}: 2 MLflow runs with metrics;")
    # each run listed as the folder to pass, the most recent first
    assert message.index(f"{second} ('second')") < message.index(f"{run_id} ('first')")
    assert len(read_log(run_dir.parent / second)) == 20
    mlflow.delete_run(second)  # a deleted run is left out
    assert read_log(mlruns).source == str(run_dir)
    metric = run_dir / "metrics" / "val_loss"
    with metric.open("a") as f:
        f.write("1700000000000 oops 60\n")
    with pytest.raises(LogFormatError) as info:
        read_log(run_dir)
    assert str(info.value).startswith(f"{metric}:7: expected an MLflow metric line")


def test_mlflow_sqlite_database(
    tmp_path: Path, mlflow_at: Callable[[str], Any]
) -> None:
    db = tmp_path / "mlflow.db"
    mlflow = mlflow_at(f"sqlite:///{db}")
    rows = tiny_run()
    run_id = log_to_mlflow(mlflow, rows, "first")
    assert_logged(read_log(db), rows)
    with mlflow.start_run(run_name="no steps"):  # as many loops log: no step=
        for r in rows[:30]:
            mlflow.log_metric("loss", r["loss"])
            if "val_loss" in r:
                mlflow.log_metric("val_loss", r["val_loss"])
        mlflow.log_metric("loss", float("nan"))  # NaN and inf are findings
        mlflow.log_metric("loss", float("inf"))
    with pytest.raises(LogFormatError) as info:
        read_log(db)
    message = str(info.value)
    assert message.startswith(f"{db}: 2 MLflow runs with metrics;")
    assert f"{db}/<run id or name>" in message and f"{db / run_id} ('first')" in message
    assert_logged(read_log(db / run_id), rows)  # a run by its id
    h = read_log(db / "no steps")  # or its name
    # steps in logging order: the n-th loss is step n, a validation loss at
    # the loss logged last before it
    assert h.columns == {"loss": "loss", "val_loss": "val_loss"}
    assert h.steps.tolist() == list(range(32)) and h.val_steps.tolist() == [9, 19, 29]
    assert h.loss[:30].tolist() == [r["loss"] for r in rows[:30]]
    assert math.isnan(h.loss[30]) and h.loss[31] == math.inf
    with pytest.raises(LogFormatError, match="no MLflow run 'third'"):
        read_log(db / "third")
    with pytest.raises(ValueError, match="step_key must be None for MLflow runs"):
        read_log(db / run_id, step_key="epoch")


def test_mlflow_broken_stores(tmp_path: Path) -> None:
    other = tmp_path / "app.db"  # an SQLite database, not MLflow's
    with contextlib.closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE users (name TEXT)")
        db.commit()
    with pytest.raises(LogFormatError, match="without MLflow's 'metrics' table"):
        read_log(other)
    run = tmp_path / "mlruns" / "1" / "0123abcd"
    (run / "metrics").mkdir(parents=True)
    (run / "meta.yaml").write_text("run_id: 0123abcd\nlifecycle_stage: active\n")
    for path in (run, tmp_path / "mlruns", run / "metrics"):
        with pytest.raises(LogFormatError) as info:
            read_log(path)
        assert str(info.value).startswith(f"{run / 'metrics'}: no metric values")
    (run / "metrics" / "loss").write_text("1700000000000 0.5 0\n1700000000001 0.4\n")
    assert read_log(run).loss.tolist() == [0.5, 0.4]  # no step: MLflow's 0
    (run / "metrics" / "loss").write_text("1700000000000 0.5 0\n\nloss=0.4\n")
    with pytest.raises(LogFormatError) as info:
        read_log(tmp_path / "mlruns")
    assert str(info.value).startswith(f"{run / 'metrics' / 'loss'}:3:")


def test_hf_trainer_state_from_a_real_trainer(tmp_path: Path) -> None:
    out = tmp_path / "output"
    trainer = hf_trainer(out, 30, save_strategy="steps", save_steps=15)
    trainer.train()
    trainer.save_state()
    expected = {
        "step": "step",
        "loss": "loss",
        "val_loss": "eval_loss",
        "lr": "learning_rate",
        "grad_norm": "grad_norm",
    }
    h = read_log(out)  # the output directory's own trainer_state.json
    assert h.columns == expected
    assert h.steps.tolist() == list(range(1, 31))  # the summary's train_loss unused
    assert h.val_steps.tolist() == [10, 20, 30]
    assert len(h.grad_norm) == 30 and h.lr[0] == pytest.approx(0.05)
    (out / "trainer_state.json").unlink()
    h15 = read_log(out / "checkpoint-15")
    assert h15.steps.tolist() == list(range(1, 16))
    newest = read_log(out)  # now the newest checkpoint's
    assert newest.source.endswith("checkpoint-30/trainer_state.json")
    assert newest.steps.tolist() == h.steps.tolist()


def test_keras_csvlogger(tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    path = tmp_path / "training.log.csv"

    def fit(epochs: int, append: bool) -> None:
        model.fit(
            x,
            x.sum(1, keepdims=True),
            epochs=epochs,
            batch_size=16,
            validation_split=0.25,
            verbose=0,
            callbacks=[keras.callbacks.CSVLogger(str(path), append=append)],
        )

    fit(12, append=False)
    h = read_log(path)
    assert h.columns == {"step": "epoch", "loss": "loss", "val_loss": "val_loss"}
    assert h.steps.tolist() == list(range(12)) and h.val_steps.tolist() == list(
        range(12)
    )
    assert h.loss[-1] < h.loss[0]
    assert h.notes == ()
    # a second fit (a fine-tuning phase) appends to the same file, its epochs
    # from 0 again: read as the run's continuation, not over the first fit
    fit(5, append=True)
    both = read_log(path)
    assert both.steps.tolist() == list(range(17))
    assert both.loss[:12].tolist() == h.loss.tolist()
    assert both.val_steps.tolist() == list(range(17))
    assert len(both.notes) == 1
    assert "starts again at 0 on line 14" in both.notes[0]
    assert "from step 12" in both.notes[0]


def test_generic_csv_needs_no_options(tmp_path: Path) -> None:
    rows = tiny_run()
    path = tmp_path / "log.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, ["step", "loss", "val_loss", "lr", "grad_norm"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    h = read_log(path)
    assert set(h.columns) == {"step", "loss", "val_loss", "lr", "grad_norm"}
    assert all(h.columns[k] == k for k in h.columns)
    assert len(h) == 60 and len(h.val_loss) == 6 and len(h.grad_norm) == 60


def test_jsonl_with_nested_records_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with path.open("w") as fh:
        for r in tiny_run(30):
            rec = {"iteration": r["step"], "train": {"mse": r["loss"]}}
            fh.write(json.dumps(rec) + "\n\n")
    with pytest.raises(LogFormatError, match="no training-loss column found"):
        read_log(path)
    h = read_log(path, loss_key="train/mse")
    assert h.columns == {"loss": "train/mse", "step": "iteration"}
    assert h.steps.tolist() == list(range(30))


def test_keys_are_matched_after_normalising(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("Global-Step,Train Loss,Valid.Loss\n0,3,\n1,2,2.5\n")
    h = read_log(path)
    assert h.columns == {
        "step": "Global-Step",
        "loss": "Train Loss",
        "val_loss": "Valid.Loss",
    }
    h = read_log(path, step_key="global_step", loss_key="train_loss")
    assert h.columns["step"] == "Global-Step"


def test_tsv(tmp_path: Path) -> None:
    path = tmp_path / "log.tsv"
    path.write_text("step\tloss\n0\t2.0\n1\t1.5\n")
    assert read_log(path).loss.tolist() == [2.0, 1.5]


def test_quoted_thousands_separators(tmp_path: Path) -> None:
    """A spreadsheet's export of a large loss: "10,584.4" is 10584.4."""
    path = tmp_path / "log.csv"
    path.write_text('step,loss\n0,"10,584.4"\n1,"9,943.5"\n2,"1,234,567"\n3,87.5\n')
    assert read_log(path).loss.tolist() == [10584.4, 9943.5, 1234567.0, 87.5]
    bad = tmp_path / "bad.csv"
    # not thousands, or a decimal comma as pandas' decimal="," writes: errors
    for cell in ("10,58", "2,300", "0,466"):
        bad.write_text(f'step,loss\n0,"{cell}"\n')
        with pytest.raises(LogFormatError, match=f"holds '{cell}', not a number"):
            read_log(bad)


def test_semicolon_csv_with_decimal_commas(tmp_path: Path) -> None:
    """European spreadsheets and locales: ';' between cells, ',' before decimals."""
    rows = tiny_run(30)
    path = tmp_path / "export.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, delimiter=";")
        w.writerow(["Step", "Loss", "Val Loss", "LR", "Grad Norm"])
        for r in rows:
            cells = [r["loss"], r.get("val_loss", ""), r["lr"], r["grad_norm"]]
            w.writerow([r["step"], *(str(c).replace(".", ",") for c in cells)])
    h = read_log(path)
    assert h.columns == {
        "step": "Step",
        "loss": "Loss",
        "val_loss": "Val Loss",
        "lr": "LR",
        "grad_norm": "Grad Norm",
    }
    assert h.steps.tolist() == list(range(30))
    assert h.loss.tolist() == [r["loss"] for r in rows]
    assert h.val_loss.tolist() == [r["val_loss"] for r in rows if "val_loss" in r]
    assert h.grad_norm.tolist() == [r["grad_norm"] for r in rows]
    text = path.read_text()
    # Excel's "sep=;" first line; a table sniffed in a file of another name
    for name, content in (("excel.csv", "sep=;\n" + text), ("export.txt", text)):
        (tmp_path / name).write_text(content)
        assert read_log(tmp_path / name).loss.tolist() == h.loss.tolist()
    bad = tmp_path / "bad.csv"
    bad.write_text("sep=;\nstep;loss\n0;0,5\n1;0;5\n")
    with pytest.raises(LogFormatError) as info:
        read_log(bad)
    assert str(info.value).startswith(f"{bad}:4: expected 2 values like the header")


def test_tensorboard_csv_download(tmp_path: Path) -> None:
    """TensorBoard's "download CSV": one tag per file, named in the file name."""
    rows = tiny_run(30)
    path = tmp_path / "run-version_0-tag-train_loss.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["Wall time", "Step", "Value"])
        for r in rows:
            w.writerow([1.7e9 + r["step"] / 10, r["step"], r["loss"]])
    h = read_log(path)
    assert h.columns == {"step": "Step", "loss": "version_0/train_loss"}
    assert h.steps.tolist() == [r["step"] for r in rows]
    assert h.loss.tolist() == [r["loss"] for r in rows]
    # no "tag-" in the name: the file's name is the tag
    plain = tmp_path / "loss.csv"
    plain.write_text("Wall time,Step,Value\n1.7e9,0,2.5\n1.7e9,1,2.25\n")
    assert read_log(plain).loss.tolist() == [2.5, 2.25]
    # Keras' TensorBoard callback: runs "train" and "validation", one tag
    for run in ("train", "validation"):
        (tmp_path / f"run-{run}-tag-epoch_loss.csv").write_text(
            "Wall time,Step,Value\n1.7e9,0,2.5\n1.7e9,1,2.25\n"
        )
    assert read_log(tmp_path / "run-train-tag-epoch_loss.csv").columns["loss"] == (
        "train/epoch_loss"
    )
    with pytest.raises(LogFormatError, match="no training-loss column"):
        read_log(tmp_path / "run-validation-tag-epoch_loss.csv")  # not a training loss
    # the downloaded column's own name still picks it
    assert read_log(path, loss_key="Value").loss.tolist() == h.loss.tolist()
    other = tmp_path / "run-x-tag-accuracy.csv"
    other.write_text("Wall time,Step,Value\n1.7e9,0,0.5\n")
    with pytest.raises(LogFormatError, match="'x/accuracy'"):
        read_log(other)


def test_resumed_run_keeps_last_value_per_step(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n0,3\n1,2\n2,1\n1,2.5\n2,1.5\n3,1\n")
    h = read_log(path)
    assert h.steps.tolist() == [0, 1, 2, 3]
    assert h.loss.tolist() == [3.0, 2.5, 1.5, 1.0]
    assert h.notes == (
        "2 training losses were logged at a step already logged (a run resumed "
        "from a checkpoint): the later ones are read",
    )


def test_three_fits_appended_and_a_validation_row_first(tmp_path: Path) -> None:
    """Each fit logs its validation loss at step 0 and its training loss from
    step 1: the continuation starts where the training loss starts again;
    three fits (10, 3 and 3 epochs) follow on from each other (each goes on
    from the loss the one before reached)."""
    path = tmp_path / "log.csv"
    rows = ["step,loss,val_loss"]
    k = 0
    for n in (10, 3, 3):
        rows.append("0,,2.5")
        for i in range(1, n + 1):
            k += 1
            rows.append(f"{i},{2.0 - 0.05 * k},")
    path.write_text("\n".join(rows) + "\n")
    h = read_log(path)
    assert h.steps.tolist() == list(range(1, 17))
    assert len(h.notes) == 2 and "from step 11" in h.notes[0]
    assert "from step 14" in h.notes[1]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_a_run_appended_from_scratch_is_read_alone(tmp_path: Path, fmt: str) -> None:
    """A script run twice into one log: the step goes back to 0 and the loss to
    where the log began. Only the last run is read (a note says so); read as
    one run, its restart looked like a blow-up. A run whose loss goes on from
    where the earlier one ended is a continuation (another fit)."""
    first = [2.3 - 0.02 * i for i in range(50)]
    again = [2.3 - 0.019 * i for i in range(40)]  # a new run, from scratch
    on = [first[-1] - 0.001 * i for i in range(40)]  # goes on from the end

    def write(name: str, runs: list[list[float]]) -> Path:
        path = tmp_path / f"{name}.{fmt}"
        rows = [(i, v) for run in runs for i, v in enumerate(run)]
        if fmt == "csv":
            text = "step,loss\n" + "".join(f"{i},{v}\n" for i, v in rows)
        else:
            text = "".join(json.dumps({"step": i, "loss": v}) + "\n" for i, v in rows)
        path.write_text(text)
        return path

    h = read_log(write("twice", [first, again]))
    assert h.loss.tolist() == again and h.steps.tolist() == list(range(40))
    assert len(h.notes) == 1 and "a new run appended" in h.notes[0]
    assert "line 52" in h.notes[0] if fmt == "csv" else "line 51" in h.notes[0]
    h = read_log(write("blew_up", [[2.3, 5.0, 1e9, math.inf], again]))
    assert h.loss.tolist() == again  # the earlier run ended non-finite
    h = read_log(write("fit_again", [first, on]))
    assert len(h) == 90 and "continuation" in h.notes[0]


def test_a_tqdm_bar_that_shows_nan_after_a_blow_up_keeps_every_step(
    tmp_path: Path,
) -> None:
    """A per-batch loss on a tqdm bar (set_postfix every batch) that turns NaN
    and stays so: NaN on every redraw is not a per-epoch value shown again;
    every batch is read (only 40 of 384 were)."""
    losses = [2.3 - 0.01 * i for i in range(30)] + [50.0, 1e4] + [math.nan] * 160
    text = ""
    for e in range(3):
        for b in range(64):
            v = losses[e * 64 + b]
            text += (
                f"Epoch {e}: {100 * (b + 1) // 64}%|##| {b + 1}/64 "
                f"[00:00<00:00, 300.00it/s, loss={v:.3f}]\r"
            )
        text += "\n"
    path = tmp_path / "bar.log"
    path.write_text(text)
    h = read_log(path)
    assert len(h) == 192
    assert h.loss[:30].tolist() == pytest.approx(losses[:30], abs=1e-3)
    assert np.isnan(h.loss[-1])


def test_rows_that_name_their_split_in_a_column(tmp_path: Path) -> None:
    """One record per phase, the phase in a column: validation rows' losses are
    validation losses (they overwrote training losses at the same step)."""
    lines = []
    for t in range(60):
        lines.append({"split": "train", "step": t, "loss": 2.0 - 0.01 * t})
        if t % 10 == 9:
            lines.append({"split": "validation", "step": t, "loss": 2.1 - 0.01 * t})
    path = tmp_path / "log.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    h = read_log(path)
    assert h.loss.tolist() == [2.0 - 0.01 * t for t in range(60)]
    assert h.val_steps.tolist() == list(range(9, 60, 10))
    assert "'loss' is read as 'val_loss'" in h.notes[0]
    csv_path = tmp_path / "log.csv"
    csv_path.write_text(
        "phase,step,loss\n"
        + "".join(f"{r['split']},{r['step']},{r['loss']}\n" for r in lines)
    )
    assert read_log(csv_path).val_steps.tolist() == list(range(9, 60, 10))
    # a column of other words (a model name) is no split
    other = tmp_path / "other.csv"
    other.write_text("mode,step,loss\nfast,0,2\nfast,1,1.9\nfast,2,1.8\n")
    assert read_log(other).notes == ()


def test_a_one_epoch_fit_between_two_others(tmp_path: Path) -> None:
    """Keras CSVLogger over fits of 5, 1 and 3 epochs: 9 epochs. (A first fit
    of one epoch cannot be told from its epoch logged again.)"""
    path = tmp_path / "log.csv"
    rows = ["epoch,loss"] + [
        f"{e},{1 - 0.05 * i}" for i, e in enumerate([*range(5), 0, *range(3)])
    ]
    path.write_text("\n".join(rows) + "\n")
    h = read_log(path)
    assert h.steps.tolist() == list(range(9)) and len(h.notes) == 2
    hf = tmp_path / "hf.csv"  # logged every 10 steps: the continuation keeps it
    hf.write_text("step,loss\n10,2\n20,1.9\n30,1.8\n10,1.7\n20,1.6\n")
    assert read_log(hf).steps.tolist() == [10, 20, 30, 40, 50]


def test_an_epoch_column_with_fractions_is_not_the_step(tmp_path: Path) -> None:
    """Logged within epochs (``epoch`` 0.05, 0.1, ...): the n-th loss is step
    n, and a note says why; a fractional ``step`` column is still an error."""
    path = tmp_path / "log.csv"
    path.write_text(
        "epoch,loss\n"
        + "".join(f"{0.05 * (i + 1):.2f},{2 - 0.01 * i}\n" for i in range(40))
    )
    h = read_log(path)
    assert h.steps.tolist() == list(range(40)) and "step" not in h.columns
    assert h.notes == (
        "the step column 'epoch' holds fractions (0.05): the n-th logged loss "
        "is read as step n",
    )
    with pytest.raises(LogFormatError, match="'epoch' must be a whole number"):
        read_log(path, step_key="epoch")


def test_nan_values_are_kept(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n0,2.0\n1,nan\n2,inf\n")
    h = read_log(path)
    assert math.isnan(h.loss[1]) and math.isinf(h.loss[2])


# ----------------------------------------------------------------- broken files
@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("empty.csv", "", ":1:"),
        ("header_only.csv", "step,loss\n", ":2:"),
        ("bad_cell.csv", "step,loss\n0,2.0\n1,oops\n", ":3:"),
        ("ragged.csv", "step,loss\n0,2.0\n1,2.0,7\n", ":3:"),
        ("no_header.csv", "0,2.0\n1,1.0\n", ":1:"),
        ("bad_step.csv", "step,loss\n0,2.0\n1.5,1.0\n", ":3:"),
        ("broken.jsonl", '{"loss": 1}\n{"loss": \n{"loss": 2}\n', ":2:"),
        ("only_line_cut.jsonl", '{"loss": \n', ":1:"),
        ("cut_mid_file.csv", "step,loss\n0,2.0\n1\n2,1.0\n", ":3:"),
        ("list.jsonl", '{"loss": 1}\n[1, 2]\n', ":2:"),
        ("truncated_trainer_state.json", '{"log_history": [{"loss": 1.0,\n', ":2:"),
        ("empty.jsonl", "\n\n", ""),
    ],
)
def test_malformed_files_name_file_and_line(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LogFormatError) as info:
        read_log(path)
    message = str(info.value)
    assert message.startswith(str(path) + where)
    assert "\n" not in message
    assert isinstance(info.value, lrkit.LRKitError)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("log.csv", "step,loss,lr\n0,2.0,0.1\n1,1.5,0.1\n2,1.2,0.1\n3,1."),
        (
            "log.jsonl",
            '{"step": 0, "loss": 2.0}\n{"step": 1, "loss": 1.5}\n'
            '{"step": 2, "loss": 1.2}\n{"step": 3, "lo',
        ),
    ],
)
def test_a_last_line_cut_short_is_skipped_with_a_note(
    tmp_path: Path, name: str, text: str
) -> None:
    """A run still writing (or killed mid-line) leaves a partial last line:
    the complete lines are read, and the note says what was skipped."""
    path = tmp_path / name
    path.write_text(text)
    h = read_log(path)
    assert h.loss.tolist() == [2.0, 1.5, 1.2]
    line = text.count("\n") + 1
    assert len(h.notes) == 1 and f"line {line}, the last, is cut short" in h.notes[0]
    assert h.to_dict()["notes"] == list(h.notes)
    complete = tmp_path / ("whole" + path.suffix)
    complete.write_text(text.rsplit("\n", 1)[0] + "\n")
    assert read_log(complete).notes == ()


def test_a_header_repeated_by_an_appending_run_is_skipped(tmp_path: Path) -> None:
    """pandas' ``to_csv(mode="a")`` and most resumed loggers write the header
    again: the repeat is skipped with a note, and the later values win."""
    path = tmp_path / "metrics.csv"  # what to_csv writes, then mode="a" again
    path.write_text("step,loss\n0,2.0\n1,1.8\n2,1.6\n3,1.5\n")
    with path.open("a") as f:
        f.write("step,loss\n3,1.45\n4,1.4\n5,1.3\n")
    h = read_log(path)
    assert h.steps.tolist() == [0, 1, 2, 3, 4, 5]
    assert h.loss.tolist() == [2.0, 1.8, 1.6, 1.45, 1.4, 1.3]
    assert "header row repeats (line 6)" in h.notes[0]
    assert "already logged" in h.notes[1]  # the resumed steps' own note


@pytest.mark.parametrize("codec", ["utf-16", "utf-8-sig", "utf-32"])
def test_text_with_a_byte_order_mark(tmp_path: Path, codec: str) -> None:
    """Windows PowerShell's ``>`` writes UTF-16 with a BOM."""
    path = tmp_path / "train.log"
    lines = [f"epoch {i} loss {1.0 / (i + 1):.4f}" for i in range(12)]
    path.write_bytes("\r\n".join(lines).encode(codec))
    h = read_log(path)
    assert h.loss.tolist() == pytest.approx([1.0 / (i + 1) for i in range(12)], 1e-3)


def test_a_log_truncated_in_place_starts_with_nul_bytes(tmp_path: Path) -> None:
    """logrotate's copytruncate (or ': > log') while the writer keeps its
    offset: the file starts with a run of NUL bytes, then the new lines."""
    path = tmp_path / "train.log"
    text = "".join(f"step {i} loss {2.0 - 0.1 * i:.2f}\n" for i in range(15))
    path.write_bytes(b"\x00" * 4096 + text.encode().replace(b"step 7", b"st\x00ep 7"))
    assert len(read_log(path)) == 15


def test_latin1_bytes_in_a_console_log_and_binary_data(tmp_path: Path) -> None:
    path = tmp_path / "train.log"
    text = "".join(f"step {i} loss {2.0 - 0.1 * i:.2f}\n" for i in range(15))
    path.write_bytes(b"Lernrate f\xfcr Schritt 0\n" + text.encode())  # cp1252
    assert len(read_log(path)) == 15
    binary = tmp_path / "blob.log"
    binary.write_bytes(bytes(range(128, 256)) * 40)  # no NUL, not text
    with pytest.raises(LogFormatError, match="not a text file"):
        read_log(binary)


def test_corrupt_event_file_and_empty_directory(tmp_path: Path) -> None:
    bad = tmp_path / "events.out.tfevents.123.host"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(LogFormatError, match=str(bad.name)):
        read_log(bad)
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(LogFormatError, match="no log found in this directory"):
        read_log(empty)
    with pytest.raises(LogFormatError, match="no such file"):
        read_log(tmp_path / "missing.csv")


def test_overrides_naming_no_column(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,loss\n0,1\n")
    with pytest.raises(ValueError, match=r"val_key must be a column of .*'loss'"):
        read_log(path, val_key="valid")
    with pytest.raises(TypeError, match="loss_key must be a str or None"):
        read_log(path, loss_key=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="format must be one of"):
        read_log(path, format="xls")


def test_ambiguous_loss_columns(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("step,ce_loss,kl_loss\n0,1,2\n1,0.5,\n")
    with pytest.raises(LogFormatError, match="several columns could be.*a sum: 'a"):
        read_log(path)
    assert read_log(path, loss_key="kl_loss").loss.tolist() == [2.0]
    both = read_log(path, loss_key="ce_loss+kl_loss")  # a sum, where both are
    assert both.columns["loss"] == "ce_loss+kl_loss"
    assert both.steps.tolist() == [0] and both.loss.tolist() == [3.0]


def test_loss_parts_after_a_common_prefix_are_summed(tmp_path: Path) -> None:
    # a detection trainer's results.csv (Ultralytics' layout: padded names, the
    # loss in parts and no total, for training and validation)
    parts = ("box", "cls", "dfl")
    names = [f"train/{p}_loss" for p in parts] + [f"val/{p}_loss" for p in parts]
    path = tmp_path / "results.csv"
    rows = []
    for e in range(1, 13):
        train = [1.0 / e + k for k in range(3)]
        rows.append([e, *train, *(v + 0.1 for v in train), 0.5, 0.01])
    path.write_text(
        ",".join(f"{n:>20}" for n in ["epoch", *names, "metrics/mAP50(B)", "lr/pg0"])
        + "\n"
        + "".join(",".join(f"{v:>20.5g}" for v in r) + "\n" for r in rows)
    )
    h = read_log(path)
    assert h.columns == {
        "loss": "train/box_loss+train/cls_loss+train/dfl_loss",
        "step": "epoch",
        "val_loss": "val/box_loss+val/cls_loss+val/dfl_loss",
        "lr": "lr/pg0",
    }
    np.testing.assert_allclose(h.loss, [sum(r[1:4]) for r in rows], rtol=1e-4)
    np.testing.assert_allclose(h.val_loss, [sum(r[4:7]) for r in rows], rtol=1e-4)


# ---------------------------------------------------------------------- History
def test_history_validation_and_record() -> None:
    h = History(loss=[3.0, 2.0], val_loss=[2.5], val_steps=[1], source="x")
    assert h.to_dict()["val_steps"] == [1] and len(h) == 2
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        History(loss=[1.0, 2.0], steps=[3, 3])
    with pytest.raises(ValueError, match="val_steps must be given"):
        History(loss=[1.0, 2.0], val_loss=[1.0])
    with pytest.raises(ValueError, match="steps must be >= 0 everywhere"):
        History(loss=[1.0], steps=[-1])
    with pytest.raises(TypeError, match="loss must be a sequence of real numbers"):
        History(loss=["a"])
    with pytest.raises(ValueError):
        h.loss[0] = 5.0  # read-only arrays


def test_without_a_step_column_series_keep_their_place(tmp_path: Path) -> None:
    p = tmp_path / "log.csv"
    p.write_text("loss,val_loss\n1.0,\n0.9,\n0.8,0.85\n0.7,\n0.6,0.65\n")
    h = read_log(p)
    assert list(h.steps) == [0, 1, 2, 3, 4]
    assert list(h.val_steps) == [2, 4]  # where validation happened, not 0 and 1
    q = tmp_path / "log.jsonl"
    q.write_text('{"loss": 1.0}\n{"loss": 0.9}\n{"val_loss": 0.95}\n{"loss": 0.8}\n')
    h = read_log(q)
    assert list(h.val_steps) == [1]  # after the second training step


# ------------------------------------------------------- console output and columns
def keras_model() -> tuple[Any, Any, np.ndarray, np.ndarray]:
    """Keras (torch backend), a seeded linear model compiled with SGD(0.05),
    and 128 examples of ``y = sum(x)``."""
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 4)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return keras, model, x, x.sum(1, keepdims=True)


def keras_fit(verbose: int) -> dict[str, list[float]]:
    """A real Keras fit (torch backend); returns ``history.history``."""
    _, model, x, y = keras_model()
    fit = model.fit(
        x,
        y,
        epochs=8,
        batch_size=16,
        validation_split=0.25,
        verbose=verbose,
    )
    return {k: [float(v) for v in vs] for k, vs in fit.history.items()}


@pytest.mark.parametrize("verbose", [1, 2])
def test_keras_console_output_and_history_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: int
) -> None:
    history = keras_fit(verbose)
    console = tmp_path / "train.log"
    console.write_text(capsys.readouterr().out)  # with progress-bar redraws at 1
    h = read_log(console)
    assert h.columns == {"loss": "loss", "step": "Epoch", "val_loss": "val_loss"}
    assert h.steps.tolist() == list(range(1, 9))  # "Epoch 3/8" heads its lines
    # the last value printed for each epoch is the epoch's (4 decimals)
    np.testing.assert_allclose(h.loss, history["loss"], atol=6e-5)
    np.testing.assert_allclose(h.val_loss, history["val_loss"], atol=6e-5)
    saved = tmp_path / "history.json"
    saved.write_text(json.dumps(history))  # json.dump(fit.history, f)
    k = read_log(saved)
    assert k.columns == {"loss": "loss", "val_loss": "val_loss"}
    assert k.loss.tolist() == history["loss"]
    assert k.val_steps.tolist() == list(range(8))
    # pandas' DataFrame(history).to_json(): columns keyed by row number
    frame = tmp_path / "frame.json"
    frame.write_text(
        json.dumps(
            {c: {str(i): v for i, v in enumerate(vs)} for c, vs in history.items()}
        )
    )
    assert read_log(frame).loss.tolist() == history["loss"]


def test_hf_trainer_console_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = hf_trainer(tmp_path / "output", 20, save_strategy="no")
    trainer.train()
    log = tmp_path / "stdout.txt"
    log.write_text(capsys.readouterr().out)
    h = read_log(log)
    assert h.columns == {
        "loss": "loss",
        "val_loss": "eval_loss",
        "lr": "learning_rate",
        "grad_norm": "grad_norm",
    }
    logged = [e for e in trainer.state.log_history if "loss" in e]
    assert len(h) == len(logged) == 20
    np.testing.assert_allclose(h.loss, [e["loss"] for e in logged], rtol=1e-3)
    # no step printed: the n-th loss is step n, and an evaluation belongs to
    # the loss printed before it (steps 10 and 20 are the 10th and 20th: 9, 19)
    assert h.val_steps.tolist() == [9, 19]


def test_hf_trainer_console_evaluating_more_often_than_logging(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Losses every 2 epochs, evaluations every epoch: the whole-number epoch
    on every printed dict is the step (the closing summary, which repeats the
    last epoch with the run's mean loss, is not a point), so no evaluation
    collapses into another."""
    trainer = hf_trainer(
        tmp_path / "output",
        48,  # 6 epochs of 8 batches
        save_strategy="no",
        logging_steps=16,
        eval_strategy="epoch",
    )
    trainer.train()
    log = tmp_path / "stdout.txt"
    log.write_text(capsys.readouterr().out)
    h = read_log(log)
    assert h.columns["step"] == "epoch"
    assert h.steps.tolist() == [2, 4, 6]
    assert h.val_steps.tolist() == [1, 2, 3, 4, 5, 6]
    evals = [e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e]
    np.testing.assert_allclose(h.val_loss, evals, rtol=1e-3)


def test_console_formats_people_print(tmp_path: Path) -> None:
    rows = tiny_run(40)
    nano = tmp_path / "nanogpt.out"  # a nanoGPT-style loop, evaluations between
    lines = []
    for r in rows:
        if "val_loss" in r:
            loss, val = r["loss"], r["val_loss"]
            lines.append(f"step {r['step']}: train loss {loss:.4f}, val loss {val:.4f}")
        lines.append(
            f"iter {r['step']}: loss {r['loss']:.4f}, time 12.34ms, mfu 41.07%"
        )
    nano.write_text("\n".join(lines) + "\n")
    h = read_log(nano)
    assert h.columns == {"loss": "loss", "step": "iter/step", "val_loss": "val loss"}
    assert h.steps.tolist() == list(range(40))
    np.testing.assert_allclose(h.loss, [r["loss"] for r in rows], atol=5e-5)
    assert h.val_steps.tolist() == [9, 19, 29, 39]
    bar = tmp_path / "lightning_bar"  # no extension: sniffed as console output
    bar.write_text(
        "".join(
            f"\rEpoch 0:  {t}%|##   | {t + 1}/40 [00:01<00:02, 15.0it/s, v_num=0, "
            f"train_loss={r['loss']:.3f}]"
            for t, r in enumerate(rows)
        )
        + "\n"
    )
    b = read_log(bar)
    # "Epoch 0" on every redraw is no step: each redraw is the next batch's
    assert b.columns == {"loss": "train_loss"} and len(b) == 40
    np.testing.assert_allclose(b.loss, [r["loss"] for r in rows], atol=5e-4)
    mnist = tmp_path / "mnist.txt"  # the PyTorch MNIST example's prints
    mnist.write_text(
        "".join(
            f"Train Epoch: 1 [{16 * t}/640 ({t * 100 // 40}%)]\tLoss: {r['loss']:.6f}\n"
            for t, r in enumerate(rows)
        )
        + "\nTest set: Average loss: 0.0330, Accuracy: 9890/10000 (99%)\n"
    )
    m = read_log(mnist)
    # the "Test set" line reports validation: its loss is the validation loss
    assert m.columns == {"loss": "Loss", "val_loss": "val Average loss"}
    assert len(m) == 40 and m.val_steps.tolist() == [39]
    assert m.val_loss.tolist() == [0.033]
    fairseq = tmp_path / "fairseq.log"  # a validation line names its loss "loss"
    fairseq.write_text(
        "".join(
            f"2024-01-01 | INFO | train_inner | epoch 001:  {t + 1} / 40 "
            f"loss={r['loss']:.3f}, ppl=9.1, num_updates={t + 1}, lr=0.0005, "
            f"gnorm={r['grad_norm']:.3f}\n"
            for t, r in enumerate(rows)
        )
        + "2024-01-01 | INFO | valid | epoch 001 | valid on 'valid' subset | "
        "loss 1.234 | ppl 2.35 | num_updates 40\n"
    )
    f = read_log(fairseq)
    assert f.columns == {
        "loss": "loss",
        "step": "num_updates",
        "val_loss": "val loss",
        "lr": "lr",
        "grad_norm": "gnorm",
    }
    assert f.steps.tolist() == list(range(1, 41)) and f.val_steps.tolist() == [40]
    np.testing.assert_allclose(f.loss, [r["loss"] for r in rows], atol=5e-4)


def test_console_and_sniffing_errors(tmp_path: Path) -> None:
    quiet = tmp_path / "train.log"
    quiet.write_text("Epoch 1/3\nsaving checkpoint to ./out\naccuracy: 0.91\n")
    with pytest.raises(LogFormatError, match=r"train\.log: no line holds a loss"):
        read_log(quiet)
    csv_like = tmp_path / "metrics"  # no extension, but a CSV
    csv_like.write_text("step,loss\n0,2.0\n1,1.5\n")
    assert read_log(csv_like).columns == {"step": "step", "loss": "loss"}
    bad = tmp_path / "config.json"
    bad.write_text('{"lr": 0.1, "name": "run"}')
    with pytest.raises(LogFormatError, match="columns .an object of lists"):
        read_log(bad)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.builds(
                lambda k, v, sep: f"{k}{sep}{v}",
                st.sampled_from(["loss", "val loss", "iter", "Epoch", "lr", "x"]),
                st.one_of(
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.integers(-5, 10**6),
                ),
                st.sampled_from([": ", "=", " ", ":"]),
            ),
        ),
        max_size=30,
    ),
    st.sampled_from(["\n", "\r", " - ", ", "]),
)
def test_any_console_text_reads_or_fails_cleanly(parts: list[str], joint: str) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "run.log"
        path.write_text(joint.join(parts), encoding="utf-8")
        try:
            h = read_log(path)
        except LogFormatError as e:
            message = str(e)
        else:
            assert len(h) >= 1 and np.all(np.diff(h.steps) > 0)
            assert "loss" in h.columns["loss"].lower()
            return
        assert message.startswith(str(path)) and "\n" not in message


CONSOLE_CASES = {
    # a batch counter that restarts every epoch is no step: the n-th loss
    "epoch_step": (
        "".join(
            f"Epoch {e}/3, Step {s}/300, Loss: {1 / (3 * e + s / 100):.4f}\n"
            for e in (1, 2, 3)
            for s in (100, 200, 300)
        ),
        {"loss": "Loss"},
        list(range(9)),
        [],
    ),
    # a tqdm bar's percentage is not its step; thousands separators are read
    "bar": (
        "Steps:  10%|#         | 100/1000 [00:01<00:09, step_loss=2.5]\r"
        "Steps:  20%|##        | 200/1000 [00:02<00:08, step_loss=2.4]\n",
        {"loss": "step_loss"},
        [0, 1],
        [],
    ),
    "commas": (
        "step 1,000: loss 1.5\nstep 2,000: loss 1.2\n",
        {"loss": "loss", "step": "step"},
        [1000, 2000],
        [],
    ),
    # a loss named before other words, its value after a colon at the end (the
    # PyTorch tutorials' style); "new best: 0.4" is a pair of its own, not a loss
    "loss_then_words": (
        "Epoch [1/2], Step [1/2], Loss: 0.3333\n"
        "Epoch [1/2], Step [2/2], Loss: 0.2500\n"
        "Validation loss after epoch 1: 0.5\n"
        "Epoch [2/2], Step [1/2], Loss: 0.2000\n"
        "Epoch [2/2], Step [2/2], Loss: 0.1667\n"
        "Validation loss after epoch 2: 0.25\n"
        "loss went down, new best: 0.4\n",
        {"loss": "Loss", "val_loss": "Validation loss"},
        [0, 1, 2, 3],
        [0.5, 0.25],
    ),
    # a NaN before a loss name is a value, not a word of its name
    "nan_before_a_name": (
        "step 1 loss 2.5 val_loss 2.6\nstep 2 loss nan val_loss 2.0\n",
        {"loss": "loss", "step": "step", "val_loss": "val_loss"},
        [1, 2],
        [2.6, 2.0],
    ),
    # "at step 100" names the step (two-word names only before a loss name)
    "at_step": (
        "at step 100 loss 2.0\nat step 200 loss 1.8\n",
        {"loss": "loss", "step": "step"},
        [100, 200],
        [],
    ),
    # a validation word after the loss, or inside a path, is not a context
    "not_validation": (
        "step 1 | loss 0.5 | new best val, saving checkpoint\n"
        "step 2 | loss 0.4 | ckpt_dir=/runs/test\n",
        {"loss": "loss", "step": "step"},
        [1, 2],
        [],
    ),
    # one line, two phases
    "one_line": (
        "epoch 1 | train: loss 2.0 | val: loss 2.2\n"
        "epoch 2 | train: loss 1.5 | val: loss 1.9\n",
        {"loss": "loss", "step": "epoch", "val_loss": "val loss"},
        [1, 2],
        [2.2, 1.9],
    ),
    # a validation line's loss is its running average (timm, PyTorch ImageNet)
    "running_average": (
        "Train: 0 [ 0/10 (  0%)]  Loss: 2.0 (2.0)  LR: 1.0e-03\n"
        "Test: [ 0/5]  Loss:  0.1 (1.5)  Acc@1: 50.0 (60.0)\n"
        "Train: 1 [ 0/10 (  0%)]  Loss: 1.8 (1.8)  LR: 1.0e-03\n"
        "Test: [ 0/5]  Loss:  0.1 (1.3)  Acc@1: 55.0 (62.0)\n",
        {"loss": "Loss", "val_loss": "val Loss", "lr": "LR"},
        [0, 1],
        [1.5, 1.3],
    ),
    # validation lines without a step belong to the training line before them
    # (0 before the first); steps on most loss lines count, a summary's not
    "validation_between": (
        "Initial validation loss: 3.9\n"
        + "".join(
            f"step {s}: loss {2 / (s / 100 + 1):.3f}\n"
            + (f"validation loss: {1 + 300 / s:.3f}\n" if s % 300 == 0 else "")
            for s in range(100, 1000, 100)
        ),
        {"loss": "loss", "step": "step", "val_loss": "validation loss"},
        list(range(100, 1000, 100)),
        [3.9, 2.0, 1.5, 1.333],
    ),
    "summary_after_headers": (
        "".join(
            f"Epoch {e}/3\ntrain loss {2 / e:.3f} | val loss {2.5 / e:.3f}\n"
            for e in (1, 2, 3)
        )
        + "Best val loss 1.25 at epoch 2\n",
        {"loss": "train loss", "step": "Epoch", "val_loss": "val loss"},
        [1, 2, 3],
        [2.5, 1.25, 0.833],
    ),
    # "device" (in a printed CUDA tensor) is no validation word
    "device": (
        "step 0 | grad_norm 1.2 | loss tensor(2.5, device=cuda:0)\n"
        "step 1 | grad_norm 1.1 | loss tensor(2.25, device=cuda:0)\n",
        {"loss": "loss", "step": "step", "grad_norm": "grad_norm"},
        [0, 1],
        [],
    ),
    # a table printed to the console (fast.ai's fit_one_cycle; fine_tune prints
    # two, with the callbacks' notes between rows)
    "fastai_tables": (
        "epoch     train_loss  valid_loss  error_rate  time    \n"
        "0         3.505014    3.711936    0.100000    00:10     \n"
        "epoch     train_loss  valid_loss  error_rate  time    \n"
        "0         3.508846    3.703496    0.000000    00:00     \n"
        "Better model found at epoch 0 with valid_loss value: 3.7034.\n"
        "1         2.844600    3.047785    0.010000    00:01     \n",
        {"loss": "train_loss", "val_loss": "valid_loss"},
        [0, 1, 2],
        [3.711936, 3.703496, 3.047785],
    ),
    # a printed tensor
    "tensor": (
        "step 0 loss=tensor(2.5, grad_fn=<NllLossBackward0>)\n"
        "step 1 loss=tensor(2.25, grad_fn=<NllLossBackward0>)\n",
        {"loss": "loss", "step": "step"},
        [0, 1],
        [],
    ),
}


@pytest.mark.parametrize("case", sorted(CONSOLE_CASES))
def test_console_lines_people_print(tmp_path: Path, case: str) -> None:
    text, columns, steps, val = CONSOLE_CASES[case]
    path = tmp_path / "train.log"
    path.write_text(text)
    h = read_log(path)
    assert h.columns == columns
    assert h.steps.tolist() == steps
    assert h.val_loss.tolist() == val


def megatron_log(rows: list[dict[str, float]], every: int, eval_every: int) -> str:
    """Megatron-LM's console output (the format strings of its training.py:
    training_log and evaluate_and_print_results) for a run of ``rows``."""
    out = [
        "------------------------ arguments ------------------------",
        "  clip_grad ....................................... 1.0",
        f"  eval_interval ................................... {eval_every}",
        f"  lr .............................................. {rows[0]['lr']}",
        "-------------------- end of arguments ---------------------",
        "[before the start of training step] datetime: 2024-05-01 10:00:00 ",
    ]

    def validation(prefix: str, loss: float) -> None:
        line = f" validation loss at {prefix} | "
        line += f"lm loss value: {loss:.6E} | lm loss PPL: {math.exp(loss):.6E} | "
        out.extend(["-" * (len(line) + 1), line, "-" * (len(line) + 1)])

    for r in rows:
        it = int(r["step"])
        if it % every == 0:
            out.append(
                f" [2024-05-01 10:00:{it % 60:02d}]"
                f" iteration {it:8d}/{len(rows):8d} |"
                f" consumed samples: {32 * it:12d} |"
                " elapsed time per iteration (ms): 512.3 |"
                f" learning rate: {r['lr']:.6E} |"
                f" global batch size: {32:5d} |"
                f" lm loss: {r['loss']:.6E} |"
                " loss scale: 1.0 |"
                f" grad norm: {r['grad_norm']:.3f} |"
                f" number of skipped iterations: {0:3d} |"
                f" number of nan iterations: {0:3d} |"
            )
        if it == every:
            out.append(
                f"[Rank 0] (after {it} iterations) memory (MB) | allocated: 1234.5 "
                "| max allocated: 2345.6 | reserved: 3000.0 | max reserved: 3000.0"
            )
        if it % eval_every == 0:
            validation(f"iteration {it}", r["loss"] + 0.5)
    validation("the end of training for val data", rows[-1]["loss"] + 0.25)
    return "\n".join(out) + "\n"


def test_megatron_console_output(tmp_path: Path) -> None:
    rows = [{**r, "step": r["step"] + 1} for r in tiny_run(55)]  # from 1
    log = tmp_path / "megatron.log"
    log.write_text(megatron_log(rows, every=5, eval_every=20))
    h = read_log(log)
    assert h.columns == {
        "loss": "lm loss",
        "step": "iteration",
        "val_loss": "val lm loss",
        "lr": "learning rate",
        "grad_norm": "grad norm",
    }
    logged = [r for r in rows if r["step"] % 5 == 0]
    assert h.steps.tolist() == [r["step"] for r in logged]
    np.testing.assert_allclose(h.loss, [r["loss"] for r in logged], rtol=1e-6)
    np.testing.assert_allclose(h.lr, [r["lr"] for r in logged], rtol=1e-6)
    np.testing.assert_allclose(h.grad_norm, [r["grad_norm"] for r in logged], atol=5e-4)
    # "validation loss at iteration 40 | lm loss value: ..."; the one at the
    # end of training is at the last iteration logged
    assert h.val_steps.tolist() == [20, 40, 55]
    val = [r["loss"] + 0.5 for r in rows if r["step"] in (20, 40)]
    np.testing.assert_allclose(h.val_loss, [*val, rows[-1]["loss"] + 0.25], rtol=1e-6)


def test_fairseq_json_log_lines(tmp_path: Path) -> None:
    """fairseq's ``--log-format json`` console: a JSON object of quoted numbers
    after ``| train_inner |`` / ``| valid |``; lines of as many commas are no
    CSV rows (the first ten are training lines)."""
    rows = tiny_run(40)
    out = []
    for r in rows:
        step = int(r["step"]) + 1
        if step % 2 == 0:
            record = {
                "epoch": 1,
                "update": f"{step / 40:.3f}",
                "loss": f"{r['loss']:.3f}",
                "nll_loss": f"{r['loss'] - 0.1:.3f}",
                "ppl": "20.5",
                "num_updates": str(step),
                "lr": f"{r['lr']:.6g}",
                "gnorm": f"{r['grad_norm']:.3f}",
                "train_wall": "3",
            }
            out.append(
                f"2024-01-01 10:00:00 | INFO | train_inner | {json.dumps(record)}"
            )
        if step % 20 == 0:
            record = {
                "epoch": 1,
                "valid_loss": f"{r['loss'] + 0.3:.3f}",
                "valid_nll_loss": f"{r['loss'] + 0.2:.3f}",
                "valid_num_updates": str(step),
            }
            out.append(f"2024-01-01 10:00:00 | INFO | valid | {json.dumps(record)}")
    log = tmp_path / "train.log"
    log.write_text("\n".join(out) + "\n")
    h = read_log(log)
    assert h.columns == {
        "loss": "loss",
        "step": "num_updates",
        "val_loss": "valid_loss",
        "lr": "lr",
        "grad_norm": "gnorm",
    }
    logged = [r for r in rows if (int(r["step"]) + 1) % 2 == 0]
    assert h.steps.tolist() == [int(r["step"]) + 1 for r in logged]
    np.testing.assert_allclose(h.loss, [r["loss"] for r in logged], atol=5e-4)
    assert h.val_steps.tolist() == [20, 40]


@pytest.mark.parametrize("verbose", [1, 2])
def test_two_keras_fits_in_one_console_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: int
) -> None:
    """Fit, then fine-tune with a second fit() whose "Epoch 1/3" restarts the
    count: its epochs follow the first fit's (which stopped early)."""
    keras, model, x, y = keras_model()
    # "Epoch 2: early stopping", "Restoring model weights from ... epoch: 1."
    stop = keras.callbacks.EarlyStopping(
        min_delta=100.0, patience=0, restore_best_weights=True, verbose=1
    )
    args = {"batch_size": 16, "validation_split": 0.25, "verbose": verbose}
    first = model.fit(x, y, epochs=6, callbacks=[stop], **args)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    second = model.fit(x, y, epochs=3, **args)
    log = tmp_path / "train.log"
    log.write_text(capsys.readouterr().out)
    assert len(first.history["loss"]) == 2
    h = read_log(log)
    assert h.columns == {"loss": "loss", "step": "Epoch", "val_loss": "val_loss"}
    assert h.steps.tolist() == [1, 2, 3, 4, 5] == h.val_steps.tolist()
    losses = first.history["loss"] + second.history["loss"]
    np.testing.assert_allclose(h.loss, losses, atol=6e-5)


@pytest.mark.parametrize("verbose", [1, 2])
def test_a_keras_script_run_twice_into_one_console_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verbose: int
) -> None:
    """The same script run twice, its console output appended to one log: the
    second "Epoch 1/8" comes with a loss back where the first run began, so
    only the second run is read (read as one run, the restart looked like a
    spike and the log held 16 epochs). The progress line that Keras draws
    again within an epoch (verbose=1) is one record, not a step logged twice."""
    args = {"epochs": 8, "batch_size": 16, "validation_split": 0.25}
    keras, model, x, y = keras_model()
    first = model.fit(x, y, verbose=verbose, **args)
    keras, model, x, y = keras_model()  # the script again, from scratch
    model.compile(optimizer=keras.optimizers.SGD(0.03), loss="mse")
    second = model.fit(x, y, verbose=verbose, **args)
    log = tmp_path / "train.log"
    log.write_text(capsys.readouterr().out)
    h = read_log(log)
    assert h.steps.tolist() == list(range(1, 9)) == h.val_steps.tolist()
    np.testing.assert_allclose(h.loss, second.history["loss"], atol=6e-5)
    np.testing.assert_allclose(h.val_loss, second.history["val_loss"], atol=6e-5)
    assert len(h.notes) == 1 and "a new run appended to the log" in h.notes[0]
    assert f"{first.history['loss'][0]:.4g}" in h.notes[0]  # where it began
    # one run alone: no note (verbose=1 drew each epoch's line twice)
    one = tmp_path / "one.log"
    keras, model, x, y = keras_model()
    model.fit(x, y, verbose=verbose, **args)
    one.write_text(capsys.readouterr().out)
    assert read_log(one).notes == ()


def test_keras_logs_beside_the_console(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keras, model, x, y = keras_model()
    csv_log = tmp_path / "training.log"  # the name in Keras' own CSVLogger docs
    fit = model.fit(
        x[:96],
        y[:96],
        validation_data=(x[96:], y[96:]),
        validation_freq=2,
        epochs=6,
        batch_size=16,
        verbose=2,
        callbacks=[keras.callbacks.CSVLogger(str(csv_log))],
    )
    model.evaluate(x, y, verbose=2)  # another "loss:" line after the last epoch
    console = tmp_path / "stdout.txt"
    console.write_text(capsys.readouterr().out)
    # the tutorials' pattern: fit without validation, then evaluate on a test set
    plain = model.fit(x[:96], y[:96], epochs=3, batch_size=16, verbose=2)
    model.evaluate(x[96:] * 10, y[96:] * 10, verbose=2)  # a far larger loss
    tutorial = tmp_path / "tutorial.log"
    tutorial.write_text(capsys.readouterr().out)
    t = read_log(tutorial)
    assert t.steps.tolist() == [1, 2, 3]
    np.testing.assert_allclose(t.loss, plain.history["loss"], atol=6e-5)
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    assert read_log(csv_log).columns["step"] == "epoch"  # a CSV, named .log
    c = read_log(console)
    np.testing.assert_allclose(c.loss, history["loss"], atol=6e-5)  # not evaluate's
    assert c.val_steps.tolist() == [2, 4, 6]  # "Epoch 2/6" ...
    saved = tmp_path / "history.json"
    saved.write_text(json.dumps(history))
    j = read_log(saved)  # validation every 2nd epoch: epochs 1, 3, 5 (from 0)
    assert j.val_steps.tolist() == [1, 3, 5]
    assert j.val_loss.tolist() == history["val_loss"]


def test_sniffing_names_without_the_right_extension(tmp_path: Path) -> None:
    state = tmp_path / "trainer_state"  # an indented JSON document, no extension
    state.write_text(
        json.dumps(
            {
                "global_step": 30,
                "log_history": [
                    {"step": 10, "loss": 2.3},
                    {"step": 20, "loss": 2.1},
                    {"step": 30, "loss": 1.9},
                ],
            },
            indent=2,
        )
    )
    h = read_log(state)
    assert h.steps.tolist() == [10, 20, 30] and h.loss.tolist() == [2.3, 2.1, 1.9]
    tabs = tmp_path / "metrics"  # tab-separated, no extension
    tabs.write_text("step\tloss\tlr\n0\t1.0\t0.1\n1\t0.5\t0.1\n")
    assert read_log(tabs).loss.tolist() == [1.0, 0.5]
    one = tmp_path / "losses"  # one column
    one.write_text("loss\n1.0\n0.5\n0.25\n")
    assert read_log(one).loss.tolist() == [1.0, 0.5, 0.25]


def test_a_total_beside_its_parts_is_the_loss(tmp_path: Path) -> None:
    path = tmp_path / "results.csv"
    path.write_text(
        "epoch,train/total_loss,train/box_loss,train/cls_loss\n1,3.0,1.0,2.0\n2,2.0,0.5,1.5\n"
    )
    h = read_log(path)
    assert h.columns["loss"] == "train/total_loss" and h.loss.tolist() == [3.0, 2.0]


def test_keras_console_redraws_and_repeated_validation(tmp_path: Path) -> None:
    """Keras verbose=1 may draw the full counter before validation ends, then
    again with val_loss; verbose=2 may print the same val_loss two epochs in
    a row (both are evaluations); an evaluate() after the last epoch is not
    the epoch's (Keras 3's own output, colours and backspaces included)."""
    b = "\x08" * 40
    bar = "\x1b[32m━━━━━━━━\x1b[0m"
    epochs = []
    for e, (loss, val) in enumerate([(0.91, 0.5724), (0.52, 0.5724), (0.31, 0.4)]):
        epochs.append(
            f"Epoch {e + 1}/3\n"
            f"\x1b[1m 1/43\x1b[0m \x1b[37m━━━━━━━━\x1b[0m 0s 5ms/step - loss: 1.2{b}\n"
            f"\x1b[1m43/43\x1b[0m {bar} 0s 5ms/step - loss: {loss}{b}\n"
            f"\x1b[1m43/43\x1b[0m {bar} 0s 6ms/step - loss: {loss}"
            f" - val_loss: {val}\n"
        )
    epochs.append(
        "\x1b[1m43/43\x1b[0m \x1b[32m━━━━━━━━\x1b[0m 0s 1ms/step - loss: 0.45\n"
    )
    path = tmp_path / "fit.log"
    path.write_text("".join(epochs))
    h = read_log(path)
    assert h.steps.tolist() == [1, 2, 3] and h.loss.tolist() == [0.91, 0.52, 0.31]
    assert h.val_steps.tolist() == [1, 2, 3]
    assert h.val_loss.tolist() == [0.5724, 0.5724, 0.4]


def test_one_number_per_line_without_a_header(tmp_path: Path) -> None:
    """np.savetxt of a loss list (or scikit-learn's loss_curve_): the training
    loss, line n at step n; a stray word names its line."""
    losses = [r["loss"] for r in tiny_run(30)]
    for name in ("loss.txt", "loss.csv", "curve"):
        path = tmp_path / name
        np.savetxt(path, losses)
        h = read_log(path)
        assert h.columns == {"loss": "loss"}
        assert h.steps.tolist() == list(range(30))
        np.testing.assert_allclose(h.loss, losses)
    bad = tmp_path / "bad.csv"
    bad.write_text("0.5\n0.4\nnan?\n")
    with pytest.raises(LogFormatError, match=r"bad.csv:3: expected one number"):
        read_log(bad)


def test_a_csv_log_with_quoted_json_cells_is_still_a_table(tmp_path: Path) -> None:
    """A data cell may hold CSV-quoted JSON; only a header of 'name: value'
    pieces (a JSON object printed on a log line) makes a file console text."""
    path = tmp_path / "run.log"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "loss", "meta"])
        for r in tiny_run(20):
            w.writerow([int(r["step"]), r["loss"], json.dumps({"epoch": 0})])
    h = read_log(path)
    assert h.columns == {"loss": "loss", "step": "step"} and len(h.loss) == 20


def test_ray_tune_results_step_on_training_iteration(tmp_path: Path) -> None:
    rows = tiny_run(12)
    path = tmp_path / "result.json"
    path.write_text(
        "".join(
            json.dumps(
                {
                    "loss": r["loss"],
                    "training_iteration": int(r["step"]) + 1,
                    "config": {"lr": 0.01},
                    "trial_id": "a1",
                }
            )
            + "\n"
            for r in rows
        )
    )
    h = read_log(path)
    assert h.columns == {
        "loss": "loss",
        "step": "training_iteration",
        "lr": "config/lr",
    }
    assert h.steps.tolist() == list(range(1, 13))


def test_several_hf_evaluation_sets_are_not_summed(tmp_path: Path) -> None:
    """A Trainer evaluating a dict of datasets logs eval_<name>_loss per set:
    other data, not parts of one loss. The first is read, with a note (they
    were summed into one validation loss, silently)."""
    out = tmp_path / "output"
    trainer = hf_trainer(out, 20)
    data = trainer.eval_dataset
    trainer.eval_dataset = {"a": data, "b": data}
    trainer.train()
    trainer.save_state()
    h = read_log(out)
    assert h.columns["val_loss"] == "eval_a_loss"
    assert h.val_steps.tolist() == [10, 20]
    (note,) = [n for n in h.notes if "several validation sets" in n]
    assert "'eval_b_loss'" in note and "val_key=" in note
    assert read_log(out, val_key="eval_b_loss").columns["val_loss"] == "eval_b_loss"


def test_a_lightning_bar_showing_the_same_validation_loss_again(tmp_path: Path) -> None:
    """LR 0: every evaluation shows the same validation loss on the tqdm bar.
    Each is read after its evaluation's own bar ("Validation DataLoader 0",
    whose "DataLoader 0" read as a pair, so the bar went unseen and only the
    first value was kept: a flat validation curve, the plateau signal, hid)."""
    version_dir = _lightning_fit(tmp_path, progress_bar=True, epochs=4, lr=0.0)
    console = read_log(tmp_path / "train.log")
    csv = read_log(version_dir / "metrics.csv")
    assert len(csv.val_steps) == 4
    assert len(console.val_loss) == 4
    np.testing.assert_allclose(console.val_loss, csv.val_loss, atol=6e-3)


def test_the_epoch_as_the_step_beside_an_lr_monitor(tmp_path: Path) -> None:
    """Lightning's LearningRateMonitor logs the LR on rows of its own, without
    an epoch: with step_key='epoch' those values are left out with a note (the
    file was refused: "'lr-SGD' is logged without a 'epoch' value")."""
    version_dir = _lightning_fit(tmp_path, per_step=False)
    h = read_log(version_dir / "metrics.csv", step_key="epoch")
    assert h.columns["step"] == "epoch" and h.steps.tolist() == [0, 1, 2]
    assert h.columns["loss"] == "train_loss"  # logged once an epoch
    (note,) = [n for n in h.notes if "have no 'epoch' value" in n]
    assert "value(s) of 'lr-SGD'" in note and h.lr.size == 0
    bad = tmp_path / "bad.csv"
    bad.write_text("step,loss\n0,1.0\n,2.0\n")
    with pytest.raises(LogFormatError, match="logged without a 'step' value"):
        read_log(bad)  # the training loss must have its steps


def test_a_batch_index_that_restarts_each_epoch(tmp_path: Path) -> None:
    """epoch,iter,loss as a plain loop writes it: 'iter' starts again at each
    epoch. The steps follow on, with one note (there were nine, each saying
    "another fit appended to the log")."""
    path = tmp_path / "log.csv"
    rows = [
        f"{e},{i},{2.4 * math.exp(-(20 * e + i) / 80)}"
        for e in range(10)
        for i in range(20)
    ]
    path.write_text("epoch,iter,loss\n" + "\n".join(rows) + "\n")
    h = read_log(path)
    assert h.steps.tolist() == list(range(200))
    assert len(h.notes) == 1 and "with each new 'epoch' (9 times)" in h.notes[0]
