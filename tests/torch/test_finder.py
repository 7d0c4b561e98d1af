"""lrkit.find_lr on real tiny torch models: restoration, batch formats, AMP, groups."""

from __future__ import annotations

import collections
import copy
import itertools
import math
import random
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tests.helpers import OwnRngSampler
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook
from torch.utils.data import DataLoader, IterableDataset, TensorDataset

import lrkit


def make_data(n: int = 256, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return x, y


def loader(batch_size: int = 16, shuffle: bool = True, n: int = 256) -> DataLoader:
    x, y = make_data(n)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle)


class BNDropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(8, 32),
            nn.BatchNorm1d(32),
            nn.ReLU(),
            nn.Dropout(0.3),
            nn.Linear(32, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def state_of(model: nn.Module, opt: torch.optim.Optimizer) -> dict:
    return {
        "params": [t.detach().clone() for t in model.state_dict().values()],
        "grads": [
            None if p.grad is None else p.grad.clone() for p in model.parameters()
        ],
        "training": [m.training for m in model.modules()],
        "opt": _flat(copy.deepcopy(opt.state_dict())),
    }


def _flat(obj: object, path: str = "") -> dict[str, object]:
    """Every leaf of a nested state dict by its path (tensors kept whole)."""
    if isinstance(obj, dict):
        out: dict[str, object] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{path}/{k}"))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f"{path}[{i}]"))
        return out
    return {path: obj}


def assert_state_equal(a: dict, b: dict) -> None:
    assert len(a["params"]) == len(b["params"])
    for x, y in zip(a["params"], b["params"], strict=True):
        assert torch.equal(x, y)
    for x, y in zip(a["grads"], b["grads"], strict=True):
        assert (x is None) == (y is None)
        if x is not None:
            assert torch.equal(x, y)
    assert a["training"] == b["training"]
    assert a["opt"].keys() == b["opt"].keys()
    for key, x in a["opt"].items():  # bit-exact: moments, momenta, step counts
        y = b["opt"][key]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype, key
            assert torch.equal(x, y), key
        else:
            assert x == y, key


def rng_probe() -> tuple:
    return (random.random(), float(np.random.rand()), torch.rand(3).tolist())


def seeded() -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)


@pytest.fixture
def setup() -> tuple[nn.Module, torch.optim.Optimizer, DataLoader]:
    torch.manual_seed(0)
    model = BNDropNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dl = loader()
    # one real step so the optimizer has state and the params have grads
    x, y = next(iter(dl))
    F.cross_entropy(model(x), y).backward()
    opt.step()
    model.eval()  # a flag find_lr must give back
    return model, opt, dl


def test_state_identical_after_find_lr(setup) -> None:
    model, opt, dl = setup
    before = state_of(model, opt)
    seeded()
    expected_rng = rng_probe()
    seeded()
    result = lrkit.find_lr(
        model, opt, F.cross_entropy, dl, val_loader=loader(64, False)
    )
    got_rng = rng_probe()
    assert_state_equal(before, state_of(model, opt))
    assert got_rng == expected_rng
    assert result.suggestion is not None and result.suggestion > 0
    assert result.steps_done >= 10 and len(result.val_losses) >= 1


@pytest.mark.parametrize(
    ("make_opt", "kwargs"),
    [
        (lambda p: torch.optim.Adam(p, lr=1e-3), {}),
        (lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5), {}),
        (lambda p: torch.optim.AdamW(p, lr=1e-3), {"mode": "linear", "end_lr": 0.1}),
        (lambda p: torch.optim.Adam(p, lr=1e-3), {"spill": True}),
    ],
    ids=["adam", "rmsprop", "adamw-linear", "adam-spill"],
)
def test_state_identical_with_other_optimizers_and_options(
    make_opt, kwargs, tmp_path
) -> None:
    torch.manual_seed(0)
    model = BNDropNet()
    opt = make_opt(model.parameters())
    dl = loader()
    for x, y in list(dl)[:2]:  # moments and step counts to restore
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    if kwargs.pop("spill", False):
        kwargs["spill_dir"] = tmp_path
    before = state_of(model, opt)
    r = lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=40, **kwargs)
    assert_state_equal(before, state_of(model, opt))
    assert r.steps_done >= 10
    assert list(tmp_path.iterdir()) == []  # a spill leaves nothing behind


class Boom(Exception):
    pass


@pytest.mark.parametrize("exc", [Boom, KeyboardInterrupt])
def test_state_restored_when_interrupted(setup, exc) -> None:
    model, opt, dl = setup
    before = state_of(model, opt)
    calls = [0]

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        if calls[0] == 20:
            raise exc()
        return F.cross_entropy(out, y)

    seeded()
    expected_rng = rng_probe()
    seeded()
    with pytest.raises(exc):
        lrkit.find_lr(model, opt, loss_fn, dl)
    assert rng_probe() == expected_rng
    assert_state_equal(before, state_of(model, opt))
    assert calls[0] == 20


def test_finds_a_sane_lr_on_a_quadratic_problem() -> None:
    # linear regression with SGD: GD is unstable above lr = 2 / lambda_max(X^T X / n)
    torch.manual_seed(0)
    x = torch.randn(512, 4) * torch.tensor([1.0, 1.0, 1.0, 3.0])
    y = x @ torch.tensor([1.0, -1.0, 2.0, 0.5]) + 0.1 * torch.randn(512)
    dl = DataLoader(TensorDataset(x, y[:, None]), batch_size=512)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    edge = 2.0 / float(torch.linalg.eigvalsh(2 * x.T @ x / 512).max())
    r = lrkit.find_lr(
        model, opt, F.mse_loss, dl, start_lr=1e-5, end_lr=10.0, num_steps=100
    )
    assert r.stop_reason in ("diverged", "nan")
    assert edge / 30 < r.suggestion < edge  # below the stability edge, not absurdly so
    assert r.lrs[-1] > edge / 2


def test_accumulation_takes_k_batches_per_step() -> None:
    seen = [0]

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen[0] += 1
            return self.lin(x)

    model = Counting()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    r = lrkit.find_lr(
        model,
        opt,
        F.cross_entropy,
        loader(),
        accumulation_steps=3,
        num_steps=20,
        end_lr=1e-2,
    )
    assert len(r.lrs) == r.steps_done == 20
    assert seen[0] == 3 * 20
    assert r.settings.extra["accumulation_steps"] == 3
    assert r.settings.steps_per_epoch == math.ceil(len(loader()) / 3)  # 16 -> 6


def test_passes_over_the_data_reach_the_confidence() -> None:
    """A loader of 2 batches: the test goes through it dozens of times, and the
    suggestion says that its curve measures memorisation."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    r = lrkit.find_lr(model, opt, F.cross_entropy, loader(batch_size=16, n=32))
    assert r.settings.steps_per_epoch == 2
    info = r.suggestion_info
    assert info is not None and info.lr is not None
    assert info.evidence["epochs"] == pytest.approx(r.steps_done / 2)
    assert any("times through the training data" in x for x in r.reasons)
    assert r.confidence < 0.5

    # a loader without len: nothing is known, nothing is claimed
    class Stream(IterableDataset):
        def __iter__(self):
            x, y = make_data(32)
            yield x[:16], y[:16]
            yield x[16:], y[16:]

    stream = DataLoader(Stream(), batch_size=None)
    r2 = lrkit.find_lr(model, opt, F.cross_entropy, stream, num_steps=30)
    assert r2.settings.steps_per_epoch is None
    assert r2.suggestion_info is None or "epochs" not in r2.suggestion_info.evidence


def test_passes_margin_needs_a_model_that_can_memorise() -> None:
    """Many passes widen the margin for a model with more parameters than
    examples (it can memorise them), not for a linear model with fewer."""
    data = loader(batch_size=16, n=64)  # 4 steps per epoch: ~50 passes
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    r = lrkit.find_lr(
        mlp, torch.optim.Adam(mlp.parameters(), lr=1e-3), F.cross_entropy, data
    )
    n_params = sum(p.numel() for p in mlp.parameters())
    assert r.settings.params_per_example == pytest.approx(n_params / 64)
    info = r.suggestion_info
    assert info is not None and info.evidence["epochs"] > 30
    assert info.evidence["params_per_example"] == pytest.approx(n_params / 64)
    assert info.evidence["passes_margin"] == 3.0  # capped at one safety factor
    again = lrkit.RangeTestResult.from_dict(r.to_dict())
    assert again.settings.params_per_example == r.settings.params_per_example

    torch.manual_seed(0)
    linear = nn.Linear(8, 3)  # 27 parameters, 64 examples
    frozen = nn.Linear(8, 3).requires_grad_(False)  # not trained: not counted
    opt = torch.optim.SGD([*linear.parameters(), *frozen.parameters()], lr=0.01)
    r2 = lrkit.find_lr(nn.Sequential(linear), opt, F.cross_entropy, data)
    assert r2.settings.params_per_example == pytest.approx(27 / 64)
    info2 = r2.suggestion_info
    assert info2 is not None and info2.evidence["epochs"] > 10
    assert info2.evidence["passes_margin"] == 1.0
    assert any("fewer parameters than training examples" in x for x in r2.reasons)


def test_examples_per_epoch_follow_the_sampler() -> None:
    """A subset sampler counts its subset; a loader of ready-made batches
    (``batch_size=None``) does not know its examples; an old record without
    the field loads with None."""
    x, y = make_data(6400)
    ds = TensorDataset(x, y)
    subset = DataLoader(
        ds, batch_size=16, sampler=torch.utils.data.SubsetRandomSampler(range(64))
    )
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    opt = torch.optim.Adam(mlp.parameters(), lr=1e-3)
    n_params = sum(p.numel() for p in mlp.parameters())
    r = lrkit.find_lr(mlp, opt, F.cross_entropy, subset, num_steps=40)
    assert r.settings.params_per_example == pytest.approx(n_params / 64)

    batches = TensorDataset(x[:256].reshape(16, 16, 8), y[:256].reshape(16, 16))
    whole = DataLoader(batches, batch_size=None)
    r2 = lrkit.find_lr(mlp, opt, F.cross_entropy, whole, num_steps=40)
    assert r2.settings.steps_per_epoch == 16
    assert r2.settings.params_per_example is None

    record = r.to_dict()
    del record["settings"]["params_per_example"]
    assert lrkit.RangeTestResult.from_dict(record).settings.params_per_example is None


def test_param_group_ratios_kept() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(
        [
            {"params": model[0].parameters(), "lr": 0.1},
            {"params": model[2].parameters(), "lr": 0.01},
        ],
        lr=0.1,
    )
    ratios = []
    orig_step = opt.step

    def spy(*a, **k):
        ratios.append(opt.param_groups[1]["lr"] / opt.param_groups[0]["lr"])
        return orig_step(*a, **k)

    opt.step = spy  # type: ignore[method-assign]
    r = lrkit.find_lr(
        model, opt, F.cross_entropy, loader(), num_steps=30, reference_group=0
    )
    del opt.step
    assert ratios and all(abs(q - 0.1) < 1e-12 for q in ratios)
    assert r.group_factors == pytest.approx((1.0, 0.1))
    assert r.group_suggestions[1] == pytest.approx(r.suggestion * 0.1)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]


def test_loader_without_len_and_shorter_than_test() -> None:
    class Stream(IterableDataset):
        def __iter__(self):
            x, y = make_data(48)
            for i in range(0, 48, 16):
                yield x[i : i + 16], y[i : i + 16]

    dl = DataLoader(Stream(), batch_size=None)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=40, end_lr=1.0)
    assert r.steps_done == len(r.lrs)
    assert len(r.lrs) > 3  # ran through many restarts of a 3-batch loader


class DictModel(nn.Module):
    """Hugging Face style: keyword inputs, an output object with .loss and .logits."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None):
        logits = self.lin(features)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SimpleNamespace(loss=loss, logits=logits)


def dict_loader() -> list[dict[str, torch.Tensor]]:
    x, y = make_data(128)
    return [
        {"features": x[i : i + 16], "labels": y[i : i + 16]} for i in range(0, 128, 16)
    ]


def test_dict_batches_and_output_loss() -> None:
    model = DictModel()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    r = lrkit.find_lr(model, opt, None, dict_loader(), num_steps=30)
    assert all(math.isfinite(v) for v in r.losses[:10])
    # with a criterion the logits are used against batch["labels"]
    r2 = lrkit.find_lr(model, opt, F.cross_entropy, dict_loader(), num_steps=30)
    assert r2.losses[0] == pytest.approx(r.losses[0])


def test_real_hugging_face_model() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=16
    )
    model = transformers.GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ids = torch.randint(0, 50, (64, 16), generator=torch.Generator().manual_seed(0))
    batches = [
        {"input_ids": ids[i : i + 8], "labels": ids[i : i + 8]} for i in range(0, 64, 8)
    ]
    before = [t.clone() for t in model.state_dict().values()]
    r = lrkit.find_lr(model, opt, None, batches, num_steps=25, end_lr=1.0)
    assert math.isfinite(r.losses[0]) and r.losses[0] > 3.0  # ~ln(50) at init
    assert all(
        torch.equal(a, b)
        for a, b in zip(before, model.state_dict().values(), strict=True)
    )


def test_compute_loss_hook_and_unpack_hook() -> None:
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_data(64)
    triples = [(x[i : i + 16], y[i : i + 16], "meta") for i in range(0, 64, 16)]
    r1 = lrkit.find_lr(
        model,
        opt,
        compute_loss=lambda m, b: F.cross_entropy(m(b[0]), b[1]),
        train_loader=triples,
        num_steps=20,
    )
    r2 = lrkit.find_lr(
        model,
        opt,
        F.cross_entropy,
        triples,
        unpack=lambda b: (b[0], b[1]),
        num_steps=20,
    )
    assert r1.losses[0] == pytest.approx(r2.losses[0])


def test_bf16_autocast_on_cpu() -> None:
    torch.manual_seed(0)
    model = BNDropNet()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = [t.clone() for t in model.state_dict().values()]
    r = lrkit.find_lr(model, opt, F.cross_entropy, loader(), amp="bf16", num_steps=40)
    assert r.settings.extra["amp"] == "bfloat16"
    assert all(math.isfinite(v) for v in r.losses[:10])
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(
        torch.equal(a, b)
        for a, b in zip(before, model.state_dict().values(), strict=True)
    )


def test_fp16_gradscaler_records_skipped_steps() -> None:
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = [0]

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls[0] += 1
        loss = F.cross_entropy(out.float(), y)
        if calls[0] % 7 == 0:  # an overflowing gradient: the scaler skips this step
            loss = loss * torch.tensor(float("inf"))
        return loss

    r = lrkit.find_lr(
        model, opt, loss_fn, loader(), amp="fp16", num_steps=30, end_lr=1.0
    )
    assert any(r.skipped)
    assert r.stop_reason != "nan"  # a skipped step is not a NaN loss of the model


class TestBadInput:
    def test_errors_name_the_parameter_and_change_nothing(self, setup) -> None:
        model, opt, dl = setup
        before = state_of(model, opt)
        cases = [
            (dict(start_lr=0.0), ValueError, "start_lr must be > 0, got start_lr=0.0"),
            (
                dict(start_lr=1e-2, end_lr=1e-3),
                ValueError,
                "end_lr must be > start_lr=0.01",
            ),
            (dict(num_steps=5), ValueError, "num_steps must be >= 10, got num_steps=5"),
            (
                dict(accumulation_steps=0),
                ValueError,
                "accumulation_steps must be an int >= 1",
            ),
            (dict(amp="int8"), ValueError, "amp must be None, 'bf16' or 'fp16'"),
            (
                dict(reference_group=3),
                ValueError,
                r"reference_group must be a param group index",
            ),
            (
                dict(end_lr=math.inf),
                ValueError,
                "end_lr must be finite and > 0, got end_lr=inf",
            ),
            (
                dict(device="nope"),
                ValueError,
                "device must be a torch device such as 'cpu' or 'cuda:0', "
                "got device='nope'",
            ),
        ]
        for kwargs, exc, match in cases:
            with pytest.raises(exc, match=match):
                lrkit.find_lr(model, opt, F.cross_entropy, dl, **kwargs)
        assert_state_equal(before, state_of(model, opt))

    def test_empty_loader(self) -> None:
        model = nn.Linear(8, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(
            ValueError, match="train_loader must be a loader that yields"
        ):
            lrkit.find_lr(model, opt, F.cross_entropy, [])
        with pytest.raises(
            ValueError, match="train_loader must be a loader that yields"
        ):
            lrkit.find_lr(model, opt, F.cross_entropy, iter([]))

    def test_optimizer_of_another_model(self) -> None:
        model = nn.Linear(8, 3)
        opt = torch.optim.SGD(nn.Linear(8, 3).parameters(), lr=0.1)
        with pytest.raises(
            ValueError, match="optimizer must be an optimizer over parameters"
        ):
            lrkit.find_lr(model, opt, F.cross_entropy, loader())

    def test_unpackable_batch_says_how_to_fix(self, setup) -> None:
        model, opt, _ = setup
        before = state_of(model, opt)
        x, y = make_data(32)
        triples = [(x, y, y)]
        with pytest.raises(TypeError, match="compute_loss=lambda model, batch"):
            lrkit.find_lr(model, opt, F.cross_entropy, triples)
        assert_state_equal(before, state_of(model, opt))

    def test_bad_validation_batches_name_val_loader(self, setup) -> None:
        model, opt, _ = setup
        before = state_of(model, opt)
        x, _ = make_data(64)
        inputs_only = DataLoader(TensorDataset(x), batch_size=32)
        with pytest.raises(TypeError, match=r"^val_loader must be batches of"):
            lrkit.find_lr(
                model,
                opt,
                F.cross_entropy,
                loader(),
                val_loader=inputs_only,
                num_steps=30,
            )
        assert_state_equal(before, state_of(model, opt))

        class Kw(nn.Module):  # takes x and labels, computes its own loss
            def __init__(self) -> None:
                super().__init__()
                self.lin = nn.Linear(8, 3)

            def forward(self, x: torch.Tensor, labels: torch.Tensor) -> dict:
                z = self.lin(x)
                return {"loss": F.cross_entropy(z, labels), "logits": z}

        x, y = make_data(64)
        good = [{"x": x[i : i + 16], "labels": y[i : i + 16]} for i in (0, 16, 32)]
        extra = [{**b, "mask": torch.ones(16)} for b in good]
        kw = Kw()
        with pytest.raises(
            TypeError, match=r"^val_loader must be batches the model takes.*'mask'"
        ):
            lrkit.find_lr(
                kw,
                torch.optim.SGD(kw.parameters(), lr=0.1),
                None,
                good,
                val_loader=extra,
                num_steps=30,
            )

    def test_unpack_must_return_a_pair(self, setup) -> None:
        model, opt, _ = setup
        with pytest.raises(
            TypeError,
            match=r"unpack must be a function returning a pair \(inputs, target\), "
            r"got a function returning a tuple of length 3",
        ):
            lrkit.find_lr(
                model, opt, F.cross_entropy, loader(), unpack=lambda b: (*b, b[1])
            )

    def test_non_scalar_loss(self) -> None:
        model = nn.Linear(8, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="scalar loss"):
            lrkit.find_lr(model, opt, lambda o, y: (o - 1) ** 2, loader())

    def test_wrong_types(self) -> None:
        model = nn.Linear(8, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
            lrkit.find_lr("model", opt, F.cross_entropy, loader())  # type: ignore[arg-type]
        with pytest.raises(
            TypeError, match="optimizer must be a torch.optim.Optimizer"
        ):
            lrkit.find_lr(model, "sgd", F.cross_entropy, loader())  # type: ignore[arg-type]

    def test_optimizers_it_cannot_test_say_why_and_change_nothing(self) -> None:
        model = nn.Linear(8, 3)
        before = [t.detach().clone() for t in model.parameters()]
        with pytest.raises(
            TypeError,
            match=r"optimizer must be an optimizer that "
            r"steps without a closure .*, got LBFGS",
        ):
            lrkit.find_lr(
                model, torch.optim.LBFGS(model.parameters()), F.cross_entropy, loader()
            )
        with pytest.raises(
            TypeError,
            match=r"optimizer must be an optimizer whose steps follow its LR, "
            r"got Rprop, whose lr only sets the first step sizes",
        ):
            lrkit.find_lr(
                model, torch.optim.Rprop(model.parameters()), F.cross_entropy, loader()
            )
        frozen = nn.Linear(8, 3).requires_grad_(False)
        with pytest.raises(
            ValueError,
            match="at least one parameter with "
            "requires_grad=True, got SGD whose 2 parameters",
        ):
            lrkit.find_lr(
                frozen,
                torch.optim.SGD(frozen.parameters(), lr=0.1),
                F.cross_entropy,
                loader(),
            )

        class SelfStepping(torch.optim.SGD):  # sets its own step size (Adafactor)
            def __init__(self, params: object) -> None:
                super().__init__(params, lr=0.1)  # type: ignore[arg-type]
                for group in self.param_groups:
                    group["lr"] = None

        with pytest.raises(
            TypeError, match="numeric 'lr', got SelfStepping with lr=None"
        ):
            lrkit.find_lr(
                model, SelfStepping(model.parameters()), F.cross_entropy, loader()
            )
        with pytest.raises(
            ValueError, match="spill_dir must be an existing directory or None"
        ):
            lrkit.find_lr(
                model,
                torch.optim.SGD(model.parameters(), lr=0.1),
                F.cross_entropy,
                loader(),
                spill_dir="/no/such/dir",
            )
        with pytest.raises(
            TypeError,
            match="compute_loss must be a function "
            "returning a torch.Tensor, got a function returning dict",
        ):
            lrkit.find_lr(
                model,
                torch.optim.SGD(model.parameters(), lr=0.1),
                None,
                loader(),
                compute_loss=lambda m, b: {"loss": m(b[0]).sum()},
            )
        for a, b in zip(before, model.parameters(), strict=True):
            assert torch.equal(a, b)


def test_tensors_the_optimizer_trains_outside_the_model_are_restored() -> None:
    # a learnable temperature in the criterion, trained by the same optimizer
    seeded()
    model = nn.Linear(8, 3)
    temperature = nn.Parameter(torch.tensor(1.0))
    temperature.grad = torch.tensor(0.25)
    opt = torch.optim.Adam([*model.parameters(), temperature], lr=1e-3)
    before = state_of(model, opt)

    def loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out / temperature, y)

    result = lrkit.find_lr(model, opt, loss_fn, loader(), num_steps=40)
    assert result.steps_done > 10  # it trained the temperature meanwhile
    assert torch.equal(temperature.detach(), torch.tensor(1.0))
    assert torch.equal(temperature.grad, torch.tensor(0.25))
    assert_state_equal(before, state_of(model, opt))


def test_a_criterion_module_with_state_is_restored() -> None:
    """A loss module that updates a buffer on every call (a running center, as
    in DINO) and trains a temperature: training after find_lr is the same as
    without it."""

    class CenteredCE(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("center", torch.zeros(3))
            self.log_t = nn.Parameter(torch.zeros(()))

        def forward(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = F.cross_entropy((logits - self.center) / self.log_t.exp(), y)
            with torch.no_grad():
                self.center.mul_(0.9).add_(0.1 * logits.mean(0))
            return out

    def run(find: bool) -> tuple[list[float], torch.Tensor]:
        torch.manual_seed(0)
        model, crit = nn.Linear(8, 3), CenteredCE()
        opt = torch.optim.SGD([*model.parameters(), *crit.parameters()], lr=0.05)
        data = loader()
        if find:
            lrkit.find_lr(model, opt, crit, data, num_steps=40)
        losses = []
        for xb, yb in data:
            opt.zero_grad()
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, crit.center.clone()

    plain, after = run(False), run(True)
    assert plain[0] == after[0] and torch.equal(plain[1], after[1])


def test_warmup_scheduler_at_step_zero_keeps_its_group_ratios() -> None:
    # a warmup scheduler (Hugging Face's get_linear_schedule_with_warmup, or a
    # LambdaLR from 0) sets every LR to 0 at step 0; the ratios are in initial_lr
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.AdamW(
        [
            {"params": model[0].parameters()},
            {"params": model[2].parameters(), "lr": 2e-4},
        ],
        lr=1e-3,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: step / 10)
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]
    result = lrkit.find_lr(model, opt, F.cross_entropy, loader(), num_steps=30)
    assert result.group_factors == pytest.approx((1.0, 0.2))
    assert [g["lr"] for g in opt.param_groups] == [0.0, 0.0]  # given back
    assert sched.last_epoch == 0


class Plain(nn.Module):
    """A model whose forward takes ``x`` alone (no labels)."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x)


def test_a_dict_output_gives_its_logits_to_your_criterion() -> None:
    class DictOut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> dict:
            return {"logits": self.lin(x)}

    x, y = make_data(64)
    batches = [{"x": x[i : i + 16], "labels": y[i : i + 16]} for i in (0, 16, 32)]
    model = DictOut()
    r = lrkit.find_lr(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        F.cross_entropy,
        batches,
        num_steps=20,
    )
    assert all(math.isfinite(v) for v in r.losses[:5])


def test_dict_batches_with_your_own_criterion_and_a_plain_forward() -> None:
    x, y = make_data(128)
    batches = [
        collections.defaultdict(list, {"x": x[i : i + 16], "labels": y[i : i + 16]})
        for i in range(0, 128, 16)
    ]  # a collate function's defaultdict
    model = Plain()
    result = lrkit.find_lr(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        F.cross_entropy,
        batches,
    )
    assert result.steps_done > 100 and result.suggestion is not None


@pytest.mark.parametrize("wrap", ["DataParallel", "compile"])
def test_dict_batches_with_your_own_criterion_and_a_wrapped_model(wrap: str) -> None:
    """A wrapper's forward takes ``(*args, **kwargs)`` and passes them on:
    whether ``labels`` goes to the model is asked of the model it wraps."""
    torch.manual_seed(0)
    plain = Plain()
    model: nn.Module = (
        nn.DataParallel(plain)
        if wrap == "DataParallel"
        else torch.compile(plain, backend="eager")  # type: ignore[assignment]
    )
    x, y = make_data(128)
    batches = [{"x": x[i : i + 16], "labels": y[i : i + 16]} for i in range(0, 128, 16)]
    result = lrkit.find_lr(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        F.cross_entropy,
        batches,
        num_steps=40,
    )
    assert result.steps_done > 20 and result.suggestion is not None


def test_loss_nan_from_the_first_step_is_not_blamed_on_the_lr() -> None:
    model = nn.Linear(8, 3)
    result = lrkit.find_lr(
        model,
        torch.optim.SGD(model.parameters(), lr=0.1),
        lambda o, y: F.cross_entropy(o, y) * math.nan,
        loader(),
        num_steps=20,
    )
    assert result.suggestion is None and result.stop_reason == "nan"
    assert any(
        "from the first step" in r and "not an LR effect" in r for r in result.reasons
    )


@pytest.mark.parametrize(("seed", "sync_every"), [(0, 8), (4, 1)])
def test_user_code_refusing_nan_weights_ends_the_test_as_a_result(
    seed: int, sync_every: int
) -> None:
    """A Gaussian-likelihood model: torch.distributions checks its arguments and
    raises on the NaN weights of a diverged test (losses are read every
    ``sync_every`` steps, so more steps follow the blow-up; or one step takes a
    finite loss straight to NaN weights). Divergence is a result: the curve so
    far, everything restored."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256)

    class Hetero(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 2))

        def forward(self, x: torch.Tensor) -> torch.distributions.Normal:
            mu, raw = self.net(x).unbind(-1)
            return torch.distributions.Normal(mu, F.softplus(raw) + 1e-3)

    def nll(dist: torch.distributions.Normal, y: torch.Tensor) -> torch.Tensor:
        return -dist.log_prob(y).mean()

    data = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    torch.manual_seed(seed)
    model = Hetero()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    before = copy.deepcopy(model.state_dict())
    r = lrkit.find_lr(
        model,
        opt,
        nll,
        data,
        start_lr=1e-4,
        end_lr=1e6,
        num_steps=20,
        sync_every=sync_every,
        val_loader=data,
    )
    assert r.stop_reason in ("nan", "diverged")
    assert len(r.lrs) < 20 and math.isfinite(r.losses[0])
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    # a real error in user code still raises
    with pytest.raises(ZeroDivisionError):
        lrkit.find_lr(model, opt, lambda o, y: 1 / 0, data, num_steps=20)


def test_optimizer_step_hooks_do_not_see_the_test() -> None:
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    handle = opt.register_step_post_hook(lambda o, a, k: calls.append(1))
    lrkit.find_lr(model, opt, F.cross_entropy, loader(), num_steps=20)
    assert calls == []  # e.g. a scheduler's step counter or an EMA update
    opt.step()
    assert calls == [1]  # and the hook is back afterwards
    handle.remove()


def test_frozen_batchnorm_stays_in_eval_mode_during_the_test() -> None:
    torch.manual_seed(0)
    model = BNDropNet()
    model.net[1].eval()  # the user froze this BatchNorm
    frozen_stats = model.net[1].running_mean.clone()
    seen = []
    model.net[1].register_forward_pre_hook(lambda m, a: seen.append(m.training))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    lrkit.find_lr(model, opt, F.cross_entropy, loader(), num_steps=20, end_lr=1e-2)
    assert seen and not any(seen)  # trained as the user would train it
    assert model.training and not model.net[1].training
    assert torch.equal(model.net[1].running_mean, frozen_stats)


def test_generator_loader_that_runs_out_gets_a_clear_error() -> None:
    x, y = make_data(64)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = ((x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16))
    with pytest.raises(
        ValueError, match="can be iterated again.*generator that ran out after 4"
    ):
        lrkit.find_lr(model, opt, F.cross_entropy, gen, num_steps=20)


def test_bad_suggest_and_progress_fail_before_anything_runs(setup) -> None:
    model, opt, dl = setup
    before = state_of(model, opt)
    with pytest.raises(ValueError, match="suggest must be one of"):
        lrkit.find_lr(model, opt, F.cross_entropy, dl, suggest="magic")
    with pytest.raises(TypeError, match="progress must be callable"):
        lrkit.find_lr(model, opt, F.cross_entropy, dl, progress=5)  # type: ignore[arg-type]
    assert_state_equal(before, state_of(model, opt))


def test_tensor_lr_is_given_back() -> None:
    model = nn.Linear(8, 3)
    lr = torch.tensor(0.05)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lrkit.find_lr(model, opt, F.cross_entropy, loader(), num_steps=20)
    assert opt.param_groups[0]["lr"] is lr
    assert float(lr) == float(torch.tensor(0.05))


def test_restarting_a_loader_draws_one_shuffle_per_epoch() -> None:
    # the range test must see the same batches as a plain loop over the epochs
    x, y = make_data(64)
    g1 = torch.Generator().manual_seed(5)
    dl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g1)
    seen = []
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(target.clone())
        return F.cross_entropy(out, target)

    lrkit.find_lr(model, opt, loss_fn, dl, num_steps=12, end_lr=1e-3)
    g2 = torch.Generator().manual_seed(5)
    ref = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, generator=g2)
    expected = [b[1] for _ in range(3) for b in ref]
    assert len(seen) == 12
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


class TestConfirm:
    """``confirm_steps``: two short runs from the starting state decide between
    the suggestion and 3x it when the confidence is low."""

    @staticmethod
    def small_task() -> tuple[nn.Module, torch.optim.Optimizer, DataLoader, DataLoader]:
        """Linear regression with SGD: the loss explodes right past the
        stability edge 2/lambda_max (a sharp edge), so the confidence is low."""
        torch.manual_seed(0)
        x = torch.randn(4160, 4) * torch.tensor([1.0, 1.0, 1.0, 3.0])
        y = x @ torch.tensor([1.0, -1.0, 2.0, 0.5]) + 0.1 * torch.randn(4160)
        train = DataLoader(
            TensorDataset(x[:4096], y[:4096, None]), batch_size=32, shuffle=True
        )
        val = DataLoader(TensorDataset(x[4096:], y[4096:, None]), batch_size=32)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        return model, opt, train, val

    def test_many_passes_are_not_confirmed_and_say_why(self) -> None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        dl = loader(batch_size=16, n=32)  # 2 batches: dozens of passes
        r = lrkit.find_lr(model, opt, F.cross_entropy, dl, confirm_steps=10)
        assert r.confidence < 0.5
        assert "not confirmed: the range test went" in r.reasons[-1]
        assert "confirm_loss" not in r.suggestion_info.evidence

    def test_short_runs_pick_the_lower_loss_and_give_everything_back(self) -> None:
        model, opt, dl, val = self.small_task()
        seeded()
        plain = lrkit.find_lr(model, opt, F.mse_loss, dl, val_loader=val)
        assert plain.confidence < 0.5
        before = state_of(model, opt)
        seeded()
        expected_rng = rng_probe()
        seeded()
        steps = []
        hook = register_optimizer_step_post_hook(lambda o, a, k: steps.append(1))
        try:
            r = lrkit.find_lr(
                model, opt, F.mse_loss, dl, val_loader=val, confirm_steps=15
            )
        finally:
            hook.remove()
        assert rng_probe() == expected_rng
        assert_state_equal(before, state_of(model, opt))
        assert len(steps) == r.steps_done + 2 * 15  # the cost is stated
        info = r.suggestion_info
        assert info is not None
        ev = info.evidence
        base = ev["lr_unconfirmed"]
        assert base == pytest.approx(plain.suggestion)  # same range test
        lower, upper = ev["confirm_loss"], ev["confirm_loss_up"]
        assert math.isfinite(lower)
        expected = 3 * base if upper < lower else base
        assert r.suggestion == pytest.approx(expected)
        assert r.high >= r.suggestion
        assert "confirmed by two short runs of 15 steps" in r.reasons[-1]
        assert r.settings.extra["confirm_steps"] == 15
        assert r.timings["confirm"] > 0
        # the same call from the same RNG state gives the same answer
        seeded()
        again = lrkit.find_lr(
            model, opt, F.mse_loss, dl, val_loader=val, confirm_steps=15
        )
        assert again.suggestion == r.suggestion
        assert again.suggestion_info.evidence["confirm_loss"] == lower

    def test_short_runs_train_in_training_mode(self) -> None:
        """A model handed over in eval mode is trained in training mode by the
        short runs too (dropout on), and handed back in eval mode."""
        model, opt, dl, val = self.small_task()
        net = nn.Sequential(nn.Dropout(0.1), model)
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        net.eval()
        modes: list[bool] = []
        net[0].register_forward_pre_hook(
            lambda m, a: modes.append(m.training) if torch.is_grad_enabled() else None
        )
        r = lrkit.find_lr(net, opt, F.mse_loss, dl, val_loader=val, confirm_steps=15)
        assert "confirm_loss" in r.suggestion_info.evidence
        assert len(modes) == r.steps_done + 2 * 15 and all(modes)
        assert not net.training and not net[0].training

    def test_without_val_loader_the_training_loss_decides(self) -> None:
        model, opt, dl, _ = self.small_task()
        r = lrkit.find_lr(model, opt, F.mse_loss, dl, confirm_steps=12)
        assert "training loss" in r.reasons[-1]
        assert r.suggestion in (
            pytest.approx(r.suggestion_info.evidence["lr_unconfirmed"]),
            pytest.approx(3 * r.suggestion_info.evidence["lr_unconfirmed"]),
        )

    def test_confident_suggestions_are_not_rerun(self) -> None:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        plain = lrkit.find_lr(model, opt, F.cross_entropy, loader(32, n=4096))
        assert plain.confidence >= 0.5
        steps = []
        hook = register_optimizer_step_post_hook(lambda o, a, k: steps.append(1))
        try:
            r = lrkit.find_lr(
                model, opt, F.cross_entropy, loader(32, n=4096), confirm_steps=20
            )
        finally:
            hook.remove()
        assert len(steps) == r.steps_done
        assert r.suggestion == plain.suggestion
        assert "confirm_loss" not in r.suggestion_info.evidence

    def test_one_shot_iterator_is_not_confirmed_and_says_why(self) -> None:
        model, opt, dl, _ = self.small_task()
        gen = iter(list(dl) * 2)  # a one-shot iterator over 256 batches
        r = lrkit.find_lr(model, opt, F.mse_loss, gen, confirm_steps=10)
        assert r.confidence < 0.5
        assert "not confirmed: a one-shot iterator" in r.reasons[-1]
        assert "confirm_loss" not in r.suggestion_info.evidence

    def test_one_shot_validation_iterator_is_not_confirmed_and_says_why(
        self,
    ) -> None:
        model, opt, dl, val = self.small_task()
        r = lrkit.find_lr(
            model, opt, F.mse_loss, dl, val_loader=iter(list(val)), confirm_steps=10
        )
        assert r.confidence < 0.5
        assert "validation loader is a one-shot iterator" in r.reasons[-1]
        assert "confirm_loss" not in r.suggestion_info.evidence

    def test_bad_confirm_steps(self, setup) -> None:
        model, opt, dl = setup
        before = state_of(model, opt)
        with pytest.raises(ValueError, match="confirm_steps must be"):
            lrkit.find_lr(model, opt, F.cross_entropy, dl, confirm_steps=-1)
        assert_state_equal(before, state_of(model, opt))


class TestConfirmChoice:
    """The decision between the two short runs, on scripted loss curves read
    by the real Monitor."""

    t = np.arange(60)

    def decay(self, seed: int = 0) -> list[float]:
        r = np.random.default_rng(seed)
        return list(0.5 + 1.8 * np.exp(-self.t / 15) + 0.02 * r.standard_normal(60))

    def spiky(self) -> list[float]:
        y = self.decay(1)
        y[30] += 1.0  # one spike the run recovers from: an info finding
        return y

    def blown(self) -> list[float]:
        y = self.decay(2)
        return y[:20] + [v + 3 * i / 40 for i, v in enumerate(y[20:])]

    def test_a_clean_better_run_at_3x_wins(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        best, unstable, overridden, ratio = _confirm_choice(
            2.3, [1.0, 0.8], self.decay(4)
        )
        assert (best, unstable, overridden) == (1, [], [])
        assert ratio == pytest.approx(1.5 / 1.3)

    def test_a_worse_run_at_3x_loses(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        assert _confirm_choice(2.3, [0.8, 1.0], self.decay(4))[0] == 0

    def test_an_info_spike_vetoes_a_run_that_gained_in_proportion(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        # 3x the LR, 1.1x the gain: the lower LR trains; the spike says careful
        best, unstable, overridden, ratio = _confirm_choice(
            2.3, [0.6, 0.5], self.spiky()
        )
        assert ratio == pytest.approx(1.8 / 1.7)
        assert (best, unstable, overridden) == (0, ["spike"], [])

    def test_an_info_spike_does_not_veto_when_the_lower_lr_stalled(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        # the run at the suggestion gained 0.1, the one at 3x 1.7: 17x
        best, unstable, overridden, ratio = _confirm_choice(
            2.3, [2.2, 0.6], self.spiky()
        )
        assert ratio == pytest.approx(17.0)
        assert (best, unstable, overridden) == (1, [], ["spike"])

    def test_a_warning_vetoes_always(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        best, unstable, _, _ = _confirm_choice(2.3, [2.2, 0.6], self.blown())
        assert best == 0 and "diverged" in unstable

    def test_shift_invariant(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        a = _confirm_choice(2.3, [2.2, 0.6], self.spiky())
        b = _confirm_choice(-7.7, [-7.8, -9.4], [v - 10.0 for v in self.spiky()])
        assert a[:3] == b[:3] and a[3] == pytest.approx(b[3])

    def test_a_win_within_the_noise_keeps_the_suggestion(self) -> None:
        from lrkit.torch.finder import _confirm_choice

        # 3x scored 0.02 lower, but the comparison's noise is +-0.05
        assert _confirm_choice(2.3, [1.0, 0.98], self.decay(4), margin=0.05)[0] == 0
        assert _confirm_choice(2.3, [1.0, 0.9], self.decay(4), margin=0.05)[0] == 1

    def test_paired_margin(self) -> None:
        from lrkit.torch.finder import CONFIRM_Z, _paired_margin

        low = [1.0, 2.0, 3.0, 4.0]
        # the same batches, each 0.1 lower: no noise in the difference
        assert _paired_margin(low, [v - 0.1 for v in low]) == pytest.approx(0.0)
        up = [0.9, 2.1, 2.8, 4.0]  # differences -0.1, 0.1, -0.2, 0.0
        d = np.array(up) - np.array(low)
        expected = CONFIRM_Z * d.std(ddof=1) / 2.0
        assert _paired_margin(low, up) == pytest.approx(expected)
        assert _paired_margin([1.0], [0.5]) == 0.0  # one batch: no estimate
        assert _paired_margin([], [0.5]) == 0.0  # a run that blew up


def curves_with_and_without_val(make_model, val: DataLoader) -> list[list[float]]:
    """The range test's training curve without and with ``val``, each from
    ``make_model()`` built after the same seed (10 passes over 4 batches)."""
    x, y = make_data(64)
    curves = []
    for with_val in (False, True):
        torch.manual_seed(0)
        model = make_model()
        train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
        r = lrkit.find_lr(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            F.cross_entropy,
            train,
            val_loader=val if with_val else None,
            num_steps=40,
        )
        curves.append(r.losses)
    return curves


def test_a_validation_loader_does_not_change_the_training_curve() -> None:
    # starting a DataLoader draws a seed from the global RNG; the validation
    # loader's draw must not move the training loader's later shuffles
    x, y = make_data(64)
    val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    without, with_val = curves_with_and_without_val(lambda: nn.Linear(8, 3), val)
    assert without == with_val


def test_an_accelerate_loader_shuffles_its_next_epoch_as_before() -> None:
    # accelerate's seedable sampler (the Hugging Face Trainer's default) seeds
    # each epoch's shuffle with the loader's iteration counter
    accelerate = pytest.importorskip("accelerate")
    from accelerate.utils import DataLoaderConfiguration

    x, y = make_data(256)
    epochs = []
    for run_test in (False, True):
        torch.manual_seed(1)
        acc = accelerate.Accelerator(
            cpu=True,
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        )
        model = nn.Linear(8, 3)
        model, opt, dl = acc.prepare(
            model,
            torch.optim.SGD(model.parameters(), lr=0.1),
            DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
        )
        if run_test:
            lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=30)
        epochs.append([float(b[0].sum()) for b in dl])
    assert epochs[0] == epochs[1]


def tiny_bert_config(transformers, num_labels: int):
    """A BERT classifier small enough to train in a test (no download)."""
    return transformers.BertConfig(
        vocab_size=30,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=num_labels,
    )


def _next_epoch_after(make_loader, run_test: bool) -> list[float]:
    """The order of the loader's next epoch, with or without a range test first."""
    x, y = make_data(64)
    torch.manual_seed(2)
    dl = make_loader(TensorDataset(x, y))
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    if run_test:
        lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=12)
    return [float(b[0].sum()) for b in dl]


def test_a_fresh_loader_with_persistent_workers_shuffles_as_before() -> None:
    # the loader keeps the worker iterator it makes; reusing the test's one
    # would draw one seed fewer on the next iter() and move every later shuffle
    def make(ds):
        return DataLoader(
            ds, batch_size=16, shuffle=True, num_workers=1, persistent_workers=True
        )

    without, with_test = (_next_epoch_after(make, run) for run in (False, True))
    assert without == with_test


def persistent_loader(n: int) -> DataLoader:
    x, y = make_data(n)
    return DataLoader(
        TensorDataset(x, y),
        batch_size=16,
        shuffle=True,
        num_workers=1,
        persistent_workers=True,
    )


@pytest.mark.parametrize("confirm_steps", [0, 8])
def test_a_persistent_workers_loader_called_in_the_middle_of_an_epoch(
    confirm_steps: int,
) -> None:
    """The worker iterator such a loader keeps is the user's, three batches
    into its epoch: the test (and each confirmation run) makes its own, and
    the user's epoch goes on with the batches it would have had."""

    def rest_of_epoch(run_test: bool) -> list[float]:
        torch.manual_seed(0)
        dl = persistent_loader(256)
        model = nn.Linear(8, 3)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        it = iter(dl)
        for _ in range(3):
            next(it)
        if run_test:
            lrkit.find_lr(
                model,
                opt,
                F.cross_entropy,
                dl,
                num_steps=40,
                confirm_steps=confirm_steps,
            )
        rest = [float(b[0].sum()) for b in it]
        return rest + [float(b[0].sum()) for b in dl]  # and the next epoch

    without, with_test = rest_of_epoch(False), rest_of_epoch(True)
    assert len(with_test) == 13 + 16 and with_test == without


def test_confirmation_runs_restart_a_persistent_workers_loader() -> None:
    # each confirmation run starts the loader afresh: the test's stopped worker
    # iterator must not stay in the loader for the next run to reuse
    dl = persistent_loader(128)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=40, confirm_steps=8)
    assert r.reasons[-1].startswith("confirmed by two short runs")  # they ran
    assert len(list(dl)) == 8  # the loader still works afterwards


@pytest.mark.parametrize("workers", [0, 2])
def test_an_iterator_passed_as_the_loader_goes_on_after_the_test(workers: int) -> None:
    # its batches are consumed; the rest are still there (its counters, its
    # position in the data, are not rewound, and its workers keep running)
    x, y = make_data(480)
    it = iter(DataLoader(TensorDataset(x, y), batch_size=16, num_workers=workers))
    val = iter(DataLoader(TensorDataset(x, y), batch_size=16, num_workers=workers))
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    r = lrkit.find_lr(
        model, opt, F.cross_entropy, it, val_loader=val, num_steps=12, end_lr=1e-3
    )
    assert r.steps_done == 12
    rest = list(it)
    assert len(rest) == 30 - 12
    assert torch.equal(rest[-1][0], x[-16:])
    assert len(list(val)) == 30 - 2  # val_batches=2 were taken


def test_worker_processes_stop_when_the_test_fails() -> None:
    import multiprocessing as mp

    x, y = make_data(64)
    dl = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True, num_workers=2)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []

    def broken(out, target):
        calls.append(1)
        if len(calls) > 3:
            raise RuntimeError("boom")
        return F.cross_entropy(out, target)

    with pytest.raises(RuntimeError, match="boom") as info:
        lrkit.find_lr(model, opt, broken, dl, num_steps=20)
    # the exception (kept, as a notebook keeps the last one) holds no workers
    assert info.value is not None
    assert mp.active_children() == []


def test_samplers_with_their_own_random_generators_shuffle_as_before() -> None:
    for rng in (
        lambda: np.random.default_rng(4),
        lambda: np.random.RandomState(4),
        lambda: random.Random(4),
        lambda: torch.Generator().manual_seed(4),  # not under `.generator`
    ):

        def make(ds, rng=rng):
            return DataLoader(ds, batch_size=16, sampler=OwnRngSampler(len(ds), rng()))

        without, with_test = (_next_epoch_after(make, run) for run in (False, True))
        assert without == with_test, rng


def test_validation_keeps_a_frozen_batchnorm_on_its_running_statistics() -> None:
    # a BatchNorm the user froze in eval() must validate (and so train) exactly
    # as without a validation loader: its running statistics untouched
    x, y = make_data(64)
    val = DataLoader(TensorDataset(x[:32] * 3 + 1, y[:32]), batch_size=16)
    moved: list[bool] = []

    def make_model() -> nn.Module:
        model = BNDropNet()
        model.net[1].eval()
        stats = model.net[1].running_mean.clone()
        model.net[1].register_forward_hook(
            lambda m, a, o: moved.append(not torch.equal(m.running_mean, stats))
        )
        return model

    without, with_val = curves_with_and_without_val(make_model, val)
    assert moved and not any(moved)
    assert without == with_val


def test_validation_does_not_move_running_statistics_of_training_batchnorm() -> None:
    torch.manual_seed(0)
    model = BNDropNet()
    x, y = make_data(64)
    val = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=16)
    bn = model.net[1]
    calls: list[tuple[bool, torch.Tensor, torch.Tensor]] = []
    start: list[torch.Tensor] = []
    # validation runs without gradients, on batch statistics (train mode); the
    # next training step must find the running statistics where training left them
    bn.register_forward_pre_hook(lambda m, a: start.append(m.running_mean.clone()))
    bn.register_forward_hook(
        lambda m, a, o: calls.append(
            (torch.is_grad_enabled(), start[-1], m.running_mean.clone())
        )
    )
    lrkit.find_lr(
        model,
        torch.optim.SGD(model.parameters(), lr=0.01),
        F.cross_entropy,
        loader(),
        val_loader=val,
        num_steps=30,
        end_lr=1e-2,
    )
    train = [(pre, post) for grad, pre, post in calls if grad]
    assert len(train) < len(calls)  # validations ran in between
    for (_, left), (found, _) in itertools.pairwise(train):
        assert torch.equal(left, found)


def test_a_device_that_cannot_be_used_is_named_before_anything_runs(setup) -> None:
    model, opt, dl = setup
    before = state_of(model, opt)
    with pytest.raises(ValueError, match="device must be a torch device this machine"):
        lrkit.find_lr(model, opt, F.cross_entropy, dl, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="got device='cuda'"):
            lrkit.find_lr(model, opt, F.cross_entropy, dl, device="cuda")
    try:  # a backend whose package is not installed (Habana's, here)
        torch.empty(1, device="hpu")
    except Exception:
        with pytest.raises(ValueError, match="got device='hpu'"):
            lrkit.find_lr(model, opt, F.cross_entropy, dl, device="hpu")
    assert_state_equal(before, state_of(model, opt))


def test_a_loss_that_cannot_train_gets_a_clear_error(setup) -> None:
    model, opt, dl = setup
    before = state_of(model, opt)
    with pytest.raises(TypeError, match="loss_fn must be a loss computed from"):
        lrkit.find_lr(model, opt, lambda out, y: F.cross_entropy(out, y).detach(), dl)
    with pytest.raises(TypeError, match="compute_loss must be a loss computed"):
        lrkit.find_lr(
            model, opt, compute_loss=lambda m, b: torch.tensor(1.0), train_loader=dl
        )
    assert_state_equal(before, state_of(model, opt))


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_called_under_no_grad_the_test_still_trains(mode) -> None:
    x, y = make_data(128)
    torch.manual_seed(0)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    dl = DataLoader(TensorDataset(x, y), batch_size=16)
    plain = lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=40)
    with mode():
        inside = lrkit.find_lr(model, opt, F.cross_entropy, dl, num_steps=40)
        assert not torch.is_grad_enabled()  # the caller's mode is given back
    assert inside.losses == plain.losses


def test_global_optimizer_hooks_count_the_test_steps() -> None:
    # process-wide observers (a profiler, a benchmark's cost counter) see the
    # test's real work; the optimizer's own hooks do not (test above)
    model = nn.Linear(8, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    handle = register_optimizer_step_post_hook(lambda o, a, k: calls.append(1))
    try:
        r = lrkit.find_lr(model, opt, F.cross_entropy, loader(), num_steps=20)
        assert len(calls) == r.steps_done
    finally:
        handle.remove()


def test_unpack_gives_your_criterion_the_output_as_the_model_returns_it() -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tiny_bert_config(transformers, num_labels=3)
    model = transformers.BertForSequenceClassification(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 30, (32, 8), generator=g)
    labels = torch.randint(0, 3, (32,), generator=g)
    batches = [(ids[i : i + 8], labels[i : i + 8]) for i in range(0, 32, 8)]
    seen = []

    def criterion(out, y):  # reads what it needs from the whole output
        seen.append(type(out).__name__)
        return F.cross_entropy(out.logits, y)

    r = lrkit.find_lr(
        model,
        opt,
        criterion,
        batches,
        unpack=lambda b: ({"input_ids": b[0]}, b[1]),
        num_steps=12,
    )
    assert set(seen) == {"SequenceClassifierOutput"}
    assert math.isfinite(r.losses[0]) and 0.5 < r.losses[0] < 2.0  # ~ln(3)


def test_the_lightning_recipe_of_the_docs() -> None:
    """docs/find.md: a LightningModule's training_step and optimizer, its
    datamodule's loaders; the suggestion reaches the optimizer fit() builds."""
    import warnings

    L = pytest.importorskip("lightning")
    x, y = make_data(256)

    class Net(L.LightningModule):
        def __init__(self, lr: float = 1e-3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))

        def forward(self, xb):
            return self.net(xb)

        def training_step(self, batch, idx):
            loss = F.cross_entropy(self(batch[0]), batch[1])
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    class Data(L.LightningDataModule):
        def train_dataloader(self):
            return DataLoader(
                TensorDataset(x[:192], y[:192]), batch_size=16, shuffle=True
            )

        def val_dataloader(self):
            return DataLoader(TensorDataset(x[192:], y[192:]), batch_size=32)

    torch.manual_seed(0)
    module, data = Net(), Data()
    before = [p.detach().clone() for p in module.parameters()]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*self.log.*")
        result = lrkit.find_lr(
            module,
            module.configure_optimizers(),
            compute_loss=lambda m, batch: m.training_step(batch, 0),
            train_loader=data.train_dataloader(),
            val_loader=data.val_dataloader(),
        )
    assert result.suggestion is not None and result.stop_reason == "diverged"
    assert all(
        torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True)
    )
    module.hparams.lr = result.suggestion
    trainer = L.Trainer(
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, data)
    assert trainer.optimizers[0].param_groups[0]["lr"] == result.suggestion


def test_the_hugging_face_trainer_recipe_of_the_docs(tmp_path) -> None:
    """docs/find.md: the Trainer's optimizer and loaders; train() then builds
    the optimizer again at the suggested LR."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = tiny_bert_config(transformers, num_labels=2)

    class Ids(torch.utils.data.Dataset):
        def __init__(self, n: int, seed: int) -> None:
            g = torch.Generator().manual_seed(seed)
            self.ids = torch.randint(0, 30, (n, 8), generator=g)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": (self.ids[i, 0] > 15).long()}

    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=16,
        report_to=[],
        use_cpu=True,
        max_steps=2,
        logging_steps=1,
        lr_scheduler_type="constant",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(cfg),
        args=args,
        train_dataset=Ids(256, 0),
        eval_dataset=Ids(64, 1),
    )
    trainer.create_optimizer()
    result = lrkit.find_lr(
        trainer.model,
        trainer.optimizer,
        None,
        trainer.get_train_dataloader(),
        val_loader=trainer.get_eval_dataloader(),
    )
    assert result.suggestion is not None
    trainer.args.learning_rate = result.suggestion
    trainer.optimizer = None
    trainer.train()
    logged = [
        h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h
    ]
    assert logged and all(v == pytest.approx(result.suggestion) for v in logged)


def test_a_model_and_batch_function_passed_as_loss_fn_is_named() -> None:
    """``lambda model, batch: ...`` where the criterion goes is called with the
    output and the target: one line naming loss_fn and compute_loss, instead
    of its own error (a tensor's repr over many lines); nothing changed."""
    torch.manual_seed(0)
    model = Plain()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    x, y = make_data(64)
    batches = [{"x": x[i : i + 16], "labels": y[i : i + 16]} for i in range(0, 64, 16)]
    with pytest.raises(TypeError) as info:
        lrkit.find_lr(model, opt, lambda m, batch: m(**batch), batches, num_steps=20)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("loss_fn must be a criterion called as loss_fn(")
    assert "argument after ** must be a mapping" in message
    assert "compute_loss=" in message
    assert all(
        torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True)
    )


def test_dict_keys_the_model_does_not_take_are_one_line() -> None:
    torch.manual_seed(0)
    model = Plain()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = make_data(64)
    batches = [
        {"image": x[i : i + 16], "label": y[i : i + 16]} for i in range(0, 64, 16)
    ]
    with pytest.raises(TypeError) as info:
        lrkit.find_lr(model, opt, F.cross_entropy, batches, num_steps=20)
    message = str(info.value)
    assert "\n" not in message and message.startswith("train_loader must be")
    assert "unexpected keyword argument 'image'" in message
    assert "compute_loss=lambda model, batch" in message


def test_a_model_on_the_meta_device_gets_a_clear_error() -> None:
    """Wholly or partly on the meta device: a one-line error naming the model
    (it was torch's NotImplementedError from inside the snapshot)."""

    class Mixed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Linear(8, 8)
            self.b = torch.nn.Linear(8, 3, device="meta")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x))

    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    for model in (torch.nn.Linear(8, 3, device="meta"), Mixed()):
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(ValueError, match="on the meta device"):
            lrkit.find_lr(
                model,
                opt,
                torch.nn.functional.cross_entropy,
                [(x, y)],
                num_steps=20,
                progress=False,
            )
