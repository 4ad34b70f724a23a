"""KServe's defaulting webhook: what it writes into an InferenceService, in its order."""

from __future__ import annotations

import pytest
from control_support import isvc, sample_isvc, sklearn

from modelhost.control import PlatformConfig, apply_defaults, plan, to_dict
from modelhost.control.defaults import deployment_mode

MODE = "serving.kserve.io/deploymentMode"


def test_shorthand_becomes_model_with_its_format() -> None:
    defaulted = apply_defaults(sample_isvc("sklearn-iris-shorthand.yaml"))
    predictor = defaulted.spec.predictor
    assert predictor.sklearn is None
    assert predictor.model.model_format.name == "sklearn"
    assert predictor.model.storage_uri == "gs://kfserving-samples/models/sklearn/iris"
    # Left unset: the runtime's lowest protocol is chosen when planning, as KServe does.
    assert predictor.model.protocol_version is None
    assert "sklearn" not in to_dict(defaulted)["spec"]["predictor"]


def test_shorthand_keeps_every_container_field() -> None:
    source = isvc(
        {
            "xgboost": {
                "storageUri": "gs://b/m",
                "runtimeVersion": "2.0",
                "args": ["--nthread=2"],
                "env": [{"name": "A", "value": "1"}],
                "resources": {"limits": {"cpu": "2"}},
            }
        }
    )
    model = apply_defaults(source).spec.predictor.model
    assert (model.runtime_version, model.args, model.env[0].value) == ("2.0", ["--nthread=2"], "1")
    assert model.resources.limits == {"cpu": "2"}


@pytest.mark.parametrize("framework", ["onnx", "triton", "huggingface"])
def test_v2_shorthands_default_to_v2(framework: str) -> None:
    defaulted = apply_defaults(isvc({framework: {"storageUri": "gs://b/m"}}))
    assert defaulted.spec.predictor.model.protocol_version == "v2"


def test_explicit_protocol_of_a_v2_shorthand_is_kept() -> None:
    source = isvc({"huggingface": {"storageUri": "hf://org/m", "protocolVersion": "v1"}})
    assert apply_defaults(source).spec.predictor.model.protocol_version == "v1"


@pytest.mark.parametrize(
    ("model_format", "expected"),
    [("triton", "v2"), ("vLLM", "v2"), ("sklearn", None), ("onnx", None)],
)
def test_model_formats_defaulting_to_v2(model_format: str, expected: str | None) -> None:
    source = isvc({"model": {"modelFormat": {"name": model_format}, "storageUri": "gs://b/m"}})
    assert apply_defaults(source).spec.predictor.model.protocol_version == expected


def test_model_format_annotation_is_added_but_never_overwritten() -> None:
    assert apply_defaults(isvc(sklearn())).annotations["modelFormat"] == "sklearn"
    kept = apply_defaults(isvc(sklearn(), annotations={"modelFormat": "mine"}))
    assert kept.annotations["modelFormat"] == "mine"


def test_namespace_defaults_to_default() -> None:
    assert apply_defaults(isvc(sklearn())).metadata.namespace == "default"
    assert apply_defaults(isvc(sklearn(), namespace="team")).metadata.namespace == "team"


@pytest.mark.parametrize(
    ("given", "written"),
    [("RawDeployment", "Standard"), ("Serverless", "Knative"), ("Standard", "Standard")],
)
def test_legacy_deployment_modes_are_renamed(given: str, written: str) -> None:
    defaulted = apply_defaults(isvc(sklearn(), annotations={MODE: given}))
    assert defaulted.annotations[MODE] == written


def test_default_mode_is_written_only_when_not_knative() -> None:
    assert MODE not in apply_defaults(isvc(sklearn())).annotations
    serverless = PlatformConfig(default_deployment_mode="Serverless")
    assert MODE not in apply_defaults(isvc(sklearn()), serverless).annotations
    standard = PlatformConfig(default_deployment_mode="RawDeployment")
    assert apply_defaults(isvc(sklearn()), standard).annotations[MODE] == "Standard"


def test_model_mesh_skips_the_shorthand_conversion() -> None:
    config = PlatformConfig(default_deployment_mode="ModelMesh")
    defaulted = apply_defaults(isvc({"sklearn": {"storageUri": "gs://b/m"}}), config)
    assert defaulted.annotations[MODE] == "ModelMesh"
    assert defaulted.spec.predictor.sklearn is not None
    assert defaulted.spec.predictor.model is None


def test_status_mode_wins_over_annotation_and_default() -> None:
    config = PlatformConfig()
    assert deployment_mode(isvc(sklearn()), config) == "Knative"
    annotated = isvc(sklearn(), annotations={MODE: "RawDeployment"})
    assert deployment_mode(annotated, config) == "Standard"
    recorded = isvc(
        sklearn(), annotations={MODE: "Standard"}, status={"deploymentMode": "Serverless"}
    )
    assert deployment_mode(recorded, config) == "Knative"


def test_custom_container_is_named_and_given_resources() -> None:
    source = isvc(
        {"containers": [{"image": "example/model:1", "resources": {"requests": {"cpu": "100m"}}}]}
    )
    (container,) = apply_defaults(source).spec.predictor.containers
    assert container.name == "kserve-container"
    assert container.resources.requests == {"cpu": "100m", "memory": "2Gi"}
    assert container.resources.limits == {"cpu": "1", "memory": "2Gi"}


def test_transformer_container_of_any_name_becomes_kserve_container() -> None:
    # KServe's torchserve transformer sample names its container kfserving-container.
    source = isvc(
        {"pytorch": {"storageUri": "gs://b/m"}},
        transformer={"containers": [{"name": "kfserving-container", "image": "example/t:1"}]},
    )
    transformer = apply_defaults(source).spec.transformer
    assert transformer.containers[0].name == "kserve-container"
    assert transformer.containers[0].resources.limits == {"cpu": "1", "memory": "2Gi"}


def test_a_named_kserve_container_is_left_among_sidecars() -> None:
    source = isvc(
        {
            "containers": [
                {"name": "sidecar", "image": "example/s:1"},
                {"name": "kserve-container", "image": "example/m:1"},
            ]
        }
    )
    sidecar, main = apply_defaults(source).spec.predictor.containers
    assert sidecar.name == "sidecar"
    assert sidecar.resources is None
    assert main.resources.requests == {"cpu": "1", "memory": "2Gi"}


def test_configured_default_resources_and_art_explainer() -> None:
    config = PlatformConfig(default_cpu="500m", default_memory="1Gi")
    defaulted = apply_defaults(sample_isvc("art-explainer.yaml"), config)
    assert defaulted.spec.explainer.art.resources.requests == {"cpu": "500m", "memory": "1Gi"}


def test_model_containers_get_no_resources_from_defaulting() -> None:
    # They come from the runtime's container when the pod is built.
    assert apply_defaults(isvc(sklearn())).spec.predictor.model.resources is None


def test_defaulting_copies_and_is_idempotent() -> None:
    source = sample_isvc("sklearn-iris-shorthand.yaml")
    before = to_dict(source)
    once = apply_defaults(source)
    assert to_dict(source) == before
    assert apply_defaults(once) == once


def test_reconcile_time_defaults_appear_in_the_plan_not_the_spec() -> None:
    # minReplicas 1 and the concurrency metric are the controller's defaults (Knative mode).
    source = isvc(sklearn())
    assert apply_defaults(source).spec.predictor.min_replicas is None
    scaling = plan(source).component("predictor").scaling
    assert (scaling.min_replicas, scaling.metric) == (1, "concurrency")
