"""Which backend a ``storageUri`` belongs to, decided by its scheme (and, for https, its host).

The scheme table is KServe's: ``s3://``, ``gs://``, Azure Blob ``https://`` URLs and
``az://``/``abfs://``, other ``http(s)://`` URLs (one file), ``hf://``, ``oci://``; and,
served in place, plain paths, ``file://`` and ``pvc://``. Backends are imported when a
URI needs them, so naming a scheme costs nothing until it is used.
"""

from __future__ import annotations

import importlib
import re

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._source import Source

__all__ = ["LOCAL_SCHEMES", "SUPPORTED", "is_remote", "scheme_of", "source_for"]

LOCAL_SCHEMES = frozenset({"", "file", "pvc"})
SUPPORTED = (
    "s3://",
    "gs://",
    "http(s)://",
    "https://<account>.blob.core.windows.net/",
    "az://",
    "abfs://",
    "hf://",
    "oci://",
    "model-registry://",
    "pvc://",
    "file://",
    "a local path",
)
# A scheme is at least two letters, so a Windows drive (C:\models) stays a path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")

# scheme -> (module, class name, optional dependency that brings the client library)
_BACKENDS = {
    "s3": ("modelhost.storage._fsspec", "S3Source", "s3"),
    "gs": ("modelhost.storage._fsspec", "GcsSource", "gcs"),
    "http": ("modelhost.storage._http", "HttpSource", "storage"),
    "https": ("modelhost.storage._http", "HttpSource", "storage"),
    "az": ("modelhost.storage._azure", "AzureBlobSource", "azure"),
    "abfs": ("modelhost.storage._azure", "AzureBlobSource", "azure"),
    "abfss": ("modelhost.storage._azure", "AzureBlobSource", "azure"),
    "hf": ("modelhost.storage._hf", "HfSource", "hf"),
    "oci": ("modelhost.storage._oci", "OciSource", "oci"),
}


def scheme_of(uri: str) -> str:
    """The lower-cased scheme of ``uri``; ``""`` for a plain path."""
    match = _SCHEME.match(uri)
    return match.group(1).lower() if match else ""


def is_remote(uri: str) -> bool:
    """Whether ``uri`` must be fetched: anything but a path, ``file://`` or ``pvc://``.

    An unknown scheme counts as remote, so that ``download`` says which ones are known.
    """
    return scheme_of(uri) not in LOCAL_SCHEMES


def source_for(uri: str, settings: StorageSettings) -> Source:
    """The ``Source`` that fetches ``uri``; a ``StorageError`` for an unknown scheme."""
    scheme = scheme_of(uri)
    if scheme in ("http", "https"):
        from modelhost.storage import _azure

        if _azure.is_azure_blob_url(uri):
            return _azure.AzureBlobSource(uri, settings)
        if _azure.is_azure_file_url(uri):
            raise errors.StorageError(
                f"{uri}: Azure File shares are not supported; copy the model to Blob storage."
            )
    backend = _BACKENDS.get(scheme)
    if backend is None:
        raise errors.StorageError(
            f"{uri}: unsupported storage URI; supported: {', '.join(SUPPORTED)}."
        )
    module_name, class_name, extra = backend
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            raise errors.StorageError(
                f"{uri}: {scheme}:// storage is not available in this build "
                f"({module_name} is missing)."
            ) from exc
        raise errors.StorageError(
            f"{uri}: fetching it needs the {exc.name!r} package: pip install 'modelhost[{extra}]'."
        ) from exc
    source: Source = getattr(module, class_name)(uri, settings)
    return source
