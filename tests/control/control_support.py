"""Builders shared by the control-plane tests: objects from short dicts, and the samples."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelhost.control import InferenceService, ServingRuntime, parse_documents, parse_object
from modelhost.control.objects import ApiObject, ClusterServingRuntime

SAMPLES = Path(__file__).parent / "samples"


def isvc(
    predictor: dict[str, Any] | None = None,
    *,
    name: str = "iris",
    namespace: str | None = None,
    annotations: dict[str, str] | None = None,
    status: dict[str, Any] | None = None,
    **spec: Any,
) -> InferenceService:
    """An InferenceService from plain data, as if parsed from YAML."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if annotations:
        metadata["annotations"] = annotations
    body: dict[str, Any] = dict(spec)
    if predictor is not None:
        body["predictor"] = predictor
    document: dict[str, Any] = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": metadata,
        "spec": body,
    }
    if status is not None:
        document["status"] = status
    parsed = parse_object(document)
    assert isinstance(parsed, InferenceService)
    return parsed


def sklearn(uri: str = "gs://bucket/iris", **fields: Any) -> dict[str, Any]:
    """A predictor with ``model: {modelFormat: sklearn}``; extra fields go into ``model``."""
    return {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": uri, **fields}}


def runtime(
    name: str,
    formats: list[dict[str, Any]],
    *,
    protocols: list[str] | None = None,
    namespace: str | None = None,
    created: str | None = None,
    **spec: Any,
) -> ServingRuntime | ClusterServingRuntime:
    """A ServingRuntime (with ``namespace``) or ClusterServingRuntime (without)."""
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    if created is not None:
        metadata["creationTimestamp"] = created
    body: dict[str, Any] = {
        "supportedModelFormats": formats,
        "containers": [{"name": "kserve-container", "image": f"example/{name}:1"}],
        **spec,
    }
    if protocols is not None:
        body["protocolVersions"] = protocols
    document = {
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ServingRuntime" if namespace is not None else "ClusterServingRuntime",
        "metadata": metadata,
        "spec": body,
    }
    parsed = parse_object(document)
    assert isinstance(parsed, (ServingRuntime, ClusterServingRuntime))
    return parsed


def fmt(
    name: str, version: str | None = None, priority: int | None = None, auto: bool = True
) -> dict[str, Any]:
    """One supportedModelFormats entry."""
    entry: dict[str, Any] = {"name": name, "autoSelect": auto}
    if version is not None:
        entry["version"] = version
    if priority is not None:
        entry["priority"] = priority
    return entry


def sample(file_name: str) -> list[ApiObject]:
    path = SAMPLES / file_name
    return parse_documents(path.read_text(), path.name)


def sample_isvc(file_name: str) -> InferenceService:
    (found,) = [o for o in sample(file_name) if isinstance(o, InferenceService)]
    return found
