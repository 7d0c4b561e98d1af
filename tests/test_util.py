"""Tests of the shared helpers in ``lrkit._util``: the progress bars of the range
test and the sweep, seen on a real pseudo-terminal and through a pipe."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.helpers import _env, run_python_tty

from lrkit._util import check_progress, progress_hook
from lrkit.rangetest import range_test
from lrkit.sweep import sweep

# a range test of 60 steps and a sweep of 3 runs, each step slow enough for the
# bar to be drawn (rich redraws 10 times a second)
SCRIPT = textwrap.dedent(
    """
    import sys, time
    from lrkit.rangetest import range_test
    from lrkit.sweep import sweep

    def step(lr):
        time.sleep(0.01)
        return 1.0 / (1.0 + lr)

    what, progress = sys.argv[1], {"on": True, "off": False, "none": None}[sys.argv[2]]
    if what == "find":
        r = range_test(step, start_lr=1e-4, end_lr=1.0, num_steps=60,
                       progress=progress, suggest=False)
        print("steps", len(r.lrs))
    elif what == "sweep-of-finds":  # a range test inside a sweep's training function
        def train(lr):
            r = range_test(step, start_lr=1e-4, end_lr=1.0, num_steps=30,
                           suggest=False)
            return abs(lr - 0.1) + len(r.lrs) * 0.0
        print("best", sweep(train, lrs=[0.01, 0.1, 1.0], extend=0,
                            progress=progress).best_lr)
    elif what == "inside-rich":  # the user's own rich display is on screen
        from rich.progress import Progress
        with Progress() as mine:
            mine.add_task("mine", total=1)
            time.sleep(0.2)
            r = range_test(step, start_lr=1e-4, end_lr=1.0, num_steps=30,
                           progress=progress, suggest=False)
        print("steps", len(r.lrs))
    """
)


@pytest.fixture
def script(tmp_path):  # type: ignore[no-untyped-def]
    path = tmp_path / "bars.py"
    path.write_text(SCRIPT)
    return str(path)


def test_range_test_shows_a_bar_on_a_terminal(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)  # a person at a terminal
    code, out = run_python_tty(script, "find", "on")
    assert code == 0, out
    assert "range test" in out and "/60" in out and "lr " in out
    assert "steps 60" in out


@pytest.mark.parametrize("off", ["off", "none"])
def test_no_bar_when_turned_off(script: str, off: str) -> None:
    code, out = run_python_tty(script, "find", off)
    assert code == 0, out
    assert "range test" not in out and "steps 60" in out


def test_no_bar_when_stderr_is_a_pipe_or_file(script: str) -> None:
    p = subprocess.run(
        [sys.executable, script, "find", "on"],
        capture_output=True,
        text=True,
        env=_env(),
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stderr == "" and p.stdout.strip() == "steps 60"


@pytest.mark.parametrize("where", ["file", "ci"])
def test_no_bar_in_a_log_file_with_force_color_nor_under_ci(
    script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    """FORCE_COLOR (set by many CI systems) makes rich claim a terminal: the
    bar's frames went into the log file. A CI job's console that is a
    terminal gets none either (CI=true)."""
    if where == "file":
        env = {**_env(), "FORCE_COLOR": "1"}
        env.pop("CI", None)
        log = tmp_path / "err.log"
        with open(log, "w") as err:
            p = subprocess.run(
                [sys.executable, script, "find", "on"],
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
                timeout=120,
            )
        assert p.returncode == 0 and p.stdout.strip() == "steps 60"
        assert log.read_text() == ""
    else:
        monkeypatch.setenv("CI", "true")
        code, out = run_python_tty(script, "find", "on")
        assert code == 0, out
        assert "range test" not in out and "steps 60" in out


def test_a_range_test_inside_a_sweep_adds_no_second_bar(
    script: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    code, out = run_python_tty(script, "sweep-of-finds", "on")
    assert code == 0, out  # rich refuses two live displays at once: no LiveError
    assert "sweep" in out and "/3" in out and "best lr" in out
    assert "range test" not in out
    assert "best 0.1" in out


def test_no_error_inside_the_users_own_rich_display(script: str) -> None:
    # rich versions that refuse a second live display raise LiveError: the test
    # then runs without its bar; newer ones show both
    code, out = run_python_tty(script, "inside-rich", "on")
    assert code == 0, out
    assert "mine" in out and "steps 30" in out and "Error" not in out


def test_a_function_gets_every_report_and_no_bar() -> None:
    seen: list[int] = []
    with progress_hook(seen.append, "x", lambda r: (r, 10, "")) as hook:
        assert hook is not None
        hook(3)
    assert seen == [3]


@pytest.mark.parametrize("bad", [1, "yes", 0.5, [print]])
def test_bad_progress_is_refused_by_name(bad: object) -> None:
    with pytest.raises(TypeError, match=r"progress must be callable.*True for a"):
        check_progress(bad)
    with pytest.raises(TypeError, match="progress"):
        range_test(lambda lr: 1.0, num_steps=20, progress=bad)
    with pytest.raises(TypeError, match="progress"):
        sweep(lambda lr: 1.0, lrs=[0.1], progress=bad)


def test_results_save_and_plot_into_new_directories(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A result saved or plotted to a path in directories that do not exist
    yet makes them; a parent that is a file is a clear error naming it."""
    import json

    r = range_test(lambda lr: 1.0 / (1.0 + lr), num_steps=30, progress=False)
    s = sweep(lambda lr: abs(lr - 0.1), lrs=[0.01, 0.1, 1.0], extend=0, progress=False)
    deep = tmp_path / "runs" / "today"
    paths = [
        r.save(deep / "a" / "lr.json"),
        s.save(deep / "b" / "sweep.json"),
    ]
    r.plot(deep / "c" / "lr.png")
    s.plot(deep / "d" / "sweep.png")
    assert all(json.loads(p.read_text()) for p in paths)
    assert (deep / "c" / "lr.png").stat().st_size > 0
    assert (deep / "d" / "sweep.png").stat().st_size > 0
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError, match="path must be a file path whose directory"):
        r.save(tmp_path / "file" / "lr.json")
