"""Tests of lrkit._watch: what the trainer callbacks share."""

from __future__ import annotations

import math

import pytest

import lrkit
from lrkit._watch import Watch, check_key


def _watch(**kw: object) -> Watch:
    settings: dict[str, object] = {
        "stop_on": ("nan", "diverged"),
        "verbose": True,
        "logger_name": "lrkit.test",
    }
    settings.update(kw)
    monitor = settings.pop("monitor", None)
    return Watch(monitor, **settings)  # type: ignore[arg-type]


def test_monitor_argument_builds_or_keeps_a_monitor() -> None:
    assert isinstance(_watch().monitor, lrkit.Monitor)
    config = lrkit.MonitorConfig(plateau_patience=3)
    assert _watch(monitor=config).monitor.config == config
    mon = lrkit.Monitor()
    assert _watch(monitor=mon).monitor is mon


def test_report_prints_new_warnings_once_and_returns_the_stop_kind(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    w = _watch()
    with caplog.at_level("INFO", logger="lrkit.test"):
        assert w.report(w.monitor.update(0, 1.0)) is None
        hit = w.report(w.monitor.update(1, math.nan))
        again = w.report(w.monitor.update(2, math.nan))  # extends the finding
    assert hit is not None and hit.kind == "nan" and w.stopped_by is hit
    assert again is not None and again.kind == "nan" and w.stopped_by is hit
    out = capsys.readouterr().out
    assert out.count("lrkit: nan at step 1:") == 1
    assert sum("lrkit: nan at step 1:" in r.message for r in caplog.records) == 1


def test_quiet_and_never_stopping(capsys: pytest.CaptureFixture[str]) -> None:
    w = _watch(stop_on=(), verbose=False)
    assert w.report(w.monitor.update(0, math.inf)) is None
    assert w.stopped_by is None and capsys.readouterr().out == ""


def test_finish_reports_withdrawals_once(capsys: pytest.CaptureFixture[str]) -> None:
    mon = lrkit.Monitor()
    for step in range(5000):  # slow at first, converged by the end
        mon.update(step, 2.0 * math.exp(-step / 1000) + 0.3 + 0.05 * math.sin(step))
    w = _watch(monitor=mon)
    w.finish()
    w.finish()
    out = capsys.readouterr().out
    assert out.count("too_slow from step") == 1 and "withdrawn" in out


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="monitor must be a lrkit.Monitor"):
        _watch(monitor="yes")
    for bad in (None, 5, "nan", b"nan"):
        with pytest.raises(TypeError, match="stop_on must be a sequence"):
            _watch(stop_on=bad)
    with pytest.raises(ValueError, match="stop_on must be a sequence"):
        _watch(stop_on=("nan", "explode"))
    with pytest.raises(TypeError, match="verbose must be True or False"):
        _watch(verbose=0)
    assert check_key("loss_key", "ce") == "ce"
    for bad_key in ("", None, 3):
        with pytest.raises(TypeError, match="val_key must be a non-empty log key"):
            check_key("val_key", bad_key)


def test_a_divergence_dated_back_is_printed_but_stops_nothing(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tests.test_monitor import EARLY_BLOWUP

    w = _watch(monitor=lrkit.MonitorConfig.for_points(60))
    hits = [w.report(w.monitor.update(s, x)) for s, x in enumerate(EARLY_BLOWUP)]
    assert any(f.kind == "diverged" for f in w.monitor.findings)
    assert hits == [None] * len(EARLY_BLOWUP) and w.stopped_by is None
    assert "lrkit: diverged at step" in capsys.readouterr().out


def test_a_monitor_given_as_a_dict_of_settings() -> None:
    """The JSON form a Hugging Face checkpoint saves a callback's monitor in."""
    w = Watch({"spike_z": 8.0}, stop_on=(), verbose=False, logger_name="t")
    assert w.monitor.config == lrkit.MonitorConfig(spike_z=8.0)
    with pytest.raises(TypeError, match=r"got a dict with unknown settings \['spik'\]"):
        Watch({"spik": 8.0}, stop_on=(), verbose=False, logger_name="t")
    with pytest.raises(ValueError, match="spike_z must be"):
        Watch({"spike_z": -1}, stop_on=(), verbose=False, logger_name="t")


def test_a_loaded_state_is_not_rebuilt_as_a_resumed_monitor() -> None:
    first = Watch(None, stop_on=(), verbose=False, logger_name="t")
    for t in range(20):
        first.monitor.update(t, 1.0 / (t + 1))
    w = Watch(None, stop_on=(), verbose=False, logger_name="t")
    w.load(first.monitor.state_dict())
    w.begin(trained_before=True)
    assert not w.monitor.config.resumed and w.monitor.last_step == 19
    fresh = Watch(None, stop_on=(), verbose=False, logger_name="t")
    fresh.begin(trained_before=True)
    assert fresh.monitor.config.resumed
