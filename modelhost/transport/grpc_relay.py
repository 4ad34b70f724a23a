"""A gRPC relay: calls to ``inference.GRPCInferenceService`` passed on frame by frame.

Two places use it. The platform's gateway (``modelhost.local``) routes each call by its
``host`` metadata and the model its first message names, to a replica. A model server's
gRPC port (``server``) answers ``ModelInfer`` on the relay's own connection (a *local*
call, ``native_infer``) and relays every other method to its internal ``grpc.aio`` server,
over a connection per client (``upstream_per_client``), as back-pressure pauses a whole one.
Calls go over HTTP/2 connections the relay keeps open (``http2``). The client's headers,
deadline (less the time spent waiting for a target), messages and the target's status and
trailers pass unchanged, so a client cannot tell the relay from what is behind it. Our
own HTTP/2, not ``grpc.aio`` on both sides: that cost ~350 µs of Python per call each
side, halving what a replica behind the gateway could serve (bench/RESULTS.md, run 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from ssl import SSLContext
from typing import Any, Protocol

from modelhost.settings import Http2Limits
from modelhost.transport.grpc_call import Admit, NowResolver, RelayedCall, Resolver
from modelhost.transport.http2 import H2Connection, Header
from modelhost.transport.http2_frames import CANCEL, REFUSED_STREAM
from modelhost.transport.target import Target

__all__ = ["GrpcRelay", "LocalCall", "LocalCalls", "NowResolver", "Resolver"]

logger = logging.getLogger("modelhost.server")

_MAX_STREAM_ID = 2**31 - 1
# How long stop() lets cancelled work unwind before giving up on it.
_UNWIND_TIMEOUT = 1.0


class LocalCall(Protocol):
    """A call answered by the relay's owner on the client's connection, not relayed."""

    done: bool

    def begin(self, end: bool) -> None: ...

    def client_data(self, data: bytes, end: bool) -> None: ...

    def client_reset(self) -> None: ...

    def stop(self, why: str) -> None: ...


LocalCalls = Callable[["RelayClient", int, list[Header]], "LocalCall | None"]
"""``local(client, stream, headers)``: a call to answer here, or None to relay it."""


class GrpcRelay:
    """Listens for gRPC clients and relays each call to the target a resolver names."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        resolve_now: NowResolver | None = None,
        answered: Mapping[bytes, bytes] | None = None,
        local: LocalCalls | None = None,
        any_method: bool = False,
        upstream_per_client: bool = False,
        name: str = "gRPC relay",
        host: str = "127.0.0.1",
        port: int = 0,
        reuse_port: bool = False,
        ssl: SSLContext | None = None,
        limits: Http2Limits | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        elsewhere: Target | None = None,
    ) -> None:
        self.resolve = resolve
        self.limits = limits or Http2Limits()
        # The largest first message a call may send before it is routed (it is held whole).
        self.max_message_bytes = max_message_bytes
        self.resolve_now = resolve_now
        # Methods answered at once with a fixed message (serialized), e.g. ServerLive.
        self.answered: Mapping[bytes, bytes] = answered or {}
        self.local = local
        # The token check of each relayed call before it is resolved (the platform's gateway).
        self.admit: Admit | None = None
        # False: only the inference service's methods pass (others are UNIMPLEMENTED here,
        # or go to ``elsewhere``).
        self.any_method = any_method
        # Where the methods of other services go (health, reflection): a grpc.aio server of
        # the relay's owner. They need no token: they say nothing about a model.
        self.elsewhere = elsewhere
        # True: each client's calls go over connections of their own, so a client that stops
        # reading pauses only its own calls (back-pressure pauses a whole connection).
        self.upstream_per_client = upstream_per_client
        self.name = name
        self._host = host
        self._requested_port = port
        self._reuse_port = reuse_port
        # TLS for the clients' side (ALPN "h2": gRPC clients require it); targets are
        # reached in clear text, on loopback or the platform's own network.
        self._ssl = ssl
        self._port = 0
        self._server: asyncio.base_events.Server | None = None
        self._clients: set[RelayClient] = set()
        self._shared = RelayPool()
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
            raise RuntimeError(f"the {self.name} is already started")
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                lambda: RelayClient(self),
                self._host,
                self._requested_port,
                backlog=2048,
                reuse_address=True,
                reuse_port=self._reuse_port or None,
                ssl=self._ssl,
            )
        except OSError as exc:
            address = f"{self._host}:{self._requested_port}"
            raise OSError(f"Cannot bind the {self.name} to {address}: {exc}") from None
        self._port = int(self._server.sockets[0].getsockname()[1])
        return self._port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, let running ones finish within ``grace``, close every connection."""
        self.stopping = True
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for client in list(self._clients):
            client.goaway(client.last_peer_stream)
        if grace and self._calls():
            self._idle.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._idle.wait(), grace)
        for client in list(self._clients):
            for call in list(client.calls.values()):
                call.stop(f"the {self.name} is stopping")
            client.close()
        # Resolvers still waiting, connections still opening: cancelled, then awaited.
        tasks = [task for task in self._tasks if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_UNWIND_TIMEOUT)
        for pool in self._pools():
            pool.close()
        if server is not None:
            await server.wait_closed()

    async def discard(self, address: str) -> None:
        """Close the connections to ``address`` (a replica that is gone for good)."""
        for pool in self._pools():
            pool.close(address)

    def _pools(self) -> list[RelayPool]:
        """The shared pool and each client's (only one kind is used, by ``upstream_per_client``)."""
        return [self._shared, *(client.pool for client in self._clients)]

    # -- for calls -----------------------------------------------------------------------

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _pool(self, client: RelayClient) -> RelayPool:
        return client.pool if self.upstream_per_client else self._shared

    def upstream_for(self, address: str, client: RelayClient) -> RelayUpstream | None:
        """An open connection to ``address`` with room for one more stream, if there is one."""
        for connection in self._pool(client).upstreams.get(address, ()):
            if connection.usable:
                return connection
        return None

    async def connect(self, address: str, client: RelayClient) -> RelayUpstream:
        """A new connection to ``address``, shared by the calls that wait for one meanwhile."""
        pool = self._pool(client)
        future = pool.connecting.get(address)
        if future is None:
            future = asyncio.ensure_future(self._open(address, pool))
            pool.connecting[address] = future
            future.add_done_callback(lambda _: pool.connecting.pop(address, None))
        return await asyncio.shield(future)

    async def _open(self, address: str, pool: RelayPool) -> RelayUpstream:
        host, _, port = address.rpartition(":")
        loop = asyncio.get_running_loop()
        _, connection = await loop.create_connection(
            lambda: RelayUpstream(self, address, pool), host.strip("[]"), int(port)
        )
        if self.stopping or pool.closed:
            connection.close()
            raise ConnectionAbortedError(f"the {self.name} is stopping")
        pool.upstreams.setdefault(address, []).append(connection)
        return connection

    def call_ended(self) -> None:
        if self.stopping and not self._calls():
            self._idle.set()

    def _calls(self) -> int:
        return sum(len(client.calls) for client in self._clients)


class RelayPool:
    """Open connections to targets by address, and the ones being opened."""

    def __init__(self) -> None:
        self.upstreams: dict[str, list[RelayUpstream]] = {}
        self.connecting: dict[str, asyncio.Future[RelayUpstream]] = {}
        self.closed = False

    def forget(self, connection: RelayUpstream) -> None:
        connections = self.upstreams.get(connection.address)
        if connections and connection in connections:
            connections.remove(connection)
            if not connections:
                del self.upstreams[connection.address]

    def close(self, address: str | None = None) -> None:
        """Close the connections to ``address``, or all of them (and take no more)."""
        addresses = [address] if address is not None else [*self.connecting, *self.upstreams]
        if address is None:
            self.closed = True
        for each in addresses:
            future = self.connecting.pop(each, None)
            if future is not None:
                future.cancel()
            for connection in self.upstreams.pop(each, []):
                connection.close()


class RelayClient(H2Connection):
    """A gRPC client's connection: each stream it opens is a relayed :class:`RelayedCall`, or a
    :class:`LocalCall` where the relay's ``local`` hook takes it."""

    def __init__(self, relay: GrpcRelay) -> None:
        super().__init__(relay.limits)
        self.relay = relay
        self.calls: dict[int, RelayedCall | LocalCall] = {}
        self.pool = RelayPool()  # used where the relay keeps upstreams per client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self.relay._clients) >= self.limits.max_connections:
            # Past the cap a connection costs us nothing more than its accept.
            limit = self.limits.max_connections
            logger.warning("The %s is at its %s connections: one closed", self.relay.name, limit)
            self.closed = True
            transport.close()
            return
        super().connection_made(transport)
        self.relay._clients.add(self)

    def on_headers(self, stream: int, headers: list[Header], end: bool) -> None:
        call = self.calls.get(stream)
        if call is not None:  # trailers from the client end its side
            call.client_data(b"", True)
            return
        if self.relay.stopping:
            self.reset(stream, REFUSED_STREAM)
            return
        local = self.relay.local
        call = local(self, stream, headers) if local is not None else None
        if call is None:
            call = RelayedCall(self.relay, self, stream, headers)
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
        self.relay._clients.discard(self)
        for call in list(self.calls.values()):
            call.client_reset()
        self.pool.close()

    def end_call(self, stream: int) -> None:
        if self.calls.pop(stream, None) is not None:
            self.close_stream(stream)
            self.relay.call_ended()


class RelayUpstream(H2Connection):
    """The relay's connection to one target; calls share it, one stream each."""

    client_side = True
    # What a replica may send on one call before the client it goes to has taken some: a
    # client that stops reading stalls its own calls, not the others sharing this connection.
    stream_window = 4 * 1024 * 1024

    def __init__(self, relay: GrpcRelay, address: str, pool: RelayPool) -> None:
        super().__init__(relay.limits)
        self.relay = relay
        self.address = address
        self.pool = pool
        self.calls: dict[int, RelayedCall] = {}
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

    def new_stream(self, call: RelayedCall) -> int:
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
        self.pool.forget(self)
        for stream, call in list(self.calls.items()):
            if stream > last_stream:
                del self.calls[stream]
                call.upstream_lost(f"replica {self.address} is shutting down (GOAWAY {code})")
        if not self.calls:
            self.close()

    def lost(self) -> None:
        self.pool.forget(self)
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.upstream_lost(f"the connection to replica {self.address} was lost")
