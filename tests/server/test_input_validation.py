"""Issue 14, item 10: requests that were accepted and answered wrongly, over REST and gRPC.

Each case is a 400 (INVALID_ARGUMENT) or a 404 (NOT_FOUND) now, or a documented
acceptance (an FP32 input for an FP64 model is widened, and the model sees FP64).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from serving import RunningServer, start_server, stop_server
from testmodels import EchoModel, SumModel

from modelhost import InferOutput, InferRequest, InferResponse, Model
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc


class Fp64Model(Model):
    """Declares one FP64 input [-1, 4], as scikit-learn models do; records what it gets."""

    def __init__(self, name: str = "fp64") -> None:
        super().__init__(name)
        self.ready = True
        self.seen: list[tuple[str, str]] = []

    def get_input_types(self) -> list[dict[str, Any]]:
        return [{"name": "input-0", "datatype": "FP64", "shape": [-1, 4]}]

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        assert isinstance(payload, InferRequest)
        tensor = payload.inputs[0]
        array = tensor.as_numpy()
        self.seen.append((tensor.datatype, str(array.dtype)))
        total = InferOutput("sum", [array.shape[0]], "FP64")
        total.set_data_from_numpy(array.sum(axis=1).astype(np.float64))
        return InferResponse(payload.id, self.name, [total])


class VersionedEcho(EchoModel):
    version = "3"


@pytest.fixture(scope="module")
def running() -> Iterator[RunningServer]:
    models = [Fp64Model(), SumModel(), EchoModel(), VersionedEcho("versioned")]
    server = start_server(models)
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def stub(running: RunningServer) -> Iterator[Any]:
    with grpc.insecure_channel(running.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def infer(running: RunningServer, model: str, *inputs: dict[str, Any], **headers: str) -> Any:
    url = f"{running.http_url}/v2/models/{model}/infer"
    return httpx.post(url, json={"inputs": list(inputs)}, headers=headers, timeout=10)


def tensor(name: str, datatype: str, data: list[Any], shape: list[int] | None = None) -> Any:
    return {"name": name, "shape": shape or [len(data)], "datatype": datatype, "data": data}


def grpc_request(model: str, *inputs: tuple[str, str, list[int], dict[str, Any]]) -> Any:
    message = pb.ModelInferRequest(model_name=model)
    for name, datatype, shape, contents in inputs:
        message.inputs.add(
            name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents)
        )
    return message


def grpc_error(stub: Any, message: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(message, timeout=10)
    return exc.value


ROW = [5.1, 3.5, 1.4, 0.2]


# -- datatypes against the model's declared ones ----------------------------------------


def test_fp32_for_an_fp64_input_is_widened_and_the_model_sees_fp64(
    running: RunningServer, stub: Any
) -> None:
    model = running.server.repository.get_model("fp64")
    assert isinstance(model, Fp64Model)
    model.seen.clear()
    response = infer(running, "fp64", tensor("input-0", "FP32", ROW, [1, 4]))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == pytest.approx([sum(ROW)], rel=1e-6)
    raw = np.array([ROW], dtype="<f4").tobytes()
    message = pb.ModelInferRequest(model_name="fp64", raw_input_contents=[raw])
    message.inputs.add(name="input-0", datatype="FP32", shape=[1, 4])
    stub.ModelInfer(message, timeout=10)
    assert model.seen == [("FP64", "float64"), ("FP64", "float64")]


def test_a_datatype_that_does_not_convert_is_400(running: RunningServer, stub: Any) -> None:
    response = infer(running, "fp64", tensor("input-0", "BYTES", ["a", "b", "c", "d"], [1, 4]))
    assert response.status_code == 400
    assert "Input input-0 is BYTES; the model expects FP64" in response.json()["error"]
    message = grpc_request(
        "fp64", ("input-0", "BYTES", [1, 4], {"bytes_contents": [b"a", b"b", b"c", b"d"]})
    )
    error = grpc_error(stub, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Input input-0 is BYTES; the model expects FP64" in str(error.details())


@pytest.mark.parametrize(
    ("datatype", "data", "fragment"),
    [("BOOL", ["a", "b"], "got `str`"), ("FP64", [True, False], "got `bool`")],
)
def test_json_data_of_another_type_is_400(
    running: RunningServer, datatype: str, data: list[Any], fragment: str
) -> None:
    # BOOL with strings was [True, True]; FP64 with booleans was [1.0, 0.0].
    response = infer(running, "echo", tensor("x", datatype, data))
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_typed_contents_of_another_type_are_invalid_over_grpc(stub: Any) -> None:
    message = grpc_request(
        "echo", ("x", "FP64", [2], {"fp64_contents": [1.0, 2.0], "bool_contents": [True]})
    )
    error = grpc_error(stub, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "bool_contents" in str(error.details())


# -- names -------------------------------------------------------------------------------


def test_an_unknown_input_name_is_400(running: RunningServer, stub: Any) -> None:
    rows = [1.0, 2.0, 3.0, 4.0]
    response = infer(running, "sum", tensor("x", "FP32", rows, [1, 4]), tensor("y", "FP32", rows))
    assert response.status_code == 400
    assert "unknown ['y']" in response.json()["error"]
    message = grpc_request(
        "sum",
        ("x", "FP32", [1, 4], {"fp32_contents": rows}),
        ("y", "FP32", [4], {"fp32_contents": rows}),
    )
    error = grpc_error(stub, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "unknown ['y']" in str(error.details())


def test_the_same_input_twice_is_400(running: RunningServer, stub: Any) -> None:
    response = infer(running, "echo", tensor("x", "INT32", [1]), tensor("x", "INT32", [2]))
    assert response.status_code == 400
    assert "'x' is sent twice" in response.json()["error"]
    message = grpc_request(
        "echo",
        ("x", "INT32", [1], {"int_contents": [1]}),
        ("x", "INT32", [1], {"int_contents": [2]}),
    )
    error = grpc_error(stub, message)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'x' is sent twice" in str(error.details())


# -- the binary extension's header -------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/json", None])
def test_header_length_0_on_a_json_body_is_400(
    running: RunningServer, content_type: str | None
) -> None:
    # 96 bytes of JSON were read as three rows of FP64 values, and answered.
    body = b'{"inputs":[{"name":"input-0","shape":[1,4],"datatype":"FP64","data":[1,2,3,4]}]}'
    body = body[:-2] + b" " * (96 - len(body)) + body[-2:]
    headers = {"Inference-Header-Content-Length": "0"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    url = f"{running.http_url}/v2/models/fp64/infer"
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    assert "Inference-Header-Content-Length: 0" in response.json()["error"]
    raw = np.array([ROW, ROW, ROW], dtype="<f8").tobytes()  # a raw body is still taken
    headers["Content-Type"] = "application/octet-stream"
    assert httpx.post(url, content=raw, headers=headers, timeout=10).status_code == 200


# -- versions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "version", "status"),
    [("echo", "1", 404), ("echo", "any", 404), ("versioned", "3", 200), ("versioned", "4", 404)],
)
def test_a_version_the_model_does_not_have_is_404(
    running: RunningServer, stub: Any, model: str, version: str, status: int
) -> None:
    base = f"{running.http_url}/v2/models/{model}/versions/{version}"
    body = {"inputs": [tensor("x", "INT32", [1])]}
    assert httpx.post(f"{base}/infer", json=body, timeout=10).status_code == status
    assert httpx.get(base, timeout=10).status_code == status
    assert httpx.get(f"{base}/ready", timeout=10).status_code == status
    message = grpc_request(model, ("x", "INT32", [1], {"int_contents": [1]}))
    message.model_version = version
    if status == 200:
        assert stub.ModelInfer(message, timeout=10).model_version == "3"
        ready = stub.ModelReady(pb.ModelReadyRequest(name=model, version=version), timeout=10)
        assert ready.ready
        return
    assert grpc_error(stub, message).code() == grpc.StatusCode.NOT_FOUND
    for call, request in (
        (stub.ModelMetadata, pb.ModelMetadataRequest(name=model, version=version)),
        (stub.ModelReady, pb.ModelReadyRequest(name=model, version=version)),
    ):
        with pytest.raises(grpc.RpcError) as exc:
            call(request, timeout=10)
        assert exc.value.code() == grpc.StatusCode.NOT_FOUND


# -- the repository extension's bodies ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "fragment"),
    [
        ("index", {"ready": {}}, "Expected `bool`, got `object` - at `$.ready`"),
        ("index", {"ready": "true"}, "Expected `bool`, got `str`"),
        ("models/echo/load", {"parameters": None}, "got `null` - at `$.parameters`"),
        ("models/echo/unload", {"parameters": None}, "got `null` - at `$.parameters`"),
    ],
)
def test_repository_bodies_of_the_wrong_type_are_400(
    running: RunningServer, path: str, body: dict[str, Any], fragment: str
) -> None:
    response = httpx.post(f"{running.http_url}/v2/repository/{path}", json=body, timeout=10)
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_repository_bodies_that_fit_are_taken(running: RunningServer) -> None:
    url = f"{running.http_url}/v2/repository"
    ready = httpx.post(f"{url}/index", json={"ready": True}, timeout=10)
    assert {entry["name"] for entry in ready.json()} == {"fp64", "sum", "echo", "versioned"}
    load = httpx.post(f"{url}/models/echo/load", json={"parameters": {}}, timeout=10)
    assert load.json() == {"name": "echo", "load": True}
    refused = httpx.post(f"{url}/models/echo/load", json={"parameters": {"config": "{}"}})
    assert refused.status_code == 501  # documented: load parameters are not supported
