"""A ServicePlan → the Kubernetes manifests that carry it out (no I/O, stable output).

The plan is taken as the planner made it: defaulting, validation and runtime selection are
the planner's, so an object renders here exactly when ``modelhost plan`` accepts it. For each
component: the newest revision's Deployment and autoscaler, a Service per revision the
traffic names, the component's Service and disruption budget; for the service, its address
Service and HTTPRoutes. An InferenceGraph's plan (``control.plan_graph``) renders the same
way, as KServe renders a graph's router: its one component, the router, becomes a
Deployment, its Services, autoscaler and budget, and an HTTPRoute on the graph's host, all
labelled ``serving.kserve.io/inferencegraph``. The operator applies them (and adds
ownerReferences); ``modelhost render`` prints them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import yaml

from modelhost.control.errors import FieldError, ValidationError
from modelhost.control.plan_types import ServicePlan
from modelhost.kube.labels import is_graph_plan
from modelhost.kube.manifests.disruption import disruption_budget
from modelhost.kube.manifests.routing import http_routes
from modelhost.kube.manifests.scaling import autoscaler
from modelhost.kube.manifests.services import (
    address_service,
    component_service,
    revision_service,
)
from modelhost.kube.manifests.workload import deployment
from modelhost.kube.settings import KubeSettings

__all__ = ["KIND_ORDER", "manifests_json", "manifests_yaml", "render_plan"]

# The order objects are listed (and applied) in: what others point at comes first.
KIND_ORDER = (
    "Service",
    "Deployment",
    "HorizontalPodAutoscaler",
    "ScaledObject",
    "PodDisruptionBudget",
    "HTTPRoute",
)
# A Service's name is a DNS label (RFC 1035): at most 63 characters.
_SERVICE_NAME_MAX = 63


def render_plan(plan: ServicePlan, settings: KubeSettings) -> list[dict[str, Any]]:
    """Every manifest of ``plan``: plain JSON-able dicts, no ownerReferences, stable order.

    Raises :class:`~modelhost.control.errors.ValidationError` naming ``metadata.name`` when
    the InferenceService's (or InferenceGraph's) name makes a Service name longer than
    Kubernetes allows.
    """
    manifests: list[dict[str, Any]] = []
    for component in plan.components:
        manifests.append(deployment(plan, component, settings))
        manifests.extend(
            revision_service(plan, component, revision) for revision in component.revision_names
        )
        manifests.append(component_service(plan, component))
        scaler = autoscaler(plan, component, settings)
        if scaler is not None:
            manifests.append(scaler)
        budget = disruption_budget(plan, component)
        if budget is not None:
            manifests.append(budget)
    address = address_service(plan)
    if address is not None:
        manifests.append(address)
    if not plan.stopped:
        manifests.extend(http_routes(plan, settings))
    _check_names(plan, manifests)
    # Through JSON: every object its own (no shared parts for a caller to mutate, no YAML
    # anchors) and JSON-able by construction.
    plain: list[dict[str, Any]] = json.loads(json.dumps(manifests))
    return sorted(plain, key=_order)


def manifests_yaml(manifests: Sequence[dict[str, Any]]) -> str:
    """Multi-document YAML, byte-identical for equal input."""
    text: str = yaml.safe_dump_all(list(manifests), sort_keys=False, default_flow_style=False)
    return text


def manifests_json(manifests: Sequence[dict[str, Any]]) -> str:
    """A ``v1`` List, the shape ``kubectl get -o json`` prints and ``kubectl apply`` takes."""
    document = {"apiVersion": "v1", "kind": "List", "items": list(manifests)}
    return json.dumps(document, indent=2) + "\n"


def _order(manifest: dict[str, Any]) -> tuple[int, str]:
    return KIND_ORDER.index(manifest["kind"]), manifest["metadata"]["name"]


def _check_names(plan: ServicePlan, manifests: Sequence[dict[str, Any]]) -> None:
    too_long = sorted(
        {
            m["metadata"]["name"]
            for m in manifests
            if m["kind"] == "Service" and len(m["metadata"]["name"]) > _SERVICE_NAME_MAX
        }
    )
    if too_long:
        raise ValidationError(
            [
                FieldError(
                    "metadata.name",
                    f"{plan.name!r} is too long for Kubernetes: the Service name {name!r} has "
                    f"{len(name)} characters, at most {_SERVICE_NAME_MAX} are allowed",
                )
                for name in too_long
            ],
            f"{'InferenceGraph' if is_graph_plan(plan) else 'InferenceService'} "
            f"{plan.namespace}/{plan.name}",
        )
