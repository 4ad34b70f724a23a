"""The ASGI app serving Kubeflow Model Registry's REST API over a :class:`RegistryService`.

A plain ASGI callable with a route table, served under both prefixes clients use:
``/api/model_registry/v1alpha3`` (the OpenAPI document's) and ``/api/model_registry/v1``
(the one the official Python client calls). Errors are the API's ``{"code", "message"}``
with the status :mod:`modelhost.errors` maps them to. Store work runs in worker threads.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs

import orjson

from modelhost import errors
from modelhost.registry.resources import check_id
from modelhost.registry.service import ListRequest, RegistryService
from modelhost.registry.store import RegistryStore
from modelhost.server.http.asgi import Receive, Scope, Send, send_answer, serve_lifespan
from modelhost.server.http.messages import read_body

__all__ = ["API_PREFIXES", "RegistryApp", "RegistrySettings"]


logger = logging.getLogger("modelhost.registry")

API_PREFIXES = ("/api/model_registry/v1alpha3", "/api/model_registry/v1")


@dataclass(frozen=True, slots=True)
class RegistrySettings:
    """Limits of the registry app; the caller builds it (no environment is read)."""

    max_body_bytes: int = 16 * 1024 * 1024
    default_page_size: int = 100
    # A larger pageSize is served, but never more items than this in one page.
    max_page_size: int = 1000


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    ids: tuple[str, ...]
    params: Mapping[str, str]
    body: bytes

    def json(self) -> object:
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidInput(f"The body is not valid JSON: {exc}.") from None


# A handler answers a status and a JSON document; it runs in a worker thread.
Handler = Callable[[_Call], tuple[int, object]]
_ANY_ID = "{id}"


class RegistryApp:
    """ASGI app for the registry's REST API over one store."""

    def __init__(self, store: RegistryStore, settings: RegistrySettings) -> None:
        self.service = RegistryService(store)
        self._settings = settings
        self._routes: dict[tuple[str, ...], dict[str, Handler]] = {}
        self._add_kind("registered_models", "registered_model", "registered_model")
        self._add_kind("model_versions", "model_version", "model_version")
        self._add_kind("artifacts", "artifact", "artifact")
        self._add_kind("model_artifacts", "artifact", "model_artifact", "model-artifact")
        self._add_kind("serving_environments", "serving_environment", "serving_environment")
        self._add_kind("inference_services", "inference_service", "inference_service")
        self._add_children("registered_models", "versions", "registered_model", "model_version")
        self._add_children(
            "serving_environments", "inference_services", "serving_environment", "inference_service"
        )
        self._add_children("inference_services", "serves", "inference_service", "serve_model")
        self._add(("model_versions", _ANY_ID, "artifacts"), "GET", self._version_artifacts)
        self._add(("model_versions", _ANY_ID, "artifacts"), "POST", self._upsert_artifact)
        self._add(("inference_services", _ANY_ID, "model"), "GET", self._service_model)
        self._add(("inference_services", _ANY_ID, "version"), "GET", self._service_version)

    # -- the route table ----------------------------------------------------------------------

    def _add(self, pattern: tuple[str, ...], method: str, handler: Handler) -> None:
        self._routes.setdefault(pattern, {})[method] = handler

    def _add_kind(
        self, plural: str, kind: str, singular: str, artifact_type: str | None = None
    ) -> None:
        service = self.service

        def listing(call: _Call) -> tuple[int, object]:
            return 200, service.list_page(kind, self._list_request(call), None, artifact_type)

        def create(call: _Call) -> tuple[int, object]:
            record = service.create(kind, call.json(), artifact_type)
            # The document answers 200 to this one create, 201 to every other.
            return (200 if kind == "inference_service" else 201), record.resource()

        def get(call: _Call) -> tuple[int, object]:
            return 200, service.get(kind, call.ids[0], artifact_type).resource()

        def update(call: _Call) -> tuple[int, object]:
            return 200, service.update(kind, call.ids[0], call.json(), artifact_type).resource()

        def find(call: _Call) -> tuple[int, object]:
            return 200, service.find(kind, call.params, artifact_type).resource()

        self._add((plural,), "GET", listing)
        self._add((plural,), "POST", create)
        self._add((plural, _ANY_ID), "GET", get)
        self._add((plural, _ANY_ID), "PATCH", update)
        self._add((singular,), "GET", find)

    def _add_children(self, plural: str, children: str, parent_kind: str, kind: str) -> None:
        service = self.service

        def listing(call: _Call) -> tuple[int, object]:
            parent = service.get(parent_kind, call.ids[0])
            return 200, service.list_page(kind, self._list_request(call), parent.id)

        def create(call: _Call) -> tuple[int, object]:
            record = service.create_child(kind, parent_kind, call.ids[0], call.json())
            return 201, record.resource()

        self._add((plural, _ANY_ID, children), "GET", listing)
        self._add((plural, _ANY_ID, children), "POST", create)

    def _version_artifacts(self, call: _Call) -> tuple[int, object]:
        version = self.service.get("model_version", call.ids[0])
        return 200, self.service.list_page("artifact", self._list_request(call), version.id)

    def _upsert_artifact(self, call: _Call) -> tuple[int, object]:
        record, created = self.service.upsert_version_artifact(call.ids[0], call.json())
        return (201 if created else 200), record.resource()

    def _service_model(self, call: _Call) -> tuple[int, object]:
        return 200, self.service.inference_service_model(call.ids[0]).resource()

    def _service_version(self, call: _Call) -> tuple[int, object]:
        return 200, self.service.inference_service_version(call.ids[0]).resource()

    def _list_request(self, call: _Call) -> ListRequest:
        params = call.params
        size_text = params.get("pageSize")
        size = self._settings.default_page_size
        if size_text:
            size = check_id(size_text, "pageSize")
        return ListRequest(
            filter_query=params.get("filterQuery"),
            page_size=min(size, self._settings.max_page_size),
            order_by=params.get("orderBy") or None,
            sort_order=params.get("sortOrder") or None,
            next_page_token=params.get("nextPageToken") or None,
            name=params.get("name"),
            external_id=params.get("externalId"),
            artifact_type=params.get("artifactType") or None,
        )

    def _match(self, path: str) -> tuple[dict[str, Handler] | None, tuple[str, ...]]:
        for prefix in API_PREFIXES:
            if path.startswith(prefix + "/"):
                segments = tuple(path[len(prefix) + 1 :].rstrip("/").split("/"))
                break
        else:
            return None, ()
        for pattern, methods in self._routes.items():
            if len(pattern) != len(segments):
                continue
            ids = []
            for part, segment in zip(pattern, segments, strict=True):
                if part == _ANY_ID:
                    ids.append(segment)
                elif part != segment:
                    break
            else:
                return methods, tuple(ids)
        return None, ()

    # -- ASGI ---------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        try:
            methods, ids = self._match(scope["path"])
            if methods is None:
                raise _NoRoute(f"No route {scope['path']}.")
            handler = methods.get("GET" if method == "HEAD" else method)
            if handler is None:
                raise _MethodNotAllowed(f"{method} not allowed ({', '.join(sorted(methods))}).")
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
            }
            body = await read_body(receive, headers, self._settings.max_body_bytes)
            call = _Call(method, ids, _params(scope.get("query_string", b"")), body)
            status, document = await asyncio.to_thread(handler, call)
        except errors.ModelhostError as exc:
            status = errors.http_status(exc)
            document = {"code": str(status), "message": str(exc)}
        except Exception:
            logger.exception("registry: %s %s failed", method, scope["path"])
            status, document = 500, {"code": "500", "message": "Internal error."}
        await send_answer(send, status, orjson.dumps(document), head=method == "HEAD")


class _NoRoute(errors.ModelhostError):
    status_code = 404
    grpc_status = "NOT_FOUND"


class _MethodNotAllowed(errors.ModelhostError):
    status_code = 405
    grpc_status = "UNIMPLEMENTED"


def _params(query_string: bytes) -> dict[str, str]:
    try:
        text = query_string.decode("utf-8")
    except UnicodeDecodeError:
        raise errors.InvalidInput("The query string is not UTF-8.") from None
    # A repeated parameter keeps its first value.
    return {name: values[0] for name, values in parse_qs(text, keep_blank_values=True).items()}
