"""Generated requests from Kubeflow's OpenAPI document find no server error in the registry.

schemathesis draws each operation's requests (valid and invalid bodies, parameters, ids)
from the vendored document, seeded and bounded so a run is repeatable and takes seconds;
every answer must be below 500. The experiment routes, which the registry does not serve,
are left out. One registry (SQLite) serves the module, some resources in it to be found.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from registry_support import serve_registry
from schemathesis.checks import not_a_server_error

DOCUMENT = Path(__file__).parent / "data" / "model-registry.yaml"
PREFIX = "/api/model_registry/v1alpha3"


@pytest.fixture(scope="module")
def registry_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = tmp_path_factory.mktemp("registry") / "registry.sqlite"
    with serve_registry(str(path)) as port:
        base = f"http://127.0.0.1:{port}"
        api = base + PREFIX

        def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
            response = requests.post(api + path, json=body, timeout=10)
            assert response.status_code in (200, 201), response.text
            created: dict[str, Any] = response.json()
            return created

        model = post("/registered_models", {"name": "seed"})
        version = post(f"/registered_models/{model['id']}/versions", {"name": "v1"})
        post(f"/model_versions/{version['id']}/artifacts", {"name": "w", "uri": "s3://b/w"})
        environment = post("/serving_environments", {"name": "prod"})
        service = post(
            "/inference_services",
            {"registeredModelId": model["id"], "servingEnvironmentId": environment["id"]},
        )
        post(f"/inference_services/{service['id']}/serves", {"modelVersionId": version["id"]})
        yield base


# schemathesis parametrizes at collection, so the document is read then (its fixture-based
# loader does not work with this pytest).
schema = schemathesis.openapi.from_path(DOCUMENT).exclude(path_regex="experiment")


@schema.parametrize()
@settings(
    max_examples=25,
    derandomize=True,
    # Drawn examples only: the explicit phase adds schemathesis' coverage cases, some
    # hundred per operation, which take minutes.
    phases=[Phase.generate],
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_find_no_server_error(case: Any, registry_url: str) -> None:
    response = case.call(base_url=registry_url, timeout=10)
    case.validate_response(response, checks=[not_a_server_error])
