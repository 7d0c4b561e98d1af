"""Range-test overhead: lrkit.find_lr vs torch-lr-finder vs a plain training loop.

Same model, data, optimizer and number of optimizer steps for all three; each
run happens in a fresh subprocess so peak memory (RSS, and CUDA peak allocated
memory on a GPU) is measured per method. Prints a markdown table of medians and
ratios to the plain loop.

    python benchmarks/finder_overhead.py                       # CPU, fp32
    python benchmarks/finder_overhead.py --device cuda --amp bf16 --width 2048 --depth 8

The ladder (1e-7 .. 1e-4) is kept low so that no method stops early: all run
exactly --steps optimizer steps. Targets (issue 2): lrkit <= 1.05x the plain
loop's wall time, no more than one extra copy of model + optimizer state, held
in CPU memory; on a GPU, throughput >= 0.95 of the plain loop and GPU memory
after the test equal to before.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build(args: argparse.Namespace):
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(args.features, args.width), nn.ReLU()]
    for _ in range(args.depth - 1):
        layers += [nn.Linear(args.width, args.width), nn.ReLU()]
    layers.append(nn.Linear(args.width, 10))
    model = nn.Sequential(*layers).to(args.device)
    n = args.batch * args.steps
    x = torch.randn(n, args.features)
    y = torch.randint(0, 10, (n,))
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch, shuffle=True)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    # one warm-up step: grads and optimizer state exist, as in a real training script
    xb, yb = next(iter(loader))
    nn.functional.cross_entropy(
        model(xb.to(args.device)), yb.to(args.device)
    ).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return model, opt, loader


def state_bytes(model, opt) -> int:
    import torch

    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for s in opt.state.values():
        total += sum(
            v.numel() * v.element_size() for v in s.values() if torch.is_tensor(v)
        )
    return total


def run_method(args: argparse.Namespace) -> dict:
    """Runs in a subprocess: one method, one repetition."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    model, opt, loader = build(args)
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp or "")
    t0 = time.perf_counter()
    if args.method == "plain":
        lrs = [
            1e-7 * (1e-4 / 1e-7) ** (i / (args.steps - 1)) for i in range(args.steps)
        ]
        it = iter(loader)
        model.train()
        last = None
        for lr in lrs:
            for g in opt.param_groups:
                g["lr"] = lr
            xb, yb = next(it)
            xb, yb = (
                xb.to(args.device, non_blocking=True),
                yb.to(args.device, non_blocking=True),
            )
            opt.zero_grad(set_to_none=True)
            if amp_dtype is not None:
                with torch.autocast(args.device.split(":")[0], dtype=amp_dtype):
                    loss = F.cross_entropy(model(xb), yb)
            else:
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            last = loss.detach()
        float(last)  # one sync at the end
    elif args.method == "lrkit":
        sys.path.insert(0, str(ROOT / "src"))
        import lrkit

        r = lrkit.find_lr(
            model,
            opt,
            F.cross_entropy,
            loader,
            start_lr=1e-7,
            end_lr=1e-4,
            num_steps=args.steps,
            amp=args.amp,
            device=args.device,
        )
        assert r.steps_done == args.steps, r.steps_done
    elif args.method == "torch_lr_finder":
        from torch_lr_finder import LRFinder

        for g in opt.param_groups:
            g["lr"] = 1e-7
        finder = LRFinder(model, opt, F.cross_entropy, device=args.device)
        finder.range_test(loader, end_lr=1e-4, num_iter=args.steps, diverge_th=1e9)
        finder.reset()
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    out = {
        "wall_s": wall,
        "rss_peak_extra_mb": (
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
        )
        / 1024.0,
        "state_mb": state_bytes(model, opt) / 2**20,
    }
    if cuda:
        out["gpu_peak_extra_mb"] = (
            torch.cuda.max_memory_allocated() - gpu_before
        ) / 2**20
        out["gpu_after_minus_before_mb"] = (
            torch.cuda.memory_allocated() - gpu_before
        ) / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--methods", default="plain,lrkit,torch_lr_finder")
    p.add_argument("--method", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.method:
        print(json.dumps(run_method(args)))
        return

    methods = args.methods.split(",")
    results: dict[str, list[dict]] = {m: [] for m in methods}
    base = [a for a in sys.argv[1:] if not a.startswith("--methods")]
    for rep in range(args.repeats):
        for m in methods:  # interleaved, so machine noise hits every method alike
            cmd = [sys.executable, __file__, *base, "--method", m]
            proc = subprocess.run(
                cmd, capture_output=True, text=True, env=dict(os.environ)
            )
            if proc.returncode != 0:
                print(f"{m} failed:\n{proc.stderr}", file=sys.stderr)
                results[m].append({})
                continue
            results[m].append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(f"repeat {rep + 1}/{args.repeats} done", file=sys.stderr)

    def med(m: str, key: str) -> float:
        vals = [r[key] for r in results[m] if key in r]
        return statistics.median(vals) if vals else float("nan")

    plain = med("plain", "wall_s") if "plain" in results else float("nan")
    state_mb = med(methods[0], "state_mb")
    print(
        f"\nRange-test overhead: {args.steps} steps, "
        f"MLP {args.features}-{args.width}x{args.depth}-10, "
        f"batch {args.batch}, AdamW, device {args.device}, amp {args.amp}, "
        f"{args.threads} thread(s); model+optimizer state {state_mb:.1f} MB; "
        f"median of {args.repeats} runs, each in a fresh process.\n"
    )
    head = (
        "| method | wall (s) | vs plain loop | steps/s | peak extra RSS (MB) "
        "| extra RSS / state |"
    )
    sep = "|---|---|---|---|---|---|"
    if args.device.startswith("cuda"):
        head += " GPU peak extra (MB) | GPU after - before (MB) |"
        sep += "---|---|"
    print(head)
    print(sep)
    for m in methods:
        w = med(m, "wall_s")
        rss = med(m, "rss_peak_extra_mb")
        row = (
            f"| {m} | {w:.3f} | {w / plain:.3f}x | {args.steps / w:.1f} | {rss:.1f} | "
            f"{rss / state_mb:.2f} |"
        )
        if args.device.startswith("cuda"):
            gpu_peak = med(m, "gpu_peak_extra_mb")
            gpu_left = med(m, "gpu_after_minus_before_mb")
            row += f" {gpu_peak:.1f} | {gpu_left:.2f} |"
        print(row)

    if "lrkit" in methods:
        # what find_lr's snapshot holds, counted directly (the RSS above also
        # holds the allocator's slack): one copy of model + optimizer state
        import lrkit.torch

        model, opt, _ = build(args)
        snap = lrkit.torch.snapshot(model, opt)
        ratio = snap.nbytes / state_bytes(model, opt)
        print(
            f"\nlrkit's snapshot holds {snap.nbytes / 2**20:.1f} MB in CPU memory: "
            f"{ratio:.2f}x the model + optimizer state."
        )


if __name__ == "__main__":
    main()
