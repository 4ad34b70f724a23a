"""render_plan on KServe's own sample InferenceServices: what each object says.

The plans come from the real planner (``control.plan``) with the built-in runtimes; nothing
is mocked. Validation against Kubernetes' schemas is in test_render_validate.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from render_support import (
    RENDERABLE,
    Manifest,
    container,
    of_kind,
    one,
    plan_file,
    render_file,
    sample,
)

from modelhost import control
from modelhost.kube import KubeSettings, render_plan
from modelhost.kube.labels import COMPONENT, INFERENCESERVICE, MANAGED_BY, REVISION
from modelhost.kube.render import manifests_yaml


def _predictor_deployment(manifests: list[Manifest]) -> Manifest:
    (deployment,) = [
        d
        for d in of_kind(manifests, "Deployment")
        if d["metadata"]["labels"][COMPONENT] == "predictor"
    ]
    return deployment


@pytest.mark.parametrize("path", RENDERABLE, ids=lambda p: f"{p.parent.parent.name}/{p.name}")
def test_every_object_is_labelled_and_in_the_services_namespace(path: Path) -> None:
    plan = plan_file(path)
    manifests = render_plan(plan, KubeSettings())
    assert manifests
    for manifest in manifests:
        meta = manifest["metadata"]
        assert meta["namespace"] == plan.namespace
        assert meta["labels"][MANAGED_BY] == "modelhost"
        assert meta["labels"][INFERENCESERVICE] == plan.name
        assert "ownerReferences" not in meta
    # One Deployment per component (its newest revision), named after the revision.
    deployments = of_kind(manifests, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == sorted(
        c.revision.name for c in plan.components
    )
    for deployment in deployments:
        revision = deployment["metadata"]["name"]
        assert deployment["metadata"]["labels"][REVISION] == revision
        assert deployment["spec"]["template"]["metadata"]["labels"][REVISION] == revision
        assert deployment["spec"]["selector"]["matchLabels"][REVISION] == revision


def test_the_order_is_kind_then_name() -> None:
    manifests = render_file(sample("torch-transformer.yaml"))
    kinds = [m["kind"] for m in manifests]
    assert kinds == sorted(
        kinds,
        key=lambda k: (
            "Service",
            "Deployment",
            "HorizontalPodAutoscaler",
            "ScaledObject",
            "PodDisruptionBudget",
            "HTTPRoute",
        ).index(k),
    )
    services = [m["metadata"]["name"] for m in of_kind(manifests, "Service")]
    assert services == sorted(services)


def test_canary_splits_80_20_between_the_new_and_the_rolled_out_revision() -> None:
    manifests = render_file(sample("canary.yaml"))
    new = _predictor_deployment(manifests)["metadata"]["name"]
    old = "sklearn-iris-predictor-00001"
    # The old revision keeps its Service (its Deployment exists already); no new Deployment.
    assert {s["metadata"]["name"] for s in of_kind(manifests, "Service")} >= {new, old}
    assert len(of_kind(manifests, "Deployment")) == 1
    old_service = one(manifests, "Service", old)
    assert old_service["spec"]["selector"][REVISION] == old
    for name in ("sklearn-iris", "sklearn-iris-predictor"):
        (rule,) = one(manifests, "HTTPRoute", name)["spec"]["rules"]
        weights = {ref["name"]: ref["weight"] for ref in rule["backendRefs"]}
        assert weights == {new: 20, old: 80}


def test_promotion_sends_everything_to_the_new_revision() -> None:
    manifests = render_file(sample("promotion.yaml"))
    new = _predictor_deployment(manifests)["metadata"]["name"]
    (rule,) = one(manifests, "HTTPRoute", "sklearn-iris")["spec"]["rules"]
    assert [(r["name"], r["weight"]) for r in rule["backendRefs"]] == [(new, 100)]
    assert "sklearn-iris-predictor-00001" not in {
        s["metadata"]["name"] for s in of_kind(manifests, "Service")
    }


def test_the_storage_initializer_fetches_into_an_empty_dir_the_server_reads() -> None:
    manifests = render_file(sample("sklearn-iris-v1.yaml"))
    deployment = _predictor_deployment(manifests)
    pod = deployment["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    assert init["name"] == "storage-initializer"
    assert init["command"] == ["modelhost"]
    assert init["args"] == [
        "fetch",
        "gs://kfserving-examples/models/sklearn/1.0/model",
        "/mnt/models",
    ]
    assert init["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
    ]
    assert pod["volumes"] == [{"name": "kserve-provision-location", "emptyDir": {}}]
    server = container(deployment)
    assert server["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True}
    ]
    assert "--model_dir=/mnt/models" in server["args"]
    assert "--http_port=8080" in server["args"]
    assert "--grpc_port=8081" in server["args"]
    assert {"name": "PORT", "value": "8080"} in server["env"]
    assert server["ports"] == [
        {"name": "http1", "containerPort": 8080, "protocol": "TCP"},
        {"name": "h2c", "containerPort": 8081, "protocol": "TCP"},
    ]


def test_an_oci_model_runs_as_kserves_modelcar() -> None:
    manifests = render_file(sample("oci-modelcar.yaml"))
    deployment = _predictor_deployment(manifests)
    pod = deployment["spec"]["template"]["spec"]
    assert pod["shareProcessNamespace"] is True
    assert [c["name"] for c in pod["initContainers"]] == ["modelcar-init"]
    assert pod["initContainers"][0]["image"] == "quay.io/mlops/sklearn-iris:v1"
    sidecar = container(deployment, "modelcar")
    assert sidecar["image"] == "quay.io/mlops/sklearn-iris:v1"
    # $$ is Kubernetes' escape for $: the shell sees $$, its own PID.
    assert sidecar["args"] == [
        "sh",
        "-c",
        "ln -sf /proc/$$$$/root/models /mnt/models && sleep infinity",
    ]
    assert sidecar["volumeMounts"] == [{"name": "kserve-provision-location", "mountPath": "/mnt"}]
    server = container(deployment)
    assert {"name": "MODEL_INIT_MODE", "value": "async"} in server["env"]
    assert server["volumeMounts"] == [{"name": "kserve-provision-location", "mountPath": "/mnt"}]
    assert "--model_dir=/mnt/models" in server["args"]


def test_a_pvc_model_is_mounted_read_only_without_a_copy() -> None:
    manifests = render_file(sample("pvc.yaml"))
    deployment = _predictor_deployment(manifests)
    pod = deployment["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert pod["volumes"] == [
        {
            "name": "kserve-pvc-source",
            "persistentVolumeClaim": {"claimName": "task-pv-claim", "readOnly": True},
        }
    ]
    assert container(deployment)["volumeMounts"] == [
        {
            "name": "kserve-pvc-source",
            "mountPath": "/mnt/models",
            "readOnly": True,
            "subPath": "models/iris",
        }
    ]


def test_probes_follow_the_protocol() -> None:
    v1 = container(_predictor_deployment(render_file(sample("sklearn-iris-v1.yaml"))))
    assert v1["readinessProbe"]["httpGet"]["path"] == "/v1/models/sklearn-iris"
    v2 = container(_predictor_deployment(render_file(sample("sklearn-iris-v2.yaml"))))
    assert v2["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    for server in (v1, v2):
        assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
        assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/live"
        # Ten minutes to load the model before liveness counts.
        startup = server["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] == 600


def test_a_grpc_predictor_is_probed_over_grpc() -> None:
    plan = plan_file(sample("sklearn-iris-v2.yaml"))
    predictor = plan.components[0]
    grpc = dataclasses.replace(
        predictor, revision=dataclasses.replace(predictor.revision, protocol="grpc-v2")
    )
    manifests = render_plan(dataclasses.replace(plan, components=(grpc,)), KubeSettings())
    server = container(_predictor_deployment(manifests))
    assert server["readinessProbe"]["grpc"] == {"port": 8081}
    assert server["livenessProbe"]["grpc"] == {"port": 8081}


def test_containers_run_restricted() -> None:
    deployment = _predictor_deployment(render_file(sample("oci-modelcar.yaml")))
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for item in (*pod["initContainers"], *pod["containers"]):
        security = item["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"] == {"drop": ["ALL"]}


def test_resources_come_from_the_plan() -> None:
    server = container(_predictor_deployment(render_file(sample("autoscaling-hpa.yaml"))))
    assert server["resources"] == {
        "limits": {"cpu": "1", "memory": "1Gi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},
    }


def test_a_transformer_calls_the_predictors_service() -> None:
    manifests = render_file(sample("torch-transformer.yaml"))
    transformer = one(
        manifests,
        "Deployment",
        next(
            d["metadata"]["name"]
            for d in of_kind(manifests, "Deployment")
            if d["metadata"]["labels"][COMPONENT] == "transformer"
        ),
    )
    args = container(transformer)["args"]
    assert args[args.index("--predictor_host") + 1] == "torch-transformer-predictor.default"
    predictor_service = one(manifests, "Service", "torch-transformer-predictor")
    assert predictor_service["spec"]["selector"] == {
        INFERENCESERVICE: "torch-transformer",
        COMPONENT: "predictor",
    }
    http = predictor_service["spec"]["ports"][0]
    assert (http["port"], http["targetPort"]) == (80, 8080)
    # The service's host reaches the transformer; each component has its own host.
    top = one(manifests, "HTTPRoute", "torch-transformer")["spec"]
    assert top["hostnames"] == ["torch-transformer.default.example.com"]
    assert top["rules"][0]["backendRefs"][0]["name"] == transformer["metadata"]["name"]
    assert one(manifests, "HTTPRoute", "torch-transformer-predictor")["spec"]["hostnames"] == [
        "torch-transformer-predictor.default.example.com"
    ]


def test_the_explainer_path_rule_comes_first() -> None:
    manifests = render_file(sample("art-explainer.yaml"))
    rules = one(manifests, "HTTPRoute", "artserver")["spec"]["rules"]
    assert [r["matches"][0]["path"]["value"] for r in rules] == [
        r"^/v1/models/[\w-]+:explain$",
        "^/.*$",
    ]
    assert rules[0]["backendRefs"][0]["name"].startswith("artserver-explainer-")
    assert rules[1]["backendRefs"][0]["name"].startswith("artserver-predictor-")
    explainer = next(
        d
        for d in of_kind(manifests, "Deployment")
        if d["metadata"]["labels"][COMPONENT] == "explainer"
    )
    args = container(explainer)["args"]
    assert args[args.index("--predictor_host") + 1] == "artserver-predictor.default"


def test_request_timeouts_come_from_the_revision() -> None:
    manifests = render_file(sample("batcher.yaml"))
    for route in of_kind(manifests, "HTTPRoute"):
        for rule in route["spec"]["rules"]:
            assert rule["timeouts"] == {"request": "60s"}
    default = render_file(sample("sklearn-iris-v1.yaml"))
    assert one(default, "HTTPRoute", "sklearn-iris")["spec"]["rules"][0]["timeouts"] == {
        "request": "300s"
    }


def test_cpu_scaling_is_an_hpa_on_the_revision() -> None:
    manifests = render_file(sample("autoscaling-hpa.yaml"))
    deployment = _predictor_deployment(manifests)
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    hpa = one(manifests, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 5)
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    # Standard mode: a plain hostname per KServe's domain template.
    assert one(manifests, "HTTPRoute", "sklearn-iris-hpa")["spec"]["hostnames"] == [
        "sklearn-iris-hpa-default.example.com"
    ]


def test_concurrency_scaling_is_a_pods_metric_that_needs_an_adapter() -> None:
    hpa = one(render_file(sample("autoscaling-concurrency.yaml")), "HorizontalPodAutoscaler")
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"] == {"name": "modelhost_requests_in_flight"}
    # Knative's target 1 at its 70% target utilization.
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "700m"}
    assert "metrics adapter" in hpa["metadata"]["annotations"]["modelhost.dev/autoscaling-needs"]


def test_scale_to_zero_is_a_keda_scaled_object() -> None:
    manifests = render_file(sample("scale-to-zero.yaml"))
    assert not of_kind(manifests, "HorizontalPodAutoscaler")
    scaled = one(manifests, "ScaledObject")
    revision = _predictor_deployment(manifests)["metadata"]["name"]
    spec = scaled["spec"]
    assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (0, 3)
    assert spec["scaleTargetRef"]["name"] == revision
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "prometheus"
    assert trigger["metadata"]["serverAddress"] == KubeSettings().prometheus_address
    assert trigger["metadata"]["query"] == (
        f'sum(modelhost_requests_in_flight{{namespace="default",pod=~"{revision}-.*"}})'
    )
    assert trigger["metadata"]["threshold"] == "70"
    assert spec["cooldownPeriod"] == 30


def test_the_keda_autoscaler_class_is_a_scaled_object_on_cpu() -> None:
    scaled = one(render_file(sample("keda.yaml")), "ScaledObject")
    # The sample's autoScaling.metrics: 50%, not the default 80%.
    assert scaled["spec"]["triggers"] == [
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "50"}}
    ]
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (1, 5)


@pytest.mark.parametrize("autoscaler", ["none", "external"])
def test_no_autoscaler_object_for_none_or_external(autoscaler: str) -> None:
    plan = plan_file(sample("autoscaling-hpa.yaml"))
    predictor = plan.components[0]
    scaling = dataclasses.replace(predictor.scaling, autoscaler=autoscaler, min_replicas=2)
    plan = dataclasses.replace(plan, components=(dataclasses.replace(predictor, scaling=scaling),))
    manifests = render_plan(plan, KubeSettings())
    assert not of_kind(manifests, "HorizontalPodAutoscaler")
    assert not of_kind(manifests, "ScaledObject")
    replicas = _predictor_deployment(manifests)["spec"].get("replicas")
    # Fixed replicas are the Deployment's; an external scaler owns them itself.
    assert replicas == (2 if autoscaler == "none" else None)


def test_a_disruption_budget_only_where_more_than_one_replica_may_run() -> None:
    manifests = render_file(sample("autoscaling-hpa.yaml"))
    budget = one(manifests, "PodDisruptionBudget", "sklearn-iris-hpa-predictor")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == {
        INFERENCESERVICE: "sklearn-iris-hpa",
        COMPONENT: "predictor",
    }
    plan = plan_file(sample("autoscaling-hpa.yaml"))
    predictor = plan.components[0]
    single = dataclasses.replace(
        predictor,
        scaling=dataclasses.replace(predictor.scaling, autoscaler="none", min_replicas=1),
    )
    fixed = render_plan(dataclasses.replace(plan, components=(single,)), KubeSettings())
    assert not of_kind(fixed, "PodDisruptionBudget")


def test_a_logger_is_kserves_agent_in_front_of_the_server() -> None:
    manifests = render_file(sample("logger.yaml"))
    deployment = _predictor_deployment(manifests)
    agent = container(deployment, "agent")
    args = agent["args"]
    assert args[args.index("--log-url") + 1] == "http://message-dumper.default/"
    assert args[args.index("--log-mode") + 1] == "all"
    assert args[args.index("--inference-service") + 1] == "sklearn-iris-logger"
    assert args[args.index("--component-port") + 1] == "8080"
    assert agent["ports"] == [{"name": "agent-port", "containerPort": 9081, "protocol": "TCP"}]
    revision = deployment["metadata"]["name"]
    for name in (revision, "sklearn-iris-logger-predictor"):
        assert one(manifests, "Service", name)["spec"]["ports"][0]["targetPort"] == 9081


def test_the_batcher_is_the_servers_own() -> None:
    deployment = _predictor_deployment(render_file(sample("batcher.yaml")))
    args = container(deployment)["args"]
    assert "--max_batch_size=32" in args
    assert "--max_latency_ms=500" in args
    names = [c["name"] for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert names == ["kserve-container"]


def test_a_stopped_service_keeps_its_deployments_at_zero_and_routes_nothing() -> None:
    plan = dataclasses.replace(plan_file(sample("autoscaling-hpa.yaml")), stopped=True)
    manifests = render_plan(plan, KubeSettings())
    assert _predictor_deployment(manifests)["spec"]["replicas"] == 0
    assert {m["kind"] for m in manifests} == {"Deployment", "Service"}


def test_settings_pick_the_gateway_and_images() -> None:
    plan = plan_file(sample("sklearn-iris-v1.yaml"))
    image = plan.components[0].revision.process.image
    assert image is not None
    settings = KubeSettings(
        gateway_namespace="infra",
        gateway_name="public",
        image_overrides={image: "mirror.example/modelhost@sha256:" + "0" * 64},
        initializer_image="mirror.example/fetch:1",
    )
    manifests = render_plan(plan, settings)
    route = one(manifests, "HTTPRoute", "sklearn-iris")
    assert route["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "namespace": "infra",
            "name": "public",
        }
    ]
    deployment = _predictor_deployment(manifests)
    assert container(deployment)["image"].startswith("mirror.example/modelhost@sha256:")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["initContainers"][0]["image"] == "mirror.example/fetch:1"


def test_the_output_is_stable() -> None:
    for path in RENDERABLE:
        first = manifests_yaml(render_file(path))
        second = manifests_yaml(render_file(path))
        assert first == second
        assert "&id" not in first  # no YAML anchors: every object stands alone


def test_a_name_too_long_for_a_service_names_the_field() -> None:
    plan = plan_file(sample("sklearn-iris-v1.yaml"))
    long_name = "a" * 50
    predictor = plan.components[0]
    revision = dataclasses.replace(predictor.revision, name=f"{long_name}-predictor-0123456789")
    component = dataclasses.replace(
        predictor,
        service_name=f"{long_name}-predictor",
        revision=revision,
        traffic=(control.TrafficSplit(revision.name, 100, latest=True),),
    )
    plan = dataclasses.replace(plan, name=long_name, components=(component,))
    with pytest.raises(control.ValidationError) as caught:
        render_plan(plan, KubeSettings())
    assert caught.value.field == "metadata.name"
    assert "63" in str(caught.value)
