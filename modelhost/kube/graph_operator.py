"""The operator's InferenceGraphs: each graph's router, kept in step with the graph's services.

kopf watches InferenceGraphs (create, update, resume, delete) as the operator watches
InferenceServices, and indexes both: the graphs with the services their steps name, the
InferenceServices as parsed objects, so a graph is planned (``control.plan_graph``) with the
plans of the services in its namespace without reading them from the API. A reconcile reads
the graph and what it owns, decides with :func:`modelhost.kube.graph_reconcile.reconcile_graph`
(no I/O), applies (server-side, each object owned by the graph), deletes, and writes KServe's
graph status. An InferenceService that is created, deleted or changes its spec kicks the
graphs whose steps name it (their router's config changes); a router Deployment or pod that
changes kicks its graph. A deleted graph's objects go with it (ownerReferences, and the
operator deletes them at once), and no finalizer is added.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import kopf

from modelhost import control, errors
from modelhost.control.errors import ParseError
from modelhost.control.objects import AnyRuntime, InferenceGraph, InferenceService
from modelhost.control.plan_types import ServicePlan
from modelhost.kube.client import RESOURCES, KubeApiError, KubeClient, Resource, resource_for
from modelhost.kube.graph_reconcile import GraphReconciliation, reconcile_graph
from modelhost.kube.graph_status import parse_graph_status, refused_graph_status
from modelhost.kube.labels import INFERENCEGRAPH, object_labels
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
from modelhost.kube.reconcile import ObjectRef, is_owned_by

__all__ = ["GRAPH_INDEX", "SERVICE_INDEX", "GraphOperator", "GraphSteps"]

logger = logging.getLogger("modelhost.kube")

KSERVE = "serving.kserve.io"
# The kopf indices this module adds: the graphs, and the InferenceServices as objects.
GRAPH_INDEX = "inference_graphs"
SERVICE_INDEX = "inference_service_objects"
_KIND = "InferenceGraph"
_GRAPH = next(r for r in RESOURCES if r.kind == _KIND)
_PODS = next(r for r in RESOURCES if r.kind == "Pod")

Runtimes = Callable[[str, Mapping[str, Any]], list[AnyRuntime]]


class GraphSteps(NamedTuple):
    """A graph in the index: its name, and the InferenceServices its steps name."""

    name: str
    services: frozenset[str]


class GraphOperator:
    """The InferenceGraph half of the operator; it shares the operator's queue and client."""

    def __init__(
        self,
        settings: OperatorSettings,
        queue: ReconcileQueue,
        client: Callable[[], KubeClient],
        runtimes: Runtimes,
        owned_resources: tuple[Resource, ...],
    ) -> None:
        self.settings = settings
        self._queue = queue
        self._client = client
        self._runtimes = runtimes
        self._owned_resources = owned_resources
        # The spec generation last seen of each InferenceService, to kick graphs on a change.
        self._generations: dict[tuple[str, str], int] = {}

    def register(self, registry: kopf.OperatorRegistry) -> None:
        """Add the graph handlers and indices to ``registry``."""
        graphs = (KSERVE, "v1alpha1", "inferencegraphs")
        isvc = (KSERVE, "v1beta1", "inferenceservices")

        @kopf.index(*graphs, registry=registry, id=GRAPH_INDEX)
        def inference_graphs(
            *, body: kopf.Body, namespace: str | None, name: str, **_: Any
        ) -> dict[str, GraphSteps]:
            try:
                graph = control.parse_object(api_object(body))
            except ParseError:
                return {namespace or "": GraphSteps(name, frozenset())}
            assert isinstance(graph, InferenceGraph)
            return {namespace or "": GraphSteps(name, frozenset(control.graph_services(graph)))}

        @kopf.index(*isvc, registry=registry, id=SERVICE_INDEX)
        def inference_service_objects(
            *, body: kopf.Body, namespace: str | None, **_: Any
        ) -> dict[str, InferenceService] | None:
            try:
                found = control.parse_object(api_object(body))
            except ParseError:
                return None  # its own status says why; to a graph it is not there
            return {namespace or "": found} if isinstance(found, InferenceService) else None

        @kopf.on.resume(*graphs, registry=registry, id="reconcile")
        @kopf.on.create(*graphs, registry=registry, id="reconcile")
        @kopf.on.update(*graphs, registry=registry, id="reconcile")
        async def reconcile_graph_handler(
            *, namespace: str | None, name: str, retry: int, **kwargs: Any
        ) -> None:
            await self._handle(namespace or "", name, retry, kwargs)

        @kopf.on.event(*graphs, registry=registry, id="deleted")
        async def graph_event(
            *, type: str, uid: str, namespace: str | None, name: str, **_: Any
        ) -> None:
            if type == "DELETED":
                await self.delete_owned(namespace or "", name, uid)

        @kopf.on.event(*isvc, registry=registry, id="graph_services")
        async def service_event(
            *, type: str, body: kopf.Body, namespace: str | None, name: str, **kwargs: Any
        ) -> None:
            key = (namespace or "", name)
            generation = int((body.get("metadata") or {}).get("generation") or 0)
            before = self._generations.get(key)
            if type == "DELETED":
                self._generations.pop(key, None)
            else:
                self._generations[key] = generation
            # The initial listing: the graphs' resume handlers plan with what is there.
            if type and (type != "MODIFIED" or before != generation):
                await self.kick_calling(namespace or "", name, kwargs)

    # -- reconciling ------------------------------------------------------------------------

    async def reconcile_now(
        self, namespace: str, name: str, indices: Mapping[str, Any]
    ) -> GraphReconciliation | None:
        """Reconcile one InferenceGraph (None: it is gone); API errors propagate."""
        async with self._queue.lock((_KIND, namespace, name)):
            return await self._reconcile(namespace, name, indices)

    async def kick(self, namespace: str, name: str, indices: Mapping[str, Any]) -> None:
        """Reconcile one graph soon (see :meth:`ReconcileQueue.kick`)."""
        await self._queue.kick(
            (_KIND, namespace, name), lambda: self._reconcile(namespace, name, indices)
        )

    async def kick_calling(
        self, namespace: str | None, service: str | None, indices: Mapping[str, Any]
    ) -> None:
        """Kick the graphs whose steps name ``service`` (every graph where None).

        ``namespace`` None: every namespace (a ClusterServingRuntime changed).
        """
        index: kopf.Index[str, GraphSteps] | None = indices.get(GRAPH_INDEX)
        if index is None:
            return
        for graph_namespace, store in list(index.items()):
            if namespace is not None and graph_namespace != namespace:
                continue
            for steps in list(store):
                if service is None or service in steps.services:
                    await self.kick(graph_namespace, steps.name, indices)

    async def delete_owned(self, namespace: str, name: str, uid: str) -> list[ObjectRef]:
        """Delete what the (deleted) InferenceGraph ``uid`` owned; what was deleted."""
        deleted: list[ObjectRef] = []
        key = (_KIND, namespace, name)
        async with self._queue.lock(key):
            client = self._client()
            for obj in await self._owned(namespace, name):
                if not is_owned_by(obj, uid):
                    continue
                ref = ObjectRef.of(obj)
                obj_uid = (obj.get("metadata") or {}).get("uid")
                resource = resource_for(ref.api_version, ref.kind)
                if await client.delete(resource, namespace, ref.name, uid=obj_uid):
                    deleted.append(ref)
        self._queue.forget(key)
        if deleted:
            logger.info("deleted %d objects of graph %s/%s", len(deleted), namespace, name)
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
        self, namespace: str, name: str, indices: Mapping[str, Any]
    ) -> GraphReconciliation | None:
        client = self._client()
        body = await client.get(_GRAPH, namespace, name)
        if body is None or (body.get("metadata") or {}).get("deletionTimestamp"):
            return None
        live_status = body.get("status")
        previous = parse_graph_status(live_status)
        try:
            graph = control.parse_object(api_object(body))
        except ParseError as exc:
            generation = (body.get("metadata") or {}).get("generation")
            status = refused_graph_status(exc, previous, generation)
            await self._write_status(namespace, name, live_status, status)
            logger.warning("graph %s/%s is invalid: %s", namespace, name, exc)
            return GraphReconciliation(status=status, error=exc)
        assert isinstance(graph, InferenceGraph)
        owned, pods = await asyncio.gather(
            self._owned(namespace, name),
            client.list(_PODS, namespace, object_labels(name, kind_label=INFERENCEGRAPH)),
        )
        services = self._service_plans(namespace, graph, indices)
        result = reconcile_graph(
            graph, services, owned, self.settings.kube, pods=pods, previous=previous
        )
        if result.error is not None:
            logger.warning("graph %s/%s is refused: %s", namespace, name, result.error)
        await carry_out(client, owned, result.apply, result.delete)
        await self._write_status(namespace, name, live_status, result.status)
        return result

    def _service_plans(
        self, namespace: str, graph: InferenceGraph, indices: Mapping[str, Any]
    ) -> dict[str, ServicePlan]:
        """The plans of the indexed InferenceServices the graph's steps name, by name.

        A service being deleted, or one the planner refuses, is not there for the graph.
        """
        index: kopf.Index[str, InferenceService] | None = indices.get(SERVICE_INDEX)
        wanted = set(control.graph_services(graph))
        candidates = [
            isvc
            for isvc in list(index.get(namespace, ()) if index is not None else ())
            if isvc.name in wanted and isvc.metadata.deletion_timestamp is None
        ]
        if not candidates:
            return {}
        runtimes = self._runtimes(namespace, indices)
        found: dict[str, ServicePlan] = {}
        for isvc in candidates:
            try:
                found[isvc.name] = control.plan(isvc, runtimes, config=self.settings.kube.planner)
            except errors.ModelhostError:
                continue
        return found

    async def _owned(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """Every object of the owned kinds labelled as this graph's."""
        labels = object_labels(name, kind_label=INFERENCEGRAPH)
        return await list_owned(self._client(), self._owned_resources, namespace, labels)

    async def _write_status(
        self,
        namespace: str,
        name: str,
        live: Mapping[str, Any] | None,
        status: control.InferenceGraphStatus,
    ) -> None:
        await write_status(self._client(), _GRAPH, namespace, name, live, status)

    async def _report(self, namespace: str, name: str, error: KubeApiError) -> None:
        await report_refusal(
            self._client(),
            _GRAPH,
            namespace,
            name,
            error,
            parse_graph_status,
            control.InferenceGraphStatus,
        )
