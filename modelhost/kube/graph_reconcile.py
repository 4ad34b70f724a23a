"""One reconcile of an InferenceGraph, decided without I/O: its router's objects, and its status.

Given the graph, the plans of the InferenceServices in its namespace and what the operator
owns for it now, :func:`reconcile_graph` plans the router (``control.plan_graph``), reads the
router revisions' health and renders the plan as it can be served *now*: until the newest
router revision is ready, the graph's traffic stays on the newest older revision that is (a
new router revision comes with every change of the graph, and with every InferenceService
its steps name that comes or goes), so the graph keeps answering through the change. Once the
newest is ready, the older revisions' objects are deleted: a router keeps no revisions to
roll back to. The status is the serving revision's: until the newest takes over, the graph
waits for the services the serving router was planned without. The operator carries out the
result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from modelhost import control, errors
from modelhost.control.objects import InferenceGraph, InferenceGraphStatus
from modelhost.control.plan_types import ServicePlan, TrafficSplit
from modelhost.kube.graph_status import graph_status, refused_graph_status
from modelhost.kube.labels import REVISION
from modelhost.kube.manifests.router import planned_services
from modelhost.kube.reconcile import ObjectRef, is_owned_by, owner_reference, with_owner
from modelhost.kube.render import render_plan
from modelhost.kube.settings import KubeSettings
from modelhost.kube.status import RevisionHealth, observe_revisions

__all__ = ["GraphReconciliation", "reconcile_graph", "serving_revision"]


@dataclasses.dataclass(frozen=True)
class GraphReconciliation:
    """What one reconcile of a graph decided; ``error`` is the planner's refusal.

    A refused graph changes nothing in the cluster: the router of its last valid spec keeps
    serving, and the status says why the new spec is not.
    """

    status: InferenceGraphStatus
    plan: ServicePlan | None = None
    serving: str | None = None  # the router revision that takes the graph's traffic
    apply: tuple[dict[str, Any], ...] = ()
    delete: tuple[ObjectRef, ...] = ()
    error: errors.ModelhostError | None = None


def reconcile_graph(
    graph: InferenceGraph,
    services: Mapping[str, ServicePlan],
    owned: Iterable[Mapping[str, Any]],
    settings: KubeSettings,
    *,
    pods: Iterable[Mapping[str, Any]] = (),
    previous: InferenceGraphStatus | None = None,
) -> GraphReconciliation:
    """Decide one reconcile of ``graph`` (which must carry its ``metadata.uid``).

    ``services`` are the plans of the InferenceServices in the graph's namespace, by name
    (those its steps name that are missing make it wait, not fail); ``owned`` the live
    objects the graph controls (others are ignored); ``pods`` its router's pods;
    ``previous`` the status recorded so far (default: ``graph.status``).
    """
    previous = previous if previous is not None else graph.status
    live = [obj for obj in owned if is_owned_by(obj, graph.metadata.uid or "")]
    try:
        plan = control.plan_graph(graph, services, config=settings.planner)
        health = observe_revisions(live, pods)
        serving = serving_revision(plan, health, live)
        manifests = render_plan(_served(plan, serving), settings)
    except (errors.InvalidInput, errors.Unsupported) as exc:
        status = refused_graph_status(exc, previous, graph.metadata.generation)
        return GraphReconciliation(status=status, error=exc)
    owner = owner_reference(graph)
    apply = tuple(with_owner(manifest, owner) for manifest in manifests)
    rendered = {ObjectRef.of(m) for m in apply}
    delete = []
    for obj in live:
        ref = ObjectRef.of(obj)
        # The serving revision's Deployment and autoscaler stay until the newest is ready.
        if ref not in rendered and _revision(obj) != serving:
            delete.append(ref)
    known: Collection[str] = services
    if serving != plan.components[0].revision.name:
        deployment = next(
            (o for o in live if o.get("kind") == "Deployment" and _revision(o) == serving), {}
        )
        serving_knows = planned_services(deployment)
        known = serving_knows if serving_knows is not None else services
    return GraphReconciliation(
        status=graph_status(graph, plan, health, serving, known, previous),
        plan=plan,
        serving=serving,
        apply=apply,
        delete=tuple(sorted(delete)),
    )


def serving_revision(
    plan: ServicePlan,
    health: Mapping[str, RevisionHealth],
    live: Iterable[Mapping[str, Any]],
) -> str:
    """The router revision that takes the graph's traffic now.

    The newest, once ready (or when none other is); before that, the most recently created
    older revision that is ready, as Knative routes a service's latest revision.
    """
    router = plan.component(control.ROUTER_COMPONENT)
    assert router is not None  # a graph's plan is its router
    newest = router.revision.name
    found = health.get(newest)
    if found is not None and found.ready:
        return newest
    created: dict[str, str] = {}  # revision -> its Deployment's creation time (RFC 3339)
    for obj in live:
        meta = obj.get("metadata") or {}
        revision = (meta.get("labels") or {}).get(REVISION)
        if obj.get("kind") == "Deployment" and revision:
            created[revision] = str(meta.get("creationTimestamp") or "")
    ready = [
        name
        for name, revision in health.items()
        if revision.ready and name != newest and revision.component == router.component
    ]
    if not ready:
        return newest
    return max(ready, key=lambda name: (created.get(name, ""), name))


def _revision(obj: Mapping[str, Any]) -> str | None:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    revision = labels.get(REVISION)
    return str(revision) if revision else None


def _served(plan: ServicePlan, serving: str) -> ServicePlan:
    """``plan`` with all the router's traffic on ``serving``."""
    router = plan.component(control.ROUTER_COMPONENT)
    assert router is not None
    if serving == router.revision.name:
        return plan
    traffic = (TrafficSplit(serving, 100, latest=True),)
    return dataclasses.replace(plan, components=(dataclasses.replace(router, traffic=traffic),))
