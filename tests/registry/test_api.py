"""The registry's REST API over a socket, each answer validated against Kubeflow's document.

Requests go through ``requests`` to the app under uvicorn; openapi-core checks every answer
whose status the document lists against the vendored ``data/model-registry.yaml``. Bad input
(duplicate names, unknown ids, bad filters and tokens) gets the document's error shape.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from openapi_core import OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from registry_support import serve_registry

DOCUMENT = Path(__file__).parent / "data" / "model-registry.yaml"
PREFIX = "/api/model_registry/v1alpha3"


class Api:
    """A session on the registry that validates what it is answered."""

    def __init__(self, base: str, spec: OpenAPI) -> None:
        self.base = base
        self.spec = spec
        self.session = requests.Session()

    def call(
        self, method: str, path: str, body: Any = None, validate: bool = True, **params: str
    ) -> requests.Response:
        response = self.session.request(
            method, self.base + PREFIX + path, json=body, params=params or None, timeout=10
        )
        if validate:
            self.spec.validate_response(
                RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response)
            )
        return response

    def ok(self, method: str, path: str, body: Any = None, **params: str) -> dict[str, Any]:
        response = self.call(method, path, body, True, **params)
        assert response.status_code in (200, 201), response.text
        document: dict[str, Any] = response.json()
        return document


@pytest.fixture(scope="module")
def spec() -> OpenAPI:
    """The vendored document, its server any loopback port (the tests' ports are the kernel's)."""
    document = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))
    document["servers"] = [
        {"url": "http://127.0.0.1:{port}", "variables": {"port": {"default": "8080"}}}
    ]
    return OpenAPI.from_dict(document)


@pytest.fixture
def api(tmp_path: Path, spec: OpenAPI) -> Iterator[Api]:
    with serve_registry(str(tmp_path / "registry.sqlite")) as port:
        yield Api(f"http://127.0.0.1:{port}", spec)


def _string(value: str) -> dict[str, str]:
    return {"metadataType": "MetadataStringValue", "string_value": value}


def test_every_kind_round_trips_and_validates(api: Api) -> None:
    model = api.ok(
        "POST",
        "/registered_models",
        {
            "name": "granite",
            "description": "a language model",
            "owner": "ibm",
            "readme": "# Granite",
            "license": "apache-2.0",
            "licenseLink": "https://www.apache.org/licenses/LICENSE-2.0",
            "tasks": ["text-generation"],
            "maturity": "Generally Available",
            "language": ["en", "es"],
            "libraryName": "transformers",
            "provider": "IBM",
            "customProperties": {
                "framework": _string("pytorch"),
                "params": {"metadataType": "MetadataIntValue", "int_value": "8"},
                "score": {"metadataType": "MetadataDoubleValue", "double_value": 0.81},
                "open": {"metadataType": "MetadataBoolValue", "bool_value": True},
                "blob": {"metadataType": "MetadataStructValue", "struct_value": "e30="},
                "proto": {
                    "metadataType": "MetadataProtoValue",
                    "type": "type.googleapis.com/x",
                    "proto_value": "AA==",
                },
            },
        },
    )
    assert model["state"] == "LIVE"
    assert model["tasks"] == ["text-generation"]
    assert model["id"].isdigit()
    assert model["createTimeSinceEpoch"].isdigit()
    assert model["customProperties"]["params"]["int_value"] == "8"
    model_id = model["id"]
    assert api.ok("GET", f"/registered_models/{model_id}") == model
    assert api.ok("GET", "/registered_model", name="granite")["id"] == model_id

    version = api.ok(
        "POST", f"/registered_models/{model_id}/versions", {"name": "3.1", "author": "ada"}
    )
    assert version["registeredModelId"] == model_id
    assert version["state"] == "LIVE"
    found = api.ok("GET", "/model_version", name="3.1", parentResourceId=model_id)
    assert found["id"] == version["id"]
    artifact = api.ok(
        "POST",
        f"/model_versions/{version['id']}/artifacts",
        {"artifactType": "model-artifact", "name": "weights", "uri": "s3://b/granite"},
    )
    assert artifact["artifactType"] == "model-artifact"
    assert artifact["state"] == "UNKNOWN"
    doc = api.ok(
        "POST",
        f"/model_versions/{version['id']}/artifacts",
        {"artifactType": "doc-artifact", "name": "card", "uri": "https://x/card.md"},
    )
    listed = api.ok("GET", f"/model_versions/{version['id']}/artifacts")
    assert [a["name"] for a in listed["items"]] == ["weights", "card"]
    only_models = api.ok("GET", "/model_artifacts")
    assert [a["id"] for a in only_models["items"]] == [artifact["id"]]
    assert api.call("GET", f"/model_artifacts/{doc['id']}").status_code == 404
    assert api.ok("GET", "/artifacts", artifactType="doc-artifact")["items"][0]["id"] == doc["id"]
    patched = api.ok("PATCH", f"/model_artifacts/{artifact['id']}", {"state": "LIVE"})
    assert patched["state"] == "LIVE"
    assert patched["uri"] == "s3://b/granite"
    assert api.ok("GET", "/model_artifact", name="weights", parentResourceId=version["id"])

    # An existing artifact, posted by id, moves into another version (200, not 201).
    second = api.ok("POST", f"/registered_models/{model_id}/versions", {"name": "3.2"})
    loose = api.ok("POST", "/model_artifacts", {"name": "loose", "uri": "s3://b/loose"})
    moved = api.call("POST", f"/model_versions/{second['id']}/artifacts", {**loose})
    assert moved.status_code == 200
    assert api.ok("GET", f"/model_versions/{second['id']}/artifacts")["size"] == 1

    environment = api.ok("POST", "/serving_environments", {"name": "prod"})
    assert api.ok("GET", "/serving_environment", name="prod")["id"] == environment["id"]
    service = api.ok(
        "POST",
        f"/serving_environments/{environment['id']}/inference_services",
        {
            "name": "granite-svc",
            "registeredModelId": model_id,
            "servingEnvironmentId": environment["id"],
            "runtime": "vllm",
        },
    )
    assert service["desiredState"] == "DEPLOYED"
    # No modelVersionId: the model's latest version is the one served.
    assert api.ok("GET", f"/inference_services/{service['id']}/version")["id"] == second["id"]
    assert api.ok("GET", f"/inference_services/{service['id']}/model")["id"] == model_id
    api.ok("PATCH", f"/inference_services/{service['id']}", {"modelVersionId": version["id"]})
    assert api.ok("GET", f"/inference_services/{service['id']}/version")["id"] == version["id"]
    serve = api.ok(
        "POST", f"/inference_services/{service['id']}/serves", {"modelVersionId": version["id"]}
    )
    assert serve["lastKnownState"] == "UNKNOWN"
    assert api.ok("GET", f"/inference_services/{service['id']}/serves")["size"] == 1
    found_service = api.ok(
        "GET", "/inference_service", name="granite-svc", parentResourceId=environment["id"]
    )
    assert found_service["id"] == service["id"]
    assert api.ok("GET", "/inference_services")["size"] == 1
    assert api.ok("GET", f"/serving_environments/{environment['id']}/inference_services")

    archived = api.ok("PATCH", f"/model_versions/{version['id']}", {"state": "ARCHIVED"})
    assert archived["state"] == "ARCHIVED"
    assert archived["name"] == "3.1"
    assert int(archived["lastUpdateTimeSinceEpoch"]) >= int(version["createTimeSinceEpoch"])


def test_both_prefixes_serve_the_same_api(api: Api) -> None:
    created = api.ok("POST", "/registered_models", {"name": "twice"})
    v1 = requests.get(f"{api.base}/api/model_registry/v1/registered_models/{created['id']}")
    assert v1.status_code == 200
    assert v1.json() == created


def test_filter_order_and_pages(api: Api) -> None:
    for name, framework, score in (
        ("alpha", "pytorch", 0.5),
        ("beta", "sklearn", 0.9),
        ("gamma", "pytorch", 0.95),
        ("delta", "onnx", 0.7),
    ):
        api.ok(
            "POST",
            "/registered_models",
            {
                "name": name,
                "customProperties": {
                    "framework": _string(framework),
                    "score": {"metadataType": "MetadataDoubleValue", "double_value": score},
                    "mlflow.source.type": _string("notebook" if name == "beta" else "job"),
                },
            },
        )
    api.ok("PATCH", "/registered_models/2", {"state": "ARCHIVED"})

    def names(query: str, **params: str) -> list[str]:
        page = api.ok("GET", "/registered_models", filterQuery=query, **params)
        return [item["name"] for item in page["items"]]

    assert names('name = "beta"') == ["beta"]
    assert names("state = 'LIVE'") == ["alpha", "gamma", "delta"]
    assert names("state = 'ARCHIVED' OR name = 'alpha'") == ["alpha", "beta"]
    assert names('framework.string_value = "pytorch" AND score > 0.9') == ["gamma"]
    assert names("score >= 0.7 AND score <= 0.9") == ["beta", "delta"]
    assert names("name LIKE '%a' AND NOT name = 'delta'") == ["alpha", "beta", "gamma"]
    assert names("name ILIKE 'G%'") == ["gamma"]
    assert names("name IN ('alpha', 'delta')") == ["alpha", "delta"]
    assert names("(name = 'alpha' OR name = 'beta') AND state <> 'ARCHIVED'") == ["alpha"]
    assert names("`mlflow.source.type` = 'notebook'") == ["beta"]
    assert names("id > 2") == ["gamma", "delta"]
    assert names("", orderBy="NAME", sortOrder="DESC") == ["gamma", "delta", "beta", "alpha"]

    seen: list[str] = []
    token = ""
    while True:
        params = {"pageSize": "3", "orderBy": "CREATE_TIME"}
        if token:
            params["nextPageToken"] = token
        page = api.ok("GET", "/registered_models", **params)
        assert page["pageSize"] == 3
        assert page["size"] == len(page["items"])
        seen += [item["name"] for item in page["items"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert seen == ["alpha", "beta", "gamma", "delta"]


@pytest.mark.parametrize(
    "query",
    ["name = ", "name == 'x'", "(name = 'x'", "name = 'x' AND", "name LIKE 3", "x.bogus = 1", "'"],
)
def test_a_bad_filter_query_is_400(api: Api, query: str) -> None:
    # The document lists no 400 for this list; the registry answers 400 as upstream does.
    response = api.call("GET", "/registered_models", validate=False, filterQuery=query)
    assert response.status_code == 400
    assert response.json()["code"] == "400"
    assert "filterQuery" in response.json()["message"]


def test_bad_input_answers_the_documented_errors(api: Api) -> None:
    model = api.ok("POST", "/registered_models", {"name": "only"})
    duplicate = api.call("POST", "/registered_models", {"name": "only"})
    assert duplicate.status_code == 409
    assert set(duplicate.json()) == {"code", "message"}

    api.ok("POST", f"/registered_models/{model['id']}/versions", {"name": "v1"})
    again = api.call("POST", f"/registered_models/{model['id']}/versions", {"name": "v1"})
    assert again.status_code == 409
    other = api.ok("POST", "/registered_models", {"name": "other"})
    # Version names are unique within a model, not across models.
    api.ok("POST", f"/registered_models/{other['id']}/versions", {"name": "v1"})

    for path in (
        "/registered_models/999",
        "/model_versions/999",
        "/model_artifacts/999",
        "/artifacts/999",
        "/serving_environments/999",
        "/inference_services/999",
        "/registered_models/999/versions",
    ):
        missing = api.call("GET", path)
        assert missing.status_code == 404, path
        assert missing.json()["code"] == "404"
    assert api.call("GET", "/registered_model", name="nobody").status_code == 404
    assert api.call("PATCH", "/registered_models/999", {"description": "x"}).status_code == 404

    assert api.call("POST", "/registered_models", {"description": "no name"}).status_code == 400
    bad_state = api.call("PATCH", f"/registered_models/{model['id']}", {"state": "GONE"})
    assert bad_state.status_code == 400
    bad_value = {"customProperties": {"n": {"metadataType": "MetadataIntValue", "int_value": 1}}}
    assert api.call("POST", "/registered_models", {"name": "n", **bad_value}).status_code == 400
    orphan = api.call("POST", "/model_versions", {"name": "v", "registeredModelId": "999"})
    assert orphan.status_code == 400
    assert api.call("POST", "/registered_models", "not an object").status_code == 400
    bad_token = api.call("GET", "/registered_models", validate=False, nextPageToken="%%%")
    assert bad_token.status_code == 400


def test_concurrent_registrations_of_one_name_leave_exactly_one(api: Api) -> None:
    statuses: list[int] = []
    barrier = threading.Barrier(8)

    def register() -> None:
        with requests.Session() as session:
            barrier.wait()
            response = session.post(
                f"{api.base}{PREFIX}/registered_models", json={"name": "race"}, timeout=10
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=register) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(statuses) == [201] + [409] * 7
    listed = api.ok("GET", "/registered_models", filterQuery="name = 'race'")
    assert listed["size"] == 1
