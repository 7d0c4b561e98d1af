"""Diagnose learning-rate problems from the loss curve, live or from a log.

:class:`Monitor` is a streaming detector: feed it one training step at a time
with :meth:`Monitor.update` and it returns the :class:`Finding` objects opened or
extended by that step. It keeps fixed-size rolling windows and running
statistics only, so each update costs O(1) time and memory whatever the length of
the run. :func:`diagnose` runs a monitor over a whole :class:`~lrkit.History`
(read from a log file with :func:`lrkit.read_log`) and returns a
:class:`Diagnosis`: a verdict, the findings and advice in LR terms.

The statistics every detector uses (windows count updates, not steps):

- ``start``: the first finite loss.
- ``level``: the median of the last ``level_window`` (5) losses; a lone outlier
  does not move it.
- ``best``: the lowest ``level`` so far.
- ``progress`` ``P = start - best`` (>= 0): how much the run has gained.
- ``noise`` ``σ``: the median absolute step-to-step change over the last
  ``noise_window`` (64) updates, times 1.048 so that it equals the standard
  deviation of Gaussian noise.

Every threshold is a multiple of ``σ`` or ``P``, never of the loss value, so
adding a constant to the loss or multiplying it by a positive constant changes no
finding (up to floating-point rounding), and negative or near-zero losses work.
The gradient-norm detector uses ratios of the norm to itself, which are likewise
unchanged by scaling. See ``docs/monitor.md`` for each detector's rule.

Example:
    >>> import math
    >>> from lrkit import Monitor
    >>> mon = Monitor()
    >>> for t in range(200):
    ...     loss = 2.0 * math.exp(-t / 40) + 0.05 * math.sin(1.3 * t)
    ...     found = mon.update(t, loss)
    >>> mon.findings
    ()
    >>> [f.kind for f in mon.update(200, float("nan"))]
    ['nan']
    >>> f = mon.findings[0]
    >>> f.severity, f.first_step, f.is_new
    ('critical', 200, True)
"""

from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import os
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from . import _check
from ._util import robust_noise

if TYPE_CHECKING:
    from .logs import History

__all__ = [
    "KINDS",
    "SEVERITIES",
    "Diagnosis",
    "Finding",
    "Monitor",
    "MonitorConfig",
    "diagnose",
]

#: Finding kinds, in the order detectors run.
KINDS: tuple[str, ...] = (
    "nan",
    "diverged",
    "spike",
    "exploding_grad",
    "oscillating",
    "too_slow",
    "plateau",
    "overfitting",
)

#: Severities from mild to severe. ``info``: worth knowing, no action needed yet
#: (a plateau); ``warning``: the run is wasting compute or at risk, act soon;
#: ``critical``: the run is broken now (NaN, diverged).
SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")

SEVERITY_OF: Mapping[str, str] = MappingProxyType(
    {
        "nan": "critical",
        "diverged": "critical",
        "spike": "info",
        "exploding_grad": "info",
        "oscillating": "warning",
        "too_slow": "warning",
        "plateau": "info",
        "overfitting": "warning",
    }
)

_GAUSS = 1.0 / (math.sqrt(2.0) * 0.6744897501960817)  # median|N(0,2)| -> sigma
_TINY = 1e-12
# median |x_t - 2x_{t-1} + x_{t-2}| of Gaussian noise, in standard deviations
_D2_GAUSS = 0.6744897501960817 * math.sqrt(6.0)
_VAL_NOISE_WINDOW = 16  # validation evaluations behind the validation noise
# oscillating rule 1 measures a rise of `smooth` above its lowest value over the
# last _RISE_HORIZON·trend_window updates: the lowest value of a whole long run
# keeps drifting down with the noise, so any plateau would eventually "rise"
_RISE_HORIZON = 4


@dataclass(frozen=True, kw_only=True)
class MonitorConfig:
    """Thresholds of :class:`Monitor`; docs/monitor.md explains each rule.

    Windows, patiences and gaps count updates (calls to :meth:`Monitor.update`),
    not steps, so a log written every 50 steps reads like a live run; the
    validation detectors count validation evaluations.

    Attributes:
        min_updates: finite losses before the statistical detectors start. The
            first ``min_updates`` losses are judged together when the last of
            them arrives, with the noise of all of them, and for ``diverged``
            again at each update until ``4·min_updates`` with the noise measured
            since (a blow-up in the very first steps inflates the early noise).
            ``nan`` works from the first update.
        level_window: losses in the running median called ``level``.
        noise_window: step-to-step changes in the running median behind ``σ``.
        spike_z: a spike is a loss above the previous ``level`` by more than
            ``spike_z·σ`` ...
        spike_frac: ... and by more than ``spike_frac·P``.
        diverge_z: diverged when ``level - best`` exceeds ``diverge_z·σ`` ...
        diverge_frac: ... and ``diverge_frac·P``: the run lost that share of its
            progress, and the median of the last ``level_window`` losses says so,
            which a lone spike cannot.
        blowup_factor: also diverged, in the first ``4·min_updates`` updates,
            when ``min_updates - 1`` losses in a row exceed ``blowup_factor``
            times the first loss and no loss has been negative: worse than where
            the run began, every step, by a factor no noise explains. This
            catches blow-ups in the very first steps, whose own wild swings hide
            them from the noise-relative rule. It reads the zero of a
            non-negative loss (cross-entropy, MSE), so it is not shift-invariant
            and is off once a loss is negative; 0 turns it off. On a monitor
            started mid-run whose first loss happens to be a low batch, very
            noisy losses can trip it (measured on stationary log-normal batch
            noise: 0% of runs at sigma 0.3, 1% at 0.6, 4% at 1.0).
        grad_factor: exploding gradient when the norm exceeds ``grad_factor``
            times its median over the last ``grad_window`` updates.
        grad_window: gradient norms in that running median.
        trend_window: updates over which the recent trend is measured.
        smooth_span: span of the exponential average of ``level`` called
            ``smooth`` (``oscillating`` looks at its rises). With a span of 16
            the smoothed level of a flat, noisy curve already wanders by ``σ``
            over a few hundred updates; 32 halves its variance.
        osc_rise_frac: oscillating when ``smooth`` climbs above its lowest value
            over the last ``4·trend_window`` updates (the lowest value of a whole
            long run keeps drifting down with the noise) by more than
            ``osc_rise_frac·P`` ...
        osc_rise_z: ... and more than ``osc_rise_z·σ`` (a rise that a spike
            or noise does not explain: 1.5σ keeps 600-step flat plateaus of
            Gaussian or skewed noise below 2% false warnings; starts after
            ``2·trend_window`` updates and pauses while the LR rises (warmup),
            when ``lr`` is given); or
        osc_spikes: when ``osc_spikes`` instability events (a loss ``spike``
            or an ``exploding_grad``; one per update) occurred within
            ``trend_window`` updates. A lone event is an ``info`` finding. A
            gradient-norm outlier counts once the ``level_window`` losses
            after it show it (near a perfect fit the norm is heavy-tailed and
            an outlier changes nothing).
        slow_min_updates: updates before ``too_slow`` may fire.
        slow_ratio: the curve "has not started to flatten" when the second half
            of the run so far gained at least ``slow_ratio`` times what the first
            half gained (an exponential approach ``e^{-t/τ}`` does so only while
            ``t < 2·ln(1/slow_ratio)·τ``, i.e. about one time constant);
        slow_rate_z: too slow when it has not started to flatten and the
            ``level`` fell by less than ``slow_rate_z·σ`` over the last
            ``trend_window`` updates (tiny progress per step against the noise) ...
        slow_flat_z: ... or when the run gained less than ``slow_flat_z·σ`` in
            all (no progress above the noise; not after a spike, which makes a
            flat curve a broken run rather than a slow one). Not raised once the
            run diverged.
        slow_patience: updates the ``too_slow`` condition must hold in a row
            before the finding opens (its first step is where it began to hold).
            The steady condition must also hold through the second half of the
            run so far (a curve that bends late, a sigmoid, holds it for a while;
            a too-low LR holds it for good); once it holds it keeps holding
            within a 25% margin.
        slow_done_frac: at the end of the run (:meth:`Monitor.finish`) a
            ``too_slow`` finding is withdrawn when the run converged within its
            length after all: its last quarter moved (up or down) less than
            this fraction of the run's total gain (an exponential approach
            ``e^{-t/τ}`` does so after about 3.5 time constants); or, with
            the LR logged, the validation curve's last quarter gained less
            than this fraction of its total gain, or rose (a higher LR would
            not have lowered it). When the logged LR ends below half its peak
            (an anneal flattens the end of a too-low run as well), the run is
            judged as it was when the LR last fell there, if that came after
            the first third of the run (else it is not converged). The
            streaming rule cannot know how long the run will be: a curve
            still straight after a few hundred steps is slow for a short run
            and fine for a long one.
        slow_done_z: ... and the total gain exceeds ``slow_done_z`` times the
            noise of that difference (real progress, not noise).
        plateau_patience: validation evaluations without an improvement before
            ``plateau`` (an improvement beats the last improvement by more
            than ``plateau_frac`` times the validation progress so far, so
            small gains add up, as in torch's ``ReduceLROnPlateau``).
        plateau_frac: see ``plateau_patience``.
        overfit_frac: overfitting when the validation loss (median of its last
            3 values) is above its best by more than ``overfit_frac`` times its
            progress (when the first evaluation was the best: times what the
            training ``level`` gained since; when the progress is within
            ``overfit_z`` times the validation noise, the same, the rise then
            counted from the first evaluation), for ``overfit_patience``
            evaluations in a row, while the training ``level`` is below its
            value at the validation best.
        overfit_z: ... and by more than ``overfit_z`` times the validation
            noise, as must the validation progress it is measured against
            (not a training gain: when the first evaluation was the best, the
            rise alone): the median absolute second difference of the last 16
            evaluations, divided by 1.65 (the standard deviation of Gaussian
            noise; second differences ignore a steady trend), so that a
            validation curve that jitters is not read as a rise.
        overfit_patience: see ``overfit_frac``.
        merge_gap: a problem that stops for at most ``merge_gap`` training
            updates and comes back extends the same finding instead of opening
            a new one (``too_slow``, a property of a long stretch, keeps open
            for ``trend_window`` updates).
        val_merge_gap: the same for the validation detectors, in evaluations.
        resumed: the monitor joins a run that has trained before (resumed
            from a checkpoint, or attached late): the rules that compare the
            curve with its start as the start of training are off (the flat
            ``too_slow`` rule, "nothing learned since the start", and the
            blow-up rule). A resumed run on its plateau is then not "too slow".
    """

    min_updates: int = 10
    level_window: int = 5
    noise_window: int = 64
    spike_z: float = 6.0
    spike_frac: float = 0.25
    diverge_z: float = 6.0
    diverge_frac: float = 0.5
    blowup_factor: float = 3.0
    grad_factor: float = 10.0
    grad_window: int = 64
    trend_window: int = 64
    smooth_span: int = 32
    osc_rise_frac: float = 0.1
    osc_rise_z: float = 1.5
    osc_spikes: int = 3
    slow_min_updates: int = 100
    slow_ratio: float = 0.6
    slow_rate_z: float = 4.0
    slow_flat_z: float = 2.0
    slow_patience: int = 32
    slow_done_frac: float = 0.05
    slow_done_z: float = 10.0
    plateau_patience: int = 10
    plateau_frac: float = 0.01
    overfit_frac: float = 0.1
    overfit_z: float = 3.0
    overfit_patience: int = 3
    merge_gap: int = 10
    val_merge_gap: int = 2
    resumed: bool = False

    def __post_init__(self) -> None:
        if _check.positive_int("min_updates", self.min_updates) < 3:
            _check.fail("min_updates", ">= 3", self.min_updates)
        _check.positive_int("level_window", self.level_window)
        if _check.positive_int("noise_window", self.noise_window) < 2:
            _check.fail("noise_window", ">= 2", self.noise_window)
        for name in (
            "spike_z",
            "diverge_z",
            "osc_rise_z",
            "slow_rate_z",
            "slow_flat_z",
            "slow_done_z",
        ):
            _check.positive(name, getattr(self, name))
        _check.fraction("slow_done_frac", self.slow_done_frac)
        _check.non_negative("overfit_z", self.overfit_z)
        if _check.non_negative("blowup_factor", self.blowup_factor) and not (
            1.0 < self.blowup_factor < math.inf
        ):
            _check.fail(
                "blowup_factor", "0 (off) or > 1 and finite", self.blowup_factor
            )
        for name in (
            "spike_frac",
            "diverge_frac",
            "osc_rise_frac",
            "plateau_frac",
            "overfit_frac",
        ):
            _check.non_negative(name, getattr(self, name))
        if not _check.real("grad_factor", self.grad_factor) > 1 or not math.isfinite(
            self.grad_factor
        ):
            _check.fail("grad_factor", "> 1 and finite", self.grad_factor)
        _check.positive_int("grad_window", self.grad_window)
        if _check.positive_int("trend_window", self.trend_window) < 2:
            _check.fail("trend_window", ">= 2", self.trend_window)
        _check.positive_int("smooth_span", self.smooth_span)
        _check.positive_int("osc_spikes", self.osc_spikes)
        _check.positive_int("slow_min_updates", self.slow_min_updates)
        _check.non_negative_int("slow_patience", self.slow_patience)
        _check.fraction("slow_ratio", self.slow_ratio, low_open=True)
        _check.positive_int("plateau_patience", self.plateau_patience)
        _check.positive_int("overfit_patience", self.overfit_patience)
        _check.non_negative_int("merge_gap", self.merge_gap)
        _check.non_negative_int("val_merge_gap", self.val_merge_gap)
        if not isinstance(self.resumed, bool):
            _check.fail("resumed", "True or False", self.resumed, exc=TypeError)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def for_points(cls, n: int, **settings: Any) -> MonitorConfig:
        """The defaults with their training windows scaled to a log of ``n`` points.

        The default windows suit a loss logged every step of a run of a few
        hundred steps or more. A log written once an epoch, or every few hundred
        steps, holds far fewer points: read with the default windows, no slow
        trend or rise has room to show before the log ends (``too_slow``
        waits for 100 updates). Below ``SHORT_LOG = 300`` points every window
        and patience counted in training updates is scaled by ``n / 300``,
        down to a floor that keeps each rule meaningful::

            window = max(floor, round(default · min(1, n / 300)))

        (floors: ``noise_window`` and ``grad_window`` 8, ``trend_window`` 8,
        ``smooth_span`` 4, ``slow_min_updates`` 10, ``slow_patience`` 4,
        ``merge_gap`` 2). The running median (``level_window``, 5 losses) and
        the ``min_updates`` (10) the statistical detectors wait for are kept:
        shorter, the noise of a nearly flat curve reads as a rise, and a
        blow-up in the first points hides in the noise it inflates. The
        thresholds in noise units and the validation detectors (which count
        evaluations) are unchanged. :func:`diagnose` reads a whole log with
        this config; a live :class:`Monitor` keeps the defaults, since it
        cannot know how long the run will be.

        Args:
            n: the number of logged training losses (>= 1).
            **settings: config fields to set afterwards (they win over the
                scaling).

        Returns:
            The scaled config (the defaults, plus ``settings``, from 300 points).

        Example:
            >>> c = MonitorConfig.for_points(30)
            >>> c.trend_window, c.slow_min_updates, c.slow_patience
            (8, 10, 4)
            >>> MonitorConfig.for_points(5000) == MonitorConfig()
            True
        """
        _check.positive_int("n", n)
        frac = min(1.0, n / SHORT_LOG)
        scaled: dict[str, Any] = {}
        if frac < 1.0:
            d = cls()
            for name, floor in _SHORT_FLOORS.items():
                scaled[name] = max(floor, round(getattr(d, name) * frac))
        scaled.update(settings)
        return cls(**scaled)


#: Logs shorter than this many training points are read with scaled windows
#: (see :meth:`MonitorConfig.for_points`).
SHORT_LOG = 300
# the smallest each training window may become on a short log
_SHORT_FLOORS = {
    "noise_window": 8,
    "grad_window": 8,
    "trend_window": 8,
    "smooth_span": 4,
    "slow_min_updates": 10,
    "slow_patience": 4,
    "merge_gap": 2,
}


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One problem seen in the curve, with its evidence and advice.

    A finding is a value: when a problem persists, the monitor returns a new
    ``Finding`` with the same ``id`` and a later ``last_step``.

    Attributes:
        kind: one of :data:`KINDS`.
        first_step: the first step the problem shows in (it may precede
            ``detected_step`` when the detector needs a few steps to be sure).
        last_step: the last step the problem was seen in so far.
        detected_step: the step at which the monitor raised it.
        severity: ``"info"``, ``"warning"`` or ``"critical"`` (:data:`SEVERITIES`).
        advice: what to do, in learning-rate terms.
        evidence: the numbers behind it at its worst point (read-only mapping;
            for ``too_slow`` the latest: the curve as it is now).
        id: a number unique within one monitor, shared by the updates of one
            finding.
        is_new: True in the value returned by the update that raised the
            finding, False in the values returned as it is extended.
    """

    kind: str
    first_step: int
    last_step: int
    detected_step: int
    severity: str
    advice: str
    evidence: Mapping[str, float] = field(default_factory=dict, hash=False)
    id: int = 0
    is_new: bool = True

    def __post_init__(self) -> None:
        _check.choice("kind", self.kind, KINDS)
        _check.choice("severity", self.severity, SEVERITIES)
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle and copy with the evidence as a plain dict (a read-only view
        of one cannot be pickled): ``torch.save`` of a finding or a monitor."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        fields["evidence"] = dict(self.evidence)
        return (_finding_from_fields, (fields,))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record."""
        return {
            "kind": self.kind,
            "first_step": self.first_step,
            "last_step": self.last_step,
            "detected_step": self.detected_step,
            "severity": self.severity,
            "advice": self.advice,
            "evidence": dict(self.evidence),
            "id": self.id,
            "is_new": self.is_new,
        }


def _finding_from_fields(fields: dict[str, Any]) -> Finding:
    return Finding(**fields)


class _Open:
    """A finding being extended (mutable, private)."""

    __slots__ = (
        "detected_step",
        "evidence",
        "first_step",
        "hits",
        "id",
        "kind",
        "last_step",
        "last_tick",
        "lr",
        "score",
    )

    def __init__(self, kind: str, fid: int, first: int, step: int) -> None:
        self.kind = kind
        self.id = fid
        self.first_step = first
        self.detected_step = step
        self.last_step = step
        self.last_tick = 0
        self.hits = 0
        self.score = -math.inf
        self.evidence: dict[str, float] = {}
        self.lr: float | None = None  # the LR when it was raised (for its advice)


def _median_small(values: Iterable[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class _Curve:
    """A whole-run summary in O(1) memory: means of equal blocks of ``level``.

    Holds at most ``2 * half`` blocks; when full, neighbouring blocks merge and
    the block size doubles, so the blocks always cover the run from its start.
    """

    __slots__ = ("block", "half", "means", "part_n", "part_sum")

    def __init__(self, half: int = 16) -> None:
        self.half = half
        self.block = 1
        self.means: list[float] = []
        self.part_sum = 0.0
        self.part_n = 0

    def push(self, x: float) -> None:
        self.part_sum += x
        self.part_n += 1
        if self.part_n == self.block:
            self.means.append(self.part_sum / self.block)
            self.part_sum = 0.0
            self.part_n = 0
            if len(self.means) == 2 * self.half:
                m = self.means
                self.means = [0.5 * (m[i] + m[i + 1]) for i in range(0, len(m), 2)]
                self.block *= 2

    def last_quarter(self) -> tuple[float, float] | None:
        """``(total gain, gain of the last quarter)``: first block mean minus
        the last, and the mean at three quarters minus the last."""
        m = self.means
        if len(m) < 8:
            return None
        return m[0] - m[-1], m[(3 * len(m)) // 4] - m[-1]

    def halves(self) -> tuple[float, float, float] | None:
        """Mean level of the first block, at the middle, and of the last block."""
        m = self.means
        if len(m) < 4:
            return None
        return m[0], m[len(m) // 2], m[-1]

    def noise(self) -> float:
        """The noise of a difference of two block means, in units of ``σ``.

        A block mean averages ``block`` levels; levels are medians of 5 and
        overlap, which is about as noisy as a mean of ``block`` losses, with
        the median's lower efficiency (1.2): ``1.2·sqrt(2 / block)``.
        """
        return 1.2 * math.sqrt(2.0 / self.block)

    def copy(self) -> _Curve:
        c = _Curve(self.half)
        c.block, c.means = self.block, list(self.means)
        c.part_sum, c.part_n = self.part_sum, self.part_n
        return c


def _to_plain(x: Any) -> Any:
    """A monitor's attribute as plain data (dicts with string keys, lists,
    finite numbers, strings, None): strict JSON, and loadable by
    ``torch.load(weights_only=True)``. Values JSON has no type for (a tuple, a
    NaN) are tagged ``{"t": tag, "v": value}``."""
    if isinstance(x, float):
        return json_float(x)
    if x is None or isinstance(x, (bool, int, str)):
        return x
    if isinstance(x, list):
        return [_to_plain(v) for v in x]
    if isinstance(x, tuple):
        return {"t": "tuple", "v": [_to_plain(v) for v in x]}
    if isinstance(x, deque):
        return {"t": "deque", "v": [_to_plain(v) for v in x], "maxlen": x.maxlen}
    if isinstance(x, dict):
        return {"t": "dict", "v": [[_to_plain(k), _to_plain(v)] for k, v in x.items()]}
    if isinstance(x, Finding):
        d = x.to_dict()
        d["evidence"] = {k: json_float(v) for k, v in x.evidence.items()}
        return {"t": "Finding", "v": d}
    if isinstance(x, (_Open, _Curve)):
        slots = {k: _to_plain(getattr(x, k)) for k in type(x).__slots__}
        return {"t": type(x).__name__, "v": slots}
    raise TypeError(f"no plain form for {type(x).__name__}")  # pragma: no cover


def json_float(x: float) -> float | dict[str, str]:
    """A float as strict JSON: a non-finite one as ``{"t": "float", "v":
    "nan"}`` (``"inf"``, ``"-inf"``); see :func:`from_json_float`."""
    return x if math.isfinite(x) else {"t": "float", "v": repr(float(x))}


def from_json_float(x: Any) -> float:
    """The float :func:`json_float` wrote (a number is taken as it is);
    ValueError on anything else."""
    if isinstance(x, dict) and x.get("t") == "float" and x.get("v") in _NON_FINITE:
        return float(x["v"])
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return float(x)
    raise ValueError(f"not a number: {x!r}")


_NON_FINITE = ("nan", "inf", "-inf")


def _from_plain(x: Any) -> Any:
    """The inverse of :func:`_to_plain`; ValueError on anything it did not write."""
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    if isinstance(x, list):
        return [_from_plain(v) for v in x]
    if isinstance(x, dict) and x.get("t") == "float":
        return from_json_float(x)
    if not isinstance(x, dict) or not isinstance(x.get("v"), (list, dict)):
        raise ValueError(f"unexpected {type(x).__name__}")
    tag, v = x.get("t"), x["v"]
    if tag in ("tuple", "deque", "dict") and not isinstance(v, list):
        raise ValueError(f"{tag}: expected a list")
    if tag == "tuple":
        return tuple(_from_plain(e) for e in v)
    if tag == "deque":
        maxlen = x.get("maxlen")
        if maxlen is not None and not (isinstance(maxlen, int) and maxlen >= 0):
            raise ValueError(f"deque maxlen: {maxlen!r}")
        return deque((_from_plain(e) for e in v), maxlen=maxlen)
    if tag == "dict":
        if not all(isinstance(kv, list) and len(kv) == 2 for kv in v):
            raise ValueError("dict: expected [key, value] pairs")
        return {_from_plain(k): _from_plain(e) for k, e in v}
    if tag == "Finding" and isinstance(v, dict):
        evidence = v.get("evidence")
        if not isinstance(evidence, dict):
            raise ValueError("Finding: no evidence")
        numbers = {k: from_json_float(e) for k, e in evidence.items()}
        return Finding(**{**v, "evidence": numbers})
    if tag in ("_Open", "_Curve") and isinstance(v, dict):
        cls = _Open if tag == "_Open" else _Curve
        if set(v) != set(cls.__slots__):
            raise ValueError(f"{tag}: fields {sorted(v)}")
        obj = cls.__new__(cls)
        for k, e in v.items():
            setattr(obj, k, _from_plain(e))
        return obj
    raise ValueError(f"unknown tag {tag!r}")


def _stuck_or_none(o: _Open | None) -> bool:
    """No finding open, or the open one is a dead run's (``stuck``)."""
    return o is None or bool(o.evidence.get("stuck"))


def _fmt_lr(lr: float) -> str:
    return f"{lr:.3g}"


def _advice(
    kind: str,
    lr: float | None,
    evidence: Mapping[str, float],
    peak: float | None = None,
) -> str:
    """The advice for a finding; ``lr``: the LR when it was raised, ``peak``:
    the highest LR so far (an LR too low is judged against the schedule's top:
    a decay has shrunk the current one)."""
    which = "the current LR"
    if kind == "too_slow" and peak is not None and lr is not None and peak > lr:
        lr, which = peak, "the peak LR"

    def times(f: float) -> str:
        if lr is None or not math.isfinite(lr) or lr <= 0:
            return f"{f:g}x {which}"
        return f"{f:g}x {which} ({_fmt_lr(lr)} -> {_fmt_lr(lr * f)})"

    if kind == "nan":
        return (
            "The loss or gradient is not finite: LR likely far too high (or a "
            f"numerical bug: log(0), fp16 overflow). Roll back to the last good "
            f"state and retry at {times(0.1)}; add warmup and gradient clipping."
        )
    if kind == "diverged" and evidence.get("stuck"):
        return (
            "The loss blew up and has been back at its untrained level since "
            "(within a tenth of its first loss): the model is broken (dead units, "
            "a collapsed output), not recovering. Stop, and restart from the "
            f"initial weights at {times(0.1)}, or add warmup / gradient clipping."
        )
    if kind == "diverged":
        return (
            "The loss rose far above its best level (its running median, not a "
            "lone spike): LR likely too high. Roll back and retry at "
            f"{times(0.3)}, or add warmup / gradient clipping."
        )
    if kind == "spike":
        return (
            "Loss spike: the LR may be near the edge of stability. A lone spike "
            "the run recovers from needs no action; if they repeat, lower the LR "
            f"to {times(0.5)} or clip gradients."
        )
    if kind == "exploding_grad":
        return (
            "Gradient norm far above its running median. A lone outlier needs no "
            "action; if they repeat, clip gradients (max norm around "
            f"{evidence.get('median_grad_norm', float('nan')):.3g}) or lower the LR "
            f"to {times(0.5)}."
        )
    if kind == "oscillating":
        rule = evidence.get("rule", 0.0)
        if rule == 3.0:
            what = (
                "Loss spikes or gradient outliers keep coming "
                f"({int(evidence.get('spikes', 0))} in the last trend window)"
            )
        else:
            what = "The smoothed loss climbed back well above its best"
        return (
            f"{what}: LR likely too high. Try {times(0.3)}, or decay the LR now; "
            "gradient clipping helps against spikes."
        )
    if kind == "too_slow":
        if evidence.get("rule", 0.0) == 3.0:
            return (
                "The curve was still steep when the run ended: LR likely too low "
                f"(or too few steps). Try 3-10x {which}, e.g. {times(3)}; a "
                "range test (lrkit find) tells the right value."
            )
        if evidence.get("rule", 0.0) == 1.0:
            return (
                "The loss has not moved beyond its noise since the start: LR likely "
                "far too low (or the model is stuck: an LR so high that its first "
                "updates broke it, e.g. dead units, looks the same once a log "
                "averages those steps away; or the run started on a plateau it "
                f"had already reached, as a resumed one may). Try {times(10)}; a "
                "range test (lrkit find) tells which, and the right value."
            )
        return (
            "Progress is slow and steady, the curve has not started to flatten: LR "
            f"likely too low. Try 3-10x {which}, e.g. {times(3)}; a range "
            "test (lrkit find) tells the right value."
        )
    if kind == "plateau":
        before, now = evidence.get("lr_at_improvement"), evidence.get("lr")
        if before is not None and now is not None and 0.0 <= now < 0.5 * before:
            return (
                "No improvement for a while, although the LR was already cut since "
                f"the last one ({_fmt_lr(before)} -> {_fmt_lr(now)}): lower LRs "
                "do not help any more. Stop here (the best validation loss was at "
                f"step {int(evidence.get('best_val_step', -1))}), or change the "
                "model, the data or the regularisation."
            )
        return (
            "No improvement for a while: reduce the LR now (0.1-0.3x, i.e. reduce "
            "on plateau), or stop if the schedule is done."
        )
    return (
        "Validation loss rising while the training loss falls: not an LR problem. "
        "Stop early (best validation at step "
        f"{int(evidence.get('best_val_step', -1))}), regularise or add data; a "
        "lower LR only delays it."
    )


_VAL_KINDS = frozenset({"plateau", "overfitting"})
_HIGH_KINDS = ("oscillating", "spike", "exploding_grad")
_UNSTABLE_KINDS = frozenset({"nan", "diverged", "spike", "exploding_grad"})

# Statistics copied by Monitor.state() (everything but the findings).
#: a run that blew up and never fell this fraction below its first loss is dead
_DEAD_GAIN = 0.1
_DEAD_UPDATES = 100
_STATE_FORMAT = "lrkit.Monitor"
#: A gradient-norm outlier counts toward ``oscillating`` when the level after
#: it is above the level before it (less the trend) by this many noise units.
_CONFIRM_Z = 1.0
#: Fields added since the state's version 1, with their plain value when a
#: saved state lacks them.
_ADDED_FIELDS: dict[str, Any] = {"_pending": {"t": "deque", "v": []}}
# not part of state_dict: the thresholds (the loading monitor's own hold) and
# what follows from them
_NOT_SAVED = frozenset({"config", "_alpha"})

_STATE_FIELDS = (
    "_updates",
    "_ticks",
    "_last_step",
    "_n",
    "_prev",
    "_start",
    "_nonneg",
    "_blow_run",
    "_blow_step",
    "_recent",
    "_recent_steps",
    "_level",
    "_best",
    "_diffs",
    "_sorted",
    "_levels",
    "_smooth",
    "_smooth_mins",
    "_spikes",
    "_pending",
    "_curve",
    "_early",
    "_diverge_thr",
    "_broken",
    "_shaken",
    "_back_run",
    "_back_step",
    "_unstable",
    "_slow_since",
    "_first_step",
    "_start_level",
    "_gdiffs",
    "_gsorted",
    "_lr",
    "_lr_peak",
    "_decay_converged",
    "_decay_n",
    "_lr_rise",
    "_val_n",
    "_val_start",
    "_val_best",
    "_val_ref",
    "_val_ref_lr",
    "_val_best_step",
    "_val_best_n",
    "_val_best_train",
    "_val_since_best",
    "_val_recent",
    "_val_hist",
    "_val_above",
    "_val_curve",
)


class MonitorState:
    """An opaque copy of a monitor's running statistics (see :meth:`Monitor.state`)."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self._values = values


def _copy_value(v: Any) -> Any:
    if isinstance(v, deque):
        return deque(v, maxlen=v.maxlen)
    if isinstance(v, list):
        return list(v)
    if isinstance(v, _Curve):
        return v.copy()
    return v


class Monitor:
    """Streaming learning-rate diagnosis of a training run (framework-free).

    Call :meth:`update` once per optimizer step (or per logged step) with the
    training loss, and optionally the validation loss (on the steps it is
    computed), the gradient norm and the LR. Each call returns the findings it
    opened or extended, so a training loop can react at once (``f.is_new`` tells
    a new problem from an ongoing one); :attr:`findings` holds the latest version
    of every finding so far. Memory and time per update are O(1).

    Detectors (``σ``, ``P``, ``level``, ``best`` as in the module docstring;
    thresholds from :class:`MonitorConfig`):

    - ``nan`` (critical): the loss, validation loss or gradient norm is NaN/inf.
    - ``diverged`` (critical): ``level - best > max(diverge_z·σ, diverge_frac·P)``;
      it lasts while ``level`` stays above ``best`` by half the threshold it
      opened with.
    - ``spike`` (info): ``loss - previous level > max(spike_z·σ,
      spike_frac·P)``; a lone one the run recovers from needs no action.
    - ``exploding_grad`` (info): grad norm ``> grad_factor ×`` its running
      median; likewise.
    - ``oscillating`` (warning): spikes or gradient outliers repeat
      (``osc_spikes`` within ``trend_window`` updates), or the smoothed curve
      climbs well above its lowest value.
    - ``too_slow`` (warning): the curve has not started to flatten and gains
      little per step against the noise, or has not moved beyond the noise.
    - ``plateau`` (info): no validation improvement for ``plateau_patience``
      evaluations.
    - ``overfitting`` (warning): validation rising while training falls.

    Args:
        config: the thresholds; ``MonitorConfig()`` when None.
        **settings: shortcuts for config fields (``Monitor(spike_z=8)``).

    Example:
        >>> mon = Monitor(min_updates=5)
        >>> for t, loss in enumerate([1.0, 0.9, 0.85, 0.8, 0.78, 0.77, 0.76]):
        ...     _ = mon.update(t, loss)
        >>> [(f.kind, f.is_new) for f in mon.update(7, 40.0)]
        [('spike', True)]
    """

    def __init__(self, config: MonitorConfig | None = None, **settings: Any) -> None:
        if config is None:
            config = MonitorConfig(**settings)
        else:
            if not isinstance(config, MonitorConfig):
                _check.fail("config", "a MonitorConfig", config, exc=TypeError)
            if settings:
                config = replace(config, **settings)
        self.config = config
        self._next_id = 1
        self._findings: list[Finding] = []
        self._withdrawn: list[Finding] = []
        self._index: dict[int, int] = {}  # finding id -> position in _findings
        self._open: dict[str, _Open] = {}
        self._alpha = 2.0 / (config.smooth_span + 1)
        self._reset_stats()

    # ------------------------------------------------------------------ state
    def _reset_stats(self) -> None:
        c = self.config
        self._updates = 0  # calls to update()
        # updates with a training loss: the clock of the training windows
        # (validation or gradient-norm points logged between training steps
        # do not stretch them)
        self._ticks = 0
        self._last_step: int | None = None
        self._n = 0  # finite losses seen
        self._prev: float | None = None
        self._start = math.nan
        self._nonneg = True  # every finite loss so far was >= 0
        self._blow_run = 0  # losses in a row above blowup_factor x the first
        self._blow_step = 0  # the step where that run began
        self._recent: deque[float] = deque(maxlen=c.level_window)
        self._recent_steps: deque[int] = deque(maxlen=c.level_window)
        self._level = math.nan
        self._best = math.inf
        self._diffs: deque[float] = deque()  # |step-to-step change|, in order
        self._sorted: list[float] = []  # the same, sorted
        self._levels: deque[float] = deque(maxlen=c.trend_window)
        self._smooth = math.nan
        # (update, smooth) pairs, increasing: the lowest smooth of the last
        # _RISE_HORIZON·trend_window updates is the first one
        self._smooth_mins: deque[tuple[int, float]] = deque()
        self._spikes: deque[int] = deque()  # update numbers of recent spikes
        # instability events waiting for their consequence: (update, the
        # level before the event); see _confirm
        self._pending: deque[tuple[int, float]] = deque()
        self._curve = _Curve()
        self._early: list[tuple[int, float, float, float, float]] = []
        self._diverge_thr = math.nan
        self._broken = False  # a nan / diverged finding happened
        self._shaken = False  # an oscillating finding happened
        self._back_run = 0  # updates in a row within a tenth of the first loss
        self._back_step = 0  # the step that run began at
        self._unstable = False  # a nan / diverged / spike / exploding_grad one
        self._slow_since: tuple[int, int] | None = None  # (update, step)
        self._first_step = 0  # step of the first finite loss
        self._start_level = math.nan  # max(first loss, median of the first 5)
        self._gdiffs: deque[float] = deque()  # gradient norms, in order
        self._gsorted: list[float] = []
        self._lr: float | None = None
        self._lr_peak: float | None = None  # the highest LR given so far
        # converged before the LR last fell below half its peak (None: it has
        # not fallen yet); see _converged
        self._decay_converged: bool | None = None
        self._decay_n = 0  # finite losses when that happened
        self._lr_rise = -(10**18)  # update number of the last LR increase
        self._val_n = 0
        self._val_start = math.nan
        self._val_best = math.inf
        self._val_ref = math.inf  # the plateau rule's reference (see _observe_val)
        self._val_ref_lr: float | None = None  # the LR at that improvement
        self._val_best_step = -1
        self._val_best_n = 0  # the evaluation count at the best
        self._val_best_train = math.nan
        self._val_since_best = 0
        self._val_recent: deque[float] = deque(maxlen=3)
        self._val_hist: deque[float] = deque(maxlen=_VAL_NOISE_WINDOW)
        self._val_above = 0
        self._val_curve = _Curve()  # the validation curve, for _converged

    def state(self) -> MonitorState:
        """A copy of the running statistics, for :meth:`restore` (findings excluded).

        A guard that rolls a run back to a snapshot restores the monitor's state
        of that moment too, so the replayed steps are judged as the first time.
        """
        return MonitorState({k: _copy_value(getattr(self, k)) for k in _STATE_FIELDS})

    def restore(self, state: MonitorState) -> None:
        """Put back statistics taken with :meth:`state`; open findings are closed.

        The step counter is rolled back with them: after a restore (the run was
        rolled back), the next update only needs a step larger than the one the
        state was taken at, so the steps after the snapshot can be repeated.
        The peak LR the ``too_slow`` advice counts from starts again from the
        next LR given (a rollback comes with a cut LR).
        """
        if not isinstance(state, MonitorState):
            _check.fail(
                "state", "a MonitorState from Monitor.state()", state, exc=TypeError
            )
        for k, v in state._values.items():
            setattr(self, k, _copy_value(v))
        self._open.clear()
        # a rollback comes with a cut LR: the LR before it is no peak to aim at
        self._lr_peak = None

    def state_dict(self) -> dict[str, Any]:
        """Everything the monitor knows, as plain data, to resume a run exactly.

        Save it with a checkpoint and give it to :meth:`load_state_dict` of a
        monitor built for the resumed run: the resumed run is then judged
        exactly as the uninterrupted one would have been (a fresh monitor
        knows neither where the curve started nor its findings, and judges the
        first steps after a resume against those steps alone). The dict holds
        only dicts, lists, strings, numbers and None: it goes into
        ``torch.save`` (loadable with ``weights_only=True``) and ``json``
        (which writes NaN as ``NaN``).

        Example:
            >>> import json
            >>> a, b = Monitor(min_updates=5), Monitor(min_updates=5)
            >>> for t in range(8):
            ...     _ = a.update(t, 1.0 / (t + 1))
            >>> b.load_state_dict(json.loads(json.dumps(a.state_dict())))
            >>> a.update(8, 50.0) == b.update(8, 50.0)  # the same spike
            True
        """
        own = {k: _to_plain(v) for k, v in vars(self).items() if k not in _NOT_SAVED}
        return {
            "format": _STATE_FORMAT,
            "version": 1,
            "config": self.config.to_dict(),
            "state": own,
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Take the statistics and findings of :meth:`state_dict` (this
        monitor's own are replaced; its thresholds, the ``config``, stay).

        Raises:
            ValueError: ``state_dict`` is not one :meth:`state_dict` returned
                (nothing is changed).
        """
        expected = "a dict returned by Monitor.state_dict()"
        if (
            not isinstance(state_dict, Mapping)
            or state_dict.get("format") != _STATE_FORMAT
            or state_dict.get("version") != 1
            or not isinstance(state_dict.get("state"), Mapping)
        ):
            _check.bad_state_dict(expected, state_dict)
        saved = dict(state_dict["state"])
        # states saved before these fields existed: they start empty
        for k, v in _ADDED_FIELDS.items():
            saved.setdefault(k, v)
        mine = {k: v for k, v in vars(self).items() if k not in _NOT_SAVED}
        if set(saved) != set(mine):
            _check.fail(
                "state_dict",
                expected + " of this lrkit version",
                f"one with other fields ({', '.join(sorted(set(saved) ^ set(mine)))})",
                shown=True,
            )
        try:
            values = {k: _from_plain(v) for k, v in saved.items()}
        except (TypeError, ValueError) as e:
            _check.fail("state_dict", expected, f"a damaged one ({e})", shown=True)
        for k, v in values.items():
            old = mine[k]
            numbers = (int, float)
            if (
                type(v) is not type(old)
                and None not in (v, old)  # optional fields
                and not (isinstance(old, numbers) and isinstance(v, numbers))
            ):
                _check.fail(
                    "state_dict",
                    expected,
                    f"a damaged one ({k} is a {type(v).__name__})",
                    shown=True,
                )
        c = self.config
        for name in ("_recent", "_recent_steps", "_levels", "_diffs", "_gdiffs"):
            if not all(_check.is_real(x) for x in values[name]):
                _check.fail(
                    "state_dict", expected, f"a damaged one ({name})", shown=True
                )
        # this monitor's noise windows: the newest values, sorted afresh
        values["_diffs"] = deque(list(values["_diffs"])[-c.noise_window :])
        values["_gdiffs"] = deque(list(values["_gdiffs"])[-c.grad_window :])
        values["_sorted"] = sorted(values["_diffs"])
        values["_gsorted"] = sorted(values["_gdiffs"])
        # a trial on a copy: a state that cannot go on (a damaged entry in
        # one of its windows) is refused now, not at the next update
        probe = Monitor(c)
        probe._set_state(copy.deepcopy(values), mine)
        last = probe._last_step
        level = probe._level
        try:
            probe.update(
                0 if last is None else last + 1,
                level if math.isfinite(level) else 1.0,
                val_loss=1.0,
                grad_norm=1.0,
            )
        except Exception as e:  # any failure: a damaged state
            _check.fail("state_dict", expected, f"a damaged one ({e!r})", shown=True)
        self._set_state(values, mine)

    def _set_state(self, values: dict[str, Any], mine: dict[str, Any]) -> None:
        for k, v in values.items():
            old = mine[k]
            # the window lengths of this monitor's config hold
            setattr(
                self, k, deque(v, maxlen=old.maxlen) if isinstance(old, deque) else v
            )

    def _rebase(self) -> None:
        """Take the current level as the best so far (for a guard's rollback:
        divergence is judged from the state restored)."""
        if self._level == self._level and self._level > self._best:
            self._best = self._level
        # the spikes counted toward `oscillating`, and the smoothed curve's
        # low its rise is measured from, belong to the LR before the
        # rollback: no evidence about the LR after it
        self._spikes.clear()
        self._pending.clear()
        if self._smooth == self._smooth and self._smooth_mins:
            self._smooth_mins.clear()
            self._smooth_mins.append((self._ticks, self._smooth))

    def reset(self) -> None:
        """Forget the statistics (keep the findings): the curve starts afresh.

        Use after changing something that moves the loss on purpose (loading
        another checkpoint, switching data).
        """
        last = self._last_step
        updates, ticks = self._updates, self._ticks
        self._open.clear()
        self._reset_stats()
        self._last_step = last
        self._updates, self._ticks = updates, ticks

    @property
    def findings(self) -> tuple[Finding, ...]:
        """The latest version of every finding so far, in the order raised."""
        return tuple(self._findings)

    @property
    def withdrawn(self) -> tuple[Finding, ...]:
        """Findings :meth:`finish` took back once the whole run was known (a
        ``too_slow`` warning on a run that converged within its length)."""
        return tuple(self._withdrawn)

    @property
    def active(self) -> tuple[Finding, ...]:
        """The findings still open (seen within the last ``merge_gap`` updates)."""
        return tuple(self._findings[self._index[o.id]] for o in self._open.values())

    @property
    def last_step(self) -> int | None:
        """The step of the latest :meth:`update` (None before the first)."""
        return self._last_step

    @property
    def updates(self) -> int:
        """How many times :meth:`update` was called."""
        return self._updates

    def stats(self) -> dict[str, float]:
        """The running statistics the detectors use (for logging and plots)."""
        p = self._start - self._best
        return {
            "start": self._start,
            "level": self._level,
            "best": self._best,
            "progress": p if p > 0 else 0.0,
            "noise": self._sigma(),
            "smooth": self._smooth,
            "updates": float(self._updates),
            "losses": float(self._n),
            "val_losses": float(self._val_n),
        }

    def _sigma(self) -> float:
        s = self._sorted
        n = len(s)
        if not n:
            return math.nan
        m = s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])
        return m * _GAUSS

    # --------------------------------------------------------------- findings
    def _hit(
        self,
        kind: str,
        step: int,
        first: int,
        score: float,
        evidence: Mapping[str, float],
        out: list[Finding],
        last: int | None = None,
    ) -> None:
        o = self._open.get(kind)
        if o is None:
            o = _Open(kind, self._next_id, first, step)
            o.hits = self._updates  # the update that raised it
            o.lr = self._lr
            self._next_id += 1
            self._open[kind] = o
            self._index[o.id] = len(self._findings)
            self._findings.append(None)  # type: ignore[arg-type] # set below
        o.last_step = step if last is None else max(o.last_step, last)
        o.last_tick = self._val_n if kind in _VAL_KINDS else self._ticks
        if score >= o.score or kind == "too_slow":
            # too_slow: the curve as it is now (a stretch that was flat at
            # first and fell since is not "no progress" any more)
            o.score = max(score, o.score)
            o.evidence = dict(evidence)
        f = Finding(
            kind=kind,
            first_step=o.first_step,
            last_step=o.last_step,
            detected_step=o.detected_step,
            severity=SEVERITY_OF[kind],
            # the LR when it was raised: a schedule may have moved it since
            advice=_advice(
                kind, self._lr if o.lr is None else o.lr, o.evidence, self._lr_peak
            ),
            evidence=o.evidence,
            id=o.id,
            is_new=o.hits == self._updates,
        )
        self._findings[self._index[o.id]] = f
        out.append(f)
        if kind == "nan" or kind == "diverged":
            self._broken = True
        if kind == "oscillating":
            self._shaken = True
        if kind in _UNSTABLE_KINDS:
            self._unstable = True

    def _close_stale(self) -> None:
        c = self.config
        stale = []
        for kind, o in self._open.items():
            if kind in _VAL_KINDS:
                if self._val_n - o.last_tick > c.val_merge_gap:
                    stale.append(kind)
            elif self._ticks - o.last_tick > (
                c.trend_window if kind == "too_slow" else c.merge_gap
            ):
                stale.append(kind)
        for kind in stale:
            del self._open[kind]

    # ----------------------------------------------------------------- update
    def update(
        self,
        step: int,
        loss: float | None,
        *,
        val_loss: float | None = None,
        grad_norm: float | None = None,
        lr: float | None = None,
    ) -> list[Finding]:
        """Feed one step; return the findings it opened or extended.

        Args:
            step: the optimizer step (an int >= 0, larger than the previous one).
            loss: the training loss at ``step`` (NaN/inf allowed: a finding), or
                ``None`` for an update that only carries a validation loss or a
                gradient norm (logs that evaluate between logged training steps).
            val_loss: the validation loss, on the steps it is computed.
            grad_norm: the total gradient norm (before clipping) at ``step``.
                With AMP loss scaling, pass it only on the steps the scaler did
                not skip (skipped steps have an inf norm by design).
            lr: the LR used at ``step``: makes the advice concrete, and a rising
                LR (warmup) pauses the ``oscillating`` rules.

        Returns:
            The findings opened or extended by this step (``f.is_new`` tells
            which were opened), possibly empty.

        Raises:
            ValueError: ``step`` is negative or not larger than the previous one,
                or ``lr`` is negative.
            TypeError: a value is not a real number.
        """
        if type(step) is not int:
            if isinstance(step, bool) or not hasattr(step, "__index__"):
                _check.fail("step", "an int", step, exc=TypeError)
            step = int(step)
        last = self._last_step
        if last is not None and step <= last:
            _check.fail("step", f"> the previous step ({last})", step)
        if step < 0:
            _check.fail("step", ">= 0", step)
        x = loss if loss is None or type(loss) is float else _real("loss", loss)
        v = None if val_loss is None else _real("val_loss", val_loss)
        g = None if grad_norm is None else _real("grad_norm", grad_norm)
        if lr is not None:
            lr_f = _real("lr", lr)
            if not lr_f >= 0:
                _check.fail("lr", ">= 0", lr)
        self._last_step = step
        self._updates += 1
        if x is not None:
            self._ticks += 1
        out: list[Finding] = []
        if lr is not None:
            if self._lr is not None and lr_f > self._lr:
                self._lr_rise = self._ticks
            peak = self._lr_peak
            prev = self._lr
            if (
                peak is not None
                and lr_f < 0.5 * peak
                and (prev is None or prev >= 0.5 * peak)
            ):
                # an anneal begins (the latest, after warm restarts or a stray
                # low LR): judge convergence on the run so far, at an LR
                # still within half its peak
                self._decay_converged = self._flattened()
                self._decay_n = self._n
            self._lr = lr_f
            if self._lr_peak is None or lr_f > self._lr_peak:
                self._lr_peak = lr_f
        x_ok = x is None or x - x == 0.0  # False for NaN and +-inf
        v_ok = v is None or v - v == 0.0
        g_ok = g is None or g - g == 0.0
        if not (x_ok and v_ok and g_ok):
            ev = {} if x is None else {"loss": x}
            if v is not None:
                ev["val_loss"] = v
            if g is not None:
                ev["grad_norm"] = g
            self._hit("nan", step, step, 0.0, ev, out)
        if g is not None and g_ok:  # first: its events count for oscillating
            self._observe_grad(step, g, out)
        if x is not None and x_ok:
            self._observe(step, x, out)
        if v is not None and v_ok:
            self._observe_val(step, v, out)
        if self._open:
            self._close_stale()
        if len(out) > 1:
            latest = {f.id: f for f in out}
            out = list(latest.values())
        return out

    def _observe(self, step: int, x: float, out: list[Finding]) -> None:
        c = self.config
        n = self._n = self._n + 1
        prev = self._prev
        self._prev = x
        if x < 0.0:
            self._nonneg = False
        srt = self._sorted
        if prev is not None:
            d = x - prev
            if d < 0.0:
                d = -d
            diffs = self._diffs
            if len(diffs) == c.noise_window:
                del srt[bisect.bisect_left(srt, diffs.popleft())]
            diffs.append(d)
            bisect.insort(srt, d)
        rec = self._recent
        rec.append(x)
        self._recent_steps.append(step)
        prev_level = self._level
        r = sorted(rec)
        k = len(r)
        level = r[k // 2] if k % 2 else 0.5 * (r[k // 2 - 1] + r[k // 2])
        self._level = level
        best = self._best
        if level < best:
            self._best = best = level
        if n == 1:
            self._start = self._start_level = x
            self._first_step = step
        elif n <= c.level_window and level > self._start_level:
            self._start_level = level  # the higher of the first loss and median
        self._curve.push(level)
        levels = self._levels
        levels.append(level)
        sm = self._smooth
        sm = level if n == 1 else sm + self._alpha * (level - sm)
        self._smooth = sm
        if (
            c.blowup_factor
            and not c.resumed
            and n > 1
            and n <= 4 * c.min_updates
            and self._nonneg
        ):
            start = self._start
            if start > 0.0 and x > c.blowup_factor * start:
                if self._blow_run == 0:
                    self._blow_step = step
                self._blow_run += 1
                if self._blow_run >= c.min_updates - 1:
                    self._blowup(step, x, level, best, out)
            else:
                self._blow_run = 0
        if n < c.min_updates:
            self._early.append((step, x, prev_level, level, best))
            return
        m = len(srt)
        sigma = (
            srt[m // 2] if m % 2 else 0.5 * (srt[m // 2 - 1] + srt[m // 2])
        ) * _GAUSS
        start = self._start
        if n == c.min_updates:
            self._early.append((step, x, prev_level, level, best))
            self._judge_early(step, sigma, out)
            self._smooth_mins.append((self._ticks, sm))
            return
        p = start - best
        if p < 0.0:
            p = 0.0
        tiny = _TINY * (abs(start) + abs(best) + p) + 1e-300
        if self._early:
            self._rejudge_early(step, sigma, p, tiny, out)

        # diverged: the level (a median) far above the best level.
        diverged = self._diverged(step, step, x, level, best, p, sigma, tiny, out, None)

        # spike: one loss far above the previous level.
        jump = x - prev_level
        thr = c.spike_z * sigma
        t2 = c.spike_frac * p
        if t2 > thr:
            thr = t2
        if tiny > thr:
            thr = tiny
        u = self._ticks
        spikes = self._spikes
        if jump > thr and not diverged:
            self._spike(step, step, x, prev_level, thr, sigma, p, out)
            self._count(u)
        self._confirm(u, level, sigma)
        while spikes and u - spikes[0] >= c.trend_window:
            spikes.popleft()
        if diverged:
            return
        mins = self._smooth_mins
        while mins and mins[-1][1] >= sm:
            mins.pop()
        mins.append((u, sm))
        while u - mins[0][0] >= _RISE_HORIZON * c.trend_window:
            mins.popleft()
        smooth_best = mins[0][1]

        # The run's shape so far: gains of the first and second half.
        window = c.trend_window
        slow = flat_rule = False
        d1 = d2 = math.nan
        drop = levels[0] - level
        if n >= c.slow_min_updates and not self._broken:
            h = self._curve.halves()
            if h is not None:
                # hysteresis: a condition that holds (or a finding that is
                # open) keeps holding within a 25% margin
                hold = 1.25 if "too_slow" in self._open else 1.0
                d1 = h[0] - h[1]
                d2 = h[1] - h[2]
                total = self._start_level - level
                flat = (
                    not self._unstable
                    and not c.resumed
                    # (<=: a loss that never changed at all is flat too, unless
                    # it sits at 0: nothing left to learn)
                    and -c.slow_flat_z * sigma <= total <= c.slow_flat_z * sigma * hold
                    and (sigma > 0.0 or level != 0.0)
                )
                if self._slow_since is not None:
                    hold = 1.25
                steady = (
                    d1 > 0.0
                    and d2 * hold >= c.slow_ratio * d1
                    and drop < c.slow_rate_z * sigma * hold
                )
                slow = flat or steady
                flat_rule = flat

        # oscillating: repeated spikes or gradient outliers (rule 3); once the
        # curve is not slow, a rise of the smoothed curve (rule 1). (Rule 2, noise
        # growing against the trend, was dropped: batch noise of a classifier
        # grows as its loss falls.)
        reason = 0.0
        if len(spikes) >= c.osc_spikes:
            reason = 3.0
        elif n >= 2 * window and u - self._lr_rise > window and not slow:
            rise = sm - smooth_best
            if rise > c.osc_rise_frac * p and rise > c.osc_rise_z * sigma:
                reason = 1.0
        if reason:
            self._hit(
                "oscillating",
                step,
                step,
                (sm - smooth_best) / (p + tiny),
                {
                    "rule": reason,
                    "noise": sigma,
                    "progress": p,
                    "rise": sm - smooth_best,
                    "trend_drop": drop,
                    "spikes": float(len(spikes)),
                },
                out,
            )

        # too slow: little progress per step and the curve has not flattened.
        if slow and not any(k in self._open for k in _HIGH_KINDS):
            if self._slow_since is None:
                self._slow_since = (u, step)
        else:
            self._slow_since = None
        since = self._slow_since
        # flat: slow_patience updates in a row; steady: also through the second
        # half of the run so far (a curve that bends late, a sigmoid, holds the
        # steady condition for a while; a too-low LR holds it for good)
        need = c.slow_patience
        if not flat_rule and since is not None and since[0] > need:
            need = since[0]
        # an open too_slow finding is extended as soon as the curve is slow
        # again: one slow stretch, one finding, whichever rule holds
        if since is not None and (u - since[0] >= need or "too_slow" in self._open):
            self._hit(
                "too_slow",
                step,
                since[1],
                d2 / d1 if d1 > 0.0 else math.inf,
                {
                    "rule": 1.0 if flat_rule else 2.0,
                    "gain": self._start_level - level,
                    "noise": sigma,
                    "first_half_gain": d1,
                    "second_half_gain": d2,
                    "trend_drop": drop,
                },
                out,
            )

        # dead: a run that blew up or oscillated (a nan / diverged /
        # oscillating finding) and has been back within a tenth of its first
        # loss for slow_min_updates updates in a row (a non-negative loss: its
        # zero is read, as by the blow-up rule) has not recovered but is
        # broken for good: a diverged finding, open while that holds
        back = start > 0.0 and level > (1.0 - _DEAD_GAIN) * start
        self._back_run = self._back_run + 1 if back else 0
        if self._back_run == 1:
            self._back_step = step
        if (
            (self._broken or self._shaken)
            and c.blowup_factor
            and not c.resumed
            and self._nonneg
            # (100 at least: a short log's first point, an epoch's mean, is
            # no untrained loss)
            and self._back_run >= max(c.slow_min_updates, _DEAD_UPDATES)
            and "nan" not in self._open
            and _stuck_or_none(self._open.get("diverged"))
        ):
            self._hit(
                "diverged",
                step,
                self._back_step,
                level / start,
                {
                    "stuck": 1.0,
                    "loss": x,
                    "level": level,
                    "best": best,
                    "first_loss": start,
                    "updates_back": float(self._back_run),
                },
                out,
            )

    def finish(self) -> list[Finding]:
        """Judge the run as a whole once it is over; return the findings raised.

        The streaming ``too_slow`` rule must wait for a slow curve to stand out
        from the early phase of a healthy one; at the end of the run the length
        is known. When the whole run gained more than ``slow_flat_z·σ`` and its
        second half gained at least ``slow_ratio`` times its first half, the
        curve was still steep when training stopped: more steps or a higher LR
        would have gained more. This raises ``too_slow`` (``evidence["rule"]``
        3) over the second half, unless the run diverged, a ``too_slow`` was
        already raised, an LR-too-high finding is open, or the validation
        loss (three evaluations or more) was best in the first half of the run
        (training that falls on while validation does not is memorisation).
        :func:`diagnose` calls it.
        """
        c = self.config
        out: list[Finding] = []
        if self._converged():  # not too slow for this run's length, nor steep
            self._withdraw_slow()
            return out
        if (
            self._n < c.slow_min_updates
            or self._broken
            or any(f.kind == "too_slow" for f in self._findings)
            or any(k in self._open for k in _HIGH_KINDS)
            or self._last_step is None
        ):
            return out
        if (
            self._val_n >= 3
            and self._val_best_step < (self._first_step + self._last_step) // 2
        ):
            # the validation loss stopped improving in the first half: more
            # steps (or a higher LR) would not have lowered it; a training
            # loss that keeps falling is memorisation (a fine-tune, review)
            return out
        h = self._curve.halves()
        sigma = self._sigma()
        if h is None or math.isnan(sigma):
            return out
        d1, d2 = h[0] - h[1], h[1] - h[2]
        gain = self._start_level - self._level
        if (
            gain > c.slow_flat_z * sigma
            and d1 > 0.0
            and d2 >= c.slow_ratio * d1
            and d2 > c.slow_flat_z * sigma * self._curve.noise()
        ):
            self._updates += 1  # the judgement is an update of its own
            self._ticks += 1
            self._hit(
                "too_slow",
                self._last_step,
                (self._first_step + self._last_step) // 2,
                d2 / d1,
                {
                    "rule": 3.0,
                    "gain": gain,
                    "noise": sigma,
                    "first_half_gain": d1,
                    "second_half_gain": d2,
                },
                out,
            )
        return out

    def _converged(self) -> bool:
        """The run converged within its length: its last quarter moved less
        than ``slow_done_frac`` of its total gain, a gain beyond the noise.

        A schedule's anneal flattens the end of a too-low run as well: when
        the logged LR ends below half its peak, the run is judged as it was
        the moment the LR last fell there (converged at an LR still within
        half its peak), if that came after the first third of the run (an
        anneal at its end, or the last cycle's after warm restarts); an LR
        cut earlier (a step down after a few hundred steps) left most of the
        run at the lower LR, which no moment before it can judge: no
        convergence then."""
        if self._broken:
            return False
        peak, lr = self._lr_peak, self._lr
        if peak is not None and lr is not None and lr < 0.5 * peak:
            late = 3 * self._decay_n >= self._n
            return bool(self._decay_converged) and late
        return self._flattened()

    def _flattened(self) -> bool:
        """The curve so far flattened: its last quarter moved less than
        ``slow_done_frac`` of its total gain, which exceeds ``slow_done_z``
        noise units; or the validation curve did (its last quarter gained
        less than that, or rose): more progress on the training loss would
        not have lowered the validation loss."""
        if self._broken:
            return False
        sigma = self._sigma()
        # the noise of a difference of block means (a constant loss has none:
        # rounding in the means is no gain)
        if not math.isnan(sigma) and self._settled(
            self._curve.last_quarter(),
            max(sigma * self._curve.noise(), 1e-9 * abs(self._start_level)),
            either_way=True,
        ):
            return True
        if self._lr_peak is None:
            return False
        val_noise = _val_noise(self._val_hist) * math.sqrt(2.0 / self._val_curve.block)
        return self._settled(
            self._val_curve.last_quarter(),
            max(val_noise, 1e-9 * abs(self._val_start)),
            either_way=False,
        )

    def _settled(
        self, q: tuple[float, float] | None, noise: float, *, either_way: bool
    ) -> bool:
        """``q`` = (total gain, last quarter's gain): a total beyond
        ``slow_done_z`` noise units, and a last quarter below ``slow_done_frac``
        of it (its size when ``either_way``, a rise included otherwise)."""
        if q is None:
            return False
        c = self.config
        total, last = q
        moved = abs(last) if either_way else last
        return total > c.slow_done_z * noise and moved < c.slow_done_frac * total

    def _withdraw_slow(self) -> None:
        """Withdraw the ``too_slow`` findings (the run converged)."""
        self._withdrawn += [f for f in self._findings if f.kind == "too_slow"]
        self._findings = [f for f in self._findings if f.kind != "too_slow"]
        self._index = {f.id: i for i, f in enumerate(self._findings)}
        self._open.pop("too_slow", None)
        self._slow_since = None

    def _diverged(
        self,
        step: int,
        at: int,
        x: float,
        level: float,
        best: float,
        p: float,
        sigma: float,
        tiny: float,
        out: list[Finding],
        recent: Sequence[tuple[int, float]] | None,
    ) -> bool:
        """Check ``diverged`` for the point ``at``; True while it is open."""
        c = self.config
        thr = c.diverge_z * sigma
        t2 = c.diverge_frac * p
        if t2 > thr:
            thr = t2
        if tiny > thr:
            thr = tiny
        excess = level - best
        open_ = self._open.get("diverged")
        if open_ is not None and open_.evidence.get("stuck"):
            return False  # a dead run's: its own rule extends it (see update)
        if open_ is not None:
            if excess > 0.5 * self._diverge_thr:
                ev = _ev_level(x, level, best, p, sigma, self._diverge_thr)
                self._hit("diverged", step, at, excess / thr, ev, out, last=at)
                return True
            del self._open["diverged"]
            return False
        if excess > thr:
            self._diverge_thr = thr
            pairs = (
                recent
                if recent is not None
                else zip(self._recent_steps, self._recent, strict=True)
            )
            first = at
            for s, val in pairs:
                if val - best > thr:
                    first = s
                    break
            ev = _ev_level(x, level, best, p, sigma, thr)
            self._hit("diverged", step, first, excess / thr, ev, out, last=at)
            return True
        return False

    def _blowup(
        self, step: int, x: float, level: float, best: float, out: list[Finding]
    ) -> None:
        """``diverged`` by the blow-up rule (see ``MonitorConfig.blowup_factor``)."""
        c = self.config
        start = self._start
        thr = c.blowup_factor * start - best
        if "diverged" not in self._open:
            self._diverge_thr = thr
        ev = {
            "rule": 2.0,
            "loss": x,
            "level": level,
            "first_loss": start,
            "factor": level / start,
            "threshold": c.blowup_factor * start,
            "run": float(self._blow_run),
        }
        self._hit("diverged", step, self._blow_step, level / start, ev, out, last=step)

    def _count(self, u: int) -> None:
        """Count an instability event at update ``u`` toward ``oscillating``."""
        spikes = self._spikes
        if u in spikes:  # one event per update
            return
        if spikes and spikes[-1] > u:  # an early one, judged late
            bisect.insort(spikes, u)
        else:
            spikes.append(u)

    def _confirm(self, u: int, level: float, sigma: float) -> None:
        """Count the gradient-norm outliers whose consequence is known by now.

        A gradient-norm outlier counts toward ``oscillating`` only when the
        losses after it stay up: the level (the median of the
        ``level_window`` losses that followed it) is above the level before
        it, less the descent the curve makes meanwhile at its recent rate
        (over ``trend_window`` updates), by more than ``_CONFIRM_Z`` noise
        units. A step the LR made too large moves the weights and the next
        losses show it (an overshoot takes a few steps to undo); near a
        perfect fit the norm is heavy-tailed (a batch with one misfit example
        gives many times the median) and changes nothing after it. A loss
        spike is the loss itself and counts at once.
        """
        pending = self._pending
        wait = self.config.level_window
        if not pending or u - pending[0][0] < wait:
            return
        levels = self._levels
        rate = (levels[0] - levels[-1]) / (len(levels) - 1) if len(levels) > 1 else 0.0
        if rate < 0.0:
            rate = 0.0
        while pending and u - pending[0][0] >= wait:
            t, before = pending.popleft()
            if level - (before - rate * (wait + 1)) > _CONFIRM_Z * sigma:
                self._count(t)

    def _spike(
        self,
        step: int,
        at: int,
        x: float,
        prev_level: float,
        thr: float,
        sigma: float,
        p: float,
        out: list[Finding],
    ) -> None:
        ev = {
            "loss": x,
            "level": prev_level,
            "excess": x - prev_level,
            "threshold": thr,
            "noise": sigma,
            "progress": p,
        }
        self._hit("spike", step, at, (x - prev_level) / thr, ev, out, last=at)

    def _judge_early(self, step: int, sigma: float, out: list[Finding]) -> None:
        """Judge the first ``min_updates`` losses together, with their noise."""
        c = self.config
        start = self._start
        early = self._early
        for i, (at, x, prev_level, level, best) in enumerate(early):
            p = start - best
            if p < 0.0:
                p = 0.0
            tiny = _TINY * (abs(start) + abs(best) + p) + 1e-300
            window = [
                (e[0], e[1]) for e in early[max(0, i - c.level_window + 1) : i + 1]
            ]
            diverged = i >= 2 and self._diverged(
                step, at, x, level, best, p, sigma, tiny, out, window
            )
            if i < 3 or diverged:  # the previous level: a median of >= 3 losses
                continue
            thr = max(c.spike_z * sigma, c.spike_frac * p, tiny)
            if x - prev_level > thr:
                self._spike(step, at, x, prev_level, thr, sigma, p, out)
                # its update number: the early losses are judged together
                self._count(self._ticks - (len(early) - 1 - i))
        if self._broken:
            self._early = []

    def _rejudge_early(
        self, step: int, sigma: float, p: float, tiny: float, out: list[Finding]
    ) -> None:
        """Judge the first losses again with today's noise and progress.

        A blow-up in the very first steps inflates the noise measured then; the
        noise measured once the curve has settled tells how far off it was. Done
        until ``4·min_updates`` updates (or a divergence is found).
        """
        c = self.config
        if self._n > 4 * c.min_updates or self._broken:
            self._early = []
            return
        thr = max(c.diverge_z * sigma, c.diverge_frac * p, tiny)
        early = self._early
        hits = [i for i, e in enumerate(early) if i >= 2 and e[3] - e[4] > thr]
        if not hits:
            return
        i = hits[0]
        window = early[max(0, i - c.level_window + 1) : i + 1]
        first = next((e[0] for e in window if e[1] - e[4] > thr), early[i][0])
        worst = max(hits, key=lambda j: early[j][3] - early[j][4])
        _, x, _, level, best = early[worst]
        self._diverge_thr = thr
        ev = _ev_level(x, level, best, p, sigma, thr)
        self._hit(
            "diverged",
            step,
            first,
            (level - best) / thr,
            ev,
            out,
            last=early[hits[-1]][0],
        )
        o = self._open["diverged"]
        if o.detected_step == step:  # raised now: it ended back then
            o.last_step = early[hits[-1]][0]
            f = replace(out[-1], last_step=o.last_step)
            out[-1] = self._findings[self._index[o.id]] = f
        self._early = []

    def _observe_val(self, step: int, v: float, out: list[Finding]) -> None:
        c = self.config
        self._val_n += 1
        first = self._val_n == 1
        if first:
            self._val_start = v
        self._val_recent.append(v)
        if self._val_n == 3:
            # where validation began, for the scale of its progress: the
            # median of the first three (a first evaluation blown up, 1e6
            # then 2.1, 1.6, ..., made every later gain too small to count)
            self._val_start = _median_small(self._val_recent)
        self._val_curve.push(v)
        p_val = self._val_start - self._val_best if not first else 0.0
        if p_val < 0.0:
            p_val = 0.0
        tiny = _TINY * (abs(self._val_start) + abs(v)) + 1e-300
        # the patience counts from the last *significant* improvement (as
        # torch's ReduceLROnPlateau does): small gains add up against it
        if first or v < self._val_ref - max(c.plateau_frac * p_val, tiny):
            self._val_since_best = 0
            self._val_ref = v
            self._val_ref_lr = self._lr
        else:
            self._val_since_best += 1
        if v < self._val_best:
            self._val_best = v
            self._val_best_step = step
            self._val_best_n = self._val_n
            self._val_best_train = self._level
        p_val = max(self._val_start - self._val_best, 0.0)
        if self._val_since_best >= c.plateau_patience:
            self._hit(
                "plateau",
                step,
                step,
                float(self._val_since_best),
                {
                    "evaluations_without_improvement": float(self._val_since_best),
                    "best_val_loss": self._val_best,
                    "best_val_step": float(self._val_best_step),
                    # with the LR logged: was it cut since the last improvement?
                    **(
                        {"lr_at_improvement": self._val_ref_lr, "lr": self._lr}
                        if self._val_ref_lr is not None and self._lr is not None
                        else {}
                    ),
                },
                out,
            )
        rise = _median_small(self._val_recent) - self._val_best
        hist = self._val_hist
        hist.append(v)
        # the last 3 evaluations: the best and two after it at most, so their
        # median is above the best only if both later ones rose
        # the scale of a rise: the validation progress; when the first
        # evaluation was the best (none), what training gained since then
        ref = p_val
        train_then = self._val_best_train
        if train_then != train_then:  # evaluated before the first training loss
            train_then = self._start_level
        # the rise must beat the validation noise, and so must the validation
        # progress it is measured against; when the first evaluation was the
        # best, the reference is training's gain (not a validation value that
        # noise could fake): the rise alone must beat the noise
        # (a best within the noise of the first evaluation is judged like a
        # first-evaluation best, the rise counted from the first evaluation:
        # with validation every few epochs the first one can already sit near
        # the best, and a progress the noise hides could never be beaten; from
        # the lowest of many noisy values, noise alone would rise)
        noise = _val_noise(hist)
        within = self._val_best_n > 1 and p_val <= c.overfit_z * noise
        first_best = self._val_best_n == 1 or within
        if first_best:
            ref = max(train_then - self._level, 0.0)
        if within:
            rise = _median_small(self._val_recent) - self._val_start
        if (
            self._val_n - self._val_best_n >= 2
            and rise > c.overfit_frac * ref
            and (rise if first_best else min(rise, ref)) > c.overfit_z * noise
        ):
            self._val_above += 1
        else:
            self._val_above = 0
        if self._val_above >= c.overfit_patience and self._level < train_then:
            self._hit(
                "overfitting",
                step,
                self._val_best_step,
                rise / (p_val + tiny),
                {
                    "val_loss": v,
                    "best_val_loss": self._val_best,
                    "best_val_step": float(self._val_best_step),
                    "val_rise": rise,
                    "val_progress": p_val,
                    "val_noise": _val_noise(self._val_hist),
                    "train_level": self._level,
                    "train_level_at_best_val": self._val_best_train,
                },
                out,
            )

    def _observe_grad(self, step: int, g: float, out: list[Finding]) -> None:
        c = self.config
        srt = self._gsorted
        m = len(srt)
        if m >= c.min_updates:
            med = srt[m // 2] if m % 2 else 0.5 * (srt[m // 2 - 1] + srt[m // 2])
            if g > c.grad_factor * med:
                ratio = g / med if med > 0 else math.inf
                self._hit(
                    "exploding_grad",
                    step,
                    step,
                    ratio,
                    {"grad_norm": g, "median_grad_norm": med, "ratio": ratio},
                    out,
                )
                # an instability event once the loss shows it (see _confirm)
                bisect.insort(self._pending, (self._ticks, self._level))
        order = self._gdiffs
        if len(order) == c.grad_window:
            del srt[bisect.bisect_left(srt, order.popleft())]
        order.append(g)
        bisect.insort(srt, g)


def _val_noise(hist: Sequence[float]) -> float:
    """Noise of a validation curve: median |second difference| / 1.65."""
    h = list(hist)
    d2 = [abs(h[i] - 2.0 * h[i - 1] + h[i - 2]) for i in range(2, len(h))]
    return _median_small(d2) / _D2_GAUSS if d2 else 0.0


def _ev_level(
    x: float, level: float, best: float, p: float, sigma: float, thr: float
) -> dict[str, float]:
    return {
        "loss": x,
        "level": level,
        "best": best,
        "excess": level - best,
        "threshold": thr,
        "noise": sigma,
        "progress": p,
    }


def _real(name: str, value: Any) -> float:
    t = type(value)
    if t is float:
        return value  # type: ignore[no-any-return]
    if t is int:
        return float(value)
    return _check.real(name, value)


# ======================================================================= diagnose

#: Verdicts of :func:`diagnose`, from worst to mildest.
VERDICTS: tuple[str, ...] = (
    "diverged",
    "lr too high",
    "lr too low",
    "overfitting",
    "healthy",
    "too short",
)


@dataclass(frozen=True, kw_only=True)
class Diagnosis:
    """The diagnosis of a whole run.

    Attributes:
        verdict: one of :data:`VERDICTS`: ``"diverged"`` (a ``nan`` or
            ``diverged`` finding), ``"lr too high"`` (``oscillating``: spikes
            or gradient outliers that repeat, or a smoothed curve that climbs
            back), ``"lr too low"`` (``too_slow``), ``"overfitting"``,
            ``"healthy"`` (no warning; info findings such as a lone ``spike``,
            ``exploding_grad`` or a ``plateau`` allowed, and named in the
            summary), ``"too short"`` (fewer finite losses than
            ``min_updates``).
        summary: one sentence explaining the verdict.
        advice: what to do next, in LR terms.
        findings: every finding, in the order raised.
        steps: how many training steps were read.
        source: where the history came from.
        config: the thresholds used.
        withdrawn: findings the monitor raised while reading the run and took
            back once it was over (:attr:`Monitor.withdrawn`: a ``too_slow``
            warning on a run that converged within its length); a monitor
            watching the run live showed them.
    """

    verdict: str
    summary: str
    advice: str
    findings: tuple[Finding, ...]
    steps: int
    source: str = ""
    config: MonitorConfig = field(default_factory=MonitorConfig)
    withdrawn: tuple[Finding, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable record: verdict, summary, advice, findings, ..."""
        return {
            "verdict": self.verdict,
            "summary": self.summary,
            "advice": self.advice,
            "steps": self.steps,
            "source": self.source,
            "findings": [f.to_dict() for f in self.findings],
            "withdrawn": [f.to_dict() for f in self.withdrawn],
            "config": self.config.to_dict(),
        }


def _as_history(history: Any) -> History:
    from .logs import History

    if isinstance(history, History):
        return history
    if isinstance(history, (str, os.PathLike)):  # a log file, as the CLI reads
        from .logs import read_log

        return read_log(Path(history))
    lr = None
    if isinstance(getattr(history, "history", None), Mapping):
        lr = _keras_lr(history)
        history = history.history  # a keras.callbacks.History
    if isinstance(history, Mapping):  # columns: Keras' history.history
        from .logs import LogFormatError, history_of_columns

        empty = [k for k, v in history.items() if "loss" in str(k) and not v]
        if history and len(empty) == len(history):
            _check.fail(
                "history",
                "a dict of columns with values",
                f"a dict whose columns {sorted(map(str, empty))} are empty",
                "Nothing was logged yet.",
                shown=True,
            )
        named = any("lr" in str(k) or "learning" in str(k) for k in history)
        if lr is not None and not named:  # the optimizer's constant LR
            n = max([len(v) for v in history.values() if isinstance(v, list)] or [0])
            history = {**history, "lr": [lr] * n}
        try:
            return history_of_columns(history)
        except LogFormatError:
            _check.fail(
                "history",
                "a dict of columns (lists) with a training loss named like "
                "'loss', as Keras' history.history",
                f"a dict with keys {sorted(map(str, history))}",
                shown=True,
            )
    if isinstance(history, (str, bytes)) or not isinstance(
        history, (Sequence, Iterable)
    ):
        _check.fail(
            "history",
            "a History, a sequence of losses or a dict of columns",
            history,
            "Read a log file with lrkit.read_log(path).",
            exc=TypeError,
        )
    values = list(history)
    kept = [i for i, v in enumerate(values) if v is not None]
    if len(kept) == len(values):
        return History(loss=values)
    # None: nothing logged at that step (as in Monitor.update), not a NaN
    return History(loss=[values[i] for i in kept], steps=kept)


def _keras_lr(history: Any) -> float | None:
    """The constant LR of a Keras History's model (a float LR; None for a
    schedule, which changes within the run, or when it cannot be read)."""
    opt: Any = getattr(getattr(history, "model", None), "optimizer", None)
    while getattr(opt, "inner_optimizer", None) is not None:
        opt = opt.inner_optimizer
    value = getattr(opt, "learning_rate", None)
    if value is None or (callable(value) and not hasattr(value, "numpy")):
        return None
    try:
        lr = float(value.numpy() if hasattr(value, "numpy") else value)
    except (TypeError, ValueError, AttributeError):
        return None
    return lr if math.isfinite(lr) and lr > 0 else None


def diagnose(
    history: History | Sequence[float] | Mapping[str, Any] | str | os.PathLike[str],
    *,
    config: MonitorConfig | None = None,
    baseline_loss: float | None = None,
    **settings: Any,
) -> Diagnosis:
    """Diagnose a whole run from its logged curves.

    Streams the history through a :class:`Monitor`, every logged step once in
    order (validation losses and gradient norms keep their own steps; one
    logged between training steps is an update of its own, which the training
    windows do not count; the LR is carried forward between its logged steps),
    and turns the findings into a verdict.

    Args:
        history: a :class:`~lrkit.History` (see :func:`lrkit.read_log`), a
            plain sequence of training losses (steps 0, 1, ...; ``None``: no
            loss logged at that step, as in :meth:`Monitor.update`), or a dict
            of columns named as a log's (Keras' ``history.history``: ``loss``,
            ``val_loss``, ``learning_rate``; the ``History`` that ``fit``
            returns is taken too, with its optimizer's LR when that is a
            constant and not logged), or the path of a log file (read with
            :func:`lrkit.read_log`, as ``lrkit diagnose FILE`` does).
        baseline_loss: the loss of a model that learned nothing (chance:
            ``ln(number of classes)`` for cross-entropy, the variance of the
            targets for a mean squared error), when you know it. The first
            logged loss stands for it otherwise, which a blow-up before the
            first log (a log every few steps, or an epoch's mean) hides. With
            it, a run counts as recovered from a ``diverged`` finding only if
            its loss ended below it, and a run that ended at or above it is
            said to have learned nothing.
        config: the monitor's thresholds; when None, the defaults with their
            windows scaled to the log's length
            (:meth:`MonitorConfig.for_points`: a log of fewer than 300 points,
            such as one line per epoch, is read with shorter windows).
        **settings: shortcuts for config fields.

    Returns:
        The :class:`Diagnosis`.

    Example:
        >>> import math
        >>> from lrkit import diagnose
        >>> losses = [2.3 * math.exp(-t / 30) + 0.3 for t in range(150)]
        >>> diagnose(losses).verdict
        'healthy'
        >>> diagnose(losses[:100] + [1e3] * 10 + [math.nan]).verdict
        'diverged'
    """
    h = _as_history(history)
    if baseline_loss is not None:
        baseline_loss = _check.finite("baseline_loss", baseline_loss)
    if config is None:  # the defaults, scaled to a short log
        config = MonitorConfig.for_points(max(1, len(h.loss)), **settings)
        settings = {}
    mon = Monitor(config, **settings)
    # every logged step once, in order: training, validation and gradient-norm
    # points each keep their own step (validation between logged training steps
    # becomes an update of its own)
    train = dict(zip(h.steps.tolist(), h.loss.tolist(), strict=True))
    val = dict(zip(h.val_steps.tolist(), h.val_loss.tolist(), strict=True))
    grad = dict(zip(h.grad_norm_steps.tolist(), h.grad_norm.tolist(), strict=True))
    lr_steps = h.lr_steps.tolist()
    lr_values = h.lr.tolist()
    loss = h.loss.tolist()
    survived = _survived(h.steps.tolist(), loss, train, grad)
    for s in survived:  # read as not logged; reported as withdrawn below
        if not math.isfinite(train.get(s, 0.0)):
            del train[s]
        if not math.isfinite(grad.get(s, 0.0)):
            del grad[s]
    j_lr = -1
    for s in sorted({*train, *val, *grad}):
        while j_lr + 1 < len(lr_steps) and lr_steps[j_lr + 1] <= s:
            j_lr += 1
        lr = lr_values[j_lr] if j_lr >= 0 else None
        mon.update(
            s,
            train.get(s),
            val_loss=val.get(s),
            grad_norm=grad.get(s),
            lr=lr if lr is not None and math.isfinite(lr) and lr >= 0 else None,
        )
    mon.finish()
    findings = mon.findings
    finite = sum(1 for v in loss if math.isfinite(v))
    steps = h.steps.tolist()
    val_loss = h.val_loss.tolist()
    recovered = {
        f.id
        for f in findings
        if f.kind == "diverged"
        and _recovered(f, steps, loss, val_loss, mon.config.level_window, baseline_loss)
    }
    # "early": in the first tenth of the run's logged losses (not its steps:
    # a log written every 50 steps, or once an epoch, has few of them)
    early = {
        f.id
        for f in findings
        if bisect.bisect_left(steps, f.first_step) < 0.1 * len(steps)
    }

    def lr_at(step: int) -> float | None:
        """The LR logged last at or before ``step`` (the first one before it)."""
        if not lr_values:
            return None
        return float(lr_values[max(0, bisect.bisect_right(lr_steps, step) - 1)])

    verdict, summary, advice = _verdict(
        findings, finite, mon.config, recovered, early, lr_at
    )
    stats = mon.stats()
    end, noise = stats["level"], stats["noise"]
    if baseline_loss is not None and verdict != "too short" and end >= baseline_loss:
        worse = end > baseline_loss + 2.0 * (noise if math.isfinite(noise) else 0.0)
        if worse and verdict in ("healthy", "lr too low", "overfitting"):
            # worse than chance: no LR too low does that; one far too high
            # breaks a model in its first steps (before the first log)
            verdict = "lr too high"
            summary = (
                f"The loss ended at {end:.4g}, above the untrained loss "
                f"{baseline_loss:.4g} (baseline_loss): the model is worse than "
                "chance, so nothing was learned and something broke it."
            )
            lr0 = lr_at(steps[0])
            advice = (
                "LR likely far too high: it broke the model in the first steps "
                "(before the first log). Retry at 0.1x"
                + (f" ({_fmt_lr(lr0)} -> {_fmt_lr(0.1 * lr0)})" if lr0 else "")
                + ", with warmup, or run a range test (lrkit find)."
            )
        else:
            summary += (
                f" The loss ended at {end:.4g}, not below the untrained loss "
                f"{baseline_loss:.4g} (baseline_loss): nothing was learned."
            )
    if verdict == "lr too low":
        after = _learned_after_decay(steps, loss, lr_steps, lr_values, stats)
        if after is not None:
            peak = max(v for v in lr_values if math.isfinite(v))
            summary += (
                f" But the loss fell only once the LR had decayed (below 80% of its "
                f"peak {_fmt_lr(peak)} from step {after}): an LR too high at its "
                "peak stalls a run the same way."
            )
            advice = (
                f"Try a run at 0.3x the peak LR ({_fmt_lr(peak)} -> "
                f"{_fmt_lr(0.3 * peak)}) beside one at 3x: the loss stalled while the "
                "LR was high and fell once the schedule lowered it, which an LR too "
                "high explains as well as one too low (a range test, lrkit find, "
                "tells which)."
            )
    return Diagnosis(
        verdict=verdict,
        summary=summary,
        advice=advice,
        findings=findings,
        steps=len(h.steps),
        source=h.source,
        config=mon.config,
        withdrawn=(*survived.values(), *mon.withdrawn),
    )


_SURVIVED_AFTER = 3  # finite training losses that show a non-finite value did no harm


def _learned_after_decay(
    steps: Sequence[int],
    loss: Sequence[float],
    lr_steps: Sequence[int],
    lr_values: Sequence[float],
    stats: Mapping[str, float],
) -> int | None:
    """The step from which the logged LR stayed below 80% of its peak, when
    the loss stalled before it and fell after: it gained less than a tenth of
    its whole fall while the LR was within 80% of its peak, for at least a
    fifth of the run, and the whole fall is real (above 6 noise; levels are
    medians of 5 points, a fortieth of the log on long ones). An LR too high
    at its peak stalls a run as one too low does. None otherwise."""
    lrs = [(s, v) for s, v in zip(lr_steps, lr_values, strict=True) if math.isfinite(v)]
    pts = [(s, x) for s, x in zip(steps, loss, strict=True) if math.isfinite(x)]
    noise = stats.get("noise", math.nan)
    if len(lrs) < 2 or len(pts) < 20 or not noise > 0:
        return None
    peak = max(v for _, v in lrs)
    if not peak > 0:
        return None
    high = [s for s, v in lrs if v >= 0.8 * peak]
    first_high, last_high = high[0], high[-1]
    drop = next((s for s, v in lrs if s > last_high), None)
    if drop is None or lrs[-1][1] >= 0.8 * peak:
        return None  # the LR never left its peak for good

    half = max(2, len(pts) // 40)  # a median of 5 points, more on long logs
    pt_steps = [s for s, _ in pts]

    def level(around: int) -> float:
        i = bisect.bisect_left(pt_steps, around)
        window = [x for _, x in pts[max(0, i - half) : i + half + 1]]
        return _median_small(window)

    span = [s for s in pt_steps if first_high <= s <= last_high]
    if len(span) < 0.2 * len(pts):
        return None
    start, stalled, end = level(first_high), level(last_high), level(pts[-1][0])
    before, total = start - stalled, start - end
    if total > 6 * noise and before < 0.1 * total:
        return int(drop)
    return None


def _survived(
    steps: Sequence[int],
    loss: Sequence[float],
    train: Mapping[int, float],
    grad: Mapping[int, float],
) -> dict[int, Finding]:
    """Non-finite training losses or gradient norms that the run trained on
    past: the next ``_SURVIVED_AFTER`` logged training losses are finite.

    Left in the weights, a non-finite value makes every later loss non-finite;
    finite ones after it mean the update was skipped (a mixed-precision loss
    scaler does this on overflow, often in the first steps) or only the logged
    value was bad. A whole-run diagnosis reads such a point as not logged and
    reports it as a withdrawn ``nan`` finding (a live monitor cannot see the
    future, and raises it)."""
    out: dict[int, Finding] = {}
    bad = sorted(
        {s for s, v in train.items() if not math.isfinite(v)}
        | {s for s, v in grad.items() if not math.isfinite(v)}
    )
    for s in bad:
        i = bisect.bisect_right(steps, s)
        after = loss[i : i + _SURVIVED_AFTER]
        if len(after) < _SURVIVED_AFTER or not all(math.isfinite(v) for v in after):
            continue
        pairs = (("loss", train.get(s)), ("grad_norm", grad.get(s)))
        ev = {k: float(v) for k, v in pairs if v is not None}
        what = " and ".join(
            k.replace("_", " ") for k, v in ev.items() if not math.isfinite(v)
        )
        out[s] = Finding(
            kind="nan",
            first_step=s,
            last_step=s,
            detected_step=s,
            severity=SEVERITY_OF["nan"],
            advice=(
                f"A non-finite {what} at step {s}, and the run trained on with "
                "finite losses: the update was skipped (a mixed-precision loss "
                "scaler does this on overflow) or only the logged value was bad. "
                "No action; if it repeats, lower the LR or clip gradients."
            ),
            evidence=ev,
            id=-1,
            is_new=False,
        )
    return out


def _recovered(
    f: Finding,
    steps: Sequence[int],
    loss: Sequence[float],
    val_loss: Sequence[float],
    window: int,
    baseline: float | None = None,
) -> bool:
    """True when the run came back from a ``diverged`` finding and trained on.

    With ``level`` the running median of ``window`` losses and ``noise`` its
    step-to-step noise (:func:`~lrkit._util.robust_noise`): after the finding,
    ``level`` returned to the best level the run had before the blow-up
    (within ``2·noise``); the run made real progress (its best ``level`` below
    where it began by more than ``3·noise``, and for a non-negative loss by a
    tenth of that start); at the
    end it still held three quarters of that progress; its validation
    loss, when logged, ended below where it began; and, with ``baseline``
    (the untrained loss), its ``level`` ended below it.
    """
    before = f.evidence.get("best", f.evidence.get("first_loss"))
    if before is None or len(loss) < 2 * window:
        return False
    if not all(math.isfinite(v) for v in (*loss, *val_loss)):
        return False
    levels = [
        statistics.median(loss[i : i + window]) for i in range(len(loss) - window + 1)
    ]
    noise = robust_noise(levels)
    # where training began: the first loss, unless the first median is lower
    # (a blow-up in the first steps inflates that median)
    first, best, last = min(loss[0], levels[0]), min(levels), levels[-1]
    progress = first - best
    # a tenth of the first loss only where the loss's zero means something
    # (non-negative); a shifted or negative loss is judged against its noise
    share = 0.1 * first if min(loss) >= 0.0 else 0.0
    if progress <= max(3.0 * noise, share):
        return False  # no real progress
    if last > best + 0.25 * progress:
        return False  # lost more than a quarter of it by the end
    if len(val_loss) >= 2 and val_loss[-1] >= val_loss[0]:
        return False  # worse on validation than at the start
    if baseline is not None and last >= baseline:
        return False  # never got below the untrained loss
    after = [lv for i, lv in enumerate(levels) if steps[i + window - 1] > f.last_step]
    return bool(after) and min(after) <= before + 2.0 * noise


def _verdict(
    findings: Sequence[Finding],
    finite: int,
    config: MonitorConfig,
    recovered: frozenset[int] | set[int] = frozenset(),
    early: frozenset[int] | set[int] = frozenset(),
    lr_at: Callable[[int], float | None] | None = None,
) -> tuple[str, str, str]:
    """The verdict, its summary and advice; ``recovered``: ids of ``diverged``
    findings the run came back from (see :func:`_recovered`); ``early``: ids
    of findings in the first tenth of the run's logged losses."""
    by_kind: dict[str, list[Finding]] = {}
    for g in findings:
        by_kind.setdefault(g.kind, []).append(g)

    def first(*kinds: str) -> Finding | None:
        found = [f for k in kinds for f in by_kind.get(k, [])]
        return min(found, key=lambda f: f.detected_step) if found else None

    lasting = [g for g in by_kind.get("diverged", []) if g.id not in recovered]
    f = first("nan") or (
        min(lasting, key=lambda g: g.detected_step) if lasting else None
    )
    if f is not None:
        what = "non-finite values" if f.kind == "nan" else "a loss far above its best"
        advice = f.advice
        if f.kind == "diverged" and f.id in early:
            # it never trained: the LR is far off, not at the edge
            lr = None if lr_at is None else lr_at(f.first_step)
            tenth = "0.1x the LR" + (
                f" ({_fmt_lr(lr)} -> {_fmt_lr(0.1 * lr)})"
                if lr is not None and math.isfinite(lr) and lr > 0
                else ""
            )
            advice = (
                "The loss blew up from the start and never came back: LR likely "
                f"far too high. Retry at {tenth}, or find it with a range test "
                "(lrkit find); if the first steps train well at a lower LR, a "
                "warmup lets the run keep more of it."
            )
        return (
            "diverged",
            f"The run diverged at step {f.first_step} ({what}).",
            advice,
        )
    f = first("diverged")  # every one recovered
    if f is not None:
        others = sorted(
            {
                g.kind
                for k in ("oscillating", "spike", "exploding_grad")
                for g in by_kind.get(k, [])
            }
        )
        also = f"; also {', '.join(others)}" if others else ""
        at_start = f.id in early
        return (
            "lr too high",
            f"The loss blew up at step {f.first_step} and recovered after step "
            f"{f.last_step}: the LR is at the edge of stability"
            + (" at the start of training" if at_start else "")
            + also
            + ".",
            "LR likely too high for "
            + ("the first steps: add a warmup" if at_start else "this run: 0.5x")
            + " (or clip gradients). The run trained on, so it need not be restarted.",
        )
    f = first("oscillating")
    if f is not None:
        kinds = sorted(
            {
                g.kind
                for k in ("oscillating", "spike", "exploding_grad")
                for g in by_kind.get(k, [])
            }
        )
        return (
            "lr too high",
            f"Signs of an LR too high from step {f.first_step}: {', '.join(kinds)}.",
            f.advice,
        )
    f = first("too_slow")
    if f is not None:
        rule = f.evidence.get("rule", 0.0)
        what = (
            "No progress beyond the noise"
            if rule == 1.0
            else "Still steep at the end"
            if rule == 3.0
            else "Slow steady progress"
        )
        why = "" if rule == 1.0 else ": the curve had not started to flatten"
        return ("lr too low", f"{what} from step {f.first_step}{why}.", f.advice)
    f = first("overfitting")
    if f is not None:
        return (
            "overfitting",
            f"The validation loss rose from step {f.first_step} while the training "
            "loss fell.",
            f.advice,
        )
    if finite < config.min_updates:
        return (
            "too short",
            f"Only {finite} finite loss{'' if finite == 1 else 'es'}: at least "
            f"{config.min_updates} are "
            "needed for a diagnosis.",
            "Log more steps.",
        )
    notes = []
    events = sorted(
        (g.first_step, g.kind)
        for k in ("spike", "exploding_grad")
        for g in by_kind.get(k, [])
    )
    if events:
        names = {"spike": "loss spike", "exploding_grad": "gradient-norm outlier"}
        shown = ", ".join(f"{names[k]} at step {s}" for s, k in events[:3])
        more = f" and {len(events) - 3} more" if len(events) > 3 else ""
        notes.append(f"isolated {shown}{more} (recovered)")
    f = first("plateau")
    if f is not None:
        notes.append(f"the validation loss plateaued from step {f.first_step}")
    summary = "No LR problem found" + ("; " + "; ".join(notes) if notes else "") + "."
    # what the curve cannot tell: a too-low LR whose curve still bends (on
    # real Trainer and Lightning logs, most runs 30-300x too low read so)
    keep = (
        "Keep the LR. A curve that still bends can hide an LR 30-300x too low; "
        "a range test (lrkit find) tells."
    )
    return ("healthy", summary, f.advice if f is not None else keep)
