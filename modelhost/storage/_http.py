"""``http(s)://`` sources: one file per URL, unpacked when it is an archive, as in KServe.

The identity is the URL plus what the server says about the file's version (``ETag``,
``Content-MD5``, ``Digest``, ``Last-Modified``) and its length, from a HEAD request. A
server that says nothing about versions is fetched once per URL. Extra request headers
(an ``Authorization``, say) come from KServe's per-host variable ``<host>-headers``, a
JSON object.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._archive import is_archive, safe_join, unpack_in_place
from modelhost.storage._errors import StoreContext, missing_extra, storage_error
from modelhost.storage._fsspec import bytes_callback
from modelhost.storage._objects import IDENTITY_VERSION
from modelhost.storage._source import Progress

__all__ = ["HttpSource"]

_VERSION_HEADERS = ("ETag", "Content-MD5", "Digest", "Last-Modified")
# Seconds: a connection must open in this time, and a read must see bytes this often. No
# limit on the whole transfer (aiohttp's default of five minutes would cut large models).
_CONNECT_TIMEOUT = 30
_READ_TIMEOUT = 300
T = TypeVar("T")


class HttpSource:
    """One file at an ``http://`` or ``https://`` URL."""

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        self.uri = uri
        self._settings = settings
        parts = urlsplit(uri)
        self.filename = posixpath.basename(unquote(parts.path))
        if not self.filename:
            raise errors.StorageError(
                f"{uri}: the URL names no file; an http(s) storageUri is one file "
                "(a .zip or .tar.gz is unpacked)."
            )
        host = parts.hostname or ""
        self.headers = _host_headers(settings.environ, host)
        server = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
        credentials = f"the headers in {host}-headers" if self.headers else "none"
        self._context = StoreContext("the HTTP server", server, credentials)
        self._filesystem: Any = None
        self._size: int | None = None

    def identity(self) -> str:
        info = self._guarded(lambda: self._fs().info(self.uri))
        size = info.get("size")
        self._size = size if isinstance(size, int) else None
        version = [info.get(header) for header in _VERSION_HEADERS]
        return json.dumps([IDENTITY_VERSION, "http", self.uri, version, self._size])

    def fetch(self, dest: Path, progress: Progress) -> None:
        target = safe_join(dest, self.filename, self.uri)
        progress.set_total(self._size)
        self._guarded(
            lambda: self._fs().get_file(self.uri, str(target), callback=bytes_callback(progress))
        )
        if is_archive(self.filename):
            unpack_in_place(target, dest, self.uri, self._settings)

    def _fs(self) -> Any:
        if self._filesystem is None:
            import aiohttp
            import fsspec

            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=_READ_TIMEOUT
            )
            options: dict[str, Any] = {"headers": self.headers} if self.headers else {}
            self._filesystem = fsspec.filesystem(
                "http", skip_instance_cache=True, client_kwargs={"timeout": timeout}, **options
            )
        return self._filesystem

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except errors.StorageError:
            raise
        except ModuleNotFoundError as exc:
            raise missing_extra(self.uri, exc.name or "?", "storage") from exc
        except Exception as exc:
            raise storage_error(exc, self.uri, self._context) from exc


def _host_headers(env: Mapping[str, str], host: str) -> dict[str, str]:
    name = f"{host}-headers"
    raw = env.get(name)
    if not raw:
        return {}
    try:
        headers = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise errors.StorageError(f"{name} is not JSON: {exc}") from None
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise errors.StorageError(f"{name} must be a JSON object of strings.")
    return headers
