"""The container of an InferenceGraph's router: ``modelhost graph`` with the graph as JSON.

As KServe runs its router: one container named after the graph, the graph (here the router
config, with every step's InferenceService resolved to its in-cluster address) in its
arguments, KServe's router resources where the graph asks for none, and no model to fetch.
``{predictor_host}`` is left empty: without a gateway address the router calls each service
at ``<address>`` (``<isvc>.<namespace>.svc.cluster.local``), as KServe's controller resolves
a ``serviceName`` step. It serves HTTP only, on 8080 (KServe's router port).
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from modelhost.control.plan_types import ComponentPlan, ProcessSpec, ServicePlan
from modelhost.kube.manifests.metadata import GRPC_PORT, HTTP_PORT
from modelhost.kube.manifests.probes import router_probes
from modelhost.kube.manifests.security import container_security
from modelhost.kube.settings import KubeSettings

__all__ = ["ROUTER_RESOURCES", "planned_services", "router_container"]

# KServe's router defaults (inferenceservice-config's ``router``), for a graph without
# ``spec.resources``.
ROUTER_RESOURCES = {
    "limits": {"cpu": "1", "memory": "1Gi"},
    "requests": {"cpu": "100m", "memory": "100Mi"},
}
# Kubernetes expands ``$(NAME)`` in args and turns ``$$`` into ``$``; a ``$`` before either
# is doubled so that the router reads the JSON it was planned with.
_EXPANDED = re.compile(r"\$(?=[($])")


def router_container(
    plan: ServicePlan, component: ComponentPlan, settings: KubeSettings
) -> dict[str, Any]:
    """The router's one container, with its probes and the restricted security context."""
    process = component.revision.process
    command, _ = _fill(dataclasses.replace(process, args=()))
    args, env = _fill(dataclasses.replace(process, command=()))
    container: dict[str, Any] = {"name": plan.name}
    if process.image:
        container["image"] = settings.image(process.image)
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    if command:
        container["command"] = [_escape(part) for part in command]
    container["args"] = [_escape(arg) for arg in args]
    if env:
        container["env"] = [{"name": name, "value": _escape(env[name])} for name in sorted(env)]
    container["ports"] = [{"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"}]
    resources: dict[str, dict[str, str]] = {}
    for kind, name, quantity in process.resources:
        resources.setdefault(kind, {})[name] = quantity
    container["resources"] = resources or ROUTER_RESOURCES
    container.update(router_probes())
    container["securityContext"] = container_security()
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def planned_services(deployment: Mapping[str, Any]) -> frozenset[str] | None:
    """The InferenceServices a rendered router Deployment knows (its config's ``services``).

    None when ``deployment`` holds no router config that can be read. (The ``$`` doubled for
    Kubernetes is inside JSON strings only, so the structure and the names read as planned.)
    """
    pod = ((deployment.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in pod.get("containers") or ():
        args = list(container.get("args") or ())
        if "--spec" not in args[:-1]:
            continue
        try:
            config = json.loads(args[args.index("--spec") + 1])
        except ValueError:
            return None
        services = config.get("services") if isinstance(config, dict) else None
        return frozenset(services) if isinstance(services, dict) else None
    return None


def _fill(process: ProcessSpec) -> tuple[list[str], dict[str, str]]:
    # No gateway: the router reaches services at their in-cluster addresses.
    return process.render(http_port=HTTP_PORT, grpc_port=GRPC_PORT, predictor_host="")


def _escape(text: str) -> str:
    return _EXPANDED.sub("$$", text)
