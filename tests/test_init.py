"""The public namespace: lazy, light, complete."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.helpers import run_python

import lrkit


def test_import_loads_no_framework_and_no_matplotlib() -> None:
    p = run_python(
        "import sys, lrkit\n"
        "lrkit.parse_schedule('cosine(total_steps=10)'); lrkit.suggest\n"
        "lrkit.sweep(lambda lr: lr, lrs=[0.1]).summary()\n"
        "names = ('torch', 'matplotlib', 'keras', 'tensorboard', 'lightning',"
        " 'transformers', 'optuna', 'sklearn')\n"
        "heavy = [m for m in names if m in sys.modules]\n"
        "print(heavy)"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


@pytest.mark.parametrize("name", sorted(lrkit._LAZY))
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(lrkit, name) is not None
    assert name in dir(lrkit)


def test_public_functions_named_like_submodules_stay_functions() -> None:
    # `suggest` is a submodule too: importing it (the range test does) must not
    # rebind lrkit.suggest to the module
    p = run_python(
        "import lrkit\n"
        "r = lrkit.range_test(lambda lr: 1 / (1 + lr), start_lr=1e-3, end_lr=1.0,"
        " num_steps=20)\n"
        "import lrkit.suggest\n"
        "import lrkit.sweep\n"
        "from lrkit import suggest, sweep\n"
        "s = lrkit.suggest(r.lrs, r.losses)\n"
        "w = lrkit.sweep(lambda lr: lr, lrs=[0.1])\n"
        "print(callable(suggest), type(s).__name__, callable(sweep), type(w).__name__)"
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "True Suggestion True SweepResult"


def test_unknown_name_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        lrkit.nope  # noqa: B018


def test_adapters_resolve_as_attributes() -> None:
    assert lrkit.torch.Scheduler is not None
    assert lrkit.torch.find_lr is lrkit.find_lr
    assert lrkit.lightning.MonitorCallback.__module__ == "lrkit.lightning"
    assert lrkit.hf.MonitorCallback.__module__ == "lrkit.hf"
    assert lrkit.sklearn.find_lr.__module__ == "lrkit.sklearn"
    assert lrkit.keras.find_lr.__module__ == "lrkit._keras_find"
    assert {"lightning", "hf", "keras", "sklearn"} <= set(dir(lrkit))


def test_find_lr_writes_nothing_to_the_working_directory(tmp_path: Path) -> None:
    code = (
        "import torch, lrkit\n"
        "from torch.utils.data import DataLoader, TensorDataset\n"
        "torch.manual_seed(0)\n"  # unseeded, ~1 run in 10 had a flat 50-step curve
        "x = torch.randn(128, 4); y = x.sum(1, keepdim=True)\n"
        "m = torch.nn.Linear(4, 1); o = torch.optim.SGD(m.parameters(), lr=0.1)\n"
        "dl = DataLoader(TensorDataset(x, y), batch_size=16)\n"
        "r = lrkit.find_lr(m, o, torch.nn.functional.mse_loss, dl, num_steps=50)\n"
        "print(r.suggestion is not None)"
    )
    before = sorted(os.listdir(tmp_path))
    p = run_python(code, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "True"
    assert sorted(os.listdir(tmp_path)) == before
