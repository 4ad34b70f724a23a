"""Keep-alive HTTP/1.1 connections from the gateway to its replicas, one response at a time.

The gateway writes a request's bytes and relays the response's bytes as they arrive, without
decoding or re-encoding them: httptools parses the response only to find where it ends (and
its status, and its body when the payload logger wants it). Written by hand rather than with
an HTTP client library because a client builds request and response objects per call, which
cost more than the replica's whole answer to a small model (measured in ``bench/``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from typing import cast

import httptools

__all__ = ["Exchange", "UpstreamConnection", "UpstreamPool"]


class Exchange:
    """What one response is relayed to: the client's transport and the end-of-response hook."""

    def __init__(
        self,
        write: Callable[[bytes], None],
        done: Callable[[int, bytes | None, bool], None],
        keep_body: bool,
    ) -> None:
        self.write = write
        # (status, body if kept, complete): complete is False when the replica went away.
        self.done = done
        self.keep_body = keep_body
        self.status = 0
        self.body: list[bytes] = []
        self.wrote_any = False


class UpstreamConnection(asyncio.Protocol):
    """One connection to a replica; idle in its pool between exchanges."""

    def __init__(self, pool: UpstreamPool, address: str) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self._parser = httptools.HttpResponseParser(self)
        self._keep_alive = True
        self._head = False

    # -- asyncio.Protocol --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, only alike.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: the connection cannot be trusted any more.
            self.close()
            return
        exchange.write(data)
        exchange.wrote_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            self._finish(complete=False)
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        if self.exchange is not None:
            self._finish(complete=False)

    # -- httptools callbacks --

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.status = self._parser.get_status_code()
        self._keep_alive = self._parser.should_keep_alive()
        if self._head:
            # A HEAD answer has a Content-Length but no body; the parser cannot know that,
            # so the answer ends here and the next one starts with a fresh parser.
            self._parser = httptools.HttpResponseParser(self)
            self.on_message_complete()

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None and self.exchange.keep_body:
            self.exchange.body.append(body)

    def on_message_complete(self) -> None:
        self._finish(complete=True)
        if self._keep_alive and not self.closed:
            self.pool.put_back(self)
        else:
            self.close()

    # -- the gateway's side --

    def send(self, request: bytes, exchange: Exchange, *, head: bool = False) -> None:
        assert self.transport is not None
        self.exchange = exchange
        self._head = head
        self.transport.write(request)

    def abandon(self) -> None:
        """The client went away or time ran out: the response has nowhere to go."""
        self.exchange = None
        self.close()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _finish(self, complete: bool) -> None:
        exchange, self.exchange = self.exchange, None
        if exchange is not None:
            body = b"".join(exchange.body) if exchange.keep_body else None
            exchange.done(exchange.status, body, complete)


class UpstreamPool:
    """Idle keep-alive connections per replica address."""

    def __init__(self, max_idle_per_address: int = 256) -> None:
        self._idle: dict[str, list[UpstreamConnection]] = defaultdict(list)
        self._max_idle = max_idle_per_address

    def take(self, address: str) -> UpstreamConnection | None:
        idle = self._idle.get(address)
        while idle:
            connection = idle.pop()
            if not connection.closed:
                return connection
        return None

    async def connect(self, address: str) -> UpstreamConnection:
        host, port = address.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        _, protocol = await loop.create_connection(
            lambda: UpstreamConnection(self, address), host, int(port)
        )
        return protocol

    def put_back(self, connection: UpstreamConnection) -> None:
        idle = self._idle[connection.address]
        if len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()

    def forget(self, connection: UpstreamConnection) -> None:
        idle = self._idle.get(connection.address)
        if idle and connection in idle:
            idle.remove(connection)

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
