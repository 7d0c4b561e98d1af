"""The LR range test for Keras 3 models: ``lrkit.keras.find_lr``.

The framework-free :func:`lrkit.range_test` drives a ``step_fn(lr) -> loss``;
here that step is one ``model.train_on_batch`` at the ladder's LR, so the
test trains exactly as ``model.fit`` does (the compiled loss, regularisation
losses, the optimizer's clipping and loss scaling, any backend). The data is
taken as ``fit`` takes it: arrays with ``batch_size``, or a dataset / loader
that yields batches.

Everything the test changes is put back afterwards, also on an exception or
Ctrl-C: the model's variables (weights, BatchNorm statistics, dropout seed
states), the optimizer's variables (iterations, moments, the LR), the compiled
metrics' state, whether the compiled loss and metrics were built (a first
``fit`` builds them from one batch of a fresh iterator, which draws from the
backend's random generator: left built, the user's next ``fit`` would shuffle
differently than without the test), and the Python, NumPy and torch random
states. Tested bit for bit on the torch backend (a ``fit`` after the test
ends where a ``fit`` without it does).
"""

from __future__ import annotations

import itertools
import math
import numbers
import random
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from . import _check
from ._util import Batches, known_len
from ._watch import check_key
from .rangetest import (
    Mode,
    Progress,
    RangeTestResult,
    check_hooks,
    check_ladder,
    range_test,
)

__all__ = ["Snapshot", "find_lr", "snapshot"]


def _is_array(value: Any) -> bool:
    """An array-like ``fit`` slices into batches (NumPy, a backend tensor)."""
    return hasattr(value, "shape") and hasattr(value, "__getitem__")


def _arrays(value: Any) -> bool:
    """Arrays as ``fit`` takes them: one, or a dict / list / tuple of arrays (a
    list of ``(x, y)`` tuples is a list of batches, not inputs)."""
    if _is_array(value):
        return True
    if isinstance(value, Mapping):
        return bool(value) and all(_arrays(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return bool(value) and all(
            _is_array(v) or (isinstance(v, Mapping) and _arrays(v)) for v in value
        )
    return False


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return [leaf for v in value.values() for leaf in _leaves(v)]
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _structure_len(value: Any) -> int | None:
    """Rows in an array, or in the arrays of a dict / list / tuple of them."""
    if _is_array(value):
        shape = value.shape
        return int(shape[0]) if len(shape) else None
    leaves: Iterable[Any] = ()
    if isinstance(value, Mapping):
        leaves = value.values()
    elif isinstance(value, (list, tuple)):
        leaves = value
    sizes = {_structure_len(v) for v in leaves}
    if len(sizes) == 1:
        return sizes.pop()
    return None


def _take(value: Any, index: np.ndarray[Any, Any]) -> Any:
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _take(v, index) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_take(v, index) for v in value)
    if isinstance(value, np.ndarray):
        return value[index]
    return ops.take(value, ops.convert_to_tensor(index), axis=0)


def _slice(value: Any, start: int, end: int) -> Any:
    """Rows ``start:end`` of an array, or of each array in a dict / list / tuple."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {k: _slice(v, start, end) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_slice(v, start, end) for v in value)
    return value[start:end]


def _is_number(value: Any) -> bool:
    return isinstance(value, (numbers.Number, np.generic)) and not isinstance(
        value, (str, bytes)
    )


def _python_rows(value: Any) -> bool:
    """A Python list (or tuple) of numbers or of rows of numbers (``x.tolist()``),
    which ``fit`` refuses; a list of ``(x, y)`` batches of arrays is not one."""
    if not isinstance(value, (list, tuple)) or not value:
        return False
    first = value[0]
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return _is_number(first)


def _refuse_rows(name: str, value: Any) -> None:
    """Refuse data given as Python lists of rows, as ``fit`` does, naming ``name``."""
    if _python_rows(value):
        _check.fail(
            name,
            "a NumPy array (or a dict / list of arrays) or a dataset of batches",
            f"a Python {type(value).__name__} of numbers",
            "Convert it with np.asarray(...) (model.fit refuses Python lists "
            "of rows too).",
            exc=TypeError,
            shown=True,
        )


def _finite(name: str, value: Any) -> None:
    """Refuse NaN or infinite inputs up front, as :mod:`lrkit.sklearn` does (they
    make every loss NaN: the test would end at its first step). Non-numeric
    arrays (strings for a lookup layer) are left to the model."""
    for leaf in _leaves(value):
        if isinstance(leaf, np.ndarray):
            if leaf.dtype.kind not in "fc":  # ints, bools, strings: no NaN
                continue
            ok = bool(np.isfinite(leaf).all())
        else:
            try:  # a backend tensor: checked where it lives
                ok = bool(ops.convert_to_numpy(ops.all(ops.isfinite(leaf))))
            except Exception:  # not numbers: the model says what it cannot use
                continue
        if not ok:
            _check.fail(
                name,
                "finite numbers (no NaN or infinity)",
                "non-finite values",
                shown=True,
            )


def _is_torch_loader(value: Any) -> bool:
    """A torch ``DataLoader``, whose batches ``fit`` takes as they are."""
    return any(
        cls.__name__ == "DataLoader" and "torch.utils.data" in cls.__module__
        for cls in type(value).__mro__
    )


def _converter(
    source: Any,
) -> Callable[[tuple[Any, Any, Any]], tuple[Any, Any, Any]]:
    """How ``fit`` hands a source's batches to ``train_step``: as backend
    tensors, or as they are for a torch ``DataLoader``."""
    return (lambda batch: batch) if _is_torch_loader(source) else _tensors


def _tensors(batch: tuple[Any, Any, Any]) -> tuple[Any, Any, Any]:
    """A batch's parts as backend tensors, as ``fit`` hands them to
    ``train_step`` (it converts batches of arrays, PyDatasets, generators and
    ``tf.data``; a custom step doing ``self(x) - y`` fails on NumPy ``y``)."""
    return tuple(  # type: ignore[return-value]
        None
        if part is None
        else keras.tree.map_structure(
            lambda v: v if v is None else ops.convert_to_tensor(v), part
        )
        for part in batch
    )


class _ArrayBatches:
    """Batches of arrays in a shuffled order of its own (no global RNG drawn)."""

    def __init__(
        self,
        x: Any,
        y: Any,
        sample_weight: Any,
        batch_size: int,
        shuffle: bool,
        seed: int,
    ) -> None:
        self.parts = (x, y, sample_weight)
        self.n = _structure_len(x) or 0
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = np.random.default_rng(seed)
        self.order = np.arange(self.n)
        self.pos = self.n  # a new epoch at the first batch

    def __next__(self) -> tuple[Any, ...]:
        if self.pos >= self.n:
            self.order = self.rng.permutation(self.n) if self.shuffle else self.order
            self.pos = 0
        index = self.order[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        x, y, w = (_take(v, index) for v in self.parts)
        return (x, y, w)

    def first(self, count: int) -> list[tuple[Any, ...]]:
        """The first ``count`` batches in order (validation: fixed batches)."""
        out = []
        for start in range(0, min(self.n, count * self.batch_size), self.batch_size):
            index = np.arange(start, min(self.n, start + self.batch_size))
            out.append(tuple(_take(v, index) for v in self.parts))
        return out


def _pydataset_len(dataset: Any) -> int | None:
    """Batches in a PyDataset: ``num_batches`` (Keras 3; None when infinite),
    else ``len``."""
    count = getattr(dataset, "num_batches", None)
    if count is None:
        try:
            count = len(dataset)
        except TypeError:
            return None
    return int(count)


class _IndexedBatches:
    """Batches of a ``keras.utils.PyDataset`` (``ds[i]``), in order, as ``fit``
    reads them: ``on_epoch_begin`` before each pass (a dataset may set itself
    up there), not ``on_epoch_end`` (where datasets reshuffle: the dataset is
    the user's, and its next ``fit`` must see it as it was).
    """

    def __init__(self, dataset: Any, name: str) -> None:
        self.dataset = dataset
        self.count = _pydataset_len(dataset)
        if self.count == 0:
            _check.fail(name, "a dataset that yields at least one batch", dataset)
        self.pos = 0

    def __next__(self) -> Any:
        index = self.pos if self.count is None else self.pos % self.count
        if index == 0:
            begin = getattr(self.dataset, "on_epoch_begin", None)
            if callable(begin):
                begin()
        self.pos += 1
        return self.dataset[index]


def _unpack(batch: Any, name: str) -> tuple[Any, Any, Any]:
    """``(x, y, sample_weight)`` of one batch, as ``fit`` reads it."""
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return (batch, None, None)
    if len(batch) == 1:
        return (batch[0], None, None)
    if len(batch) == 2:
        return (batch[0], batch[1], None)
    if len(batch) == 3:
        return (batch[0], batch[1], batch[2])
    _check.fail(
        name,
        "batches of x, (x, y) or (x, y, sample_weight)",
        f"a batch of {len(batch)} items",
        shown=True,
    )


def _class_weights(
    class_weight: Any, y: Any, sample_weight: Any
) -> np.ndarray[Any, Any]:
    """Per-example weights from ``class_weight``, as ``fit`` makes them (Keras's
    ``class_weight_to_sample_weights``): one-hot rows read by their argmax, a
    label column squeezed, labels rounded to the nearest integer, a class
    missing from the dict weighing 1.0; times ``sample_weight`` if given."""
    if not isinstance(class_weight, Mapping) or not all(
        _check.is_real(w) for w in class_weight.values()
    ):
        _check.fail(
            "class_weight",
            "a dict of class -> weight >= 0",
            class_weight,
            exc=TypeError,
        )
    for c, w in class_weight.items():
        if not (w >= 0 and math.isfinite(w)):  # a number, out of range
            _check.fail(f"class_weight[{c!r}]", "a finite weight >= 0", w)
    labels = _numpy(y) if _is_array(y) else None
    if labels is None:
        _check.fail(
            "class_weight",
            "given with y as one array of labels",
            f"y of type {type(y).__name__}",
            exc=TypeError,
            shown=True,
        )
    if labels.ndim > 1:
        if labels.shape[-1] != 1:
            labels = np.argmax(labels, axis=-1)  # one-hot rows
        else:
            labels = np.squeeze(labels, axis=-1)
    if labels.ndim != 1:
        _check.fail(
            "class_weight",
            "given with y as one label (or one-hot row) per example",
            f"y of shape {tuple(_numpy(y).shape)}",
            shown=True,
        )
    labels = np.round(labels).astype("int32")
    weights = np.array(
        [float(class_weight.get(int(c), 1.0)) for c in labels],
        dtype=keras.backend.floatx(),
    )
    if sample_weight is not None:
        weights = weights * _numpy(sample_weight).reshape(len(weights))
    return weights


def _numpy(v: Any) -> np.ndarray[Any, Any]:
    """A host copy of a variable (its ``value``: NumPy 2 warns on the variable)."""
    return np.array(ops.convert_to_numpy(getattr(v, "value", v)), copy=True)


class Snapshot:
    """A Keras model's training state in host memory; :meth:`restore` puts it back.

    Holds the model's variables (weights, BatchNorm statistics, dropout seed
    states), the optimizer's (iterations, moments, the LR; of the inner
    optimizer too under mixed precision), the compiled metrics' variables,
    whether the compiled loss and metrics were still unbuilt, the Python,
    NumPy and torch random states, and the random generators of the ``data``
    given to :func:`snapshot`. Made by :func:`snapshot`.
    """

    def __init__(self, model: Any, data: Sequence[Any] = ()) -> None:
        self.data_rngs = _source_rngs(data)
        opt = model.optimizer
        self.variables = [(v, _numpy(v)) for v in model.variables]
        seen: set[int] = set()
        self.opt_variables = []
        for holder in (opt, _inner(opt)):  # mixed precision: the inner one too
            for v in holder.variables:
                if id(v) not in seen:
                    seen.add(id(v))
                    self.opt_variables.append((v, _numpy(v)))
        self.metric_variables = [(v, _numpy(v)) for v in model.metrics_variables]
        # a first fit builds these from one batch of a fresh iterator (a draw
        # from the backend's generator); built by the test, the user's next fit
        # would skip that draw and shuffle differently
        self.unbuilt = [
            obj
            for obj in (
                getattr(model, "_compile_loss", None),
                getattr(model, "_compile_metrics", None),
            )
            if obj is not None and getattr(obj, "built", None) is False
        ]
        # building the compiled loss appends a tracker per output to this list;
        # a second build would append another set (per-output losses read 0)
        self.trackers = [
            (obj._metrics, len(obj._metrics))
            for obj in self.unbuilt
            if isinstance(getattr(obj, "_metrics", None), list)
        ]
        self.seed_generator = _global_seed_generator()
        self.seed_state = (
            None if self.seed_generator is None else _numpy(self.seed_generator.state)
        )
        self.python_rng = random.getstate()
        self.numpy_rng = np.random.get_state()
        torch = sys.modules.get("torch")
        self.torch_rng = None if torch is None else torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch is not None and torch.cuda.is_available()
            else None
        )

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken (any
        number of times: each run of a sweep starts from the same state)."""
        for group in (self.variables, self.opt_variables, self.metric_variables):
            for v, value in group:
                v.assign(value)
        for obj in self.unbuilt:
            obj.built = False
        for trackers, count in self.trackers:
            del trackers[count:]
        if self.seed_generator is None:  # made by the test: made again alike
            _set_global_seed_generator(None)
        else:
            _set_global_seed_generator(self.seed_generator)
            self.seed_generator.state.assign(self.seed_state)
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)
        torch = sys.modules.get("torch")
        if torch is not None and self.torch_rng is not None:
            torch.set_rng_state(self.torch_rng)
            if self.cuda_rng is not None:
                torch.cuda.set_rng_state_all(self.cuda_rng)
        _restore_rngs(self.data_rngs)


def _check_compiled(model: Any) -> None:
    if not isinstance(model, keras.Model):
        _check.fail("model", "a keras.Model", model, exc=TypeError)
    if getattr(model, "optimizer", None) is None or not getattr(
        model, "compiled", True
    ):
        _check.fail(
            "model",
            "a compiled keras.Model",
            f"{type(model).__name__} without an optimizer",
            "Call model.compile(optimizer=..., loss=...) first.",
            shown=True,
        )


def snapshot(model: Any, data: Any = None) -> Snapshot:
    """Copy a compiled Keras model's training state, to restore it as often as needed.

    What :func:`find_lr` restores after its test, for your own runs: a
    :func:`lrkit.sweep` over Keras fits passes ``reset=snap.restore``, and every
    ``fit`` then starts from the same weights, optimizer state and random
    state, so runs at the same LR give the same losses bit for bit (tested on
    the torch backend). An optimizer never built is built first (zero moments,
    as ``fit`` builds it). A model's first ``fit`` builds the compiled loss and
    metrics from one batch of a fresh data iterator, which draws from the
    backend's random generator: the snapshot keeps them as they were, so the
    first run and every later one draw alike.

    Args:
        model: a compiled ``keras.Model`` whose weights exist (built).
        data: the data the runs train on, or a list of sources (training and
            validation), when they shuffle with random generators of their own:
            a torch ``DataLoader`` with ``generator=`` (or its sampler's), a
            ``keras.utils.PyDataset`` holding a NumPy or torch generator. Their
            states are restored too, so every run draws the same batch order.
            (NumPy arrays need nothing: ``fit`` shuffles them from the
            backend's generator, which is always restored.) Without it such
            sources go on drawing new orders: runs at the same LR differ.

    Returns:
        A :class:`Snapshot`; call ``restore()``.

    Example:
        >>> import keras, numpy as np
        >>> import lrkit.keras
        >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer="sgd", loss="mse")
        >>> snap = lrkit.keras.snapshot(model)
        >>> x, y = np.ones((8, 3), "float32"), np.zeros((8, 1), "float32")
        >>> first = model.fit(x, y, epochs=2, verbose=0).history["loss"]
        >>> snap.restore()
        >>> model.fit(x, y, epochs=2, verbose=0).history["loss"] == first
        True
    """
    _check_compiled(model)
    if not model.built:
        _check.fail(
            "model",
            "a built keras.Model (its weights exist)",
            f"an unbuilt {type(model).__name__}",
            "Call it once on a batch (model(x[:1])) or build(input_shape) first.",
            shown=True,
        )
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    sources = list(data) if isinstance(data, (list, tuple)) else [data]
    return Snapshot(model, sources)


def _global_seed_generator() -> Any:
    """Keras's global SeedGenerator (``keras.random.*`` with ``seed=None`` in a
    layer draws from it), or None before its first use or where Keras keeps it
    elsewhere."""
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - another Keras layout
        return None
    return global_state.get_global_attribute("global_seed_generator")


def _set_global_seed_generator(generator: Any) -> None:
    try:
        from keras.src.backend.common import global_state
    except ImportError:  # pragma: no cover - another Keras layout
        return
    global_state.set_global_attribute("global_seed_generator", generator)


def _source_rngs(sources: Sequence[Any]) -> list[tuple[Any, Any]]:
    """The random generators data sources hold (a torch ``DataLoader``'s
    ``generator=``, a sampler's, a PyDataset's own NumPy generator), with their
    states, to put back after the test; none without torch installed."""
    try:
        from .torch.state import _loader_rngs, _rng_state
    except ImportError:
        return []
    return [
        (gen, _rng_state(gen))
        for source in sources
        if source is not None and not _arrays(source)
        for gen in _loader_rngs(source)
    ]


def _restore_rngs(saved: list[tuple[Any, Any]]) -> None:
    if saved:
        from .torch.state import _set_rng_state

        for gen, state in saved:
            _set_rng_state(gen, state)


def _inner(opt: Any) -> Any:
    while getattr(opt, "inner_optimizer", None) is not None:
        opt = opt.inner_optimizer
    return opt


def find_lr(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    batch_size: int | None = None,
    sample_weight: Any = None,
    class_weight: Mapping[Any, float] | None = None,
    validation_data: Any = None,
    validation_split: float = 0.0,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    mode: Mode = "exp",
    val_batches: int = 2,
    val_every: int = 2,
    shuffle: bool = True,
    seed: int = 0,
    loss_key: str = "loss",
    progress: bool | Callable[[Progress], None] | None = True,
    suggest: bool | str = True,
) -> RangeTestResult:
    """Run an LR range test on a compiled Keras 3 model and suggest a learning rate.

    The LR rises from ``start_lr`` to ``end_lr`` over ``num_steps`` optimizer
    steps, one ``model.train_on_batch`` each (the model's compiled loss and
    optimizer, as in ``fit``); the test stops early when the loss turns
    NaN/inf or diverges, and the suggestion is read from the curve exactly as
    for PyTorch (:func:`lrkit.suggest`). Everything is restored afterwards:
    the model's and the optimizer's variables, the compiled metrics, and the
    Python, NumPy and torch random states, so a ``fit`` after the test trains
    as it would have without it.

    The LR ladder is geometric for ``mode="exp"``:
    ``lr_i = start_lr * (end_lr / start_lr) ** (i / (num_steps - 1))``.

    Args:
        model: a compiled ``keras.Model`` (``model.compile(optimizer=..., loss=...)``)
            whose optimizer was built with a number as its learning rate. A
            model that was never called (a subclassed model) is built on the
            first training batch before anything is copied.
        x: the training inputs, as ``fit`` takes them: an array (or a dict /
            list of arrays) with ``y``, or a dataset that yields batches
            (``(x, y)`` or ``(x, y, sample_weight)``): a ``tf.data.Dataset``,
            a ``keras.utils.PyDataset``, a torch ``DataLoader``, a generator.
            Restarted when it runs out (a generator cannot be: it must hold
            enough batches). Batches reach ``train_step`` as backend tensors,
            as in ``fit`` (a torch ``DataLoader``'s as it yields them). Python
            lists of rows are refused (``fit`` refuses them too), and so are
            arrays holding NaN or infinity.
        y: the targets when ``x`` is an array.
        batch_size: batch size for arrays (default 32, as in ``fit``); must
            be left out for datasets, which batch themselves.
        sample_weight: per-example weights for arrays.
        class_weight: weights per class for arrays, as in ``fit``: each
            example's weight is its class's (labels rounded to integers, or
            one-hot rows; a class left out weighs 1.0), times its
            ``sample_weight`` when both are given (``fit`` refuses both).
        validation_data: optional, as in ``fit``: ``(x_val, y_val)`` or
            ``(x_val, y_val, sample_weight)`` arrays, or a dataset of batches.
            Its first ``val_batches`` batches are evaluated (``test_on_batch``,
            inference mode) every ``val_every`` steps as a cheap validation
            signal; the rule uses it to cap the LR where validation stops
            improving.
        validation_split: as in ``fit``: the last fraction of the rows of
            array data (taken before any shuffling; ``class_weight`` applies
            to the rest only) is held out as ``validation_data``. 0: none.
            Refused for datasets (``fit`` refuses them too) and together with
            ``validation_data`` (which ``fit`` would silently prefer).
        start_lr: first LR of the ladder.
        end_lr: last LR of the ladder.
        num_steps: optimizer steps (one LR each); by default 25 per decade of
            the ladder (200 for 1e-7 .. 10).
        mode: ``"exp"`` (default) or ``"linear"`` ladder.
        val_batches: validation batches used (the first ones, fixed).
        val_every: steps between validations once the training loss has
            started to fall (four times as many before that).
        shuffle: shuffle array data (each pass in a new order drawn from
            ``seed``, not from the global random state).
        seed: seed of that order.
        loss_key: the batch loss's key in the logs ``train_on_batch`` (and
            ``test_on_batch``, for validation) returns: ``"loss"``; a custom
            ``train_step`` may log it under another name. Validation logs
            without it are read at ``"loss"`` (Keras's own ``test_step``
            beside a custom ``train_step``). A missing key is an error that
            lists the keys there were.
        progress: ``True`` (default): a progress bar on stderr while the test
            runs, when stderr is a terminal or a notebook (none in a log file
            or under CI); ``False`` or ``None``: none; or a function called with
            a :class:`~lrkit.rangetest.Progress` after each step (no bar).
        suggest: ``True`` (default rule), a rule name, or ``False``.

    Returns:
        A :class:`~lrkit.rangetest.RangeTestResult`; ``result.suggestion`` is
        the LR to compile your optimizer with.

    Raises:
        ValueError, TypeError: on bad arguments; nothing of the user's is
            changed.

    Example:
        >>> import keras, numpy as np
        >>> import lrkit.keras
        >>> rng = np.random.default_rng(0)
        >>> x = rng.normal(size=(256, 8)).astype("float32")
        >>> y = (x @ rng.normal(size=(8, 1))).astype("float32")
        >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
        >>> model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        >>> result = lrkit.keras.find_lr(model, x, y, num_steps=60)
        >>> result.suggestion is not None and 1e-7 < result.suggestion < 10
        True
        >>> float(model.optimizer.learning_rate)  # restored
        0.009999999776482582
    """
    # ---------------------------------------------------------- validate first
    _check_compiled(model)
    opt = model.optimizer
    inner = _inner(opt)
    schedule = getattr(inner, "_learning_rate", None)
    if isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule) or (
        callable(schedule) and not hasattr(schedule, "assign")
    ):
        _check.fail(
            "model.optimizer.learning_rate",
            "a number (the test sets the LR at each step)",
            f"the schedule {type(schedule).__name__}",
            "Compile with a float LR for the test, e.g. "
            "keras.optimizers.Adam(1e-3), then compile with your schedule, "
            "its base LR set to the suggestion.",
            exc=TypeError,
            shown=True,
        )
    accumulation = int(getattr(inner, "gradient_accumulation_steps", None) or 1)
    if not isinstance(shuffle, bool):
        _check.fail("shuffle", "True or False", shuffle, exc=TypeError)
    seed = _check.non_negative_int("seed", seed)
    val_batches = _check.positive_int("val_batches", val_batches)
    val_every = _check.positive_int("val_every", val_every)
    loss_key = check_key("loss_key", loss_key)
    validation_split = _check.fraction(
        "validation_split", validation_split, high_open=True
    )
    check_hooks(suggest, progress)
    start_lr, end_lr, num_steps, mode = check_ladder(start_lr, end_lr, num_steps, mode)
    _refuse_rows("x", x)

    batches: Any
    n_examples: int | None = None
    steps_per_epoch: int | None = None
    if _arrays(x):
        if batch_size is None:
            batch_size = 32
        batch_size = _check.positive_int("batch_size", batch_size)
        n_examples = _structure_len(x)
        if n_examples is None:
            _check.fail(
                "x",
                "arrays with the same number of rows",
                "arrays of "
                + ", ".join(sorted({str(_structure_len(v)) for v in _leaves(x)}))
                + " rows",
                shown=True,
            )
        if not n_examples:
            _check.fail("x", "arrays with at least one row", "0 rows", shown=True)
        for name, part in (("y", y), ("sample_weight", sample_weight)):
            _refuse_rows(name, part)
            if part is not None and _structure_len(part) != n_examples:
                _check.fail(
                    name,
                    f"as many rows as x ({n_examples})",
                    f"{_structure_len(part)} rows",
                    shown=True,
                )
        if y is None and getattr(model, "loss", None) is not None:
            _check.fail(
                "y",
                "the targets when x is arrays (the compiled loss compares the "
                "model's output with them)",
                None,
                "Pass y=..., or x as a dataset yielding (x, y) batches.",
                exc=TypeError,
            )
        _finite("x", x)
        if validation_split:
            if validation_data is not None:
                _check.fail(
                    "validation_split",
                    "0 when validation_data is given",
                    validation_split,
                    "Give one of the two (fit would ignore validation_split).",
                )
            # as fit: the last rows, before any shuffling
            split_at = math.floor(n_examples * (1.0 - validation_split))
            if split_at in (0, n_examples):
                _check.fail(
                    "validation_split",
                    f"a fraction that leaves rows in both parts of x "
                    f"({n_examples} rows)",
                    validation_split,
                )
            validation_data = tuple(
                _slice(v, split_at, n_examples) for v in (x, y, sample_weight)
            )
            x, y, sample_weight = (
                _slice(v, 0, split_at) for v in (x, y, sample_weight)
            )
            n_examples = split_at
        if class_weight is not None:
            sample_weight = _class_weights(class_weight, y, sample_weight)
        batches = _ArrayBatches(x, y, sample_weight, batch_size, shuffle, seed)
        steps_per_epoch = math.ceil(n_examples / batch_size)
    else:
        dataset = isinstance(x, keras.utils.PyDataset) or (
            hasattr(x, "__iter__") and not isinstance(x, (str, bytes, Mapping))
        )
        if not dataset:
            _check.fail(
                "x",
                "arrays (with y) or a dataset of batches",
                x,
                exc=TypeError,
            )
        if validation_split:
            _check.fail(
                "validation_split",
                "0 when x is a dataset (fit splits arrays only)",
                validation_split,
                "Pass validation_data=... instead.",
            )
        for name, part in (
            ("y", y),
            ("sample_weight", sample_weight),
            ("class_weight", class_weight),
        ):
            if part is not None:
                _check.fail(
                    name,
                    "None when x is a dataset (it yields (x, y[, sample_weight]) "
                    "batches)",
                    f"{name} of type {type(part).__name__}",
                    exc=TypeError,
                    shown=True,
                )
        if batch_size is not None:
            _check.fail(
                "batch_size",
                "None when x is a dataset (it batches itself)",
                batch_size,
            )
        if isinstance(x, keras.utils.PyDataset):
            batches = _IndexedBatches(x, "x")
            steps_per_epoch = batches.count
        else:
            if known_len(x) == 0:
                _check.fail("x", "a dataset that yields at least one batch", x)
            batches = Batches(x, "x")
            steps_per_epoch = known_len(x)

    val_fixed: list[tuple[Any, Any, Any]] | None = None  # arrays: fixed batches
    val_source: Any = None  # a dataset: its first batches, read once
    if validation_data is not None and _is_array(validation_data):
        _check.fail(
            "validation_data",
            "(x_val, y_val), (x_val, y_val, sample_weight_val) or a dataset of batches",
            f"one array of shape {tuple(getattr(validation_data, 'shape', ()))}",
            "Pass (x_val, y_val).",
            exc=TypeError,
            shown=True,
        )
    if validation_data is not None:
        batch_list = (
            isinstance(validation_data, list)
            and bool(validation_data)
            and all(isinstance(b, tuple) for b in validation_data)
        )  # [(x, y), ...]: batches; [x_val, y_val] or (x_val, y_val): arrays
        if isinstance(validation_data, (tuple, list)) and not batch_list:
            for i, part in enumerate(validation_data[:3]):
                _refuse_rows(f"validation_data[{i}]", part)
        if (
            isinstance(validation_data, (tuple, list))
            and not batch_list
            and (len(validation_data) == 0 or _arrays(validation_data[0]))
        ):
            if not 1 <= len(validation_data) <= 3 or not all(
                v is None or _arrays(v) for v in validation_data[1:]
            ):
                _check.fail(
                    "validation_data",
                    "(x_val, y_val) or (x_val, y_val, sample_weight) arrays",
                    f"{len(validation_data)} items",
                    exc=TypeError if validation_data else ValueError,
                    shown=True,
                )
            xv, yv, wv = (*validation_data, None, None)[:3]
            rows = _structure_len(xv)
            lengths = [_structure_len(v) for v in (yv, wv) if v is not None]
            if not rows or any(n != rows for n in lengths):
                _check.fail(
                    "validation_data",
                    "arrays with the same number of rows (>= 1)",
                    "arrays of "
                    + ", ".join(str(n) for n in (rows, *lengths))
                    + " rows",
                    shown=True,
                )
            _finite("validation_data[0]", xv)
            val_fixed = _ArrayBatches(
                xv, yv, wv, batch_size or 32, shuffle=False, seed=0
            ).first(val_batches)
        elif isinstance(validation_data, keras.utils.PyDataset) or (
            hasattr(validation_data, "__iter__")
            and not isinstance(validation_data, (str, bytes, Mapping))
        ):
            if known_len(validation_data) == 0:
                _check.fail(
                    "validation_data",
                    "a dataset that yields at least one batch",
                    validation_data,
                )
            val_source = validation_data
        else:
            _check.fail(
                "validation_data",
                "(x_val, y_val) arrays or a dataset of batches",
                validation_data,
                exc=TypeError,
            )
    validating = val_fixed is not None or val_source is not None
    saved_rngs = _source_rngs([x, val_source])

    first: list[Any] = []  # the batch that built an unbuilt model, trained first
    # fit hands train_step backend tensors (a DataLoader's batches as they are)
    convert = _converter(x)
    convert_val = _converter(val_source)

    def next_batch() -> tuple[Any, Any, Any]:
        batch = first.pop() if first else next(batches)
        return convert(_unpack(batch, "x"))

    def loss_of(logs: Mapping[str, Any], call: str) -> float:
        if call == "test_on_batch" and loss_key not in logs and "loss" in logs:
            # a custom train_step beside Keras's own test_step, which logs
            # "loss" (as fit reports val_loss for it)
            return float(logs["loss"])
        if loss_key not in logs:
            keys = ", ".join(repr(k) for k in sorted(logs)) or "none"
            _check.fail(
                "loss_key",
                f"a key of the logs model.{call} returns ({keys})",
                loss_key,
                "A custom train_step / test_step that logs its loss under "
                "another name: pass loss_key=... (the training loss).",
            )
        return float(logs[loss_key])

    def step_fn(lr: float) -> float:
        opt.learning_rate = lr
        total = 0.0
        for _ in range(accumulation):
            bx, by, bw = next_batch()
            logs = model.train_on_batch(bx, by, sample_weight=bw, return_dict=True)
            total += loss_of(logs, "train_on_batch")
        return total / accumulation

    val_cache: list[tuple[Any, Any, Any]] = [_tensors(b) for b in val_fixed or []]

    def val_fn() -> float:
        if not val_cache:  # a dataset's first batches (one pass at most)
            if isinstance(val_source, keras.utils.PyDataset):
                source: Any = _IndexedBatches(val_source, "validation_data")
                count = source.count
                taken = val_batches if count is None else min(val_batches, count)
                val_cache.extend(
                    convert_val(_unpack(next(source), "validation_data"))
                    for _ in range(taken)
                )
            else:
                for batch in itertools.islice(iter(val_source), val_batches):
                    val_cache.append(convert_val(_unpack(batch, "validation_data")))
            if not val_cache:
                _check.fail(
                    "validation_data",
                    "a dataset that yields at least one batch",
                    val_source,
                )
        losses = [
            loss_of(
                model.test_on_batch(vx, vy, sample_weight=vw, return_dict=True),
                "test_on_batch",
            )
            for vx, vy, vw in val_cache
        ]
        return float(np.mean(losses))

    state: Snapshot | None = None
    try:
        # a subclassed model never called has no weights yet: build it on a batch
        if not model.built:
            first.append(next(batches))
            model(convert(_unpack(first[0], "x"))[0])
        if not opt.built:  # its variables (moments, iterations) exist from here on
            opt.build(model.trainable_variables)
        params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
        extra = {
            "framework": "keras",
            "backend": keras.backend.backend(),
            "optimizer": type(opt).__name__,
            "batch_size": batch_size,
            "accumulation_steps": accumulation,
            "val_batches": val_batches if validating else 0,
            "lr_before": float(ops.convert_to_numpy(inner.learning_rate)),
        }
        state = Snapshot(model)
        result = range_test(
            step_fn,
            start_lr=start_lr,
            end_lr=end_lr,
            num_steps=num_steps,
            mode=mode,
            val_fn=val_fn if validating else None,
            val_every=val_every,
            progress=progress,
            suggest=suggest,
            steps_per_epoch=(
                None
                if not steps_per_epoch
                else max(1, math.ceil(steps_per_epoch / accumulation))
            ),
            params_per_example=params / n_examples if n_examples else None,
            extra=extra,
        )
    finally:
        if state is not None:
            state.restore()
        _restore_rngs(saved_rngs)
    return result
