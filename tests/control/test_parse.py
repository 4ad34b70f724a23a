"""Parsing KServe YAML: the samples, many documents per file, and errors that name the field."""

from __future__ import annotations

import json

import pytest
import yaml
from control_support import SAMPLES, sample, sample_isvc

from modelhost.control import (
    ClusterServingRuntime,
    InferenceService,
    ParseError,
    ServingRuntime,
    dump_yaml,
    parse_documents,
    to_dict,
)
from modelhost.errors import InvalidInput, http_status

HEADER = "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: iris\n"


def parse_error(text: str, source: str = "iris.yaml") -> ParseError:
    with pytest.raises(ParseError) as caught:
        parse_documents(text, source)
    return caught.value


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_every_sample_parses_and_round_trips(path) -> None:
    text = path.read_text()
    objects = parse_documents(text, path.name)
    assert objects
    documents = [d for d in yaml.safe_load_all(text) if d is not None]
    # Nothing is lost or renamed: the objects print back as the documents they came from.
    assert [to_dict(o) for o in objects] == documents
    assert parse_documents("---\n".join(dump_yaml(o) for o in objects)) == objects


def test_sklearn_iris_new_schema() -> None:
    isvc = sample_isvc("sklearn-iris-v1.yaml")
    assert isvc.name == "sklearn-iris"
    assert isvc.namespace == "default"  # read as KServe's default until defaulting writes it
    model = isvc.spec.predictor.model
    assert model.model_format.name == "sklearn"
    assert model.storage_uri == "gs://kfserving-examples/models/sklearn/1.0/model"
    assert model.protocol_version is None


def test_v2_and_canary_and_transformer_samples_keep_their_fields() -> None:
    assert sample_isvc("sklearn-iris-v2.yaml").spec.predictor.model.protocol_version == "v2"
    canary = sample_isvc("sklearn-iris-canary.yaml")
    assert canary.spec.predictor.canary_traffic_percent == 10
    assert canary.namespace == "kserve-test"
    assert canary.spec.predictor.model.resources.limits == {"cpu": "100m", "memory": "256Mi"}
    transformer = sample_isvc("torch-transformer.yaml").spec.transformer
    (container,) = transformer.containers
    assert container.command == ["python", "-m", "model"]
    assert container.args == ["--model_name", "mnist"]
    explainer = sample_isvc("art-explainer.yaml").spec.explainer
    assert explainer.art.type == "SquareAttack"
    assert explainer.art.config == {"nb_classes": "10"}


def test_shorthand_sample_keeps_the_framework_field() -> None:
    predictor = sample_isvc("sklearn-iris-shorthand.yaml").spec.predictor
    assert predictor.model is None
    assert predictor.sklearn.storage_uri == "gs://kfserving-samples/models/sklearn/iris"


def test_many_documents_in_one_file_in_order() -> None:
    runtime, isvc = sample("runtime-and-service.yaml")
    assert isinstance(runtime, ServingRuntime)
    assert runtime.namespace == "default"
    assert runtime.spec.supported_model_formats[0].priority == 1
    assert runtime.spec.containers[0].args[0] == "--model_name={{.Name}}"
    assert isinstance(isvc, InferenceService)
    assert isvc.spec.predictor.model.runtime == "kserve-sklearnserver"


def test_empty_documents_and_lists_and_json() -> None:
    cluster = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {"name": "rt", "creationTimestamp": "2024-05-01T10:00:00Z"},
        "spec": {"containers": [{"name": "kserve-container", "image": "x"}]},
    }
    listing = {"apiVersion": "v1", "kind": "List", "items": [cluster, cluster]}
    objects = parse_documents(
        "---\n---\n" + yaml.safe_dump(listing) + "---\n" + json.dumps(cluster)
    )
    assert len(objects) == 3
    assert all(isinstance(o, ClusterServingRuntime) for o in objects)
    assert objects[0].metadata.creation_timestamp.year == 2024


def test_unknown_kind_is_named_with_the_known_ones() -> None:
    error = parse_error("apiVersion: serving.kserve.io/v1alpha1\nkind: TrainedModel\n")
    assert error.field == "kind"
    assert "unknown kind 'TrainedModel'" in str(error)
    assert "InferenceService, ServingRuntime, ClusterServingRuntime" in str(error)
    assert str(error).startswith("iris.yaml document 1 is invalid")


def test_missing_kind_and_wrong_api_version() -> None:
    assert parse_error("metadata: {name: x}\n").field == "kind"
    error = parse_error("apiVersion: serving.kubeflow.org/v1alpha2\nkind: InferenceService\n")
    assert error.field == "apiVersion"
    assert "serving.kserve.io/v1beta1" in str(error)


def test_unknown_field_is_refused_with_its_path_and_a_suggestion() -> None:
    text = HEADER + "spec:\n  predictor:\n    minReplica: 0\n    sklearn: {storageUri: gs://b/m}\n"
    error = parse_error(text)
    assert error.field == "spec.predictor.minReplica"
    assert "did you mean 'minReplicas'?" in str(error)
    assert "document 1 (InferenceService iris)" in str(error)


def test_suggestion_ignores_case() -> None:
    text = HEADER + "spec:\n  predictor:\n    model: {storageURI: gs://b/m}\n"
    error = parse_error(text)
    assert error.field == "spec.predictor.model.storageURI"
    assert "did you mean 'storageUri'?" in str(error)


def test_wrong_type_names_the_field_and_the_types() -> None:
    error = parse_error(HEADER + "spec:\n  predictor:\n    minReplicas: two\n")
    assert error.field == "spec.predictor.minReplicas"
    assert "expected int, got str" in str(error)
    # YAML reads an unquoted 1 as a number; KServe's schema wants a string, as kubectl does.
    error = parse_error(
        HEADER + "spec:\n  predictor:\n    model:\n      modelFormat: {name: sklearn, version: 1}\n"
    )
    assert error.field == "spec.predictor.model.modelFormat.version"


def test_missing_required_field_in_a_list() -> None:
    text = (
        "apiVersion: serving.kserve.io/v1alpha1\nkind: ServingRuntime\nmetadata: {name: r}\n"
        "spec:\n  containers:\n  - name: kserve-container\n    env:\n    - value: x\n"
    )
    assert parse_error(text).field == "spec.containers[0].env[0].name"


def test_second_document_is_reported_as_such() -> None:
    text = HEADER + "spec: {}\n---\n" + HEADER + "spec: {predictor: {bogus: 1}}\n"
    error = parse_error(text)
    assert "document 2" in str(error)
    assert error.field == "spec.predictor.bogus"


def test_invalid_yaml_and_non_mapping_documents() -> None:
    assert "not valid YAML" in str(parse_error("spec: [unclosed\n"))
    assert "expected a mapping" in str(parse_error("- 1\n- 2\n"))


def test_parse_errors_are_client_errors() -> None:
    error = parse_error("kind: Nope\n")
    assert isinstance(error, InvalidInput)
    assert http_status(error) == 400


def test_status_is_lenient_but_kept() -> None:
    text = HEADER + (
        "spec: {predictor: {sklearn: {storageUri: gs://b/m}}}\n"
        "status:\n  url: http://iris.default.example.com\n  somethingNew: 1\n"
        "  components:\n    predictor:\n      latestRolledoutRevision: iris-predictor-00001\n"
    )
    (isvc,) = parse_documents(text)
    assert isvc.status.url == "http://iris.default.example.com"
    assert isvc.status.components["predictor"].latest_rolledout_revision == "iris-predictor-00001"


def test_pod_fields_kserve_allows_are_accepted() -> None:
    text = HEADER + (
        "spec:\n  predictor:\n    serviceAccountName: sa\n    nodeSelector: {gpu: 'true'}\n"
        "    tolerations: [{key: k, operator: Exists}]\n    hostIPC: false\n"
        "    containers:\n    - name: kserve-container\n      image: example/m:1\n"
        "      imagePullPolicy: Always\n      ports: [{containerPort: 8080, hostIP: 0.0.0.0}]\n"
    )
    (isvc,) = parse_documents(text)
    predictor = isvc.spec.predictor
    assert predictor.service_account_name == "sa"
    assert predictor.host_ipc is False
    assert predictor.containers[0].ports[0].host_ip == "0.0.0.0"
    assert to_dict(isvc)["spec"]["predictor"]["hostIPC"] is False


def test_objects_built_in_code_print_their_kind() -> None:
    data = to_dict(InferenceService())
    assert list(data)[:2] == ["apiVersion", "kind"]
    assert data["kind"] == "InferenceService"
    assert parse_documents(dump_yaml(ClusterServingRuntime()))[0] == ClusterServingRuntime()
