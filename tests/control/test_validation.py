"""KServe's validating webhooks: each rule's error names its field and says what is allowed."""

from __future__ import annotations

from typing import Any

import pytest
from control_support import SAMPLES, fmt, isvc, runtime, sample, sklearn

from modelhost.control import (
    InferenceService,
    PlatformConfig,
    ValidationError,
    apply_defaults,
    builtin_runtimes,
    validate_inference_service,
    validate_serving_runtime,
)
from modelhost.errors import InvalidInput, http_status

MODE = "serving.kserve.io/deploymentMode"
STANDARD = {MODE: "Standard"}


def errors_of(
    source: InferenceService, previous: InferenceService | None = None, **config: Any
) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate_inference_service(apply_defaults(source), PlatformConfig(**config), previous)
    return caught.value


def single_error(source: InferenceService, **kwargs: Any) -> tuple[str, str]:
    error = errors_of(source, **kwargs)
    assert len(error.errors) == 1, error.errors
    return error.field, error.errors[0].message


def valid(source: InferenceService, previous: InferenceService | None = None) -> None:
    validate_inference_service(apply_defaults(source), PlatformConfig(), previous)


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_samples_are_valid(path) -> None:
    for obj in sample(path.name):
        if isinstance(obj, InferenceService):
            valid(obj)


@pytest.mark.parametrize("name", ["Iris", "1iris", "iris_v2", "iris-", "iris.v2"])
def test_name_must_start_with_a_letter_and_be_lower_case(name: str) -> None:
    field, message = single_error(isvc(sklearn(), name=name))
    assert field == "metadata.name"
    assert f'The InferenceService "{name}" is invalid' in message
    assert "must start with alphabetical character" in message


def test_missing_predictor() -> None:
    assert single_error(isvc(None))[0] == "spec.predictor"


def test_exactly_one_implementation() -> None:
    both = {**sklearn(), "xgboost": {"storageUri": "gs://b/x"}}
    field, message = single_error(isvc(both))
    assert field == "spec.predictor"
    assert message.startswith("exactly one of [sklearn, xgboost, tensorflow")
    assert "must be specified in PredictorSpec; found xgboost, model" in message
    field, message = single_error(isvc({"minReplicas": 1}))
    assert message.endswith("found none")


def test_collocated_transformer_container_is_not_a_custom_predictor() -> None:
    collocated = {
        **sklearn(),
        "containers": [{"name": "transformer-container", "image": "example/t:1"}],
    }
    valid(isvc(collocated))
    collocated["containers"][0]["env"] = [{"name": "STORAGE_URI", "value": "gs://b/t"}]
    field, message = single_error(isvc(collocated))
    assert field == "spec.predictor.containers[0].env[0]"
    assert "must not set STORAGE_URI" in message


@pytest.mark.parametrize(
    ("predictor", "field", "message"),
    [
        ({"minReplicas": -1}, "spec.predictor.minReplicas", "MinReplicas cannot be less than 0."),
        ({"maxReplicas": -1}, "spec.predictor.maxReplicas", "MaxReplicas cannot be less than 0."),
        (
            {"minReplicas": 3, "maxReplicas": 2},
            "spec.predictor.minReplicas",
            "MinReplicas cannot be greater than MaxReplicas.",
        ),
        (
            {"containerConcurrency": -1},
            "spec.predictor.containerConcurrency",
            "Parallelism cannot be less than 0.",
        ),
        ({"timeout": -5}, "spec.predictor.timeout", "seconds >= 0"),
        ({"canaryTrafficPercent": 101}, "spec.predictor.canaryTrafficPercent", "between 0 and 100"),
        ({"logger": {"mode": "everything"}}, "spec.predictor.logger.mode", "Invalid logger type"),
        (
            {"logger": {"mode": "all", "storage": {"path": "/logs"}}},
            "spec.predictor.logger.storage",
            "needs parameters, key",
        ),
        ({"batcher": {"maxBatchSize": 0}}, "spec.predictor.batcher.maxBatchSize", "at least 1"),
        ({"scaleMetric": "gpu"}, "spec.predictor.scaleMetric", "supported values: cpu, memory"),
        ({"scaleMetric": "cpu"}, "spec.predictor.scaleMetric", "concurrency or rps, not 'cpu'"),
        ({"scaleMetric": "rps", "scaleTarget": 0}, "spec.predictor.scaleTarget", "at least 1"),
        (
            {"deploymentStrategy": {"type": "Recreate"}},
            "spec.predictor.deploymentStrategy",
            "only supported for raw deployment mode",
        ),
        ({"scaleMetricType": "Average"}, "spec.predictor.scaleMetricType", "Utilization"),
    ],
)
def test_component_extension_rules(predictor: dict[str, Any], field: str, message: str) -> None:
    got_field, got_message = single_error(isvc({**sklearn(), **predictor}))
    assert got_field == field
    assert message in got_message


def test_logger_without_mode_is_kserves_documented_default() -> None:
    valid(isvc({**sklearn(), "logger": {"url": "http://sink"}}))


def test_max_replicas_zero_means_unlimited() -> None:
    valid(isvc({**sklearn(), "minReplicas": 5, "maxReplicas": 0}))


@pytest.mark.parametrize(
    ("predictor", "annotations", "field", "message"),
    [
        ({"scaleMetric": "concurrency"}, STANDARD, "spec.predictor.scaleMetric", "cpu or memory"),
        (
            {"scaleMetric": "cpu", "scaleTarget": 150},
            STANDARD,
            "spec.predictor.scaleTarget",
            "1-100",
        ),
        (
            {"scaleMetric": "memory", "scaleTarget": 0},
            STANDARD,
            "spec.predictor.scaleTarget",
            "at least 1",
        ),
        (
            {"autoScaling": {"metrics": [{"type": "External"}]}},
            STANDARD,
            "spec.predictor.autoScaling.metrics[0].type",
            "Resource metrics only",
        ),
        (
            {"scaleMetric": "cpu"},
            {**STANDARD, "serving.kserve.io/autoscalerClass": "keda"},
            "spec.predictor.scaleMetric",
            "keda",
        ),
        (
            {"scaleMetric": "rps"},
            {"autoscaling.knative.dev/class": "hpa.autoscaling.knative.dev"},
            "spec.predictor.scaleMetric",
            "cpu or memory",
        ),
    ],
)
def test_autoscaling_rules_depend_on_the_mode(
    predictor: dict[str, Any], annotations: dict[str, str], field: str, message: str
) -> None:
    got_field, got_message = single_error(isvc({**sklearn(), **predictor}, annotations=annotations))
    assert (got_field, message in got_message) == (field, True)


def test_autoscaling_that_each_mode_allows() -> None:
    valid(isvc({**sklearn(), "scaleMetric": "memory", "scaleTarget": 512}, annotations=STANDARD))
    external = {**STANDARD, "serving.kserve.io/autoscalerClass": "external"}
    valid(isvc({**sklearn(), "scaleMetric": "concurrency"}, annotations=external))
    valid(isvc({**sklearn(), "scaleMetric": "rps", "scaleTarget": 50, "minReplicas": 0}))


def test_annotations() -> None:
    field, message = single_error(
        isvc(sklearn(), annotations={"serving.kserve.io/autoscalerClass": "kpa"})
    )
    assert field == "metadata.annotations[serving.kserve.io/autoscalerClass]"
    assert "[kpa] is not a supported autoscaler class type" in message
    field, message = single_error(isvc(sklearn(), annotations={MODE: "Serverful"}))
    assert field == f"metadata.annotations[{MODE}]"
    assert "Standard, Knative, ModelMesh, RawDeployment, Serverless" in message
    assert (
        "not supported by modelhost"
        in single_error(isvc(sklearn(), annotations={MODE: "ModelMesh"}))[1]
    )


def test_blocked_environment_variable_in_every_component() -> None:
    source = isvc(
        sklearn(env=[{"name": "PYTHONPATH", "value": "/x"}]),
        transformer={
            "containers": [
                {
                    "image": "t",
                    "env": [{"name": "OK", "value": "1"}, {"name": "PYTHONPATH", "value": "/y"}],
                }
            ]
        },
    )
    error = errors_of(source)
    assert [e.field for e in error.errors] == [
        "spec.predictor.model.env[0].name",
        "spec.transformer.containers[0].env[1].name",
    ]


def test_model_fields() -> None:
    field, message = single_error(isvc(sklearn(name="my-container")))
    assert (field, message) == (
        "spec.predictor.model.name",
        "the 'name' field is not allowed in standard predictor",
    )
    field, message = single_error(isvc(sklearn(protocolVersion="v3")))
    assert field == "spec.predictor.model.protocolVersion"
    assert message == "Invalid protocol v3. Must be one of [v1, v2, grpc-v1, grpc-v2]"
    source = isvc({"model": {"modelFormat": {"version": "1"}, "storageUri": "gs://b/m"}})
    assert single_error(source)[0] == "spec.predictor.model.modelFormat.name"


@pytest.mark.parametrize(
    "uri", ["gs://b/m", "s3://b/m", "pvc://claim/m", "hf://org/m", "oci://r/m:1", "./local", "/abs"]
)
def test_supported_storage_uris(uri: str) -> None:
    valid(isvc(sklearn(uri)))


def test_unsupported_storage_uri() -> None:
    field, message = single_error(isvc(sklearn("ftp://host/model")))
    assert field == "spec.predictor.model.storageUri"
    assert message.startswith("storageUri, must be one of: [gs://, s3://")
    assert message.endswith("StorageUri [ftp://host/model] is not supported.")


def test_storage_uris_rules() -> None:
    both = {**sklearn(), "storageUris": [{"uri": "gs://b/a"}]}
    assert single_error(isvc(both)) == (
        "spec.predictor.storageUris",
        "storageUri and storageUris cannot be used together",
    )
    custom = {"containers": [{"image": "m"}]}
    relative = {**custom, "storageUris": [{"uri": "gs://b/a", "mountPath": "models"}]}
    assert single_error(isvc(relative))[0] == "spec.predictor.storageUris[0].mountPath"
    dotted = {**custom, "storageUris": [{"uri": "gs://b/a", "mountPath": "/mnt/../etc"}]}
    assert single_error(isvc(dotted))[0] == "spec.predictor.storageUris[0].mountPath"
    apart = {
        **custom,
        "storageUris": [
            {"uri": "gs://b/a", "mountPath": "/a"},
            {"uri": "gs://b/b", "mountPath": "/b"},
        ],
    }
    assert "common parent" in single_error(isvc(apart))[1]
    together = {
        **custom,
        "storageUris": [
            {"uri": "gs://b/a", "mountPath": "/m/a"},
            {"uri": "gs://b/b", "mountPath": "/m/b"},
        ],
    }
    valid(isvc(together))
    pvcs = {
        **custom,
        "storageUris": [
            {"uri": "pvc://a/x", "mountPath": "/p"},
            {"uri": "pvc://b/y", "mountPath": "/p"},
        ],
    }
    assert single_error(isvc(pvcs))[0] == "spec.predictor.storageUris[1].mountPath"


def test_worker_spec_rules() -> None:
    predictor = {
        "model": {"modelFormat": {"name": "huggingface"}, "storageUri": "hf://org/llm"},
        "workerSpec": {
            "tensorParallelSize": 0,
            "containers": [
                {"name": "a"},
                {"name": "b", "env": [{"name": "TENSOR_PARALLEL_SIZE", "value": "2"}]},
            ],
        },
    }
    fields = [e.field for e in errors_of(isvc(predictor)).errors]
    assert fields == [
        "spec.predictor.workerSpec.containers",
        "spec.predictor.workerSpec",
        "spec.predictor.model.storageUri",
        "spec.predictor.workerSpec.tensorParallelSize",
    ]


def test_transformer_and_explainer_one_of() -> None:
    field, message = single_error(isvc(sklearn(), transformer={"minReplicas": 1}))
    assert field == "spec.transformer"
    assert message == "exactly one of [containers] must be specified in TransformerSpec; found none"
    both = {"art": {"type": "SquareAttack"}, "containers": [{"image": "e"}]}
    assert (
        "ExplainerSpec; found art, containers" in single_error(isvc(sklearn(), explainer=both))[1]
    )
    field, message = single_error(isvc(sklearn(), explainer={"art": {"type": "Lime"}}))
    assert (field, message) == ("spec.explainer.art.type", "must be one of SquareAttack")


def test_every_problem_is_reported_at_once() -> None:
    source = isvc(
        {**sklearn("ftp://x/y"), "minReplicas": -1, "logger": {"mode": "loud"}},
        name="Bad_Name",
    )
    error = errors_of(source)
    assert [e.field for e in error.errors] == [
        "metadata.name",
        "spec.predictor.model.storageUri",
        "spec.predictor.minReplicas",
        "spec.predictor.logger.mode",
    ]
    assert error.field == "metadata.name"
    assert str(error).startswith("InferenceService default/Bad_Name is invalid (4 problems):")
    assert isinstance(error, InvalidInput)
    assert http_status(error) == 400


def test_deployment_mode_cannot_change_on_update() -> None:
    previous = isvc(sklearn(), status={"deploymentMode": "Knative"})
    field, message = single_error(isvc(sklearn(), annotations=STANDARD), previous=previous)
    assert field == f"metadata.annotations[{MODE}]"
    assert message == "update rejected: deploymentMode cannot be changed from Knative to Standard"
    # The legacy name of the same mode is the same mode (KServe issue #5885).
    valid(isvc(sklearn(), annotations={MODE: "Serverless"}), previous=previous)
    valid(isvc(sklearn()), previous=isvc(sklearn()))


def test_predictor_name_changes_only_with_the_model() -> None:
    previous = isvc({**sklearn("gs://b/v1"), "name": "blue"})
    field, _ = single_error(isvc({**sklearn("gs://b/v1"), "name": "green"}), previous=previous)
    assert field == "spec.predictor.name"
    valid(isvc({**sklearn("gs://b/v2"), "name": "green"}), previous=previous)


def test_spec_canary_rules() -> None:
    canary = [
        {"predictor": {"name": "v2", "model": {"storageUri": "gs://b/v2"}}, "trafficPercent": 10}
    ]
    field, message = single_error(isvc(sklearn(), canary=canary))
    assert (field, message) == ("spec.canary", "spec.canary needs the Standard deployment mode")
    valid(isvc(sklearn(), canary=canary, annotations=STANDARD))
    bad = [
        {"predictor": {"model": {"storageUri": "gs://b/x"}}, "trafficPercent": 50},
        {"predictor": {"name": "v2", "maxReplicas": 3, "minReplicas": 2}, "trafficPercent": 40},
        {"predictor": {"name": "v2"}, "trafficPercent": 30},
    ]
    fields = [e.field for e in errors_of(isvc(sklearn(), canary=bad, annotations=STANDARD)).errors]
    assert fields == [
        "spec.canary[0].predictor.name",
        "spec.canary[1].predictor.maxReplicas",
        "spec.canary[1].predictor.minReplicas",
        "spec.canary[2].predictor.name",
        "spec.canary",
    ]


def test_builtin_runtimes_are_valid_and_unambiguous() -> None:
    runtimes = builtin_runtimes()
    for rt in runtimes:
        validate_serving_runtime(rt, runtimes)


def test_serving_runtime_shape_rules() -> None:
    broken = runtime(
        "Bad", [fmt("sklearn", "1", 0), fmt("sklearn", "2", 3)], protocols=["v1", "v9"]
    )
    broken.spec.containers[0].name = "server"
    with pytest.raises(ValidationError) as caught:
        validate_serving_runtime(broken)
    assert [e.field for e in caught.value.errors] == [
        "metadata.name",
        "spec.containers",
        "spec.protocolVersions[1]",
        "spec.supportedModelFormats[0].priority",
        "spec.supportedModelFormats[1].priority",
    ]
    assert "ClusterServingRuntime Bad is invalid" in str(caught.value)


def test_serving_runtime_priority_ties_are_refused() -> None:
    existing = runtime("first", [fmt("sklearn", "1", 2)], protocols=["v1", "v2"])
    tie = runtime("second", [fmt("sklearn", "1", 2)], protocols=["v2"])
    with pytest.raises(ValidationError) as caught:
        validate_serving_runtime(tie, [existing])
    assert caught.value.field == "spec.supportedModelFormats[0].priority"
    assert "ClusterServingRuntime first already serves sklearn version 1 with priority 2" in str(
        caught.value
    )
    # No tie: another protocol, another version, another scope, or the runtime itself.
    validate_serving_runtime(
        runtime("grpc", [fmt("sklearn", "1", 2)], protocols=["grpc-v2"]), [existing]
    )
    validate_serving_runtime(runtime("other", [fmt("sklearn", "0", 2)]), [existing])
    validate_serving_runtime(runtime("first", [fmt("sklearn", "1", 2)], namespace="ns"), [existing])
    validate_serving_runtime(runtime("first", [fmt("sklearn", "1", 2)]), [existing])
    disabled = runtime("off", [fmt("sklearn", "1", 2)], disabled=True)
    validate_serving_runtime(disabled, [existing])
