"""How many replicas a component runs: KServe's autoscaling fields → a ScalingPolicy.

Knative mode uses Knative's pod autoscaler (concurrency or requests per second, a stable and
a panic window, scale to zero at ``minReplicas: 0``), with Knative's defaults; Standard mode
uses the ``serving.kserve.io/autoscalerClass`` KServe names (the HPA on cpu or memory, KEDA,
an external autoscaler, or none), where the HPA turns ``minReplicas: 0`` into 1.
"""

from __future__ import annotations

from collections.abc import Mapping

from modelhost.control.config import PlatformConfig
from modelhost.control.names import (
    AUTOSCALER_CLASS_ANNOTATION,
    INITIAL_SCALE_ANNOTATION,
    KNATIVE_AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_HPA_CLASS,
)
from modelhost.control.objects import ComponentSpec
from modelhost.control.plan_types import ScalingPolicy

__all__ = ["scaling_policy"]

# The HPA's default scale-down stabilization window.
_HPA_STABLE_WINDOW_S = 300.0


def scaling_policy(
    spec: ComponentSpec, mode: str, annotations: Mapping[str, str], config: PlatformConfig
) -> ScalingPolicy:
    """The autoscaler of a component in ``mode``, with KServe's and Knative's defaults."""
    concurrency = spec.container_concurrency or 0
    maximum = spec.max_replicas or 0
    requested_min = 1 if spec.min_replicas is None else spec.min_replicas
    if (
        mode == "Knative"
        and annotations.get(KNATIVE_AUTOSCALER_CLASS_ANNOTATION) != KNATIVE_HPA_CLASS
    ):
        metric = spec.scale_metric or "concurrency"
        default_target = (
            (concurrency or config.container_concurrency_target)
            if metric == "concurrency"
            else config.requests_per_second_target
        )
        initial = _initial_scale(spec, annotations, config)
        return ScalingPolicy(
            autoscaler="kpa",
            min_replicas=requested_min,
            max_replicas=maximum,
            metric=metric,
            target=float(spec.scale_target or default_target),
            target_utilization=config.target_utilization_percentage / 100.0,
            container_concurrency=concurrency,
            initial_replicas=max(initial, requested_min),
            stable_window_s=config.stable_window_s,
            panic_window_s=config.stable_window_s * config.panic_window_percentage / 100.0,
            panic_threshold=config.panic_threshold_percentage / 100.0,
            scale_to_zero_grace_s=config.scale_to_zero_grace_period_s,
        )
    autoscaler = "hpa" if mode == "Knative" else annotations.get(AUTOSCALER_CLASS_ANNOTATION, "hpa")
    metric = spec.scale_metric or "cpu"
    minimum = requested_min if autoscaler in ("keda", "external", "none") else max(1, requested_min)
    if autoscaler == "none":
        maximum = minimum
    elif autoscaler in ("hpa", "keda"):
        maximum = max(maximum, minimum)
    target = spec.scale_target or (config.cpu_utilization_target if metric == "cpu" else 1)
    return ScalingPolicy(
        autoscaler=autoscaler,
        min_replicas=minimum,
        max_replicas=maximum,
        metric=metric,
        target=float(target),
        container_concurrency=concurrency,
        initial_replicas=max(minimum, 1),
        stable_window_s=0.0 if autoscaler == "none" else _HPA_STABLE_WINDOW_S,
        panic_window_s=0.0,
        panic_threshold=0.0,
        scale_to_zero_grace_s=0.0,
    )


def _initial_scale(
    spec: ComponentSpec, annotations: Mapping[str, str], config: PlatformConfig
) -> int:
    """Knative's ``initial-scale`` annotation (1 by default; 0 only where Knative allows it)."""
    raw = (spec.annotations or {}).get(INITIAL_SCALE_ANNOTATION) or annotations.get(
        INITIAL_SCALE_ANNOTATION
    )
    try:
        initial = int(raw) if raw is not None else 1
    except ValueError:
        initial = 1
    return initial if initial > 0 or config.allow_zero_initial_scale else 1
