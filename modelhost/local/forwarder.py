"""Sending one request to a revision's replicas: acquire, relay, release, retry, time out.

Nothing is lost on a rollout or a crash: a request whose replica refused the connection, or
closed a reused idle connection before answering, is sent again to a replica (the request
body is held until the answer starts); one that a replica took and then lost is answered
502. The client's side (parsing, pipelining, answering) is :mod:`modelhost.local.http_proxy`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from modelhost import errors
from modelhost.access import OPEN, Admission
from modelhost.local.component import ComponentState
from modelhost.local.metrics import GatewayMetrics
from modelhost.local.payload_logger import LogContext, PayloadLogger, request_id_from
from modelhost.local.replica import Replica
from modelhost.local.revision import RevisionRunner
from modelhost.local.upstream import Exchange, UpstreamConnection, UpstreamPool

if TYPE_CHECKING:
    from modelhost.local.http_proxy import ClientConnection, Request

__all__ = ["ForwardedCall", "Forwarder"]

logger = logging.getLogger("modelhost.local")

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
_HOP_BY_HOP_AND_TOKEN = _HOP_BY_HOP | {b"authorization"}
_ATTEMPTS = 5


class Forwarder:
    """Sends requests to replicas: acquire, relay, release, retry, time out, log, count."""

    def __init__(self, metrics: GatewayMetrics, payload_logger: PayloadLogger | None) -> None:
        self.metrics = metrics
        self.payload_logger = payload_logger
        self.pool = UpstreamPool()
        self._counters: dict[tuple[str, ...], Any] = {}
        self._histograms: dict[tuple[str, ...], Any] = {}

    def close(self) -> None:
        self.pool.close()

    def forward(
        self,
        client: ClientConnection,
        request: Request,
        component: ComponentState,
        admission: Admission = OPEN,
    ) -> None:
        runner = component.choose()
        if runner is None:
            admission.release()
            client.respond_error(
                503, f"{component.service}: no revision of the {component.component} is ready"
            )
            return
        ForwardedCall(self, client, request, component, runner, admission).start()

    def count(
        self, component: ComponentState, runner: RevisionRunner, status: int, seconds: float
    ) -> None:
        labels = (component.namespace, component.service, component.component, runner.name)
        key = (*labels, str(status))
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self.metrics.requests.labels(*key)
        counter.inc()
        histogram = self._histograms.get(labels)
        if histogram is None:
            histogram = self._histograms[labels] = self.metrics.latency.labels(*labels)
        histogram.observe(seconds)


class ForwardedCall:
    """One request's way through a revision: possibly several attempts, one answer."""

    def __init__(
        self,
        forwarder: Forwarder,
        client: ClientConnection,
        request: Request,
        component: ComponentState,
        runner: RevisionRunner,
        admission: Admission = OPEN,
    ) -> None:
        self.forwarder = forwarder
        self.admission = admission
        self.client = client
        self.request = request
        self.component = component
        self.runner = runner
        self.started = time.perf_counter()
        self.attempt = 0
        self.replica: Replica | None = None
        self.connection: UpstreamConnection | None = None
        self.reused = False
        self.timer: asyncio.TimerHandle | None = None
        self.log_plan = runner.revision.logger if request.method == b"POST" else None
        self.request_id = ""
        self.payload: bytes = b""
        self._exchange = Exchange(client.write, self._done, keep_body=False)

    def start(self) -> None:
        request = self.request
        headers: dict[str, str] | None = None
        if self.log_plan is not None:
            # The id ties a request's event to its response's (ce-id, else x-request-id).
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            self.request_id = request_id_from(headers)
        self.payload = self._encode()
        if self.log_plan is not None and self.forwarder.payload_logger is not None:
            assert headers is not None
            self.forwarder.payload_logger.log_request(
                self.log_plan, self._context(), self.request_id, headers, request.body
            )
        timeout = float(self.runner.revision.timeout_s)
        self.timer = asyncio.get_running_loop().call_later(timeout, self._timed_out)
        self.client.call = self
        self._acquire()

    def _context(self) -> LogContext:
        return LogContext(
            service=self.component.service,
            namespace=self.component.namespace,
            component=self.component.component,
            endpoint=self.runner.name,
        )

    def _encode(self) -> bytes:
        request = self.request
        parts = [request.method, b" ", request.target, b" HTTP/1.1\r\n"]
        # A token the gateway checked stays here: the replica's model never sees it.
        dropped = _HOP_BY_HOP if self.admission.token is None else _HOP_BY_HOP_AND_TOKEN
        for name, value in request.headers:
            if name not in dropped:
                parts += [name, b": ", value, b"\r\n"]
        if self.request_id and request.header(b"x-request-id") is None:
            parts += [b"x-request-id: ", self.request_id.encode("latin-1"), b"\r\n"]
        peer = self.client.peer
        if peer:
            parts += [b"x-forwarded-for: ", peer, b"\r\n"]
        parts += [b"content-length: ", str(len(request.body)).encode(), b"\r\n\r\n", request.body]
        return b"".join(parts)

    # -- acquiring a replica and a connection --

    def _acquire(self) -> None:
        replica = self.runner.try_acquire()
        if replica is not None:
            self._connect(replica)
            return
        self.client.spawn(self._acquire_slowly())

    async def _acquire_slowly(self) -> None:
        try:
            replica = await self.runner.acquire(float(self.runner.revision.timeout_s))
        except errors.ModelhostError as exc:
            self._fail(errors.http_status(exc), str(exc))
            return
        if self.client.closed or self.timer is None:
            self.runner.release(replica)
            return
        self._connect(replica)

    def _connect(self, replica: Replica) -> None:
        self.replica = replica
        connection = self.forwarder.pool.take(replica.http_address)
        if connection is not None:
            self.reused = True
            self._send(connection)
            return
        self.reused = False
        self.client.spawn(self._open(replica))

    async def _open(self, replica: Replica) -> None:
        try:
            connection = await self.forwarder.pool.connect(replica.http_address)
        except OSError as exc:
            logger.info("replica %s refused a connection (%s)", replica.name, exc)
            self._release()
            await asyncio.sleep(0.05 * (self.attempt + 1))
            self._retry(f"no replica of {self.runner.name} accepted the request")
            return
        if self.client.closed or self.timer is None:
            self.forwarder.pool.put_back(connection)
            self._release()
            return
        self._send(connection)

    def _send(self, connection: UpstreamConnection) -> None:
        self.connection = connection
        keep = self.log_plan is not None and self.forwarder.payload_logger is not None
        exchange = Exchange(self.client.write, self._done, keep_body=keep)
        self._exchange = exchange
        connection.send(self.payload, exchange, head=self.request.method == b"HEAD")

    def _retry(self, reason: str) -> None:
        self.attempt += 1
        if self.attempt >= _ATTEMPTS or self.timer is None or self.client.closed:
            self._fail(503, reason)
            return
        self._acquire()

    # -- the answer --

    def _done(self, status: int, body: bytes | None, complete: bool) -> None:
        self.connection = None
        exchange = self._exchange
        self._release()
        if not complete and not exchange.wrote_any and self.reused:
            # A kept-alive connection the replica had just closed: it never saw the request.
            self._retry("the replica closed the connection")
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.client.call = None
        self.admission.release()
        if not complete:
            if exchange.wrote_any:
                self.forwarder.count(self.component, self.runner, 502, self._elapsed())
                self.client.abort()
                return
            self._answer(
                502, f"replica of {self.runner.name} closed the connection without answering"
            )
            return
        self.forwarder.count(self.component, self.runner, status, self._elapsed())
        if self.log_plan is not None and self.forwarder.payload_logger is not None:
            self.forwarder.payload_logger.log_response(
                self.log_plan, self._context(), self.request_id, status, {}, body or b""
            )
        self.client.finished(self.request.keep_alive)

    def _timed_out(self) -> None:
        self.timer = None
        self.admission.release()
        if self.connection is not None:
            connection, self.connection = self.connection, None
            wrote = self._exchange.wrote_any
            connection.abandon()
            self._release()
            self.client.call = None
            if wrote:
                self.client.abort()
                return
        timeout = self.runner.revision.timeout_s
        self._answer(504, f"revision {self.runner.name} did not answer within {timeout}s")

    def _fail(self, status: int, message: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.client.call = None
        self._answer(status, message)

    def _answer(self, status: int, message: str) -> None:
        self.admission.release()
        self.forwarder.count(self.component, self.runner, status, self._elapsed())
        if not self.client.closed:
            self.client.respond_error(status, message)

    def _release(self) -> None:
        replica, self.replica = self.replica, None
        if replica is not None:
            self.runner.release(replica)

    def abandon(self) -> None:
        """The client went away: stop waiting for the replica."""
        self.admission.release()
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.connection is not None:
            connection, self.connection = self.connection, None
            connection.abandon()
            self._release()

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started
