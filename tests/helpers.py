"""Shared test helpers: run the real `lrkit` command or Python in a subprocess, a
real Hugging Face Trainer, a Monitor that keeps what it was fed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import lrkit

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def run_lrkit(
    *args: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -m lrkit ARGS`` with this checkout's sources, no stdin."""
    return subprocess.run(
        [sys.executable, "-m", "lrkit", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_python(
    code: str, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``python -c CODE`` with this checkout's sources."""
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=_env(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def run_ranks(
    script: Path, *args: str, torchrun: bool = False, timeout: float = 300
) -> list[Any]:
    """Run ``script`` (with this checkout's sources, in its folder) as the
    first of two ranks, as Lightning's DDP launcher does (it starts the
    second), or under ``torchrun`` with two processes on a free port; each
    rank writes ``repr(...)`` of its result to ``result_<rank>.txt``. Returns
    the two results, read back."""
    import ast
    import socket

    env = {k: v for k, v in _env().items() if not k.startswith(("RANK", "LOCAL_"))}
    command = [sys.executable]
    if torchrun:
        with socket.socket() as free:  # a port of its own, not the default
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        command += ["-m", "torch.distributed.run", "--nproc_per_node", "2"]
        command += ["--master_addr", "127.0.0.1", "--master_port", str(port)]
    p = subprocess.run(
        [*command, str(script), *args],
        capture_output=True,
        text=True,
        cwd=script.parent,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    return [
        ast.literal_eval((script.parent / f"result_{r}.txt").read_text())
        for r in (0, 1)
    ]


def run_lrkit_tty(*args: str, timeout: float = 300) -> tuple[int, str]:
    """``python -m lrkit ARGS`` with stdout and stderr on a pseudo-terminal (what
    a user at a terminal sees: progress bars, spinners): ``(exit code, output)``."""
    return run_python_tty("-m", "lrkit", *args, timeout=timeout)


def run_python_tty(*args: str, timeout: float = 300) -> tuple[int, str]:
    """``python ARGS`` with stdout and stderr on a pseudo-terminal:
    ``(exit code, output)``."""
    import pty

    import pytest

    try:
        master, slave = pty.openpty()
    except OSError as e:  # a sandbox without /dev/ptmx
        pytest.skip(f"no pseudo-terminal here: {e}")
    env = _env()
    env["COLUMNS"] = "100"
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the terminal closed: the process is done
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    code = proc.wait(timeout=timeout)
    return code, b"".join(chunks).decode("utf-8", "replace")


class OwnRngSampler:
    """A sampler that shuffles with its own RNG: a ``random.Random``, a NumPy
    ``Generator``/``RandomState`` or a ``torch.Generator`` (under a name of its
    own, as bucketing samplers keep them)."""

    def __init__(self, n: int, rng: object) -> None:
        self.n, self.rng = n, rng

    def __iter__(self):  # type: ignore[no-untyped-def]
        import random

        import torch

        idx = list(range(self.n))
        if isinstance(self.rng, random.Random):
            self.rng.shuffle(idx)
        elif isinstance(self.rng, torch.Generator):
            idx = torch.randperm(self.n, generator=self.rng).tolist()
        else:
            idx = [int(i) for i in self.rng.permutation(self.n)]  # type: ignore[attr-defined]
        return iter(idx)

    def __len__(self) -> int:
        return self.n


def hf_trainer(
    out: Path,
    max_steps: int,
    *,
    callbacks: list[Any] | None = None,
    nan_after: int | None = None,
    nan_once: bool = False,
    tuple_output: bool = False,
    items_kw: bool = False,
    **args: object,
) -> Any:
    """A real Hugging Face Trainer on a tiny regression (CPU, no download),
    logging every step and evaluating every 10; ``args`` go to its
    TrainingArguments. After its ``nan_after``-th training forward the model
    returns a NaN loss (only once with ``nan_once``); ``tuple_output``: the
    model returns ``(loss, logits)``; ``items_kw``: its forward takes
    ``num_items_in_batch`` (the Trainer then passes the step's item count and
    the model divides its summed loss by it, as transformers' models do)."""
    import pytest

    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class Model(torch.nn.Module):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)
            self.calls = 0

        def forward(self, x, labels=None):  # type: ignore[no-untyped-def]
            return self.run(x, labels, None)

        def run(self, x, labels, items):  # type: ignore[no-untyped-def]
            out = self.lin(x)
            if items is not None:
                loss = ((out - labels) ** 2).sum() / items
            else:
                loss = torch.nn.functional.mse_loss(out, labels)
            if self.training:
                self.calls += 1
                late = nan_after is not None and self.calls > nan_after
                if late and (not nan_once or self.calls == nan_after + 1):
                    loss = loss * float("nan")
            if tuple_output:
                return (loss, out)
            return {"loss": loss, "logits": out}

    class Data(torch.utils.data.Dataset):  # type: ignore[misc]
        def __init__(self, n: int) -> None:
            g = torch.Generator().manual_seed(n)
            self.x = torch.randn(n, 4, generator=g)
            self.y = self.x.sum(1, keepdim=True)

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"x": self.x[i], "labels": self.y[i]}

    settings: dict[str, object] = {
        "logging_steps": 1,
        "eval_strategy": "steps",
        "eval_steps": 10,
        "report_to": [],
        "use_cpu": True,
        "learning_rate": 0.05,
        "per_device_train_batch_size": 8,
        "disable_tqdm": True,  # the Trainer then prints each log dict
    }
    settings.update(args)
    training_args = transformers.TrainingArguments(
        output_dir=str(out), max_steps=max_steps, **settings
    )

    class ItemsModel(Model):
        def forward(self, x, labels=None, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            return self.run(x, labels, num_items_in_batch)

    return transformers.Trainer(
        model=ItemsModel() if items_kw else Model(),
        args=training_args,
        train_dataset=Data(64),
        eval_dataset=Data(16),
        callbacks=callbacks,
    )


class Recording(lrkit.Monitor):
    """A real Monitor that also keeps what it was fed."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.calls: list[tuple[int, Any, dict[str, Any]]] = []

    def update(self, step: int, loss: Any, **kw: Any) -> Any:
        self.calls.append((step, loss, kw))
        return super().update(step, loss, **kw)
