"""KServe's storage spec rendered: the initializer reads the storage Secret's entry.

The plan comes from the real planner; the Secret itself is never read by the renderer (the
kubelet resolves the ``secretKeyRef``), so what is checked is the pod that would read it.
Every variant is also validated against Kubernetes' schema.
"""

from __future__ import annotations

from typing import Any

import yaml
from render_support import SAMPLES, container, of_kind, one, render_file, validate_manifest

from modelhost import control
from modelhost.control import PlatformConfig
from modelhost.control.objects import InferenceService
from modelhost.kube import KubeSettings, render_plan


def _render(document: dict[str, Any], settings: KubeSettings | None = None) -> list[dict[str, Any]]:
    settings = settings or KubeSettings()
    source = control.parse_object(document)
    assert isinstance(source, InferenceService)
    manifests = render_plan(control.plan(source, config=settings.planner), settings)
    for manifest in manifests:
        validate_manifest(manifest)
    return manifests


def _sample() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((SAMPLES / "storage-spec.yaml").read_text())
    return document


def _initializer(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = of_kind(manifests, "Deployment")
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    return init  # type: ignore[no-any-return]


def test_kserves_storage_spec_sample_fetches_through_the_storage_secret() -> None:
    manifests = render_file(SAMPLES / "storage-spec.yaml")
    init = _initializer(manifests)
    assert init["name"] == "storage-initializer"
    assert init["args"] == ["fetch", "--storage-path", "sklearn", "/mnt/models"]
    assert init["env"] == [
        {
            "name": "STORAGE_CONFIG",
            "valueFrom": {"secretKeyRef": {"name": "storage-config", "key": "localMinIO"}},
        },
        {"name": "STORAGE_OVERRIDE_CONFIG", "value": '{"bucket":"example-models"}'},
    ]
    assert init["volumeMounts"] == [
        {"name": "kserve-provision-location", "mountPath": "/mnt/models"}
    ]
    server = container(one(manifests, "Deployment"))
    assert "--model_dir=/mnt/models" in server["args"]
    assert {"name": "kserve-provision-location", "mountPath": "/mnt/models", "readOnly": True} in (
        server["volumeMounts"]
    )


def test_the_secret_is_the_settings_one() -> None:
    settings = KubeSettings(planner=PlatformConfig(storage_spec_secret="team-storage"))
    init = _initializer(_render(_sample(), settings))
    assert init["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "team-storage"
    # A planner config made without one gets KServe's name: a cluster always has Secrets.
    assert KubeSettings(planner=PlatformConfig()).planner.storage_spec_secret == "storage-config"


def test_kserves_fallback_key_is_an_optional_reference() -> None:
    document = _sample()
    document["spec"]["predictor"]["model"]["storage"] = {
        "path": "sklearn",
        "parameters": {"type": "s3", "bucket": "example-models"},
    }
    init = _initializer(_render(document))
    assert init["env"][0]["valueFrom"]["secretKeyRef"] == {
        "name": "storage-config",
        "key": "default_s3",
        "optional": True,
    }


def test_a_storage_uri_with_a_storage_key_fetches_the_uri_with_the_entrys_credentials() -> None:
    document = _sample()
    document["spec"]["predictor"]["model"]["storage"] = {"key": "localMinIO"}
    document["spec"]["predictor"]["model"]["storageUri"] = "s3://example-models/sklearn"
    init = _initializer(_render(document))
    assert init["args"] == ["fetch", "s3://example-models/sklearn", "/mnt/models"]
    assert [variable["name"] for variable in init["env"]] == ["STORAGE_CONFIG"]
