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

__all__ = ["ForwardedCall", "Forwarder", "RevisionSide"]

# Revisions whose tally and log settings are kept: past it the cache starts again.
_MAX_REVISIONS = 4096


class Forwarder:
    """Sends requests to replicas, over one pool of connections for all of the platform's
    HTTP listeners, and counts them."""

    def __init__(self, metrics: GatewayMetrics, payload_logger: PayloadLogger | None) -> None:
        self.metrics = metrics
        self.payload_logger = payload_logger
        self.pool = ProxyPool()
        self.request_ids = RequestIds()
        # What a request needs of its revision, found once per runner (a runner serves one
        # revision): a request looks it up once.
        self._revisions: dict[RevisionRunner, RevisionSide] = {}

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
        return ForwardedCall(self, request, self.revision_side(component, runner), runner)

    def revision_side(self, component: ComponentState, runner: RevisionRunner) -> RevisionSide:
        """The runner's revision as the gateway counts and logs it."""
        side = self._revisions.get(runner)
        if side is None:
            if len(self._revisions) >= _MAX_REVISIONS:
                self._revisions.clear()  # revisions come and go: find them again
            side = self._revisions[runner] = RevisionSide(self, component, runner)
        return side

    def count(
        self, component: ComponentState, runner: RevisionRunner, status: int, seconds: float
    ) -> None:
        self.revision_side(component, runner).tally.observe(status, seconds)


class RevisionSide:
    """One revision as the gateway sees it: where its requests are counted, and how its
    POSTs are logged (``log_plan`` None: not logged)."""

    __slots__ = ("exchange_sink", "log_context", "log_plan", "payload_logger", "tally")

    def __init__(
        self, forwarder: Forwarder, component: ComponentState, runner: RevisionRunner
    ) -> None:
        self.tally: RevisionTally = forwarder.metrics.tally(
            component.namespace, component.service, component.component, runner.name
        )
        self.log_plan = runner.revision.logger
        self.payload_logger = forwarder.payload_logger
        self.log_context = LogContext(
            service=component.service,
            namespace=component.namespace,
            component=component.component,
            endpoint=runner.name,
        )
        self.exchange_sink: ExchangeSink | None = None
        if self.log_plan is not None and self.payload_logger is not None:
            self.exchange_sink = self.payload_logger.exchange_sink(self.log_plan)


class ForwardedCall:
    """One request's way through a revision, as the platform sees it (the proxy's
    :class:`~modelhost.transport.http1_upstream.Forwarding`)."""

    __slots__ = (
        "keep_body",
        "name",
        "request_body",
        "request_id",
        "runner",
        "side",
        "started",
        "timeout_s",
    )

    def __init__(
        self,
        forwarder: Forwarder,
        request: ProxiedRequest,
        side: RevisionSide,
        runner: RevisionRunner,
    ) -> None:
        self.side = side
        self.runner = runner
        self.name = runner.name
        self.timeout_s = float(runner.revision.timeout_s)
        self.started = time.perf_counter()
        self.request_id = ""
        self.request_body = b""
        plan = side.log_plan
        # Logged (the answer's body kept for the log): a POST of a revision with a logger,
        # where the platform has a payload logger.
        self.keep_body = (
            plan is not None and side.payload_logger is not None and request.method == b"POST"
        )
        if plan is None or request.method != b"POST":
            return
        # The id ties a request's event to its response's (ce-id, else x-request-id), and
        # the replica sees it too.
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
        payload_logger = side.payload_logger
        if payload_logger is None:
            return
        if side.exchange_sink is not None:
            # The whole exchange goes to the sink once answered: no event, no headers.
            self.request_body = request.body
        else:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in request.headers}
            payload_logger.log_request(
                plan, side.log_context, self.request_id, headers, request.body
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
        side = self.side
        side.tally.observe(status, time.perf_counter() - self.started)
        if not self.keep_body:
            return
        sink = side.exchange_sink
        if sink is not None:
            sink(side.log_context, self.request_id, self.request_body, status, body or b"")
            return
        payload_logger, plan = side.payload_logger, side.log_plan
        assert payload_logger is not None  # logged
        assert plan is not None
        payload_logger.log_response(
            plan, side.log_context, self.request_id, status, {}, body or b""
        )

    def failed(self, status: int) -> None:
        self.side.tally.observe(status, time.perf_counter() - self.started)

    def _release(self, replica: Replica, ok: bool) -> None:
        self.runner.release(replica)
