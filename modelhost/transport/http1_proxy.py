"""An HTTP/1.1 reverse proxy: requests in from clients, relayed to targets, answers back.

A client connection (:class:`ProxyClient`) is parsed with httptools; a request bound for a
target goes there over a pooled keep-alive connection and its answer is relayed byte for
byte (:mod:`modelhost.transport.http1_upstream`). Everything on the common path runs in
protocol callbacks, without a task, an ASGI scope or a response object per request: the
hop must cost a fraction of what the replica spends on a small model. Where a request goes
is the owner's (the platform's gateway, ``modelhost.local``), through callbacks, the same
seam as the gRPC relay's: ``resolve`` names a destination once the headers are in (or the
owner's own ASGI app, or nowhere), ``admit`` checks the caller, and ``forward`` hands back
the :class:`~modelhost.transport.http1_upstream.Forwarding` that names each
:class:`~modelhost.transport.target.Target` and is told how the request ended.

A client is held to :class:`Http1Limits`: deadlines for its headers, its body and its idle
time, a cap on connections, header lines and bytes (431) and body size (413). A request is
resolved as soon as its headers are in, so that a body bound nowhere is dropped as it comes
rather than held. Reading stops both ways when the other side does not keep up: a target's
answer while the client's unsent bytes are over ``write_buffer_bytes``, and the client
while the target's are.
"""

from __future__ import annotations

import asyncio
import collections
import http
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from ssl import SSLContext
from typing import cast

import httptools
import orjson

from modelhost import errors
from modelhost.settings import Http1Limits
from modelhost.transport.http1_in_process import (
    ASGIApp,
    InProcess,
    answer_in_process,
    answer_whole,
)
from modelhost.transport.http1_limits import DeadlineSweeper, capped_connections, error_response
from modelhost.transport.http1_upstream import BODY, LOCAL, Forwarding, ProxiedRequest, ProxyPool
from modelhost.transport.target import Admission

__all__ = [
    "BODY",
    "LOCAL",
    "Admit",
    "Forward",
    "Forwarding",
    "InProcess",
    "ProxiedRequest",
    "ProxyClient",
    "ProxyPool",
    "ProxyServer",
    "Resolver",
]

logger = logging.getLogger("modelhost.transport")

Resolver = Callable[[ProxiedRequest], object]
"""``resolve(request)``: where it goes: a destination for ``forward``, LOCAL (the owner's
ASGI app), an :class:`InProcess` app, BODY (asked before the body is in: ask again with it)
or None (404). It may raise ``modelhost.errors`` to refuse the request."""


Admit = Callable[[ProxiedRequest, object], Admission]
"""``admit(request, destination)``: the caller's check (tokens); ``modelhost.errors`` refuse.
The admission is held until the request is answered."""

Forward = Callable[[ProxiedRequest, object], Forwarding]
"""``forward(request, destination)``: the owner's side of one request bound for targets;
``modelhost.errors`` refuse it (no target can ever take it)."""

RefusalHeaders = Callable[[BaseException], Mapping[str, str]]
"""The headers a refusal carries (how to authenticate, when to retry)."""

_PIPELINE_LIMIT = 8

# Why reading from a client is paused (a bit each): too many requests queued behind the one
# being answered, the target not reading what was sent to it, or the client refused.
_HOLD_PIPELINE = 1
_HOLD_UPSTREAM = 2
_HOLD_STOPPED = 4

# Where a client connection is: new (nothing sent yet), between requests, reading a
# request's headers or its body.
_NEW, _IDLE, _HEADERS, _BODY = range(4)


class _Refused(Exception):
    """Raised from a parser callback to stop parsing; the refusal is on the connection."""


class ProxyClient(asyncio.Protocol):
    """A client's connection to the proxy; requests are answered one at a time, in order."""

    def __init__(self, server: ProxyServer) -> None:
        self.server = server
        self.limits = server.limits
        self.transport: asyncio.Transport | None = None
        self.peer = b""
        self.closed = False
        # The request being relayed to a target, if any.
        self.call: ProxiedRequest | None = None
        # The transport's unsent bytes are over the high-water mark: the target answering
        # is not read until they drain.
        self.write_paused = False
        # time.monotonic() past which the client has made too little progress (0.0: none).
        self.deadline = 0.0
        self._phase = _NEW
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._body_bytes = 0
        # Header bytes of the request being read; -1: it began in the current read.
        self._head_bytes = 0
        self._request: ProxiedRequest | None = None
        self._queue: collections.deque[ProxiedRequest] = collections.deque()
        self._queued_bytes = 0
        self._busy = False
        self._holds = 0
        self._refusal: errors.ModelhostError | None = None

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        if len(server.connections) >= server.max_connections:
            self.closed = True
            self.transport.write(
                error_response(
                    errors.ServerBusy(
                        f"The gateway has {server.max_connections} connections open already."
                    )
                )
            )
            self.transport.close()
            return
        peer = transport.get_extra_info("peername")
        self.peer = str(peer[0]).encode() if peer else b""
        high = self.limits.write_buffer_bytes
        self.transport.set_write_buffer_limits(high=high, low=high // 4)
        server.connections.add(self)
        # A connection that sends nothing is closed after the header timeout too.
        self.deadline = time.monotonic() + self.limits.header_timeout_s
        server.sweeper.add(self)

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _BODY:
            self.deadline = time.monotonic() + self.limits.body_timeout_s
        elif phase == _IDLE:
            self._phase = _HEADERS
            self.deadline = time.monotonic() + self.limits.header_timeout_s
        elif phase == _NEW:
            self._phase = _HEADERS  # its deadline runs from the connection's start
        if self._holds & _HOLD_STOPPED or self.closed:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._refuse(errors.Unsupported("Protocol upgrades are not supported by the gateway."))
            return
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            self._refuse(refusal or errors.InvalidInput(f"Malformed HTTP request: {exc}"))
            return
        if self._phase == _HEADERS:
            # Counted per read, not per header: a request's first read is not counted, so
            # the limit holds to within one read (at most 256 KiB).
            if self._head_bytes < 0:
                self._head_bytes = 0
            else:
                self._head_bytes += len(data)
                if self._head_bytes > self.limits.max_header_bytes:
                    self._refuse(
                        errors.HeadersTooLarge(
                            f"Request headers exceed {self.limits.max_header_bytes} bytes."
                        )
                    )

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.deadline = 0.0
        self.server.connections.discard(self)
        self.server.sweeper.discard(self)
        if self.call is not None:
            call, self.call = self.call, None
            call.abandon()

    def pause_writing(self) -> None:
        self.write_paused = True
        call = self.call
        if call is not None and call.upstream is not None:
            call.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        call = self.call
        if call is not None and call.upstream is not None:
            call.upstream.resume_reading()

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._body = []
        self._body_bytes = 0
        self._head_bytes = -1
        if self._phase == _IDLE:  # pipelined in the same read as the one before it
            self._phase = _HEADERS
            self.deadline = time.monotonic() + self.limits.header_timeout_s

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        limits = self.limits
        if len(self._headers) > limits.max_header_count:
            raise self._stop(
                errors.HeadersTooLarge(
                    f"A request may have at most {limits.max_header_count} header lines."
                )
            )
        expect = False
        for name, value in self._headers:
            if name == b"content-length":
                if value.isdigit() and int(value) > limits.max_body_bytes:
                    raise self._stop(_too_large(limits.max_body_bytes))
            elif name == b"expect" and value.lower() == b"100-continue":
                expect = True
        request = ProxiedRequest(
            self._parser.get_method(),
            self._url,
            self._headers,
            b"",
            self._parser.should_keep_alive(),
            complete=False,
        )
        try:
            destination = self.server.resolve(request)
        except errors.ModelhostError:
            destination = BODY  # asked again with the body, where the error is answered
        request.destination = destination
        self._request = request
        self._phase = _BODY
        self.deadline = time.monotonic() + limits.body_timeout_s
        # Not while an answer is being relayed: the two would interleave.
        if expect and request.destination is not None and not self._busy:
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        # Counted once accepted: a refused piece leaves the count within the limit.
        accepted = self._body_bytes + len(body)
        if accepted > self.limits.max_body_bytes:
            raise self._stop(_too_large(self.limits.max_body_bytes))
        self._body_bytes = accepted
        request = self._request
        if request is not None and request.destination is not None:
            self._body.append(body)  # a body bound nowhere is dropped as it comes

    def on_message_complete(self) -> None:
        request, self._request = self._request, None
        self._phase = _IDLE
        self.deadline = 0.0
        if request is None:
            return
        chunks = self._body
        request.body = b"".join(chunks) if len(chunks) != 1 else chunks[0]
        request.complete = True
        self._body = []
        self._queue.append(request)
        self._queued_bytes += len(request.body)
        if not self._busy:
            self._next()
        elif (
            len(self._queue) >= _PIPELINE_LIMIT or self._queued_bytes >= self.limits.max_body_bytes
        ):
            # Pipelined requests wait their turn; past a few, stop reading more of them.
            self.hold(_HOLD_PIPELINE)

    # -- answering --

    def _next(self) -> None:
        if not self._queue or self.closed:
            self._busy = False
            self.release(_HOLD_PIPELINE)
            if not self.closed:
                # What the client does next is timed from now, not from when it began.
                phase = self._phase
                timeout = (
                    self.limits.idle_timeout_s
                    if phase == _IDLE
                    else self.limits.body_timeout_s
                    if phase == _BODY
                    else self.limits.header_timeout_s
                )
                self.deadline = time.monotonic() + timeout
            return
        self._busy = True
        request = self._queue.popleft()
        self._queued_bytes -= len(request.body)
        if request.refusal is not None:
            self._answer_and_close(request.refusal)
            return
        self.server.handle(self, request)

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

    def respond_error(self, status: int, message: str, keep_alive: bool = True) -> None:
        self.respond(status, orjson.dumps({"error": message}), b"application/json", keep_alive)

    def abort(self) -> None:
        """End a response cut short: the client sees the connection close."""
        self.close()

    def close(self) -> None:
        self.closed = True
        self.deadline = 0.0
        self._queue.clear()
        self._queued_bytes = 0
        if self.transport is not None:
            self.transport.close()

    def spawn(self, coro: Awaitable[None]) -> None:
        self.server.spawn(coro)

    # -- limits --

    def hold(self, reason: int) -> None:
        """Stop reading from the client for ``reason`` (until every reason is released)."""
        if not self._holds and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._holds |= reason

    def release(self, reason: int) -> None:
        if not self._holds & reason:
            return
        self._holds &= ~reason
        if not self._holds and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def hold_for_target(self, paused: bool) -> None:
        """The target's connection has too much unsent: stop reading the client (or go on)."""
        if paused:
            self.hold(_HOLD_UPSTREAM)
        else:
            self.release(_HOLD_UPSTREAM)

    def expire(self, now: float) -> None:
        """The deadline passed: 408 (or, between requests, a silent close)."""
        if self.closed:
            return
        phase = self._phase
        if self._busy or self._holds:
            # An answer is on its way or the proxy stopped reading: not the client's time.
            # _next() starts it again once the answers are out.
            self.deadline = now + self.limits.header_timeout_s
            return
        if phase in (_NEW, _IDLE):
            self.close()
        elif phase == _HEADERS:
            self._answer_and_close(
                errors.RequestTimeout(
                    f"The request's headers took longer than {self.limits.header_timeout_s} s."
                )
            )
        else:
            self._answer_and_close(
                errors.RequestTimeout(
                    f"No byte of the request's body came for {self.limits.body_timeout_s} s."
                )
            )

    def _stop(self, refusal: errors.ModelhostError) -> _Refused:
        """What a parser callback raises to refuse the request with ``refusal``."""
        self._refusal = refusal
        return _Refused()

    def _refuse(self, refusal: errors.ModelhostError) -> None:
        """Read nothing more; answer ``refusal`` after the requests before it, then close."""
        self.hold(_HOLD_STOPPED)
        self._request = None
        self._body = []
        if not self._busy:
            self._answer_and_close(refusal)
            return
        marker = ProxiedRequest(b"", b"", [], b"", False)
        marker.refusal = refusal
        self._queue.append(marker)

    def _answer_and_close(self, refusal: errors.ModelhostError) -> None:
        self.write(error_response(refusal))
        self.close()


def _too_large(limit: int) -> errors.PayloadTooLarge:
    return errors.PayloadTooLarge(f"Request body exceeds the gateway's limit of {limit} bytes.")


def _no_headers(exc: BaseException) -> Mapping[str, str]:
    return {}


class ProxyServer:
    """Listens on one address; ``resolve`` says where each request goes, ``forward`` takes
    those bound for targets."""

    def __init__(
        self,
        resolve: Resolver,
        forward: Forward | None = None,
        *,
        local_app: ASGIApp | None = None,
        admit: Admit | None = None,
        refusal_headers: RefusalHeaders = _no_headers,
        not_found: str = "nothing serves host {host} and path {path}",
        pool: ProxyPool | None = None,
        limits: Http1Limits | None = None,
    ) -> None:
        self.resolve = resolve
        self.forward = forward
        self.local_app = local_app
        # Every request's check before it goes anywhere (None: no checks).
        self.admit = admit
        self.refusal_headers = refusal_headers
        # The 404's message, formatted with the request's host and path.
        self.not_found = not_found
        # Connections to targets, shared with the owner's other proxies if it passes one.
        self.pool = pool if pool is not None else ProxyPool()
        self._own_pool = pool is None
        self.limits = limits if limits is not None else Http1Limits()
        self.max_connections = capped_connections(self.limits.max_connections)
        self.sweeper = DeadlineSweeper(
            (self.limits.header_timeout_s, self.limits.body_timeout_s, self.limits.idle_timeout_s)
        )
        self.connections: set[ProxyClient] = set()
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(
        self, host: str = "127.0.0.1", port: int = 0, ssl: SSLContext | None = None
    ) -> int:
        """Listen on ``host:port`` (0 picks a free port), over TLS with ``ssl``; the port."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: ProxyClient(self),
            host,
            port,
            backlog=2048,
            reuse_address=True,
            ssl=ssl,
        )
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        self.sweeper.close()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            connection.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._own_pool:
            self.pool.close()
        if self._server is not None:
            await self._server.wait_closed()

    def spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def handle(self, client: ProxyClient, request: ProxiedRequest) -> None:
        admit = self.admit
        admission = None
        try:
            destination = request.destination
            if destination is BODY:
                destination = self.resolve(request)
            if admit is not None:
                admission = admit(request, destination)
        except errors.ModelhostError as exc:
            self.refuse(client, exc, request.keep_alive)
            return
        if destination is None or destination is BODY or destination is LOCAL:
            if admission is not None:
                admission.release()  # nothing is held for the owner's own routes
            if destination is LOCAL and self.local_app is not None:
                self.spawn(answer_in_process(client, request, self.local_app, "the platform's API"))
            else:
                self._not_found(client, request)
            return
        if isinstance(destination, InProcess):
            if admission is not None:
                admission.release()
            whole = destination.whole
            answer = whole(request) if whole is not None else None
            if answer is not None:
                self.spawn(answer_whole(client, request, answer, "an in-process app"))
            else:
                self.spawn(answer_in_process(client, request, destination.app, "an in-process app"))
            return
        if self.forward is None:
            self._not_found(client, request)
            return
        try:
            forwarding = self.forward(request, destination)
        except errors.ModelhostError as exc:
            if admission is not None:
                admission.release()
            self.refuse(client, exc, request.keep_alive)
            return
        request.relay(client, forwarding, admission)

    def refuse(
        self, client: ProxyClient, exc: errors.ModelhostError, keep_alive: bool = True
    ) -> None:
        """A 401, 403, 429, 503 or 404 before any target is asked, with the headers it needs."""
        headers = [(k.encode(), v.encode()) for k, v in self.refusal_headers(exc).items()]
        body = orjson.dumps({"error": errors.error_message(exc)})
        status = errors.http_status(exc)
        client.respond(status, body, b"application/json", keep_alive, headers)

    def _not_found(self, client: ProxyClient, request: ProxiedRequest) -> None:
        message = self.not_found.format(host=request.host or "-", path=request.path)
        client.respond_error(404, message, request.keep_alive)


def _reason(status: int) -> bytes:
    # Looked up per answer the proxy writes itself (a graph's, an error): a table, not an
    # HTTPStatus made each time.
    return _REASONS.get(status, b"")


_REASONS = {status.value: status.phrase.encode() for status in http.HTTPStatus}
