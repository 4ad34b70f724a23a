"""The MLflow runtime: pyfunc folders saved here, served by their signatures over REST and gRPC."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton_grpc
from serving import RunningServer, start_server, stop_server

from modelhost import errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse, RequestedOutput
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.mlflow import MLflowModel

pytestmark = [
    # Importing mlflow infers a schema from an internal type hint of Any and warns about it.
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
    # pyfunc.save_model warns without an input example; MLflow's handling of one trips
    # pandas deprecation warnings of its own, so the test models are saved without.
    pytest.mark.filterwarnings("ignore:.*An input example was not provided:UserWarning"),
]

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
ROWS = [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]


def iris_frame() -> Any:
    return pd.DataFrame(ROWS, columns=COLUMNS)


def save_sklearn_model(folder: Path, estimator: Any, x: Any) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    signature = infer_signature(x, estimator.predict(x))
    # cloudpickle: the default, skops, is not installed; the requirements are given so
    # that MLflow does not start a process to infer them.
    mlflow.sklearn.save_model(
        estimator,
        str(folder),
        signature=signature,
        serialization_format="cloudpickle",
        pip_requirements=["scikit-learn"],
    )
    return folder


def save_echo_model(folder: Path) -> Path:
    """Columns a (long), b (float), name (string) in; total = a + b and LABEL = upper(name) out."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema
    from mlflow.types.schema import ParamSchema, ParamSpec

    class Echo(mlflow.pyfunc.PythonModel):
        # A hint, or MLflow warns that there is none (under warning filters of its own,
        # which a test's cannot override); the signature is given below.
        def predict(self, context, model_input: pd.DataFrame, params=None):
            scale = (params or {}).get("scale", 1.0)
            return pd.DataFrame(
                {
                    "total": (model_input["a"] + model_input["b"]) * scale,
                    "label": model_input["name"].str.upper(),
                }
            )

    signature = ModelSignature(
        inputs=Schema([ColSpec("long", "a"), ColSpec("float", "b"), ColSpec("string", "name")]),
        outputs=Schema([ColSpec("double", "total"), ColSpec("string", "label")]),
        params=ParamSchema([ParamSpec("scale", "double", 1.0)]),
    )
    mlflow.pyfunc.save_model(
        str(folder), python_model=Echo(), signature=signature, pip_requirements=["pandas"]
    )
    return folder


def save_tensor_model(folder: Path) -> Path:
    """A tensor signature of one unnamed FP32 [-1, 3] tensor in, and one out: 2 * x."""
    import mlflow.pyfunc
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    class Double(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: np.ndarray, params=None):
            return model_input * 2

    signature = ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 3))]),
    )
    mlflow.pyfunc.save_model(
        str(folder), python_model=Double(), signature=signature, pip_requirements=["numpy"]
    )
    return folder


@pytest.fixture(scope="module")
def estimator(iris: tuple[Any, Any]) -> Any:
    from sklearn.linear_model import LogisticRegression

    x = pd.DataFrame(iris[0], columns=COLUMNS)
    return LogisticRegression(max_iter=1000).fit(x, iris[1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, estimator: Any, iris: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mlflow")
    x = pd.DataFrame(iris[0], columns=COLUMNS)
    return {
        "iris": save_sklearn_model(root / "iris", estimator, x),
        "echo": save_echo_model(root / "echo"),
        "tensor": save_tensor_model(root / "tensor"),
    }


@pytest.fixture(scope="module")
def models(folders: dict[str, Path]) -> dict[str, MLflowModel]:
    loaded = {}
    for name, folder in folders.items():
        model = build_model(folder, name)
        assert isinstance(model, MLflowModel)
        assert model.load()
        loaded[name] = model
    return loaded


@pytest.fixture(scope="module")
def server(models: dict[str, MLflowModel]) -> Iterator[RunningServer]:
    running = start_server(list(models.values()))
    yield running
    stop_server(running)


def column_inputs(rows: list[list[float]], names: list[str]) -> list[dict[str, Any]]:
    return [
        {"name": name, "shape": [len(rows)], "datatype": "FP64", "data": [r[i] for r in rows]}
        for i, name in enumerate(names)
    ]


def test_an_mlmodel_folder_is_mlflow_even_with_a_model_pkl(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = folders["iris"]
    assert (folder / "model.pkl").is_file()
    assert detect_runtime(folder) == "mlflow"
    assert detect_runtime(folder / "MLmodel") == "mlflow"
    # The same pickle without the MLmodel file is a scikit-learn model.
    shutil.copy(folder / "model.pkl", tmp_path / "model.pkl")
    assert detect_runtime(tmp_path) == "sklearn"
    model = build_model(folder / "MLmodel", "iris")
    assert isinstance(model, MLflowModel)
    assert model.get_input_types() == []  # nothing is known before load
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": ROWS})


def test_metadata_over_http(server: RunningServer) -> None:
    iris = httpx.get(f"{server.http_url}/v2/models/iris").json()
    assert iris["platform"] == "mlflow"
    assert iris["inputs"] == [{"name": name, "datatype": "FP64", "shape": [-1]} for name in COLUMNS]
    assert iris["outputs"] == [{"name": "output-0", "datatype": "INT64", "shape": [-1]}]
    echo = httpx.get(f"{server.http_url}/v2/models/echo").json()
    assert echo["inputs"] == [
        {"name": "a", "datatype": "INT64", "shape": [-1]},
        {"name": "b", "datatype": "FP32", "shape": [-1]},
        {"name": "name", "datatype": "BYTES", "shape": [-1]},
    ]
    assert echo["outputs"] == [
        {"name": "total", "datatype": "FP64", "shape": [-1]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
    ]
    tensor = httpx.get(f"{server.http_url}/v2/models/tensor").json()
    # Unnamed entries are named by position, as in MLServer.
    assert tensor["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 3]}]
    assert tensor["outputs"] == [{"name": "output-0", "datatype": "FP32", "shape": [-1, 3]}]


def test_v2_named_columns_in_any_order(server: RunningServer, estimator: Any) -> None:
    expected = estimator.predict(iris_frame()).tolist()
    assert expected == [1, 0]
    body = {"inputs": column_inputs(ROWS, COLUMNS)[::-1]}
    response = httpx.post(f"{server.http_url}/v2/models/iris/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output == {"name": "output-0", "datatype": "INT64", "shape": [2], "data": expected}


def test_v2_one_tensor_of_rows_fills_the_columns_in_order(
    models: dict[str, MLflowModel], estimator: Any
) -> None:
    request = InferRequest("iris", [InferInput("input-0", [2, 4], "FP32", data=ROWS)])
    response = models["iris"].predict(request)
    assert isinstance(response, InferResponse)
    assert response.outputs[0].as_numpy().tolist() == estimator.predict(iris_frame()).tolist()


@pytest.mark.parametrize(
    "body",
    [
        {"instances": ROWS},
        {"instances": [dict(zip(COLUMNS, row, strict=True)) for row in ROWS]},
        {"inputs": ROWS},
    ],
    ids=["rows", "objects", "inputs"],
)
def test_v1_predict(server: RunningServer, estimator: Any, body: dict[str, Any]) -> None:
    response = httpx.post(f"{server.http_url}/v1/models/iris:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": estimator.predict(iris_frame()).tolist()}


def test_grpc_columns_of_each_type_and_a_dataframe_reply(server: RunningServer) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        metadata = client.get_model_metadata("echo", as_json=True)
        assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
            ("a", "INT64"),
            ("b", "FP32"),
            ("name", "BYTES"),
        ]
        inputs = [
            triton_grpc.InferInput("a", [2], "INT64"),
            # FP64 for a float column: cast, where MLflow alone would refuse it.
            triton_grpc.InferInput("b", [2], "FP64"),
            triton_grpc.InferInput("name", [2], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(np.array([1, 2], dtype=np.int64))
        inputs[1].set_data_from_numpy(np.array([0.5, 1.25]))
        inputs[2].set_data_from_numpy(np.array([b"setosa", b"virginica"], dtype=object))
        result = client.infer("echo", inputs, request_id="g1")
    finally:
        client.close()
    assert result.get_response().id == "g1"
    assert [o.name for o in result.get_response().outputs] == ["total", "label"]
    assert result.as_numpy("total").tolist() == [1.5, 3.25]
    assert result.as_numpy("label").tolist() == [b"SETOSA", b"VIRGINICA"]


def test_v1_dataframe_reply_is_records_and_params_pass(server: RunningServer) -> None:
    body = {"instances": [{"a": 1, "b": 0.5, "name": "x"}], "params": {"scale": 2.0}}
    response = httpx.post(f"{server.http_url}/v1/models/echo:predict", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"predictions": [{"total": 3.0, "label": "X"}]}
    # Rows in the signature's column order, each column keeping its own type.
    rows = {"instances": [[1, 0.5, "x"], [2, 1.0, "y"]]}
    response = httpx.post(f"{server.http_url}/v1/models/echo:predict", json=rows)
    assert response.status_code == 200, response.text
    assert response.json()["predictions"] == [
        {"total": 1.5, "label": "X"},
        {"total": 3.0, "label": "Y"},
    ]


def test_v2_parameters_and_requested_outputs(models: dict[str, MLflowModel]) -> None:
    request = InferRequest(
        "echo",
        [
            InferInput("a", [1], "INT64", data=[2]),
            InferInput("b", [1], "FP32", data=[0.5]),
            InferInput("name", [1], "BYTES", data=["y"]),
        ],
        parameters={"scale": 10.0, "unrelated": True},
        request_outputs=[RequestedOutput("total")],
    )
    response = models["echo"].predict(request)
    assert isinstance(response, InferResponse)
    assert [o.name for o in response.outputs] == ["total"]
    assert response.outputs[0].as_numpy().tolist() == [25.0]
    request.request_outputs = [RequestedOutput("nope")]
    with pytest.raises(errors.InvalidInput, match="no output 'nope'"):
        models["echo"].predict(request)


def test_tensor_signature(server: RunningServer, models: dict[str, MLflowModel]) -> None:
    x = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    body = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": x}]}
    response = httpx.post(f"{server.http_url}/v2/models/tensor/infer", json=body)
    assert response.status_code == 200, response.text
    [output] = response.json()["outputs"]
    assert output["name"] == "output-0"
    assert output["datatype"] == "FP32"  # cast to the signature's type before predict
    assert output["data"] == [2.0, 4.0, 6.0, 8.0, 10.0, 12.0]
    result = models["tensor"].predict({"instances": x})
    np.testing.assert_array_equal(result["predictions"], np.array(x, dtype=np.float32) * 2)
    with pytest.raises(errors.InvalidInput, match=r"shape \[2, 2\]; the model expects \[-1, 3\]"):
        models["tensor"].predict({"instances": [[1.0, 2.0], [3.0, 4.0]]})


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        # MLflow's schema check: a missing column, a value that does not convert.
        (
            "iris",
            {"inputs": column_inputs(ROWS, COLUMNS[:3])},
            r"signature: Model is missing inputs \['petal_width'\]",
        ),
        (
            "echo",
            {
                "inputs": [
                    {"name": "a", "shape": [1], "datatype": "BYTES", "data": ["one"]},
                    {"name": "b", "shape": [1], "datatype": "FP32", "data": [1.0]},
                    {"name": "name", "shape": [1], "datatype": "BYTES", "data": ["x"]},
                ]
            },
            # The data plane refuses it first, against the declared INT64 (issue 14, item 10).
            "Input a is BYTES; the model expects INT64",
        ),
        # Ours: a name the signature does not have, a column that is not one value per row.
        (
            "iris",
            {"inputs": column_inputs([[*r, 0.0] for r in ROWS], [*COLUMNS, "extra"])},
            r"unknown \['extra'\]",
        ),
        (
            "echo",
            {"inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]},
            r"Input a has shape \[1, 2\]",
        ),
        ("echo", {"inputs": column_inputs([[1.5]], ["a"])}, "the model expects INT64"),
    ],
)
def test_bad_v2_input_is_a_400(
    server: RunningServer, model: str, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/{model}/infer", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert re.search(message, error), error
    assert "Failed to enforce schema of data" not in error  # the data's repr is left out


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1.0, 2.0]]}, r"takes the columns .*a list of 4 values"),
        ({"instances": [{"sepal_length": "a"}]}, "Incompatible input types|missing inputs"),
    ],
)
def test_bad_v1_input_is_a_400(server: RunningServer, body: dict[str, Any], message: str) -> None:
    response = httpx.post(f"{server.http_url}/v1/models/iris:predict", json=body)
    assert response.status_code == 400, response.text
    assert re.search(message, response.json()["error"])


def test_load_errors(tmp_path: Path) -> None:
    (tmp_path / "model.pkl").write_bytes(b"not a model")
    with pytest.raises(errors.ModelLoadError, match="No MLmodel file"):
        MLflowModel("m", tmp_path).load()
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    with pytest.raises(errors.ModelLoadError, match="Cannot load the MLflow model"):
        MLflowModel("m", tmp_path).load()


def test_unload(folders: dict[str, Path]) -> None:
    model = MLflowModel("iris", folders["iris"])
    assert model.load()
    model.unload()
    assert not model.ready
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": ROWS})
