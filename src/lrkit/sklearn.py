"""The scikit-learn adapter: an LR range test for ``MLPClassifier`` / ``MLPRegressor``.

Needs scikit-learn (``pip install 'lrkit[sklearn]'``).

scikit-learn's neural networks take their learning rate as
``learning_rate_init`` (solvers ``"sgd"`` and ``"adam"``). :func:`find_lr`
runs the range test on a copy of the estimator, one ``partial_fit`` of one
batch per rung of the LR ladder (one optimizer update), and reads the batch
loss sklearn computes (``loss_``: the data loss plus the L2 penalty ``alpha``).
The estimator you pass is never touched: an unfitted one is cloned
(``sklearn.base.clone``), a fitted one deep-copied (the test then starts from
its weights and optimizer state, as a ``warm_start`` would); NumPy's global
random state, which an estimator with ``random_state=None`` draws from, is
restored afterwards.

Example:
    >>> import numpy as np
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.neural_network import MLPClassifier
    >>> import lrkit.sklearn
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(32,), random_state=0)
    >>> result = lrkit.sklearn.find_lr(clf, X / 16, y, num_steps=100)
    >>> 1e-7 < result.suggestion < 10
    True
    >>> clf.learning_rate_init, hasattr(clf, "coefs_")  # untouched
    (0.001, False)
"""

from __future__ import annotations

import copy
import itertools
import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    from sklearn.base import clone, is_classifier
    from sklearn.neural_network import MLPClassifier, MLPRegressor
except ImportError as e:  # pragma: no cover - exercised only without sklearn
    raise ImportError(
        "lrkit.sklearn needs scikit-learn: pip install 'lrkit[sklearn]'."
    ) from e

from . import _check
from ._check import LRKitError
from .rangetest import (
    Mode,
    Progress,
    RangeTestResult,
    check_hooks,
    check_ladder,
    range_test,
)

__all__ = ["find_lr"]

#: Largest validation set scored at each validation (the first rows).
MAX_VAL_ROWS = 10_000


def _rows(name: str, value: Any) -> np.ndarray[Any, Any]:
    """``value`` as an array with a first axis (a sparse matrix kept as is)."""
    if hasattr(value, "tocsr"):  # scipy.sparse: rows are indexable
        return value.tocsr()  # type: ignore[no-any-return]
    try:
        arr = np.asarray(value)
    except (TypeError, ValueError):
        _check.fail(name, "an array-like of rows", value, exc=TypeError)
    if arr.ndim == 0:
        _check.fail(name, "an array-like of rows", value, exc=TypeError)
    return arr


def _set_lr(est: Any, lr: float) -> None:
    """The LR of the next update: the parameter (read when sklearn creates its
    optimizer, at the first ``partial_fit``) and the optimizer's own copy."""
    est.learning_rate_init = lr
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        opt.learning_rate_init = lr  # Adam recomputes its step size from it
        opt.learning_rate = lr  # SGD steps with it


def _partial_fit(est: Any, X: Any, y: Any, classes: Any) -> None:
    """One ``partial_fit`` (``classes`` given at the first call of a classifier)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # overflow and convergence notes
        if classes is not None and not hasattr(est, "classes_"):
            est.partial_fit(X, y, classes=classes)
        else:
            est.partial_fit(X, y)


def _blew_up(est: Any, error: ValueError) -> bool:
    """sklearn raises ValueError once an update leaves non-finite weights."""
    weights = [*getattr(est, "coefs_", []), *getattr(est, "intercepts_", [])]
    return "non-finite" in str(error) or any(
        not np.all(np.isfinite(w)) for w in weights
    )


def _val_loss(est: Any, X: Any, y: np.ndarray[Any, Any]) -> float:
    """The estimator's loss on ``(X, y)`` as sklearn trains on it, without the
    L2 penalty: the log loss of a classifier (summed over the labels of a
    multilabel one), half the mean squared error of a regressor (averaged over
    outputs), or half the Poisson deviance (``loss="poisson"``); NaN when the
    predictions are not finite."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. feature names of a fitted copy
        if is_classifier(est):
            proba = np.asarray(est.predict_proba(X), dtype=float)
            if not np.all(np.isfinite(proba)):
                return math.nan
            proba = np.clip(proba, 1e-15, 1 - 1e-15)
            if y.ndim == 2:  # multilabel: a binary log loss per label, summed
                loss = -(y * np.log(proba) + (1 - y) * np.log(1 - proba))
                return float(loss.mean(axis=0).sum())
            index = np.searchsorted(est.classes_, y)
            return float(-np.log(proba[np.arange(len(y)), index]).mean())
        pred = np.asarray(est.predict(X), dtype=float).reshape(y.shape)
        if est.get_params().get("loss") == "poisson":
            ratio = np.where(y > 0, y / pred, 1.0)
            dev = np.where(y > 0, y * np.log(ratio), 0.0) - y + pred
            err = float(dev.mean(axis=0).sum())
        else:
            err = float(((y - pred) ** 2).mean()) / 2
        return err if math.isfinite(err) else math.nan


def find_lr(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    validation_data: tuple[Any, Any] | None = None,
    batch_size: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    mode: Mode = "exp",
    val_every: int = 2,
    seed: int = 0,
    progress: Callable[[Progress], None] | None = None,
    suggest: bool | str = True,
) -> RangeTestResult:
    """Run an LR range test on an ``MLPClassifier`` / ``MLPRegressor``.

    The LR rises from ``start_lr`` to ``end_lr`` over ``num_steps`` updates,
    one ``partial_fit`` of one batch each, on a copy of ``estimator``; the test
    stops early when the loss turns NaN/inf or diverges, and the suggestion is
    read from the curve as for PyTorch (:func:`lrkit.suggest`). For
    ``mode="exp"`` the ladder is
    ``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``.

    Args:
        estimator: an ``MLPClassifier`` or ``MLPRegressor`` with
            ``solver="sgd"`` or ``"adam"`` (``"lbfgs"`` has no learning
            rate). Never changed: the test runs on a clone (unfitted) or a deep
            copy (fitted: the test starts from its weights).
            ``early_stopping`` is off in the copy (``partial_fit`` refuses it).
        X: training inputs (an array-like or a sparse matrix).
        y: training targets.
        validation_data: optional ``(X_val, y_val)``: the loss on it (its
            first ``MAX_VAL_ROWS`` rows; the loss sklearn trains on, without the
            penalty) is evaluated every ``val_every`` steps as a cheap validation
            signal; the rule uses it to cap the LR where validation stops
            improving.
        batch_size: rows per update (default: the estimator's ``batch_size``,
            ``"auto"`` being ``min(200, n_samples)``).
        start_lr: first LR of the ladder.
        end_lr: last LR of the ladder.
        num_steps: updates (one LR each); by default 25 per decade of the
            ladder (200 for 1e-7 .. 10).
        mode: ``"exp"`` (default) or ``"linear"`` ladder.
        val_every: steps between validations once the training loss has
            started to fall (four times as many before that).
        seed: seed of the order in which batches are drawn (each pass over
            the data in a new order; not the global random state).
        progress: called with a :class:`~lrkit.rangetest.Progress` each step.
        suggest: ``True`` (default rule), a rule name, or ``False``.

    Returns:
        A :class:`~lrkit.rangetest.RangeTestResult`; ``result.suggestion`` is
        the ``learning_rate_init`` to fit with.

    Raises:
        ValueError, TypeError: on bad arguments; nothing is changed.
        LRKitError: when this scikit-learn keeps its optimizer where lrkit
            cannot set the LR of each update.
    """
    if not isinstance(estimator, (MLPClassifier, MLPRegressor)):
        _check.fail(
            "estimator",
            "an MLPClassifier or MLPRegressor",
            estimator,
            "Other scikit-learn models take no learning rate a range test can "
            "find (SGDClassifier's eta0 applies per example: sweep it with "
            "lrkit.sweep).",
            exc=TypeError,
        )
    solver = estimator.get_params()["solver"]
    if solver not in ("sgd", "adam"):
        _check.fail(
            "estimator.solver",
            "'sgd' or 'adam' (solvers that take a learning rate)",
            solver,
        )
    X = _rows("X", X)
    y_arr = np.asarray(y)
    n = X.shape[0]
    if n == 0:
        _check.fail("X", "at least one row", "0 rows", shown=True)
    if y_arr.ndim == 0 or y_arr.shape[0] != n:
        _check.fail(
            "y",
            f"one target per row of X ({n})",
            f"{y_arr.shape[0] if y_arr.ndim else 0} targets",
            shown=True,
        )
    if batch_size is None:
        param = estimator.get_params()["batch_size"]
        batch_size = min(200, n) if param == "auto" else int(param)
    batch_size = min(_check.positive_int("batch_size", batch_size), n)
    val_every = _check.positive_int("val_every", val_every)
    if not isinstance(seed, int) or isinstance(seed, bool):
        _check.fail("seed", "an int", seed, exc=TypeError)
    check_hooks(suggest, progress)
    start_lr, end_lr, num_steps, mode = check_ladder(start_lr, end_lr, num_steps, mode)
    val: tuple[Any, np.ndarray[Any, Any]] | None = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            _check.fail(
                "validation_data",
                "a pair (X_val, y_val)",
                validation_data,
                exc=TypeError,
            )
        Xv = _rows("validation_data[0]", validation_data[0])
        yv = np.asarray(validation_data[1])
        if Xv.shape[0] == 0 or yv.ndim == 0 or yv.shape[0] != Xv.shape[0]:
            _check.fail(
                "validation_data",
                "(X_val, y_val) with one target per row (>= 1 row)",
                f"{Xv.shape[0]} rows and {yv.shape[0] if yv.ndim else 0} targets",
                shown=True,
            )
        if Xv.shape[1:] != X.shape[1:]:
            _check.fail(
                "validation_data",
                f"rows shaped like X's {tuple(X.shape[1:])}",
                f"rows of {tuple(Xv.shape[1:])}",
                shown=True,
            )
        val = (Xv[:MAX_VAL_ROWS], yv[:MAX_VAL_ROWS])

    fitted = hasattr(estimator, "coefs_")
    est = copy.deepcopy(estimator) if fitted else clone(estimator)
    est.set_params(early_stopping=False)
    classes = np.unique(y_arr) if is_classifier(est) and y_arr.ndim == 1 else None
    if is_classifier(est) and classes is None:  # multilabel indicator targets
        classes = np.arange(y_arr.shape[1])
    rng = np.random.default_rng(seed)
    order: list[np.ndarray[Any, Any]] = [np.array([], dtype=np.int64)]

    def step_fn(lr: float) -> float:
        # full batches only (sklearn clips a batch_size above the rows given)
        if len(order[0]) < batch_size:
            order[0] = np.concatenate([order[0], rng.permutation(n)])
        index, order[0] = order[0][:batch_size], order[0][batch_size:]
        _set_lr(est, lr)
        first = not hasattr(est, "_optimizer")
        try:
            _partial_fit(est, X[index], y_arr[index], classes)
        except ValueError as e:
            if not _blew_up(est, e):
                raise
            return math.nan  # the weights overflowed: a divergence, not a crash
        if first and getattr(est, "_optimizer", None) is None:
            raise LRKitError(
                "this scikit-learn keeps its MLP optimizer out of reach "
                "(no _optimizer after partial_fit), so lrkit cannot set the LR "
                "of each update; please report it with your scikit-learn version."
            )
        return float(est.loss_)

    val_fn = None
    if val is not None:
        Xv_, yv_ = val

        def val_fn() -> float:
            return _val_loss(est, Xv_, yv_)

    n_out = (
        (1 if len(classes) == 2 else len(classes))
        if classes is not None and y_arr.ndim == 1
        else (y_arr.shape[1] if y_arr.ndim == 2 else 1)
    )
    sizes = [X.shape[1], *estimator.get_params()["hidden_layer_sizes"], n_out]
    params = sum(a * b + b for a, b in itertools.pairwise(sizes))
    extra = {
        "framework": "sklearn",
        "estimator": type(estimator).__name__,
        "solver": solver,
        "batch_size": batch_size,
        "from_fitted": fitted,
        "lr_before": float(estimator.get_params()["learning_rate_init"]),
        "val_rows": 0 if val is None else int(val[0].shape[0]),
    }
    numpy_rng = np.random.get_state()
    try:
        return range_test(
            step_fn,
            start_lr=start_lr,
            end_lr=end_lr,
            num_steps=num_steps,
            mode=mode,
            val_fn=val_fn,
            val_every=val_every,
            progress=progress,
            suggest=suggest,
            steps_per_epoch=math.ceil(n / batch_size),
            params_per_example=params / n,
            extra=extra,
        )
    finally:
        np.random.set_state(numpy_rng)
