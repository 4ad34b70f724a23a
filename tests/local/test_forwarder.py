"""The platform's side of the HTTP gateway: a revision per request, a replica per attempt,
each replica given back once, every answer counted and, where the revision logs, logged.

A real :class:`~modelhost.transport.http1_proxy.ProxyServer` wired as the platform wires
it (``Forwarder.forward`` and its pool), a raw asyncio server as the replica, and a revision
runner, payload logger and component of the test's own.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.metrics import GatewayMetrics
from modelhost.local.routing import WeightedChoice
from modelhost.transport.http1_proxy import ProxiedRequest, ProxyServer


@dataclass
class FakeReplica:
    http_address: str
    name: str = "replica-1"


@dataclass
class FakeRevision:
    timeout_s: int = 30
    logger: Any = None


@dataclass(eq=False)  # hashable by identity, as a revision runner is
class FakeRunner:
    replica: FakeReplica
    name: str = "rev-1"
    revision: FakeRevision = field(default_factory=FakeRevision)
    # Replicas only through the activator's wait (as at scale zero).
    cold: bool = False
    taken: int = 0
    released: list[FakeReplica] = field(default_factory=list)

    def try_acquire(self) -> FakeReplica | None:
        if self.cold:
            return None
        self.taken += 1
        return self.replica

    async def acquire(self, timeout: float) -> FakeReplica:
        self.taken += 1
        return self.replica

    def release(self, replica: FakeReplica) -> None:
        self.released.append(replica)


@dataclass
class FakePayloadLogger:
    events: list[tuple[Any, ...]] = field(default_factory=list)
    # Where whole exchanges go (the store's sink); None: the CloudEvent path, both halves.
    sink: Any = None

    def exchange_sink(self, plan: Any) -> Any:
        return self.sink

    def log_request(self, plan: Any, ctx: Any, request_id: str, headers: Any, body: bytes) -> None:
        self.events.append(("request", request_id, body))

    def log_response(
        self, plan: Any, ctx: Any, request_id: str, status: int, headers: Any, body: bytes
    ) -> None:
        self.events.append(("response", request_id, status, body))


def component(runners: list[FakeRunner]) -> ComponentState:
    return ComponentState(
        "default",
        "svc",
        "predictor",
        plan=None,  # type: ignore[arg-type]
        split=WeightedChoice([(runner, 100) for runner in runners]),  # type: ignore[misc]
    )


@asynccontextmanager
async def replica_at() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A replica answering ``{"ok": 1}`` to each request, which it keeps."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while head := await reader.readuntil(b"\r\n\r\n"):
                match = re.search(rb"content-length: (\d+)", head)
                assert match is not None
                seen.append(head + await reader.readexactly(int(match.group(1))))
                writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{"ok": 1}')
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@asynccontextmanager
async def listener(forwarder: Forwarder, state: ComponentState) -> AsyncIterator[int]:
    def resolve(request: ProxiedRequest) -> ComponentState:
        return state

    server = ProxyServer(resolve, forwarder.forward, pool=forwarder.pool)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()
        forwarder.close()


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    response = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return response


def counted(metrics: GatewayMetrics, code: str) -> float | None:
    labels = {
        "namespace": "default",
        "service": "svc",
        "component": "predictor",
        "revision": "rev-1",
        "code": code,
    }
    return metrics.registry.get_sample_value("modelhost_gateway_requests_total", labels)


async def test_each_request_takes_a_replica_gives_it_back_and_is_counted() -> None:
    metrics = GatewayMetrics(lambda: [])
    async with replica_at() as (port, seen):
        runner = FakeRunner(FakeReplica(f"127.0.0.1:{port}"))
        cold = FakeRunner(FakeReplica(f"127.0.0.1:{port}"), cold=True)
        for current in (runner, cold):  # a replica at once, and one waited for
            async with listener(Forwarder(metrics, None), component([current])) as gateway:
                response = await exchange(
                    gateway,
                    b"POST /v1/models/m:predict HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                    b"content-length: 2\r\n\r\n{}",
                )
            assert response.startswith(b"HTTP/1.1 200 OK")
            assert current.taken == 1
            assert current.released == [current.replica]
    assert len(seen) == 2
    assert b"x-request-id" not in seen[0]  # only where the revision logs
    assert counted(metrics, "200") == 2
    labels = {"namespace": "default", "service": "svc", "component": "predictor"}
    latency = "modelhost_gateway_request_duration_seconds"
    revision = {**labels, "revision": "rev-1"}
    assert metrics.registry.get_sample_value(f"{latency}_count", revision) == 2
    assert metrics.registry.get_sample_value(f"{latency}_bucket", {**revision, "le": "+Inf"}) == 2
    assert 0 < (metrics.registry.get_sample_value(f"{latency}_sum", revision) or 0) < 5


async def test_a_logging_revision_logs_both_ways_under_one_request_id() -> None:
    payload_logger = FakePayloadLogger()
    async with replica_at() as (port, seen):
        runner = FakeRunner(FakeReplica(f"127.0.0.1:{port}"))
        runner.revision.logger = object()  # a plan: the fake logger only passes it on
        forwarder = Forwarder(GatewayMetrics(lambda: []), payload_logger)  # type: ignore[arg-type]
        async with listener(forwarder, component([runner])) as gateway:
            response = await exchange(
                gateway,
                b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                b'content-length: 4\r\n\r\n{"a"',
            )
    assert response.endswith(b'{"ok": 1}')
    (request, request_id, body), (response_event, same_id, status, answer) = payload_logger.events
    assert (request, body, response_event, status, answer) == (
        "request",
        b'{"a"',
        "response",
        200,
        b'{"ok": 1}',
    )
    assert request_id == same_id
    # The replica sees the id the events carry.
    assert f"x-request-id: {request_id}\r\n".encode() in seen[0]


async def test_a_revision_logging_into_an_exchange_sink_hands_it_the_whole_exchange() -> None:
    """``mode: all`` into the built-in store: no event of either half, the request's body
    kept until the answer, then both, with the status, in one call."""
    exchanges: list[tuple[Any, ...]] = []
    payload_logger = FakePayloadLogger(sink=lambda *exchange: exchanges.append(exchange))
    async with replica_at() as (port, seen):
        runner = FakeRunner(FakeReplica(f"127.0.0.1:{port}"))
        runner.revision.logger = object()
        forwarder = Forwarder(GatewayMetrics(lambda: []), payload_logger)  # type: ignore[arg-type]
        async with listener(forwarder, component([runner])) as gateway:
            for _ in range(2):
                await exchange(
                    gateway,
                    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                    b'content-length: 4\r\n\r\n{"a"',
                )
    assert payload_logger.events == []
    assert len(exchanges) == 2
    (context, request_id, request, status, answer), second = exchanges
    assert (request, status, answer) == (b'{"a"', 200, b'{"ok": 1}')
    assert (context.service, context.component, context.endpoint) == ("svc", "predictor", "rev-1")
    assert second[0] is context  # one context per revision
    assert second[1] != request_id
    assert f"x-request-id: {request_id}\r\n".encode() in seen[0]


async def test_a_component_with_no_ready_revision_answers_503() -> None:
    metrics = GatewayMetrics(lambda: [])
    async with listener(Forwarder(metrics, None), component([])) as gateway:
        response = await exchange(
            gateway, b"GET /v2/models/m HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
    assert response.startswith(b"HTTP/1.1 503 ")
    assert b"svc: no revision of the predictor is ready" in response


async def test_a_logged_request_keeps_the_id_it_came_with() -> None:
    """ce-id first (KServe's pairing), else x-request-id; the first of a repeated header; the
    replica gets the client's x-request-id as sent, or the id the events carry when none."""
    cases = [
        (b"ce-id: ce-1\r\nx-request-id: rid-1\r\n", "ce-1", b"x-request-id: rid-1\r\n"),
        (b"x-request-id: rid-1\r\nx-request-id: rid-2\r\n", "rid-1", b"x-request-id: rid-1\r\n"),
        (b"ce-id: ce-1\r\nce-id: ce-2\r\n", "ce-1", b"x-request-id: ce-1\r\n"),
    ]
    for headers, expected_id, sent in cases:
        payload_logger = FakePayloadLogger()
        async with replica_at() as (port, seen):
            runner = FakeRunner(FakeReplica(f"127.0.0.1:{port}"))
            runner.revision.logger = object()
            forwarder = Forwarder(GatewayMetrics(lambda: []), payload_logger)  # type: ignore[arg-type]
            async with listener(forwarder, component([runner])) as gateway:
                await exchange(
                    gateway,
                    b"POST /v2/models/m/infer HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                    + headers
                    + b"content-length: 2\r\n\r\n{}",
                )
        assert [event[1] for event in payload_logger.events] == [expected_id, expected_id]
        # None added when the client sent one (its own pass through as they came).
        assert seen[0].count(b"x-request-id: ") == max(1, headers.count(b"x-request-id: "))
        assert sent in seen[0]
