"""InferenceGraph routers inside the gateway's process: a graph costs no hop of its own.

As a replica (``modelhost graph``), a graph's request goes client → gateway → router →
gateway → model, and back, for each step: a process hop more than the client calling the
models itself. In the gateway's process, the router takes the request from the gateway's
proxy whole (:class:`~modelhost.transport.http1_proxy.InProcess`), and sends each
``serviceName`` step straight to a replica of the service's revision, picked as the gateway
picks one (traffic split, the activator's wait while a replica starts, the call counted and
its payload logged), over the transport's pooled HTTP/1.1 client. A ``serviceUrl`` step goes
to its URL (https through aiohttp). The graph's metrics are on the gateway's ``/metrics``.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any, NamedTuple, cast

from modelhost import errors
from modelhost.control import ServicePlan
from modelhost.graph import (
    GraphMetrics,
    GraphRouter,
    HttpStepCaller,
    StepAnswer,
    StepAnswerInvalid,
    StepNotDeployed,
    StepTimedOut,
    StepUnreachable,
)
from modelhost.graph.config import parse_router_config
from modelhost.graph.front import FrontSettings, GraphFront
from modelhost.graph.resolve import ServiceTableResolver
from modelhost.graph.server import server_timeouts
from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.traffic import TrafficRouter
from modelhost.protocol.v2_json import HEADER_LENGTH
from modelhost.settings import Http1Limits
from modelhost.transport.http1_client import (
    AnswerInvalid,
    Http1Answer,
    Http1Client,
    Http1ClientError,
    UpstreamTimedOut,
    UpstreamUnreachable,
)
from modelhost.transport.http1_proxy import InProcess, ProxiedRequest

__all__ = ["GraphHost", "PlatformStepCaller"]

# The address in a step's URL that means "a service of this platform, by its Host".
_PLATFORM = "platform.internal"
# A step answer's headers the router reads (the body's type, the v2 binary header's length).
_ANSWER_HEADERS = frozenset((b"content-type", HEADER_LENGTH.encode("latin-1")))
# At most this many step URLs, and (host, path) pairs per routes table, are remembered: they
# come from the graphs' specs, a few per graph, but nothing else bounds them.
_MAX_REMEMBERED = 1024


class PlatformStepCaller:
    """Step calls of in-process routers: services through the platform, URLs as they are.

    An answer's :class:`StepAnswer` carries only the headers the router reads (its
    ``content-type`` and the v2 binary extension's header length), not all of them.

    A step call is on every graph request's path, twice for a two-step Sequence, so what does
    not change between calls is worked out once: each URL's parts, and the component behind
    each (host, path) for the routes table it was found in.
    """

    def __init__(
        self,
        traffic: TrafficRouter,
        forwarder: Forwarder,
        client: Http1Client,
        fallback: HttpStepCaller,
    ) -> None:
        self._traffic = traffic
        self._forwarder = forwarder
        self._client = client
        self._fallback = fallback
        self._urls: dict[str, _Url] = {}
        self._components: dict[tuple[str, str], ComponentState | None] = {}
        self._components_of: object = None

    async def __call__(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float | None
    ) -> StepAnswer:
        parts = self._urls.get(url)
        if parts is None:
            parts = _split_url(url)
            if len(self._urls) < _MAX_REMEMBERED:
                self._urls[url] = parts
        sent = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in headers.items()
            if name != "host"
        ]
        if parts.netloc != _PLATFORM:
            if parts.scheme != "http":
                return await self._fallback(url, body, headers, timeout)
            try:
                answer = await self._client.request(
                    parts.netloc, b"POST", parts.target, sent, body, timeout
                )
            except (Http1ClientError, OSError) as exc:
                raise _step_error(exc, url, timeout) from None
            return _step_answer(answer)
        # A service of this platform: the call is the proxy's, replica picked, counted, logged.
        host = headers.get("host", "")
        component = self._component(host, parts.path)
        if component is None:
            raise StepNotDeployed(f"no InferenceService has host {host}")
        sent.append((b"host", host.encode("latin-1")))
        request = ProxiedRequest(b"POST", parts.target, sent, body, True)
        call = self._forwarder.forward(request, component)
        started = time.perf_counter()
        try:
            chosen = call.target_now() or await call.target()
        except errors.ModelhostError as exc:
            call.failed(errors.http_status(exc))
            raise StepNotDeployed(f"{host}: {errors.error_message(exc)}") from None
        remaining = None if timeout is None else max(0.0, timeout - (time.perf_counter() - started))
        ok = False
        try:
            # The request as the proxy would relay it (an x-request-id added for the logger).
            answer = await self._client.request(
                chosen.address, b"POST", parts.target, request.headers, body, remaining
            )
            ok = True
        except errors.ModelhostError as exc:  # a request the client cannot write
            call.failed(errors.http_status(exc))
            raise
        except (Http1ClientError, OSError) as exc:
            error = _step_error(exc, f"{host}{parts.path}", remaining)
            call.failed(errors.http_status(error))
            raise error from None
        finally:
            chosen.release(ok)
        call.answered(answer.status, answer.body)
        return _step_answer(answer)

    def _component(self, host: str, path: str) -> ComponentState | None:
        """The component serving ``host`` at ``path``, looked up once per routes table."""
        routes = self._traffic.routes
        if routes is not self._components_of:
            self._components = {}
            self._components_of = routes
        key = (host, path)
        try:
            component = self._components[key]
        except KeyError:
            component = routes.match(host, path) if host in routes.hosts else None
            if len(self._components) < _MAX_REMEMBERED:
                self._components[key] = component
        if component is None or component.in_process is not None:
            return None  # nothing there, or a graph: not a service
        return component


class _Url(NamedTuple):
    scheme: str
    netloc: str
    # The request target (path and query), and the path alone.
    target: bytes
    path: str


def _split_url(url: str) -> _Url:
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    target = path + (f"?{parts.query}" if parts.query else "")
    return _Url(parts.scheme, parts.netloc, target.encode("latin-1"), path)


def _step_error(exc: Exception, what: str, timeout: float | None) -> errors.ModelhostError:
    """The router's error for a step call that got no answer."""
    if isinstance(exc, UpstreamTimedOut):
        within = f" within {timeout:g}s" if timeout is not None else ""
        return StepTimedOut(f"no answer from {what}{within}")
    if isinstance(exc, UpstreamUnreachable):
        return StepUnreachable(f"{what} unreachable: {exc}")
    if isinstance(exc, AnswerInvalid):
        return StepAnswerInvalid(f"{what} answered a broken HTTP response: {exc}")
    if isinstance(exc, OSError):  # the connection dropped under the client
        return StepUnreachable(f"{what} dropped the connection: {exc}")
    # UpstreamClosed, or any other of the client's
    return StepUnreachable(f"{what} closed the connection early: {exc}")


def _step_answer(answer: Http1Answer) -> StepAnswer:
    # Only the headers the router reads: how to read the body.
    decoded = {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in answer.headers
        if name in _ANSWER_HEADERS
    }
    return StepAnswer(answer.status, decoded, answer.body)


class GraphHost:
    """Builds the in-process router of a graph's plan; owns the step clients they share."""

    def __init__(
        self,
        traffic: TrafficRouter,
        forwarder: Forwarder,
        metrics: GraphMetrics,
        limits: Http1Limits,
    ) -> None:
        self.metrics = metrics
        self._limits = limits
        self._client = Http1Client()
        self._fallback = HttpStepCaller()
        self._caller = PlatformStepCaller(traffic, forwarder, self._client, self._fallback)

    def router(self, plan: ServicePlan, owner: ComponentState) -> InProcess:
        """The graph's router as the gateway's destination for ``owner``'s routes."""
        args = plan.components[0].revision.process.args
        config = parse_router_config(json.loads(args[args.index("--spec") + 1]))
        resolver = ServiceTableResolver(
            config.services, gateway=_PLATFORM, namespace=config.graph.namespace
        )
        router = GraphRouter(config.graph, self._caller, resolver, metrics=self.metrics)
        front = GraphFront(
            router,
            self.metrics.registry,
            FrontSettings(self._limits.max_body_bytes, server_timeouts(config.graph).write_s),
        )
        front.ready = True
        # The front's ASGI types are plain dicts, the proxy's mappings: the same at run time.
        return InProcess(cast(Any, front), owner, front.whole)

    async def close(self) -> None:
        await self._client.close()
        await self._fallback.close()
