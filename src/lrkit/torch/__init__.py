"""The PyTorch adapter: the range test, the scheduler and the guard.

Needs PyTorch (``pip install 'lrkit[torch]'``). Names resolve lazily, one thin
module each: :func:`find_lr` (``finder.py``), :class:`Scheduler`
(``scheduler.py``), :class:`Guard` (``guard.py``), and the state snapshot used by
both the range test and the guard (``state.py``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

try:
    import torch as _torch
except ImportError as e:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "lrkit.torch needs PyTorch, which is not installed: "
        "pip install 'lrkit[torch]' (or pip install torch)."
    ) from e

_LAZY: dict[str, str] = {
    # --- range test ----------------------------------------------------------
    "find_lr": ".finder",
    # --- state snapshot ------------------------------------------------------
    "Snapshot": ".state",
    "snapshot": ".state",
    # --- scheduler -----------------------------------------------------------
    "Scheduler": ".scheduler",
    # --- guard ---------------------------------------------------------------
    "Guard": ".guard",
    "GuardEvent": ".guard",
    "GuardError": ".guard",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrkit.torch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .finder import (
        find_lr as find_lr,
    )
    from .guard import (
        Guard as Guard,
        GuardError as GuardError,
        GuardEvent as GuardEvent,
    )
    from .scheduler import (
        Scheduler as Scheduler,
    )
    from .state import (
        Snapshot as Snapshot,
        snapshot as snapshot,
    )
