"""The gRPC half of the platform's gateway: Open Inference Protocol calls proxied to replicas.

Each call to ``inference.GRPCInferenceService`` is routed by its ``host`` metadata and the
model it names, which is read from the first bytes of the message rather than by decoding it:
tensors pass through as the client sent them. The replica is chosen per call by a resolver
(which may wait while a replica starts), and the client's deadline, metadata and, on failure,
the replica's status travel unchanged, so a client cannot tell the gateway from a replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc

from modelhost import errors
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb

__all__ = ["GrpcGateway", "GrpcTarget", "Resolver"]

logger = logging.getLogger("modelhost.local")

_SERVICE = "inference.GRPCInferenceService"

# Unary methods sent on to a replica, with the number of the string field naming the model
# (0: the method is about the server, not one model).
_FORWARDED: dict[str, int] = {
    "ModelReady": 1,
    "ModelMetadata": 1,
    "ModelInfer": 1,
    "ServerMetadata": 0,
    "RepositoryIndex": 0,
    "RepositoryModelLoad": 2,
    "RepositoryModelUnload": 2,
}
_STREAM = "ModelStreamInfer"
_STREAM_MODEL_FIELD = 1

# The gateway is alive and ready whenever it answers; whether a model is ready is the
# replica's answer to ModelReady.
_ANSWERED: dict[str, bytes] = {
    "ServerLive": pb.ServerLiveResponse(live=True).SerializeToString(),
    "ServerReady": pb.ServerReadyResponse(ready=True).SerializeToString(),
}

# Metadata that describes one hop, not the call: gRPC sets these itself on the next hop
# (the deadline travels as the call's timeout instead of grpc-timeout). grpc-python drops
# most of them itself; filtering here does not depend on that.
_HOP_HEADERS = frozenset(
    {
        "connection",
        "content-type",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
        "user-agent",
    }
)

# A message may be as large as the replica accepts; the replica enforces its own limit.
_UNLIMITED = -1
_MESSAGE_OPTIONS: tuple[tuple[str, Any], ...] = (
    ("grpc.max_receive_message_length", _UNLIMITED),
    ("grpc.max_send_message_length", _UNLIMITED),
)

# How long stop() lets cancelled calls unwind before cancelling them itself.
_UNWIND_TIMEOUT = 1.0


@dataclass(frozen=True)
class GrpcTarget:
    """The replica one call goes to, and what to tell its owner when the call ends."""

    address: str
    release: Callable[[bool], None]


Resolver = Callable[[str | None, str | None], Awaitable[GrpcTarget]]
"""``resolve(host, model)``: the replica for a call; raises ``modelhost.errors`` to refuse."""


class GrpcGateway:
    """A ``grpc.aio`` server that forwards every ``GRPCInferenceService`` call as raw bytes."""

    def __init__(self, resolve: Resolver, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._resolve = resolve
        self._host = host
        self._requested_port = port
        self._port = 0
        self._server: Any = None
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        """The bound port (0 until :meth:`start`)."""
        return self._port

    async def start(self) -> int:
        """Bind ``host:port`` (0 picks a free port), start serving, return the port."""
        if self._server is not None:
            raise RuntimeError("the gRPC gateway is already started")
        # SO_REUSEPORT is on by default in gRPC: a busy port would be shared silently.
        server = grpc.aio.server(options=[*_MESSAGE_OPTIONS, ("grpc.so_reuseport", 0)])
        server.add_generic_rpc_handlers((_Handler(self),))
        host, port = self._host, self._requested_port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"Cannot bind the gRPC gateway to {address}: {exc}") from None
        await server.start()
        self._server = server
        self._port = int(bound)
        return self._port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Refuse new calls, let running ones finish within ``grace``, close the channels."""
        server, self._server = self._server, None
        if server is not None:
            await server.stop(grace)
        # The server has cancelled the calls it ended, but their handlers may still be
        # unwinding (releasing replicas, waiting in the resolver): end them before the
        # channels they use are closed.
        running = self._running - {asyncio.current_task()}
        if running:
            _, late = await asyncio.wait(running, timeout=_UNWIND_TIMEOUT)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)
        channels, self._channels = self._channels, {}
        for channel in channels.values():
            await channel.close()

    async def discard(self, address: str) -> None:
        """Close the cached channel to ``address`` (a replica that is gone for good)."""
        channel = self._channels.pop(address, None)
        if channel is not None:
            await channel.close(grace=None)

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = grpc.aio.insecure_channel(address, options=_MESSAGE_OPTIONS)
            self._channels[address] = channel
        return channel

    # -- calls ---------------------------------------------------------------------

    async def _forward(self, method: str, field: int, request: bytes, context: Any) -> bytes:
        """One unary call: resolve a replica, send the bytes on, pass its answer back."""
        with self._tracked():
            model = _string_field(request, field) if field else None
            target = await self._target(context, model)
            release = _Release(target)
            try:
                timeout = await _remaining(context)
                call = self._channel(target.address).unary_unary(method)(
                    request, timeout=timeout, metadata=_forwarded(context.invocation_metadata())
                )
                try:
                    response: bytes = await call
                except grpc.aio.AioRpcError as exc:
                    await _abort_as(context, exc)
                finally:
                    if not call.done():
                        call.cancel()  # the client went away: so does the replica's call
                await _pass_metadata(context, call)
                release.succeeded()
                return response
            finally:
                release()

    async def _forward_stream(
        self, method: str, requests: AsyncIterator[bytes], context: Any
    ) -> AsyncIterator[bytes]:
        """ModelStreamInfer: the whole stream goes to the replica its first message names."""
        with self._tracked():
            iterator = aiter(requests)
            try:
                first = await anext(iterator)
            except StopAsyncIteration:
                return  # an empty stream asks nothing of any replica
            target = await self._target(context, _string_field(first, _STREAM_MODEL_FIELD))
            release = _Release(target)
            try:
                timeout = await _remaining(context)

                async def messages() -> AsyncIterator[bytes]:
                    yield first
                    async for message in iterator:
                        yield message

                call = self._channel(target.address).stream_stream(method)(
                    messages(), timeout=timeout, metadata=_forwarded(context.invocation_metadata())
                )
                try:
                    # Headers come before the first answer; requests keep flowing meanwhile.
                    initial = _forwarded(await call.initial_metadata() or ())
                    if initial:
                        await context.send_initial_metadata(initial)
                    async for response in call:
                        yield response
                except grpc.aio.AioRpcError as exc:
                    await _abort_as(context, exc)
                finally:
                    if not call.done():
                        call.cancel()
                trailing = _forwarded(await call.trailing_metadata() or ())
                if trailing:
                    context.set_trailing_metadata(trailing)
                release.succeeded()
            finally:
                release()

    @contextlib.contextmanager
    def _tracked(self) -> Iterator[None]:
        """Count the running call until it ends, so that stop() can wait for it."""
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - grpc.aio runs every handler in a task
            yield
            return
        self._running.add(task)
        try:
            yield
        finally:
            self._running.discard(task)

    async def _target(self, context: Any, model: str | None) -> GrpcTarget:
        """The resolver's replica for this call, or the call ends with the resolver's error."""
        try:
            return await self._resolve(_host(context.invocation_metadata()), model)
        except Exception as exc:
            if not isinstance(exc, (errors.ModelhostError, NotImplementedError)):
                logger.error("The gRPC gateway's resolver failed", exc_info=exc)
            code = grpc.StatusCode[errors.grpc_status_name(exc)]
            await context.abort(code, errors.error_message(exc))
            raise AssertionError("context.abort returned") from None  # pragma: no cover


class _Handler(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Maps each method of the service to the gateway; other services are UNIMPLEMENTED."""

    def __init__(self, gateway: GrpcGateway) -> None:
        self._gateway = gateway

    def service(self, handler_call_details: Any) -> Any:
        method: str = handler_call_details.method
        service, _, name = method.lstrip("/").partition("/")
        if service != _SERVICE:
            return None
        gateway = self._gateway
        if name in _ANSWERED:
            payload = _ANSWERED[name]

            async def answer(request: bytes, context: Any) -> bytes:
                return payload

            return grpc.unary_unary_rpc_method_handler(answer)
        if name in _FORWARDED:
            field = _FORWARDED[name]

            async def forward(request: bytes, context: Any) -> bytes:
                return await gateway._forward(method, field, request, context)

            return grpc.unary_unary_rpc_method_handler(forward)
        if name == _STREAM:
            # grpc.aio streams the answers only of an async generator *function*; a partial
            # of one still counts, and its own finally runs when the call is cancelled.
            return grpc.stream_stream_rpc_method_handler(
                functools.partial(gateway._forward_stream, method)
            )
        return None


class _Release:
    """Calls a target's ``release`` exactly once, with whether the call succeeded."""

    def __init__(self, target: GrpcTarget) -> None:
        self._target = target
        self._ok = False
        self._done = False

    def succeeded(self) -> None:
        self._ok = True

    def __call__(self) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._target.release(self._ok)
        except Exception:
            # The client's answer does not depend on the bookkeeping of whoever owns the replica.
            logger.exception("Releasing replica %s failed", self._target.address)


async def _remaining(context: Any) -> float | None:
    """What is left of the client's deadline after resolving (None: the client set none)."""
    remaining: float | None = context.time_remaining()
    if remaining is not None and remaining <= 0:
        await context.abort(
            grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before a replica was ready."
        )
    return remaining


async def _abort_as(context: Any, exc: grpc.aio.AioRpcError) -> NoReturn:
    """End the call with the replica's status, details and trailing metadata."""
    trailing = _forwarded(exc.trailing_metadata() or ())
    await context.abort(exc.code(), exc.details() or "", trailing_metadata=tuple(trailing))
    raise AssertionError("context.abort returned")  # pragma: no cover


async def _pass_metadata(context: Any, call: Any) -> None:
    initial = _forwarded(await call.initial_metadata() or ())
    if initial:
        await context.send_initial_metadata(initial)
    trailing = _forwarded(await call.trailing_metadata() or ())
    if trailing:
        context.set_trailing_metadata(trailing)


def _forwarded(metadata: Iterable[Any]) -> tuple[tuple[str, str | bytes], ...]:
    """``metadata`` without pseudo-headers, hop headers and gRPC's own ``grpc-*`` keys."""
    kept = []
    for key, value in metadata:
        name = key.lower()
        if name.startswith((":", "grpc-")) or name in _HOP_HEADERS:
            continue
        kept.append((name, value))
    return tuple(kept)


def _host(metadata: Iterable[Any] | None) -> str | None:
    """The host a call is for: its ``host`` metadata, else ``:authority`` if gRPC shows it."""
    authority = None
    for key, value in metadata or ():
        if not isinstance(value, str) or not value:
            continue
        if key == "host":
            return value
        if key == ":authority":
            authority = value
    return authority


def _string_field(data: bytes, field: int) -> str | None:
    """The string in top-level ``field`` of a serialized message, read without decoding it.

    Only the message's top-level tags are walked: other fields, tensors included, are
    skipped by their length. The last occurrence wins, as in protobuf. Malformed bytes,
    an empty string or invalid UTF-8 give None: the replica reports the malformed message.
    """
    found: bytes | None = None
    position, end = 0, len(data)
    try:
        while position < end:
            tag, position = _varint(data, position)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == 0:
                _, position = _varint(data, position)
            elif wire_type == 1:
                position += 8
            elif wire_type == 5:
                position += 4
            elif wire_type == 2:
                length, position = _varint(data, position)
                if position + length > end:
                    return None
                if number == field:
                    found = data[position : position + length]
                position += length
            else:
                return None  # groups: not in this protocol's messages
        if position > end or not found:
            return None
        return found.decode("utf-8")
    except (IndexError, UnicodeDecodeError):
        return None


def _varint(data: bytes, position: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it; IndexError when cut short."""
    value = shift = 0
    while True:
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
        if shift > 63:
            raise IndexError("varint longer than 10 bytes")
