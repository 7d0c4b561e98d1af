"""Per-step cost of lrkit's Lightning callbacks on a run where nothing goes wrong.

Trains the same small MLP with Lightning's ``Trainer.fit`` (CPU, no logger, no
progress bar, no checkpointing) four ways, interleaved ``--repeats`` times:
no callback (the baseline), Lightning's own ``EarlyStopping`` on the logged
training loss (for scale: the usual watching callback; it checks once an
epoch, so its cost is mostly the per-step logging it needs),
``lrkit.lightning.MonitorCallback`` (one monitor update, one gradient norm per
step) and ``lrkit.lightning.GuardCallback`` (the same, plus a snapshot of model
and optimizer every ``every`` steps). Prints the median time per optimizer
step and the overhead against the baseline (in microseconds and percent).

    python benchmarks/callback_overhead.py                 # 400 steps, 5 repeats
    python benchmarks/callback_overhead.py --width 1024 --every 50
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--every", type=int, default=100, help="Guard snapshot period")
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
    base = statistics.median(times["no callback"])
    params = sum(p.numel() for p in Net(args.width).parameters())
    print(
        f"\nLightning fit, MLP of {params:,} parameters, batch 64, {args.steps} "
        f"steps, one CPU thread; median of {args.repeats} interleaved runs\n"
    )
    print("| callback | µs / step | overhead µs / step | overhead |")
    print("|---|---:|---:|---:|")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(
            f"| {name} | {med * 1e6:,.0f} | {(med - base) * 1e6:+,.0f} | "
            f"{(med / base - 1) * 100:+.1f}% |"
        )


if __name__ == "__main__":
    main()
