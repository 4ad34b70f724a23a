"""The OpenAPI document of the REST API and the Swagger UI page that renders it.

The document describes the routes ``app.HttpApp`` serves, one operation per route: KServe's
v1 protocol, the Open Inference Protocol v2 with its binary tensor data and model repository
extensions, and ``/metrics``. It is built from the small helpers below, once per process.
"""

from __future__ import annotations

import functools
from typing import Any

from modelhost._version import __version__
from modelhost.model.repository import ModelState
from modelhost.protocol.datatypes import DATATYPES

__all__ = ["openapi_document", "swagger_html"]

Schema = dict[str, Any]

JSON = "application/json"
BINARY = "application/octet-stream"
HEADER_LENGTH = "Inference-Header-Content-Length"
SWAGGER_UI = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5"

# Every error body is {"error": message}; the status comes from modelhost.errors.
_ERRORS = {
    400: "The request is malformed or does not fit the model.",
    401: "With --auth tokens: no bearer token, or not a valid one (WWW-Authenticate says how).",
    403: "With --auth tokens: the token's role or scope does not reach this.",
    404: "No model of that name (or version).",
    413: "The request body is larger than the server's limit (--max_request_bytes).",
    415: "The body's Content-Encoding is not gzip, deflate or identity.",
    429: "The token's rate or concurrency limit is spent (Retry-After says when to retry).",
    500: "The model or the server failed while handling the request.",
    501: "Not implemented: a missing explainer, or load parameters.",
    503: "The model is not ready, or the server is draining.",
}
_INFER_ERRORS = (400, 401, 403, 413, 415, 429, 501, 503)
_PATH_PARAMETERS = {"{model_name}": "ModelName", "{model_version}": "ModelVersion"}

# The plain GET endpoints: path, operationId, summary, schema of the 200 body.
_GETS = (
    ("/", "v1Live", "Server liveness (v1).", "V1Live"),
    ("/v1/models", "v1Models", "Names of the models served.", "ModelList"),
    ("/v1/models/{model_name}", "v1ModelReady", "Model readiness (v1).", "ModelReady"),
    ("/v2", "v2ServerMetadata", "Server metadata and extensions.", "ServerMetadata"),
    ("/v2/health/live", "v2ServerLive", "Server liveness.", "ServerLive"),
    ("/v2/health/ready", "v2ServerReady", "Every model ready, not draining.", "ServerReady"),
    ("/v2/models", "v2Models", "Names of the models served.", "ModelList"),
)


def _ref(name: str, kind: str = "schemas") -> Schema:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: Schema) -> Schema:
    return {JSON: {"schema": schema}}


def _obj(required: tuple[str, ...] = (), **properties: Schema) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def _array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


_STR: Schema = {"type": "string"}
_BOOL: Schema = {"type": "boolean"}
_BYTES: Schema = {"schema": {"type": "string", "format": "binary"}}
_LENGTH: Schema = {"type": "integer", "minimum": 0}


def _operation(
    path: str,
    op_id: str,
    summary: str,
    content: Schema | str,
    errors: tuple[int, ...] = (),
    body: Schema | None = None,
) -> Schema:
    """One operation (a POST when it has a ``body``); ``content`` may name a JSON schema.

    Its tag follows from ``op_id``, its path parameters, 404 and 500 from ``path``; an
    operation whose id ends in "Ready" is a probe, answering 503 with its 200 body.
    """
    if isinstance(content, str):
        content = _json(_ref(content))
    tag = next((t for t in ("v1", "v2", "repository") if op_id.startswith(t)), "server")
    params = [_ref(p, "parameters") for key, p in _PATH_PARAMETERS.items() if key in path]
    codes = sorted({*errors, 500, *((404,) if params else ())})
    responses: Schema = {"200": {"description": "OK.", "content": content}}
    responses.update({str(code): _ref(f"Error{code}", "responses") for code in codes})
    if op_id.endswith("Ready"):
        responses["503"] = {"description": "Not ready.", "content": content}
    operation: Schema = {"operationId": op_id, "tags": [tag], "summary": summary}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = body
    operation["responses"] = responses
    return {path: {"post" if body is not None else "get": operation}}


def _body(content: Schema, description: str = "", required: bool = True) -> Schema:
    body: Schema = {"required": required, "content": content}
    if description:
        body["description"] = description
    return body


def _v1_verb(verb: str, summary: str) -> Schema:
    body = _body(
        {**_json(_ref("V1Request")), "application/cloudevents+json": {}},
        "A v1 request. A CloudEvent in structured mode (application/cloudevents+json) or "
        "binary mode (ce-* headers) is accepted too; a body of any other content type is "
        "handed to the model as raw bytes.",
    )
    content = {**_json(_ref("V1Response")), BINARY: _BYTES}
    path, op_id = f"/v1/models/{{model_name}}:{verb}", f"v1{verb.capitalize()}"
    return _operation(path, op_id, summary, content, _INFER_ERRORS, body)


def _v2_model(prefix: str, suffix: str) -> dict[str, Schema]:
    body = _body(
        {**_json(_ref("InferenceRequest")), BINARY: _BYTES},
        f"JSON; or (binary tensor data extension) a JSON header of {HEADER_LENGTH} bytes, then "
        "the tensors' bytes in the order of their binary_data_size parameters; or, with "
        f"{HEADER_LENGTH}: 0, the raw bytes of the model's single input.",
    )
    content = {**_json(_ref("InferenceResponse")), BINARY: _BYTES}
    path = f"{prefix}/infer"
    infer = _operation(
        path, f"v2ModelInfer{suffix}", "Run inference.", content, _INFER_ERRORS, body
    )
    operation = infer[path]["post"]
    operation["parameters"].append(_ref("InferenceHeaderContentLength", "parameters"))
    operation["responses"]["200"] = {
        "description": "The response; with outputs sent as binary data, an "
        f"application/octet-stream body whose JSON header is {HEADER_LENGTH} bytes long.",
        "headers": {HEADER_LENGTH: {"schema": _LENGTH}},
        "content": content,
    }
    return {
        **_operation(prefix, f"v2ModelMetadata{suffix}", "Model metadata.", "ModelMetadata"),
        **_operation(f"{prefix}/ready", f"v2ModelReady{suffix}", "Model readiness.", "ModelReady"),
        **infer,
    }


def _repository() -> dict[str, Schema]:
    ready = {**_BOOL, "description": "List only ready models."}
    index_body = _body(_json(_obj(ready=ready)), required=False)
    load_body = _body(
        _json(_obj(parameters=_ref("Parameters"))),
        "Parameters are not supported (501): load reads the model from the repository.",
        False,
    )
    index = _json(_array(_ref("RepositoryIndexEntry")))
    path, summary = "/v2/repository/index", "The models in the repository and their state."
    paths = _operation(path, "repositoryIndex", summary, index, (400, 413), index_body)
    for verb, body in (("load", load_body), ("unload", _body(_json(_obj()), required=False))):
        result = _json(_obj(("name", verb), name=_STR, **{verb: _BOOL}))
        path, op_id = f"/v2/repository/models/{{model_name}}/{verb}", f"repository{verb.title()}"
        errors = (400, 413, 501) if verb == "load" else (400, 413)
        paths.update(_operation(path, op_id, f"{verb.title()} a model.", result, errors, body))
    return paths


def _paths() -> dict[str, Schema]:
    metrics = {"text/plain": {"schema": _STR}, "application/openmetrics-text": {"schema": _STR}}
    summary = "Prometheus metrics, in the format the Accept header asks for."
    paths: dict[str, Schema] = {}
    for get in _GETS:
        paths.update(_operation(*get))
    paths.update(_operation("/metrics", "metrics", summary, metrics))
    paths.update(_v1_verb("predict", "Predict (v1)."))
    paths.update(_v1_verb("explain", "Explain a prediction (v1)."))
    paths.update(_v2_model("/v2/models/{model_name}", ""))
    paths.update(_v2_model("/v2/models/{model_name}/versions/{model_version}", "Version"))
    paths.update(_repository())
    return paths


def _schemas() -> dict[str, Schema]:
    scalar = {"type": ["string", "number", "boolean"]}
    data = {
        "type": "array",
        "items": {},
        "description": "Row-major values, flat or nested; absent when "
        "parameters.binary_data_size is set. BF16 tensors are sent as binary data only.",
    }
    return {
        "Error": _obj(("error",), error=_STR),
        "Datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "Parameters": {
            "type": "object",
            "additionalProperties": scalar,
            "description": "Includes the binary extension's binary_data_size (tensor), "
            "binary_data (requested output) and binary_data_output (request).",
        },
        "Tensor": _obj(
            ("name", "shape", "datatype"),
            name=_STR,
            shape=_array(_LENGTH),
            datatype=_ref("Datatype"),
            parameters=_ref("Parameters"),
            data=data,
        ),
        "RequestedOutput": _obj(("name",), name=_STR, parameters=_ref("Parameters")),
        "InferenceRequest": _obj(
            ("inputs",),
            id=_STR,
            parameters=_ref("Parameters"),
            inputs=_array(_ref("Tensor")),
            outputs=_array(_ref("RequestedOutput")),
        ),
        "InferenceResponse": _obj(
            ("model_name", "outputs"),
            model_name=_STR,
            model_version=_STR,
            id=_STR,
            parameters=_ref("Parameters"),
            outputs=_array(_ref("Tensor")),
        ),
        "TensorMetadata": _obj(
            ("name", "datatype", "shape"),
            name=_STR,
            datatype=_ref("Datatype"),
            shape=_array({"type": "integer", "minimum": -1}),
        ),
        "ModelMetadata": _obj(
            ("name", "platform", "inputs", "outputs"),
            name=_STR,
            versions=_array(_STR),
            platform=_STR,
            inputs=_array(_ref("TensorMetadata")),
            outputs=_array(_ref("TensorMetadata")),
        ),
        "ServerMetadata": _obj(
            ("name", "version", "extensions"), name=_STR, version=_STR, extensions=_array(_STR)
        ),
        "ServerLive": _obj(("live",), live=_BOOL),
        "ServerReady": _obj(("ready",), ready=_BOOL),
        "ModelReady": _obj(("name", "ready"), name=_STR, ready=_BOOL),
        "ModelList": _obj(("models",), models=_array(_STR)),
        "RepositoryIndexEntry": _obj(
            ("name", "state", "reason"),
            name=_STR,
            reason=_STR,
            state={"type": "string", "enum": [s.value for s in ModelState]},
        ),
        "V1Live": _obj(("status",), status=_STR),
        "V1Request": {
            "type": "object",
            "description": "A list of rows under instances (or inputs); other keys reach "
            "the model as they are.",
            "anyOf": [{"required": ["instances"]}, {"required": ["inputs"]}],
            "properties": {"instances": _array({}), "inputs": _array({})},
        },
        "V1Response": _obj(("predictions",), predictions={"description": "The model's result."}),
    }


def _parameters() -> dict[str, Schema]:
    def path(name: str) -> Schema:
        return {"name": name, "in": "path", "required": True, "schema": _STR}

    return {
        "ModelName": path("model_name"),
        "ModelVersion": path("model_version"),
        "InferenceHeaderContentLength": {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data extension: the length of the JSON header at the "
            "start of the body; 0 means the body is the raw bytes of the model's single input.",
            "schema": _LENGTH,
        },
    }


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the REST API (built once, then cached)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "modelhost",
            "version": __version__,
            "summary": "KServe-compatible model server: Open Inference Protocol v1 and v2.",
            "description": 'Errors are JSON objects {"error": message}. Request bodies may be '
            "sent with Content-Encoding gzip or deflate.",
            "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"},
        },
        "tags": [
            {"name": "v1", "description": "KServe v1 protocol."},
            {"name": "v2", "description": "Open Inference Protocol v2, binary tensor extension."},
            {"name": "repository", "description": "Model repository extension."},
            {"name": "server", "description": "Metrics."},
        ],
        "paths": _paths(),
        "components": {
            "schemas": _schemas(),
            "parameters": _parameters(),
            "responses": {
                f"Error{code}": {"description": text, "content": _json(_ref("Error"))}
                for code, text in _ERRORS.items()
            },
        },
    }


def swagger_html() -> str:
    """A Swagger UI page, loaded from the jsdelivr CDN, that renders ``/openapi.json``."""
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>modelhost API</title>
<link rel="stylesheet" href="{SWAGGER_UI}/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="{SWAGGER_UI}/swagger-ui-bundle.js" crossorigin="anonymous"></script>
<script>
window.onload = () => {{
  window.ui = SwaggerUIBundle({{url: "/openapi.json", dom_id: "#swagger-ui"}});
}};
</script>
</body>
</html>
"""
