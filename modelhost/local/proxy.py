"""The hop from the gateway to a replica: pick one, send the request, stream the answer back.

The request body is read whole before a replica is picked: a request that fails to *connect*
(its replica just crashed or was stopped) is then sent again to another one, so a rollout or
a crash loses only the requests a replica already held. Responses stream through (server-sent
events of an LLM pass chunk by chunk); the payload logger sees both sides.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp

from modelhost import errors
from modelhost.local.component import ComponentState
from modelhost.local.metrics import GatewayMetrics
from modelhost.local.payload_logger import LogContext, PayloadLogger, request_id_from
from modelhost.local.replica import Replica
from modelhost.local.revision import RevisionRunner

__all__ = ["ComponentApp", "Forwarder", "error_response", "read_body"]

logger = logging.getLogger("modelhost.local")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
# A connection refused means the replica never saw the request: safe to send again.
_CONNECT_ATTEMPTS = 5


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.InvalidInput("Client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def error_response(send: Send, status: int, message: str) -> None:
    import orjson

    body = orjson.dumps({"error": message})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Forwarder:
    """Sends requests to a component's replicas over pooled keep-alive connections."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        metrics: GatewayMetrics,
        payload_logger: PayloadLogger | None = None,
    ) -> None:
        self._session = session
        self._metrics = metrics
        self._payload_logger = payload_logger

    async def forward(
        self, scope: Scope, body: bytes, send: Send, component: ComponentState
    ) -> None:
        started = time.perf_counter()
        runner = component.choose()
        if runner is None:
            await error_response(
                send, 503, f"{component.service}: no revision of the {component.component} is ready"
            )
            return
        labels = (component.namespace, component.service, component.component, runner.name)
        status = 502
        try:
            status = await self._forward(scope, body, send, component, runner)
        except _UpstreamTimeout as exc:
            status = 504
            await error_response(send, status, str(exc))
        except errors.ModelhostError as exc:
            status = errors.http_status(exc)
            await error_response(send, status, str(exc))
        finally:
            self._metrics.requests.labels(*labels, str(status)).inc()
            self._metrics.latency.labels(*labels).observe(time.perf_counter() - started)

    async def _forward(
        self,
        scope: Scope,
        body: bytes,
        send: Send,
        component: ComponentState,
        runner: RevisionRunner,
    ) -> int:
        revision = runner.revision
        headers = _request_headers(scope)
        request_id = request_id_from(headers)
        headers.setdefault("x-request-id", request_id)
        # Inference calls are logged; probes and scrapes (GETs) are not, as KServe's agent
        # leaves kubelet probes and Prometheus scrapes out.
        log_plan = revision.logger if scope["method"] == "POST" else None
        context = LogContext(
            service=component.service,
            namespace=component.namespace,
            component=component.component,
            endpoint=runner.name,
        )
        if log_plan is not None and self._payload_logger is not None:
            self._payload_logger.log_request(log_plan, context, request_id, headers, body)
        path = scope.get("raw_path") or scope["path"].encode()
        target = path.decode("latin-1")
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        timeout = aiohttp.ClientTimeout(total=float(revision.timeout_s))
        cold = runner.ready_count == 0
        for attempt in range(_CONNECT_ATTEMPTS):
            replica = await runner.acquire(float(revision.timeout_s))
            if cold:
                cold = False
                self._metrics.cold_starts.labels(
                    component.namespace, component.service, component.component, runner.name
                ).inc()
            try:
                return await self._exchange(
                    scope,
                    send,
                    replica,
                    target,
                    headers,
                    body,
                    timeout,
                    log_plan,
                    context,
                    request_id,
                )
            except aiohttp.ClientConnectorError as exc:
                logger.info("replica %s refused a connection (%s): trying again", replica.name, exc)
                await asyncio.sleep(0.05 * (attempt + 1))
            finally:
                runner.release(replica)
        raise errors.ServerNotReady(f"revision {runner.name}: no replica accepted the request")

    async def _exchange(
        self,
        scope: Scope,
        send: Send,
        replica: Replica,
        target: str,
        headers: dict[str, str],
        body: bytes,
        timeout: aiohttp.ClientTimeout,
        log_plan: Any,
        context: LogContext,
        request_id: str,
    ) -> int:
        url = f"http://{replica.http_address}{target}"
        started = False
        try:
            async with self._session.request(
                scope["method"],
                url,
                data=body,
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                out_headers = [
                    (name, value)
                    for name, value in response.raw_headers
                    if name.lower().decode("latin-1") not in _HOP_BY_HOP
                ]
                await send(
                    {
                        "type": "http.response.start",
                        "status": response.status,
                        "headers": out_headers,
                    }
                )
                started = True
                logged: list[bytes] | None = (
                    [] if log_plan is not None and self._payload_logger is not None else None
                )
                async for chunk in response.content.iter_any():
                    if logged is not None:
                        logged.append(chunk)
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
                if logged is not None and self._payload_logger is not None:
                    self._payload_logger.log_response(
                        log_plan,
                        context,
                        request_id,
                        response.status,
                        {k: v for k, v in response.headers.items()},
                        b"".join(logged),
                    )
                return response.status
        except aiohttp.ClientConnectorError:
            raise
        except (asyncio.TimeoutError, aiohttp.ClientError) as exc:
            if started:
                # The status line is gone: all that is left is to end the body early.
                logger.warning("replica %s failed mid-response: %r", replica.name, exc)
                await send({"type": "http.response.body", "body": b""})
                return 502
            if isinstance(exc, asyncio.TimeoutError):
                raise _UpstreamTimeout(
                    f"revision {context.endpoint} did not answer within {timeout.total:.0f}s"
                ) from None
            raise errors.ServerNotReady(
                f"replica {replica.name} failed while answering: {exc}"
            ) from None


class ComponentApp:
    """The ASGI app of one component's own address: everything goes to that component."""

    def __init__(self, forwarder: Forwarder, component: ComponentState) -> None:
        self.forwarder = forwarder
        self.component = component

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        try:
            body = await read_body(receive)
        except errors.InvalidInput:
            return
        await self.forwarder.forward(scope, body, send, self.component)


class _UpstreamTimeout(Exception):
    """The replica took longer than the revision's ``timeout``: a 504, as Knative answers."""


def _request_headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in _HOP_BY_HOP or name == "content-length":
            continue
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    for raw_name, raw_value in scope["headers"]:
        if raw_name.lower() == b"host":
            headers["x-forwarded-host"] = raw_value.decode("latin-1")
    client = scope.get("client")
    if client:
        headers["x-forwarded-for"] = client[0]
    return headers
