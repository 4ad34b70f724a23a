"""The model registry on the embedded platform's gateway, with tokens by role.

A real platform with tokens on; Kubeflow's official Model Registry client (unchanged) talks
to the gateway's port with a deployer's token, and plain HTTP checks who may read and write.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from official_registry_client import official_client
from platform_fixtures import RunningPlatform, start_platform, stop_platform

from modelhost.access import Role, TokenStore

API = "/api/model_registry/v1"


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "home", access={"auth": "tokens"})
    yield running
    stop_platform(running)


def test_the_official_client_registers_through_the_gateway(guarded: RunningPlatform) -> None:
    store = TokenStore(guarded.home / "tokens.db")
    _, deployer = store.create(Role.DEPLOYER)
    address = urlsplit(guarded.url)
    with official_client(
        f"http://{address.hostname}",
        address.port,
        author="ada",
        is_secure=False,
        user_token=deployer,
    ) as registry:
        registry.register_model(
            "iris",
            "gs://kfserving-examples/models/sklearn/1.0/model",
            model_format_name="sklearn",
            model_format_version="1",
            version="v1",
            metadata={"accuracy": 0.97},
        )
        version = registry.get_model_version("iris", "v1")
        assert version is not None
        assert version.custom_properties == {"accuracy": 0.97}
        artifact = registry.get_model_artifact("iris", "v1")
        assert artifact is not None
        assert artifact.uri.startswith("gs://kfserving-examples/")
    # One SQLite file in the platform's home holds it.
    assert (guarded.home / "registry.sqlite").is_file()


def test_reads_need_a_caller_token_and_writes_a_deployer_token(guarded: RunningPlatform) -> None:
    store = TokenStore(guarded.home / "tokens.db")
    _, caller = store.create(Role.CALLER)
    _, deployer = store.create(Role.DEPLOYER)
    body = {"name": "guarded-model"}
    with httpx.Client(base_url=guarded.url + API, timeout=10) as client:
        assert client.get("/registered_models").status_code == 401
        as_caller = {"authorization": f"Bearer {caller}"}
        as_deployer = {"authorization": f"Bearer {deployer}"}
        assert client.post("/registered_models", json=body, headers=as_caller).status_code == 403
        created = client.post("/registered_models", json=body, headers=as_deployer)
        assert created.status_code == 201, created.text
        listed = client.get("/registered_models", headers=as_caller)
        assert listed.status_code == 200
        assert [m["name"] for m in listed.json()["items"]] == ["guarded-model"]
        # The document's own prefix is served too.
        document_path = f"/api/model_registry/v1alpha3/registered_models/{created.json()['id']}"
        other = httpx.get(guarded.url + document_path, headers=as_caller, timeout=10)
        assert other.status_code == 200
        assert other.json()["name"] == "guarded-model"
