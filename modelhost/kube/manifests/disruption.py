"""A PodDisruptionBudget per component that may run more than one replica.

It covers the pods of all the component's running revisions (KServe selects by the
InferenceService and component labels too) and lets one go at a time, so a node drain never
takes a scaled-out component down at once; with one replica there is nothing to keep, and a
budget would only block the drain. Pods that are not ready may always be evicted, so a
crash-looping revision does not block it either.
"""

from __future__ import annotations

from typing import Any

from modelhost.control.plan_types import ComponentPlan, ServicePlan
from modelhost.kube.labels import plan_selector
from modelhost.kube.manifests.metadata import object_meta

__all__ = ["disruption_budget"]


def disruption_budget(plan: ServicePlan, component: ComponentPlan) -> dict[str, Any] | None:
    if plan.stopped or not _may_scale_out(component):
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(plan, component.service_name, component.component),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": plan_selector(plan, component.component)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }


def _may_scale_out(component: ComponentPlan) -> bool:
    policy = component.scaling
    if policy.min_replicas > 1:
        return True
    if policy.autoscaler == "none":
        return False
    # 0: no limit; "external" scalers may add replicas too.
    return policy.max_replicas != 1
