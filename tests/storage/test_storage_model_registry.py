"""``model-registry://`` storage URIs: Kubeflow's grammar, resolved over a real registry socket.

The registry is modelhost's own REST API (``RegistryApp``) under uvicorn on a free port; the
artifacts it names are a local folder and an object on the moto S3 server.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import pytest
from serving import serve_asgi
from sklearn.dummy import DummyClassifier
from storage_servers import S3Server

from modelhost import errors, storage
from modelhost.registry import RegistryApp, RegistrySettings, RegistryStore
from modelhost.settings import StorageSettings
from modelhost.storage.model_registry import (
    RegistryReference,
    RegistryRestClient,
    parse_reference,
    resolve_uri,
)

TOKEN = "registry-secret"


@pytest.mark.parametrize(
    ("uri", "address", "expected"),
    [
        ("model-registry://iris", None, ("iris", None, None)),
        ("model-registry://iris/v2", None, ("iris", "v2", None)),
        ("model-registry://mr:8080/iris/v2", None, ("iris", "v2", "mr:8080")),
        ("model-registry://mr:8080/iris", "mr:8080", ("iris", None, "mr:8080")),
        # Two parts not starting with the registry's address are a model and a version.
        ("model-registry://mr:8080/iris", "other:9000", ("mr:8080", "iris", None)),
        ("model-registry://iris/v2?namespace=kubeflow", None, ("iris", "v2", None)),
    ],
)
def test_the_uri_grammar_is_kubeflows(
    uri: str, address: str | None, expected: tuple[str, str | None, str | None]
) -> None:
    reference = parse_reference(uri, address)
    assert (reference.model, reference.version, reference.host) == expected


@pytest.mark.parametrize(
    "uri", ["model-registry://", "model-registry://a/b/c/d", "model-registry://a//b", "s3://a/b"]
)
def test_a_malformed_uri_is_a_storage_error(uri: str) -> None:
    with pytest.raises(errors.StorageError):
        parse_reference(uri)


class _TokenGate:
    """Refuses calls without the bearer token, as the platform's gateway does."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        headers = dict(scope.get("headers") or ())
        if scope["type"] == "http" and headers.get(b"authorization") != f"Bearer {TOKEN}".encode():
            await send({"type": "http.response.start", "status": 401, "headers": []})
            await send({"type": "http.response.body", "body": b'{"message": "no token"}'})
            return
        await self.app(scope, receive, send)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, RegistryRestClient]]:
    """A token-guarded registry on a free port, and a client of it."""
    store = RegistryStore(str(tmp_path / "registry.sqlite"))
    with serve_asgi(_TokenGate(RegistryApp(store, RegistrySettings())), lifespan="off") as port:
        url = f"http://127.0.0.1:{port}"
        client = RegistryRestClient(url, TOKEN)
        yield url, client
        client.close()
    store.close()


def _register(
    client: RegistryRestClient, model: str, version: str, uri: str, state: str = "LIVE"
) -> None:
    found = client.get("/registered_models", {"name": model})["items"]
    model_id = found[0]["id"] if found else client.post("/registered_models", {"name": model})["id"]
    created = client.post(
        f"/registered_models/{model_id}/versions",
        {"name": version, "registeredModelId": model_id, "state": state},
    )
    client.post(
        f"/model_versions/{created['id']}/artifacts",
        {"artifactType": "model-artifact", "name": f"{model}-{version}", "uri": uri},
    )


def _settings(tmp_path: Path, url: str, **extra: str) -> StorageSettings:
    environ = {"MODEL_REGISTRY_BASE_URL": url, "MODEL_REGISTRY_TOKEN": TOKEN, **extra}
    return StorageSettings(cache_dir=str(tmp_path / "cache"), progress=False, environ=environ)


def test_a_version_resolves_to_its_newest_model_artifact(
    registry: tuple[str, RegistryRestClient], tmp_path: Path
) -> None:
    url, client = registry
    folder = tmp_path / "iris-v2"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"weights")
    _register(client, "iris", "v1", "s3://nowhere/v1")
    _register(client, "iris", "v2", "s3://nowhere/old")
    version = client.get("/model_version", {"name": "v2", "parentResourceId": "1"})
    client.post(
        f"/model_versions/{version['id']}/artifacts",
        {"artifactType": "model-artifact", "name": "iris-v2-again", "uri": str(folder)},
    )
    settings = _settings(tmp_path, url)
    resolved = resolve_uri("model-registry://iris/v2", settings)
    assert (resolved.version_name, resolved.uri) == ("v2", str(folder))
    assert resolved.reference == RegistryReference("model-registry://iris/v2", "iris", "v2")
    assert storage.download("model-registry://iris/v2", settings) == folder


def test_no_version_means_the_newest_live_one(
    registry: tuple[str, RegistryRestClient], tmp_path: Path
) -> None:
    url, client = registry
    _register(client, "iris", "v1", "file:///models/v1")
    _register(client, "iris", "v2", "file:///models/v2")
    _register(client, "iris", "v3", "file:///models/v3", state="ARCHIVED")
    assert resolve_uri("model-registry://iris", _settings(tmp_path, url)).version_name == "v2"


def test_the_uris_host_names_the_registry(
    registry: tuple[str, RegistryRestClient], tmp_path: Path
) -> None:
    url, client = registry
    _register(client, "iris", "v1", "file:///models/v1")
    address = url.removeprefix("http://")
    # The configured registry is elsewhere (nothing listens there): the URI's host wins.
    settings = _settings(tmp_path, "127.0.0.1:9")
    assert resolve_uri(f"model-registry://{address}/iris/v1", settings).uri == "file:///models/v1"
    # Two parts starting with the configured address: host and model, newest version.
    settings = _settings(tmp_path, address)
    assert resolve_uri(f"model-registry://{address}/iris", settings).version_name == "v1"


def test_missing_model_version_and_token_say_what_is_missing(
    registry: tuple[str, RegistryRestClient], tmp_path: Path
) -> None:
    url, client = registry
    _register(client, "iris", "v1", "file:///models/v1")
    settings = _settings(tmp_path, url)
    with pytest.raises(errors.StorageNotFound, match="no registered model 'wine'"):
        storage.download("model-registry://wine/v1", settings)
    with pytest.raises(errors.StorageNotFound, match="no version 'v9' of model 'iris'"):
        storage.download("model-registry://iris/v9", settings)
    unauthorized = _settings(tmp_path, url, MODEL_REGISTRY_TOKEN="")
    with pytest.raises(errors.StorageAccessDenied, match="401"):
        storage.download("model-registry://iris/v1", unauthorized)
    with pytest.raises(errors.StorageUnreachable, match="no model registry"):
        storage.download("model-registry://iris/v1", _settings(tmp_path, "127.0.0.1:9"))


def _joblib(model: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def test_an_s3_artifact_is_fetched_into_the_cache(
    registry: tuple[str, RegistryRestClient], tmp_path: Path, s3: S3Server, s3_bucket: str
) -> None:
    url, client = registry
    model = DummyClassifier(strategy="constant", constant=1).fit([[0], [1]], [0, 1])
    s3.upload(s3_bucket, {"model.joblib": _joblib(model)}, prefix="iris/v1/")
    _register(client, "iris", "v1", f"s3://{s3_bucket}/iris/v1")
    settings = _settings(tmp_path, url, **s3.env())
    folder = storage.download("model-registry://iris/v1", settings)
    assert (folder / "model.joblib").is_file()
    assert folder.is_relative_to(tmp_path / "cache")


def test_the_pods_storage_initializer_resolves_through_the_environment(
    registry: tuple[str, RegistryRestClient], tmp_path: Path
) -> None:
    """``modelhost fetch`` (the init container the rendered pods run) with Kubeflow's
    ``MODEL_REGISTRY_BASE_URL`` in its environment, as on Kubernetes."""
    from modelhost.cli.kube_commands import fetch

    url, client = registry
    folder = tmp_path / "iris-v3"
    folder.mkdir()
    (folder / "model.joblib").write_bytes(b"weights v3")
    _register(client, "iris", "v3", f"file://{folder}")
    dest = tmp_path / "mnt-models"
    host = url.removeprefix("http://")
    fetch(
        "model-registry://iris/v3",
        dest,
        environ={"MODEL_REGISTRY_BASE_URL": host, "MODEL_REGISTRY_TOKEN": TOKEN},
    )
    assert (dest / "model.joblib").read_bytes() == b"weights v3"
