"""``modelhost operator``: KServe's InferenceServices reconciled into plain Kubernetes objects.

kopf watches InferenceServices (create, update, resume, delete), InferenceGraphs (their
routers: :mod:`modelhost.kube.graph_operator`), the
ServingRuntimes and ClusterServingRuntimes they may use (held in kopf indices, so no
InferenceService is handled before every runtime is known), and the Deployments and pods the
operator owns (so a replica that becomes available, or crash-loops, updates the owner's
status). Every trigger runs the same reconcile of one InferenceService, one at a time per
object: read it and what it owns, decide with :func:`modelhost.kube.reconcile.reconcile`
(no I/O), apply, scale, delete, and write the status subresource.

Failures: an API error that may pass (409, 410, 429, 5xx, no answer) becomes
``kopf.TemporaryError`` with an exponential back-off, which kopf retries; an invalid object
is not an error at all, only a status (``Ready=False`` naming the field).

Deletion: every object carries a controller ownerReference, so the cluster's garbage
collector deletes it with its InferenceService. The operator also deletes them itself when it
sees the deletion, so they go at once and on API servers without a garbage collector; it adds
no finalizer, so an operator that is down never blocks ``kubectl delete isvc``.

Two replicas: with peering (kopf's KopfPeering/ClusterKopfPeering), the replica with the
highest priority acts and the others pause; the default priority is the start time, so the
newest replica leads.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
import kopf

from modelhost import control
from modelhost.control.errors import ParseError
from modelhost.control.objects import (
    AnyRuntime,
    ClusterServingRuntime,
    InferenceService,
    ServingRuntime,
)
from modelhost.kube.client import (
    RESOURCES,
    Connection,
    KubeApiError,
    KubeClient,
    resource_for,
)
from modelhost.kube.graph_operator import GraphOperator
from modelhost.kube.labels import (
    INFERENCEGRAPH,
    INFERENCESERVICE,
    MANAGED_BY,
    MANAGER,
    object_labels,
)
from modelhost.kube.operator_settings import OperatorSettings
from modelhost.kube.operator_support import (
    ReconcileQueue,
    api_object,
    carry_out,
    list_owned,
    report_refusal,
    retry_later,
    write_status,
)
from modelhost.kube.reconcile import ObjectRef, Reconciliation, is_owned_by, reconcile
from modelhost.kube.status import parse_status, refused_status

__all__ = ["OWNED_KINDS", "Operator", "OperatorSettings", "run_operator"]

logger = logging.getLogger("modelhost.kube")

KSERVE = "serving.kserve.io"
# The kinds ``render_plan`` emits: listed on every reconcile to find what is no longer wanted.
OWNED_KINDS = (
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PodDisruptionBudget",
    "HTTPRoute",
)
_KIND = "InferenceService"
_ISVC = next(r for r in RESOURCES if r.kind == _KIND)
_PODS = next(r for r in RESOURCES if r.kind == "Pod")
_OWNED = tuple(r for r in RESOURCES if r.kind in OWNED_KINDS)
_MANAGED = f"{MANAGED_BY}={MANAGER}"
# The key of ClusterServingRuntimes in the runtime index (namespaced ones: their namespace).
_CLUSTER = "*"


class Operator:
    """One operator process: its kopf registry and settings, its API client, its locks."""

    def __init__(self, settings: OperatorSettings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None
        self._connection: Connection | None = None
        self._queue = ReconcileQueue(settings)
        self.graphs = GraphOperator(settings, self._queue, self._client, self._runtimes, _OWNED)

    # -- kopf wiring ------------------------------------------------------------------------

    def kopf_settings(self) -> kopf.OperatorSettings:
        """kopf's settings: progress in annotations, peering, server-side watch selectors."""
        settings = kopf.OperatorSettings()
        # KServe's CRD prunes unknown status fields: kopf keeps its state in annotations.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(
            prefix="modelhost.dev"
        )
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix="modelhost.dev", key="last-handled-configuration"
        )
        # Kubernetes Events for failures only, not for every handler that succeeded.
        settings.posting.level = logging.WARNING
        # The kinds are known up front: no CRD or namespace watching (and no RBAC for it).
        settings.scanning.disabled = True
        settings.networking.request_timeout = self.settings.request_timeout_s
        settings.peering.name = self.settings.peering or "modelhost"
        # Only modelhost's Deployments and pods are streamed, not every one in the cluster.
        for group_resource in (("apps", "deployments"), ("v1", "pods")):
            settings.watching.label_selectors[group_resource] = _MANAGED
        return settings

    def registry(self) -> kopf.OperatorRegistry:
        """The handlers, bound to this operator."""
        registry = kopf.OperatorRegistry()
        isvc = (KSERVE, "v1beta1", "inferenceservices")
        runtimes = (KSERVE, "v1alpha1", "servingruntimes")
        cluster_runtimes = (KSERVE, "v1alpha1", "clusterservingruntimes")
        managed = {MANAGED_BY: MANAGER}

        @kopf.on.login(registry=registry, id="login")
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            return self._login(**kwargs)

        @kopf.on.startup(registry=registry, id="startup")
        async def startup(**_: Any) -> None:
            timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout)

        @kopf.on.cleanup(registry=registry, id="cleanup")
        async def cleanup(**_: Any) -> None:
            if self._session is not None:
                await self._session.close()
                self._session = None

        @kopf.index(*runtimes, registry=registry, id="serving_runtimes")
        def serving_runtimes(
            *, body: kopf.Body, namespace: str | None, **_: Any
        ) -> dict[str, Any] | None:
            runtime = _parse_runtime(body)
            return {namespace or "": runtime} if runtime is not None else None

        @kopf.index(*cluster_runtimes, registry=registry, id="cluster_serving_runtimes")
        def cluster_serving_runtimes(*, body: kopf.Body, **_: Any) -> dict[str, Any] | None:
            runtime = _parse_runtime(body)
            return {_CLUSTER: runtime} if runtime is not None else None

        @kopf.index(*isvc, registry=registry, id="inference_services")
        def inference_services(*, namespace: str | None, name: str, **_: Any) -> dict[str, str]:
            return {namespace or "": name}

        @kopf.on.resume(*isvc, registry=registry, id="reconcile")
        @kopf.on.create(*isvc, registry=registry, id="reconcile")
        @kopf.on.update(*isvc, registry=registry, id="reconcile")
        async def reconcile_service(
            *, namespace: str | None, name: str, retry: int, **kwargs: Any
        ) -> None:
            await self._handle(namespace or "", name, retry, kwargs)

        @kopf.on.event(*isvc, registry=registry, id="deleted")
        async def service_event(
            *, type: str, uid: str, namespace: str | None, name: str, **_: Any
        ) -> None:
            if type == "DELETED":
                await self.delete_owned(namespace or "", name, uid)

        @kopf.on.event(
            "apps", "v1", "deployments", labels=managed, registry=registry, id="owned_changed"
        )
        @kopf.on.event("v1", "pods", labels=managed, registry=registry, id="owned_changed")
        async def owned_event(
            *, type: str, labels: Mapping[str, str], namespace: str | None, **kwargs: Any
        ) -> None:
            if not type or not namespace:
                return
            owner = labels.get(INFERENCESERVICE)
            if owner:
                await self.kick(namespace, owner, kwargs)
            graph = labels.get(INFERENCEGRAPH)
            if graph:
                await self.graphs.kick(namespace, graph, kwargs)

        @kopf.on.event(*runtimes, registry=registry, id="runtime_changed")
        @kopf.on.event(*cluster_runtimes, registry=registry, id="runtime_changed")
        async def runtime_event(*, type: str, namespace: str | None, **kwargs: Any) -> None:
            if not type:  # the initial listing: the resume handlers plan with it
                return
            services: kopf.Index[str, str] = kwargs["inference_services"]
            for service_namespace, store in list(services.items()):
                if namespace and service_namespace != namespace:
                    continue
                for service in list(store):
                    await self.kick(service_namespace, service, kwargs)
            # A service's protocol may come from its runtime: its graphs' routers see it.
            await self.graphs.kick_calling(namespace, None, kwargs)

        self.graphs.register(registry)
        return registry

    async def run(
        self,
        *,
        stop_flag: asyncio.Event | None = None,
        ready_flag: asyncio.Event | None = None,
    ) -> None:
        """Run until ``stop_flag`` is set (or SIGINT/SIGTERM in the main thread)."""
        settings = self.settings
        namespaces = list(settings.namespaces)
        priority = settings.priority
        if priority is None and not settings.standalone:
            # The newest replica leads (a rolling update hands over at once); microseconds,
            # so that replicas started together still differ.
            priority = time.time_ns() // 1000
        await kopf.operator(
            registry=self.registry(),
            settings=self.kopf_settings(),
            clusterwide=not namespaces,
            namespaces=namespaces,
            standalone=settings.standalone,
            peering_name=settings.peering,
            priority=priority,
            liveness_endpoint=settings.liveness_endpoint,
            stop_flag=stop_flag,
            ready_flag=ready_flag,
        )

    # -- reconciling ------------------------------------------------------------------------

    async def reconcile_now(
        self, namespace: str, name: str, indices: Mapping[str, Any]
    ) -> Reconciliation | None:
        """Reconcile one InferenceService (None: it is gone); API errors propagate.

        ``indices`` are kopf's (live) indices, as handlers get them: the runtimes are read
        from them when the reconcile runs, not when it was asked for.
        """
        async with self._queue.lock((_KIND, namespace, name)):
            return await self._reconcile(namespace, name, self._runtimes(namespace, indices))

    async def kick(self, namespace: str, name: str, indices: Mapping[str, Any]) -> None:
        """Reconcile soon (see :meth:`ReconcileQueue.kick`); the runtimes are read then."""
        await self._queue.kick(
            (_KIND, namespace, name),
            lambda: self._reconcile(namespace, name, self._runtimes(namespace, indices)),
        )

    async def delete_owned(self, namespace: str, name: str, uid: str) -> list[ObjectRef]:
        """Delete what the (deleted) InferenceService ``uid`` owned; what was deleted."""
        deleted: list[ObjectRef] = []
        key = (_KIND, namespace, name)
        async with self._queue.lock(key):
            client = self._client()
            for obj in await self._owned(namespace, name):
                if not is_owned_by(obj, uid):
                    continue
                ref = ObjectRef.of(obj)
                resource = resource_for(ref.api_version, ref.kind)
                obj_uid = (obj.get("metadata") or {}).get("uid")
                if await client.delete(resource, namespace, ref.name, uid=obj_uid):
                    deleted.append(ref)
        self._queue.forget(key)  # gone: nothing more to serialize
        if deleted:
            logger.info("deleted %d objects of %s/%s", len(deleted), namespace, name)
        return deleted

    async def _handle(
        self, namespace: str, name: str, retry: int, indices: Mapping[str, Any]
    ) -> None:
        """A kopf handler's reconcile: API errors become retries with back-off."""
        try:
            await self.reconcile_now(namespace, name, indices)
        except KubeApiError as exc:
            report = functools.partial(self._report, namespace, name)
            raise await retry_later(self._queue, retry, exc, report) from exc

    async def _reconcile(
        self, namespace: str, name: str, runtimes: list[AnyRuntime]
    ) -> Reconciliation | None:
        client = self._client()
        body = await client.get(_ISVC, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        live_status = body.get("status")
        previous = parse_status(live_status)
        try:
            isvc = control.parse_object(api_object(body))
        except ParseError as exc:
            generation = (body.get("metadata") or {}).get("generation")
            status = refused_status(exc, previous, generation)
            await self._write_status(namespace, name, live_status, status)
            logger.warning("%s/%s is invalid: %s", namespace, name, exc)
            return Reconciliation(status=status, error=exc)
        assert isinstance(isvc, InferenceService)
        owned, pods = await asyncio.gather(
            self._owned(namespace, name),
            client.list(_PODS, namespace, {**object_labels(name)}),
        )
        result = reconcile(isvc, runtimes, owned, self.settings.kube, pods=pods, previous=previous)
        if result.error is not None:
            logger.warning("%s/%s is refused: %s", namespace, name, result.error)
        await carry_out(client, owned, result.apply, result.delete, result.scale)
        await self._write_status(namespace, name, live_status, result.status)
        return result

    async def _owned(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every object of the owned kinds labelled as this InferenceService's."""
        return await list_owned(self._client(), _OWNED, namespace, object_labels(name))

    async def _write_status(
        self,
        namespace: str,
        name: str,
        live: Mapping[str, Any] | None,
        status: control.InferenceServiceStatus,
    ) -> None:
        await write_status(self._client(), _ISVC, namespace, name, live, status)

    async def _report(self, namespace: str, name: str, error: KubeApiError) -> None:
        await report_refusal(
            self._client(),
            _ISVC,
            namespace,
            name,
            error,
            parse_status,
            control.InferenceServiceStatus,
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _login(self, **kwargs: Any) -> kopf.ConnectionInfo | None:
        if self.settings.api_server:
            info: kopf.ConnectionInfo | None = kopf.ConnectionInfo(server=self.settings.api_server)
        else:
            info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is not None:
            ssl_context = info.as_ssl_context() if info.server.startswith("https") else None
            self._connection = Connection(
                server=info.server,
                headers=info.as_http_headers(),
                ssl=False if info.insecure else ssl_context,
            )
        return info

    def _client(self) -> KubeClient:
        if self._session is None or self._connection is None:
            raise KubeApiError(0, "NotConnected", "the operator has not logged in yet")
        return KubeClient(self._session, self._connection)

    def _runtimes(self, namespace: str, indices: Mapping[str, Any]) -> list[AnyRuntime]:
        """The runtimes an InferenceService in ``namespace`` may use, from kopf's indices."""
        found: list[AnyRuntime] = []
        namespaced: kopf.Index[str, AnyRuntime] | None = indices.get("serving_runtimes")
        clustered: kopf.Index[str, AnyRuntime] | None = indices.get("cluster_serving_runtimes")
        if namespaced is not None:
            found.extend(namespaced.get(namespace, ()))
        if clustered is not None:
            found.extend(clustered.get(_CLUSTER, ()))
        if self.settings.builtin_runtimes:
            names = {r.name for r in found if isinstance(r, ClusterServingRuntime)}
            found.extend(r for r in control.builtin_runtimes() if r.name not in names)
        return found


async def run_operator(
    settings: OperatorSettings,
    *,
    stop_flag: asyncio.Event | None = None,
    ready_flag: asyncio.Event | None = None,
) -> None:
    """Run an operator with ``settings`` until stopped."""
    await Operator(settings).run(stop_flag=stop_flag, ready_flag=ready_flag)


def _parse_runtime(body: Mapping[str, Any]) -> AnyRuntime | None:
    """A runtime from the API, or None (logged) when modelhost cannot read it."""
    try:
        runtime = control.parse_object(api_object(body))
    except ParseError as exc:
        logger.warning("ignoring a runtime modelhost cannot read: %s", exc)
        return None
    if isinstance(runtime, (ServingRuntime, ClusterServingRuntime)):
        return runtime
    return None
