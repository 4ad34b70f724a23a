"""YAML or JSON text → typed API objects, and back, with errors that name the field.

A file may hold many documents (``---``), as ``kubectl apply -f`` accepts; a ``kind: List``
document holds ``items``. Unknown fields are refused, naming their path, as the Kubernetes API
server does in strict field validation: a typo such as ``minReplica`` must not be silently
dropped (the service would run with the default). Status fields are the exception: they are
written by the platform and dropped when unknown.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import yaml

from modelhost.control.errors import FieldError, ParseError
from modelhost.control.objects import (
    ApiObject,
    ClusterServingRuntime,
    InferenceGraph,
    InferenceService,
    KubeObject,
    ServingRuntime,
)

__all__ = ["KINDS", "dump_yaml", "parse_documents", "parse_object", "to_dict"]

# kind → (the apiVersions accepted, the type)
KINDS: Mapping[str, tuple[tuple[str, ...], type[ApiObject]]] = {
    "InferenceService": (("serving.kserve.io/v1beta1",), InferenceService),
    "ServingRuntime": (("serving.kserve.io/v1alpha1",), ServingRuntime),
    "ClusterServingRuntime": (("serving.kserve.io/v1alpha1",), ClusterServingRuntime),
    "InferenceGraph": (("serving.kserve.io/v1alpha1",), InferenceGraph),
}

_UNKNOWN_FIELD = re.compile(
    r"Object contains unknown field `(?P<name>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?"
)
_MISSING_FIELD = re.compile(
    r"Object missing required field `(?P<name>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?"
)
_EXPECTED = re.compile(
    r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`(?: - at `\$(?P<at>[^`]*)`)?"
)
_AT = re.compile(r"^(?P<text>.*?)(?: - at `\$(?P<at>[^`]*)`)?$", re.DOTALL)
# One step of a msgspec path: ``.field``, ``[0]`` or ``[...]`` (a mapping's key).
_SEGMENT = re.compile(r"\[\.\.\.\]|\[\d+\]|\.?[^.\[]+")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_documents(text: str | bytes, source: str = "") -> list[ApiObject]:
    """Every object in a YAML (or JSON) stream, in order; empty documents are skipped.

    Raises :class:`ParseError` for the first document that is not a known, valid object;
    its message names the source, the document's position and the offending field.
    """
    try:
        documents = list(yaml.load_all(text, Loader=_loader()))
    except yaml.YAMLError as exc:
        raise ParseError([FieldError("", f"not valid YAML: {exc}")], source) from None
    objects: list[ApiObject] = []
    for index, document in enumerate(documents):
        if document is None:
            continue
        if isinstance(document, dict) and document.get("kind") == "List":
            for item_index, item in enumerate(document.get("items") or []):
                objects.append(parse_object(item, _subject(source, index, item_index)))
            continue
        objects.append(parse_object(document, _subject(source, index)))
    return objects


def parse_object(document: Any, subject: str = "") -> ApiObject:
    """One decoded document (a dict) → its typed object, checking ``kind`` and ``apiVersion``."""
    if not isinstance(document, dict):
        kind_name = type(document).__name__
        raise ParseError(
            [FieldError("", f"expected a mapping (an object), got {kind_name}")], subject
        )
    kind = document.get("kind")
    if not isinstance(kind, str) or kind not in KINDS:
        known = ", ".join(KINDS)
        message = (
            f"unknown kind {kind!r}: modelhost serves {known}"
            if kind
            else f"missing kind (one of {known})"
        )
        raise ParseError([FieldError("kind", message)], subject)
    versions, object_type = KINDS[kind]
    api_version = document.get("apiVersion")
    if api_version not in versions:
        message = f"{kind} is served as apiVersion {' or '.join(versions)}, not {api_version!r}"
        raise ParseError([FieldError("apiVersion", message)], subject)
    metadata = document.get("metadata")
    name = metadata.get("name") if isinstance(metadata, dict) else None
    described = f"{kind} {name}" if isinstance(name, str) and name else kind
    subject = f"{subject} ({described})" if subject else described
    try:
        return msgspec.convert(document, object_type, strict=True)
    except msgspec.ValidationError as exc:
        raise ParseError([_field_error(str(exc), document)], subject) from None


def to_dict(obj: ApiObject) -> dict[str, Any]:
    """The object as plain data with KServe's field names (what ``get -o json`` prints)."""
    data: dict[str, Any] = msgspec.to_builtins(obj)
    # Always first and always present (msgspec would omit a value equal to the default).
    return {"apiVersion": obj.api_version, "kind": obj.kind, **data}


def dump_yaml(obj: ApiObject) -> str:
    """The object as YAML with KServe's field names, in field order (``get -o yaml``)."""
    text: str = yaml.safe_dump(to_dict(obj), sort_keys=False, default_flow_style=False)
    return text


def _loader() -> type[yaml.SafeLoader]:
    """The fast C loader when PyYAML was built with it."""
    loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return loader


def _subject(source: str, index: int, item: int | None = None) -> str:
    where = f"document {index + 1}" + (f" item {item + 1}" if item is not None else "")
    return f"{source} {where}" if source else where


def _field_error(text: str, document: Any) -> FieldError:
    """msgspec's message → a FieldError with a dotted field path and a plain explanation."""
    if match := _UNKNOWN_FIELD.match(text):
        name = match["name"]
        known = _known_field_names()
        hint = difflib.get_close_matches(name.lower(), list(known), n=1)
        advice = f"; did you mean {known[hint[0]]!r}?" if hint else ""
        message = f"unknown field {name!r} (not in KServe's schema){advice}"
        at = _locate(document, _path(match["at"]), lambda value: _has(value, name))
        return FieldError(_join(at, name), message)
    if match := _MISSING_FIELD.match(text):
        name = match["name"]
        at = _locate(document, _path(match["at"]), lambda value: not _has(value, name))
        return FieldError(_join(at, name), "required field is missing")
    if match := _EXPECTED.match(text):
        want = match["want"].replace(" | null", "").replace("`", "")
        got = match["got"]
        at = _locate(document, _path(match["at"]), lambda value: _json_type(value) == got)
        return FieldError(at, f"expected {want}, got {got}")
    match = _AT.match(text)
    assert match is not None  # the pattern matches any text
    return FieldError(_path(match["at"]), match["text"])


def _locate(document: Any, path: str, at_fault: Callable[[Any], bool]) -> str:
    """``path`` with each ``[...]`` (msgspec's stand-in for a mapping's key) made the real key.

    msgspec decodes a mapping in order and stops at the first error, so the key is the first
    one whose value, followed down the rest of the path, is at fault. ``spec.nodes[...].steps``
    becomes ``spec.nodes.root.steps``; the path is returned unchanged if nothing matches.
    """
    if "[...]" not in path:
        return path
    segments = [match.group() for match in _SEGMENT.finditer(path)]
    return _walk(document, segments, "", at_fault) or path


def _walk(value: Any, segments: list[str], prefix: str, at_fault: Callable[[Any], bool]) -> str:
    if not segments:
        return prefix if at_fault(value) else ""
    segment, rest = segments[0], segments[1:]
    if segment == "[...]":
        for key, item in value.items() if isinstance(value, dict) else ():
            shown = f"{prefix}.{key}" if _PLAIN_KEY.match(str(key)) else f"{prefix}[{key}]"
            if found := _walk(item, rest, shown.lstrip("."), at_fault):
                return found
        return ""
    if segment.startswith("["):
        index = int(segment[1:-1])
        if isinstance(value, list) and index < len(value):
            return _walk(value[index], rest, f"{prefix}{segment}", at_fault)
        return ""
    name = segment.lstrip(".")
    if isinstance(value, dict) and name in value:
        return _walk(value[name], rest, _join(prefix, name), at_fault)
    return ""


def _has(value: Any, name: str) -> bool:
    return isinstance(value, dict) and name in value


def _json_type(value: Any) -> str:
    """A decoded YAML value's type as msgspec names it in "got ..." messages."""
    names = {bool: "bool", int: "int", float: "float", str: "str", dict: "object", list: "array"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


@functools.cache
def _known_field_names() -> dict[str, str]:
    """Every field name of every API type (by its lower-case form), to suggest what a typo meant."""
    names: set[str] = set()
    pending: list[type[KubeObject]] = [KubeObject]
    while pending:
        struct_type = pending.pop()
        pending.extend(struct_type.__subclasses__())
        names.update(field.encode_name for field in msgspec.structs.fields(struct_type))
    return {name.lower(): name for name in sorted(names)}


def _path(at: str | None) -> str:
    """``$.spec.predictor[0]`` as msgspec writes it → ``spec.predictor[0]``."""
    return (at or "").lstrip(".")


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
