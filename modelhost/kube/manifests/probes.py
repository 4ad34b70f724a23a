"""Readiness, liveness and startup probes on the Open Inference Protocol's health routes.

Readiness is the model's: ``/v2/health/ready`` (every model loaded) for v2, the v1 model
route ``/v1/models/<name>`` (200 once ready) for v1. Liveness is the server's
``/v2/health/live``, which modelhost and KServe's Python servers answer whatever their
protocol. A gRPC component (``grpc-v1``/``grpc-v2``) is probed with Kubernetes' gRPC probe
on its gRPC port (``grpc.health.v1``, which modelhost serves), because such a server need
not open an HTTP port at all. Liveness waits behind a startup probe: modelhost loads the
model before it listens, and a large model must not be killed for loading slowly.
"""

from __future__ import annotations

import math
from typing import Any

from modelhost.control.plan_types import ComponentPlan
from modelhost.kube.manifests.metadata import GRPC_PORT, HTTP_PORT
from modelhost.kube.settings import KubeSettings

__all__ = ["Probes", "probes", "router_probes"]

_PERIOD_S = 10
Probes = dict[str, dict[str, Any]]


def probes(component: ComponentPlan, settings: KubeSettings) -> Probes:
    """The ``readinessProbe``, ``livenessProbe`` and ``startupProbe`` of the server container."""
    protocol = component.revision.protocol
    if protocol.startswith("grpc"):
        ready: dict[str, Any] = {"grpc": {"port": GRPC_PORT}}
        live: dict[str, Any] = {"grpc": {"port": GRPC_PORT}}
    else:
        path = f"/v1/models/{component.model_name}" if protocol == "v1" else "/v2/health/ready"
        ready = {"httpGet": {"path": path, "port": HTTP_PORT, "scheme": "HTTP"}}
        live = {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT, "scheme": "HTTP"}}
    startup_failures = max(1, math.ceil(settings.startup_timeout_s / _PERIOD_S))
    return {
        "readinessProbe": {**ready, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**live, "periodSeconds": _PERIOD_S, "failureThreshold": 3},
        "startupProbe": {**live, "periodSeconds": _PERIOD_S, "failureThreshold": startup_failures},
    }


def router_probes() -> Probes:
    """An InferenceGraph router's probes: it loads no model, so no startup probe.

    Readiness is ``/v2/health/ready`` (the router answers it once it serves, and fails it
    while it drains) at KServe's router probe timings; liveness is ``/v2/health/live``.
    """
    ready = {"httpGet": {"path": "/v2/health/ready", "port": HTTP_PORT, "scheme": "HTTP"}}
    live = {"httpGet": {"path": "/v2/health/live", "port": HTTP_PORT, "scheme": "HTTP"}}
    return {
        "readinessProbe": {**ready, "timeoutSeconds": 2, "periodSeconds": 5, "failureThreshold": 3},
        "livenessProbe": {**live, "periodSeconds": _PERIOD_S, "failureThreshold": 3},
    }
