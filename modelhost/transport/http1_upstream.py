"""One HTTP/1.1 request's way to its target and back: the attempts, the connections, the pool.

A request bound for a target (:class:`ProxiedRequest`, once :meth:`~ProxiedRequest.relay`
starts it) asks its owner's :class:`Forwarding` for a target, sends its bytes over a pooled
keep-alive connection (:class:`ProxyUpstream`) and relays the answer's bytes as they arrive,
without decoding or re-encoding them: httptools parses the answer only to find where it
ends (and its status, and its body when the owner wants it). Written by hand rather than
with an HTTP client library because a client builds request and response objects per call,
which cost more than the replica's whole answer to a small model (measured in ``bench/``).

Nothing is lost on a rollout or a crash: a request whose target refused the connection, or
closed a reused idle connection before answering, is sent again to a target (the body is
held until the answer starts); one that a target took and then lost is answered 502. Each
target is released exactly once, and the owner told once how the request ended. Reading
stops both ways when the other side lags: the answer is not read while the client's
connection has too much unsent (``pause_reading``), and the client is not read while the
target's connection has (``hold_for_target``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from typing import TYPE_CHECKING, Protocol, cast

import httptools

from modelhost import errors
from modelhost.transport.target import Admission, Target

if TYPE_CHECKING:
    from modelhost.transport.http1_proxy import ProxyClient

__all__ = [
    "BODY",
    "LOCAL",
    "Forwarding",
    "ProxiedRequest",
    "ProxyPool",
    "ProxyUpstream",
    "strip_port",
]

logger = logging.getLogger("modelhost.transport")

# What a resolver answers for a request the proxy's owner serves itself (metrics, probes).
LOCAL = "local"
# What a resolver answers, asked before the body is read, when the body decides (the
# ``model`` of an OpenAI request): it is asked again once the body is in.
BODY = "body"

_HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"expect",
    }
)
# A token the owner checked stays here: what is behind the proxy never sees it.
_HOP_BY_HOP_AND_TOKEN = _HOP_BY_HOP | {b"authorization"}
_ATTEMPTS = 5


class Forwarding(Protocol):
    """The owner's side of one request bound for its targets (the platform: a revision's
    replicas, its metrics and payload log), made by the proxy's ``forward`` callback."""

    # Named in the proxy's own answers (a revision's name).
    name: str
    # The whole request's deadline, waiting for a target included.
    timeout_s: float
    # The answer's body is handed to ``answered`` (else None is).
    keep_body: bool

    def target_now(self) -> Target | None:
        """A target that can take the request now; None: ask :meth:`target`."""

    async def target(self) -> Target:
        """A target, once one can take the request (it may wait); ``modelhost.errors``."""

    def answered(self, status: int, body: bytes | None) -> None:
        """The target's whole answer, with ``status``, was relayed to the client."""

    def failed(self, status: int) -> None:
        """The proxy answered ``status`` itself (502, 503, 504), or cut an answer short."""


def strip_port(host: str) -> str:
    """``host`` without its port (``[::1]:80`` → ``[::1]``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if ":" in host else host


class ProxiedRequest:
    """One request through the proxy: as parsed, its body whole once ``complete``; then,
    bound for a target, its attempts and the answer's way back.

    One object for both, since it is made per request on the proxy's hot path.
    """

    __slots__ = (
        "admission",
        "attempt",
        "body",
        "client",
        "complete",
        "destination",
        "forwarding",
        "headers",
        "host",
        "keep_alive",
        "kept",
        "method",
        "path",
        "payload",
        "refusal",
        "reused",
        "status",
        "target",
        "timer",
        "upstream",
        "url",
        "wrote_any",
    )

    def __init__(
        self,
        method: bytes,
        url: bytes,
        headers: list[tuple[bytes, bytes]],
        body: bytes,
        keep_alive: bool,
        complete: bool = True,
    ) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self.complete = complete
        self.path = url.split(b"?", 1)[0].decode("latin-1")
        # The Host header without its port.
        self.host = strip_port((self.header(b"host") or b"").decode("latin-1"))
        # Where the resolver sent it once its headers were in (BODY: ask again).
        self.destination: object = BODY
        # Answered with this error, in its turn, and the connection closed.
        self.refusal: errors.ModelhostError | None = None
        # The rest is set by relay().

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None

    # -- relaying ------------------------------------------------------------------------

    def relay(
        self, client: ProxyClient, forwarding: Forwarding, admission: Admission | None
    ) -> None:
        """Send the request to the targets ``forwarding`` names; answer the client."""
        self.client = client
        self.forwarding = forwarding
        self.admission = admission
        self.attempt = 0
        self.target: Target | None = None
        self.upstream: ProxyUpstream | None = None
        self.reused = False
        self.status = 0
        self.kept: list[bytes] | None = None
        self.wrote_any = False
        self.payload = self._encode()
        self.timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            forwarding.timeout_s, self._timed_out
        )
        client.call = self
        self._acquire()

    def _encode(self) -> bytes:
        parts = [self.method, b" ", self.url, b" HTTP/1.1\r\n"]
        admission = self.admission
        checked = admission is not None and admission.token is not None
        dropped = _HOP_BY_HOP_AND_TOKEN if checked else _HOP_BY_HOP
        for name, value in self.headers:
            if name not in dropped:
                parts += [name, b": ", value, b"\r\n"]
        peer = self.client.peer
        if peer:
            parts += [b"x-forwarded-for: ", peer, b"\r\n"]
        parts += [b"content-length: ", str(len(self.body)).encode(), b"\r\n\r\n", self.body]
        return b"".join(parts)

    def _acquire(self) -> None:
        target = self.forwarding.target_now()
        if target is not None:
            self._connect(target)
            return
        self.client.spawn(self._acquire_slowly())

    async def _acquire_slowly(self) -> None:
        try:
            target = await self.forwarding.target()
        except errors.ModelhostError as exc:
            self._fail(errors.http_status(exc), str(exc))
            return
        if self.client.closed or self.timer is None:
            _release(target, False)
            return
        self._connect(target)

    def _connect(self, target: Target) -> None:
        self.target = target
        upstream = self.client.server.pool.take(target.address)
        if upstream is not None:
            self.reused = True
            self._send(upstream)
            return
        self.reused = False
        self.client.spawn(self._open(target.address))

    async def _open(self, address: str) -> None:
        client = self.client
        pool = client.server.pool
        try:
            upstream = await pool.connect(address, client.limits.write_buffer_bytes)
        except OSError as exc:
            logger.info("%s refused a connection (%s)", address, exc)
            self._release(False)
            await asyncio.sleep(0.05 * (self.attempt + 1))
            self._retry(f"no replica of {self.forwarding.name} accepted the request")
            return
        if client.closed or self.timer is None:
            pool.put_back(upstream)
            self._release(False)
            return
        self._send(upstream)

    def _send(self, upstream: ProxyUpstream) -> None:
        self.upstream = upstream
        self.status = 0
        self.kept = [] if self.forwarding.keep_body else None
        self.wrote_any = False
        if self.client.write_paused:
            upstream.pause_reading()  # the client has not read the last answer yet
        upstream.send(self.payload, self, head=self.method == b"HEAD")

    def _retry(self, reason: str) -> None:
        self.attempt += 1
        if self.attempt >= _ATTEMPTS or self.timer is None or self.client.closed:
            self._fail(503, reason)
            return
        self._acquire()

    # -- the answer ----------------------------------------------------------------------

    def ended(self, complete: bool) -> None:
        """The target's answer ended: whole, or not (the target went away)."""
        self.upstream = None
        self._release(complete)
        if not complete and not self.wrote_any and self.reused:
            # A kept-alive connection the target had just closed: it never saw the request.
            self._retry("the replica closed the connection")
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        client = self.client
        client.call = None
        self._let_admission_go()
        if not complete:
            if self.wrote_any:
                self.forwarding.failed(502)
                client.abort()
                return
            self._answer(
                502, f"replica of {self.forwarding.name} closed the connection without answering"
            )
            return
        kept = self.kept
        self.forwarding.answered(self.status, b"".join(kept) if kept is not None else None)
        client.finished(self.keep_alive)

    def _timed_out(self) -> None:
        self.timer = None
        self._let_admission_go()
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abandon()
            self._release(False)
            self.client.call = None
            if self.wrote_any:
                self.client.abort()
                return
        self._release(False)
        timeout = self.forwarding.timeout_s
        self._answer(504, f"revision {self.forwarding.name} did not answer within {timeout:g}s")

    def _fail(self, status: int, message: str) -> None:
        if self.timer is None:
            return  # already answered (timed out) or abandoned: nothing more to say
        self.timer.cancel()
        self.timer = None
        self.client.call = None
        self._answer(status, message)

    def _answer(self, status: int, message: str) -> None:
        self._let_admission_go()
        self.forwarding.failed(status)
        if not self.client.closed:
            self.client.respond_error(status, message, self.keep_alive)

    def abandon(self) -> None:
        """The client went away: stop waiting for the target."""
        self._let_admission_go()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.abandon()
        self._release(False)

    def _release(self, ok: bool) -> None:
        target, self.target = self.target, None
        if target is not None:
            _release(target, ok)

    def _let_admission_go(self) -> None:
        admission, self.admission = self.admission, None
        if admission is not None:
            admission.release()


def _release(target: Target, ok: bool) -> None:
    try:
        target.release(ok)
    except Exception:
        # The client's answer does not depend on the bookkeeping of whoever owns the target.
        logger.exception("Releasing target %s failed", target.address)


class ProxyUpstream(asyncio.Protocol):
    """One keep-alive connection to a target; idle in its pool between requests."""

    def __init__(self, pool: ProxyPool, address: str, write_buffer_bytes: int) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.request: ProxiedRequest | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._keep_alive = True
        self._head = False
        self._write_buffer_bytes = write_buffer_bytes
        self._reading_paused = False
        self._holding = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)
        high = self._write_buffer_bytes
        self.transport.set_write_buffer_limits(high=high, low=high // 4)

    def data_received(self, data: bytes) -> None:
        request = self.request
        if request is None:
            # Bytes nobody asked for: the connection cannot be trusted any more.
            self.close()
            return
        request.client.write(data)
        request.wrote_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(complete=False)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.request is not None:
            self._finish(complete=False)

    def pause_writing(self) -> None:
        request = self.request
        if request is not None and not self._holding:
            self._holding = True
            request.client.hold_for_target(True)

    def resume_writing(self) -> None:
        self._let_go()

    # -- httptools callbacks --

    def on_headers_complete(self) -> None:
        if self.request is not None:
            self.request.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        if self._head:
            # A HEAD answer has a Content-Length but no body; the parser cannot know that,
            # so the answer ends here and the next one starts with a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        request = self.request
        if request is not None and request.kept is not None:
            request.kept.append(body)

    def on_message_complete(self) -> None:
        self._finish(complete=True)
        if self._keep_alive and not self.closed:
            self.pool.put_back(self)
        else:
            self.close()

    # -- the proxy's side --

    def send(self, data: bytes, request: ProxiedRequest, *, head: bool = False) -> None:
        assert self.transport is not None
        self.request = request
        self._head = head
        self.transport.write(data)

    def pause_reading(self) -> None:
        """The client is not reading the answer: leave the rest with the target."""
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            if self.transport is not None and not self.closed:
                self.transport.resume_reading()

    def abandon(self) -> None:
        """The client went away or time ran out: the answer has nowhere to go."""
        self._let_go()
        self.request = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _let_go(self) -> None:
        if self._holding:
            self._holding = False
            if self.request is not None:
                self.request.client.hold_for_target(False)

    def _finish(self, complete: bool) -> None:
        # The pauses belonged to this request; the connection goes back to the pool reading.
        self._let_go()
        self.resume_reading()
        request, self.request = self.request, None
        if request is not None:
            request.ended(complete)


class ProxyPool:
    """Idle keep-alive connections per target address."""

    def __init__(self, max_idle_per_address: int = 256) -> None:
        self._idle: dict[str, list[ProxyUpstream]] = defaultdict(list)
        self._max_idle = max_idle_per_address

    def take(self, address: str) -> ProxyUpstream | None:
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self, address: str, write_buffer_bytes: int) -> ProxyUpstream:
        """A new connection to ``address``; ``write_buffer_bytes`` unsent hold the client."""
        host, port = address.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: ProxyUpstream(self, address, write_buffer_bytes), host, int(port)
        )
        return protocol

    def put_back(self, connection: ProxyUpstream) -> None:
        idle = self._idle[connection.address]
        if len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: ProxyUpstream) -> None:
        idle = self._idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
