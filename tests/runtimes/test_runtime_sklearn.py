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


# -- the distilled form and its cache (modelhost.runtimes.sklearn_distilled) ------------------


@pytest.fixture
def cached_model(tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any) -> SKLearnModel:
    """Iris loaded a second time, from the distilled form the first load cached."""
    save_sklearn(sklearn_estimator, tmp_path / "iris")
    first = SKLearnModel("iris", tmp_path / "iris", fast_start_dir=tmp_path / "fast")
    assert first.load()
    assert first.estimator is not None  # the first load unpickles
    assert len(list((tmp_path / "fast").glob("*.npz"))) == 1
    again = SKLearnModel("iris", tmp_path / "iris", fast_start_dir=tmp_path / "fast")
    assert again.load()
    assert again._estimator is None  # served without unpickling
    return again


def test_a_second_load_serves_from_the_cache_as_the_estimator(
    cached_model: SKLearnModel, sklearn_estimator: Any, iris: Any
) -> None:
    x = iris[0][::7]
    instances = x.tolist()
    answer = cached_model.predict({"instances": instances})
    assert answer == {"predictions": sklearn_estimator.predict(x).tolist()}
    proba = cached_model.predict({"instances": instances, "predict_proba": True})
    assert proba == {"predictions": sklearn_estimator.predict_proba(x).tolist()}
    tensor = InferInput("input-0", list(x.shape), "FP64", data=x.ravel().tolist())
    response = cached_model.predict(InferRequest("iris", [tensor]))
    assert isinstance(response, InferResponse)
    assert response.outputs[0].data == sklearn_estimator.predict(x).tolist()
    assert cached_model._estimator is None  # none of these needed scikit-learn
    assert cached_model.get_input_types() == [
        {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    ]
    assert cached_model.get_output_types() == [
        {"name": "output-0", "datatype": "INT64", "shape": [-1]}
    ]


def test_an_input_the_cached_form_leaves_gets_scikit_learns_answer(
    cached_model: SKLearnModel,
) -> None:
    with pytest.raises(errors.InvalidInput, match="NaN") as info:
        cached_model.predict({"instances": [[6.8, 2.8, float("nan"), 1.4]]})
    assert errors.http_status(info.value) == 400
    assert type(cached_model._estimator).__name__ == "LogisticRegression"
    with pytest.raises(errors.InvalidInput, match="expecting 4 features"):
        cached_model.predict({"instances": [[6.8, 2.8, 4.8]]})


def test_the_estimator_is_unpickled_once_for_concurrent_requests(
    cached_model: SKLearnModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from modelhost.runtimes import sklearn as runtime

    calls: list[Path] = []
    unpickle = runtime._unpickle

    def counted(path: Path) -> Any:
        calls.append(path)
        return unpickle(path)

    monkeypatch.setattr(runtime, "_unpickle", counted)
    failures: list[BaseException] = []
    start = threading.Barrier(8)

    def ask() -> None:
        start.wait()
        try:
            cached_model.predict({"instances": [[float("inf"), 2.8, 4.8, 1.4]]})
        except errors.InvalidInput as exc:
            failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == 8
    assert len(calls) == 1


def test_the_cached_form_keeps_the_load_time_checks(
    tmp_path: Path, iris: Any, save_sklearn: Any
) -> None:
    from sklearn.linear_model import SGDClassifier

    save_sklearn(SGDClassifier(random_state=0).fit(*iris), tmp_path / "sgd")
    fast = tmp_path / "fast"
    assert SKLearnModel("sgd", tmp_path / "sgd", fast_start_dir=fast).load()
    again = SKLearnModel("sgd", tmp_path / "sgd", fast_start_dir=fast)
    again.load()
    assert again._estimator is None
    with pytest.raises(errors.InvalidInput, match=r"\(SGDClassifier\) does not support"):
        again.predict({"instances": [SAMPLE], "predict_proba": True})
    with pytest.raises(errors.ModelLoadError, match="predict_proba was asked for"):
        SKLearnModel("sgd", tmp_path / "sgd", predict_proba=True, fast_start_dir=fast).load()


def test_a_predict_proba_it_does_not_distil_is_the_estimators(
    tmp_path: Path, iris: Any, save_sklearn: Any
) -> None:
    from sklearn.linear_model import SGDClassifier

    estimator = SGDClassifier(loss="log_loss", random_state=0).fit(*iris)
    save_sklearn(estimator, tmp_path)
    model = SKLearnModel("sgd", tmp_path)
    model.load()
    assert model._distilled is not None
    answer = model.predict({"instances": [SAMPLE], "predict_proba": True})
    assert answer == {"predictions": estimator.predict_proba(np.array([SAMPLE])).tolist()}


def test_without_distil_or_for_other_estimators_nothing_is_cached(
    tmp_path: Path, iris: Any, sklearn_estimator: Any, save_sklearn: Any
) -> None:
    from sklearn.tree import DecisionTreeClassifier

    save_sklearn(sklearn_estimator, tmp_path / "iris")
    off = SKLearnModel("iris", tmp_path / "iris", distil=False, fast_start_dir=tmp_path / "a")
    off.load()
    assert off._distilled is None
    assert not (tmp_path / "a").exists()
    assert off.predict({"instances": [SAMPLE]}) == {"predictions": [1]}
    save_sklearn(DecisionTreeClassifier(random_state=0).fit(*iris), tmp_path / "tree")
    tree = SKLearnModel("tree", tmp_path / "tree", fast_start_dir=tmp_path / "b")
    tree.load()
    assert tree._distilled is None
    assert not (tmp_path / "b").exists()


def test_a_cache_folder_it_cannot_write_does_not_fail_the_load(
    tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    save_sklearn(sklearn_estimator, tmp_path / "iris")
    (tmp_path / "fast").write_text("a file where the folder would be")
    caplog.set_level("INFO", logger="modelhost.runtimes.sklearn")
    for _ in range(3):
        model = SKLearnModel("iris", tmp_path / "iris", fast_start_dir=tmp_path / "fast")
        assert model.load()
        assert model.predict({"instances": [SAMPLE]}) == {"predictions": [1]}
    said = [r.getMessage() for r in caplog.records if "Not keeping" in r.getMessage()]
    assert len(said) == 1, said


CACHED_LOAD = """
import json, sys
import numpy as np
from modelhost.runtimes.sklearn import SKLearnModel

model = SKLearnModel("iris", sys.argv[1], fast_start_dir=sys.argv[2])
model.load()
before = sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules)
answer = model.predict({"instances": [[6.8, 2.8, 4.8, 1.4]]})
during = sorted(m for m in ("sklearn", "scipy", "joblib") if m in sys.modules)
try:
    model.predict({"instances": [[6.8, 2.8, float("nan"), 1.4]]})
except Exception as exc:
    refused = type(exc).__name__
print(json.dumps([before, answer, during, refused, "sklearn" in sys.modules]))
"""


def test_a_fresh_interpreter_serves_the_cached_form_without_scikit_learn(
    tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any
) -> None:
    import json
    import subprocess
    import sys

    save_sklearn(sklearn_estimator, tmp_path / "iris")
    SKLearnModel("iris", tmp_path / "iris", fast_start_dir=tmp_path / "fast").load()
    result = subprocess.run(
        [sys.executable, "-c", CACHED_LOAD, str(tmp_path / "iris"), str(tmp_path / "fast")],
        capture_output=True,
        text=True,
        check=True,
    )
    before, answer, during, refused, later = json.loads(result.stdout.splitlines()[-1])
    assert before == during == []
    assert answer == {"predictions": [1]}
    assert refused == "InvalidInput"
    assert later is True  # the NaN needed scikit-learn's own validation


def test_no_distil_on_the_command_line_serves_through_the_estimator(
    tmp_path: Path, sklearn_estimator: Any, save_sklearn: Any
) -> None:
    from modelhost.cli import build_parser, runtime_options
    from modelhost.runtimes import build_model

    save_sklearn(sklearn_estimator, tmp_path)
    for flags, distilled in (([], True), (["--no-distil"], False)):
        options = runtime_options(build_parser().parse_args(["serve", str(tmp_path), *flags]))
        model = build_model(tmp_path, "iris", options=options)
        assert isinstance(model, SKLearnModel)
        assert model.load()
        assert (model._distilled is not None) is distilled
        assert model.predict({"instances": [SAMPLE]}) == {"predictions": [1]}
