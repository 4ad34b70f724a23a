"""KServe's rules for what every component shares: replicas, logger, batcher, autoscaling.

These are ``ComponentExtensionSpec.Validate`` and the autoscaler checks of KServe's webhook,
which depend on the deployment mode: Knative's autoscaler scales on concurrency or rps, the
HPA on cpu or memory. Messages are KServe's where it has one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from modelhost.control.errors import FieldError
from modelhost.control.names import (
    AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_HPA_CLASS,
)
from modelhost.control.objects import ComponentSpec, Container

__all__ = ["blocked_env_errors", "component_errors"]

_BLOCKED_ENV = ("PYTHONPATH",)
_SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
_SCALE_METRIC_TYPES = ("Utilization", "Value", "AverageValue")
_LOGGER_MODES = ("all", "request", "response")


def blocked_env_errors(field: str, container: Container) -> Iterator[FieldError]:
    for index, env in enumerate(container.env or ()):
        if env.name in _BLOCKED_ENV:
            yield FieldError(
                f"{field}.env[{index}].name",
                f"setting {env.name} is not allowed (KServe's environment policy blocks it)",
            )


def component_errors(
    field: str, component: ComponentSpec, mode: str, annotations: Mapping[str, str]
) -> Iterator[FieldError]:
    """ComponentExtensionSpec: replicas, concurrency, logger, autoscaling by mode, env policy."""
    minimum, maximum = component.min_replicas, component.max_replicas
    if minimum is not None and minimum < 0:
        yield FieldError(f"{field}.minReplicas", "MinReplicas cannot be less than 0.")
    if maximum is not None and maximum < 0:
        yield FieldError(f"{field}.maxReplicas", "MaxReplicas cannot be less than 0.")
    if maximum is not None and maximum > 0 and (1 if minimum is None else minimum) > maximum:
        yield FieldError(f"{field}.minReplicas", "MinReplicas cannot be greater than MaxReplicas.")
    if component.container_concurrency is not None and component.container_concurrency < 0:
        yield FieldError(f"{field}.containerConcurrency", "Parallelism cannot be less than 0.")
    if component.timeout is not None and component.timeout < 0:
        yield FieldError(f"{field}.timeout", "must be a number of seconds >= 0")
    percent = component.canary_traffic_percent
    if percent is not None and not 0 <= percent <= 100:
        yield FieldError(f"{field}.canaryTrafficPercent", "must be between 0 and 100")
    yield from _logger_and_batcher_errors(field, component)
    yield from _autoscaling_errors(field, component, mode, annotations)
    for index, container in enumerate(component.containers or ()):
        yield from blocked_env_errors(f"{field}.containers[{index}]", container)


def _logger_and_batcher_errors(field: str, component: ComponentSpec) -> Iterator[FieldError]:
    logger = component.logger
    if logger is not None:
        # An absent mode is KServe's documented default, "all" (its webhook refuses it).
        if logger.mode is not None and logger.mode not in _LOGGER_MODES:
            yield FieldError(
                f"{field}.logger.mode",
                f"Invalid logger type {logger.mode!r}: must be one of {', '.join(_LOGGER_MODES)}",
            )
        storage = logger.storage
        if storage is not None:
            missing = [key for key in ("path", "parameters", "key") if not _get(storage, key)]
            if missing:
                yield FieldError(f"{field}.logger.storage", f"needs {', '.join(missing)}")
    batcher = component.batcher
    if batcher is not None:
        for name, value in (
            ("maxBatchSize", batcher.max_batch_size),
            ("maxLatency", batcher.max_latency),
            ("timeout", batcher.timeout),
        ):
            if value is not None and value < 1:
                yield FieldError(f"{field}.batcher.{name}", "must be at least 1")


def _get(data: object, key: str) -> object:
    return data.get(key) if isinstance(data, dict) else None


def _autoscaling_errors(
    field: str, component: ComponentSpec, mode: str, annotations: Mapping[str, str]
) -> Iterator[FieldError]:
    metric, target = component.scale_metric, component.scale_target
    if metric is not None and metric not in _SCALE_METRICS:
        yield FieldError(
            f"{field}.scaleMetric",
            f"Unsupported value: {metric!r}: supported values: {', '.join(_SCALE_METRICS)}",
        )
        return
    if component.scale_metric_type not in (None, *_SCALE_METRIC_TYPES):
        yield FieldError(
            f"{field}.scaleMetricType", f"must be one of {', '.join(_SCALE_METRIC_TYPES)}"
        )
    if mode == "Standard":
        autoscaler = annotations.get(AUTOSCALER_CLASS_ANNOTATION, "hpa")
        if autoscaler == "hpa":
            yield from _hpa_errors(field, component)
        elif autoscaler == "keda" and metric is not None:
            yield FieldError(
                f"{field}.scaleMetric", "not allowed with the keda autoscaler: use autoScaling"
            )
        return
    if annotations.get(KNATIVE_AUTOSCALER_CLASS_ANNOTATION) == KNATIVE_HPA_CLASS:
        yield from _hpa_errors(field, component)
        return
    if component.deployment_strategy is not None:
        yield FieldError(
            f"{field}.deploymentStrategy", "only supported for raw deployment mode (Standard)"
        )
    if metric not in (None, "concurrency", "rps"):
        yield FieldError(
            f"{field}.scaleMetric",
            f"the Knative autoscaler scales on concurrency or rps, not {metric!r} "
            "(cpu and memory need the Standard mode or the HPA class)",
        )
    elif target is not None and target < 1:
        yield FieldError(f"{field}.scaleTarget", "must be at least 1")


def _hpa_errors(field: str, component: ComponentSpec) -> Iterator[FieldError]:
    metric, target = component.scale_metric or "cpu", component.scale_target
    if metric not in ("cpu", "memory"):
        yield FieldError(
            f"{field}.scaleMetric",
            f"the HPA autoscaler scales on cpu or memory, not {metric!r}",
        )
    elif metric == "cpu" and target is not None and not 1 <= target <= 100:
        yield FieldError(f"{field}.scaleTarget", "a cpu utilization target must be 1-100")
    elif metric == "memory" and target is not None and target < 1:
        yield FieldError(f"{field}.scaleTarget", "a memory target must be at least 1")
    metrics = _get(component.auto_scaling, "metrics")
    for index, metric_spec in enumerate(metrics if isinstance(metrics, list) else []):
        if _get(metric_spec, "type") != "Resource":
            yield FieldError(
                f"{field}.autoScaling.metrics[{index}].type",
                "the HPA autoscaler takes Resource metrics only",
            )
