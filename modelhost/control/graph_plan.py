"""The planner of an InferenceGraph: its router as one component, and the services it calls.

KServe runs a graph as a router Deployment (or Knative Service) whose arguments hold the graph
as JSON, with each ``serviceName`` step already resolved by the controller to the service's
URL. :func:`plan_graph` does the same for both executors: the plan's one component,
``router``, runs ``modelhost graph --spec <router config>``, the config holding the graph and,
for every InferenceService its steps name that exists now, where to reach it (ingress host,
in-cluster address, protocols, model name). A change to the graph or to what it knows of its
services plans a new router revision. The executor fills ``{http_port}`` and
``{predictor_host}``: the address of a gateway that routes by ``Host`` (the embedded
platform's), or nothing, and steps go to the in-cluster address (Kubernetes).

Routes: the graph's host (``<graph>.<namespace>.<domain>``, as KServe's), and the
``/v1/models/<graph>:predict`` and ``/v2/models/<graph>/infer`` paths on any host.
"""

from __future__ import annotations

import dataclasses
import json
import re
import urllib.parse
from collections.abc import Mapping
from typing import Any

from modelhost.control.config import PlatformConfig
from modelhost.control.graph_validation import (
    apply_graph_defaults,
    graph_services,
    validate_inference_graph,
)
from modelhost.control.names import DEPLOYMENT_MODE_ANNOTATION, normalize_mode
from modelhost.control.objects import ComponentSpec, InferenceGraph
from modelhost.control.parse import to_dict
from modelhost.control.plan import digest, ingress_host
from modelhost.control.plan_types import (
    ComponentPlan,
    ProcessSpec,
    Revision,
    Route,
    ServicePlan,
    TrafficSplit,
)
from modelhost.control.runtimes import TABULAR_IMAGE, image_reference
from modelhost.control.scaling import scaling_policy

__all__ = ["ROUTER_COMPONENT", "graph_router_config", "plan_graph", "service_entry"]

ROUTER_COMPONENT = "router"
# The protocols ``modelhost serve`` answers on its REST port, whatever the plan's protocol.
_MODELHOST_PROTOCOLS = ("v1", "v2")


def plan_graph(
    graph: InferenceGraph,
    services: Mapping[str, ServicePlan],
    *,
    config: PlatformConfig | None = None,
) -> ServicePlan:
    """The desired state of ``graph``: a ServicePlan with one component, ``router``.

    ``services`` are the plans of the InferenceServices in the graph's namespace (by name);
    the steps naming others fail with 503 until they exist. The router's image is the tabular
    one (every modelhost image extends it; an executor may map it to a mirror). Raises
    :class:`~modelhost.control.errors.ValidationError` naming the field of an invalid graph.
    """
    config = config or PlatformConfig()
    graph = apply_graph_defaults(graph)
    validate_inference_graph(graph)
    spec = graph.spec
    mode = normalize_mode(
        graph.annotations.get(DEPLOYMENT_MODE_ANNOTATION) or config.default_deployment_mode
    )
    router_config = graph_router_config(graph, services)
    process = ProcessSpec(
        command=("modelhost",),
        args=(
            "graph",
            "--spec",
            json.dumps(router_config, sort_keys=True, separators=(",", ":")),
            "--http-port",
            "{http_port}",
            "--gateway",
            "{predictor_host}",
        ),
        image=image_reference(TABULAR_IMAGE),
        resources=_resources(graph),
    )
    revision = Revision(
        name="",
        component=ROUTER_COMPONENT,
        process=process,
        protocol="v1",
        container_concurrency=0,
        timeout_s=spec.timeout
        or (config.knative_timeout_s if mode == "Knative" else config.standard_timeout_s),
    )
    revision = dataclasses.replace(revision, name=f"{graph.name}-{digest(revision)}")
    host = ingress_host(graph.name, graph.namespace, mode, config)
    scaling_spec = ComponentSpec(
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        scale_target=spec.scale_target,
        scale_metric=spec.scale_metric,
    )
    warnings: list[str] = []
    router = ComponentPlan(
        component=ROUTER_COMPONENT,
        service_name=graph.name,
        host=host,
        url=f"{config.url_scheme}://{host}",
        model_name=graph.name,
        revision=revision,
        traffic=(TrafficSplit(revision.name, 100, latest=True),),
        scaling=scaling_policy(
            scaling_spec, mode, graph.annotations, config, field="spec", warnings=warnings
        ),
    )
    name = re.escape(graph.name)
    return ServicePlan(
        name=graph.name,
        namespace=graph.namespace,
        generation=graph.metadata.generation or 1,
        deployment_mode=mode,
        host=host,
        url=router.url,
        address_url=f"http://{graph.name}.{graph.namespace}.svc.cluster.local",
        entry=ROUTER_COMPONENT,
        components=(router,),
        routes=(
            Route(ROUTER_COMPONENT, host=host),
            Route(ROUTER_COMPONENT, path=rf"/v1/models/{name}(:[a-z]+)?"),
            Route(ROUTER_COMPONENT, path=rf"/v2/models/{name}(/.*)?"),
        ),
        protocol="v1",
        warnings=tuple(warnings),
    )


def graph_router_config(
    graph: InferenceGraph, services: Mapping[str, ServicePlan]
) -> dict[str, Any]:
    """What ``modelhost graph --spec`` reads: the graph, and the services it can reach now."""
    document = to_dict(graph)
    document.pop("status", None)
    metadata = document.get("metadata") or {}
    # Only what names the graph: labels, annotations and the server's bookkeeping would make
    # a new router revision for a change the router does not see.
    document["metadata"] = {
        key: metadata[key] for key in ("name", "namespace") if metadata.get(key) is not None
    }
    known = {
        name: service_entry(services[name]) for name in graph_services(graph) if name in services
    }
    return {"graph": document, "services": known}


def service_entry(plan: ServicePlan) -> dict[str, Any]:
    """Where a router reaches one InferenceService, and how it speaks."""
    entry = plan.component(plan.entry)
    assert entry is not None
    protocol = "v2" if entry.revision.protocol.endswith("v2") else "v1"
    speaks = (
        list(_MODELHOST_PROTOCOLS)
        if entry.revision.process.command[:1] == ("modelhost",)
        else [protocol]
    )
    return {
        "host": plan.host,
        "address": urllib.parse.urlsplit(plan.address_url).netloc,
        "protocol": protocol,
        "protocols": speaks,
        "model": entry.model_name,
    }


def _resources(graph: InferenceGraph) -> tuple[tuple[str, str, str], ...]:
    resources = graph.spec.resources
    if resources is None:
        return ()
    triples = []
    for kind in ("requests", "limits"):
        for name, quantity in sorted((getattr(resources, kind, None) or {}).items()):
            triples.append((kind, name, str(quantity)))
    return tuple(triples)
