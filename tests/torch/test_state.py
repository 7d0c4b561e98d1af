"""Bit-exact snapshot and restore of training state on real tiny torch models."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lrkit.torch.state import snapshot


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(6, 16),
            nn.BatchNorm1d(16),
            nn.ReLU(),
            nn.Dropout(0.2),
            nn.Linear(16, 3),
        )
        self.register_buffer("scratch", torch.zeros(3), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        self.scratch += out.detach().mean(0)  # a non-persistent buffer that changes
        return out


def full_state(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {
        "tensors": {n: t.detach().clone() for n, t in model.named_parameters()}
        | {n: t.detach().clone() for n, t in model.named_buffers()},
        "grads": {
            n: None if p.grad is None else p.grad.clone()
            for n, p in model.named_parameters()
        },
        "training": [m.training for m in model.modules()],
        "opt": repr(opt.state_dict()),
        "opt_tensors": [
            (k, v.clone())
            for s in opt.state.values()
            for k, v in s.items()
            if torch.is_tensor(v)
        ],
        "groups": [
            {k: v for k, v in g.items() if k != "params"} for g in opt.param_groups
        ],
    }


def assert_same(a: dict, b: dict) -> None:
    assert a["tensors"].keys() == b["tensors"].keys()
    for k in a["tensors"]:
        assert torch.equal(a["tensors"][k], b["tensors"][k]), k
    for k in a["grads"]:
        ga, gb = a["grads"][k], b["grads"][k]
        assert (ga is None) == (gb is None), k
        if ga is not None:
            assert torch.equal(ga, gb), k
    assert a["training"] == b["training"]
    assert a["opt"] == b["opt"]
    assert len(a["opt_tensors"]) == len(b["opt_tensors"])
    for (ka, va), (kb, vb) in zip(a["opt_tensors"], b["opt_tensors"], strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a["groups"] == b["groups"]


def train_a_bit(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 5) -> None:
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 6)
        loss = model(x).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize(
    "make_opt",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1),
        lambda p: torch.optim.RMSprop(p, lr=1e-3),
    ],
)
def test_restore_is_bit_exact_after_training(make_opt) -> None:
    torch.manual_seed(0)
    model = Net()
    opt = make_opt(model.parameters())
    train_a_bit(model, opt)  # non-empty optimizer state, BN statistics, grads
    model.body[1].eval()  # a mixed train/eval flag pattern
    before = full_state(model, opt)
    weight_obj = model.body[0].weight
    snap = snapshot(model, opt)
    train_a_bit(model, opt)
    opt.param_groups[0]["lr"] = 123.0
    opt.param_groups[0]["extra_key"] = 1
    model.eval()
    snap.restore()
    assert_same(before, full_state(model, opt))
    assert model.body[0].weight is weight_obj  # identity kept: references stay valid


def test_restore_empty_optimizer_state_and_none_grads() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    snap = snapshot(model, opt)
    train_a_bit(model, opt)
    assert opt.state
    snap.restore()
    assert not opt.state
    assert all(p.grad is None for p in model.parameters())


def test_rng_and_loader_generator_restored() -> None:
    gen = torch.Generator().manual_seed(7)
    loader = DataLoader(
        TensorDataset(torch.arange(20.0)), batch_size=4, shuffle=True, generator=gen
    )
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    snap = snapshot(loaders=[loader])
    expected = (
        random.random(),
        np.random.rand(),
        torch.rand(1),
        [b[0].tolist() for b in loader],
    )
    snap.restore()
    got = (
        random.random(),
        np.random.rand(),
        torch.rand(1),
        [b[0].tolist() for b in loader],
    )
    assert expected[0] == got[0] and expected[1] == got[1]
    assert torch.equal(expected[2], got[2]) and expected[3] == got[3]


def test_objects_with_state_dict() -> None:
    model = nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    snap = snapshot(model, opt, objects={"scheduler": sched})
    for _ in range(5):
        opt.step()
        sched.step()
    snap.restore()
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == 1.0


def test_spill_to_disk_roundtrip(tmp_path) -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_a_bit(model, opt)
    before = full_state(model, opt)
    snap = snapshot(model, opt, spill_dir=tmp_path)
    assert snap.spill_path is not None and any(snap.spill_path.iterdir())
    train_a_bit(model, opt)
    snap.restore()
    assert_same(before, full_state(model, opt))
    snap.discard()
    assert not any(tmp_path.iterdir())


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        snapshot(model=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        snapshot(optimizer="sgd")  # type: ignore[arg-type]
    with pytest.raises(
        TypeError, match=r"objects\['x'\] must be an object with state_dict"
    ):
        snapshot(objects={"x": 1})


def test_optimizer_state_and_tensor_lrs_keep_identity_and_values() -> None:
    torch.manual_seed(0)
    model = Net()
    lr = torch.tensor(0.01)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    train_a_bit(model, opt)
    state_objs = {k: dict(v) for k, v in opt.state.items()}
    before = full_state(model, opt)
    snap = snapshot(model, opt)
    opt.param_groups[0]["lr"].fill_(5.0)  # what a range test does to a tensor LR
    train_a_bit(model, opt)
    snap.restore()
    assert opt.param_groups[0]["lr"] is lr  # the user's own tensor...
    assert float(lr) == float(torch.tensor(0.01))  # ...holds the value again
    for key, per_param in opt.state.items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                assert value is state_objs[key][name]  # moments keep their identity
    assert_same(before, full_state(model, opt))


def test_spill_writes_one_file_per_tensor(tmp_path) -> None:
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    train_a_bit(model, opt)
    n_tensors = len(list(model.parameters())) + len(list(model.buffers()))
    snap = snapshot(model, opt, spill_dir=tmp_path)
    files = list(snap.spill_path.iterdir())
    assert len(files) >= n_tensors  # written as they are copied, not in one blob
    assert snap.nbytes > 0
    snap.discard()
    assert not any(tmp_path.iterdir())


def test_failed_snapshot_leaves_no_spill_directory(tmp_path) -> None:
    class Broken:
        def state_dict(self) -> dict:
            raise RuntimeError("cannot save")

        def load_state_dict(self, state: dict) -> None:
            pass

    with pytest.raises(RuntimeError, match="cannot save"):
        snapshot(nn.Linear(2, 2), objects={"x": Broken()}, spill_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_loader_random_generators_under_any_name_are_restored() -> None:
    class Holder:
        def __init__(self) -> None:
            self.np_gen = np.random.default_rng(1)
            self.np_state = np.random.RandomState(1)
            self.py_rng = random.Random(1)
            self.torch_gen = torch.Generator().manual_seed(1)
            self.entropy = random.SystemRandom()  # no state: left alone

    loader = Holder()

    def draws() -> tuple:
        return (
            float(loader.np_gen.random()),
            float(loader.np_state.rand()),
            loader.py_rng.random(),
            float(torch.rand(1, generator=loader.torch_gen)),
        )

    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snap = snapshot(model, opt, loaders=[loader])
    first = draws()
    assert draws() != first
    snap.restore()
    assert draws() == first


class Lookahead(torch.optim.Optimizer):
    """A wrapper as timm's ``Lookahead``: the param groups are the base
    optimizer's, the per-parameter moments live in the base optimizer's state,
    the wrapper's own state holds the slow weights."""

    def __init__(self, base: torch.optim.Optimizer, k: int = 3) -> None:
        self.base = base
        self.param_groups = base.param_groups
        self.defaults = dict(base.defaults)
        self.state = {}  # type: ignore[assignment]
        self._optimizer_step_pre_hooks = {}  # type: ignore[assignment]
        self._optimizer_step_post_hooks = {}  # type: ignore[assignment]
        self.k, self.steps = k, 0

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[no-untyped-def, override]
        self.base.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for g in self.param_groups:
                for p in g["params"]:
                    slow = self.state.setdefault(p, {"slow": p.detach().clone()})
                    slow["slow"].add_(p - slow["slow"], alpha=0.5)
                    p.copy_(slow["slow"])


def test_a_wrapped_optimizers_inner_state_is_restored() -> None:
    """The Adam moments of a Lookahead-style wrapper live in the optimizer it
    wraps (so do ZeroRedundancyOptimizer's and accelerate's): restored too."""
    torch.manual_seed(0)
    model = Net()
    opt = Lookahead(torch.optim.Adam(model.parameters(), lr=1e-3))
    train_a_bit(model, opt)
    before = full_state(model, opt.base)
    slow = [v["slow"].clone() for v in opt.state.values()]
    snap = snapshot(model, opt)
    train_a_bit(model, opt, steps=7)
    snap.restore()
    assert_same(before, full_state(model, opt.base))
    after = [v["slow"] for v in opt.state.values()]
    assert len(after) == len(slow) and all(map(torch.equal, after, slow))
    assert opt.steps == 5


def test_generators_the_dataset_holds_are_restored() -> None:
    """A dataset that augments with its own NumPy generator, wrapped in a
    Subset, and an IterableDataset that shuffles with its own torch.Generator."""

    class Augmented(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.rng = np.random.default_rng(0)

        def __len__(self) -> int:
            return 32

        def __getitem__(self, i: int) -> torch.Tensor:
            return torch.tensor([i + float(self.rng.normal())])

    class Stream(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        def __init__(self) -> None:
            self.g = torch.Generator().manual_seed(7)

        def __iter__(self):  # type: ignore[no-untyped-def]
            yield from torch.randperm(32, generator=self.g).split(8)

    both = torch.utils.data.ConcatDataset([Augmented(), Augmented()])
    loaders = [
        DataLoader(torch.utils.data.Subset(Augmented(), range(24)), batch_size=8),
        DataLoader(Stream(), batch_size=None),
        DataLoader(both, batch_size=8),
    ]
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for loader in loaders:
        snap = snapshot(model, opt, loaders=[loader])
        first = [b.sum().item() for b in loader]
        assert [b.sum().item() for b in loader] != first
        snap.restore()
        assert [b.sum().item() for b in loader] == first


def test_generators_held_one_or_two_levels_down_are_restored() -> None:
    """An augmentation object with its own RNG (``dataset.transform.rng``), a
    list of them (a ``Compose``), and a layer that draws noise from its own
    ``torch.Generator``; a long list in the dataset is not searched (cost)."""

    class Jitter:
        def __init__(self, seed: int) -> None:
            self.rng = np.random.default_rng(seed)

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x + float(self.rng.normal())

    class Compose:
        def __init__(self, transforms: list[Jitter]) -> None:
            self.transforms = transforms

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            for t in self.transforms:
                x = t(x)
            return x

    class Data(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __init__(self, transform: object) -> None:
            self.transform = transform
            self.rows = [random.Random(i) for i in range(100)]  # not searched

        def __len__(self) -> int:
            return 16

        def __getitem__(self, i: int) -> torch.Tensor:
            return self.transform(torch.tensor([float(i)]))  # type: ignore[operator]

    class Noisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(1, 1)
            self.gen = torch.Generator().manual_seed(3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x + torch.randn(x.shape, generator=self.gen))

    for transform in (Jitter(0), Compose([Jitter(1), Jitter(2)])):
        loader = DataLoader(Data(transform), batch_size=8)
        model = Noisy()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        snap = snapshot(model, opt, loaders=[loader])
        first = [model(b).sum().item() for b in loader]
        assert [model(b).sum().item() for b in loader] != first
        snap.restore()
        assert [model(b).sum().item() for b in loader] == first


def test_a_wrapper_sharing_its_inner_optimizers_state_is_copied_once() -> None:
    """accelerate's ``AcceleratedOptimizer`` exposes the inner optimizer's
    ``state`` and ``param_groups`` as its own: one copy, and both restored."""

    class Shared(torch.optim.Optimizer):
        def __init__(self, inner: torch.optim.Optimizer) -> None:
            self.optimizer = inner
            self.defaults = inner.defaults
            self._optimizer_step_pre_hooks = {}  # type: ignore[assignment]
            self._optimizer_step_post_hooks = {}  # type: ignore[assignment]

        @property
        def state(self):  # type: ignore[no-untyped-def, override]
            return self.optimizer.state

        @property
        def param_groups(self):  # type: ignore[no-untyped-def, override]
            return self.optimizer.param_groups

        def step(self, closure=None):  # type: ignore[no-untyped-def, override]
            return self.optimizer.step(closure)

    torch.manual_seed(0)
    model = Net()
    plain = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_a_bit(model, plain)
    alone = snapshot(model, plain).nbytes
    opt = Shared(plain)
    before = full_state(model, plain)
    snap = snapshot(model, opt)
    assert snap.nbytes == alone
    train_a_bit(model, opt)
    snap.restore()
    assert_same(before, full_state(model, plain))
