"""`lrkit find` in a real subprocess: the demo, a user's factory, bad input."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.helpers import run_lrkit as lrkit


def test_demo_json(tmp_path: Path) -> None:
    p = lrkit("find", "--json", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["task"] == "lrkit.demo:make_task"
    s = record["suggestion"]
    assert isinstance(s, float) and math.isfinite(s) and s > 0
    assert record["low"] <= s <= record["high"]
    assert len(record["lrs"]) == len(record["losses"]) >= 10
    assert (tmp_path / "lr_find.png").stat().st_size > 1000
    saved = json.loads((tmp_path / "lr_find.json").read_text())
    assert saved["suggestion"] == s


def test_demo_confirm_steps(tmp_path: Path) -> None:
    """The demo's MLP with SGD has a sharp edge: low confidence, so the two
    short runs happen and their losses are in the record."""
    p = lrkit("find", "--json", "--confirm-steps", "20", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["settings"]["extra"]["confirm_steps"] == 20
    info = record["suggestion_info"]
    assert info["confidence"] < 0.5
    ev = info["evidence"]
    assert math.isfinite(ev["confirm_loss"]) and "confirm_loss_up" in ev
    assert record["suggestion"] in (
        pytest.approx(ev["lr_unconfirmed"]),
        pytest.approx(3 * ev["lr_unconfirmed"]),
    )
    assert any("confirmed by two short runs of 20 steps" in r for r in info["reasons"])
    # the summary counts the short runs apart from the test's steps and time
    p = lrkit("find", "--confirm-steps", "20", "--out", str(tmp_path))
    assert p.returncode == 0, p.stderr
    assert re.search(
        r"\d+ optimizer steps in [\d.]+ s, then 2 short runs of 20", p.stdout
    )


def test_demo_human_output(tmp_path: Path) -> None:
    p = lrkit("find", "--out", str(tmp_path), "--num-steps", "60")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "suggested LR" in out and "confidence" in out and "stopped" in out
    assert "S" in out and "┤" in out  # the terminal plot with the suggestion mark
    assert str(tmp_path / "lr_find.png") in out
    record = json.loads((tmp_path / "lr_find.json").read_text())
    low = record["suggestion_info"]["confidence"] < 0.5
    assert ("--confirm-steps" in out) == low  # the hint comes with low confidence


def test_user_factory(tmp_path: Path) -> None:
    (tmp_path / "mytask.py").write_text(
        textwrap.dedent(
            """
            import torch
            from torch.utils.data import DataLoader, TensorDataset

            def make_task():
                torch.manual_seed(0)
                x = torch.randn(256, 5)
                y = x @ torch.arange(5.0) + 0.1 * torch.randn(256)
                model = torch.nn.Linear(5, 1)
                opt = torch.optim.Adam(model.parameters(), lr=1e-3)
                loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=32)
                return model, opt, torch.nn.functional.mse_loss, loader
            """
        )
    )
    p = lrkit("find", "mytask:make_task", "--json", "--out", "res", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    assert record["task"] == "mytask:make_task"
    assert record["settings"]["extra"]["optimizer"] == "Adam"
    assert (tmp_path / "res" / "lr_find.json").exists()
    # the file's name where the module's is meant: read as the module
    p = lrkit("find", "mytask.py:make_task", "--num-steps", "30", cwd=tmp_path)
    assert p.returncode == 0, p.stderr


OWN_LOSS_TASKS = """
import os, signal
import torch
from torch.utils.data import DataLoader, Dataset

class Model(torch.nn.Module):  # Hugging Face style: the loss comes out of forward
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 2)

    def forward(self, x, labels=None):
        z = self.lin(x)
        return {"loss": torch.nn.functional.cross_entropy(z, labels), "logits": z}

class Rows(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(128, 8, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self):
        return 128

    def __getitem__(self, i):
        return {"x": self.x[i], "labels": self.y[i]}

def own_loss():
    torch.manual_seed(0)
    m = Model()
    return {"model": m, "optimizer": torch.optim.AdamW(m.parameters(), 1e-3),
            "train_loader": DataLoader(Rows(), batch_size=16, shuffle=True)}

def interrupted():  # Ctrl-C at the 30th batch
    task = own_loss()
    n = [0]
    def compute_loss(model, batch):
        n[0] += 1
        if n[0] == 30:
            os.kill(os.getpid(), signal.SIGINT)
        return model(**batch)["loss"]
    task["compute_loss"] = compute_loss
    return task
"""


def test_a_task_without_loss_fn_and_ctrl_c(tmp_path: Path) -> None:
    """A model that returns its own loss needs no loss_fn key; Ctrl-C says so
    and exits 130 (typer's own handling printed nothing)."""
    (tmp_path / "owntask.py").write_text(OWN_LOSS_TASKS)
    p = lrkit("find", "owntask:own_loss", "--json", "--out", "res", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["suggestion"] > 0
    p = lrkit("find", "owntask:interrupted", "--out", "res2", cwd=tmp_path)
    assert p.returncode == 130, p.stderr
    # the curve recorded before Ctrl-C is kept, and the one line says where
    res2 = tmp_path / "res2"
    assert p.stderr.count("\n") == 1 and p.stderr.startswith(
        "lrkit: interrupted; the curve so far (29 steps, LR 1e-07 to "
    )
    assert f"is saved in {Path('res2', 'lr_find.json')} and " in p.stderr
    saved = json.loads((res2 / "lr_find.json").read_text())
    assert saved["stop_reason"] == "interrupted" and len(saved["lrs"]) == 29
    assert (res2 / "lr_find.png").stat().st_size > 1000


KERAS_TASK = """
import keras
import numpy as np

def make_task(seed=0):
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(512, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1)) + 0.1 * rng.normal(size=(512, 1))).astype(
        "float32"
    )
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
         keras.layers.Dense(1)]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    return {"model": model, "x": x[:448], "y": y[:448], "batch_size": 32,
            "validation_data": (x[448:], y[448:])}
"""


def test_keras_factory(tmp_path: Path) -> None:
    pytest.importorskip("keras")
    (tmp_path / "ktask.py").write_text(KERAS_TASK)
    p = lrkit("find", "ktask:make_task", "--json", "--out", "res", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    extra = record["settings"]["extra"]
    assert extra["framework"] == "keras" and extra["optimizer"] == "Adam"
    assert extra["val_batches"] == 2 and record["val_losses"]
    assert 1e-7 < record["suggestion"] < 10
    assert (tmp_path / "res" / "lr_find.png").stat().st_size > 1000
    p = lrkit(
        "find", "ktask:make_task", "--no-val", "--json", "--out", "r2", cwd=tmp_path
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["settings"]["extra"]["val_batches"] == 0
    p = lrkit("find", "ktask:make_task", "--amp", "bf16", cwd=tmp_path)
    assert p.returncode == 2
    assert "--amp is for PyTorch tasks, not for a Keras task" in p.stderr
    p = lrkit("find", "ktask:make_task", "--confirm-steps", "5", cwd=tmp_path)
    assert p.returncode == 2 and "--confirm-steps is for PyTorch" in p.stderr
    (tmp_path / "kbad.py").write_text(
        "def extra():\n    return {'x': 1, 'model': None, 'epochs': 3}\n"
        "def nomodel():\n    return {'x': 1}\n"
        "from ktask import make_task\n"
        "def wrong_width():\n"
        "    task = make_task()\n"
        "    task['x'] = task['x'][:, :3]\n"
        "    task.pop('validation_data')\n"
        "    return task\n"
    )
    p = lrkit("find", "kbad:extra", cwd=tmp_path)
    assert p.returncode == 2 and "unknown keys ['epochs'] for a Keras task" in p.stderr
    # Keras's own error inside the test: a runtime failure (exit 1), on one
    # line without its terminal colour codes
    p = lrkit("find", "kbad:wrong_width", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert p.stderr.startswith("lrkit: error: the range test failed: ValueError:")
    assert "\x1b" not in p.stderr and p.stderr.count("\n") == 1
    p = lrkit("find", "kbad:nomodel", cwd=tmp_path)
    assert p.returncode == 2 and "a Keras task (key x) without model" in p.stderr


def test_sklearn_factory(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    (tmp_path / "stask.py").write_text(
        textwrap.dedent(
            """
            from sklearn.datasets import load_digits
            from sklearn.neural_network import MLPClassifier

            def make_task(seed=0):
                X, y = load_digits(return_X_y=True)
                clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=seed)
                return {"estimator": clf, "X": X[:1400] / 16, "y": y[:1400],
                        "validation_data": (X[1400:] / 16, y[1400:])}

            def no_y():
                return {"estimator": None, "X": 1}
            """
        )
    )
    p = lrkit("find", "stask:make_task", "--json", "--out", "res", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    record = json.loads(p.stdout)
    extra = record["settings"]["extra"]
    assert extra["framework"] == "sklearn" and extra["estimator"] == "MLPClassifier"
    assert extra["val_rows"] == 397 and record["val_losses"]
    assert 1e-7 < record["suggestion"] < 10
    p = lrkit("find", "stask:make_task", "--num-steps", "60", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "suggested LR" in p.stdout and "--confirm-steps" not in p.stdout
    p = lrkit("find", "stask:make_task", "--device", "cpu", cwd=tmp_path)
    assert p.returncode == 2 and "not for a scikit-learn task" in p.stderr
    p = lrkit("find", "stask:no_y", cwd=tmp_path)
    assert p.returncode == 2 and "a scikit-learn task (key estimator) without y" in (
        p.stderr
    )


def test_a_factory_that_fails_inside_or_takes_no_seed(tmp_path: Path) -> None:
    """A TypeError inside the factory's body is its own failure (exit 1, its
    type named); a factory that cannot take ``seed=`` is a usage error (2)."""
    (tmp_path / "tasks.py").write_text(
        "def broken():\n    return 1 + 'a'\n\ndef no_seed():\n    return None\n"
    )
    p = lrkit("find", "tasks:broken", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stderr.strip() == (
        "lrkit: error: the factory 'tasks:broken' raised TypeError: unsupported "
        "operand type(s) for +: 'int' and 'str'"
    )
    p = lrkit("find", "tasks:no_seed", "--seed", "3", cwd=tmp_path)
    assert p.returncode == 2
    assert "calling the factory 'tasks:no_seed' failed" in p.stderr
    assert "seed" in p.stderr and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no_such_module_xyz:make"], "cannot import module 'no_such_module_xyz'"),
        (["lrkit.demo"], "TARGET must be 'module.path:factory'"),
        (["lrkit.demo:no_such_factory"], "has no attribute 'no_such_factory'"),
        (["--start-lr", "0"], "--start-lr must be > 0, got --start-lr=0.0"),
        (["--end-lr", "1e-9"], "--end-lr must be > --start-lr"),
        (["--mode", "log"], "--mode must be one of 'exp', 'linear', got --mode='log'"),
        (["--rule", "magic"], "--rule must be one of"),
        (["--confirm-steps", "-1"], "--confirm-steps must be"),
        (["--amp", "fp8"], "--amp must be 'bf16' or 'fp16', got --amp='fp8'"),
        (["--device", "cpux"], "--device must be a torch device"),
        (["--device", "meta"], "got --device='meta'. the meta device holds no data"),
    ],
)
def test_bad_input_one_line_exit_2(
    args: list[str], message: str, tmp_path: Path
) -> None:
    p = lrkit("find", *args, "--out", str(tmp_path))
    assert p.returncode == 2, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert lines[0].startswith("lrkit: error: ")
    assert message in lines[0]
    assert not (tmp_path / "lr_find.json").exists()


def test_help_lists_commands() -> None:
    p = lrkit("--help")
    assert p.returncode == 0
    assert "find" in p.stdout
    p = lrkit("find", "--help")
    assert p.returncode == 0 and "module.path:factory" in p.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["find", "--bogus"], "No such option: --bogus"),
        (["find", "--num-steps", "abc"], "Invalid value for '--num-steps'"),
        (["diagnose"], "Missing argument 'file'. (see 'lrkit diagnose --help')"),
        (["nosuch"], "No such command 'nosuch'. (see 'lrkit --help')"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args: list[str], message: str) -> None:
    p = lrkit(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith("lrkit: error: ") and message in p.stderr


def test_no_arguments_prints_the_help() -> None:
    p = lrkit()
    assert p.returncode == 0 and "find" in p.stdout and "diagnose" in p.stdout


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "lr_find.json").mkdir()  # a directory where the record goes
    p = lrkit("find", "--num-steps", "50", "--out", str(tmp_path))
    assert p.returncode == 1
    assert p.stderr.strip().count("\n") == 0
    assert "lrkit: error: cannot write" in p.stderr and "lr_find.json" in p.stderr


def test_installed_console_script(tmp_path: Path) -> None:
    exe = shutil.which("lrkit", path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("the lrkit console script is not installed beside this Python")
    p = subprocess.run(
        [exe, "find", "--json", "--num-steps", "50", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["steps_done"] > 0


def test_on_a_terminal_a_progress_bar_then_the_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.helpers import run_lrkit_tty

    monkeypatch.delenv("CI", raising=False)  # a person at a terminal
    code, out = run_lrkit_tty("find", "--out", str(tmp_path))
    assert code == 0, out
    assert "━" in out and "suggested LR" in out  # the bar, then the panel
    assert (tmp_path / "lr_find.json").exists()
    # in a log (no terminal) there is no bar
    assert "range test" not in lrkit("find", "--out", str(tmp_path)).stderr


PRINTING_TASKS = """
import os
import sys

import torch
from torch.utils.data import DataLoader, TensorDataset

print("importing the task module")  # at import time


def make_task():
    print("loading data ...")  # in the factory
    torch.manual_seed(0)
    x = torch.randn(128, 4)
    y = x.sum(1, keepdim=True)
    model = torch.nn.Linear(4, 1)
    calls = []

    def loss_fn(out, target):  # while the test runs: Python and C-level writes
        calls.append(1)
        if len(calls) % 10 == 1:
            print(f"batch {len(calls)}")
            sys.stdout.flush()
            os.write(1, b"raw write to fd 1\\n")
        return torch.nn.functional.mse_loss(out, target)

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    return model, opt, loss_fn, DataLoader(TensorDataset(x, y), batch_size=16)


def fails_late():  # a runtime failure after 20 recorded steps
    model, opt, loss_fn, loader = make_task()
    n = [0]

    def failing(out, target):
        n[0] += 1
        if n[0] > 20:
            raise RuntimeError("CUDA out of memory (simulated)")
        return loss_fn(out, target)

    return model, opt, failing, loader
"""


def test_json_stdout_is_the_record_alone_when_the_task_prints(tmp_path: Path) -> None:
    """What the module prints at import, the factory and the training print
    (Lightning, Keras and HF do) goes to stderr with --json: stdout parses."""
    (tmp_path / "printing.py").write_text(PRINTING_TASKS)
    p = lrkit("find", "printing:make_task", "--json", "--num-steps", "40", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["task"] == "printing:make_task"
    for printed in ("importing the task module", "loading data", "batch 11", "raw"):
        assert printed in p.stderr and printed not in p.stdout
    # without --json the summary is on stdout, and so are the task's prints
    p = lrkit("find", "printing:make_task", "--num-steps", "40", cwd=tmp_path)
    assert p.returncode == 0 and "loading data" in p.stdout, p.stderr


def test_a_failure_during_the_test_keeps_the_curve(tmp_path: Path) -> None:
    """A runtime failure (an OOM at step 21) saves the curve recorded so far
    and says so in its one line; the exit code stays 1, stdout empty."""
    (tmp_path / "printing.py").write_text(PRINTING_TASKS)
    p = lrkit("find", "printing:fails_late", "--json", "-o", "res", cwd=tmp_path)
    assert p.returncode == 1 and p.stdout == "", p.stderr
    line = p.stderr.splitlines()[-1]
    assert line.startswith(
        "lrkit: error: the range test failed: RuntimeError: CUDA out of memory "
        "(simulated); the curve so far (20 steps, LR 1e-07 to "
    )
    assert line.endswith(
        f"is saved in {Path('res', 'lr_find.json')} and {Path('res', 'lr_find.png')}."
    )
    saved = json.loads((tmp_path / "res" / "lr_find.json").read_text())
    assert len(saved["lrs"]) == 20 and saved["stop_reason"] == "interrupted"
    assert (tmp_path / "res" / "lr_find.png").stat().st_size > 1000


def test_no_progress_bar_in_a_log_file_even_with_force_color(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORCE_COLOR (common in CI) makes rich take a log file for a terminal:
    the bar is drawn only when stderr really is one, and not under CI."""
    from tests.helpers import _env, run_lrkit_tty

    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("CI", raising=False)
    log = tmp_path / "log.txt"
    with log.open("w") as err:
        p = subprocess.run(
            [sys.executable, "-m", "lrkit", "find", "--num-steps", "50"],
            stdout=subprocess.PIPE,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
            env=_env(),
            timeout=300,
            text=True,
        )
    assert p.returncode == 0, log.read_text()
    assert log.read_text() == ""  # no bar frames, no escape codes
    monkeypatch.setenv("CI", "true")  # a CI job's console is a terminal here
    code, out = run_lrkit_tty("find", "--num-steps", "50", "--out", str(tmp_path))
    assert code == 0 and "suggested LR" in out, out
    assert "━" not in out  # the bar


def test_errors_inside_the_users_module_are_its_failure(tmp_path: Path) -> None:
    """A module that does not exist is a usage error (2); one that exists and
    fails to import (a syntax error, a missing dependency) failed itself (1).
    A factory's wrong return type says what it was."""
    (tmp_path / "syntax_bad.py").write_text("def make(:\n    pass\n")
    (tmp_path / "needs_dep.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "three.py").write_text("def make():\n    return 1, 2, 3\n")
    p = lrkit("find", "syntax_bad:make", cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.count("\n") == 1, p.stderr
    assert p.stderr.startswith(
        "lrkit: error: importing module 'syntax_bad' of TARGET='syntax_bad:make' "
        "failed: SyntaxError:"
    )
    assert "line 1" in p.stderr
    p = lrkit("find", "needs_dep:make", cwd=tmp_path)
    assert p.returncode == 1
    assert "failed: ModuleNotFoundError: No module named 'no_such_dependency_xyz'" in (
        p.stderr
    )
    p = lrkit("find", "no_such_module_xyz.sub:make", cwd=tmp_path)
    assert p.returncode == 2 and "cannot import module" in p.stderr
    p = lrkit("find", "three:make", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.rstrip().endswith("got a tuple of 3 items.")


# --- the range-test figure (lrkit.plot.range_test_figure, which find writes)


def _synthetic(mode: str = "exp", **kw: object) -> object:
    """A range test on a made-up loss: flat, a valley near LR 0.1, then up."""
    import lrkit

    def step(lr: float) -> float:
        return 2.0 - 1.5 * math.exp(-((math.log10(lr) + 1) ** 2)) + 3 * lr**2

    return lrkit.range_test(step, mode=mode, **kw)  # type: ignore[arg-type]


def test_the_figure_has_a_linear_lr_axis_for_a_linear_ladder(tmp_path: Path) -> None:
    from lrkit.plot import range_test_figure

    linear = _synthetic("linear", start_lr=1e-3, end_lr=2.0, num_steps=60)
    ax = range_test_figure(linear).axes[0]  # type: ignore[arg-type]
    assert ax.get_xscale() == "linear"
    assert ax.get_xlim()[0] < 0.05  # the ladder's start in view, not squeezed
    ax = range_test_figure(_synthetic()).axes[0]  # type: ignore[arg-type]
    assert ax.get_xscale() == "log"
    # and through the command: the PNG of a linear ladder (a figure for both)
    p = lrkit(
        "find",
        "--mode",
        "linear",
        "--end-lr",
        "2",
        "--num-steps",
        "40",
        "-o",
        "o",
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "o" / "lr_find.png").stat().st_size > 1000


def test_the_figure_keeps_the_validation_minimum_in_view() -> None:
    """The validation loss, which a suggestion may rest on, dips below the
    smoothed training curve: the y axis reaches down to it."""
    from lrkit.plot import range_test_figure

    def val() -> float:
        return 0.05  # far below the training losses (>= 0.5)

    result = _synthetic(val_fn=val, val_every=5)
    low, _ = range_test_figure(result).axes[0].get_ylim()  # type: ignore[arg-type]
    assert low < 0.05


def test_the_figure_says_why_there_is_no_suggestion() -> None:
    import lrkit
    from lrkit.plot import range_test_figure

    def texts(result: object) -> str:
        fig = range_test_figure(result)  # type: ignore[arg-type]
        return " ".join(t.get_text() for t in fig.axes[0].texts).replace("\n", " ")

    never = lrkit.range_test(lambda lr: math.nan, num_steps=30)
    assert never.suggestion is None
    assert "No suggestion: the loss was NaN/inf from the first step" in texts(never)
    # NaN from the third step: two finite losses, no curve to draw
    at_once = lrkit.range_test(lambda lr: 1.0 if lr < 1.1e-7 else math.nan)
    assert at_once.suggestion is None and at_once.reasons
    said = texts(at_once)
    assert said.startswith("No suggestion: ") and at_once.reasons[0][:30] in said
    # a ladder of under a decade (1e-7 to 1.2e-7): a few plain tick labels, not
    # the log axis's crowded minor ones
    fig = range_test_figure(at_once)  # type: ignore[arg-type]
    fig.draw_without_rendering()
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    shown = [
        t.get_text()
        for minor in (False, True)
        for t in ax.get_xticklabels(minor=minor)
        if t.get_text() and low <= t.get_position()[0] <= high
    ]
    assert 2 <= len(shown) <= 6 and "1.1e-07" in shown, shown
    assert not texts(_synthetic())  # with a suggestion: nothing written over it
