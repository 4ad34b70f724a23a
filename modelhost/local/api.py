"""The control API: Kubernetes-shaped REST paths over the platform, for ``modelhost`` commands.

Objects live at the paths the Kubernetes API server gives them
(``/apis/serving.kserve.io/v1beta1/namespaces/<ns>/inferenceservices/<name>``), so a reader
who knows ``kubectl get --raw`` knows these; ``apply`` takes a whole YAML file at
``/apis/modelhost.io/v1/apply``, and a service's replicas and logs are sub-resources. Errors
are Kubernetes ``Status`` objects with the status code of modelhost's error tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelhost import errors
from modelhost.local.platform import Platform

__all__ = ["API_PREFIX", "ApiResponse", "handle"]

API_PREFIX = "/apis/"
_RESOURCES = {
    "inferenceservices": ("serving.kserve.io/v1beta1", "InferenceService", True),
    "servingruntimes": ("serving.kserve.io/v1alpha1", "ServingRuntime", True),
    "clusterservingruntimes": ("serving.kserve.io/v1alpha1", "ClusterServingRuntime", False),
}
_PATH = re.compile(
    r"/apis/(?P<group>[\w.]+)/(?P<version>v\w+)"
    r"(?:/namespaces/(?P<namespace>[\w.-]+))?"
    r"/(?P<resource>[a-z]+)(?:/(?P<name>[\w.-]+))?(?:/(?P<sub>[a-z]+))?"
)


@dataclass(frozen=True)
class ApiResponse:
    status: int
    body: bytes
    content_type: str = "application/json"


async def handle(
    platform: Platform, method: str, path: str, query: bytes, body: bytes
) -> ApiResponse:
    try:
        return await _dispatch(platform, method, path, parse_qs(query.decode("latin-1")), body)
    except errors.ModelhostError as exc:
        return _failure(errors.http_status(exc), str(exc))


async def _dispatch(
    platform: Platform, method: str, path: str, query: dict[str, list[str]], body: bytes
) -> ApiResponse:
    if path == "/apis/modelhost.io/v1/apply":
        if method != "POST":
            return _failure(405, "apply takes POST with a YAML or JSON body")
        source = (query.get("source") or [""])[0]
        results = await platform.apply(body, source=source)
        return _json({"kind": "ApplyResult", "items": results})
    match = _PATH.fullmatch(path)
    if match is None or match["resource"] not in _RESOURCES:
        return _failure(404, f"no API at {path}")
    api_version, kind, namespaced = _RESOURCES[match["resource"]]
    if f"{match['group']}/{match['version']}" != api_version:
        return _failure(404, f"{match['resource']} are served at /apis/{api_version}")
    namespace = match["namespace"] or ("" if not namespaced else None)
    name, sub = match["name"], match["sub"]
    if name is None:
        if method != "GET":
            return _failure(405, f"{method} on a collection: use apply")
        items = platform.list_objects(kind, namespace)
        return _json({"apiVersion": api_version, "kind": f"{kind}List", "items": items})
    if namespace is None:
        return _failure(404, f"{kind} {name}: name a namespace (/namespaces/<ns>/...)")
    if sub is None:
        if method == "GET":
            found = platform.get(kind, namespace, name)
            if found is None:
                return _failure(404, _not_found(kind, namespace, name))
            return _json(found)
        if method == "DELETE":
            if not await platform.delete(kind, namespace, name):
                return _failure(404, _not_found(kind, namespace, name))
            return _json({"kind": "Status", "status": "Success", "details": {"name": name}})
        return _failure(405, f"{method} {kind}: use apply to create or change objects")
    if kind != "InferenceService" or method != "GET":
        return _failure(404, f"no sub-resource {sub} of {kind}")
    if platform.get(kind, namespace, name) is None:
        return _failure(404, _not_found(kind, namespace, name))
    if sub == "revisions":
        return _json({"items": platform.replicas(namespace, name)})
    if sub == "log":
        component = (query.get("component") or ["predictor"])[0]
        tail = int((query.get("tail") or ["200"])[0])
        text = platform.logs(namespace, name, component, tail)
        return ApiResponse(200, text.encode(), "text/plain; charset=utf-8")
    return _failure(404, f"no sub-resource {sub} of {kind}")


def _not_found(kind: str, namespace: str, name: str) -> str:
    where = f"{namespace}/{name}" if namespace else name
    return f'{kind.lower()}s.serving.kserve.io "{where}" not found'


def _json(data: Any) -> ApiResponse:
    return ApiResponse(200, orjson.dumps(data))


def _failure(status: int, message: str) -> ApiResponse:
    reasons = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 501: "NotImplemented"}
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reasons.get(status, "InternalError" if status >= 500 else "Invalid"),
        "code": status,
    }
    return ApiResponse(status, orjson.dumps(body))
