"""KServe's InferenceGraph status on Kubernetes: the router's health, and what the graph waits for.

KServe writes a graph's ``url``, ``deploymentMode``, ``observedGeneration`` and its
``Ready`` condition. Here ``Ready`` holds when a router revision serves (its Deployment is
available) and every InferenceService the graph's steps name exists; otherwise its reason
says why: the router's (``RevisionMissing``, ``CrashLoopBackOff``, ... as for a service's
revision), ``ServicesNotFound`` with the names the graph waits for (the embedded platform's
reason and :func:`modelhost.control.graph_wait_reason`'s message), or the refusal of an
invalid graph (``InvalidSpec``). ``LatestDeploymentReady``, an InferenceService's condition,
tells whether the newest router revision is ready while an older one still serves. Nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import msgspec

from modelhost import control, errors
from modelhost.control.conditions import Check, conditions
from modelhost.control.objects import InferenceGraph, InferenceGraphStatus
from modelhost.control.plan_types import ServicePlan
from modelhost.kube.status import RevisionHealth

__all__ = [
    "SERVICES_NOT_FOUND",
    "graph_status",
    "parse_graph_status",
    "refused_graph_status",
]

SERVICES_NOT_FOUND = "ServicesNotFound"
_CONDITIONS = ("Ready", "LatestDeploymentReady")


def graph_status(
    graph: InferenceGraph,
    plan: ServicePlan,
    health: Mapping[str, RevisionHealth],
    serving: str,
    services: Collection[str],
    previous: InferenceGraphStatus | None,
) -> InferenceGraphStatus:
    """The status of ``plan`` carried out, while revision ``serving`` takes the graph's traffic.

    ``health`` is the router revisions' (by revision name); ``services`` the names of the
    InferenceServices the router was planned with.
    """
    newest = plan.component(control.ROUTER_COMPONENT)
    assert newest is not None  # a graph's plan is its router
    newest_revision = newest.revision.name
    router = _router_check(serving, health)
    wait = control.graph_wait_reason(graph, services)
    if not router.ok:
        ready = router
    elif wait is not None:
        ready = Check("Ready", False, SERVICES_NOT_FOUND, wait)
    else:
        ready = Check("Ready", True)
    latest = _router_check(newest_revision, health)._replace(type="LatestDeploymentReady")
    return InferenceGraphStatus(
        observed_generation=plan.generation,
        conditions=conditions([latest, ready], _kept(previous)),
        url=plan.url,
        deployment_mode=plan.deployment_mode,
    )


def refused_graph_status(
    error: errors.ModelhostError,
    previous: InferenceGraphStatus | None,
    generation: int | None,
) -> InferenceGraphStatus:
    """The status of a graph the planner refused: ``Ready=False`` naming the field.

    What the last valid spec started keeps running, so its URL and mode stay.
    """
    reason = "Unsupported" if isinstance(error, errors.Unsupported) else "InvalidSpec"
    before = previous or InferenceGraphStatus()
    kept = [c for c in before.conditions or () if c.type != "Ready"]
    return InferenceGraphStatus(
        observed_generation=generation,
        conditions=sorted(
            [*kept, *conditions([Check("Ready", False, reason, str(error))], _kept(previous))],
            key=lambda c: c.type,
        ),
        annotations=before.annotations,
        url=before.url,
        deployment_mode=before.deployment_mode,
    )


def parse_graph_status(document: Mapping[str, Any] | None) -> InferenceGraphStatus | None:
    """A live graph's ``status`` as the typed status, or None when it has none (or garbage)."""
    if not document:
        return None
    try:
        return msgspec.convert(dict(document), InferenceGraphStatus, strict=False)
    except msgspec.ValidationError:
        return None


def _router_check(revision: str, health: Mapping[str, RevisionHealth]) -> Check:
    found = health.get(revision)
    if found is None:
        return Check("Ready", False, "RevisionMissing", f"revision {revision} is being created")
    if found.ready:
        return Check("Ready", True)
    return Check("Ready", False, found.reason or "RevisionMissing", found.message)


def _kept(previous: InferenceGraphStatus | None) -> list[Any] | None:
    if previous is None:
        return None
    return [c for c in previous.conditions or () if c.type in _CONDITIONS]
