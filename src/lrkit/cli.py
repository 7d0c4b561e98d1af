"""The ``lrkit`` command: ``find``, ``schedule`` and ``diagnose``.

Conventions shared by every command:

- ``--json`` prints one machine-readable JSON document on stdout and nothing else
  there (progress, messages and what the user's code prints go to stderr);
- progress bars and spinners only when stderr is a terminal and ``CI`` is unset;
- output cut short by its reader (``| head -1``) ends quietly, exit code kept;
- ``--out DIR`` is where figures and records are written;
- bad input prints one line ``lrkit: error: ...`` on stderr and exits with code 2;
  a failure while running exits with code 1. No tracebacks for user errors.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    name="lrkit",
    help="Find, schedule and watch learning rates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

EXIT_RUNTIME = 1
EXIT_USAGE = 2


@app.callback()
def _root() -> None:
    """Find, schedule and watch learning rates (lrkit COMMAND --help for each)."""


def err_console() -> Console:
    """Console on stderr (progress, summaries when --json owns stdout)."""
    return Console(stderr=True)


def _as_typed(text: str, names: Sequence[str]) -> str:
    """An error message with parameter names as the options are typed
    (``num_steps`` -> ``--num-steps``)."""
    for name in names:
        text = text.replace(name, "--" + name.replace("_", "-"))
    return text


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``lrkit: error: <message>`` as one line on stderr and exit."""
    # one line, without the terminal colour codes some libraries put in their
    # messages (Keras wraps its own in bold)
    one_line = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(message)).split())
    sys.stderr.write(f"lrkit: error: {one_line}\n")
    raise typer.Exit(code)


def print_json(record: Any) -> None:
    """Print ``record`` as JSON on stdout (NaN/inf become null)."""
    from ._util import json_clean

    sys.stdout.write(json.dumps(json_clean(record), indent=2) + "\n")


def out_dir(path: Path) -> Path:
    """Create ``path`` if needed; exit with a one-line error if impossible
    (checked before any work is done)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out must be a writable directory, got --out={str(path)!r} ({e}).")
    if not os.access(path, os.W_OK | os.X_OK):
        fail(f"--out must be a writable directory, got --out={str(path)!r}.")
    return path


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Write the output file ``path``; an ``OSError`` (a directory in the way,
    a full disk) becomes a one-line error."""
    try:
        yield path
    except OSError as e:
        fail(f"cannot write {str(path)!r}: {e.strerror or e}.", EXIT_RUNTIME)


def interactive() -> bool:
    """Whether a bar or spinner may be drawn (see :func:`lrkit._util.interactive`)."""
    from ._util import interactive as on_terminal

    return on_terminal()


@contextlib.contextmanager
def stdout_to_stderr(active: bool = True) -> Iterator[None]:
    """While active, what user code prints (``print``, a library's progress
    lines, a C extension's writes to file descriptor 1) goes to stderr, so that
    stdout holds only the ``--json`` document."""
    if not active:
        yield
        return
    sys.stdout.flush()
    saved: int | None = None
    try:
        saved = os.dup(1)
        os.dup2(2, 1)
    except (OSError, ValueError):  # no real descriptors (an embedding host)
        saved = None
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


def _drop_stdout() -> None:
    """Send what is still to be written on stdout nowhere (its reader left)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # pragma: no cover - no descriptor
        pass


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Print on stdout; a reader that left (``lrkit diagnose log | head -1``)
    ends the output quietly: the rest is dropped and the command goes on to its
    own exit code (``--exit-code``'s verdict included), with no traceback and
    no ``BrokenPipeError`` message at exit."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        _drop_stdout()


class OutConsole(Console):
    """The console of a command's output on stdout: when its reader leaves
    (a closed pipe), it falls silent instead of exiting with code 1 as
    ``rich`` does, so that the command keeps its own exit code."""

    def on_broken_pipe(self) -> None:
        _drop_stdout()
        self.quiet = True


OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="Directory for figures and records."),
]
JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print a machine-readable JSON record on stdout."),
]


# ============================================================================ find
# (owned by the range-test code: lrkit find)

_TASK_KEYS = ("model", "optimizer", "loss_fn", "train_loader", "val_loader")
_PASS_THROUGH = (
    "compute_loss",
    "unpack",
    "amp",
    "accumulation_steps",
    "device",
    "max_grad_norm",
    "reference_group",
)


def _load_factory(target: str) -> Any:
    """Import ``module.path:factory``; one-line errors (exit 2) when impossible."""
    import importlib

    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        fail(
            f"TARGET must be 'module.path:factory', got TARGET={target!r}. "
            "Example: lrkit find my_pkg.tasks:make_task"
        )
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: the current directory imports
    if module_name.endswith(".py"):  # a file name where a module is meant
        module_name = module_name[:-3].replace("/", ".").replace("\\", ".")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        parts = module_name.split(".")
        named = {".".join(parts[: i + 1]) for i in range(len(parts))}
        if e.name in named:  # TARGET names no module: a usage error
            fail(f"cannot import module {module_name!r} of TARGET={target!r}: {e}")
        fail(_import_failed(module_name, target, e), EXIT_RUNTIME)
    except Exception as e:  # the module itself failed (a syntax error, a
        # missing dependency, a file it reads): its failure, not a usage error
        fail(_import_failed(module_name, target, e), EXIT_RUNTIME)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            fail(
                f"module {module_name!r} has no attribute {attr!r} (TARGET={target!r})."
            )
        obj = getattr(obj, part)
    if not callable(obj):
        fail(f"TARGET must name a callable factory, got {target!r} = {obj!r}.")
    return obj


def _import_failed(module_name: str, target: str, e: BaseException) -> str:
    """The one line for a module of TARGET that raised while it was imported
    (a SyntaxError names its file and line itself)."""
    return (
        f"importing module {module_name!r} of TARGET={target!r} failed: "
        f"{type(e).__name__}: {e}"
    )


#: Tasks of the other adapters, told apart by a key only they have:
#: (framework, that key, the keys needed, all keys).
_OTHER_TASKS = (
    (
        "Keras",
        "x",
        ("model", "x"),
        ("model", "x", "y", "batch_size", "sample_weight", "validation_data"),
    ),
    (
        "scikit-learn",
        "estimator",
        ("estimator", "X", "y"),
        ("estimator", "X", "y", "batch_size", "sample_weight", "validation_data"),
    ),
)


def _framework(parts: dict[str, Any]) -> str:
    """``"torch"``, ``"Keras"`` or ``"scikit-learn"``: whose find_lr runs the task."""
    return next((name for name, key, _, _ in _OTHER_TASKS if key in parts), "torch")


def _task_parts(task: Any, target: str) -> dict[str, Any]:
    """Normalise what a factory returned into find_lr's arguments (a dict with
    ``x`` is a Keras task, one with ``estimator`` a scikit-learn task)."""
    for name, key, needed, known in _OTHER_TASKS:
        if not (isinstance(task, dict) and key in task):
            continue
        missing = [k for k in needed if k not in task]
        if missing:
            fail(
                f"the factory {target!r} returned a {name} task (key {key}) without "
                f"{', '.join(missing)}; its keys: {', '.join(known)} "
                f"({' and '.join(needed)} needed)."
            )
        unknown = set(task) - set(known)
        if unknown:
            fail(
                f"the factory {target!r} returned unknown keys {sorted(unknown)} "
                f"for a {name} task; known: {', '.join(known)}."
            )
        return dict(task)
    if isinstance(task, dict):
        # no loss_fn: the model computes its own (Hugging Face style: .loss)
        missing = [k for k in ("model", "optimizer", "train_loader") if k not in task]
        if missing:
            fail(
                f"the factory {target!r} must return a dict with keys model, "
                "optimizer, train_loader (loss_fn optional for a model that "
                "returns its loss; val_loader optional), got keys "
                f"{sorted(task)}; missing {missing}."
            )
        unknown = set(task) - set(_TASK_KEYS) - set(_PASS_THROUGH)
        if unknown:
            fail(
                f"the factory {target!r} returned unknown keys {sorted(unknown)}; "
                f"known: {', '.join((*_TASK_KEYS, *_PASS_THROUGH))}."
            )
        return dict(task)
    if isinstance(task, (tuple, list)) and len(task) in (4, 5):
        return dict(zip(_TASK_KEYS, task, strict=False))
    fail(
        f"the factory {target!r} must return (model, optimizer, loss_fn, "
        f"train_loader[, val_loader]) or a dict with those keys (PyTorch), a dict "
        f"with model and x (Keras) or with estimator, X and y (scikit-learn), got "
        f"{_described(task)}."
    )


def _described(value: Any) -> str:
    """What a factory returned, in words: ``a tuple of 3 items``, ``None``."""
    if value is None:
        return "None"
    kind = type(value).__name__
    article = "an" if kind[:1].lower() in "aeiou" else "a"
    if isinstance(value, (tuple, list)):
        return f"{article} {kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"{article} {kind}"


@app.command()
def find(
    target: Annotated[
        str | None,
        typer.Argument(
            help="Your task as module.path:factory (default: the embedded demo). "
            "The factory returns (model, optimizer, loss_fn, train_loader"
            "[, val_loader]) or a dict with those keys; for Keras, a dict with "
            "a compiled model and x (y, batch_size, validation_data optional); "
            "for scikit-learn, a dict with an MLP estimator, X and y.",
            show_default=False,
        ),
    ] = None,
    start_lr: Annotated[float, typer.Option(help="First LR of the ladder.")] = 1e-7,
    end_lr: Annotated[float, typer.Option(help="Last LR of the ladder.")] = 10.0,
    num_steps: Annotated[
        int | None,
        typer.Option(
            help="Optimizer steps, one LR each (default: 25 per decade of the "
            "ladder, 200 for 1e-7..10).",
            show_default=False,
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="Ladder spacing: exp or linear.")] = "exp",
    rule: Annotated[
        str, typer.Option(help="Suggestion rule: lrkit, valley, steepest, minimum.")
    ] = "lrkit",
    val: Annotated[
        bool, typer.Option("--val/--no-val", help="Use the task's val_loader.")
    ] = True,
    amp: Annotated[
        str | None, typer.Option(help="Autocast: bf16 or fp16.", show_default=False)
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="Device, e.g. cuda or cpu.", show_default=False)
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(help="Passed to the factory as seed= (the demo uses it)."),
    ] = None,
    confirm_steps: Annotated[
        int,
        typer.Option(
            help="When the confidence is below 0.5, train this many steps at the "
            "suggestion and at 3x it and keep the better (about 10% of your run; "
            "0: off)."
        ),
    ] = 0,
    out: OutOption = Path("."),
    json_out: JsonOption = False,
) -> None:
    """Run an LR range test and suggest a learning rate.

    With no TARGET it runs the embedded demo (handwritten digits, a small MLP).
    Writes lr_find.png and lr_find.json under --out (the curve so far when the
    test fails or is interrupted).
    """
    import time

    from . import _check
    from .suggest import RULES

    for flag, given, choices in (
        ("--rule", rule, sorted(RULES)),
        ("--mode", mode, ["exp", "linear"]),
    ):
        if given not in choices:
            listed = ", ".join(repr(c) for c in choices)
            fail(_check.message(flag, f"one of {listed}", given))
    # with --json, stdout is the record's alone: what the user's module, its
    # factory and the training print goes to stderr
    with stdout_to_stderr(json_out):
        if target is None:
            from .demo import make_task as factory

            target_name = "lrkit.demo:make_task"
        else:
            factory = _load_factory(target)
            target_name = target
        out = out_dir(out)
        args = {} if seed is None else {"seed": seed}
        try:  # a call its signature refuses is a usage error; one inside it, not
            inspect.signature(factory).bind(**args)
        except TypeError as e:
            fail(f"calling the factory {target_name!r} failed: {e}")
        except ValueError:  # no signature to read (a builtin): the call tells
            pass
        try:
            task = factory(**args)
        except Exception as e:
            fail(
                f"the factory {target_name!r} raised {type(e).__name__}: {e}",
                EXIT_RUNTIME,
            )
        parts = _task_parts(task, target_name)
        framework = _framework(parts)
        if not val:
            parts.pop("val_loader", None)
            parts.pop("validation_data", None)
        for key, value in (("amp", amp), ("device", device)):
            if value is not None and framework != "torch":
                fail(f"--{key} is for PyTorch tasks, not for a {framework} task.")
            if value is not None:
                parts[key] = value
        if framework != "torch" and confirm_steps:
            fail("--confirm-steps is for PyTorch tasks (lrkit.find_lr).")
        if framework == "torch":
            parts["confirm_steps"] = confirm_steps

        run: Any
        try:
            if framework == "Keras":
                from .keras import find_lr as keras_find_lr

                def run(**kw: Any) -> Any:
                    return keras_find_lr(
                        parts.pop("model"), parts.pop("x"), **kw, **parts
                    )
            elif framework == "scikit-learn":
                from .sklearn import find_lr as sklearn_find_lr

                def run(**kw: Any) -> Any:
                    return sklearn_find_lr(
                        parts.pop("estimator"),
                        parts.pop("X"),
                        parts.pop("y"),
                        **kw,
                        **parts,
                    )
            else:
                from . import find_lr

                def run(**kw: Any) -> Any:
                    return find_lr(
                        parts.pop("model"),
                        parts.pop("optimizer"),
                        parts.pop("loss_fn", None),
                        parts.pop("train_loader"),
                        **kw,
                        **parts,
                    )
        except ImportError as e:  # torch, keras or scikit-learn missing
            fail(str(e), EXIT_RUNTIME)

        t0 = time.perf_counter()
        error: tuple[str, int] | None = None  # reported once the bar is gone
        partial: Any = None  # the curve recorded before a failure or Ctrl-C
        try:  # a bar on a terminal only (not in a log file, a pipe or CI)
            result = run(
                start_lr=start_lr,
                end_lr=end_lr,
                num_steps=num_steps,
                mode=mode,
                suggest=rule,
                progress=interactive(),
            )
        except KeyboardInterrupt as e:
            partial = getattr(e, "lrkit_range_test", None)
            error = ("interrupted", 130)
        except (ValueError, TypeError) as e:
            partial = getattr(e, "lrkit_range_test", None)
            if not _check.is_ours(e):  # the framework failed inside the test
                error = (
                    f"the range test failed: {type(e).__name__}: {e}",
                    EXIT_RUNTIME,
                )
            else:
                error = (_typed_error(str(e), amp, device), EXIT_USAGE)
        except Exception as e:
            partial = getattr(e, "lrkit_range_test", None)
            error = (f"the range test failed: {type(e).__name__}: {e}", EXIT_RUNTIME)
    if error is not None:
        _fail_keeping(error, partial, out)
    elapsed = time.perf_counter() - t0

    with writing(out / "lr_find.json") as json_path:
        result.save(json_path)
    with writing(out / "lr_find.png") as png_path:
        result.plot(png_path)
    with reader_may_leave():
        if json_out:
            record = result.to_dict()
            record["task"] = target_name
            record["files"] = {"json": str(json_path), "png": str(png_path)}
            print_json(record)
            return
        _print_find_summary(result, target_name, elapsed, json_path, png_path)


def _fail_keeping(error: tuple[str, int], partial: Any, out: Path) -> NoReturn:
    """Exit with ``error`` (``("interrupted", 130)`` for Ctrl-C), first saving
    the curve the range test recorded before it, when there is one, as
    ``lr_find.json`` and ``lr_find.png`` under ``out``; the one line says so."""
    message, code = error
    saved = ""
    if partial is not None and len(getattr(partial, "lrs", ())):
        try:
            json_path = out / "lr_find.json"
            partial.save(json_path)
            files = str(json_path)
            try:  # the figure is a bonus: the record is what counts
                png_path = out / "lr_find.png"
                partial.plot(png_path)
                files = f"{json_path} and {png_path}"
            except (Exception, KeyboardInterrupt):  # a second Ctrl-C: skipped
                pass
            saved = (
                f"the curve so far ({len(partial.lrs)} steps, LR "
                f"{partial.lrs[0]:.3g} to {partial.lrs[-1]:.3g}) is saved in {files}"
            )
        except Exception as e:  # a full disk: the first error still counts
            saved = f"the curve so far could not be saved: {e}"
    if code == 130:
        one_line = f"lrkit: interrupted; {saved}" if saved else "lrkit: interrupted"
        sys.stderr.write(one_line + "\n")
        raise SystemExit(130)
    fail(f"{message.rstrip('.')}; {saved}." if saved else message, code)


def _typed_error(text: str, amp: str | None, device: str | None) -> str:
    """An argument error of find_lr with the options named as they were typed."""
    text = _as_typed(text, ("start_lr", "end_lr", "num_steps", "confirm_steps"))
    for name, typed in (("amp", amp), ("device", device)):
        if typed is not None:  # given on the command line
            text = text.replace(f"{name} must", f"--{name} must")
            text = text.replace(f"got {name}=", f"got --{name}=")
            text = text.replace("None, 'bf16' or 'fp16'", "'bf16' or 'fp16'")
    return text


def _print_find_summary(
    result: Any, target: str, elapsed: float, json_path: Path, png_path: Path
) -> None:
    from rich.panel import Panel
    from rich.table import Table

    from .plot import range_test_terminal

    console = OutConsole()

    def fmt(x: float | None) -> str:
        return "none" if x is None else f"{x:.3g}"

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("task", target)
    table.add_row("suggested LR", f"[bold green]{fmt(result.suggestion)}[/]")
    if result.low is not None:
        table.add_row("range", f"{fmt(result.low)} .. {fmt(result.high)}")
    table.add_row("confidence", f"{result.confidence:.2f}")
    table.add_row(
        "stopped",
        f"{result.stop_reason} at LR {fmt(result.lrs[-1] if result.lrs else None)}",
    )
    steps = f"{result.steps_done} optimizer steps"
    confirm_s = result.timings.get("confirm")
    if confirm_s is not None:  # the short runs ran: their steps and time apart
        k = int(result.settings.extra.get("confirm_steps") or 0)
        test_s = max(elapsed - confirm_s, 0.0)
        steps += f" in {test_s:.1f} s, then 2 short runs of {k} in {confirm_s:.1f} s"
    else:
        steps += f" in {elapsed:.1f} s"
    table.add_row("steps", steps)
    for i, reason in enumerate(result.reasons):
        table.add_row("why" if i == 0 else "", reason)
    info = result.suggestion_info
    if (
        info is not None
        and info.lr is not None
        and result.confidence < 0.5
        and not result.settings.extra.get("confirm_steps")
    ):
        table.add_row(
            "next",
            "low confidence: sweep around it (lrkit.sweep: docs/find.md)"
            if result.settings.extra.get("framework") in ("keras", "sklearn")
            else "low confidence: rerun with --confirm-steps N (about a tenth of "
            "your run) to settle it with two short runs, or sweep around it "
            "(lrkit.sweep: docs/find.md)",
        )
    console.print(Panel(table, title="lrkit find", expand=False))
    console.print(range_test_terminal(result), markup=False, highlight=False)
    console.print("S = suggested LR; smoothed training loss vs LR (log scale)")
    console.print(f"wrote {png_path} and {json_path}")


# ======================================================================== schedule
# (owned by the schedules code: lrkit schedule)


EXIT_LINT = 1  # `lrkit schedule --lint` found something


#: Previews up to this many steps list every step's LR; longer ones a sample.
EVERY_STEP_MAX = 1_000_000
#: Evenly spaced steps of a sampled preview (milestones and their neighbours
#: are added).
SAMPLES = 20_001


def _schedule_record(
    spec: str, schedule: Any, steps: int, base_lr: float, lint_on: bool, lint_kw: Any
) -> dict[str, Any]:
    from ._lint import lint, milestones

    found = milestones(schedule, steps)
    if steps <= EVERY_STEP_MAX:
        grid: Sequence[int] = range(steps)
    else:  # sampled: evenly, and around each milestone
        points = {round(i * (steps - 1) / (SAMPLES - 1)) for i in range(SAMPLES)}
        for t, _ in found:
            points.update(x for x in (t - 1, t, t + 1) if 0 <= x < steps)
        grid = sorted(points)
    lrs = [base_lr * float(schedule(t)) for t in grid]
    peak_i = max(range(len(lrs)), key=lrs.__getitem__)
    low_i = min(range(len(lrs)), key=lrs.__getitem__)
    peak, low = grid[peak_i], grid[low_i]
    marks = dict(found)
    marks.setdefault(peak, "peak")
    for q in (1, 2, 3):
        marks.setdefault(q * steps // 4, f"{25 * q}%")
    try:
        config: Any = schedule.to_config()
    except TypeError:
        config = None
    record: dict[str, Any] = {
        "spec": spec,
        **(
            {"lrs": lrs}
            if steps <= EVERY_STEP_MAX
            else {"sample": {"steps": list(grid), "lrs": lrs}}
        ),
        "end_step": schedule.end_step,
        "config": config,
        "summary": {
            "first": lrs[0],
            "last": lrs[-1],
            "peak": lrs[peak_i],
            "peak_step": peak,
            "min": lrs[low_i],
            "min_step": low,
        },
        "milestones": [
            {"step": t, "label": label, "lr": base_lr * float(schedule(t))}
            for t, label in sorted(marks.items())
        ],
    }
    if lint_on:
        record["warnings"] = [
            {"code": w.code, "message": w.message, "step": w.step}
            for w in lint(schedule, steps, **lint_kw)
        ]
    return record


@app.command("schedule")
def schedule_command(
    specs: Annotated[
        list[str],
        typer.Argument(
            help="Schedule in text form, e.g. "
            "'warmup(500) >> cosine(total_steps=10000, end_lr=1e-5)'. "
            "Several are overlaid.",
            show_default=False,
        ),
    ],
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps",
            "-n",
            help="Optimizer steps to preview (default: the schedules' end_step).",
        ),
    ] = None,
    base_lr: Annotated[
        float | None,
        typer.Option(
            "--base-lr",
            help="LR the schedule multiplies (1: the values are absolute LRs); "
            "without it the values are shown as LR multipliers.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Directory for schedule.png."),
    ] = None,
    json_: JsonOption = False,
    lint_: Annotated[
        bool,
        typer.Option(
            "--lint", help="Check for known footguns; exit code 1 if any is found."
        ),
    ] = False,
    plateau: Annotated[
        str | None,
        typer.Option(
            "--plateau",
            help="With --lint: the plateau settings, e.g. 'plateau(patience=10)'.",
        ),
    ] = None,
    eval_every: Annotated[
        int | None,
        typer.Option("--eval-every", help="With --plateau: steps between evaluations."),
    ] = None,
    log: Annotated[bool, typer.Option("--log", help="Log-scale LR axis.")] = False,
) -> None:
    """Preview schedules: table, sparkline, PNG (--out), every step's LR (--json).

    --json prints {"steps", "base_lr", "lrs", "spec", "config", "summary",
    "milestones", ...} for one spec, and {"steps", "base_lr", "schedules": (a
    list of one such record per spec)} for several; above 1 000 000 steps
    "sample": {"steps", "lrs"} replaces "lrs" (a sample of the schedule).
    --lint adds "warnings" and exits with code 1 when there are any (0 when
    clean); bad input exits with code 2.
    """
    from ._parse import ScheduleSyntaxError, parse_plateau, parse_schedule

    parsed = []
    for spec in specs:
        try:
            parsed.append(parse_schedule(spec))
        except ScheduleSyntaxError as e:
            fail(e.one_line())
    multiplier = base_lr is None  # the schedule's own values
    base_lr = 1.0 if base_lr is None else base_lr
    if not (base_lr >= 0 and base_lr < float("inf")):
        fail(f"--base-lr must be a finite number >= 0, got --base-lr={base_lr!r}.")
    if steps is None:
        ends = [s.end_step for s in parsed]
        open_ended = [spec for spec, e in zip(specs, ends, strict=True) if e is None]
        if open_ended:
            fail(
                f"--steps is needed: {open_ended[0]!r} has no end_step "
                "(it never settles); give --steps N."
            )
        steps = max(e for e in ends if e is not None)
        if steps == 0:
            which = repr(specs[0]) + " is" if len(specs) == 1 else "every schedule is"
            fail(
                f"--steps is needed: {which} constant from step 0 (end_step 0), "
                "so there is no length to preview; give --steps N."
            )
    if steps < 1:
        fail(f"--steps must be an int >= 1, got --steps={steps}.")
    lint_kw: dict[str, Any] = {}
    if plateau is not None or eval_every is not None:
        if not lint_:
            fail("--plateau and --eval-every are used with --lint; add --lint.")
        if plateau is None or eval_every is None:
            fail("--plateau and --eval-every go together; give both.")
        if eval_every < 1:
            fail(f"--eval-every must be an int >= 1, got --eval-every={eval_every}.")
        try:
            lint_kw = {
                "plateau": parse_plateau(plateau),
                "eval_every_steps": eval_every,
            }
        except ScheduleSyntaxError as e:
            fail(e.one_line())

    records = [
        _schedule_record(spec, s, steps, base_lr, lint_, lint_kw)
        for spec, s in zip(specs, parsed, strict=True)
    ]
    figure = None
    if out is not None:
        from .plot import plot_schedules

        with writing(out_dir(out) / "schedule.png") as figure:
            plot_schedules(
                {r["spec"]: _curve(r)[1] for r in records},
                figure,
                log=log,
                steps={r["spec"]: _curve(r)[0] for r in records},
                ylabel="LR multiplier" if multiplier else "learning rate",
            )
    n_warnings = sum(len(r.get("warnings", [])) for r in records)

    with reader_may_leave():
        if json_:
            head: dict[str, Any] = {"steps": steps, "base_lr": base_lr}
            if figure is not None:
                head["figure"] = str(figure)
            print_json(
                {**head, **records[0]}
                if len(records) == 1
                else {**head, "schedules": records}
            )
        else:
            _print_schedules(records, steps, base_lr, figure)
    if lint_ and n_warnings:
        raise typer.Exit(EXIT_LINT)


def _curve(record: Mapping[str, Any]) -> tuple[Sequence[int], Sequence[float]]:
    """A preview record's steps and LRs (every step, or the sample)."""
    if "lrs" in record:
        return range(len(record["lrs"])), record["lrs"]
    return record["sample"]["steps"], record["sample"]["lrs"]


def _print_schedules(
    records: list[dict[str, Any]], steps: int, base_lr: float, figure: Path | None
) -> None:
    from rich.table import Table

    from .plot import schedule_sparkline

    console = OutConsole(soft_wrap=True)
    for r in records:
        s = r["summary"]
        console.print(f"[bold]{r['spec']}[/bold]", highlight=False)
        sampled = (
            f" (sampled: {len(r['sample']['steps'])} steps)" if "sample" in r else ""
        )
        console.print(
            f"  {steps} steps, base_lr {base_lr:g}, end_step {r['end_step']}{sampled}",
            highlight=False,
        )
        console.print("  " + schedule_sparkline(_curve(r)[1], width=min(64, steps)))
        table = Table(show_edge=False, pad_edge=False, box=None)
        table.add_column("  step", justify="right")
        table.add_column("lr", justify="right")
        table.add_column("")
        for m in r["milestones"]:
            table.add_row(f"  {m['step']}", f"{m['lr']:.6g}", m["label"])
        console.print(table)
        console.print(
            f"  first {s['first']:.6g}  peak {s['peak']:.6g} @ step {s['peak_step']}  "
            f"min {s['min']:.6g} @ step {s['min_step']}  last {s['last']:.6g}",
            highlight=False,
        )
        for w in r.get("warnings", []):
            console.print(f"  [yellow]warning[/yellow] {w['code']}: {w['message']}")
        if "warnings" in r and not r["warnings"]:
            console.print("  lint: no warnings")
        console.print()
    if figure is not None:
        err_console().print(f"wrote {figure}")


# ======================================================================== diagnose
# (owned by the monitor code: lrkit diagnose)

_VERDICT_STYLE = {
    "healthy": "bold green",
    "overfitting": "bold yellow",
    "lr too low": "bold yellow",
    "lr too high": "bold red",
    "diverged": "bold red",
    "too short": "bold",
}
_SEVERITY_STYLE = {"info": "cyan", "warning": "yellow", "critical": "red"}


def _evidence_text(evidence: dict[str, float], limit: int = 3) -> str:
    parts = []
    for key, value in list(evidence.items())[:limit]:
        if isinstance(value, float) and value.is_integer() and abs(value) < 1e9:
            parts.append(f"{key}={int(value)}")
        else:
            parts.append(f"{key}={value:.3g}")
    return ", ".join(parts)


@app.command()
def diagnose(
    file: Annotated[
        Path,
        typer.Argument(
            help="A training log: CSV (Lightning metrics.csv, Keras, any "
            "step,loss,... file), JSON lines, Hugging Face trainer_state.json, "
            "Keras history JSON, TensorBoard event files (a file or a "
            "directory), an MLflow run (mlruns/<exp>/<run>, or mlflow.db; "
            "mlflow.db/<run> picks one of several), or console output "
            "(train.log: 'loss: 0.52' pairs).",
            show_default=False,
        ),
    ],
    loss_key: Annotated[
        str | None,
        typer.Option(
            help="Column of the training loss, or a sum: 'ce_loss+kl_loss'.",
            show_default=False,
        ),
    ] = None,
    val_key: Annotated[
        str | None,
        typer.Option(help="Column of the validation loss.", show_default=False),
    ] = None,
    lr_key: Annotated[
        str | None,
        typer.Option(help="Column of the learning rate.", show_default=False),
    ] = None,
    grad_norm_key: Annotated[
        str | None,
        typer.Option(help="Column of the gradient norm.", show_default=False),
    ] = None,
    step_key: Annotated[
        str | None,
        typer.Option(help="Column of the step.", show_default=False),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            help="Directory for the figure (diagnose.png); none written without it.",
            show_default=False,
        ),
    ] = None,
    resumed: Annotated[
        bool,
        typer.Option(
            "--resumed",
            help="The log starts mid-run (a resumed run): no 'nothing learned "
            "since the start' judgement.",
        ),
    ] = False,
    baseline_loss: Annotated[
        float | None,
        typer.Option(
            "--baseline-loss",
            help="The loss of a model that learned nothing (ln(classes) for "
            "cross-entropy, e.g. 2.303 for 10): a run counts as recovered from a "
            "blow-up only below it.",
            show_default=False,
        ),
    ] = None,
    classes: Annotated[
        int | None,
        typer.Option(
            "--classes",
            help="A classifier over this many classes trained with cross-entropy: "
            "the same as --baseline-loss ln(classes).",
            show_default=False,
        ),
    ] = None,
    exit_code: Annotated[
        bool,
        typer.Option(
            "--exit-code",
            help="Exit with 3 when the verdict names a problem (diverged, lr too "
            "high, lr too low, overfitting), for CI jobs; 0 for healthy or too "
            "short (1: could not run, 2: bad input).",
        ),
    ] = False,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Change a monitor threshold, NAME=VALUE (repeatable), e.g. "
            "--set spike_z=10 for heavy-tailed batch losses; the names are the "
            "fields of lrkit.MonitorConfig (docs/monitor.md).",
            show_default=False,
        ),
    ] = None,
    json_out: JsonOption = False,
) -> None:
    """Diagnose learning-rate problems from a training log.

    Prints a verdict (healthy, diverged, lr too high, lr too low, overfitting,
    too short) and the findings with advice in LR terms; --json prints them as JSON.
    """
    from . import _check
    from ._check import LRKitError
    from .logs import read_log
    from .monitor import diagnose as run_diagnose

    console = err_console()
    if classes is not None:
        if classes < 2:
            fail(_check.message("--classes", "an int >= 2", classes))
        if baseline_loss is not None:
            fail(
                _check.message(
                    "--baseline-loss",
                    "left out when --classes is given",
                    baseline_loss,
                    f"--classes {classes} means --baseline-loss "
                    f"{math.log(classes):.4g}; give one of them.",
                )
            )
        baseline_loss = math.log(classes)
    if baseline_loss is not None and not math.isfinite(baseline_loss):
        fail(_check.message("--baseline-loss", "finite", baseline_loss))

    def busy(text: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner on a terminal (a million-line log takes seconds)."""
        return console.status(text) if interactive() else contextlib.nullcontext()

    # with --json, stdout is the record's alone: nothing a log reader's
    # library prints (TensorBoard, MLflow) goes there
    with stdout_to_stderr(json_out):
        error: tuple[str, int] | None = None  # reported once the spinner is gone
        with busy(f"reading {file}"):
            try:
                history = read_log(
                    file,
                    loss_key=loss_key,
                    val_key=val_key,
                    lr_key=lr_key,
                    grad_norm_key=grad_norm_key,
                    step_key=step_key,
                )
            except ImportError as e:
                error = (str(e), EXIT_RUNTIME)
            except LRKitError as e:  # LogFormatError: names the file and line
                error = (str(e), EXIT_USAGE)
            except (ValueError, TypeError) as e:  # a --*-key naming no column
                keys = ("loss_key", "val_key", "lr_key", "grad_norm_key", "step_key")
                error = (_as_typed(str(e), keys), EXIT_USAGE)
        if error is not None:
            fail(*error)
        settings = _monitor_settings(set_ or [])
        with busy(f"diagnosing {len(history.loss):,} logged losses"):
            try:
                result = run_diagnose(
                    history, resumed=resumed, baseline_loss=baseline_loss, **settings
                )
            except (ValueError, TypeError) as e:  # a threshold out of its range
                error = (f"--set: {e}", EXIT_USAGE)
        if error is not None:
            fail(*error)
    figure: str | None = None
    if out is not None:
        directory = out_dir(out)
        from .plot import diagnosis_figure

        with writing(directory / "diagnose.png") as target:
            diagnosis_figure(history, result, path=target)
        figure = str(target)
    if json_out:
        record = result.to_dict()
        record["file"] = str(file)
        record["columns"] = dict(history.columns)
        record["notes"] = list(history.notes)
        record["figure"] = figure
        with reader_may_leave():
            print_json(record)
        _verdict_exit(exit_code, result.verdict)
        return
    with reader_may_leave():
        _print_diagnosis(result, history, file, figure)
    _verdict_exit(exit_code, result.verdict)


def _print_diagnosis(result: Any, history: Any, file: Path, figure: str | None) -> None:
    """The verdict, the findings table and the advice, on stdout."""
    from rich.table import Table

    console = OutConsole()
    style = _VERDICT_STYLE.get(result.verdict, "bold")
    console.print(f"[{style}]{result.verdict}[/]  {result.summary}", highlight=False)
    columns = ", ".join(f"{k}={v!r}" for k, v in history.columns.items())
    # a directory: the log in it that was read (the latest checkpoint's, ...)
    source = history.source if history.source and file.is_dir() else str(file)
    console.print(
        f"read {len(history)} steps from {source} ({columns})",
        style="dim",
        highlight=False,
    )
    for note in history.notes:
        console.print(f"note: {note}", style="yellow", highlight=False)
    if result.findings:
        table = Table(show_lines=False)
        table.add_column("kind")
        table.add_column("steps", justify="right")
        table.add_column("severity")
        table.add_column("evidence")
        for f in result.findings:
            span = (
                str(f.first_step)
                if f.first_step == f.last_step
                else f"{f.first_step}-{f.last_step}"
            )
            table.add_row(
                f.kind,
                span,
                f"[{_SEVERITY_STYLE.get(f.severity, '')}]{f.severity}[/]",
                _evidence_text(dict(f.evidence)),
            )
        console.print(table)
    # the verdict's advice (what to do about the run as a whole), then each
    # kind's own (what its first finding means, at the LR it was raised at)
    console.print(f"[bold]advice[/]: {result.advice}", highlight=False)
    seen: set[str] = set()
    for f in result.findings:
        if f.kind not in seen:
            seen.add(f.kind)
            if f.advice.strip() != result.advice.strip():  # said once, above
                console.print(f"{f.kind}: {f.advice}", highlight=False)
    for f in result.withdrawn:
        why = (
            f.advice[:1].lower() + f.advice[1:]
            if f.kind == "nan"
            else "the run converged within its length (its loss flattened "
            "before it ended)."
        )
        console.print(
            f"withdrawn once the run was over: {f.kind} (steps {f.first_step}-"
            f"{f.last_step}), which a monitor watching it live showed: {why}",
            style="dim",
            highlight=False,
        )
    if figure is not None:
        console.print(f"figure: {figure}", highlight=False)


EXIT_PROBLEM = 3  # `lrkit diagnose --exit-code` found an LR problem


def _verdict_exit(wanted: bool, verdict: str) -> None:
    """With ``--exit-code``, exit 3 when the verdict names a problem."""
    if wanted and verdict not in ("healthy", "too short"):
        raise typer.Exit(EXIT_PROBLEM)


# ============================================================================ main


def _monitor_settings(pairs: list[str]) -> dict[str, Any]:
    """``--set NAME=VALUE`` pairs as MonitorConfig fields of the right type."""
    import dataclasses

    from .monitor import MonitorConfig

    fields = {
        f.name: f.type for f in dataclasses.fields(MonitorConfig) if f.name != "resumed"
    }
    out: dict[str, Any] = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or name not in fields:
            names = ", ".join(sorted(fields))
            fail(
                f"--set must be NAME=VALUE with NAME one of {names}, "
                f"got --set={pair!r}."
            )
        whole = str(fields[name]) in ("int", "<class 'int'>")
        try:
            out[name] = int(text) if whole else float(text)
        except ValueError:
            expected = "a whole number" if whole else "a number"
            fail(f"--set {name} must be {expected}, got --set={pair!r}.")
    return out


def _click_exceptions() -> Any:
    """The click exceptions typer raises (typer >= 0.29 vendors its own click)."""
    import importlib

    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # pragma: no cover - older typer on click
        return importlib.import_module("click.exceptions")


def main() -> None:
    """Entry point of the ``lrkit`` console script.

    Usage errors (an unknown option, a missing argument, a value of the wrong
    type) are one line ``lrkit: error: ...`` with exit code 2, like every other
    bad input; ``lrkit`` alone prints the help.
    """
    ex = _click_exceptions()
    no_args = getattr(ex, "NoArgsIsHelpError", ())
    try:
        code = app(standalone_mode=False, prog_name="lrkit")
    except no_args as e:
        sys.stdout.write(e.ctx.get_help() + "\n")
        raise SystemExit(0) from None
    except ex.UsageError as e:
        command = e.ctx.command_path if e.ctx is not None else "lrkit"
        if command == "lrkit":  # an option of a command that lacks its value
            commands = {
                c.name or getattr(c.callback, "__name__", "")
                for c in app.registered_commands
            }
            named = [a for a in sys.argv[1:] if a in commands]
            command = f"lrkit {named[0]}" if named else command
        one_line = " ".join(e.format_message().split())
        sys.stderr.write(f"lrkit: error: {one_line} (see '{command} --help')\n")
        raise SystemExit(EXIT_USAGE) from None
    except typer.Abort:
        sys.stderr.write("lrkit: aborted\n")
        raise SystemExit(130) from None
    except MemoryError:
        sys.stderr.write(
            "lrkit: error: out of memory (a smaller --steps, or a shorter log)\n"
        )
        raise SystemExit(EXIT_USAGE) from None
    if code == 130:  # typer turns Ctrl-C into Exit(130), silently
        sys.stderr.write("lrkit: interrupted\n")
    raise SystemExit(code if isinstance(code, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()
