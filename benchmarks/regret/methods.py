"""The methods compared side by side.

A *runner* does the work once for a (task, seed) and yields one or more
methods' results (fastai's four rules share one recorded range test). Each
result is a dict with ``kind`` ("pick": a proposed LR, scored on the oracle
curve; "trained": an LR-free optimizer trained for the budget, scored by its
achieved loss) and, for picks, ``lr`` (None when the method gave none).

Methods:
- ``lrkit``: exactly ``lrkit.find_lr(model, optimizer, loss_fn,
  train_loader).suggestion``, the optimizer built at the beginner default LR;
  ``lrkit_val`` adds ``val_loader=val_loader``. The suggestion's confidence,
  range and reasons are recorded where the result exposes them.
  ``lrkit_wide`` / ``lrkit_val_wide`` (stability mode): the same with the
  range test's start and end widened 10x each way.
  ``lrkit_confirm`` / ``lrkit_val_confirm``: the same with
  ``confirm_steps=budget_steps // 10`` (two short runs of a tenth of the
  budget when the confidence is below 0.5; their steps count in the cost).
- ``torch_lr_finder``: the real package, its defaults (start 1e-7 set on the
  optimizer, end_lr=10, num_iter=100, exp, smooth_f=0.05, diverge_th=5) and the
  LR ``plot(suggest_lr=True)`` returns (steepest gradient).
- ``fastai_valley`` / ``fastai_steep`` / ``fastai_minimum`` / ``fastai_slide``
  and ``lightning``: see ``rules.py``.
- ``default``: 0.01 for the SGD family, 0.001 for the Adam family.
- ``prodigy``, ``schedulefree``, ``dadapt``: trained directly at their
  defaults (see the runner docstrings).
"""

from __future__ import annotations

import contextlib
import inspect
import io
import math
import warnings
from collections.abc import Callable
from typing import Any

import torch

from . import rules
from .common import beginner_default_lr
from .train import TaskInstance, infinite_batches, train_run

Result = dict[str, Any]
Runner = Callable[[TaskInstance], dict[str, Result]]


class NotInstalledError(Exception):
    """The method's package cannot be imported."""


def _pick(lr: float | None, **extra: Any) -> Result:
    return {"kind": "pick", "lr": None if lr is None else float(lr), **extra}


def make_step_fn(inst: TaskInstance, opt: torch.optim.Optimizer) -> rules.StepFn:
    """One training step at a given LR on the next batch; returns the batch loss."""
    batches = infinite_batches(inst.train_loader)
    inst.model.train()

    def step(lr: float) -> float:
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = inst.loss_fn(inst.model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def _finite(xs: list[float]) -> list[float | None]:
    return [x if math.isfinite(x) else None for x in xs]


# ------------------------------------------------------------------ anchors
def run_default(inst: TaskInstance) -> dict[str, Result]:
    return {"default": _pick(beginner_default_lr(inst.family))}


def run_fastai(inst: TaskInstance) -> dict[str, Result]:
    opt = inst.make_optimizer(inst.model.parameters(), rules.FASTAI_START)
    lrs, losses = rules.fastai_record(make_step_fn(inst, opt))
    lr_w, loss_w = rules.fastai_window(lrs, losses)
    hist = {"lr": lrs, "loss": _finite(losses)}
    out = {}
    for name, rule in rules.FASTAI_RULES.items():
        lr = rule(lr_w, loss_w) if len(loss_w) >= 2 else None
        if lr is not None and not math.isfinite(lr):
            lr = None
        out[f"fastai_{name}"] = _pick(lr, history=hist)
    return out


def run_lightning(inst: TaskInstance) -> dict[str, Result]:
    opt = inst.make_optimizer(inst.model.parameters(), rules.LIGHTNING_MIN)
    lrs, losses = rules.lightning_record(make_step_fn(inst, opt))
    lr = rules.lightning_suggestion(lrs, losses)
    return {"lightning": _pick(lr, history={"lr": lrs, "loss": _finite(losses)})}


def run_torch_lr_finder(inst: TaskInstance) -> dict[str, Result]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from torch_lr_finder import LRFinder
    except ImportError as e:
        raise NotInstalledError(f"torch-lr-finder: {e}") from None
    opt = inst.make_optimizer(inst.model.parameters(), 1e-7)
    finder = LRFinder(inst.model, opt, inst.loss_fn, device="cpu")
    sink = io.StringIO()
    fig, ax = plt.subplots()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            finder.range_test(
                inst.train_loader,
                end_lr=10,
                num_iter=100,
                step_mode="exp",
                smooth_f=0.05,
                diverge_th=5,
            )
            _, lr = finder.plot(ax=ax, suggest_lr=True)
        hist = {
            "lr": [float(v) for v in finder.history["lr"]],
            "loss": _finite([float(v) for v in finder.history["loss"]]),
        }
    finally:
        plt.close(fig)
        finder.reset()
    return {"torch_lr_finder": _pick(lr, history=hist)}


# ------------------------------------------------------------------ LR-free
def _trained(r: dict[str, Any], desc: str) -> Result:
    return {
        "kind": "trained",
        "optimizer": desc,
        "init_loss": r["init_loss"],
        "final_loss": r["final_loss"] if math.isfinite(r["final_loss"]) else None,
        "diverged": r["diverged"],
        "reason": r["reason"],
    }


def run_prodigy(inst: TaskInstance) -> dict[str, Result]:
    """``prodigyopt.Prodigy(lr=1.0)``, the task's weight decay (decoupled for
    AdamW tasks, coupled otherwise), other arguments at their defaults."""
    try:
        from prodigyopt import Prodigy
    except ImportError as e:
        raise NotInstalledError(f"prodigyopt: {e}") from None
    wd, dec = inst.weight_decay, inst.decoupled_wd
    opt = Prodigy(inst.model.parameters(), lr=1.0, weight_decay=wd, decouple=dec)
    desc = f"Prodigy(lr=1.0, weight_decay={wd}, decouple={dec})"
    return {"prodigy": _trained(train_run(inst, None, optimizer=opt), desc)}


def run_schedulefree(inst: TaskInstance) -> dict[str, Result]:
    """``SGDScheduleFree`` (defaults lr=1.0, momentum=0.9) for the SGD family,
    ``AdamWScheduleFree`` (default lr=0.0025) for the Adam family; the task's
    weight decay. ``optimizer.eval()`` before every evaluation and ``train()``
    after; for BatchNorm models the statistics are re-estimated at the
    evaluation weights with 50 training batches (no gradient), as the
    schedulefree README prescribes."""
    try:
        import schedulefree
    except ImportError as e:
        raise NotInstalledError(f"schedulefree: {e}") from None
    wd = inst.weight_decay
    opt: Any
    if inst.family == "sgd":
        opt = schedulefree.SGDScheduleFree(inst.model.parameters(), weight_decay=wd)
        desc = f"SGDScheduleFree(lr=1.0, momentum=0.9, weight_decay={wd})"
    else:
        opt = schedulefree.AdamWScheduleFree(inst.model.parameters(), weight_decay=wd)
        desc = f"AdamWScheduleFree(lr=0.0025, weight_decay={wd})"
    evals = [0]

    def before_eval() -> None:
        opt.eval()
        if inst.has_batchnorm and evals[0] > 0:
            inst.model.train()
            with torch.no_grad():
                for i, (x, _) in enumerate(infinite_batches(inst.train_loader)):
                    if i >= 50:
                        break
                    inst.model(x)
        evals[0] += 1

    def after_eval() -> None:
        opt.train()

    opt.train()
    r = train_run(
        inst, None, optimizer=opt, before_eval=before_eval, after_eval=after_eval
    )
    return {"schedulefree": _trained(r, desc)}


def run_dadapt(inst: TaskInstance) -> dict[str, Result]:
    """``DAdaptSGD(lr=1.0)`` with the task's momentum and weight decay for the
    SGD family; ``DAdaptAdam(lr=1.0)`` with the task's weight decay (decoupled
    for AdamW tasks) for the Adam family."""
    try:
        import dadaptation
    except ImportError as e:
        raise NotInstalledError(f"dadaptation: {e}") from None
    wd = inst.weight_decay
    opt: Any
    if inst.family == "sgd":
        opt = dadaptation.DAdaptSGD(
            inst.model.parameters(), lr=1.0, momentum=inst.momentum, weight_decay=wd
        )
        desc = f"DAdaptSGD(lr=1.0, momentum={inst.momentum}, weight_decay={wd})"
    else:
        dec = inst.decoupled_wd
        opt = dadaptation.DAdaptAdam(
            inst.model.parameters(), lr=1.0, weight_decay=wd, decouple=dec
        )
        desc = f"DAdaptAdam(lr=1.0, weight_decay={wd}, decouple={dec})"
    return {"dadapt": _trained(train_run(inst, None, optimizer=opt), desc)}


# ------------------------------------------------------------------ lrkit
def _lrkit() -> Any:
    try:
        import lrkit

        lrkit.find_lr  # noqa: B018  (resolves the lazy torch adapter)
    except (ImportError, AttributeError) as e:
        raise NotInstalledError(f"lrkit.find_lr: {type(e).__name__}: {e}") from None
    return lrkit


def lrkit_default_range(find_lr: Any) -> tuple[float, float]:
    """The defaults of ``find_lr``'s ``start_lr`` and ``end_lr``."""
    params = inspect.signature(find_lr).parameters
    start, end = params["start_lr"].default, params["end_lr"].default
    return float(start), float(end)


def suggestion_details(result: Any) -> dict[str, Any]:
    """Confidence, range, reasons, rule and evidence of the suggestion.

    lrkit's ``RangeTestResult`` keeps the full ``Suggestion`` in
    ``result.suggestion_info`` (``result.suggestion`` is its ``lr``).
    """
    info = getattr(result, "suggestion_info", None)
    if info is None:
        return {}
    out: dict[str, Any] = {}
    for key in ("confidence", "low", "high"):
        val = getattr(info, key, None)
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            out[key] = float(val)
    out["reasons"] = [str(r) for r in getattr(info, "reasons", ())][:8]
    out["rule"] = str(getattr(info, "method", ""))
    evidence = getattr(info, "evidence", None) or {}
    out["evidence"] = {
        str(k): float(v) for k, v in evidence.items() if isinstance(v, (int, float))
    }
    return out


def _run_lrkit(
    inst: TaskInstance, *, val: bool, wide: bool, confirm: bool = False
) -> Result:
    lrkit = _lrkit()
    opt = inst.make_optimizer(inst.model.parameters(), beginner_default_lr(inst.family))
    kwargs: dict[str, Any] = {}
    if val:
        kwargs["val_loader"] = inst.val_loader
    if wide:
        start, end = lrkit_default_range(lrkit.find_lr)
        kwargs.update(start_lr=start / 10, end_lr=end * 10)
    if confirm:
        kwargs["confirm_steps"] = max(1, inst.budget_steps // 10)
    result = lrkit.find_lr(inst.model, opt, inst.loss_fn, inst.train_loader, **kwargs)
    s = result.suggestion
    extra = suggestion_details(result)
    with contextlib.suppress(Exception):
        extra["history"] = {
            "lr": [float(v) for v in result.lrs],
            "loss": _finite([float(v) for v in result.losses]),
        }
    return _pick(None if s is None else float(s), **extra)


def run_lrkit(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit": _run_lrkit(inst, val=False, wide=False)}


def run_lrkit_val(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit_val": _run_lrkit(inst, val=True, wide=False)}


def run_lrkit_wide(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit_wide": _run_lrkit(inst, val=False, wide=True)}


def run_lrkit_val_wide(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit_val_wide": _run_lrkit(inst, val=True, wide=True)}


def run_lrkit_confirm(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit_confirm": _run_lrkit(inst, val=False, wide=False, confirm=True)}


def run_lrkit_val_confirm(inst: TaskInstance) -> dict[str, Result]:
    return {"lrkit_val_confirm": _run_lrkit(inst, val=True, wide=False, confirm=True)}


# ------------------------------------------------------------------ registry
RUNNERS: dict[str, tuple[Runner, tuple[str, ...]]] = {
    "lrkit": (run_lrkit, ("lrkit",)),
    "lrkit_val": (run_lrkit_val, ("lrkit_val",)),
    "lrkit_wide": (run_lrkit_wide, ("lrkit_wide",)),
    "lrkit_val_wide": (run_lrkit_val_wide, ("lrkit_val_wide",)),
    "lrkit_confirm": (run_lrkit_confirm, ("lrkit_confirm",)),
    "lrkit_val_confirm": (run_lrkit_val_confirm, ("lrkit_val_confirm",)),
    "torch_lr_finder": (run_torch_lr_finder, ("torch_lr_finder",)),
    "fastai": (
        run_fastai,
        ("fastai_valley", "fastai_steep", "fastai_minimum", "fastai_slide"),
    ),
    "lightning": (run_lightning, ("lightning",)),
    "default": (run_default, ("default",)),
    "prodigy": (run_prodigy, ("prodigy",)),
    "schedulefree": (run_schedulefree, ("schedulefree",)),
    "dadapt": (run_dadapt, ("dadapt",)),
}
TRAINED_RUNNERS = ("prodigy", "schedulefree", "dadapt")
METHOD_RUNNER: dict[str, str] = {m: r for r, (_, ms) in RUNNERS.items() for m in ms}
LRKIT = ("lrkit", "lrkit_val", "lrkit_confirm", "lrkit_val_confirm")
ANCHORS = (
    "default",
    "torch_lr_finder",
    "fastai_valley",
    "fastai_steep",
    "fastai_minimum",
    "fastai_slide",
    "lightning",
    "prodigy",
    "schedulefree",
    "dadapt",
)
DEFAULT_METHODS = LRKIT + ANCHORS


def run_runner(runner: str, inst: TaskInstance) -> dict[str, Result]:
    """Run one runner on a fresh instance, quietly (warnings suppressed)."""
    fn, _ = RUNNERS[runner]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(inst)


def warm_imports(runner: str) -> None:
    """Import a runner's third-party package before its cost is timed."""
    modules = {
        "torch_lr_finder": ("torch_lr_finder", "matplotlib.pyplot"),
        "prodigy": ("prodigyopt",),
        "schedulefree": ("schedulefree",),
        "dadapt": ("dadaptation",),
        "lrkit": ("lrkit",),
        "lrkit_val": ("lrkit",),
        "lrkit_wide": ("lrkit",),
        "lrkit_val_wide": ("lrkit",),
        "lrkit_confirm": ("lrkit",),
        "lrkit_val_confirm": ("lrkit",),
    }.get(runner, ())
    for m in modules:
        with contextlib.suppress(ImportError):
            __import__(m)
    if runner.startswith("lrkit"):
        with contextlib.suppress(NotInstalledError):
            _lrkit()  # resolves the lazy torch adapter too
