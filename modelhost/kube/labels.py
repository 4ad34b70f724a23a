"""The labels on every rendered object: how the operator finds what it owns, and kubectl filters.

``component`` and ``serving.kserve.io/inferenceservice`` are KServe's own, so selectors
written for KServe's pods keep working; an InferenceGraph's router objects carry KServe's
``serving.kserve.io/inferencegraph`` instead. The revision label ties a Deployment, its pods
and its Service to one planned revision.
"""

from __future__ import annotations

from modelhost.control.graph_plan import ROUTER_COMPONENT
from modelhost.control.plan_types import ServicePlan

__all__ = [
    "COMPONENT",
    "INFERENCEGRAPH",
    "INFERENCESERVICE",
    "MANAGED_BY",
    "MANAGER",
    "REVISION",
    "is_graph_plan",
    "object_labels",
    "owner_label",
    "plan_labels",
    "plan_selector",
    "selector_labels",
]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modelhost"
INFERENCESERVICE = "serving.kserve.io/inferenceservice"
INFERENCEGRAPH = "serving.kserve.io/inferencegraph"
COMPONENT = "component"
REVISION = "modelhost.dev/revision"


def is_graph_plan(plan: ServicePlan) -> bool:
    """Whether ``plan`` is an InferenceGraph's (its one component is the router).

    An InferenceService's components are its predictor, transformer and explainer, never a
    router, so the entry component tells the two apart.
    """
    return plan.entry == ROUTER_COMPONENT and plan.component(ROUTER_COMPONENT) is not None


def owner_label(plan: ServicePlan) -> str:
    """The label that names the object ``plan`` was made from: an InferenceGraph or service."""
    return INFERENCEGRAPH if is_graph_plan(plan) else INFERENCESERVICE


def selector_labels(
    owner: str,
    component: str | None = None,
    revision: str | None = None,
    *,
    kind_label: str = INFERENCESERVICE,
) -> dict[str, str]:
    """The labels that pick an owner's objects, a component's, or a revision's.

    ``kind_label`` is the label naming the owner: the InferenceService's (default) or, for
    a graph's router, :data:`INFERENCEGRAPH`.
    """
    labels = {kind_label: owner}
    if component is not None:
        labels[COMPONENT] = component
    if revision is not None:
        labels[REVISION] = revision
    return labels


def object_labels(
    owner: str,
    component: str | None = None,
    revision: str | None = None,
    *,
    kind_label: str = INFERENCESERVICE,
) -> dict[str, str]:
    """Every label of a rendered object: the selector's and the manager's."""
    return {
        MANAGED_BY: MANAGER,
        **selector_labels(owner, component, revision, kind_label=kind_label),
    }


def plan_selector(
    plan: ServicePlan, component: str | None = None, revision: str | None = None
) -> dict[str, str]:
    """:func:`selector_labels` of ``plan``'s objects, under the label of the plan's kind."""
    return selector_labels(plan.name, component, revision, kind_label=owner_label(plan))


def plan_labels(
    plan: ServicePlan, component: str | None = None, revision: str | None = None
) -> dict[str, str]:
    """:func:`object_labels` of ``plan``'s objects, under the label of the plan's kind."""
    return object_labels(plan.name, component, revision, kind_label=owner_label(plan))
