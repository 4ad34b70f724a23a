"""``autoScaling`` (KServe's metrics and behavior for the hpa and keda classes) in the plan.

The metrics become the policy's :class:`ScalingMetric` s (what an executor's HPA or KEDA
scales on), the behavior's stabilization windows its windows; what the planner cannot carry
is a warning naming the field, and invalid metrics are refused naming theirs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from control_support import isvc, sklearn

from modelhost.control import ValidationError, parse_documents, plan
from modelhost.control.objects import InferenceService
from modelhost.control.plan_types import ScalingMetric, ScalingPolicy

KEDA = {"serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": "keda"}
HPA = {"serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": "hpa"}
KEDA_SAMPLE = Path(__file__).parents[1] / "kube" / "samples" / "keda.yaml"


def policy(predictor: dict[str, Any], annotations: dict[str, str]) -> ScalingPolicy:
    return plan(isvc({**sklearn(), **predictor}, annotations=annotations)).components[0].scaling


def metrics(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"autoScaling": {"metrics": list(entries)}}


def cpu(utilization: int | None = 50, kind: str | None = "Utilization") -> dict[str, Any]:
    target: dict[str, Any] = {} if kind is None else {"type": kind}
    if utilization is not None:
        target["averageUtilization"] = utilization
    return {"type": "Resource", "resource": {"name": "cpu", "target": target}}


def memory(**target: Any) -> dict[str, Any]:
    return {"type": "Resource", "resource": {"name": "memory", "target": target}}


def prometheus(**fields: Any) -> dict[str, Any]:
    metric = {"backend": "prometheus", "query": "sum(rate(requests[1m]))", **fields}
    return {"type": "External", "external": {"metric": metric, "target": {"value": "10"}}}


def test_kserves_keda_sample_scales_at_its_own_cpu_target() -> None:
    (source,) = parse_documents(KEDA_SAMPLE.read_text())
    assert isinstance(source, InferenceService)
    scaling = plan(source).components[0].scaling
    assert scaling.autoscaler == "keda"
    assert scaling.metrics == (ScalingMetric("Resource", "cpu", "Utilization", "50"),)
    assert (scaling.metric, scaling.target) == ("cpu", 50.0)


def test_every_metric_of_a_keda_component_is_planned() -> None:
    external = prometheus(serverAddress="http://prom:9090", namespace="team-a")
    external["external"]["authenticationRef"] = {
        "authModes": "bearer",
        "authenticationRef": {"name": "prom-auth"},
    }
    scaling = policy(
        metrics(cpu(60), memory(type="AverageValue", averageValue="1Gi"), external), KEDA
    )
    assert scaling.metrics == (
        ScalingMetric("Resource", "cpu", "Utilization", "60"),
        ScalingMetric("Resource", "memory", "AverageValue", "1Gi"),
        ScalingMetric(
            "External",
            "prometheus",
            "AverageValue",
            "10",
            query="sum(rate(requests[1m]))",
            server_address="http://prom:9090",
            namespace="team-a",
            authentication="prom-auth",
            auth_modes="bearer",
        ),
    )


def test_an_hpa_defaults_a_cpu_target_as_kserve_does() -> None:
    scaling = policy(metrics(cpu(None, kind=None)), HPA)
    assert scaling.metrics == (ScalingMetric("Resource", "cpu", "Utilization", "80"),)


def test_scale_metric_and_target_are_the_metrics_without_autoscaling() -> None:
    scaling = policy({"scaleMetric": "memory", "scaleTarget": 70}, HPA)
    assert scaling.metrics == (ScalingMetric("Resource", "memory", "Utilization", "70"),)
    # KServe sets no memory target of its own: the HPA then holds the cpu at 80%.
    scaling = policy({"scaleMetric": "memory"}, HPA)
    assert scaling.metrics == (ScalingMetric("Resource", "cpu", "Utilization", "80"),)


def test_behavior_sets_the_stabilization_windows_and_says_what_it_leaves_out() -> None:
    behavior = {
        "scaleDown": {"stabilizationWindowSeconds": 120},
        "scaleUp": {
            "stabilizationWindowSeconds": 0,
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15}],
        },
    }
    source = isvc({**sklearn(), "autoScaling": {"behavior": behavior}}, annotations=HPA)
    planned = plan(source)
    scaling = planned.components[0].scaling
    assert (scaling.stable_window_s, scaling.scale_up_window_s) == (120.0, 0.0)
    (warning,) = planned.warnings
    assert warning.startswith("spec.predictor.autoScaling.behavior.scaleUp:")
    assert "policies" in warning


def test_knatives_autoscaler_ignores_autoscaling_and_says_so() -> None:
    planned = plan(isvc({**sklearn(), **metrics(cpu(50))}))
    assert planned.components[0].scaling.autoscaler == "kpa"
    assert planned.components[0].scaling.metrics == ()
    (warning,) = planned.warnings
    assert warning.startswith("spec.predictor.autoScaling is ignored")


@pytest.mark.parametrize(
    ("predictor", "annotations", "field", "message"),
    [
        (metrics(cpu(50, kind="AverageValue")), KEDA, "[0].resource.target.type", "Utilization"),
        (metrics(cpu(150)), KEDA, "[0].resource.target.averageUtilization", "[1-100]"),
        (
            metrics(memory(type="AverageValue", averageValue="512Ki")),
            KEDA,
            "[0].resource.target.averageValue",
            "1 MiB",
        ),
        (
            metrics(memory(type="AverageValue", averageValue="lots")),
            KEDA,
            "[0].resource.target.averageValue",
            "not a Kubernetes quantity",
        ),
        (metrics(memory(type="Utilization")), HPA, "[0].resource.target.averageUtilization", ""),
        (metrics(memory(type="Value", value="1Gi")), HPA, "[0].resource.target.type", ""),
        (
            metrics({"type": "Resource", "resource": {"name": "gpu", "target": {}}}),
            KEDA,
            "[0].resource.name",
            "cpu, memory",
        ),
        (metrics({"type": "Resource"}), KEDA, "[0].resource", "Required"),
        (metrics(cpu(), {"type": "Custom"}), KEDA, "[1].type", "Resource, External, PodMetric"),
        (metrics(prometheus(query="")), KEDA, "[0].external.metric.query", "not be empty"),
        (
            metrics(prometheus(backend="graphite")),
            KEDA,
            "[0].external.metric.backend",
            "prometheus",
        ),
        (
            metrics({"type": "PodMetric", "podmetric": {"metric": {"query": "q"}}}),
            KEDA,
            "[0].type",
            "OpenTelemetry",
        ),
        (metrics(prometheus()), HPA, "[0].type", "Resource metrics only"),
    ],
)
def test_invalid_metrics_are_refused_naming_the_field(
    predictor: dict[str, Any], annotations: dict[str, str], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        plan(isvc({**sklearn(), **predictor}, annotations=annotations))
    (error,) = caught.value.errors
    assert error.field == f"spec.predictor.autoScaling.metrics{field}"
    assert message in error.message


def test_an_external_metric_without_a_threshold_names_the_target() -> None:
    external = prometheus()
    del external["external"]["target"]
    with pytest.raises(ValidationError) as caught:
        plan(isvc({**sklearn(), **metrics(external)}, annotations=KEDA))
    assert caught.value.field == "spec.predictor.autoScaling.metrics[0].external.target.value"


def test_camel_case_fields_are_parsed_and_typos_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        isvc({**sklearn(), "autoScaling": {"metrics": [{"type": "Resource", "resorce": {}}]}})
    assert "resorce" in str(caught.value)
