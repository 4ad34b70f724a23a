"""The autoscaler of a revision's Deployment: an HPA (autoscaling/v2) or a KEDA ScaledObject.

From the plan's :class:`ScalingPolicy`:

- ``hpa``, or Knative's ``kpa`` that does not scale to zero: an HPA. The policy's metrics
  (cpu and memory: ``autoScaling.metrics``, or ``scaleMetric``/``scaleTarget``) are Resource
  metrics with their target; Knative's concurrency and requests per second are Pods
  metrics, which the HPA reads from a custom metrics adapter (prometheus-adapter serving
  modelhost's request metrics), as the object's annotation says;
- ``keda``, or ``kpa`` with ``minReplicas: 0``: a KEDA ScaledObject (the HPA cannot reach
  zero): a cpu or memory trigger per resource metric and a prometheus trigger per External
  one (querying the settings' Prometheus unless the metric names a server), or, for
  Knative's metrics, a Prometheus trigger on modelhost's request metrics;
- ``none`` (fixed replicas, set on the Deployment) and ``external``: nothing.

Knative's target utilization is applied to the target, as its autoscaler does.
"""

from __future__ import annotations

from typing import Any

from modelhost.control.plan_types import (
    ComponentPlan,
    ScalingMetric,
    ScalingPolicy,
    ServicePlan,
)
from modelhost.kube.manifests.metadata import object_meta
from modelhost.kube.settings import KubeSettings

__all__ = ["NOTE_ANNOTATION", "autoscaler"]

NOTE_ANNOTATION = "modelhost.dev/autoscaling-needs"
_RESOURCE_METRICS = ("cpu", "memory")
# Knative's metrics, as modelhost's server exports them (prometheus_client adds _total).
_IN_FLIGHT = "modelhost_requests_in_flight"
_REQUESTS = "modelhost_requests_total"
# The names a metrics adapter serves the per-pod series under, for the HPA's Pods metrics.
_POD_METRICS = {"concurrency": _IN_FLIGHT, "rps": "modelhost_requests_per_second"}


def autoscaler(
    plan: ServicePlan, component: ComponentPlan, settings: KubeSettings
) -> dict[str, Any] | None:
    """The HPA or ScaledObject of the component's newest revision, or None."""
    policy = component.scaling
    if plan.stopped or policy.autoscaler in ("none", "external"):
        return None
    if policy.autoscaler == "keda" or policy.scale_to_zero:
        return _scaled_object(plan, component, settings)
    return _hpa(plan, component, settings)


def _hpa(plan: ServicePlan, component: ComponentPlan, settings: KubeSettings) -> dict[str, Any]:
    policy = component.scaling
    revision = component.revision.name
    annotations = {}
    resources = [m for m in _metrics(policy) if m.source == "Resource"]
    if resources:
        metrics = [_resource_metric(m) for m in resources]
    else:
        name = _POD_METRICS[policy.metric]
        metrics = [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": name},
                    "target": {
                        "type": "AverageValue",
                        "averageValue": _quantity(_target(policy)),
                    },
                },
            }
        ]
        annotations[NOTE_ANNOTATION] = (
            f"a custom metrics adapter (such as prometheus-adapter) serving the pods metric "
            f"{name} from Prometheus: {_query(plan, revision, policy.metric)}"
        )
    minimum = max(1, policy.min_replicas)
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": revision},
        "minReplicas": minimum,
        "maxReplicas": max(minimum, policy.max_replicas or settings.replica_ceiling),
        "metrics": metrics,
    }
    behavior = _behavior(policy)
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(plan, revision, component.component, revision, annotations),
        "spec": spec,
    }


def _scaled_object(
    plan: ServicePlan, component: ComponentPlan, settings: KubeSettings
) -> dict[str, Any]:
    policy = component.scaling
    revision = component.revision.name
    if _metrics(policy):
        triggers = [_trigger(metric, settings) for metric in _metrics(policy)]
    else:
        triggers = [_prometheus(plan, revision, policy.metric, _target(policy), settings)]
    if policy.min_replicas == 0 and all(t["type"] in _RESOURCE_METRICS for t in triggers):
        # KEDA wakes a workload from zero only on a trigger other than cpu or memory.
        triggers.append(_prometheus(plan, revision, "concurrency", 1.0, settings))
    minimum = policy.min_replicas
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": revision},
        "minReplicaCount": minimum,
        "maxReplicaCount": max(minimum, 1, policy.max_replicas or settings.replica_ceiling),
    }
    if policy.scale_to_zero_grace_s > 0:
        spec["cooldownPeriod"] = round(policy.scale_to_zero_grace_s)
    behavior = _behavior(policy)
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    spec["triggers"] = triggers
    annotations = {}
    if minimum == 0:
        annotations[NOTE_ANNOTATION] = (
            "scaling up from zero replicas needs a request that reaches no replica to be "
            "counted: modelhost has no activator on Kubernetes, so pair this with the KEDA "
            "HTTP add-on or a trigger on the Gateway's own request metrics"
        )
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": object_meta(plan, revision, component.component, revision, annotations),
        "spec": spec,
    }


def _metrics(policy: ScalingPolicy) -> tuple[ScalingMetric, ...]:
    """The policy's metrics; a cpu or memory ``metric`` named without them is its utilization.

    (An InferenceGraph's ``scaleMetric: cpu`` plans Knative's autoscaler with no metrics: the
    pods' cpu, at ``scaleTarget`` percent, is what it asks for.)
    """
    if policy.metrics or policy.metric not in _RESOURCE_METRICS:
        return policy.metrics
    target = _number(policy.target)
    return (ScalingMetric("Resource", policy.metric, "Utilization", target),)


def _resource_metric(metric: ScalingMetric) -> dict[str, Any]:
    """An HPA Resource metric: the pods' cpu or memory at a utilization or an average value."""
    target: dict[str, Any] = {"type": metric.target_type}
    if metric.target_type == "Utilization":
        target["averageUtilization"] = round(float(metric.target))
    else:
        target["averageValue"] = metric.target
    return {"type": "Resource", "resource": {"name": metric.name, "target": target}}


def _trigger(metric: ScalingMetric, settings: KubeSettings) -> dict[str, Any]:
    """A KEDA trigger: the cpu or memory scaler, or the prometheus scaler with its query."""
    if metric.source == "Resource":
        return {
            "type": metric.name,
            "metricType": metric.target_type,
            "metadata": {"value": metric.target},
        }
    metadata = {
        "serverAddress": metric.server_address or settings.prometheus_address,
        "query": metric.query,
        "threshold": metric.target,
    }
    if metric.namespace:
        metadata["namespace"] = metric.namespace
    if metric.auth_modes:
        metadata["authModes"] = metric.auth_modes
    trigger: dict[str, Any] = {
        "type": metric.name,
        # A Value threshold is the whole workload's, an AverageValue one each replica's.
        "metricType": "Value" if metric.target_type == "Value" else "AverageValue",
        "metadata": metadata,
    }
    if metric.authentication:
        trigger["authenticationRef"] = {"name": metric.authentication}
    return trigger


def _behavior(policy: ScalingPolicy) -> dict[str, Any]:
    """The HPA's stabilization windows (KEDA passes the same to the HPA it makes)."""
    behavior: dict[str, Any] = {}
    if policy.stable_window_s > 0:
        behavior["scaleDown"] = {"stabilizationWindowSeconds": round(policy.stable_window_s)}
    if policy.scale_up_window_s is not None:
        behavior["scaleUp"] = {"stabilizationWindowSeconds": round(policy.scale_up_window_s)}
    return behavior


def _prometheus(
    plan: ServicePlan, revision: str, metric: str, threshold: float, settings: KubeSettings
) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "metricType": "AverageValue",
        "metadata": {
            "serverAddress": settings.prometheus_address,
            "query": _query(plan, revision, metric),
            "threshold": _number(threshold),
        },
    }


def _query(plan: ServicePlan, revision: str, metric: str) -> str:
    """PromQL over the revision's pods (Prometheus' ``namespace`` and ``pod`` target labels)."""
    pods = f'namespace="{plan.namespace}",pod=~"{revision}-.*"'
    if metric == "rps":
        return f"sum(rate({_REQUESTS}{{{pods}}}[1m]))"
    return f"sum({_IN_FLIGHT}{{{pods}}})"


def _target(policy: ScalingPolicy) -> float:
    """The per-replica target the autoscaler holds, after Knative's target utilization."""
    return policy.target * policy.target_utilization


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def _quantity(value: float) -> str:
    """A Kubernetes quantity: whole numbers as they are, fractions in milli-units."""
    if value == int(value):
        return str(int(value))
    return f"{round(value * 1000)}m"
