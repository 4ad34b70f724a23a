"""KServe's rules for what every component shares: replicas, logger, batcher, autoscaling.

These are ``ComponentExtensionSpec.Validate`` and the autoscaler checks of KServe's webhook,
which depend on the deployment mode: Knative's autoscaler scales on concurrency or rps, the
HPA on cpu or memory. Messages are KServe's where it has one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping

from modelhost.control.errors import FieldError
from modelhost.control.names import (
    AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_AUTOSCALER_CLASS_ANNOTATION,
    KNATIVE_HPA_CLASS,
)
from modelhost.control.objects import ComponentSpec, Container
from modelhost.control.objects.inference_service import (
    ExternalMetricSource,
    ResourceMetricSource,
)

__all__ = ["blocked_env_errors", "component_errors", "quantity_value"]

_BLOCKED_ENV = ("PYTHONPATH",)
_SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")
_SCALE_METRIC_TYPES = ("Utilization", "Value", "AverageValue")
_LOGGER_MODES = ("all", "request", "response")
_METRIC_SOURCES = ("Resource", "External", "PodMetric")
_RESOURCE_METRICS = ("cpu", "memory")
_RESOURCE_TARGETS = ("Utilization", "AverageValue")
_MEBIBYTE = 1024.0**2
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))"
    r"(?:(?P<suffix>[KMGTPE]i|[numkMGTPE])|[eE](?P<exponent>[+-]?\d+))?$"
)
_SUFFIXES = {
    "": 1.0,
    **{
        suffix: 1024.0**power
        for power, suffix in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"), 1)
    },
    **{suffix: 1000.0**power for power, suffix in enumerate(("k", "M", "G", "T", "P", "E"), 1)},
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
}


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
        elif autoscaler == "keda":
            if metric is not None:
                yield FieldError(
                    f"{field}.scaleMetric", "not allowed with the keda autoscaler: use autoScaling"
                )
            yield from _metrics_errors(field, component, "keda")
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
    yield from _metrics_errors(field, component, "hpa")


def _metrics_errors(field: str, component: ComponentSpec, autoscaler: str) -> Iterator[FieldError]:
    """``autoScaling.metrics`` for the hpa or keda class (KServe's webhook, and the CRD's enums).

    modelhost renders KEDA's prometheus trigger for an External metric; graphite and the
    OpenTelemetry PodMetric (which need KServe's collector set-up) are refused here.
    """
    metrics = component.auto_scaling.metrics if component.auto_scaling is not None else None
    for index, metric in enumerate(metrics or ()):
        path = f"{field}.autoScaling.metrics[{index}]"
        if metric.type not in _METRIC_SOURCES:
            yield FieldError(
                f"{path}.type",
                f"Unsupported value: {metric.type!r}: supported values: "
                f"{', '.join(_METRIC_SOURCES)}",
            )
        elif autoscaler == "hpa" and metric.type != "Resource":
            yield FieldError(f"{path}.type", "the HPA autoscaler takes Resource metrics only")
        elif metric.type == "Resource":
            yield from _resource_metric_errors(path, metric.resource, autoscaler)
        elif metric.type == "External":
            yield from _external_metric_errors(path, metric.external)
        else:
            yield FieldError(
                f"{path}.type",
                "PodMetric (OpenTelemetry) metrics need KServe's OpenTelemetry collector, "
                "which modelhost does not set up: use an External prometheus metric",
            )


def _resource_metric_errors(
    path: str, resource: ResourceMetricSource | None, autoscaler: str
) -> Iterator[FieldError]:
    if resource is None:
        yield FieldError(f"{path}.resource", "Required value: a Resource metric needs resource")
        return
    if resource.name not in _RESOURCE_METRICS:
        yield FieldError(
            f"{path}.resource.name",
            f"Unsupported value: {resource.name!r}: supported values: "
            f"{', '.join(_RESOURCE_METRICS)}",
        )
        return
    target = resource.target
    if target is None:
        yield FieldError(f"{path}.resource.target", "Required value")
        return
    # The HPA's resource metrics take Utilization and AverageValue; KEDA's cpu scaler
    # takes Utilization only (KServe's webhook).
    allowed = (
        ("Utilization",) if autoscaler == "keda" and resource.name == "cpu" else _RESOURCE_TARGETS
    )
    # The HPA defaults a cpu target's type to Utilization, as KServe does.
    kind = target.type or (
        "Utilization" if autoscaler == "hpa" and resource.name == "cpu" else None
    )
    if kind not in allowed:
        yield FieldError(
            f"{path}.resource.target.type",
            f"the {resource.name} target of the {autoscaler} autoscaler must be "
            f"{' or '.join(allowed)}, not {target.type!r}",
        )
        return
    if kind == "Utilization":
        utilization = target.average_utilization
        if utilization is None and resource.name == "memory":
            yield FieldError(
                f"{path}.resource.target.averageUtilization",
                "Required value: the memory utilization to hold (1-100)",
            )
        elif utilization is not None and not 1 <= utilization <= 100:
            yield FieldError(
                f"{path}.resource.target.averageUtilization",
                "the target utilization percentage should be a [1-100] integer",
            )
    elif target.average_value is None:
        yield FieldError(f"{path}.resource.target.averageValue", "Required value")
    elif resource.name == "memory":
        amount = quantity_value(target.average_value)
        if amount is None:
            yield FieldError(
                f"{path}.resource.target.averageValue",
                f"not a Kubernetes quantity: {target.average_value!r}",
            )
        elif amount < _MEBIBYTE:
            yield FieldError(
                f"{path}.resource.target.averageValue",
                "the memory target value should be greater than 1 MiB",
            )


def _external_metric_errors(
    path: str, external: ExternalMetricSource | None
) -> Iterator[FieldError]:
    if external is None:
        yield FieldError(f"{path}.external", "Required value: an External metric needs external")
        return
    source = external.metric
    backend = (source.backend if source is not None else None) or "prometheus"
    if backend != "prometheus":
        yield FieldError(
            f"{path}.external.metric.backend",
            f"{backend!r} is not rendered by modelhost: use prometheus (a KEDA prometheus trigger)",
        )
    if source is None or not source.query:
        yield FieldError(f"{path}.external.metric.query", "the query should not be empty")
    target = external.target
    if target is None or target.value is None:
        yield FieldError(
            f"{path}.external.target.value", "the target threshold value should not be empty"
        )
    elif target.type not in (None, "Value", "AverageValue"):
        yield FieldError(
            f"{path}.external.target.type",
            f"a prometheus threshold is a Value or an AverageValue, not {target.type!r}",
        )
    elif quantity_value(target.value) is None:
        yield FieldError(
            f"{path}.external.target.value", f"not a Kubernetes quantity: {target.value!r}"
        )


def quantity_value(quantity: str | int | float) -> float | None:
    """The number a Kubernetes quantity (``512Mi``, ``100m``, ``1.5``, ``2e3``) stands for."""
    if isinstance(quantity, (int, float)):
        return float(quantity)
    match = _QUANTITY.match(quantity.strip())
    if match is None:
        return None
    number = float(match["number"])
    if match["exponent"] is not None:
        return number * 10.0 ** int(match["exponent"])
    return number * _SUFFIXES[match["suffix"] or ""]
