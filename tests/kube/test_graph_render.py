"""An InferenceGraph rendered for Kubernetes as KServe renders its router; ``modelhost render``.

The plans come from the real planners (``control.plan`` for the services,
``control.plan_graph`` for the graph) on KServe's four sample graph shapes; every object is
validated as the InferenceServices' are (``render_support.validate_manifest``: Kubernetes'
own schemas, strictly, and the Gateway API / KEDA schemas in ``schemas/``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from render_support import (
    CONTROL_SAMPLES,
    GRAPH_SAMPLES,
    Manifest,
    of_kind,
    one,
    plan_graph_file,
    render_graph_file,
    validate_manifest,
)

from modelhost import control
from modelhost.cli import main
from modelhost.control.errors import ValidationError
from modelhost.control.runtimes import TABULAR_IMAGE, image_reference
from modelhost.kube import KubeSettings, manifests_yaml, render_plan
from modelhost.kube.labels import COMPONENT, INFERENCEGRAPH, INFERENCESERVICE, MANAGED_BY
from modelhost.kube.manifests.router import ROUTER_RESOURCES, planned_services

SEQUENCE = CONTROL_SAMPLES / "graphs" / "sequence.yaml"
SWITCH = CONTROL_SAMPLES / "graphs" / "switch.yaml"


def graph(nodes: dict[str, Any], name: str = "g", **spec: Any) -> control.InferenceGraph:
    parsed = control.parse_object(
        {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "InferenceGraph",
            "metadata": {"name": name, "namespace": "ns", **spec.pop("metadata", {})},
            "spec": {"nodes": nodes, **spec},
        }
    )
    assert isinstance(parsed, control.InferenceGraph)
    return parsed


def render(parsed: control.InferenceGraph, settings: KubeSettings | None = None) -> list[Manifest]:
    settings = settings or KubeSettings()
    return render_plan(control.plan_graph(parsed, {}, config=settings.planner), settings)


def router(manifests: list[Manifest]) -> dict[str, Any]:
    (deployment,) = of_kind(manifests, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def spec_argument(container: dict[str, Any]) -> str:
    args: list[str] = container["args"]
    return args[args.index("--spec") + 1]


def kubernetes_expand(text: str) -> str:
    """What the kubelet passes for an arg (``$$`` → ``$``; no variables are defined here)."""
    return re.sub(r"\$\$", "$", text)


SEQUENTIAL_STEP = {"root": {"routerType": "Sequence", "steps": [{"serviceName": "iris"}]}}


@pytest.mark.parametrize("path", GRAPH_SAMPLES, ids=lambda p: p.stem)
def test_a_graph_renders_as_a_router_labelled_as_kserves_and_valid(path: Path) -> None:
    plan, _ = plan_graph_file(path)
    manifests = render_graph_file(path)
    assert {"Deployment", "Service", "HTTPRoute"} <= {m["kind"] for m in manifests}
    for manifest in manifests:
        validate_manifest(manifest)
        labels = manifest["metadata"]["labels"]
        assert labels[INFERENCEGRAPH] == plan.name
        assert labels[MANAGED_BY] == "modelhost"
        assert INFERENCESERVICE not in labels
        assert manifest["metadata"]["namespace"] == plan.namespace
    deployment = one(manifests, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector[INFERENCEGRAPH] == plan.name
    assert selector.items() <= pod_labels.items()
    for service in of_kind(manifests, "Service"):  # each reaches the router's pods
        assert service["spec"]["selector"][INFERENCEGRAPH] == plan.name
        assert service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("path", GRAPH_SAMPLES, ids=lambda p: p.stem)
def test_the_router_runs_modelhost_graph_with_the_in_cluster_addresses(path: Path) -> None:
    plan, services = plan_graph_file(path)
    manifests = render_graph_file(path)
    container = router(manifests)
    assert container["name"] == plan.name  # KServe names the router's container after the graph
    assert container["image"] == image_reference(TABULAR_IMAGE)
    assert container["command"] == ["modelhost"]
    args = container["args"]
    assert args[0] == "graph"
    assert args[args.index("--http-port") + 1] == "8080"
    assert args[args.index("--gateway") + 1] == ""  # no gateway: services by address
    config = json.loads(kubernetes_expand(spec_argument(container)))
    parsed = control.parse_documents(path.read_text(), path.name)
    (the_graph,) = [o for o in parsed if isinstance(o, control.InferenceGraph)]
    defaulted = control.apply_graph_defaults(the_graph)
    assert config == control.graph_router_config(defaulted, services)
    assert planned_services(one(manifests, "Deployment")) == frozenset(services)
    for name, entry in config["services"].items():
        # The address is a Service the InferenceService renders, on its port 80.
        service_names = {
            s["metadata"]["name"]
            for s in of_kind(render_plan(services[name], KubeSettings()), "Service")
        }
        host = entry["address"]
        assert host.endswith(f".{plan.namespace}.svc.cluster.local")
        assert host.split(".")[0] in service_names


def test_the_rendered_command_starts_the_router_and_its_probes_answer() -> None:
    """The container's command and args, as the kubelet passes them, run ``modelhost graph``.

    The only change: ``--http-port 0`` (a port the kernel picks) instead of 8080.
    """
    container = router(render_graph_file(SEQUENCE))
    args = [kubernetes_expand(arg) for arg in container["args"]]
    args[args.index("--http-port") + 1] = "0"
    assert container["command"] == ["modelhost"]
    env = {**os.environ, "MODELHOST_HOST": "127.0.0.1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "modelhost", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        port = None
        for line in process.stdout:
            found = re.search(r"serving HTTP on 127\.0\.0\.1:(\d+)", line)
            if found:
                port = int(found.group(1))
                break
        assert port is not None, "the router did not say where it serves"
        assert "(steps direct)" in line  # no gateway: straight to the services' addresses
        for probe in ("readinessProbe", "livenessProbe"):
            path = container[probe]["httpGet"]["path"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
                assert answer.status == 200, path
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert process.returncode == 0


def test_the_router_pod_fetches_nothing_probes_the_router_and_is_restricted() -> None:
    manifests = render_graph_file(SEQUENCE)
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "volumes" not in pod
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = router(manifests)
    assert container["ports"] == [{"name": "http1", "containerPort": 8080, "protocol": "TCP"}]
    ready = container["readinessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/v2/health/ready", 8080)
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert "startupProbe" not in container  # it loads no model
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert container["resources"] == ROUTER_RESOURCES  # KServe's router defaults
    for service in of_kind(manifests, "Service"):
        assert service["spec"]["ports"] == [
            {"name": "http1", "port": 80, "targetPort": 8080, "protocol": "TCP"}
        ]


def test_the_route_is_the_graphs_host_to_its_router_without_isvc_headers() -> None:
    plan, _ = plan_graph_file(SEQUENCE)
    manifests = render_graph_file(SEQUENCE)
    route = one(manifests, "HTTPRoute")
    assert route["metadata"]["name"] == plan.name
    assert route["spec"]["hostnames"] == ["model-chainer.default.example.com"]
    (rule,) = route["spec"]["rules"]
    assert "filters" not in rule
    revision = one(manifests, "Deployment")["metadata"]["name"]
    assert [ref["name"] for ref in rule["backendRefs"]] == [revision]
    assert {s["metadata"]["name"] for s in of_kind(manifests, "Service")} == {
        plan.name,  # KServe's graph Service: <graph>.<namespace>
        revision,
    }


def test_the_graphs_resources_and_scaling_are_its_routers() -> None:
    parsed = graph(
        SEQUENTIAL_STEP,
        metadata={"annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
        minReplicas=2,
        maxReplicas=5,
        scaleMetric="cpu",
        scaleTarget=60,
        resources={"requests": {"cpu": "250m"}, "limits": {"memory": "512Mi"}},
    )
    manifests = render(parsed)
    for manifest in manifests:
        validate_manifest(manifest)
    assert router(manifests)["resources"] == {
        "requests": {"cpu": "250m"},
        "limits": {"memory": "512Mi"},
    }
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 5)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"] == {
        "name": "cpu",
        "target": {"type": "Utilization", "averageUtilization": 60},
    }
    budget = one(manifests, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == {INFERENCEGRAPH: "g", COMPONENT: "router"}


def test_a_router_at_fixed_replicas_has_no_autoscaler() -> None:
    annotations = {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "serving.kserve.io/autoscalerClass": "none",
    }
    manifests = render(graph(SEQUENTIAL_STEP, metadata={"annotations": annotations}, minReplicas=2))
    assert {m["kind"] for m in manifests} == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "HTTPRoute",
    }
    assert one(manifests, "Deployment")["spec"]["replicas"] == 2


def test_a_router_that_cannot_scale_out_has_no_disruption_budget() -> None:
    manifests = render(graph(SEQUENTIAL_STEP, minReplicas=1, maxReplicas=1))
    assert "PodDisruptionBudget" not in {m["kind"] for m in manifests}
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 1)


def test_a_cpu_scale_metric_scales_the_router_on_its_cpu() -> None:
    """KServe's Splitter sample: ``scaleMetric: cpu`` in the default (Knative) mode."""
    manifests = render_graph_file(CONTROL_SAMPLES / "graphs" / "splitter.yaml")
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 3)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    zero = graph(SEQUENTIAL_STEP, minReplicas=0, scaleMetric="cpu", scaleTarget=70)
    scaled = one(render(zero), "ScaledObject")
    validate_manifest(scaled)
    assert scaled["spec"]["triggers"][0] == {
        "type": "cpu",
        "metricType": "Utilization",
        "metadata": {"value": "70"},
    }


def test_dollar_signs_reach_the_router_as_planned() -> None:
    """Kubernetes expands ``$(VAR)`` and ``$$`` in args: the router must read its JSON as is."""
    url = "http://scorer.example.com/v1/$(NAME)/$$id/$response"
    parsed = graph({"root": {"routerType": "Sequence", "steps": [{"serviceUrl": url}]}})
    plan = control.plan_graph(parsed, {})
    planned = plan.components[0].revision.process.args
    rendered = spec_argument(router(render(parsed)))
    assert "$$(NAME)" in rendered  # escaped: no variable reference is left
    assert kubernetes_expand(rendered) == planned[planned.index("--spec") + 1]
    assert (
        json.loads(kubernetes_expand(rendered))["graph"]["spec"]["nodes"]["root"]["steps"][0][
            "serviceUrl"
        ]
        == url
    )


def test_a_name_too_long_for_a_service_is_refused_naming_the_graph() -> None:
    name = "g" + "x" * 62  # 63: the graph is valid, its revision Service name is not
    with pytest.raises(ValidationError) as caught:
        render(graph(SEQUENTIAL_STEP, name=name))
    assert caught.value.errors[0].field == "metadata.name"
    assert f"InferenceGraph ns/{name}" in str(caught.value)


def test_rendering_is_byte_identical() -> None:
    assert manifests_yaml(render_graph_file(SEQUENCE)) == manifests_yaml(
        render_graph_file(SEQUENCE)
    )


# -- modelhost render -f ---------------------------------------------------------------------


def run_render(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[Manifest], str]:
    code = main(["render", *args])
    out, err = capsys.readouterr()
    return code, [d for d in yaml.safe_load_all(out) if d], err


def test_render_prints_the_services_and_the_graph_resolved_from_the_file(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, documents, err = run_render(capsys, "-f", str(SEQUENCE))
    assert code == 0
    assert err == ""
    owners = [
        d["metadata"]["labels"].get(INFERENCESERVICE) or d["metadata"]["labels"][INFERENCEGRAPH]
        for d in documents
    ]
    # In the file's order: both services, then the graph.
    assert list(dict.fromkeys(owners)) == ["sklearn-iris", "xgboost-iris", "model-chainer"]
    routers = [d for d in documents if INFERENCEGRAPH in d["metadata"]["labels"]]
    assert routers == render_graph_file(SEQUENCE)
    (deployment,) = of_kind(routers, "Deployment")
    assert planned_services(deployment) == frozenset({"sklearn-iris", "xgboost-iris"})


def test_a_graph_without_its_services_renders_with_a_note(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, documents, err = run_render(capsys, "-f", str(SWITCH), "--namespace", "models")
    assert code == 0
    assert "InferenceGraph models/model-switch" in err
    assert "sklearn-iris, xgboost-iris" in err
    assert "503" in err
    assert {d["metadata"]["namespace"] for d in documents} == {"models"}
    (deployment,) = of_kind(documents, "Deployment")
    assert planned_services(deployment) == frozenset()
    for document in documents:
        validate_manifest(document)


def test_a_graph_sees_only_the_files_services_of_its_namespace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = SEQUENCE.read_text().replace(
        "kind: InferenceService\nmetadata:\n  name: xgboost-iris\n",
        "kind: InferenceService\nmetadata:\n  name: xgboost-iris\n  namespace: elsewhere\n",
    )
    assert "namespace: elsewhere" in text
    path = tmp_path / "graph.yaml"
    path.write_text(text)
    code, documents, err = run_render(capsys, "-f", str(path))
    assert code == 0
    assert "calls InferenceService xgboost-iris, not in" in err
    (deployment,) = [
        d for d in of_kind(documents, "Deployment") if INFERENCEGRAPH in d["metadata"]["labels"]
    ]
    assert planned_services(deployment) == frozenset({"sklearn-iris"})
