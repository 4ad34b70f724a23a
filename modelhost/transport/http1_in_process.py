"""Requests the HTTP/1.1 proxy answers in its own process, through an ASGI app.

The gateway relays most requests to replicas byte for byte; a few it answers itself: the
platform's own routes, and destinations served in-process (an InferenceGraph's router,
TrustyAI's API, the guardrails, the model registry). Those get the request whole, as one ASGI
call, and their answer goes back as one response. A destination whose hot requests need no
ASGI call (a graph's predict) can take them as they are, through its ``whole`` handler: no
scope, no receive and send messages, its answer written as it comes back.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple, Protocol

from modelhost.transport.http1_upstream import ProxiedRequest

__all__ = [
    "ASGIApp",
    "InProcess",
    "Responder",
    "WholeAnswer",
    "WholeHandler",
    "answer_in_process",
    "answer_whole",
]

logger = logging.getLogger("modelhost.transport")

ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]


class WholeAnswer(NamedTuple):
    """An answer written as one response: status, body, content type, other headers."""

    status: int
    body: bytes
    content_type: bytes
    headers: list[tuple[bytes, bytes]]


# Takes a request whole and returns its answer to come, or None to leave it to the ASGI app.
WholeHandler = Callable[[ProxiedRequest], "Awaitable[WholeAnswer] | None"]


@dataclasses.dataclass(frozen=True, eq=False)
class InProcess:
    """A destination answered in this process by ``app`` (ASGI), not relayed to a target.

    ``owner`` is what the destination belongs to, for ``admit`` (a service, to check a token
    against). The request reaches ``app`` whole, as the owner's own routes do, unless
    ``whole`` takes it first.
    """

    app: ASGIApp
    owner: object = None
    whole: WholeHandler | None = None


class Responder(Protocol):
    """The client connection's side that writes one whole answer."""

    peer: bytes

    def respond(
        self,
        status: int,
        body: bytes,
        content_type: bytes,
        keep_alive: bool = True,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None: ...

    def respond_error(self, status: int, message: str, keep_alive: bool = True) -> None: ...


async def answer_in_process(
    client: Responder, request: ProxiedRequest, app: ASGIApp, what: str
) -> None:
    """A whole request through ``app``; its answer written to ``client`` (500 if it fails)."""
    path, _, query = request.url.partition(b"?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": request.method.decode("latin-1"),
        "path": path.decode("latin-1"),
        "raw_path": path,
        "query_string": query,
        "headers": request.headers,
        "client": (client.peer.decode(), 0),
    }
    sent = False
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(bytes(k).lower(), bytes(v)) for k, v in message.get("headers", ())]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    try:
        await app(scope, receive, send)
    except Exception:
        logger.exception("the proxy's route %s to %s failed", scope["path"], what)
        client.respond_error(500, f"internal error in {what}", request.keep_alive)
        return
    content_type = next((v for k, v in headers if k == b"content-type"), b"application/json")
    client.respond(status, b"".join(chunks), content_type, request.keep_alive, headers)


async def answer_whole(
    client: Responder, request: ProxiedRequest, answer: Awaitable[WholeAnswer], what: str
) -> None:
    """``answer`` (a :data:`WholeHandler`'s) written to ``client``; a 500 if it fails."""
    try:
        status, body, content_type, headers = await answer
    except Exception:
        logger.exception("the proxy's route %s to %s failed", request.path, what)
        client.respond_error(500, f"internal error in {what}", request.keep_alive)
        return
    client.respond(status, body, content_type, request.keep_alive, headers)
