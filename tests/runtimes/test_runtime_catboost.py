"""The CatBoost runtime: classifiers and regressors saved here as .cbm, served over REST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from serving import RunningServer, start_server, stop_server

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.catboost import CatBoostModel

ROWS = [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]
# allow_writing_files=False: no catboost_info folder left in the working directory.
TRAINING = {
    "iterations": 10,
    "depth": 2,
    "verbose": False,
    "thread_count": 1,
    "allow_writing_files": False,
}


@pytest.fixture(scope="module")
def trained(iris: tuple[Any, Any]) -> dict[str, Any]:
    import catboost

    x, y = iris
    return {
        "clf": catboost.CatBoostClassifier(**TRAINING).fit(x, y),
        # Sepal length, sepal width and petal length in, petal width out.
        "reg": catboost.CatBoostRegressor(**TRAINING).fit(x[:, :3], x[:, 3]),
        "named": catboost.CatBoostClassifier(**TRAINING).fit(
            x, np.where(y == 0, "setosa", "other")
        ),
    }


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, Any]) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("catboost")
    paths = {}
    for name, model in trained.items():
        (root / name).mkdir()
        model.save_model(str(root / name / "model.cbm"))
        paths[name] = root / name
    return paths


def loaded(folder: Path, name: str, **options: Any) -> CatBoostModel:
    model = build_model(folder, name, options=options)
    assert isinstance(model, CatBoostModel)
    assert model.load()
    return model


@pytest.fixture(scope="module")
def models(folders: dict[str, Path]) -> dict[str, CatBoostModel]:
    return {name: loaded(folder, name) for name, folder in folders.items()}


@pytest.fixture(scope="module")
def server(models: dict[str, CatBoostModel]) -> Iterator[RunningServer]:
    running = start_server(list(models.values()))
    yield running
    stop_server(running)


def test_detection_and_options(folders: dict[str, Path]) -> None:
    folder = folders["clf"]
    assert detect_runtime(folder) == "catboost"
    assert detect_runtime(folder / "model.cbm") == "catboost"
    model = build_model(folder, "clf", options={"nthread": 2, "predict_proba": "true"})
    assert isinstance(model, CatBoostModel)
    assert (model.nthread, model.predict_proba) == (2, True)
    assert model.platform == "catboost"
    assert model.get_input_types() == []  # nothing is known before load
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": ROWS})


def test_classify_as_the_framework(models: dict[str, CatBoostModel], trained: Any) -> None:
    expected = trained["clf"].predict(np.array(ROWS)).ravel().tolist()
    assert expected == [1, 0]  # versicolor and setosa: not all the first class
    assert models["clf"].predict({"instances": ROWS}) == {"predictions": expected}
    request = InferRequest("clf", [InferInput("input-0", [2, 4], "FP32", data=ROWS)])
    response = models["clf"].predict(request)
    assert isinstance(response, InferResponse)
    assert response.outputs[0].shape == [2]
    assert response.outputs[0].as_numpy().tolist() == expected


def test_string_labels(models: dict[str, CatBoostModel], trained: Any) -> None:
    expected = trained["named"].predict(np.array(ROWS)).tolist()
    assert expected == ["other", "setosa"]
    assert models["named"].predict({"instances": ROWS}) == {"predictions": expected}
    assert models["named"].get_output_types() == [
        {"name": "output-0", "datatype": "BYTES", "shape": [-1]}
    ]


def test_predict_proba(
    models: dict[str, CatBoostModel], folders: dict[str, Path], trained: Any
) -> None:
    expected = trained["clf"].predict_proba(np.array(ROWS))
    by_v1 = models["clf"].predict({"instances": ROWS, "predict_proba": True})
    np.testing.assert_allclose(by_v1["predictions"], expected)
    v2 = InferRequest(
        "clf",
        [InferInput("input-0", [2, 4], "FP64", data=ROWS)],
        parameters={"predict_proba": True},
    )
    output = models["clf"].predict(v2).outputs[0]
    assert (output.name, output.shape, output.datatype) == ("output-0", [2, 3], "FP64")
    np.testing.assert_allclose(output.as_numpy(), expected)
    v2.parameters = {}
    v2.request_outputs = [RequestedOutput("predict_proba")]
    output = models["clf"].predict(v2).outputs[0]
    assert output.name == "predict_proba"
    np.testing.assert_allclose(output.as_numpy(), expected)
    always = loaded(folders["clf"], "clf", predict_proba=True)
    np.testing.assert_allclose(always.predict({"instances": ROWS})["predictions"], expected)
    assert always.get_output_types() == [{"name": "output-0", "datatype": "FP64", "shape": [-1, 3]}]


def test_regression(
    models: dict[str, CatBoostModel], folders: dict[str, Path], trained: Any
) -> None:
    rows = [row[:3] for row in ROWS]
    expected = trained["reg"].predict(np.array(rows))
    np.testing.assert_allclose(models["reg"].predict({"instances": rows})["predictions"], expected)
    with pytest.raises(errors.InvalidInput, match="regressor: it has no predict_proba"):
        models["reg"].predict({"instances": rows, "predict_proba": True})
    with pytest.raises(errors.ModelLoadError, match="predict_proba was asked for"):
        loaded(folders["reg"], "reg", predict_proba=True)


def test_metadata(models: dict[str, CatBoostModel]) -> None:
    assert models["clf"].get_input_types() == [
        {"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}
    ]
    assert models["clf"].get_output_types() == [
        {"name": "output-0", "datatype": "INT64", "shape": [-1]}
    ]
    assert models["reg"].get_input_types() == [
        {"name": "input-0", "datatype": "FP64", "shape": [-1, 3]}
    ]
    assert models["reg"].get_output_types() == [
        {"name": "output-0", "datatype": "FP64", "shape": [-1]}
    ]


@pytest.mark.parametrize(
    ("instances", "message"),
    [
        (
            [[1.0, 2.0, 3.0]],
            r"takes rows of 4 features, shape \[n, 4\]; the request sends \[1, 3\]",
        ),
        ([6.8, 2.8, 4.8, 1.4], r"the request sends \[4\]"),
        (["6.8, 2.8, 4.8, 1.4"], "the request sends a list"),
        ([["a", "b", "c", "d"]], "Cannot convert 'a' to float"),
    ],
)
def test_bad_input_is_a_400(models: dict[str, CatBoostModel], instances: Any, message: str) -> None:
    with pytest.raises(errors.InvalidInput, match=message) as info:
        models["clf"].predict({"instances": instances})
    assert errors.http_status(info.value) == 400
    assert ".cpp:" not in str(info.value)


def test_end_to_end_over_http(server: RunningServer, trained: Any) -> None:
    metadata = httpx.get(f"{server.http_url}/v2/models/clf").json()
    assert metadata["platform"] == "catboost"
    assert metadata["inputs"] == [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]
    v1 = httpx.post(f"{server.http_url}/v1/models/clf:predict", json={"instances": ROWS})
    assert v1.status_code == 200, v1.text
    assert v1.json() == {"predictions": [1, 0]}
    body = {
        "inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP64", "data": ROWS}],
        "parameters": {"predict_proba": True},
    }
    v2 = httpx.post(f"{server.http_url}/v2/models/clf/infer", json=body)
    assert v2.status_code == 200, v2.text
    [output] = v2.json()["outputs"]
    assert output["shape"] == [2, 3]
    expected = trained["clf"].predict_proba(np.array(ROWS))
    np.testing.assert_allclose(np.reshape(output["data"], (2, 3)), expected)
    wrong = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1.0, 2.0]}]}
    bad = httpx.post(f"{server.http_url}/v2/models/clf/infer", json=wrong)
    assert bad.status_code == 400
    assert "takes rows of 4 features" in bad.json()["error"]


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "model.cbm").write_bytes(b"garbage")
    with pytest.raises(errors.ModelLoadError, match=r"Cannot load .*model\.cbm"):
        CatBoostModel("m", tmp_path).load()
    (tmp_path / "model.cbm").unlink()
    with pytest.raises(errors.ModelLoadError, match="No catboost model file"):
        CatBoostModel("m", tmp_path).load()


def test_unload(folders: dict[str, Path]) -> None:
    model = loaded(folders["reg"], "reg")
    model.unload()
    assert not model.ready
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": [[1.0, 2.0, 3.0]]})
