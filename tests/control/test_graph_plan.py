"""The planner of an InferenceGraph: the router's process, its config, its routes and scaling."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modelhost import control
from modelhost.control import InferenceGraph, InferenceService, ServicePlan, ValidationError

SAMPLES = Path(__file__).parent / "samples" / "graphs"


def _sequence() -> tuple[InferenceGraph, dict[str, ServicePlan]]:
    objects = control.parse_documents((SAMPLES / "sequence.yaml").read_text())
    services = {o.name: control.plan(o) for o in objects if isinstance(o, InferenceService)}
    graph = next(o for o in objects if isinstance(o, InferenceGraph))
    return graph, services


def _config(plan: ServicePlan) -> dict[str, object]:
    args = plan.components[0].revision.process.args
    spec = args[args.index("--spec") + 1]
    loaded: dict[str, object] = json.loads(spec)
    return loaded


def test_the_router_runs_modelhost_graph_with_the_graph_and_its_services() -> None:
    graph, services = _sequence()
    plan = control.plan_graph(graph, services)
    assert [c.component for c in plan.components] == [control.ROUTER_COMPONENT]
    router = plan.components[0]
    process = router.revision.process
    assert process.command == ("modelhost",)
    assert process.args[0] == "graph"
    assert process.args[-4:] == ("--http-port", "{http_port}", "--gateway", "{predictor_host}")
    assert process.image is not None
    assert "modelhost-tabular" in process.image
    assert not process.fetches_model
    config = _config(plan)
    assert config["graph"] == {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "InferenceGraph",
        "metadata": {"name": "model-chainer", "namespace": "default"},
        "spec": json.loads(json.dumps(control.to_dict(control.apply_graph_defaults(graph))))[
            "spec"
        ],
    }
    assert config["services"] == {
        "sklearn-iris": {
            "host": "sklearn-iris.default.example.com",
            "address": "sklearn-iris.default.svc.cluster.local",
            "protocol": "v1",
            "protocols": ["v1", "v2"],
            "model": "sklearn-iris",
        },
        "xgboost-iris": {
            "host": "xgboost-iris.default.example.com",
            "address": "xgboost-iris.default.svc.cluster.local",
            "protocol": "v1",
            "protocols": ["v1", "v2"],
            "model": "xgboost-iris",
        },
    }


def test_routes_are_the_graph_host_and_its_model_paths() -> None:
    graph, services = _sequence()
    plan = control.plan_graph(graph, services)
    assert plan.url == "http://model-chainer.default.example.com"
    assert plan.routes[0] == control.Route("router", host="model-chainer.default.example.com")
    paths = [route.path for route in plan.routes[1:]]
    assert any(p and re.fullmatch(p, "/v1/models/model-chainer:predict") for p in paths)
    assert any(p and re.fullmatch(p, "/v2/models/model-chainer/infer") for p in paths)
    assert not any(p and re.fullmatch(p, "/v2/models/model-chainer-2/infer") for p in paths)


def test_a_missing_service_is_left_out_and_the_revision_follows_the_services() -> None:
    graph, services = _sequence()
    both = control.plan_graph(graph, services)
    one = control.plan_graph(graph, {"sklearn-iris": services["sklearn-iris"]})
    assert set(_config(one)["services"]) == {"sklearn-iris"}  # type: ignore[arg-type]
    # What the router knows changed: a new revision, so the router restarts with it.
    assert one.components[0].revision.name != both.components[0].revision.name
    again = control.plan_graph(graph, services)
    assert again.components[0].revision.name == both.components[0].revision.name
    # Labels are not in the router's config: relabelling restarts nothing.
    graph.metadata.labels = {"team": "a"}
    relabelled = control.plan_graph(graph, services)
    assert relabelled.components[0].revision.name == both.components[0].revision.name


def test_a_custom_container_service_speaks_only_its_protocol() -> None:
    isvc = control.parse_documents(
        """
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata: {name: custom}
spec:
  predictor:
    containers:
      - name: kserve-container
        image: example/custom:1
"""
    )[0]
    assert isinstance(isvc, InferenceService)
    entry = control.graph_router_config(
        control.parse_documents(
            """
apiVersion: serving.kserve.io/v1alpha1
kind: InferenceGraph
metadata: {name: g}
spec:
  nodes:
    root: {routerType: Sequence, steps: [{serviceName: custom}]}
"""
        )[0],  # type: ignore[arg-type]
        {"custom": control.plan(isvc)},
    )["services"]["custom"]
    assert entry["protocols"] == ["v1"]


def test_scaling_fields_and_resources_reach_the_plan() -> None:
    graph, services = _sequence()
    graph.spec.min_replicas = 0
    graph.spec.max_replicas = 3
    graph.spec.scale_metric = "rps"
    graph.spec.scale_target = 50
    graph.spec.resources = control.objects.ResourceRequirements(
        requests={"cpu": "100m"}, limits={"memory": "1Gi"}
    )
    graph.metadata.annotations = {"serving.kserve.io/deploymentMode": "RawDeployment"}
    plan = control.plan_graph(graph, services)
    scaling = plan.components[0].scaling
    assert plan.deployment_mode == "Standard"
    assert (scaling.max_replicas, scaling.min_replicas) == (3, 1)  # the HPA's floor is 1
    assert plan.components[0].revision.process.resources == (
        ("requests", "cpu", "100m"),
        ("limits", "memory", "1Gi"),
    )
    assert plan.host == "model-chainer-default.example.com"


def test_an_invalid_graph_is_refused_with_its_field_path() -> None:
    graph, services = _sequence()
    graph.spec.nodes["root"].steps[0].weight = 10  # type: ignore[index]
    with pytest.raises(ValidationError) as refused:
        control.plan_graph(graph, services)
    assert "spec.nodes.root.steps[0].weight" in str(refused.value)
