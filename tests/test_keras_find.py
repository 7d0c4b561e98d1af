"""Tests of lrkit.keras.find_lr: real Keras 3 models (torch backend), real data."""

from __future__ import annotations

import math
import os
import random
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from sklearn.datasets import load_digits  # noqa: E402

import lrkit  # noqa: E402
import lrkit.keras as lk  # noqa: E402

_X, _Y = load_digits(return_X_y=True)
X = (_X / 16).astype("float32")
Y = _Y.astype("int64")
XT, YT, XV, YV = X[:1400], Y[:1400], X[1400:], Y[1400:]


def digits_model(optimizer: Any = None, seed: int = 0) -> Any:
    """A small MLP with BatchNorm and dropout (state in its variables and RNG)."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=optimizer or keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def fit(model: Any, epochs: int = 2) -> tuple[list[float], np.ndarray[Any, Any]]:
    history = model.fit(
        XT, YT, epochs=epochs, batch_size=64, validation_data=(XV, YV), verbose=0
    )
    weights = np.concatenate([w.ravel() for w in model.get_weights()])
    return history.history["val_loss"], weights


def host(v: Any) -> np.ndarray[Any, Any]:
    return np.array(keras.ops.convert_to_numpy(v.value))


def everything(model: Any) -> dict[str, Any]:
    """Every piece of state the test could change, as host copies."""
    opt = model.optimizer
    return {
        "variables": [host(v) for v in model.variables],
        "optimizer": [host(v) for v in opt.variables],
        "metrics": [host(v) for v in model.metrics_variables],
        "python": random.getstate(),
        "numpy": np.random.get_state()[1].copy(),
        "torch": torch.get_rng_state().clone(),
        "trainable": [v.trainable for v in model.variables],
    }


def assert_same(a: dict[str, Any], b: dict[str, Any]) -> None:
    for key in ("variables", "optimizer", "metrics"):
        if key == "optimizer" and len(a[key]) == 2 < len(b[key]):
            # an optimizer never built (iterations and LR only) is built by the
            # test as fit would build it: its new moments are zeros
            assert all(not np.any(v) for v in b[key][2:])
        else:
            assert len(a[key]) == len(b[key]), key
        for u, v in zip(a[key], b[key][: len(a[key])], strict=True):
            np.testing.assert_array_equal(u, v, err_msg=key)
    assert a["python"] == b["python"]
    np.testing.assert_array_equal(a["numpy"], b["numpy"])
    assert torch.equal(a["torch"], b["torch"])
    assert a["trainable"] == b["trainable"]


def test_a_fit_after_the_test_trains_exactly_as_without_it() -> None:
    # dropout, BatchNorm statistics, shuffled batches, metrics, validation: the
    # user's fit after the test is bit for bit the fit without it (a first fit
    # builds the compiled loss and metrics from a batch of a fresh iterator,
    # which draws from torch's generator: the test must leave them unbuilt)
    want_val, want_w = fit(digits_model())
    model = digits_model()
    result = lk.find_lr(model, XT, YT, batch_size=64, validation_data=(XV, YV))
    assert result.suggestion is not None
    got_val, got_w = fit(model)
    assert got_val == want_val
    np.testing.assert_array_equal(got_w, want_w)


def test_state_after_a_fit_is_restored_exactly() -> None:
    model = digits_model()
    fit(model, epochs=1)  # Adam moments, iterations and metrics hold values now
    before = everything(model)
    lr_before = float(model.optimizer.learning_rate)
    seen: list[float] = []
    lk.find_lr(
        model,
        XT,
        YT,
        validation_data=(XV, YV),
        progress=lambda p: seen.append(float(model.optimizer.learning_rate)),
    )
    assert len(seen) > 20 and max(seen) > 100 * lr_before  # it did change them
    assert_same(before, everything(model))
    assert float(model.optimizer.learning_rate) == lr_before


class _Broken(keras.utils.PyDataset):  # type: ignore[misc]
    """Good batches, then one the model cannot take."""

    def __init__(self, good: int) -> None:
        super().__init__()
        self.good = good

    def __len__(self) -> int:
        return 100

    def __getitem__(self, i: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        if i >= self.good:
            return X[:32, :10], Y[:32]  # wrong width
        return X[32 * i : 32 * i + 32], Y[32 * i : 32 * i + 32]


def test_state_restored_when_the_test_fails_midway() -> None:
    model = digits_model()
    fit(model, epochs=1)
    before = everything(model)
    with pytest.raises(Exception):  # noqa: B017 (Keras's own error)
        lk.find_lr(model, _Broken(good=30))
    assert_same(before, everything(model))


def test_divergence_is_a_result_and_the_suggestion_sits_below_it() -> None:
    model = digits_model(keras.optimizers.SGD(0.01, momentum=0.9))
    result = lk.find_lr(model, XT, YT, batch_size=64, start_lr=1e-5, end_lr=100.0)
    assert len(result.lrs) < result.settings.num_steps  # stopped early
    assert result.stop_reason in ("diverged", "nan")
    assert result.suggestion is not None
    assert result.lrs[0] <= result.suggestion < result.lrs[-1] / 10
    assert result.settings.extra["framework"] == "keras"
    assert result.settings.extra["optimizer"] == "SGD"
    # training at the suggestion learns: the loss falls well below its start
    model.optimizer.learning_rate = result.suggestion
    history = model.fit(XT, YT, epochs=3, batch_size=64, verbose=0)
    assert history.history["loss"][-1] < 0.5 * result.losses[0]


def test_suggestion_is_near_the_torch_finders_on_the_same_task() -> None:
    # the same MLP and data through both adapters: the rule reads the same
    # kind of curve, so the picks agree within a factor of 4
    model = digits_model(keras.optimizers.Adam(1e-3))
    got = lk.find_lr(model, XT, YT, batch_size=64).suggestion
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 64),
        torch.nn.ReLU(),
        torch.nn.BatchNorm1d(64),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(64, 10),
    )
    data = torch.utils.data.TensorDataset(torch.from_numpy(XT), torch.from_numpy(YT))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=True)
    want = lrkit.find_lr(
        net,
        torch.optim.Adam(net.parameters(), 1e-3),
        torch.nn.functional.cross_entropy,
        loader,
    ).suggestion
    assert got is not None and want is not None
    assert 0.25 < got / want < 4


class _Digits(keras.utils.PyDataset):  # type: ignore[misc]
    def __init__(self, batch: int = 64) -> None:
        super().__init__()
        self.batch = batch
        self.epoch_ends = 0
        self.taken = 0

    def __len__(self) -> int:
        return len(XT) // self.batch

    def __getitem__(self, i: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        self.taken += 1
        s = slice(i * self.batch, (i + 1) * self.batch)
        return XT[s], YT[s]

    def on_epoch_end(self) -> None:
        self.epoch_ends += 1


def test_datasets_of_every_kind_give_a_suggestion() -> None:
    data = torch.utils.data.TensorDataset(torch.from_numpy(XT), torch.from_numpy(YT))
    loader = torch.utils.data.DataLoader(data, batch_size=64, shuffle=False)
    py = _Digits()
    sources: dict[str, Any] = {
        "pydataset": py,
        "dataloader": loader,
        "list of batches": [
            (XT[i : i + 64], YT[i : i + 64]) for i in range(0, 1344, 64)
        ],
        "generator": (
            (XT[i % 1344 : i % 1344 + 64], YT[i % 1344 : i % 1344 + 64])
            for i in range(0, 64 * 400, 64)
        ),
    }
    for name, source in sources.items():
        model = digits_model()
        before = everything(model)
        result = lk.find_lr(model, source, num_steps=100, validation_data=_Digits())
        assert result.suggestion is not None, name
        assert len(result.val_losses) > 5, name
        assert_same(before, everything(model))
    assert py.epoch_ends == 0  # the user's dataset is left as it was


def test_list_of_batches_is_treated_as_batches_not_as_inputs() -> None:
    # a list of (x, y) batches has rows of the same length; it is still batches
    batches = [(XT[i : i + 64], YT[i : i + 64]) for i in range(0, 640, 64)]
    result = lk.find_lr(digits_model(), batches, num_steps=50, end_lr=0.01)
    assert result.settings.extra["batch_size"] is None
    assert len(result.lrs) == 50


def test_a_generator_that_runs_out_gets_a_clear_error() -> None:
    gen = ((XT[:64], YT[:64]) for _ in range(5))
    model = digits_model()
    before = everything(model)
    with pytest.raises(ValueError, match="x must be a loader that can be iterated"):
        lk.find_lr(model, gen, num_steps=50)
    assert_same(before, everything(model))


def test_multi_input_dict_and_sample_weights() -> None:
    keras.utils.set_random_seed(0)
    a = keras.Input((32,), name="a")
    b = keras.Input((32,), name="b")
    h = keras.layers.Dense(32, activation="relu")(keras.layers.Concatenate()([a, b]))
    model = keras.Model({"a": a, "b": b}, keras.layers.Dense(10)(h))
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = {"a": XT[:, :32], "b": XT[:, 32:]}
    weights = np.where(YT == 3, 2.0, 1.0).astype("float32")
    result = lk.find_lr(
        model,
        inputs,
        YT,
        sample_weight=weights,
        batch_size=50,
        validation_data=({"a": XV[:, :32], "b": XV[:, 32:]}, YV),
        num_steps=80,
    )
    assert result.suggestion is not None
    assert result.settings.extra["batch_size"] == 50
    assert len(result.val_losses) > 5


def test_class_weight_weighs_each_example_as_fit_does() -> None:
    """class_weight is the sample_weight of each example's class (one-hot
    labels too): the curve equals the one with those sample weights."""
    weights = {c: (3.0 if c == 3 else 1.0) for c in range(10)}
    per_example = np.where(YT == 3, 3.0, 1.0).astype("float32")

    def curve(**kw: Any) -> list[float]:
        kw.setdefault("y", YT)
        kw.setdefault("x", XT)
        model = digits_model()
        if "loss" in kw:  # one-hot labels
            del kw["loss"]
            model.compile(
                optimizer=keras.optimizers.Adam(1e-3),
                loss=keras.losses.CategoricalCrossentropy(from_logits=True),
            )
        r = lk.find_lr(model, num_steps=40, progress=False, **kw)
        return list(r.losses)

    base = curve(sample_weight=per_example)
    assert curve(class_weight=weights) == base
    assert curve(class_weight=dict.fromkeys(range(10), 1.0)) != base
    one_hot = np.eye(10, dtype="float32")[YT]
    model = digits_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy"
    )
    r = lk.find_lr(
        model, XT, one_hot, class_weight=weights, num_steps=20, progress=False
    )
    assert len(r.losses) >= 10  # ran on the weighted one-hot labels
    # a class left out weighs 1.0, as in fit (one-hot labels too)
    assert curve(class_weight={3: 3.0}) == base
    assert curve(y=one_hot, class_weight={3: 3.0}, loss=None) == curve(
        y=one_hot, sample_weight=per_example, loss=None
    )
    with pytest.raises(TypeError, match="class_weight must be None when x is a"):
        curve(x=[(XT, YT)], y=None, class_weight=weights)


def test_class_weight_rounds_float_labels_as_fit_does() -> None:
    """Keras rounds float labels to the nearest class before looking up the
    weight (0.7 is class 1, 0.2 class 0), in a column (n, 1) too: the curve
    equals the one with those weights as sample_weight."""
    ones = YT >= 5
    soft = np.where(ones, 0.7, 0.2).astype("float32")
    weights = np.where(ones, 5.0, 1.0).astype("float32")

    def curve(y: Any, **kw: Any) -> list[float]:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((64,)), keras.layers.Dense(1, activation="sigmoid")]
        )
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        return list(lk.find_lr(model, XT, y, num_steps=30, progress=False, **kw).losses)

    want = curve(soft, sample_weight=weights)
    assert curve(soft, class_weight={1: 5.0}) == want
    assert curve(soft[:, None], class_weight={0: 1.0, 1: 5.0}) == want
    assert curve(soft) != want


class _Sub(keras.Model):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.hidden = keras.layers.Dense(32, activation="relu")
        self.out = keras.layers.Dense(10)

    def call(self, x: Any) -> Any:
        return self.out(self.hidden(x))


def test_a_subclassed_model_never_called_is_built_first() -> None:
    keras.utils.set_random_seed(0)
    model = _Sub()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert not model.built
    result = lk.find_lr(model, XT, YT, num_steps=60)
    assert model.built and result.suggestion is not None
    after = everything(model)
    # its weights are the initial ones: a second test starts from the same place
    again = lk.find_lr(model, XT, YT, num_steps=60)
    assert again.losses[:5] == result.losses[:5]
    assert_same(after, everything(model))


def test_gradient_accumulation_takes_one_lr_per_update() -> None:
    model = digits_model(keras.optimizers.Adam(1e-3, gradient_accumulation_steps=2))
    before = everything(model)
    data = _Digits()
    result = lk.find_lr(model, data, num_steps=40, end_lr=0.01)
    assert result.settings.extra["accumulation_steps"] == 2
    assert len(result.lrs) == 40
    assert data.taken == 80  # two batches for each LR of the ladder
    assert_same(before, everything(model))


def test_loss_scale_optimizer_restores_the_inner_lr() -> None:
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3))
    model = digits_model(opt)
    fit(model, epochs=1)
    before = everything(model)
    inner = [
        np.array(keras.ops.convert_to_numpy(v)) for v in opt.inner_optimizer.variables
    ]
    result = lk.find_lr(model, XT, YT, num_steps=60)
    assert result.suggestion is not None
    assert_same(before, everything(model))
    for v, want in zip(opt.inner_optimizer.variables, inner, strict=True):
        np.testing.assert_array_equal(host(v), want)


def test_result_is_data_and_progress_and_suggest_hooks_work(tmp_path: Any) -> None:
    seen: list[int] = []
    result = lk.find_lr(
        digits_model(),
        XT,
        YT,
        num_steps=50,
        progress=lambda p: seen.append(p.step),
        suggest=False,
    )
    assert result.suggestion is None
    assert seen == list(range(1, len(result.lrs) + 1))
    path = result.save(tmp_path / "k.json")
    loaded = lrkit.RangeTestResult.load(path)
    assert loaded.lrs == result.lrs
    assert loaded.settings.extra["backend"] == keras.backend.backend()


class TestErrors:
    def test_bad_arguments_name_the_parameter_and_change_nothing(self) -> None:
        model = digits_model()
        before = everything(model)
        cases: list[tuple[dict[str, Any], type[Exception], str]] = [
            ({"x": XT, "y": YT[:10]}, ValueError, "y must be as many rows as x"),
            ({"x": XT, "y": YT, "batch_size": 0}, ValueError, "batch_size must be"),
            ({"x": [(XT, YT)], "batch_size": 8}, ValueError, "batch_size must be None"),
            ({"x": [(XT, YT)], "y": YT}, TypeError, "y must be None when x is"),
            ({"x": 3}, TypeError, "x must be arrays"),
            ({"x": XT, "y": YT, "shuffle": 1}, TypeError, "shuffle must be True"),
            ({"x": XT, "y": YT, "seed": 1.5}, TypeError, "seed must be an int"),
            ({"x": XT, "y": YT, "val_batches": 0}, ValueError, "val_batches must be"),
            ({"x": XT, "y": YT, "start_lr": -1}, ValueError, "start_lr must be"),
            (
                {"x": XT, "y": YT, "validation_data": (XV, YV, None, None)},
                TypeError,
                "validation_data must be",
            ),
            ({"x": XT, "y": YT, "validation_data": []}, ValueError, "got 0 items"),
            (
                {"x": XT, "y": YT, "validation_data": (XV, YV, YV[:5])},
                ValueError,
                "validation_data must be arrays with the same number of rows",
            ),
            ({"x": XT, "y": YT, "seed": -1}, ValueError, "seed must be an int >= 0"),
            ({"x": XT}, TypeError, "y must be the targets when x is arrays"),
            ({"x": [XT, YT]}, TypeError, "y must be the targets when x is arrays"),
            (
                {"x": XT, "y": YT, "validation_data": XV},
                TypeError,
                "or a dataset of batches, got one array of shape",
            ),
            ({"x": None, "y": YT}, TypeError, "x must be arrays"),
            ({"x": "train.npy", "y": YT}, TypeError, "x must be arrays"),
            (
                {"x": [(XT, YT)], "sample_weight": YT},
                TypeError,
                "sample_weight must be None when x is a dataset",
            ),
            (
                {"x": XT, "y": YT, "validation_data": (XV, YV[:3])},
                ValueError,
                "validation_data must be",
            ),
            ({"x": XT, "y": YT, "validation_data": 7}, TypeError, "validation_data"),
            ({"x": XT, "y": YT, "suggest": "nope"}, ValueError, "suggest must be"),
            ({"x": XT[:0], "y": YT[:0]}, ValueError, "x must be arrays with at least"),
            ({"x": []}, ValueError, "x must be"),
        ]
        for kwargs, exc, text in cases:
            x = kwargs.pop("x")
            with pytest.raises(exc, match=text):
                lk.find_lr(model, x, **kwargs)
        assert_same(before, everything(model))

    def test_models_that_cannot_be_tested(self) -> None:
        with pytest.raises(TypeError, match="model must be a keras.Model"):
            lk.find_lr(object(), XT, YT)
        keras.utils.set_random_seed(0)
        bare = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        with pytest.raises(ValueError, match="model must be a compiled keras.Model"):
            lk.find_lr(bare, XT, YT)
        sched = keras.optimizers.schedules.ExponentialDecay(1e-3, 100, 0.9)
        model = digits_model(keras.optimizers.Adam(sched))
        with pytest.raises(TypeError, match="learning_rate must be a number"):
            lk.find_lr(model, XT, YT)
        lr = lk.Schedule("cosine(100)", base_lr=1e-3)
        model = digits_model(keras.optimizers.Adam(lr))
        with pytest.raises(TypeError, match="Compile with a float LR"):
            lk.find_lr(model, XT, YT)

    def test_the_torch_entry_point_points_keras_users_here(self) -> None:
        model = digits_model()
        with pytest.raises(TypeError, match=r"lrkit\.keras\.find_lr"):
            lrkit.find_lr(model, model.optimizer, None, [(XT, YT)])


def test_snapshot_makes_every_fit_start_alike() -> None:
    # the model's first fit and two later ones, each after restore(): equal
    model = digits_model()
    snap = lk.snapshot(model)
    runs = []
    for _ in range(3):
        runs.append(fit(model, epochs=1))
        snap.restore()
    for val, weights in runs[1:]:
        assert val == runs[0][0]
        np.testing.assert_array_equal(weights, runs[0][1])
    assert runs[0][0] == fit(digits_model(), epochs=1)[0]  # as a fresh model's


class _Reshuffled(keras.utils.PyDataset):  # type: ignore[misc]
    """Batches of the digits in an order it draws itself at each epoch's end."""

    def __init__(self) -> None:
        super().__init__()
        self.rng = np.random.default_rng(0)
        self.order = self.rng.permutation(len(XT))

    def __len__(self) -> int:
        return len(XT) // 64

    def __getitem__(self, i: int) -> Any:
        idx = self.order[i * 64 : (i + 1) * 64]
        return XT[idx], YT[idx]

    def on_epoch_end(self) -> None:
        self.order = self.rng.permutation(len(XT))


@pytest.mark.parametrize("source", ["loader", "pydataset"])
def test_snapshot_restores_the_data_own_shuffling(source: str) -> None:
    """A DataLoader with a generator, a PyDataset shuffling itself: given as
    data=, every run after restore() draws the same batches (without, the
    second run at the same LR differs)."""
    if source == "loader":
        data: Any = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.tensor(XT), torch.tensor(YT)),
            batch_size=64,
            shuffle=True,
            generator=torch.Generator().manual_seed(0),
        )
    else:
        data = _Reshuffled()
    losses = {}
    for given in (True, False):
        model = digits_model()
        snap = lk.snapshot(model, data=data if given else None)
        runs = []
        for _ in range(2):
            runs.append(model.fit(data, epochs=2, verbose=0).history["loss"][-1])
            snap.restore()
        losses[given] = runs
    assert losses[True][0] == losses[True][1]
    assert losses[False][0] != losses[False][1]


def test_snapshot_refuses_what_it_cannot_hold() -> None:
    with pytest.raises(TypeError, match="model must be a keras.Model"):
        lk.snapshot("model")
    keras.utils.set_random_seed(0)
    bare = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
    with pytest.raises(ValueError, match="model must be a compiled keras.Model"):
        lk.snapshot(bare)
    sub = _Sub()
    sub.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="model must be a built keras.Model"):
        lk.snapshot(sub)


# ------------------------------------------- from a review with real Keras runs
def two_output_model() -> Any:
    keras.utils.set_random_seed(0)
    inp = keras.Input((64,))
    h = keras.layers.Dense(32, activation="relu")(inp)
    model = keras.Model(
        inp,
        {
            "a": keras.layers.Dense(10, name="a")(h),
            "b": keras.layers.Dense(1, name="b")(h),
        },
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss={
            "a": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "b": "mse",
        },
    )
    return model


def test_per_output_losses_of_a_later_fit_are_as_without_the_test() -> None:
    # building the compiled loss again added a second set of per-output
    # trackers: a_loss and b_loss read 0.0 in every later fit
    targets = {"a": YT, "b": XT[:, :1]}
    val = (XV, {"a": YV, "b": XV[:, :1]})

    def history(model: Any) -> dict[str, list[float]]:
        h = model.fit(
            XT, targets, epochs=2, batch_size=64, validation_data=val, verbose=0
        )
        return dict(h.history)

    want = history(two_output_model())
    assert want["a_loss"][0] > 0.1 and want["val_b_loss"][0] > 0
    model = two_output_model()
    lk.find_lr(model, XT, targets, batch_size=64, validation_data=val, num_steps=60)
    assert history(model) == want
    snap = lk.snapshot(model)
    first = history(model)
    snap.restore()
    assert history(model) == first  # a sweep's later runs read their own losses


class _Noise(keras.layers.Layer):  # type: ignore[misc]
    """Noise from keras.random with seed=None: Keras's global seed generator."""

    def call(self, x: Any, training: bool = False) -> Any:
        if not training:
            return x
        return x + keras.random.normal(keras.ops.shape(x), stddev=0.1)


def test_layers_drawing_from_the_global_seed_generator_train_alike() -> None:
    def make() -> Any:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), _Noise(), keras.layers.Dense(10)])
        model.compile(
            optimizer=keras.optimizers.SGD(0.01),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    want = make().fit(XT, YT, epochs=1, verbose=0).history["loss"]
    model = make()
    lk.find_lr(model, XT, YT, num_steps=40)
    assert model.fit(XT, YT, epochs=1, verbose=0).history["loss"] == want


def test_a_loaders_own_generator_is_put_back() -> None:
    data = torch.utils.data.TensorDataset(torch.from_numpy(XT), torch.from_numpy(YT))

    def loader() -> Any:
        gen = torch.Generator().manual_seed(0)
        return torch.utils.data.DataLoader(
            data, batch_size=64, shuffle=True, generator=gen
        )

    want = digits_model().fit(loader(), epochs=2, verbose=0, shuffle=False)
    want = want.history["loss"]
    model, source = digits_model(), loader()
    state = source.generator.get_state()
    lk.find_lr(model, source, num_steps=60, validation_data=loader())
    assert torch.equal(source.generator.get_state(), state)
    got = model.fit(source, epochs=2, verbose=0, shuffle=False).history["loss"]
    assert got == want


class _NumBatches(keras.utils.PyDataset):  # type: ignore[misc]
    """The Keras 3 API: num_batches, no __len__; set up in on_epoch_begin."""

    def __init__(self, count: int | None) -> None:
        super().__init__()
        self.count = count

    @property
    def num_batches(self) -> int | None:
        return self.count

    def on_epoch_begin(self) -> None:
        self.order = np.arange(20)

    def __getitem__(self, i: int) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
        j = self.order[i % 20]
        return XT[64 * j : 64 * j + 64], YT[64 * j : 64 * j + 64]


def test_validation_in_every_form_fit_takes() -> None:
    batches = [(XV[:64], YV[:64]), (XV[64:128], YV[64:128])]
    forms: dict[str, Any] = {
        "tuple": (XV[:128], YV[:128]),
        "list of arrays": [XV[:128], YV[:128]],
        "list of batches": batches,
        "one-batch generator": (b for b in batches[:1]),
        "pydataset with num_batches": _NumBatches(3),
        "infinite pydataset": _NumBatches(None),
    }
    for name, val in forms.items():
        result = lk.find_lr(digits_model(), XT, YT, validation_data=val, num_steps=40)
        assert len(result.val_losses) >= 3 and np.isfinite(result.val_losses).all(), (
            name
        )
    same = [
        lk.find_lr(
            digits_model(), XT, YT, batch_size=64, validation_data=v, num_steps=40
        ).val_losses
        for v in ((XV[:128], YV[:128]), batches, [XV[:128], YV[:128]])
    ]
    assert same[0] == same[1] == same[2]  # the same two batches, read alike
    for count in (5, None):
        result = lk.find_lr(digits_model(), _NumBatches(count), num_steps=40)
        assert len(result.lrs) == 40 or result.stop_reason != "completed"


# ------------------------------------------- a custom train_step, loss_key
class _OwnStep(keras.Model):  # type: ignore[misc]
    """A custom train_step as Keras's torch guide writes one: its loss is
    ``self(x) - y`` under autograd (NumPy ``y`` fails there), logged as
    ``"total"``; it records the types of the ``x`` and ``y`` it is given."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = keras.layers.Dense(10)
        self.total = keras.metrics.Mean(name="total")
        self.given: list[tuple[str, str]] = []

    def call(self, x: Any) -> Any:
        return self.dense(x)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        self.given.append((type(x).__name__, type(y).__name__))
        self.zero_grad()
        loss = keras.ops.mean((self(x, training=True) - y) ** 2)
        loss.backward()
        grads = [v.value.grad for v in self.trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(grads, self.trainable_weights)
        self.total.update_state(loss)
        return {"total": self.total.result()}

    @property
    def metrics(self) -> list[Any]:
        return [self.total]


def own_step_model() -> Any:
    keras.utils.set_random_seed(0)
    model = _OwnStep()
    model(XT[:1])
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


ONE_HOT = np.eye(10, dtype="float32")[YT]


def test_train_step_is_given_the_tensors_fit_gives_it() -> None:
    model = own_step_model()
    model.fit(XT, ONE_HOT, batch_size=64, epochs=1, verbose=0)
    in_fit = set(model.given)
    assert in_fit == {("Tensor", "Tensor")}
    for data in (
        (XT, ONE_HOT),
        ([(XT[i : i + 64], ONE_HOT[i : i + 64]) for i in range(0, 640, 64)],),
    ):
        model = own_step_model()
        result = lk.find_lr(
            model, *data, num_steps=30, loss_key="total", progress=False
        )
        assert set(model.given) == in_fit
        assert len(result.losses) > 20 and np.isfinite(result.losses[:20]).all()


def test_a_loss_logged_under_another_key_needs_loss_key() -> None:
    model = own_step_model()
    before = everything(model)
    with pytest.raises(
        ValueError,
        match=r"loss_key must be a key of the logs model\.train_on_batch returns "
        r"\('total'\), got loss_key='loss'\. .*pass loss_key=",
    ):
        lk.find_lr(model, XT, ONE_HOT, num_steps=30, progress=False)
    assert_same(before, everything(model))
    with pytest.raises(TypeError, match="loss_key must be a non-empty log key"):
        lk.find_lr(model, XT, ONE_HOT, loss_key="")
    # the compiled loss's key, for training and validation alike
    result = lk.find_lr(
        digits_model(),
        XT,
        YT,
        validation_data=(XV, YV),
        loss_key="accuracy",
        num_steps=30,
        progress=False,
    )
    assert max(result.losses) <= 1 and max(result.val_losses) <= 1  # accuracies


class _OwnTrainStepOnly(keras.Model):
    """A custom train_step that logs "mse"; Keras's own test_step ("loss")."""

    def __init__(self) -> None:
        super().__init__()
        self.d = keras.layers.Dense(1)

    def call(self, x: Any) -> Any:
        return self.d(x)

    def train_step(self, data: Any) -> Any:
        x, y = data[0], data[1]
        self.zero_grad()
        loss = keras.ops.mean((self(x) - y) ** 2)
        loss.backward()
        grads = [v.value.grad for v in self.trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(grads, self.trainable_weights)
        return {"mse": loss}


def test_loss_key_with_keras_own_validation_step() -> None:
    """loss_key names the custom train_step's key; validation through Keras's
    own test_step logs "loss", read there (review: a ValueError mid-test
    asked for the loss_key that was given; fit reports val_loss)."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 4)).astype("float32")
    y = (x @ rng.normal(size=(4, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = _OwnTrainStepOnly()
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    result = lk.find_lr(
        model,
        x,
        y,
        loss_key="mse",
        validation_split=0.25,
        num_steps=30,
        progress=False,
    )
    assert len(result.val_losses) >= 3 and np.isfinite(result.val_losses).all()


def test_a_negative_class_weight_is_refused_naming_the_class() -> None:
    model = digits_model()
    before = everything(model)
    for bad in (-1.0, math.inf):
        with pytest.raises(ValueError, match=r"class_weight\[3\] must be a finite"):
            lk.find_lr(model, XT, YT, class_weight={3: bad}, progress=False)
    assert_same(before, everything(model))


# ------------------------------------------------------- inputs fit refuses
def test_python_lists_of_rows_are_refused_naming_the_argument() -> None:
    with pytest.raises(ValueError, match="Unrecognized data type"):  # fit too
        digits_model().fit(XT.tolist(), YT.tolist(), verbose=0)
    model = digits_model()
    before = everything(model)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"x": XT.tolist(), "y": YT.tolist()}, "x"),
        ({"x": XT.tolist()}, "x"),
        ({"x": XT, "y": YT.tolist()}, "y"),
        ({"x": XT, "y": YT, "sample_weight": [1.0] * len(YT)}, "sample_weight"),
        (
            {"x": XT, "y": YT, "validation_data": (XV.tolist(), YV)},
            r"validation_data\[0\]",
        ),
        (
            {"x": XT, "y": YT, "validation_data": (XV, YV.tolist())},
            r"validation_data\[1\]",
        ),
    ]
    for kwargs, name in cases:
        x = kwargs.pop("x")
        with pytest.raises(
            TypeError,
            match=rf"^{name} must be a NumPy array .* got a Python list of numbers\. "
            r"Convert it with np\.asarray",
        ):
            lk.find_lr(model, x, **kwargs)
    assert_same(before, everything(model))


def test_non_finite_inputs_are_refused_before_anything_runs() -> None:
    model = digits_model()
    before = everything(model)
    nan, inf = XT.copy(), XT.copy()
    nan[3, 5] = np.nan
    inf[7, 1] = np.inf
    message = r"must be finite numbers \(no NaN or infinity\), got non-finite values\."
    for x in (nan, inf, torch.from_numpy(nan)):
        with pytest.raises(ValueError, match="^x " + message):
            lk.find_lr(model, x, YT)
    with pytest.raises(ValueError, match=r"^validation_data\[0\] " + message):
        lk.find_lr(model, XT, YT, validation_data=(nan[:100], YT[:100]))
    assert_same(before, everything(model))
    # integer inputs (token ids) cannot be NaN and pass
    keras.utils.set_random_seed(0)
    ids = keras.Sequential(
        [keras.Input((64,), dtype="int32"), keras.layers.Embedding(17, 4),
         keras.layers.Flatten(), keras.layers.Dense(10)]
    )  # fmt: skip
    ids.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    result = lk.find_lr(ids, _X[:1400].astype("int32"), YT, num_steps=20)
    assert len(result.lrs) > 10


# ---------------------------------------------------------- validation_split
def test_validation_split_holds_out_the_last_rows_as_fit_does() -> None:
    """validation_split=0.25 is validation_data=(the last quarter of the rows),
    taken before shuffling; sample_weight is split alike and class_weight
    weighs the training rows."""
    split = 1050  # floor(1400 * 0.75), as fit
    weights = np.where(YT == 3, 2.0, 1.0).astype("float32")
    kw: dict[str, Any] = {"batch_size": 64, "num_steps": 40, "progress": False}
    held = lk.find_lr(
        digits_model(), XT, YT, sample_weight=weights, validation_split=0.25, **kw
    )
    given = lk.find_lr(
        digits_model(),
        XT[:split],
        YT[:split],
        sample_weight=weights[:split],
        validation_data=(XT[split:], YT[split:], weights[split:]),
        **kw,
    )
    assert len(held.val_losses) > 3
    assert held.losses == given.losses and held.val_losses == given.val_losses
    cw = {3: 2.0}
    held = lk.find_lr(
        digits_model(), XT, YT, class_weight=cw, validation_split=0.25, **kw
    )
    given = lk.find_lr(
        digits_model(),
        XT[:split],
        YT[:split],
        class_weight=cw,
        validation_data=(XT[split:], YT[split:]),
        **kw,
    )
    assert held.losses == given.losses and held.val_losses == given.val_losses


def test_validation_split_is_refused_where_fit_cannot_split() -> None:
    model = digits_model()
    before = everything(model)
    batches = [(XT[:64], YT[:64])]
    cases: list[tuple[dict[str, Any], type[Exception], str]] = [
        ({"x": batches}, ValueError, "validation_split must be 0 when x is a dataset"),
        (
            {"x": _Digits()},
            ValueError,
            "validation_split must be 0 when x is a dataset",
        ),
        (
            {"x": XT, "y": YT, "validation_data": (XV, YV)},
            ValueError,
            "validation_split must be 0 when validation_data is given",
        ),
        ({"x": XT[:1], "y": YT[:1]}, ValueError, "leaves rows in both parts of x"),
        ({"x": XT, "y": YT, "validation_split": 1.0}, ValueError, r"in \[0, 1\)"),
        ({"x": XT, "y": YT, "validation_split": "0.2"}, TypeError, "a real number"),
    ]
    for kwargs, exc, text in cases:
        kwargs.setdefault("validation_split", 0.2)
        x = kwargs.pop("x")
        with pytest.raises(exc, match=text):
            lk.find_lr(model, x, **kwargs)
    assert_same(before, everything(model))
