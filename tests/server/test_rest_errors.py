"""Bad input gets a clear message and the right status, never a 500 or a hung socket."""

from __future__ import annotations

import socket

import httpx
import pytest
from serving import RunningServer, StartServer
from testmodels import EchoModel, FailingModel, SumModel


@pytest.fixture
def server(serve: StartServer) -> RunningServer:
    return serve([EchoModel(), SumModel(), FailingModel()], max_request_bytes=4096)


def infer(server: RunningServer, body: bytes, model: str = "sum", **headers: str) -> httpx.Response:
    return httpx.post(
        f"{server.http_url}/v2/models/{model}/infer", content=body, headers=headers, timeout=10
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", "Expected `object`"),
        (b"{}", "missing required field `inputs`"),
        (b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32"}]}', "neither data"),
        (
            b'{"inputs": [{"name": "x", "shape": "1", "datatype": "FP32", "data": [1]}]}',
            "$.inputs[0].shape",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP33", "data": [1]}]}',
            "inputs[0].datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2]}]}',
            "needs 4 elements, data holds 2",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["a", "b"]}]}',
            "got `str` - at `$.inputs[0].data[0]`",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [2], "datatype": "INT8", "data": [1, 300]}]}',
            "does not fit datatype INT8",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [-1], "datatype": "FP32", "data": [1]}]}',
            "must be >= 0",
        ),
        (
            b'{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}',
            "rows of 4 values",
        ),
        (b'{"id": 5, "inputs": []}', "$.id"),
    ],
)
def test_bad_v2_requests_are_400(server: RunningServer, body: bytes, fragment: str) -> None:
    response = infer(server, body)
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"]


@pytest.mark.parametrize(
    ("header", "fragment"),
    [("abc", "must be an integer"), ("-1", "must not be negative"), ("9999", "does not fit")],
)
def test_bad_binary_header(server: RunningServer, header: str, fragment: str) -> None:
    response = infer(server, b"{}", **{"Inference-Header-Content-Length": header})
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_binary_size_mismatch(server: RunningServer) -> None:
    header = (
        b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":12}}]}'
    )
    response = infer(
        server, header + b"\x00" * 12, **{"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 400
    assert "needs 16 bytes, got 12" in response.json()["error"]


def test_unknown_model_is_404_before_the_body_is_read(server: RunningServer) -> None:
    response = infer(server, b"{not json", model="missing")
    assert response.status_code == 404
    assert "missing" in response.json()["error"]


def test_model_failure_is_500_with_the_reason(server: RunningServer) -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    response = infer(server, body, model="failing")
    assert response.status_code == 500
    assert response.json() == {"error": "RuntimeError: boom"}
    # the worker survived: the next request is served
    assert infer(server, body, model="echo").status_code == 200


def test_oversize_body_is_413(server: RunningServer) -> None:
    body = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    response = infer(server, body + b" " * 5000)
    assert response.status_code == 413
    assert "4096" in response.json()["error"]


def test_oversize_chunked_body_is_413(server: RunningServer) -> None:
    def chunks():  # no Content-Length: the limit must hold while streaming
        for _ in range(10):
            yield b" " * 1000

    response = httpx.post(f"{server.http_url}/v2/models/sum/infer", content=chunks(), timeout=10)
    assert response.status_code == 413


def test_gzip_bomb_is_413(server: RunningServer) -> None:
    import gzip

    response = infer(server, gzip.compress(b" " * 100_000), **{"Content-Encoding": "gzip"})
    assert response.status_code == 413


def test_unknown_route_and_wrong_method(server: RunningServer) -> None:
    assert httpx.get(f"{server.http_url}/nope").status_code == 404
    wrong = httpx.get(f"{server.http_url}/v2/models/sum/infer")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"


def test_bad_v1_requests_are_400(server: RunningServer) -> None:
    url = f"{server.http_url}/v1/models/echo:predict"
    assert httpx.post(url, content=b"{oops").status_code == 400
    assert httpx.post(url, json=[1, 2]).status_code == 400
    no_key = httpx.post(url, json={"rows": []})
    assert no_key.status_code == 400
    assert "instances" in no_key.json()["error"]
    assert httpx.post(url, json={"instances": 5}).status_code == 400


def test_truncated_body_does_not_hang_the_server(server: RunningServer) -> None:
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=5) as sock:
        sock.sendall(
            b"POST /v2/models/sum/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"
        )
    # the half-sent request is dropped; the server goes on answering others
    assert httpx.get(f"{server.http_url}/v2/health/live").status_code == 200


def test_deeply_nested_v2_json_is_400(server: RunningServer) -> None:
    # Issue 14, item 9: msgspec's RecursionError used to escape as a 500.
    data = b"[" * 1500 + b"]" * 1500  # past Python's recursion limit, under the body limit
    body = (
        b'{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": ' + data + b"}]}"
    )
    response = infer(server, body)
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["error"]


@pytest.mark.parametrize("data", [b"[null, null]", b'"x"', b"3", b"null"])
@pytest.mark.parametrize("verb", ["predict", "explain"])
def test_cloudevent_json_that_is_not_an_object_is_400(
    server: RunningServer, data: bytes, verb: str
) -> None:
    # Issue 14, item 9: these reached the model and came back as 500s.
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "1",
        "ce-source": "test",
        "ce-type": "org.kubeflow.serving.inference.request",
        "content-type": "application/json",
    }
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:{verb}", content=data, headers=headers, timeout=10
    )
    assert response.status_code == 400
    assert "must be a JSON object" in response.json()["error"]


def test_an_unknown_content_encoding_is_415(server: RunningServer) -> None:
    response = infer(server, b"{}", **{"Content-Encoding": "br"})
    assert response.status_code == 415
    assert "gzip, deflate or identity" in response.json()["error"]
