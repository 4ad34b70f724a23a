"""The gRPC service as tritonclient sees it: a real ModelServer on real sockets.

tritonclient is a client nobody here wrote; passing its calls is how wire compatibility
with the Open Inference Protocol and Triton's extensions is checked.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from serving import RunningServer, StartServer, start_server, stop_server
from testmodels import EchoModel, FailingModel, UnreadyModel
from tritonclient.utils import InferenceServerException

from modelhost.protocol.infer_type import InferRequest, InferResponse


class RecordingModel(EchoModel):
    """An echo model that keeps the headers it saw and counts the request parameters."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.headers: dict[str, str] = {}

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        assert isinstance(payload, InferRequest)
        self.headers = dict(headers or {})
        response = super().predict(payload, headers)
        assert isinstance(response, InferResponse)
        response.parameters = {"seen": len(payload.parameters)}
        return response


class DeclaredModel(EchoModel):
    """An echo model whose metadata declares a version, a platform and its tensors."""

    version = "3"

    @property
    def platform(self) -> str:
        return "modelhost_test"

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 3]}]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "INPUT0", "datatype": "FP32", "shape": [-1, 3]}]


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    # One server for the module (conftest's ``serve`` is per test): these tests only read,
    # except the repository test, which puts back what it changes.
    models = [RecordingModel("echo"), DeclaredModel("declared"), FailingModel("broken")]
    server = start_server([*models, EchoModel("reloadable")])
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def client(running: RunningServer) -> Iterator[tc.InferenceServerClient]:
    with tc.InferenceServerClient(running.grpc_address) as triton:
        yield triton


def _input(name: str, array: np.ndarray[Any, Any], datatype: str) -> tc.InferInput:
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def _code(exc: pytest.ExceptionInfo[InferenceServerException]) -> str | None:
    status = exc.value.status()
    return status.split(".")[-1] if status else None


def test_health_and_server_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata.name == "modelhost"
    assert "model_repository" in metadata.extensions


def test_model_ready_and_metadata(client: tc.InferenceServerClient) -> None:
    assert client.is_model_ready("declared")
    assert client.is_model_ready("declared", "3")
    metadata = client.get_model_metadata("declared", as_json=True)
    assert metadata["name"] == "declared"
    assert metadata["versions"] == ["3"]
    assert metadata["platform"] == "modelhost_test"
    assert metadata["inputs"] == [{"name": "INPUT0", "datatype": "FP32", "shape": ["-1", "3"]}]
    assert metadata["outputs"][0]["name"] == "INPUT0"


ARRAYS = {
    "BOOL": np.array([[True, False, True]]),
    "UINT8": np.array([[0, 7, 255]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127]], dtype=np.int8),
    "INT16": np.array([[-(2**15), 0, 2**15 - 1]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1]], dtype=np.int64),
    "FP16": np.array([[-1.5, 0.0, 65504.0]], dtype=np.float16),
    "FP32": np.array([[-1.5, 0.25, 3.0e38]], dtype=np.float32),
    "FP64": np.array([[-1.5, 0.25, 1.0e308]], dtype=np.float64),
    "BYTES": np.array([[b"a", b"", "\u00e9t\u00e9".encode()]], dtype=np.object_),
}


@pytest.mark.parametrize("datatype", sorted(ARRAYS))
def test_infer_every_datatype(client: tc.InferenceServerClient, datatype: str) -> None:
    array = ARRAYS[datatype]
    result = client.infer("echo", [_input("x", array, datatype)], request_id=f"id-{datatype}")
    out = result.as_numpy("x")
    assert out.shape == array.shape
    np.testing.assert_array_equal(out, array)
    response = result.get_response()
    assert response.id == f"id-{datatype}"
    assert response.outputs[0].datatype == datatype


def test_infer_bf16(client: tc.InferenceServerClient) -> None:
    # BF16 keeps the upper half of a float32: these values survive exactly.
    array = np.array([[1.0, -2.5, 0.15625, 3.0e38]], dtype=np.float32)
    result = client.infer("echo", [_input("x", array, "BF16")])
    assert result.get_response().outputs[0].datatype == "BF16"
    out = result.as_numpy("x")
    np.testing.assert_allclose(out, array, rtol=1e-2)
    np.testing.assert_array_equal(out[0, :3], array[0, :3])


def test_infer_several_inputs_and_requested_outputs(client: tc.InferenceServerClient) -> None:
    a = np.arange(6, dtype=np.int32).reshape(2, 3)
    b = np.array([[0.5]], dtype=np.float64)
    inputs = [_input("a", a, "INT32"), _input("b", b, "FP64")]
    result = client.infer("echo", inputs, outputs=[tc.InferRequestedOutput("b")])
    assert [o.name for o in result.get_response().outputs] == ["b"]
    np.testing.assert_array_equal(result.as_numpy("b"), b)
    assert result.as_numpy("a") is None


def test_parameters_and_headers_reach_the_model(
    running: RunningServer, client: tc.InferenceServerClient
) -> None:
    array = np.ones((1, 3), dtype=np.float32)
    result = client.infer(
        "echo",
        [_input("x", array, "FP32")],
        parameters={"flag": True, "count": 3, "name": "n"},
        headers={"x-trace": "abc"},
    )
    params = result.get_response().parameters
    assert params["seen"].int64_param >= 3
    model = running.server.repository.get_model("echo")
    assert isinstance(model, RecordingModel)
    assert model.headers["x-trace"] == "abc"


def test_unknown_model_is_not_found(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("nope", [_input("x", ARRAYS["FP32"], "FP32")])
    assert _code(exc) == "NOT_FOUND"
    assert "nope" in exc.value.message()
    with pytest.raises(InferenceServerException) as exc:
        client.is_model_ready("nope")
    assert _code(exc) == "NOT_FOUND"
    with pytest.raises(InferenceServerException) as exc:
        client.get_model_metadata("declared", "9")
    assert _code(exc) == "NOT_FOUND"


def test_wrong_data_size_is_invalid_argument(client: tc.InferenceServerClient) -> None:
    tensor = tc.InferInput("x", [2, 3], "FP32")
    tensor.set_data_from_numpy(np.ones((2, 3), dtype=np.float32))
    tensor.set_shape([2, 4])
    with pytest.raises(InferenceServerException) as exc:
        client.infer("echo", [tensor])
    assert _code(exc) == "INVALID_ARGUMENT"
    assert "Input x" in exc.value.message()


def test_unknown_requested_output_is_invalid_argument(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer(
            "echo", [_input("x", ARRAYS["INT8"], "INT8")], outputs=[tc.InferRequestedOutput("y")]
        )
    assert _code(exc) == "INVALID_ARGUMENT"


def test_model_failure_is_internal(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.infer("broken", [_input("x", ARRAYS["FP32"], "FP32")])
    assert _code(exc) == "INTERNAL"
    assert "boom" in exc.value.message()


def test_not_ready_model_is_unavailable(serve: StartServer) -> None:
    running = serve([UnreadyModel("sleepy"), EchoModel()])
    with tc.InferenceServerClient(running.grpc_address) as triton:
        assert triton.is_server_live()
        assert not triton.is_server_ready()
        assert not triton.is_model_ready("sleepy")
        assert triton.is_model_ready("echo")
        with pytest.raises(InferenceServerException) as exc:
            triton.infer("sleepy", [_input("x", ARRAYS["FP32"], "FP32")])
        assert _code(exc) == "UNAVAILABLE"


def test_message_over_the_size_limit_is_refused(serve: StartServer) -> None:
    running = serve([EchoModel()], max_request_bytes=4096)
    with tc.InferenceServerClient(running.grpc_address) as triton:
        small = np.zeros((1, 16), dtype=np.float32)
        assert triton.infer("echo", [_input("x", small, "FP32")]).as_numpy("x") is not None
        with pytest.raises(InferenceServerException) as exc:
            triton.infer("echo", [_input("x", np.zeros((1, 4096), np.float32), "FP32")])
        assert _code(exc) == "RESOURCE_EXHAUSTED"


def test_repository_index_unload_and_load(client: tc.InferenceServerClient) -> None:
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["reloadable"].state == "READY"
    client.unload_model("reloadable")
    index = {m.name: m for m in client.get_model_repository_index().models}
    assert index["reloadable"].state == "UNAVAILABLE"
    assert index["reloadable"].reason == "unloaded"
    with pytest.raises(InferenceServerException) as exc:
        client.infer("reloadable", [_input("x", ARRAYS["FP32"], "FP32")])
    assert _code(exc) in ("NOT_FOUND", "UNAVAILABLE")
    client.load_model("reloadable")
    assert client.is_model_ready("reloadable")
    result = client.infer("reloadable", [_input("x", ARRAYS["FP32"], "FP32")])
    np.testing.assert_array_equal(result.as_numpy("x"), ARRAYS["FP32"])


def test_load_with_parameters_is_unimplemented(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.load_model("echo", config='{"backend": "x"}')
    assert _code(exc) == "UNIMPLEMENTED"
    assert "parameters" in exc.value.message()


def test_unload_unknown_model_is_not_found(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.unload_model("nope")
    assert _code(exc) == "NOT_FOUND"


def test_stream_infer_answers_each_request(client: tc.InferenceServerClient) -> None:
    results: list[tuple[Any, Any]] = []
    done = threading.Event()

    def callback(result: Any, error: Any) -> None:
        results.append((result, error))
        if len(results) == 2:
            done.set()

    client.start_stream(callback)
    try:
        client.async_stream_infer("echo", [_input("x", ARRAYS["INT64"], "INT64")], request_id="1")
        client.async_stream_infer("nope", [_input("x", ARRAYS["INT64"], "INT64")], request_id="2")
        assert done.wait(10)
    finally:
        client.stop_stream()
    (ok, no_error), (no_result, error) = results
    assert no_error is None
    np.testing.assert_array_equal(ok.as_numpy("x"), ARRAYS["INT64"])
    assert ok.get_response().id == "1"
    assert no_result is None
    assert "nope" in error.message()


def test_metrics_count_grpc_calls(running: RunningServer, client: tc.InferenceServerClient) -> None:
    client.infer("echo", [_input("x", ARRAYS["FP32"], "FP32")])
    with pytest.raises(InferenceServerException):
        client.infer("nope", [_input("x", ARRAYS["FP32"], "FP32")])
    assert client.is_server_live()
    samples = {
        (s.labels["model"], s.labels["endpoint"], s.labels["status"]): s.value
        for metric in running.server.metrics.registry.collect()
        if metric.name == "modelhost_requests"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["protocol"] == "grpc"
    }
    assert samples[("echo", "infer", "OK")] >= 1
    assert samples[("", "infer", "NOT_FOUND")] >= 1  # unknown names are not labels
    assert samples[("", "live", "OK")] >= 1


def test_unimplemented_rpc(client: tc.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as exc:
        client.get_inference_statistics()
    assert _code(exc) == grpc.StatusCode.UNIMPLEMENTED.name
