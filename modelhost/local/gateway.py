"""The ingress gateway's HTTP side: where every request to the platform's port enters.

A request whose Host is a service's host (``<name>.<namespace>.<domain>``, as KServe's
ingress routes) goes to that service, whatever its path. Any other host reaches the control
API (``/apis/...``), ``/metrics`` and ``/healthz``, and else KServe's path rules
(``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``, ``/openai/...`` by the body's
``model``), so that ``curl localhost:8080/v1/models/sklearn-iris:predict`` works too.
"""

from __future__ import annotations

from typing import Any

import orjson

from modelhost.local import api
from modelhost.local.platform import Platform
from modelhost.local.proxy import Receive, Scope, Send, error_response, read_body
from modelhost.local.routing import strip_port

__all__ = ["GatewayApp"]


class GatewayApp:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        host = strip_port(_header(scope, b"host"))
        routes = self.platform.routes
        if host in routes.hosts:
            component = routes.match(host, path)
            if component is not None:
                body = await _body_or_none(receive)
                if body is not None:
                    await self.platform.forwarder.forward(scope, body, send, component)
                return
        if path.startswith(api.API_PREFIX):
            body = await _body_or_none(receive)
            if body is None:
                return
            response = await api.handle(
                self.platform, scope["method"], path, scope.get("query_string", b""), body
            )
            await _respond(send, response.status, response.body, response.content_type)
            return
        if path == "/metrics":
            payload, content_type = self.platform.metrics.exposition(_header(scope, b"accept"))
            await _respond(send, 200, payload, content_type)
            return
        if path in ("/healthz", "/readyz"):
            await _respond(send, 200, b'{"status":"ok"}', "application/json")
            return
        body = await _body_or_none(receive)
        if body is None:
            return
        model = _model_field(body) if routes.needs_model(path) else None
        component = routes.match(host, path, model)
        if component is None:
            await error_response(
                send, 404, f"no InferenceService serves host {host or '-'} and path {path}"
            )
            return
        await self.platform.forwarder.forward(scope, body, send, component)


async def _body_or_none(receive: Receive) -> bytes | None:
    try:
        return await read_body(receive)
    except Exception:
        return None  # the client went away: nothing to answer


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return ""


def _model_field(body: bytes) -> str | None:
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


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
