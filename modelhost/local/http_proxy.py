"""The gateway's HTTP data path: requests in from clients, relayed to replicas, answers back.

A client connection is parsed with httptools; a request bound for a component is sent to a
replica over a pooled keep-alive connection (:mod:`modelhost.local.upstream`) and the answer
is relayed byte for byte (:mod:`modelhost.local.forwarder`). Everything on the common path
runs in protocol callbacks, without a task, an ASGI scope or a response object per request:
the hop must cost a fraction of what the replica spends on a small model. Requests for the
platform itself (``/metrics``, ``/healthz``) go to an ordinary ASGI app instead; with tokens
on, every other request is checked (``modelhost.access``) before it is routed on.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from ssl import SSLContext
from typing import Any, cast

import httptools
import orjson

from modelhost import errors
from modelhost.access import OPEN, Guard, Role, check_scope, refusal_headers
from modelhost.local.component import ComponentState
from modelhost.local.forwarder import ForwardedCall, Forwarder
from modelhost.local.routing import strip_port

__all__ = ["LOCAL", "OPEN_PATHS", "ProxyServer", "Request", "Resolver"]

logger = logging.getLogger("modelhost.local")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

# What a resolver answers for a request the platform itself serves (metrics, probes).
LOCAL = "local"
# Paths that need no token with tokens on: the gateway's own probes.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})

_PIPELINE_LIMIT = 8


class Request:
    """One parsed request, its body whole."""

    __slots__ = ("body", "headers", "host", "keep_alive", "method", "path", "target")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.path = target.split(b"?", 1)[0].decode("latin-1")
        self.host = strip_port((self.header(b"host") or b"").decode("latin-1"))

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


# (request) → the component that serves it, LOCAL, or None (404).
Resolver = Callable[[Request], "ComponentState | str | None"]


class ClientConnection(asyncio.Protocol):
    """A client's connection to the gateway; requests are answered one at a time, in order."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.closed = False
        self.call: ForwardedCall | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._queue: collections.deque[Request] = collections.deque()
        self._busy = False
        self._paused = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b""
        self.server.connections.add(self)

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self.respond_error(501, "protocol upgrades are not supported by the gateway")
            self.abort()
        except httptools.HttpParserError as exc:
            self.respond_error(400, f"malformed HTTP request: {exc}")
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.call is not None:
            call, self.call = self.call, None
            call.abandon()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue":
                self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body) if len(self._body) != 1 else self._body[0]
        request = Request(
            self._parser.get_method(),
            self._url,
            self._headers,
            body,
            self._parser.should_keep_alive(),
        )
        self._queue.append(request)
        if not self._busy:
            self._next()
        elif len(self._queue) >= _PIPELINE_LIMIT and not self._paused and self.transport:
            # Pipelined requests wait their turn; past a few, stop reading more of them.
            self._paused = True
            self.transport.pause_reading()

    # -- answering --

    def _next(self) -> None:
        if not self._queue or self.closed:
            self._busy = False
            if self._paused and self.transport is not None and not self.closed:
                self._paused = False
                self.transport.resume_reading()
            return
        self._busy = True
        self.server.handle(self, self._queue.popleft())

    def finished(self, keep_alive: bool) -> None:
        if not keep_alive:
            self.close()
            return
        self._next()

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        keep_alive: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        reason = _reason(status)
        parts = [b"HTTP/1.1 ", str(status).encode(), b" ", reason, b"\r\n"]
        parts += [b"content-type: ", content_type, b"\r\n"]
        for name, value in headers or ():
            if name not in (
                b"content-length",
                b"content-type",
                b"transfer-encoding",
                b"connection",
            ):
                parts += [name, b": ", value, b"\r\n"]
        parts += [b"content-length: ", str(len(body)).encode(), b"\r\n"]
        if not keep_alive:
            parts.append(b"connection: close\r\n")
        parts += [b"\r\n", body]
        self.write(b"".join(parts))
        self.finished(keep_alive)

    def respond_error(self, status: int, message: str) -> None:
        self.respond(status, orjson.dumps({"error": message}), b"application/json")

    def abort(self) -> None:
        """End a response cut short: the client sees the connection close."""
        self.close()

    def close(self) -> None:
        self.closed = True
        self._queue.clear()
        if self.transport is not None:
            self.transport.close()

    def spawn(self, coro: Awaitable[None]) -> None:
        self.server.spawn(coro)


class ProxyServer:
    """Listens on one address; ``resolve`` says where each request goes."""

    def __init__(
        self,
        forwarder: Forwarder,
        resolve: Resolver,
        local_app: ASGIApp | None = None,
        guard: Guard | None = None,
    ) -> None:
        self.forwarder = forwarder
        self.resolve = resolve
        self.local_app = local_app
        # Bearer tokens on every request but the open paths (None: no checks).
        self.guard = guard
        self.connections: set[ClientConnection] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> int:
        """Listen on ``host:port`` (0 picks a free port), over TLS with ``ssl``; the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ClientConnection(self),
            host,
            port,
            backlog=2048,
            reuse_address=True,
            ssl=ssl,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle(self, client: ClientConnection, request: Request) -> None:
        guard = self.guard
        token = None
        try:
            target = self.resolve(request)
            if guard is not None and not (target == LOCAL and request.path in OPEN_PATHS):
                # Refused before anything is said of the target: a stranger learns nothing,
                # not even which services exist.
                token = guard.authenticate(request.header(b"authorization"))
            admission = OPEN
            if isinstance(target, ComponentState) and guard is not None and token is not None:
                admission = guard.enter(token, target.namespace, target.service)
            elif target is None and token is not None and (token.namespace or token.service):
                check_scope(token, None, None, Role.CALLER)
        except errors.ModelhostError as exc:
            self.refuse(client, exc)
            return
        if isinstance(target, ComponentState):
            self.forwarder.forward(client, request, target, admission)
        elif target == LOCAL and self.local_app is not None:
            self.spawn(self._local(client, request))
        else:
            client.respond_error(
                404,
                f"no InferenceService serves host {request.host or '-'} and path {request.path}",
            )

    def refuse(self, client: ClientConnection, exc: errors.ModelhostError) -> None:
        """A 401, 403, 429 or 404 before any replica is asked, with the header it needs."""
        headers = [(k.encode(), v.encode()) for k, v in refusal_headers(exc).items()]
        body = orjson.dumps({"error": errors.error_message(exc)})
        client.respond(errors.http_status(exc), body, b"application/json", headers=headers)

    async def _local(self, client: ClientConnection, request: Request) -> None:
        """The platform's own routes, through an ASGI app (they are few and not hot)."""
        assert self.local_app is not None
        path, _, query = request.target.partition(b"?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method.decode("latin-1"),
            "path": path.decode("latin-1"),
            "raw_path": path,
            "query_string": query,
            "headers": request.headers,
            "client": (client.peer.decode(), 0),
        }
        sent = False
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        try:
            await self.local_app(scope, receive, send)
        except Exception:
            logger.exception("the gateway's own route %s failed", scope["path"])
            client.respond_error(500, "internal error in the platform's API")
            return
        content_type = next((v for k, v in headers if k == b"content-type"), b"application/json")
        client.respond(status, b"".join(chunks), content_type, request.keep_alive, headers)


def _reason(status: int) -> bytes:
    try:
        return http.HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""
