"""One gRPC call through the relay: routed by its first message, relayed frame by frame.

A call waits for enough of its first message to read the model it names (the bytes are not
decoded: tensors pass as the client sent them), asks the resolver for a target, a replica
(which may wait while one starts) or a server's internal port, opens a stream to it and
from then on relays headers, data and trailers both ways. Whatever ends it (trailers, a
reset on either side, a lost connection, the deadline) releases the target exactly once
and leaves the client with a gRPC status.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import grpc

from modelhost import errors
from modelhost.protocol.grpc_routing import (
    FORWARDED,
    SERVICE,
    STREAM,
    STREAM_MODEL_FIELD,
    string_field,
)
from modelhost.transport.http2 import Header
from modelhost.transport.http2_frames import CANCEL, ENHANCE_YOUR_CALM, REFUSED_STREAM
from modelhost.transport.target import Admission, Target

if TYPE_CHECKING:
    from modelhost.transport.grpc_relay import GrpcRelay, RelayClient, RelayUpstream

__all__ = [
    "Admit",
    "NowResolver",
    "Resolver",
    "parse_timeout",
    "send_message",
    "send_status",
]

logger = logging.getLogger("modelhost.server")

# Headers that describe one hop, not the call.
_HOP_HEADERS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)

_OK_HEADERS: tuple[Header, ...] = ((b":status", b"200"), (b"content-type", b"application/grpc"))
_OK_TRAILERS: tuple[Header, ...] = ((b"grpc-status", b"0"),)

# Resets that refuse a stream unprocessed: REFUSED_STREAM (HTTP/2 promises it), and
# ENHANCE_YOUR_CALM, which gRPC's C core sends, before any answer, to a stream over its
# SETTINGS_MAX_CONCURRENT_STREAMS that arrived before the SETTINGS did.
_REFUSALS = frozenset({REFUSED_STREAM, ENHANCE_YOUR_CALM})
# How often a call refused by a replica's connection (too many streams) is tried again.
_RETRIES = 3

# grpc-timeout's units, in seconds.
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}


Resolver = Callable[[str | None, str | None], Awaitable[Target]]
"""``resolve(host, model)``: the replica for a call; raises ``modelhost.errors`` to refuse."""


Admit = Callable[[list[Header], "str | None", "str | None"], Admission]
"""``admit(headers, host, model)``: the token check of a call before it is resolved."""

NowResolver = Callable[[str | None, str | None], "Target | None"]
"""The same without waiting: None when only ``Resolver`` can tell (a replica must start)."""


class RelayedCall:
    """One client stream and, once resolved, the replica's stream it is relayed to."""

    __slots__ = (
        "_admission",
        "_buffer",
        "_buffered",
        "_client_ended",
        "_field",
        "_request_ended",
        "_responded",
        "_retries",
        "_sent",
        "_target",
        "_wanted",
        "client",
        "done",
        "headers",
        "relay",
        "started",
        "stream",
        "task",
        "timeout",
        "upstream",
        "upstream_stream",
    )

    def __init__(
        self, relay: GrpcRelay, client: RelayClient, stream: int, headers: list[Header]
    ) -> None:
        self.relay = relay
        self.client = client
        self.stream = stream
        self.headers = headers
        self.started = time.monotonic()
        self.timeout: float | None = None
        self.task: asyncio.Task[None] | None = None
        self.upstream: RelayUpstream | None = None
        self.upstream_stream = 0
        self.done = False
        self._buffer: list[bytes] = []
        self._buffered = 0  # bytes in _buffer
        self._wanted = -1  # bytes the first message takes, with its prefix; -1: not known yet
        self._client_ended = False
        self._request_ended = False  # our request to the replica has ended
        self._responded = False  # the client has its response headers
        self._target: Target | None = None
        self._field = -1  # the field naming the model; -1 while not a forwarded method
        # The whole request, kept until the replica answers, in case it refuses the stream.
        self._sent: bytes | None = None
        self._retries = 0
        self._admission: Admission | None = None  # the relay's admit hook's answer

    # -- from the client -----------------------------------------------------------------

    def begin(self, end: bool) -> None:
        path = b""
        for name, value in self.headers:
            if name == b":path":
                path = value
            elif name == b"grpc-timeout":
                self.timeout = parse_timeout(value)
        method = path[len(SERVICE) :] if path.startswith(SERVICE) else None
        answered = self.relay.answered
        if method is not None and method in answered:
            self._answer_message(answered[method])
        elif method in FORWARDED:
            self._field = FORWARDED[method]
            if self._field == 0:
                self._resolve(None)
        elif method == STREAM:
            self._field = STREAM_MODEL_FIELD
        elif self.relay.any_method:
            self._field = 0  # another service's (health, reflection): not about one model
            self._resolve(None)
        elif method is None and self.relay.elsewhere is not None:
            self._field = 0
            self._connect(self.relay.elsewhere)
        else:
            unknown = path.decode("latin-1")
            self.answer(grpc.StatusCode.UNIMPLEMENTED, f"Method not found: {unknown}")
        if end:
            self.client_data(b"", True)

    def client_data(self, data: bytes, end: bool) -> None:
        if self.done:
            return
        self._client_ended = self._client_ended or end
        upstream = self.upstream
        if upstream is not None:
            upstream.send_data(self.upstream_stream, data, end)
            self._request_ended = end
            if upstream.congested:
                upstream.hold(self.client)
            return
        if data:
            self._buffer.append(data)
            self._buffered += len(data)
            if self._buffered > 5 + self.relay.max_message_bytes:
                # Held until a stream to the target is open: no more than one message's worth.
                limit = self.relay.max_message_bytes
                text = f"More than {limit} bytes sent before the call could be routed"
                self.answer(grpc.StatusCode.RESOURCE_EXHAUSTED, text)
                return
        if self._target is not None or self.task is not None or self._field < 0:
            return  # resolving or connecting: the buffer goes on once a stream is open
        if self._buffered >= 5 and self._wanted < 0:
            head = self._buffer[0] if len(self._buffer[0]) >= 5 else b"".join(self._buffer)
            if head[0]:  # compressed: its fields cannot be read here
                self._resolve(None)
                return
            size = int.from_bytes(head[1:5], "big")
            limit = self.relay.max_message_bytes
            if size > limit:
                # grpc.aio's words, so that a client sees the same either way.
                text = f"Received message larger than max ({size} vs. {limit})"
                self.answer(grpc.StatusCode.RESOURCE_EXHAUSTED, text)
                return
            self._wanted = 5 + size
        if 0 <= self._wanted <= self._buffered:
            # Joined once, when the whole first message is here (not again on every frame).
            data = b"".join(self._buffer)
            self._buffer = [data]
            self._resolve(string_field(data[5 : self._wanted], self._field))
        elif end:
            if not self._buffer and self._field == STREAM_MODEL_FIELD:
                self.answer(grpc.StatusCode.OK, "")  # an empty stream asks no replica
            else:
                self._resolve(None)

    def client_reset(self) -> None:
        """The client cancelled the call or went away: so does the replica's stream."""
        if not self.done:
            self._finish(False, cancel_upstream=True)

    # -- resolving and connecting --------------------------------------------------------

    def _resolve(self, model: str | None) -> None:
        host = _host(self.headers)
        admit = self.relay.admit
        if admit is not None and self._admission is None:
            try:
                self._admission = admit(self.headers, host, model)
            except Exception as exc:
                self._refuse(exc)
                return
        resolve_now = self.relay.resolve_now
        if resolve_now is not None:
            try:
                target = resolve_now(host, model)
            except Exception as exc:
                self._refuse(exc)
                return
            if target is not None:
                self._connect(target)
                return
        self.task = self.relay.spawn(self._resolve_slowly(host, model))

    async def _resolve_slowly(self, host: str | None, model: str | None) -> None:
        try:
            target = await self.relay.resolve(host, model)
        except Exception as exc:
            self.task = None
            self._refuse(exc)
            return
        self.task = None
        if self.done:
            _release(target, False)
            return
        self._connect(target)

    def _refuse(self, exc: BaseException) -> None:
        if not isinstance(exc, (errors.ModelhostError, NotImplementedError)):
            logger.error("The %s's resolver failed", self.relay.name, exc_info=exc)
        self.answer(grpc.StatusCode[errors.grpc_status_name(exc)], errors.error_message(exc))

    def _connect(self, target: Target) -> None:
        self._target = target
        if self.timeout is not None and time.monotonic() - self.started >= self.timeout:
            self.answer(
                grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded before a replica was ready."
            )
            return
        upstream = self.relay.upstream_for(target.address, self.client)
        if upstream is not None:
            self._open(upstream)
            return
        self.task = self.relay.spawn(self._connect_slowly(target.address))

    async def _connect_slowly(self, address: str) -> None:
        try:
            upstream = await self.relay.connect(address, self.client)
        except OSError as exc:
            self.task = None
            self.answer(grpc.StatusCode.UNAVAILABLE, f"replica {address} is unreachable: {exc}")
            return
        self.task = None
        if not self.done:
            self._open(upstream)

    def _open(self, upstream: RelayUpstream) -> None:
        if upstream.closed:  # lost between connecting and this call's turn
            self.answer(grpc.StatusCode.UNAVAILABLE, f"replica {upstream.address} went away")
            return
        self.upstream = upstream
        self.upstream_stream = upstream.new_stream(self)
        buffered, self._buffer, self._buffered = b"".join(self._buffer), [], 0
        end = self._client_ended
        upstream.send_headers(self.upstream_stream, self._forwarded_headers(), end and not buffered)
        if buffered:
            upstream.send_data(self.upstream_stream, buffered, end)
        self._request_ended = end
        self._sent = buffered if end else None

    def _forwarded_headers(self) -> list[Header]:
        headers = []
        waited = time.monotonic() - self.started
        # A token the relay checked stays here: the replica's model never sees it.
        checked = self._admission is not None and self._admission.token is not None
        for name, value in self.headers:
            if name in _HOP_HEADERS or (checked and name == b"authorization"):
                continue
            if name == b"grpc-timeout" and self.timeout is not None:
                # The deadline kept running while the resolver waited: the replica gets the rest.
                value = _format_timeout(self.timeout - waited)
            headers.append((name, value))
        return headers

    # -- from the replica ----------------------------------------------------------------

    def upstream_headers(self, headers: list[Header], end: bool) -> None:
        if self.done:
            return
        kept = [(name, value) for name, value in headers if name not in _HOP_HEADERS]
        self._responded = True
        self._sent = None
        self.client.send_headers(self.stream, kept, end)
        if end:
            status = next((value for name, value in headers if name == b"grpc-status"), None)
            self._finish(status == b"0")

    def upstream_data(self, data: bytes, end: bool) -> None:
        if self.done:
            return
        client = self.client
        client.send_data(self.stream, data, end)
        if client.congested and self.upstream is not None:
            # Only this call's stream waits: the connection may carry other clients' calls.
            client.wait_for_room(self.upstream, self.upstream_stream)
        if end:  # data that ends the stream without trailers: no status, not a success
            self._finish(False)

    def upstream_reset(self, code: int) -> None:
        upstream, self.upstream = self.upstream, None  # its stream is gone: nothing to reset
        if code in _REFUSALS and self._sent is not None and self._retries < _RETRIES:
            # The replica refused the stream before processing it, so it may go again; a
            # connection that refused one holds no more than it has now.
            self._retries += 1
            if upstream is not None:
                upstream.refused()
            self._buffer = [self._sent] if self._sent else []
            self._buffered = len(self._sent or b"")
            self._sent = None
            if self._target is not None and not self.done:
                self._connect(self._target)
            return
        status = {REFUSED_STREAM: grpc.StatusCode.UNAVAILABLE, CANCEL: grpc.StatusCode.CANCELLED}
        code_name = status.get(code, grpc.StatusCode.INTERNAL)
        self.answer(code_name, f"the replica reset the call ({code})")

    def stop(self, why: str) -> None:
        """The relay is stopping: the target's stream is cancelled, the client told why."""
        self.answer(grpc.StatusCode.UNAVAILABLE, why, cancel_upstream=True)

    def upstream_lost(self, why: str) -> None:
        self.upstream = None
        self.answer(grpc.StatusCode.UNAVAILABLE, why)

    # -- ending --------------------------------------------------------------------------

    def answer(self, code: grpc.StatusCode, message: str, *, cancel_upstream: bool = False) -> None:
        """End the call here with ``code`` (trailers-only if no headers were sent yet)."""
        if self.done:
            return
        send_status(self.client, self.stream, code, message, with_headers=not self._responded)
        self._responded = True
        ok = code == grpc.StatusCode.OK and self._target is not None
        self._finish(ok, cancel_upstream=cancel_upstream)

    def _answer_message(self, payload: bytes) -> None:
        send_message(self.client, self.stream, payload)
        self._responded = True
        self._finish(True)

    def _finish(self, ok: bool, *, cancel_upstream: bool = False) -> None:
        """Release the replica, forget the streams; the replica's is reset if the request to
        it is unfinished or ``cancel_upstream`` (the client gave up, the relay stops)."""
        self.done = True
        if self.task is not None and self._target is not None:
            # Connecting: the connection is shared and shielded, the replica released below.
            # A resolver still waiting is left to finish and sees ``done`` (cancelling it
            # could lose a replica it had just handed out).
            self.task.cancel()
            self.task = None
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            reset = cancel_upstream or not self._request_ended
            upstream.end_call(self.upstream_stream, reset=reset)
        self.client.end_call(self.stream)
        target, self._target = self._target, None
        if target is not None:
            _release(target, ok)
        if self._admission is not None:
            self._admission.release()


# -- answering a client here ----------------------------------------------------------------


def send_message(client: RelayClient, stream: int, payload: bytes) -> None:
    """A whole successful unary answer: headers, the one message, ``grpc-status: 0``."""
    client.send_headers(stream, _OK_HEADERS, False)
    client.send_data(stream, b"\x00" + len(payload).to_bytes(4, "big") + payload, False)
    client.send_headers(stream, _OK_TRAILERS, True)


def send_status(
    client: RelayClient,
    stream: int,
    code: grpc.StatusCode,
    message: str,
    *,
    with_headers: bool,
) -> None:
    """End ``stream`` with ``code``: trailers, or trailers-only ``with_headers`` (no answer yet)."""
    trailers: list[Header] = list(_OK_HEADERS) if with_headers else []
    trailers.append((b"grpc-status", str(code.value[0]).encode()))
    if message:
        trailers.append((b"grpc-message", _percent_encode(message)))
    client.send_headers(stream, trailers, True)


def _release(target: Target, ok: bool) -> None:
    try:
        target.release(ok)
    except Exception:
        # The client's answer does not depend on the bookkeeping of whoever owns the replica.
        logger.exception("Releasing replica %s failed", target.address)


# -- reading the request -------------------------------------------------------------------


def _host(headers: list[Header]) -> str | None:
    """The host a call is for: its ``host`` metadata, else its ``:authority``."""
    authority = None
    for name, value in headers:
        if name == b"host" and value:
            return value.decode("latin-1")
        if name == b":authority" and value:
            authority = value.decode("latin-1")
    return authority


def parse_timeout(value: bytes) -> float | None:
    unit = _TIMEOUT_UNITS.get(value[-1:])
    digits = value[:-1]
    if unit is None or not digits.isdigit() or len(digits) > 8:
        return None  # malformed: the replica sees it as sent and judges it
    return int(digits) * unit


def _format_timeout(seconds: float) -> bytes:
    micros = max(1, int(seconds * 1e6))
    if micros < 100_000_000:
        return b"%du" % micros
    millis = micros // 1000
    if millis < 100_000_000:
        return b"%dm" % millis
    return b"%dS" % min(micros // 1_000_000, 99_999_999)


def _percent_encode(message: str) -> bytes:
    """grpc-message's encoding: printable ASCII but ``%`` as is, every other byte as ``%XX``."""
    raw = message.encode("utf-8")
    if all(0x20 <= byte <= 0x7E and byte != 0x25 for byte in raw):
        return raw
    return b"".join(
        bytes([byte]) if 0x20 <= byte <= 0x7E and byte != 0x25 else b"%%%02X" % byte for byte in raw
    )
