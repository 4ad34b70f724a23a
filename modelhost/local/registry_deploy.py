"""Serving from the platform's model registry: ``model-registry://`` resolved, deployments recorded.

Before an InferenceService is planned, each ``model-registry://`` storageUri of its predictor
is resolved through the platform's own registry, in-process (the rules are
:func:`modelhost.storage.model_registry.resolve_reference`), and replaced by the artifact's
URI; so the replicas fetch that URI as usual, and a version re-pointed to new files, or a
service moved to another version, plans a new revision that rolls out.

Deployments are recorded as Kubeflow's InferenceService controller records them: a service
labelled ``modelregistry.kubeflow.org/registered-model-id`` (with, optionally,
``.../model-version-id``), and here also any service whose storageUri is ``model-registry://``,
gets an InferenceService entry in the registry, under the ServingEnvironment named after its
namespace, ``desiredState: DEPLOYED``, with the version it serves. Kubeflow names the entry
``<name>/<uid>`` and never changes its version; here a service that rolls to another version
gets one entry per version (``<name>/<uid>/<versionId>``), the older turned ``UNDEPLOYED``,
so every deployment stays visible. A deleted service's entries turn ``UNDEPLOYED``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from modelhost import errors
from modelhost.control import InferenceService
from modelhost.control.objects import FRAMEWORKS, PredictorExtensionSpec
from modelhost.registry import RegistryService, RegistryStore, ResourceNotFound
from modelhost.registry.service import ListRequest
from modelhost.registry.store import Record
from modelhost.storage.model_registry import (
    ResolvedArtifact,
    is_registry_uri,
    parse_reference,
    resolve_reference,
)

__all__ = [
    "MODEL_VERSION_LABEL",
    "REGISTERED_MODEL_LABEL",
    "RegistryDeployments",
    "ServiceLookup",
]

logger = logging.getLogger("modelhost.local")

REGISTERED_MODEL_LABEL = "modelregistry.kubeflow.org/registered-model-id"
MODEL_VERSION_LABEL = "modelregistry.kubeflow.org/model-version-id"
# The condition reason of a service whose model the registry cannot name.
RESOLVE_FAILED = "ModelRegistryResolveFailed"
_DEPLOYED, _UNDEPLOYED = "DEPLOYED", "UNDEPLOYED"


class ServiceLookup:
    """:class:`~modelhost.storage.model_registry.RegistryLookup` over the registry in-process."""

    def __init__(self, service: RegistryService) -> None:
        self.service = service

    def model(self, name: str) -> dict[str, Any] | None:
        return self._found("registered_model", {"name": name})

    def version(self, model_id: str, name: str | None) -> dict[str, Any] | None:
        if name is not None:
            return self._found("model_version", {"name": name, "parentResourceId": model_id})
        request = _newest(filter_query="state = 'LIVE'")
        return _first(self.service.list_page("model_version", request, int(model_id)))

    def model_artifact(self, version_id: str) -> dict[str, Any] | None:
        request = _newest(artifact_type="model-artifact")
        return _first(self.service.list_page("artifact", request, int(version_id)))

    def _found(self, kind: str, params: dict[str, str]) -> dict[str, Any] | None:
        try:
            return self.service.find(kind, params).resource()
        except ResourceNotFound:
            return None


def _newest(**fields: Any) -> ListRequest:
    return ListRequest(page_size=1, order_by="CREATE_TIME", sort_order="DESC", **fields)


def _first(page: dict[str, Any]) -> dict[str, Any] | None:
    items = page["items"]
    return dict(items[0]) if items else None


@dataclass(frozen=True, slots=True)
class _Deployment:
    """What one service runs from the registry, as an entry records it."""

    model_id: str
    version_id: str | None
    runtime: str | None
    url: str | None


class RegistryDeployments:
    """The platform's registry as the reconciler uses it: resolve, record, undeploy."""

    def __init__(self, store: RegistryStore) -> None:
        self.service = RegistryService(store)
        self._lookup = ServiceLookup(self.service)
        # The entry each service was last recorded as: a reconcile that changes nothing
        # writes nothing.
        self._recorded: dict[tuple[str, str], tuple[str, _Deployment]] = {}

    # -- resolving ------------------------------------------------------------------------

    async def resolve(self, isvc: InferenceService) -> list[ResolvedArtifact]:
        """Replace the predictor's ``model-registry://`` URIs by their artifacts' URIs.

        Raises :class:`~modelhost.errors.StorageError` naming the model and version the
        registry lacks.
        """
        specs = [spec for spec in _model_specs(isvc) if is_registry_uri(spec.storage_uri)]
        if not specs:
            return []
        return await asyncio.to_thread(self._resolve_specs, specs)

    def _resolve_specs(self, specs: list[PredictorExtensionSpec]) -> list[ResolvedArtifact]:
        resolved = []
        for spec in specs:
            artifact = resolve_reference(parse_reference(str(spec.storage_uri)), self._lookup)
            spec.storage_uri = artifact.uri
            resolved.append(artifact)
        return resolved

    # -- recording ------------------------------------------------------------------------

    async def record(
        self, isvc: InferenceService, resolved: list[ResolvedArtifact], url: str | None
    ) -> None:
        """Record that ``isvc`` serves what it names (if it names a registered model)."""
        deployment = _deployment(isvc, resolved, url)
        if deployment is None:
            return
        key = (isvc.namespace, isvc.name or "")
        name = f"{isvc.name}/{isvc.metadata.uid}"
        if deployment.version_id is not None:
            name += f"/{deployment.version_id}"
        if self._recorded.get(key) == (name, deployment):
            return
        try:
            await asyncio.to_thread(self._record, isvc.namespace, isvc.name or "", name, deployment)
        except errors.ModelhostError as exc:
            # The service runs whatever its labels say; the registry only misses the record.
            logger.warning("recording %s/%s in the model registry: %s", *key, exc)
            return
        self._recorded[key] = (name, deployment)

    async def undeploy(self, namespace: str, name: str) -> None:
        """A deleted service: each of its DEPLOYED entries turns UNDEPLOYED."""
        self._recorded.pop((namespace, name), None)
        try:
            await asyncio.to_thread(self._undeploy_all, namespace, name, None)
        except errors.ModelhostError as exc:
            logger.warning(
                "marking %s/%s undeployed in the model registry: %s", namespace, name, exc
            )

    def _record(self, namespace: str, service: str, entry: str, deployment: _Deployment) -> None:
        environment = self._environment(namespace)
        self._undeploy_all(namespace, service, entry)
        existing = self.service.store.find("inference_service", name=entry, parent_id=environment)
        body: dict[str, Any] = {"desiredState": _DEPLOYED}
        if deployment.url:
            body["customProperties"] = {
                "url": {"metadataType": "MetadataStringValue", "string_value": deployment.url}
            }
        if existing is not None:
            current = {k: existing.body.get(k) for k in body}
            if current != body:  # a restarted platform finds its entries as they were
                self.service.update("inference_service", str(existing.id), body)
            return
        body.update(
            name=entry,
            servingEnvironmentId=str(environment),
            registeredModelId=deployment.model_id,
        )
        if deployment.version_id is not None:
            body["modelVersionId"] = deployment.version_id
        if deployment.runtime:
            body["runtime"] = deployment.runtime
        self.service.create("inference_service", body)

    def _environment(self, namespace: str) -> int:
        """The id of the ServingEnvironment named after ``namespace``, created on first use."""
        found = self.service.store.find("serving_environment", name=namespace)
        if found is not None:
            return found.id
        try:
            return self.service.create("serving_environment", {"name": namespace}).id
        except errors.InvalidInput:
            # Created meanwhile (the registry's API is open to clients too).
            again = self.service.store.find("serving_environment", name=namespace)
            if again is None:
                raise
            return again.id

    def _undeploy_all(self, namespace: str, service: str, keep: str | None) -> None:
        environment = self.service.store.find("serving_environment", name=namespace)
        if environment is None:
            return
        for entry in _entries_of(self.service.store, environment.id, service):
            if entry.name != keep and entry.body.get("desiredState") == _DEPLOYED:
                self.service.update(
                    "inference_service", str(entry.id), {"desiredState": _UNDEPLOYED}
                )


def describe_failure(message: str, resolved: list[ResolvedArtifact]) -> str:
    """A revision's failure, saying which registered model and version it was fetching."""
    named = "; ".join(
        f"{r.reference.uri} ({r.reference.model}/{r.version_name} → {r.uri})" for r in resolved
    )
    if not named or message.startswith(named):
        return message
    return f"{named}: {message}"


def _entries_of(store: RegistryStore, environment: int, service: str) -> Iterator[Record]:
    prefix = f"{service}/"
    for record in store.select("inference_service", environment):
        if record.name is not None and record.name.startswith(prefix):
            yield record


def _model_specs(isvc: InferenceService) -> Iterator[PredictorExtensionSpec]:
    predictor = isvc.spec.predictor
    if predictor is None:
        return
    if predictor.model is not None:
        yield predictor.model
    for framework in FRAMEWORKS:
        spec = predictor.framework(framework)
        if spec is not None:
            yield spec


def _deployment(
    isvc: InferenceService, resolved: list[ResolvedArtifact], url: str | None
) -> _Deployment | None:
    labels = isvc.metadata.labels or {}
    predictor = isvc.spec.predictor
    runtime = predictor.model.runtime if predictor and predictor.model else None
    if resolved:
        first = resolved[0]
        return _Deployment(first.model_id, first.version_id, runtime, url)
    model_id = labels.get(REGISTERED_MODEL_LABEL)
    if not model_id:
        return None
    return _Deployment(model_id, labels.get(MODEL_VERSION_LABEL) or None, runtime, url)
