"""LR sweeps: when a range test is not enough, train at a few LRs and compare.

A range test reads one short run; when its suggestion is doubtful (low
``confidence``) or the last few percent matter, the answer is a sweep: train at
several learning rates, each from the same starting state, and keep the one with
the lowest validation loss. :func:`sweep` runs it around a suggestion (or over
LRs you give), framework-free: you write ``train_fn(lr) -> validation loss``
(a short run or a full one), lrkit picks the LRs, runs them in order, widens the
grid when the best LR sits on its edge, records a run that diverged as a result
(a non-finite loss), and returns a :class:`SweepResult` (data, never printed).

The grid around an LR ``c`` is log-spaced, ``step_decades`` apart (a quarter
decade, 1.78x, by default, the spacing of a fine grid search)::

    lr_k = c * 10 ** (step_decades * k),   k = -(n // 2), ..., n - 1 - n // 2

so the default ``num_lrs=5`` tries ``c/3.16, c/1.78, c, 1.78c, 3.16c`` (an even
``n`` puts the extra point below ``c``: an LR a little too low costs less than
one a little too high). When the best LR is the lowest or the highest tried,
up to ``extend`` more LRs are added beyond it, one grid step at a time, until
one is worse.

``reset`` (e.g. ``lrkit.torch.snapshot(model, optimizer).restore``) is called
before every run and once after the last, so that each run starts from the same
state and your objects are left as they were, also when ``train_fn`` raises.
An Optuna ``study`` (any storage: SQLite, RDB, journal) records every finished
run as a trial (the LR in ``params[param_name]``, the user attribute
``lrkit_sweep``) and lets an interrupted sweep resume: LRs that an earlier sweep
recorded there are not trained again (trials of your own objective are never
taken for a sweep's).

Example:
    >>> import math
    >>> from lrkit import sweep
    >>> def train_fn(lr):  # a basin in log-LR with its best at 0.01
    ...     return 1.0 + (math.log10(lr) + 2.0) ** 2
    >>> result = sweep(train_fn, around=0.001)  # 0.00032 .. 0.0032, best at the top
    >>> round(result.best_lr, 4), len(result.trials)  # widened: 0.0056, 0.01, 0.018
    (0.01, 8)
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _check
from ._util import (
    attach_partial,
    check_progress,
    json_clean,
    progress_hook,
    write_json,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SweepProgress", "SweepResult", "SweepTrial", "sweep", "sweep_grid"]

FORMAT_VERSION = 1
#: two LRs closer than this (relative) are the same LR (grid points, study
#: trials): no run trains differently at an LR 0.01% away, and a re-run whose
#: range test gives a centre off in its 7th digit (a GPU's reductions) reuses
#: the finished runs (at 1e-9 it retrained them all, review)
_SAME = 1e-4
#: the bounds of the log-uniform distribution the trials are recorded under in an
#: Optuna study (wider where an LR falls outside)
_STUDY_BOUNDS = (1e-12, 1e6)
#: the user attribute that marks the trials a sweep recorded in an Optuna study
_MARK = "lrkit_sweep"
#: neighbours of the best LR within this relative distance: a flat basin
FLAT_FRAC = 0.01


@dataclass(frozen=True)
class SweepTrial:
    """One LR of a sweep.

    Attributes:
        lr: the learning rate.
        loss: what ``train_fn(lr)`` returned (``nan`` or ``inf`` when it
            diverged).
        seconds: wall time of the run (0 for a result reused from a study).
        reused: taken from the Optuna study instead of trained again.
    """

    lr: float
    loss: float
    seconds: float = 0.0
    reused: bool = False

    @property
    def diverged(self) -> bool:
        """True when the loss is not finite."""
        return not math.isfinite(self.loss)


@dataclass(frozen=True)
class SweepProgress:
    """Report passed to the ``progress`` callback after each LR.

    Attributes:
        done: LRs finished so far (1-based).
        total: LRs planned so far, the next widening of the grid included
            (its best LR on an edge); equal to ``done`` at the last report.
        lr: the LR just finished.
        loss: its loss.
        best_lr: the best LR so far (``None`` while every run diverged).
        reused: the result came from the study.
    """

    done: int
    total: int
    lr: float
    loss: float
    best_lr: float | None
    reused: bool


@dataclass(frozen=True)
class SweepResult:
    """What a sweep found: every LR tried, its loss, and the best.

    Attributes:
        trials: the runs in the order they were made.
        center: the LR the grid was built around (``None`` for given LRs).
        reasons: plain-language notes (the best on the grid's edge, runs that
            diverged, a flat basin, results reused from a study).
    """

    trials: tuple[SweepTrial, ...]
    center: float | None = None
    reasons: tuple[str, ...] = field(default=())

    # ------------------------------------------------------------------ views
    @property
    def lrs(self) -> tuple[float, ...]:
        """The LRs tried, ascending."""
        return tuple(t.lr for t in self._sorted())

    @property
    def losses(self) -> tuple[float, ...]:
        """Their losses, in the order of :attr:`lrs`."""
        return tuple(t.loss for t in self._sorted())

    @property
    def best(self) -> SweepTrial | None:
        """The trial with the lowest finite loss (ties: the lower LR)."""
        return _best(self.trials)

    @property
    def best_lr(self) -> float | None:
        """The LR to train with: the best trial's (``None`` if all diverged)."""
        b = self.best
        return None if b is None else b.lr

    @property
    def best_loss(self) -> float | None:
        """The best trial's loss (``None`` if all diverged)."""
        b = self.best
        return None if b is None else b.loss

    @property
    def diverged(self) -> tuple[float, ...]:
        """The LRs whose run diverged, ascending."""
        return tuple(t.lr for t in self._sorted() if t.diverged)

    def _sorted(self) -> list[SweepTrial]:
        return sorted(self.trials, key=lambda t: t.lr)

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record (NaN and inf become ``None``)."""
        record: dict[str, Any] = json_clean(
            {
                "format": "lrkit.sweep",
                "version": FORMAT_VERSION,
                "best_lr": self.best_lr,
                "best_loss": self.best_loss,
                "center": self.center,
                "reasons": list(self.reasons),
                "trials": [
                    {
                        "lr": t.lr,
                        "loss": t.loss,
                        # JSON has no NaN or infinity: kept as text
                        **({"loss_text": repr(t.loss)} if t.diverged else {}),
                        "diverged": t.diverged,
                        "seconds": t.seconds,
                        "reused": t.reused,
                    }
                    for t in self.trials
                ],
            }
        )
        return record

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON to ``path``; returns the path."""
        return write_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> SweepResult:
        """Rebuild a result from :meth:`to_dict` output."""
        if record.get("format") != "lrkit.sweep":
            _check.fail(
                "record",
                "an lrkit sweep record (format 'lrkit.sweep')",
                record.get("format"),
            )
        version = record.get("version")
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            _check.fail(
                "record['version']",
                f"an int from 1 to {FORMAT_VERSION} (a newer lrkit wrote it?)",
                version,
            )
        rows = record.get("trials")
        if not isinstance(rows, list):
            _check.fail("record['trials']", "a list of trials", rows, exc=TypeError)

        def trial(i: int, t: Any) -> SweepTrial:
            lr = _scalar(t.get("lr")) if isinstance(t, Mapping) else None
            if lr is None or not lr > 0:
                _check.fail(f"record['trials'][{i}]", "a trial with an LR > 0", t)
            if "loss" not in t:
                _check.fail(f"record['trials'][{i}]", "a trial with a 'loss'", t)
            loss = t["loss"]  # None: a diverged run (its value in loss_text)
            try:
                value = (
                    float(t.get("loss_text", "inf")) if loss is None else float(loss)
                )
                seconds = float(t.get("seconds", 0.0))
            except (TypeError, ValueError):
                _check.fail(
                    f"record['trials'][{i}]",
                    "a trial whose loss and seconds are numbers",
                    t,
                )
            return SweepTrial(
                lr=lr, loss=value, seconds=seconds, reused=bool(t.get("reused", False))
            )

        trials = tuple(trial(i, t) for i, t in enumerate(rows))
        center = record.get("center")
        return cls(
            trials=trials,
            center=None if center is None else float(center),
            reasons=tuple(record.get("reasons", ())),
        )

    @classmethod
    def load(cls, path: str | Path) -> SweepResult:
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def plot(self, path: str | Path | None = None, *, ax: Any = None) -> Figure:
        """Loss vs LR (log axis): every run, the diverged ones marked at the top,
        the best starred and the centre the grid was built around dotted.

        Args:
            path: if given, the figure is saved there (PNG, SVG, PDF by suffix).
            ax: a matplotlib Axes to draw into (a new figure otherwise).

        Returns:
            The matplotlib ``Figure``.
        """
        from .plot import sweep_figure

        return sweep_figure(self, path=path, ax=ax)

    def summary(self) -> str:
        """A short table of the runs and the best LR, for printing."""
        best = self.best
        lines = ["       lr        loss"]
        for t in self._sorted():
            mark = "  <- best" if t is best else ("  diverged" if t.diverged else "")
            reused = " (from study)" if t.reused else ""
            lines.append(f"  {t.lr:9.3g}  {t.loss:10.4g}{mark}{reused}")
        head = (
            "every run diverged"
            if best is None
            else f"best lr {best.lr:.3g} (loss {best.loss:.4g})"
        )
        return "\n".join([head, *lines, *(f"- {r}" for r in self.reasons)])


def _best(trials: Sequence[SweepTrial]) -> SweepTrial | None:
    ok = [t for t in trials if not t.diverged]
    return min(ok, key=lambda t: (t.loss, t.lr)) if ok else None


def sweep_grid(
    center: float, num_lrs: int = 5, step_decades: float = 0.25
) -> list[float]:
    """The LRs a sweep around ``center`` tries first, ascending.

    ``lr_k = center * 10 ** (step_decades * k)`` for
    ``k = -(num_lrs // 2), ..., num_lrs - 1 - num_lrs // 2``.

    Example:
        >>> [round(x, 5) for x in sweep_grid(0.01, 3, 0.5)]
        [0.00316, 0.01, 0.03162]
    """
    c = _check.positive("center", center)
    n = _check.positive_int("num_lrs", num_lrs)
    s = _check.positive("step_decades", step_decades)
    lo = -(n // 2)
    try:
        grid = [c * 10.0 ** (s * k) for k in range(lo, lo + n)]
    except OverflowError:
        grid = [math.inf]
    if not all(0.0 < x < math.inf for x in grid) and not 1e-300 <= c <= 1e300:
        _check.fail(
            "center",
            "an LR within 1e-300 .. 1e300 (the around= of a sweep)",
            center,
            "A grid of LRs around it leaves the floats.",
        )
    if not all(0.0 < x < math.inf for x in grid):
        _check.fail(
            "step_decades",
            "small enough for the grid to stay within the floats",
            step_decades,
            f"center={center!r} with num_lrs={num_lrs!r} reaches 0 or infinity.",
        )
    return grid


def _scalar(value: Any) -> float | None:
    """``value`` as a float if it is one number: a Python or NumPy real, or a
    0-d array or tensor (detached) that is not boolean; else ``None``.
    A number too large for a float is ``inf``."""
    if value is None or isinstance(value, bool):
        return None
    if not _check.is_real(value):
        if not hasattr(value, "__float__") or getattr(value, "ndim", None) != 0:
            return None
        if "bool" in str(getattr(value, "dtype", "")):
            return None
        if hasattr(value, "detach"):
            value = value.detach()
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _positive_lr(param: str, value: Any) -> float:
    v = _scalar(value)
    if v is None:
        _check.fail(param, "a real number", value, exc=TypeError)
    return _check.positive(param, v)


def _center_of(around: Any) -> float:
    """The LR to sweep around: a number, a range test's suggestion or a
    :class:`~lrkit.Suggestion`'s LR."""
    if _scalar(around) is not None:
        return _positive_lr("around", around)
    for attr in ("suggestion", "lr"):
        if hasattr(around, attr):
            value = getattr(around, attr)
            if value is None:
                _check.fail(
                    "around",
                    "an LR > 0, or a range test result with a suggestion",
                    around,
                    "the range test made no suggestion (its reasons say why): "
                    "give the LRs to try with lrs=[...].",
                )
            return _positive_lr(f"around.{attr}", value)
    _check.fail(
        "around",
        "an LR > 0, a RangeTestResult or a Suggestion",
        around,
        exc=TypeError,
    )


def _as_loss(value: Any, lr: float) -> float:
    """``train_fn``'s result as a float (numbers, NumPy and 0-d tensor scalars,
    and one-element arrays or tensors, as a metric often comes)."""
    if getattr(value, "ndim", None) == 1 and tuple(getattr(value, "shape", ())) == (1,):
        value = value[0]
    v = _scalar(value)
    if v is None:
        _check.fail(
            f"train_fn({lr:.3g})",
            "a number (the loss to minimise, e.g. the validation loss)",
            value,
            exc=TypeError,
        )
    return v


def _same(a: float, b: float) -> bool:
    return abs(a - b) <= _SAME * max(abs(a), abs(b))


class _Study:
    """The Optuna side of a sweep: reuse finished trials, record new ones."""

    def __init__(self, study: Any, param_name: str) -> None:
        try:
            import optuna
        except ImportError as e:  # pragma: no cover - exercised only without optuna
            raise ImportError(
                "sweep(study=...) needs Optuna, which is not installed: "
                "pip install 'lrkit[optuna]' (or pip install optuna)."
            ) from e
        if not isinstance(study, optuna.Study):
            _check.fail("study", "an optuna.Study", study, exc=TypeError)
        if len(study.directions) != 1:
            _check.fail(
                "study",
                "a single-objective study",
                study,
                f"it has {len(study.directions)} objectives.",
            )
        if study.direction != optuna.study.StudyDirection.MINIMIZE:
            _check.fail(
                "study.direction",
                "MINIMIZE (create it with direction='minimize')",
                study.direction,
                "the sweep minimises the loss train_fn returns.",
            )
        states = optuna.trial.TrialState
        float_ = optuna.distributions.FloatDistribution
        # the study is read once: the LRs earlier sweeps recorded (their loss,
        # inf for a run that diverged), not a storage query per LR
        self.held: list[tuple[float, float]] = []
        for t in study.get_trials(deepcopy=False):
            dist = t.distributions.get(param_name)
            if dist is not None and not (isinstance(dist, float_) and dist.log):
                _check.fail(
                    "param_name",
                    "a parameter the study holds as a log-scale float, or not yet",
                    param_name,
                    f"trial {t.number} holds it as {dist!r}, and Optuna keeps one "
                    "kind per name: pass another param_name= or use a new study.",
                )
            if not t.user_attrs.get(_MARK) or set(t.params) != {param_name}:
                continue
            value = _scalar(t.params[param_name])
            if value is None:
                continue
            if t.state == states.COMPLETE and t.value is not None:
                self.held.append((value, float(t.value)))
            elif t.state == states.FAIL and t.user_attrs.get("lrkit_diverged"):
                # the non-finite loss it ended with (nan or inf), as recorded
                try:
                    lost = float(t.user_attrs.get("lrkit_loss", "inf"))
                except (TypeError, ValueError):
                    lost = math.inf
                self.held.append((value, lost if not math.isfinite(lost) else math.inf))
        self.optuna = optuna
        self.study = study
        self.name = param_name

    def done(self, lr: float) -> float | None:
        """The loss the study held for ``lr`` from an earlier sweep (the
        non-finite loss of a run that diverged: nan or inf); trials lrkit did
        not record are not used."""
        return next((loss for value, loss in self.held if _same(value, lr)), None)

    def record(self, lr: float, loss: float, seconds: float) -> None:
        """Add the finished run to the study as one trial (a run that diverged
        as a failed one): written in one call, so that no other worker's
        trial and no trial the user queued can take its place."""
        optuna = self.optuna
        lo, hi = _STUDY_BOUNDS
        dist = optuna.distributions.FloatDistribution(
            min(lo, lr), max(hi, lr), log=True
        )
        attrs: dict[str, Any] = {_MARK: True, "lrkit_seconds": seconds}
        finite = math.isfinite(loss)
        if not finite:
            attrs.update(lrkit_diverged=True, lrkit_loss=repr(loss))
        self.study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.COMPLETE
                if finite
                else optuna.trial.TrialState.FAIL,
                params={self.name: lr},
                distributions={self.name: dist},
                value=loss if finite else None,
                user_attrs=attrs,
            )
        )


def sweep(
    train_fn: Callable[[float], Any],
    lrs: Iterable[float] | None = None,
    *,
    around: Any = None,
    num_lrs: int = 5,
    step_decades: float = 0.25,
    extend: int = 3,
    reset: Callable[[], Any] | None = None,
    study: Any = None,
    param_name: str = "lr",
    progress: bool | Callable[[SweepProgress], None] | None = True,
) -> SweepResult:
    """Train at several LRs and return the one with the lowest loss.

    Args:
        train_fn: ``train_fn(lr) -> loss``: trains from the starting state at
            ``lr`` (for as long as you choose) and returns what to minimise,
            usually the validation loss. A non-finite result is a run that
            diverged (recorded, not an error); an exception stops the sweep.
        lrs: the LRs to try (a list, tuple or NumPy array, in any order;
            repeats are tried once). Give either
            ``lrs`` or ``around``.
        around: build the grid around this LR: a number, a
            :class:`~lrkit.RangeTestResult` (its ``suggestion``) or a
            :class:`~lrkit.Suggestion`; see :func:`sweep_grid`.
        num_lrs: LRs in the grid around ``around``.
        step_decades: the grid's spacing in decades (0.25: 1.78x).
        extend: when the best LR is the lowest or the highest tried, try up to
            this many more beyond it, one step at a time (the grid's own
            spacing at that end), until one is worse; 0 turns it off.
        reset: called before every run and once after the last (also when
            ``train_fn`` raises), e.g. ``snapshot.restore`` of a
            :func:`lrkit.torch.snapshot` taken before the sweep.
        study: an Optuna study (direction ``"minimize"``) to record every
            finished run in, as a trial with ``params[param_name] = lr`` and the
            user attribute ``lrkit_sweep`` (a run that diverged: a failed trial
            with ``lrkit_diverged``); LRs an earlier sweep recorded there are
            reused, not trained again, so a sweep that was interrupted resumes.
            Use a new study (or study name) when ``train_fn`` changes.
        param_name: the name of the LR parameter in ``study``.
        progress: ``True`` (default): a progress bar on stderr while the sweep
            runs, when stderr is a terminal or a notebook (none in a log file
            or under CI; what ``train_fn`` prints shows above it); ``False`` or
            ``None``: none; or a function called with a :class:`SweepProgress`
            after each LR (no bar).

    Returns:
        A :class:`SweepResult`: ``best_lr``, every trial, and reasons.

    Raises:
        ValueError, TypeError: on bad arguments (before any run) or when
            ``train_fn`` returns something other than a number. Any error
            after runs have finished (``train_fn`` raising or returning a bad
            value, Ctrl-C) carries them: its ``lrkit_sweep`` attribute is a
            :class:`SweepResult` of the finished runs (and, on Python 3.11+,
            a note lists them).

    Example:
        >>> from lrkit import sweep
        >>> result = sweep(lambda lr: abs(lr - 0.1), lrs=[0.01, 0.1, 1.0], extend=0)
        >>> result.best_lr
        0.1
    """
    # ---------------------------------------------------------- validate first
    _check.callable_("train_fn", train_fn)
    if (lrs is None) == (around is None):
        _check.fail(
            "lrs",
            "given when around is not (and not when it is)",
            lrs,
            "pass the LRs to try, or around=<an LR or a range test result>.",
        )
    center: float | None = None
    if lrs is not None:
        if isinstance(lrs, (str, bytes, Mapping)) or not isinstance(lrs, Iterable):
            _check.fail("lrs", "a sequence of LRs > 0", lrs, exc=TypeError)
        given = list(lrs)  # a list, a tuple, a NumPy array, a generator
        if not given:
            _check.fail("lrs", "a non-empty sequence of LRs > 0", lrs)
        grid = [_positive_lr(f"lrs[{i}]", v) for i, v in enumerate(given)]
        _check.positive_int("num_lrs", num_lrs)
        _check.positive("step_decades", step_decades)
    else:
        center = _center_of(around)
        grid = sweep_grid(center, num_lrs, step_decades)
    extend = _check.non_negative_int("extend", extend)
    if reset is not None:
        _check.callable_("reset", reset)
    check_progress(progress)
    if not isinstance(param_name, str) or not param_name:
        _check.fail("param_name", "a non-empty str", param_name, exc=TypeError)
    store = None if study is None else _Study(study, param_name)

    planned: list[float] = []
    for lr in sorted(grid):
        if not planned or not _same(planned[-1], lr):
            planned.append(lr)
    trials: list[SweepTrial] = []
    ran = False

    def run(lr: float) -> None:
        nonlocal ran
        held = None if store is None else store.done(lr)
        if held is not None:
            trial = SweepTrial(lr=lr, loss=held, reused=True)
        else:
            if reset is not None:
                reset()
            ran = True
            t0 = time.perf_counter()
            loss = _as_loss(train_fn(lr), lr)
            seconds = time.perf_counter() - t0
            if store is not None:
                store.record(lr, loss, seconds)
            trial = SweepTrial(lr=lr, loss=loss, seconds=seconds)
        trials.append(trial)
        if hook is not None:
            b = _best(trials)
            total = len(planned)
            if len(trials) >= total and extra < extend and _widen(trials) is not None:
                total += 1  # the grid widens next: the bar is not full yet
            hook(
                SweepProgress(
                    done=len(trials),
                    total=total,
                    lr=lr,
                    loss=trial.loss,
                    best_lr=None if b is None else b.lr,
                    reused=trial.reused,
                )
            )

    extra = 0
    with progress_hook(progress, "sweep", _show_trial) as hook:
        try:
            for lr in planned:
                run(lr)
            # widen the grid while its best LR sits on an edge
            while extra < extend:
                nxt = _widen(trials)
                if nxt is None:
                    break
                planned.append(nxt)
                extra += 1
                run(nxt)
        except BaseException as e:
            # the runs that finished are not lost with the one that failed
            if trials:
                _attach(e, _result(trials, center, extra, extend))
            raise
        finally:
            if ran and reset is not None:
                try:
                    reset()
                except BaseException as e:  # the last reset failed: the runs
                    if trials:  # are not lost with it
                        _attach(e, _result(trials, center, extra, extend))
                    raise
    return _result(trials, center, extra, extend)


def _widen(trials: Sequence[SweepTrial]) -> float | None:
    """The next LR of a grid whose best LR sits on an edge: one step beyond
    it, at the grid's spacing there; None when the best is inside."""
    tried = sorted(trials, key=lambda t: t.lr)
    best = _best(tried)
    if best is None or len(tried) < 2:
        return None
    side = _edge(tried, best)
    if side == "low":
        ratio = tried[0].lr / tried[1].lr
    elif side == "high":
        ratio = tried[-1].lr / tried[-2].lr
    else:
        return None
    # (12 significant digits: each widening multiplies the last LR, and
    # 0.010000000000000004 is 0.01)
    nxt = float(f"{best.lr * ratio:.12g}")
    return nxt if nxt > 0 and math.isfinite(nxt) else None


def _result(
    trials: list[SweepTrial], center: float | None, extra: int, extend: int
) -> SweepResult:
    return SweepResult(
        trials=tuple(trials),
        center=center,
        reasons=tuple(_reasons(trials, extra, extend)),
    )


def _attach(error: BaseException, done: SweepResult) -> None:
    """Give ``error`` the sweep's finished runs (``lrkit_sweep``, a note)."""
    runs = ", ".join(f"{t.lr:.3g} -> {t.loss:.4g}" for t in done._sorted())
    attach_partial(
        error,
        "lrkit_sweep",
        done,
        f"lrkit.sweep: {len(done.trials)} run(s) finished before this error "
        f"(lr -> loss: {runs}); they are in this exception's lrkit_sweep "
        "attribute (a SweepResult).",
    )


def _show_trial(p: SweepProgress) -> tuple[int, int, str]:
    """The progress bar's numbers for a finished sweep run."""
    best = "none yet" if p.best_lr is None else f"{p.best_lr:.3g}"
    return p.done, p.total, f"lr {p.lr:.3g}  loss {p.loss:.4g}  best lr {best}"


def _edge(tried: Sequence[SweepTrial], best: SweepTrial) -> str | None:
    """``"low"`` or ``"high"`` when the best of ``tried`` (ascending LRs) is an
    end of the grid and strictly better than its neighbour (a tie is a flat
    stretch, not a slope that goes on beyond the edge), else ``None``."""
    if len(tried) < 2:
        return None
    for side, end, nxt in (("low", tried[0], tried[1]), ("high", tried[-1], tried[-2])):
        if best is end and (nxt.diverged or end.loss < nxt.loss):
            return side
    return None


def _reasons(trials: Sequence[SweepTrial], extra: int, extend: int) -> list[str]:
    tried = sorted(trials, key=lambda t: t.lr)
    best = _best(tried)
    out: list[str] = []
    diverged = [t.lr for t in tried if t.diverged]
    if best is None:
        out.append(
            f"every run diverged (LRs {tried[0].lr:.3g} to {tried[-1].lr:.3g}): "
            "sweep lower LRs"
        )
        return out
    if extra:
        out.append(f"the grid was widened by {extra} LR(s): its best sat on an edge")
    side = _edge(tried, best)
    if side is not None:
        word, way = ("lowest", "lower") if side == "low" else ("highest", "higher")
        out.append(
            f"the best LR is the {word} tried ({best.lr:.3g})"
            + (f" after {extra} more" if extra else "")
            + f": a {way} one may be better; sweep {way}"
            + ("" if extend else " (or pass extend > 0)")
        )
    if len(tried) == 1:
        out.append("one LR tried: nothing to compare it with")
    if diverged:
        out.append(
            f"{len(diverged)} run(s) diverged (non-finite loss), the lowest at LR "
            f"{diverged[0]:.3g}"
        )
    i = tried.index(best)
    near = [
        t
        for t in tried[max(0, i - 1) : i + 2]
        if t is not best
        and not t.diverged
        and t.loss - best.loss <= FLAT_FRAC * abs(best.loss)
    ]
    ran = [t for t in tried if not t.diverged]
    if len(ran) >= 3 and len({t.loss for t in ran}) == 1:
        # no basin is this flat: the LR never reached the training, or the
        # metric cannot tell the runs apart
        out.append(
            f"every run ended at exactly the same loss ({best.loss:.6g}): the LR "
            "given to train_fn may not reach the training (an LR scheduler built "
            "before the sweep resets it from its own base: build it inside "
            "train_fn, lrkit.torch.Scheduler(..., base_lr=lr), or set a torch "
            "scheduler's base_lrs), or the metric is too coarse to tell the runs "
            "apart"
        )
    if near:
        lrs = ", ".join(f"{t.lr:.3g}" for t in near)
        out.append(
            f"flat basin: LR {lrs} ended within {FLAT_FRAC:.0%} of the best; "
            "where they tie, the lower LR is the safer"
        )
    reused = sum(t.reused for t in trials)
    if reused:
        out.append(f"{reused} result(s) taken from the study, not trained again")
    return out
