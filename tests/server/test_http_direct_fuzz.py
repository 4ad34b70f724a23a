"""Fuzz of the direct path: arbitrary bodies, header sets and read splits on real sockets.

Whatever a client sends to an inference route, the server answers it with one well-formed
HTTP/1.1 response whose status is a client error or a success (never a 5xx, never silence),
and the connection it came on still answers the next request.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import RunningServer, start_server, stop_server
from testmodels import SumModel

GOOD = b'{"inputs":[{"name":"x","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}'


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server([SumModel()], direct_http=True, max_request_bytes=8192)
    yield running
    stop_server(running)


def _request(path: bytes, body: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    head = b"".join(name + b": " + value + b"\r\n" for name, value in headers)
    return (
        b"POST "
        + path
        + b" HTTP/1.1\r\nhost: x\r\n"
        + head
        + b"content-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def _read_answer(sock: socket.socket, buffer: bytes) -> tuple[int, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        buffer += chunk
    head, rest = buffer.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection inside an answer"
        rest += chunk
    return status, rest[length:]


json_like = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    path=st.sampled_from(
        [b"/v2/models/sum/infer", b"/v1/models/sum:predict", b"/v2/models/x/infer"]
    ),
    body=st.one_of(st.binary(max_size=300), json_like.map(lambda v: repr(v).encode())),
    headers=st.lists(
        st.sampled_from(
            [
                (b"content-type", b"application/json"),
                (b"content-type", b"application/octet-stream"),
                (b"inference-header-content-length", b"0"),
                (b"inference-header-content-length", b"7"),
                (b"x-request-id", b"abc"),
                (b"ce-id", b"1"),
            ]
        ),
        max_size=3,
        unique=True,
    ),
    split=st.integers(min_value=1, max_value=64),
)
def test_any_request_gets_one_answer_and_the_connection_lives(
    server: RunningServer, path: bytes, body: bytes, headers: list[tuple[bytes, bytes]], split: int
) -> None:
    data = _request(path, body, headers)
    with socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10) as sock:
        for index in range(0, len(data), split):
            sock.sendall(data[index : index + split])
        status, rest = _read_answer(sock, b"")
        assert 200 <= status < 500, status
        sock.sendall(_request(b"/v2/models/sum/infer", GOOD, []))
        again, _ = _read_answer(sock, rest)
        assert again == 200
