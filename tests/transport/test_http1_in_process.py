"""Destinations the proxy answers in its own process: through ASGI, or whole when they can."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from modelhost.transport.http1_in_process import InProcess, WholeAnswer
from modelhost.transport.http1_proxy import ProxiedRequest, ProxyServer


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    body = b"asgi:" + message.get("body", b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class WholeHandler:
    """Takes POST /whole (its answer names the body), fails on POST /broken, leaves the rest."""

    def __init__(self) -> None:
        self.taken: list[bytes] = []

    def __call__(self, request: ProxiedRequest) -> Any:
        if request.method != b"POST" or request.path not in ("/whole", "/broken"):
            return None
        self.taken.append(request.body)
        return self._answer(request)

    async def _answer(self, request: ProxiedRequest) -> WholeAnswer:
        await asyncio.sleep(0)
        if request.path == "/broken":
            raise RuntimeError("a bug in the handler")
        headers = [(b"x-seen", b"yes"), (b"content-length", b"999")]
        return WholeAnswer(201, b"whole:" + request.body, b"text/plain", headers)


@asynccontextmanager
async def gateway(whole: WholeHandler) -> AsyncIterator[ProxyServer]:
    destination = InProcess(asgi_app, whole=whole)
    server = ProxyServer(lambda request: destination, None)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def exchange(server: ProxyServer, *requests: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        for request in requests:
            writer.write(request)
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def post(path: str, body: bytes, close: bool = False) -> bytes:
    connection = b"connection: close\r\n" if close else b""
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n".encode()
    return head + connection + b"\r\n" + body


async def test_a_whole_handler_answers_what_it_takes_and_asgi_the_rest() -> None:
    whole = WholeHandler()
    async with gateway(whole) as server:
        answer = await exchange(
            server, post("/whole", b"one"), post("/other", b"two"), post("/whole", b"3", True)
        )
    first, second, third = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"201 ")
    assert b"x-seen: yes" in first
    assert b"content-type: text/plain" in first
    # The proxy writes the length itself, whatever the handler's headers say.
    assert b"content-length: 9\r\n" in first
    assert b"999" not in first
    assert first.endswith(b"whole:one")
    assert second.startswith(b"200 ")
    assert second.endswith(b"asgi:two")
    assert third.startswith(b"201 ")
    assert third.endswith(b"whole:3")
    assert whole.taken == [b"one", b"3"]


async def test_a_failing_whole_handler_answers_500_and_the_connection_goes_on() -> None:
    async with gateway(WholeHandler()) as server:
        answer = await exchange(server, post("/broken", b"x"), post("/whole", b"after", True))
    first, second = answer.split(b"HTTP/1.1 ")[1:]
    assert first.startswith(b"500 ")
    assert b"internal error in an in-process app" in first
    assert second.startswith(b"201 ")
    assert second.endswith(b"whole:after")
