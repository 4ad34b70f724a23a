"""Download progress a person can watch: a tqdm bar on a terminal, nothing anywhere else.

A server under Kubernetes logs to a pipe, where a redrawn bar is noise; a person running
``modelhost serve s3://...`` in a terminal wants to see the bytes arrive. ``settings.progress``
forces either way.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator
from typing import Any

from modelhost.settings import StorageSettings
from modelhost.storage._source import Progress

__all__ = ["NO_PROGRESS", "progress_bar", "shows_progress"]


class _NoProgress:
    """Discards every report."""

    def set_total(self, nbytes: int | None) -> None:
        pass

    def update(self, nbytes: int) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()


class _BarProgress:
    """Reports to a tqdm bar; sources may report from several download threads at once."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._lock = threading.Lock()

    def set_total(self, nbytes: int | None) -> None:
        with self._lock:
            self._bar.reset(total=nbytes)

    def update(self, nbytes: int) -> None:
        with self._lock:
            self._bar.update(nbytes)


def shows_progress(settings: StorageSettings) -> bool:
    """Whether downloads draw a bar: as ``settings.progress`` says, else only on a terminal."""
    if settings.progress is not None:
        return settings.progress
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


@contextlib.contextmanager
def progress_bar(settings: StorageSettings, label: str) -> Iterator[Progress]:
    """A ``Progress`` for one download, closed (and its bar finished) on exit."""
    if not shows_progress(settings):
        yield NO_PROGRESS
        return
    from tqdm import tqdm

    bar = tqdm(desc=label, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
    try:
        yield _BarProgress(bar)
    finally:
        bar.close()
