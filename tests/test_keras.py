"""Tests of lrkit.keras (Keras 3 on the torch backend): Schedule and PlateauCallback."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

from test_schedules import ALL  # noqa: E402  (one instance of every registered schedule)

import lrkit  # noqa: E402
from lrkit import Constant, Cosine, ReduceOnPlateau, Warmup  # noqa: E402
from lrkit.keras import MonitorCallback, PlateauCallback, Schedule  # noqa: E402

STEPS = [
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    9,
    10,
    11,
    13,
    20,
    24,
    25,
    29,
    30,
    31,
    39,
    40,
    49,
    50,
    59,
    60,
    61,
    75,
    99,
    100,
    150,
    1000,
]


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: repr(s)[:60])
def test_keras_ops_form_matches_python(schedule: lrkit.Schedule) -> None:
    lr = Schedule(schedule, base_lr=0.5)
    got = np.array([float(keras.ops.convert_to_numpy(lr(t))) for t in STEPS])
    want = np.array([0.5 * schedule(t) for t in STEPS])
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: repr(s)[:60])
def test_symbolic_step_traces(schedule: lrkit.Schedule) -> None:
    """A symbolic step (as in a compiled train function) is handled with ops only."""
    step = keras.KerasTensor(shape=(), dtype="int64")
    out = Schedule(schedule)(step)
    assert isinstance(out, keras.KerasTensor)
    assert out.shape == ()


def test_variable_step_like_the_optimizer_passes() -> None:
    lr = Schedule(Cosine(total_steps=10), base_lr=0.1)
    it = keras.Variable(5, dtype="int64", trainable=False)
    assert float(keras.ops.convert_to_numpy(lr(it))) == pytest.approx(0.05, rel=1e-6)


def test_a_plain_step_is_checked_like_the_pure_schedules() -> None:
    lr = Schedule("warmup(5) >> cosine(10)", base_lr=0.1)
    pure = lr.schedule
    for bad in (-10, -1):
        with pytest.raises(ValueError, match=rf"step must be >= 0, got step={bad}\."):
            lr(bad)
    for bad in (2.5, float("nan")):
        with pytest.raises(ValueError, match="step must be a whole number"):
            lr(bad)
    for wrong in ("3", None):
        with pytest.raises(TypeError, match="step must be a whole number"):
            lr(wrong)
    for ok in (7, 7.0, np.int64(7)):
        value = float(keras.ops.convert_to_numpy(lr(ok)))
        assert value == pytest.approx(0.1 * pure(7), rel=1e-6)
    # tensors, as Keras passes them, are not checked (they may be symbolic)
    t = keras.ops.convert_to_tensor(7.0)
    assert float(keras.ops.convert_to_numpy(lr(t))) == pytest.approx(0.1 * pure(7))


def test_config_round_trip_and_serialisation() -> None:
    lr = Schedule("warmup(10) >> cosine(100, end_lr=0.1)", base_lr=3e-4)
    config = lr.get_config()
    assert config == {
        "schedule": lr.schedule.to_config(),
        "base_lr": 3e-4,
        "accumulation_steps": 1,
    }
    back = Schedule.from_config(config)
    assert back.schedule == lr.schedule
    old = {"schedule": lr.schedule.to_config(), "base_lr": 3e-4}  # saved before
    assert Schedule.from_config(old).accumulation_steps == 1
    acc = Schedule("cosine(10)", accumulation_steps=4)
    assert Schedule.from_config(acc.get_config()).accumulation_steps == 4
    again = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(lr)
    )
    assert isinstance(again, Schedule)
    assert again.schedule == lr.schedule
    with pytest.raises(TypeError, match="an lrkit Schedule to be saved"):
        Schedule(lambda t: 1.0).get_config()


def test_plain_callables() -> None:
    tabled = Schedule(Warmup(steps=5, then=lambda t: 0.5))  # no end_step: eager
    assert float(keras.ops.convert_to_numpy(tabled(7))) == pytest.approx(0.5)

    class Finite:
        end_step = 4

        def __call__(self, t: int) -> float:
            return [1.0, 0.8, 0.6, 0.4, 0.2][min(t, 4)]

    f = Schedule(Finite())  # finite: tabulated, traceable
    assert float(keras.ops.convert_to_numpy(f(10))) == pytest.approx(0.2)
    assert isinstance(f(keras.KerasTensor(shape=(), dtype="int64")), keras.KerasTensor)
    with pytest.raises(
        TypeError,
        match=r"schedule must be an lrkit schedule or a callable with a finite "
        r"end_step \(at most 1,000,000 steps\) to be evaluated on a symbolic step, "
        r"got schedule=<function .*>\. It has no keras\.ops form",
    ):
        Schedule(lambda t: 1.0)(keras.KerasTensor(shape=(), dtype="int64"))


class Counting:
    """A custom schedule with a length that counts its evaluations."""

    def __init__(self, end_step: int) -> None:
        self.end_step = end_step
        self.calls = 0

    def __call__(self, t: int) -> float:
        self.calls += 1
        return 1.0 / (1.0 + min(t, self.end_step))


@pytest.mark.parametrize("wrap", ["alone", "warmup", "join"])
def test_custom_schedules_are_tabulated_once(wrap: str) -> None:
    part = Counting(end_step=5000)
    schedule: object = {
        "alone": part,
        "warmup": Warmup(steps=10, then=part),
        "join": lrkit.Join(parts=[Constant(lr=0.5), part], boundaries=[10]),
    }[wrap]
    before = part.calls  # Warmup and Join call their parts when built
    lr = Schedule(schedule, base_lr=2.0)  # type: ignore[arg-type]
    built = part.calls
    assert built - before == 5001  # the table: steps 0..end_step, once
    shift = 0 if wrap == "alone" else 10
    for t in (shift, shift + 7, shift + 4999, shift + 10**6):
        got = float(keras.ops.convert_to_numpy(lr(t)))
        assert got == pytest.approx(2.0 / (1.0 + min(t - shift, 5000)), rel=1e-6)
    symbolic_out = lr(keras.KerasTensor(shape=(), dtype="int64"))
    assert isinstance(symbolic_out, keras.KerasTensor)
    assert part.calls == built  # Keras asks for the LR every step: no re-tabulation


def tiny_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-1.0], [0.5]], dtype="float32")).astype("float32")
    return x, y


def tiny_model(lr: object) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model


def test_fit_with_schedule_and_plateau() -> None:
    x, y = tiny_data()
    schedule = Warmup(steps=4) >> Cosine(total_steps=36, end_lr=0.1)
    lr = Schedule(schedule, base_lr=0.05)
    model = tiny_model(lr)
    # patience 0 and a huge threshold: every evaluation after the first reduces
    callback = PlateauCallback(ReduceOnPlateau(patience=0, factor=0.5, threshold=0.99))
    history = model.fit(
        x,
        y,
        validation_split=0.25,
        batch_size=16,
        epochs=5,
        verbose=0,
        callbacks=[callback],
    )
    steps = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    assert steps == 5 * 3  # 48 training samples / 16
    assert callback.state.evals == 5
    assert callback.state.reductions == 4
    assert lr.plateau_scale == 0.5**4
    applied = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert applied == pytest.approx(0.05 * schedule(steps) * 0.5**4, rel=1e-6)
    assert history.history["plateau_scale"] == [1.0, 0.5, 0.25, 0.125, 0.0625]
    assert np.isfinite(history.history["loss"]).all()


class LRs(keras.callbacks.Callback):  # type: ignore[misc]
    """Records the learning rate each training batch runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        lr = self.model.optimizer.learning_rate
        self.seen.append(float(keras.ops.convert_to_numpy(lr)))


def reducing() -> PlateauCallback:
    # every epoch after the first reduces (a 99% improvement is never reached)
    return PlateauCallback(
        ReduceOnPlateau(patience=0, factor=0.5, threshold=0.99), monitor="loss"
    )


@pytest.mark.parametrize("kind", ["float", "schedule"])
def test_resume_from_a_saved_model_continues_exactly(kind: str, tmp_path: Any) -> None:
    """fit 2 epochs, save model and plateau state, load, fit 2 more == fit 4."""
    x, y = tiny_data()

    def make_lr() -> object:
        if kind == "float":
            return 0.05
        return Schedule(Warmup(steps=3) >> Cosine(total_steps=30), base_lr=0.05)

    def fit(model: keras.Model, cb: PlateauCallback, epochs: int) -> list[float]:
        spy = LRs()
        model.fit(
            x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0,
            callbacks=[cb, spy],
        )  # fmt: skip
        return spy.seen

    straight_cb = reducing()
    straight = fit(tiny_model(make_lr()), straight_cb, 4)

    first_cb = reducing()
    model = tiny_model(make_lr())
    first = fit(model, first_cb, 2)
    assert first_cb.state.scale == 0.5
    path = tmp_path / "model.keras"
    model.save(path)
    saved = json.loads(json.dumps(first_cb.state.to_dict()))

    loaded = keras.models.load_model(path)
    resumed_cb = reducing()
    resumed_cb.state = lrkit.PlateauState.from_dict(saved)
    second = fit(loaded, resumed_cb, 2)

    assert len(straight) == 16
    np.testing.assert_allclose(first + second, straight, rtol=1e-6)
    assert resumed_cb.state == straight_cb.state
    assert straight_cb.state.reductions == 3  # epochs 2, 3 and 4 reduce


def test_fit_twice_with_one_callback_continues() -> None:
    x, y = tiny_data()
    model = tiny_model(0.05)
    cb = reducing()
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    lr = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    assert cb.state.scale == 0.25
    assert lr == pytest.approx(0.05 * 0.25)


def test_keras_own_reduce_on_plateau_fails_with_a_schedule() -> None:
    x, y = tiny_data()
    model = tiny_model(Schedule(Cosine(total_steps=100), base_lr=0.05))
    with pytest.raises(TypeError):
        model.fit(
            x,
            y,
            validation_split=0.25,
            epochs=3,
            verbose=0,
            callbacks=[keras.callbacks.ReduceLROnPlateau(patience=0, min_delta=10.0)],
        )


def test_plateau_callback_with_a_float_lr_and_foreign_schedules() -> None:
    x, y = tiny_data()
    model = tiny_model(0.05)
    cb = PlateauCallback(ReduceOnPlateau(patience=0, factor=0.5, threshold=0.99))
    model.fit(x, y, validation_split=0.25, epochs=3, verbose=0, callbacks=[cb])
    assert float(
        keras.ops.convert_to_numpy(model.optimizer.learning_rate)
    ) == pytest.approx(0.0125)
    foreign = tiny_model(keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.9))
    with pytest.raises(TypeError, match=r"an lrkit\.keras\.Schedule or a float"):
        foreign.fit(
            x,
            y,
            validation_split=0.25,
            epochs=1,
            verbose=0,
            callbacks=[PlateauCallback()],
        )


def test_plateau_under_mixed_precision_scales_the_inner_schedule() -> None:
    """Keras wraps the optimizer in a LossScaleOptimizer; its inner one holds the LR."""
    x, y = tiny_data()
    schedule = Cosine(total_steps=20)
    lr = Schedule(schedule, base_lr=0.05)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    opt = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(learning_rate=lr))
    model.compile(optimizer=opt, loss="mse")
    spy = LRs()
    model.fit(
        x, y, batch_size=16, epochs=4, shuffle=False, verbose=0,
        callbacks=[reducing(), spy],
    )  # fmt: skip
    # the first evaluation sets the best; each later one reduces, from the next epoch
    scales = [1.0] * 8 + [0.5] * 4 + [0.25] * 4
    want = [0.05 * schedule(t) * k for t, k in zip(range(16), scales, strict=True)]
    np.testing.assert_allclose(spy.seen, want, rtol=1e-6)
    assert lr.plateau_scale == 0.5**3


class Applied(keras.callbacks.Callback):  # type: ignore[misc]
    """The LR each optimizer update applied, read off the weights.

    With ``loss = mean(y_pred)``, inputs of ones and no bias, every SGD update
    moves each weight by exactly the learning rate.
    """

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: object = None) -> None:
        self._w = self._kernel()

    def on_train_batch_end(self, batch: int, logs: object = None) -> None:
        moved = self._w - self._kernel()
        if moved != 0.0:  # a micro-batch that only accumulated moves nothing
            self.applied.append(moved)

    def _kernel(self) -> float:
        kernel = self.model.layers[-1].kernel
        return float(keras.ops.convert_to_numpy(kernel)[0, 0])


def mean_output(y_true: Any, y_pred: Any) -> Any:
    return keras.ops.mean(y_pred)


def test_gradient_accumulation_counts_optimizer_updates() -> None:
    """Keras passes micro-batch counts; accumulation_steps turns them into updates."""
    x, y = np.ones((32, 2), "float32"), np.zeros((32, 1), "float32")
    schedule = lrkit.Linear(total_steps=8, start_lr=1.0, end_lr=0.0)

    def run(lr: Schedule, callbacks: list[Any]) -> list[float]:
        model = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(1, use_bias=False)]
        )
        model.layers[-1].kernel.assign(np.zeros((2, 1), "float32"))
        opt = keras.optimizers.SGD(learning_rate=lr, gradient_accumulation_steps=2)
        model.compile(optimizer=opt, loss=mean_output)
        spy = Applied()
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[*callbacks, spy])
        return spy.applied

    applied = run(Schedule(schedule, base_lr=0.1, accumulation_steps=2), [])
    want = [0.1 * schedule(u) for u in range(8)]  # 16 micro-batches, 8 updates
    np.testing.assert_allclose(applied, want, rtol=1e-5)
    # the callback checks that the schedule counts what the optimizer does
    with pytest.raises(
        ValueError,
        match=r"accumulation_steps must be the optimizer's "
        r"gradient_accumulation_steps=2, got accumulation_steps=1\.",
    ):
        run(Schedule(schedule, base_lr=0.1), [reducing()])


JAX_SCRIPT = """
import json, sys
import numpy as np, keras, lrkit, lrkit.keras as lk

x, y = np.ones((16, 2), "float32"), np.zeros((16, 1), "float32")

class Applied(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.applied = []
    def on_train_batch_begin(self, batch, logs=None):
        self.w = float(keras.ops.convert_to_numpy(self.model.layers[-1].kernel)[0, 0])
    def on_train_batch_end(self, batch, logs=None):
        w = float(keras.ops.convert_to_numpy(self.model.layers[-1].kernel)[0, 0])
        self.applied.append(self.w - w)

class Feed(keras.callbacks.Callback):  # a metric that never improves
    def on_epoch_end(self, epoch, logs=None):
        logs["val_loss"] = 1.0

def run(lr, jit):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    model.layers[-1].kernel.assign(np.zeros((2, 1), "float32"))
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=lr),
        loss=lambda t, p: keras.ops.mean(p),
        jit_compile=jit,
    )
    plateau = lrkit.ReduceOnPlateau(patience=0, factor=0.5)
    spy = Applied()
    try:
        model.fit(x, y, batch_size=4, epochs=4, verbose=0,
                  callbacks=[Feed(), lk.PlateauCallback(plateau), spy])
    except lrkit.LRKitError as e:
        return str(e)
    return spy.applied

print(json.dumps({
    "backend": keras.backend.backend(),
    "schedule_eager": run(lk.Schedule("cosine(20)", base_lr=0.1), False),
    "schedule_jit": run(lk.Schedule("cosine(20)", base_lr=0.1), "auto"),
    "float_jit": run(0.1, "auto"),
}))
"""


def test_jax_backend_applies_the_scale_or_says_why_not(tmp_path: Any) -> None:
    """On JAX, the compiled step cannot see the scale of a Schedule: a clear error.

    Run in a fresh process (the backend is chosen at import); skipped without JAX.
    """
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    script = tmp_path / "jax_plateau.py"
    script.write_text(JAX_SCRIPT)
    src = str(Path(lrkit.__file__).resolve().parents[1])
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["backend"] == "jax"
    cos = Cosine(total_steps=20)
    scales = [1.0] * 8 + [0.5] * 4 + [0.25] * 4  # reductions after epochs 2 and 3
    want = [0.1 * cos(t) * k for t, k in zip(range(16), scales, strict=True)]
    np.testing.assert_allclose(out["schedule_eager"], want, rtol=1e-5)
    assert "model.jit_compile must be False on the JAX backend" in out["schedule_jit"]
    np.testing.assert_allclose(out["float_jit"], [0.1 * k for k in scales], rtol=1e-5)


def test_patience_is_one_less_than_keras() -> None:
    """Keras's patience=p reduces where lrkit's patience=p-1 does.

    (Keras's min_delta is lrkit's absolute threshold.)
    """
    stream = [1.0, 0.9, 0.95, 0.95, 0.8, 0.85, 0.86, 0.87, 0.9, 0.7, 0.75, 0.76]
    model = tiny_model(0.1)
    theirs = keras.callbacks.ReduceLROnPlateau(
        monitor="val_loss", patience=2, factor=0.5, min_delta=0.0
    )
    theirs.set_model(model)
    theirs.on_train_begin()
    keras_lrs = []
    for epoch, v in enumerate(stream):
        theirs.on_epoch_end(epoch, {"val_loss": v})
        keras_lrs.append(
            float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
        )
    model2 = tiny_model(0.1)
    ours = PlateauCallback(
        ReduceOnPlateau(patience=1, factor=0.5, threshold=0.0, threshold_mode="abs")
    )
    ours.set_model(model2)
    ours.on_train_begin()
    our_lrs = []
    for epoch, v in enumerate(stream):
        ours.on_epoch_end(epoch, {"val_loss": v})
        our_lrs.append(
            float(keras.ops.convert_to_numpy(model2.optimizer.learning_rate))
        )
    assert our_lrs == pytest.approx(keras_lrs)
    assert min(our_lrs) < 0.1  # the stream does trigger reductions


def test_validation() -> None:
    with pytest.raises(TypeError, match="schedule must be callable"):
        Schedule(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="base_lr must be >= 0"):
        Schedule(Constant(), base_lr=-1.0)
    with pytest.raises(TypeError, match="plateau must be a lrkit"):
        PlateauCallback(plateau=0.5)  # type: ignore[arg-type]
    cb = PlateauCallback()
    with pytest.raises(TypeError, match=r"state must be a lrkit\.PlateauState"):
        cb.state = {"scale": 0.5}  # type: ignore[assignment]
    with pytest.raises(ValueError, match=r"state\.scale must be > 0"):
        cb.state = lrkit.PlateauState(scale=0.0, best=1.0)
    assert cb.state == ReduceOnPlateau().init()  # bad input changed nothing
    with pytest.raises(ValueError, match="accumulation_steps must be an int >= 1"):
        Schedule(Constant(), accumulation_steps=0)
    with pytest.raises(
        ValueError,
        match=r"config must be a dict with keys \['accumulation_steps', 'base_lr', "
        r"'schedule'\], got config=\{'schedule': .*\}\. Pass what "
        r"Schedule\.get_config\(\) returned\.",
    ):
        Schedule.from_config({"schedule": Constant().to_config()})
    with pytest.raises(TypeError, match="config must be a mapping"):
        Schedule.from_config("constant()")  # type: ignore[arg-type]


# ------------------------------------------------------------ MonitorCallback
def _regression(lr: float, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((512, 8)).astype("float32")
    y = (x @ rng.standard_normal((8, 1)) + 0.1 * rng.standard_normal((512, 1))).astype(
        "float32"
    )
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr), loss="mse")
    return model, x, y


def test_monitor_callback_reads_each_batch_loss_back() -> None:
    """Keras logs the epoch's running mean at every batch; with the weights
    frozen (LR 0) each batch's own loss is known: the callback reads it back."""
    model, x, y = _regression(0.0)
    cb = MonitorCallback(verbose=False)
    model.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0, callbacks=[cb])
    per_batch = [
        float(model.evaluate(x[i : i + 64], y[i : i + 64], verbose=0))
        for i in range(0, 512, 64)
    ]
    np.testing.assert_allclose(cb.losses, per_batch * 2, rtol=1e-4)
    assert cb.monitor.stats()["losses"] == 16


def test_monitor_callback_is_silent_on_a_healthy_fit_and_sees_validation() -> None:
    model, x, y = _regression(0.05)
    cb = MonitorCallback(verbose=False)
    history = model.fit(
        x, y, epochs=6, batch_size=32, validation_split=0.25, verbose=0, callbacks=[cb]
    )
    assert len(history.epoch) == 6 and cb.stopped_by is None
    assert not [f for f in cb.monitor.findings if f.severity != "info"]
    # the epoch means of the losses read back are Keras's own epoch losses
    per_epoch = np.asarray(cb.losses).reshape(6, -1).mean(axis=1)
    np.testing.assert_allclose(per_epoch, history.history["loss"], rtol=1e-3)
    assert cb.monitor.stats()["val_losses"] == 6
    # the History fit returns (or its dict) is diagnosed as it is
    for given in (history, history.history):
        d = lrkit.diagnose(given)
        assert d.verdict in ("healthy", "too short") and d.steps == 6
    # the History object brings its optimizer's constant LR (its advice has
    # numbers); the dict of columns alone has none
    from lrkit.monitor import _as_history

    assert _as_history(history).lr.tolist() == pytest.approx([0.05] * 6)
    assert _as_history(history.history).lr.size == 0


def test_monitor_callback_stops_a_diverging_fit() -> None:
    model, x, y = _regression(5.0)
    cb = MonitorCallback(verbose=False)
    history = model.fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.stopped_by is not None and cb.stopped_by.kind in ("nan", "diverged")
    assert len(history.epoch) < 20
    assert "LR" in cb.stopped_by.advice


def test_monitor_callback_stops_a_run_an_lr_far_too_high_has_killed() -> None:
    """SGD at 3 on the digits: the loss blows up in the first steps and the
    ReLU net is dead at chance (2.30) for good. It used to run all 10 epochs
    (the early blow-up was dated back and read as recovered)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.data / 16).astype("float32"), d.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((64,)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(3.0), loss="sparse_categorical_crossentropy"
    )
    cb = MonitorCallback(verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=10, verbose=0, callbacks=[cb])
    assert len(history.epoch) < 10
    assert cb.stopped_by is not None and cb.stopped_by.evidence.get("stuck")
    assert abs(cb.losses[-1] - np.log(10)) < 0.2  # at chance


def test_monitor_callback_reports_a_withdrawal_once_across_fits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The end of each fit() judges the run so far; a too_slow withdrawn at the
    end of the first is reported there, not again after the next fit."""
    t = np.arange(5000)
    noise = 0.05 * np.random.default_rng(0).standard_normal(5000)
    mon = lrkit.Monitor()
    for step, v in enumerate(2.0 * np.exp(-t / 1000) + 0.3 + noise):
        mon.update(step, float(v))
    assert any(f.kind == "too_slow" for f in mon.findings)
    cb = MonitorCallback(monitor=mon, verbose=True)
    cb.on_train_end()  # what Keras calls when a fit() ends
    cb.on_train_end()  # and when the next one ends
    out = capsys.readouterr().out
    assert out.count("too_slow from step") == 1 and "withdrawn" in out
    assert [f.kind for f in mon.withdrawn] == ["too_slow"]


def test_monitor_callback_bad_arguments() -> None:
    with pytest.raises(ValueError, match="stop_on must be"):
        MonitorCallback(stop_on=("explode",))
    with pytest.raises(TypeError, match="monitor must be"):
        MonitorCallback(monitor="yes")  # type: ignore[arg-type]
    for bad in (None, 5):
        with pytest.raises(TypeError, match="stop_on must be a sequence"):
            MonitorCallback(stop_on=bad)  # type: ignore[arg-type]
    cb = MonitorCallback(stop_on=(k for k in ("nan", "plateau")))
    assert cb.stop_on == {"nan", "plateau"}  # a generator is read once
    with pytest.raises(TypeError, match="verbose must be True or False"):
        MonitorCallback(verbose="no")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="loss_key must be a non-empty log key"):
        MonitorCallback(loss_key="")
    with pytest.raises(TypeError, match="monitor must be a non-empty log key"):
        PlateauCallback(monitor="")


def test_monitor_callback_stops_every_fit_that_diverges() -> None:
    """The first fit diverges and is stopped; a second fit on the broken
    weights is stopped at once too (its NaN extends the open finding); after
    good weights are loaded (and the monitor told so), a fit trains."""
    model, x, y = _regression(5.0)
    good = [w.copy() for w in model.get_weights()]
    cb = MonitorCallback(verbose=False)
    first = model.fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.stopped_by is not None and len(first.epoch) < 20
    second = model.fit(x, y, epochs=20, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.stopped_by is not None and len(second.epoch) == 1
    model.set_weights(good)
    model.optimizer.learning_rate.assign(0.01)
    cb.monitor.reset()  # the loss moves on purpose: other weights
    third = model.fit(x, y, epochs=3, batch_size=32, verbose=0, callbacks=[cb])
    assert len(third.epoch) == 3 and cb.stopped_by is None


def test_monitor_callback_stops_on_an_info_kind_when_asked() -> None:
    """stop_on holds any kind: a plateau (an info finding) stops the fit."""
    model, x, y = _regression(0.05)
    cb = MonitorCallback(
        lrkit.MonitorConfig(plateau_patience=2), stop_on=("plateau",), verbose=False
    )
    history = model.fit(
        x,
        y,
        epochs=60,
        batch_size=128,
        validation_split=0.25,
        verbose=0,
        callbacks=[cb],
    )
    assert cb.stopped_by is not None and cb.stopped_by.kind == "plateau"
    assert len(history.epoch) < 60


def test_monitor_callback_feeds_the_lr_each_batch_trained_with() -> None:
    """Under warmup the LR rises every step: the monitor gets the LR the batch
    used, not the next step's."""
    model, x, y = _regression(0.0)
    warm = Schedule(lrkit.Warmup(steps=10, then=lrkit.Constant(lr=0.1)))
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=warm), loss="mse")
    seen: list[float] = []

    class Spy(lrkit.Monitor):
        def update(self, step: int, loss: Any, **kw: Any) -> Any:
            if loss is not None:
                seen.append(kw["lr"])
            return super().update(step, loss, **kw)

    cb = MonitorCallback(Spy(), verbose=False)
    model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0, callbacks=[cb])
    expected = [float(warm.schedule(t)) for t in range(8)]
    np.testing.assert_allclose(seen, expected, rtol=1e-5)


@pytest.mark.parametrize("verbose", [True, False])
def test_monitor_callback_prints_once_and_is_quiet_when_asked(verbose: bool) -> None:
    """In a plain Python process (no logging set up, where Python writes
    warnings to stderr): a finding is printed once with verbose=True, and
    nothing at all is written with verbose=False."""
    from tests.helpers import run_python

    code = f"""
import os
os.environ["KERAS_BACKEND"] = "torch"
import keras, numpy as np
from lrkit.keras import MonitorCallback
keras.utils.set_random_seed(0)
x = np.random.default_rng(0).standard_normal((512, 8)).astype("float32")
y = x.sum(1, keepdims=True)
model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(1)])
model.compile(optimizer=keras.optimizers.SGD(5.0), loss="mse")
cb = MonitorCallback(verbose={verbose})
model.fit(x, y, epochs=5, batch_size=32, verbose=0, callbacks=[cb])
assert cb.stopped_by is not None
"""
    p = run_python(code)
    assert p.returncode == 0, p.stderr
    assert (p.stdout + p.stderr).count("lrkit: ") == (1 if verbose else 0), p.stderr


def test_monitor_callback_warns_once_when_the_loss_key_is_missing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, x, y = _regression(0.05)
    cb = MonitorCallback(loss_key="ce", verbose=False)
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[cb])
    assert sum("no 'ce' in the training logs" in r.message for r in caplog.records) == 1
    assert cb.losses == []
    cb = MonitorCallback(loss_key="loss", verbose=False)
    model.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[cb])
    assert len(cb.losses) == 8


def test_plateau_callback_is_quiet_on_epochs_without_validation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model, x, y = _regression(0.05)
    cb = PlateauCallback(lrkit.ReduceOnPlateau(patience=2))
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        model.fit(
            x,
            y,
            epochs=6,
            batch_size=64,
            validation_split=0.25,
            validation_freq=3,
            verbose=0,
            callbacks=[cb],
        )
    assert not [r for r in caplog.records if "not in the logs" in r.message]
    cb = PlateauCallback(lrkit.ReduceOnPlateau(patience=2), monitor="val_acc")
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        model.fit(
            x,
            y,
            epochs=3,
            batch_size=64,
            validation_split=0.25,
            verbose=0,
            callbacks=[cb],
        )
    assert sum("'val_acc' is not in the logs" in r.message for r in caplog.records) == 1
    cb = PlateauCallback(lrkit.ReduceOnPlateau(patience=2))  # no validation data
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        model.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=[cb])
    assert sum("was in no epoch's logs" in r.message for r in caplog.records) == 1


# ------------------------------------------------- MonitorCallback: resume
class _Interrupt(keras.callbacks.Callback):  # type: ignore[misc]
    """A crash at the start of epoch ``at`` (as in Keras's BackupAndRestore docs)."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
        if epoch == self.at:
            raise RuntimeError("interrupted")


def _momentum_regression() -> tuple[Any, np.ndarray, np.ndarray]:
    """A regression whose LR is high enough for findings (a spike at least)."""
    model, x, y = _regression(0.05)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    return model, x, y


def _fit(model: Any, x: np.ndarray, y: np.ndarray, callbacks: list[Any]) -> Any:
    return model.fit(
        x,
        y,
        epochs=6,
        batch_size=32,
        shuffle=False,
        validation_split=0.25,
        verbose=0,
        callbacks=callbacks,
    )


def test_monitor_callback_resumes_with_backup_and_restore(tmp_path: Any) -> None:
    """A fit interrupted after epoch 3 and resumed in a new model and callback
    (BackupAndRestore and MonitorCallback sharing backup_dir) ends with the
    monitor state of the uninterrupted run, step numbers included."""
    model, x, y = _momentum_regression()
    whole = MonitorCallback(verbose=False)
    _fit(model, x, y, [whole])
    backup = tmp_path / "backup"
    model, x, y = _momentum_regression()
    first = MonitorCallback(verbose=False, backup_dir=backup)
    with pytest.raises(RuntimeError, match="interrupted"):
        _fit(
            model,
            x,
            y,
            [keras.callbacks.BackupAndRestore(str(backup)), first, _Interrupt(3)],
        )
    saved = json.loads((backup / "lrkit_monitor.json").read_text())
    assert saved["step"] == 3 * 12 and first.monitor.updates == 3 * 12
    model, x, y = _momentum_regression()  # a new process: fresh objects
    resumed = MonitorCallback(verbose=False, backup_dir=backup)
    history = _fit(
        model, x, y, [keras.callbacks.BackupAndRestore(str(backup)), resumed]
    )
    assert history.epoch == [3, 4, 5]  # BackupAndRestore did resume
    assert resumed.state_dict() == whole.state_dict()
    assert resumed.monitor.findings == whole.monitor.findings
    assert resumed.monitor.stats()["val_losses"] == 6
    assert not (backup / "lrkit_monitor.json").exists()  # the run ended


def test_monitor_callback_state_dict_round_trip_and_bad_state(tmp_path: Any) -> None:
    model, x, y = _momentum_regression()
    cb = MonitorCallback(verbose=False)
    _fit(model, x, y, [cb])
    state = cb.state_dict()
    json.dumps(state, allow_nan=False)  # plain data
    other = MonitorCallback(verbose=False)
    other.load_state_dict(state)
    assert other.state_dict() == state
    fresh = MonitorCallback(verbose=False)
    before = fresh.state_dict()
    for bad in ({"step": 3}, {"monitor": state["monitor"], "step": -1}, "x"):
        with pytest.raises(ValueError, match="state_dict must be a dict returned"):
            fresh.load_state_dict(bad)  # type: ignore[arg-type]
    assert fresh.state_dict() == before  # nothing changed
    with pytest.raises(TypeError, match="backup_dir must be a directory path"):
        MonitorCallback(backup_dir=3)  # type: ignore[arg-type]
    # a damaged file: a clear error naming it, and the callback is unchanged
    (tmp_path / "lrkit_monitor.json").write_text("{not json")
    cb = MonitorCallback(verbose=False, backup_dir=tmp_path)
    model, x, y = _momentum_regression()
    with pytest.raises(ValueError, match=r"backup_dir must be .*lrkit_monitor\.json"):
        _fit(model, x, y, [cb])
    assert cb.monitor.updates == 0
    (tmp_path / "lrkit_monitor.json").write_text(json.dumps({"monitor": {}}))
    with pytest.raises(ValueError, match="lrkit_monitor.json: state_dict must be"):
        _fit(model, x, y, [MonitorCallback(verbose=False, backup_dir=tmp_path)])


def test_monitor_callback_warns_when_the_model_was_not_restored(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file without BackupAndRestore: the model starts over while the
    monitor goes on from step 36; said once, and training goes on."""
    model, x, y = _momentum_regression()
    with pytest.raises(RuntimeError):
        _fit(
            model,
            x,
            y,
            [MonitorCallback(verbose=False, backup_dir=tmp_path), _Interrupt(3)],
        )
    model, x, y = _momentum_regression()
    cb = MonitorCallback(verbose=False, backup_dir=tmp_path)
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        history = _fit(model, x, y, [cb])
    said = [r.message for r in caplog.records if "its state is at step 36" in r.message]
    assert len(said) == 1 and "optimizer at step 0" in said[0]
    assert len(history.epoch) == 6 and cb.monitor.stats()["losses"] == 36 + 6 * 12


def test_monitor_callback_counts_from_the_optimizer_of_a_trained_model() -> None:
    model, x, y = _momentum_regression()
    _fit(model, x, y, [])
    cb = MonitorCallback(verbose=False)
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[cb])
    assert cb.monitor.last_step == 6 * 12 + 16 - 1  # 72 steps before, 16 now
    assert cb.monitor.config.resumed  # judged as a resumed run


def test_plateau_reductions_in_warmup_keep_their_factor_with_min_lr() -> None:
    """Reductions at the end of epochs still in the warmup keep their full
    factor once it is over (min_lr floors the LR at every step, not the
    scale: floored at min_lr / the warmup's LR then, they stayed too weak);
    one that would change nothing even at base_lr is not made."""

    class Worse(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs["val_loss"] = float(epoch)  # gets worse every epoch

    keras.utils.set_random_seed(0)
    x = np.random.rand(64, 4).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    lr = Schedule("warmup(100) >> constant()", base_lr=0.1)
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    plateau = ReduceOnPlateau(factor=0.1, patience=0, min_lr=1e-3)
    cb = PlateauCallback(plateau=plateau)
    y = x.sum(1, keepdims=True)
    model.fit(x, y, batch_size=64, epochs=3, verbose=0, callbacks=[Worse(), cb])
    assert cb.state.reductions == 2  # at steps 2 and 3 of the warmup
    assert lr.plateau_scale == pytest.approx(0.01, rel=1e-6)
    assert float(keras.ops.convert_to_numpy(lr(200))) == pytest.approx(1e-3, rel=1e-6)
    # min(u, max(u × 0.01, 1e-3)): held at min_lr, unless the warmup is lower
    assert float(keras.ops.convert_to_numpy(lr(2))) == pytest.approx(1e-3, rel=1e-6)
    assert float(keras.ops.convert_to_numpy(lr(0))) == pytest.approx(0.1 / 101)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[Worse(), cb])
    assert cb.state.reductions == 2  # the LR is at min_lr even at base_lr


# ------------------------------------------------- PlateauCallback: resume
@pytest.mark.parametrize("backup_first", [True, False], ids=["backup", "plateau"])
@pytest.mark.parametrize("kind", ["float", "schedule"])
def test_plateau_callback_resumes_with_backup_and_restore(
    kind: str, backup_first: bool, tmp_path: Any
) -> None:
    """A fit interrupted at the start of epoch 3 and resumed by a new model
    and callback (BackupAndRestore and PlateauCallback sharing backup_dir,
    either listed first) trains with the LRs, plateau state and weights of the
    uninterrupted run. BackupAndRestore listed first saves the optimizer
    before the callback's reduction of that epoch: a float LR lags it there."""
    x, y = tiny_data()
    backup = tmp_path / "backup"

    def callback(backup_dir: Any) -> PlateauCallback:
        return PlateauCallback(
            ReduceOnPlateau(patience=0, factor=0.5, threshold=0.99),
            monitor="loss",
            backup_dir=backup_dir,
        )

    def run(
        backup_dir: Any, *extra: Any, cb: Any = None
    ) -> tuple[Any, PlateauCallback, Any, LRs]:
        lr: object = 0.05
        if kind == "schedule":
            lr = Schedule(Warmup(steps=3) >> Cosine(total_steps=30), base_lr=0.05)
        model = tiny_model(lr)
        cb = cb or callback(backup_dir)
        pair = [cb]
        if backup_dir is not None:
            pair = [keras.callbacks.BackupAndRestore(str(backup_dir)), cb]
            if not backup_first:
                pair.reverse()
        spy = LRs()
        history = model.fit(
            x, y, batch_size=16, epochs=6, shuffle=False, verbose=0,
            callbacks=[*pair, spy, *extra],
        )  # fmt: skip
        return model, cb, history, spy

    model, whole, _, whole_lrs = run(None)
    for again in (False, True):  # a new process, or the same callback again
        first = callback(backup)
        with pytest.raises(RuntimeError, match="interrupted"):
            run(backup, _Interrupt(3), cb=first)
        saved = json.loads((backup / "lrkit_plateau.json").read_text())
        assert saved["epoch"] == 2 and saved["state"]["reductions"] == 2
        resumed_model, resumed, history, lrs = run(backup, cb=first if again else None)
        assert history.epoch == [3, 4, 5]  # BackupAndRestore did resume
        assert lrs.seen == whole_lrs.seen[3 * 4 :]  # 4 batches an epoch
        assert resumed.state == whole.state and whole.state.reductions == 5
        for a, b in zip(resumed_model.get_weights(), model.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        assert not (backup / "lrkit_plateau.json").exists()  # the run ended


def test_plateau_callback_backup_errors_and_warnings(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = tiny_data()
    with pytest.raises(TypeError, match="backup_dir must be a directory path"):
        PlateauCallback(backup_dir=3)  # type: ignore[arg-type]
    # "" would write into the current directory (BackupAndRestore refuses it)
    for cb in (PlateauCallback, MonitorCallback):
        with pytest.raises(ValueError, match="backup_dir must be a non-empty"):
            cb(backup_dir="")
    path = tmp_path / "lrkit_plateau.json"
    path.write_text("{not json")
    cb = PlateauCallback(monitor="loss", backup_dir=tmp_path)
    fit = {"batch_size": 16, "epochs": 2, "verbose": 0}
    with pytest.raises(ValueError, match=r"backup_dir must be .*lrkit_plateau\.json"):
        tiny_model(0.05).fit(x, y, callbacks=[cb], **fit)
    assert cb.state == ReduceOnPlateau().init()  # unchanged
    state = ReduceOnPlateau().init().to_dict()
    state.update(scale=-1.0, best={"t": "float", "v": "inf"})
    path.write_text(json.dumps({"state": state, "base": None, "epoch": 0}))
    with pytest.raises(ValueError, match=r"lrkit_plateau\.json: state\['scale'\] must"):
        tiny_model(0.05).fit(
            x, y, callbacks=[PlateauCallback(backup_dir=tmp_path)], **fit
        )
    # a state without BackupAndRestore: the model starts over at epoch 0 while
    # the plateau goes on from epoch 2; said once, and training goes on
    state.update(scale=0.25, reductions=2, evals=3, best=1.0)
    path.write_text(json.dumps({"state": state, "base": 0.05, "epoch": 2}))
    cb = PlateauCallback(monitor="loss", backup_dir=tmp_path)
    model = tiny_model(0.05)
    spy = LRs()
    with caplog.at_level("WARNING", logger="lrkit.keras"):
        model.fit(x, y, callbacks=[cb, spy], **fit)
    said = [r.message for r in caplog.records if "end of epoch 2" in r.message]
    assert len(said) == 1 and "starts at epoch 0" in said[0]
    assert spy.seen[0] == pytest.approx(0.05 * 0.25)  # the state's LR, base 0.05
    # a state set by hand is not overwritten by a backup
    path.write_text(json.dumps({"state": state, "base": 0.05, "epoch": 2}))
    cb = PlateauCallback(monitor="loss", backup_dir=tmp_path)
    cb.state = ReduceOnPlateau().init()
    spy = LRs()
    tiny_model(0.05).fit(x, y, callbacks=[cb, spy], **fit)
    assert spy.seen[0] == pytest.approx(0.05)
