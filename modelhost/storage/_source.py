"""What a storage backend is: a ``Source`` that names its content and fetches it.

Every scheme (``s3://``, ``gs://``, ``oci://``, ...) is one ``Source`` class, built as
``SourceClass(uri, settings)``. The cache asks ``identity()`` first (a cheap metadata
call: a manifest digest, a commit id, a listing of sizes and ETags) and keys the
machine-wide cache on it, so a model is fetched once however many servers use it and
fetched again only when its content changed. ``fetch`` then writes the files into an
empty private folder that the cache renames into place when it returns.

The cache calls ``identity()`` and then, only when that content is not cached yet,
``fetch()`` on the same instance, so a source may keep what ``identity()`` learned (a
listing, a resolved commit or digest) and fetch exactly that. Failures are typed:
``StorageNotFound``, ``StorageAccessDenied``, ``StorageUnreachable`` (for which the cache
falls back to the copy the URI resolved to last time, if any) or another ``StorageError``.
A source reads credentials from ``settings.environ`` only, and imports its client library
when it is used, not when its module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

__all__ = ["Progress", "Source"]


class Progress(Protocol):
    """Where a download reports its bytes (a progress bar on a terminal, else nothing)."""

    def set_total(self, nbytes: int | None) -> None: ...

    def update(self, nbytes: int) -> None: ...


class Source(Protocol):
    """One ``storageUri``: its content identity, and how to fetch its files."""

    uri: str

    def identity(self) -> str:
        """A string that changes whenever the content does; raises a ``StorageError``."""
        ...

    def fetch(self, dest: Path, progress: Progress) -> None:
        """Write the model's files into the empty folder ``dest``; raises a ``StorageError``."""
        ...
