"""Inference requests answered on their connection, without uvicorn's ASGI cycle.

uvicorn gives each request a ``RequestResponseCycle``: an ASGI task wrapper, a receive and
send pair that check every message, and one socket write for the status line and headers
and another for the body. For a small v1 ``:predict`` or v2 ``/infer`` that is a large part
of the request's cost (bench/RESULTS.md, run 13); for a large one, uvicorn pauses reading
every 64 KiB until the app asks for more, and grows the body by concatenation (for a
600 KB tensor ``memmove`` was ~18% of the server's CPU: run 19). A request that
qualifies (a POST to one of those routes with a Content-Length body and nothing unusual
about it) gets a :class:`DirectCycle` instead: the same ``HttpApp`` answers it (tokens,
limits, metrics and errors are the app's, unchanged), its body is collected whole, and the
answer goes out in one write. A body past :data:`DIRECT_BODY_LIMIT` is admitted first, by
its Content-Length, as uvicorn's path admits it before reading: the token is checked and
the body charged to the server's byte budget before a byte of it is kept, and a refusal is
answered at once. Everything else takes uvicorn's path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE, STATUS_LINE

from modelhost.server.http.asgi import Scope
from modelhost.server.http.messages import HttpResponse

__all__ = [
    "DIRECT_BODY_LIMIT",
    "DirectApp",
    "DirectCycle",
    "WriteFlow",
    "direct_body_length",
    "direct_path",
]

logger = logging.getLogger("modelhost.server")

# A body up to this size is read whole before the app admits the request (what uvicorn
# reads before it pauses); a larger one is admitted, by its Content-Length, first.
DIRECT_BODY_LIMIT = 64 * 1024

# A request with one of these headers takes uvicorn's path (its body is streamed, needs
# an interim answer, or comes compressed).
_NOT_DIRECT = frozenset((b"transfer-encoding", b"expect", b"upgrade", b"content-encoding"))


def direct_path(url: bytes) -> str | None:
    """The path of a v1 predict or v2 infer URL with no query or escapes; None otherwise."""
    if b"?" in url or b"%" in url:
        return None
    if url.endswith(b"/infer") and url.startswith(b"/v2/models/"):
        return url.decode("ascii", "replace")
    if url.endswith(b":predict") and url.startswith(b"/v1/models/"):
        return url.decode("ascii", "replace")
    return None


def direct_body_length(headers: list[tuple[bytes, bytes]]) -> int:
    """The request's Content-Length when it may take the direct path; -1 when it may not."""
    length = -1
    for name, value in headers:
        if name == b"content-length":
            if length >= 0 or not value.isdigit():
                return -1
            length = int(value)
        elif name in _NOT_DIRECT:
            return -1
    return length


class DirectApp(Protocol):
    """The app that answers direct requests (``HttpApp``)."""

    def direct_route(self, path: str) -> object | None: ...

    def enter_directly(self, scope: Scope, found: object, body_bytes: int) -> object:
        """The request admitted (a ticket for :meth:`answer_directly` and :meth:`leave`)
        before its body of ``body_bytes`` is read, or the ``HttpResponse`` refusing it."""

    def leave(self, ticket: object) -> None:
        """Give back what an admitted request held, when it will not be answered."""

    async def answer_directly(
        self, scope: Scope, found: object, body: bytes, ticket: object = None
    ) -> HttpResponse: ...


class WriteFlow(Protocol):
    """What a cycle reads of uvicorn's ``FlowControl``: whether, and until when, to wait."""

    write_paused: bool

    def drain(self) -> Awaitable[None]: ...


class DirectCycle:
    """One request answered directly: what uvicorn's protocol reads of a cycle, and the call.

    The protocol hands it the body's pieces (``chunks``) and uses its own callbacks for the
    rest (``more_body``, ``message_event``) and for a lost connection (``disconnected``,
    then :meth:`abandon`); ``response_complete`` tells it when the next request may start.
    ``run`` is started once the body is whole.
    """

    def __init__(
        self,
        scope: Scope,
        route: object,
        transport: asyncio.Transport,
        keep_alive: bool,
        default_headers: list[tuple[bytes, bytes]],
        on_response: Callable[[], None],
        flow: WriteFlow,
    ) -> None:
        self.scope = scope
        self.route = route
        self.transport = transport
        self.keep_alive = keep_alive
        self.default_headers = default_headers
        self.on_response = on_response
        self._flow = flow
        self.chunks: list[bytes] = []
        # What the app's enter_directly gave a large body's request, until run takes it.
        self.ticket: object = None
        self.more_body = True
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.message_event = self  # uvicorn calls message_event.set(): nothing waits here

    def set(self) -> None:
        """uvicorn's protocol signals body progress; the app reads the body only whole."""

    def refuse(self, response: HttpResponse) -> None:
        """Answer before the body is read; the protocol reads the body on and drops it."""
        self.response_started = True
        self.transport.write(self._encode_head(response) + response.body)
        self.response_complete = True
        self.on_response()

    def abandon(self, app: DirectApp) -> None:
        """The connection is gone before the answer: let go of what the request held."""
        ticket, self.ticket = self.ticket, None
        if ticket is not None:
            app.leave(ticket)

    async def run(self, app: DirectApp) -> None:
        try:
            chunks = self.chunks
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.chunks = []
            ticket, self.ticket = self.ticket, None  # answer_directly gives it back
            response = await app.answer_directly(self.scope, self.route, body, ticket)
            head = self._encode_head(response)
        except Exception:
            logger.exception("Unhandled error answering %s", self.scope.get("path"))
            response = HttpResponse(500, b"Internal Server Error", "text/plain; charset=utf-8")
            self.keep_alive = False
            head = self._encode_head(response)
        if self.disconnected or self.transport.is_closing():
            self.response_complete = True
            return
        if self._flow.write_paused:
            await self._flow.drain()
        self.response_started = True
        self.transport.write(head + response.body)
        self.response_complete = True
        self.on_response()
        if not self.keep_alive and not self.transport.is_closing():
            self.transport.close()

    def _encode_head(self, response: HttpResponse) -> bytes:
        status = response.status
        line = STATUS_LINE.get(status) or f"HTTP/1.1 {status} \r\n".encode()
        parts = [line]
        for name, value in self.default_headers:
            parts += (name, b": ", value, b"\r\n")
        parts += (
            b"content-type: ",
            response.content_type.encode("latin-1"),
            b"\r\ncontent-length: ",
            str(len(response.body)).encode(),
            b"\r\n",
        )
        for key, text in response.headers.items():
            name = key.encode("latin-1").lower()
            value = text.encode("latin-1")
            # Checked as uvicorn checks them, so that no answer can split into two.
            if HEADER_RE.search(name) or HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header in the answer.")
            if name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(b"connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)
