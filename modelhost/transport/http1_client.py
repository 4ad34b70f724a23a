"""A pooled HTTP/1.1 client for calls on the hot path: a graph step from the gateway to a replica.

An InferenceGraph router inside the gateway makes one HTTP call per graph step, to a replica
on loopback; a general client (aiohttp) spends more CPU building its request and response
objects per call than the gateway's proxy spends relaying a whole request. This one writes the
request in one ``transport.write``, parses the answer with httptools in protocol callbacks and
keeps connections alive per address: a call costs a future, a parse and an answer object.

:class:`Http1Client` sends a request with a known body (``content-length``, never chunked) and
reads the whole answer (by Content-Length, chunks, or until the connection closes), skipping
1xx informational answers. A connection goes back to its address's pool (last in, first out)
only once its answer was read whole and the target did not ask to close it. A request sent on
a reused connection that the target closed before any byte of an answer came back is sent
once more on a fresh connection: the target closed it while idle and never saw the request
(the keep-alive race). Failures are :class:`Http1ClientError`; the caller maps them.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import cast

import httptools

from modelhost import errors

__all__ = [
    "AnswerInvalid",
    "Http1Answer",
    "Http1Client",
    "Http1ClientError",
    "UpstreamClosed",
    "UpstreamTimedOut",
    "UpstreamUnreachable",
]

# Set by the client from the body and the connection's pool, whatever the caller passed.
_DROPPED_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# A body up to this size goes out with its head in one write; a larger one in slices of
# _BODY_SLICE_BYTES, waiting whenever the transport's buffer is over its high-water mark.
_ONE_WRITE_BYTES = 64 * 1024
_BODY_SLICE_BYTES = 256 * 1024
# How long close() waits for its connections' transports to report they are closed.
_CLOSE_WAIT_S = 1.0


class Http1ClientError(Exception):
    """A request got no (whole, valid) answer; ``address`` is the target's "host:port"."""

    def __init__(self, address: str, message: str) -> None:
        super().__init__(message)
        self.address = address


class UpstreamUnreachable(Http1ClientError):
    """No connection to the address could be opened (refused, unresolvable, too slow)."""


class UpstreamClosed(Http1ClientError):
    """The target closed the connection before its whole answer arrived."""


class UpstreamTimedOut(Http1ClientError):
    """The request's ``timeout`` ran out (connect, send and the whole answer together)."""


class AnswerInvalid(Http1ClientError):
    """The answer is not valid HTTP/1.1, or larger than the client's ``max_answer_bytes``."""


class _ClosedBeforeAnswer(UpstreamClosed):
    """Closed before any byte of an answer: on a reused connection, worth one more try."""


@dataclass(frozen=True, slots=True)
class Http1Answer:
    """A target's final answer: its status, its headers (lower-case names, in order), its body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class Http1Client:
    """Requests to "host:port" addresses over kept-alive connections, pooled per address.

    Use it from one event loop; :meth:`close` ends every connection, idle or busy.
    """

    def __init__(
        self,
        *,
        max_idle_per_address: int = 64,
        max_answer_bytes: int = 256 * 1024 * 1024,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._pool = _Pool(max_idle_per_address, max_answer_bytes)
        self._connect_timeout_s = connect_timeout_s
        # (host, port) per address, parsed once.
        self._endpoints: dict[str, tuple[str, int]] = {}
        self._closed = False

    async def request(
        self,
        address: str,
        method: bytes,
        target: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes,
        timeout: float | None = None,
    ) -> Http1Answer:
        """Send one request to ``address`` and return its whole answer (any status).

        ``timeout`` (seconds) bounds connecting, sending and reading the answer together.
        Raises :class:`UpstreamUnreachable`, :class:`UpstreamClosed`,
        :class:`UpstreamTimedOut` or :class:`AnswerInvalid`; ``errors.InvalidInput`` when
        the request cannot be written as given (a line break in a header, a space in the
        target).
        """
        if self._closed:
            raise UpstreamUnreachable(address, f"{address} is unreachable: the client is closed")
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        payload = _encode(address, method, target, headers, body)
        connection = self._pool.take(address)
        reused = connection is not None
        while True:
            if connection is None:
                connection = await self._connect(address, deadline, timeout)
            # Awaited here rather than in a coroutine of the connection's: a call on the hot
            # path (a graph's step) costs one coroutine less.
            answer = connection.send(loop, payload, body, deadline, timeout)
            try:
                return await answer
            except BaseException as exc:
                connection.abandon()
                if reused and isinstance(exc, _ClosedBeforeAnswer):
                    # Closed by the target while idle: it never saw the request.
                    reused, connection = False, None
                    continue
                raise

    async def close(self) -> None:
        """Close every connection; requests in flight fail with :class:`UpstreamClosed`."""
        self._closed = True
        await self._pool.close()

    async def _connect(
        self, address: str, deadline: float | None, timeout: float | None
    ) -> _Connection:
        host, port = self._endpoint(address)
        loop = asyncio.get_running_loop()
        limit = self._connect_timeout_s
        if deadline is not None and deadline - loop.time() < limit:
            limit = max(deadline - loop.time(), 0.0)
        connection = _Connection(self._pool, address)
        try:
            await asyncio.wait_for(loop.create_connection(lambda: connection, host, port), limit)
        except BaseException as exc:
            # Connected just as time ran out, or cancelled: the socket is nobody's.
            connection.abort()
            # wait_for's own TimeoutError carries no errno; a TCP timeout has ETIMEDOUT.
            if isinstance(exc, TimeoutError) and exc.errno is None:
                if deadline is not None and limit < self._connect_timeout_s:
                    raise UpstreamTimedOut(
                        address, f"{address} did not answer within {timeout:g}s"
                    ) from None
                raise UpstreamUnreachable(
                    address, f"{address} is unreachable: no connection within {limit:g}s"
                ) from None
            if isinstance(exc, OSError):
                raise UpstreamUnreachable(
                    address, f"{address} is unreachable: {_reason(exc)}"
                ) from exc
            raise
        return connection

    def _endpoint(self, address: str) -> tuple[str, int]:
        endpoint = self._endpoints.get(address)
        if endpoint is None:
            endpoint = _split_address(address)
            self._endpoints[address] = endpoint
        return endpoint


def _split_address(address: str) -> tuple[str, int]:
    """("host", port) of "host:port" or "[v6]:port"."""
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        port = rest[1:] if bracket and rest.startswith(":") else ""
    else:
        host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UpstreamUnreachable(address, f"{address} is unreachable: not a host:port address")
    return host, int(port)


def _reason(exc: OSError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__


def _encode(
    address: str,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body: bytes,
) -> bytes:
    """The request's head: its line, the caller's headers, ``host`` if none, the length."""
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    # The request line, the content-length line and the empty line that ends the head.
    lines = 3
    has_host = False
    for name, value in headers:
        lowered = name.lower()
        if lowered in _DROPPED_HEADERS:
            continue
        if lowered == b"host":
            has_host = True
        parts += (name, b": ", value, b"\r\n")
        lines += 1
    if not has_host:
        parts += (b"host: ", address.encode("latin-1"), b"\r\n")
        lines += 1
    parts += (b"content-length: ", b"%d" % len(body), b"\r\n\r\n")
    head = b"".join(parts)
    # Every line ends in CRLF: one more CR or LF anywhere (in a name, a value, the target)
    # would split a line and let the caller's data smuggle in a header or a request.
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b" " in target:
        raise errors.InvalidInput(
            "The request cannot be sent: a header or its target has a line break or a space."
        )
    return head


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an address; idle in its pool between requests."""

    __slots__ = (
        "_body",
        "_drained",
        "_framed_by_length",
        "_head",
        "_headers",
        "_headers_done",
        "_informational",
        "_keep_alive",
        "_lost",
        "_parser",
        "_received",
        "_sending",
        "_size",
        "_status",
        "_timer",
        "_until_eof",
        "_waiter",
        "_write_paused",
        "address",
        "closed",
        "pool",
        "transport",
    )

    def __init__(self, pool: _Pool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        # The request in flight: its answer's future and its deadline's timer.
        self._waiter: asyncio.Future[Http1Answer] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._head = False
        # The body is still being written (an answer that comes first ends the connection).
        self._sending = False
        # Any byte of an answer to the request in flight has arrived.
        self._received = False
        self._size = 0
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._headers_done = False
        self._informational = False
        self._framed_by_length = False
        self._until_eof = False
        self._keep_alive = True
        self._write_paused = False
        self._drained: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[None] | None = None

    # -- the client's side --

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        head: bytes,
        body: bytes,
        deadline: float | None,
        timeout: float | None,
    ) -> Awaitable[Http1Answer]:
        """Send ``head`` and ``body``: what to await for the whole answer (or an
        :class:`Http1ClientError`); call :meth:`abandon` when awaiting it ends in an error."""
        transport = self.transport
        assert transport is not None
        waiter: asyncio.Future[Http1Answer] = loop.create_future()
        self._waiter = waiter
        self._received = False
        self._size = 0
        self._head = head.startswith(b"HEAD ")
        if deadline is not None:
            self._timer = loop.call_at(deadline, self._time_out, waiter, timeout)
        if len(body) <= _ONE_WRITE_BYTES:
            transport.write(head + body if body else head)
            return waiter
        return self._send_slices(head, body, waiter)

    def abandon(self) -> None:
        """The await of :meth:`send`'s ``answer`` ended in an error (or was cancelled)."""
        # One request at a time: a waiter still here is this request's (a failed one's is
        # settled already).
        if self._waiter is not None:
            # Cancelled (or the deadline passed) mid-request: the rest of the answer would
            # arrive on a connection nobody reads, so it ends here.
            self._settle()
            self.abort()

    async def _send_slices(
        self, head: bytes, body: bytes, waiter: asyncio.Future[Http1Answer]
    ) -> Http1Answer:
        transport = self.transport
        assert transport is not None
        self._sending = True
        transport.write(head)
        view = memoryview(body)
        for start in range(0, len(body), _BODY_SLICE_BYTES):
            if waiter.done() or self.closed:
                break  # answered early, failed or timed out: the rest is not wanted
            transport.write(view[start : start + _BODY_SLICE_BYTES])
            if self._write_paused and not self.closed:
                self._drained = asyncio.get_running_loop().create_future()
                await self._drained
        self._sending = False
        return await waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def shut(self) -> asyncio.Future[None]:
        """Close the connection now (a request in flight fails); done once it is closed."""
        lost = self._lost = asyncio.get_running_loop().create_future()
        address = self.address
        self._fail(UpstreamClosed(address, f"the client closed its connection to {address}"))
        return lost

    def _settle(self) -> asyncio.Future[Http1Answer] | None:
        """The request in flight is over: its future, to resolve (None: resolved already)."""
        waiter, self._waiter = self._waiter, None
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._wake_sender()
        if waiter is not None and waiter.done():
            return None
        return waiter

    def _fail(self, exc: Http1ClientError) -> None:
        """The request in flight fails with ``exc``, and the connection ends with it."""
        self._reject(exc)
        self.abort()

    def _reject(self, exc: Http1ClientError) -> None:
        waiter = self._settle()
        if waiter is not None:
            waiter.set_exception(exc)

    def _time_out(self, waiter: asyncio.Future[Http1Answer], timeout: float | None) -> None:
        if self._waiter is waiter:
            self._fail(
                UpstreamTimedOut(self.address, f"{self.address} did not answer within {timeout:g}s")
            )

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        self.pool.open.add(self)

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            # Bytes nobody asked for: the connection cannot be trusted any more.
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self._fail(
                AnswerInvalid(
                    self.address, f"{self.address} sent an answer that is not HTTP/1.1 ({exc})"
                )
            )

    def eof_received(self) -> bool | None:
        if self._waiter is not None and self._headers_done and self._until_eof:
            self._keep_alive = False
            self.on_message_complete()  # an answer without a length ends with its connection
        return None  # the transport closes itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self._waiter is not None:
            address = self.address
            if self._received:
                self._reject(UpstreamClosed(address, f"{address} closed the connection mid-answer"))
            else:
                self._reject(
                    _ClosedBeforeAnswer(
                        address, f"{address} closed the connection without answering"
                    )
                )
        self._wake_sender()
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_sender()

    def _wake_sender(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    # -- httptools callbacks --

    def on_message_begin(self) -> None:
        if self._waiter is None:
            raise _StopParsing  # a second answer to one request: closed by data_received
        self._status = 0
        self._headers = []
        self._body = []
        self._headers_done = False
        self._informational = False
        self._framed_by_length = False
        self._until_eof = False

    def on_header(self, name: bytes, value: bytes) -> None:
        # _count's check, inline: one call fewer for every header of every answer.
        self._size += len(name) + len(value)
        if self._size > self.pool.max_answer_bytes:
            self._count(0)
        name = name.lower()
        if name == b"content-length":
            self._framed_by_length = True
        elif name == b"transfer-encoding":
            # A response's body is chunked only if chunked is its last coding; with any
            # other, it runs until the connection closes (RFC 9112, 6.3).
            self._until_eof = not value.rstrip().lower().endswith(b"chunked")
            self._framed_by_length = not self._until_eof
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        self._status = status
        if status < 200:
            if status == 101:
                address = self.address
                self._fail(AnswerInvalid(address, f"{address} switched protocols unasked"))
                raise _StopParsing
            self._informational = True
            return
        self._headers_done = True
        self._keep_alive = parser.should_keep_alive()
        if self._head:
            # A HEAD answer has a Content-Length but no body; the parser cannot know that,
            # so the answer ends here and the next one starts with a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            self.on_message_complete()
            return
        if not self._framed_by_length and status not in (204, 304):
            self._until_eof = True

    def on_body(self, body: bytes) -> None:
        if body and self._waiter is not None:
            self._count(len(body))
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False  # 100 Continue and the like: the answer comes next
            return
        waiter = self._settle()
        if waiter is None:
            return
        waiter.set_result(Http1Answer(self._status, self._headers, b"".join(self._body)))
        self._body = []
        if self._sending:
            # Answered before the whole body was sent (a refusal): the rest is not wanted,
            # and the connection is mid-request for good.
            self.abort()
        elif self._keep_alive and not self.closed:
            self.pool.put_back(self)
        else:
            self.closed = True
            assert self.transport is not None
            self.transport.close()

    def _count(self, size: int) -> None:
        self._size += size
        limit = self.pool.max_answer_bytes
        if self._size > limit:
            address = self.address
            self._fail(AnswerInvalid(address, f"{address} answered more than {limit} bytes"))
            raise _StopParsing  # stops the parser; the connection is closed already


class _StopParsing(Exception):
    """Raised in a parser callback to stop parsing: the answer is refused or unasked for."""


class _Pool:
    """Idle connections per address (the last one back is the first one out), and every open
    connection, for :meth:`Http1Client.close`."""

    def __init__(self, max_idle_per_address: int, max_answer_bytes: int) -> None:
        self.max_idle_per_address = max_idle_per_address
        self.max_answer_bytes = max_answer_bytes
        self.idle: dict[str, list[_Connection]] = {}
        self.open: set[_Connection] = set()
        # Closed: a connection that ends its request later (it was connecting) is not kept.
        self.closed = False

    def take(self, address: str) -> _Connection | None:
        idle = self.idle.get(address)
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if not connection.closed and transport is not None and not transport.is_closing():
                return connection
        return None

    def put_back(self, connection: _Connection) -> None:
        idle = self.idle.get(connection.address)
        if idle is None:
            idle = self.idle[connection.address] = []
        if len(idle) < self.max_idle_per_address and not self.closed:
            idle.append(connection)
        else:
            connection.closed = True
            assert connection.transport is not None
            connection.transport.close()

    def forget(self, connection: _Connection) -> None:
        self.open.discard(connection)
        idle = self.idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    async def close(self) -> None:
        self.closed = True
        connections = list(self.open)
        self.idle.clear()
        lost = [connection.shut() for connection in connections]
        if lost:
            await asyncio.wait(lost, timeout=_CLOSE_WAIT_S)
