"""``autoScaling.metrics`` rendered: HPA metrics and KEDA triggers, each validated.

The HPA objects are checked with ``kubernetes_validate`` (strict), the ScaledObjects against
the KEDA schema in ``schemas/``, as every rendered object is.
"""

from __future__ import annotations

from typing import Any

import yaml
from render_support import SAMPLES, one, render_file, validate_manifest

from modelhost import control
from modelhost.control.objects import InferenceService
from modelhost.kube import KubeSettings, render_plan

KEDA = {"serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": "keda"}
HPA = {"serving.kserve.io/deploymentMode": "Standard", "serving.kserve.io/autoscalerClass": "hpa"}


def _render(predictor: dict[str, Any], annotations: dict[str, str]) -> list[dict[str, Any]]:
    document = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "iris", "annotations": annotations},
        "spec": {
            "predictor": {
                "model": {"modelFormat": {"name": "sklearn"}, "storageUri": "gs://b/iris"},
                **predictor,
            }
        },
    }
    source = control.parse_object(document)
    assert isinstance(source, InferenceService)
    settings = KubeSettings()
    manifests = render_plan(control.plan(source, config=settings.planner), settings)
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


def test_kserves_keda_sample_triggers_at_its_own_cpu_target() -> None:
    scaled = one(render_file(SAMPLES / "keda.yaml"), "ScaledObject")
    assert scaled["spec"]["triggers"] == [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}
    ]


def test_an_external_prometheus_metric_is_a_prometheus_trigger() -> None:
    manifests = render_file(SAMPLES / "keda-prometheus.yaml")
    scaled = one(manifests, "ScaledObject")
    sample = yaml.safe_load((SAMPLES / "keda-prometheus.yaml").read_text())
    query = sample["spec"]["predictor"]["autoScaling"]["metrics"][0]["external"]["metric"]["query"]
    assert scaled["spec"]["triggers"] == [
        {
            "type": "prometheus",
            "metricType": "Value",
            "metadata": {
                "serverAddress": "http://prometheus.monitoring.svc:9090",
                "query": query,
                "threshold": "20",
            },
        },
        {"type": "memory", "metricType": "AverageValue", "metadata": {"value": "1Gi"}},
    ]
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior == {"scaleDown": {"stabilizationWindowSeconds": 60}}


def test_a_prometheus_metric_without_a_server_asks_the_settings_prometheus() -> None:
    external = {
        "type": "External",
        "external": {
            "metric": {"backend": "prometheus", "query": "sum(up)", "namespace": "team-a"},
            "target": {"type": "AverageValue", "value": 2.5},
            "authenticationRef": {"authModes": "bearer", "authenticationRef": {"name": "prom"}},
        },
    }
    scaled = one(_render({"autoScaling": {"metrics": [external]}}, KEDA), "ScaledObject")
    assert scaled["spec"]["triggers"] == [
        {
            "type": "prometheus",
            "metricType": "AverageValue",
            "metadata": {
                "serverAddress": KubeSettings().prometheus_address,
                "query": "sum(up)",
                "threshold": "2.5",
                "namespace": "team-a",
                "authModes": "bearer",
            },
            "authenticationRef": {"name": "prom"},
        }
    ]


def test_keda_from_zero_on_cpu_gets_a_trigger_that_can_wake_it() -> None:
    cpu = {
        "type": "Resource",
        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 40}},
    }
    scaled = one(
        _render({"minReplicas": 0, "autoScaling": {"metrics": [cpu]}}, KEDA), "ScaledObject"
    )
    assert [t["type"] for t in scaled["spec"]["triggers"]] == ["cpu", "prometheus"]
    assert scaled["spec"]["minReplicaCount"] == 0


def test_hpa_metrics_come_from_autoscaling() -> None:
    metrics = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 65},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "AverageValue", "averageValue": "2Gi"},
            },
        },
    ]
    behavior = {"scaleUp": {"stabilizationWindowSeconds": 30}}
    hpa = one(
        _render({"maxReplicas": 4, "autoScaling": {"metrics": metrics, "behavior": behavior}}, HPA),
        "HorizontalPodAutoscaler",
    )
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 65},
            },
        },
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "AverageValue", "averageValue": "2Gi"},
            },
        },
    ]
    assert hpa["spec"]["behavior"] == {
        "scaleDown": {"stabilizationWindowSeconds": 300},
        "scaleUp": {"stabilizationWindowSeconds": 30},
    }


def test_a_memory_scale_target_is_an_hpa_memory_metric() -> None:
    hpa = one(_render({"scaleMetric": "memory", "scaleTarget": 75}, HPA), "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "Utilization", "averageUtilization": 75},
            },
        }
    ]
