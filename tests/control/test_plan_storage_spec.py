"""The planner and KServe's storage spec (``model.storage: {key, path, parameters}``).

The plan carries the spec to the executor (the Secret's key, the path, the parameters); an
executor with a Secret store (Kubernetes: ``storage_spec_secret`` set) resolves it, the
embedded platform (``PlatformConfig()``, no Secret store) refuses a model only the Secret
can locate, naming the field.
"""

from __future__ import annotations

from typing import Any

import pytest
from control_support import isvc

from modelhost.control import PlatformConfig, ValidationError, plan
from modelhost.control.plan_types import StorageSpecPlan

WITH_SECRETS = PlatformConfig(storage_spec_secret="storage-config")


def storage_model(storage: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"model": {"modelFormat": {"name": "sklearn"}, "storage": storage, **fields}}


KSERVE_SAMPLE = {"key": "localMinIO", "path": "sklearn", "parameters": {"bucket": "example-models"}}


def test_the_plan_carries_the_storage_spec_to_the_executor() -> None:
    planned = plan(isvc(storage_model(KSERVE_SAMPLE)), config=WITH_SECRETS)
    process = planned.components[0].revision.process
    assert process.storage == StorageSpecPlan(
        secret="storage-config",
        key="localMinIO",
        path="sklearn",
        parameters=(("bucket", "example-models"),),
    )
    assert process.storage_uri is None
    assert process.fetches_model
    # The server reads the fetched folder, wherever the executor puts it.
    assert "--model_dir={model_dir}" in process.args
    assert planned.warnings == ()


@pytest.mark.parametrize(
    ("parameters", "key"),
    [({}, "default"), ({"type": "s3", "bucket": "b"}, "default_s3")],
)
def test_without_a_key_kserves_fallback_key_may_be_missing(
    parameters: dict[str, str], key: str
) -> None:
    planned = plan(
        isvc(storage_model({"path": "/m", "parameters": parameters})), config=WITH_SECRETS
    )
    storage = planned.components[0].revision.process.storage
    assert storage is not None
    assert (storage.key, storage.key_optional, storage.path) == (key, True, "m")


def test_a_storage_spec_beside_a_storage_uri_brings_its_credentials() -> None:
    source = isvc(storage_model({"key": "minio"}, storageUri="s3://models/iris"))
    process = plan(source, config=WITH_SECRETS).components[0].revision.process
    assert process.storage_uri == "s3://models/iris"
    assert process.storage == StorageSpecPlan("storage-config", "minio")


def test_a_change_of_the_storage_spec_is_a_new_revision() -> None:
    def revision(storage: dict[str, Any]) -> str:
        planned = plan(isvc(storage_model(storage)), config=WITH_SECRETS)
        return planned.components[0].revision.name

    first = revision(KSERVE_SAMPLE)
    assert revision(KSERVE_SAMPLE) == first
    assert revision({**KSERVE_SAMPLE, "path": "sklearn/v2"}) != first
    assert revision({**KSERVE_SAMPLE, "key": "otherMinIO"}) != first
    assert revision({**KSERVE_SAMPLE, "parameters": {"bucket": "other"}}) != first


def test_a_storage_spec_without_path_or_uri_names_the_path() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(isvc(storage_model({"key": "minio"})), config=WITH_SECRETS)
    assert caught.value.field == "spec.predictor.model.storage.path"


def test_the_embedded_platform_refuses_a_model_only_a_secret_can_locate() -> None:
    with pytest.raises(ValidationError) as caught:
        plan(isvc(storage_model(KSERVE_SAMPLE)))
    assert caught.value.field == "spec.predictor.model.storage"
    assert "no Secret store" in str(caught.value)
    assert "storageUri" in str(caught.value)


def test_the_embedded_platform_fetches_a_storage_uri_with_its_own_credentials() -> None:
    planned = plan(isvc(storage_model({"key": "minio"}, storageUri="s3://models/iris")))
    process = planned.components[0].revision.process
    assert (process.storage_uri, process.storage) == ("s3://models/iris", None)
    (warning,) = planned.warnings
    assert warning.startswith("spec.predictor.model.storage: ignored")


def test_schema_path_is_modelmeshs_and_said_to_be_unused() -> None:
    source = isvc(storage_model({**KSERVE_SAMPLE, "schemaPath": "schema.json"}))
    (warning,) = plan(source, config=WITH_SECRETS).warnings
    assert warning.startswith("spec.predictor.model.storage.schemaPath")
