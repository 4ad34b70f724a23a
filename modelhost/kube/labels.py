"""The labels on every rendered object: how the operator finds what it owns, and kubectl filters.

``component`` and ``serving.kserve.io/inferenceservice`` are KServe's own, so selectors
written for KServe's pods keep working; the revision label ties a Deployment, its pods and
its Service to one planned revision.
"""

from __future__ import annotations

__all__ = [
    "COMPONENT",
    "INFERENCESERVICE",
    "MANAGED_BY",
    "MANAGER",
    "REVISION",
    "object_labels",
    "selector_labels",
]

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "modelhost"
INFERENCESERVICE = "serving.kserve.io/inferenceservice"
COMPONENT = "component"
REVISION = "modelhost.dev/revision"


def selector_labels(
    isvc: str, component: str | None = None, revision: str | None = None
) -> dict[str, str]:
    """The labels that pick an InferenceService's objects, a component's, or a revision's."""
    labels = {INFERENCESERVICE: isvc}
    if component is not None:
        labels[COMPONENT] = component
    if revision is not None:
        labels[REVISION] = revision
    return labels


def object_labels(
    isvc: str, component: str | None = None, revision: str | None = None
) -> dict[str, str]:
    """Every label of a rendered object: the selector's and the manager's."""
    return {MANAGED_BY: MANAGER, **selector_labels(isvc, component, revision)}
