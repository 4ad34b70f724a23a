"""The HTTP/1.1 proxy holds its limits against slow, greedy and broken clients, and keeps
its seam: each target released once, the owner told once how a request ended.

A ``ProxyServer`` on a loopback port the kernel picks, with small limits; raw asyncio
clients play the hostile ones, and a raw asyncio server plays a target where the test must
see what reaches it (or make it stop reading). The owner's callbacks are the test's own
(:class:`Owner`): the proxy knows nothing of the platform. The fuzzing of the client
protocol is in ``test_http1_proxy_fuzz``.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from modelhost import errors
from modelhost.settings import Http1Limits
from modelhost.transport.http1_proxy import (
    BODY,
    LOCAL,
    ProxiedRequest,
    ProxyClient,
    ProxyServer,
)
from modelhost.transport.target import Target

SMALL = Http1Limits(
    header_timeout_s=0.5,
    body_timeout_s=0.5,
    idle_timeout_s=0.5,
    max_connections=64,
    max_header_count=20,
    max_header_bytes=4096,
    max_body_bytes=1024 * 1024,
    write_buffer_bytes=256 * 1024,
)


async def local_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    message = await receive()
    body = b"local:" + message.get("body", b"")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


def resolve_for(owner: Owner | None = None) -> Callable[[ProxiedRequest], Any]:
    """/local: the owner's app; /openai: the body decides ("local" in it); /replica: the
    owner's targets; anything else: nowhere."""

    def resolve(request: ProxiedRequest) -> Any:
        if request.path == "/local":
            return LOCAL
        if request.path == "/openai":
            if not request.complete:
                return BODY
            return LOCAL if b"local" in request.body else None
        if request.path == "/replica" and owner is not None:
            return owner
        return None

    return resolve


@asynccontextmanager
async def gateway(
    limits: Http1Limits = SMALL, owner: Owner | None = None, **options: Any
) -> AsyncIterator[ProxyServer]:
    server = ProxyServer(resolve_for(owner), forward, local_app=local_app, limits=limits, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def read_until_closed(reader: asyncio.StreamReader, limit_s: float = 5) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(), limit_s)
    except TimeoutError:
        pytest.fail(f"the gateway kept the connection open past {limit_s} s")
    except ConnectionResetError:
        return b""


class RawClient(asyncio.Protocol):
    """A client that keeps what it was sent even when its own writes fail (the gateway
    closed the connection on it halfway through)."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()

    @classmethod
    async def connect(cls, server: ProxyServer) -> RawClient:
        loop = asyncio.get_running_loop()
        _, client = await loop.create_connection(cls, "127.0.0.1", server.port)
        return client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.data += data

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.transport.is_closing():
            self.transport.write(data)

    async def answer(self, limit_s: float = 5) -> bytes:
        try:
            await asyncio.wait_for(asyncio.shield(self.lost), limit_s)
        except TimeoutError:
            pytest.fail(f"the gateway kept the connection open past {limit_s} s")
        return bytes(self.data)


def status_of(response: bytes) -> int:
    match = re.match(rb"HTTP/1\.1 (\d{3}) ", response)
    assert match, f"not an HTTP answer: {response[:80]!r}"
    return int(match.group(1))


async def served(server: ProxyServer) -> bool:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"POST /local HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nhi")
        writer.write(b"GET /nowhere HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        response = await read_until_closed(reader)
    finally:
        writer.close()
    return (
        response.startswith(b"HTTP/1.1 200 ") and b"local:hi" in response and b" 404 " in response
    )


async def test_a_body_shorter_than_its_content_length_gets_408() -> None:
    async with gateway() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /local HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{")
        response = await read_until_closed(reader, 4)
        writer.close()
        assert status_of(response) == 408
        assert b"connection: close" in response
        assert await served(server)


async def test_slowloris_headers_get_408_and_silent_or_idle_connections_close() -> None:
    async with gateway() as server:
        slow_reader, slow = await asyncio.open_connection("127.0.0.1", server.port)
        silent_reader, silent = await asyncio.open_connection("127.0.0.1", server.port)
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", server.port)
        slow.write(b"GET /local HTTP/1.1\r\nhost: x\r\n")
        idle.write(b"GET /local HTTP/1.1\r\nhost: x\r\n\r\n")

        async def trickle() -> None:
            # A header line every 0.1 s: progress, but the headers never end.
            for index in range(100):
                await asyncio.sleep(0.1)
                if slow.is_closing():
                    return
                slow.write(f"x-{index}: y\r\n".encode())

        trickling = asyncio.create_task(trickle())
        # The trickle goes on for 10 s: a deadline it could push back would not end in 4.
        slow_answer, silent_answer, idle_answer = await asyncio.gather(
            read_until_closed(slow_reader, 4),
            read_until_closed(silent_reader, 4),
            read_until_closed(idle_reader, 4),
        )
        trickling.cancel()
        for writer in (slow, silent, idle):
            writer.close()
        assert status_of(slow_answer) == 408
        assert silent_answer == b""  # nothing asked, nothing said
        assert status_of(idle_answer) == 200  # answered, then closed when idle
        assert idle_answer.count(b"HTTP/1.1") == 1
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
        assert await served(server)


async def test_many_half_sent_requests_are_closed_and_others_are_served() -> None:
    async with gateway(Http1Limits(**{**SMALL.__dict__, "max_connections": 1000})) as server:
        pairs = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(300)]
        for index, (_, writer) in enumerate(pairs):
            if index % 3 == 0:
                writer.write(b"POST /local HTTP/1.1\r\ncontent-length: 9\r\n")
            elif index % 3 == 1:
                writer.write(b"POST /local HTTP/1.1\r\ncontent-length: 9\r\n\r\n{")
        assert await served(server)  # while they are all open
        await asyncio.gather(*(read_until_closed(reader) for reader, _ in pairs))
        for _, writer in pairs:
            writer.close()
        assert await served(server)


async def test_connections_past_the_cap_get_503_at_once() -> None:
    async with gateway(Http1Limits(**{**SMALL.__dict__, "max_connections": 3})) as server:
        held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(3)]
        for reader, writer in held:  # each accepted and answered, kept alive
            writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\n\r\n")
            assert (await reader.readuntil(b"local:")).startswith(b"HTTP/1.1 200 ")
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        response = await read_until_closed(reader, 3)  # at once, not queued
        writer.close()
        assert status_of(response) == 503
        assert b"retry-after: 1" in response
        for _, held_writer in held:
            held_writer.close()
        for _ in range(100):
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert await served(server)


async def test_too_many_or_too_long_headers_get_431() -> None:
    async with gateway() as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        many = b"".join(f"x-{i}: y\r\n".encode() for i in range(21))
        writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\n" + many + b"\r\n")
        assert status_of(await read_until_closed(reader)) == 431
        writer.close()
        client = await RawClient.connect(server)
        client.write(b"GET /local HTTP/1.1\r\nhost: x\r\n")
        for _ in range(20):  # 20 KB of one endless header, in pieces
            await asyncio.sleep(0.005)
            client.write(b"x-long: " + b"a" * 1000 + b"\r\n")
        assert status_of(await client.answer()) == 431
        assert await served(server)


async def test_bodies_past_the_limit_get_413_and_none_is_held_for_an_unknown_route() -> None:
    async with gateway() as server:
        # Declared too large: refused before a byte of it is read.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"POST /local HTTP/1.1\r\nhost: x\r\ncontent-length: 2000000\r\n\r\n")
        assert status_of(await read_until_closed(reader)) == 413
        writer.close()
        # Chunked, growing past the limit.
        client = await RawClient.connect(server)
        client.write(b"POST /local HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n" % 65536 + b"a" * 65536 + b"\r\n"
        for _ in range(20):
            client.write(chunk)
            await asyncio.sleep(0.005)
        assert status_of(await client.answer()) == 413
        # Under the limit, to a route that does not exist: dropped as it comes, then 404.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        size = 900 * 1024
        writer.write(
            f"POST /nowhere HTTP/1.1\r\nhost: x\r\ncontent-length: {size}\r\n\r\n".encode()
        )
        held = 0
        for _ in range(9):
            writer.write(b"a" * (size // 9))
            await writer.drain()
            await asyncio.sleep(0.02)
            for connection in server.connections:
                held = max(held, sum(len(part) for part in connection._body))
        writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        response = await read_until_closed(reader)
        writer.close()
        assert held == 0, f"the gateway held {held} bytes of a body bound nowhere"
        assert status_of(response) == 404
        assert b"local:" in response  # the connection went on with the next request
        # A body that names where it goes is read whole, then routed by it.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            b"POST /openai HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\n"
            b"local"
        )
        response = await read_until_closed(reader)
        writer.close()
        assert status_of(response) == 200
        assert response.endswith(b"local:local")


# -- the owner's side, played by the test ----------------------------------------------


@dataclass
class Owner:
    """What the proxy's callbacks hand out: the targets at ``addresses``, in turn (the last
    one again once they run out), and a book of what the proxy told."""

    addresses: list[str]
    timeout_s: float = 30.0
    keep_body: bool = False
    # Targets only through the awaited path (as while a replica starts).
    slow: bool = False
    released: list[tuple[str, bool]] = field(default_factory=list)
    ends: list[tuple[str, int, bytes | None]] = field(default_factory=list)
    calls: int = 0


class OwnersCall:
    """The test's :class:`~modelhost.transport.http1_upstream.Forwarding`."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self.name = "rev-1"
        self.timeout_s = owner.timeout_s
        self.keep_body = owner.keep_body
        self.given = 0

    def target_now(self) -> Target | None:
        return None if self.owner.slow else self._next()

    async def target(self) -> Target:
        await asyncio.sleep(0)
        return self._next()

    def _next(self) -> Target:
        addresses = self.owner.addresses
        address = addresses[min(self.given, len(addresses) - 1)]
        self.given += 1
        return Target(address, lambda ok: self.owner.released.append((address, ok)))

    def answered(self, status: int, body: bytes | None) -> None:
        self.owner.ends.append(("answered", status, body))

    def failed(self, status: int) -> None:
        self.owner.ends.append(("failed", status, None))


def forward(request: ProxiedRequest, destination: object) -> OwnersCall:
    assert isinstance(destination, Owner)
    destination.calls += 1
    return OwnersCall(destination)


def owner_at(port: int, **options: Any) -> Owner:
    return Owner([f"127.0.0.1:{port}"], **options)


# -- back-pressure, with a target the test controls ----------------------------------


@asynccontextmanager
async def replica(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
    return head + await reader.readexactly(length)


# Back-pressure is about bytes, not time: deadlines a loaded machine cannot miss.
PATIENT = Http1Limits(
    **{**SMALL.__dict__, "header_timeout_s": 30, "body_timeout_s": 30, "idle_timeout_s": 30}
)


async def test_a_client_that_reads_slowly_pauses_the_replica() -> None:
    size = 48 * 1024 * 1024
    sent = 0

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        piece = b"x" * (256 * 1024)
        while sent < size:
            writer.write(piece)
            await writer.drain()
            sent += len(piece)
        await read_request(reader)  # the next request, on the same kept-alive connection
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
        await writer.drain()

    async with replica(answer) as port, gateway(PATIENT, owner_at(port)) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=2**20)
        writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200 ")
        # The client reads nothing for a second; the gateway must not take it all meanwhile.
        buffered = 0
        for _ in range(50):
            await asyncio.sleep(0.02)
            for connection in server.connections:
                assert connection.transport is not None
                buffered = max(buffered, connection.transport.get_write_buffer_size())
        assert buffered <= 2 * SMALL.write_buffer_bytes, f"{buffered} bytes held for the client"
        assert sent < size // 2, f"the replica sent {sent} of {size} bytes to a stalled client"
        # Once the client reads, all of it arrives, and the connection serves the next one.
        body = await reader.readexactly(size)
        assert body == b"x" * size
        writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        assert await reader.readexactly(2) == b"ok"
        writer.close()


async def test_a_replica_that_reads_slowly_pauses_the_client() -> None:
    limits = Http1Limits(**{**PATIENT.__dict__, "max_body_bytes": 64 * 1024 * 1024})
    size = 16 * 1024 * 1024
    go = asyncio.Event()
    seen: list[int] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await go.wait()  # reads nothing until told
        for _ in range(3):
            request = await read_request(reader)
            seen.append(len(request))
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()

    async with (
        replica(answer) as port,
        gateway(limits, owner_at(port)) as server,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        request = (
            b"POST /replica HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n" % size + b"b" * size
        )
        sending = asyncio.create_task(_write_all(writer, request * 3))
        # The first request is relayed; the replica does not read it, so the gateway stops
        # reading the client (before it holds the two requests pipelined behind it).
        (connection,) = await _connections(server)
        assert connection.transport is not None
        for _ in range(200):
            if not connection.transport.is_reading():
                break
            await asyncio.sleep(0.01)
        assert not connection.transport.is_reading()
        assert len(connection._queue) <= 1
        go.set()
        await asyncio.wait_for(sending, 10)
        answers = b""
        while answers.count(b"ok") < 3:
            answers += await asyncio.wait_for(reader.read(65536), 10)
        assert answers.count(b"HTTP/1.1 200 OK") == 3
        assert len(seen) == 3
        assert connection.transport.is_reading()
        writer.close()


async def _write_all(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _connections(server: ProxyServer) -> list[ProxyClient]:
    for _ in range(200):
        if server.connections:
            return list(server.connections)
        await asyncio.sleep(0.01)
    raise AssertionError("no client connection")


# -- the seam: targets released once, the owner told once ---------------------------------


def ok_answer(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body) + body


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_a_request_is_relayed_byte_for_byte_and_its_target_released_once() -> None:
    seen: list[bytes] = []

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        writer.write(ok_answer(b'{"y": 1}'))
        await writer.drain()

    async with replica(answer) as port:
        owner = owner_at(port, keep_body=True)
        async with gateway(owner=owner) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                b"POST /replica?x=1 HTTP/1.1\r\nhost: x\r\nconnection: close\r\n"
                b"x-mine: 1\r\ncontent-length: 2\r\n\r\n{}"
            )
            response = await read_until_closed(reader)
            writer.close()
    assert response.startswith(ok_answer(b'{"y": 1}'))
    (request,) = seen
    assert request.startswith(b"POST /replica?x=1 HTTP/1.1\r\n")
    assert b"x-mine: 1\r\n" in request
    assert b"x-forwarded-for: 127.0.0.1\r\n" in request
    assert b"connection" not in request  # hop-by-hop
    assert request.endswith(b"content-length: 2\r\n\r\n{}")
    assert owner.released == [(f"127.0.0.1:{port}", True)]
    assert owner.ends == [("answered", 200, b'{"y": 1}')]


async def test_a_refused_connection_is_sent_to_the_next_target() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok_answer())
        await writer.drain()

    gone = f"127.0.0.1:{closed_port()}"
    async with replica(answer) as port:
        owner = Owner([gone, f"127.0.0.1:{port}"], slow=True)
        async with gateway(owner=owner) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            response = await read_until_closed(reader)
            writer.close()
    assert response.startswith(ok_answer())
    assert owner.released == [(gone, False), (f"127.0.0.1:{port}", True)]
    assert owner.ends == [("answered", 200, None)]


async def test_a_target_that_does_not_answer_in_time_gets_504_and_is_released() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()  # never answers

    async with replica(answer) as port:
        owner = owner_at(port, timeout_s=0.2)
        async with gateway(owner=owner) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
            writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            response = await read_until_closed(reader)
            writer.close()
    assert status_of(response) == 504
    assert b"did not answer within 0.2s" in response
    assert response.count(b"HTTP/1.1 ") == 2
    assert response.endswith(b"local:")
    assert owner.released == [(f"127.0.0.1:{port}", False)]
    assert owner.ends == [("failed", 504, None)]


async def test_a_target_that_goes_away_mid_answer_cuts_the_answer_short() -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
        await writer.drain()  # and the connection closes

    async with replica(answer) as port:
        owner = owner_at(port)
        async with gateway(owner=owner) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
            response = await read_until_closed(reader)
            writer.close()
    assert response.endswith(b"partial")  # what came, then the connection closed
    assert owner.released == [(f"127.0.0.1:{port}", False)]
    assert owner.ends == [("failed", 502, None)]


async def test_a_target_found_after_the_deadline_answers_nothing_more() -> None:
    """The 504 is the request's one answer: a wait for a target that ends in an error after
    it must not write a second answer into the next request's place."""
    owner = Owner(["127.0.0.1:1"], timeout_s=0.2, slow=True)
    gave_up = asyncio.Event()

    class LateCall(OwnersCall):
        async def target(self) -> Target:
            await asyncio.sleep(0.4)
            gave_up.set()
            raise errors.ServerNotReady("no replica started in time")

    def forward_late(request: ProxiedRequest, destination: object) -> OwnersCall:
        return LateCall(owner)

    server = ProxyServer(resolve_for(owner), forward_late, local_app=local_app, limits=PATIENT)
    await server.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
        writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\n\r\n")
        await asyncio.wait_for(gave_up.wait(), 5)
        await asyncio.sleep(0.05)  # the error's turn to be written, were it written
        writer.write(b"GET /local HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        response = await read_until_closed(reader)
        writer.close()
    finally:
        await server.stop()
    statuses = [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", response)]
    assert statuses == [504, 200, 200]
    assert owner.ends == [("failed", 504, None)]


@dataclass
class Admitted:
    token: object | None
    released: int = 0

    def release(self) -> None:
        self.released += 1


async def test_admit_refuses_with_the_owners_headers_and_holds_until_answered() -> None:
    admitted: list[Admitted] = []
    seen: list[bytes] = []

    def admit(request: ProxiedRequest, destination: object) -> Admitted:
        if request.header(b"authorization") is None:
            raise errors.Unauthenticated("a token, please")
        admission = Admitted(token="t")
        admitted.append(admission)
        return admission

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await read_request(reader))
        assert admitted[0].released == 0  # held while the target answers
        writer.write(ok_answer())
        await writer.drain()

    def refusal_headers(exc: BaseException) -> dict[str, str]:
        return {"www-authenticate": "Bearer"}

    async with replica(answer) as port:
        owner = owner_at(port)
        async with gateway(owner=owner, admit=admit, refusal_headers=refusal_headers) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"GET /replica HTTP/1.1\r\nhost: x\r\n\r\n")
            writer.write(
                b"GET /replica HTTP/1.1\r\nhost: x\r\nauthorization: Bearer t\r\n"
                b"connection: close\r\n\r\n"
            )
            response = await read_until_closed(reader)
            writer.close()
    assert status_of(response) == 401
    assert b"www-authenticate: Bearer\r\n" in response
    assert b"a token, please" in response
    assert response.endswith(ok_answer())
    assert owner.calls == 1  # the refused one never reached the owner's forward
    assert b"authorization" not in seen[0]  # a token the proxy's owner checked stays here
    assert [a.released for a in admitted] == [1]


async def test_the_proxys_own_answers_close_when_the_client_asks() -> None:
    """A 404, a refusal or a 50x of the proxy's own ends the connection after a request
    that said ``connection: close``, as a target's answer does (not at the idle timeout)."""

    def admit(request: ProxiedRequest, destination: object) -> Admitted:
        if request.path == "/refused":
            raise errors.PermissionDenied("not you")
        return Admitted(token=None)

    async with gateway(PATIENT, admit=admit) as server:
        for path, status in (("/nowhere", 404), ("/refused", 403)):
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
            response = await read_until_closed(reader, 3)  # PATIENT: idle closes after 30 s
            writer.close()
            assert status_of(response) == status
            assert b"connection: close\r\n" in response
