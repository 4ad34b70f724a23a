"""The control API: Kubernetes-shaped REST paths over the platform, for ``modelhost`` commands.

It is reached only on its own listeners (``api_server``): never on the gateway's port.
Each call carries a :class:`Caller`: the platform's owner (over the Unix socket) may do
anything; a token may do what its role and scope allow, and only an admin token may
apply objects that run code of the user's choosing (:func:`control.user_code`).

Objects live at the paths the Kubernetes API server gives them
(``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices/<name>``), so a reader
who knows ``kubectl get --raw`` knows these; ``apply`` takes a whole YAML file at
``/apis/modelhost.io/v1/apply``, and a service's replicas and logs are sub-resources. Errors
are Kubernetes ``Status`` objects with the status code of modelhost's error tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelhost import control, errors
from modelhost.access import Role, Token, check_scope
from modelhost.control import ClusterServingRuntime, InferenceGraph, InferenceService
from modelhost.local.platform import Platform

__all__ = ["OWNER", "ApiResponse", "Caller", "failure", "handle"]

_RESOURCES = {
    "inferenceservices": ("serving.kserve.io/v1beta1", "InferenceService", True),
    "servingruntimes": ("serving.kserve.io/v1alpha1", "ServingRuntime", True),
    "clusterservingruntimes": ("serving.kserve.io/v1alpha1", "ClusterServingRuntime", False),
    "inferencegraphs": ("serving.kserve.io/v1alpha1", "InferenceGraph", True),
}
# The kinds whose objects run replicas: they have revisions and logs, and a token scoped to
# a service reaches the one of its name.
_RUNNING = ("InferenceService", "InferenceGraph")
_PATH = re.compile(
    r"/apis/(?P<group>[\w.]+)/(?P<version>v\w+)"
    r"(?:/namespaces/(?P<namespace>[\w.-]+))?"
    r"/(?P<resource>[a-z]+)(?:/(?P<name>[\w.-]+))?(?:/(?P<sub>[a-z]+))?"
)


@dataclass(frozen=True)
class Caller:
    """Who makes a call: a token, or the platform's owner (``token`` None: may do anything)."""

    name: str
    token: Token | None = None

    def may(self, namespace: str | None, service: str | None, role: Role) -> None:
        """PermissionDenied unless the caller reaches ``namespace``/``service`` as ``role``."""
        if self.token is not None:
            check_scope(self.token, namespace, service, role)

    def authorize(self, objects: list[Any]) -> None:
        """Refuse a whole apply if any object is out of the caller's reach."""
        for obj in objects:
            if isinstance(obj, ClusterServingRuntime):
                namespace, service = None, None
            elif isinstance(obj, (InferenceService, InferenceGraph)):
                namespace, service = obj.namespace, obj.name
            else:
                namespace, service = obj.metadata.namespace or "default", None
            self.may(namespace, service, Role.DEPLOYER)
            reasons = control.user_code(obj)
            if reasons and self.token is not None and self.token.role is not Role.ADMIN:
                raise errors.PermissionDenied(
                    f"{obj.kind} {obj.metadata.name or ''} runs code of the user's choosing "
                    f"({'; '.join(reasons)}): only an admin token may apply it, and token "
                    f"{self.token.name!r} is a {self.token.role.value} token."
                )


OWNER = Caller("owner")
"""The platform's owner: whoever can open the Unix socket in its home (mode 0600)."""


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    # The objects the call was about (kind/namespace/name), and a failure's message: for
    # the audit log.
    objects: list[str] = field(default_factory=list)
    message: str = ""


async def handle(
    platform: Platform,
    method: str,
    path: str,
    query: bytes,
    body: bytes,
    caller: Caller = OWNER,
) -> ApiResponse:
    try:
        return await _dispatch(
            platform, method, path, parse_qs(query.decode("latin-1")), body, caller
        )
    except errors.ModelhostError as exc:
        return failure(errors.http_status(exc), str(exc))


async def _dispatch(
    platform: Platform,
    method: str,
    path: str,
    query: dict[str, list[str]],
    body: bytes,
    caller: Caller,
) -> ApiResponse:
    if path == "/apis/modelhost.io/v1/apply":
        if method != "POST":
            return failure(405, "apply takes POST with a YAML or JSON body")
        source = (query.get("source") or [""])[0]
        results = await platform.apply(body, source=source, authorize=caller.authorize)
        named = [f"{r['kind']}/{r['namespace'] or '-'}/{r['name']}" for r in results]
        return _json({"kind": "ApplyResult", "items": results}, named)
    match = _PATH.fullmatch(path)
    if match is None or match["resource"] not in _RESOURCES:
        return failure(404, f"no API at {path}")
    api_version, kind, namespaced = _RESOURCES[match["resource"]]
    if f"{match['group']}/{match['version']}" != api_version:
        return failure(404, f"{match['resource']} are served at /apis/{api_version}")
    namespace = match["namespace"] or ("" if not namespaced else None)
    name, sub = match["name"], match["sub"]
    if name is None:
        if method != "GET":
            return failure(405, f"{method} on a collection: use apply")
        caller.may(namespace or None, None, Role.DEPLOYER)
        items = platform.list_objects(kind, namespace)
        return _json({"apiVersion": api_version, "kind": f"{kind}List", "items": items})
    if namespace is None:
        return failure(404, f"{kind} {name}: name a namespace (/namespaces/<ns>/...)")
    service = name if kind in _RUNNING else None
    if method == "DELETE" and kind not in _RUNNING:
        # A runtime may be admin-made; taking one away is an admin's decision too.
        caller.may(namespace or None, service, Role.ADMIN)
    else:
        caller.may(namespace or None, service, Role.DEPLOYER)
    if sub is None:
        if method == "GET":
            found = platform.get(kind, namespace, name)
            if found is None:
                return failure(404, _not_found(kind, namespace, name))
            return _json(found)
        if method == "DELETE":
            if not await platform.delete(kind, namespace, name):
                return failure(404, _not_found(kind, namespace, name))
            return _json({"kind": "Status", "status": "Success", "details": {"name": name}})
        return failure(405, f"{method} {kind}: use apply to create or change objects")
    if kind not in _RUNNING or method != "GET":
        return failure(404, f"no sub-resource {sub} of {kind}")
    if platform.get(kind, namespace, name) is None:
        return failure(404, _not_found(kind, namespace, name))
    if sub == "revisions":
        return _json({"items": platform.replicas(namespace, name, kind)})
    if sub == "log":
        default = "predictor" if kind == "InferenceService" else control.ROUTER_COMPONENT
        component = (query.get("component") or [default])[0]
        tail = int((query.get("tail") or ["200"])[0])
        text = platform.logs(namespace, name, component, tail, kind)
        return ApiResponse(200, text.encode(), "text/plain; charset=utf-8")
    return failure(404, f"no sub-resource {sub} of {kind}")


def _not_found(kind: str, namespace: str, name: str) -> str:
    where = f"{namespace}/{name}" if namespace else name
    return f'{kind.lower()}s.serving.kserve.io "{where}" not found'


def _json(data: Any, objects: list[str] | None = None) -> ApiResponse:
    return ApiResponse(200, orjson.dumps(data), objects=objects or [])


def failure(status: int, message: str) -> ApiResponse:
    """A failed call, answered with a Kubernetes ``Status`` object."""
    reasons = {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        405: "MethodNotAllowed",
        413: "RequestEntityTooLarge",
        429: "TooManyRequests",
        501: "NotImplemented",
    }
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reasons.get(status, "InternalError" if status >= 500 else "Invalid"),
        "code": status,
    }
    return ApiResponse(status, orjson.dumps(body), message=message)
