"""The REST port's limits hold against slow and greedy clients, and normal ones still pass.

Raw sockets play the hostile clients (slowloris, a body shorter than its Content-Length,
idle connections, too many headers, too many connections); the limits are set small here
so that each test takes about a second.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
from serving import RunningServer, StartServer
from testmodels import EchoModel, SlowModel

TIMEOUTS = {"http_header_timeout_s": 0.5, "http_body_timeout_s": 0.5}


@contextmanager
def connect(server: RunningServer) -> Iterator[socket.socket]:
    sock = socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10)
    try:
        yield sock
    finally:
        sock.close()


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took."""
    began = time.monotonic()
    sock.settimeout(limit_s)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except TimeoutError:
        pytest.fail(f"the server kept the connection open past {limit_s} s")
    except ConnectionResetError:
        pass
    return b"".join(chunks), time.monotonic() - began


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, f"not an HTTP answer: {response[:80]!r}"
    return int(match.group(1))


def served(server: RunningServer) -> bool:
    response = httpx.post(
        f"{server.http_url}/v1/models/echo:predict", json={"instances": [1]}, timeout=5
    )
    return response.status_code == 200 and response.json() == {"predictions": [1]}


def test_a_body_shorter_than_its_content_length_gets_408(serve: StartServer) -> None:
    server = serve([EchoModel()], enable_grpc=False, **TIMEOUTS)
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/models/echo:predict HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{"
        )
        # Closed well before the client's patience (4 s) runs out, and not forever.
        response, _ = read_until_closed(sock, 4)
    assert status_of(response) == 408
    assert b"connection: close" in response
    assert served(server)


def test_a_slow_body_that_keeps_coming_is_not_cut(serve: StartServer) -> None:
    # The body deadline is progress, not a total: 1.2 s of upload at 0.5 s between bytes.
    server = serve([EchoModel()], enable_grpc=False, **TIMEOUTS)
    body = orjson.dumps({"instances": [1, 2, 3]})
    with connect(server) as sock:
        sock.sendall(
            b"POST /v1/models/echo:predict HTTP/1.1\r\nhost: x\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        )
        for index in range(0, len(body), len(body) // 6 + 1):
            time.sleep(0.2)
            sock.sendall(body[index : index + len(body) // 6 + 1])
        response, _ = read_until_closed(sock, 5)
    assert status_of(response) == 200
    assert response.endswith(b'{"predictions":[1,2,3]}')


def test_slowloris_headers_get_408_and_the_connection_closes(serve: StartServer) -> None:
    server = serve([EchoModel()], enable_grpc=False, **TIMEOUTS)
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
        stop = threading.Event()

        def trickle() -> None:
            # One header line every 0.1 s: progress, but the headers never end.
            for index in range(100):
                if stop.wait(0.1):
                    return
                try:
                    sock.sendall(f"x-{index}: y\r\n".encode())
                except OSError:
                    return

        sender = threading.Thread(target=trickle)
        sender.start()
        try:
            # The trickle goes on for 10 s: a deadline it could push back would not end in 4.
            response, _ = read_until_closed(sock, 4)
        finally:
            stop.set()
            sender.join()
    assert status_of(response) == 408


def test_many_half_sent_requests_are_closed_and_others_are_served(serve: StartServer) -> None:
    server = serve([EchoModel()], enable_grpc=False, **TIMEOUTS)
    address = ("127.0.0.1", server.server.http_port)
    idle: list[socket.socket] = []
    try:
        for index in range(300):
            sock = socket.create_connection(address, timeout=10)
            idle.append(sock)
            if index % 3 == 0:
                sock.sendall(b"POST /v1/models/echo:predict HTTP/1.1\r\ncontent-length: 9\r\n")
            elif index % 3 == 1:
                sock.sendall(b"POST /v1/models/echo:predict HTTP/1.1\r\ncontent-length: 9\r\n\r\n{")
            # else: a connection that says nothing at all
        assert served(server)  # while they are all open
        deadline = time.monotonic() + 5
        for sock in idle:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                while sock.recv(65536):
                    pass
            except ConnectionResetError:
                pass
            except TimeoutError:
                pytest.fail("a half-sent request was kept open past the deadline")
    finally:
        for sock in idle:
            sock.close()
    assert served(server)


def test_too_many_or_too_long_headers_get_431(serve: StartServer) -> None:
    server = serve(
        [EchoModel()], enable_grpc=False, http_max_header_count=20, http_max_header_bytes=4096
    )
    many = b"".join(f"x-{i}: y\r\n".encode() for i in range(21))
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
        response, _ = read_until_closed(sock, 5)
    assert status_of(response) == 431
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
        try:
            # Sent in pieces, as a client streaming an endless header would.
            for _ in range(64):
                sock.sendall(b"x-long: " + b"a" * 1000 + b"\r\n")
                time.sleep(0.005)
        except OSError:
            pass  # closed by the server on the way: what this test wants
        response, _ = read_until_closed(sock, 5)
    assert status_of(response) == 431
    # 20 headers of ordinary size pass.
    headers = {f"x-{i}": "y" for i in range(15)}
    assert httpx.get(f"{server.http_url}/v2/health/live", headers=headers).status_code == 200


def test_connections_past_the_cap_get_503_at_once(serve: StartServer) -> None:
    server = serve([EchoModel()], enable_grpc=False, http_max_connections=4)
    held = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", server.server.http_port), timeout=10)
            held.append(sock)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")  # accepted, kept alive
        with connect(server) as extra:
            response, _ = read_until_closed(extra, 3)  # at once, not queued
        assert status_of(response) == 503
        assert b"retry-after: 1" in response
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, clients are served again.
    deadline = time.monotonic() + 5
    while True:
        try:
            assert served(server)
            break
        except (httpx.TransportError, AssertionError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _peak_rss_kib() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]


def test_bytes_in_flight_budget_refuses_the_excess_and_keeps_health_answered(
    serve: StartServer,
) -> None:
    rows = np.random.default_rng(0).random((300_000, 4), dtype=np.float32)
    body = orjson.dumps({"instances": rows.tolist()})  # ~8 MB of v1 JSON, ~15x when decoded
    charge = len(body) * 17  # v1: the body and 16x for decoding it
    slow = SlowModel(delay=1.5)
    # One such request fits, two do not.
    server = serve([slow], enable_grpc=False, max_bytes_in_flight=int(charge * 1.5))
    url = f"{server.http_url}/v1/models/slow:predict"
    statuses: list[int] = []
    retry_after: list[str | None] = []

    def call() -> None:
        response = httpx.post(
            url, content=body, headers={"content-type": "application/json"}, timeout=30
        )
        statuses.append(response.status_code)
        retry_after.append(response.headers.get("retry-after"))

    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on
    before = _peak_rss_kib()
    callers = [threading.Thread(target=call) for _ in range(8)]
    for caller in callers:
        caller.start()
    assert slow.started.wait(10)
    began = time.perf_counter()
    live = httpx.get(f"{server.http_url}/v2/health/live", timeout=5)
    live_s = time.perf_counter() - began
    for caller in callers:
        caller.join(30)
    grown_mib = (_peak_rss_kib() - before) / 1024
    assert live.status_code == 200
    assert live_s < 0.5, f"/v2/health/live took {live_s:.2f}s"
    assert statuses.count(200) >= 1
    assert statuses.count(503) >= 5, statuses
    assert set(statuses) <= {200, 503}
    assert all(r == "1" for s, r in zip(statuses, retry_after, strict=True) if s == 503)
    # Eight decoded at once would take ~1 GiB; one or two at a time, a few hundred MiB.
    assert grown_mib < 500, f"peak RSS grew {grown_mib:.0f} MiB"
    # Once answered, the budget is whole again.
    assert httpx.post(url, content=body, timeout=30).status_code == 200


def read_answer(sock: socket.socket) -> bytes:
    """One whole answer with a Content-Length (uvicorn may write head and body apart)."""
    sock.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    assert len(body) == length, "more than one answer"
    return head + b"\r\n\r\n" + body


def test_an_idle_keep_alive_connection_is_closed_after_its_timeout(serve: StartServer) -> None:
    # The keep-alive timeout is the connection's deadline in the limits' sweep (no timer
    # per request): an answered connection left idle is closed once it passes, silently.
    server = serve([EchoModel()], enable_grpc=False, timeout_keep_alive=1, **TIMEOUTS)
    with connect(server) as sock:
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
        assert status_of(read_answer(sock)) == 200
        rest, waited = read_until_closed(sock, 4)
    assert rest == b""
    assert 0.9 <= waited <= 3.0


def test_a_request_after_an_answer_gets_its_own_header_time(serve: StartServer) -> None:
    # The header timeout (0.5 s) of a second request runs from its first byte, not from
    # the first request's answer: a client that waits 0.7 s and then sends whole is served.
    server = serve([EchoModel()], enable_grpc=False, timeout_keep_alive=5, **TIMEOUTS)
    with connect(server) as sock:
        for _ in range(2):
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n")
            assert status_of(read_answer(sock)) == 200
            time.sleep(0.7)
        sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n")
        rest, _ = read_until_closed(sock, 4)  # headers never end: 408 from their first byte
    assert status_of(rest) == 408
