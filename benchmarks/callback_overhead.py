"""Per-step cost of lrkit's trainer callbacks on a run where nothing goes wrong.

Trains the same small MLP with Lightning's ``Trainer.fit`` (CPU, no logger, no
progress bar, no checkpointing) four ways, interleaved ``--repeats`` times:
no callback (the baseline), Lightning's own ``EarlyStopping`` on the logged
training loss (for scale: the usual watching callback; it checks once an
epoch, so its cost is mostly the per-step logging it needs),
``lrkit.lightning.MonitorCallback`` (one monitor update, one gradient norm per
step) and ``lrkit.lightning.GuardCallback`` (the same, plus a snapshot of model
and optimizer every ``every`` steps). Prints the median time per optimizer
step and the overhead against the baseline (in microseconds and percent).
With ``--hf`` (needs transformers and accelerate) the same for the Hugging
Face Trainer (logging every 10 steps): no callback, ``lrkit.hf.MonitorCallback``
and ``lrkit.hf.GuardCallback``.

    python benchmarks/callback_overhead.py                 # 400 steps, 5 repeats
    python benchmarks/callback_overhead.py --width 1024 --every 50
    python benchmarks/callback_overhead.py --hf
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import torch

from lrkit.lightning import GuardCallback, MonitorCallback


class Net(pl.LightningModule):  # type: ignore[misc]
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(32, width), torch.nn.ReLU(), torch.nn.Linear(width, 1)
        )

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def run(callbacks: list[Any], steps: int, width: int) -> float:
    """Seconds per optimizer step of one fit (after a warm-up fit)."""
    torch.manual_seed(0)
    x = torch.randn(4096, 32)
    y = x[:, :1] * 2 + 0.1 * torch.randn(4096, 1)
    data = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=64, shuffle=True
    )
    trainer = pl.Trainer(
        max_steps=steps,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    model = Net(width)
    t0 = time.perf_counter()
    trainer.fit(model, data)
    return (time.perf_counter() - t0) / trainer.global_step


def run_hf(callbacks: list[Any], steps: int, width: int, out: str) -> float:
    """Seconds per optimizer step of one Hugging Face ``Trainer.train``."""
    import transformers

    class HFNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = Net(width).net

        def forward(self, x: Any, labels: Any = None) -> Any:
            out = self.net(x)
            return {"loss": torch.nn.functional.mse_loss(out, labels), "logits": out}

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(4096, 32, generator=g)
            self.y = self.x[:, :1] * 2

        def __len__(self) -> int:
            return len(self.x)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"x": self.x[i], "labels": self.y[i]}

    torch.manual_seed(0)
    args = transformers.TrainingArguments(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=64,
        logging_steps=10,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        disable_tqdm=True,
        log_level="error",
    )
    trainer = transformers.Trainer(
        model=HFNet(), args=args, train_dataset=Data(), callbacks=callbacks
    )
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints its logs
        trainer.train()
    return (time.perf_counter() - t0) / trainer.state.global_step


def table(title: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(times.values())))
    print(title + "\n")
    print("| callback | µs / step | overhead µs / step | overhead |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name} | {med * 1e6:,.0f} | {(med - base) * 1e6:+,.0f} | "
            f"{(med / base - 1) * 100:+.1f}% |"
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--every", type=int, default=100, help="Guard snapshot period")
    ap.add_argument("--hf", action="store_true", help="also the Hugging Face Trainer")
    args = ap.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    ways: dict[str, Callable[[], list[Any]]] = {
        "no callback": lambda: [],
        "Lightning EarlyStopping (epoch)": lambda: [
            pl.callbacks.EarlyStopping(
                "train_loss", patience=10**6, check_on_train_epoch_end=True
            )
        ],
        "lrkit MonitorCallback": lambda: [MonitorCallback(verbose=False)],
        "lrkit GuardCallback": lambda: [GuardCallback(every=args.every)],
    }
    times: dict[str, list[float]] = {k: [] for k in ways}
    run([], 20, args.width)  # warm-up
    for _ in range(args.repeats):
        for name, make in ways.items():
            times[name].append(run(make(), args.steps, args.width))
    params = sum(p.numel() for p in Net(args.width).parameters())
    table(
        f"\nLightning fit, MLP of {params:,} parameters, batch 64, {args.steps} "
        f"steps, one CPU thread; median of {args.repeats} interleaved runs",
        times,
    )
    if not args.hf:
        return
    import tempfile

    from lrkit import hf

    hf_ways: dict[str, Callable[[], list[Any]]] = {
        "no callback": lambda: [],
        "lrkit hf.MonitorCallback": lambda: [hf.MonitorCallback(verbose=False)],
        "lrkit hf.GuardCallback": lambda: [hf.GuardCallback(every=args.every)],
    }
    hf_times: dict[str, list[float]] = {k: [] for k in hf_ways}
    with tempfile.TemporaryDirectory() as out:
        run_hf([], 20, args.width, out)  # warm-up
        for _ in range(args.repeats):
            for name, make in hf_ways.items():
                hf_times[name].append(run_hf(make(), args.steps, args.width, out))
    table(
        f"\nHugging Face Trainer, the same MLP and data, logging every 10 steps, "
        f"{args.steps} steps; median of {args.repeats} interleaved runs",
        hf_times,
    )


if __name__ == "__main__":
    main()
