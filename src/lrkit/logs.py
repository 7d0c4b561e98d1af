"""Read training logs into one :class:`History`.

Supported formats (picked from the file name and content, or forced with
``format=``):

- ``csv``: any CSV with a header row: Lightning's ``CSVLogger`` ``metrics.csv``
  (sparse rows: train and validation metrics on separate rows), Keras'
  ``CSVLogger`` (one row per epoch), or a generic ``step,loss,val_loss,lr,
  grad_norm`` file. Empty cells mean "not logged on this row". Cells are
  separated by ``,``, a tab or ``;`` (sniffed); with ``;`` (European
  spreadsheets), decimal commas are read (``0,52``). TensorBoard's "download CSV"
  (``Wall time,Step,Value``) names ``Value`` after the tag in its file name
  (``run-version_0-tag-train_loss.csv``).
- ``jsonl``: JSON lines, one object per line (nested objects are flattened with
  ``/``), as written by most ad-hoc loggers.
- ``hf``: Hugging Face ``trainer_state.json`` (its ``log_history``), or a directory
  holding one (the newest ``checkpoint-*`` is used when the directory has several);
  also any whole-file JSON holding a list of records, or columns: an object of
  equal-purpose lists such as Keras' ``history.history`` saved with
  ``json.dump`` (``{"loss": [...], "val_loss": [...]}``, one entry per epoch).
- ``text``: console output (a file other than ``.csv``/``.tsv``/``.json``/
  ``.jsonl`` whose content is neither JSON nor a table; ``.log`` files are
  sniffed, as Keras' ``CSVLogger`` writes a CSV there): every ``name: value``,
  ``name=value`` or ``name value`` pair on a line, as printed by Keras
  (``loss: 0.52 - val_loss: 0.61``), nanoGPT-style loops (``iter 100: loss
  2.34, time 12ms``), the Hugging Face Trainer's printed dicts (``{'loss':
  2.3, 'learning_rate': 5e-05}``) or Lightning's progress bar
  (``train_loss=0.512``; a tqdm bar's redraws of one count are one record,
  and a validation or per-epoch loss it repeats on every redraw is read once
  an update),
  Megatron-LM (``iteration 100/ 500000 | ... | learning rate: 3.0E-04 | ... |
  lm loss: 3.5E+00 |``, ``validation loss at iteration 100 | lm loss value:
  3.4E+00 |``). A step (``step``, ``iter``,
  ``epoch`` ...) on a line applies to that line; one on a line without a loss
  (Keras' ``Epoch 3/10``) applies to the lines after it (an ``Epoch 1/5`` after
  a finished epoch starts another ``fit()``, whose epochs follow). A loss name
  after a validation word on its line (``| valid on 'valid' subset | loss
  8.1``, ``Test set: Average loss``) is a validation loss (``loss`` becomes
  ``val loss``); docs/monitor.md has every rule.
- ``tensorboard``: TensorBoard event files or a directory of them (every run below
  it; tags are prefixed with the run's sub-directory when there are several).
  Read with TensorBoard's own ``EventAccumulator``: ``pip install 'lrkit[logs]'``.
- ``mlflow``: an MLflow run, read without MLflow: a file-store run folder
  (``mlruns/<experiment id>/<run id>/``: one file per metric under
  ``metrics/``, nested keys in sub-folders, lines ``timestamp value step``), its
  ``metrics/`` folder, or an experiment folder or ``mlruns/`` holding one run
  with metrics; or MLflow's SQLite tracking database (``mlflow.db``, opened
  read-only) holding one. With several runs the error lists them, the most
  recent first: pass a run's folder, or ``mlflow.db/<run id or run name>``. A
  metric logged without steps (all at MLflow's default step 0) is placed in
  logging order, at the training loss logged last before each value.

Columns are picked by name (see :data:`KEYS`): the training loss, the validation
loss, the learning rate, the gradient norm and the step. Names are compared after
lower-casing and turning ``/ - . space`` into ``_``, so ``train/loss`` and
``train_loss`` are the same name. Each pick can be overridden (``loss_key=`` ...).

Every series keeps its own steps, so a validation loss logged every epoch and a
training loss logged every step stay exact. When a series logs the same step twice
(a resumed run appending to its log), the last value wins. A file that cannot be
read raises :class:`LogFormatError` naming the file and, where it applies, the line.

Example:
    >>> import pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
    >>> _ = path.write_text("step,loss,val_loss\\n0,2.3,\\n1,2.1,2.2\\n2,1.9,\\n")
    >>> h = read_log(path)
    >>> h.steps.tolist(), h.loss.tolist(), h.val_steps.tolist()
    ([0, 1, 2], [2.3, 2.1, 1.9], [1])
    >>> h.columns["loss"], h.columns["val_loss"]
    ('loss', 'val_loss')
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import functools
import itertools
import json
import math
import re
import sqlite3
import sys
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _check
from ._check import LRKitError

__all__ = ["KEYS", "History", "LogFormatError", "read_log"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FORMATS = ("csv", "jsonl", "hf", "tensorboard", "mlflow", "text")

#: Column names tried in order for each series (after normalisation: lower case,
#: ``/ - . space`` turned into ``_``). When none matches, a fallback rule applies:
#: see :func:`read_log`.
KEYS: Mapping[str, tuple[str, ...]] = {
    "step": (
        "step",
        "global_step",
        "trainer_global_step",
        "_step",
        "iteration",
        "training_iteration",
        "iter",
        "it",
        "steps",
        "num_updates",
        "updates",
        "batch",
        "epoch",
    ),
    "loss": (
        "loss",
        "train_loss",
        "train_loss_step",
        "training_loss",
        "loss_train",
        "loss_step",
        "train_batch_loss",
        "batch_loss",
        "train_epoch_loss",
        "epoch_loss",
        "train_loss_epoch",
    ),
    "val_loss": (
        "val_loss",
        "valid_loss",
        "validation_loss",
        "eval_loss",
        "loss_val",
        "loss_valid",
        "loss_validation",
        "val_loss_epoch",
        "validation_epoch_loss",
        "val_epoch_loss",
    ),
    "lr": ("lr", "learning_rate", "train_lr", "train_learning_rate", "lr_step"),
    "grad_norm": (
        "grad_norm",
        "gradient_norm",
        "grad_norm_total",
        "train_grad_norm",
        "total_grad_norm",
        "global_grad_norm",
        "grad_2_0_norm_total",
        "gradnorm",
        "gnorm",
    ),
}

_STEPS_OF = {"val_loss": "val_steps", "lr": "lr_steps", "grad_norm": "grad_norm_steps"}

_VAL_WORDS = ("val", "valid", "validation", "eval", "test", "dev")

# cells that mean "not logged on this row"
_MISSING = frozenset({"na", "n/a", "none", "null", "-"})


class LogFormatError(LRKitError):
    """A log file could not be read: names the file and, where known, the line.

    Attributes:
        path: the file (or directory) being read.
        line: the 1-based line number of the problem, or ``None``.
        reason: what is wrong, in words.
    """

    def __init__(self, path: str | Path, reason: str, line: int | None = None):
        self.path = str(path)
        self.line = line
        self.reason = " ".join(reason.split())
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {self.reason}")


def _as_float_array(name: str, values: Any) -> FloatArray:
    try:
        arr: FloatArray = np.array(values, dtype=np.float64)
    except (TypeError, ValueError):
        _check.fail(name, "a sequence of real numbers", values, exc=TypeError)
    if arr.ndim != 1:
        _check.fail(name, "one-dimensional", values)
    arr.setflags(write=False)
    return arr


def _as_step_array(name: str, values: Any, n: int) -> IntArray:
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        _check.fail(name, f"a sequence of {n} ints (one per value)", values)
    if len(arr) and not np.issubdtype(arr.dtype, np.integer):
        as_float = arr.astype(np.float64)
        if not np.all(np.isfinite(as_float)) or np.any(as_float != np.round(as_float)):
            _check.fail(name, "whole numbers", values, exc=TypeError)
        if np.any(np.abs(as_float) >= 2.0**63):
            _check.fail(name, "whole numbers below 2**63", values)
    out: IntArray = np.array(arr, dtype=np.int64)
    if len(out) > 1 and np.any(np.diff(out) <= 0):
        _check.fail(name, "strictly increasing", values)
    if len(out) and out[0] < 0:
        _check.fail(name, ">= 0 everywhere", values)
    out.setflags(write=False)
    return out


@dataclass(frozen=True, eq=False, init=False)
class History:
    """A training run's logged curves; every series keeps its own steps.

    Attributes:
        steps: steps of the training loss (strictly increasing ints >= 0).
        loss: the training loss at ``steps`` (NaN/inf kept: they are findings).
        val_steps, val_loss: the validation loss and its steps (empty when absent).
        lr_steps, lr: the learning rate and its steps (empty when absent).
        grad_norm_steps, grad_norm: the gradient norm and its steps (empty when
            absent).
        source: where it was read from (a path, or ``""`` for arrays).
        columns: the column name used for each series that was found, e.g.
            ``{"step": "step", "loss": "train_loss_step", "val_loss": "val_loss"}``.
        notes: what the reader did that changes what you see, in words (a
            partial last line skipped, a run's restarted steps continued,
            logs of several runs in one folder); empty when nothing.

    A series given without steps uses ``steps`` (it must then have one value per
    training step). Arrays are read-only numpy arrays.

    Example:
        >>> h = History(loss=[3.0, 2.0, 1.5], val_loss=[2.5], val_steps=[2])
        >>> h.steps.tolist(), len(h)
        ([0, 1, 2], 3)
    """

    loss: FloatArray
    steps: IntArray
    val_loss: FloatArray
    val_steps: IntArray
    lr: FloatArray
    lr_steps: IntArray
    grad_norm: FloatArray
    grad_norm_steps: IntArray
    source: str
    columns: Mapping[str, str]
    notes: tuple[str, ...]

    def __init__(
        self,
        *,
        loss: npt.ArrayLike,
        steps: npt.ArrayLike | None = None,
        val_loss: npt.ArrayLike | None = None,
        val_steps: npt.ArrayLike | None = None,
        lr: npt.ArrayLike | None = None,
        lr_steps: npt.ArrayLike | None = None,
        grad_norm: npt.ArrayLike | None = None,
        grad_norm_steps: npt.ArrayLike | None = None,
        source: str = "",
        columns: Mapping[str, str] | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        loss_arr = _as_float_array("loss", loss)
        n = len(loss_arr)
        step_arr = _as_step_array(
            "steps", np.arange(n, dtype=np.int64) if steps is None else steps, n
        )
        given = {
            "val_loss": (val_loss, val_steps),
            "lr": (lr, lr_steps),
            "grad_norm": (grad_norm, grad_norm_steps),
        }
        series: dict[str, tuple[FloatArray, IntArray]] = {}
        for name, (values, at) in given.items():
            at_name = _STEPS_OF[name]
            if values is None:
                if at is not None and len(np.asarray(at)):
                    _check.fail(at_name, f"empty when {name} is None", at)
                values, at = [], []
            arr = _as_float_array(name, values)
            if at is None:
                if len(arr) != n:
                    _check.fail(
                        at_name,
                        "given",
                        None,
                        f"{name} has {len(arr)} values and loss {n}; pass "
                        f"{at_name} to say when each {name} value was logged.",
                    )
                at = step_arr
            series[name] = (arr, _as_step_array(at_name, at, len(arr)))
        if not isinstance(source, str):
            _check.fail("source", "a str", source, exc=TypeError)
        set_ = object.__setattr__
        set_(self, "loss", loss_arr)
        set_(self, "steps", step_arr)
        for name, (arr, at_arr) in series.items():
            set_(self, name, arr)
            set_(self, _STEPS_OF[name], at_arr)
        set_(self, "source", source)
        set_(self, "columns", dict(columns or {}))
        set_(self, "notes", tuple(str(n) for n in notes))

    def __len__(self) -> int:
        return len(self.loss)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (lists of numbers; NaN stays NaN)."""
        return {
            "source": self.source,
            "columns": dict(self.columns),
            "notes": list(self.notes),
            "steps": self.steps.tolist(),
            "loss": self.loss.tolist(),
            "val_steps": self.val_steps.tolist(),
            "val_loss": self.val_loss.tolist(),
            "lr_steps": self.lr_steps.tolist(),
            "lr": self.lr.tolist(),
            "grad_norm_steps": self.grad_norm_steps.tolist(),
            "grad_norm": self.grad_norm.tolist(),
        }


# --------------------------------------------------------------------------- keys


@functools.lru_cache(maxsize=4096)
def _norm(key: str) -> str:
    return re.sub(r"[/\-. ]+", "_", key.strip().lower())


def _is_val(nkey: str) -> bool:
    parts = nkey.split("_")
    return any(w in parts for w in _VAL_WORDS)


def _key_param(series: str) -> str:
    """The ``read_log`` argument that names ``series``'s column."""
    return "val_key" if series == "val_loss" else f"{series}_key"


def _is_loss_tag(key: str) -> bool:
    """``key`` alone would be read as a training loss."""
    return _pick("loss", [key], None, Path()) is not None


def _pick(
    series: str, keys: Sequence[str], override: str | None, path: Path
) -> str | None:
    """The column used for ``series``: the override, a known name, or a fallback."""
    if override is not None:
        if override in keys:
            return override
        by_norm = [k for k in keys if _norm(k) == _norm(override)]
        if by_norm:
            return by_norm[0]
        if "+" in override and series in ("loss", "val_loss"):  # a sum of columns
            parts = [_pick(series, keys, p.strip(), path) for p in override.split("+")]
            return "+".join(p for p in parts if p is not None)
        listed = ", ".join(repr(k) for k in keys) or "none"
        _check.fail(
            _key_param(series), f"a column of {path} (found: {listed})", override
        )
    normed: dict[str, str] = {}
    for k in keys:
        normed.setdefault(_norm(k), k)
    for cand in KEYS[series]:
        if cand in normed:
            return normed[cand]
    # Fallback rules, all by name.
    if series == "loss":
        found = [k for k in keys if "loss" in _norm(k) and not _is_val(_norm(k))]
        per_step = [k for k in found if "epoch" not in _norm(k)]
        found = per_step or found
        if len(found) > 1:
            # prefer a name ending in "loss" or "loss_step" (the per-step value)
            ending = [k for k in found if re.search(r"loss(_step)?$", _norm(k))]
            found = ending if len(ending) == 1 else found
        totals = [k for k in found if "total" in _norm(k).split("_")]
        if len(found) > 1 and len(totals) == 1:
            return totals[0]  # the total beside its parts
        if len(found) > 1 and not _components(found):
            listed = ", ".join(repr(k) for k in found)
            raise LogFormatError(
                path,
                f"several columns could be the training loss ({listed}); "
                "choose one with loss_key= (--loss-key), or a sum: 'a+b'.",
            )
        return "+".join(found) if found else None
    if series == "val_loss":
        found = [k for k in keys if "loss" in _norm(k) and _is_val(_norm(k))]
        per_step = [k for k in found if "epoch" not in _norm(k)]
        found = found if len(found) == 1 else per_step or found
        totals = [k for k in found if "total" in _norm(k).split("_")]
        if len(found) > 1 and len(totals) == 1:
            return totals[0]
        if len(found) > 1 and _eval_sets(found):
            return found[0]  # several validation sets: the first (a note says)
        if len(found) > 1 and _components(found):
            return "+".join(found)
        return found[0] if len(found) == 1 else None
    if series == "lr":
        found = [
            k
            for k in keys
            if re.match(r"^(lr|learning_rate)_", _norm(k))
            or re.search(r"_(lr|learning_rate)$", _norm(k))
        ]
        return sorted(found)[0] if found else None
    if series == "grad_norm":
        found = [k for k in keys if "grad" in _norm(k) and "norm" in _norm(k)]
        return found[0] if len(found) == 1 else None
    return None


def _eval_sets(names: Sequence[str]) -> bool:
    """Validation losses of several evaluation sets, as the Hugging Face
    Trainer names them with a dict of ``eval_dataset`` (``eval_<name>_loss``):
    other data, not parts of one loss."""
    return len(names) > 1 and all(re.fullmatch(r"eval_[^_/]+_loss", n) for n in names)


def _components(names: Sequence[str]) -> bool:
    """Several loss columns that are parts of one loss: the same name but for
    one word before ``loss``, after a common prefix (``train/box_loss``,
    ``train/cls_loss``, ``train/dfl_loss``), as detection trainers log them with
    no total. Their plain sum is read, whatever weights the objective gives
    them; bare names without a prefix (``ce_loss``, ``kl_loss``) are left for
    the user to choose."""
    shapes = {re.sub(r"_[a-z0-9]+_loss", "_*_loss", _norm(n)) for n in names}
    return len(shapes) == 1 and "_*_loss" in next(iter(shapes))


# ------------------------------------------------------------------------ records


# thousands separated by commas that cannot be a decimal comma: with a decimal
# point ("10,584.4") or two groups ("1,234,567"), never after a leading 0
# ("2,300" and "0,466" stay errors: pandas' decimal="," writes such cells; a
# decimal comma is read in ';'-separated files only)
_THOUSANDS = re.compile(
    r"[-+]?[1-9]\d{0,2}(?:(?:,\d{3}){2,}(?:\.\d*)?|,\d{3}\.\d*)(?:[eE][-+]?\d+)?"
)


def _number(value: Any) -> float | None:
    """A cell's value: None when missing, else a float (NaN/inf allowed)."""
    if value is None:
        return None
    if type(value) is str:  # the common case first: a plain number's text
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        s = value.strip()
        if not s or s.lower() in _MISSING:  # Keras' CSVLogger writes NA
            return None
        if _THOUSANDS.fullmatch(s):  # a spreadsheet's "10,584.4"
            s = s.replace(",", "")
        return float(s)  # raises ValueError for text
    raise ValueError(f"not a number: {value!r}")


def _is_number_cell(value: Any) -> bool:
    try:
        _number(value)
    except ValueError:
        return False
    return True


def _parts(rows: Sequence[tuple[int, Mapping[str, Any]]], key: str) -> list[str]:
    """The columns a picked name reads: itself, or the parts of a sum ``a+b``."""
    if "+" not in key or any(key in row for _, row in rows):
        return [key]
    return key.split("+")


def _cell(row: Mapping[str, Any], parts: Sequence[str]) -> float | None:
    """A row's value for ``parts`` (summed); None when any part is missing."""
    if len(parts) == 1:
        return _number(row.get(parts[0]))
    cells = [_number(row.get(part)) for part in parts]
    if any(c is None for c in cells):
        return None
    return float(sum(c for c in cells if c is not None))


def _implicit_steps(
    rows: Sequence[tuple[int, Mapping[str, Any]]], loss_key: str
) -> list[int]:
    """Steps for a log without a step column: each record belongs to the latest
    training-loss row at or before it (the first loss row is step 0)."""
    steps: list[int] = []
    seen = 0
    parts = _parts(rows, loss_key)
    for _, row in rows:
        seen += _has(row, parts)  # a bad cell is reported when the loss is read
        steps.append(max(seen - 1, 0))
    return steps


def _series(
    rows: Sequence[tuple[int, Mapping[str, Any]]],
    key: str,
    step_key: str | None,
    path: Path,
    implicit: Sequence[int],
    stepless: list[int] | None = None,
) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` over ``rows`` = (line, record) pairs; without a
    step column, record ``i`` is at step ``implicit[i]``. A value on a row
    without a step is an error, or, with ``stepless`` (a list), left out and
    its line appended there."""
    steps: list[int] = []
    values: list[float] = []
    parts = _parts(rows, key)
    for index, (line, row) in enumerate(rows):
        try:
            v = _cell(row, parts)
        except ValueError:
            bad = next(p for p in parts if not _is_number_cell(row.get(p)))
            raise LogFormatError(
                path, f"column {bad!r} holds {row.get(bad)!r}, not a number", line
            ) from None
        if v is None:
            continue
        if step_key is None:
            step = implicit[index]
        else:
            try:
                s = _number(row.get(step_key))
            except ValueError:
                raise LogFormatError(
                    path,
                    f"column {step_key!r} holds {row.get(step_key)!r}, not a number",
                    line,
                ) from None
            if s is None:
                if stepless is not None:
                    stepless.append(line)
                    continue
                raise LogFormatError(
                    path, f"{key!r} is logged without a {step_key!r} value", line
                )
            if not math.isfinite(s) or s != int(s) or not 0 <= s < 2.0**63:
                raise LogFormatError(
                    path,
                    f"{step_key!r} must be a whole number in [0, 2**63), got {s!r}",
                    line,
                )
            step = int(s)
        steps.append(step)
        values.append(v)
    return steps, values


def _dedupe(steps: list[int], values: list[float]) -> tuple[list[int], list[float]]:
    """Sort by step; the last value logged for a step wins."""
    last: dict[int, float] = {}
    for s, v in zip(steps, values, strict=True):
        last[s] = v
    order = sorted(last)
    return order, [last[s] for s in order]


def _build(
    records: Sequence[tuple[int, Mapping[str, Any]]],
    keys: Sequence[str],
    path: Path,
    overrides: Mapping[str, str | None],
    notes: Sequence[str] = (),
    run: str = "",
) -> History:
    """The History of ``records``; ``run``: the run of a folder of several the
    keys belong to (``columns`` then names them as that folder does)."""
    if not records:
        raise LogFormatError(path, "the log holds no records (is it empty?)")
    notes = list(notes)
    records, keys = _split_rows(records, keys, notes)
    step_key = _pick("step", keys, overrides.get("step"), path)
    loss_key = _pick("loss", keys, overrides.get("loss"), path)
    if loss_key is None:
        listed = ", ".join(repr(k) for k in keys) or "none"
        raise LogFormatError(
            path,
            f"no training-loss column found (columns: {listed}); "
            "name it with loss_key= (--loss-key).",
        )
    if step_key is not None:
        records, step_key = _steps_in_order(
            records, step_key, overrides.get("step") is not None, loss_key, notes
        )
    picked: dict[str, str] = {"loss": loss_key}
    if step_key is not None:
        picked["step"] = step_key
    for series in ("val_loss", "lr", "grad_norm"):
        key = _pick(series, keys, overrides.get(series), path)
        if key is not None and key != loss_key and key != step_key:
            picked[series] = key
        sets = [k for k in keys if _is_val(_norm(k)) and "loss" in _norm(k)]
        if series == "val_loss" and overrides.get(series) is None and _eval_sets(sets):
            notes.append(
                f"several validation sets ({', '.join(map(repr, sets))}): "
                f"{key!r} is read; choose another with val_key= (--val-key)"
            )
    data: dict[str, Any] = {}
    implicit = _implicit_steps(records, loss_key) if step_key is None else []
    for series, key in picked.items():
        if series == "step":
            continue
        # the training loss must have its steps; another series logged on
        # rows of its own without them (Lightning's LR monitor, when the
        # step column is 'epoch') is read where it has one
        stepless: list[int] | None = None if series == "loss" else []
        logged = _series(records, key, step_key, path, implicit, stepless)
        if stepless:
            notes.append(
                f"{len(stepless)} value(s) of {key!r} have no {step_key!r} "
                f"value (first on line {stepless[0]}): left out"
            )
        steps, values = _dedupe(*logged)
        if series == "loss":
            if not values:
                raise LogFormatError(path, f"column {key!r} holds no values")
            again = len(logged[0]) - len(steps)
            if again:
                notes.append(
                    f"{again} training losses were logged at a step already "
                    "logged (a run resumed from a checkpoint): the later ones "
                    "are read"
                )
            data["steps"], data["loss"] = steps, values
        else:
            data[_STEPS_OF[series]], data[series] = steps, values
    if run:
        picked = {k: v if k == "step" else _with_run(v, run) for k, v in picked.items()}
    return History(source=str(path), columns=picked, notes=notes, **data)


_SPLIT_KEYS = ("split", "phase", "mode", "stage", "subset", "partition")


def _split_rows(
    records: Sequence[tuple[int, Mapping[str, Any]]],
    keys: Sequence[str],
    notes: list[str],
) -> tuple[Sequence[tuple[int, Mapping[str, Any]]], Sequence[str]]:
    """Rows that name their data split in a column (``{"split": "val",
    "loss": 0.4}``, as loggers that write one record per phase do): where it
    names both training and validation rows, the loss columns of the
    validation rows are read as validation losses (``loss`` -> ``val_loss``)."""
    for key in keys:
        if _norm(key) not in _SPLIT_KEYS:
            continue
        labels = {
            row[key].strip().lower()
            for _, row in records
            if isinstance(row.get(key), str)
        }
        val = {lb for lb in labels if _is_val(_norm(lb))}
        if not val or not labels - val:  # both kinds, or it is something else
            continue
        renamed: dict[str, str] = {}
        out: list[tuple[int, Mapping[str, Any]]] = []
        for line, row in records:
            label = row.get(key)
            if isinstance(label, str) and label.strip().lower() in val:
                new: dict[str, Any] = {}
                for k, v in row.items():
                    if k != key and "loss" in _norm(k) and not _is_val(_norm(k)):
                        renamed[k] = new_key = f"val_{k}"
                        new[new_key] = v
                    else:
                        new[k] = v
                row = new
            out.append((line, row))
        if not renamed:
            continue
        notes.append(
            f"rows whose {key!r} is {' or '.join(sorted(val))} are validation "
            "rows: their "
            + ", ".join(f"{k!r} is read as {v!r}" for k, v in renamed.items())
        )
        added = [v for v in renamed.values() if v not in keys]
        return out, [*keys, *added]
    return records, keys


def _steps_in_order(
    records: Sequence[tuple[int, Mapping[str, Any]]],
    step_key: str,
    chosen: bool,
    loss_key: str,
    notes: list[str],
) -> tuple[Sequence[tuple[int, Mapping[str, Any]]], str | None]:
    """The records with their steps as one run's.

    - An ``epoch`` column picked as the step that holds fractions (0.05,
      0.1, ...: logged within epochs) is not a step: the n-th logged loss is
      step n (a note says so). Other step columns, and one named with
      ``step_key``, must hold whole numbers.
    - A step column that goes back to its first value, on a row with a
      training loss, after it had moved on (Keras' ``epoch`` when a second
      ``fit()`` appends to the same ``CSVLogger`` file) starts a
      continuation of the run: its steps follow
      on from the last one (a note says where); unless the loss there is
      nearer where the earlier run began than where it ended (or that one
      ended non-finite): a new run from scratch appended to the log (a
      script run twice), and only the last run is read. A step column that goes back
      to a later step (a run resumed from a checkpoint) is left alone: the
      values logged later win.
    """
    values = []
    for _, row in records:
        try:
            values.append(_number(row.get(step_key)))
        except ValueError:
            return records, step_key  # reported with its line later
    numbers = [v for v in values if v is not None and math.isfinite(v)]
    fractional = any(v != int(v) for v in numbers)
    if not chosen and fractional and _norm(step_key).split("_")[-1] == "epoch":
        frac = next(v for v in numbers if v != int(v))
        notes.append(
            f"the step column {step_key!r} holds fractions ({frac:g}): the n-th "
            "logged loss is read as step n"
        )
        return records, None
    if not numbers or fractional:
        return records, step_key
    parts = _parts(records, loss_key)
    # the step of the first training loss: where each fit starts logging it
    first = next(
        (
            v
            for (_, row), v in zip(records, values, strict=True)
            if v is not None and math.isfinite(v) and _has(row, parts)
        ),
        None,
    )
    if first is None:
        return records, step_key
    top = raw_top = -math.inf  # the highest step so far: shifted, as logged
    gap = math.inf  # the smallest step between two training losses
    last: float | None = None
    offset = 0.0
    losses = 0  # training losses read so far
    out: list[tuple[int, Mapping[str, Any]]] = []
    seg_start: float | None = None  # the first training loss of this segment
    seg_last: float | None = None  # the latest one
    new_run = False
    # an epoch column beside the step: a step that starts again when it moves
    # on is a count within the epoch (a loop's batch index), not another fit
    epoch_key = next(
        (k for _, r in records for k in r if _norm(k) == "epoch" and k != step_key),
        None,
    )
    prev_epoch: float | None = None
    per_epoch = 0  # restarts at a new epoch
    for (line, row), v in zip(records, values, strict=True):
        has_loss = _has(row, parts)
        epoch = None
        if epoch_key is not None:
            try:
                epoch = _number(row.get(epoch_key))
            except ValueError:
                epoch = None
        x = _loss_or_none(row, parts) if has_loss else None
        if v is not None and math.isfinite(v):
            # back at the first step, once the steps had moved past it
            if raw_top > first and losses and has_loss and v == first:
                if _starts_over(x, seg_start, seg_last):
                    # the loss is back where the log began: a new run from
                    # scratch appended (a script run twice), not a second fit
                    notes.append(
                        f"the step column {step_key!r} starts again at {first:g} "
                        f"on line {line} and the loss with it ({x:.4g}, against "
                        f"{seg_start:.4g} where the earlier run began and "
                        f"{seg_last:.4g} where it ended): a new run appended to "
                        f"the log; only the last run, from line {line}, is read"
                    )
                    out, offset, new_run = [], 0.0, True
                    top = raw_top = -math.inf
                    gap, last, losses, seg_start = math.inf, None, 0, None
                else:
                    offset = top - first + (gap if math.isfinite(gap) else 1.0)
                    if (
                        epoch is not None
                        and prev_epoch is not None
                        and epoch > prev_epoch
                    ):
                        per_epoch += 1  # said once, below
                    else:
                        notes.append(
                            f"the step column {step_key!r} starts again at "
                            f"{first:g} on line {line} (another fit appended to "
                            "the log): read as the run's continuation, from step "
                            f"{int(first + offset)}"
                        )
            elif has_loss and last is not None and v > last:
                gap = min(gap, v - last)
            shifted = v + offset
            top, raw_top = max(top, shifted), max(raw_top, v)
            if has_loss:
                last = v
            if offset:
                row = {**row, step_key: shifted}
            losses += has_loss
        if x is not None:
            seg_start = x if seg_start is None else seg_start
            seg_last = x
        if has_loss and epoch is not None:
            prev_epoch = epoch
        out.append((line, row))
    if per_epoch:
        notes.append(
            f"the step column {step_key!r} starts again at {first:g} with each "
            f"new {epoch_key!r} ({per_epoch} times): a count within the epoch; "
            "the steps follow on from one epoch to the next"
        )
    return (out if offset or new_run else records), step_key


def _loss_or_none(row: Mapping[str, Any], parts: Sequence[str]) -> float | None:
    """The row's training loss, or None (a bad cell is reported later)."""
    try:
        return _cell(row, parts)
    except ValueError:
        return None


def _starts_over(x: float | None, start: float | None, end: float | None) -> bool:
    """A loss ``x`` logged where the step restarts is nearer the earlier run's
    first loss (``start``) than its last (``end``; a non-finite end: it blew
    up): a new run from scratch, not a continuation."""
    if x is None or start is None or end is None or not math.isfinite(x):
        return False
    if not math.isfinite(end):
        return True
    return abs(x - start) < abs(x - end)


def _has(row: Mapping[str, Any], parts: Sequence[str]) -> bool:
    """The row logs a value of the column (or sum) ``parts``."""
    try:
        return _cell(row, parts) is not None
    except ValueError:
        return True


def _flatten(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def _ordered_keys(records: Iterable[tuple[int, Mapping[str, Any]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, r in records:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


# ------------------------------------------------------------------------ readers


def _read_text(path: Path) -> str:
    """The file's text: UTF-8, or UTF-16/32 with a byte-order mark (what
    Windows PowerShell's ``>`` writes); in other text, bytes that are not UTF-8
    (a Latin-1 line) become U+FFFD and stray NUL bytes are dropped (leading
    ones too: a log truncated in place). Binary data is not text."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise LogFormatError(path, f"cannot be read ({e.strerror or e})") from None
    for bom, codec in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(codec)
            except UnicodeDecodeError as e:
                raise LogFormatError(path, f"not {codec} text ({e.reason})") from None
    # NUL bytes: a log truncated in place while its writer kept its offset
    # (logrotate's copytruncate, ': > log') starts with a run of them; a few
    # are dropped, many are binary data
    body = data.lstrip(b"\x00")
    nuls = body.count(0)
    text = body.decode("utf-8", errors="replace").removeprefix("\ufeff")
    # random bytes decode to many U+FFFD; a Latin-1 line to a few
    odd = text.count("\ufffd", 0, 65536)
    if nuls > 0.01 * len(body) or odd > 0.1 * min(len(text), 65536):
        raise LogFormatError(path, "not a text file (binary data)")
    return text.replace("\x00", "") if nuls else text


# byte-order marks, longest first (UTF-32's starts like UTF-16's)
_BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def _read_csv(path: Path, overrides: Mapping[str, str | None]) -> History:
    """A table under a header row. The delimiter is sniffed (``,``, tab or
    ``;``; Excel's ``sep=;`` first line names it; ``.tsv``: a tab); with ``;``
    (European spreadsheets), decimal commas (``0,52``) are read."""
    text = _read_text(path)
    if not text.strip():
        raise LogFormatError(path, "the file is empty", 1)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    excel = _EXCEL_SEP.fullmatch(text.splitlines()[0])
    if path.suffix.lower() == ".tsv" and not excel:
        delimiter = "\t"
    else:  # else the one the header holds most ("," when it holds none)
        delimiter = _csv_delimiter(lines) or max(_DELIMITERS, key=lines[0].count)
    reader = csv.reader(text.splitlines(), delimiter=delimiter)
    try:
        if excel:
            next(reader)
        header = next(reader)
    except csv.Error as e:  # pragma: no cover - csv rarely fails on a first line
        raise LogFormatError(path, f"malformed CSV ({e})", 1) from None
    except StopIteration:  # only Excel's "sep=;" line
        raise LogFormatError(path, "no header after the 'sep=' line", 2) from None
    first = reader.line_num
    header = [h.strip() for h in header]
    alias = _tensorboard_tag(header, path)
    if not any(header) or len(set(header)) != len(header):
        raise LogFormatError(path, f"bad CSV header {header!r}", first)
    if len(header) == 1 and _looks_numeric(header[0]):
        return _read_numbers(lines, path, overrides)
    if all(_looks_numeric(h) for h in header):
        raise LogFormatError(
            path, "the first line must be a header naming the columns", first
        )
    records: list[tuple[int, Mapping[str, Any]]] = []
    notes: list[str] = []
    try:
        rows = [
            (reader.line_num, row)
            for row in reader
            if row and any(c.strip() for c in row)
        ]
    except csv.Error as e:
        raise LogFormatError(path, f"malformed CSV ({e})", reader.line_num) from None
    repeats: list[int] = []
    for i, (line, row) in enumerate(rows):
        if [c.strip() for c in row] == header:  # a second run appended its header
            repeats.append(line)
            continue
        if len(row) != len(header):
            if i == len(rows) - 1 and i > 0 and len(row) < len(header):
                # a run still writing, or killed mid-line
                notes.append(_partial_note(line))
                continue
            raise LogFormatError(
                path,
                f"expected {len(header)} values like the header, got {len(row)}",
                line,
            )
        if delimiter == ";":
            row = [_decimal_point(c) for c in row]
        cells = dict(zip(header, row, strict=True))
        if alias:
            cells[alias] = row[2]
        records.append((line, cells))
    if repeats:
        at = ", ".join(str(n) for n in repeats[:3])
        at += ", ..." if len(repeats) > 3 else ""
        notes.append(
            f"the header row repeats (line {at}): a run appended to this log, "
            "e.g. a resumed one or pandas' to_csv(mode='a'): skipped"
        )
    if not records:
        raise LogFormatError(path, "the file has a header but no rows", first + 1)
    keys = [*header, alias] if alias else header
    return _build(records, keys, path, overrides, notes)


def _partial_note(line: int) -> str:
    return (
        f"line {line}, the last, is cut short (a run still writing, or "
        "stopped mid-line): skipped"
    )


# TensorBoard's "download CSV": one scalar tag per file, named in the file name
# ("run-version_0-tag-train_loss.csv"; "/" in the tag written "_")
_TB_EXPORT = ("wall_time", "step", "value")
_TB_TAG = re.compile(r"^run-(.+?)-tag-(.+)$")


def _tensorboard_tag(header: list[str], path: Path) -> str:
    """For a header of TensorBoard's CSV download (``Wall time,Step,Value``),
    a name for ``Value`` from the file name, so that the series is picked by
    name: ``run/tag`` (``run-validation-tag-epoch_loss.csv``:
    ``validation/epoch_loss``, a validation loss; ``run-train-tag-epoch_loss
    .csv``: ``train/epoch_loss``), else the file name (``val_loss.csv``); ""
    for any other header. ``Value`` itself stays a column too."""
    if tuple(_norm(h) for h in header) != _TB_EXPORT:
        return ""
    found = _TB_TAG.search(path.stem)
    name = f"{found.group(1)}/{found.group(2)}" if found else path.stem
    return "" if name in header else name


_DELIMITERS = (",", "\t", ";")
# Excel's first line naming the delimiter
_EXCEL_SEP = re.compile(r"sep=([,;\t|])\s*")
_DECIMAL_COMMA = re.compile(r"\s*[-+]?\d+,\d+(?:[eE][-+]?\d+)?\s*")


def _decimal_point(cell: str) -> str:
    """A number written with a decimal comma (``0,52``, ``1,5E-05``) with a point."""
    return cell.replace(",", ".") if _DECIMAL_COMMA.fullmatch(cell) else cell


_CONSOLE_CELL = re.compile(r"[A-Za-z_]\w*\s*[:=]\s*[-+.\d]|\d\s*%")
# a header cell that reads "name number" ("step 0 loss 2.3"): console text
_CONSOLE_HEADER = re.compile(r"[A-Za-z_][\w./-]*\s+[-+]?\.?\d")


def _csv_delimiter(lines: Sequence[str]) -> str | None:
    """``","``, ``"\t"`` or ``";"`` when the text is a table: a header of names
    that are not numbers, then rows with as many cells (one column: rows of
    numbers), no cell holding a console pair like ``loss=0.5`` or a percentage;
    or the one that Excel's ``sep=`` first line names."""
    if excel := _EXCEL_SEP.fullmatch(lines[0]):
        return excel.group(1)
    rows = lines[1:6]
    for delimiter in _DELIMITERS:
        header = [h.strip().strip('"') for h in lines[0].split(delimiter)]
        if any(_looks_numeric(h) for h in header) or not all(header):
            continue
        cells = [c for row in rows for c in row.split(delimiter)]
        # in a header, quotes go: '"loss": "2.3"' (a JSON object printed on a
        # log line) is a console pair, not a column name; a data cell may hold
        # quoted JSON ('"{""epoch"": 0}"') in a real CSV
        unquoted = [h.replace('"', "").replace("'", "") for h in header]
        if any(_CONSOLE_CELL.search(c) for c in [*unquoted, *cells]) or any(
            _CONSOLE_HEADER.search(h) for h in header
        ):
            continue
        if len(header) == 1:
            if rows and all(_looks_numeric(r.strip()) for r in rows):
                return delimiter
            continue
        if all(len(r.split(delimiter)) == len(header) for r in rows):
            return delimiter
    return None


def _looks_numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _read_jsonl(path: Path, overrides: Mapping[str, str | None]) -> History:
    text = _read_text(path)
    records: list[tuple[int, Mapping[str, Any]]] = []
    lines = text.splitlines()
    last = max((i for i, raw in enumerate(lines, start=1) if raw.strip()), default=0)
    notes: list[str] = []
    for i, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as e:
            if i == last and records:  # a run still writing, or killed
                notes.append(_partial_note(i))
                continue
            raise LogFormatError(path, f"invalid JSON ({_json_why(e)})", i) from None
        if not isinstance(obj, dict):
            raise LogFormatError(
                path, f"each line must be a JSON object, got {type(obj).__name__}", i
            )
        records.append((i, _flatten(obj)))
    if not records:
        raise LogFormatError(path, "the file is empty", 1)
    return _build(records, _ordered_keys(records), path, overrides, notes)


def _read_json(path: Path, overrides: Mapping[str, str | None]) -> History:
    """A whole-file JSON document: trainer_state.json, or a list of records."""
    text = _read_text(path)
    if not text.strip():
        raise LogFormatError(path, "the file is empty", 1)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        if "\n" in text.strip() and text.lstrip().startswith("{"):
            return _read_jsonl(path, overrides)  # JSON lines named *.json
        raise LogFormatError(path, f"invalid JSON ({_json_why(e)})", e.lineno) from None
    if isinstance(doc, dict) and "log_history" in doc:
        entries = doc["log_history"]
        if not isinstance(entries, list):
            raise LogFormatError(path, "'log_history' must be a list")
    elif isinstance(doc, list):
        entries = doc
    elif isinstance(doc, dict) and (columns := _json_columns(doc)):
        entries = _column_entries(columns)
    else:
        raise LogFormatError(
            path,
            "expected a Hugging Face trainer_state.json (with 'log_history'), "
            "a list of records, or columns (an object of lists, like Keras' "
            "history.history)",
        )
    records: list[tuple[int, Mapping[str, Any]]] = []
    for entry in entries:
        if not isinstance(entry, dict):
            raise LogFormatError(path, f"log entries must be objects, got {entry!r}")
        records.append((0, _flatten(entry)))
    # The Trainer's closing summary holds "train_loss" (the run's average), not a
    # per-step loss: ignore it unless it is the only loss there is.
    per_step = [r for r in records if "train_runtime" not in r[1]]
    if per_step and any("loss" in r for _, r in per_step):
        records = per_step
    if not records:
        raise LogFormatError(path, "the log holds no entries")
    try:
        return _build(records, _ordered_keys(records), path, overrides)
    except LogFormatError as e:
        raise LogFormatError(path, e.reason) from None


def _json_columns(doc: Mapping[str, Any]) -> dict[str, list[Any]]:
    """The columns of a JSON object of lists (``{"loss": [...], ...}``; pandas'
    ``to_json()`` writes ``{"loss": {"0": ..., "1": ...}}``): every value that
    is a list, or an object keyed by row numbers; nothing when there is none."""
    columns: dict[str, list[Any]] = {}
    for key, value in doc.items():
        if isinstance(value, list):
            columns[str(key)] = value
        elif (
            isinstance(value, Mapping)
            and value
            and all(str(k).isdigit() for k in value)
        ):
            columns[str(key)] = [value[k] for k in sorted(value, key=lambda k: int(k))]
    return columns


# a number: thousands separators ("1,000"), decimals, exponents, nan/inf
_NUM = (
    r"[-+]?(?:\d{1,3}(?:,\d{3})+(?![\d.])|\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
    r"|[-+]?(?:nan|inf)\b"
)
# the learning-rate and gradient-norm names of KEYS written as words
# ("learning rate", "grad norm")
_PHRASES = "|".join(
    sorted(
        {
            " ".join(words)
            for series in ("lr", "grad_norm")
            for words in (name.split("_") for name in KEYS[series])
            if len(words) > 1 and all(w.isalpha() for w in words)
        },
        key=len,
        reverse=True,
    )
)
# a name ("loss", "train/loss"; two words only before a loss name: "val loss",
# "Average loss", or a phrase: "learning rate"), perhaps the word "value"
# ("lm loss value: 3.4"), a separator (":", "=" or spaces) and a number; a "%"
# after it marks a percentage (no name's value), a "(number)" after it a running
# average (timm, the PyTorch ImageNet example); the name must not follow a
# letter or digit ("10ms/step" is no pair)
_PAIR = re.compile(
    rf"(?<![\w./-])(?P<key>(?:{_PHRASES})(?![\w./-])"
    r"|(?:(?!(?:nan|inf) )[A-Za-z]{2,} (?=[\w./-]*loss))?[A-Za-z_][\w./-]*)"
    r"(?:\s+value(?![\w./-]))?(?:\s*[:=]\s*|\s+)"
    rf"(?P<value>{_NUM})(?P<pct>\s*%)?(?:\s*\(\s*(?P<avg>{_NUM})\s*\))?",
    re.IGNORECASE,
)
# a loss phrase ("Validation loss", "loss") with more words after it, then a
# colon and the line's last number (see _text_pairs)
_LOSS_TAIL = re.compile(
    r"(?<![\w./-])(?P<key>(?:[A-Za-z]{2,} )?loss)(?![\w./-])[^:\n]*?"
    rf":\s*(?P<value>{_NUM})\s*$",
    re.IGNORECASE,
)
# words that say what a part of a line reports ("| valid |", "Test set:",
# "train:"); not inside a path or a name ("ckpt_dir=/runs/test")
_CONTEXT = re.compile(
    r"(?<![\w./-])(?:(?P<val>val|valid|validation|validating|eval|evaluation|"
    r"evaluating|test|testing|dev)|(?P<train>train|training))(?![\w./-])",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class _Pair:
    key: str
    value: float
    avg: float | None


def _number_text(text: str) -> float:
    return float(text.replace(",", ""))


def _text_pairs(line: str) -> list[_Pair]:
    """The name/value pairs of a console line, in order (quotes ignored).

    A loss name without ``train`` or a validation word takes the context of
    the line before it: after a validation word (``| valid |``, ``Test set:``,
    ``val:``) it becomes a validation loss (``loss`` -> ``val loss``) and reads
    the running average when one follows in parentheses; percentages are not
    pairs."""
    # quotes go ('loss': '2.3' in a printed dict), and so do the wrappers of a
    # printed tensor or array (loss=tensor(2.3, grad_fn=...))
    text = re.sub(r"\b(?:tensor|array)\(", "", line.replace("'", "").replace('"', ""))
    out: list[_Pair] = []
    seen: set[str] = set()
    context: str | None = None
    last = 0
    for m in _PAIR.finditer(text):
        for c in _CONTEXT.finditer(text, last, m.start()):
            context = "val" if c.group("val") else "train"
        last = m.end()
        if m.group("pct"):
            continue
        key = m.group("key").rstrip("./-")
        norm = _norm(key)
        value = _number_text(m.group("value"))
        avg = None if m.group("avg") is None else _number_text(m.group("avg"))
        explicit = _is_val(norm) or {"train", "training"} & set(norm.split("_"))
        if "loss" in norm and context == "val" and not explicit:
            key = f"val {key}"
            value = value if avg is None else avg
        if key not in seen:
            seen.add(key)
            out.append(_Pair(key, value, avg))
    # a loss named before other words, its value after a colon at the end
    # ("Validation loss after epoch 3: 0.41"): the loss phrase names it
    tail = _LOSS_TAIL.search(text)
    if tail is not None and tail.start("value") >= last:
        key = tail.group("key")
        if key not in seen and not any(p.key == key for p in out):
            out.append(_Pair(key, _number_text(tail.group("value")), None))
    return out


def _read_numbers(
    lines: Sequence[str], path: Path, overrides: Mapping[str, str | None]
) -> History:
    """One number per line and no header (``np.savetxt("loss.txt", losses)``,
    scikit-learn's ``loss_curve_``): the training loss, the n-th line step n."""
    records: list[tuple[int, Mapping[str, Any]]] = []
    for i, line in enumerate(lines, 1):
        if not _looks_numeric(line.strip()):
            raise LogFormatError(
                path,
                f"expected one number per line (a file without a header), got "
                f"{line.strip()[:40]!r}",
                i,
            )
        records.append((i, {"loss": line.strip()}))
    return _build(records, ["loss"], path, overrides)


def _TABLE_HEADER(tokens: Sequence[str]) -> bool:  # noqa: N802 - reads as a test
    """A table's header printed to the console (fast.ai's ``epoch train_loss
    valid_loss accuracy time``): two or more names, one of them a loss's."""
    return (
        len(tokens) >= 2
        and all(_NAME.fullmatch(t) for t in tokens)
        and any("loss" in t.lower() for t in tokens)
    )


_NAME = re.compile(r"[A-Za-z_][\w/.-]*")
_WHOLE_NUM = re.compile(rf"(?:{_NUM})")


def _table_row(header: Sequence[str], tokens: Sequence[str]) -> list[_Pair] | None:
    """The pairs of a row under a table header: as many cells as names (a
    row may run on, like a progress bar after it), most of them numbers; the
    cells that are not numbers (``00:05``) are left out."""
    if len(tokens) < len(header):
        return None
    cells = tokens[: len(header)]
    numbers = [_WHOLE_NUM.fullmatch(c) for c in cells]
    if 2 * sum(m is not None for m in numbers) < len(cells):
        return None
    return [
        _Pair(name, _number_text(m.group(0)), None)
        for name, m in zip(header, numbers, strict=True)
        if m is not None
    ]


@dataclass
class _Line:
    number: int
    row: dict[str, Any]  # the pairs that are not steps
    step: tuple[str, float] | None  # the line's own step: (name, value)
    done: bool = False  # a progress counter at its end ("6/6 - 0s - loss: ...")
    counted: bool = False  # its step is a count out of a total ("Epoch 3/8")
    bar: str = ""  # a tqdm bar's description and count ("Epoch 2: 7/8"), or ""
    count: str = ""  # a full progress counter at its start ("43/43"), or ""
    partial: bool = False  # a progress counter not full yet ("1/6 ... loss: ...")


_COUNTER = re.compile(r"^\s*(\d+)/(\d+)\b")
# a tqdm bar: "{desc}: {percent}|{bar}| {n}/{total} [{times}, {postfix}]"
_TQDM = re.compile(
    r"^(?P<desc>[^|]*?)\s*\d+%\|[^|]*\|\s*(?P<count>\d+/(?:\d+|\?))\s*\["
)


def _is_val_bar(desc: str) -> bool:
    """A tqdm bar of an evaluation (Lightning's ``Validation DataLoader 0``)."""
    return any(w in _VAL_WORDS for w in re.findall(r"[a-z]+", desc.lower()))


def _counted(text: str, name: str) -> bool:
    """On ``text``, ``name``'s value is a count out of a total (``Epoch 3/8``)."""
    count = rf"(?<![\w./-]){re.escape(name)}\s*[:=]?\s*\d[\d,]*\s*/\s*\d"
    return re.search(count, text, re.IGNORECASE) is not None


def _console_lines(text: str, step_names: Sequence[str]) -> list[_Line]:
    """The lines with pairs, each with its own step when it names one.

    A name counts as a step only when its every value is a whole number and,
    over the lines with a loss, it rises strictly: an ``epoch`` repeated on
    every batch line, a fractional epoch (Hugging Face) or a batch counter that
    restarts every epoch is no step."""
    parsed: list[tuple[int, list[_Pair], bool, str]] = []
    header: list[str] | None = None  # the names of a table being read
    for number, full_line in enumerate(text.split("\n"), start=1):
        for part in full_line.split("\r"):  # a progress bar redraws with \r
            tokens = part.split()
            if _TABLE_HEADER(tokens):
                header = tokens
                continue
            row = _table_row(header, tokens) if header is not None else None
            if row is not None:
                parsed.append((number, row, True, ""))
                continue
            pairs = _text_pairs(part)  # (a table's header stays for rows after notes)
            if any(_norm(p.key) == "train_runtime" for p in pairs):
                continue  # the HF Trainer's closing summary: a run's mean loss
            bar = _TQDM.match(part)
            if (
                bar is not None
                and _is_val_bar(bar["desc"])
                # (its description may read as a pair: "DataLoader 0")
                and not any("loss" in _norm(p.key) for p in pairs)
            ):
                parsed.append((number, [], False, part))  # an evaluation ran
                continue
            if pairs:
                counter = _COUNTER.match(part)
                done = counter is not None and counter.group(1) == counter.group(2)
                parsed.append((number, pairs, done, part))
    # per name, its values on lines with a training loss and on lines with
    # only a validation loss (an evaluation shares a training line's step)
    values: dict[tuple[str, bool], list[float]] = {}
    whole: dict[str, bool] = {}
    for _, pairs, _, _ in parsed:
        losses = [_norm(p.key) for p in pairs if "loss" in _norm(p.key)]
        only_val = bool(losses) and all(_is_val(n) for n in losses)
        for p in pairs:
            n = _norm(p.key)
            if n in step_names:
                ok = math.isfinite(p.value) and p.value == int(p.value) >= 0
                whole[n] = whole.get(n, True) and ok
                if losses:
                    values.setdefault((n, only_val), []).append(p.value)
    steps_ok = {
        n
        for n in step_names
        if whole.get(n, False)
        and all(
            a < b
            for (name, _), seq in values.items()
            if name == n
            for a, b in itertools.pairwise(seq)
        )
    }
    lines: list[_Line] = []
    for number, pairs, done, part in parsed:
        own = sorted(
            (step_names.index(_norm(p.key)), p.key, p.value)
            for p in pairs
            if _norm(p.key) in steps_ok
        )
        lines.append(
            _Line(
                number,
                {p.key: p.value for p in pairs if _norm(p.key) not in step_names},
                (own[0][1], own[0][2]) if own else None,
                done,
                bool(own) and _counted(part, own[0][1]),
                " ".join(bar.group("desc", "count"))
                if (bar := _TQDM.match(part))
                else "",
                full.group(0).strip()
                if done and (full := _COUNTER.match(part))
                else "",
                not done and _COUNTER.match(part) is not None,
            )
        )
    return lines


def _read_console(path: Path, overrides: Mapping[str, str | None]) -> History:
    """Console output: the name/value pairs of each line (see the module doc)."""
    text = _read_text(path)
    if not text.strip():
        raise LogFormatError(path, "the file is empty", 1)
    step_names = [_norm(k) for k in KEYS["step"]]  # in order of preference
    forced_step = overrides.get("step")
    if forced_step is not None:
        step_names = [_norm(forced_step)]
    # terminal colours and progress-bar redraws (backspaces) are not text
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|\x08", "", text)
    lines = _console_lines(text, step_names)

    def has_loss(line: _Line) -> bool:
        return any("loss" in _norm(k) for k in line.row)

    # Steps: a loss line's own; else, when some loss lines name their own, the
    # last such step (an evaluation after a training line; 0 before the
    # first); else a step named on a line without a loss (Keras' "Epoch 3/8"):
    # it heads the lines with a loss after it (progress redraws: the last
    # wins) up to one whose progress counter is full ("6/6"); a later line
    # under it (Keras' evaluate()) is not that epoch's, and only a higher step
    # starts a new epoch (not "Epoch 3: early stopping", not "Restoring model
    # weights from the end of the best epoch: 1"), or a count out of a total
    # restarting after a finished epoch ("Epoch 1/5": another fit(), whose
    # epochs follow the last).
    loss_lines = [ln for ln in lines if has_loss(ln)]
    # most loss lines name their own step (one summary line does not count)
    own = 2 * sum(ln.step is not None for ln in loss_lines) >= max(len(loss_lines), 1)
    records: list[tuple[int, Mapping[str, Any]]] = []
    named: dict[str, None] = {}
    carried: tuple[str, float] | None = None
    closed = False  # the carried epoch's progress counter was full
    offset = 0.0  # the epochs of the fits before (Keras' fit() called again)
    last_bar = ""  # the tqdm count of the last record's line
    last_count = ""  # the full progress counter of the last record's line
    descs: list[str] = []  # per record, its tqdm bar's description ("Epoch 3")
    fresh: list[bool] = []  # per record, an evaluation's bar was drawn before it
    evaluated = False
    notes: list[str] = []
    # the epoch whose progress line ("1/6 ...") made the last record
    drawing: tuple[str, float] | None = None
    # a count restarting after a finished epoch ("Epoch 1/5"), judged by the
    # next training loss (see _starts_over): (its line, records before it,
    # its own step, the first and the latest training loss before it)
    restart: tuple[int, int, float, tuple[float | None, float | None]] | None = None
    for line in lines:
        step = line.step
        if step is not None and not own:
            step = (step[0], step[1] + offset)
        if not has_loss(line):
            if not line.row and line.bar:
                evaluated = True  # a validation bar: an evaluation ran
                continue
            if step is None or (own and forced_step is None):
                continue
            restarts = not own and closed and line.counted
            if restarts and carried is not None and step[1] <= carried[1]:
                # "Epoch 1/5" after a finished epoch: a new fit, following on
                # (unless its first loss says the run started over, below)
                assert line.step is not None
                seen = (_console_train_loss(r) for _, r in records)
                back = (_console_train_loss(r) for _, r in reversed(records))
                ends = (
                    next((v for v in seen if v is not None), None),
                    next((v for v in back if v is not None), None),
                )
                restart = (line.number, len(records), line.step[1], ends)
                offset += carried[1] + 1 - step[1]
                step = (step[0], carried[1] + 1)
            if carried is None or step[1] > carried[1]:
                carried, closed = step, False
            continue
        row = dict(line.row)
        if step is not None:
            if not own and carried is not None and step[1] < carried[1]:
                continue  # a summary naming an earlier epoch ("best at epoch 6")
            here: tuple[str, float] | None = step
            if own:
                carried = step
        elif own:
            here = carried if carried is not None else ("", 0.0)
        else:
            here = carried
            if here is not None:
                if closed:
                    if not (records and _redraw(line, last_count, records[-1][1])):
                        continue  # a later line under the same epoch's header
                    records.pop()  # the full counter drawn again, now with more
                    descs.pop()
                    fresh.pop()
                elif drawing == here and records:
                    # the epoch's progress line drawn again ("1/6 ... loss:",
                    # then "6/6 ... loss:"): its running values so far
                    records.pop()
                    descs.pop()
                    evaluated = fresh.pop() or evaluated
                closed = line.done
                drawing = here if line.partial else None
        if here is not None:
            if here[0]:
                named.setdefault(here[0], None)
            row["step"] = here[1]
        if line.bar.rpartition(" ")[2].startswith("0/"):
            continue  # a tqdm bar at 0: what it shows is from before
        if line.bar and line.bar == last_bar:  # redrawn at the same count
            row = {**records.pop()[1], **row}
            descs.pop()
            evaluated = fresh.pop() or evaluated
        last_bar, last_count = line.bar, line.count
        x = _console_train_loss(row)
        if restart is not None and x is not None:
            at, kept, own_step, (first, latest) = restart
            restart = None
            if _starts_over(x, first, latest) and carried is not None:
                # the loss is back where the log began: a script run again,
                # appending to the log, not another fit; only it is read
                shift = carried[1] - own_step
                offset -= shift
                carried = (carried[0], own_step)
                if drawing is not None:
                    drawing = carried
                records = [
                    (n, {**r, "step": r["step"] - shift} if "step" in r else r)
                    for n, r in records[kept:]
                ]
                descs, fresh = descs[kept:], fresh[kept:]
                if "step" in row:
                    row["step"] -= shift
                notes.append(
                    f"the epoch count starts again on line {at} and the loss with "
                    f"it ({x:.4g}, against {first:.4g} where the earlier run began "
                    f"and {latest:.4g} where it ended): a new run appended to the "
                    f"log; only the last run, from line {at}, is read"
                )
        records.append((line.number, row))
        descs.append(line.bar.rpartition(" ")[0] if line.bar else "")
        fresh.append(evaluated)
        evaluated = False
    if not records:
        raise LogFormatError(
            path,
            "no line holds a loss value (looked for 'name: value', 'name=value' "
            "and 'name value' pairs with 'loss' in the name)",
        )
    if any(descs):
        records = _epoch_values_once(records, descs, fresh)
    if not all("step" in r for _, r in records):  # steps only on some lines
        records = [(n, {k: v for k, v in r.items() if k != "step"}) for n, r in records]
    keys = _ordered_keys(records)
    forced = {**overrides, "step": "step" if "step" in keys else None}
    history = _build(records, keys, path, forced, notes)
    if "step" in history.columns:  # name the steps as the log did
        columns = {**history.columns, "step": forced_step or "/".join(named) or "step"}
        history = dataclasses.replace(history, columns=columns)
    return history


def _console_train_loss(row: Mapping[str, Any]) -> float | None:
    """A console record's training loss (its first loss that is not a
    validation one), or None."""
    for k, v in row.items():
        nk = _norm(k)
        if "loss" in nk and not _is_val(nk):
            try:
                return _number(v)
            except ValueError:
                return None
    return None


def _epoch_values_once(
    records: list[tuple[int, Mapping[str, Any]]],
    descs: Sequence[str],
    fresh: Sequence[bool],
) -> list[tuple[int, Mapping[str, Any]]]:
    """Records without the values a tqdm bar only shows again.

    A bar (Lightning's) shows every logged value on each redraw until it is
    updated: a validation loss once an evaluation ends, a training loss logged
    per epoch (``self.log(..., on_epoch=True)``) once an epoch ends. Such a
    value is read where it changed, and where a new value equal to the last
    one shows: a validation loss on the first record after an evaluation's own
    bar was drawn (``fresh``), a per-epoch loss at the last redraw of each
    epoch's bar (``descs``: each record's bar description, "" off a bar). A
    training loss counts as per-epoch when it is on the bars of at least 3
    epochs, changes on at most a fifth of the
    redraws and on at least every other epoch; a per-batch loss (it changes on
    most redraws, or never: a dead model) is kept everywhere.
    """
    rows = [dict(r) for _, r in records]
    on_bar = [i for i, d in enumerate(descs) if d]
    last_of_epoch = {
        i for i, j in itertools.pairwise([*on_bar, -1]) if j < 0 or descs[j] != descs[i]
    }
    keys = {k for i in on_bar for k in rows[i] if "loss" in _norm(k)}
    for key in keys:
        seq = [i for i in on_bar if key in rows[i]]
        val = _is_val(_norm(key))
        repeats = [
            j
            for i, j in itertools.pairwise(seq)
            if _same(rows[i][key], rows[j][key])
            and not (any(fresh[i + 1 : j + 1]) if val else j in last_of_epoch)
        ]
        if not val:
            # judged on its finite values: a run that blew up shows NaN on
            # every redraw after, as a dead model shows one value
            seq_f = [i for i in seq if _finite_cell(rows[i][key])]
            epochs = len({descs[i] for i in seq_f})
            changes = sum(
                not _same(rows[i][key], rows[j][key])
                for i, j in itertools.pairwise(seq_f)
            )
            per_epoch = 2 * changes >= epochs - 1 and 5 * changes <= len(seq_f) - 1
            if epochs < 3 or not per_epoch:
                continue
        for j in repeats:
            del rows[j][key]
    return [(n, r) for (n, _), r in zip(records, rows, strict=True) if r]


def _finite_cell(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _same(a: Any, b: Any) -> bool:
    """Equal values, NaN equal to NaN (a bar showing NaN again)."""
    return bool(a == b) or (a != a and b != b)


def _redraw(line: _Line, count: str, last: Mapping[str, Any]) -> bool:
    """``line`` draws the full progress counter ``count`` of the last record
    ``last`` again, with the same values and more (Keras' ``43/43 - loss:
    0.07``, then ``43/43 - loss: 0.07 - val_loss: 0.18`` once validation is
    done); an ``evaluate()`` after it shows other values."""
    shared = [k for k in line.row if k in last]
    return (
        bool(count)
        and line.count == count
        and bool(shared)
        and all(line.row[k] == last[k] for k in shared)
    )


def _column_entries(columns: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """One record per row of equal-purpose lists. A validation column ``k``
    times shorter than the longest was evaluated every ``k`` rows (Keras'
    ``validation_freq=k``): its values go to rows ``k-1, 2k-1, ...``; any
    other shorter column fills the first rows."""
    n = max(len(v) for v in columns.values())
    entries: list[dict[str, Any]] = [{} for _ in range(n)]
    for key, values in columns.items():
        m = len(values)
        every = n // m if m and n % m == 0 and _is_val(_norm(key)) else 1
        for i, v in enumerate(values):
            entries[i * every + every - 1][key] = v
    return [e for e in entries if e]


def history_of_columns(columns: Mapping[str, Any]) -> History:
    """The History of in-memory columns (Keras' ``history.history``, a dict
    of lists named as a log's columns are), read as a JSON file of them is."""
    found = _json_columns(columns)
    where = Path("history")
    if not found:
        raise LogFormatError(
            where, "expected columns: a dict of lists (like Keras' history.history)"
        )
    records = [(0, _flatten(e)) for e in _column_entries(found)]
    return _build(records, _ordered_keys(records), where, {})


def _event_files(path: Path) -> list[Path]:
    """Event files, in the order they were written within each folder."""
    if path.is_file():
        return [path]
    return sorted((p for p in path.rglob("*tfevents*") if p.is_file()), key=_written)


def _written(p: Path) -> tuple[str, float, int, str]:
    """Sort key: folder, then the start time and the writer's counter that
    TensorBoard file names hold (``events.out.tfevents.<time>.<host>[.<pid>.
    <counter>]``: compared as numbers, "10" after "9")."""
    m = re.search(r"tfevents\.(\d+(?:\.\d+)?)", p.name)
    t = float(m.group(1)) if m else 0.0
    tail = re.search(r"\.(\d+)(?:\.v2)?$", p.name)
    return (str(p.parent), t, int(tail.group(1)) if tail else 0, p.name)


def _read_tensorboard(path: Path, overrides: Mapping[str, str | None]) -> History:
    try:
        from tensorboard.backend.event_processing import event_accumulator
        from tensorboard.util import tensor_util
    except ImportError as e:  # pragma: no cover - tensorboard is a test dependency
        raise ImportError(
            "reading TensorBoard event files needs the tensorboard package: "
            "pip install 'lrkit[logs]'"
        ) from e
    files = _event_files(path)
    if not files:
        raise LogFormatError(path, "no TensorBoard event files (*tfevents*) found")
    runs: dict[Path, list[Path]] = {}
    for f in files:
        runs.setdefault(f.parent, []).append(f)
    base = path if path.is_dir() else path.parent
    several = len(runs) > 1
    scalars: dict[str, dict[int, float]] = {}
    notes: list[str] = []
    for run_dir, run_files in sorted(runs.items()):
        prefix = ""
        if several:
            rel = run_dir.relative_to(base).as_posix()
            prefix = "" if rel == "." else rel + "/"
        read = [(f, _scalars_of(f, event_accumulator, tensor_util)) for f in run_files]
        read = _last_session(read, notes)
        tags = {t for _, points_of in read for t in points_of}
        for _, points_of in read:
            for tag, points in points_of.items():
                key = (
                    _add_scalars_key(run_dir.name, tag, notes)
                    if several and len(tags) == 1
                    else None
                )
                scalars.setdefault(key or prefix + tag, {}).update(points)
    if not scalars:
        raise LogFormatError(
            path,
            "no scalar summaries could be read (not an event file, corrupt, or "
            "without add_scalar values)",
        )
    tag_list, own = _one_run(list(scalars), runs, base, path, overrides)
    scalars = {t: scalars[t] for t in tag_list}
    _keras_batch_axis(scalars, notes)
    if own:
        # read as the run's own folder reads: its tags without the run's
        # name (a run named "test" holds training losses), the overrides too
        _check_run_keys(overrides, tag_list, own, path)
        overrides = {
            k: None
            if v is None
            else "+".join(_in_run(part.strip(), own) for part in v.split("+"))
            for k, v in overrides.items()
        }
        notes.append(f"read the run {str(base / own)!r} of the folder's runs")
    records_by_step: dict[int, dict[str, Any]] = {}
    for tag in tag_list:
        points = scalars[tag]
        name = _in_run(tag, own)
        for step, value in points.items():
            records_by_step.setdefault(step, {"step": step})[name] = value
    tag_list = [_in_run(t, own) for t in tag_list]
    records = [(0, records_by_step[s]) for s in sorted(records_by_step)]
    if overrides.get("step") is not None:
        _check.fail(
            "step_key",
            "None for TensorBoard event files",
            overrides["step"],
            "Event files store each value's step.",
        )
    return _build(records, ["step", *tag_list], path, overrides, notes, run=own)


def _add_scalars_key(run_name: str, tag: str, notes: list[str]) -> str | None:
    """The name of one curve of ``add_scalars(main_tag, {name: value})``.

    torch's ``SummaryWriter.add_scalars`` writes each curve to a run folder
    ``<main_tag>_<name>`` holding that one tag, ``main_tag`` ("Training vs. Validation
    Loss" for both curves of PyTorch's TensorBoard tutorial). For a loss, the
    curve is read as ``<name> loss`` ("Training loss", "Validation loss"), so
    that the curve's own name tells training from validation; else None.
    """
    main = tag.replace("/", "_")
    if not run_name.startswith(main + "_") or "loss" not in _norm(tag).split("_"):
        return None
    name = run_name[len(main) + 1 :]
    if not name or "/" in name:
        return None
    key = f"{name} loss"
    note = (
        f"add_scalars({tag!r}, {{name: value}}): each curve is read as "
        f"'<name> loss' (from its run folder '{main}_<name>')"
    )
    if note not in notes:
        notes.append(note)
    return key


def _keras_batch_axis(scalars: dict[str, dict[int, float]], notes: list[str]) -> None:
    """Keras' TensorBoard callback with ``update_freq="batch"`` (or N), in place.

    It logs ``train/batch_<metric>`` at the optimizer iteration (1, 2, ...),
    each the running mean of the epoch so far, and ``*/epoch_<metric>`` at the
    epoch number (0, 1, ...): two axes, and a mean where the monitor needs a
    batch's loss. With the iterations an epoch takes (from
    ``validation/evaluation_loss_vs_iterations``, logged at the iteration of
    each validation, else from the last iteration over the epochs logged),
    the epoch values move to the iteration that ended their epoch, and each
    logged batch loss becomes the mean loss of the batches since the previous
    logged one: ``(b·m_b - b'·m_b') / (b - b')`` for positions ``b' < b`` in
    the epoch (``b' = 0`` at its first). A note says so.
    """
    for key in [k for k in scalars if k.rsplit("/", 1)[-1] == "batch_loss"]:
        train = key[: -len("batch_loss")]  # "train/", "run/train/" or ""
        val = (
            train[: -len("train/")] + "validation/"
            if train == "train/" or train.endswith("/train/")
            else None
        )
        epochs = scalars.get(train + "epoch_loss", {})
        vals = sorted(scalars.get(val + "epoch_loss", {})) if val else []
        evals = (
            sorted(scalars.get(val + "evaluation_loss_vs_iterations", {}))
            if val
            else []
        )
        per = (
            {it / (e + 1) for e, it in zip(vals, evals, strict=True)}
            if vals and len(vals) == len(evals)
            else set()
        )
        batch_steps = sorted(scalars[key])
        every_batch = batch_steps == list(range(1, len(batch_steps) + 1))
        if not per and epochs and every_batch and len(batch_steps) % len(epochs) == 0:
            # no validation: every iteration logged, epochs of equal length
            per = {len(batch_steps) / len(epochs)}
        if len(per) != 1 or not float(next(iter(per))).is_integer():
            continue  # epochs of different lengths: left as logged
        spe = int(next(iter(per)))
        if spe < 1:
            continue
        batches = _per_batch(scalars[key], spe)
        logged = [v for v in scalars[key].values() if math.isfinite(v)]
        back = [v for v in batches.values() if math.isfinite(v)]
        if logged and back and min(logged) >= 0 and min(back) < -1e-3 * max(logged):
            continue  # not running means (a loss's own values: left as logged)
        for k in [
            k for k in scalars if k.startswith(train) or (val and k.startswith(val))
        ]:
            name = k.rsplit("/", 1)[-1]
            if k[: -len(name)] not in (train, val):
                continue  # a deeper folder's tag
            if name.startswith("epoch_"):
                scalars[k] = {(e + 1) * spe: v for e, v in scalars[k].items()}
            elif name.startswith("batch_") and "loss" in name:
                scalars[k] = batches if k == key else _per_batch(scalars[k], spe)
        notes.append(
            f"Keras' TensorBoard logs {key!r} as each epoch's running mean and "
            f"epoch values by epoch number: read back per batch, and the epoch "
            f"values at the iteration that ended their epoch ({spe} an epoch)"
        )


def _per_batch(points: Mapping[int, float], spe: int) -> dict[int, float]:
    """Running means of each epoch (at iterations 1, 2, ...) -> the mean loss
    of the batches since the previous logged point."""
    out: dict[int, float] = {}
    prev_epoch, prev_b, prev_m = -1, 0, 0.0
    for it in sorted(points):
        m = points[it]
        epoch, b = divmod(it - 1, spe)
        b += 1
        if epoch != prev_epoch:
            prev_b, prev_m = 0, 0.0
        out[it] = (b * m - prev_b * prev_m) / (b - prev_b) if math.isfinite(m) else m
        prev_epoch, prev_b, prev_m = epoch, b, m
    return out


def _last_session(
    read: list[tuple[Path, dict[str, dict[int, float]]]], notes: list[str]
) -> list[tuple[Path, dict[str, dict[int, float]]]]:
    """The event files of one directory that belong to its latest run.

    Each ``SummaryWriter`` writes a new file (named by its start time: the
    files come in time order). Against the file that started the current run
    and its main series (its tag with the most values), a later file is a new
    run written to the same folder (the same script run again) when that
    series starts again at or before where it started, or when the two files
    share no tag and the later one logs a loss (a rerun that renamed its
    tags; not a file of hyperparameters); the files before it
    are left out, with a note. Else it continues the run (a resume from a
    checkpoint; where steps overlap, the newer file's values win), whatever
    else it logs at step 0.
    """
    start = 0
    for i in range(1, len(read)):
        first, points_of = read[start][1], read[i][1]
        series = [t for t in first if first[t]]
        if not series or not any(points_of.values()):
            continue
        main = max(series, key=lambda t: len(first[t]))
        if points_of.get(main):
            again = min(points_of[main]) <= min(first[main])
        else:  # a file of other tags: a rerun if it logs a loss of its own
            again = not any(points_of.get(t) for t in series) and any(
                _is_loss_tag(t) for t in points_of if points_of[t]
            )
        if again:
            start = i
    if start:
        notes.append(
            f"{start + 1} runs were written to the folder {read[0][0].parent} (an "
            f"event file starts the run again): the newest, {read[start][0].name}, "
            "is read; pass an older event file to read it"
        )
    return read[start:]


def _scalars_of(
    f: Path, event_accumulator: Any, tensor_util: Any
) -> dict[str, dict[int, float]]:
    """Every scalar series of one event file: tag -> {step: value}."""
    out: dict[str, dict[int, float]] = {}
    acc = event_accumulator.EventAccumulator(
        str(f),
        size_guidance={
            event_accumulator.SCALARS: 0,
            event_accumulator.TENSORS: 0,
        },
    )
    try:
        acc.Reload()
    except Exception as e:  # corrupt records raise tensorboard's own errors
        raise LogFormatError(f, f"unreadable event file ({e})") from None
    tags = acc.Tags()
    for tag in tags.get(event_accumulator.SCALARS, []):
        dest = out.setdefault(tag, {})
        for ev in acc.Scalars(tag):
            dest[int(ev.step)] = float(ev.value)
    for tag in tags.get(event_accumulator.TENSORS, []):
        for ev in acc.Tensors(tag):
            arr = tensor_util.make_ndarray(ev.tensor_proto)
            if arr.size != 1 or arr.dtype.kind not in "fiu":
                break  # not a scalar summary (text, histogram, ...)
            out.setdefault(tag, {})[int(ev.step)] = float(arr.reshape(()))
    return out


#: Sub-directories that hold one split of a run (Keras' TensorBoard callback
#: writes ``train/`` and ``validation/``), not a run of their own.
_SPLIT_DIRS = frozenset({"train", "training", *_VAL_WORDS})


def _run_of(rel: str, rels: Collection[str] = ()) -> str:
    """The run a TensorBoard run directory belongs to: itself, or its parent
    when it holds one split of it (``train``, ``validation``, ...: a split
    folder beside a ``train`` or ``training`` one, as Keras writes them; a run
    merely named ``test`` is a run)."""
    parts = [] if rel in ("", ".") else rel.split("/")
    if parts and parts[-1].lower() in _SPLIT_DIRS:
        parent = "/".join(parts[:-1])
        siblings = {r.rsplit("/", 1)[-1].lower() for r in rels if _parent(r) == parent}
        if siblings & {"train", "training"} and len(siblings & _SPLIT_DIRS) > 1:
            parts = parts[:-1]
    return "/".join(parts)


def _parent(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def _one_run(
    tags: list[str],
    runs: Mapping[Path, list[Path]],
    base: Path,
    path: Path,
    overrides: Mapping[str, str | None],
) -> tuple[list[str], str]:
    """The tags of one run when the folder holds several, and that run's
    folder (relative to ``base``; "" for the folder itself).

    Tags are prefixed with their run directory. The training loss decides the
    run (an override names it; else the only run with a loss, judged by the
    tag without its run's name: a run named ``test`` holds training losses);
    the other series are read from that run alone (a validation loss or an
    LR of another run would describe another training). Several runs with a
    loss and no override: raise, listing them as the folders that read them
    alone.
    """
    if len(runs) <= 1:
        return tags, ""
    rels = sorted(
        {(d.relative_to(base).as_posix() if d != base else "") for d in runs},
        key=len,
        reverse=True,
    )

    def run_of_tag(tag: str) -> str:
        rel = next((r for r in rels if r and tag.startswith(r + "/")), "")
        return _run_of(rel, rels)

    override = overrides.get("loss")
    if override is not None:
        first = override.split("+")[0].strip()
        own = run_of_tag(first) if first in tags else None
    else:
        with_loss = sorted(
            {run_of_tag(t) for t in tags if _is_loss_tag(_in_run(t, run_of_tag(t)))}
        )
        if len(with_loss) > 1:

            def written(r: str) -> float:  # its newest event file
                files = (base / r).glob("*tfevents*")
                return max((f.stat().st_mtime for f in files), default=0.0)

            newest = sorted(with_loss, key=written, reverse=True)
            shown = ", ".join(str(base / r) if r else str(base) for r in newest)
            raise LogFormatError(
                path,
                f"{len(with_loss)} TensorBoard runs with a training loss; read one "
                f"by passing its folder (the most recent first): {shown}",
            )
        own = with_loss[0] if with_loss else None
    if own is None:
        return tags, ""
    return [t for t in tags if run_of_tag(t) == own], own


def _check_run_keys(
    overrides: Mapping[str, str | None], tags: Sequence[str], run: str, path: Path
) -> None:
    """Every column an override names must be a tag of the run read."""
    for series, value in overrides.items():
        if value is None or series == "step":
            continue
        for part in (p.strip() for p in value.split("+")):
            if part not in tags and f"{run}/{part}" not in tags:
                listed = ", ".join(repr(t) for t in tags)
                _check.fail(
                    _key_param(series),
                    f"a tag of the run {run!r} read from {path} ({listed})",
                    value,
                    "Several runs are never mixed: read the other one by its "
                    "own folder.",
                )


def _with_run(key: str, run: str) -> str:
    """A key (or a sum) as the parent folder names it: with the run's name."""
    return "+".join(f"{run}/{part}" for part in key.split("+"))


def _in_run(tag: str, run: str) -> str:
    """A tag as its run's own folder names it (without the run's prefix)."""
    return tag[len(run) + 1 :] if run and tag.startswith(run + "/") else tag


# -------------------------------------------------------------------------- MLflow

# (time, value, step) of each value of one metric, in logging order; the time
# is a file store's timestamp (ms), a database's row in logging order
_Points = list[tuple[int, float, int]]

_SQLITE_MAGIC = b"SQLite format 3\x00"
_RUNS_SHOWN = 5  # runs listed when a store holds several


@dataclass(frozen=True)
class _Run:
    """An MLflow run with metrics: the path that reads it alone, its name, start."""

    where: str  # a run directory, or "mlflow.db/<run id>"
    name: str
    start: int  # ms since the epoch; 0 when unknown


def _is_sqlite(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def _mlflow_meta(run_dir: Path) -> dict[str, str]:
    """The top-level ``key: value`` lines of a run's ``meta.yaml`` (flat YAML)."""
    try:
        text = (run_dir / "meta.yaml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found = (re.match(r"(\w+):\s*(.*?)\s*$", line) for line in text.splitlines())
    return {m.group(1): m.group(2).strip("'\"") for m in found if m}


def _is_mlflow_run(path: Path) -> bool:
    return (path / "meta.yaml").is_file() and (path / "metrics").is_dir()


def _mlflow_runs(path: Path) -> list[Path]:
    """The MLflow file-store runs at ``path``: itself, else its sub-folders (an
    experiment folder), else theirs (``mlruns/``); hidden folders (``.trash``)
    are not searched."""
    if _is_mlflow_run(path):
        return [path]
    for pattern in ("*/meta.yaml", "*/*/meta.yaml"):
        runs = sorted(
            meta.parent
            for meta in path.glob(pattern)
            if _is_mlflow_run(meta.parent)
            and not any(p.startswith(".") for p in meta.relative_to(path).parts)
        )
        if runs:
            return runs
    return []


def _metric_files(metrics_dir: Path) -> list[tuple[str, Path]]:
    """(key, file) of each metric: nested keys (``train/loss``) are sub-folders."""
    out = []
    for f in sorted(metrics_dir.rglob("*")):
        key = f.relative_to(metrics_dir).as_posix()
        if f.is_file() and not any(p.startswith(".") for p in key.split("/")):
            out.append((key, f))
    return out


def _read_metric_file(path: Path) -> _Points:
    """A file-store metric: one ``timestamp value step`` line per value (old
    MLflow versions wrote ``timestamp value``; a dataset's name and digest may
    follow the step)."""
    points: _Points = []
    for number, raw in enumerate(_read_text(path).splitlines(), start=1):
        fields = raw.split()
        if not fields:
            continue
        try:
            if not 2 <= len(fields) <= 5:
                raise ValueError(raw)
            step = int(fields[2]) if len(fields) > 2 else 0
            points.append((int(fields[0]), float(fields[1]), step))
        except ValueError:
            raise LogFormatError(
                path,
                "expected an MLflow metric line 'timestamp value step', "
                f"got {raw.strip()!r}",
                number,
            ) from None
    return points


def _choose_run(
    path: Path, runs: Mapping[str, _Run], wanted: str | None, how: str
) -> str:
    """The key of the run to read: the only one in ``runs``, or the one whose
    key or name is ``wanted``. Else raise, listing the runs (the most recent
    first) as the paths that read them alone; ``how`` says what to pass."""
    found = [k for k, r in runs.items() if wanted is None or wanted in (k, r.name)]
    if len(found) == 1:
        return found[0]
    if not runs:
        raise LogFormatError(path, "no MLflow run with logged metrics found")
    if not found:
        reason = f"no MLflow run {wanted!r} (a run id or name) with metrics"
    elif wanted is not None:
        reason = f"{len(found)} MLflow runs are named {wanted!r}"
    else:
        reason = f"{len(found)} MLflow runs with metrics"
    listed = sorted((runs[k] for k in found or runs), key=lambda r: -r.start)
    shown = ", ".join(
        f"{r.where} ({r.name!r})" if r.name else r.where for r in listed[:_RUNS_SHOWN]
    )
    if len(listed) > _RUNS_SHOWN:
        shown += f" and {len(listed) - _RUNS_SHOWN} more"
    raise LogFormatError(
        path, f"{reason}; read one by passing {how} (the most recent first): {shown}"
    )


def _read_mlflow_dir(path: Path, overrides: Mapping[str, str | None]) -> History:
    """An MLflow file-store run (``mlruns/<experiment id>/<run id>/``), its
    ``metrics/`` folder, or a folder holding one run with metrics."""
    runs = _mlflow_runs(path)
    if path.name == "metrics" and not runs:
        source, metrics_dir = path, path
    else:
        if not runs and (path / "metrics").is_dir():  # a run copied without meta
            runs = [path]
        if len(runs) > 1:  # not the deleted ones, nor those without metrics
            runs = [
                r
                for r in runs
                if _mlflow_meta(r).get("lifecycle_stage") != "deleted"
                and _metric_files(r / "metrics")
            ]
        found: dict[str, _Run] = {}
        for r in runs:
            meta = _mlflow_meta(r)
            start = meta.get("start_time", "")
            found[str(r)] = _Run(
                str(r), meta.get("run_name", ""), int(start) if start.isdigit() else 0
            )
        source = Path(_choose_run(path, found, None, "its folder"))
        metrics_dir = source / "metrics"
    metrics = {key: _read_metric_file(f) for key, f in _metric_files(metrics_dir)}
    metrics = {key: points for key, points in metrics.items() if points}
    if not metrics:
        raise LogFormatError(metrics_dir, "no metric values logged in this run")
    return _mlflow_history(metrics, source, overrides)


def _read_mlflow_db(
    path: Path, overrides: Mapping[str, str | None], wanted: str | None
) -> History:
    """An MLflow SQLite tracking database (``mlflow.db``), opened read-only: its
    one run with metrics, or the run ``wanted`` (an id or a name)."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
            if "metrics" not in tables:
                raise LogFormatError(
                    path,
                    "an SQLite database without MLflow's 'metrics' table "
                    "(not an MLflow tracking database)",
                )
            about: dict[str, tuple[str, int, str]] = {}
            if "runs" in tables:
                for run_id, name, start, stage in db.execute(
                    "SELECT run_uuid, name, start_time, lifecycle_stage FROM runs"
                ):
                    about[run_id] = (name or "", start or 0, stage or "")
            runs: dict[str, _Run] = {}
            for (run_id,) in db.execute("SELECT DISTINCT run_uuid FROM metrics"):
                name, start, stage = about.get(run_id, ("", 0, ""))
                if stage != "deleted":
                    runs[run_id] = _Run(str(path / run_id), name, start)
            chosen = _choose_run(path, runs, wanted, f"{path}/<run id or name>")
            rows = db.execute(
                "SELECT key, value, timestamp, step, is_nan FROM metrics "
                "WHERE run_uuid = ? ORDER BY timestamp, rowid",
                (chosen,),
            ).fetchall()
    except sqlite3.Error as e:
        raise LogFormatError(
            path, f"cannot be read as an SQLite database ({e})"
        ) from None
    metrics: dict[str, _Points] = {}
    # logging order: timestamps, and the order of insertion within a millisecond
    for order, (key, value, _, step, is_nan) in enumerate(rows):
        try:
            number = math.nan if is_nan else float(value)
            point = (order, number, int(step))
        except (TypeError, ValueError):
            raise LogFormatError(
                path, f"metric {key!r} holds {value!r} at step {step!r}: not numbers"
            ) from None
        if abs(number) == sys.float_info.max:  # how MLflow stores +-inf
            point = (order, math.copysign(math.inf, number), point[2])
        metrics.setdefault(str(key), []).append(point)
    source = path if wanted is None else path / wanted
    return _mlflow_history(metrics, source, overrides)


def _mlflow_history(
    metrics: Mapping[str, _Points], path: Path, overrides: Mapping[str, str | None]
) -> History:
    """A run's metrics as a History: every value at its own step, except a
    metric logged without steps (several values, all at one step: MLflow's
    default 0), placed in logging order: each value at the step of the
    training loss logged last before it (0 before the first). A training loss
    logged without steps has its n-th value at step n."""
    if overrides.get("step") is not None:
        _check.fail(
            "step_key",
            "None for MLflow runs",
            overrides["step"],
            "MLflow stores each value's step.",
        )
    for key, points in metrics.items():
        if any(not 0 <= step < 2**63 for _, _, step in points):
            raise LogFormatError(
                path, f"metric {key!r} is logged at a step outside [0, 2**63)"
            )
    keys = sorted(k for k in metrics if k != "step")  # "step" is each value's
    loss_key = _pick("loss", keys, overrides.get("loss"), path)
    loss_parts = [] if loss_key is None else _parts([(0, metrics)], loss_key)
    # the training loss (a sum's first part) in time order: the clock
    clock = sorted(metrics[loss_parts[0]], key=lambda p: p[0]) if loss_parts else []

    def stepless(points: _Points) -> bool:
        return len(points) > 1 and len({step for _, _, step in points}) == 1

    by_order = stepless(clock)
    times = [t for t, _, _ in clock]
    records: dict[int, dict[str, Any]] = {}
    for key in keys:
        points = metrics[key]
        in_time = bool(clock) and (by_order or stepless(points))
        for index, (t, value, step) in enumerate(points):
            if by_order and key in loss_parts:
                step = index
            elif in_time:
                at = bisect.bisect_right(times, t) - 1
                step = 0 if at < 0 else at if by_order else clock[at][2]
            records.setdefault(step, {"step": step})[key] = value
    rows = [(0, records[s]) for s in sorted(records)]
    history = _build(rows, ["step", *keys], path, {**overrides, "step": "step"})
    if by_order:  # no steps were logged
        columns = {k: v for k, v in history.columns.items() if k != "step"}
        history = dataclasses.replace(history, columns=columns)
    return history


def _json_why(e: json.JSONDecodeError) -> str:
    """A JSON error and its column ("Unterminated string starting at column 56")."""
    msg = e.msg if e.msg.endswith(" at") else f"{e.msg} at"
    return f"{msg} column {e.colno}"


def _first_char(path: Path) -> str:
    """The first character of a file that is not white space ("" if none, or
    unreadable: the reader then says why)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return ""
    return chr(head[0]) if head else ""


def _detect(path: Path) -> tuple[str, Path]:
    if path.is_dir():
        state = path / "trainer_state.json"
        if state.is_file():
            return "hf", state
        checkpoints = sorted(
            path.glob("checkpoint-*/trainer_state.json"),
            key=lambda p: int(re.sub(r"\D", "", p.parent.name) or 0),
        )
        if checkpoints:
            return "hf", checkpoints[-1]
        if _mlflow_runs(path) or (
            path.name == "metrics" and _is_mlflow_run(path.parent)
        ):
            return "mlflow", path  # before event files: runs may hold some
        if _event_files(path):
            return "tensorboard", path
        metrics = path / "metrics.csv"
        if metrics.is_file():
            return "csv", metrics
        # Lightning's CSVLogger: lightning_logs/version_N/metrics.csv
        versions = sorted(
            (
                p
                for pattern in ("*/metrics.csv", "*/*/metrics.csv")
                for p in path.glob(pattern)
                if p.is_file()
            ),
            key=lambda p: -p.stat().st_mtime,
        )
        if len(versions) == 1:
            return "csv", versions[0]
        if versions:
            shown = ", ".join(str(p.parent) for p in versions[:_RUNS_SHOWN])
            more = len(versions) - _RUNS_SHOWN
            raise LogFormatError(
                path,
                f"{len(versions)} runs with a metrics.csv; read one by passing its "
                f"folder (the most recent first): {shown}"
                + (f" and {more} more" if more > 0 else ""),
            )
        raise LogFormatError(
            path,
            "no log found in this directory (looked for trainer_state.json, "
            "MLflow runs, TensorBoard event files and metrics.csv, also in "
            "version_N sub-folders)",
        )
    if _is_sqlite(path):
        return "mlflow", path  # MLflow's tracking database (mlflow.db)
    name = path.name.lower()
    if "tfevents" in name:
        return "tensorboard", path
    if name.endswith((".jsonl", ".ndjson")):
        return "jsonl", path
    # a name that says JSON or CSV is trusted when the first character agrees
    # (a CSV saved as .json, or JSON as .csv, is read for what it holds)
    json_like = _first_char(path) in ("{", "[")
    if name.endswith(".json") and json_like:
        return "hf", path  # trainer_state.json or any JSON list / JSON lines
    if name.endswith((".csv", ".tsv")) and not json_like:
        return "csv", path
    # .log, .txt, .out, any other name: sniff the content (Keras' CSVLogger
    # writes training.log; consoles print pairs; JSON may lack its extension)
    text = _read_text(path)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise LogFormatError(path, "the file is empty", 1)
    head = lines[0].lstrip()
    if head.startswith(("{", "[")):
        try:
            json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            pass
        else:
            return "hf", path  # one JSON document (records, columns, trainer state)
        try:
            json.loads(head)
        except (json.JSONDecodeError, RecursionError):
            return "text", path  # a printed dict, not JSON
        return "jsonl", path
    if _csv_delimiter(lines) is not None or all(_looks_numeric(ln) for ln in lines):
        return "csv", path  # a table, or one number per line
    return "text", path


def read_log(
    path: str | Path,
    *,
    loss_key: str | None = None,
    val_key: str | None = None,
    lr_key: str | None = None,
    grad_norm_key: str | None = None,
    step_key: str | None = None,
    format: str | None = None,
) -> History:
    """Read a training log (CSV, JSON lines, JSON, TensorBoard, MLflow, console).

    Args:
        path: a log file, or a directory holding one (a Lightning ``version_N``
            directory, a Hugging Face output or checkpoint directory, a TensorBoard
            log directory, an MLflow run, experiment or ``mlruns/`` folder); an
            MLflow database, or one of its runs: ``mlflow.db/<run id or name>``.
        loss_key: the training-loss column, or a sum of columns (``"a+b"``); by
            default the first of ``KEYS["loss"]`` present, else the one column
            whose name contains ``loss`` and no validation word (``val``,
            ``valid``, ``eval``, ``test``, ``dev``), preferring per-step over
            per-epoch columns; parts of one loss after a common prefix
            (``train/box_loss``, ``train/cls_loss``) are summed.
        val_key: the validation-loss column (or a sum); by default the first
            of ``KEYS["val_loss"]``, else the one ``loss`` column with a
            validation word, or the sum of its parts as for the loss.
            Optional: a log without one reads fine.
        lr_key: the learning-rate column (``lr``, ``learning_rate``, Lightning's
            ``lr-Adam``...). Optional.
        grad_norm_key: the gradient-norm column (``grad_norm``...). Optional.
        step_key: the step column (``step``, ``global_step``..., ``epoch`` last).
            Without one, the n-th logged loss is step n.
        format: ``"csv"``, ``"jsonl"``, ``"hf"`` (whole-file JSON),
            ``"tensorboard"``, ``"mlflow"`` or ``"text"`` (console output);
            detected from the name and content when None.

    Returns:
        The :class:`History`, with ``source`` and the ``columns`` used.

    Raises:
        LogFormatError: the file is missing, empty or malformed (the message names
            the file and line), or holds no training loss; an MLflow store holds
            no run with metrics, or several (the message lists them).
        ValueError: an override names a column the file does not have (the message
            lists the columns it has).
        ImportError: a TensorBoard file without the ``tensorboard`` package.
    """
    p = Path(path)
    overrides: dict[str, str | None] = {
        "loss": loss_key,
        "val_loss": val_key,
        "lr": lr_key,
        "grad_norm": grad_norm_key,
        "step": step_key,
    }
    for name, value in (
        ("loss_key", loss_key),
        ("val_key", val_key),
        ("lr_key", lr_key),
        ("grad_norm_key", grad_norm_key),
        ("step_key", step_key),
    ):
        if value is not None and not isinstance(value, str):
            _check.fail(name, "a str or None", value, exc=TypeError)
    if format is not None:
        _check.choice("format", format, FORMATS)
    run: str | None = None  # one run of an MLflow database: "mlflow.db/<run>"
    if not p.exists() and format in (None, "mlflow") and _is_sqlite(p.parent):
        p, run = p.parent, p.name
    if not p.exists():
        raise LogFormatError(p, "no such file or directory")
    kind, target = _detect(p) if format is None else (format, p)
    try:
        if kind == "mlflow":
            if target.is_file():
                return _read_mlflow_db(target, overrides, run)
            return _read_mlflow_dir(target, overrides)
        if kind == "csv":
            if target.is_dir():
                target = target / "metrics.csv"
            return _read_csv(target, overrides)
        if kind == "jsonl":
            return _read_jsonl(target, overrides)
        if kind == "text":
            return _read_console(target, overrides)
        if kind == "hf":
            if target.is_dir():
                target = _detect(target)[1]
            return _read_json(target, overrides)
        return _read_tensorboard(target, overrides)
    except RecursionError:
        raise LogFormatError(target, "nested too deeply to be a training log") from None
