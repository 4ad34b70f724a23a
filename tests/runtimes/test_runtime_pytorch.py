"""The PyTorch runtime: TorchScript and exported programs built here, served over REST and gRPC."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
from serving import RunningServer, start_server, stop_server

from modelhost import BatchSettings, errors
from modelhost.protocol.infer_type import InferInput, InferRequest, InferResponse
from modelhost.runtimes import build_model, detect_runtime
from modelhost.runtimes.detect import get_runtime
from modelhost.runtimes.pytorch import PyTorchModel

# TorchScript is deprecated in torch 2.10+, and still what many models are saved as.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning"
)

X = np.array([[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]], dtype=np.float32)
Y = np.array([[0.1, 0.0, -0.1], [0.0, 0.2, 0.0]], dtype=np.float32)
SCALE = np.array([[1.0], [2.0]], dtype=np.float32)


def modules() -> dict[str, Any]:
    """Eager modules with fixed weights; the tests compare the server with them."""
    import torch

    class TwoInputs(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            z = self.lin(x)
            return z + y, z.argmax(-1)

    class Classifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.lin(x) * scale
            return {"probs": torch.softmax(logits, -1), "logits": logits}

    class Failing(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool(x.sum() > 100):
                raise RuntimeError("the lookup table is empty")
            return x * 2

    class WithAnInt(torch.nn.Module):
        def forward(self, x: torch.Tensor, k: int) -> torch.Tensor:
            return x * k

    torch.manual_seed(0)
    return {
        "two": TwoInputs().eval(),
        "classifier": Classifier().eval(),
        "failing": Failing(),
        "with_int": WithAnInt(),
    }


def save_script(module: Any, path: Path) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.script(module).save(str(path))
    return path


def save_traced(module: Any, path: Path, *example: Any) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.trace(module, example).save(str(path))
    return path


def save_exported(module: Any, path: Path) -> Path:
    import torch

    batch = torch.export.Dim("batch")
    program = torch.export.export(
        module,
        (torch.ones(2, 4), torch.ones(2, 1)),
        dynamic_shapes={"x": {0: batch}, "scale": {0: batch}},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, str(path))
    return path


def loaded(path: Path, name: str, **options: Any) -> PyTorchModel:
    model = build_model(path, name, options=options)
    assert isinstance(model, PyTorchModel)
    assert model.load()
    return model


@pytest.fixture(scope="module")
def eager() -> dict[str, Any]:
    return modules()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, eager: dict[str, Any]) -> dict[str, Path]:
    import torch

    root = tmp_path_factory.mktemp("pytorch")
    return {
        "script": save_script(eager["two"], root / "script" / "model.pt"),
        # A TorchScript program saved under the extension state dicts usually have.
        "traced": save_traced(eager["two"].lin, root / "traced" / "model.pth", torch.ones(1, 4)),
        "exported": save_exported(eager["classifier"], root / "exported" / "model.pt2"),
        "failing": save_script(eager["failing"], root / "failing" / "model.pt"),
    }


@pytest.fixture(scope="module")
def models(files: dict[str, Path]) -> dict[str, PyTorchModel]:
    served = {name: loaded(path.parent, name) for name, path in files.items()}
    served["batched"] = loaded(files["exported"], "batched")
    served["batched"].batching = BatchSettings(max_batch_size=64, max_latency_ms=30)
    return served


@pytest.fixture(scope="module")
def server(models: dict[str, PyTorchModel]) -> Iterator[RunningServer]:
    running = start_server(list(models.values()))
    yield running
    stop_server(running)


def v2_body(**arrays: np.ndarray) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(a.shape),
                "datatype": "FP32" if a.dtype == np.float32 else "FP64",
                "data": a.ravel().tolist(),
            }
            for name, a in arrays.items()
        ]
    }


def run_eager(module: Any, *arrays: np.ndarray) -> Any:
    import torch

    with torch.inference_mode():
        return module(*(torch.from_numpy(a) for a in arrays))


@pytest.mark.parametrize("filename", ["model.pt", "model.pt2", "model.pth"])
def test_detection(tmp_path: Path, filename: str) -> None:
    (tmp_path / filename).write_bytes(b"not loaded by detection")
    assert detect_runtime(tmp_path) == "pytorch"
    assert get_runtime("torch").name == "pytorch"
    assert get_runtime("torchscript").name == "pytorch"
    model = build_model(tmp_path, "m", options={"nthread": 2, "device": "cpu"})
    assert isinstance(model, PyTorchModel)
    assert (model.nthread, model.device) == (2, "cpu")


def test_torchscript_v2_json(server: RunningServer, eager: dict[str, Any]) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/script/infer", json=v2_body(x=X, y=Y))
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    assert [(o["name"], o["datatype"], o["shape"]) for o in outputs] == [
        ("output-0", "FP32", [2, 3]),
        ("output-1", "INT64", [2]),
    ]
    summed, label = run_eager(eager["two"], X, Y)
    np.testing.assert_allclose(np.reshape(outputs[0]["data"], (2, 3)), summed, rtol=1e-5)
    assert outputs[1]["data"] == label.tolist()


def test_torchscript_metadata_knows_no_types(server: RunningServer) -> None:
    metadata = httpx.get(f"{server.http_url}/v2/models/script").json()
    assert metadata["platform"] == "pytorch_libtorch"
    assert (metadata["inputs"], metadata["outputs"]) == ([], [])


def test_torchscript_inputs_by_name_or_position(models: dict[str, PyTorchModel]) -> None:
    by_name = InferRequest(
        "script", [InferInput("y", [2, 3], "FP32", Y), InferInput("x", [2, 4], "FP32", X)]
    )
    by_position = InferRequest(
        "script", [InferInput("a", [2, 4], "FP32", X), InferInput("b", [2, 3], "FP32", Y)]
    )
    first = models["script"].predict(by_name)
    second = models["script"].predict(by_position)
    assert isinstance(first, InferResponse)
    assert isinstance(second, InferResponse)
    np.testing.assert_array_equal(first.outputs[0].as_numpy(), second.outputs[0].as_numpy())


def test_v1_instances_on_a_traced_pth(server: RunningServer, eager: dict[str, Any]) -> None:
    # JSON numbers arrive as FP64; they are cast to the weights' FP32.
    response = httpx.post(
        f"{server.http_url}/v1/models/traced:predict", json={"instances": X.tolist()}
    )
    assert response.status_code == 200, response.text
    expected = run_eager(eager["two"].lin, X)
    np.testing.assert_allclose(response.json()["predictions"], expected, rtol=1e-5)


def test_exported_metadata_over_http(server: RunningServer) -> None:
    metadata = httpx.get(f"{server.http_url}/v2/models/exported").json()
    assert metadata["platform"] == "pytorch_export"
    assert metadata["inputs"] == [
        {"name": "x", "datatype": "FP32", "shape": [-1, 4]},
        {"name": "scale", "datatype": "FP32", "shape": [-1, 1]},
    ]
    assert metadata["outputs"] == [
        {"name": "probs", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "logits", "datatype": "FP32", "shape": [-1, 3]},
    ]


def test_exported_v2_json_with_a_cast(server: RunningServer, eager: dict[str, Any]) -> None:
    body = v2_body(scale=SCALE.astype(np.float64), x=X[:1].astype(np.float64))
    body["inputs"][0]["shape"] = [1, 1]
    body["inputs"][0]["data"] = [1.0]
    response = httpx.post(f"{server.http_url}/v2/models/exported/infer", json=body)
    assert response.status_code == 200, response.text
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    assert list(outputs) == ["probs", "logits"]
    expected = run_eager(eager["classifier"], X[:1], SCALE[:1])
    assert outputs["probs"]["datatype"] == "FP32"
    assert outputs["probs"]["shape"] == [1, 3]  # one row: the batch dimension is dynamic
    np.testing.assert_allclose(outputs["probs"]["data"], expected["probs"].ravel(), rtol=1e-5)


def test_exported_over_grpc(server: RunningServer, eager: dict[str, Any]) -> None:
    client = triton_grpc.InferenceServerClient(server.grpc_address)
    try:
        metadata = client.get_model_metadata("exported", as_json=True)
        assert [i["name"] for i in metadata["inputs"]] == ["x", "scale"]
        inputs = [
            triton_grpc.InferInput("x", list(X.shape), "FP32"),
            triton_grpc.InferInput("scale", list(SCALE.shape), "FP32"),
        ]
        inputs[0].set_data_from_numpy(X)
        inputs[1].set_data_from_numpy(SCALE)
        wanted = [triton_grpc.InferRequestedOutput("logits")]
        result = client.infer("exported", inputs, outputs=wanted)
    finally:
        client.close()
    assert [o.name for o in result.get_response().outputs] == ["logits"]
    expected = run_eager(eager["classifier"], X, SCALE)["logits"]
    np.testing.assert_allclose(result.as_numpy("logits"), expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("model", "body", "message"),
    [
        ("script", v2_body(x=X[:, :3], y=Y), "mat1 and mat2 shapes cannot be multiplied"),
        ("script", v2_body(x=X, y=Y[:, :2]), "must match the size"),
        ("script", v2_body(x=X), r"missing \['y'\]"),
        ("exported", v2_body(x=X[:, :3], scale=SCALE), r"has shape \[2, 3\]"),
        ("exported", v2_body(x=X, scale=SCALE[:1]), "cannot run on this input"),
        (
            "failing",
            {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["a"]}]},
            "Input x is BYTES; PyTorch models take numbers",
        ),
        (
            "script",
            {
                "inputs": [
                    {"name": "x", "shape": [1, 4], "datatype": "INT64", "data": [1, 2, 3, 4]},
                    {"name": "y", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]},
                ]
            },
            "must have the same dtype",
        ),
    ],
)
def test_bad_input_is_a_400(
    server: RunningServer, model: str, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(f"{server.http_url}/v2/models/{model}/infer", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert re.search(message, error)
    assert "Traceback" not in error


def test_a_model_failure_is_a_500(server: RunningServer) -> None:
    body = v2_body(x=np.full((1, 4), 50, dtype=np.float32))
    response = httpx.post(f"{server.http_url}/v2/models/failing/infer", json=body)
    assert response.status_code == 500, response.text
    assert response.json()["error"] == "Model failing failed: the lookup table is empty"
    fine = httpx.post(f"{server.http_url}/v2/models/failing/infer", json=v2_body(x=X[:, :1]))
    assert fine.status_code == 200


def test_concurrent_requests_are_batched_and_get_their_own_rows(
    server: RunningServer, eager: dict[str, Any]
) -> None:
    def call(index: int) -> tuple[np.ndarray, np.ndarray, Any]:
        rows = np.full((1 + index % 3, 4), index / 10, dtype=np.float32)
        scale = np.full((rows.shape[0], 1), 1 + index % 2, dtype=np.float32)
        response = httpx.post(
            f"{server.http_url}/v2/models/batched/infer", json=v2_body(x=rows, scale=scale)
        )
        assert response.status_code == 200, response.text
        logits = next(o for o in response.json()["outputs"] if o["name"] == "logits")
        return rows, scale, np.reshape(logits["data"], logits["shape"])

    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(36)))
    for rows, scale, logits in results:
        expected = run_eager(eager["classifier"], rows, scale)["logits"]
        np.testing.assert_allclose(logits, expected, rtol=1e-5)
    metrics = httpx.get(f"{server.http_url}/metrics").text
    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith('modelhost_batch_size_count{model="batched"}')
    )
    assert float(line.split()[-1]) < 36, "no two requests were ever batched"


@pytest.mark.parametrize("filename", ["weights.pth", "weights.pt"])
def test_a_state_dict_is_a_clear_load_error(
    tmp_path: Path, eager: dict[str, Any], filename: str
) -> None:
    import torch

    torch.save(eager["two"].state_dict(), tmp_path / filename)
    with pytest.raises(errors.ModelLoadError, match=r"torch\.save checkpoint") as info:
        PyTorchModel("sd", tmp_path).load()
    assert "torch.export.save" in str(info.value)


def test_a_file_that_is_no_archive(tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(b"garbage")
    with pytest.raises(errors.ModelLoadError, match="neither a TorchScript program"):
        PyTorchModel("bad", tmp_path).load()


def test_an_exported_program_saved_as_pt(files: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "model.pt").write_bytes(files["exported"].read_bytes())
    model = loaded(tmp_path, "renamed")
    assert model.platform == "pytorch_export"
    assert [spec["name"] for spec in model.get_input_types()] == ["x", "scale"]


def test_a_non_tensor_argument_is_a_load_error(eager: dict[str, Any], tmp_path: Path) -> None:
    save_script(eager["with_int"], tmp_path / "model.pt")
    with pytest.raises(errors.ModelLoadError, match="argument k has type int"):
        PyTorchModel("k", tmp_path).load()


def test_devices(files: dict[str, Path]) -> None:
    import torch

    folder = files["script"].parent
    if not torch.cuda.is_available():
        with pytest.raises(errors.ModelLoadError, match=r"Device 'cuda' was asked for.*0 CUDA"):
            PyTorchModel("gpu", folder, device="cuda").load()
    with pytest.raises(errors.ModelLoadError, match="Unknown device 'gpu-please'"):
        PyTorchModel("gpu", folder, device="gpu-please").load()
    auto = PyTorchModel("auto", folder, device="auto", nthread=2)
    assert auto.load()
    assert torch.get_num_threads() == 2
    loaded(folder, "one")  # nthread defaults to 1
    assert torch.get_num_threads() == 1


def test_not_ready_and_unload(files: dict[str, Path]) -> None:
    model = PyTorchModel("m", files["exported"].parent)
    assert model.get_input_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": X.tolist()})
    assert model.load()
    model.unload()
    assert not model.ready
    assert model.get_output_types() == []
    with pytest.raises(errors.ModelNotReady):
        model.predict({"instances": X.tolist()})
