"""``model-registry://`` storage URIs: a registered model's version, resolved to its artifact.

The grammar is Kubeflow Model Registry's storage initializer's::

    model-registry://<model>
    model-registry://<model>/<version>
    model-registry://<host[:port]>/<model>/<version>
    model-registry://<host[:port]>/<model>            (when <host[:port]> is the registry's)

A query string (``?namespace=...``) is ignored. The URI names the newest ModelArtifact of
that version (by creation time), or, with no version, of the model's newest LIVE version; the
artifact's ``uri`` is then fetched like any other storageUri. :func:`resolve_reference` holds
those rules over a :class:`RegistryLookup`: :class:`RestLookup` asks a registry's REST API
(``modelhost serve``, the Kubernetes storage initializer), and the embedded platform asks its
own registry in-process. The REST base URL and token come from ``StorageSettings.environ``
(``MODEL_REGISTRY_BASE_URL`` and ``MODEL_REGISTRY_SCHEME`` as Kubeflow's initializer reads
them, ``MODEL_REGISTRY_TOKEN``), else from the URI's host.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.transport.json_http import JsonHttpClient, error_message

__all__ = [
    "API_PREFIX",
    "BASE_URL_VARIABLE",
    "SCHEME",
    "SCHEME_VARIABLE",
    "TOKEN_VARIABLE",
    "RegistryLookup",
    "RegistryReference",
    "RegistryRequestFailed",
    "RegistryRestClient",
    "ResolvedArtifact",
    "RestLookup",
    "base_url",
    "is_registry_uri",
    "parse_reference",
    "resolve_reference",
    "resolve_uri",
]

SCHEME = "model-registry://"
BASE_URL_VARIABLE = "MODEL_REGISTRY_BASE_URL"
SCHEME_VARIABLE = "MODEL_REGISTRY_SCHEME"
TOKEN_VARIABLE = "MODEL_REGISTRY_TOKEN"
API_PREFIX = "/api/model_registry/v1alpha3"
# Kubeflow's initializer's default registry address.
_DEFAULT_ADDRESS = "localhost:8080"


def is_registry_uri(uri: str | None) -> bool:
    """Whether ``uri`` is a ``model-registry://`` storage URI."""
    return bool(uri) and str(uri).lower().startswith(SCHEME)


@dataclass(frozen=True, slots=True)
class RegistryReference:
    """What a ``model-registry://`` URI names: a model, maybe a version, maybe a registry."""

    uri: str
    model: str
    version: str | None = None
    # ``host[:port]`` of the registry the URI names, when it names one.
    host: str | None = None

    @property
    def title(self) -> str:
        """The model and version as messages name them."""
        return f"{self.model}/{self.version}" if self.version else f"{self.model} (newest)"


def parse_reference(uri: str, registry_address: str | None = None) -> RegistryReference:
    """The parts of a ``model-registry://`` URI; :class:`~modelhost.errors.StorageError` if bad.

    Two parts are ``<model>/<version>`` unless the first is ``registry_address`` (the
    configured registry's ``host[:port]``), as Kubeflow's initializer reads them.
    """
    if not is_registry_uri(uri):
        raise errors.StorageError(f"{uri}: not a {SCHEME} URI.")
    path = uri[len(SCHEME) :].split("?", 1)[0].strip("/")
    parts = path.split("/")
    if not path or len(parts) > 3 or any(not part for part in parts):
        raise errors.StorageError(
            f"{uri}: a model registry URI is {SCHEME}<model>[/<version>] or "
            f"{SCHEME}<host[:port]>/<model>/<version>."
        )
    if len(parts) == 3:
        return RegistryReference(uri, parts[1], parts[2], parts[0])
    if len(parts) == 2 and registry_address is not None and parts[0] == registry_address:
        return RegistryReference(uri, parts[1], None, parts[0])
    return RegistryReference(uri, parts[0], parts[1] if len(parts) == 2 else None)


@dataclass(frozen=True, slots=True)
class ResolvedArtifact:
    """The registry's answer to a reference: the ids involved and the artifact's URI."""

    reference: RegistryReference
    model_id: str
    version_id: str
    version_name: str
    artifact_id: str
    uri: str


class RegistryLookup(Protocol):
    """The three reads a resolve makes; each returns the resource as the API shows it."""

    def model(self, name: str) -> dict[str, Any] | None:
        """The registered model named ``name``; None if there is none."""
        ...

    def version(self, model_id: str, name: str | None) -> dict[str, Any] | None:
        """The model's version named ``name`` (None: its newest LIVE one); None if none."""
        ...

    def model_artifact(self, version_id: str) -> dict[str, Any] | None:
        """The version's newest ModelArtifact; None if it has none."""
        ...


def resolve_reference(reference: RegistryReference, lookup: RegistryLookup) -> ResolvedArtifact:
    """The artifact ``reference`` names; ``StorageNotFound`` naming what is missing."""
    model = lookup.model(reference.model)
    if model is None:
        raise errors.StorageNotFound(
            f"{reference.uri}: the model registry has no registered model {reference.model!r}."
        )
    version = lookup.version(str(model["id"]), reference.version)
    if version is None:
        missing = (
            f"no version {reference.version!r} of model {reference.model!r}"
            if reference.version
            else f"no LIVE version of model {reference.model!r}"
        )
        raise errors.StorageNotFound(f"{reference.uri}: the model registry has {missing}.")
    version_name = str(version.get("name", ""))
    artifact = lookup.model_artifact(str(version["id"]))
    uri = artifact.get("uri") if artifact is not None else None
    if artifact is None or not uri:
        what = "no model artifact" if artifact is None else "a model artifact with no uri"
        raise errors.StorageNotFound(
            f"{reference.uri}: version {version_name!r} of model {reference.model!r} has {what}."
        )
    if is_registry_uri(str(uri)):
        raise errors.StorageError(
            f"{reference.uri}: the artifact of {reference.model}/{version_name} is itself a "
            f"{SCHEME} URI ({uri}); it must name the model's files."
        )
    return ResolvedArtifact(
        reference, str(model["id"]), str(version["id"]), version_name, str(artifact["id"]), uri
    )


# -- over the REST API ------------------------------------------------------------------------


class RegistryRestClient(JsonHttpClient):
    """JSON calls to a registry's REST API at ``url`` (``http(s)://host:port``), one at a time.

    One connection is kept and reused: a resolve makes three calls.
    """

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return self.call("GET", path, params=params)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def patch(self, path: str, body: Any) -> Any:
        return self.call("PATCH", path, body)

    def call(
        self, method: str, path: str, body: Any = None, params: Mapping[str, str] | None = None
    ) -> Any:
        """One call under the API's prefix; the decoded answer, or ``RegistryRequestFailed``."""
        try:
            status, answer = self.exchange(method, API_PREFIX + path, body, params)
        except OSError as exc:
            raise errors.StorageUnreachable(f"no model registry at {self.url} ({exc})") from None
        if status >= 400:
            message = error_message(answer)
            raise RegistryRequestFailed(status, f"{method} {path}: {status} {message}")
        return answer


class RegistryRequestFailed(errors.StorageError):
    """The registry answered a 4xx or 5xx; ``status_code`` is its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


class RestLookup:
    """:class:`RegistryLookup` over a registry's REST API."""

    def __init__(self, client: RegistryRestClient) -> None:
        self.client = client

    def model(self, name: str) -> dict[str, Any] | None:
        return self._found("/registered_model", {"name": name})

    def version(self, model_id: str, name: str | None) -> dict[str, Any] | None:
        if name is not None:
            return self._found("/model_version", {"name": name, "parentResourceId": model_id})
        return self._newest(
            f"/registered_models/{model_id}/versions", {"filterQuery": "state = 'LIVE'"}
        )

    def model_artifact(self, version_id: str) -> dict[str, Any] | None:
        return self._newest(
            f"/model_versions/{version_id}/artifacts", {"artifactType": "model-artifact"}
        )

    def _found(self, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.client.get(path, params)
        except RegistryRequestFailed as exc:
            if exc.status_code == 404:
                return None
            raise
        return found

    def _newest(self, path: str, params: Mapping[str, str]) -> dict[str, Any] | None:
        newest = {"orderBy": "CREATE_TIME", "sortOrder": "DESC", "pageSize": "1", **params}
        items = self.client.get(path, newest).get("items") or []
        return dict(items[0]) if items else None


def base_url(environ: Mapping[str, str], reference: RegistryReference | None = None) -> str:
    """The registry's URL: the URI's host, else ``MODEL_REGISTRY_BASE_URL``, else Kubeflow's
    default ``localhost:8080``; ``MODEL_REGISTRY_SCHEME`` (default http) when it has none."""
    scheme = environ.get(SCHEME_VARIABLE) or "http"
    configured = environ.get(BASE_URL_VARIABLE) or _DEFAULT_ADDRESS
    address = reference.host if reference is not None and reference.host else configured
    if "://" in address:
        return address.rstrip("/")
    return f"{scheme}://{address}".rstrip("/")


def _configured_address(environ: Mapping[str, str]) -> str:
    """``host[:port]`` of the configured registry, as a URI's first part would spell it."""
    configured = environ.get(BASE_URL_VARIABLE) or _DEFAULT_ADDRESS
    return urllib.parse.urlsplit(configured).netloc if "://" in configured else configured


def resolve_uri(uri: str, settings: StorageSettings) -> ResolvedArtifact:
    """The artifact a ``model-registry://`` URI names, asked of the registry's REST API."""
    environ = settings.environ
    reference = parse_reference(uri, _configured_address(environ))
    client = RegistryRestClient(base_url(environ, reference), environ.get(TOKEN_VARIABLE) or None)
    try:
        return resolve_reference(reference, RestLookup(client))
    except RegistryRequestFailed as exc:
        if exc.status_code in (401, 403):
            raise errors.StorageAccessDenied(
                f"{uri}: the model registry refused the call ({exc}); "
                f"give a token in {TOKEN_VARIABLE}."
            ) from None
        raise errors.StorageError(f"{uri}: the model registry said {exc}") from None
    finally:
        client.close()
