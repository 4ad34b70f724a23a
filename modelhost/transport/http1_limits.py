"""What bounds an HTTP/1.1 connection: deadlines, a cap on connections, refusals that close.

Shared by the model server's REST port (uvicorn, :mod:`modelhost.server.http.protocol`) and
the HTTP/1.1 proxy (:mod:`modelhost.transport.http1_proxy`). Deadlines are checked by one
sweep per listener a few times per shortest timeout rather than by a timer per request:
a request then costs a clock read or two, not a timer armed and cancelled.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Iterable
from http import HTTPStatus
from typing import Protocol

import orjson

from modelhost import errors

__all__ = ["DeadlineSweeper", "Watched", "capped_connections", "error_response"]

logger = logging.getLogger("modelhost.server")

# File descriptors left to the process (model files, sockets to storage, logs) when the
# connection cap has to be lowered to fit the process's limit.
_FD_RESERVE = 256


class Watched(Protocol):
    """A connection with a deadline (``time.monotonic()``; 0.0: none) and what to do past it."""

    deadline: float

    def expire(self, now: float) -> None: ...


class DeadlineSweeper:
    """Expires the watched connections whose deadline has passed, ``tick`` seconds apart.

    The timer runs only while a connection is watched, so an idle listener costs nothing.
    """

    def __init__(self, timeouts: Iterable[float]) -> None:
        shortest = min((t for t in timeouts if t > 0), default=1.0)
        # A deadline is met to within a quarter of the shortest timeout, and within a second.
        self.tick = min(1.0, max(0.01, shortest / 4))
        self.connections: set[Watched] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def add(self, connection: Watched) -> None:
        self.connections.add(connection)
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(self.tick, self._sweep)

    def discard(self, connection: Watched) -> None:
        self.connections.discard(connection)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        loop = self._loop
        assert loop is not None
        self._timer = None
        now = time.monotonic()
        try:
            for connection in list(self.connections):
                deadline = connection.deadline
                if deadline and now >= deadline:
                    try:
                        connection.expire(now)
                    except Exception:  # one broken connection must not stop the sweep
                        logger.exception("expiring an HTTP connection failed")
        finally:
            if self.connections and not loop.is_closed():
                self._timer = loop.call_later(self.tick, self._sweep)


def capped_connections(wanted: int) -> int:
    """``wanted``, lowered to what the process's file descriptor limit can hold."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):  # pragma: no cover - no such limit on this platform
        return wanted
    if soft == resource.RLIM_INFINITY or soft - _FD_RESERVE >= wanted:
        return wanted
    capped = max(1, soft - _FD_RESERVE)
    logger.info(
        "at most %d HTTP connections (not %d): the process may open %d files", capped, wanted, soft
    )
    return capped


def error_response(exc: errors.ModelhostError) -> bytes:
    """A whole HTTP/1.1 answer for ``exc`` that closes the connection, for a protocol that
    refuses a request before (or instead of) handing it to the application."""
    body = orjson.dumps({"error": errors.error_message(exc)})
    status = errors.http_status(exc)
    head = [f"HTTP/1.1 {status} {_reason(status)}", "content-type: application/json"]
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        head.append(f"retry-after: {max(1, round(retry_after))}")
    head += [f"content-length: {len(body)}", "connection: close", "", ""]
    return "\r\n".join(head).encode("latin-1") + body


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
