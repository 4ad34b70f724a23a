"""Open Inference Protocol v2 over REST, checked with Triton's own HTTP client."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from serving import RunningServer, StartServer
from testmodels import EchoModel, SumModel, UnreadyModel
from tritonclient.utils import InferenceServerException

NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def sample(datatype: str) -> np.ndarray:
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    if datatype == "BYTES":
        return np.array([[b"a", "é".encode(), b""], [b"xyz", b"0", b"\x01"]], dtype=np.object_)
    dtype = np.dtype(NUMERIC[datatype])
    values = np.arange(6).reshape(2, 3)
    if dtype.kind == "f":
        return (values + 0.5).astype(dtype)
    info = np.iinfo(dtype)
    values = values.astype(dtype)
    values[1, 2] = info.max  # extremes must survive the trip
    values[0, 0] = info.min
    return values


@pytest.fixture
def server(serve: StartServer) -> RunningServer:
    return serve([EchoModel(), SumModel(), UnreadyModel("unready")])


@pytest.fixture
def client(server: RunningServer) -> Iterator[triton.InferenceServerClient]:
    client = triton.InferenceServerClient(server.http_address)
    yield client
    client.close()


def echo(
    client: triton.InferenceServerClient,
    array: np.ndarray,
    datatype: str,
    binary_in: bool,
    binary_out: bool,
) -> np.ndarray:
    tensor = triton.InferInput("x", list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary_in)
    wanted = triton.InferRequestedOutput("x", binary_data=binary_out)
    result = client.infer("echo", [tensor], outputs=[wanted], request_id="req-1")
    assert result.get_response()["id"] == "req-1"
    output = result.as_numpy("x")
    assert output is not None
    return output


def test_server_health_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready() is False  # one registered model is not ready
    metadata = client.get_server_metadata()
    assert metadata["name"] == "modelhost"
    assert {"binary_tensor_data", "model_repository"} <= set(metadata["extensions"])


def test_model_ready_and_metadata(client: triton.InferenceServerClient) -> None:
    assert client.is_model_ready("sum")
    assert not client.is_model_ready("unready")
    assert not client.is_model_ready("missing")
    metadata = client.get_model_metadata("sum")
    assert metadata["name"] == "sum"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == ["sum", "double"]
    # Issue 14, item 10: an unversioned model has no version 1 (any version was a 200).
    with pytest.raises(InferenceServerException) as versioned:
        client.get_model_metadata("sum", model_version="1")
    assert versioned.value.status() == "404"


@pytest.mark.parametrize("datatype", [*NUMERIC, "BYTES"])
@pytest.mark.parametrize(
    ("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)]
)
def test_every_datatype_json_and_binary(
    client: triton.InferenceServerClient, datatype: str, binary_in: bool, binary_out: bool
) -> None:
    array = sample(datatype)
    output = echo(client, array, datatype, binary_in, binary_out)
    assert output.shape == array.shape
    if datatype == "BYTES":
        # tritonclient hands JSON strings back as str and binary elements as bytes.
        got = [v.encode() if isinstance(v, str) else v for v in output.ravel().tolist()]
        assert got == array.ravel().tolist()
    else:
        assert output.dtype == array.dtype
        np.testing.assert_array_equal(output, array)


def test_bf16_binary_round_trip(client: triton.InferenceServerClient) -> None:
    # bfloat16 keeps the top 16 bits of a float32: these values are exact in it.
    array = np.array([[1.0, -2.5, 0.15625], [2.0**100, 0.0, -1.0]], dtype=np.float32)
    output = echo(client, array, "BF16", True, True)
    np.testing.assert_array_equal(output, array)


def test_bf16_in_json_is_rejected(server: RunningServer) -> None:
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BF16", "data": [1.0]}]}
    response = httpx.post(f"{server.http_url}/v2/models/echo/infer", json=body)
    assert response.status_code == 400
    assert "BF16" in response.json()["error"]


def test_nested_and_flat_json_data(server: RunningServer) -> None:
    for data in ([[1, 2, 3, 4], [5, 6, 7, 8]], [1, 2, 3, 4, 5, 6, 7, 8]):
        body = {
            "id": "n",
            "inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32", "data": data}],
        }
        response = httpx.post(f"{server.http_url}/v2/models/sum/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["sum"]["data"] == [10.0, 26.0]
        assert outputs["double"]["shape"] == [2, 4]


def test_requested_outputs_and_versions(server: RunningServer) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        "outputs": [{"name": "sum"}],
        "parameters": {"custom": "kept", "flag": True, "n": 3},
    }
    url = f"{server.http_url}/v2/models/sum/infer"
    response = httpx.post(url, json=body)
    assert response.status_code == 200, response.text
    payload = response.json()
    assert [o["name"] for o in payload["outputs"]] == ["sum"]
    assert "model_version" not in payload  # unversioned models report no version
    # An unversioned model has no version 7 (issue 14, item 10: it used to answer 200).
    versioned = httpx.post(f"{server.http_url}/v2/models/sum/versions/7/infer", json=body)
    assert versioned.status_code == 404
    assert "version 7" in versioned.json()["error"]
    body["outputs"] = [{"name": "nope"}]
    bad = httpx.post(url, json=body)
    assert bad.status_code == 400
    assert "nope" in bad.json()["error"]


def test_binary_data_output_parameter(server: RunningServer) -> None:
    body = {
        "inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],
        "parameters": {"binary_data_output": True},
        "outputs": [{"name": "sum"}, {"name": "double", "parameters": {"binary_data": False}}],
    }
    response = httpx.post(f"{server.http_url}/v2/models/sum/infer", json=body)
    assert response.status_code == 200
    header_length = int(response.headers["inference-header-content-length"])
    header = httpx.Response(200, content=response.content[:header_length]).json()
    sum_out, double_out = header["outputs"]
    assert sum_out["parameters"]["binary_data_size"] == 4
    assert "data" not in sum_out
    assert double_out["data"] == [2.0, 4.0, 6.0, 8.0]
    assert np.frombuffer(response.content[header_length:], "<f4").tolist() == [10.0]


def test_binary_request_by_hand(server: RunningServer) -> None:
    raw = np.array([[1, 2, 3, 4]], dtype="<f4").tobytes()
    header = (
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":16}}]}'
    )
    response = httpx.post(
        f"{server.http_url}/v2/models/sum/infer",
        content=header + raw,
        headers={
            "Inference-Header-Content-Length": str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [10.0]


def test_raw_binary_body(server: RunningServer) -> None:
    raw = np.array([[1, 2, 3, 4], [1, 1, 1, 1]], dtype="<f4").tobytes()
    response = httpx.post(
        f"{server.http_url}/v2/models/sum/infer",
        content=raw,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    header = httpx.Response(200, content=response.content[:header_length]).json()
    assert header["outputs"][0]["shape"] == [2]  # the variable dimension took the rows
    sums = np.frombuffer(response.content[header_length : header_length + 8], "<f4")
    assert sums.tolist() == [10.0, 4.0]


def test_raw_body_needs_a_single_declared_input(server: RunningServer) -> None:
    response = httpx.post(
        f"{server.http_url}/v2/models/echo/infer",
        content=b"\x00" * 8,
        headers={"Inference-Header-Content-Length": "0"},
    )
    assert response.status_code == 400
    assert "exactly one declared input" in response.json()["error"]


def test_bytes_binary_layout_matches_the_extension(server: RunningServer) -> None:
    items = [b"ab", b"", b"xyz"]
    raw = b"".join(struct.pack("<I", len(i)) + i for i in items)
    header = (
        b'{"inputs":[{"name":"s","shape":[3],"datatype":"BYTES",'
        b'"parameters":{"binary_data_size":' + str(len(raw)).encode() + b"}}],"
        b'"outputs":[{"name":"s","parameters":{"binary_data":true}}]}'
    )
    response = httpx.post(
        f"{server.http_url}/v2/models/echo/infer",
        content=header + raw,
        headers={"Inference-Header-Content-Length": str(len(header))},
    )
    assert response.status_code == 200, response.text
    header_length = int(response.headers["inference-header-content-length"])
    assert response.content[header_length:] == raw


def test_unknown_and_unready_models(client: triton.InferenceServerClient) -> None:
    tensor = triton.InferInput("x", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    with pytest.raises(InferenceServerException) as missing:
        client.infer("missing", [tensor])
    assert missing.value.status() == "404"
    with pytest.raises(InferenceServerException) as unready:
        client.infer("unready", [tensor])
    assert unready.value.status() == "503"


def test_compressed_request(client: triton.InferenceServerClient) -> None:
    array = sample("INT32")
    tensor = triton.InferInput("x", list(array.shape), "INT32")
    tensor.set_data_from_numpy(array)
    for algorithm in ("gzip", "deflate"):
        result = client.infer("echo", [tensor], request_compression_algorithm=algorithm)
        np.testing.assert_array_equal(result.as_numpy("x"), array)


def test_repository_extension(client: triton.InferenceServerClient) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index()}
    assert index["sum"]["state"] == "READY"
    assert index["unready"]["state"] == "UNAVAILABLE"
    client.unload_model("sum")
    assert not client.is_model_ready("sum")
    assert {m["name"]: m["state"] for m in client.get_model_repository_index()}["sum"] == (
        "UNAVAILABLE"
    )
    client.load_model("sum")
    assert client.is_model_ready("sum")
    with pytest.raises(InferenceServerException) as missing:
        client.load_model("missing")
    assert missing.value.status() == "404"


def test_repository_index_ready_filter(server: RunningServer) -> None:
    response = httpx.post(f"{server.http_url}/v2/repository/index", json={"ready": True})
    assert response.status_code == 200
    assert sorted(m["name"] for m in response.json()) == ["echo", "sum"]
