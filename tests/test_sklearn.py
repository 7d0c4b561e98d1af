"""Tests of lrkit.sklearn.find_lr: real scikit-learn MLPs on bundled data."""

from __future__ import annotations

import copy
import pickle
import warnings
from typing import Any, ClassVar

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from scipy import sparse  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits  # noqa: E402
from sklearn.linear_model import SGDClassifier  # noqa: E402
from sklearn.metrics import log_loss  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import lrkit  # noqa: E402
import lrkit.sklearn as lsk  # noqa: E402

_X, _Y = load_digits(return_X_y=True)
X, Y = _X / 16, _Y
XT, YT, XV, YV = X[:1400], Y[:1400], X[1400:], Y[1400:]


def mlp(**kw: Any) -> MLPClassifier:
    return MLPClassifier(
        **{"hidden_layer_sizes": (32,), "random_state": 0, "batch_size": 64, **kw}
    )


def fitted_val_loss(lr: float, **kw: Any) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning
        clf = mlp(learning_rate_init=lr, max_iter=10, **kw).fit(XT, YT)
    return float(log_loss(YV, clf.predict_proba(XV)))


def test_the_suggestion_trains_better_than_far_off_lrs() -> None:
    for solver in ("adam", "sgd"):
        kw = {"solver": solver, "momentum": 0.9}
        result = lsk.find_lr(mlp(**kw), XT, YT, validation_data=(XV, YV))
        s = result.suggestion
        assert s is not None, solver
        at = fitted_val_loss(s, **kw)
        assert at < fitted_val_loss(s / 30, **kw), solver  # 30x lower: too slow
        assert at < fitted_val_loss(s * 30, **kw), solver  # 30x higher: unstable
        assert len(result.val_losses) > 10


def test_the_estimator_and_the_global_rng_are_left_alone() -> None:
    clf = mlp(random_state=None)  # draws its initial weights from np.random
    params = clf.get_params()
    np.random.seed(7)
    state = np.random.get_state()[1].copy()
    lsk.find_lr(clf, XT, YT, num_steps=50)
    assert not hasattr(clf, "coefs_") and clf.get_params() == params
    np.testing.assert_array_equal(np.random.get_state()[1], state)


def test_a_fitted_estimator_is_tested_from_its_weights_and_kept() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = mlp(max_iter=5).fit(XT, YT)
    before = pickle.dumps(clf)
    fresh = lsk.find_lr(mlp(), XT, YT, num_steps=50, end_lr=1e-3)
    warm = lsk.find_lr(clf, XT, YT, num_steps=50, end_lr=1e-3)
    assert pickle.dumps(clf) == before  # weights, optimizer state, loss curve
    assert (
        warm.settings.extra["from_fitted"] and not fresh.settings.extra["from_fitted"]
    )
    assert np.mean(warm.losses[:10]) < 0.75 * np.mean(fresh.losses[:10])


def test_the_ladder_sets_each_updates_lr() -> None:
    # plain SGD (its own schedule would rescale the LR after each partial_fit):
    # on the same batches, LRs of 1e-9..1e-8 give the losses of an untrained
    # model, and LRs of 1e-2..1e-1 bring them down
    kw = {"solver": "sgd", "momentum": 0.0, "learning_rate": "invscaling"}

    def run(start_lr: float) -> np.ndarray[Any, Any]:
        r = lsk.find_lr(
            mlp(**kw),
            XT,
            YT,
            start_lr=start_lr,
            end_lr=10 * start_lr,
            num_steps=40,
            suggest=False,
        )
        return np.array(r.losses)

    still, tiny, big = run(1e-14), run(1e-9), run(1e-2)
    np.testing.assert_allclose(tiny, still, atol=1e-6)
    assert np.mean(big[-5:]) < 0.9 * np.mean(still[-5:])


def test_divergence_is_a_result() -> None:
    clf = mlp(solver="sgd", momentum=0.9)
    result = lsk.find_lr(clf, XT, YT, start_lr=1e-4, end_lr=1e3)
    assert result.stop_reason in ("diverged", "nan")
    assert len(result.lrs) < result.settings.num_steps
    assert result.suggestion is not None and result.suggestion < result.lrs[-1] / 3


def test_weights_that_overflow_end_the_test_as_a_result() -> None:
    # sklearn raises ValueError once an update leaves non-finite weights: the
    # test records it as a NaN loss and stops, it does not crash (an LR so high
    # that the weights overflow at the second update, before the range test's
    # blow-up rule, two losses in a row above 10x the first, stops it)
    reg = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", random_state=0)
    result = lsk.find_lr(
        reg, _X * 100, _Y * 1e3, start_lr=1e17, end_lr=1e20, num_steps=30
    )
    assert result.stop_reason == "nan"
    assert 1 < len(result.lrs) < 30 and not np.isfinite(result.losses[-1])


def test_validation_loss_is_the_loss_sklearn_trains_on() -> None:
    base = pytest.importorskip("sklearn.neural_network._base")
    from sklearn.preprocessing import LabelBinarizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = mlp(max_iter=3).fit(XT, YT)
        two = np.stack([YT % 2, (YT > 4).astype(int)], axis=1)
        multi = mlp(max_iter=3).fit(XT, two)
        xd, yd = load_diabetes(return_X_y=True)
        xd = StandardScaler().fit_transform(xd)
        yd = yd / 100
        sq = MLPRegressor(hidden_layer_sizes=(8,), max_iter=20, random_state=0)
        po = MLPRegressor(
            loss="poisson", hidden_layer_sizes=(8,), max_iter=20, random_state=0
        )
        sq.fit(xd, yd)
        po.fit(xd, yd)
    losses = base.LOSS_FUNCTIONS
    onehot = LabelBinarizer().fit(YT).transform(YT)
    cases = [
        (clf, XT, YT, losses["log_loss"](onehot, clf.predict_proba(XT))),
        (multi, XT, two, losses["binary_log_loss"](two, multi.predict_proba(XT))),
        (sq, xd, yd, losses["squared_error"](yd, sq.predict(xd))),
        (po, xd, yd, losses["poisson"](yd, po.predict(xd))),
    ]
    for est, x, y, want in cases:
        assert lsk._val_loss(est, x, y) == pytest.approx(want, rel=1e-9)


def test_regressors_binary_multilabel_and_sparse_inputs() -> None:
    xd, yd = load_diabetes(return_X_y=True)
    xd = StandardScaler().fit_transform(xd)
    yd = (yd - yd.mean()) / yd.std()
    reg = MLPRegressor(hidden_layer_sizes=(16,), random_state=0)
    r = lsk.find_lr(reg, xd[:330], yd[:330], validation_data=(xd[330:], yd[330:]))
    assert r.suggestion is not None and r.settings.extra["estimator"] == "MLPRegressor"
    assert r.val_losses[0] == pytest.approx(r.val_losses[0])  # finite
    two = np.stack([yd, -yd], axis=1)
    r = lsk.find_lr(reg, xd, two, num_steps=60)
    assert len(r.lrs) >= 30
    xb, yb = load_breast_cancer(return_X_y=True)
    xb = StandardScaler().fit_transform(xb)
    r = lsk.find_lr(
        mlp(batch_size="auto"), xb[:400], yb[:400], validation_data=(xb[400:], yb[400:])
    )
    assert r.settings.extra["batch_size"] == 200 and r.suggestion is not None
    multi = np.stack([YT % 2, (YT > 4).astype(int)], axis=1)
    r = lsk.find_lr(
        mlp(),
        XT,
        multi,
        validation_data=(XV, np.stack([YV % 2, (YV > 4).astype(int)], axis=1)),
        num_steps=60,
    )
    assert np.isfinite(r.val_losses).all()
    r = lsk.find_lr(
        mlp(),
        sparse.csr_matrix(XT),
        YT,
        num_steps=60,
        validation_data=(sparse.csr_matrix(XV), YV),
    )
    assert np.isfinite(r.losses).all()


def test_result_is_data_hooks_and_sweep_recipe(tmp_path: Any) -> None:
    seen: list[float] = []
    r = lsk.find_lr(
        mlp(), XT, YT, num_steps=40, suggest=False, progress=lambda p: seen.append(p.lr)
    )
    assert r.suggestion is None and seen == list(r.lrs)
    loaded = lrkit.RangeTestResult.load(r.save(tmp_path / "r.json"))
    assert loaded.settings.extra["framework"] == "sklearn"
    # docs/find.md's sweep recipe: each run fits a clone, nothing to reset
    result = lsk.find_lr(mlp(), XT, YT, validation_data=(XV, YV))
    base = mlp(max_iter=10)

    def train_fn(lr: float) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = sklearn.base.clone(base).set_params(learning_rate_init=lr).fit(XT, YT)
        return float(log_loss(YV, est.predict_proba(XV)))

    swept = lrkit.sweep(train_fn, around=result, num_lrs=3, extend=1)
    assert swept.best_lr is not None and len(swept.lrs) >= 3
    assert not hasattr(base, "coefs_")


class _Counting(MLPClassifier):  # type: ignore[misc]
    """Counts the updates (one backward pass each) and the rows they saw."""

    updates: ClassVar[list[int]] = []

    def _backprop(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        _Counting.updates.append(x.shape[0])
        return super()._backprop(x, *args, **kwargs)


def test_one_update_per_rung_whatever_the_batch_sizes() -> None:
    # the copy takes find_lr's batch size: partial_fit would split a larger
    # batch into the estimator's own (several updates at one LR)
    for own, given in (("auto", 512), (64, 256), (64, 32)):
        _Counting.updates = []
        est = _Counting(hidden_layer_sizes=(16,), random_state=0, batch_size=own)
        r = lsk.find_lr(est, XT, YT, batch_size=given, num_steps=20, end_lr=1e-3)
        assert r.settings.extra["batch_size"] == given
        assert _Counting.updates == [given] * 20, (own, given)


def test_estimators_sklearn_fits_that_a_copy_must_train() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        early = mlp(early_stopping=True, max_iter=5).fit(XT, YT)
    cases = {
        "warm start, small batches missing classes": (mlp(warm_start=True), 16),
        "fitted with early stopping": (early, None),
        "an int hidden_layer_sizes": (mlp(hidden_layer_sizes=16), None),
    }
    for name, (est, batch) in cases.items():
        before = pickle.dumps(est)
        r = lsk.find_lr(est, XT, YT, batch_size=batch, validation_data=(XV, YV))
        assert r.suggestion is not None, name
        assert pickle.dumps(est) == before, name
    column = lsk.find_lr(mlp(), XT, YT[:, None], validation_data=(XV, YV[:, None]))
    flat = lsk.find_lr(mlp(), XT, YT, validation_data=(XV, YV))
    assert column.losses == flat.losses and column.val_losses == flat.val_losses
    weighted = lsk.find_lr(
        mlp(),
        XT,
        YT,
        sample_weight=np.where(YT == 3, 5.0, 1.0),
        num_steps=50,
        suggest=False,
    )
    plain = lsk.find_lr(mlp(), XT, YT, num_steps=50, suggest=False)
    assert weighted.losses != plain.losses and np.isfinite(weighted.losses).all()
    with pytest.raises(TypeError, match=r"pass its last step \(pipe\[-1\]\)"):
        lsk.find_lr(make_pipeline(StandardScaler(), mlp()), XT, YT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lbfgs = mlp(solver="lbfgs", max_iter=5).fit(XT, YT)
    lbfgs.set_params(solver="adam")
    with pytest.raises(ValueError, match="fitted with solver 'lbfgs'"):
        lsk.find_lr(lbfgs, XT, YT)


def test_ctrl_c_inside_partial_fit_stops_the_test() -> None:
    # sklearn turns a KeyboardInterrupt inside partial_fit into a warning
    calls = []

    class Interrupted(MLPClassifier):  # type: ignore[misc]
        def _backprop(self, *args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) == 5:
                raise KeyboardInterrupt
            return super()._backprop(*args, **kwargs)

    est = Interrupted(hidden_layer_sizes=(16,), random_state=0, batch_size=64)
    state = np.random.get_state()[1].copy()
    with pytest.raises(KeyboardInterrupt):
        lsk.find_lr(est, XT, YT, num_steps=50)
    assert len(calls) == 5
    np.testing.assert_array_equal(np.random.get_state()[1], state)


class TestErrors:
    def test_bad_arguments_name_the_parameter_and_change_nothing(self) -> None:
        clf = mlp()
        params = copy.deepcopy(clf.get_params())
        cases: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
            (SGDClassifier(), {}, TypeError, "estimator must be an MLPClassifier"),
            (mlp(solver="lbfgs"), {}, ValueError, "estimator.solver must be 'sgd'"),
            (clf, {"y": YT[:10]}, ValueError, "y must be one target per row of X"),
            (clf, {"batch_size": 0}, ValueError, "batch_size must be"),
            (clf, {"seed": True}, TypeError, "seed must be an int"),
            (clf, {"val_every": 0}, ValueError, "val_every must be"),
            (clf, {"end_lr": 1e-9}, ValueError, "end_lr must be"),
            (clf, {"validation_data": XV}, TypeError, "validation_data must be a pair"),
            (
                clf,
                {"validation_data": [XV]},
                TypeError,
                "validation_data must be a pair",
            ),
            (clf, {"validation_data": (XV, YV[:3])}, ValueError, "one target per row"),
            (clf, {"validation_data": (XV[:, :8], YV)}, ValueError, "rows shaped like"),
            (clf, {"X": XT[:0], "y": YT[:0]}, ValueError, "X must be at least one row"),
            (clf, {"X": 3}, TypeError, "X must be a 2-D array of rows"),
            (clf, {"X": np.arange(3.0), "y": YT[:3]}, ValueError, "x.reshape"),
            (clf, {"seed": -1}, ValueError, "seed must be an int >= 0"),
            (
                clf,
                {"X": np.where(XT > 0.9, np.nan, XT)},
                ValueError,
                "X must be finite",
            ),
            (clf, {"sample_weight": np.ones(3)}, ValueError, "sample_weight must be"),
            (
                MLPRegressor(),
                {"y": np.where(YT > 8, np.nan, YT.astype(float))},
                ValueError,
                "y must be finite",
            ),
            (
                MLPRegressor(),
                {"y": YT.astype(float), "validation_data": (XV, YV * np.nan)},
                ValueError,
                r"validation_data\[1\] must be finite",
            ),
            (
                clf,
                {"validation_data": (np.where(XV > 0.9, np.inf, XV), YV)},
                ValueError,
                r"validation_data\[0\] must be finite",
            ),
            (
                clf,
                {"X": XT[YT < 5], "y": YT[YT < 5]},
                ValueError,
                "validation_data must be labels the classifier is trained on",
            ),
            (
                mlp(batch_size="big"),
                {},
                ValueError,
                "estimator.batch_size must be 'auto' or an int",
            ),
            (
                MLPRegressor(),
                {"y": np.stack([YT, YT], axis=1)},
                ValueError,
                "validation_data must be targets shaped like y's",
            ),
            (clf, {"suggest": "nope"}, ValueError, "suggest must be"),
        ]
        for est, kwargs, exc, text in cases:
            args = {"X": XT, "y": YT, "validation_data": (XV, YV), **kwargs}
            with pytest.raises(exc, match=text):
                lsk.find_lr(est, args.pop("X"), args.pop("y"), **args)
        assert clf.get_params() == params and not hasattr(clf, "coefs_")


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_an_sgd_lr_schedule_the_test_does_not_replay_is_named(schedule: str) -> None:
    """The test holds each LR for one update: with invscaling the LR to set
    as learning_rate_init is above the constant one it suggests."""
    r = lsk.find_lr(mlp(solver="sgd", learning_rate=schedule), XT, YT, num_steps=60)
    assert r.suggestion_info is not None
    assert any(f"learning_rate='{schedule}'" in x for x in r.suggestion_info.reasons)
    plain = lsk.find_lr(mlp(solver="sgd"), XT, YT, num_steps=60).suggestion_info
    assert plain is not None and not any("learning_rate=" in x for x in plain.reasons)


def test_a_verbose_estimator_prints_nothing_and_is_left_verbose(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """verbose=True makes partial_fit print "Iteration ..." for every update:
    the copy the test trains is quiet; the estimator given keeps its setting."""
    clf = mlp(verbose=True)
    result = lsk.find_lr(clf, XT, YT, num_steps=40, progress=False)
    assert len(result.lrs) > 10
    assert capsys.readouterr().out == ""
    assert clf.get_params()["verbose"] is True


def test_negative_sample_weights_are_refused() -> None:
    weights = np.ones(len(YT))
    weights[[5, 9]] = -1.0
    clf = mlp()
    with pytest.raises(
        ValueError,
        match=r"sample_weight must be weights >= 0, got 2 negative weights "
        r"\(sample_weight\[5\]=-1\.0\)\.",
    ):
        lsk.find_lr(clf, XT, YT, sample_weight=weights, num_steps=20)
    assert not hasattr(clf, "coefs_")
    weights[[5, 9]] = 0.0  # zero is a weight (the row is left out)
    assert len(lsk.find_lr(clf, XT, YT, sample_weight=weights, num_steps=20).lrs)
