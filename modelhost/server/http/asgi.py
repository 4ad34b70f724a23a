"""The ASGI plumbing every plain ASGI app of modelhost shares: its types, a whole answer sent
in two messages, and the lifespan protocol with optional start and stop hooks.

The model server's app, and the trust, guardrails and registry apps the platform mounts on
its gateway, are plain ASGI callables (no framework on the hot path); this is what they would
otherwise each write again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

__all__ = ["AsgiApp", "Receive", "Scope", "Send", "send_answer", "serve_lifespan"]

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def send_answer(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    headers: Iterable[tuple[bytes, bytes]] = (),
    *,
    head: bool = False,
) -> None:
    """A whole answer: status, Content-Type and Content-Length, ``headers``, then the body
    (none for a HEAD, whose Content-Length still says the GET's)."""
    start = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode("latin-1")),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def serve_lifespan(
    receive: Receive,
    send: Send,
    on_start: Callable[[], Awaitable[None]] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Answer the server's lifespan messages, running ``on_start`` and ``on_stop`` first."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            if on_start is not None:
                await on_start()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if on_stop is not None:
                await on_stop()
            await send({"type": "lifespan.shutdown.complete"})
            return
