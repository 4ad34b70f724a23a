"""Services: one per running revision (the HTTPRoute's backends), one per component.

A revision's Service selects that revision's pods only, so the route's weights split traffic
exactly. The component's Service (``<isvc>-predictor``) selects the pods of all its running
revisions: it is the in-cluster name a transformer's ``--predictor_host`` and KServe's
``address.url`` use, and, having no weights, it spreads calls over the pods that run.
Port 80 reaches the server's 8080 (or the agent's 9081, which fronts it); 8081 is gRPC. An
InferenceGraph's router speaks HTTP only: its Services have no gRPC port.
"""

from __future__ import annotations

from typing import Any

from modelhost.control.plan_types import ComponentPlan, ServicePlan
from modelhost.kube.labels import is_graph_plan, plan_selector
from modelhost.kube.manifests.agent import AGENT_PORT, needs_agent
from modelhost.kube.manifests.metadata import GRPC_PORT, HTTP_PORT, SERVICE_PORT, object_meta

__all__ = ["address_service", "component_service", "revision_service"]


def revision_service(plan: ServicePlan, component: ComponentPlan, revision: str) -> dict[str, Any]:
    """The Service of one revision, named after it (older revisions keep theirs)."""
    # An older revision's agent is not known from this plan; only the newest's is.
    agent = revision == component.revision.name and needs_agent(component.revision)
    return _service(
        object_meta(plan, revision, component.component, revision),
        plan_selector(plan, component.component, revision),
        AGENT_PORT if agent else HTTP_PORT,
        grpc=not is_graph_plan(plan),
    )


def component_service(plan: ServicePlan, component: ComponentPlan) -> dict[str, Any]:
    agent = needs_agent(component.revision)
    return _service(
        object_meta(plan, component.service_name, component.component),
        plan_selector(plan, component.component),
        AGENT_PORT if agent else HTTP_PORT,
        grpc=not is_graph_plan(plan),
    )


def address_service(plan: ServicePlan) -> dict[str, Any] | None:
    """Knative mode's ``<isvc>.<namespace>`` address: a Service over the entry component.

    None where the address is the entry component's own Service (Standard mode).
    """
    entry = plan.component(plan.entry)
    if entry is None or plan.address_url.startswith(f"http://{entry.service_name}."):
        return None
    return _service(
        object_meta(plan, plan.name, entry.component),
        plan_selector(plan, entry.component),
        AGENT_PORT if needs_agent(entry.revision) else HTTP_PORT,
    )


def _service(
    meta: dict[str, Any], selector: dict[str, str], http_target: int, *, grpc: bool = True
) -> dict[str, Any]:
    ports: list[dict[str, Any]] = [
        {"name": "http1", "port": SERVICE_PORT, "targetPort": http_target, "protocol": "TCP"}
    ]
    if grpc:
        ports.append(
            {
                "name": "h2c",
                "port": GRPC_PORT,
                "targetPort": GRPC_PORT,
                "protocol": "TCP",
                "appProtocol": "kubernetes.io/h2c",
            }
        )
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {"selector": selector, "ports": ports},
    }
