"""The registry's resource kinds: which fields each takes, how a body is checked, how it reads.

Field names, enums and defaults are those of Kubeflow Model Registry's OpenAPI document
(``RegisteredModel``, ``ModelVersion``, the artifact types, ``ServingEnvironment``,
``InferenceService``, ``ServeModel``). A create or update body is checked here, once, into
the plain dict the store keeps; the store adds the id and the times when it answers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from modelhost import errors

__all__ = [
    "ARTIFACT",
    "ARTIFACT_TYPES",
    "INFERENCE_SERVICE",
    "KINDS",
    "MODEL_VERSION",
    "REGISTERED_MODEL",
    "SERVE_MODEL",
    "SERVING_ENVIRONMENT",
    "Kind",
    "check_id",
    "check_update",
    "new_body",
]

_ID = re.compile(r"^[1-9][0-9]{0,8}$")
_INT32 = re.compile(r"^-?([1-9][0-9]{0,8}|0)$")
_INT64 = re.compile(r"^-?[0-9]{1,19}$")

# Field types: how a value in a body is checked.
STR, STRS, ID, NUMBER, INTEGER, INT64_STR = "str", "strs", "id", "number", "integer", "int64"

_RESOURCE_STATES = ("LIVE", "ARCHIVED")
_ARTIFACT_STATES = (
    "UNKNOWN",
    "PENDING",
    "LIVE",
    "MARKED_FOR_DELETION",
    "DELETED",
    "ABANDONED",
    "REFERENCE",
)
_EXECUTION_STATES = ("UNKNOWN", "NEW", "RUNNING", "COMPLETE", "FAILED", "CACHED", "CANCELED")
_COMMON = {"description": STR, "externalId": STR}
_MODEL_CARD = {
    "readme": STR,
    "maturity": STR,
    "language": STRS,
    "tasks": STRS,
    "provider": STR,
    "logo": STR,
    "license": STR,
    "licenseLink": STR,
    "libraryName": STR,
    "owner": STR,
}


@dataclass(frozen=True, slots=True)
class Kind:
    """One resource kind: its name in messages, its writable fields, enums and defaults."""

    title: str
    # Fields an update may change, by their JSON name, with their type.
    fields: Mapping[str, str]
    # Fields only a create may set (the name, the parent's id).
    create_only: Mapping[str, str] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    enums: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # The field naming the parent resource, when the kind has one.
    parent_field: str | None = None


REGISTERED_MODEL = Kind(
    "RegisteredModel",
    {**_COMMON, **_MODEL_CARD, "state": STR},
    {"name": STR},
    ("name",),
    {"state": _RESOURCE_STATES},
    {"state": "LIVE"},
)
MODEL_VERSION = Kind(
    "ModelVersion",
    {**_COMMON, "state": STR, "author": STR},
    {"name": STR, "registeredModelId": ID},
    ("name", "registeredModelId"),
    {"state": _RESOURCE_STATES},
    {"state": "LIVE"},
    parent_field="registeredModelId",
)
SERVING_ENVIRONMENT = Kind("ServingEnvironment", dict(_COMMON), {"name": STR}, ("name",))
INFERENCE_SERVICE = Kind(
    "InferenceService",
    {**_COMMON, "modelVersionId": ID, "runtime": STR, "desiredState": STR},
    {"name": STR, "registeredModelId": ID, "servingEnvironmentId": ID},
    ("registeredModelId", "servingEnvironmentId"),
    {"desiredState": ("DEPLOYED", "UNDEPLOYED")},
    {"desiredState": "DEPLOYED"},
    parent_field="servingEnvironmentId",
)
SERVE_MODEL = Kind(
    "ServeModel",
    {**_COMMON, "lastKnownState": STR},
    {"name": STR, "modelVersionId": ID},
    ("modelVersionId",),
    {"lastKnownState": _EXECUTION_STATES},
    {"lastKnownState": "UNKNOWN"},
)

_ARTIFACT_COMMON = {**_COMMON, "uri": STR, "state": STR}
# Each artifact type's own fields; ``artifactType`` picks one.
ARTIFACT_TYPES: Mapping[str, Mapping[str, str]] = {
    "model-artifact": {
        **_ARTIFACT_COMMON,
        "modelFormatName": STR,
        "storageKey": STR,
        "storagePath": STR,
        "modelFormatVersion": STR,
        "serviceAccountName": STR,
        "modelSourceKind": STR,
        "modelSourceClass": STR,
        "modelSourceGroup": STR,
        "modelSourceId": STR,
        "modelSourceName": STR,
    },
    "doc-artifact": dict(_ARTIFACT_COMMON),
    "dataset-artifact": {
        **_ARTIFACT_COMMON,
        "digest": STR,
        "sourceType": STR,
        "source": STR,
        "schema": STR,
        "profile": STR,
    },
    "metric": {**_COMMON, "state": STR, "value": NUMBER, "timestamp": INT64_STR, "step": INTEGER},
    "parameter": {**_COMMON, "state": STR, "value": STR, "parameterType": STR},
}
ARTIFACT = Kind(
    "Artifact",
    {},
    {"name": STR},
    (),
    {"state": _ARTIFACT_STATES, "parameterType": ("string", "number", "boolean", "object")},
    {"state": "UNKNOWN"},
)

KINDS: Mapping[str, Kind] = {
    "registered_model": REGISTERED_MODEL,
    "model_version": MODEL_VERSION,
    "artifact": ARTIFACT,
    "serving_environment": SERVING_ENVIRONMENT,
    "inference_service": INFERENCE_SERVICE,
    "serve_model": SERVE_MODEL,
}

# Each custom property type's value field and its check.
_METADATA_VALUES = {
    "MetadataStringValue": ("string_value",),
    "MetadataIntValue": ("int_value",),
    "MetadataDoubleValue": ("double_value",),
    "MetadataBoolValue": ("bool_value",),
    "MetadataStructValue": ("struct_value",),
    "MetadataProtoValue": ("type", "proto_value"),
}


def check_id(value: object, what: str) -> int:
    """A resource id as the API writes it (a string of 1 to 9 digits), as an int."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if not isinstance(text, str) or not _ID.match(text):
        raise errors.InvalidInput(f"{what} must be an id (a string of digits), not {value!r}.")
    return int(text)


def new_body(kind: Kind, body: object, artifact_type: str | None = None) -> dict[str, Any]:
    """A create body, checked: the fields of ``kind`` it sets, with the kind's defaults."""
    document = _object(body, kind.title)
    fields = {**_fields(kind, document, artifact_type), **kind.create_only}
    checked = _checked(kind, document, fields)
    for name in kind.required:
        if checked.get(name) in (None, ""):
            raise errors.InvalidInput(f"{kind.title}.{name} is required.")
    for name, value in kind.defaults.items():
        if name in fields:
            checked.setdefault(name, value)
    if kind is ARTIFACT:
        checked["artifactType"] = artifact_type or _artifact_type(document)
    return checked


def check_update(kind: Kind, current: Mapping[str, Any], body: object) -> dict[str, Any]:
    """The stored body once ``body`` (a PATCH) is applied; create-only fields stay as they are.

    A field set to ``null`` is cleared; ``customProperties``, when given, replaces the map.
    """
    document = _object(body, kind.title)
    artifact_type = current.get("artifactType")
    given = document.get("artifactType")
    if kind is ARTIFACT and given is not None and given != artifact_type:
        raise errors.InvalidInput(f"artifactType is {artifact_type!r} and cannot change.")
    fields = _fields(kind, document, artifact_type)
    merged = dict(current)
    for name, value in _checked(kind, document, fields).items():
        merged[name] = value
    for name in fields:
        if name in document and document[name] is None:
            merged.pop(name, None)
    return merged


def _fields(kind: Kind, document: Mapping[str, Any], artifact_type: str | None) -> dict[str, str]:
    if kind is ARTIFACT:
        return dict(ARTIFACT_TYPES[artifact_type or _artifact_type(document)])
    return dict(kind.fields)


def _artifact_type(document: Mapping[str, Any]) -> str:
    name = document.get("artifactType", "model-artifact")
    if not isinstance(name, str) or name not in ARTIFACT_TYPES:
        known = ", ".join(ARTIFACT_TYPES)
        raise errors.InvalidInput(f"artifactType {name!r} is not one of {known}.")
    return str(name)


def _object(body: object, title: str) -> Mapping[str, Any]:
    if not isinstance(body, dict):
        raise errors.InvalidInput(f"A {title} must be a JSON object.")
    return body


def _checked(kind: Kind, document: Mapping[str, Any], fields: Mapping[str, str]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for name, value in document.items():
        if name == "customProperties":
            if value is not None:
                checked[name] = _custom_properties(value)
            continue
        field_type = fields.get(name)
        if field_type is None or value is None:
            continue  # read-only and unknown fields are not the client's to set
        path = f"{kind.title}.{name}"
        checked[name] = _value(path, field_type, value)
        allowed = kind.enums.get(name)
        if allowed is not None and value not in allowed:
            raise errors.InvalidInput(f"{path} must be one of {', '.join(allowed)}.")
    return checked


def _value(path: str, field_type: str, value: object) -> object:
    if field_type == STR:
        if not isinstance(value, str):
            raise errors.InvalidInput(f"{path} must be a string.")
        return value
    if field_type == STRS:
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise errors.InvalidInput(f"{path} must be a list of strings.")
        return value
    if field_type == ID:
        return str(check_id(value, path))
    if field_type == NUMBER:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.InvalidInput(f"{path} must be a number.")
        return value
    if field_type == INTEGER:
        if isinstance(value, bool) or not isinstance(value, int):
            raise errors.InvalidInput(f"{path} must be an integer.")
        return value
    if not isinstance(value, str) or not _INT64.match(value):
        raise errors.InvalidInput(f"{path} must be an integer written as a string.")
    return value


def _custom_properties(value: object) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        raise errors.InvalidInput("customProperties must be an object of MetadataValues.")
    checked: dict[str, dict[str, Any]] = {}
    for name, item in value.items():
        path = f"customProperties.{name}"
        if not isinstance(item, dict):
            raise errors.InvalidInput(f"{path} must be a MetadataValue object.")
        metadata_type = item.get("metadataType")
        keys = _METADATA_VALUES.get(metadata_type) if isinstance(metadata_type, str) else None
        if keys is None:
            known = ", ".join(_METADATA_VALUES)
            raise errors.InvalidInput(f"{path}.metadataType must be one of {known}.")
        extra = set(item) - {"metadataType", *keys}
        if extra:
            raise errors.InvalidInput(f"{path} has unknown fields: {', '.join(sorted(extra))}.")
        for key in keys:
            if key not in item:
                raise errors.InvalidInput(f"{path}.{key} is required for {metadata_type}.")
            _metadata_value(f"{path}.{key}", key, item[key])
        checked[name] = dict(item)
    return checked


def _metadata_value(path: str, key: str, value: object) -> None:
    if key == "int_value":
        if not isinstance(value, str) or not _INT32.match(value):
            raise errors.InvalidInput(f"{path} must be an int32 written as a string.")
    elif key == "double_value":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise errors.InvalidInput(f"{path} must be a number.")
    elif key == "bool_value":
        if not isinstance(value, bool):
            raise errors.InvalidInput(f"{path} must be true or false.")
    elif not isinstance(value, str):
        raise errors.InvalidInput(f"{path} must be a string.")
