"""Small numeric and serialisation helpers shared by the framework-free core.

Example:
    >>> robust_noise([1.0, 1.1, 0.9, 1.0, 1.1])  # doctest: +ELLIPSIS
    0.1048...
    >>> json_clean({"a": float("nan"), "b": [1.0, float("inf")]})
    {'a': None, 'b': [1.0, None]}
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _check

__all__ = [
    "Batches",
    "IndexBatches",
    "json_clean",
    "known_len",
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


def write_json(record: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``record`` as indented JSON to ``path`` (a result's ``save``)."""
    path = Path(path)
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
