"""How many replicas a component runs: KServe's autoscaling fields → a ScalingPolicy.

Knative mode uses Knative's pod autoscaler (concurrency or requests per second, a stable and
a panic window, scale to zero at ``minReplicas: 0``), with Knative's defaults; Standard mode
uses the ``serving.kserve.io/autoscalerClass`` KServe names (the HPA on cpu or memory, KEDA,
an external autoscaler, or none), where the HPA turns ``minReplicas: 0`` into 1. The HPA and
KEDA scale on ``autoScaling.metrics`` when the component gives them (KServe's newer form),
else on ``scaleMetric``/``scaleTarget``; ``autoScaling.behavior`` sets their stabilization
windows.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableSequence

from modelhost.control.config import PlatformConfig
from modelhost.control.names import (
    AUTOSCALER_CLASS_ANNOTATION,
    INITIAL_SCALE_ANNOTATION,
    KNATIVE_AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_HPA_CLASS,
)
from modelhost.control.objects import ComponentSpec
from modelhost.control.objects.inference_service import MetricsSpec, MetricTarget
from modelhost.control.plan_types import ScalingMetric, ScalingPolicy

__all__ = ["scaling_policy"]

# The HPA's default scale-down stabilization window.
_HPA_STABLE_WINDOW_S = 300.0
_RESOURCES = ("cpu", "memory")


def scaling_policy(
    spec: ComponentSpec,
    mode: str,
    annotations: Mapping[str, str],
    config: PlatformConfig,
    *,
    field: str = "spec.predictor",
    warnings: MutableSequence[str] | None = None,
) -> ScalingPolicy:
    """The autoscaler of a component in ``mode``, with KServe's and Knative's defaults.

    ``warnings`` collects what the policy leaves out, each naming its field under ``field``.
    """
    warnings = [] if warnings is None else warnings
    concurrency = spec.container_concurrency or 0
    maximum = spec.max_replicas or 0
    requested_min = 1 if spec.min_replicas is None else spec.min_replicas
    if (
        mode == "Knative"
        and annotations.get(KNATIVE_AUTOSCALER_CLASS_ANNOTATION) != KNATIVE_HPA_CLASS
    ):
        if spec.auto_scaling is not None:
            warnings.append(
                f"{field}.autoScaling is ignored by Knative's autoscaler, as in KServe: it is "
                "for the hpa and keda autoscaler classes (scaleMetric and scaleTarget are "
                "Knative's)"
            )
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
    minimum = requested_min if autoscaler in ("keda", "external", "none") else max(1, requested_min)
    if autoscaler == "none":
        maximum = minimum
    elif autoscaler in ("hpa", "keda"):
        maximum = max(maximum, minimum)
    metrics = _metrics(spec, autoscaler, config) if autoscaler in ("hpa", "keda") else ()
    first = next((m for m in metrics if m.source == "Resource"), None)
    if first is not None and first.target_type == "Utilization":
        metric, target = first.name, float(first.target)
    else:
        metric = spec.scale_metric or "cpu"
        target = float(
            spec.scale_target or (config.cpu_utilization_target if metric == "cpu" else 1)
        )
    scale_down, scale_up = _windows(spec, field, warnings)
    return ScalingPolicy(
        autoscaler=autoscaler,
        min_replicas=minimum,
        max_replicas=maximum,
        metric=metric,
        target=target,
        container_concurrency=concurrency,
        initial_replicas=max(minimum, 1),
        stable_window_s=0.0
        if autoscaler == "none"
        else (_HPA_STABLE_WINDOW_S if scale_down is None else scale_down),
        panic_window_s=0.0,
        panic_threshold=0.0,
        scale_to_zero_grace_s=0.0,
        metrics=metrics,
        scale_up_window_s=scale_up,
    )


def _metrics(
    spec: ComponentSpec, autoscaler: str, config: PlatformConfig
) -> tuple[ScalingMetric, ...]:
    """``autoScaling.metrics`` (validated already), else ``scaleMetric`` at ``scaleTarget``."""
    given = spec.auto_scaling.metrics if spec.auto_scaling is not None else None
    if given:
        found = [m for m in (_metric(entry, config) for entry in given) if m is not None]
        # The HPA takes resource metrics only (validation refuses the others).
        return tuple(m for m in found if autoscaler == "keda" or m.source == "Resource")
    name = spec.scale_metric or "cpu"
    if name not in _RESOURCES:
        return ()
    if name == "memory" and spec.scale_target is None:
        # KServe sets no memory target of its own: its HPA has no metrics, and Kubernetes
        # then holds the cpu at the default utilization.
        name = "cpu"
    target = spec.scale_target or config.cpu_utilization_target
    return (ScalingMetric("Resource", name, "Utilization", str(target)),)


def _metric(entry: MetricsSpec, config: PlatformConfig) -> ScalingMetric | None:
    if entry.type == "Resource" and entry.resource is not None:
        resource = entry.resource
        name = resource.name or "cpu"
        target = resource.target or MetricTarget()
        target_type = target.type or "Utilization"
        return ScalingMetric("Resource", name, target_type, _target(target, target_type, config))
    if entry.type == "External" and entry.external is not None:
        external = entry.external
        source = external.metric
        target = external.target or MetricTarget()
        authentication = external.authentication_ref
        reference = authentication.authentication_ref if authentication is not None else None
        return ScalingMetric(
            "External",
            (source.backend if source is not None else None) or "prometheus",
            target.type or "AverageValue",
            # KServe's threshold is the target's value, whatever its type.
            _quantity(target.value),
            query=(source.query if source is not None else None) or "",
            server_address=(source.server_address if source is not None else None) or "",
            namespace=(source.namespace if source is not None else None) or "",
            authentication=reference.name if reference is not None else "",
            auth_modes=(authentication.auth_modes if authentication is not None else None) or "",
        )
    return None


def _target(target: MetricTarget, target_type: str, config: PlatformConfig) -> str:
    if target_type == "Utilization":
        # KServe's default cpu utilization where none is given (memory needs one).
        return str(target.average_utilization or config.cpu_utilization_target)
    if target_type == "AverageValue":
        return _quantity(target.average_value)
    return _quantity(target.value)


def _quantity(value: str | int | float | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value == int(value):
        return str(int(value))
    return str(value)


def _windows(
    spec: ComponentSpec, field: str, warnings: MutableSequence[str]
) -> tuple[float | None, float | None]:
    """The scale-down and scale-up stabilization windows of ``autoScaling.behavior``."""
    behavior = spec.auto_scaling.behavior if spec.auto_scaling is not None else None
    if behavior is None:
        return None, None
    windows: list[float | None] = []
    for name, rules in (("scaleDown", behavior.scale_down), ("scaleUp", behavior.scale_up)):
        if rules is None:
            windows.append(None)
            continue
        left_out = [
            key
            for key, value in (
                ("policies", rules.policies),
                ("selectPolicy", rules.select_policy),
                ("tolerance", rules.tolerance),
            )
            if value is not None
        ]
        if left_out:
            warnings.append(
                f"{field}.autoScaling.behavior.{name}: only stabilizationWindowSeconds is "
                f"planned; {', '.join(left_out)} left to the autoscaler's defaults"
            )
        seconds = rules.stabilization_window_seconds
        windows.append(None if seconds is None else float(seconds))
    return windows[0], windows[1]


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
