"""The ``lrkit`` command: ``find``, ``schedule`` and ``diagnose``.

Conventions shared by every command:

- ``--json`` prints one machine-readable JSON document on stdout and nothing else
  there (progress and messages go to stderr);
- ``--out DIR`` is where figures and records are written;
- bad input prints one line ``lrkit: error: ...`` on stderr and exits with code 2;
  a failure while running exits with code 1. No tracebacks for user errors.
"""

from __future__ import annotations

import json
import sys
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


def err_console() -> Console:
    """Console on stderr (progress, summaries when --json owns stdout)."""
    return Console(stderr=True)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Print ``lrkit: error: <message>`` as one line on stderr and exit."""
    one_line = " ".join(str(message).split())
    sys.stderr.write(f"lrkit: error: {one_line}\n")
    raise typer.Exit(code)


def print_json(record: Any) -> None:
    """Print ``record`` as JSON on stdout (NaN/inf become null)."""
    sys.stdout.write(json.dumps(_json_safe(record), indent=2) + "\n")


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def out_dir(path: Path) -> Path:
    """Create ``path`` if needed; exit with a one-line error if impossible."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        fail(f"--out must be a writable directory, got --out={str(path)!r} ({e}).")
    return path


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


# ======================================================================== schedule
# (owned by the schedules code: lrkit schedule)


EXIT_LINT = 1  # `lrkit schedule --lint` found something

if app.registered_callback is None:  # keep `lrkit schedule` a subcommand even
    # when it is the only command registered (typer collapses single-command apps)

    @app.callback()
    def _commands() -> None:
        pass


def _schedule_record(
    spec: str, schedule: Any, steps: int, base_lr: float, lint_on: bool, lint_kw: Any
) -> dict[str, Any]:
    from ._lint import lint, milestones

    lrs = [base_lr * float(schedule(t)) for t in range(steps)]
    peak = max(range(steps), key=lrs.__getitem__)
    low = min(range(steps), key=lrs.__getitem__)
    marks = dict(milestones(schedule, steps))
    marks.setdefault(peak, "peak")
    for q in (1, 2, 3):
        marks.setdefault(q * steps // 4, f"{25 * q}%")
    try:
        config: Any = schedule.to_config()
    except TypeError:
        config = None
    record: dict[str, Any] = {
        "spec": spec,
        "lrs": lrs,
        "end_step": schedule.end_step,
        "config": config,
        "summary": {
            "first": lrs[0],
            "last": lrs[-1],
            "peak": lrs[peak],
            "peak_step": peak,
            "min": lrs[low],
            "min_step": low,
        },
        "milestones": [
            {"step": t, "label": label, "lr": lrs[t]}
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
        float,
        typer.Option("--base-lr", help="LR the schedule multiplies (1: absolute)."),
    ] = 1.0,
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
    "milestones", ...} for one spec, and {"steps", "base_lr", "schedules": [one
    such record per spec]} for several. --lint adds "warnings" and exits with
    code 1 when there are any (0 when clean); bad input exits with code 2.
    """
    from ._parse import ScheduleSyntaxError, parse_plateau, parse_schedule

    parsed = []
    for spec in specs:
        try:
            parsed.append(parse_schedule(spec))
        except ScheduleSyntaxError as e:
            fail(e.one_line())
    if not (base_lr >= 0 and base_lr < float("inf")):
        fail(f"--base-lr must be a finite number >= 0, got --base-lr={base_lr!r}.")
    if steps is None:
        ends = [s.end_step for s in parsed]
        open_ended = [spec for spec, e in zip(specs, ends, strict=True) if not e]
        if open_ended:
            fail(
                f"--steps is needed: {open_ended[0]!r} has no end_step "
                "(it never settles); give --steps N."
            )
        steps = max(e for e in ends if e)
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

        figure = out_dir(out) / "schedule.png"
        plot_schedules({r["spec"]: r["lrs"] for r in records}, figure, log=log)
    n_warnings = sum(len(r.get("warnings", [])) for r in records)

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


def _print_schedules(
    records: list[dict[str, Any]], steps: int, base_lr: float, figure: Path | None
) -> None:
    from rich.table import Table

    from .plot import schedule_sparkline

    console = Console(soft_wrap=True)
    for r in records:
        s = r["summary"]
        console.print(f"[bold]{r['spec']}[/bold]", highlight=False)
        console.print(
            f"  {steps} steps, base_lr {base_lr:g}, end_step {r['end_step']}",
            highlight=False,
        )
        console.print("  " + schedule_sparkline(r["lrs"], width=min(64, steps)))
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


# ============================================================================ main


def main() -> None:
    """Entry point of the ``lrkit`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
