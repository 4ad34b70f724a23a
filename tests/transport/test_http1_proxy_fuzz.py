"""Fuzzing the HTTP/1.1 proxy's client protocol: whatever bytes a client sends, cut anywhere,
nothing escapes ``data_received``, the connection's books stay straight, and what it writes
is a sequence of whole HTTP answers, never two interleaved.

Hypothesis builds requests (any method, path, body, framing, ``expect``, ``connection``)
and raw byte strings, and feeds them to a :class:`ProxyClient` over a fake transport; a
scripted server leaves some requests pending and answers them when the test says.
"""

from __future__ import annotations

import itertools
from typing import Any

import httptools
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelhost.settings import Http1Limits
from modelhost.transport.http1_proxy import (
    _HOLD_STOPPED,
    BODY,
    LOCAL,
    ProxiedRequest,
    ProxyClient,
    ProxyServer,
)


class FakeTransport:
    """What ProxyClient asks of a transport, recorded."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.reading = True
        self.closing = False

    def write(self, data: bytes) -> None:
        assert not self.closing, "written after close"
        self.written += data

    def close(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default


class ScriptedServer(ProxyServer):
    """Answers /local at once, leaves /slow pending (answered when the test says), 404s."""

    pending: list[ProxyClient]

    def handle(self, client: ProxyClient, request: ProxiedRequest) -> None:
        if request.path == "/slow":
            self.pending.append(client)
            return
        super().handle(client, request)


def fuzz_resolve(request: ProxiedRequest) -> Any:
    """/nowhere: nowhere (its body dropped); /openai: the body decides; else the owner's app
    (its body read whole; with no app, answered 404)."""
    if request.path == "/nowhere":
        return None
    if request.path == "/openai" and not request.complete:
        return BODY
    return LOCAL


def _request(
    method: str, path: str, body: bytes, chunked: bool, expect: bool, close: bool
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nhost: x\r\n"
    if expect:
        head += "expect: 100-continue\r\n"
    if close:
        head += "connection: close\r\n"
    if chunked:
        framed = (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
        return (head + "transfer-encoding: chunked\r\n\r\n").encode() + framed
    return (head + f"content-length: {len(body)}\r\n\r\n").encode() + body


requests = st.builds(
    _request,
    st.sampled_from(["GET", "POST", "HEAD", "PUT"]),
    st.sampled_from(["/nowhere", "/openai", "/slow", "/x?y=1"]),
    st.binary(max_size=40),
    st.booleans(),
    st.booleans(),
    st.booleans(),
)
SLOW = _request("GET", "/slow", b"", False, False, False)
pieces = st.lists(st.one_of(requests, requests, st.binary(max_size=40)), max_size=12)


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a]


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    pieces,
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.lists(st.booleans(), max_size=12),
)
# Pipelined behind a slow answer, past the queued bytes: reading stops, then starts again.
@example([SLOW, _request("POST", "/x", b"a" * 20, False, False, False) * 2], [], [])
# A refusal (431) queued behind a slow answer, then sent in its turn.
@example([SLOW, b"GET / HTTP/1.1\r\n" + b"x: y\r\n" * 7 + b"\r\n"], [], [])
async def test_arbitrary_bytes_never_escape_or_corrupt_the_client_protocol(
    parts: list[bytes], cuts: list[int], answers: list[bool]
) -> None:
    limits = Http1Limits(max_header_count=6, max_header_bytes=300, max_body_bytes=32)
    server = ScriptedServer(fuzz_resolve, limits=limits)
    server.pending = []
    transport = FakeTransport()
    connection = ProxyClient(server)
    connection.connection_made(transport)  # type: ignore[arg-type]
    for chunk in _cut(b"".join(parts), cuts):
        connection.data_received(chunk)  # nothing may escape
        if server.pending and answers and answers.pop():
            server.pending.pop(0).respond(200, b"slow", b"text/plain")
        _check(connection, transport, server)
        if transport.closing:
            break
    while server.pending and not transport.closing:
        server.pending.pop(0).respond(200, b"slow", b"text/plain")
        _check(connection, transport, server)
    connection.connection_lost(None)
    assert connection not in server.connections
    assert connection not in server.sweeper.connections
    server.sweeper.close()
    # What was written is a sequence of whole HTTP answers, never two interleaved.
    parser = httptools.HttpResponseParser(_Answers())
    parser.feed_data(bytes(transport.written))


class _Answers:
    def on_message_complete(self) -> None:
        pass


def _check(connection: ProxyClient, transport: FakeTransport, server: ProxyServer) -> None:
    queue = list(connection._queue)
    assert connection._queued_bytes == sum(len(r.body) for r in queue)
    assert connection._body_bytes <= connection.limits.max_body_bytes
    assert sum(len(b) for b in connection._body) <= connection.limits.max_body_bytes
    assert connection.deadline >= 0.0
    if transport.closing:
        assert connection.closed
        return
    # Reading is paused exactly while something holds it.
    assert transport.reading == (connection._holds == 0)
    # Busy while a request is being answered; an idle connection has nothing queued and
    # holds nothing back but a refusal.
    assert connection._busy or not queue
    if not connection._busy:
        assert connection._holds & ~_HOLD_STOPPED == 0
    assert connection in server.connections
    assert connection.deadline > 0.0 or connection._busy
