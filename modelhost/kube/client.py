"""The few Kubernetes API calls the operator makes, over aiohttp: get, list, apply, patch, delete.

kopf watches and calls handlers; the handlers change objects through this client. It is a
thin layer on aiohttp (which kopf itself talks to the API server with, and modelhost already
depends on) rather than a client library: the operator needs six verbs on a dozen known
kinds, and a second HTTP stack (kubernetes_asyncio, lightkube, kr8s) would add a dependency
to the image for that. Credentials come from kopf's login (:class:`Connection`).

``apply`` is server-side apply (``PATCH application/apply-patch+yaml``, field manager
``modelhost``, ``force``): the API server merges what the operator sets and leaves every
other manager's fields alone (an HPA's ``replicas``, a mutating webhook's sidecar). An API
server that answers an apply of a missing object with 404 (the kmock emulator, which applies
the patch as a JSON merge patch but does not create on apply) gets a create instead.
"""

from __future__ import annotations

import dataclasses
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from modelhost.errors import ModelhostError

__all__ = [
    "FIELD_MANAGER",
    "RESOURCES",
    "RETRYABLE_STATUSES",
    "Connection",
    "KubeApiError",
    "KubeClient",
    "Resource",
    "resource_for",
]

FIELD_MANAGER = "modelhost"
# Worth another try: credentials that expired (kopf logs in again, and this client follows),
# a conflict (stale resourceVersion), an expired list or watch (410 Gone), throttling, the API
# server (or its etcd) failing or not reachable (status 0).
RETRYABLE_STATUSES = frozenset({0, 401, 409, 410, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class Resource:
    """A kind the API serves: where it lives in the URL space, and whether it is namespaced."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str = ""
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


# Every kind the operator reads or writes (what ``render_plan`` emits, KServe's, pods).
RESOURCES: tuple[Resource, ...] = (
    Resource("serving.kserve.io", "v1beta1", "inferenceservices", "InferenceService"),
    Resource("serving.kserve.io", "v1alpha1", "inferencegraphs", "InferenceGraph"),
    Resource("serving.kserve.io", "v1alpha1", "servingruntimes", "ServingRuntime"),
    Resource(
        "serving.kserve.io",
        "v1alpha1",
        "clusterservingruntimes",
        "ClusterServingRuntime",
        namespaced=False,
    ),
    Resource("apps", "v1", "deployments", "Deployment"),
    Resource("", "v1", "services", "Service"),
    Resource("", "v1", "pods", "Pod"),
    Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler"),
    Resource("keda.sh", "v1alpha1", "scaledobjects", "ScaledObject"),
    Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget"),
    Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute"),
)
_BY_KIND = {(r.api_version, r.kind): r for r in RESOURCES}


def resource_for(api_version: str, kind: str) -> Resource:
    """The resource of ``kind`` in ``api_version``; raises :class:`KubeApiError` if unknown."""
    found = _BY_KIND.get((api_version, kind))
    if found is None:
        raise KubeApiError(0, "UnknownKind", f"the operator does not handle {api_version} {kind}")
    return found


class KubeApiError(ModelhostError):
    """The API server refused a call (``status`` is its HTTP status; 0: it was not reached)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else f"{reason}: {message}")
        self.status = status
        self.kube_reason = reason
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the same call may succeed later without a change of the request."""
        return self.status in RETRYABLE_STATUSES and self.kube_reason != "UnknownKind"


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where the API server is and how to authenticate: from kopf's ``ConnectionInfo``."""

    server: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # None: verify with the system's authorities; False: do not verify; or a context.
    ssl: ssl.SSLContext | bool | None = None


class KubeClient:
    """The operator's API calls; every failure is a :class:`KubeApiError`."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        connection: Connection,
        *,
        field_manager: str = FIELD_MANAGER,
    ) -> None:
        self._session = session
        self.connection = connection
        self.field_manager = field_manager

    async def get(
        self, resource: Resource, namespace: str | None, name: str
    ) -> dict[str, Any] | None:
        """The object, or None if it does not exist."""
        try:
            return await self._call("GET", resource.path(namespace, name))
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        resource: Resource,
        namespace: str | None,
        labels: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """The objects with all of ``labels``; none where the API does not serve the kind.

        The labels are sent as a selector and checked here too (an emulator may ignore it).
        """
        params = {}
        if labels:
            params["labelSelector"] = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
        try:
            found = await self._call("GET", resource.path(namespace), params=params)
        except KubeApiError as exc:
            if exc.status == 404:  # the kind is not installed (no KEDA, no Gateway API)
                return []
            raise
        items: Sequence[Any] = found.get("items") or ()
        wanted = dict(labels or {})
        return [
            {"apiVersion": resource.api_version, "kind": resource.kind, **item}
            for item in items
            if isinstance(item, dict) and _has_labels(item, wanted)
        ]

    async def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply of ``manifest`` (created where the server does not create)."""
        resource = resource_for(str(manifest.get("apiVersion")), str(manifest.get("kind")))
        meta = manifest.get("metadata") or {}
        namespace, name = meta.get("namespace"), str(meta.get("name", ""))
        params = {"fieldManager": self.field_manager, "force": "true"}
        body = json.dumps(manifest)
        try:
            return await self._call(
                "PATCH",
                resource.path(namespace, name),
                params=params,
                data=body,
                content_type="application/apply-patch+yaml",
            )
        except KubeApiError as exc:
            if exc.status != 404:
                raise
        try:
            return await self._call(
                "POST",
                resource.path(namespace),
                params={"fieldManager": self.field_manager},
                data=body,
                content_type="application/json",
            )
        except KubeApiError as exc:
            if exc.status != 404:
                raise
            raise KubeApiError(
                404,
                "NotServed",
                f"the API server does not serve {resource.api_version} {resource.plural} in "
                f"namespace {namespace} (is the CRD installed, and the namespace there?): "
                f"{exc.message}",
            ) from exc

    async def merge_patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        *,
        subresource: str = "",
    ) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386) of the object or of its ``subresource``."""
        return await self._call(
            "PATCH",
            resource.path(namespace, name, subresource),
            params={"fieldManager": self.field_manager},
            data=json.dumps(patch),
            content_type="application/merge-patch+json",
        )

    async def delete(
        self, resource: Resource, namespace: str | None, name: str, *, uid: str | None = None
    ) -> bool:
        """Delete the object (only if its uid is still ``uid``); False if it was gone."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "DeleteOptions",
            "propagationPolicy": "Background",
        }
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self._call(
                "DELETE",
                resource.path(namespace, name),
                data=json.dumps(body),
                content_type="application/json",
            )
        except KubeApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: str | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        connection = self.connection
        headers = {"Accept": "application/json", **connection.headers}
        if content_type is not None:
            headers["Content-Type"] = content_type
        url = connection.server.rstrip("/") + path
        try:
            async with self._session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                ssl=True if connection.ssl is None else connection.ssl,
            ) as response:
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise KubeApiError(0, type(exc).__name__, str(exc) or "no answer") from exc
        document = _json(text)
        if status >= 400:
            reason = str(document.get("reason") or response.reason or "Error")
            message = str(document.get("message") or text[:500])
            raise KubeApiError(status, reason, f"{method} {path}: {message}")
        return document


def _json(text: str) -> dict[str, Any]:
    try:
        document = json.loads(text) if text else {}
    except ValueError:
        return {}
    return document if isinstance(document, dict) else {}


def _has_labels(obj: Mapping[str, Any], wanted: Mapping[str, str]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return all(labels.get(key) == value for key, value in wanted.items())
