"""The ASGI application: where every REST request enters, is routed, and is answered.

A plain ASGI callable with a small router instead of a web framework: the hot path
(read body → decode → infer → encode → send) has no middleware stack, no per-request
objects beyond two small dataclasses, and errors are mapped once, here, through
``modelhost.errors``. KServe's v1 and v2 are routed here; another protocol (OpenAI's)
comes in as a ``RouteProvider`` with its routes and its error shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any, cast

from modelhost import errors
from modelhost.access import (
    OPEN,
    Admission,
    Guard,
    Role,
    check_scope,
    refusal_headers,
    retry_after_header,
)
from modelhost.server.dataplane import DataPlane
from modelhost.server.endpoint_roles import OPEN_ENDPOINTS, role_for
from modelhost.server.http import docs
from modelhost.server.http.asgi import Receive, Scope, Send, send_answer, serve_lifespan
from modelhost.server.http.extension import RouteProvider
from modelhost.server.http.limits import BytesInFlight, Reservation
from modelhost.server.http.messages import (
    HttpRequest,
    HttpResponse,
    Route,
    body_model,
    json_response,
    read_body,
)
from modelhost.server.http.mount import Mount
from modelhost.server.http.streaming import StreamingResponse
from modelhost.server.http.v1_routes import V1Routes
from modelhost.server.http.v2_routes import V2Routes
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings

__all__ = ["HttpApp"]

access_logger = logging.getLogger("modelhost.access")
logger = logging.getLogger("modelhost.server")

# What stays open with tokens on: the probes, and the API's own docs.
_OPEN_ENDPOINTS = OPEN_ENDPOINTS | {"docs"}

# The routes a small request may take past the ASGI messages: their answers are whole.
_DIRECT_ENDPOINTS = frozenset(("infer", "predict"))


class HttpApp:
    """ASGI app serving v1, v2, the repository extension, /metrics, the docs, and ``routes``.

    ``routes`` adds a protocol's routes (OpenAI's API, vLLM's LoRA endpoints and v2
    generate, from ``modelhost.server.openai``; None: v1 and v2 only); ``guard`` checks
    bearer tokens on every route but the health probes (None: no checks). ``mounts`` answer
    what no route of the server's own answers (TrustyAI's API with ``serve --trust``).
    """

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        settings: ServerSettings,
        routes: RouteProvider | None = None,
        guard: Guard | None = None,
        mounts: Sequence[Mount] = (),
    ) -> None:
        self.dataplane = dataplane
        self.mounts = tuple(mounts)
        self.metrics = metrics
        self.settings = settings
        self.guard = guard
        self.routes = routes
        # The label of the extension's routes: their errors take its shape, and those with
        # no model in the path name it in the body (None matches no route).
        self._extension = routes.protocol if routes is not None else None
        v1 = V1Routes(dataplane)
        v2 = V2Routes(dataplane)
        self._fixed: dict[str, Route] = {
            "/": Route("GET", v1.root, "v1", "live"),
            # The extension's clients call it too (OpenAI's model list): it answers for both.
            "/v1/models": Route(
                "GET", routes.v1_models if routes is not None else v1.models, "v1", "models"
            ),
            "/v2": Route("GET", v2.server_metadata, "v2", "server_metadata"),
            "/v2/": Route("GET", v2.server_metadata, "v2", "server_metadata"),
            "/v2/health/live": Route("GET", v2.live, "v2", "live"),
            "/v2/health/ready": Route("GET", v2.ready, "v2", "ready"),
            "/v2/models": Route("GET", v2.models, "v2", "models"),
            "/v2/repository/index": Route("POST", v2.repository_index, "v2", "repository_index"),
            "/metrics": Route("GET", self._metrics, "http", "metrics"),
        }
        if settings.enable_docs:
            self._fixed["/openapi.json"] = Route("GET", self._openapi, "http", "docs")
            self._fixed["/docs"] = Route("GET", self._docs, "http", "docs")
        self._v1_model = {
            "": Route("GET", v1.model_ready, "v1", "model_ready"),
            "predict": Route("POST", v1.predict, "v1", "predict"),
            "explain": Route("POST", v1.explain, "v1", "explain"),
        }
        self._v2_model = {
            "": Route("GET", v2.model_metadata, "v2", "model_metadata"),
            "ready": Route("GET", v2.model_ready, "v2", "model_ready"),
            "infer": Route("POST", v2.infer, "v2", "infer"),
        }
        self._repository = {
            "load": Route("POST", v2.repository_load, "v2", "repository_load"),
            "unload": Route("POST", v2.repository_unload, "v2", "repository_unload"),
        }
        protocols = ("v1", "v2", "http") + ((routes.protocol,) if routes is not None else ())
        self._in_flight = {p: metrics.in_flight(p) for p in protocols}
        # Server-wide: what the requests being served hold in memory, their bodies decoded.
        self.budget = BytesInFlight(settings.max_bytes_in_flight)

    # -- routing -------------------------------------------------------------------

    def route(self, path: str) -> tuple[Route, str, str | None] | None:
        """The route for ``path`` with its model name and version, or None."""
        fixed = self._fixed.get(path)
        if fixed is not None:
            return fixed, "", None
        if path.startswith("/v2/models/"):
            parts = path[len("/v2/models/") :].split("/")
            name, rest = parts[0], parts[1:]
            version = None
            if len(rest) >= 2 and rest[0] == "versions":
                version, rest = rest[1], rest[2:]
            if name and len(rest) <= 1:
                v2_route = self._v2_model.get(rest[0] if rest else "")
                if v2_route is not None:
                    return v2_route, name, version
                if rest and self.routes is not None:
                    extra = self.routes.model_route(rest[0])
                    if extra is not None:
                        return extra, name, version
            return None
        if path.startswith("/v1/models/"):
            tail = path[len("/v1/models/") :]
            name, _, verb = tail.partition(":")
            v1_route = self._v1_model.get(verb)
            if name and "/" not in name and v1_route is not None:
                return v1_route, name, None
            return None
        if path.startswith("/v2/repository/models/"):
            name, _, action = path[len("/v2/repository/models/") :].partition("/")
            repo_route = self._repository.get(action)
            if name and repo_route is not None:
                return repo_route, name, None
        if self.routes is not None:
            found = self.routes.route(path)
            if found is not None:
                return found[0], found[1], None
        return None

    # -- ASGI ----------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await serve_lifespan(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        method: str = scope["method"]
        found = self.route(path)
        if self.mounts and (found is None or not _allows(found[0], method)):
            mount = self._mount(method, path)
            if mount is not None:
                await self._serve_mount(mount, scope, receive, send)
                return
        if found is None:
            await _send(send, _error(404, f"No route for {method} {path}."), method)
            return
        route, model, version = found
        if not _allows(route, method):
            response = _error(405, f"Method {method} not allowed on {path}.")
            response.headers["allow"] = route.method
            await _send(send, response, method)
            return
        entered = self._enter(scope, route, model)
        if isinstance(entered, HttpResponse):
            await _send(send, entered, method)
            return
        admission, reservation = entered
        gauge = self._in_flight[route.protocol]
        gauge.inc()
        try:
            try:
                result = await self._handle(
                    scope, receive, route, model, version, admission, reservation
                )
                if isinstance(result, StreamingResponse):
                    # It generates while it sends: in flight until its last token is out.
                    status = await result.send_to(send, receive, method)
            finally:
                gauge.dec()
                admission.release()
            if not isinstance(result, StreamingResponse):
                await _send(send, result, method)
                status = result.status
        finally:
            if reservation is not None:
                reservation.release()
        self._observe(scope, route, model, status, started)

    def direct_route(self, path: str) -> object | None:
        """The route of a POST to ``path`` if :meth:`answer_directly` answers it, else None."""
        found = self.route(path)
        return found if found is not None and found[0].endpoint in _DIRECT_ENDPOINTS else None

    def enter_directly(self, scope: Scope, found: object, body_bytes: int) -> object:
        """Admit a POST on a :meth:`direct_route` before its body of ``body_bytes`` is read:
        the ticket :meth:`answer_directly` takes, or the ``HttpResponse`` refusing it."""
        route, model, _ = cast(tuple[Route, str, "str | None"], found)
        limit = self.settings.max_request_bytes
        # As through ASGI: the token first, and a body past the limit charges nothing.
        entered = self._enter(scope, route, model, body_bytes if body_bytes <= limit else 0)
        if isinstance(entered, HttpResponse) or body_bytes <= limit:
            return entered
        self.leave(entered)
        exc = errors.PayloadTooLarge(
            f"Request body of {body_bytes} bytes exceeds the limit of {limit} bytes."
        )
        self._observe(scope, route, model, exc.status_code, time.perf_counter())
        return self._refusal(exc, route)

    def leave(self, ticket: object) -> None:
        """Give back what :meth:`enter_directly` admitted, when the request goes unanswered."""
        admission, reservation = cast(tuple[Admission, "Reservation | None"], ticket)
        admission.release()
        if reservation is not None:
            reservation.release()

    async def answer_directly(
        self, scope: Scope, found: object, body: bytes, ticket: object = None
    ) -> HttpResponse:
        """A POST on a :meth:`direct_route`, its body whole: the answer, not streamed.

        The same checks, limits, metrics and errors as through ASGI; what it skips is the
        ASGI messages (``modelhost.server.http.direct``). ``ticket``: what
        :meth:`enter_directly` admitted before the body was read (else it is admitted now).
        """
        started = time.perf_counter()
        route, model, version = cast(tuple[Route, str, "str | None"], found)
        if ticket is None:
            entered = self._enter(scope, route, model, len(body))
            if isinstance(entered, HttpResponse):
                return entered
            admission, reservation = entered
        else:
            admission, reservation = cast(tuple[Admission, "Reservation | None"], ticket)
        gauge = self._in_flight[route.protocol]
        gauge.inc()
        try:
            result = await self._handle(
                scope, _no_receive, route, model, version, admission, reservation, body
            )
        finally:
            gauge.dec()
            admission.release()
            if reservation is not None:
                reservation.release()
        assert isinstance(result, HttpResponse)  # the direct routes never stream
        self._observe(scope, route, model, result.status, started)
        return result

    def _enter(
        self, scope: Scope, route: Route, model: str, body_bytes: int = -1
    ) -> tuple[Admission, Reservation | None] | HttpResponse:
        """The caller's admission and the request's share of the byte budget, or a refusal."""
        admission = OPEN
        if self.guard is not None and route.endpoint not in _OPEN_ENDPOINTS:
            try:
                admission = self._admit(scope, route, model)
            except errors.ModelhostError as exc:
                self.metrics.observe_request(
                    "", route.protocol, route.endpoint, exc.status_code, 0.0
                )
                return self._refusal(exc, route)
        reservation = None
        if route.method == "POST" and self.settings.max_bytes_in_flight:
            # Charged before the body is read; GETs (the health probes) carry none.
            reservation = self.budget.reserve(route.protocol)
            try:
                declared = (
                    _content_length(scope, self.settings.max_request_bytes)
                    if body_bytes < 0
                    else body_bytes
                )
                reservation.cover(declared)
            except errors.ServerBusy as exc:
                admission.release()
                self.metrics.observe_request("", route.protocol, route.endpoint, 503, 0.0)
                return self._refusal(exc, route)
        return admission, reservation

    def _observe(self, scope: Scope, route: Route, model: str, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        if model and not self.dataplane.repository.has_model(model):
            model = ""  # an unknown name from a client must not grow the label set
        self.metrics.observe_request(model, route.protocol, route.endpoint, status, elapsed)
        if self.settings.access_log:
            client = scope.get("client") or ("-", 0)
            access_logger.info(
                '%s:%s - "%s %s" %d %.2fms',
                client[0],
                client[1],
                scope["method"],
                scope["path"],
                status,
                elapsed * 1000,
            )

    async def _handle(
        self,
        scope: Scope,
        receive: Receive,
        route: Route,
        model: str,
        version: str | None,
        admission: Admission = OPEN,
        reservation: Reservation | None = None,
        whole_body: bytes | None = None,
    ) -> HttpResponse | StreamingResponse:
        try:
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            if whole_body is not None:
                body = whole_body
                limit = self.settings.max_request_bytes
                if len(body) > limit:
                    raise errors.PayloadTooLarge(
                        f"Request body of {len(body)} bytes exceeds the limit of {limit} bytes."
                    )
            else:
                if reservation is not None and "content-length" not in headers:
                    receive = _charged(receive, reservation)  # chunked: charged as it comes
                body = await read_body(receive, headers, self.settings.max_request_bytes)
            if reservation is not None:
                reservation.cover(len(body))  # decompressed past its Content-Length
            if self.guard is not None:
                headers.pop("authorization", None)  # the model never sees the caller's token
            token = admission.token
            if token is not None and token.service is not None and not model:
                # OpenAI's routes name the model in the body: a token for one service is
                # checked against it once the body is here.
                check_scope(token, None, body_model(body), Role.CALLER)
            request = HttpRequest(
                scope["method"],
                scope["path"],
                headers,
                body,
                model,
                version,
                scope.get("query_string", b"").decode("latin-1"),
            )
            return await route.handler(request)
        except Exception as exc:
            if isinstance(exc, errors.ServerBusy):
                return self._refusal(exc, route)
            if route.protocol == self._extension:
                assert self.routes is not None
                return self.routes.error_response(exc)
            status = errors.http_status(exc)
            if status >= 500 and not isinstance(exc, errors.ModelhostError):
                logger.exception("Unhandled error on %s %s", scope["method"], scope["path"])
            return _error(status, errors.error_message(exc))

    def _admit(self, scope: Scope, route: Route, model: str) -> Admission:
        """Authenticate, check the scope where the path names the model, take the limits."""
        assert self.guard is not None
        authorization = None
        for key, value in scope["headers"]:
            if key == b"authorization":
                authorization = value
                break
        token = self.guard.authenticate(authorization)
        role = role_for(route.endpoint)
        if model or token.service is None or route.protocol != self._extension:
            return self.guard.enter(token, None, model or None, role)
        return self.guard.hold(token)  # the body names the model: checked in _handle

    # -- mounted apps --------------------------------------------------------------

    def _mount(self, method: str, path: str) -> Mount | None:
        for mount in self.mounts:
            if mount.matches(method, path):
                return mount
        return None

    async def _serve_mount(self, mount: Mount, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to ``mount``; with tokens on, GETs need a caller, writes a deployer."""
        method: str = scope["method"]
        if self.guard is not None:
            authorization = None
            for key, value in scope["headers"]:
                if key == b"authorization":
                    authorization = value
                    break
            try:
                token = self.guard.authenticate(authorization)
                reads = method in ("GET", "HEAD")
                check_scope(token, None, None, Role.CALLER if reads else Role.DEPLOYER)
            except errors.ModelhostError as exc:
                response = _error(exc.status_code, errors.error_message(exc))
                response.headers.update(refusal_headers(exc))
                await _send(send, response, method)
                self.metrics.observe_request("", "http", mount.name, exc.status_code, 0.0)
                return
        await mount.app(scope, receive, send)

    # -- non-protocol endpoints ----------------------------------------------------

    async def _metrics(self, request: HttpRequest) -> HttpResponse:
        body, content_type = self.metrics.exposition(request.headers.get("accept"))
        return HttpResponse(200, body, content_type)

    async def _openapi(self, request: HttpRequest) -> HttpResponse:
        return json_response(docs.openapi_document())

    async def _docs(self, request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, docs.swagger_html().encode(), "text/html; charset=utf-8")

    def _refusal(self, exc: errors.ModelhostError, route: Route) -> HttpResponse:
        """A 401, 403, 429 or 503, in the route's protocol's error shape, with its header."""
        if route.protocol == self._extension:
            assert self.routes is not None
            response = self.routes.error_response(exc)
        else:
            response = _error(exc.status_code, errors.error_message(exc))
        response.headers.update(refusal_headers(exc))
        if isinstance(exc, errors.ServerBusy):
            response.headers["retry-after"] = retry_after_header(exc.retry_after)
        return response


def _allows(route: Route, method: str) -> bool:
    return method == route.method or (method == "HEAD" and route.method == "GET")


def _error(status: int, message: str) -> HttpResponse:
    return json_response({"error": message}, status)


def _content_length(scope: Scope, limit: int) -> int:
    """The declared body size; 0 past ``limit`` (``read_body`` answers 413 for it)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            size = int(value) if value.isdigit() else 0
            return size if size <= limit else 0
    return 0


async def _no_receive() -> dict[str, Any]:
    """A direct request's body came whole: there is nothing more to read."""
    return {"type": "http.disconnect"}


def _charged(receive: Receive, reservation: Reservation) -> Receive:
    """``receive`` that charges each chunk of a body of unknown length as it arrives."""
    received = 0

    async def charged() -> dict[str, Any]:
        nonlocal received
        message = await receive()
        received += len(message.get("body", b""))
        reservation.cover(received)
        return message

    return charged


async def _send(send: Send, response: HttpResponse, method: str) -> None:
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers.items()]
    await send_answer(
        send,
        response.status,
        response.body,
        response.content_type,
        headers,
        head=method == "HEAD",
    )
