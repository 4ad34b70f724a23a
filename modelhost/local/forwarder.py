"""The platform's side of one HTTP request to a component: its revision, replicas, metrics, log.

The gateway's HTTP proxy (:mod:`modelhost.transport.http1_proxy`) parses, relays, retries
and times out; for a request bound for a component it asks :meth:`Forwarder.forward` for a
:class:`ForwardedCall`, which picks the revision by the traffic split, names a replica per
attempt (waiting, as Knative's activator does, while one starts), frees it when the attempt
ends, and counts and logs the request once it is answered.
"""

from __future__ import annotations

import functools
import time
from typing import cast

from modelhost import errors
from modelhost.local.component import ComponentState
from modelhost.local.metrics import GatewayMetrics, RevisionTally
from modelhost.local.payload_logger import ExchangeSink, LogContext, PayloadLogger
from modelhost.local.replica import Replica
from modelhost.local.revision import RevisionRunner
from modelhost.protocol.request_ids import RequestIds
from modelhost.transport.http1_proxy import ProxiedRequest, ProxyPool
from modelhost.transport.target import Target

__all__ = ["ForwardedCall", "Forwarder"]

# Log contexts and tallies kept (one per revision): past it the cache starts again.
_MAX_LOG_CONTEXTS = 4096
_MAX_TALLIES = 4096


class Forwarder:
    """Sends requests to replicas, over one pool of connections for all of the platform's
    HTTP listeners, and counts them."""

    def __init__(self, metrics: GatewayMetrics, payload_logger: PayloadLogger | None) -> None:
        self.metrics = metrics
        self.payload_logger = payload_logger
        self.pool = ProxyPool()
        self.request_ids = RequestIds()
        # Each revision's tally, found once per runner (a runner serves one revision).
        self._tallies: dict[RevisionRunner, RevisionTally] = {}
        self._log_contexts: dict[tuple[str, str, str, str], LogContext] = {}

    def close(self) -> None:
        self.pool.close()

    def forward(self, request: ProxiedRequest, destination: object) -> ForwardedCall:
        """The proxy's ``forward``: ``destination`` is a :class:`ComponentState`."""
        component = cast(ComponentState, destination)
        runner = component.choose()
        if runner is None:
            raise errors.ServerNotReady(
                f"{component.service}: no revision of the {component.component} is ready"
            )
        return ForwardedCall(self, request, component, runner)

    def log_context(self, component: ComponentState, runner: RevisionRunner) -> LogContext:
        """Where a logged request was served, as its events say it: one per revision."""
        key = (component.namespace, component.service, component.component, runner.name)
        context = self._log_contexts.get(key)
        if context is None:
            if len(self._log_contexts) >= _MAX_LOG_CONTEXTS:
                self._log_contexts.clear()  # revisions come and go: start again
            context = self._log_contexts[key] = LogContext(
                service=component.service,
                namespace=component.namespace,
                component=component.component,
                endpoint=runner.name,
            )
        return context

    def count(
        self, component: ComponentState, runner: RevisionRunner, status: int, seconds: float
    ) -> None:
        tally = self._tallies.get(runner)
        if tally is None:
            if len(self._tallies) >= _MAX_TALLIES:
                self._tallies.clear()  # revisions come and go: find them again
            tally = self._tallies[runner] = self.metrics.tally(
                component.namespace, component.service, component.component, runner.name
            )
        tally.observe(status, seconds)


class ForwardedCall:
    """One request's way through a revision, as the platform sees it (the proxy's
    :class:`~modelhost.transport.http1_upstream.Forwarding`)."""

    __slots__ = (
        "component",
        "exchange_sink",
        "forwarder",
        "keep_body",
        "log_context",
        "log_plan",
        "name",
        "request_body",
        "request_id",
        "runner",
        "started",
        "timeout_s",
    )

    def __init__(
        self,
        forwarder: Forwarder,
        request: ProxiedRequest,
        component: ComponentState,
        runner: RevisionRunner,
    ) -> None:
        self.forwarder = forwarder
        self.component = component
        self.runner = runner
        self.name = runner.name
        self.timeout_s = float(runner.revision.timeout_s)
        self.started = time.perf_counter()
        self.log_plan = runner.revision.logger if request.method == b"POST" else None
        payload_logger = forwarder.payload_logger
        self.keep_body = self.log_plan is not None and payload_logger is not None
        self.request_id = ""
        self.log_context: LogContext | None = None
        self.exchange_sink: ExchangeSink | None = None
        self.request_body = b""
        if self.log_plan is not None:
            # The id ties a request's event to its response's (ce-id, else x-request-id),
            # and the replica sees it too.
            ce_id = request_id = None
            for name, value in request.headers:  # the first of each, in one pass
                if name == b"x-request-id":
                    request_id = value if request_id is None else request_id
                elif name == b"ce-id":
                    ce_id = value if ce_id is None else ce_id
            given = ce_id or request_id
            self.request_id = given.decode("latin-1") if given else forwarder.request_ids.new()
            if request_id is None:
                request.headers.append((b"x-request-id", self.request_id.encode("latin-1")))
            if payload_logger is not None:
                # Made once: the response's event has the same identity.
                self.log_context = forwarder.log_context(component, runner)
                self.exchange_sink = payload_logger.exchange_sink(self.log_plan)
                if self.exchange_sink is not None:
                    # The whole exchange goes to the sink once answered: no event, no headers.
                    self.request_body = request.body
                else:
                    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
                    payload_logger.log_request(
                        self.log_plan, self.log_context, self.request_id, headers, request.body
                    )

    # -- Forwarding --

    def target_now(self) -> Target | None:
        replica = self.runner.try_acquire()
        if replica is None:
            return None
        return Target(replica.http_address, functools.partial(self._release, replica))

    async def target(self) -> Target:
        replica = await self.runner.acquire(self.timeout_s)
        return Target(replica.http_address, functools.partial(self._release, replica))

    def answered(self, status: int, body: bytes | None) -> None:
        self.forwarder.count(self.component, self.runner, status, self._elapsed())
        if self.exchange_sink is not None:
            assert self.log_context is not None  # made with the sink
            self.exchange_sink(
                self.log_context, self.request_id, self.request_body, status, body or b""
            )
            return
        payload_logger = self.forwarder.payload_logger
        # A context was made with the request's event exactly when there is one to answer.
        if (
            self.log_plan is not None
            and payload_logger is not None
            and self.log_context is not None
        ):
            payload_logger.log_response(
                self.log_plan, self.log_context, self.request_id, status, {}, body or b""
            )

    def failed(self, status: int) -> None:
        self.forwarder.count(self.component, self.runner, status, self._elapsed())

    def _release(self, replica: Replica, ok: bool) -> None:
        self.runner.release(replica)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.started
