"""Large inference bodies on the direct path: admitted by their Content-Length before a
byte is kept, collected whole, and given back when the client goes (real sockets)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from serving import RunningServer, StartServer
from testmodels import SumModel

from modelhost.access import Role, TokenStore
from modelhost.server.http.direct import DIRECT_BODY_LIMIT

ROWS = np.arange(40_000, dtype=np.float32).reshape(-1, 4)  # 160 KB of FP32


def _binary_v2() -> tuple[bytes, dict[str, str]]:
    header = (
        b'{"inputs":[{"name":"x","shape":[10000,4],"datatype":"FP32",'
        b'"parameters":{"binary_data_size":160000}}]}'
    )
    headers = {
        "content-type": "application/octet-stream",
        "inference-header-content-length": str(len(header)),
    }
    return header + ROWS.tobytes(), headers


def _head(body_bytes: int, extra: bytes = b"") -> bytes:
    return (
        b"POST /v2/models/sum/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(body_bytes).encode() + b"\r\n" + extra + b"\r\n"
    )


def _answer(sock: socket.socket) -> bytes:
    """One whole answer (head and body) read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def _connect(server: RunningServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10)


@pytest.mark.parametrize("direct_http", [True, False], ids=["direct", "asgi"])
def test_a_large_binary_tensor_is_answered_whole(serve: StartServer, direct_http: bool) -> None:
    body, headers = _binary_v2()
    assert len(body) > DIRECT_BODY_LIMIT
    server = serve([SumModel()], direct_http=direct_http)
    response = httpx.post(
        f"{server.http_url}/v2/models/sum/infer", content=body, headers=headers, timeout=10
    )
    assert response.status_code == 200, response.text
    sums = response.json()["outputs"][0]["data"]
    assert sums == ROWS.sum(axis=1).tolist()


def test_a_large_body_past_the_limit_is_refused_before_it_is_sent(serve: StartServer) -> None:
    server = serve([SumModel()], max_request_bytes=100_000)
    with _connect(server) as sock:
        sock.sendall(_head(200_000))
        answer = _answer(sock)  # no body byte sent yet
        assert answer.startswith(b"HTTP/1.1 413 ")
        # The body still comes; it is read and dropped, and the connection serves on.
        sock.sendall(b" " * 200_000)
        small = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'
        sock.sendall(_head(len(small)) + small)
        assert _answer(sock).startswith(b"HTTP/1.1 200 ")


def test_a_refused_body_with_connection_close_is_read_before_the_close(
    serve: StartServer,
) -> None:
    server = serve([SumModel()], max_request_bytes=100_000)
    with _connect(server) as sock:
        sock.sendall(_head(200_000, b"connection: close\r\n"))
        assert _answer(sock).startswith(b"HTTP/1.1 413 ")
        sock.sendall(b" " * 200_000)  # taken whole: a close before it could reset this
        assert sock.recv(65536) == b""  # then closed by the server, not kept alive


@pytest.mark.parametrize(
    "path", [b"/v2/models/sum/infer", b"/v2/models/sum/generate"], ids=["direct", "asgi"]
)
def test_answered_before_its_body_the_connection_then_idles_out(
    serve: StartServer, path: bytes
) -> None:
    # A refusal (direct) or a 404 (uvicorn's path) goes out before the body comes; once the
    # body is in, the connection is idle and closed after its keep-alive timeout.
    server = serve([SumModel()], max_request_bytes=100_000, timeout_keep_alive=1)
    with _connect(server) as sock:
        sock.sendall(_head(200_000).replace(b"/v2/models/sum/infer", path))
        assert _answer(sock).split(b" ", 2)[1] in (b"413", b"404")
        sock.sendall(b" " * 200_000)
        assert sock.recv(65536) == b""  # closed within the socket's 10 s timeout


def test_a_large_body_without_a_token_is_refused_before_it_is_sent(
    serve: StartServer, tmp_path: Path
) -> None:
    store = TokenStore(tmp_path / "tokens.db")
    _, secret = store.create(Role.CALLER, name="client", service="sum")
    server = serve([SumModel()], auth="tokens", token_file=str(store.path))
    body, _ = _binary_v2()
    with _connect(server) as sock:
        sock.sendall(_head(len(body)))
        assert _answer(sock).startswith(b"HTTP/1.1 401 ")
        sock.sendall(body)
    response = httpx.post(
        f"{server.http_url}/v2/models/sum/infer",
        content=body,
        headers={**_binary_v2()[1], "authorization": f"Bearer {secret}"},
        timeout=10,
    )
    assert response.status_code == 200


def _post_until(server: RunningServer, status: int, body: bytes, headers: dict[str, str]) -> int:
    """POST until the answer is ``status``: the server sees a closed connection on its next
    read, which this test cannot wait on directly; each try is itself a real request."""
    deadline = time.monotonic() + 10
    while True:
        got = httpx.post(
            f"{server.http_url}/v2/models/sum/infer", content=body, headers=headers, timeout=10
        ).status_code
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.02)


@pytest.mark.parametrize("ending", ["client gone", "body timeout"])
def test_a_large_body_holds_its_budget_while_it_comes_and_gives_it_back(
    serve: StartServer, ending: str
) -> None:
    body, headers = _binary_v2()
    # v2 charges the body three times over (it and its decoding): one fits, two do not.
    server = serve(
        [SumModel()], max_bytes_in_flight=int(len(body) * 3 * 1.5), http_body_timeout_s=0.5
    )
    with _connect(server) as sock:
        sock.sendall(_head(len(body)) + body[:1000])
        second = httpx.post(
            f"{server.http_url}/v2/models/sum/infer", content=body, headers=headers, timeout=10
        )
        assert second.status_code == 503
        assert second.headers["retry-after"] == "1"
        if ending == "body timeout":
            assert _answer(sock).startswith(b"HTTP/1.1 408 ")
    assert _post_until(server, 200, body, headers) == 200
