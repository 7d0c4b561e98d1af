"""lrkit: find, schedule and watch learning rates.

Every name below is resolved lazily on first use, so ``import lrkit`` loads no
framework and no matplotlib (check with ``python -X importtime -c "import lrkit"``).
``lrkit.find_lr`` loads the PyTorch adapter, which needs ``pip install lrkit[torch]``.

Example:
    >>> import lrkit
    >>> text = "warmup(steps=100) >> cosine(total_steps=1000, end_lr=0)"
    >>> s = lrkit.parse_schedule(text)
    >>> round(s(100), 6)
    1.0
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it (relative to this package).
# Keep one section per module; sections are owned by the module's author.
_LAZY: dict[str, str] = {
    # --- errors --------------------------------------------------------------
    "LRKitError": "._check",
    # --- range test (framework-free core) ------------------------------------
    "range_test": ".rangetest",
    "RangeTestResult": ".rangetest",
    "RangeTestSettings": ".rangetest",
    "Progress": ".rangetest",
    "lr_ladder": ".rangetest",
    # --- suggestion ----------------------------------------------------------
    "suggest": ".suggest",
    "Suggestion": ".suggest",
    # --- sweep ---------------------------------------------------------------
    "sweep": ".sweep",
    "sweep_grid": ".sweep",
    "SweepResult": ".sweep",
    "SweepTrial": ".sweep",
    "SweepProgress": ".sweep",
    # --- PyTorch adapter -----------------------------------------------------
    "find_lr": ".torch",
    # --- schedules -----------------------------------------------------------
    "Constant": ".schedules",
    "Step": ".schedules",
    "MultiStep": ".schedules",
    "Piecewise": ".schedules",
    "Exponential": ".schedules",
    "Linear": ".schedules",
    "Polynomial": ".schedules",
    "Cosine": ".schedules",
    "CosineRestarts": ".schedules",
    "Cyclic": ".schedules",
    "OneCycle": ".schedules",
    "InverseSqrt": ".schedules",
    "WarmupStableDecay": ".schedules",
    "Schedule": ".schedules",
    "schedule_from_config": ".schedules",
    "register": ".schedules",
    "registry": ".schedules",
    "parse_schedule": "._parse",
    "ScheduleSyntaxError": "._parse",
    "lint": "._lint",
    "LintWarning": "._lint",
    # --- composition ---------------------------------------------------------
    "Warmup": ".compose",
    "Join": ".compose",
    "Scale": ".compose",
    # --- reduce on plateau ---------------------------------------------------
    "ReduceOnPlateau": ".plateau",
    "PlateauState": ".plateau",
    # --- monitor -------------------------------------------------------------
    "Monitor": ".monitor",
    "MonitorConfig": ".monitor",
    "Finding": ".monitor",
    "diagnose": ".monitor",
    "Diagnosis": ".monitor",
    # --- logs ----------------------------------------------------------------
    "History": ".logs",
    "read_log": ".logs",
    "LogFormatError": ".logs",
}

__all__ = sorted([*_LAZY, "__version__"])


# adapter subpackages, imported on first attribute access (lrkit.torch.Scheduler)
_SUBMODULES = ("torch", "keras", "sklearn", "lightning", "hf", "plot", "demo", "cli")


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'lrkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # cache: later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*__all__, *_SUBMODULES})


# ``suggest`` names both a submodule and the function it defines. Importing the
# submodule (the range test does) binds its name in this package to the module,
# so the function is bound here first, after which that no longer happens
# (numpy only; no framework).
from .suggest import suggest as suggest  # noqa: E402
from .sweep import sweep as sweep  # noqa: E402  (the same for sweep)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._check import (
        LRKitError as LRKitError,
    )
    from ._lint import (
        LintWarning as LintWarning,
        lint as lint,
    )
    from ._parse import (
        ScheduleSyntaxError as ScheduleSyntaxError,
        parse_schedule as parse_schedule,
    )
    from .compose import (
        Join as Join,
        Scale as Scale,
        Warmup as Warmup,
    )
    from .logs import (
        History as History,
        LogFormatError as LogFormatError,
        read_log as read_log,
    )
    from .monitor import (
        Diagnosis as Diagnosis,
        Finding as Finding,
        Monitor as Monitor,
        MonitorConfig as MonitorConfig,
        diagnose as diagnose,
    )
    from .plateau import (
        PlateauState as PlateauState,
        ReduceOnPlateau as ReduceOnPlateau,
    )
    from .rangetest import (
        Progress as Progress,
        RangeTestResult as RangeTestResult,
        RangeTestSettings as RangeTestSettings,
        lr_ladder as lr_ladder,
        range_test as range_test,
    )
    from .schedules import (
        Constant as Constant,
        Cosine as Cosine,
        CosineRestarts as CosineRestarts,
        Cyclic as Cyclic,
        Exponential as Exponential,
        InverseSqrt as InverseSqrt,
        Linear as Linear,
        MultiStep as MultiStep,
        OneCycle as OneCycle,
        Piecewise as Piecewise,
        Polynomial as Polynomial,
        Schedule as Schedule,
        Step as Step,
        WarmupStableDecay as WarmupStableDecay,
        register as register,
        registry as registry,
        schedule_from_config as schedule_from_config,
    )
    from .suggest import (
        Suggestion as Suggestion,
        suggest as suggest,
    )
    from .sweep import (
        SweepProgress as SweepProgress,
        SweepResult as SweepResult,
        SweepTrial as SweepTrial,
        sweep as sweep,
        sweep_grid as sweep_grid,
    )
    from .torch import (
        find_lr as find_lr,
    )
