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
from modelhost.protocol.v2_json import MAX_NESTING

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


def _closed(**properties: Schema) -> Schema:
    """An object of these optional properties and no others (a body a 400 checks)."""
    return {**_obj((), **properties), "additionalProperties": False}


def _repository() -> dict[str, Schema]:
    ready = {**_BOOL, "description": "List only ready models (default false)."}
    index_body = _body(_json(_closed(ready=ready)), "An empty body lists every model.", False)
    load_body = _body(
        _json(_closed(parameters=_ref("Parameters"))),
        "Parameters are not supported (a non-empty object is a 501): load reads the model "
        "from the repository.",
        False,
    )
    unload_body = _body(
        _json(_closed(parameters=_ref("Parameters"))),
        "Parameters are accepted and have no effect (a model here has no dependents).",
        False,
    )
    index = _json(_array(_ref("RepositoryIndexEntry")))
    path, summary = "/v2/repository/index", "The models in the repository and their state."
    paths = _operation(path, "repositoryIndex", summary, index, (400, 413), index_body)
    for verb, body in (("load", load_body), ("unload", unload_body)):
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


# The JSON element each datatype's data holds (BF16 travels as binary data only).
_ELEMENTS: dict[str, tuple[str, Schema]] = {
    "FloatData": ("FP16 FP32 FP64 BF16", {"type": ["number", "null"]}),
    "IntegerData": (
        "INT8 INT16 INT32 INT64 UINT8 UINT16 UINT32 UINT64",
        {"type": "integer"},
    ),
    "BoolData": ("BOOL", _BOOL),
    "StringData": ("BYTES", _STR),
}


def _tensor_schemas() -> dict[str, Schema]:
    """One tensor schema per kind of data, chosen by ``datatype``; data nests recursively."""
    schemas: dict[str, Schema] = {}
    for data, (types, element) in _ELEMENTS.items():
        schemas[data] = {
            "type": "array",
            "items": {"anyOf": [element, _ref(data)]},
            "description": f"Row-major {types} values, flat or nested (at most {MAX_NESTING} "
            "levels).",
        }
        schemas[data.replace("Data", "Tensor")] = _obj(
            ("name", "shape", "datatype"),
            name=_STR,
            shape=_array(_LENGTH),
            datatype={"type": "string", "enum": types.split()},
            parameters=_ref("Parameters"),
            data=_ref(data),
        )
    names = [data.replace("Data", "Tensor") for data in _ELEMENTS]
    schemas["Tensor"] = {
        "description": "A tensor: data, or (binary tensor data extension) "
        "parameters.binary_data_size and its bytes after the JSON, never both. FP16, FP32 and "
        "FP64 data are numbers (null is NaN); the INT and UINT types, integers in their range; "
        "BOOL, true or false; BYTES, strings. BF16 tensors are sent as binary data only.",
        "oneOf": [_ref(name) for name in names],
        "discriminator": {
            "propertyName": "datatype",
            "mapping": {
                datatype: f"#/components/schemas/{name}"
                for name, (types, _) in zip(names, _ELEMENTS.values(), strict=True)
                for datatype in types.split()
            },
        },
    }
    return schemas


def _schemas() -> dict[str, Schema]:
    scalar = {"type": ["string", "number", "boolean"]}
    return {
        "Error": _obj(("error",), error=_STR),
        "Datatype": {"type": "string", "enum": sorted(DATATYPES)},
        "Parameters": {
            "type": "object",
            "additionalProperties": scalar,
            "description": "Values are strings, numbers or booleans. Includes the binary "
            "extension's binary_data_size (tensor), binary_data (requested output) and "
            'binary_data_output (request), and KServe\'s content_type ("pd": the inputs are '
            "the columns of a DataFrame, of any name).",
        },
        **_tensor_schemas(),
        "RequestedOutput": _obj(("name",), name=_STR, parameters=_ref("Parameters")),
        "InferenceRequest": {
            **_obj(
                ("inputs",),
                id=_STR,
                parameters=_ref("Parameters"),
                inputs=_array(_ref("Tensor")),
                outputs=_array(_ref("RequestedOutput")),
            ),
            "description": "Inputs have unique names. Where the model's metadata declares "
            "inputs, the names are its names (or, when none of them is, the inputs go by "
            "position), and each datatype is the declared one or converts to it: a float "
            "of another width, an integer of another width whose values fit, an integer to "
            "a float, a boolean to a number. Anything else is a 400.",
        },
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
    def path(name: str, description: str) -> Schema:
        schema = {"name": name, "in": "path", "required": True, "schema": _STR}
        return {**schema, "description": description}

    version = (
        "A version the model has (its metadata's versions); a model without versions has "
        "none, and any other is a 404."
    )
    return {
        "ModelName": path("model_name", "A model's name."),
        "ModelVersion": path("model_version", version),
        "InferenceHeaderContentLength": {
            "name": HEADER_LENGTH,
            "in": "header",
            "required": False,
            "description": "Binary tensor data extension: the length of the JSON header at the "
            "start of the body, at most the body's length. 0 means the body is the raw bytes "
            "of the model's single input; such a body may not be JSON (by its Content-Type "
            "or its content).",
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
