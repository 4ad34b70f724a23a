"""The ingress gateway's HTTP side: where every request to the platform's port enters.

A request whose Host is a service's host (``<name>.<namespace>.<domain>``, as KServe's
ingress routes) goes to that service, whatever its path. Any other host reaches
``/metrics`` and ``/healthz``, and else KServe's path rules
(``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``, ``/openai/...`` by the body's
``model``), so that ``curl localhost:8080/v1/models/sklearn-iris:predict`` works too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelhost.local.component import ComponentState
from modelhost.local.http_proxy import LOCAL, Request
from modelhost.local.platform import Platform
from modelhost.server.http.messages import body_model

__all__ = ["LOCAL_PATHS", "GatewayApp", "resolve"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

LOCAL_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})


class GatewayApp:
    """The platform's own routes on the gateway: ``/metrics``, ``/healthz``, ``/readyz``.

    The control API is not among them: it has listeners of its own (``api_server``).
    """

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path == "/metrics":
            payload, content_type = self.platform.metrics.exposition(_header(scope, b"accept"))
            await _respond(send, 200, payload, content_type)
            return
        await _respond(send, 200, b'{"status":"ok"}', "application/json")


def resolve(platform: Platform, request: Request) -> ComponentState | str | None:
    """Where a request to the gateway's port goes: a component, the platform, or nowhere."""
    routes = platform.routes
    path = request.path
    if request.host in routes.hosts:
        component = routes.match(request.host, path)
        if component is not None:
            return component
    if path in LOCAL_PATHS:
        return LOCAL
    model = body_model(request.body) if routes.needs_model(path) else None
    return routes.match(request.host, path, model)


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


async def _respond(send: Send, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode("latin-1")),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
