"""The OpenAPI document: valid OpenAPI 3.1, in step with the router, and served with its UI."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from serving import StartServer

from modelhost.model.repository import ModelRepository
from modelhost.protocol.datatypes import DATATYPES
from modelhost.server.dataplane import DataPlane
from modelhost.server.http import docs
from modelhost.server.http.app import HttpApp
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.server.openai.routes import OpenAIRoutes
from modelhost.settings import ServerSettings

SAMPLES = {"{model_name}": "iris", "{model_version}": "3"}
# Served but deliberately left out of the document: the docs themselves, and /v2's alias.
UNDOCUMENTED = {"/docs", "/openapi.json", "/v2/"}
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


@pytest.fixture
def app() -> Iterator[HttpApp]:
    metrics = Metrics()
    with ThreadPoolExecutor(1) as pool:
        dataplane = DataPlane(ModelRepository(), StepRunner(pool, metrics), "modelhost")
        yield HttpApp(dataplane, metrics, ServerSettings(), OpenAIRoutes(dataplane, metrics))


def concrete(path: str) -> str:
    for template, sample in SAMPLES.items():
        path = path.replace(template, sample)
    return path


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, operation)
        for path, item in docs.openapi_document()["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def served_routes(app: HttpApp) -> tuple[set[str], list[Any]]:
    """The fixed paths and every route object in the router's tables, whatever they are."""
    route_type = type(app.route("/")[0])  # type: ignore[index]
    tables = [table for table in vars(app).values() if isinstance(table, dict)]
    routes = [r for table in tables for r in table.values() if isinstance(r, route_type)]
    fixed = {p for table in tables for p in table if isinstance(p, str) and p.startswith("/")}
    return fixed, routes


def test_the_document_is_valid_openapi_3_1() -> None:
    document = docs.openapi_document()
    assert document["openapi"].startswith("3.1.")
    validate(document, cls=OpenAPIV31SpecValidator)
    assert docs.openapi_document() is document  # built once


def test_operation_ids_are_unique() -> None:
    ids = [operation["operationId"] for _, _, operation in operations()]
    assert len(ids) == len(set(ids))


def test_every_documented_operation_is_routed_with_its_method(app: HttpApp) -> None:
    for path, method, _ in operations():
        found = app.route(concrete(path))
        assert found is not None, f"{path} is documented but not routed"
        route, model, version = found
        assert route.method == method.upper(), path
        assert model == ("iris" if "{model_name}" in path else ""), path
        assert version == ("3" if "{model_version}" in path else None), path


def test_every_served_route_is_documented(app: HttpApp) -> None:
    paths = docs.openapi_document()["paths"]
    fixed, routes = served_routes(app)
    assert fixed - UNDOCUMENTED <= set(paths)
    documented = set()
    for path in paths:
        found = app.route(concrete(path))
        assert found is not None
        documented.add((found[0].method, found[0].handler))
    missing = [
        f"{r.method} {r.protocol}/{r.endpoint}"
        for r in routes
        if (r.method, r.handler) not in documented and r.endpoint != "docs"
    ]
    assert not missing, f"served but not documented: {missing}"


def test_the_documented_paths_are_the_expected_ones() -> None:
    model, versioned = "/v2/models/{model_name}", "/v2/models/{model_name}/versions/{model_version}"
    expected = {
        "/", "/metrics", "/v1/models", "/v1/models/{model_name}",
        "/v1/models/{model_name}:predict", "/v1/models/{model_name}:explain",
        "/v2", "/v2/health/live", "/v2/health/ready", "/v2/models",
        model, f"{model}/ready", f"{model}/infer",
        versioned, f"{versioned}/ready", f"{versioned}/infer",
        "/v2/repository/index", "/v2/repository/models/{model_name}/load",
        "/v2/repository/models/{model_name}/unload",
    }  # fmt: skip
    assert set(docs.openapi_document()["paths"]) == expected


def test_inference_operations_document_errors_and_the_binary_extension() -> None:
    document = docs.openapi_document()
    schemas = document["components"]["schemas"]
    assert set(schemas["Datatype"]["enum"]) == DATATYPES
    assert "BF16" in schemas["Datatype"]["enum"]
    assert schemas["Error"]["required"] == ["error"]
    for path in ("/v2/models/{model_name}/infer", "/v1/models/{model_name}:predict"):
        operation = document["paths"][path]["post"]
        assert {"400", "404", "413", "500", "501", "503"} <= set(operation["responses"])
    infer = document["paths"]["/v2/models/{model_name}/versions/{model_version}/infer"]["post"]
    assert "application/octet-stream" in infer["requestBody"]["content"]
    assert "application/octet-stream" in infer["responses"]["200"]["content"]
    header = document["components"]["parameters"]["InferenceHeaderContentLength"]
    assert header["name"] == "Inference-Header-Content-Length"
    assert header["in"] == "header"
    assert {"$ref": "#/components/parameters/InferenceHeaderContentLength"} in infer["parameters"]
    assert "Inference-Header-Content-Length" in infer["responses"]["200"]["headers"]


def test_the_swagger_page_loads_a_pinned_cdn_build_and_the_document() -> None:
    page = docs.swagger_html()
    cdn = r"https://cdn\.jsdelivr\.net/npm/swagger-ui-dist@\d+/swagger-ui-bundle\.js"
    assert re.search(cdn, page)
    assert 'url: "/openapi.json"' in page


def test_docs_and_the_document_are_served(serve: StartServer) -> None:
    running = serve([], enable_grpc=False)
    with httpx.Client(base_url=running.http_url, timeout=10) as client:
        response = client.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.json() == docs.openapi_document()
        page = client.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.text == docs.swagger_html()


def test_docs_can_be_turned_off(serve: StartServer) -> None:
    running = serve([], enable_grpc=False, enable_docs=False)
    with httpx.Client(base_url=running.http_url, timeout=10) as client:
        assert client.get("/openapi.json").status_code == 404
        assert client.get("/docs").status_code == 404


def test_the_document_says_what_is_accepted() -> None:
    # Issue 14, item 10: the contract is as strict as the decoders.
    schemas = docs.openapi_document()["components"]["schemas"]
    mapping = schemas["Tensor"]["discriminator"]["mapping"]
    assert set(mapping) == DATATYPES
    element = {
        "FloatTensor": {"type": ["number", "null"]},
        "IntegerTensor": {"type": "integer"},
        "BoolTensor": {"type": "boolean"},
        "StringTensor": {"type": "string"},
    }
    for datatype, ref in mapping.items():
        name = ref.rsplit("/", 1)[1]
        assert datatype in schemas[name]["properties"]["datatype"]["enum"]
        data = schemas[schemas[name]["properties"]["data"]["$ref"].rsplit("/", 1)[1]]
        assert data["items"]["anyOf"][0] == element[name], datatype
    assert schemas["Parameters"]["additionalProperties"] == {
        "type": ["string", "number", "boolean"]
    }
    paths = docs.openapi_document()["paths"]
    index = paths["/v2/repository/index"]["post"]["requestBody"]["content"]["application/json"]
    assert index["schema"]["properties"]["ready"]["type"] == "boolean"
    assert index["schema"]["additionalProperties"] is False
    for verb in ("load", "unload"):
        body = paths[f"/v2/repository/models/{{model_name}}/{verb}"]["post"]["requestBody"]
        schema = body["content"]["application/json"]["schema"]
        assert schema["properties"]["parameters"] == {"$ref": "#/components/schemas/Parameters"}
        assert schema["additionalProperties"] is False
    version = docs.openapi_document()["components"]["parameters"]["ModelVersion"]
    assert "404" in version["description"]
