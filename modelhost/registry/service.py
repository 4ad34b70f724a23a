"""The registry's operations: create, read, update, find and list each kind of resource.

What ties resources together lives here: a version belongs to a registered model that must
exist, an artifact to a version (or to none), an inference service to a serving environment
and a registered model, a serve action to an inference service. Every call blocks on the
store; the HTTP app runs them in worker threads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from modelhost import errors
from modelhost.registry import query
from modelhost.registry.resources import (
    ARTIFACT,
    ARTIFACT_TYPES,
    KINDS,
    Kind,
    check_id,
    check_update,
    new_body,
)
from modelhost.registry.store import Record, RegistryStore, ResourceNotFound

__all__ = ["ListRequest", "RegistryService"]

_SHOWN = frozenset({"id", "name", "createTimeSinceEpoch", "lastUpdateTimeSinceEpoch"})


def _properties(kind: Kind) -> frozenset[str]:
    fields = set(kind.fields) | set(kind.create_only) | _SHOWN
    if kind is ARTIFACT:
        fields |= {"artifactType"}
        for type_fields in ARTIFACT_TYPES.values():
            fields |= set(type_fields)
    return frozenset(fields)


_PROPERTIES = {name: _properties(kind) for name, kind in KINDS.items()}
# Properties a filterQuery's ``p = 'v'`` may test in SQL: strings in the body (a list field
# would compare its JSON text) or the name and external id columns.
_SQL_FIELDS = frozenset(
    {
        "name",
        "externalId",
        "state",
        "desiredState",
        "artifactType",
        "author",
        "owner",
        "runtime",
        "registeredModelId",
        "modelVersionId",
        "servingEnvironmentId",
        "modelFormatName",
        "uri",
    }
)
_COLUMN_FIELDS = {"name": "name", "externalId": "external_id"}


@dataclass(frozen=True, slots=True)
class ListRequest:
    """A list call's parameters, as the query string gave them."""

    filter_query: str | None = None
    page_size: int = 100
    order_by: str | None = None
    sort_order: str | None = None
    next_page_token: str | None = None
    name: str | None = None
    external_id: str | None = None
    artifact_type: str | None = None


class RegistryService:
    """The registry's operations over one :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    # -- reads --------------------------------------------------------------------------------

    def get(self, kind: str, resource_id: str, artifact_type: str | None = None) -> Record:
        """The resource of ``kind`` with id ``resource_id``: :class:`ResourceNotFound` if none."""
        title = _title(kind, artifact_type)
        number = _path_id(resource_id, title)
        record = self.store.get(kind, number) if number is not None else None
        if record is None or not _of_type(record, artifact_type):
            raise ResourceNotFound(f"No {title} has id {resource_id!r}.")
        return record

    def find(
        self,
        kind: str,
        params: Mapping[str, str],
        artifact_type: str | None = None,
    ) -> Record:
        """The resource a find route's ``name``/``externalId``/``parentResourceId`` pick."""
        name, external_id = params.get("name"), params.get("externalId")
        title = _title(kind, artifact_type)
        if name is None and external_id is None:
            raise errors.InvalidInput(f"Finding a {title} takes a name or an externalId.")
        parent = params.get("parentResourceId")
        parent_id = check_id(parent, "parentResourceId") if parent is not None else None
        if artifact_type is None:
            record = self.store.find(kind, name=name, external_id=external_id, parent_id=parent_id)
        else:
            # Artifacts of other types may share the name (in other versions): skip them.
            record = next(
                (
                    r
                    for r in self.store.select(kind, parent_id)
                    if (name is None or r.name == name)
                    and (external_id is None or r.external_id == external_id)
                    and _of_type(r, artifact_type)
                ),
                None,
            )
        if record is None:
            wanted = ", ".join(f"{k}={v!r}" for k, v in params.items() if v is not None)
            raise ResourceNotFound(f"No {title} matches {wanted}.")
        return record

    def list_page(
        self,
        kind: str,
        request: ListRequest,
        parent_id: int | None = None,
        artifact_type: str | None = None,
    ) -> dict[str, Any]:
        """One page of a list, as the API's ``...List`` objects are."""
        predicate = query.parse_filter(request.filter_query, _PROPERTIES[kind])
        wanted_type = request.artifact_type or artifact_type
        if wanted_type is not None and wanted_type not in ARTIFACT_TYPES:
            raise errors.InvalidInput(f"artifactType must be one of {', '.join(ARTIFACT_TYPES)}.")
        if artifact_type is not None and wanted_type != artifact_type:
            raise errors.InvalidInput(f"This list holds only {artifact_type} artifacts.")
        in_sql = self._page_in_sql(kind, request, parent_id, wanted_type)
        if in_sql is not None:
            return in_sql
        shown = []
        for record in self.store.select(kind, parent_id):
            if request.name is not None and record.name != request.name:
                continue
            if request.external_id is not None and record.external_id != request.external_id:
                continue
            if not _of_type(record, wanted_type):
                continue
            resource = record.resource()
            if predicate(resource):
                shown.append(resource)
        result = query.page(
            shown, request.order_by, request.sort_order, request.page_size, request.next_page_token
        )
        return _page(result.items, request.page_size, result.next_page_token)

    def _page_in_sql(
        self, kind: str, request: ListRequest, parent_id: int | None, wanted_type: str | None
    ) -> dict[str, Any] | None:
        """The page when the store can filter, order and cut it itself (None: it cannot).

        The common lists (no filterQuery, or ``p = 'v'`` terms, in id or time order) read
        one page of rows, not every row; the answer and its tokens are those of the general
        path, so a client may page through either.
        """
        order, descending = query.order(request.order_by, request.sort_order)
        if order == "NAME":
            return None  # the database's collation may differ from the API's code point order
        tested = query.equalities(request.filter_query, _SQL_FIELDS & _PROPERTIES[kind])
        if tested is None:
            return None
        pairs: list[tuple[str, str | None]] = [
            ("name", request.name),
            ("externalId", request.external_id),
            ("artifactType", wanted_type),
        ]
        for name, value in pairs:
            if value is not None:
                if tested.get(name, value) != value:
                    return _page([], request.page_size, "")  # two values: nothing matches
                tested[name] = value
        columns = {_COLUMN_FIELDS[k]: v for k, v in tested.items() if k in _COLUMN_FIELDS}
        fields = {k: v for k, v in tested.items() if k not in _COLUMN_FIELDS}
        after: tuple[int, int] | None = None
        if request.next_page_token:
            value, last_id = query.cursor(request.next_page_token)
            if not isinstance(value, int):
                raise errors.InvalidInput("nextPageToken belongs to another orderBy.")
            after = (value, last_id)
        records = self.store.select_page(
            kind,
            parent_id,
            columns=columns,
            fields=fields,
            order=order,
            descending=descending,
            after=after,
            limit=request.page_size + 1,
        )
        items = [record.resource() for record in records[: request.page_size]]
        more = len(records) > request.page_size and bool(items)
        return _page(items, request.page_size, query.page_token(items[-1], order) if more else "")

    # -- writes -------------------------------------------------------------------------------

    def create(self, kind: str, body: object, artifact_type: str | None = None) -> Record:
        """A new resource of ``kind`` from a create body (its parent named in the body)."""
        spec = KINDS[kind]
        if artifact_type is not None and isinstance(body, dict):
            given = body.get("artifactType", artifact_type)
            if given != artifact_type:
                raise errors.InvalidInput(f"artifactType must be {artifact_type!r} here.")
        checked = new_body(spec, body, artifact_type)
        parent_id = self._check_references(kind, checked)
        return self.store.create(kind, parent_id, checked)

    def create_child(self, kind: str, parent_kind: str, parent: str, body: object) -> Record:
        """A new resource under the parent a path names (404 when that parent does not exist)."""
        owner = self.get(parent_kind, parent)
        spec = KINDS[kind]
        if isinstance(body, dict) and spec.parent_field is not None:
            body = {**body, spec.parent_field: str(owner.id)}
        checked = new_body(spec, body)
        parent_id = self._check_references(kind, checked)
        return self.store.create(kind, parent_id or owner.id, checked)

    def update(
        self, kind: str, resource_id: str, body: object, artifact_type: str | None = None
    ) -> Record:
        """The resource once a PATCH body is applied."""
        record = self.get(kind, resource_id, artifact_type)
        merged = check_update(KINDS[kind], record.body, body)
        self._check_references(kind, merged)
        return self.store.update(record, merged)

    def upsert_version_artifact(self, version: str, body: object) -> tuple[Record, bool]:
        """An artifact created in, or moved into, a version; whether it was created."""
        owner = self.get("model_version", version)
        existing = body.get("id") if isinstance(body, dict) else None
        if existing is None:
            checked = new_body(ARTIFACT, body)
            return self.store.create("artifact", owner.id, checked), True
        record = self.get("artifact", str(existing))
        merged = check_update(ARTIFACT, record.body, body)
        return self.store.update(record, merged, parent_id=owner.id), False

    # -- relations ----------------------------------------------------------------------------

    def inference_service_model(self, service: str) -> Record:
        record = self.get("inference_service", service)
        return self.get("registered_model", record.body["registeredModelId"])

    def inference_service_version(self, service: str) -> Record:
        """The version an inference service serves: its own, else its model's latest."""
        record = self.get("inference_service", service)
        version = record.body.get("modelVersionId")
        if version is not None:
            return self.get("model_version", version)
        model_id = int(record.body["registeredModelId"])
        versions = self.store.select("model_version", model_id)
        if not versions:
            raise ResourceNotFound(f"Registered model {model_id} has no version to serve.")
        return max(versions, key=lambda v: (v.create_time, v.id))

    def _check_references(self, kind: str, body: Mapping[str, Any]) -> int:
        """The parent's id; the resources the body names must exist (else the body is wrong)."""
        references = {
            "model_version": (("registeredModelId", "registered_model"),),
            "inference_service": (
                ("servingEnvironmentId", "serving_environment"),
                ("registeredModelId", "registered_model"),
                ("modelVersionId", "model_version"),
            ),
            "serve_model": (("modelVersionId", "model_version"),),
        }.get(kind, ())
        for field_name, target in references:
            value = body.get(field_name)
            if value is not None and self.store.get(target, int(value)) is None:
                title = KINDS[target].title
                raise errors.InvalidInput(f"{field_name} {value!r}: no {title} has that id.")
        parent_field = KINDS[kind].parent_field
        return int(body[parent_field]) if parent_field is not None else 0


def _page(items: list[dict[str, Any]], page_size: int, next_token: str) -> dict[str, Any]:
    return {"items": items, "nextPageToken": next_token, "pageSize": page_size, "size": len(items)}


def _of_type(record: Record, artifact_type: str | None) -> bool:
    return artifact_type is None or record.body.get("artifactType") == artifact_type


def _title(kind: str, artifact_type: str | None) -> str:
    if artifact_type == "model-artifact":
        return "ModelArtifact"
    return KINDS[kind].title


def _path_id(value: str, title: str) -> int | None:
    try:
        return check_id(value, f"{title} id")
    except errors.InvalidInput:
        return None  # no resource has an id that is not one
