"""Figures (matplotlib, imported lazily inside each function) and terminal rendering.

Each part of lrkit keeps its own section below; sections are self-contained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


# --- schedules ---------------------------------------------------------------

_BLOCKS = "▁▂▃▄▅▆▇█"


def schedule_sparkline(values: Sequence[float], width: int = 60) -> str:
    """A one-line terminal picture of a schedule (the maximum of each column).

    Example:
        >>> schedule_sparkline([0.0, 0.5, 1.0, 0.5, 0.0], width=5)
        '▁▅█▅▁'
    """
    if not values:
        return ""
    n = len(values)
    width = max(1, min(width, n))
    cols = [
        max(values[i * n // width : max((i + 1) * n // width, i * n // width + 1)])
        for i in range(width)
    ]
    lo, hi = min(values), max(values)
    if hi <= lo:
        return _BLOCKS[-1] * width
    top = len(_BLOCKS) - 1
    return "".join(_BLOCKS[round((v - lo) / (hi - lo) * top)] for v in cols)


def plot_schedules(
    curves: Mapping[str, Sequence[float]],
    path: str | Path | None = None,
    *,
    log: bool = False,
    title: str | None = None,
) -> Figure:
    """Plot one or several LR curves (one value per step) on one axis.

    Args:
        curves: ``{label: lrs}``; several curves are overlaid.
        path: save the figure there (PNG, SVG, ... by suffix) when given.
        log: logarithmic LR axis.
        title: figure title.

    Returns:
        The matplotlib ``Figure`` (no pyplot state is touched).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, lrs in curves.items():
        ax.plot(range(len(lrs)), lrs, label=label, linewidth=1.5)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("learning rate")
    if log:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if len(curves) > 1 or any(len(k) <= 80 for k in curves):
        ax.legend(fontsize="small", loc="best")
    if title:
        ax.set_title(title)
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
