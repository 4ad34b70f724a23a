"""The payload logger against a real HTTP sink on loopback: what KServe's consumers receive."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from cloudevents.core.bindings import http as ce_http
from multidict import CIMultiDict

from modelhost.control.plan_types import LoggerPlan
from modelhost.local.payload_logger import (
    REQUEST_TYPE,
    RESPONSE_TYPE,
    LogContext,
    PayloadLogger,
)

CTX = LogContext(
    service="fraud", namespace="team-a", component="predictor", endpoint="fraud-predictor-1a2b"
)
JSON = {"Content-Type": "application/json"}


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes


@dataclass
class Sink:
    """An HTTP server that records each POST; ``status`` and ``gate`` shape its answers."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    attempts: int = 0
    status: int = 200
    gate: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        body = await request.read()
        if self.gate is not None:
            await self.gate.wait()
        if self.status == 200:
            self.received.append(Received({k.lower(): v for k, v in request.headers.items()}, body))
        return web.Response(status=self.status)

    def of_type(self, ce_type: str) -> list[Received]:
        return [r for r in self.received if r.headers["ce-type"] == ce_type]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    recorder = Sink()
    app = web.Application()
    app.router.add_post("/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    recorder.url = f"http://{host}:{port}/events"
    yield recorder
    if recorder.gate is not None:
        recorder.gate.set()
    await runner.cleanup()


@pytest.fixture
async def payload_logger() -> AsyncIterator[PayloadLogger]:
    started = PayloadLogger(timeout_s=2.0)
    await started.start()
    yield started
    await started.stop(drain_s=1.0)


async def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out waiting"
        await asyncio.sleep(0.01)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


async def test_mode_all_sends_request_and_response_with_one_id(
    sink: Sink, payload_logger: PayloadLogger
) -> None:
    plan = LoggerPlan(url=sink.url, mode="all")
    request_body = b'{"instances": [[1.0, 2.0]]}'
    response_body = b'{"predictions": [1]}'
    payload_logger.log_request(plan, CTX, "req-1", JSON, request_body)
    payload_logger.log_response(plan, CTX, "req-1", 200, JSON, response_body)
    await until(lambda: len(sink.received) == 2)

    (request,) = sink.of_type(REQUEST_TYPE)
    (response,) = sink.of_type(RESPONSE_TYPE)
    assert REQUEST_TYPE == "org.kubeflow.serving.inference.request"
    assert RESPONSE_TYPE == "org.kubeflow.serving.inference.response"
    for event, body in ((request, request_body), (response, response_body)):
        headers = event.headers
        assert headers["ce-id"] == "req-1"
        assert headers["ce-specversion"] == "1.0"
        assert headers["ce-source"] == "fraud-predictor"
        assert headers["ce-inferenceservicename"] == "fraud"
        assert headers["ce-namespace"] == "team-a"
        assert headers["ce-component"] == "predictor"
        assert headers["ce-endpoint"] == "fraud-predictor-1a2b"
        assert headers["ce-metadata"] == "{}"
        assert "ce-annotations" not in headers
        assert headers["content-type"] == "application/json"
        assert headers["ce-time"].endswith("Z")
        assert event.body == body
        # A conformant CloudEvents reader takes it as the same event.
        parsed = ce_http.from_http_event(ce_http.HTTPMessage(event.headers, event.body))
        assert parsed.get_id() == "req-1"
        assert parsed.get_type() == headers["ce-type"]
        assert parsed.get_time() is not None
    assert "ce-statuscode" not in request.headers
    assert response.headers["ce-statuscode"] == "200"
    assert payload_logger.stats == {"sent": 2, "failed": 0, "dropped": 0}


@pytest.mark.parametrize(
    ("mode", "ce_type"), [("request", REQUEST_TYPE), ("response", RESPONSE_TYPE)]
)
async def test_mode_request_or_response_sends_only_that_one(
    sink: Sink, payload_logger: PayloadLogger, mode: str, ce_type: str
) -> None:
    plan = LoggerPlan(url=sink.url, mode=mode)
    payload_logger.log_request(plan, CTX, "req-2", JSON, b"{}")
    payload_logger.log_response(plan, CTX, "req-2", 200, JSON, b"{}")
    await until(lambda: payload_logger.stats["sent"] >= 1)
    await asyncio.sleep(0.1)
    assert [r.headers["ce-type"] for r in sink.received] == [ce_type]
    assert payload_logger.stats["sent"] == 1


async def test_metadata_headers_and_annotations_as_kserve_names_them(
    sink: Sink, payload_logger: PayloadLogger
) -> None:
    plan = LoggerPlan(
        url=sink.url,
        mode="all",
        metadata_headers=("X-Request-Id", "X-Tenant"),
        metadata_annotations=(("serving.kserve.io/team", "fraud ops"), ("owner", "ana")),
    )
    request_headers = CIMultiDict(
        [
            ("content-type", "application/json"),
            ("x-request-id", "abc-123"),
            ("X-Tenant", "t1"),
            ("X-Tenant", "t2"),
            ("Authorization", "Bearer secret"),
        ]
    )
    payload_logger.log_request(plan, CTX, "abc-123", request_headers, b"{}")
    # The response lacks them: the response event still carries the request's metadata.
    payload_logger.log_response(plan, CTX, "abc-123", 200, JSON, b"{}")
    await until(lambda: len(sink.received) == 2)

    for event in sink.received:
        # Raw JSON, as KServe's Go agent writes it (no percent-encoding of the quotes).
        assert event.headers["ce-metadata"] == '{"X-Request-Id":["abc-123"],"X-Tenant":["t1","t2"]}'
        assert json.loads(event.headers["ce-annotations"]) == {
            "serving.kserve.io/team": "fraud ops",
            "owner": "ana",
        }
        assert "secret" not in json.dumps(event.headers)


async def test_non_200_response_is_logged_with_its_status(
    sink: Sink, payload_logger: PayloadLogger
) -> None:
    plan = LoggerPlan(url=sink.url, mode="response")
    error = b'{"error": "Missing \'instances\' key"}'
    payload_logger.log_response(plan, CTX, "req-3", 422, JSON, error)
    await until(lambda: len(sink.received) == 1)
    (event,) = sink.received
    assert event.headers["ce-type"] == RESPONSE_TYPE
    assert event.headers["ce-statuscode"] == "422"
    assert event.body == error


async def test_body_bytes_and_content_type_unchanged(
    sink: Sink, payload_logger: PayloadLogger
) -> None:
    plan = LoggerPlan(url=sink.url, mode="all")
    raw = bytes(range(256)) * 64 + b"\r\n\x00"
    payload_logger.log_request(
        plan, CTX, "req-4", {"Content-Type": "application/octet-stream"}, raw
    )
    payload_logger.log_response(plan, CTX, "req-4", 200, {"content-type": "image/png"}, raw[::-1])
    payload_logger.log_response(plan, CTX, "req-5", 204, {}, b"")
    await until(lambda: len(sink.received) == 3)
    by_id = {(r.headers["ce-id"], r.headers["ce-type"]): r for r in sink.received}
    request = by_id["req-4", REQUEST_TYPE]
    response = by_id["req-4", RESPONSE_TYPE]
    assert request.body == raw
    assert request.headers["content-type"] == "application/octet-stream"
    assert response.body == raw[::-1]
    assert response.headers["content-type"] == "image/png"
    # No Content-Type on the payload: none is invented for it.
    empty = by_id["req-5", RESPONSE_TYPE]
    assert empty.body == b""
    assert "content-type" not in empty.headers


async def test_full_queue_drops_counts_and_warns(
    sink: Sink, caplog: pytest.LogCaptureFixture
) -> None:
    plan = LoggerPlan(url=sink.url, mode="request")
    small = PayloadLogger(queue_size=2, workers=1)
    with caplog.at_level(logging.WARNING, logger="modelhost.payload_logger"):
        # Not started: nothing leaves the queue, so the third event finds it full.
        for i in range(3):
            small.log_request(plan, CTX, f"req-{i}", JSON, b"{}")
    assert small.stats == {"sent": 0, "failed": 0, "dropped": 1}
    assert any("queue full" in r.getMessage() for r in caplog.records)

    await small.start()
    await until(lambda: small.stats["sent"] == 2)
    await small.stop()
    assert sorted(r.headers["ce-id"] for r in sink.received) == ["req-0", "req-1"]


async def test_sink_down_counts_failed_and_raises_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = LoggerPlan(url=closed_port_url(), mode="all")
    down = PayloadLogger(timeout_s=1.0)
    await down.start()
    with caplog.at_level(logging.WARNING, logger="modelhost.payload_logger"):
        down.log_request(plan, CTX, "req-6", JSON, b"{}")
        down.log_response(plan, CTX, "req-6", 200, JSON, b"{}")
        await until(lambda: down.stats["failed"] == 2)
        await down.stop()
    assert down.stats == {"sent": 0, "failed": 2, "dropped": 0}
    assert any("could not send" in r.getMessage() for r in caplog.records)


async def test_error_status_from_sink_is_retried_once_then_failed(
    sink: Sink, payload_logger: PayloadLogger
) -> None:
    sink.status = 503
    payload_logger.log_request(LoggerPlan(url=sink.url, mode="all"), CTX, "r", JSON, b"{}")
    await until(lambda: payload_logger.stats["failed"] == 1)
    assert sink.attempts == 2
    assert payload_logger.stats["sent"] == 0


async def test_blob_store_url_fails_without_a_post(payload_logger: PayloadLogger) -> None:
    plan = LoggerPlan(url="s3://bucket/logs", mode="request")
    payload_logger.log_request(plan, CTX, "req-7", JSON, b"{}")
    await until(lambda: payload_logger.stats["failed"] == 1)
    assert payload_logger.stats["sent"] == 0


async def test_stop_drains_what_is_queued(sink: Sink) -> None:
    plan = LoggerPlan(url=sink.url, mode="request")
    draining = PayloadLogger(workers=1)
    await draining.start()
    for i in range(20):
        draining.log_request(plan, CTX, f"req-{i}", JSON, str(i).encode())
    await draining.stop(drain_s=5.0)
    assert draining.stats == {"sent": 20, "failed": 0, "dropped": 0}
    assert sorted(int(r.body) for r in sink.received) == list(range(20))
    # Stopped: later events are counted, not lost silently.
    draining.log_request(plan, CTX, "late", JSON, b"{}")
    assert draining.stats["dropped"] == 1


async def test_stop_counts_what_it_could_not_drain_as_dropped(sink: Sink) -> None:
    sink.gate = asyncio.Event()  # the sink never answers
    plan = LoggerPlan(url=sink.url, mode="request")
    stuck = PayloadLogger(workers=1, timeout_s=30.0)
    await stuck.start()
    for i in range(3):
        stuck.log_request(plan, CTX, f"req-{i}", JSON, b"{}")
    await until(lambda: sink.attempts == 1)
    await stuck.stop(drain_s=0.2)
    # One was in flight and two still queued: none reached the sink.
    assert stuck.stats == {"sent": 0, "failed": 0, "dropped": 3}
