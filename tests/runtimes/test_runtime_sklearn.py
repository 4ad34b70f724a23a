"""The scikit-learn runtime: loading, both payload kinds, predict_proba, and input errors."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from modelhost.runtimes.sklearn import SKLearnModel

SAMPLE = [6.8, 2.8, 4.8, 1.4]


def v2_request(parameters: dict[str, Any] | None = None, **kwargs: Any) -> InferRequest:
    tensor = InferInput("input-0", [1, 4], "FP32", data=list(SAMPLE))
    return InferRequest("iris", [tensor], parameters=parameters, **kwargs)


@pytest.fixture
def model(tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any) -> SKLearnModel:
    save_sklearn(sklearn_estimator, tmp_path)
    model = SKLearnModel("iris", tmp_path)
    assert model.load()
    return model


@pytest.mark.parametrize("filename", ["model.joblib", "model.pkl", "model.pickle"])
def test_loads_joblib_and_pickle(
    tmp_path: Path, sklearn_estimator: Any, sample: Any, filename: str
) -> None:
    if filename == "model.joblib":
        import joblib

        joblib.dump(sklearn_estimator, tmp_path / filename)
    else:
        with (tmp_path / filename).open("wb") as file:
            pickle.dump(sklearn_estimator, file)
    model = SKLearnModel("iris", tmp_path)
    assert model.load()
    assert model.ready
    assert model.platform == "sklearn"
    expected = sklearn_estimator.predict(sample).tolist()
    assert model.predict({"instances": [SAMPLE]}) == {"predictions": expected}


def test_v1_prediction_is_the_framework_prediction(
    model: SKLearnModel, sklearn_estimator: Any, sample: Any
) -> None:
    expected = sklearn_estimator.predict(sample).tolist()
    assert expected == [1]  # versicolor: a sample that is not the first class
    assert model.predict({"instances": [SAMPLE]}) == {"predictions": expected}


def test_v2_prediction_is_the_framework_prediction(
    model: SKLearnModel, sklearn_estimator: Any, sample: Any
) -> None:
    response = model.predict(v2_request(), None)
    assert isinstance(response, InferResponse)
    output = response.outputs[0]
    assert output.name == "output-0"
    assert output.shape == [1]
    expected = sklearn_estimator.predict(sample.astype(np.float32))
    assert output.as_numpy().tolist() == expected.tolist() == [1]


def test_predict_proba_from_the_constructor(
    tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any, sample: Any
) -> None:
    save_sklearn(sklearn_estimator, tmp_path)
    model = SKLearnModel("iris", tmp_path, predict_proba=True)
    model.load()
    result = model.predict({"instances": [SAMPLE]})
    np.testing.assert_allclose(result["predictions"], sklearn_estimator.predict_proba(sample))
    assert model.get_output_types() == [{"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}]


def test_predict_proba_asked_by_a_v1_request(
    model: SKLearnModel, sklearn_estimator: Any, sample: Any
) -> None:
    result = model.predict({"instances": [SAMPLE], "predict_proba": True})
    np.testing.assert_allclose(result["predictions"], sklearn_estimator.predict_proba(sample))
    assert model.predict({"instances": [SAMPLE], "predict_proba": False}) == {"predictions": [1]}


def test_predict_proba_asked_by_a_v2_parameter(
    model: SKLearnModel, sklearn_estimator: Any, sample: Any
) -> None:
    response = model.predict(v2_request({"predict_proba": True}))
    output = response.outputs[0]
    assert output.shape == [1, 3]
    # The v2 request sends FP32: compare with the framework on the same numbers.
    expected = sklearn_estimator.predict_proba(sample.astype(np.float32))
    np.testing.assert_allclose(output.as_numpy(), expected)


def test_predict_proba_asked_by_a_requested_output(
    model: SKLearnModel, sklearn_estimator: Any, sample: Any
) -> None:
    response = model.predict(v2_request(request_outputs=[RequestedOutput("predict_proba")]))
    output = response.outputs[0]
    assert output.name == "predict_proba"
    expected = sklearn_estimator.predict_proba(sample.astype(np.float32))
    np.testing.assert_allclose(output.as_numpy(), expected)


def test_predict_proba_on_a_model_without_it(tmp_path: Path, iris: Any, save_sklearn: Any) -> None:
    from sklearn.linear_model import LinearRegression

    save_sklearn(LinearRegression().fit(*iris), tmp_path)
    model = SKLearnModel("reg", tmp_path)
    model.load()
    with pytest.raises(errors.InvalidInput, match="predict_proba"):
        model.predict({"instances": [SAMPLE], "predict_proba": True})
    with pytest.raises(errors.ModelLoadError, match="predict_proba"):
        SKLearnModel("reg", tmp_path, predict_proba=True).load()


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        ([[1.0, 2.0, 3.0]], "3 features"),
        ([["a", "b", "c", "d"]], "string"),
        ([6.8, 2.8, 4.8, 1.4], "2D array"),
    ],
)
def test_bad_input_is_a_400_with_the_framework_message(
    model: SKLearnModel, instances: Any, message: str
) -> None:
    with pytest.raises(errors.InvalidInput, match=message) as info:
        model.predict({"instances": instances})
    assert errors.http_status(info.value) == 400


def test_wrong_feature_count_in_a_v2_request(model: SKLearnModel) -> None:
    request = InferRequest("iris", [InferInput("input-0", [1, 3], "FP32", data=[1.0, 2.0, 3.0])])
    with pytest.raises(errors.InvalidInput, match="expecting 4 features"):
        model.predict(request)


def test_metadata(model: SKLearnModel) -> None:
    assert model.get_input_types() == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    assert model.get_output_types() == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]


def test_metadata_before_load_is_empty(tmp_path: Path) -> None:
    model = SKLearnModel("iris", tmp_path)
    assert model.get_input_types() == []
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": [SAMPLE]})


def test_unload(model: SKLearnModel) -> None:
    model.unload()
    assert not model.ready
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": [SAMPLE]})


def test_several_model_files(tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any) -> None:
    save_sklearn(sklearn_estimator, tmp_path, "a.joblib")
    save_sklearn(sklearn_estimator, tmp_path, "b.pkl")
    with pytest.raises(errors.ModelLoadError, match=r"a\.joblib, b\.pkl"):
        SKLearnModel("iris", tmp_path).load()


def test_a_file_path_picks_that_file(
    tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any
) -> None:
    save_sklearn(sklearn_estimator, tmp_path, "a.joblib")
    chosen = save_sklearn(sklearn_estimator, tmp_path, "b.pkl")
    model = SKLearnModel("iris", chosen)
    assert model.load()


def test_no_model_file(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(errors.ModelLoadError, match="No sklearn model file"):
        SKLearnModel("iris", tmp_path).load()


def test_corrupt_file(tmp_path: Path) -> None:
    (tmp_path / "model.joblib").write_bytes(b"garbage")
    with pytest.raises(errors.ModelLoadError, match="Cannot load"):
        SKLearnModel("iris", tmp_path).load()


def test_a_pickle_without_predict(tmp_path: Path, save_sklearn: Any) -> None:
    save_sklearn({"not": "a model"}, tmp_path)
    with pytest.raises(errors.ModelLoadError, match="dict, not a model"):
        SKLearnModel("iris", tmp_path).load()
