"""Targets for the HTTP/1.1 client's tests: servers on loopback ports the kernel picks.

:class:`ScriptedServer` answers with the raw bytes a test writes and counts connections;
:func:`aiohttp_target` is a real server where only bodies matter; :func:`unanswered_address`
never completes a connect. :func:`on_both_loops` runs a test on asyncio's loop and uvloop's.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import pytest
import uvloop
from aiohttp import web

__all__ = [
    "BIG_ANSWER",
    "Answer",
    "ScriptedServer",
    "Seen",
    "aiohttp_target",
    "answer_ok",
    "listening",
    "ok",
    "on_both_loops",
    "scripted",
    "unanswered_address",
]

# What aiohttp_target's /large and /streamed answer: 5 MiB, the same on every run.
BIG_ANSWER = hashlib.shake_256(b"answer").digest(5 * 1024 * 1024)


def on_both_loops(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """``test`` run on asyncio's own event loop and on uvloop's (the gateway's): their
    transports differ where this client leans on them (EOF, pauses, aborts)."""

    def run(loop: str, **arguments: Any) -> None:
        factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(test(**arguments))

    run.__name__ = run.__qualname__ = test.__name__
    run.__doc__ = test.__doc__
    # pytest reads a test's arguments (its fixtures and parameters) from its signature.
    names = ["loop", *inspect.signature(test).parameters]
    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY) for name in names]
    )
    return pytest.mark.parametrize("loop", ["asyncio", "uvloop"])(run)


@dataclass
class Seen:
    """A request as the server read it; ``connection`` counts from 1, ``number`` too."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    connection: int
    number: int

    def header(self, name: bytes) -> bytes | None:
        values = [value for key, value in self.headers if key.lower() == name]
        return values[0] if values else None


# Writes the answer to one request; False: close the connection after it.
Answer = Callable[[Seen, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


def ok(body: bytes = b"ok", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


async def answer_ok(seen: Seen, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    writer.write(ok(b"echo:" + seen.body))
    return True


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@asynccontextmanager
async def listening(handler: Handler, host: str = "127.0.0.1") -> AsyncIterator[str]:
    """``handler`` serves each connection to the "host:port" yielded; all end with the block."""
    handlers: set[asyncio.Task[None]] = set()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        handlers.add(task)
        try:
            await handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client went away: what the handler saw is in the test's hands
        except asyncio.CancelledError:
            pass  # the block ended: asyncio would report a cancelled handler as a failure
        finally:
            writer.close()
            handlers.discard(task)

    server = await asyncio.start_server(serve, host, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    finally:
        server.close()
        for task in list(handlers):
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        await server.wait_closed()


class ScriptedServer:
    """An HTTP/1.1 server whose answers are raw bytes the test writes (``answer``)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.address = ""
        self.accepted = 0
        self.requests: list[Seen] = []
        # Connections whose client closed them (or the server did), by number.
        self.ended: list[int] = []
        self._ended_changed = asyncio.Event()

    async def wait_ended(self, count: int) -> None:
        """Until ``count`` connections have ended (5 s at most)."""
        async with asyncio.timeout(5):
            while len(self.ended) < count:
                self._ended_changed.clear()
                await self._ended_changed.wait()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        connection = self.accepted
        number = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head[:-4].split(b"\r\n")
                method, target, _ = lines[0].split(b" ")
                headers = [(line.split(b": ", 1)[0], line.split(b": ", 1)[1]) for line in lines[1:]]
                length = int(dict((k.lower(), v) for k, v in headers).get(b"content-length", b"0"))
                body = await reader.readexactly(length)
                number += 1
                seen = Seen(method, target, headers, body, connection, number)
                self.requests.append(seen)
                if not await self.answer(seen, reader, writer):
                    break
                await writer.drain()
        finally:
            self.ended.append(connection)
            self._ended_changed.set()


@asynccontextmanager
async def scripted(
    answer: Answer = answer_ok, host: str = "127.0.0.1"
) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(answer)
    async with listening(server.serve, host) as address:
        server.address = address
        yield server


@contextmanager
def unanswered_address() -> Iterator[str]:
    """An address whose connects get no answer: its listener's accept queue is full, so the
    kernel drops further SYNs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = [socket.socket() for _ in range(8)]
        try:
            for filler in fillers:
                filler.setblocking(False)
                with suppress(BlockingIOError):
                    filler.connect(listener.getsockname())
            yield f"127.0.0.1:{listener.getsockname()[1]}"
        finally:
            for filler in fillers:
                filler.close()


@asynccontextmanager
async def aiohttp_target() -> AsyncIterator[str]:
    big = BIG_ANSWER

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"x-length": str(len(body))})

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=big)

    async def streamed(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()  # chunked: no length known up front
        await response.prepare(request)
        for start in range(0, len(big), 1 << 20):
            await response.write(big[start : start + (1 << 20)])
        await response.write_eof()
        return response

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/echo", echo)
    app.router.add_get("/large", large)
    app.router.add_get("/streamed", streamed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()
