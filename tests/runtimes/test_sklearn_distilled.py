"""A linear scikit-learn model's distilled form answers bit for bit as the estimator, in
memory and read back from its cache, and leaves every other input to scikit-learn."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from modelhost.runtimes.sklearn_distilled import Distilled, cache_key, cached, distil, store


def _fitted() -> dict[str, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import (
        LinearRegression,
        LogisticRegression,
        Ridge,
        SGDClassifier,
    )
    from sklearn.svm import LinearSVC, LinearSVR

    x, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings of the tiny fits
        return {
            "logistic, 3 classes": LogisticRegression(max_iter=1000).fit(x, y),
            "logistic, 2 classes": LogisticRegression(max_iter=1000).fit(x, y == 1),
            "logistic, string labels": LogisticRegression(max_iter=1000).fit(x, labels),
            "linear regression": LinearRegression().fit(x, y),
            "linear regression, 2 targets": LinearRegression().fit(x, np.c_[y, 2 * y]),
            "float32, no intercept": LinearRegression(fit_intercept=False).fit(
                x.astype(np.float32), y.astype(np.float32)
            ),
            "ridge": Ridge().fit(x, y),
            "sgd classifier": SGDClassifier(random_state=0).fit(x, y),
            "linear svc": LinearSVC(random_state=0).fit(x, y),
            "linear svr": LinearSVR(random_state=0).fit(x, y),
        }


FITTED = _fitted()


def _same(ours: np.ndarray | None, theirs: np.ndarray) -> None:
    assert ours is not None
    assert ours.dtype == theirs.dtype
    assert ours.shape == theirs.shape
    assert ours.tobytes() == theirs.tobytes()


def _stored(form: Distilled, tmp_path: Path) -> Distilled:
    assert store(form, "key", tmp_path) == tmp_path / "key.npz"
    again = cached("key", tmp_path)
    assert again is not None
    return again


inputs = st.one_of(
    hnp.arrays(
        st.sampled_from([np.float64, np.float32]),
        st.tuples(st.integers(1, 40), st.just(4)),
        elements=st.floats(-1e6, 1e6, width=32),
    ),
    hnp.arrays(np.int64, st.tuples(st.integers(1, 40), st.just(4)), elements=st.integers(-99, 99)),
)


@pytest.mark.parametrize("name", sorted(FITTED))
@settings(max_examples=40, deadline=None)
@given(x=inputs, fortran=st.booleans())
def test_the_distilled_form_answers_as_the_estimator(
    name: str, x: np.ndarray, fortran: bool, tmp_path_factory: pytest.TempPathFactory
) -> None:
    estimator = FITTED[name]
    form = distil(estimator)
    assert form is not None
    again = _stored(form, tmp_path_factory.mktemp("distilled"))
    if fortran:
        x = np.asfortranarray(x)
    for method in ("predict", "predict_proba") if form.proba else ("predict",):
        theirs = getattr(estimator, method)(x.copy(order="K"))
        _same(getattr(form, method)(x.copy(order="K")), theirs)
        _same(getattr(again, method)(x.copy(order="K")), theirs)


def test_what_is_distilled_and_what_is_not() -> None:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Lasso, LogisticRegression, RidgeClassifier, SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    logistic = distil(FITTED["logistic, 3 classes"])
    assert logistic is not None
    assert logistic.proba == "softmax"
    assert logistic.has_proba
    binary = distil(FITTED["logistic, 2 classes"])
    assert binary is not None
    assert binary.proba == "binary-expit"
    # Its predict is distilled, its predict_proba (log loss, not LogisticRegression's) is not.
    sgd = distil(SGDClassifier(loss="log_loss", random_state=0).fit(x, y))
    assert sgd is not None
    assert sgd.has_proba
    assert not sgd.proba
    assert sgd.predict_proba(x[:2]) is None
    for other in (
        RandomForestClassifier(n_estimators=2, random_state=0).fit(x, y),
        Lasso().fit(x, y),  # its own _decision_function
        RidgeClassifier().fit(x, y),  # its own predict
        make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y),
    ):
        assert distil(other) is None, type(other).__name__


def test_a_model_fitted_on_named_columns_is_left_to_scikit_learn() -> None:
    import pandas as pd
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True, as_frame=True)
    assert isinstance(x, pd.DataFrame)
    assert distil(LogisticRegression(max_iter=1000).fit(x, y)) is None


def test_a_form_that_answers_differently_is_not_kept() -> None:
    estimator = FITTED["logistic, 3 classes"]
    form = distil(estimator)
    assert form is not None
    from modelhost.runtimes.sklearn_distilled import agrees

    assert agrees(form, estimator)
    form.coef = form.coef.copy()
    form._coef_t = form.coef.T
    form.coef[0, 0] = np.nextafter(form.coef[0, 0], np.inf)  # one bit
    assert not agrees(form, estimator)


@pytest.mark.parametrize(
    "x",
    [
        np.array([[6.8, 2.8, np.nan, 1.4]]),
        np.array([[6.8, 2.8, np.inf, 1.4]]),
        np.array([[6.8, 2.8, 4.8]]),  # the wrong width
        np.array([6.8, 2.8, 4.8, 1.4]),  # one dimension
        np.empty((0, 4)),
        np.array([[True, False, True, False]]),
        np.array([[6.8, 2.8, 4.8, 1.4]], dtype=np.float16),
        np.array([["6.8", "2.8", "4.8", "1.4"]]),
        [[6.8, 2.8, 4.8, 1.4]],
    ],
    ids=["nan", "inf", "width", "1-d", "empty", "bool", "float16", "strings", "list"],
)
def test_inputs_scikit_learn_validates_its_own_way_are_left_to_it(x: Any) -> None:
    form = distil(FITTED["logistic, 3 classes"])
    assert form is not None
    assert form.predict(x) is None
    assert form.predict_proba(x) is None


def test_a_data_frame_is_left_to_scikit_learn() -> None:
    import pandas as pd

    form = distil(FITTED["logistic, 3 classes"])
    assert form is not None
    assert form.predict(pd.DataFrame([[6.8, 2.8, 4.8, 1.4]])) is None


def test_the_cache_key_follows_the_model_file(tmp_path: Path) -> None:
    model = tmp_path / "model.joblib"
    model.write_bytes(b"one")
    first = cache_key(model)
    assert first is not None
    assert first == cache_key(model)
    model.write_bytes(b"two")
    assert cache_key(model) not in (None, first)


def test_a_damaged_or_foreign_cache_file_is_not_read(tmp_path: Path) -> None:
    form = distil(FITTED["logistic, 3 classes"])
    assert form is not None
    assert cached("absent", tmp_path) is None
    (tmp_path / "damaged.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert cached("damaged", tmp_path) is None
    # An array of Python objects would need pickle to read: refused, not run.
    with (tmp_path / "objects.npz").open("wb") as file:
        np.savez(file, meta=np.asarray("{}"), coef=np.array([object()], dtype=object))
    assert cached("objects", tmp_path) is None


def test_labels_of_object_dtype_are_served_but_not_stored(tmp_path: Path) -> None:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"], dtype=object)[y]
    estimator = LogisticRegression(max_iter=1000).fit(x, labels)
    assert estimator.classes_.dtype == object
    form = distil(estimator)
    assert form is not None
    _same(form.predict(x[:5]), estimator.predict(x[:5]))
    assert store(form, "key", tmp_path) is None
    assert list(tmp_path.iterdir()) == []
