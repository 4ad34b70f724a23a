"""Gateway API HTTPRoutes: KServe's host names, the plan's rules, the canary weights.

A route's ``hostnames`` hold for all its rules, and a rule cannot match on the host, so each
host of the plan gets its own HTTPRoute, as KServe's Gateway API mode does: the service's
host (``<isvc>.<ns>.<domain>``, named after the InferenceService) with the explainer's path
rule first and the entry component after it, and one per component host (named after the
component's Service). Each rule sends to the component's revision Services, weighted by the
plan's traffic split, with the revision's time-out as the request time-out.

An InferenceGraph's route has no ``KServe-Isvc-*`` headers: it reaches a router, not an
InferenceService.

The plan's host-less rules (by model name in the path, or an OpenAI body's ``model``) serve
the embedded gateway, which has one address for every service; a shared Gateway keys
services by host, so they are not rendered.
"""

from __future__ import annotations

from typing import Any

from modelhost.control.plan_types import ComponentPlan, Route, ServicePlan
from modelhost.kube.labels import is_graph_plan
from modelhost.kube.manifests.metadata import SERVICE_PORT, object_meta
from modelhost.kube.settings import KubeSettings

__all__ = ["http_routes"]

GATEWAY_GROUP = "gateway.networking.k8s.io"
# Every request on a host, as a regular expression so that rule order decides (KServe's).
_ANY_PATH = "^/.*$"


def http_routes(plan: ServicePlan, settings: KubeSettings) -> list[dict[str, Any]]:
    """One HTTPRoute per host the plan routes, rules in the plan's order."""
    by_host: dict[str, list[Route]] = {}
    for route in plan.routes:
        if route.host is not None and route.model is None:
            by_host.setdefault(route.host, []).append(route)
    routes = []
    for host, host_routes in by_host.items():
        name = _route_name(plan, host)
        rules = [_rule(plan, route) for route in host_routes]
        routes.append(
            {
                "apiVersion": f"{GATEWAY_GROUP}/v1",
                "kind": "HTTPRoute",
                "metadata": object_meta(plan, name),
                "spec": {
                    "parentRefs": [
                        {
                            "group": GATEWAY_GROUP,
                            "kind": "Gateway",
                            "namespace": settings.gateway_namespace,
                            "name": settings.gateway_name,
                        }
                    ],
                    "hostnames": [host],
                    "rules": rules,
                },
            }
        )
    return routes


def _route_name(plan: ServicePlan, host: str) -> str:
    if host == plan.host:
        return plan.name
    component = next((c for c in plan.components if c.host == host), None)
    return component.service_name if component is not None else plan.name


def _rule(plan: ServicePlan, route: Route) -> dict[str, Any]:
    component = plan.component(route.component)
    assert component is not None  # the planner routes only to its components
    path = f"^{route.path}$" if route.path is not None else _ANY_PATH
    rule: dict[str, Any] = {"matches": [{"path": {"type": "RegularExpression", "value": path}}]}
    if not is_graph_plan(plan):
        rule["filters"] = [
            {
                "type": "RequestHeaderModifier",
                "requestHeaderModifier": {
                    "set": [
                        {"name": "KServe-Isvc-Name", "value": plan.name},
                        {"name": "KServe-Isvc-Namespace", "value": plan.namespace},
                    ]
                },
            }
        ]
    rule["backendRefs"] = _backends(component)
    rule["timeouts"] = {"request": f"{component.revision.timeout_s}s"}
    return rule


def _backends(component: ComponentPlan) -> list[dict[str, Any]]:
    """The revision Services with their weights; shares of one revision are added up.

    (An executor that routes the latest share to the latest *ready* revision while the
    newest starts may give both shares of a canary to the same revision.)
    """
    weights: dict[str, int] = {}
    for split in component.traffic:
        weights[split.revision] = weights.get(split.revision, 0) + split.percent
    return [
        {"group": "", "kind": "Service", "name": name, "port": SERVICE_PORT, "weight": weight}
        for name, weight in weights.items()
    ]
