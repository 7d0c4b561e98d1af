"""`lrkit diagnose FILE` in a real subprocess: verdicts, JSON, figure, bad files."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from tests.helpers import run_lrkit as lrkit


def write_csv(path: Path, losses: np.ndarray, val_every: int = 25) -> Path:
    lines = ["step,loss,val_loss,lr,grad_norm"]
    for t, v in enumerate(losses):
        val = f"{v + 0.1:.6g}" if t % val_every == val_every - 1 else ""
        lines.append(f"{t},{v:.6g},{val},0.003,{1.0 + 0.01 * (t % 7):.4g}")
    path.write_text("\n".join(lines) + "\n")
    return path


def curve(n: int = 600, seed: int = 0) -> np.ndarray:
    t = np.arange(n)
    noise = 0.03 * np.random.default_rng(seed).standard_normal(n)
    return 2.0 * np.exp(-t / 80) + 0.3 + noise


def test_healthy_json(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "run.csv", curve())
    p = lrkit("diagnose", str(path), "--json")
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["verdict"] == "healthy"
    assert record["columns"] == {
        "loss": "loss",
        "step": "step",
        "val_loss": "val_loss",
        "lr": "lr",
        "grad_norm": "grad_norm",
    }
    assert all(f["severity"] == "info" for f in record["findings"])
    assert record["figure"] is None and not list(tmp_path.glob("*.png"))


def test_diverged_json_and_figure(tmp_path: Path) -> None:
    y = curve(seed=1)
    y[400:] += np.exp(np.arange(200) / 10)  # blows up from step 400
    y[590:] = math.nan
    path = write_csv(tmp_path / "run.csv", y)
    p = lrkit("diagnose", str(path), "--json", "--out", str(tmp_path / "fig"))
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["verdict"] == "diverged"
    kinds = [f["kind"] for f in record["findings"]]
    assert "diverged" in kinds and "nan" in kinds
    for f in record["findings"]:
        assert {"kind", "first_step", "last_step", "severity", "advice"} <= set(f)
        assert isinstance(f["first_step"], int) and f["first_step"] <= f["last_step"]
    div = next(f for f in record["findings"] if f["kind"] == "diverged")
    assert 400 <= div["first_step"] <= 440 and div["severity"] == "critical"
    assert "0.003 -> 0.0009" in div["advice"]  # 0.3x the logged LR
    assert (tmp_path / "fig" / "diagnose.png").stat().st_size > 5000
    assert record["figure"] == str(tmp_path / "fig" / "diagnose.png")


def test_a_log_still_being_written_reads_with_a_note(tmp_path: Path) -> None:
    """The last line of a live (or killed) run's log is cut short: the verdict
    comes from the complete lines, and the output says what was skipped."""
    path = write_csv(tmp_path / "live.csv", curve())
    path.write_text(path.read_text() + "600,0.3")  # a row half written
    p = lrkit("diagnose", str(path), "--json")
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["verdict"] == "healthy"
    assert record["notes"] == [
        "line 602, the last, is cut short (a run still writing, or stopped "
        "mid-line): skipped"
    ]
    p = lrkit("diagnose", str(path))
    assert p.returncode == 0, p.stderr
    assert "read 600 steps" in p.stdout and "note: line 602, the last" in p.stdout


def test_human_output(tmp_path: Path) -> None:
    t = np.arange(600)
    y = 2.3 - 3e-4 * t + 0.02 * np.random.default_rng(2).standard_normal(600)
    path = write_csv(tmp_path / "slow.csv", y)
    p = lrkit("diagnose", str(path), "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("lr too low")
    assert "too_slow" in p.stdout and "warning" in p.stdout
    assert "Try" in p.stdout and "0.003 ->" in p.stdout
    assert str(tmp_path / "diagnose.png") in p.stdout


def test_the_verdicts_advice_is_printed_with_the_findings(tmp_path: Path) -> None:
    """The verdict's advice (the run as a whole) comes first, then each kind's;
    the same text as --json's "advice"."""
    y = curve(400, seed=3)
    y[300:] = np.linspace(y[299], 40.0, 100)  # it blows up late in the run
    path = write_csv(tmp_path / "late.csv", y)
    p = lrkit("diagnose", str(path))
    q = lrkit("diagnose", str(path), "--json")
    assert p.returncode == 0 and q.returncode == 0, p.stderr + q.stderr
    rec = json.loads(q.stdout)
    assert rec["findings"]
    flat = " ".join(p.stdout.split())
    assert "advice: " + " ".join(rec["advice"].split()) in flat
    # each kind's own advice follows, unless it is the verdict's, said above
    for f in rec["findings"]:
        advice = " ".join(f["advice"].split())
        assert flat.count(advice) == 1, (advice, flat)
        assert (f["kind"] + ": " + advice in flat) == (advice != rec["advice"])


def test_a_finding_advises_from_the_lr_it_was_raised_at(tmp_path: Path) -> None:
    """A schedule decays the LR after the blow-up: the advice scales the LR of
    the moment the loss blew up, not the last one logged."""
    t = np.arange(400)
    y = curve(400, seed=4)
    y[170:] = y[169] + np.linspace(0.0, 50.0, 230)
    lr = 0.1 * 0.5 * (1 + np.cos(np.pi * t / 400))  # cosine to ~0
    lines = ["step,loss,lr"] + [
        f"{i},{v:.6g},{r:.6g}" for i, v, r in zip(t, y, lr, strict=True)
    ]
    path = tmp_path / "decay.csv"
    path.write_text("\n".join(lines) + "\n")
    rec = json.loads(lrkit("diagnose", str(path), "--json").stdout)
    div = [f for f in rec["findings"] if f["kind"] == "diverged"]
    assert div, rec
    at = 0.1 * 0.5 * (1 + math.cos(math.pi * div[0]["first_step"] / 400))
    lr_in_advice = float(re.search(r"\(([0-9.e+-]+) ->", div[0]["advice"])[1])
    assert lr_in_advice == pytest.approx(at, rel=0.15)  # not the final ~1e-6


def test_a_warning_withdrawn_at_the_end_is_shown(tmp_path: Path) -> None:
    """A long run still straight after its first hundreds of steps warns live;
    converged within its length, the verdict is healthy, and the output says
    what a live monitor showed and why it was taken back."""
    t = np.arange(5000)
    noise = 0.05 * np.random.default_rng(3).standard_normal(5000)
    path = write_csv(tmp_path / "long.csv", 2.0 * np.exp(-t / 1000) + 0.3 + noise)
    p = lrkit("diagnose", str(path))
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("healthy")
    text = " ".join(p.stdout.split())
    assert "withdrawn once the run was over: too_slow (steps" in text
    p = lrkit("diagnose", str(path), "--json")
    record = json.loads(p.stdout)
    assert record["verdict"] == "healthy"
    assert [w["kind"] for w in record["withdrawn"]] == ["too_slow"]
    assert all(f["kind"] != "too_slow" for f in record["findings"])


def test_tensorboard_directory(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(tmp_path / "tb"))
    for t, v in enumerate(curve(300)):
        w.add_scalar("Loss/train", float(v), t)
    w.add_scalar("Loss/train", float("nan"), 300)
    w.close()
    p = lrkit("diagnose", str(tmp_path / "tb"), "--json")
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["columns"]["loss"] == "Loss/train"
    assert record["verdict"] == "diverged"
    assert record["findings"][0]["kind"] == "nan"
    assert record["findings"][0]["first_step"] == 300


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("", ":1:"),
        ("step,loss\n0,1.0\n1,abc\n", ":3:"),
        ("step,loss\n0,1.0\n1,1.0,2\n", ":3:"),
        ("step,loss\n0,1.0\n1e30,2.0\n", ":3:"),  # a step beyond int64
    ],
)
def test_malformed_file_one_line_exit_2(tmp_path: Path, text: str, where: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    p = lrkit("diagnose", str(path), "--json")
    assert p.returncode == 2
    assert p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith(f"lrkit: error: {path}{where}")
    assert "Traceback" not in p.stderr


def test_bad_key_and_missing_file(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "run.csv", curve(50))
    p = lrkit("diagnose", str(path), "--loss-key", "nope")
    assert p.returncode == 2
    assert p.stderr.startswith("lrkit: error: --loss-key must be a column of")
    assert "'loss'" in p.stderr and "Traceback" not in p.stderr
    p = lrkit("diagnose", str(tmp_path / "missing.csv"))
    assert p.returncode == 2 and "no such file or directory" in p.stderr


def test_help() -> None:
    p = lrkit("diagnose", "--help")
    assert p.returncode == 0
    for option in ("--loss-key", "--val-key", "--lr-key", "--grad-norm-key"):
        assert option in p.stdout
    assert "--step-key" in p.stdout and "--json" in p.stdout and "--out" in p.stdout


def test_overflowed_losses_still_draw(tmp_path: Path) -> None:
    """Losses near the float range (an overflow logged as a number) do not
    break the figure."""
    path = write_csv(tmp_path / "huge.csv", np.array([1e308, -1e308] * 6))
    p = lrkit("diagnose", str(path), "--out", str(tmp_path / "fig"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "fig" / "diagnose.png").stat().st_size > 1000


def test_resumed_log(tmp_path: Path) -> None:
    """A log that starts on its plateau (a resumed run): --resumed turns off
    the 'nothing learned since the start' judgement."""
    y = 0.45 * np.exp(0.3 * np.random.default_rng(1).standard_normal(600))
    path = tmp_path / "resumed.csv"
    path.write_text(
        "step,loss\n" + "".join(f"{5000 + i},{v}\n" for i, v in enumerate(y))
    )
    plain = json.loads(lrkit("diagnose", str(path), "--json").stdout)
    resumed = json.loads(lrkit("diagnose", str(path), "--json", "--resumed").stdout)
    assert plain["verdict"] == "lr too low"
    assert resumed["verdict"] == "healthy" and resumed["config"]["resumed"] is True


def test_exit_code_gates_a_ci_job(tmp_path: Path) -> None:
    healthy = write_csv(tmp_path / "ok.csv", curve())
    y = curve(seed=1)
    y[400:] += np.exp(np.arange(200) / 10)
    broken = write_csv(tmp_path / "bad.csv", y)
    assert lrkit("diagnose", str(healthy), "--exit-code").returncode == 0
    p = lrkit("diagnose", str(broken), "--exit-code", "--json")
    # 3: not 1 (could not run) or 2 (bad input)
    assert p.returncode == 3 and json.loads(p.stdout)["verdict"] == "diverged"
    assert lrkit("diagnose", str(broken)).returncode == 0  # only when asked


def test_set_changes_a_threshold_and_bad_settings_are_one_line(tmp_path: Path) -> None:
    """Heavy-tailed batch losses read as spike trains; --set spike_z=10 quiets
    them, and the record says which thresholds were used."""
    n = 6000
    t = np.arange(n)
    rng = np.random.default_rng(2)
    y = (3 * (1 + t / 100) ** -0.5 + 2) * np.exp(0.1 * rng.standard_t(3, n))
    path = tmp_path / "heavy.csv"
    path.write_text("step,loss\n" + "".join(f"{i},{v:.6g}\n" for i, v in enumerate(y)))
    plain = json.loads(lrkit("diagnose", str(path), "--json").stdout)
    quiet = json.loads(
        lrkit("diagnose", str(path), "--json", "--set", "spike_z=10").stdout
    )
    assert plain["verdict"] == "lr too high"
    assert quiet["verdict"] == "healthy" and quiet["config"]["spike_z"] == 10.0
    for bad, message in (
        ("bogus=1", "--set must be NAME=VALUE with NAME one of"),
        ("spike_z", "--set must be NAME=VALUE"),
        ("spike_z=0", "--set: spike_z must be > 0"),
        ("osc_spikes=2.5", "--set osc_spikes must be a whole number"),
    ):
        p = lrkit("diagnose", str(path), "--set", bad)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert p.stderr.startswith("lrkit: error: ") and message in p.stderr


def test_on_a_terminal_a_spinner_then_the_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import run_lrkit_tty

    monkeypatch.delenv("CI", raising=False)  # a person at a terminal
    path = write_csv(tmp_path / "ok.csv", curve())
    code, out = run_lrkit_tty("diagnose", str(path))
    assert code == 0 and "healthy" in out
    assert "reading " in out and "diagnosing 600 logged losses" in out  # the spinner
    assert "diagnosing" not in lrkit("diagnose", str(path)).stderr  # none in a log
    code, out = run_lrkit_tty("diagnose", str(tmp_path / "missing.csv"))
    assert code == 2 and "lrkit: error: " in out and "no such file" in out


def test_baseline_loss(tmp_path: Path) -> None:
    """--baseline-loss: a log that sits flat above chance is a broken run."""
    rng = np.random.default_rng(1)
    path = tmp_path / "run.csv"
    rows = [f"{5 * t},{2.55 + 0.01 * rng.standard_normal()}" for t in range(60)]
    path.write_text("step,loss\n" + "\n".join(rows) + "\n")
    plain = json.loads(lrkit("diagnose", str(path), "--json").stdout)
    assert plain["verdict"] == "lr too low"
    p = lrkit("diagnose", str(path), "--json", "--baseline-loss", "2.303")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["verdict"] == "lr too high"
    for bad in ("inf", "nan"):  # the option named as typed, not as a --set
        p = lrkit("diagnose", str(path), "--baseline-loss", bad)
        assert p.returncode == 2 and p.stderr == (
            "lrkit: error: --baseline-loss must be finite, "
            f"got --baseline-loss={bad}.\n"
        )


def test_classes_is_the_baseline_of_cross_entropy(tmp_path: Path) -> None:
    """--classes 10 is --baseline-loss ln 10; with both, or fewer than 2
    classes, a one-line error naming the options."""
    rng = np.random.default_rng(1)
    path = tmp_path / "run.csv"
    rows = [f"{5 * t},{2.55 + 0.01 * rng.standard_normal()}" for t in range(60)]
    path.write_text("step,loss\n" + "\n".join(rows) + "\n")
    p = lrkit("diagnose", str(path), "--json", "--classes", "10")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["verdict"] == "lr too high"
    # 20 classes: chance is ln 20 = 3.0, the run sits below it and learned
    p = lrkit("diagnose", str(path), "--json", "--classes", "20")
    assert json.loads(p.stdout)["verdict"] == "lr too low"
    p = lrkit("diagnose", str(path), "--classes", "10", "--baseline-loss", "2.3")
    assert p.returncode == 2 and p.stderr == (
        "lrkit: error: --baseline-loss must be left out when --classes is given, "
        "got --baseline-loss=2.3. --classes 10 means --baseline-loss 2.303; give "
        "one of them.\n"
    )
    for extra in ((), ("--baseline-loss", "2")):  # --classes judged first
        p = lrkit("diagnose", str(path), "--classes", "1", *extra)
        assert p.returncode == 2
        assert p.stderr == (
            "lrkit: error: --classes must be an int >= 2, got --classes=1.\n"
        )


def test_no_spinner_in_a_log_file_even_with_force_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORCE_COLOR (common in CI) makes rich take a log file for a terminal:
    the spinner shows only when stderr really is one, and not under CI."""
    import subprocess
    import sys

    from tests.helpers import _env, run_lrkit_tty

    path = write_csv(tmp_path / "ok.csv", curve())
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("CI", raising=False)
    log = tmp_path / "log.txt"
    with log.open("w") as err:
        code = subprocess.run(
            [sys.executable, "-m", "lrkit", "diagnose", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=_env(),
            timeout=300,
        ).returncode
    assert code == 0 and log.read_text() == ""
    monkeypatch.setenv("CI", "true")
    code, out = run_lrkit_tty("diagnose", str(path))
    assert code == 0 and "healthy" in out, out
    assert "diagnosing" not in out and "reading " not in out


def test_a_closed_stdout_keeps_the_exit_code(tmp_path: Path) -> None:
    """`lrkit diagnose log | head -1`: the reader leaves; no error, and the
    verdict's exit code (--exit-code) stays."""
    import os
    import subprocess
    import sys

    from tests.helpers import _env

    y = curve(seed=1)
    y[400:] += np.exp(np.arange(200) / 10)  # diverged: exit 3 with --exit-code
    path = write_csv(tmp_path / "bad.csv", y)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first line
    try:
        for args, expected in (
            ([], 0),
            (["--exit-code"], 3),
            (["--json", "--exit-code"], 3),
        ):
            p = subprocess.run(
                [sys.executable, "-m", "lrkit", "diagnose", str(path), *args],
                stdout=write,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
                env=_env(),
                timeout=300,
                text=True,
            )
            assert (p.returncode, p.stderr) == (expected, ""), args
    finally:
        os.close(write)


def test_a_directory_names_the_log_it_read(tmp_path: Path) -> None:
    """A Hugging Face output directory: the latest checkpoint's
    trainer_state.json is read, and the text says which."""
    for step in (10, 20):
        history = [{"step": t, "loss": 2.0 / (1 + t / 10)} for t in range(1, step + 1)]
        folder = tmp_path / "out" / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / "trainer_state.json").write_text(
            json.dumps({"log_history": history, "global_step": step})
        )
    p = lrkit("diagnose", str(tmp_path / "out"))
    assert p.returncode == 0, p.stderr
    picked = tmp_path / "out" / "checkpoint-20" / "trainer_state.json"
    # (rich wraps a long path where it must: compared without whitespace)
    assert f"read20stepsfrom{picked}" in "".join(p.stdout.split())


# --- the figure (lrkit.plot.diagnosis_figure, which --out writes)


def _figure(path: Path) -> object:
    import lrkit
    from lrkit.plot import diagnosis_figure

    return diagnosis_figure(lrkit.read_log(path))


def test_the_figure_legend_is_clear_of_the_data_and_names_the_lr(
    tmp_path: Path,
) -> None:
    y = curve(seed=2)
    y[450:] = math.nan  # NaN marks along the top, where the legend used to be
    fig = _figure(write_csv(tmp_path / "nan.csv", y))
    ax = fig.axes[0]  # type: ignore[attr-defined]
    legend = ax.get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    assert "learning rate (right axis)" in labels and "NaN / inf / overflow" in labels
    fig.draw_without_rendering()  # type: ignore[attr-defined]
    box, axes_box = legend.get_window_extent(), ax.get_window_extent()
    assert box.y1 <= axes_box.y0  # below the axes
    assert ax.get_xlabel() == "step"


def test_the_figure_of_an_all_nan_log_says_so(tmp_path: Path) -> None:
    path = tmp_path / "nan.csv"
    path.write_text("step,loss\n" + "".join(f"{t},nan\n" for t in range(50)))
    ax = _figure(path).axes[0]  # type: ignore[attr-defined]
    said = " ".join(t.get_text() for t in ax.texts)
    assert "no finite loss to draw: all 50 logged losses are NaN" in said


def test_the_figure_names_the_step_column_and_tells_overlaps_apart(
    tmp_path: Path,
) -> None:
    """A log per epoch: the x axis says epoch; overlapping findings (overfitting
    and a plateau) get edge lines and hatchings of their own."""
    ep = np.arange(30)
    lines = ["epoch,train_loss,val_loss"] + [
        f"{e},{2 * math.exp(-e / 5) + 0.1},"
        f"{2 * math.exp(-e / 5) + 0.3 + max(0, e - 10) * 0.05}"
        for e in ep
    ]
    path = tmp_path / "epochs.csv"
    path.write_text("\n".join(lines) + "\n")
    ax = _figure(path).axes[0]  # type: ignore[attr-defined]
    assert ax.get_xlabel() == "epoch"
    hatches = {p.get_hatch() for p in ax.patches if p.get_hatch()}
    kinds = [t.get_text().strip() for t in ax.texts]
    assert len(kinds) >= 2 and len(hatches) >= len(kinds) - 1, (kinds, hatches)


def test_the_running_median_has_no_edge_bias_and_scales_with_the_log() -> None:
    from lrkit.plot import centred_median, median_half_window

    falling = np.linspace(10.0, 0.0, 101)  # a straight fall: its own median
    at, med = centred_median(falling, 4)
    assert np.array_equal(at, np.arange(101)) and np.allclose(med, falling)
    # a 9-point median on a short log; about 1/200 of a million-step one
    assert median_half_window(20) == 0 and median_half_window(600) == 4
    assert median_half_window(1_000_000) == 2500
    noisy = np.random.default_rng(0).standard_normal(1_000_000)
    at, med = centred_median(noisy, median_half_window(len(noisy)))
    assert 3000 < len(at) <= 4000  # evaluated at a sample of the indices
    assert float(np.abs(med[20:-20]).max()) < 0.1  # windows of 5 001: smooth
