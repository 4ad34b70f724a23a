"""The pooled HTTP/1.1 client reuses what it may, retries only the keep-alive race, and reports
every other failure as its own error, on both event loops the platform runs.

Targets are real servers on loopback ports the kernel picks (``http1_targets``): a raw asyncio
server where the test writes each answer's bytes itself and sees each connection, and
aiohttp.web where only the bodies matter (large bodies, concurrency).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from http1_targets import (
    BIG_ANSWER,
    ScriptedServer,
    Seen,
    aiohttp_target,
    listening,
    ok,
    on_both_loops,
    scripted,
    unanswered_address,
)

from modelhost import errors
from modelhost.transport.http1_client import (
    AnswerInvalid,
    Http1Answer,
    Http1Client,
    UpstreamClosed,
    UpstreamTimedOut,
    UpstreamUnreachable,
)


@asynccontextmanager
async def client_of(**options: Any) -> AsyncIterator[Http1Client]:
    client = Http1Client(**options)
    try:
        yield client
    finally:
        await client.close()


async def post(client: Http1Client, address: str, body: bytes = b"", **kw: float) -> Http1Answer:
    return await client.request(address, b"POST", b"/v1/x?y=1", [], body, **kw)


@on_both_loops
async def test_one_connection_serves_100_sequential_calls() -> None:
    async with scripted() as server, client_of() as client:
        for index in range(100):
            answer = await post(client, server.address, b"%d" % index)
            assert answer.status == 200
            assert answer.body == b"echo:%d" % index
        assert server.accepted == 1
        assert [seen.number for seen in server.requests] == list(range(1, 101))


@on_both_loops
async def test_the_head_carries_the_callers_headers_a_host_and_the_length() -> None:
    async with scripted() as server, client_of() as client:
        headers = [
            (b"X-Request-Id", b"abc"),
            (b"Content-Length", b"999"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close"),
        ]
        await client.request(server.address, b"POST", b"/a?b=c", headers, b"hello")
        await client.request(server.address, b"GET", b"/b", [(b"Host", b"model.example")], b"")
        first, second = server.requests
        assert (first.method, first.target) == (b"POST", b"/a?b=c")
        assert first.headers == [
            (b"X-Request-Id", b"abc"),
            (b"host", server.address.encode()),
            (b"content-length", b"5"),
        ]
        assert first.body == b"hello"
        assert second.headers == [(b"Host", b"model.example"), (b"content-length", b"0")]
        assert server.accepted == 1  # the caller's "connection: close" was not sent


@pytest.mark.parametrize(
    "value", [b"a\r\nx-injected: 1", b"a\nx", b"a\rb"], ids=["crlf", "lf", "cr"]
)
@on_both_loops
async def test_a_line_break_in_a_header_is_refused_before_sending(value: bytes) -> None:
    async with scripted() as server, client_of() as client:
        with pytest.raises(errors.InvalidInput):
            await client.request(server.address, b"GET", b"/", [(b"x-a", value)], b"")
        with pytest.raises(errors.InvalidInput):
            await client.request(server.address, b"GET", b"/ HTTP/1.1\r\nx: y", [], b"")
        assert server.accepted == 0


@on_both_loops
async def test_answer_headers_come_lower_cased_in_order() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"{}", b"Content-Type: application/json\r\nX-B: 2\r\nx-a: 1\r\nX-B: 3\r\n"))
        return True

    async with scripted(answer) as server, client_of() as client:
        answer_ = await post(client, server.address)
        assert answer_.headers == [
            (b"content-length", b"2"),
            (b"content-type", b"application/json"),
            (b"x-b", b"2"),
            (b"x-a", b"1"),
            (b"x-b", b"3"),
        ]


CHUNKED = (
    b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n"
)


@on_both_loops
async def test_chunked_answers_are_decoded_and_keep_the_connection() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        # Split mid-chunk, so that the parser meets the chunk framing across reads.
        w.write(CHUNKED[:60])
        await w.drain()
        w.write(CHUNKED[60:])
        return True

    async with scripted(answer) as server, client_of() as client:
        for _ in range(3):
            answer_ = await post(client, server.address)
            assert (answer_.status, answer_.body) == (201, b"hello world")
        assert server.accepted == 1


@on_both_loops
async def test_an_answer_without_a_length_ends_with_its_connection() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil ")
        await w.drain()
        w.write(b"the end")
        return False

    async with scripted(answer) as server, client_of() as client:
        for _ in range(2):
            answer_ = await post(client, server.address)
            assert (answer_.status, answer_.body) == (200, b"until the end")
        assert server.accepted == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
    ],
    ids=["connection-close", "http-1.0"],
)
@on_both_loops
async def test_a_connection_the_target_ends_is_not_reused(head: bytes) -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(head)
        # Kept open by the server: only the client's reading of the answer closes it.
        return True

    async with scripted(answer) as server, client_of() as client:
        for _ in range(2):
            assert (await post(client, server.address)).body == b"ok"
        assert server.accepted == 2
        await server.wait_ended(2)


@on_both_loops
async def test_http_1_0_with_keep_alive_is_reused() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nok")
        return True

    async with scripted(answer) as server, client_of() as client:
        for _ in range(3):
            assert (await post(client, server.address)).body == b"ok"
        assert server.accepted == 1


@on_both_loops
async def test_informational_answers_are_skipped() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await w.drain()
        w.write(b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + ok(b"final", b"x-f: 1\r\n"))
        return True

    async with scripted(answer) as server, client_of() as client:
        for _ in range(2):
            answer_ = await post(client, server.address, b"x")
            assert (answer_.status, answer_.body) == (200, b"final")
            assert answer_.headers == [(b"content-length", b"5"), (b"x-f", b"1")]
        assert server.accepted == 1


@on_both_loops
async def test_a_head_answer_has_no_body_and_keeps_the_connection() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.method == b"HEAD":
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
        else:
            w.write(ok(b"after head"))
        return True

    async with scripted(answer) as server, client_of() as client:
        head = await client.request(server.address, b"HEAD", b"/", [], b"")
        assert (head.status, head.body) == (200, b"")
        assert (await post(client, server.address)).body == b"after head"
        assert server.accepted == 1


@on_both_loops
async def test_an_idle_connection_the_target_closed_is_replaced() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok())
        return False  # as a keep-alive timeout would: closed once idle, no warning

    async with scripted(answer) as server, client_of() as client:
        assert (await post(client, server.address)).body == b"ok"
        await server.wait_ended(1)
        assert (await post(client, server.address)).body == b"ok"
        assert server.accepted == 2


@on_both_loops
async def test_the_keep_alive_race_is_retried_once_on_a_fresh_connection() -> None:
    # The second request on each connection meets a target that closes without answering
    # (it closed the connection as the request arrived): sent again on a fresh connection.
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.number == 2:
            return False
        w.write(ok(b"echo:" + seen.body))
        return True

    async with scripted(answer) as server, client_of() as client:
        assert (await post(client, server.address, b"1")).body == b"echo:1"
        assert (await post(client, server.address, b"2")).body == b"echo:2"
        assert server.accepted == 2
        assert [(seen.connection, seen.body) for seen in server.requests] == [
            (1, b"1"),
            (1, b"2"),
            (2, b"2"),
        ]


@on_both_loops
async def test_a_fresh_connection_closed_without_an_answer_is_not_retried() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        return False

    async with scripted(answer) as server, client_of() as client:
        with pytest.raises(UpstreamClosed, match=server.address):
            await post(client, server.address)
        assert len(server.requests) == 1


@on_both_loops
async def test_a_reused_connection_closed_mid_answer_is_not_retried() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.number == 2:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            return False
        w.write(ok())
        return True

    async with scripted(answer) as server, client_of() as client:
        await post(client, server.address)
        with pytest.raises(UpstreamClosed, match="mid-answer"):
            await post(client, server.address)
        assert len(server.requests) == 2
        assert (await post(client, server.address)).body == b"ok"  # a fresh connection
        assert server.accepted == 2


@on_both_loops
async def test_a_refused_connection_names_the_address() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    async with client_of() as client:
        with pytest.raises(UpstreamUnreachable) as raised:
            await post(client, address)
    assert address in str(raised.value)
    assert "connection refused" in str(raised.value)
    assert raised.value.address == address


@pytest.mark.parametrize("address", ["no-port", "host:", "host:http", "[::1]", "h:70000"])
@on_both_loops
async def test_an_address_that_is_not_host_and_port_is_unreachable(address: str) -> None:
    async with client_of() as client:
        with pytest.raises(UpstreamUnreachable, match="not a host:port address"):
            await post(client, address)


@on_both_loops
async def test_a_host_name_is_resolved_and_sent_as_the_host() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(seen.header(b"host") or b""))
        return True

    async with scripted(answer) as server, client_of() as client:
        address = server.address.replace("127.0.0.1", "localhost")
        assert (await post(client, address)).body == address.encode()


@on_both_loops
async def test_ipv6_addresses_in_brackets() -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")

    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(seen.header(b"host") or b""))
        return True

    try:
        async with scripted(answer, "::1") as server, client_of() as client:
            assert server.address.startswith("[::1]:")
            assert (await post(client, server.address)).body == server.address.encode()
    except OSError as exc:  # pragma: no cover - hosts without an IPv6 loopback
        pytest.skip(f"no IPv6 loopback here ({exc})")


@on_both_loops
async def test_a_timeout_fails_the_request_and_ends_its_connection() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.body == b"slow":
            await reader.read()  # no answer: waits for the client to give up
            return False
        w.write(ok())
        return True

    async with scripted(answer) as server, client_of() as client:
        assert (await post(client, server.address, b"warm")).body == b"ok"
        with pytest.raises(UpstreamTimedOut, match=rf"{server.address} .* 0.2s"):
            await post(client, server.address, b"slow", timeout=0.2)
        await server.wait_ended(1)
        assert (await post(client, server.address, b"next", timeout=5)).body == b"ok"
        assert server.accepted == 2


@on_both_loops
async def test_a_timeout_shorter_than_the_connect_timeout_bounds_connecting() -> None:
    with unanswered_address() as address:
        async with client_of(connect_timeout_s=5) as client:
            with pytest.raises(UpstreamTimedOut, match=rf"{address} did not answer within 0\.2s"):
                await post(client, address, timeout=0.2)


@on_both_loops
async def test_the_connect_timeout_makes_an_address_unreachable() -> None:
    with unanswered_address() as address:
        async with client_of(connect_timeout_s=0.2) as client:
            with pytest.raises(UpstreamUnreachable, match=r"no connection within 0\.2s"):
                await post(client, address, timeout=5)


@on_both_loops
async def test_cancelling_a_request_ends_its_connection() -> None:
    arrived = asyncio.Event()

    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.body == b"hang":
            arrived.set()
            await reader.read()
            return False
        w.write(ok())
        return True

    async with scripted(answer) as server, client_of() as client:
        await post(client, server.address)
        call = asyncio.create_task(post(client, server.address, b"hang"))
        await asyncio.wait_for(arrived.wait(), 5)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await server.wait_ended(1)
        assert (await post(client, server.address)).body == b"ok"
        assert server.accepted == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1001\r\n\r\n" + b"x" * 1001,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        + b"1f4\r\n"
        + b"x" * 500
        + b"\r\n"
        + b"1f4\r\n"
        + b"x" * 500
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nx-big: " + b"y" * 1001 + b"\r\ncontent-length: 0\r\n\r\n",
    ],
    ids=["content-length", "chunked", "headers"],
)
@on_both_loops
async def test_an_answer_over_max_answer_bytes_is_invalid_and_ends_the_connection(
    head: bytes,
) -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(head if seen.body == b"big" else ok(b"x" * 900))
        return True

    async with scripted(answer) as server, client_of(max_answer_bytes=1000) as client:
        assert len((await post(client, server.address)).body) == 900
        with pytest.raises(AnswerInvalid, match=rf"{server.address} answered more than 1000"):
            await post(client, server.address, b"big")
        await server.wait_ended(1)
        assert len((await post(client, server.address)).body) == 900
        assert server.accepted == 2


@pytest.mark.parametrize(
    "garbage",
    [
        b"SPDY/9 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: zz\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: h2c\r\nconnection: upgrade\r\n\r\n",
    ],
    ids=["not-http", "bad-length", "upgrade"],
)
@on_both_loops
async def test_an_answer_that_is_not_http_is_invalid(garbage: bytes) -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(garbage)
        return True

    async with scripted(answer) as server, client_of() as client:
        with pytest.raises(AnswerInvalid, match=server.address):
            await post(client, server.address)
        await server.wait_ended(1)


@on_both_loops
async def test_an_answer_nobody_asked_for_ends_the_connection() -> None:
    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(b"one") + ok(b"two"))
        return True

    async with scripted(answer) as server, client_of() as client:
        assert (await post(client, server.address)).body == b"one"
        await server.wait_ended(1)
        assert (await post(client, server.address)).body == b"one"
        assert server.accepted == 2


@on_both_loops
async def test_a_large_body_waits_while_the_target_does_not_read() -> None:
    body = os.urandom(8 * 1024 * 1024)
    reading = asyncio.Event()

    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        w.write(ok(hashlib.sha256(seen.body).hexdigest().encode()))
        return True

    server = ScriptedServer(answer)

    async def serve_later(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reading.wait()
        await server.serve(reader, writer)

    async with listening(serve_later) as address, client_of() as client:
        call = asyncio.create_task(post(client, address, body, timeout=30))
        # Nothing to wait on for the client's pause: its state is looked at until it shows.
        async with asyncio.timeout(5):
            while not any(c._drained is not None for c in client._pool.open):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        (connection,) = client._pool.open
        assert connection.transport is not None
        # Paused: what waits in the client is a slice or so, not the 8 MiB.
        assert connection.transport.get_write_buffer_size() < 2 * 1024 * 1024
        reading.set()
        answer_ = await call
        assert answer_.body == hashlib.sha256(body).hexdigest().encode()


@on_both_loops
async def test_an_early_answer_stops_a_large_body_and_the_connection() -> None:
    closed = asyncio.Event()

    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\n\r\nbig")
        await writer.drain()
        try:
            while await reader.read(1 << 16):
                pass  # the body, until the client closes the connection
        finally:
            closed.set()

    async with listening(refuse) as address, client_of() as client:
        answer_ = await post(client, address, os.urandom(16 * 1024 * 1024), timeout=10)
        assert (answer_.status, answer_.body) == (413, b"big")
        await asyncio.wait_for(closed.wait(), 5)  # the unsent rest makes it unusable
        assert not client._pool.idle.get(address)


@on_both_loops
async def test_a_2_mib_body_and_a_5_mib_answer_arrive_intact() -> None:
    body = os.urandom(2 * 1024 * 1024)
    async with aiohttp_target() as address, client_of() as client:
        echoed = await client.request(address, b"POST", b"/echo", [], body, timeout=30)
        assert echoed.status == 200
        assert echoed.body == body
        for path in (b"/large", b"/streamed"):
            answer_ = await client.request(address, b"GET", path, [], b"", timeout=30)
            assert answer_.status == 200
            assert answer_.body == BIG_ANSWER


@on_both_loops
async def test_concurrent_calls_each_get_a_whole_connection() -> None:
    async with aiohttp_target() as address, client_of(max_idle_per_address=10) as client:

        async def call(index: int) -> Http1Answer:
            body = b"%d:" % index + os.urandom(index * 100)
            answer_ = await client.request(address, b"POST", b"/echo", [], body, timeout=10)
            assert answer_.body == body
            return answer_

        answers = await asyncio.gather(*(call(index) for index in range(50)))
        assert all(answer_.status == 200 for answer_ in answers)
        assert len(client._pool.idle[address]) == 10  # the rest were closed once answered
        await asyncio.gather(*(call(index) for index in range(50)))
        assert len(client._pool.idle[address]) == 10


@on_both_loops
async def test_concurrent_calls_never_share_a_busy_connection() -> None:
    # Each answer waits until all 50 requests have arrived: were two sent on one connection,
    # the second would wait behind the first forever.
    everyone = asyncio.Event()

    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if len(server.requests) == 50:
            everyone.set()
        await everyone.wait()
        w.write(ok(seen.body))
        return True

    async with scripted(answer) as server, client_of(max_idle_per_address=10) as client:
        bodies = [b"%d" % index for index in range(50)]
        answers = await asyncio.wait_for(
            asyncio.gather(*(post(client, server.address, body) for body in bodies)), 10
        )
        assert [answer_.body for answer_ in answers] == bodies
        assert server.accepted == 50
        # Ten were kept: ten more calls at once reuse them all.
        everyone.clear()
        more = [b"again %d" % index for index in range(10)]
        server.requests.clear()
        everyone.set()
        answers = await asyncio.gather(*(post(client, server.address, body) for body in more))
        assert [answer_.body for answer_ in answers] == more
        assert server.accepted == 50


@on_both_loops
async def test_close_ends_idle_and_busy_connections() -> None:
    arrived = asyncio.Event()

    async def answer(seen: Seen, reader: asyncio.StreamReader, w: asyncio.StreamWriter) -> bool:
        if seen.body == b"hang":
            arrived.set()
            await reader.read()
            return False
        w.write(ok())
        return True

    async with scripted(answer) as server:
        client = Http1Client()
        # Two at once: two connections, one of them left idle while the other hangs.
        await asyncio.gather(post(client, server.address), post(client, server.address))
        assert server.accepted == 2
        call = asyncio.create_task(post(client, server.address, b"hang"))
        await asyncio.wait_for(arrived.wait(), 5)
        await client.close()
        with pytest.raises(UpstreamClosed):
            await call
        await server.wait_ended(2)
        with pytest.raises(UpstreamUnreachable, match="closed"):
            await post(client, server.address)
