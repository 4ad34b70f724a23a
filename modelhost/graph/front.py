"""The router's HTTP front: the graph's URLs, its probes and metrics, as a small ASGI app.

The graph answers where KServe's router does (``POST /``) and where a model's client calls
(``POST /v1/models/<graph>:predict``, ``POST /v2/models/<graph>/infer``). Bodies go to
:meth:`GraphRouter.route` as bytes (a gzip or deflate body decompressed, nothing decoded) with
the request's headers; the answer's status, headers and body come back unchanged. Besides:
``GET /v2/health/live``, ``/v2/health/ready`` (503 while draining: the platform's replica
probe), ``/healthz``, ``/metrics`` (the router's node and step metrics), and the graph's
``GET /v2/models/<graph>`` and ``/v2/models/<graph>/ready``.

In the gateway's process a predict request can skip the ASGI call: :meth:`GraphFront.whole`
takes it as the proxy parsed it (its body whole, its header names lower-case) and answers it
the same way.

Every refusal is the server's ``{"error": "..."}``: 404 for a path it does not serve or
another model's name, 405 for a method a path does not take, 413 for a body over
``max_body_bytes`` (before any of it is read when its Content-Length says so; the connection
is then closed, not drained), 504 when the graph takes longer than ``write_timeout_s`` (to
within a quarter of it, and a second: one sweep keeps every request's deadline).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from modelhost import errors
from modelhost.graph.errors import GraphTimedOut
from modelhost.graph.metrics import RouterLoad
from modelhost.graph.router import GraphRouter
from modelhost.server.http.messages import read_body
from modelhost.settings import Http1Limits
from modelhost.transport.http1_in_process import WholeAnswer
from modelhost.transport.http1_limits import DeadlineSweeper
from modelhost.transport.http1_upstream import ProxiedRequest

__all__ = ["FrontSettings", "GraphFront"]

logger = logging.getLogger("modelhost.graph")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

# What the graph's metadata says it is, where a model's says its framework.
PLATFORM = "modelhost-graph"
_JSON = "application/json"


@dataclass(frozen=True)
class FrontSettings:
    """The front's own limits: the largest body, and how long the graph may take to answer.

    ``write_timeout_s`` (None: no bound) is KServe's ``routerTimeouts.serverWrite``.
    """

    max_body_bytes: int = Http1Limits.max_body_bytes
    write_timeout_s: float | None = None


class _Answer(NamedTuple):
    status: int
    body: bytes
    content_type: str = _JSON
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Scope, Receive], Awaitable[_Answer]]


class GraphFront:
    """The ASGI app of one graph's router; :attr:`ready` is what the readiness probe says."""

    def __init__(
        self,
        router: GraphRouter,
        registry: CollectorRegistry,
        settings: FrontSettings,
        load: RouterLoad | None = None,
    ) -> None:
        self.router = router
        # In flight and handled requests, for an autoscaler (a router process only).
        self.load = load
        self.registry = registry
        self.settings = settings
        timeout = settings.write_timeout_s
        self._deadlines = DeadlineSweeper([timeout] if timeout is not None else [])
        # False until the server listens, and again once it drains.
        self.ready = False
        self.name = router.name
        self._fixed: dict[str, tuple[str, Handler]] = {
            "/": ("POST", self._predict),
            "/v2/health/live": ("GET", self._live),
            "/v2/health/ready": ("GET", self._ready),
            "/healthz": ("GET", self._live),
            "/metrics": ("GET", self._metrics),
        }
        # The predict paths a request may take without the ASGI call.
        self._whole_paths = frozenset(
            ("/", f"/v1/models/{self.name}:predict", f"/v2/models/{self.name}/infer")
        )
        self._v2_model: dict[str, tuple[str, Handler]] = {
            "": ("GET", self._metadata),
            "/ready": ("GET", self._model_ready),
            "/infer": ("POST", self._predict),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # uvicorn runs it with lifespan "off"
            return
        method: str = scope["method"]
        path: str = scope["path"]
        try:
            found = self._route(path)
        except errors.ModelNotFound as exc:
            await _send(send, _error(exc), method)
            return
        if found is None:
            await _send(send, _json({"error": f"No route for {method} {path}."}, 404), method)
            return
        allowed, handler = found
        if method != allowed and not (method == "HEAD" and allowed == "GET"):
            refusal = {"error": f"Method {method} not allowed on {path}."}
            answer = _Answer(405, orjson.dumps(refusal), headers=(("allow", allowed),))
            await _send(send, answer, method)
            return
        await _send(send, await handler(scope, receive), method)

    def _route(self, path: str) -> tuple[str, Handler] | None:
        """The method and handler of ``path``, or None; another graph's name is not found."""
        fixed = self._fixed.get(path)
        if fixed is not None:
            return fixed
        if path.startswith("/v1/models/") and path.endswith(":predict"):
            self._check_name(path[len("/v1/models/") : -len(":predict")])
            return "POST", self._predict
        if path.startswith("/v2/models/"):
            name, slash, rest = path[len("/v2/models/") :].partition("/")
            found = self._v2_model.get(slash + rest)
            if name and found is not None:
                self._check_name(name)
                return found
        return None

    def _check_name(self, name: str) -> None:
        if name != self.name:
            raise errors.ModelNotFound(name)

    # -- the graph ---------------------------------------------------------------------------

    async def _predict(self, scope: Scope, receive: Receive) -> _Answer:
        load = self.load
        if load is None:
            return await self._route_graph(scope, receive)
        v2 = scope["path"].startswith("/v2/")
        protocol, endpoint = ("v2", "infer") if v2 else ("v1", "predict")
        in_flight = load.in_flight.labels(protocol)
        in_flight.inc()
        status = 500
        try:
            answer = await self._route_graph(scope, receive)
            status = answer.status
            return answer
        finally:
            in_flight.dec()
            load.handled(protocol, endpoint, status)

    async def _route_graph(self, scope: Scope, receive: Receive) -> _Answer:
        headers = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in scope["headers"]
        }
        try:
            body = await read_body(receive, headers, self.settings.max_body_bytes)
        except errors.PayloadTooLarge as exc:
            # The rest of the body is not read: the connection cannot carry another request.
            answer = _error(exc)
            return _Answer(answer.status, answer.body, headers=(("connection", "close"),))
        except errors.ModelhostError as exc:
            return _error(exc)
        return await self._graph_answer(body, headers, scope["path"])

    def whole(self, request: ProxiedRequest) -> Awaitable[WholeAnswer] | None:
        """The graph's answer to a predict request the gateway's proxy parsed, or None.

        None (the ASGI call takes it) for anything but a POST to one of the graph's predict
        paths with no query, a plain body within ``max_body_bytes``, and no load to count.
        """
        if (
            request.method != b"POST"
            or request.path not in self._whole_paths
            or b"?" in request.url
            or self.load is not None
            or len(request.body) > self.settings.max_body_bytes
        ):
            return None
        headers = {}
        for name, value in request.headers:
            if name == b"content-encoding":
                return None  # read_body decompresses it
            headers[name.decode("latin-1")] = value.decode("latin-1")
        return self._whole(request.body, headers, request.path)

    async def _whole(self, body: bytes, headers: dict[str, str], path: str) -> WholeAnswer:
        answer = await self._graph_answer(body, headers, path)
        extra = [
            (name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
        ]
        return WholeAnswer(answer.status, answer.body, answer.content_type.encode("latin-1"), extra)

    async def _graph_answer(self, body: bytes, headers: dict[str, str], path: str) -> _Answer:
        # Both callers' header names are lower-case: the ASGI scope's lowered, the proxy's.
        route = self.router.route_lowered(body, headers, path)
        timeout = self.settings.write_timeout_s
        watch = None
        if timeout is not None:
            # serverWrite's deadline, kept by the front's sweep: a timer of its own per
            # request (asyncio.timeout) costs about a quarter of what the router does.
            watch = _Route(asyncio.current_task(), time.monotonic() + timeout)
            self._deadlines.add(watch)
        try:
            response = await route
        except asyncio.CancelledError:
            if watch is None or not watch.expired:
                raise
            if sys.version_info >= (3, 11) and watch.task is not None:
                watch.task.uncancel()  # the cancellation was the deadline's, and it is over
            return _error(
                GraphTimedOut(
                    f"graph {self.name} did not answer within {timeout:g}s "
                    "(routerTimeouts.serverWrite)"
                )
            )
        except Exception as exc:  # a bug in the router must not take the front down
            logger.exception("graph %s failed a request", self.name)
            return _error(exc)
        finally:
            if watch is not None:
                self._deadlines.discard(watch)
        content_type = response.headers.get("content-type", _JSON)
        extra = tuple(
            (name, value) for name, value in response.headers.items() if name != "content-type"
        )
        return _Answer(response.status, response.body, content_type, extra)

    async def _metadata(self, scope: Scope, receive: Receive) -> _Answer:
        return _json({"name": self.name, "platform": PLATFORM, "inputs": [], "outputs": []})

    async def _model_ready(self, scope: Scope, receive: Receive) -> _Answer:
        return _json({"name": self.name, "ready": self.ready}, 200 if self.ready else 503)

    # -- the process -------------------------------------------------------------------------

    async def _live(self, scope: Scope, receive: Receive) -> _Answer:
        return _json({"live": True})

    async def _ready(self, scope: Scope, receive: Receive) -> _Answer:
        return _json({"ready": self.ready}, 200 if self.ready else 503)

    async def _metrics(self, scope: Scope, receive: Receive) -> _Answer:
        return _Answer(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)


class _Route:
    """A request being routed, watched by the front's sweep: cancelled past its deadline."""

    __slots__ = ("deadline", "expired", "task")

    def __init__(self, task: asyncio.Task[Any] | None, deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.expired = False

    def expire(self, now: float) -> None:
        self.expired = True
        self.deadline = 0.0
        if self.task is not None:
            self.task.cancel()


def _json(document: Any, status: int = 200) -> _Answer:
    return _Answer(status, orjson.dumps(document))


def _error(exc: BaseException) -> _Answer:
    return _json({"error": errors.error_message(exc)}, errors.http_status(exc))


async def _send(send: Send, answer: _Answer, method: str) -> None:
    headers = [
        (b"content-type", answer.content_type.encode("latin-1")),
        (b"content-length", str(len(answer.body)).encode("latin-1")),
    ]
    headers.extend(
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers
    )
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else answer.body})
