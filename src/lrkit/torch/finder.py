"""``lrkit.find_lr``: the LR range test for PyTorch.

Builds a ``step_fn(lr)`` over the user's model, optimizer and data, hands it to
:func:`lrkit.rangetest.range_test`, and restores everything it touched: the model
(parameters, buffers such as BatchNorm statistics, grads, train/eval flags), the
optimizer (state, param groups and their LRs), the RNG states and the data
loaders' shuffling generators are bit-identical after the call to before, also
when it raises or is interrupted (Ctrl-C). The copy is held in CPU memory (or
spilled to a temporary directory with ``spill_dir=``); nothing is written to
the working directory.

Example:
    >>> import torch
    >>> from torch.utils.data import DataLoader, TensorDataset
    >>> import lrkit
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> x = torch.randn(256, 4); y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0])
    >>> model = torch.nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> loader = DataLoader(TensorDataset(x, y[:, None]), batch_size=32, shuffle=True)
    >>> result = lrkit.find_lr(model, opt, torch.nn.functional.mse_loss, loader)
    >>> result.stop_reason in ("diverged", "nan") and 1e-4 < result.suggestion < 1.0
    True
    >>> opt.param_groups[0]["lr"]  # untouched
    0.01
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import itertools
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from .. import _check
from .._util import Batches as _Batches, known_len as _known_len
from ..rangetest import (
    Mode,
    Progress,
    RangeTestResult,
    StepOutcome,
    check_hooks,
    check_ladder,
    range_test,
)
from ..suggest import MAX_EPOCHS, Suggestion
from ._groups import get_lr, set_lr
from .state import snapshot

__all__ = ["find_lr"]

#: ``confirm_steps``: the short runs happen only when the suggestion's
#: confidence is below this (the threshold below which a pick should be checked).
CONFIRM_BELOW = 0.5
#: ... and try the suggestion and this multiple of it (the margin the default
#: rule keeps below the range test's bottom: the runs check whether it is needed).
CONFIRM_FACTOR = 3.0
#: Validation batches a short run is scored on (fixed, the same for every run).
CONFIRM_VAL_BATCHES = 10
#: ... or, without a validation loader, its last this many training losses.
CONFIRM_TAIL = 10
#: The higher LR must win by this many standard errors of the paired
#: batch-by-batch difference of the two runs' scores.
CONFIRM_Z = 2.0
#: Monitor findings that veto the higher LR of the short runs (any severity).
_UNSTABLE = frozenset({"nan", "diverged", "spike", "oscillating", "exploding_grad"})

LossFn = Callable[..., torch.Tensor]


def _from_keras(obj: Any) -> bool:
    """A Keras object (on the torch backend a Keras model is a torch Module)."""
    return any(c.__module__.split(".")[0] == "keras" for c in type(obj).__mro__)


def _examples_per_epoch(train_loader: Any) -> int | None:
    """Training examples in one pass, None when not known.

    For a torch ``DataLoader``, what its sampler draws (``len(loader.sampler)``,
    or the batch sampler's sampler; a subset sampler counts its subset); None
    for ``batch_size=None`` (its items are whole batches); for other loaders
    ``len(loader.dataset)`` when there is one.
    """
    if isinstance(train_loader, torch.utils.data.DataLoader):
        if train_loader.batch_size is not None:
            return _known_len(train_loader.sampler)
        inner = getattr(train_loader.batch_sampler, "sampler", None)
        return None if inner is None else _known_len(inner)
    return _known_len(getattr(train_loader, "dataset", None))


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device, non_blocking=True)
    if isinstance(value, Mapping):
        moved = {k: _to_device(v, device) for k, v in value.items()}
        if isinstance(value, defaultdict):
            return defaultdict(value.default_factory, moved)
        try:
            return type(value)(moved)  # type: ignore[call-arg]
        except TypeError:  # a mapping type not built from a dict
            return moved
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # namedtuple
        return type(value)(*(_to_device(v, device) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


def _output_loss(out: Any) -> torch.Tensor | None:
    """The ``.loss`` of a Hugging Face style output (attribute or key), if any."""
    loss = getattr(out, "loss", None)
    if loss is None and isinstance(out, Mapping):
        loss = out.get("loss")
    return loss if isinstance(loss, torch.Tensor) else None


_LABEL_KEYS = ("labels", "label", "targets", "target", "y")

_HOOK_HINT = (
    "Pass compute_loss=lambda model, batch: <scalar loss tensor>, or "
    "unpack=lambda batch: (inputs, target)."
)


def _first_line(e: BaseException, limit: int = 160) -> str:
    """The gist of an error message on one line: the message itself, or the
    end of one that spans lines (after a tensor's repr comes what went wrong)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [""]
    line = lines[0] if len(lines) == 1 else lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _first_call_named(loss_fn: LossFn) -> LossFn:
    """``loss_fn``, whose first call names it when it raises TypeError: a
    function of ``(model, batch)`` passed where the criterion goes is called
    with the model's output and the target, and its own error (a tensor's
    repr, many lines) said nothing of why."""
    called = [False]

    def criterion(out: Any, target: Any) -> Any:
        if called[0]:
            return loss_fn(out, target)
        try:
            loss = loss_fn(out, target)
        except TypeError as e:
            if _check.is_ours(e):
                raise
            _check.fail(
                "loss_fn",
                "a criterion called as loss_fn(output, target)",
                f"one that raised TypeError when given the model's output (a "
                f"{type(out).__name__}) and the target: {_first_line(e)}",
                "A model that returns several values needs compute_loss= (the "
                "loss from the output you pick); so does a function of "
                "(model, batch).",
                exc=TypeError,
                shown=True,
            )
        called[0] = True
        return loss

    return criterion


def _call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (list, tuple)):
        return model(*inputs)
    return model(inputs)


def _required_output_loss(out: Any) -> torch.Tensor:
    """The output's ``.loss`` when no ``loss_fn`` was given; a clear error if none."""
    loss = _output_loss(out)
    if loss is None:
        _check.fail(
            "loss_fn",
            "given when the model output has no .loss",
            None,
            _HOOK_HINT,
            exc=TypeError,
        )
    return loss


def _first_batches(loader: Iterable[Any], n: int, device: torch.device) -> list[Any]:
    """The first ``n`` batches of ``loader`` on ``device`` (no more are drawn).

    Starting a DataLoader without its own generator draws its seed from the
    global torch RNG; that draw is undone, so a validation loader does not
    change the order in which the training loader shuffles."""
    with torch.random.fork_rng(devices=[]):
        it = iter(loader)
        try:
            return [_to_device(b, device) for b in itertools.islice(it, n)]
        finally:
            # stop the workers it started, unless the loader keeps it (persistent
            # workers) or it is the user's own iterator (passed as the loader)
            if it is not loader and getattr(loader, "_iterator", None) is not it:
                _shutdown(it)


def _no_grad_loss(hook: bool) -> NoReturn:
    """The loss cannot train the model: say which argument made it."""
    _check.fail(
        "compute_loss" if hook else "loss_fn",
        "a loss computed from the model's output (a tensor that requires grad)",
        "a loss with requires_grad=False",
        "Return the loss tensor itself (not .item(), a new tensor or a detached "
        "copy), and check that the model has trainable parameters.",
        exc=TypeError,
        shown=True,
    )


def _check_device(dev: torch.device, given: Any) -> None:
    """Fail now, naming ``device``, when no tensor can be made there (CUDA on a
    CPU-only build, an index past the last GPU, the ``meta`` device)."""
    problem = None
    if dev.type == "meta":
        problem = "the meta device holds no data to train on"
    else:
        try:
            torch.empty(1, device=dev)
        except Exception as e:  # no CUDA build, no such GPU, a backend not installed
            problem = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
    if problem is not None:
        _check.fail(
            "device",
            "a torch device this machine can use, such as 'cpu' or 'cuda:0'",
            given,
            problem,
        )


def _shutdown(it: Any) -> None:
    """Stop the worker processes of a DataLoader iterator (a no-op without)."""
    stop = getattr(it, "_shutdown_workers", None)
    if callable(stop):
        with contextlib.suppress(Exception):
            stop()


def _kept_iterators(loaders: Sequence[Any]) -> list[tuple[Any, Any]]:
    """``(loader, loader._iterator)`` for each DataLoader, set aside for the test.

    A loader with persistent workers keeps the iterator it made and reuses it
    (reset) on the next ``iter()``, which then draws one seed fewer. The one it
    holds may be the user's, in the middle of an epoch: the test makes its own
    (the loader's slot is emptied meanwhile), and the test's must not stay
    behind."""
    kept = [
        (loader, vars(loader).get("_iterator"))
        for loader in loaders
        if isinstance(loader, torch.utils.data.DataLoader)
    ]
    for loader, before in kept:
        if before is not None:
            loader.__dict__["_iterator"] = None
    return kept


def _put_back_iterators(
    kept: list[tuple[Any, Any]], batches: _Batches, final: bool = True
) -> None:
    """Stop the iterators the test started and give each loader back its own
    (``final``; else leave its slot empty for the next short run).

    Not the user's: an iterator a loader held before the call, or an iterator
    passed as the loader itself (``iter(loader)``: its batches are consumed,
    its workers stay the user's)."""
    users = {id(before) for _, before in kept if before is not None}
    users.add(id(batches.loader))
    if batches.it is not None and id(batches.it) not in users:
        _shutdown(batches.it)
    batches.it = None
    for loader, before in kept:
        now = vars(loader).get("_iterator")
        target = before if final else None
        if now is not target:
            if now is not None and id(now) not in users:
                _shutdown(now)
            loader.__dict__["_iterator"] = target


def _takes(model: nn.Module, name: str) -> bool:
    """True when ``model.forward`` accepts the keyword ``name`` (or ``**kwargs``);
    read once per model class (every batch asks). A wrapper that passes its
    arguments on (``DataParallel``, ``DistributedDataParallel``: ``.module``;
    ``torch.compile``: ``._orig_mod``) answers for the model it wraps."""
    while isinstance(model, _PASS_THROUGH):
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            break
        model = inner
    own = model.__dict__.get("forward")  # a forward set on the instance itself
    if own is not None:
        return _accepts(own, name)
    cls: type = type(model)
    return _class_takes(cls, name)


def _pass_through() -> tuple[type, ...]:
    """Module wrappers whose forward passes its arguments on to ``.module``
    (or, compiled, to ``._orig_mod``)."""
    kinds: list[type] = [nn.DataParallel, nn.parallel.DistributedDataParallel]
    with contextlib.suppress(Exception):
        from torch._dynamo.eval_frame import OptimizedModule

        kinds.append(OptimizedModule)
    return tuple(kinds)


_PASS_THROUGH = _pass_through()


@functools.lru_cache(maxsize=256)
def _class_takes(cls: type, name: str) -> bool:
    return _accepts(cls.forward, name)  # type: ignore[attr-defined]


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # no signature to read: pass everything
        return True
    return any(
        p.name == name or p.kind is inspect.Parameter.VAR_KEYWORD for p in params
    )


def _stateful_module(obj: Any, model: nn.Module) -> bool:
    """``obj`` is a module outside ``model`` with parameters or buffers."""
    if not isinstance(obj, nn.Module) or any(obj is m for m in model.modules()):
        return False
    return any(True for _ in obj.parameters()) or any(True for _ in obj.buffers())


def _described(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of length {len(value)}"
    return f"a {type(value).__name__}"


def _logits(out: Any) -> Any:
    """What a criterion gets from a model output: its logits when it holds
    them (a Hugging Face output object or a dict), else the output itself."""
    if isinstance(out, Mapping) and "logits" in out:
        return out["logits"]
    return getattr(out, "logits", out)


def _default_loss(
    model: nn.Module,
    batch: Any,
    loss_fn: LossFn | None,
    unpack: Callable[[Any], tuple[Any, Any]] | None,
    source: str = "train_loader",
) -> torch.Tensor:
    """Loss of one batch for the common batch formats (see :func:`find_lr`);
    ``source``: the loader it came from, named in errors."""
    if unpack is not None:
        pair = unpack(batch)
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            _check.fail(
                "unpack",
                "a function returning a pair (inputs, target)",
                f"a function returning {_described(pair)}",
                exc=TypeError,
                shown=True,
            )
        inputs, target = pair
        out = _call(model, inputs)
        return _required_output_loss(out) if loss_fn is None else loss_fn(out, target)
    if isinstance(batch, Mapping):
        key = next((k for k in _LABEL_KEYS if k in batch), None)
        if loss_fn is not None and key is not None and not _takes(model, key):
            # your own criterion gets the label; a forward(x) does not take it
            out = model(**{k: v for k, v in batch.items() if k != key})
        else:
            out = model(**batch)
        if loss_fn is None:
            return _required_output_loss(out)
        if key is None:
            loss = _output_loss(out)
            if loss is not None:
                return loss
            _check.fail(
                source,
                f"dict batches with a label key ({', '.join(_LABEL_KEYS)}) "
                "when loss_fn is given",
                f"a dict with keys {sorted(batch)}",
                _HOOK_HINT,
                exc=TypeError,
                shown=True,
            )
        return loss_fn(_logits(out), batch[key])
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        x, y = batch
        out = model(x)
        return _required_output_loss(out) if loss_fn is None else loss_fn(out, y)
    if loss_fn is None and not isinstance(batch, (list, tuple, Mapping)):
        loss = _output_loss(model(batch))
        if loss is not None:
            return loss
    _check.fail(
        source,
        "batches of (inputs, target) or dicts of model keyword arguments",
        _described(batch),
        _HOOK_HINT,
        exc=TypeError,
        shown=True,
    )


def _scalar(loss: Any, source: str = "loss_fn") -> torch.Tensor:
    if not isinstance(loss, torch.Tensor):
        _check.fail(
            source,
            "a function returning a torch.Tensor",
            f"a function returning {type(loss).__name__}",
            "Return the scalar loss itself (e.g. output.loss)."
            if source == "compute_loss"
            else None,
            exc=TypeError,
            shown=True,
        )
    if loss.numel() != 1:
        _check.fail(
            source,
            "a function returning a scalar loss (one element)",
            f"a tensor of shape {tuple(loss.shape)}",
            "Reduce it, e.g. with .mean().",
            shown=True,
        )
    return loss.reshape(())


def _amp_dtype(amp: Any) -> torch.dtype | None:
    if amp is None or amp is False:
        return None
    names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    names.update({"fp16": torch.float16, "float16": torch.float16})
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and amp in names:
        return names[amp]
    _check.fail("amp", "None, 'bf16' or 'fp16'", amp)


def find_lr(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn | None = None,
    train_loader: Iterable[Any] | None = None,
    *,
    val_loader: Iterable[Any] | None = None,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_steps: int | None = None,
    mode: Mode = "exp",
    accumulation_steps: int = 1,
    compute_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    unpack: Callable[[Any], tuple[Any, Any]] | None = None,
    amp: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    max_grad_norm: float | None = None,
    val_batches: int = 2,
    val_every: int = 2,
    reference_group: int = 0,
    sync_every: int | None = None,
    spill_dir: str | Path | None = None,
    progress: bool | Callable[[Progress], None] | None = True,
    suggest: bool | str = True,
    confirm_steps: int = 0,
) -> RangeTestResult:
    """Run an LR range test on a PyTorch model and suggest a learning rate.

    The LR rises from ``start_lr`` to ``end_lr`` over ``num_steps`` optimizer
    steps (one LR per step); the test stops early when the loss turns NaN/inf
    or diverges (see :mod:`lrkit.rangetest`). Everything is restored afterwards.

    Batches: ``(inputs, target)`` pairs by default (``loss_fn(model(inputs),
    target)``, the output as the model returns it); dict batches
    are passed as ``model(**batch)`` and the loss is ``output.loss`` (Hugging
    Face style) or ``loss_fn(output.logits or output, batch["labels"])``;
    ``unpack(batch) -> (inputs, target)`` adapts other
    formats and ``compute_loss(model, batch) -> loss`` replaces all of this.

    Args:
        model: the model to test (trained in place, then restored).
        optimizer: its optimizer; its LRs are overwritten during the test and
            restored after. With several param groups the ladder scales every
            group, keeping their LR ratios; LRs in the result are those of
            ``reference_group``.
        loss_fn: ``loss_fn(output, target) -> scalar tensor`` (a criterion); may
            be ``None`` with ``compute_loss`` or models that return ``.loss``.
        train_loader: any iterable of batches (a DataLoader, with or without
            ``len``); restarted when it runs out.
        val_loader: optional; its first ``val_batches`` batches are evaluated
            every ``val_every`` steps as a cheap validation signal.
        start_lr: first LR of the ladder.
        end_lr: last LR of the ladder.
        num_steps: optimizer steps (one LR each); by default 25 per decade of
            the ladder (200 for 1e-7 .. 10), so that widening the range does not
            change how each LR is tested (see :mod:`lrkit.rangetest`).
        mode: ``"exp"`` (default) or ``"linear"`` ladder.
        accumulation_steps: micro-batches accumulated per optimizer step (the
            recorded loss is their mean).
        compute_loss: ``compute_loss(model, batch) -> loss``; overrides the
            batch handling above.
        unpack: ``unpack(batch) -> (inputs, target)``; inputs that are a tuple
            are passed as ``model(*inputs)``, a dict as ``model(**inputs)``.
        amp: ``"bf16"`` or ``"fp16"`` to run forward passes under autocast
            (fp16 adds a ``GradScaler``; a step it skips is recorded as skipped).
        device: where batches go (default: the device of the model's first
            parameter).
        max_grad_norm: clip the gradient norm before each step, as in training.
        val_batches: validation batches used (fixed, cached on ``device``).
        val_every: steps between validations once the training loss has
            started to fall (four times as many before that).
        reference_group: index of the param group whose LR the ladder follows.
        sync_every: read losses from the device every this many steps (default
            1 on CPU, 8 on accelerators, to avoid a host sync per step).
        spill_dir: hold the state snapshot in a temporary directory there
            instead of CPU memory (for very large models).
        progress: ``True`` (default): a progress bar on stderr while the test
            runs, when stderr is a terminal or a notebook (none in a log file
            or under CI); ``False`` or ``None``: none; or a function called with
            a :class:`~lrkit.rangetest.Progress` after each step (no bar).
        suggest: ``True`` (default rule), a rule name, or ``False``.
        confirm_steps: optional confirmation (0: off). When the suggestion's
            confidence is below ``CONFIRM_BELOW`` (0.5), train this many steps
            from the starting state at the suggestion and at ``CONFIRM_FACTOR``
            (3) times it, and keep the one with the lower loss afterwards (the
            validation loss on up to ``CONFIRM_VAL_BATCHES`` batches, else the
            mean training loss of the last 10 steps); ties keep the lower LR,
            and so does any sign of instability in the higher LR's run (a
            ``nan``, ``diverged``, ``spike`` or ``oscillating`` finding of
            :class:`lrkit.Monitor` on its training loss; an ``info``-level one
            not when the run at 3x gained more than 3x as much: early progress
            grows with the LR, so more than the LR ratio says the lower LR
            stalled).
            Costs ``2 * confirm_steps`` extra optimizer steps; about 10% of
            the planned run is a good length. The short runs' losses are in
            ``suggestion_info.evidence`` and the reasons; everything is
            restored after, as for the range test.

    Returns:
        A :class:`~lrkit.rangetest.RangeTestResult`; ``result.suggestion`` is the
        LR to train with (for the reference group; ``result.group_suggestions``
        for all groups).

    Raises:
        ValueError, TypeError: on bad arguments or batches that cannot be
            unpacked; nothing of the user's is changed.
    """
    # ---------------------------------------------------------- validate first
    keras_hint = (
        "For a Keras model use lrkit.keras.find_lr(model, x, y)."
        if any(_from_keras(v) for v in (model, optimizer))
        else None
    )
    if not isinstance(model, nn.Module) or _from_keras(model):
        _check.fail("model", "a torch.nn.Module", model, keras_hint, exc=TypeError)
    if not isinstance(optimizer, torch.optim.Optimizer):
        _check.fail(
            "optimizer",
            "a torch.optim.Optimizer",
            optimizer,
            keras_hint,
            exc=TypeError,
        )
    if loss_fn is not None and not callable(loss_fn):
        _check.fail("loss_fn", "callable or None", loss_fn, exc=TypeError)
    if compute_loss is not None and not callable(compute_loss):
        _check.fail("compute_loss", "callable or None", compute_loss, exc=TypeError)
    if unpack is not None and not callable(unpack):
        _check.fail("unpack", "callable or None", unpack, exc=TypeError)
    if train_loader is None:
        _check.fail(
            "train_loader", "an iterable of batches", train_loader, exc=TypeError
        )
    if not hasattr(train_loader, "__iter__"):
        _check.fail(
            "train_loader", "an iterable of batches", train_loader, exc=TypeError
        )
    if _known_len(train_loader) == 0:
        _check.fail(
            "train_loader", "a loader that yields at least one batch", train_loader
        )
    if val_loader is not None and not hasattr(val_loader, "__iter__"):
        _check.fail(
            "val_loader", "an iterable of batches or None", val_loader, exc=TypeError
        )
    accumulation_steps = _check.positive_int("accumulation_steps", accumulation_steps)
    val_batches = _check.positive_int("val_batches", val_batches)
    val_every = _check.positive_int("val_every", val_every)
    if max_grad_norm is not None:
        max_grad_norm = _check.positive("max_grad_norm", max_grad_norm)
    amp_dtype = _amp_dtype(amp)
    groups = optimizer.param_groups
    if not isinstance(reference_group, int) or isinstance(reference_group, bool):
        _check.fail("reference_group", "an int", reference_group, exc=TypeError)
    if not 0 <= reference_group < len(groups):
        _check.fail(
            "reference_group",
            f"a param group index in [0, {len(groups) - 1}]",
            reference_group,
        )
    model_params = {id(p) for p in model.parameters()}
    opt_params = [p for g in groups for p in g["params"]]
    if not any(id(p) in model_params for p in opt_params):
        _check.fail(
            "optimizer",
            "an optimizer over parameters of model",
            f"{type(optimizer).__name__} with {len(opt_params)} parameters, "
            "none of them in model",
            "Build it with optimizer = Optim(model.parameters(), ...).",
            shown=True,
        )
    if not any(p.requires_grad for p in opt_params):
        _check.fail(
            "optimizer",
            "at least one parameter with requires_grad=True",
            f"{type(optimizer).__name__} whose {len(opt_params)} parameters are all "
            "frozen",
            "Unfreeze the layers to train, or build the optimizer over them.",
            shown=True,
        )
    closure = inspect.signature(optimizer.step).parameters.get("closure")
    if closure is not None and closure.default is inspect.Parameter.empty:
        _check.fail(
            "optimizer",
            "an optimizer that steps without a closure (SGD, Adam, ...)",
            f"{type(optimizer).__name__}, whose step() needs one",
            "A range test takes one step per batch; line-search optimizers "
            "like LBFGS choose their own step size.",
            exc=TypeError,
            shown=True,
        )
    if isinstance(optimizer, torch.optim.Rprop):
        _check.fail(
            "optimizer",
            "an optimizer whose steps follow its LR",
            "Rprop, whose lr only sets the first step sizes",
            "Rprop then grows or shrinks each step size from the gradients' "
            "signs and never reads lr again, so a ladder of LRs changes nothing. "
            "Tune its etas / step_sizes instead.",
            exc=TypeError,
            shown=True,
        )
    if any(g.get("lr") is None for g in groups):
        _check.fail(
            "optimizer",
            "param groups with a numeric 'lr'",
            f"{type(optimizer).__name__} with lr=None",
            "It sets its own step size (e.g. Adafactor(relative_step=True)), "
            "so there is no LR to test; build it with a fixed lr to test one.",
            exc=TypeError,
            shown=True,
        )
    if (
        all(get_lr(g) == 0 for g in groups)
        and all(isinstance(g.get("initial_lr"), (int, float)) for g in groups)
        and float(groups[reference_group]["initial_lr"]) > 0
    ):
        # an LR scheduler with warmup (Hugging Face's get_*_schedule_with_warmup)
        # has set every LR to 0 at step 0: the groups' ratios are in initial_lr
        ref_lr = float(groups[reference_group]["initial_lr"])
        factors = tuple(float(g["initial_lr"]) / ref_lr for g in groups)
    else:
        ref_lr = get_lr(groups[reference_group])
        factors = ()
    if not (ref_lr > 0 and math.isfinite(ref_lr)):
        _check.fail(
            f"optimizer.param_groups[{reference_group}]['lr']",
            "> 0 (the other groups' LRs are kept as ratios of it)",
            ref_lr,
            "Pick another reference_group or set a positive LR.",
        )
    factors = factors or tuple(get_lr(g) / ref_lr for g in groups)
    if device is None:
        first = next(model.parameters(), None)
        dev = first.device if first is not None else torch.device("cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError):
            _check.fail("device", "a torch device such as 'cpu' or 'cuda:0'", device)
        _check_device(dev, device)
    on_meta = [
        n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta
    ]
    if on_meta:
        _check.fail(
            "model",
            "a model whose tensors hold data",
            f"one with {len(on_meta)} tensor(s) on the meta device ({on_meta[0]!r}...)",
            "Materialise it first (model.to_empty(device=...) and load its weights).",
            shown=True,
        )
    if sync_every is None:
        sync_every = 1 if dev.type == "cpu" else 8
    sync_every = _check.positive_int("sync_every", sync_every)
    confirm_steps = _check.non_negative_int("confirm_steps", confirm_steps)
    if spill_dir is not None and not Path(spill_dir).is_dir():
        _check.fail("spill_dir", "an existing directory or None", str(spill_dir))
    check_hooks(suggest, progress)
    # the ladder's arguments are checked (and the default length set) first
    start_lr, end_lr, num_steps, mode = check_ladder(start_lr, end_lr, num_steps, mode)

    if compute_loss is not None:
        hook = compute_loss

        def batch_loss(batch: Any, source: str = "train_loader") -> torch.Tensor:
            return _scalar(hook(model, batch), "compute_loss")
    else:
        criterion = None if loss_fn is None else _first_call_named(loss_fn)
        checked: set[str] = set()  # the loaders whose first batch went through

        def batch_loss(batch: Any, source: str = "train_loader") -> torch.Tensor:
            if source in checked:
                return _scalar(_default_loss(model, batch, criterion, unpack, source))
            try:  # the first batch: a TypeError is a batch the setup cannot take
                loss = _scalar(_default_loss(model, batch, criterion, unpack, source))
            except TypeError as e:
                if _check.is_ours(e):
                    raise
                _check.fail(
                    source,
                    "batches the model takes as the call shows "
                    "(model(inputs), or model(**batch) for a dict)",
                    f"a batch whose model call raised TypeError: {_first_line(e)}",
                    _HOOK_HINT,
                    exc=TypeError,
                    shown=True,
                )
            checked.add(source)
            return loss

    autocast: Callable[[], contextlib.AbstractContextManager[Any]]
    if amp_dtype is None:
        autocast = contextlib.nullcontext
    else:
        dtype = amp_dtype

        def autocast() -> contextlib.AbstractContextManager[Any]:
            return torch.autocast(device_type=dev.type, dtype=dtype)

    def new_scaler() -> torch.amp.GradScaler | None:
        if amp_dtype is torch.float16:
            return torch.amp.GradScaler(dev.type)
        return None

    scaler = new_scaler()

    batches = _Batches(train_loader, "train_loader")
    params = [p for p in opt_params if p.requires_grad]
    n_examples = _examples_per_epoch(train_loader)
    # trainable parameters per training example (below 1: cannot memorise)
    params_per_example = (
        sum(p.numel() for p in params) / n_examples if n_examples else None
    )

    def broken() -> bool:
        """Non-finite weights (or BatchNorm statistics): the test diverged."""
        tensors = [*params, *model.buffers()]
        return any(
            t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in tensors
        )

    def step_fn(lr: float) -> Any:
        # user code may refuse the NaN weights of a diverged test (a
        # distribution's argument check, an assert): a NaN loss, not a crash
        try:
            return train_step(lr)
        except Exception:
            if not broken():
                raise
            nan = torch.tensor(math.nan, device=dev)
            return nan if scaler is None else (nan, None)

    def train_step(lr: float) -> Any:
        for group, f in zip(groups, factors, strict=True):
            set_lr(group, lr * f)
        optimizer.zero_grad(set_to_none=True)
        total: torch.Tensor | None = None
        for _ in range(accumulation_steps):
            batch = _to_device(next(batches), dev)
            with autocast():
                loss = batch_loss(batch)
            if not loss.requires_grad:
                _no_grad_loss(compute_loss is not None)
            part = loss.float() / accumulation_steps
            if scaler is not None:
                scaler.scale(part).backward()  # type: ignore[no-untyped-call]
            else:
                part.backward()  # type: ignore[no-untyped-call]
            d = part.detach()
            total = d if total is None else total + d
        assert total is not None
        if scaler is not None:
            if max_grad_norm is not None:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            old = scaler._scale
            old = None if old is None else old.clone()
            scaler.step(optimizer)
            scaler.update()
            new = scaler._scale
            skipped = None if old is None or new is None else new < old
            return (total, skipped)
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        return total

    def resolve(values: Sequence[Any]) -> list[Any]:
        if scaler is None:
            if len(values) == 1:
                return [values[0].item()]
            return list(torch.stack(list(values)).cpu().tolist())
        losses = torch.stack([v[0] for v in values]).cpu().tolist()
        if all(v[1] is not None for v in values):  # one read for all skip flags
            flags = [bool(f) for f in torch.stack([v[1] for v in values]).tolist()]
        else:
            flags = [bool(v[1]) if v[1] is not None else False for v in values]
        return [StepOutcome(v, s) for v, s in zip(losses, flags, strict=True)]

    val_fn = None
    val_cache: list[Any] = []
    # BatchNorm layers validate with batch statistics: their running statistics
    # lag far behind a model whose LR rises every step (they are restored after)
    bn_layers = [
        m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    batch_stats = [True]
    if val_loader is not None:
        vloader = val_loader

        def val_fn() -> Any:
            if not val_cache:
                val_cache.extend(_first_batches(vloader, val_batches, dev))
                if not val_cache:
                    _check.fail(
                        "val_loader", "a loader that yields at least one batch", vloader
                    )
            flags = [(m, m.training) for m in model.modules()]
            # only the BatchNorm layers that train switch to batch statistics
            # (one the user froze in eval mode keeps its running statistics),
            # and the validation batches must not move their running statistics
            live = [m for m in bn_layers if m.training] if batch_stats[0] else []
            kept = [_bn_buffers(m) for m in live]
            model.eval()
            for m in live:
                m.train()
            try:
                with torch.no_grad(), autocast():
                    vals = [batch_loss(b, "val_loader").float() for b in val_cache]
            except ValueError as e:
                if broken():  # as in step_fn
                    return torch.tensor(math.nan, device=dev)
                if not batch_stats[0] or "Expected more than 1 value" not in str(e):
                    raise
                batch_stats[0] = False  # batches of one: use running statistics
                return val_fn()
            except Exception:
                if not broken():
                    raise
                return torch.tensor(math.nan, device=dev)
            finally:
                for module, flag in flags:
                    module.training = flag
                for m, buffers in zip(live, kept, strict=True):
                    _restore_bn_buffers(m, buffers)
            return torch.stack(vals).mean()  # read with the step losses

    loaders = [train_loader] if val_loader is None else [train_loader, val_loader]
    n_batches = _known_len(train_loader)
    steps_per_epoch = (
        None if not n_batches else max(1, math.ceil(n_batches / accumulation_steps))
    )
    extra = {
        "accumulation_steps": accumulation_steps,
        "amp": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
        "device": str(dev),
        "optimizer": type(optimizer).__name__,
        "param_groups": len(groups),
        "reference_group": reference_group,
        "group_lrs": [get_lr(g) for g in groups],
        "max_grad_norm": max_grad_norm,
        "val_batches": val_batches if val_loader is not None else 0,
        "confirm_steps": confirm_steps,
    }

    confirm_cache: list[Any] = []

    def confirm_values(losses: list[float]) -> list[float]:
        """What a short run is scored on, batch by batch: the validation loss
        of each fixed validation batch (model in eval mode, BatchNorm on its
        running statistics), or its last training losses (the same batches for
        every run); empty when the run blew up."""
        if not all(math.isfinite(v) for v in losses):
            return []
        if val_loader is None:
            return losses[-CONFIRM_TAIL:]
        if not confirm_cache:
            confirm_cache.extend(_first_batches(val_loader, CONFIRM_VAL_BATCHES, dev))
        flags = [(m, m.training) for m in model.modules()]
        model.eval()
        try:
            with torch.no_grad(), autocast():
                vals = [
                    float(batch_loss(b, "val_loader").float()) for b in confirm_cache
                ]
        finally:
            for module, flag in flags:
                module.training = flag
        return vals if all(math.isfinite(v) for v in vals) else []

    def confirm(result: RangeTestResult) -> RangeTestResult:
        """Short runs at the suggestion and CONFIRM_FACTOR times it."""
        nonlocal batches, scaler
        info = result.suggestion_info
        if info is None or info.lr is None or info.confidence >= CONFIRM_BELOW:
            return result
        note = None
        if info.evidence.get("epochs", 0.0) > MAX_EPOCHS:
            note = (
                f"not confirmed: the range test went {info.evidence['epochs']:.0f} "
                "times through the training data, and short runs cannot see the "
                "overfitting that may set the best LR of a full run"
            )
        elif isinstance(train_loader, Iterator):
            note = (
                "not confirmed: a one-shot iterator cannot give each short run "
                "the same batches"
            )
        elif isinstance(val_loader, Iterator):
            note = (
                "not confirmed: the validation loader is a one-shot iterator, "
                "which the range test already used up"
            )
        if note is not None:
            return _replace(
                result,
                suggestion_info=_replace_info(info, reasons=(*info.reasons, note)),
            )
        t0 = time.perf_counter()
        candidates = (info.lr, info.lr * CONFIRM_FACTOR)
        values: list[list[float]] = []
        runs: list[list[float]] = []
        start = math.nan
        if val_loader is not None:  # the validation loss before training
            snap.restore()
            start = _mean(confirm_values([]))
        for lr in candidates:
            snap.restore()  # the starting state, its RNG and loader shuffles
            if not model.training:  # trained as in the range test
                model.train()
            # each run starts afresh
            _put_back_iterators(kept_iterators, batches, final=False)
            batches = _Batches(train_loader, "train_loader")
            scaler = new_scaler()
            outs = [step_fn(lr) for _ in range(confirm_steps)]
            losses = [
                v.loss if isinstance(v, StepOutcome) else float(v)
                for v in resolve(outs)
            ]
            values.append(confirm_values(losses))
            runs.append(losses)
        if math.isnan(start):  # no validation: the first training loss
            start = runs[0][0] if runs[0] else math.nan
        scores = [_mean(v) for v in values]
        margin = _paired_margin(values[0], values[1])
        # with validation, the run at 3x must also end lower on its training
        # batches: two signals agreeing, not a held-out difference of a percent
        tails = [r[-CONFIRM_TAIL:] if values[0] and values[1] else [] for r in runs]
        train_agrees = val_loader is None or (
            bool(tails[0])
            and _mean(tails[1]) < _mean(tails[0]) - _paired_margin(*tails)
        )
        best, unstable, overridden, ratio = _confirm_choice(
            start, scores, runs[1], margin=margin, train_agrees=train_agrees
        )
        which = "validation" if val_loader is not None else "training"
        note = (
            f"confirmed by two short runs of {confirm_steps} steps from the start: "
            f"{which} loss {scores[0]:.4g} at LR {candidates[0]:.3g}, "
            f"{scores[1]:.4g} at LR {candidates[1]:.3g}"
        )
        if scores[1] < scores[0] - margin and not train_agrees:
            note += (
                f", but its last {CONFIRM_TAIL} training losses were not lower, so "
                "the higher LR did not prove itself"
            )
        elif scores[0] - margin <= scores[1] < scores[0]:
            note += (
                f", a difference within the noise of the comparison "
                f"(+-{margin:.2g}: {CONFIRM_Z:g} standard errors of the batch-by-batch "
                "difference), so the higher LR did not prove itself"
            )
        elif scores[1] < scores[0] and unstable:
            note += (
                f", but the run at {candidates[1]:.3g} showed "
                f"{' and '.join(unstable)} (lrkit.Monitor)"
            )
        elif scores[1] < scores[0] and overridden:
            note += (
                f" (its run showed an info-level {' and '.join(overridden)}, but "
                f"gained {ratio:.3g}x as much: the lower LR stalled)"
            )
        note += f"; kept LR {candidates[best]:.3g}"
        lr = candidates[best]
        evidence = {
            **info.evidence,
            "confirm_steps": float(confirm_steps),
            "confirm_loss": scores[0],
            "confirm_loss_up": scores[1],
            "confirm_margin": margin,
            "lr_unconfirmed": info.lr,
        }
        if math.isfinite(ratio):
            evidence["confirm_gain_ratio"] = ratio
        new = _replace_info(
            info,
            lr=lr,
            high=max(info.high if info.high is not None else lr, lr),
            reasons=(*info.reasons, note),
            evidence=evidence,
        )
        timings = {**result.timings, "confirm": time.perf_counter() - t0}
        return _replace(result, suggestion_info=new, timings=timings)

    # a criterion that is a module keeps state of its own (a running center,
    # a learned temperature): restored with the rest
    own = {"loss_fn": loss_fn} if _stateful_module(loss_fn, model) else None
    snap = snapshot(
        model, optimizer, objects=own, loaders=loaders, rng=True, spill_dir=spill_dir
    )
    kept_iterators = _kept_iterators(loaders)
    # the optimizer's own step hooks (a scheduler's step counter, an EMA update)
    # must not see the test's steps: they are set aside and put back after
    hooks = _detach_step_hooks(optimizer)
    try:
        if not model.training:  # keep submodules the user froze in eval mode
            model.train()
        # the test trains, also when called under torch.no_grad() / inference_mode()
        with torch.inference_mode(False), torch.enable_grad():
            result = range_test(
                step_fn,
                start_lr=start_lr,
                end_lr=end_lr,
                num_steps=num_steps,
                mode=mode,
                val_fn=val_fn,
                val_every=val_every,
                sync_every=sync_every,
                resolve=resolve,
                progress=progress,
                suggest=suggest,
                steps_per_epoch=steps_per_epoch,
                params_per_example=params_per_example,
                extra=extra,
            )
            if confirm_steps:
                result = confirm(result)
    finally:
        t0 = time.perf_counter()
        val_cache.clear()
        confirm_cache.clear()
        _put_back_iterators(kept_iterators, batches)
        _reattach_step_hooks(optimizer, hooks)
        snap.restore()
        snap.discard()
        restore_s = time.perf_counter() - t0
    timings = {**result.timings, "restore": restore_s}
    return _replace(
        result, timings=timings, reference_group=reference_group, group_factors=factors
    )


_HOOK_ATTRS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")


def _bn_buffers(m: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of a BatchNorm layer's running statistics (and batch count)."""
    return {
        name: buf.detach().clone()
        for name, buf in m.named_buffers(recurse=False)
        if buf is not None
    }


def _restore_bn_buffers(m: nn.Module, buffers: dict[str, torch.Tensor]) -> None:
    """Put back what :func:`_bn_buffers` copied, in place."""
    own = dict(m.named_buffers(recurse=False))
    with torch.no_grad():
        for name, value in buffers.items():
            own[name].copy_(value)


def _detach_step_hooks(optimizer: torch.optim.Optimizer) -> dict[str, dict[Any, Any]]:
    """Empty the optimizer's per-instance step hooks; returns them for later.

    Hooks torch runs for every optimizer
    (``torch.optim.optimizer.register_optimizer_step_post_hook``) stay: they
    observe the process (a profiler, a step counter measuring cost), and the
    test's steps are real work."""
    saved: dict[str, dict[Any, Any]] = {}
    for attr in _HOOK_ATTRS:
        table = getattr(optimizer, attr, None)
        if isinstance(table, dict):
            saved[attr] = dict(table)
            table.clear()
    return saved


def _reattach_step_hooks(
    optimizer: torch.optim.Optimizer, saved: Mapping[str, Mapping[Any, Any]]
) -> None:
    for attr, hooks in saved.items():
        table = getattr(optimizer, attr)
        table.clear()
        table.update(hooks)


def _mean(values: Sequence[float]) -> float:
    """The mean, or inf for no values (a run that blew up)."""
    return sum(values) / len(values) if values else math.inf


def _paired_margin(low: Sequence[float], up: Sequence[float]) -> float:
    """``CONFIRM_Z`` standard errors of the mean batch-by-batch difference of
    two runs scored on the same batches (0 when there are fewer than 2)::

        d_i = up_i - low_i,   margin = CONFIRM_Z * sd(d) / sqrt(n)
    """
    n = min(len(low), len(up))
    if n < 2:
        return 0.0
    d = [b - a for a, b in zip(low[:n], up[:n], strict=True)]
    mean = sum(d) / n
    var = sum((x - mean) ** 2 for x in d) / (n - 1)
    return CONFIRM_Z * math.sqrt(var / n)


def _confirm_choice(
    start: float,
    scores: Sequence[float],
    up: Sequence[float],
    *,
    margin: float = 0.0,
    train_agrees: bool = True,
) -> tuple[int, list[str], list[str], float]:
    """Which short run of ``confirm_steps`` wins: 0 (the suggestion) or 1 (3x).

    ``start`` is the score before training, ``scores`` each run's score after,
    ``up`` the training losses of the run at 3x. The run at 3x wins only when
    its score is lower by more than ``margin`` (the noise of the comparison,
    see :func:`_paired_margin`), ``train_agrees`` (scored on validation, its
    last training losses must be lower too) and :class:`lrkit.Monitor`, run
    over its training losses, found no sign of instability. A lone ``info``-level
    finding (a spike, common in healthy early training) does not count when
    the run at 3x gained more than ``CONFIRM_FACTOR`` times what the run at the
    suggestion gained: early progress grows with the LR, so more than the LR
    ratio says the lower LR was stalled.

    Returns:
        ``(best, vetoing kinds, overridden info kinds, gain ratio)``.
    """
    from ..monitor import Monitor

    gain_low, gain_up = start - scores[0], start - scores[1]
    ratio = gain_up / gain_low if gain_low > 0.0 else math.inf
    monitor = Monitor()
    for t, v in enumerate(up):
        monitor.update(t, v)
    monitor.finish()
    found = [f for f in monitor.findings if f.kind in _UNSTABLE]
    stalled = gain_up > 0.0 and ratio > CONFIRM_FACTOR
    unstable = sorted({f.kind for f in found if f.severity != "info" or not stalled})
    overridden = sorted({f.kind for f in found} - set(unstable))
    wins = scores[1] < scores[0] - margin and train_agrees
    best = 1 if wins and not unstable else 0
    return best, unstable, overridden, ratio


def _replace_info(info: Suggestion, **changes: Any) -> Suggestion:
    """A copy of a frozen Suggestion with some fields changed."""
    return dataclasses.replace(info, **changes)


def _replace(result: RangeTestResult, **changes: Any) -> RangeTestResult:
    return dataclasses.replace(result, **changes)
