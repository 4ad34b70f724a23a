"""What every bucket store shares: a listing that names the content, and a checked download.

S3, GCS and Azure Blob all answer "which objects are under this prefix, with what size and
hash". That listing is the content identity the cache keys on, and the same listing is
what ``fetch`` then downloads, so the files written are the ones the key names (their
sizes are checked afterwards). A backend supplies the listing, the download and the words
for its error messages; this module does the rest the same way for all three.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import posixpath
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TypeVar

from modelhost import errors
from modelhost.settings import StorageSettings
from modelhost.storage._archive import safe_join, unpack_if_single_archive
from modelhost.storage._errors import StoreContext, missing_extra, storage_error
from modelhost.storage._source import Progress

__all__ = [
    "IDENTITY_VERSION",
    "ListedSource",
    "RemoteFile",
    "md5_fingerprint",
    "relative_files",
]

# Bumped when the cache layout of a fetched model changes, so old entries are not reused.
IDENTITY_VERSION = "modelhost-storage/1"

_HEX_MD5 = re.compile(r"^[0-9a-f]{32}$")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One object of a model: where it is in the store and where it goes in the folder."""

    name: str  # the client's full name for the object
    relpath: str  # its path inside the model folder, '/'-separated
    size: int
    # A content hash ("md5:<hex>"), else a version tag qualified by the object's location.
    fingerprint: str


def md5_fingerprint(value: str | bytes | bytearray | None) -> str | None:
    """``md5:<hex>`` from an MD5 given as hex (S3 ETag), base64 (GCS) or bytes (Azure)."""
    if not value:
        return None
    if isinstance(value, (bytes, bytearray)):
        return f"md5:{bytes(value).hex()}" if len(value) == 16 else None
    text = value.strip('"').lower()
    if _HEX_MD5.match(text):
        return f"md5:{text}"
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    return f"md5:{raw.hex()}" if len(raw) == 16 else None


def relative_files(root: str, objects: Iterable[tuple[str, int, str]]) -> list[RemoteFile]:
    """The model's files among ``(name, size, fingerprint)`` objects listed from ``root``.

    An object named exactly ``root`` is a single-file model; otherwise the objects under
    ``root/`` are, keeping their sub-folders. Folder markers (names ending in ``/``) are
    skipped.
    """
    root = root.strip("/")
    listed = list(objects)
    for name, size, fingerprint in listed:
        if root and name == root:
            return [RemoteFile(name, posixpath.basename(name), size, fingerprint)]
    base = f"{root}/" if root else ""
    return [
        RemoteFile(name, name[len(base) :], size, fingerprint)
        for name, size, fingerprint in listed
        if name.startswith(base) and not name.endswith("/")
    ]


class ListedSource:
    """A ``Source`` over a bucket store; subclasses list, download and name the store."""

    uri: str
    # The optional dependency that brings the client library: pip install modelhost[<extra>].
    extra = "storage"

    def __init__(self, uri: str, settings: StorageSettings) -> None:
        self.uri = uri
        self.settings = settings
        self._files: list[RemoteFile] | None = None

    def context(self) -> StoreContext:
        raise NotImplementedError

    def _list(self) -> list[RemoteFile]:
        raise NotImplementedError

    def _download(self, targets: list[tuple[RemoteFile, Path]], progress: Progress) -> None:
        raise NotImplementedError

    def identity(self) -> str:
        files = self._guarded(self._list)
        if not files:
            context = self.context()
            raise errors.StorageNotFound(
                f"{self.uri}: no objects there on {context.store} at {context.endpoint}."
                + _anonymous_hint(context)
            )
        self._files = files
        entries = sorted([f.relpath, f.size, f.fingerprint] for f in files)
        return json.dumps([IDENTITY_VERSION, entries])

    def fetch(self, dest: Path, progress: Progress) -> None:
        if self._files is None:
            self.identity()
        files = self._files or []
        targets = [(f, safe_join(dest, f.relpath, self.uri)) for f in files]
        progress.set_total(sum(f.size for f in files))
        self._guarded(lambda: self._download(targets, progress))
        for remote, path in targets:
            if not path.is_file() or path.stat().st_size != remote.size:
                raise errors.StorageError(
                    f"{self.uri}: {remote.relpath} changed while it was being downloaded "
                    f"(listed {remote.size} bytes); try again."
                )
        unpack_if_single_archive(dest, self.uri, self.settings)

    def _guarded(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except errors.StorageError:
            raise
        except ModuleNotFoundError as exc:
            raise missing_extra(self.uri, exc.name or "?", self.extra) from exc
        except Exception as exc:
            raise storage_error(exc, self.uri, self.context()) from exc


def _anonymous_hint(context: StoreContext) -> str:
    if context.credentials.startswith("anonymous"):
        return " No credentials were used: a private bucket or container can look empty."
    return ""
