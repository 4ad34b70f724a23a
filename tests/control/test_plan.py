"""The planner: processes, revisions, scaling, routes, logger, batcher (canaries: elsewhere)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from control_support import fmt, isvc, runtime, sample, sample_isvc, sklearn

from modelhost.cli import build_parser
from modelhost.control import (
    ComponentPlan,
    InferenceService,
    PlatformConfig,
    RuntimeSelectionError,
    TrafficSplit,
    ValidationError,
    builtin_runtimes,
    plan,
    to_dict,
)
from modelhost.errors import Unsupported

STANDARD = {"serving.kserve.io/deploymentMode": "Standard"}


def predictor_of(source: InferenceService, **kwargs: Any) -> ComponentPlan:
    component = plan(source, **kwargs).component("predictor")
    assert component is not None
    return component


def test_sklearn_iris_plan() -> None:
    result = plan(sample_isvc("sklearn-iris-v1.yaml"))
    assert (result.name, result.namespace, result.deployment_mode) == (
        "sklearn-iris",
        "default",
        "Knative",
    )
    assert (result.runtime, result.runtime_kind) == (
        "kserve-sklearnserver",
        "ClusterServingRuntime",
    )
    assert (result.protocol, result.model_format, result.entry) == ("v1", "sklearn", "predictor")
    assert result.url == "http://sklearn-iris.default.example.com"
    assert result.address_url == "http://sklearn-iris.default.svc.cluster.local"
    assert result.warnings == ()
    (predictor,) = result.components
    assert predictor.service_name == "sklearn-iris-predictor"
    assert predictor.host == "sklearn-iris-predictor.default.example.com"
    assert predictor.model_name == "sklearn-iris"
    assert re.fullmatch(r"sklearn-iris-predictor-[0-9a-f]{10}", predictor.revision.name)
    assert predictor.traffic == (TrafficSplit(predictor.revision.name, 100, latest=True),)
    process = predictor.revision.process
    assert process.argv == (
        "modelhost",
        "serve",
        "--model_name=sklearn-iris",
        "--model_dir={model_dir}",
        "--runtime=sklearn",
        "--http_port={http_port}",
        "--grpc_port={grpc_port}",
    )
    assert process.storage_uri == "gs://kfserving-examples/models/sklearn/1.0/model"
    assert process.runnable
    assert dict(process.env) == {"INFERENCE_SERVICE_NAME": "sklearn-iris", "PORT": "{http_port}"}
    assert ("limits", "memory", "2Gi") in process.resources


def test_render_fills_only_the_placeholders() -> None:
    source = isvc(sklearn(args=['--option=config={"a": 1}']))
    process = predictor_of(source).revision.process
    argv, env = process.render(http_port=31000, grpc_port=31001)
    assert argv[:2] == ["modelhost", "serve"]
    assert "--model_dir=gs://bucket/iris" in argv
    assert "--http_port=31000" in argv
    assert "--grpc_port=31001" in argv
    assert argv[-1] == '--option=config={"a": 1}'
    assert env["PORT"] == "31000"
    argv, _ = process.render(http_port=1, grpc_port=2, model_dir="/cache/iris")
    assert "--model_dir=/cache/iris" in argv


def test_user_args_env_resources_and_runtime_version_merge_over_the_runtime() -> None:
    source = isvc(
        sklearn(
            args=["--predict_proba"],
            env=[{"name": "OMP_NUM_THREADS", "value": "2"}],
            resources={"limits": {"cpu": "2"}},
            runtimeVersion="9.9",
        )
    )
    process = predictor_of(source).revision.process
    assert process.args[-1] == "--predict_proba"  # runtime args first, then the model's
    assert dict(process.env)["OMP_NUM_THREADS"] == "2"
    assert ("limits", "cpu", "2") in process.resources
    assert ("requests", "cpu", "1") in process.resources
    assert process.image == "modelhost/modelhost-tabular:9.9"


def test_protocol_comes_from_the_spec_or_the_runtimes_lowest() -> None:
    assert predictor_of(sample_isvc("sklearn-iris-v2.yaml")).revision.protocol == "v2"
    assert predictor_of(isvc({"huggingface": {"storageUri": "hf://o/m"}})).revision.protocol == "v2"
    listed = runtime("two-then-one", [fmt("tabular", priority=1)], protocols=["grpc-v2", "v2"])
    # Auto-selection asks for v1 when unset, so a v2-only runtime serves only when named.
    model = {"modelFormat": {"name": "tabular"}, "storageUri": "gs://b/m"}
    with pytest.raises(RuntimeSelectionError):
        plan(isvc({"model": model}), [listed])
    named = isvc({"model": {**model, "runtime": "two-then-one"}})
    assert predictor_of(named, runtimes=[listed]).revision.protocol == "v2"


def test_mlserver_templates_render_the_model_format() -> None:
    process = predictor_of(sample_isvc("sklearn-iris-v2.yaml")).revision.process
    assert "--runtime=sklearn" in process.args


def test_a_kserve_runtime_image_keeps_its_own_flags_and_mount() -> None:
    runtime_object, service = sample("runtime-and-service.yaml")
    predictor = predictor_of(service, runtimes=[*builtin_runtimes(), runtime_object])
    process = predictor.revision.process
    assert process.args == (
        "--model_name=sklearn-v2-iris",
        "--model_dir={model_dir}",
        "--http_port={http_port}",
    )
    assert process.image == "kserve/sklearnserver:latest"
    assert not process.runnable  # the image's entrypoint: Kubernetes only


def test_server_type_defaults_of_kserve_runtimes() -> None:
    mlserver = runtime("kserve-mlserver", [fmt("sklearn", "1", 2)], protocols=["v2"])
    source = isvc(sklearn(protocolVersion="v2"))
    env = dict(predictor_of(source, runtimes=[mlserver]).revision.process.env)
    assert env["MLSERVER_MODEL_NAME"] == "iris"
    assert env["MLSERVER_MODEL_URI"] == "{model_dir}"
    torchserve = runtime("kserve-torchserve", [fmt("pytorch", "1", 2)], protocols=["v1", "v2"])
    source = isvc({"pytorch": {"storageUri": "gs://b/m", "protocolVersion": "v2"}})
    assert (
        dict(predictor_of(source, runtimes=[torchserve]).revision.process.env)["PROTOCOL_VERSION"]
        == "v2"
    )


def test_unsupported_runtime_template_is_refused() -> None:
    broken = runtime("broken", [fmt("sklearn", priority=1)])
    broken.spec.containers[0].args = ["--x={{ .Spec.Foo }}"]
    with pytest.raises(ValidationError, match="unsupported template"):
        plan(isvc(sklearn()), [broken])


def test_same_spec_same_revision_and_changes_that_make_a_new_one() -> None:
    base = predictor_of(isvc(sklearn())).revision.name
    assert predictor_of(isvc(sklearn())).revision.name == base
    # Traffic and scaling are not the revision: changing them restarts nothing.
    assert (
        predictor_of(
            isvc({**sklearn(), "canaryTrafficPercent": 20, "minReplicas": 3})
        ).revision.name
        == base
    )
    for changed in (
        isvc(sklearn("gs://bucket/iris-2")),
        isvc(sklearn(env=[{"name": "A", "value": "1"}])),
        isvc({**sklearn(), "containerConcurrency": 4}),
        isvc({**sklearn(), "batcher": {}}),
        isvc({**sklearn(), "logger": {"url": "http://sink"}}),
    ):
        assert predictor_of(changed).revision.name != base


def test_knative_scaling_defaults() -> None:
    scaling = predictor_of(isvc(sklearn())).scaling
    assert scaling.autoscaler == "kpa"
    assert (scaling.min_replicas, scaling.max_replicas, scaling.initial_replicas) == (1, 0, 1)
    assert (scaling.metric, scaling.target, scaling.target_utilization) == (
        "concurrency",
        100.0,
        0.7,
    )
    assert (scaling.stable_window_s, scaling.panic_window_s, scaling.panic_threshold) == (
        60.0,
        6.0,
        2.0,
    )
    assert not scaling.scale_to_zero


def test_knative_scaling_from_the_spec() -> None:
    zero = predictor_of(isvc({**sklearn(), "minReplicas": 0, "maxReplicas": 5})).scaling
    assert (zero.min_replicas, zero.max_replicas, zero.initial_replicas, zero.scale_to_zero) == (
        0,
        5,
        1,
        True,
    )
    assert zero.scale_to_zero_grace_s == 30.0
    limited = predictor_of(isvc({**sklearn(), "containerConcurrency": 4})).scaling
    assert (limited.target, limited.container_concurrency) == (4.0, 4)
    rps = predictor_of(isvc({**sklearn(), "scaleMetric": "rps"})).scaling
    assert (rps.metric, rps.target) == ("rps", 200.0)
    target = predictor_of(
        isvc({**sklearn(), "scaleMetric": "concurrency", "scaleTarget": 7})
    ).scaling
    assert target.target == 7.0
    warm = predictor_of(isvc({**sklearn(), "minReplicas": 3})).scaling
    assert warm.initial_replicas == 3


def test_standard_mode_scaling() -> None:
    hpa = predictor_of(isvc({**sklearn(), "minReplicas": 0}, annotations=STANDARD)).scaling
    assert (hpa.autoscaler, hpa.min_replicas, hpa.metric, hpa.target) == ("hpa", 1, "cpu", 80.0)
    assert not hpa.scale_to_zero  # KServe issue #3514: the HPA cannot scale to zero
    keda = {**STANDARD, "serving.kserve.io/autoscalerClass": "keda"}
    scaled = predictor_of(
        isvc({**sklearn(), "minReplicas": 0, "maxReplicas": 4}, annotations=keda)
    ).scaling
    assert (scaled.autoscaler, scaled.min_replicas, scaled.max_replicas, scaled.scale_to_zero) == (
        "keda",
        0,
        4,
        True,
    )
    fixed = {**STANDARD, "serving.kserve.io/autoscalerClass": "none"}
    pinned = predictor_of(
        isvc({**sklearn(), "minReplicas": 2, "maxReplicas": 9}, annotations=fixed)
    ).scaling
    assert (pinned.min_replicas, pinned.max_replicas) == (2, 2)


def test_standard_mode_host_and_address() -> None:
    result = plan(isvc(sklearn(), annotations=STANDARD))
    assert result.host == "iris-default.example.com"
    assert result.component("predictor").host == "iris-predictor-default.example.com"
    assert result.address_url == "http://iris-predictor.default.svc.cluster.local"
    assert result.component("predictor").revision.timeout_s == 60
    assert predictor_of(isvc(sklearn())).revision.timeout_s == 300


def test_configured_domain() -> None:
    config = PlatformConfig(ingress_domain="127.0.0.1.nip.io", url_scheme="https")
    assert plan(isvc(sklearn()), config=config).url == "https://iris.default.127.0.0.1.nip.io"


def test_transformer_chains_to_the_predictor() -> None:
    result = plan(sample_isvc("torch-transformer.yaml"))
    assert result.entry == "transformer"
    transformer = result.component("transformer")
    assert transformer.calls == "predictor"
    assert transformer.model_name == "mnist"
    assert transformer.revision.process.argv == (
        "python",
        "-m",
        "model",
        "--model_name",
        "mnist",
        "--predictor_host",
        "{predictor_host}",
        "--http_port={http_port}",
        "--grpc_port={grpc_port}",
    )
    argv, _ = transformer.revision.process.render(
        http_port=1, grpc_port=2, predictor_host="127.0.0.1:9"
    )
    assert argv[6] == "127.0.0.1:9"
    host = "torch-transformer.default.example.com"
    assert result.routes[0].component == "transformer"
    assert result.routes[0].host == host
    routed = {(r.host, r.component) for r in result.routes if r.host}
    assert ("torch-transformer-predictor.default.example.com", "predictor") in routed
    assert ("torch-transformer-transformer.default.example.com", "transformer") in routed


def test_transformer_flags_are_not_repeated_and_workers_follow_concurrency() -> None:
    transformer = {
        "containerConcurrency": 3,
        "containers": [
            {
                "image": "t",
                "command": ["python", "-m", "t"],
                "args": ["--predictor_host=elsewhere:80", "--http_port", "8080"],
            }
        ],
    }
    process = (
        plan(isvc(sklearn(), transformer=transformer)).component("transformer").revision.process
    )
    assert process.args == (
        "--predictor_host=elsewhere:80",
        "--http_port={http_port}",
        "--model_name",
        "iris",
        "--workers",
        "3",
        "--grpc_port={grpc_port}",
    )


def test_explainer_routes_and_upstream() -> None:
    result = plan(sample_isvc("art-explainer.yaml"))
    explainer = result.component("explainer")
    assert explainer.calls == "predictor"
    assert explainer.revision.process.image == "kserve/art-explainer:latest"
    assert not explainer.revision.process.runnable
    assert list(explainer.revision.process.args[6:]) == [
        "--adversary_type",
        "SquareAttack",
        "--nb_classes",
        "10",
    ]
    first = result.routes[0]
    assert (first.component, first.host, first.path) == (
        "explainer",
        "artserver.default.example.com",
        r"/v1/models/[\w-]+:explain",
    )
    assert re.fullmatch(first.path, "/v1/models/artserver:explain")
    with_transformer = sample_isvc("art-explainer.yaml")
    with_transformer.spec.transformer = sample_isvc("torch-transformer.yaml").spec.transformer
    assert plan(with_transformer).component("explainer").calls == "transformer"


def test_path_routes_by_model_name() -> None:
    result = plan(sample_isvc("art-explainer.yaml"))
    path_routes = [r for r in result.routes if r.host is None]

    def route_for(path: str, model: str | None = None) -> str | None:
        for route in path_routes:
            if re.fullmatch(route.path, path) and (route.model is None or route.model == model):
                return route.component
        return None

    assert route_for("/v1/models/artserver:predict") == "predictor"
    assert route_for("/v1/models/artserver") == "predictor"
    assert route_for("/v1/models/artserver:explain") == "explainer"
    assert route_for("/v2/models/artserver/infer") == "predictor"
    assert route_for("/v2/models/artserver") == "predictor"
    assert route_for("/openai/v1/completions", model="artserver") == "predictor"
    assert route_for("/v1/models/other:predict") is None
    assert route_for("/openai/v1/completions", model="other") is None


def test_logger_and_batcher() -> None:
    source = isvc(
        {
            **sklearn(),
            "logger": {"url": "http://sink.default", "metadataAnnotations": ["team", "absent"]},
            "batcher": {"maxBatchSize": 8},
        },
        annotations={"team": "ml"},
    )
    revision = predictor_of(source).revision
    assert revision.logger.url == "http://sink.default"
    assert revision.logger.mode == "all"
    assert revision.logger.metadata_annotations == (("team", "ml"),)
    assert (revision.batcher.max_batch_size, revision.batcher.max_latency_ms) == (8, 5000)
    assert "--max_batch_size=8" in revision.process.args
    assert "--max_latency_ms=5000" in revision.process.args
    default_sink = predictor_of(isvc({**sklearn(), "logger": {"mode": "response"}})).revision.logger
    assert (default_sink.url, default_sink.mode) == ("http://default-broker", "response")


def test_custom_predictor_with_storage_uri_environment() -> None:
    source = isvc(
        {
            "containers": [
                {
                    "image": "example/m:1",
                    "command": ["python", "-m", "model"],
                    "env": [{"name": "STORAGE_URI", "value": "gs://b/m"}],
                }
            ]
        }
    )
    result = plan(source)
    assert result.runtime is None
    process = result.component("predictor").revision.process
    assert process.argv == ("python", "-m", "model")  # KServe adds no flags to a custom predictor
    assert process.storage_uri == "gs://b/m"
    _, env = process.render(http_port=1, grpc_port=2, model_dir="/cache/m")
    assert (env["STORAGE_URI"], env["PORT"]) == ("/cache/m", "1")


def test_named_predictor_and_stop_annotation() -> None:
    result = plan(
        isvc({**sklearn(), "name": "blue"}, annotations={"serving.kserve.io/stop": "true"})
    )
    assert result.component("predictor").service_name == "iris-blue-predictor"
    assert result.stopped


def test_invalid_objects_and_missing_runtimes_are_refused() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(isvc({**sklearn(), "minReplicas": -1}))
    assert caught.value.field == "spec.predictor.minReplicas"
    with pytest.raises(RuntimeSelectionError):
        plan(isvc(sklearn()), runtimes=[])


def test_planning_is_pure() -> None:
    source = sample_isvc("torch-transformer.yaml")
    before = to_dict(source)
    assert plan(source) == plan(source)
    assert to_dict(source) == before


@pytest.mark.parametrize("format_name", ["sklearn", "xgboost", "lightgbm", "onnx", "pytorch"])
def test_planned_command_is_one_modelhost_serve_accepts(format_name: str) -> None:
    source = isvc(
        {
            "model": {"modelFormat": {"name": format_name}, "storageUri": "s3://b/m"},
            "batcher": {"maxBatchSize": 4, "maxLatency": 20},
        }
    )
    argv, _ = predictor_of(source).revision.process.render(http_port=31000, grpc_port=31001)
    assert argv[:2] == ["modelhost", "serve"]
    args = build_parser().parse_args(argv[1:])
    assert (args.model_dir_flag, args.name, args.runtime) == ("s3://b/m", "iris", format_name)
    assert (args.http_port, args.grpc_port) == (31000, 31001)
    assert (args.max_batch_size, args.max_latency_ms) == (4, 20.0)


def test_initial_scale_annotation() -> None:
    annotated = {"autoscaling.knative.dev/initial-scale": "0"}
    assert (
        predictor_of(
            isvc({**sklearn(), "minReplicas": 0}, annotations=annotated)
        ).scaling.initial_replicas
        == 1
    )
    allowed = PlatformConfig(allow_zero_initial_scale=True)
    scaling = predictor_of(
        isvc({**sklearn(), "minReplicas": 0}, annotations=annotated), config=allowed
    ).scaling
    assert scaling.initial_replicas == 0
    component = {**sklearn(), "annotations": {"autoscaling.knative.dev/initial-scale": "4"}}
    assert predictor_of(isvc(component)).scaling.initial_replicas == 4


def test_collocated_transformer_is_reported() -> None:
    collocated = {
        **sklearn(),
        "containers": [{"name": "transformer-container", "image": "example/t:1"}],
    }
    result = plan(isvc(collocated))
    assert result.component("predictor").revision.process.argv[:2] == ("modelhost", "serve")
    assert "collocated transformer-container" in result.warnings[0]


def test_standard_mode_spec_canary_is_refused_not_ignored() -> None:
    canary = [
        {"predictor": {"name": "v2", "model": {"storageUri": "gs://b/v2"}}, "trafficPercent": 10}
    ]
    with pytest.raises(Unsupported, match=r"spec\.canary"):
        plan(isvc(sklearn(), canary=canary, annotations=STANDARD))
