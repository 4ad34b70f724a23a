"""KServe's storage spec at fetch time: a storage Secret's entry → a storage URI and credentials.

An InferenceService may locate its model as ``storage: {key, path, parameters}`` instead of
a ``storageUri``. The key names an entry of the namespace's ``storage-config`` Secret, a JSON
document such as ``{"type": "s3", "bucket": "models", "endpoint_url": "http://minio:9000",
"access_key_id": "...", "secret_access_key": "..."}``; the pod's storage initializer gets it
in ``STORAGE_CONFIG`` and the spec's parameters, which override its fields, as JSON in
``STORAGE_OVERRIDE_CONFIG``. The model is then ``<type>://<bucket>/<path>``.

This module only translates: the entry's fields become the environment variables modelhost's
storage clients already read (KServe's names: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``awsAnonymousCredential``, ``STORAGE_EMULATOR_HOST``, ...), so credentials reach the clients
one way only. Types: ``s3`` (AWS or any S3-compatible store such as MinIO) and ``gs``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from urllib.parse import urlsplit

from modelhost import errors

__all__ = [
    "STORAGE_CONFIG_ENV",
    "STORAGE_OVERRIDE_CONFIG_ENV",
    "SUPPORTED_TYPES",
    "StorageLocation",
    "resolve_storage",
    "storage_entry",
]

STORAGE_CONFIG_ENV = "STORAGE_CONFIG"
STORAGE_OVERRIDE_CONFIG_ENV = "STORAGE_OVERRIDE_CONFIG"
SUPPORTED_TYPES = ("s3", "gs")

# An s3 entry's fields → the variables the S3 client reads (KServe's initializer's mapping).
_S3_VARIABLES = (
    ("endpoint_url", "AWS_ENDPOINT_URL"),
    ("access_key_id", "AWS_ACCESS_KEY_ID"),
    ("secret_access_key", "AWS_SECRET_ACCESS_KEY"),
    ("region", "AWS_DEFAULT_REGION"),
    ("ca_bundle", "AWS_CA_BUNDLE"),
    ("verify_ssl", "S3_VERIFY_SSL"),
    ("anonymous", "awsAnonymousCredential"),
)
# Variables the S3 client prefers to the ones above: emptied when the entry sets the same
# thing, so a pod's own settings cannot win over the entry's.
_S3_SHADOWS = {
    "endpoint_url": ("AWS_ENDPOINT_URL_S3", "S3_ENDPOINT"),
    "access_key_id": ("AWS_SESSION_TOKEN",),
}


@dataclasses.dataclass(frozen=True)
class StorageLocation:
    """Where a storage spec's model is, and the variables to lay over the fetcher's environment.

    ``environ`` may hold empty values: they blank a variable the pod has that would override
    the entry's own setting.
    """

    uri: str
    environ: Mapping[str, str]


def storage_entry(environ: Mapping[str, str]) -> dict[str, str] | None:
    """The storage configuration the environment carries, parameters applied; None if none.

    Either variable may be missing: KServe's fallback Secret key (``default``) need not
    exist, and the parameters alone may describe the storage. Raises
    :class:`~modelhost.errors.StorageError` naming the variable when one is not a JSON object
    of plain values.
    """
    config = environ.get(STORAGE_CONFIG_ENV)
    override = environ.get(STORAGE_OVERRIDE_CONFIG_ENV)
    if config is None and override is None:
        return None
    entry = _document(STORAGE_CONFIG_ENV, config)
    entry.update(_document(STORAGE_OVERRIDE_CONFIG_ENV, override))
    return entry


def resolve_storage(
    entry: Mapping[str, str], *, path: str | None = None, uri: str | None = None
) -> StorageLocation:
    """The model a storage entry locates: ``<type>://<bucket>/<path>``, or ``uri`` as given.

    With ``path`` (the storage spec's), the entry's ``type`` and ``bucket`` make the URI;
    with ``uri`` the entry only brings its credentials, and its type (if any) must be the
    URI's scheme. Raises :class:`~modelhost.errors.StorageError` for a type modelhost cannot
    fetch from (naming it), a missing type or bucket, or a type that contradicts the URI.
    """
    if (path is None) == (uri is None):
        raise errors.StorageError("a storage spec locates its model by a path or by a URI")
    scheme = _scheme(uri) if uri is not None else ""
    kind = entry.get("type") or scheme
    if not kind:
        raise errors.StorageError(
            'the storage configuration names no type: set "type" (s3 or gs) in the '
            "storage Secret's entry or in the storage spec's parameters"
        )
    if kind not in SUPPORTED_TYPES:
        raise errors.StorageError(
            f'storage type {kind!r} (the storage configuration\'s "type") is not supported '
            f"by modelhost: supported types are {', '.join(SUPPORTED_TYPES)}"
        )
    if uri is not None and scheme != kind:
        raise errors.StorageError(
            f"the storage configuration's type {kind!r} does not match the storageUri's "
            f"scheme {scheme or '(none)'!r}"
        )
    if uri is None:
        assert path is not None
        # ModelMesh's storage-config names the bucket default_bucket.
        bucket = entry.get("bucket") or entry.get("default_bucket")
        if not bucket:
            raise errors.StorageError(
                f"storage type {kind!r} needs a bucket, but neither the storage Secret's entry "
                'nor the storage spec\'s parameters give one ("bucket")'
            )
        uri = f"{kind}://{bucket}/{path.lstrip('/')}"
    environ = _s3_environ(entry) if kind == "s3" else _gs_environ(entry)
    return StorageLocation(uri=uri, environ=environ)


def _document(variable: str, text: str | None) -> dict[str, str]:
    if not text:
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise errors.StorageError(f"{variable} is not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise errors.StorageError(
            f"{variable} must be a JSON object, not {type(document).__name__}"
        )
    entry: dict[str, str] = {}
    for key, value in document.items():
        if isinstance(value, bool):
            entry[key] = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            entry[key] = str(value)
        elif value is not None:
            raise errors.StorageError(f"{variable}: the value of {key!r} must be a string")
    return entry


def _scheme(uri: str) -> str:
    return urlsplit(uri).scheme.lower() if "://" in uri else ""


def _s3_environ(entry: Mapping[str, str]) -> dict[str, str]:
    environ: dict[str, str] = {}
    for field, variable in _S3_VARIABLES:
        if field in entry:
            for shadow in _S3_SHADOWS.get(field, ()):
                environ[shadow] = ""
            environ[variable] = entry[field]
    return environ


def _gs_environ(entry: Mapping[str, str]) -> dict[str, str]:
    """An endpoint is a GCS emulator or private endpoint, which the GCS client reads here."""
    endpoint = entry.get("endpoint_url")
    return {"STORAGE_EMULATOR_HOST": endpoint} if endpoint else {}
