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


# ======================================================================== diagnose
# (owned by the monitor code: lrkit diagnose)


# ============================================================================ main


def main() -> None:
    """Entry point of the ``lrkit`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
