"""Small numeric and serialisation helpers shared by the framework-free core.

Example:
    >>> robust_noise([1.0, 1.1, 0.9, 1.0, 1.1])  # doctest: +ELLIPSIS
    0.1048...
    >>> json_clean({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _check

__all__ = [
    "Batches",
    "IndexBatches",
    "check_progress",
    "json_clean",
    "known_len",
    "out_path",
    "progress_hook",
    "robust_noise",
    "write_json",
]


def robust_noise(values: Sequence[float] | np.ndarray[Any, Any]) -> float:
    """Step-to-step noise of a series, robust to outliers and to a slow trend.

    ``sigma = median(|y[i+1] - y[i]|) / (0.6745 * sqrt(2))``: the median absolute
    first difference, scaled so that it estimates the standard deviation of
    independent Gaussian noise. Returns 0 for fewer than 3 values.
    """
    y = np.asarray(values, dtype=np.float64)
    if len(y) < 3:
        return 0.0
    return float(np.median(np.abs(np.diff(y))) / (0.6745 * math.sqrt(2.0)))


def json_clean(value: Any) -> Any:
    """``value`` with NaN and infinities replaced by ``None`` (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): json_clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_clean(v) for v in value]
    return value


def check_progress(progress: Any) -> None:
    """Validate a ``progress`` argument: True, False, None or a callable."""
    if progress is not None and not isinstance(progress, bool):
        _check.callable_(
            "progress",
            progress,
            "pass True for a progress bar, False for none, or a function "
            "called with each report",
        )


_bar_active = False  # one bar at a time: a range test inside a sweep adds none


def interactive() -> bool:
    """Whether a progress bar or spinner may be drawn: stderr is a terminal
    (``isatty``, not what ``FORCE_COLOR`` claims) and no CI runs the command
    (``CI`` unset, empty, ``0`` or ``false``). A log file, a pipe or a CI job's
    console never get one."""
    try:
        tty = os.isatty(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):  # replaced, closed: no terminal
        tty = False
    return tty and os.environ.get("CI", "").strip().lower() in ("", "0", "false")


@contextlib.contextmanager
def progress_hook(
    progress: Any, label: str, show: Callable[[Any], tuple[int, int, str]]
) -> Iterator[Callable[[Any], None] | None]:
    """The per-report hook for a ``progress`` argument.

    A callable is returned as it is; ``False`` or ``None`` give no hook; ``True``
    gives a transient progress bar on stderr when it is a terminal or a
    notebook (nothing in a log file or under CI), labelled ``label``, which
    ``show(report) -> (done, total, text)`` updates. Inside another of lrkit's
    bars (a range test in a sweep's training function), or while another
    live display of ``rich`` is on screen, ``True`` shows nothing.
    """
    global _bar_active
    if callable(progress) and not isinstance(progress, bool):
        yield progress
        return
    if progress is not True or _bar_active:
        yield None
        return
    from rich.console import Console
    from rich.errors import LiveError
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True)
    # (not console.is_terminal: FORCE_COLOR makes rich claim a terminal, and
    # the bar's frames would fill a log file)
    if not (interactive() or console.is_jupyter):
        yield None
        return
    bar = Progress(
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[text]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    try:
        bar.start()
    except LiveError:  # the caller's own rich display is on screen
        yield None
        return
    job = bar.add_task(label, total=None, text="")

    def hook(report: Any) -> None:
        done, total, text = show(report)
        bar.update(job, completed=done, total=total, text=text)

    _bar_active = True
    try:
        yield hook
    finally:
        _bar_active = False
        bar.stop()


def out_path(path: str | Path) -> Path:
    """``path`` as a Path, its missing parent directories made (a result's
    ``save`` or ``plot`` to ``runs/today/lr.png``)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _check.fail(
            "path",
            "a file path whose directory exists or can be made",
            str(path),
            f"Making {str(path.parent)!r} failed: {e.strerror or e}.",
            exc=OSError,
        )
    return path


def write_json(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``record`` as indented JSON to ``path`` (a result's ``save``;
    missing parent directories are made)."""
    path = out_path(path)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path


class Batches:
    """Endless iteration over a loader: restarts it when exhausted.

    A one-shot iterator (a generator) cannot restart: when it runs out, the
    error says so (its batches are consumed; they cannot be given back).
    """

    def __init__(self, loader: Iterable[Any], name: str) -> None:
        self.loader = loader
        self.name = name
        self.it: Iterator[Any] | None = None
        self.taken = 0

    def __next__(self) -> Any:
        if self.it is None:
            self.it = iter(self.loader)
        try:
            batch = next(self.it)
        except StopIteration:
            # an iterator (a generator) cannot restart; asking iter() of a
            # DataLoader would start a new epoch and draw from its generator
            if isinstance(self.loader, Iterator):
                if self.taken == 0:
                    _check.fail(
                        self.name,
                        "a loader that yields at least one batch",
                        self.loader,
                    )
                _check.fail(
                    self.name,
                    "a loader that can be iterated again (a DataLoader, a list) "
                    "when it holds fewer batches than the test takes",
                    f"a {type(self.loader).__name__} that ran out after "
                    f"{self.taken} batches",
                    shown=True,
                )
            self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                _check.fail(
                    self.name, "a loader that yields at least one batch", self.loader
                )
        self.taken += 1
        return batch


def attach_partial(error: BaseException, name: str, result: Any, note: str) -> None:
    """Give ``error`` the work done before it: ``result`` as its attribute
    ``name`` and ``note`` as a note (Python 3.11+), so an exception or Ctrl-C
    does not lose it."""
    try:
        setattr(error, name, result)
    except AttributeError:  # pragma: no cover - an exception with __slots__
        return
    add_note = getattr(error, "add_note", None)
    if add_note is not None:
        add_note(note)


def known_len(obj: Any) -> int | None:
    """``len(obj)`` when it has one (a DataLoader over an IterableDataset may not)."""
    try:
        return len(obj)
    except TypeError:
        return None


class IndexBatches:
    """Row indices of full batches of ``size`` out of ``n`` rows, in an order
    drawn from ``seed`` (each pass over the rows reshuffled; a batch may span
    two passes, so every batch is full).

    Example:
        >>> batches = IndexBatches(5, 2, seed=0)
        >>> sorted(int(i) for _ in range(5) for i in batches.next())  # two passes
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    """

    def __init__(self, n: int, size: int, seed: int) -> None:
        self.n, self.size = n, size
        self.rng = np.random.default_rng(seed)
        self.order: np.ndarray[Any, Any] = np.array([], dtype=np.int64)

    def next(self) -> np.ndarray[Any, Any]:
        if len(self.order) < self.size:
            self.order = np.concatenate([self.order, self.rng.permutation(self.n)])
        index, self.order = self.order[: self.size], self.order[self.size :]
        return index
