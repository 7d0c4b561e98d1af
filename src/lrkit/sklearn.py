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
import dataclasses
import inspect
import itertools
import math
import numbers
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
from ._util import IndexBatches
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
    if arr.ndim != 2:
        _check.fail(
            name,
            "a 2-D array of rows (n_samples, n_features)",
            f"an array of shape {arr.shape}",
            "Reshape one feature with x.reshape(-1, 1)." if arr.ndim == 1 else None,
            exc=TypeError if arr.ndim == 0 else ValueError,
            shown=True,
        )
    return arr


def _targets(y: Any) -> np.ndarray[Any, Any]:
    """``y`` as an array; a column ``(n, 1)`` flattened, as sklearn's fit does."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.ravel()
    return arr


def _finite(name: str, X: Any) -> None:
    """Refuse NaN or infinite inputs up front (sklearn would at its first use)."""
    values = X.data if hasattr(X, "tocsr") else X
    try:
        ok = bool(np.all(np.isfinite(values)))
    except TypeError:  # not numbers: sklearn says what it cannot convert
        return
    if not ok:
        _check.fail(
            name, "finite numbers (no NaN or infinity)", "non-finite values", shown=True
        )


def _set_lr(est: Any, lr: float) -> None:
    """The LR of the next update: the parameter (read when sklearn creates its
    optimizer, at the first ``partial_fit``) and the optimizer's own copy."""
    est.learning_rate_init = lr
    opt = getattr(est, "_optimizer", None)
    if opt is not None:
        opt.learning_rate_init = lr  # Adam recomputes its step size from it
        opt.learning_rate = lr  # SGD steps with it


def _partial_fit(
    est: Any, X: Any, y: Any, classes: Any, sample_weight: Any = None
) -> None:
    """One ``partial_fit`` (``classes`` given at the first call of a classifier).

    sklearn turns a Ctrl-C inside it into a warning ("Training interrupted by
    user") and returns: it is raised again here, so it stops the test.
    """
    kw = {} if sample_weight is None else {"sample_weight": sample_weight}
    if classes is not None:
        kw["classes"] = classes
    with warnings.catch_warnings(record=True) as caught, np.errstate(all="ignore"):
        warnings.simplefilter("always")  # overflow and convergence notes: kept out
        est.partial_fit(X, y, **kw)
    if any("interrupted by user" in str(w.message) for w in caught):
        raise KeyboardInterrupt


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
    sample_weight: Any = None,
    validation_data: tuple[Any, Any] | None = None,
    batch_size: int | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    mode: Mode = "exp",
    val_every: int = 2,
    seed: int = 0,
    progress: bool | Callable[[Progress], None] | None = True,
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
            ``early_stopping`` is off in the copy (``partial_fit`` refuses it),
            and so is ``verbose`` (it would print a line per update).
        X: training inputs (an array-like or a sparse matrix).
        y: training targets (a column ``(n, 1)`` is flattened, as in ``fit``).
        sample_weight: optional per-row weights (finite, >= 0) of the
            training loss, passed to ``partial_fit`` (scikit-learn >= 1.7).
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
        progress: ``True`` (default): a progress bar on stderr while the test
            runs, when stderr is a terminal or a notebook (none in a log file
            or under CI); ``False`` or ``None``: none; or a function called with
            a :class:`~lrkit.rangetest.Progress` after each step (no bar).
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
        hint = (
            "Other scikit-learn models take no learning rate a range test can "
            "find (SGDClassifier's eta0 applies per example: sweep it with "
            "lrkit.sweep)."
        )
        if hasattr(estimator, "steps"):  # a Pipeline
            hint = (
                "For a Pipeline, pass its last step (pipe[-1]) and X transformed by "
                "the others (pipe[:-1].fit_transform(X))."
            )
        elif hasattr(estimator, "estimator") and hasattr(estimator, "param_grid"):
            hint = "For a search, pass the estimator it tunes (search.estimator)."
        _check.fail(
            "estimator",
            "an MLPClassifier or MLPRegressor",
            estimator,
            hint,
            exc=TypeError,
        )
    params = estimator.get_params()
    solver = params["solver"]
    schedule = params.get("learning_rate", "constant")  # sgd's LR schedule
    if solver not in ("sgd", "adam"):
        _check.fail(
            "estimator.solver",
            "'sgd' or 'adam' (solvers that take a learning rate)",
            solver,
        )
    fitted = hasattr(estimator, "coefs_")
    if fitted and not hasattr(estimator, "loss_curve_"):
        _check.fail(
            "estimator",
            "unfitted, or fitted with solver 'sgd' or 'adam'",
            f"{type(estimator).__name__} fitted with solver 'lbfgs'",
            "Test an unfitted clone: sklearn.base.clone(estimator).",
            shown=True,
        )
    classifier = is_classifier(estimator)
    X = _rows("X", X)
    y_arr = _targets(y)
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
    _finite("X", X)
    _finite("y", y_arr)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=float)
        if weights.shape != (n,) or not np.all(np.isfinite(weights)):
            _check.fail(
                "sample_weight",
                f"{n} finite weights, one per row of X",
                f"an array of shape {weights.shape}",
                shown=True,
            )
        negative = np.flatnonzero(weights < 0)
        if len(negative):
            row = int(negative[0])
            _check.fail(
                "sample_weight",
                "weights >= 0",
                f"{len(negative)} negative weights "
                f"(sample_weight[{row}]={float(weights[row])!r})",
                shown=True,
            )
        if "sample_weight" not in inspect.signature(estimator.partial_fit).parameters:
            _check.fail(
                "sample_weight",
                "None with this scikit-learn (its MLP partial_fit takes no weights)",
                "weights",
                shown=True,
            )
    if batch_size is None:
        given = params["batch_size"]
        if given != "auto" and not (
            isinstance(given, numbers.Integral)
            and not isinstance(given, bool)
            and int(given) >= 1
        ):
            _check.fail("estimator.batch_size", "'auto' or an int >= 1", given)
        batch_size = min(200, n) if given == "auto" else int(given)
    batch_size = min(_check.positive_int("batch_size", batch_size), n)
    val_every = _check.positive_int("val_every", val_every)
    seed = _check.non_negative_int("seed", seed)
    check_hooks(suggest, progress)
    start_lr, end_lr, num_steps, mode = check_ladder(start_lr, end_lr, num_steps, mode)
    if fitted and classifier:
        classes = np.asarray(estimator.classes_)
    elif classifier:
        classes = np.unique(y_arr) if y_arr.ndim == 1 else np.arange(y_arr.shape[1])
    else:
        classes = None
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
        yv = _targets(validation_data[1])
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
        if yv.shape[1:] != y_arr.shape[1:]:
            _check.fail(
                "validation_data",
                f"targets shaped like y's {tuple(y_arr.shape[1:])} per row",
                f"targets of {tuple(yv.shape[1:])} per row",
                shown=True,
            )
        if classes is not None and yv.ndim == 1:
            unseen = np.setdiff1d(np.unique(yv), classes)
            if len(unseen):
                _check.fail(
                    "validation_data",
                    "labels the classifier is trained on "
                    f"({', '.join(map(str, classes[:10]))})",
                    f"labels {', '.join(map(str, unseen[:10]))} as well",
                    shown=True,
                )
        _finite("validation_data[0]", Xv)
        _finite("validation_data[1]", yv)
        val = (Xv[:MAX_VAL_ROWS], yv[:MAX_VAL_ROWS])

    est = copy.deepcopy(estimator) if fitted else clone(estimator)
    # one update per partial_fit, whatever the batch; partial_fit refuses
    # early stopping, and warm_start makes it refuse batches missing a class;
    # verbose would print a line per rung
    est.set_params(
        batch_size=batch_size, early_stopping=False, warm_start=False, verbose=False
    )
    if fitted and getattr(est, "best_loss_", 0.0) is None:
        est.best_loss_ = np.inf  # fitted with early stopping: no training best
    batches = IndexBatches(n, batch_size, seed)

    def step_fn(lr: float) -> float:
        # full batches only (sklearn clips a batch_size above the rows given)
        index = batches.next()
        _set_lr(est, lr)
        first = not hasattr(est, "_optimizer")
        try:
            _partial_fit(
                est,
                X[index],
                y_arr[index],
                None if hasattr(est, "classes_") else classes,
                None if weights is None else weights[index],
            )
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
    hidden = params["hidden_layer_sizes"]
    hidden = list(hidden) if hasattr(hidden, "__iter__") else [hidden]
    sizes = [X.shape[1], *hidden, n_out]
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
        result = range_test(
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
    info = result.suggestion_info
    if solver == "sgd" and schedule != "constant" and info is not None:
        # the test holds each LR for one update; fit does not
        note = (
            "learning_rate='invscaling' divides the LR by (t+1)**power_t as fit "
            "goes on: the suggestion is a constant LR, so a learning_rate_init "
            "above it may be best; or use learning_rate='constant'"
            if schedule == "invscaling"
            else "learning_rate='adaptive' divides the LR by 5 when the "
            "training loss stops improving: the suggestion is the LR to start at"
        )
        result = dataclasses.replace(
            result,
            suggestion_info=dataclasses.replace(info, reasons=(*info.reasons, note)),
        )
    return result
