"""``:explain`` answered by the trust layer's SHAP and LIME explainers, over real sockets.

Real scikit-learn and XGBoost models, saved and loaded by their runtimes, served by a
``ModelServer`` on port 0 with the explainer passed in as ``ServerExtensions`` (as
``modelhost serve --explainer`` does); one test runs ``modelhost serve`` itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import joblib
import numpy as np
import pytest
from serving import ServeProcess, StartServer, serve_command, start_server, stop_server

from modelhost.model.model import Model
from modelhost.runtimes.sklearn import SKLearnModel
from modelhost.runtimes.xgboost import XGBoostModel
from modelhost.server.extensions import ServerExtensions
from modelhost.trust.explainers import ServedModelExplainer
from modelhost.trust.explainers.background import Background

RNG = np.random.default_rng(7)
X = RNG.normal(size=(300, 4))
Y_REGRESSION = X @ [1.0, -2.0, 0.5, 3.0] + RNG.normal(scale=0.1, size=300)
Y_CLASS = (X[:, 0] + X[:, 1] > 0).astype(int)
ROWS = X[:5].tolist()


def sklearn_model(estimator: Any, folder: Path, **options: Any) -> SKLearnModel:
    folder.mkdir(parents=True, exist_ok=True)
    joblib.dump(estimator, folder / "model.joblib")
    model = SKLearnModel("m", folder, **options)
    assert model.load()
    return model


def explain(url: str, rows: list[list[float]]) -> list[dict[str, Any]]:
    answer = httpx.post(f"{url}/v1/models/m:explain", json={"instances": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    explanations: list[dict[str, Any]] = answer.json()["explanations"]
    assert len(explanations) == len(rows)
    return explanations


def predict(url: str, rows: list[list[float]]) -> np.ndarray[Any, Any]:
    answer = httpx.post(f"{url}/v1/models/m:predict", json={"instances": rows}, timeout=60)
    assert answer.status_code == 200, answer.text
    return np.asarray(answer.json()["predictions"], dtype=np.float64)


def assert_shap_identity(explanation: dict[str, Any], prediction: Any) -> None:
    """sum(SHAP values) == prediction - expected value, per output, to 1e-6."""
    values = np.asarray(explanation["shap_values"])
    expected = np.asarray(explanation["expected_value"])
    np.testing.assert_allclose(explanation["prediction"], prediction, atol=1e-9)
    np.testing.assert_allclose(values.sum(axis=-1), np.asarray(prediction) - expected, atol=1e-6)


def serve_explained(serve: StartServer, model: Any, explainer: ServedModelExplainer) -> str:
    running = serve([model], extensions=ServerExtensions(explainer=explainer))
    return str(running.http_url)


def test_tree_regressor_shap_values_add_up_to_its_predictions(
    serve: StartServer, tmp_path: Path
) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    estimator = GradientBoostingRegressor(n_estimators=30, random_state=0).fit(X, Y_REGRESSION)
    url = serve_explained(serve, sklearn_model(estimator, tmp_path), ServedModelExplainer("shap"))
    predictions = predict(url, ROWS)
    for explanation, prediction in zip(explain(url, ROWS), predictions, strict=True):
        assert explanation["explainer"] == "tree"
        assert explanation["output"] == "predict"
        assert explanation["feature_names"] == ["f0", "f1", "f2", "f3"]
        assert_shap_identity(explanation, prediction)


def test_forest_classifier_explains_each_class_probability(
    serve: StartServer, tmp_path: Path
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    estimator = RandomForestClassifier(n_estimators=20, random_state=0).fit(X, Y_CLASS)
    model = sklearn_model(estimator, tmp_path, predict_proba=True)
    url = serve_explained(serve, model, ServedModelExplainer("shap"))
    probabilities = predict(url, ROWS)
    for explanation, row_probabilities in zip(explain(url, ROWS), probabilities, strict=True):
        assert explanation["output"] == "predict_proba"
        assert explanation["output_names"] == ["0", "1"]
        assert np.shape(explanation["shap_values"]) == (2, 4)
        assert_shap_identity(explanation, row_probabilities)


def test_linear_models_are_explained_exactly_against_the_background(
    serve: StartServer, tmp_path: Path
) -> None:
    from sklearn.linear_model import LinearRegression, LogisticRegression

    linear = LinearRegression().fit(X, Y_REGRESSION)
    background = Background(X[:50], ("a", "b", "c", "d"))
    url = serve_explained(
        serve, sklearn_model(linear, tmp_path / "linear"), ServedModelExplainer("shap", background)
    )
    for explanation, prediction in zip(explain(url, ROWS), predict(url, ROWS), strict=True):
        assert explanation["explainer"] == "linear"
        assert explanation["feature_names"] == ["a", "b", "c", "d"]
        assert_shap_identity(explanation, prediction)
    # Exact: each value is the coefficient times the distance from the background's mean.
    first = np.asarray(explain(url, ROWS[:1])[0]["shap_values"])
    np.testing.assert_allclose(first, linear.coef_ * (X[0] - X[:50].mean(axis=0)), atol=1e-9)

    logistic = LogisticRegression().fit(X, Y_CLASS)
    url = serve_explained(
        serve, sklearn_model(logistic, tmp_path / "logistic"), ServedModelExplainer("shap")
    )
    for explanation, row in zip(explain(url, ROWS), X[:5], strict=True):
        assert explanation["output"] == "decision_function"
        assert_shap_identity(explanation, logistic.decision_function(row[None])[0])


def test_xgboost_margin_is_explained_by_its_trees(serve: StartServer, tmp_path: Path) -> None:
    import xgboost as xgb

    booster = xgb.train(
        {"objective": "binary:logistic", "nthread": 1}, xgb.DMatrix(X, label=Y_CLASS), 10
    )
    booster.save_model(str(tmp_path / "model.json"))
    model = XGBoostModel("m", tmp_path)
    assert model.load()
    url = serve_explained(serve, model, ServedModelExplainer("shap"))
    margins = booster.predict(xgb.DMatrix(np.asarray(ROWS)), output_margin=True)
    for explanation, margin in zip(explain(url, ROWS), margins, strict=True):
        assert explanation["output"] == "margin"
        values = np.asarray(explanation["shap_values"])
        # XGBoost computes in float32.
        assert values.sum() == pytest.approx(margin - explanation["expected_value"], abs=1e-5)


def test_lime_gives_one_weight_per_feature_and_the_cache_answers_again(
    serve: StartServer, tmp_path: Path
) -> None:
    from sklearn.ensemble import GradientBoostingRegressor

    estimator = GradientBoostingRegressor(n_estimators=20, random_state=0).fit(X, Y_REGRESSION)
    explainer = ServedModelExplainer("lime", n_samples=500)
    url = serve_explained(serve, sklearn_model(estimator, tmp_path), explainer)
    first = explain(url, ROWS[:2])
    for explanation in first:
        assert explanation["explainer"] == "lime"
        assert len(explanation["feature_weights"]) == 4
        assert all(isinstance(w, float) for w in explanation["feature_weights"])
        assert isinstance(explanation["intercept"], float)
    assert explainer.computed == 2
    # The same rows again, and one new: only the new one is computed.
    again = explain(url, [*ROWS[:2], ROWS[2]])
    assert again[:2] == first
    assert explainer.computed == 3
    assert explainer.cache.hits == 2


def test_a_cached_row_is_the_same_object_not_a_recomputation(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    model = sklearn_model(LinearRegression().fit(X, Y_REGRESSION), tmp_path)
    explainer = ServedModelExplainer("lime", n_samples=200)
    first = explainer(model, {"instances": ROWS[:1]}, None)["explanations"][0]
    second = explainer(model, {"instances": ROWS[:1]}, None)["explanations"][0]
    assert second is first
    assert explainer.computed == 1


def test_bad_explain_requests_are_client_errors(serve: StartServer, tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    model = sklearn_model(LinearRegression().fit(X, Y_REGRESSION), tmp_path)
    url = serve_explained(serve, model, ServedModelExplainer("shap"))
    bodies: list[dict[str, Any]] = [{"instances": [["a", "b"]]}, {"rows": []}, {"instances": []}]
    for body in bodies:
        answer = httpx.post(f"{url}/v1/models/m:explain", json=body, timeout=30)
        assert answer.status_code == 400, (body, answer.text)
    explain(url, ROWS[:1])
    narrow = httpx.post(f"{url}/v1/models/m:explain", json={"instances": [[1.0, 2.0]]})
    assert narrow.status_code == 400
    assert "4" in narrow.json()["error"]


def test_without_an_explainer_explain_is_not_implemented(tmp_path: Path) -> None:
    from sklearn.linear_model import LinearRegression

    model = sklearn_model(LinearRegression().fit(X, Y_REGRESSION), tmp_path)
    running = start_server([model], host="127.0.0.1")
    try:
        answer = httpx.post(f"{running.http_url}/v1/models/m:explain", json={"instances": ROWS})
        assert answer.status_code == 501
    finally:
        stop_server(running)


def test_modelhost_serve_explainer_flag(tmp_path: Path) -> None:
    from sklearn.ensemble import RandomForestRegressor

    estimator = RandomForestRegressor(n_estimators=10, random_state=0).fit(X, Y_REGRESSION)
    folder = tmp_path / "m"
    folder.mkdir()
    joblib.dump(estimator, folder / "model.joblib")
    np.save(tmp_path / "background.npy", X[:20])
    served = ServeProcess(
        serve_command(
            str(folder),
            "--name",
            "m",
            "--explainer",
            "shap",
            "--explainer-background",
            str(tmp_path / "background.npy"),
        ),
        cwd=tmp_path,
    )
    try:
        for explanation, prediction in zip(
            explain(served.url, ROWS), predict(served.url, ROWS), strict=True
        ):
            assert explanation["explainer"] == "tree"
            assert_shap_identity(explanation, prediction)
    finally:
        assert served.stop() == 0


class WeightedSum(Model):
    """A custom model (no framework object to read): Kernel SHAP over its predict."""

    def __init__(self) -> None:
        super().__init__("m")
        self.ready = True

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        rows = np.asarray(payload["instances"], dtype=np.float64)
        return {"predictions": (rows @ [1.0, 2.0, -1.0, 0.5] + rows[:, 0] * rows[:, 1]).tolist()}


def test_a_custom_model_is_explained_by_kernel_shap_over_its_predict(
    serve: StartServer,
) -> None:
    url = serve_explained(serve, WeightedSum(), ServedModelExplainer("shap"))
    for explanation, prediction in zip(explain(url, ROWS), predict(url, ROWS), strict=True):
        assert explanation["explainer"] == "kernel"
        assert explanation["output"] == "predict"
        # Against the zero row: the expected value is the model's output there.
        assert explanation["expected_value"] == pytest.approx(0.0, abs=1e-12)
        assert_shap_identity(explanation, prediction)
