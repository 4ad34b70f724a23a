"""The receiving half of an HTTP/2 connection: each frame the peer sends, checked and acted on.

RFC 9113's rules for what a peer may send (sections 5-6) live here, apart from the sending
half and flow control in ``http2``: every frame type's size and stream rules, stream states,
header blocks and their HPACK decoding, SETTINGS, WINDOW_UPDATE and RST_STREAM, and the
per-second budgets that end a connection which floods (``http2_checks.FrameBudget``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import hpack

from modelhost.transport.hpack_encoder import Header
from modelhost.transport.http2_checks import FrameBudget, malformed_request, malformed_trailers
from modelhost.transport.http2_frames import (
    ACK,
    COMPRESSION_ERROR,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    END_HEADERS,
    END_STREAM,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    GOAWAY,
    GOAWAY_PAYLOAD,
    HEADERS,
    MAX_WINDOW,
    PADDED,
    PING,
    PRIORITY,
    PRIORITY_FLAG,
    PROTOCOL_ERROR,
    PUSH_PROMISE,
    REFUSED_STREAM,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_FRAME_SIZE,
    STREAM_CLOSED,
    WINDOW_UPDATE,
    WORD,
    ProtocolError,
    StreamError,
    frame,
    unpad,
)

if TYPE_CHECKING:
    import asyncio
    from collections import deque

    from modelhost.settings import Http2Limits

__all__ = ["FrameReceiver"]

logger = logging.getLogger("modelhost.server")

# A window we opened is topped up once this much of it has been used.
_REFILL = 2**30
_DECODED_CACHE = 64


class FrameReceiver:
    """Acts on received frames for :class:`~modelhost.transport.http2.H2Connection`.

    A mixin: the connection owns the state named below and the sending side; this class
    reads and changes that state as frames arrive, and calls the connection's hooks.
    """

    if TYPE_CHECKING:
        client_side: bool
        stream_window: int
        limits: Http2Limits
        transport: asyncio.Transport | None
        _loop: asyncio.AbstractEventLoop | None
        _timer: asyncio.TimerHandle | None
        _settings_pending: bool
        _decoder: hpack.Decoder
        _decoded: dict[bytes, list[Header]]
        _header_block: bytearray | None
        _header_stream: int
        _header_flags: int
        _header_error: StreamError | None
        peer_initial_window: int
        peer_max_frame: int
        peer_max_streams: int | None
        send_window: int
        stream_windows: dict[int, int]
        _pending: dict[int, deque[tuple[bytes | memoryview, int]]]
        _received: int
        _stream_received: dict[int, int]
        _withheld: set[int]
        _peer_open: set[int]
        last_peer_stream: int
        _last_local_stream: int
        _reset_sent: dict[int, None]
        _pings: FrameBudget
        _settings_budget: FrameBudget
        _resets: FrameBudget
        _empty: FrameBudget

        def on_headers(self, stream: int, headers: list[Header], end: bool) -> None: ...
        def on_data(self, stream: int, data: bytes, end: bool) -> None: ...
        def on_reset(self, stream: int, code: int) -> None: ...
        def on_goaway(self, last_stream: int, code: int) -> None: ...
        def reset(self, stream: int, code: int) -> None: ...
        def forget(self, stream: int) -> None: ...
        def _emit(self, data: bytes) -> None: ...
        def _flush(self) -> None: ...
        def _cancel_timer(self) -> None: ...
        def _arm_idle(self) -> None: ...
        def _header_expired(self) -> None: ...

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._header_block is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "a header block was interrupted")
        if self._settings_pending and kind != SETTINGS:
            raise ProtocolError(PROTOCOL_ERROR, "the first frame was not SETTINGS")
        if kind == DATA:
            self._data(flags, stream, payload)
        elif kind == HEADERS:
            self._headers(flags, stream, payload)
        elif kind == CONTINUATION:
            if self._header_block is None or stream != self._header_stream:
                raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            if not payload and not flags & END_HEADERS:
                self._spend(self._empty, "empty frames")
            self._header_block += payload
            if len(self._header_block) > self.limits.max_header_list_bytes:
                raise ProtocolError(ENHANCE_YOUR_CALM, "header block too large")
            if flags & END_HEADERS:
                self._header_flags |= END_HEADERS
                self._headers_complete()
        elif kind == SETTINGS:
            self._settings_frame(flags, stream, payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream, payload)
        elif kind == PING:
            if stream:
                raise ProtocolError(PROTOCOL_ERROR, "PING on a stream")
            if len(payload) != 8:
                raise ProtocolError(FRAME_SIZE_ERROR, "PING of the wrong size")
            if not flags & ACK:
                self._spend(self._pings, "PING")
                self._emit(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            self._reset_frame(stream, payload)
        elif kind == GOAWAY:
            if stream:
                raise ProtocolError(PROTOCOL_ERROR, "GOAWAY on a stream")
            if len(payload) < 8:
                raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY too short")
            last, code = GOAWAY_PAYLOAD.unpack_from(payload)
            self.on_goaway(last & MAX_WINDOW, code)
        elif kind == PRIORITY:
            if not stream:
                raise ProtocolError(PROTOCOL_ERROR, "PRIORITY on stream 0")
            self._spend(self._empty, "PRIORITY")
            if len(payload) != 5:
                raise StreamError(stream, FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE, which we disabled")
        else:  # unknown frame types are ignored, as the protocol asks, within a budget
            self._spend(self._empty, "frames of unknown types")

    def _spend(self, budget: FrameBudget, what: str) -> None:
        assert self._loop is not None
        if not budget.spend(self._loop.time()):
            raise ProtocolError(ENHANCE_YOUR_CALM, f"more than {budget.limit} {what} a second")

    def _idle_stream(self, stream: int) -> bool:
        """Whether ``stream`` was never opened (section 5.1: "idle")."""
        if self.client_side:
            return stream > self._last_local_stream or not stream % 2
        return stream > self.last_peer_stream

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        if not stream:
            raise ProtocolError(PROTOCOL_ERROR, "DATA on stream 0")
        size = len(payload)
        self._received += size
        if self._received >= _REFILL and self.transport is not None:
            self._emit(frame(WINDOW_UPDATE, 0, 0, WORD.pack(self._received)))
            self._received = 0
        if stream not in self._peer_open:
            self._not_open(stream, "DATA")
            return
        if stream in self.stream_windows:  # an open stream, not one we are done with
            used = self._stream_received.get(stream, 0) + size
            if used >= self.stream_window >> 1 and stream not in self._withheld:
                self._emit(frame(WINDOW_UPDATE, 0, stream, WORD.pack(used)))
                used = 0
            self._stream_received[stream] = used
        if flags & PADDED:
            payload = unpad(payload)
        end = bool(flags & END_STREAM)
        if end:
            self._peer_open.discard(stream)
        elif not size:
            self._spend(self._empty, "empty DATA frames")
        self.on_data(stream, payload, end)

    def _not_open(self, stream: int, what: str) -> None:
        """A frame on a stream the peer may not send on: ignored, or an error (section 5.1)."""
        if stream in self._reset_sent:
            return  # it crossed our RST_STREAM
        if self._idle_stream(stream):
            raise ProtocolError(PROTOCOL_ERROR, f"{what} on idle stream {stream}")
        if stream in self.stream_windows:  # half-closed (remote): the peer ended it
            raise StreamError(stream, STREAM_CLOSED, f"{what} after END_STREAM")
        if what == "HEADERS" and not self.client_side:
            # A stream below the last one opened: a new stream's id must go up (5.1.1).
            raise ProtocolError(PROTOCOL_ERROR, f"HEADERS on stream {stream}, not a new one")
        raise ProtocolError(STREAM_CLOSED, f"{what} on closed stream {stream}")

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = unpad(payload)
        self._header_error = None
        if flags & PRIORITY_FLAG:
            if len(payload) < 5:
                raise ProtocolError(FRAME_SIZE_ERROR, "HEADERS too short for its priority")
            if WORD.unpack_from(payload)[0] & MAX_WINDOW == stream:
                self._header_error = StreamError(stream, PROTOCOL_ERROR, "depends on itself")
            payload = payload[5:]
        self._header_block = bytearray(payload)
        self._header_stream = stream
        self._header_flags = flags
        if flags & END_HEADERS:
            self._headers_complete()
        elif self._loop is not None:
            self._cancel_timer()
            self._timer = self._loop.call_later(self.limits.header_timeout_s, self._header_expired)

    def _headers_complete(self) -> None:
        block, self._header_block = self._header_block, None
        assert block is not None
        data = bytes(block)
        stream, end = self._header_stream, bool(self._header_flags & END_STREAM)
        # Decoded whatever happens next: the peer's encoder has changed the table already.
        headers = self._decoded.get(data)
        fresh = headers is None
        if headers is None:
            headers = self._decode(data)
        if self._header_error is not None:
            raise self._header_error
        if stream in self._peer_open:  # the peer's trailers, or the first answer's headers
            if self.client_side:
                if end:
                    self._peer_open.discard(stream)
            else:
                if not end:
                    raise StreamError(stream, PROTOCOL_ERROR, "trailers without END_STREAM")
                why = malformed_trailers(headers) if fresh else None
                if why is not None:
                    raise StreamError(stream, PROTOCOL_ERROR, f"malformed trailers: {why}")
                self._peer_open.discard(stream)
            self.on_headers(stream, headers, end)
            return
        if self.client_side or stream <= self.last_peer_stream:
            self._not_open(stream, "HEADERS")
            return
        if not stream % 2:
            raise ProtocolError(PROTOCOL_ERROR, f"a client opened even stream {stream}")
        self.last_peer_stream = stream
        why = malformed_request(headers) if fresh else None
        if why is not None:
            self._decoded.pop(data, None)
            self.reset(stream, PROTOCOL_ERROR)
            logger.info("HTTP/2 stream %s refused: malformed request (%s)", stream, why)
            return
        if len(self.stream_windows) >= self.limits.max_concurrent_streams:
            # A stream refused costs its header block's decoding and comes to nothing, as
            # one the client resets: the same budget.
            self._spend(self._resets, "streams reset or refused")
            self.reset(stream, REFUSED_STREAM)
            return
        if not end:
            self._peer_open.add(stream)
        self.stream_windows[stream] = self.peer_initial_window
        self.on_headers(stream, headers, end)

    def _decode(self, block: bytes) -> list[Header]:
        """Decode ``block``, remembering the result while the dynamic table stays as it is.

        A peer sends the same block call after call (gRPC's answers and trailers, a client's
        fixed headers); the same bytes against the same table decode the same, so only a
        block that changes the table (or a new block) costs a decode (and a check).
        """
        table = self._decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:
            # HeaderTuples are (bytes, bytes) tuples; never-indexed ones stay so when re-sent.
            headers = cast("list[Header]", self._decoder.decode(block, raw=True))
        except hpack.OversizedHeaderListError:
            raise ProtocolError(ENHANCE_YOUR_CALM, "header list too large") from None
        except hpack.HPACKError as exc:
            raise ProtocolError(COMPRESSION_ERROR, f"cannot decode a header block: {exc}") from None
        after = (len(entries), entries[0] if entries else None, table.maxsize)
        if after[0] != before[0] or after[1] is not before[1] or after[2] != before[2]:
            self._decoded.clear()
        elif len(self._decoded) < _DECODED_CACHE:
            self._decoded[block] = headers
        return headers

    def _settings_frame(self, flags: int, stream: int, payload: bytes) -> None:
        if stream:
            raise ProtocolError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise ProtocolError(FRAME_SIZE_ERROR, "a SETTINGS acknowledgement with a payload")
            return
        if self._settings_pending:
            self._settings_pending = False
            if not self.client_side:
                self._cancel_timer()
                self._arm_idle()
        self._spend(self._settings_budget, "SETTINGS")
        self._settings(payload)

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        for offset in range(0, len(payload), 6):
            key, value = SETTING.unpack_from(payload, offset)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.stream_windows:
                    self.stream_windows[stream] += delta
                    if self.stream_windows[stream] > MAX_WINDOW:
                        raise ProtocolError(FLOW_CONTROL_ERROR, "a stream window too large")
            elif key == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ProtocolError(PROTOCOL_ERROR, "invalid SETTINGS_MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif key == SETTINGS_MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
            elif key == SETTINGS_ENABLE_PUSH and value > 1:
                raise ProtocolError(PROTOCOL_ERROR, "invalid SETTINGS_ENABLE_PUSH")
        self._emit(frame(SETTINGS, ACK, 0))
        self._flush()

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = WORD.unpack(payload)[0] & MAX_WINDOW
        if stream == 0:
            if not increment:
                raise ProtocolError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self.send_window += increment
            if self.send_window > MAX_WINDOW:
                raise ProtocolError(FLOW_CONTROL_ERROR, "connection window past 2^31-1")
        elif stream in self.stream_windows:
            if not increment:
                raise StreamError(stream, PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            window = self.stream_windows[stream] + increment
            if window > MAX_WINDOW:
                raise StreamError(stream, FLOW_CONTROL_ERROR, "stream window past 2^31-1")
            self.stream_windows[stream] = window
        else:
            if self._idle_stream(stream):
                raise ProtocolError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {stream}")
            return  # a closed stream's: allowed, and nothing to do
        if self._pending:
            self._flush()

    def _reset_frame(self, stream: int, payload: bytes) -> None:
        if not stream:
            raise ProtocolError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if self._idle_stream(stream):
            raise ProtocolError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream}")
        self._spend(self._resets, "streams reset or refused")
        self._peer_open.discard(stream)
        known = stream in self.stream_windows
        self.forget(stream)
        if known:
            self.on_reset(stream, WORD.unpack(payload)[0])
