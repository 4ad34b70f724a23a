"""The ``metadata`` block every rendered object shares: name, namespace, modelhost's labels."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelhost.control.plan_types import ServicePlan
from modelhost.kube.labels import plan_labels

__all__ = ["GRPC_PORT", "HTTP_PORT", "MODEL_DIR", "SERVICE_PORT", "object_meta"]

# KServe's container ports (named http1 and h2c, as Knative names them) and the Service port
# a ``--predictor_host`` without a port reaches.
HTTP_PORT = 8080
GRPC_PORT = 8081
SERVICE_PORT = 80
MODEL_DIR = "/mnt/models"


def object_meta(
    plan: ServicePlan,
    name: str,
    component: str | None = None,
    revision: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Metadata in the plan's namespace, labelled for the operator to find."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": plan.namespace,
        "labels": plan_labels(plan, component, revision),
    }
    if annotations:
        meta["annotations"] = dict(sorted(annotations.items()))
    return meta
