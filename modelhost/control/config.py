"""The platform-wide settings the control plane reads: KServe's ``inferenceservice-config``.

KServe keeps these in a ConfigMap (ingress domain, default deployment mode, default resources,
batcher defaults) and in Knative's autoscaler ConfigMap (targets, windows). Here they are one
frozen object that the executor builds and passes to defaulting, validation and the planner.
"""

from __future__ import annotations

import dataclasses

__all__ = ["PlatformConfig"]


@dataclasses.dataclass(frozen=True)
class PlatformConfig:
    """KServe's and Knative's defaults, except the deployment mode (see below)."""

    # KServe ships "Serverless" (Knative) as the default; the embedded platform carries out
    # Knative's semantics (revisions, canary split, scale to zero), so it keeps that default.
    default_deployment_mode: str = "Knative"
    ingress_domain: str = "example.com"
    # Standard mode's host (KServe's ingress.domainTemplate); Knative mode's host is
    # <name>.<namespace>.<domain>, as Knative names it.
    domain_template: str = "{name}-{namespace}.{domain}"
    url_scheme: str = "http"
    # inferenceService.resource: filled into custom containers that set none.
    default_cpu: str = "1"
    default_memory: str = "2Gi"
    # batcher: the defaults of a ``batcher: {}`` that sets nothing.
    batcher_max_batch_size: int = 32
    batcher_max_latency_ms: int = 5000
    # logger.defaultUrl: where a ``logger`` without ``url`` sends its events.
    logger_default_url: str = "http://default-broker"
    # Knative's config-autoscaler defaults.
    container_concurrency_target: int = 100
    requests_per_second_target: int = 200
    target_utilization_percentage: float = 70.0
    stable_window_s: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    scale_to_zero_grace_period_s: float = 30.0
    allow_zero_initial_scale: bool = False
    # HPA's default CPU utilization target in Standard mode.
    cpu_utilization_target: int = 80
    # Request time-outs when a component sets no ``timeout``: Knative's revision time-out,
    # and the HTTPRoute time-out of Standard mode.
    knative_timeout_s: int = 300
    standard_timeout_s: int = 60
    # credentials.storageSpecSecretName: the Secret whose keys hold the storage configurations
    # a model's ``storage:`` spec names (KServe's is ``storage-config``). None where the
    # executor has no Secret store (the embedded platform): such a model is refused there.
    storage_spec_secret: str | None = None
