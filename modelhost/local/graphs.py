"""What the embedded platform needs to plan an InferenceGraph, and the status it writes back.

A graph's router is planned from the graph and the InferenceServices its steps name, as
they are stored now (:func:`service_plans`); a service not applied yet is left out, and the
status says the graph waits for it (:func:`graph_status`), as KServe's controller does.
"""

from __future__ import annotations

from typing import Any

import msgspec

from modelhost import control, errors
from modelhost.control import InferenceGraph, InferenceService, ServicePlan
from modelhost.control.conditions import Check, conditions
from modelhost.control.config import PlatformConfig
from modelhost.control.objects import AnyRuntime, Condition, InferenceGraphStatus
from modelhost.local.store import Store

__all__ = ["graph_status", "service_plans"]


def service_plans(
    store: Store, graph: InferenceGraph, runtimes: list[AnyRuntime], config: PlatformConfig
) -> dict[str, ServicePlan]:
    """The plans of the stored InferenceServices the graph's steps name (by name)."""
    found: dict[str, ServicePlan] = {}
    for name in control.graph_services(graph):
        stored = store.get("InferenceService", graph.namespace, name)
        if stored is None:
            continue
        isvc = control.parse_object(stored.document)
        assert isinstance(isvc, InferenceService)
        try:
            found[name] = control.plan(isvc, runtimes, config=config)
        except errors.ModelhostError:
            continue  # its own status says why; to the graph it is not there
    return found


def graph_status(
    graph: InferenceGraph,
    generation: int,
    *,
    plan: ServicePlan | None,
    router: Check | None,
    services: dict[str, ServicePlan],
    previous: list[Condition] | None,
    failure: str | None = None,
) -> dict[str, Any]:
    """KServe's InferenceGraph status: ``Ready`` with why not, ``url``, the generation seen."""
    wait = control.graph_wait_reason(graph, services)
    if failure is not None:
        ready = Check("Ready", False, "PlanFailed", failure)
    elif router is not None and not router.ok:
        ready = router._replace(type="Ready")
    elif wait is not None:
        ready = Check("Ready", False, "ServicesNotFound", wait)
    else:
        ready = Check("Ready", True)
    status = InferenceGraphStatus(
        observed_generation=generation,
        conditions=conditions([ready], previous),
        url=plan.url if plan is not None else None,
        deployment_mode=plan.deployment_mode if plan is not None else None,
    )
    document: dict[str, Any] = msgspec.to_builtins(status)
    return document
