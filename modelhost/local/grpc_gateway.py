"""The gRPC half of the platform's gateway: Open Inference Protocol calls relayed to replicas.

Each call to ``inference.GRPCInferenceService`` is routed by its ``host`` metadata and the
model its first message names, and relayed to the chosen replica frame by frame over
HTTP/2 connections the gateway keeps open (``http2``). The client's headers, deadline
(less the time spent waiting for a replica), messages and the replica's status and
trailers pass unchanged, so a client cannot tell the gateway from a replica. A relay, not
``grpc.aio`` on both sides: that cost ~350 µs of Python per call each side, halving what a
replica behind the gateway could serve (bench/RESULTS.md, run 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from modelhost.local.grpc_call import Call, GrpcTarget, NowResolver, Resolver
from modelhost.local.http2 import CANCEL, REFUSED_STREAM, H2Connection, Header

__all__ = ["GrpcGateway", "GrpcTarget", "NowResolver", "Resolver"]

logger = logging.getLogger("modelhost.local")

_MAX_STREAM_ID = 2**31 - 1
# How long stop() lets cancelled work unwind before giving up on it.
_UNWIND_TIMEOUT = 1.0


class GrpcGateway:
    """Listens for gRPC clients and relays each call to the replica a resolver names."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        resolve_now: NowResolver | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.resolve = resolve
        self.resolve_now = resolve_now
        self._host = host
        self._requested_port = port
        self._port = 0
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[_ClientConnection] = set()
        self._upstreams: dict[str, list[_UpstreamConnection]] = {}
        self._connecting: dict[str, asyncio.Future[_UpstreamConnection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.stopping = False
        self._idle = asyncio.Event()

    @property
    def port(self) -> int:
        """The bound port (0 until :meth:`start`)."""
        return self._port

    async def start(self) -> int:
        """Bind ``host:port`` (0 picks a free port), start serving, return the port."""
        if self._server is not None:
            raise RuntimeError("the gRPC gateway is already started")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: _ClientConnection(self),
                self._host,
                self._requested_port,
                backlog=2048,
                reuse_address=True,
            )
        except OSError as exc:
            address = f"{self._host}:{self._requested_port}"
            raise OSError(f"Cannot bind the gRPC gateway to {address}: {exc}") from None
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, let running ones finish within ``grace``, close every connection."""
        self.stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            client.goaway(client.last_stream)
        if grace and self._calls():
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for client in list(self._clients):
            for call in list(client.calls.values()):
                call.stop("the gateway is stopping")
            client.close()
        # Resolvers still waiting, connections still opening: cancelled, then awaited.
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_UNWIND_TIMEOUT)
        for future in self._connecting.values():
            future.cancel()
        self._connecting.clear()
        upstreams, self._upstreams = self._upstreams, {}
        for connections in upstreams.values():
            for connection in connections:
                connection.close()
        if server is not None:
            await server.wait_closed()

    async def discard(self, address: str) -> None:
        """Close the connections to ``address`` (a replica that is gone for good)."""
        future = self._connecting.pop(address, None)
        if future is not None:
            future.cancel()
        for connection in self._upstreams.pop(address, []):
            connection.close()

    # -- for calls -----------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def upstream_for(self, address: str) -> _UpstreamConnection | None:
        """An open connection to ``address`` with room for one more stream, if there is one."""
        for connection in self._upstreams.get(address, ()):
            if connection.usable:
                return connection
        return None

    async def connect(self, address: str) -> _UpstreamConnection:
        """A new connection to ``address``, shared by the calls that wait for one meanwhile."""
        future = self._connecting.get(address)
        if future is None:
            future = asyncio.ensure_future(self._open(address))
            self._connecting[address] = future
            future.add_done_callback(lambda _: self._connecting.pop(address, None))
        return await asyncio.shield(future)

    async def _open(self, address: str) -> _UpstreamConnection:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: _UpstreamConnection(self, address), host.strip("[]"), int(port)
        )
        if self.stopping:
            connection.close()
            raise ConnectionAbortedError("the gateway is stopping")
        self._upstreams.setdefault(address, []).append(connection)
        return connection

    def forget_upstream(self, connection: _UpstreamConnection) -> None:
        connections = self._upstreams.get(connection.address)
        if connections and connection in connections:
            connections.remove(connection)
            if not connections:
                del self._upstreams[connection.address]

    def call_ended(self) -> None:
        if self.stopping and not self._calls():
            self._idle.set()

    def _calls(self) -> int:
        return sum(len(client.calls) for client in self._clients)


class _ClientConnection(H2Connection):
    """A gRPC client's connection: each stream it opens is a :class:`Call`."""

    def __init__(self, gateway: GrpcGateway) -> None:
        super().__init__()
        self.gateway = gateway
        self.calls: dict[int, Call] = {}
        self.last_stream = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.gateway._clients.add(self)

    def on_headers(self, stream: int, headers: list[Header], end: bool) -> None:
        call = self.calls.get(stream)
        if call is not None:  # trailers from the client end its side
            call.client_data(b"", True)
            return
        if stream <= self.last_stream or not stream % 2:
            return  # a stream already ended (or not a client's): nothing to do
        self.last_stream = stream
        if self.gateway.stopping:
            self.reset(stream, REFUSED_STREAM)
            return
        self.open_stream(stream)
        call = Call(self.gateway, self, stream, headers)
        self.calls[stream] = call
        call.begin(end)

    def on_data(self, stream: int, data: bytes, end: bool) -> None:
        call = self.calls.get(stream)
        if call is not None:
            call.client_data(data, end)

    def on_reset(self, stream: int, code: int) -> None:
        call = self.calls.get(stream)
        if call is not None:
            call.client_reset()

    def lost(self) -> None:
        self.gateway._clients.discard(self)
        for call in list(self.calls.values()):
            call.client_reset()

    def end_call(self, stream: int) -> None:
        if self.calls.pop(stream, None) is not None:
            self.close_stream(stream)
            self.gateway.call_ended()


class _UpstreamConnection(H2Connection):
    """The gateway's connection to one replica; calls share it, one stream each."""

    client_side = True

    def __init__(self, gateway: GrpcGateway, address: str) -> None:
        super().__init__()
        self.gateway = gateway
        self.address = address
        self.calls: dict[int, Call] = {}
        self._next_stream = 1
        self.draining = False

    @property
    def usable(self) -> bool:
        limit = self.peer_max_streams
        return (
            not self.closed
            and not self.draining
            and self._next_stream < _MAX_STREAM_ID
            and (limit is None or len(self.calls) < limit)
        )

    def refused(self) -> None:
        """The replica refused a stream: this connection takes no more than it has."""
        if self.peer_max_streams is None or self.peer_max_streams > len(self.calls):
            self.peer_max_streams = len(self.calls)

    def new_stream(self, call: Call) -> int:
        stream = self._next_stream
        self._next_stream += 2
        self.calls[stream] = call
        self.open_stream(stream)
        return stream

    def end_call(self, stream: int, *, reset: bool) -> None:
        if self.calls.pop(stream, None) is None:
            return
        if reset:
            self.reset(stream, CANCEL)
        else:
            self.forget(stream)
        if self.draining and not self.calls:
            self.close()

    def on_headers(self, stream: int, headers: list[Header], end: bool) -> None:
        call = self.calls.get(stream)
        if call is not None:
            call.upstream_headers(headers, end)

    def on_data(self, stream: int, data: bytes, end: bool) -> None:
        call = self.calls.get(stream)
        if call is not None:
            call.upstream_data(data, end)

    def on_reset(self, stream: int, code: int) -> None:
        call = self.calls.pop(stream, None)
        if call is not None:
            call.upstream_reset(code)

    def on_goaway(self, last_stream: int, code: int) -> None:
        # No new calls here; the ones the replica will not take fail (it never saw them).
        self.draining = True
        self.gateway.forget_upstream(self)
        for stream, call in list(self.calls.items()):
            if stream > last_stream:
                del self.calls[stream]
                call.upstream_lost(f"replica {self.address} is shutting down (GOAWAY {code})")
        if not self.calls:
            self.close()

    def lost(self) -> None:
        self.gateway.forget_upstream(self)
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.upstream_lost(f"the connection to replica {self.address} was lost")
