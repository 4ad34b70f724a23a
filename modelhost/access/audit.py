"""The audit log: one JSON line per control API call (who, what, on which object, outcome).

Written to ``<home>/audit.log`` (mode 0600), appended and flushed per call, so that a crash
loses nothing already answered. It names tokens by their name, never their text.
"""

from __future__ import annotations

import datetime
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

__all__ = ["AuditLog"]


class AuditLog:
    """Appends records to one file; safe from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def record(
        self,
        who: str,
        action: str,
        objects: Sequence[str],
        status: int,
        message: str = "",
        **extra: Any,
    ) -> None:
        entry: dict[str, Any] = {
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds"),
            "who": who,
            "action": action,
            "objects": list(objects),
            "status": status,
            "outcome": _outcome(status),
        }
        if message:
            entry["message"] = message
        entry.update(extra)
        line = orjson.dumps(entry) + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(descriptor, line)
            finally:
                os.close(descriptor)


def _outcome(status: int) -> str:
    if status < 400:
        return "allowed"
    return "denied" if status in (401, 403) else "failed"
