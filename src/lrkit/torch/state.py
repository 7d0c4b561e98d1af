"""Bit-exact snapshots of training state, for the range test and the guard.

A :class:`Snapshot` holds one copy of everything a training step can change:

- every parameter and buffer of the model (persistent or not), and every tensor
  the optimizer trains outside the model (a learnable loss weight), their ``.grad``
  and ``requires_grad``, and each submodule's ``training`` flag;
- the optimizer's per-parameter state, its param groups (learning rates and all
  other keys; keys added later are removed on restore) and its plain attributes,
  and the same of the optimizers it wraps (two levels deep: a
  ``ZeroRedundancyOptimizer``'s local one, a Lookahead's base optimizer);
- the ``state_dict()`` of any other object handed in (an LR scheduler, a
  ``GradScaler``, ...);
- the Python, NumPy and torch (CPU and, when initialised, CUDA) RNG states, and
  the random generators of data loaders, their samplers and their datasets
  (their shuffling order and augmentations: a ``torch.Generator``, a NumPy
  ``Generator``/``RandomState`` or a ``random.Random``, under any attribute
  name) and their integer counters (an epoch counter that seeds a shuffle).

:meth:`Snapshot.restore` writes all of it back *in place*: the tensors the model
and the optimizer hold keep their identity, so references the user keeps (an
EMA of the weights, a second optimizer) stay valid. The copy lives in CPU memory
(one extra copy of model + optimizer state, no disk writes) unless ``spill_dir``
is given, in which case each tensor is written to a fresh temporary directory
there as soon as it is copied (so at most one tensor copy is in RAM at a time)
and read back one at a time on restore.

Example:
    >>> import torch
    >>> from lrkit.torch.state import snapshot
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> before = model.weight.detach().clone()
    >>> snap = snapshot(model, opt)
    >>> model(torch.ones(4, 2)).sum().backward(); opt.step()
    >>> snap.restore()
    >>> torch.equal(model.weight, before) and not opt.state
    True
"""

from __future__ import annotations

import contextlib
import copy
import random
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import _check

__all__ = ["Snapshot", "snapshot"]

_PLAIN = (bool, int, float, str, type(None))


class _SpillKey(str):
    """File name of a tensor written to the spill directory (not a user string)."""


@dataclass
class _Store:
    """Where tensor copies live: in RAM, or one file per tensor in a directory."""

    path: Path | None = None
    count: int = 0
    nbytes: int = 0

    def keep(self, value: torch.Tensor | None) -> Any:
        """A CPU copy of ``value`` (or the key of its file); ``None`` stays ``None``."""
        if value is None:
            return None
        cpu = value.detach().to("cpu", copy=True)
        self.nbytes += cpu.numel() * cpu.element_size()
        if self.path is None:
            return cpu
        self.count += 1
        key = _SpillKey(f"{self.count}.pt")
        torch.save(cpu, self.path / key)
        return key

    def fetch(self, value: Any) -> Any:
        if isinstance(value, _SpillKey):
            assert self.path is not None
            return torch.load(self.path / value, map_location="cpu", weights_only=True)
        return value


def _to_cpu(value: Any) -> Any:
    """Deep copy of ``value`` with every tensor copied to CPU (detached)."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return copy.deepcopy(value)


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


_RNG_TYPES = (
    torch.Generator,
    np.random.Generator,
    np.random.RandomState,
    random.Random,
)


def _loader_objects(loader: Any, datasets: bool = True) -> list[Any]:
    """A loader, its sampler, its batch sampler and that one's sampler, and its
    dataset with the datasets that one wraps (``Subset.dataset``,
    ``ConcatDataset.datasets``; an ``IterableDataset`` that shuffles with its
    own generator, a dataset that augments with its own RNG); none for an
    iterator (``iter(loader)``): its counters are its position in the data,
    which cannot be given back (the batches it yielded are consumed)."""
    if isinstance(loader, Iterator):
        return []
    batch_sampler = getattr(loader, "batch_sampler", None)
    found: list[Any] = []
    candidates = [
        loader,
        getattr(loader, "sampler", None),
        batch_sampler,
        getattr(batch_sampler, "sampler", None),
    ]
    todo = [(getattr(loader, "dataset", None), 0)] if datasets else []
    while todo:
        ds, depth = todo.pop(0)
        if ds is None or isinstance(ds, (str, bytes)) or depth > 3:
            continue
        candidates.append(ds)
        inner = getattr(ds, "datasets", None)
        todo.append((getattr(ds, "dataset", None), depth + 1))
        if isinstance(inner, (list, tuple)):
            todo += [(d, depth + 1) for d in inner]
    for obj in candidates:
        if obj is not None and all(obj is not f for f in found):
            found.append(obj)
    return found


def _loader_rngs(loader: Any) -> list[Any]:
    """The random generators a DataLoader-like object and its samplers hold,
    under any attribute name: ``torch.Generator``, NumPy ``Generator`` /
    ``RandomState`` and ``random.Random`` (a bucketing sampler's own RNG)."""
    found: list[Any] = []
    for obj in _loader_objects(loader):
        _find_rngs(getattr(obj, "generator", None), found, 0)
        # a dataset's own objects may hold one (an augmentation's RNG); the
        # loader's and samplers' are searched one level only: what they hold
        # deeper (accelerate's wrapped samplers, synchronised across processes)
        # is theirs to keep in step
        sampling = obj is loader or isinstance(obj, torch.utils.data.Sampler)
        depth = 1 if sampling else _RNG_DEPTH
        _find_rngs(obj, found, depth, skip=("_iterator",))
    return found


_RNG_DEPTH = 3  # attribute levels searched below a loader, sampler or dataset
_SMALL = 16  # lists, tuples and dicts searched only up to this many items


def _find_rngs(
    obj: Any, found: list[Any], depth: int, skip: tuple[str, ...] = ()
) -> None:
    """Add to ``found`` the random generators ``obj`` is or holds, down to
    ``depth`` levels of attributes (an augmentation's own RNG:
    ``dataset.transform.rng``; a ``Compose``'s list of transforms), short
    containers included; tensors, arrays and long containers are not searched.
    """
    if isinstance(obj, _RNG_TYPES):
        # (random.SystemRandom reads the OS's entropy: it has no state)
        if not isinstance(obj, random.SystemRandom) and all(
            obj is not f for f in found
        ):
            found.append(obj)
        return
    if obj is None or isinstance(obj, (str, bytes, torch.Tensor, np.ndarray)):
        return
    if isinstance(obj, (list, tuple, dict)):  # a container is no level of its own
        if len(obj) <= _SMALL:
            for child in obj.values() if isinstance(obj, dict) else obj:
                _find_rngs(child, found, depth)
    elif depth > 0 and hasattr(obj, "__dict__") and not isinstance(obj, type):
        for k, v in vars(obj).items():
            if k not in skip:
                _find_rngs(v, found, depth - 1)


def _module_rngs(model: nn.Module | None) -> list[Any]:
    """Random generators the model's modules hold as attributes (a noise
    layer's own ``torch.Generator``)."""
    found: list[Any] = []
    if model is not None:
        for m in model.modules():
            _find_rngs(m, found, 1)
    return found


def _rng_state(gen: Any) -> Any:
    """A copy of one generator's state (see :func:`_loader_rngs`)."""
    if isinstance(gen, torch.Generator):
        return gen.get_state()
    if isinstance(gen, np.random.Generator):
        return copy.deepcopy(gen.bit_generator.state)
    if isinstance(gen, np.random.RandomState):
        return gen.get_state()
    return gen.getstate()


def _set_rng_state(gen: Any, state: Any) -> None:
    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = copy.deepcopy(state)
    elif isinstance(gen, np.random.RandomState):
        gen.set_state(state)
    else:
        gen.setstate(state)


def _reseed_rng(gen: Any, mix: Callable[[int], int]) -> None:
    """Move one generator to a new stream: seeded with ``mix(draw)``, ``draw``
    a number it draws itself (reproducible from its state)."""
    if isinstance(gen, torch.Generator):
        gen.manual_seed(mix(int(torch.randint(2**62, (1,), generator=gen))))
    elif isinstance(gen, np.random.Generator):
        seed = mix(int(gen.integers(2**62)))
        gen.bit_generator.state = type(gen.bit_generator)(seed).state
    elif isinstance(gen, np.random.RandomState):
        gen.seed(mix(int(gen.randint(2**31))) % 2**32)
    else:  # random.Random
        gen.seed(mix(gen.getrandbits(62)))


def _loader_counters(loader: Any, datasets: bool = True) -> list[tuple[Any, str, int]]:
    """The integer attributes of a loader and its samplers (an epoch or
    iteration counter that seeds the next shuffle: accelerate's
    ``DataLoaderShard.iteration``, ``SeedableRandomSampler.epoch``), and with
    ``datasets`` of its datasets (a stream's position)."""
    return [
        (obj, name, value)
        for obj in _loader_objects(loader, datasets)
        if hasattr(obj, "__dict__")
        for name, value in vars(obj).items()
        if type(value) is int
    ]


@dataclass
class _Saved:
    """A tensor the user holds, and its copy: restored by copying into ``live``."""

    live: torch.Tensor
    data: Any  # CPU copy, or a spill key


def _restore_into(saved: _Saved, store: _Store) -> torch.Tensor:
    """Copy the saved values back into the live tensor; returns the live tensor."""
    with torch.no_grad():
        saved.live.copy_(store.fetch(saved.data))
    return saved.live


@dataclass
class _TensorSlot:
    owner: nn.Module | None  # None: an optimizer's tensor outside the model
    name: str
    kind: str  # "_parameters" or "_buffers" ("" without an owner)
    tensor: torch.Tensor
    requires_grad: bool
    data: Any  # CPU copy, or a spill key
    grad: Any  # CPU copy, None, or a spill key


@dataclass
class _OptCopy:
    """One optimizer's copied state, param groups and plain attributes."""

    optimizer: torch.optim.Optimizer
    state: list[tuple[Any, dict[str, Any]]] | None  # None: another's, copied once
    groups: list[dict[str, Any]] | None
    attrs: dict[str, Any]


def _with_inner(optimizer: torch.optim.Optimizer | None) -> list[torch.optim.Optimizer]:
    """The optimizer and those it wraps (two levels deep): a wrapper's state
    can live in an inner optimizer (``ZeroRedundancyOptimizer.optim``, a
    Lookahead's base optimizer, accelerate's ``AcceleratedOptimizer``)."""
    found: list[torch.optim.Optimizer] = []
    todo = [] if optimizer is None else [(optimizer, 0)]
    while todo:
        opt, depth = todo.pop(0)
        if any(opt is f for f in found):
            continue
        found.append(opt)
        if depth < 2:
            todo += [
                (v, depth + 1)
                for v in vars(opt).values()
                if isinstance(v, torch.optim.Optimizer)
            ]
    return found


@dataclass(eq=False)
class Snapshot:
    """A restorable copy of model, optimizer, extra objects, RNG and loader state.

    Build it with :func:`snapshot`; call :meth:`restore` (any number of times)
    to put everything back in place, and :meth:`discard` (or use it as a
    context manager) to free the copy and any spill files.

    Attributes:
        nbytes: bytes held by the tensor copies (in RAM, or on disk if spilled).
        spill_path: the temporary directory holding the copy, or ``None``.
    """

    _slots: list[_TensorSlot]
    _flags: list[tuple[nn.Module, bool]]
    _optimizers: list[_OptCopy]
    _objects: dict[str, tuple[Any, Any]]
    _rng: dict[str, Any] | None
    _loader_gens: list[tuple[Any, Any]]
    _store: _Store
    _loader_ints: list[tuple[Any, str, int]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return self._store.nbytes

    @property
    def spill_path(self) -> Path | None:
        return self._store.path

    # ------------------------------------------------------------------ restore
    def restore(self) -> None:
        """Write the snapshot back in place (bit-exact). Idempotent."""
        with torch.no_grad():
            for slot in self._slots:
                self._restore_slot(slot)
        for module, flag in self._flags:
            module.training = flag
        for copied in self._optimizers:
            self._restore_optimizer(copied)
        for obj, state in self._objects.values():
            obj.load_state_dict(copy.deepcopy(state))
        for gen, gstate in self._loader_gens:
            _set_rng_state(gen, gstate)
        for obj, name, value in self._loader_ints:
            if getattr(obj, name, None) != value:
                with contextlib.suppress(AttributeError, ValueError, TypeError):
                    setattr(obj, name, value)
        if self._rng is not None:
            _set_rng(self._rng)

    def _restore_slot(self, slot: _TensorSlot) -> None:
        t = slot.tensor
        if slot.owner is not None:  # (None: an optimizer's tensor outside the model)
            table = getattr(slot.owner, slot.kind)
            if table.get(slot.name) is not t:  # replaced or removed by the test
                table[slot.name] = t
        t.copy_(self._store.fetch(slot.data))
        if t.is_leaf:
            t.requires_grad_(slot.requires_grad)
        if slot.grad is _UNSAVED:
            return  # the gradients were not saved: left as they are
        grad = self._store.fetch(slot.grad)
        if grad is None:
            t.grad = None
        elif t.grad is not None and t.grad.shape == grad.shape:
            t.grad.copy_(grad)
        else:
            t.grad = grad.to(device=t.device, copy=True)

    def _restore_optimizer(self, copied: _OptCopy) -> None:
        opt = copied.optimizer
        if copied.state is not None:
            opt.state.clear()
            for key, per_param in copied.state:
                opt.state[key] = {
                    name: _restore_into(value, self._store)
                    if isinstance(value, _Saved)
                    else copy.deepcopy(value)
                    for name, value in per_param.items()
                }
        groups = [] if copied.groups is None else opt.param_groups
        for group, saved in zip(groups, copied.groups or [], strict=True):
            for k in [k for k in group if k != "params" and k not in saved]:
                del group[k]
            for k, v in saved.items():
                group[k] = (
                    _restore_into(v, self._store)
                    if isinstance(v, _Saved)
                    else copy.deepcopy(v)
                )
        for k in [
            k
            for k, v in vars(opt).items()
            if isinstance(v, _PLAIN) and k not in copied.attrs
        ]:
            delattr(opt, k)
        for k, v in copied.attrs.items():
            setattr(opt, k, v)

    # ------------------------------------------------------------------ lifetime
    def discard(self) -> None:
        """Free the copy (and delete spill files). The snapshot is unusable after."""
        self._slots.clear()
        for copied in self._optimizers:
            if copied.state is not None:
                copied.state.clear()
        self._objects.clear()
        if self._store.path is not None:
            shutil.rmtree(self._store.path, ignore_errors=True)
            self._store.path = None

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


def _get_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def _check_stateful(name: str, obj: Any) -> None:
    """``obj`` must have ``state_dict()`` and ``load_state_dict()``."""
    if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
        _check.fail(
            name,
            "an object with state_dict() and load_state_dict()",
            obj,
            exc=TypeError,
        )


#: A tensor slot's gradient that was not saved (``snapshot(grads=False)``).
_UNSAVED: Any = object()


def snapshot(
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    objects: Mapping[str, Any] | None = None,
    loaders: Iterable[Any] = (),
    rng: bool = True,
    spill_dir: str | Path | None = None,
    data_positions: bool = True,
    grads: bool = True,
) -> Snapshot:
    """Take a bit-exact snapshot of training state (see the module docstring).

    Args:
        model: the model whose parameters, buffers, grads and train/eval flags
            are copied.
        optimizer: the optimizer whose state, param groups and attributes are
            copied.
        objects: other stateful objects by name, each with ``state_dict()`` and
            ``load_state_dict()`` (an LR scheduler, a ``GradScaler``, an EMA).
        loaders: data loaders whose random generators (shuffle order: the
            loader's and its samplers' ``torch.Generator``, NumPy or
            ``random.Random`` generators) and integer counters are copied.
        rng: also copy the global Python, NumPy and torch RNG states.
        spill_dir: if given, write the tensor copies to a new temporary
            directory inside it instead of holding them in RAM (for models too
            large to copy in memory).
        data_positions: also copy the integer attributes of the loaders'
            datasets (a resumable stream's position). The Guard leaves them
            out: after a recovery the stream goes on with fresh data instead
            of replaying the batches that went wrong.
        grads: also copy the gradients (:meth:`Snapshot.restore` then puts
            them back). False: a restore leaves the gradients as they are;
            the Guard, which clears them after a restore, saves the copy (a
            third of a snapshot with Adam, half with SGD momentum).

    Returns:
        The :class:`Snapshot`.

    Raises:
        TypeError: if ``model`` is not an ``nn.Module``, ``optimizer`` not a
            ``torch.optim.Optimizer`` or an object lacks ``state_dict``.
    """
    if model is not None and not isinstance(model, nn.Module):
        _check.fail("model", "a torch.nn.Module", model, exc=TypeError)
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        _check.fail("optimizer", "a torch.optim.Optimizer", optimizer, exc=TypeError)
    objects = dict(objects or {})
    for name, obj in objects.items():
        _check_stateful(f"objects[{name!r}]", obj)
    store = _Store()
    if spill_dir is not None:
        store.path = Path(tempfile.mkdtemp(prefix="lrkit-snapshot-", dir=spill_dir))
    try:
        return _take(
            model, optimizer, objects, loaders, rng, store, data_positions, grads
        )
    except BaseException:
        if store.path is not None:
            shutil.rmtree(store.path, ignore_errors=True)
        raise


def _take(
    model: nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    objects: Mapping[str, Any],
    loaders: Iterable[Any],
    rng: bool,
    store: _Store,
    data_positions: bool = True,
    grads: bool = True,
) -> Snapshot:
    def grad_of(t: torch.Tensor) -> Any:
        return store.keep(t.grad) if grads else _UNSAVED

    slots: list[_TensorSlot] = []
    flags: list[tuple[nn.Module, bool]] = []
    seen: set[int] = set()
    if model is not None:
        for module in model.modules():
            flags.append((module, module.training))
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(module, kind).items():
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    slots.append(
                        _TensorSlot(
                            owner=module,
                            name=name,
                            kind=kind,
                            tensor=t,
                            requires_grad=t.requires_grad,
                            data=store.keep(t),
                            grad=grad_of(t),
                        )
                    )
    optimizers = _with_inner(optimizer)
    for opt in optimizers:
        # tensors the optimizer trains outside the model (a learnable loss
        # temperature, multi-task loss weights, a second network): their values
        # and grads too
        for group in opt.param_groups:
            for t in group["params"]:
                if isinstance(t, torch.Tensor) and id(t) not in seen:
                    seen.add(id(t))
                    slots.append(
                        _TensorSlot(
                            owner=None,
                            name="",
                            kind="",
                            tensor=t,
                            requires_grad=t.requires_grad,
                            data=store.keep(t),
                            grad=grad_of(t),
                        )
                    )
    copies: list[_OptCopy] = []
    copied: set[int] = set()  # the state dicts and group lists already copied
    for opt in optimizers:
        opt_state: list[tuple[Any, dict[str, Any]]] = []
        opt_groups: list[dict[str, Any]] = []
        # a wrapper whose state and groups are its inner optimizer's (accelerate's
        # properties): copied once
        state_seen = id(opt.state) in copied
        groups_seen = id(opt.param_groups) in copied
        copied.update((id(opt.state), id(opt.param_groups)))
        for param_key, per_param in ({} if state_seen else opt.state).items():
            opt_state.append(
                (
                    param_key,
                    {
                        name: _Saved(value, store.keep(value))
                        if isinstance(value, torch.Tensor)
                        else copy.deepcopy(value)
                        for name, value in per_param.items()
                    },
                )
            )
        for group in [] if groups_seen else opt.param_groups:
            opt_groups.append(
                {
                    k: _Saved(v, store.keep(v))
                    if isinstance(v, torch.Tensor)
                    else copy.deepcopy(v)
                    for k, v in group.items()
                    if k != "params"
                }
            )
        opt_attrs = {k: v for k, v in vars(opt).items() if isinstance(v, _PLAIN)}
        copies.append(
            _OptCopy(
                opt,
                None if state_seen else opt_state,
                None if groups_seen else opt_groups,
                opt_attrs,
            )
        )
    saved_objects = {
        name: (obj, _to_cpu(obj.state_dict())) for name, obj in objects.items()
    }
    store.nbytes += sum(_nbytes(state) for _, state in saved_objects.values())
    loaders = list(loaders)
    held: list[Any] = []
    for g in [*_module_rngs(model), *(g for ld in loaders for g in _loader_rngs(ld))]:
        if all(g is not h for h in held):
            held.append(g)
    gens = [(g, _rng_state(g)) for g in held]
    counters = [
        c for loader in loaders for c in _loader_counters(loader, data_positions)
    ]
    return Snapshot(
        _slots=slots,
        _flags=flags,
        _optimizers=copies,
        _objects=saved_objects,
        _rng=_get_rng() if rng else None,
        _loader_gens=gens,
        _store=store,
        _loader_ints=counters,
    )
