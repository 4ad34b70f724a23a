"""The machine-wide model cache: one folder per content identity, filled once, atomically.

Layout under the cache folder::

    models/<key>/model/...     the files a runtime loads (the path ``download`` returns)
    models/<key>/entry.json    written last: the entry is complete (URI, identity, time)
    refs/<sha256(uri)>         the key a URI last resolved to, for use while offline
    locks/<key>.lock           held while <key> is being fetched (an OS lock: a crash frees it)
    tmp/<key>.<random>/        a fetch in progress, renamed to models/<key> when done

``key`` is the SHA-256 of the source's ``identity()``, so a model is fetched once however
many servers and replicas ask for it, and again only when its content changes. A fetch
writes into ``tmp/`` (same file system) and renames into place, so a reader sees a whole
entry or none; one process fetches a key while the others wait on its lock and then use
its entry. A crashed fetch leaves only ``tmp/`` junk, removed by the next fetch of that
key, or by any later fetch once it is old and its lock is free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

from filelock import FileLock, Timeout

from modelhost import errors
from modelhost.storage._source import Progress, Source

__all__ = ["ModelCache"]

logger = logging.getLogger(__name__)

ENTRY_MARKER = "entry.json"
MODEL_FOLDER = "model"
# A staging folder this old, whose key nobody holds, is a crashed fetch's leftover.
STALE_AFTER_S = 3600.0

ProgressFactory = Callable[[], AbstractContextManager[Progress]]


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ModelCache:
    """Fetches sources into ``root`` once per content identity."""

    def __init__(self, root: Path, stale_after: float = STALE_AFTER_S) -> None:
        self.root = root
        self.stale_after = stale_after
        self._models = root / "models"
        self._refs = root / "refs"
        self._locks = root / "locks"
        self._tmp = root / "tmp"

    def get(self, source: Source, progress: ProgressFactory) -> Path:
        """The local folder holding ``source``'s files, fetched if this content is new."""
        try:
            identity = source.identity()
        except errors.StorageUnreachable as exc:
            known = self._known(source.uri)
            if known is None:
                raise
            logger.warning("%s; using the copy fetched before, in %s", exc, known)
            return known
        key = _sha256(identity)
        entry = self._models / key
        if not _complete(entry):
            self._fill(source, key, identity, progress)
        self._remember(source.uri, key)
        return entry / MODEL_FOLDER

    def _fill(self, source: Source, key: str, identity: str, progress: ProgressFactory) -> None:
        for folder in (self._models, self._refs, self._locks, self._tmp):
            folder.mkdir(parents=True, exist_ok=True)
        entry = self._models / key
        with self._lock(key, source.uri):
            if _complete(entry):
                return  # another process fetched it while this one waited
            self._remove_leftovers(key)
            staging = Path(tempfile.mkdtemp(prefix=f"{key}.", dir=self._tmp))
            try:
                # mkdtemp makes it private (0700); the entry is read by every server here.
                staging.chmod(0o755)
                model = staging / MODEL_FOLDER
                model.mkdir()
                logger.info("Fetching %s into %s", source.uri, entry)
                with progress() as report:
                    source.fetch(model, report)
                if not any(model.iterdir()):
                    raise errors.StorageNotFound(f"{source.uri}: fetched no files.")
                record = {"uri": source.uri, "identity": identity, "fetched_at": time.time()}
                _write_durably(staging / ENTRY_MARKER, json.dumps(record))
                _sync_tree(staging)
                os.rename(staging, entry)
                _sync_dir(self._models)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        self._sweep_stale()

    @contextlib.contextmanager
    def _lock(self, key: str, uri: str) -> Iterator[None]:
        lock = FileLock(self._locks / f"{key}.lock")
        try:
            lock.acquire(timeout=0)
        except Timeout:
            logger.info("Waiting for another process or thread that is fetching %s", uri)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def _remove_leftovers(self, key: str) -> None:
        """With ``key``'s lock held: its staging folders and a partial entry are junk."""
        for junk in self._tmp.glob(f"{key}.*"):
            shutil.rmtree(junk, ignore_errors=True)
        entry = self._models / key
        if entry.exists():
            shutil.rmtree(entry, ignore_errors=True)

    def _sweep_stale(self) -> None:
        """Remove other keys' old staging folders whose fetch is no longer running."""
        now = time.time()
        for junk in self._tmp.iterdir():
            try:
                if now - junk.stat().st_mtime < self.stale_after:
                    continue
            except FileNotFoundError:
                continue
            lock = FileLock(self._locks / f"{junk.name.split('.', 1)[0]}.lock")
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue  # its fetch is alive (a slow one)
            try:
                shutil.rmtree(junk, ignore_errors=True)
            finally:
                lock.release()

    def _remember(self, uri: str, key: str) -> None:
        ref = self._refs / _sha256(uri)
        with contextlib.suppress(OSError):
            if ref.is_file() and ref.read_text() == key:
                return
            self._refs.mkdir(parents=True, exist_ok=True)
            scratch = ref.with_name(f"{ref.name}.{os.getpid()}.tmp")
            scratch.write_text(key)
            os.replace(scratch, ref)

    def _known(self, uri: str) -> Path | None:
        """The complete entry ``uri`` resolved to last time, if any."""
        try:
            key = (self._refs / _sha256(uri)).read_text().strip()
        except OSError:
            return None
        entry = self._models / key
        return entry / MODEL_FOLDER if key and _complete(entry) else None


def _complete(entry: Path) -> bool:
    return (entry / ENTRY_MARKER).is_file() and (entry / MODEL_FOLDER).is_dir()


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def _sync_tree(folder: Path) -> None:
    """Flush every fetched file to disk before the rename makes the entry visible."""
    for current, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(current, name)
            if os.path.islink(path):
                continue  # a link from an archive; its target, if fetched, is synced itself
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _sync_dir(Path(current))


def _sync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
