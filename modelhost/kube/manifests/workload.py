"""The Deployment of a component's newest revision, and the pod it runs.

The server container is the planner's :class:`ProcessSpec` with the placeholders filled as
KServe fills them (ports 8080 and 8081, the model at ``/mnt/models``, a transformer's
predictor at ``<predictor service>.<namespace>``), beside what :mod:`model_source` and
:mod:`agent` add; an InferenceGraph's router is :mod:`router`'s container alone. Replicas are
left to the autoscaler unless nothing scales the revision.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

from modelhost.control.names import KSERVE_CONTAINER
from modelhost.control.plan_types import ComponentPlan, ProcessSpec, ServicePlan
from modelhost.kube.labels import is_graph_plan, plan_labels, plan_selector
from modelhost.kube.manifests.agent import agent_container, needs_agent
from modelhost.kube.manifests.metadata import GRPC_PORT, HTTP_PORT, MODEL_DIR, object_meta
from modelhost.kube.manifests.model_source import model_source
from modelhost.kube.manifests.probes import probes
from modelhost.kube.manifests.router import router_container
from modelhost.kube.manifests.security import container_security, pod_security
from modelhost.kube.settings import KubeSettings

__all__ = ["deployment", "fixed_replicas"]

# Where the server's metrics are, for Prometheus' annotation-driven scraping (KEDA and the
# HPA's pods metrics read modelhost's request metrics from there).
_SCRAPE_ANNOTATIONS = {
    "prometheus.io/path": "/metrics",
    "prometheus.io/port": str(HTTP_PORT),
    "prometheus.io/scrape": "true",
}


def fixed_replicas(plan: ServicePlan, component: ComponentPlan) -> int | None:
    """The Deployment's own replica count, or None where an autoscaler or someone else owns it."""
    if plan.stopped:
        return 0
    if component.scaling.autoscaler == "none":
        return component.scaling.min_replicas
    return None


def deployment(
    plan: ServicePlan, component: ComponentPlan, settings: KubeSettings
) -> dict[str, Any]:
    """The revision's Deployment, named after the revision."""
    revision = component.revision
    source = model_source(revision.process.storage_uri, settings, revision.process.storage)
    if is_graph_plan(plan):
        server = router_container(plan, component, settings)
    else:
        server = _server_container(plan, component, settings)
    if source.server_mounts:
        server["volumeMounts"] = list(source.server_mounts)
    if source.server_env:
        env = {item["name"]: item for item in server["env"]}
        env.update({name: {"name": name, "value": value} for name, value in source.server_env})
        server["env"] = [env[name] for name in sorted(env)]
    containers = [server, *source.sidecars]
    if needs_agent(revision):
        containers.append(agent_container(plan, component, server["readinessProbe"], settings))
    pod: dict[str, Any] = {
        # A model server has no business with the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security(settings),
    }
    if source.share_process_namespace:
        pod["shareProcessNamespace"] = True
    if source.init_containers:
        pod["initContainers"] = list(source.init_containers)
    pod["containers"] = containers
    if source.volumes:
        pod["volumes"] = list(source.volumes)
    spec: dict[str, Any] = {}
    replicas = fixed_replicas(plan, component)
    if replicas is not None:
        spec["replicas"] = replicas
    spec["selector"] = {"matchLabels": plan_selector(plan, component.component, revision.name)}
    spec["template"] = {
        "metadata": {
            "labels": plan_labels(plan, component.component, revision.name),
            "annotations": _SCRAPE_ANNOTATIONS,
        },
        "spec": pod,
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": object_meta(plan, revision.name, component.component, revision.name),
        "spec": spec,
    }


def _server_container(
    plan: ServicePlan, component: ComponentPlan, settings: KubeSettings
) -> dict[str, Any]:
    process = component.revision.process
    fill = functools.partial(
        ProcessSpec.render,
        http_port=HTTP_PORT,
        grpc_port=GRPC_PORT,
        model_dir=MODEL_DIR if process.fetches_model else None,
        predictor_host=_upstream_host(plan, component),
    )
    command, _ = fill(dataclasses.replace(process, args=()))
    args, env = fill(dataclasses.replace(process, command=()))
    container: dict[str, Any] = {"name": KSERVE_CONTAINER}
    if process.image:
        container["image"] = settings.image(process.image)
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    if command:
        container["command"] = command
    if args:
        container["args"] = args
    if process.working_dir:
        container["workingDir"] = process.working_dir
    container["env"] = [{"name": name, "value": env[name]} for name in sorted(env)]
    container["ports"] = [
        {"name": "http1", "containerPort": HTTP_PORT, "protocol": "TCP"},
        {"name": "h2c", "containerPort": GRPC_PORT, "protocol": "TCP"},
    ]
    resources: dict[str, dict[str, str]] = {}
    for kind, name, quantity in process.resources:
        resources.setdefault(kind, {})[name] = quantity
    container["resources"] = resources
    container.update(probes(component, settings))
    container["securityContext"] = container_security()
    container["terminationMessagePolicy"] = "FallbackToLogsOnError"
    return container


def _upstream_host(plan: ServicePlan, component: ComponentPlan) -> str:
    """KServe's ``--predictor_host``: the called component's Service, port 80 implied."""
    if component.calls is None:
        return ""
    upstream = plan.component(component.calls)
    name = upstream.service_name if upstream is not None else f"{plan.name}-{component.calls}"
    return f"{name}.{plan.namespace}"
