"""``storageUri`` → a local folder: the one call the CLI and the server make to find a model.

Local paths, ``file://`` and ``pvc://`` are served where they are. Everything else
(``s3://``, ``gs://``, ``http(s)://``, Azure Blob, ``hf://``, ``oci://``) is fetched once
into the machine-wide content-addressed cache (:mod:`modelhost.storage._cache`) and
served from there by every server that asks again, until the content changes. A
``model-registry://`` URI is first resolved to its artifact's URI
(:mod:`modelhost.storage.model_registry`), which is then fetched the same way.
Credentials come from ``StorageSettings.environ`` with KServe's variable names.
"""

from __future__ import annotations

from pathlib import Path

from modelhost.settings import StorageSettings
from modelhost.storage._cache import ModelCache
from modelhost.storage._local import local_path
from modelhost.storage._progress import progress_bar
from modelhost.storage._source import Progress, Source
from modelhost.storage._uri import is_remote, scheme_of, source_for

__all__ = ["Progress", "Source", "download", "is_remote"]

REGISTRY_SCHEME = "model-registry"


def download(uri: str, settings: StorageSettings | None = None) -> Path:
    """The local folder (or file) holding the model at ``uri``; fetched into the cache once.

    A fetched URI that names one object (``s3://bucket/model.joblib``) gives the folder
    holding just that file, so runtimes still see its name; an archive is unpacked.
    Raises ``StorageNotFound``, ``StorageAccessDenied``, ``StorageUnreachable`` or
    another ``StorageError`` saying what went wrong.
    """
    settings = StorageSettings.from_env() if settings is None else settings
    scheme = scheme_of(uri)
    if scheme == REGISTRY_SCHEME:
        from modelhost.storage.model_registry import resolve_uri

        return download(resolve_uri(uri, settings).uri, settings)
    if not is_remote(uri):
        return local_path(uri, scheme, settings)
    source = source_for(uri, settings)
    cache_dir = settings.cache_dir or StorageSettings.from_env(settings.environ).cache_dir
    cache = ModelCache(Path(cache_dir).expanduser())
    return cache.get(source, lambda: progress_bar(settings, _label(uri)))


def _label(uri: str) -> str:
    """A short name for the progress bar: the last part of the URI."""
    return uri.rstrip("/").rsplit("/", 1)[-1] or uri
