"""Pure logic of the regret benchmark (benchmarks/regret): interpolation and
scoring against an oracle, the warmup+cosine schedule, and the peers' suggestion
rules (checked against hand-computed values and, where installed, the peers'
own code)."""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# the benchmarks package lives at the repository root, beside src/
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.regret import rules
from benchmarks.regret.common import GRID
from benchmarks.regret.regret import curve_from_oracle, interp_log
from benchmarks.regret.train import lr_at


# ------------------------------------------------------------------ interpolation
def test_interp_log_midpoints_and_clamping() -> None:
    lrs = np.array([1e-3, 1e-2, 1e-1])
    vals = np.array([2.0, 1.0, 4.0])
    assert interp_log(lrs, vals, 1e-2) == (1.0, False)
    # halfway in log10 between 1e-2 and 1e-1: (1 + 4) / 2
    assert interp_log(lrs, vals, 10**-1.5) == pytest.approx((2.5, False))
    # a quarter of the way from 1e-3 to 1e-2: 2 - 0.25 * 1
    assert interp_log(lrs, vals, 10**-2.75) == pytest.approx((1.75, False))
    assert interp_log(lrs, vals, 1.0) == (4.0, True)
    assert interp_log(lrs, vals, 1e-5) == (2.0, True)


def _cell(schedule: str, idx: int, seed: int, init: float, final: float | None,
          diverged: bool = False) -> dict[str, object]:  # fmt: skip
    return {"schedule": schedule, "lr_idx": idx, "seed": seed, "init_loss": init,
            "final_loss": final, "diverged": diverged}  # fmt: skip


def _oracle() -> dict[str, object]:
    # grid indices 16, 17, 18, 19 = 1e-2, 1.78e-2, 3.16e-2, 5.62e-2
    cells = [
        _cell("constant", 16, 0, 2.0, 1.0),
        _cell("constant", 16, 1, 2.0, 1.2),
        _cell("constant", 17, 0, 2.0, 0.5),
        _cell("constant", 17, 1, 2.0, 0.7),
        _cell("constant", 18, 0, 2.0, 0.9),
        _cell("constant", 18, 1, 2.0, 3.5, diverged=True),  # counts as 2.0
        _cell("constant", 19, 0, 2.0, None, diverged=True),
        _cell("constant", 19, 1, 2.0, float("nan"), diverged=True),
        _cell("cosine", 16, 0, 2.0, 0.8),
        _cell("cosine", 18, 0, 2.0, 0.4),
    ]
    return {
        "task": "toy",
        "settings": {"budget_steps": 100},
        "cells": {f"{c['schedule']}|{c['lr_idx']}|{c['seed']}": c for c in cells},
    }


def test_curve_from_oracle_effective_losses_and_optimum() -> None:
    c = curve_from_oracle(_oracle(), "constant")
    assert c is not None
    np.testing.assert_allclose(c.mean_loss, [1.1, 0.6, 1.45, 2.0])
    np.testing.assert_allclose(c.div_frac, [0.0, 0.0, 0.5, 1.0])
    assert c.lr_star == GRID[17]
    assert c.L_star == pytest.approx(0.6)
    assert c.init_loss == 2.0
    lo, hi = c.neighbour_regret()
    assert lo == pytest.approx(1.1 / 0.6 - 1)
    assert hi == pytest.approx(1.45 / 0.6 - 1)


def test_score_hand_computed() -> None:
    c = curve_from_oracle(_oracle(), "constant")
    assert c is not None
    # halfway (in log10) between grid 17 and 18: L = (0.6 + 1.45) / 2
    lr = 10 ** ((math.log10(GRID[17]) + math.log10(GRID[18])) / 2)
    s = c.score(lr)
    assert s["L"] == pytest.approx(1.025)
    assert s["regret"] == pytest.approx(1.025 / 0.6 - 1)
    assert s["abs_log10"] == pytest.approx(0.125)
    assert s["abs_log2"] == pytest.approx(0.125 / math.log10(2))
    assert s["divergent"] is False  # interpolated diverged fraction 0.25
    assert s["above_half_decade"] is False
    assert s["outside_grid"] is False
    # at grid 18 half of the seeds diverged: flagged
    assert c.score(GRID[18])["divergent"] is True
    # 0.75 decade above lr*: above the half-decade line, divergent (frac 1)
    s = c.score(GRID[20])
    assert s["above_half_decade"] is True
    assert s["outside_grid"] is True
    assert s["L"] == pytest.approx(2.0)
    assert s["divergent"] is True


def test_score_failed_and_trained() -> None:
    c = curve_from_oracle(_oracle(), "constant")
    assert c is not None
    for bad in (None, float("nan"), -1.0, 0.0):
        s = c.score(bad)
        assert s["failed"] is True
        assert s["regret"] == pytest.approx(2.0 / 0.6 - 1)
    assert c.score_loss(0.3, False, 2.0) == pytest.approx(-0.5)
    assert c.score_loss(0.3, True, 2.0) == pytest.approx(2.0 / 0.6 - 1)
    assert c.score_loss(None, False, 1.8) == pytest.approx(1.8 / 0.6 - 1)


def test_cosine_curve_uses_its_own_grid() -> None:
    c = curve_from_oracle(_oracle(), "cosine")
    assert c is not None
    assert list(c.lrs) == [GRID[16], GRID[18]]
    assert c.lr_star == GRID[18]
    assert c.score(GRID[17])["L"] == pytest.approx(0.6)
    assert (
        curve_from_oracle({"task": "x", "cells": {}, "settings": {}}, "cosine") is None
    )


# ------------------------------------------------------------------ schedule
def test_warmup_cosine_hand_values() -> None:
    # 100 steps: 5 warmup steps (peak * (t + 1) / 5), then cosine over 95 steps
    assert lr_at(0, 100, 1.0, "cosine") == pytest.approx(0.2)
    assert lr_at(4, 100, 1.0, "cosine") == pytest.approx(1.0)
    assert lr_at(5, 100, 1.0, "cosine") == pytest.approx(1.0)
    mid = 5 + 95 / 2
    assert lr_at(int(mid), 100, 1.0, "cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * (int(mid) - 5) / 95))
    )
    assert lr_at(99, 100, 2.0, "cosine") == pytest.approx(
        2.0 * 0.5 * (1 + math.cos(math.pi * 94 / 95))
    )
    assert lr_at(7, 100, 0.3, "constant") == 0.3
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 10, 1.0, "linear")


# ------------------------------------------------------------------ peers' rules
def test_fastai_rules_hand_values() -> None:
    lrs = np.array([1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0])
    losses = np.array([2.0, 1.9, 1.0, 0.5, 0.7, 3.0])
    # longest decreasing run: indices 0..3 (length 4), max_start = 3 - 4 = -1
    # sections = 4 / 3; idx = -1 + 1 + 0 = 0
    assert rules.fastai_valley(lrs, losses) == 1e-4
    # slopes per unit log: -0.1, -0.9, -0.5, 0.2, 2.3 (/ ln 10): steepest at 1e-3
    assert rules.fastai_steep(lrs, losses) == 1e-3
    assert rules.fastai_minimum(lrs, losses) == pytest.approx(1e-2)


def test_fastai_record_stops_at_4x_best() -> None:
    losses = iter([1.0] * 30 + [100.0] * 70)
    lrs, smooth = rules.fastai_record(lambda lr: next(losses))
    assert len(lrs) < 100
    assert smooth[-1] > 4 * min(smooth)
    assert all(s <= 4 * min(smooth[: i + 1]) for i, s in enumerate(smooth[:-1]))
    assert lrs[0] == rules.FASTAI_START
    assert lrs[1] == pytest.approx(1e-7 * (1e8) ** (1 / 100))
    # debiased EMA of a constant is the constant
    assert smooth[:30] == pytest.approx([1.0] * 30)


def test_lightning_schedule_and_suggestion() -> None:
    assert rules.lightning_lr(0, 1e-8, 1.0, 100) == 1e-8
    # the second batch already gets r = 2/100 (Lightning's scheduler quirk)
    assert rules.lightning_lr(1, 1e-8, 1.0, 100) == pytest.approx(1e-8 * 1e8**0.02)
    assert rules.lightning_lr(99, 1e-8, 1.0, 100) == pytest.approx(1.0)
    lrs = [float(i) for i in range(1, 21)]
    losses = [10.0] * 12 + [9.0, 7.0, 3.0, 2.5, 2.4, 2.3, 2.2, 2.1]
    # gradient (central differences, unit spacing) is most negative at index 13/14
    lr = rules.lightning_suggestion(lrs, losses)
    assert lr in (14.0, 15.0)
    assert rules.lightning_suggestion([1.0] * 5, [1.0] * 5) is None


def test_lightning_record_constant_loss_debias_offset() -> None:
    lrs, smooth = rules.lightning_record(lambda lr: 1.0)
    assert len(lrs) == 100
    # Lightning debiases with global_step + 1, one more than the batches seen
    assert smooth[0] == pytest.approx(0.02 / (1 - 0.98**2))


def test_lightning_suggestion_matches_lightning() -> None:
    lr_finder = pytest.importorskip("lightning.pytorch.tuner.lr_finder")
    rng = np.random.default_rng(0)
    lrs = [1e-8 * 1e8 ** (i / 100) for i in range(100)]
    losses = list(
        2.0 - np.tanh(np.linspace(-3, 3, 100)) + 0.05 * rng.standard_normal(100)
    )
    finder = lr_finder._LRFinder("exponential", 1e-8, 1.0, 100)
    finder.results = {"lr": lrs, "loss": losses}
    assert rules.lightning_suggestion(lrs, losses) == pytest.approx(finder.suggestion())


def _fastai_source_functions() -> dict[str, object]:
    """fastai's suggestion functions, taken from its installed source (the module
    itself needs fastai's whole dependency tree to import)."""
    spec = importlib.util.find_spec("fastai")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fastai not installed")
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "callback" / "schedule.py"
    )
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if isinstance(n, ast.FunctionDef)
            and n.name in ("valley", "slide", "minimum", "steep")]  # fmt: skip
    for fn in keep:
        fn.returns = None
        for arg in fn.args.args:
            arg.annotation = None
    import torch

    ns: dict[str, object] = {"np": np, "torch": torch, "to_np": lambda t: t.numpy()}
    exec(compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec"), ns)
    return ns


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside fastai's slide
def test_fastai_rules_match_fastai_source() -> None:
    import torch

    ns = _fastai_source_functions()
    rng = np.random.default_rng(1)
    for trial in range(5):
        lrs_full = [1e-7 * 1e8 ** (i / 100) for i in range(100)]
        raw = 2.0 - np.tanh(np.linspace(-2, 4, 100) + trial * 0.3)
        raw = raw + 0.03 * rng.standard_normal(100) + np.linspace(0, 1, 100) ** 8 * 3
        lr_w, loss_w = rules.fastai_window(lrs_full, list(raw))
        lt = torch.tensor(lr_w, dtype=torch.float64)
        ls = torch.tensor(loss_w, dtype=torch.float64)
        for name, ours in rules.FASTAI_RULES.items():
            theirs = ns[name](lt, ls, 100)[0]  # type: ignore[operator]
            assert ours(lr_w, loss_w) == pytest.approx(theirs), (name, trial)


# ------------------------------------------------------------------ held-out group
# the parts of a task's fingerprint that its code and data decide (not the
# float sums or the torch version, which another machine may change)
CODE_KEYS = (
    "description",
    "model",
    "n_params",
    "optimizer",
    "optimizer_defaults",
    "family",
    "budget_steps",
    "train_batch",
    "val_batch",
    "train_shapes",
    "val_shapes",
    "train_py_sha",
    "factory_sha",
)


@pytest.fixture
def worker_state() -> Iterator[None]:
    """task_fingerprint sets up a benchmark worker (one thread, denormals
    flushed to zero: process-wide state); put the test process back."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("worker_state")
def test_holdout_group_is_separate_and_its_oracle_matches_its_code() -> None:
    from benchmarks.regret.holdout import HOLDOUT
    from benchmarks.regret.oracle import load_oracle, task_fingerprint
    from benchmarks.regret.regret import load_curves
    from benchmarks.regret.tasks import TASKS, parse_tasks

    assert parse_tasks("holdout") == list(HOLDOUT)
    assert parse_tasks(None) == list(TASKS)
    assert not set(HOLDOUT) & set(TASKS)
    for name in HOLDOUT:
        oracle = load_oracle(name)
        assert oracle is not None, name
        # the committed oracle was computed from the committed task code
        now = task_fingerprint(name)
        assert {k: oracle["fingerprint"][k] for k in CODE_KEYS} == {
            k: now[k] for k in CODE_KEYS
        }, name
        curve = load_curves(name)["constant"]
        # the best LR lies inside the grid, with worse LRs on both sides
        assert GRID[0] < curve.lr_star < GRID[-1], name


def test_update_readme_refuses_the_holdout_group(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from benchmarks.regret import run

    def must_not_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the README was about to be rewritten")

    monkeypatch.setattr(run, "update_readme", must_not_run)
    monkeypatch.setattr(run.cf, "ProcessPoolExecutor", must_not_run)
    with pytest.raises(SystemExit) as exc:
        run.main(["--tasks", "ho_breast_logreg_adam", "--update-readme"])
    assert "held-out group" in str(exc.value)


# ------------------------------------------------------------------ Keras tasks
def test_adapter_oracle_cells_and_scoring() -> None:
    """One real cell far above the best LR diverges (scored as untrained), one
    at the cached lr* trains (a Keras and a scikit-learn task); the cached
    oracles hold the tasks' settings."""
    pytest.importorskip("keras")
    import json

    from benchmarks.regret import adapters_bench as kb

    for name, task in kb.TASKS.items():
        record = json.loads(Path(kb.oracle_path(name)).read_text())
        assert record["settings"]["budget_steps"] == task.budget_steps
        assert record["settings"]["batch_size"] == task.batch_size
        assert len(record["cells"]) == len(GRID) * len(kb.ORACLE_SEEDS)
    for name in ("k_wine_logreg_sgd", "s_wine_mlp_adam"):
        record = json.loads(Path(kb.oracle_path(name)).read_text())
        curve = kb.curve(record)
        star = GRID.index(min(GRID, key=lambda g: abs(math.log10(g / curve.lr_star))))
        good = kb.oracle_cell(name, star, 0)
        assert not good["diverged"] and good["final_loss"] < 0.5 * good["init_loss"]
        cached = next(
            c for c in record["cells"] if c["lr_idx"] == star and c["seed"] == 0
        )
        assert good["final_loss"] == pytest.approx(cached["final_loss"], rel=1e-4)
    # a cell the cache holds as diverged (LR 10, SGD with momentum) diverges again
    top = len(GRID) - 1
    record = json.loads(Path(kb.oracle_path("s_digits_mlp_sgdm")).read_text())
    assert any(c["diverged"] for c in record["cells"] if c["lr_idx"] == top)
    assert kb.oracle_cell("s_digits_mlp_sgdm", top, 0)["diverged"]
    # a pick at lr* has no regret; one far below it costs the untrained loss's share
    assert curve.score(curve.lr_star)[0] == pytest.approx(0.0)
    regret, log_ratio, divergent = curve.score(curve.lr_star / 1e4)
    assert regret > 5 and log_ratio == pytest.approx(-4) and not divergent
    assert curve.score(None)[1] is None
