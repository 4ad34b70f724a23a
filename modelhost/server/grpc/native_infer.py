"""``ModelInfer`` answered on the relay's own HTTP/2 connection, without grpc.aio.

grpc.aio spends more of a core on each call (~190 µs here, before a handler runs) than
decoding, batching, predicting and encoding an iris row cost together; with it, a
batching server could not reach 85% of an empty grpc.aio server's rate (bench/RESULTS.md,
runs 6 and 7). So a model server's gRPC port is the relay (``relay``), and the hottest
method is answered where its bytes arrive: the one request message is decoded with the
generated protobuf class, run through ``InferenceServicer.infer_message`` (what the
grpc.aio servicer runs too), and the answer, status and trailers are written here. What
grpc.aio would do for the method is done here as well: the deadline (``grpc-timeout``),
the message size limit both ways, cancellation when the client resets, error codes from
``modelhost.errors``, the same metrics. A compressed call is not taken: the relay passes
it on to grpc.aio, which decompresses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from modelhost import errors
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol.grpc_routing import SERVICE
from modelhost.server.grpc.servicer import InferenceServicer, log_unexpected
from modelhost.transport.grpc_call import parse_timeout, send_message, send_status

if TYPE_CHECKING:
    from modelhost.transport.grpc_relay import LocalCall, LocalCalls, RelayClient
    from modelhost.transport.http2 import Header

__all__ = ["NativeInfer", "native_calls"]

logger = logging.getLogger("modelhost.server")

INFER_PATH = SERVICE + b"ModelInfer"

# Request headers that are the transport's or gRPC's own, not the caller's metadata (what
# grpc.aio's ``invocation_metadata`` leaves out, too).
_NOT_METADATA = frozenset(
    {b"te", b"content-type", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding"}
)


def native_calls(servicer: InferenceServicer, max_message_bytes: int) -> LocalCalls:
    """The relay's ``local`` hook: uncompressed ``ModelInfer`` calls are answered here."""

    def local(client: RelayClient, stream: int, headers: list[Header]) -> LocalCall | None:
        path = b""
        timeout = None
        for name, value in headers:
            if name == b":path":
                path = value
            elif name == b"grpc-encoding" and value != b"identity":
                return None
            elif name == b"grpc-timeout":
                timeout = parse_timeout(value)
        if path != INFER_PATH:
            return None
        return NativeInfer(servicer, max_message_bytes, client, stream, headers, timeout)

    return local


class NativeInfer:
    """One ``ModelInfer`` call: its request message in, its answer and status out."""

    __slots__ = (
        "_parts",
        "_size",
        "_task",
        "_timer",
        "client",
        "done",
        "headers",
        "limit",
        "servicer",
        "stream",
        "timeout",
    )

    def __init__(
        self,
        servicer: InferenceServicer,
        limit: int,
        client: RelayClient,
        stream: int,
        headers: list[Header],
        timeout: float | None,
    ) -> None:
        self.servicer = servicer
        self.limit = limit
        self.client = client
        self.stream = stream
        self.headers = headers
        self.timeout = timeout  # seconds, from grpc-timeout
        self.done = False
        self._parts: list[bytes] = []
        self._size = 0
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- from the client -----------------------------------------------------------------

    def begin(self, end: bool) -> None:
        guard = self.servicer.guard
        if guard is not None:
            # Who is calling is known from the headers: a stranger's message is not read.
            # The scope (which model) is checked in infer_message, once the message is here.
            authorization = next((v for k, v in self.headers if k == b"authorization"), None)
            try:
                guard.authenticate(authorization)
            except errors.ModelhostError as exc:
                self.answer(grpc.StatusCode[exc.grpc_status], errors.error_message(exc))
                return
        if self.timeout is not None:
            self._timer = asyncio.get_running_loop().call_later(self.timeout, self._expire)
        if end:
            self.client_data(b"", True)

    def client_data(self, data: bytes, end: bool) -> None:
        if self.done or self._task is not None:
            return
        if data:
            self._parts.append(data)
            self._size += len(data)
            if self._size >= 5 and not self._fits():
                return
        if end:
            self._dispatch()

    def client_reset(self) -> None:
        """The client cancelled the call or went away: so does the model's work for it."""
        if not self.done:
            self._finish()

    def stop(self, why: str) -> None:
        """The server is stopping and the grace period is over."""
        self.answer(grpc.StatusCode.UNAVAILABLE, why)

    def _fits(self) -> bool:
        """Whether what came so far can be one message within the limit (else answered).

        Checked as data arrives, so that neither an oversized message nor bytes past the
        one message a unary call may carry are held in memory until the stream ends.
        """
        prefix = self._parts[0] if len(self._parts[0]) >= 5 else b"".join(self._parts)
        size = int.from_bytes(prefix[1:5], "big")
        if size > self.limit:
            # grpc.aio's words, so that a client sees the same either way.
            message = f"Received message larger than max ({size} vs. {self.limit})"
            self.answer(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
            return False
        if self._size > 5 + size:
            self._too_much(size)
            return False
        return True

    def _too_much(self, size: int) -> None:
        self.answer(
            grpc.StatusCode.INTERNAL,
            "ModelInfer takes exactly one request message; the stream held "
            f"{self._size - 5} bytes after a prefix announcing {size}.",
        )

    def _dispatch(self) -> None:
        data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
        self._parts = []
        if len(data) < 5:
            self.answer(
                grpc.StatusCode.INTERNAL, "ModelInfer takes one request message; none came."
            )
            return
        if data[0]:
            # A compressed message under ``grpc-encoding: identity`` (or none): gRPC's rule.
            self.answer(grpc.StatusCode.INTERNAL, "A compressed message without grpc-encoding.")
            return
        size = int.from_bytes(data[1:5], "big")
        if len(data) != 5 + size:
            self._too_much(size)  # or too little: the message was cut short
            return
        try:
            message = pb.ModelInferRequest.FromString(data[5:])
        except DecodeError as exc:
            self.answer(grpc.StatusCode.INVALID_ARGUMENT, f"Not a ModelInferRequest message: {exc}")
            return
        self._task = self.client.relay.spawn(self._run(message))

    # -- running -------------------------------------------------------------------------

    async def _run(self, message: Any) -> None:
        servicer = self.servicer
        started = time.perf_counter()
        servicer.in_flight.inc()
        status = "OK"
        try:
            response = await servicer.infer_message(message, self._metadata())
            payload = response.SerializeToString()
        except asyncio.CancelledError:
            status = "CANCELLED"  # the client reset, the deadline passed or the server stops
            raise
        except Exception as exc:
            status = errors.grpc_status_name(exc)
            log_unexpected(exc, "ModelInfer")
            self.answer(grpc.StatusCode[status], errors.error_message(exc))
        else:
            if len(payload) > self.limit:
                status = "RESOURCE_EXHAUSTED"
                text = f"Sent message larger than max ({len(payload)} vs. {self.limit})"
                self.answer(grpc.StatusCode.RESOURCE_EXHAUSTED, text)
            else:
                self._respond(payload)
        finally:
            servicer.in_flight.dec()
            servicer.observe(message.model_name, "infer", status, started)

    def _metadata(self) -> dict[str, str]:
        """The caller's metadata, as the grpc.aio servicer hands it to the model."""
        metadata = {}
        for name, value in self.headers:
            if name[:1] == b":" or name in _NOT_METADATA or name.endswith(b"-bin"):
                continue
            metadata[name.decode("latin-1")] = value.decode("latin-1")
        return metadata

    # -- answering -----------------------------------------------------------------------

    def _respond(self, payload: bytes) -> None:
        if self.done:
            return
        send_message(self.client, self.stream, payload)
        self._finish()

    def answer(self, code: grpc.StatusCode, message: str) -> None:
        """End the call with ``code`` (trailers only: no answer was sent before)."""
        if self.done:
            return
        send_status(self.client, self.stream, code, message, with_headers=True)
        self._finish()

    def _expire(self) -> None:
        self._timer = None
        self.answer(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _finish(self) -> None:
        self.done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self.client.end_call(self.stream)
