"""Small inference requests answered past uvicorn's cycle: the same answers, on real sockets.

Each check runs against a server with the direct path and one without (``direct_http``
false), and the answers must be the same: status, body, and the headers a client reads.
"""

from __future__ import annotations

import socket
from typing import Any

import httpx
import pytest
from serving import RunningServer, StartServer
from testmodels import SumModel

from modelhost.access import Role, TokenStore
from modelhost.server.http import direct

V2_BODY = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
V1_BODY = b'{"instances":[[1,2,3,4]]}'


@pytest.fixture(params=[True, False], ids=["direct", "asgi"])
def direct_http(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _answers(server: RunningServer, requests: list[tuple[str, bytes, dict[str, str]]]) -> Any:
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        answers = []
        for path, body, headers in requests:
            response = client.post(path, content=body, headers=headers)
            answers.append(
                (
                    response.status_code,
                    response.content,
                    response.headers.get("content-type"),
                    response.headers.get("content-length"),
                )
            )
        return answers


CASES: list[tuple[str, bytes, dict[str, str]]] = [
    ("/v2/models/sum/infer", V2_BODY, {"content-type": "application/json"}),
    ("/v2/models/sum/versions/1/infer", V2_BODY, {}),  # the model has no version 1
    ("/v1/models/sum:predict", V1_BODY, {}),
    ("/v2/models/nope/infer", V2_BODY, {}),
    ("/v1/models/nope:predict", V1_BODY, {}),
    ("/v2/models/sum/infer", b"{not json", {}),
    ("/v2/models/sum/infer", b"", {}),
    ("/v1/models/sum:predict", b"[1, 2]", {}),
    ("/v2/models/sum/infer", V2_BODY + b" " * 5000, {}),  # past max_request_bytes: 413
    ("/v2/models//infer", V2_BODY, {}),
]


def test_direct_answers_are_the_asgi_answers(serve: StartServer) -> None:
    on = serve([SumModel()], direct_http=True, max_request_bytes=4096)
    off = serve([SumModel()], direct_http=False, max_request_bytes=4096)
    with_direct = _answers(on, CASES)
    without = _answers(off, CASES)
    assert with_direct == without
    assert [a[0] for a in with_direct] == [200, 404, 200, 404, 404, 400, 400, 400, 413, 404]


def test_requests_counted_in_metrics(serve: StartServer, direct_http: bool) -> None:
    server = serve([SumModel()], direct_http=direct_http)
    _answers(server, CASES[:3] * 3)
    text = httpx.get(f"{server.http_url}/metrics").text
    assert (
        'modelhost_requests_total{endpoint="infer",model="sum",protocol="v2",status="200"} 3.0'
        in (text)
    )
    assert (
        'modelhost_requests_total{endpoint="predict",model="sum",protocol="v1",status="200"} 3.0'
        in text
    )


def _raw(server: RunningServer, data: bytes, expect: int) -> list[bytes]:
    """Send ``data`` on one connection; the ``expect`` answers' heads and bodies, in order."""
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        sock.sendall(data)
        buffer = b""
        answers: list[bytes] = []
        while len(answers) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
            while b"\r\n\r\n" in buffer:
                head, rest = buffer.split(b"\r\n\r\n", 1)
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                if len(rest) < length:
                    break
                answers.append(head + b"\r\n\r\n" + rest[:length])
                buffer = rest[length:]
        return answers


def _post(path: str, body: bytes, extra: bytes = b"") -> bytes:
    return (
        b"POST " + path.encode() + b" HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n" + extra + b"\r\n" + body
    )


def test_pipelined_requests_answered_in_order(serve: StartServer, direct_http: bool) -> None:
    server = serve([SumModel()], direct_http=direct_http)
    data = (
        _post("/v2/models/sum/infer", V2_BODY)
        + _post("/v2/models/sum/infer", b"{bad")
        + b"GET /v2/health/ready HTTP/1.1\r\nhost: x\r\n\r\n"
        + _post("/v1/models/sum:predict", V1_BODY)
    )
    answers = _raw(server, data, 4)
    assert [a.split(b"\r\n", 1)[0] for a in answers] == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 400 Bad Request",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
    ]
    assert b'"data":[10.0]}' in answers[0]
    assert answers[3].endswith(b'{"predictions":{"sum":[10.0],"double":[[2.0,4.0,6.0,8.0]]}}')


def test_connection_close_is_honoured(serve: StartServer, direct_http: bool) -> None:
    server = serve([SumModel()], direct_http=direct_http)
    data = _post("/v2/models/sum/infer", V2_BODY, b"connection: close\r\n")
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):  # the server closes: recv returns b""
            received += chunk
    assert received.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in received.lower()


def test_body_split_across_reads(serve: StartServer, direct_http: bool) -> None:
    server = serve([SumModel()], direct_http=direct_http)
    data = _post("/v2/models/sum/infer", V2_BODY)
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        for index in range(0, len(data), 7):
            sock.sendall(data[index : index + 7])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_client_gone_before_the_answer_leaves_the_server_serving(
    serve: StartServer, direct_http: bool
) -> None:
    server = serve([SumModel()], direct_http=direct_http)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", server.server.http_port)) as sock:
            sock.sendall(_post("/v2/models/sum/infer", V2_BODY))
    answer = _answers(server, CASES[:1])[0]
    assert answer[0] == 200
    assert b'"data":[10.0]}' in answer[1]


def test_tokens_hold_on_the_direct_path(serve: StartServer, tmp_path: Any) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    _, secret = store.create(Role.CALLER, name="client", service="sum")
    server = serve(
        [SumModel(), SumModel("other")], direct_http=True, auth="tokens", token_file=str(store.path)
    )
    bearer = {"authorization": f"Bearer {secret}"}
    answers = _answers(
        server,
        [
            CASES[0],
            (CASES[0][0], V2_BODY, bearer),
            ("/v2/models/other/infer", V2_BODY, bearer),
            ("/v1/models/sum:predict", V1_BODY, bearer),
        ],
    )
    assert [a[0] for a in answers] == [401, 200, 403, 200]


def test_which_requests_qualify() -> None:
    assert direct.direct_path(b"/v2/models/m/infer") == "/v2/models/m/infer"
    assert direct.direct_path(b"/v1/models/m:predict") == "/v1/models/m:predict"
    assert direct.direct_path(b"/v2/models/m/infer?x=1") is None
    assert direct.direct_path(b"/v2/models/m%20/infer") is None
    assert direct.direct_path(b"/v1/models/m:explain") is None
    assert direct.direct_body_length([(b"content-length", b"10")]) == 10
    assert direct.direct_body_length([(b"content-length", b"10"), (b"expect", b"x")]) == -1
    assert direct.direct_body_length([(b"transfer-encoding", b"chunked")]) == -1
    assert direct.direct_body_length([(b"content-encoding", b"gzip")]) == -1
    assert direct.direct_body_length([(b"content-length", b"1"), (b"content-length", b"1")]) == -1
    assert direct.direct_body_length([(b"content-length", b"99999999")]) == 99999999
    assert direct.direct_body_length([]) == -1
