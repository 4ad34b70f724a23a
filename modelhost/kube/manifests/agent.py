"""KServe's agent sidecar: the payload logger, and the batcher of a server that has none.

modelhost's server batches by itself (the planner gives it ``--max_batch_size``), but it does
not send CloudEvents of its payloads: the embedded platform logs them in its gateway, which
Kubernetes does not have. So a revision with a ``logger`` (or a batcher its own server does
not take) gets KServe's ``agent`` container in front of the server, with KServe's flags, and
its Service sends traffic to the agent's port.
"""

from __future__ import annotations

import json
from typing import Any

from modelhost.control.plan_types import ComponentPlan, Revision, ServicePlan
from modelhost.kube.manifests.metadata import HTTP_PORT
from modelhost.kube.manifests.security import container_security
from modelhost.kube.settings import KubeSettings

__all__ = ["AGENT_CONTAINER", "AGENT_PORT", "agent_container", "needs_agent"]

AGENT_CONTAINER = "agent"
AGENT_PORT = 9081
_RESOURCES = {
    "limits": {"cpu": "1", "memory": "1Gi"},
    "requests": {"cpu": "100m", "memory": "100Mi"},
}


def needs_agent(revision: Revision) -> bool:
    return revision.logger is not None or _agent_batches(revision)


def agent_container(
    plan: ServicePlan,
    component: ComponentPlan,
    readiness: dict[str, Any],
    settings: KubeSettings,
) -> dict[str, Any]:
    """The agent, proxying its port to the server's and doing what the server cannot."""
    revision = component.revision
    args: list[str] = []
    batcher = revision.batcher
    if batcher is not None and _agent_batches(revision):
        args += ["--enable-batcher", "--max-batchsize", str(batcher.max_batch_size)]
        args += ["--max-latency", str(batcher.max_latency_ms)]
        if batcher.timeout_s is not None:
            args += ["--timeout", str(batcher.timeout_s)]
    logger = revision.logger
    if logger is not None:
        args += ["--log-url", logger.url, "--source-uri", "$(POD_NAME)"]
        args += ["--log-mode", logger.mode, "--inference-service", plan.name]
        args += ["--namespace", plan.namespace, "--endpoint", "default"]
        args += ["--component", component.component]
        if logger.metadata_headers:
            args += ["--metadata-headers", ",".join(logger.metadata_headers)]
        if logger.metadata_annotations:
            pairs = ",".join(f"{key}={value}" for key, value in logger.metadata_annotations)
            args += ["--metadata-annotations", pairs]
        args += ["--logger-tls-skip-verify", "false"]
    args += ["--component-port", str(HTTP_PORT)]
    return {
        "name": AGENT_CONTAINER,
        "image": settings.image(settings.agent_image),
        **({"imagePullPolicy": settings.image_pull_policy} if settings.image_pull_policy else {}),
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            # Without Knative's queue-proxy, the agent answers readiness by probing the server.
            {"name": "SERVING_READINESS_PROBE", "value": json.dumps(readiness, sort_keys=True)},
        ],
        "ports": [{"name": "agent-port", "containerPort": AGENT_PORT, "protocol": "TCP"}],
        "readinessProbe": {
            "httpGet": {
                "path": "/",
                "port": AGENT_PORT,
                "scheme": "HTTP",
                "httpHeaders": [{"name": "K-Network-Probe", "value": "queue"}],
            },
        },
        "resources": _RESOURCES,
        "securityContext": container_security(),
    }


def _agent_batches(revision: Revision) -> bool:
    """A batcher the server does not do itself (its argv has no ``--max_batch_size``)."""
    if revision.batcher is None:
        return False
    argv = revision.process.argv
    return not any(
        arg.partition("=")[0] in ("--max_batch_size", "--max-batch-size") for arg in argv
    )
