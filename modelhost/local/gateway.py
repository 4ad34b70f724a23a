"""The ingress gateway's HTTP side: where every request to the platform's port enters.

A request whose Host is a service's host (``<name>.<namespace>.<domain>``, as KServe's
ingress routes) goes to that service, whatever its path. Any other host reaches
``/metrics`` and ``/healthz``, and else KServe's path rules
(``/v1/models/<name>:predict``, ``/v2/models/<name>/infer``, ``/openai/...`` by the body's
``model``), so that ``curl localhost:8080/v1/models/sklearn-iris:predict`` works too.
TrustyAI's paths (``/info``, ``/metrics/group/...``, its ingest routes) reach the trust
service in this process (:mod:`modelhost.local.trust_host`), and the model registry's
(``/api/model_registry/...``) the registry (:mod:`modelhost.local.registry_host`).
The detector API (``/api/v1/text/...``) and the guardrails orchestrator's
``/api/v2/chat/completions-detection`` reach the guardrails
(:mod:`modelhost.local.guardrails_host`).

The proxy itself is the transport's (:mod:`modelhost.transport.http1_proxy`); this module
hands it the platform's callbacks: where a request goes (:func:`resolve`), whether its
token lets it (:func:`http_admit`), and the forwarder that picks the replicas.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from modelhost.access import OPEN, Admission, Guard, Role, check_scope, refusal_headers
from modelhost.local.component import ComponentState
from modelhost.local.guardrails_host import GUARDRAILS_OWNER, is_guardrails_request
from modelhost.local.platform import Platform
from modelhost.local.registry_host import REGISTRY_OWNER, is_registry_request
from modelhost.local.routing import MODEL_PATH_PREFIXES
from modelhost.local.trust_host import TRUST_OWNER, is_trust_request
from modelhost.server.http.messages import body_model
from modelhost.settings import Http1Limits
from modelhost.transport.http1_proxy import (
    BODY,
    LOCAL,
    Admit,
    InProcess,
    ProxiedRequest,
    ProxyServer,
)

__all__ = ["LOCAL_PATHS", "OPEN_PATHS", "GatewayApp", "http_admit", "http_gateway", "resolve"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

LOCAL_PATHS = frozenset({"/metrics", "/healthz", "/readyz"})
# Paths that need no token with tokens on: the gateway's own probes.
OPEN_PATHS = frozenset({"/healthz", "/readyz"})


def http_gateway(platform: Platform, guard: Guard | None, limits: Http1Limits) -> ProxyServer:
    """The platform's HTTP gateway (to listen with ``start``), tokens checked by ``guard``."""
    return ProxyServer(
        functools.partial(resolve, platform),
        platform.forwarder.forward,
        local_app=GatewayApp(platform),
        admit=http_admit(guard) if guard is not None else None,
        refusal_headers=refusal_headers,
        not_found="no InferenceService serves host {host} and path {path}",
        pool=platform.forwarder.pool,
        limits=limits,
    )


def http_admit(guard: Guard) -> Admit:
    """The HTTP gateway's token check of a request, once :func:`resolve` has placed it."""

    def admit(request: ProxiedRequest, destination: object) -> Admission:
        if destination is LOCAL and request.path in OPEN_PATHS:
            return OPEN
        # Refused before anything is said of the destination: a stranger learns nothing,
        # not even which services exist.
        token = guard.authenticate(request.header(b"authorization"))
        if isinstance(destination, InProcess):
            if destination.owner in (TRUST_OWNER, REGISTRY_OWNER):
                # TrustyAI's and the model registry's APIs: callers read, deployers (and
                # admins) write.
                reads = request.method in (b"GET", b"HEAD")
                check_scope(token, None, None, Role.CALLER if reads else Role.DEPLOYER)
                return OPEN
            if destination.owner == GUARDRAILS_OWNER:
                # Detections are inference, on any service's LLM: platform-wide callers.
                check_scope(token, None, None, Role.CALLER)
                return OPEN
            destination = destination.owner
        if isinstance(destination, ComponentState):
            return guard.enter(token, destination.namespace, destination.service)
        if destination is None and (token.namespace or token.service):
            check_scope(token, None, None, Role.CALLER)
        return OPEN

    return admit


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


def resolve(platform: Platform, request: ProxiedRequest) -> ComponentState | InProcess | str | None:
    """Where a request to the gateway's port goes: a component, the platform, or nowhere."""
    routes = platform.routes
    path = request.path
    if request.host in routes.hosts:
        component = routes.match(request.host, path)
        if component is not None:
            return component.in_process or component
    if not path.startswith(MODEL_PATH_PREFIXES):
        # (A model's path is none of these: tests/local/test_gateway_paths.py.)
        if path in LOCAL_PATHS:
            return LOCAL
        trust = platform.trust
        if trust is not None and is_trust_request(request):
            return trust.destination
        guardrails = platform.guardrails
        if guardrails is not None and is_guardrails_request(request):
            return guardrails.destination
        registry = platform.registry
        if (
            registry is not None
            and registry.destination is not None
            and is_registry_request(request)
        ):
            return registry.destination
    needs_model = routes.needs_model(path)
    if needs_model and not request.complete:
        return BODY  # asked again once the body, which names the model, is in
    model = body_model(request.body) if needs_model else None
    component = routes.match(request.host, path, model)
    return component.in_process or component if component is not None else None


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
