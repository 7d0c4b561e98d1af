"""`lrkit schedule` run as a real subprocess."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.helpers import run_lrkit as lrkit_cli

import lrkit

SPEC = "warmup(steps=100) >> cosine(total_steps=1000, end_lr=0)"


def test_json_single_spec_has_one_lr_per_step() -> None:
    r = lrkit_cli("schedule", SPEC, "--steps", "1100", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    s = lrkit.parse_schedule(SPEC)
    assert record["lrs"] == [s(t) for t in range(1100)]
    assert record["steps"] == 1100
    assert record["spec"] == SPEC
    assert record["end_step"] == 1100
    assert lrkit.schedule_from_config(record["config"]) == s
    assert record["summary"]["peak_step"] == 100
    assert {"step": 100, "label": "warmup end", "lr": 1.0} in record["milestones"]
    assert "warnings" not in record


def test_json_several_specs_and_base_lr_and_default_steps() -> None:
    r = lrkit_cli(
        "schedule", "cosine(50)", "one_cycle(80)", "--base-lr", "0.5", "--json"
    )
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert record["steps"] == 80  # the longest end_step
    assert [x["spec"] for x in record["schedules"]] == ["cosine(50)", "one_cycle(80)"]
    one_cycle = lrkit.parse_schedule("one_cycle(80)")
    assert record["schedules"][1]["lrs"] == [0.5 * one_cycle(t) for t in range(80)]
    assert len(record["schedules"][0]["lrs"]) == 80


def test_table_sparkline_and_png(tmp_path: Path) -> None:
    r = lrkit_cli("schedule", SPEC, "cosine(1100)", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert SPEC in r.stdout
    assert "warmup end" in r.stdout
    assert any(ch in r.stdout for ch in "▁▂▃▄▅▆▇█")
    png = tmp_path / "schedule.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 5000
    assert "schedule.png" in r.stderr


def test_lint_exit_codes() -> None:
    bad = lrkit_cli(
        "schedule", "warmup(500) >> cosine(10000)", "--steps", "10000", "--lint"
    )
    assert bad.returncode == 1
    assert "ends-late" in bad.stdout
    clean = lrkit_cli(
        "schedule", "warmup(500) >> cosine(9500)", "--steps", "10000", "--lint"
    )
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "no warnings" in clean.stdout
    js = lrkit_cli(
        "schedule",
        "cosine(1000)",
        "--steps",
        "1000",
        "--lint",
        "--json",
        "--plateau",
        "plateau(patience=10)",
        "--eval-every",
        "100",
    )
    assert js.returncode == 1
    warnings = json.loads(js.stdout)["warnings"]
    assert [w["code"] for w in warnings] == ["plateau-never-triggers"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["warmup(100) >> cosin(10)"],
            "unknown schedule 'cosin'; valid names: constant",
        ),
        (["cosine(total_steps=-1)"], "total_steps must be an int >= 1"),
        (["step(10)"], "'step(10)' has no end_step (it never settles)"),
        (
            ["constant(0.5)"],
            "'constant(0.5)' is constant from step 0 (end_step 0), so there is no "
            "length to preview; give --steps N.",
        ),
        (
            ["constant(0.5)", "piecewise([], [0.7])"],
            "every schedule is constant from step 0",
        ),
        (
            ["cosine_restarts(10, cycle_factor=1e300, num_cycles=3)"],
            "cycle_factor must be small enough that num_cycles=3 cycles",
        ),
        (
            ["cosine(10) >> cosine_restarts(10, cycle_factor=1e300, num_cycles=3)"],
            "(column 35: 'cycle_factor=1e300'",
        ),
        (["cosine(10)", "--steps", "0"], "--steps must be an int >= 1"),
        (["cosine(10)", "--plateau", "plateau()"], "add --lint"),
        (
            [
                "cosine(10)",
                "--lint",
                "--plateau",
                "plateau(patience=x y)",
                "--eval-every",
                "3",
            ],
            "column",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str) -> None:
    r = lrkit_cli("schedule", *args)
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lrkit: error: ")
    assert message in lines[0]
    assert "Traceback" not in r.stderr


def test_constant_previews_with_steps() -> None:
    r = lrkit_cli("schedule", "constant(0.5)", "--steps", "3", "--json")
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert (record["lrs"], record["end_step"]) == ([0.5, 0.5, 0.5], 0)


def test_help() -> None:
    r = lrkit_cli("schedule", "--help")
    assert r.returncode == 0
    assert "--lint" in r.stdout


def test_a_long_schedule_is_previewed_from_a_sample(tmp_path: Path) -> None:
    """Above 1 000 000 steps the preview samples the schedule (evenly, and
    around each milestone) instead of computing every step: a billion-step
    cosine took 24 GB and was killed; a 1e8 one under a memory cap printed a
    MemoryError traceback."""
    spec = "warmup(1000) >> cosine(1000000000)"
    r = lrkit_cli("schedule", spec, "--json", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    record = json.loads(r.stdout)
    assert "lrs" not in record and record["steps"] == 1_000_001_000
    steps, lrs = record["sample"]["steps"], record["sample"]["lrs"]
    s = lrkit.parse_schedule(spec)
    assert len(steps) < 30_000 and steps == sorted(set(steps))
    assert steps[0] == 0 and steps[-1] == 1_000_000_999
    assert {999, 1000, 1001} <= set(steps)  # around the warmup's end
    assert lrs == [s(t) for t in steps]
    assert record["summary"]["peak_step"] == 1000 and record["summary"]["peak"] == 1.0
    assert (tmp_path / "schedule.png").stat().st_size > 0
    text = lrkit_cli("schedule", spec)
    assert text.returncode == 0 and "(sampled: " in text.stdout
    # one million steps and fewer: every step
    r = lrkit_cli("schedule", "cosine(1000000)", "--json")
    assert len(json.loads(r.stdout)["lrs"]) == 1_000_000


def test_the_png_legend_sits_below_the_axes_clear_of_the_curves() -> None:
    """Four overlaid schedules: a legend inside the axes covered them."""
    from lrkit.plot import plot_schedules

    specs = ["cosine(1000)", "one_cycle(1000)", "wsd(1000)", "linear(1000)"]
    fig = plot_schedules(
        {spec: [lrkit.parse_schedule(spec)(t) for t in range(1000)] for spec in specs}
    )
    ax = fig.axes[0]
    assert ax.get_legend() is None and len(fig.legends) == 1
    fig.draw_without_rendering()  # the layout placed it
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == specs
    assert legend.get_window_extent().y1 <= ax.get_window_extent().y0


def test_without_base_lr_the_png_axis_reads_lr_multiplier(tmp_path: Path) -> None:
    """Without --base-lr the values are multipliers of the base LR, and the
    y axis says so; with it (even --base-lr 1: absolute) it says learning rate.
    The command's PNG is compared pixel by pixel with the figure drawn with
    each label."""
    from matplotlib.image import imread

    from lrkit.plot import plot_schedules

    spec = "cosine(200)"
    lrs = [lrkit.parse_schedule(spec)(t) for t in range(200)]
    drawn = {}
    for label in ("LR multiplier", "learning rate"):
        path = tmp_path / f"{label}.png"
        plot_schedules({spec: lrs}, path, steps={spec: range(200)}, ylabel=label)
        drawn[label] = imread(path)
    assert plot_schedules({spec: lrs}, ylabel="LR multiplier").axes[0].get_ylabel() == (
        "LR multiplier"
    )
    for args, label in (([], "LR multiplier"), (["--base-lr", "1"], "learning rate")):
        out = tmp_path / label.replace(" ", "_")
        r = lrkit_cli("schedule", spec, *args, "--out", str(out))
        assert r.returncode == 0, r.stderr
        assert (imread(out / "schedule.png") == drawn[label]).all(), args
    r = lrkit_cli("schedule", spec, "--json")
    assert json.loads(r.stdout)["base_lr"] == 1.0  # the record as before
