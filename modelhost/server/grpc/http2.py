"""One HTTP/2 connection of the gRPC relay: frames, settings, flow control, HPACK.

The relay terminates HTTP/2 on both sides (clients, targets) so that each call can go to
its own target, and a model server can answer ``ModelInfer`` without grpc.aio, which costs
~350 µs of Python per call on each side, more than a replica's whole answer. This module
is the part both sides share: reading frames, answering SETTINGS and PING, keeping the
peer's flow-control windows (data waits while a window is shut), and HPACK through the
``hpack`` library. What a stream means is the subclass's business (``relay``). Our own
receive windows are opened wide at once, so a peer never waits on us; the relay pauses
reading a sender instead, while whoever it writes to is congested.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Iterable
from typing import cast

import hpack

from modelhost.server.grpc.header_block import Header, encode_headers

__all__ = ["H2Connection", "Header", "ProtocolError"]

logger = logging.getLogger("modelhost.server")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9

END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# Error codes (RFC 9113, section 7).
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR = 0x6, 0x7, 0x8, 0x9
ENHANCE_YOUR_CALM = 0xB

_HEADER_TABLE_SIZE, _ENABLE_PUSH, _MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
_INITIAL_WINDOW_SIZE, _MAX_FRAME_SIZE = 0x4, 0x5

_MAX_WINDOW = 2**31 - 1
_DEFAULT_WINDOW = 65_535
_DEFAULT_FRAME = 16_384
# Frames we accept: the protocol's default, which every peer can send and receive, so data
# frames pass from one side to the other unsplit.
_OUR_MAX_FRAME = _DEFAULT_FRAME
# A window we opened is topped up once this much of it has been used.
_REFILL = 2**30
# Beyond this much unsent data a connection counts as congested and its senders pause.
_HIGH_WATER = 4 * 1024 * 1024
_LOW_WATER = 1024 * 1024
_MAX_HEADER_LIST = 256 * 1024
_DECODED_CACHE = 64

_FRAME_HEAD = struct.Struct(">HBBBL")
_SETTING = struct.Struct(">HL")
_WORD = struct.Struct(">L")
_GOAWAY = struct.Struct(">LL")


class ProtocolError(Exception):
    """The peer broke HTTP/2: the connection ends with GOAWAY and this code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _FRAME_HEAD.pack(size >> 8, size & 0xFF, kind, flags, stream) + payload


class H2Connection(asyncio.Protocol):
    """The framing, settings and windows of one connection; streams are the subclass's."""

    client_side = False  # True where we opened the connection (we send the preface)

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Frames written in one turn of the event loop go out in one write (one syscall).
        self._out: list[bytes] = []
        self.closed = False
        self._buffer = bytearray()
        self._preface_pending = not self.client_side
        self._decoder = hpack.Decoder(max_header_list_size=_MAX_HEADER_LIST)
        self._decoded: dict[bytes, list[Header]] = {}
        self._header_block: bytearray | None = None
        self._header_stream = 0
        self._header_flags = 0
        # The peer's windows and limits, which bound what we send.
        self.peer_initial_window = _DEFAULT_WINDOW
        self.peer_max_frame = _DEFAULT_FRAME
        self.peer_max_streams: int | None = None
        self.send_window = _DEFAULT_WINDOW
        self.stream_windows: dict[int, int] = {}
        self._pending: dict[int, deque[tuple[bytes | memoryview, int]]] = {}
        self.pending_bytes = 0
        self._forget_after_end: set[int] = set()
        # What the peer has used of the windows we opened, not yet topped up.
        self._received = 0
        self._stream_received: dict[int, int] = {}
        self._writing_paused = False
        self._pause_count = 0
        self._paused_senders: set[H2Connection] = set()

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._loop = asyncio.get_running_loop()
        transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        settings = _SETTING.pack(_INITIAL_WINDOW_SIZE, _MAX_WINDOW) + _SETTING.pack(_ENABLE_PUSH, 0)
        opening = [frame(SETTINGS, 0, 0, settings)]
        opening.append(frame(WINDOW_UPDATE, 0, 0, _WORD.pack(_MAX_WINDOW - _DEFAULT_WINDOW)))
        if self.client_side:
            opening.insert(0, PREFACE)
        transport.write(b"".join(opening))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        buffer = self._buffer
        buffer += data
        try:
            if self._preface_pending:
                if len(buffer) < len(PREFACE):
                    if not PREFACE.startswith(bytes(buffer)):
                        raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                    return
                if buffer[: len(PREFACE)] != PREFACE:
                    raise ProtocolError(PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                del buffer[: len(PREFACE)]
                self._preface_pending = False
            position, end = 0, len(buffer)
            view = memoryview(buffer)
            try:
                while end - position >= 9 and not self.closed:
                    high, low, kind, flags, stream = _FRAME_HEAD.unpack_from(buffer, position)
                    size = (high << 8) | low
                    if size > _OUR_MAX_FRAME:
                        raise ProtocolError(FRAME_SIZE_ERROR, f"a frame of {size} bytes")
                    if end - position - 9 < size:
                        break
                    start = position + 9
                    position = start + size
                    self._frame(kind, flags, stream & _MAX_WINDOW, bytes(view[start:position]))
            finally:
                view.release()
            del buffer[:position]
        except ProtocolError as exc:
            self.fail(exc.code, str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._release_senders()
        self.lost()

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._maybe_uncongested()

    # -- for subclasses ---------------------------------------------------------------

    def on_headers(self, stream: int, headers: list[Header], end: bool) -> None:
        raise NotImplementedError

    def on_data(self, stream: int, data: bytes, end: bool) -> None:
        raise NotImplementedError

    def on_reset(self, stream: int, code: int) -> None:
        raise NotImplementedError

    def on_goaway(self, last_stream: int, code: int) -> None:
        """The peer will take no stream above ``last_stream``."""

    def lost(self) -> None:
        """The connection is gone (closed by either side)."""

    # -- sending -------------------------------------------------------------------------

    def send_headers(self, stream: int, headers: Iterable[Header], end: bool) -> None:
        """A header block (split into CONTINUATIONs where the peer's frames are smaller)."""
        if self.closed:
            return
        block = encode_headers(headers)
        flags = END_STREAM if end else 0
        if self._pending.get(stream):
            # Trailers keep their place behind data that waits for a window.
            self._queue(stream, block, flags | _HEADER_ITEM)
            return
        self._write_headers(stream, block, flags)

    def _write_headers(self, stream: int, block: bytes | memoryview, flags: int) -> None:
        assert self.transport is not None
        limit = self.peer_max_frame
        if len(block) <= limit:
            self._emit(frame(HEADERS, flags | END_HEADERS, stream, bytes(block)))
        else:
            parts = [block[i : i + limit] for i in range(0, len(block), limit)]
            frames = [frame(HEADERS, flags, stream, bytes(parts[0]))]
            frames += [frame(CONTINUATION, 0, stream, bytes(part)) for part in parts[1:-1]]
            frames.append(frame(CONTINUATION, END_HEADERS, stream, bytes(parts[-1])))
            self._emit(b"".join(frames))
        if flags & END_STREAM:
            self._sent_end(stream)

    def send_data(self, stream: int, data: bytes | memoryview, end: bool) -> None:
        """Data on ``stream``, now as far as the peer's windows allow, the rest when they open."""
        if self.closed:
            return
        flags = END_STREAM if end else 0
        if self._pending.get(stream):
            self._queue(stream, data, flags)
            return
        rest = self._write_data(stream, data, end)
        if rest is not None:
            self._queue(stream, rest, flags)

    def _write_data(
        self, stream: int, data: bytes | memoryview, end: bool
    ) -> bytes | memoryview | None:
        """Send as much of ``data`` as the windows allow; what they do not, comes back."""
        size = len(data)
        window = min(self.send_window, self.stream_windows.get(stream, 0))
        if size <= window and size <= self.peer_max_frame:
            self.send_window -= size
            if stream in self.stream_windows:
                self.stream_windows[stream] -= size
            self._emit(frame(DATA, END_STREAM if end else 0, stream, bytes(data)))
            if end:
                self._sent_end(stream)
            return None
        view = memoryview(data)
        position = 0
        frames = []
        while position < size and window > 0:
            chunk = min(size - position, window, self.peer_max_frame)
            last = position + chunk == size
            flags = END_STREAM if end and last else 0
            frames.append(frame(DATA, flags, stream, bytes(view[position : position + chunk])))
            position += chunk
            window -= chunk
            self.send_window -= chunk
            self.stream_windows[stream] -= chunk
        if frames:
            self._emit(b"".join(frames))
        if position < size:
            return view[position:]
        if end:
            self._sent_end(stream)
        return None

    def _queue(self, stream: int, item: bytes | memoryview, flags: int) -> None:
        self._pending.setdefault(stream, deque()).append((item, flags))
        if not flags & _HEADER_ITEM:
            self.pending_bytes += len(item)

    def _flush(self) -> None:
        """Send what waited for a window, stream by stream, as far as the windows now allow."""
        for stream in list(self._pending):
            queue = self._pending[stream]
            while queue:
                item, flags = queue.popleft()
                if flags & _HEADER_ITEM:
                    self._write_headers(stream, item, flags & END_STREAM)
                    continue
                self.pending_bytes -= len(item)
                rest = self._write_data(stream, item, bool(flags & END_STREAM))
                if rest is not None:  # the window shut again: the rest keeps its place
                    queue.appendleft((rest, flags))
                    self.pending_bytes += len(rest)
                    break
            if not queue:
                self._pending.pop(stream, None)
            if self.send_window <= 0:
                break
        self._maybe_uncongested()

    def reset(self, stream: int, code: int) -> None:
        """End ``stream`` at once with RST_STREAM; data still waiting for it is dropped."""
        self.forget(stream)
        if not self.closed and self.transport is not None:
            self._emit(frame(RST_STREAM, 0, stream, _WORD.pack(code)))

    def close_stream(self, stream: int) -> None:
        """We are done with ``stream``: forget it once what waits for a window is sent."""
        if self._pending.get(stream):
            self._forget_after_end.add(stream)
        else:
            self.forget(stream)

    def forget(self, stream: int) -> None:
        """Drop the stream's windows and waiting data (both sides are done with it)."""
        self._forget_after_end.discard(stream)
        self.stream_windows.pop(stream, None)
        self._stream_received.pop(stream, None)
        queue = self._pending.pop(stream, None)
        if queue:
            data = [item for item, flags in queue if not flags & _HEADER_ITEM]
            self.pending_bytes -= sum(len(item) for item in data)
            self._maybe_uncongested()

    def goaway(self, last_stream: int, code: int = NO_ERROR, message: str = "") -> None:
        if not self.closed and self.transport is not None:
            payload = _GOAWAY.pack(last_stream, code) + message.encode("utf-8", "replace")
            self._emit(frame(GOAWAY, 0, 0, payload))

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``code``, then close."""
        logger.info("HTTP/2 connection error (%s): %s", code, message)
        self.goaway(0, code, message)
        self.close()

    def close(self) -> None:
        self._write_out()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True

    def _emit(self, data: bytes) -> None:
        if not self._out and self._loop is not None:
            self._loop.call_soon(self._write_out)
        self._out.append(data)

    def _write_out(self) -> None:
        out, self._out = self._out, []
        if out and not self.closed and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def open_stream(self, stream: int) -> None:
        """A stream either side opened: its send window starts at the peer's initial size."""
        self.stream_windows[stream] = self.peer_initial_window

    def _sent_end(self, stream: int) -> None:
        if stream in self._forget_after_end:
            self.forget(stream)

    # -- back-pressure -------------------------------------------------------------------

    @property
    def congested(self) -> bool:
        return self._writing_paused or self.pending_bytes > _HIGH_WATER

    def hold(self, sender: H2Connection) -> None:
        """Pause ``sender``'s reading until this connection has sent what it holds."""
        if sender in self._paused_senders or sender.closed:
            return
        self._paused_senders.add(sender)
        sender._pause_count += 1
        if sender._pause_count == 1 and sender.transport is not None:
            sender.transport.pause_reading()

    def _maybe_uncongested(self) -> None:
        if self._paused_senders and not self.congested:
            self._release_senders()

    def _release_senders(self) -> None:
        senders, self._paused_senders = self._paused_senders, set()
        for sender in senders:
            sender._pause_count -= 1
            if sender._pause_count == 0 and not sender.closed and sender.transport is not None:
                sender.transport.resume_reading()

    # -- receiving -----------------------------------------------------------------------

    def _frame(self, kind: int, flags: int, stream: int, payload: bytes) -> None:
        if self._header_block is not None and kind != CONTINUATION:
            raise ProtocolError(PROTOCOL_ERROR, "a header block was interrupted")
        if kind == DATA:
            self._data(flags, stream, payload)
        elif kind == HEADERS:
            self._headers(flags, stream, payload)
        elif kind == CONTINUATION:
            if self._header_block is None or stream != self._header_stream:
                raise ProtocolError(PROTOCOL_ERROR, "CONTINUATION without HEADERS")
            self._header_block += payload
            if len(self._header_block) > _MAX_HEADER_LIST:
                raise ProtocolError(PROTOCOL_ERROR, "header block too large")
            if flags & END_HEADERS:
                self._header_flags |= END_HEADERS
                self._headers_complete()
        elif kind == SETTINGS:
            if not flags & ACK:
                self._settings(payload)
        elif kind == WINDOW_UPDATE:
            self._window_update(stream, payload)
        elif kind == PING:
            if not flags & ACK and self.transport is not None:
                self._emit(frame(PING, ACK, 0, payload))
        elif kind == RST_STREAM:
            if len(payload) != 4:
                raise ProtocolError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
            self.forget(stream)
            self.on_reset(stream, _WORD.unpack(payload)[0])
        elif kind == GOAWAY:
            if len(payload) < 8:
                raise ProtocolError(FRAME_SIZE_ERROR, "GOAWAY too short")
            last, code = _GOAWAY.unpack_from(payload)
            self.on_goaway(last & _MAX_WINDOW, code)
        elif kind == PUSH_PROMISE:
            raise ProtocolError(PROTOCOL_ERROR, "PUSH_PROMISE, which we disabled")
        # PRIORITY and unknown frame types are ignored, as the protocol asks.

    def _data(self, flags: int, stream: int, payload: bytes) -> None:
        size = len(payload)
        self._received += size
        if self._received >= _REFILL and self.transport is not None:
            self._emit(frame(WINDOW_UPDATE, 0, 0, _WORD.pack(self._received)))
            self._received = 0
        if stream in self.stream_windows:  # an open stream, not one we are done with
            used = self._stream_received.get(stream, 0) + size
            if used >= _REFILL and self.transport is not None:
                self._emit(frame(WINDOW_UPDATE, 0, stream, _WORD.pack(used)))
                used = 0
            self._stream_received[stream] = used
        if flags & PADDED:
            payload = _unpad(payload)
        self.on_data(stream, payload, bool(flags & END_STREAM))

    def _headers(self, flags: int, stream: int, payload: bytes) -> None:
        if stream == 0:
            raise ProtocolError(PROTOCOL_ERROR, "HEADERS on stream 0")
        if flags & PADDED:
            payload = _unpad(payload)
        if flags & PRIORITY_FLAG:
            payload = payload[5:]
        self._header_block = bytearray(payload)
        self._header_stream = stream
        self._header_flags = flags
        if flags & END_HEADERS:
            self._headers_complete()

    def _headers_complete(self) -> None:
        block, self._header_block = self._header_block, None
        assert block is not None
        data = bytes(block)
        headers = self._decoded.get(data)
        if headers is None:
            headers = self._decode(data)
        self.on_headers(self._header_stream, headers, bool(self._header_flags & END_STREAM))

    def _decode(self, block: bytes) -> list[Header]:
        """Decode ``block``, remembering the result while the dynamic table stays as it is.

        A peer sends the same block call after call (gRPC's answers and trailers, a client's
        fixed headers); the same bytes against the same table decode the same, so only a
        block that changes the table (or a new block) costs a decode.
        """
        table = self._decoder.header_table
        entries = table.dynamic_entries
        before = (len(entries), entries[0] if entries else None, table.maxsize)
        try:
            # HeaderTuples are (bytes, bytes) tuples; never-indexed ones stay so when re-sent.
            headers = cast("list[Header]", self._decoder.decode(block, raw=True))
        except hpack.HPACKError as exc:
            raise ProtocolError(COMPRESSION_ERROR, f"cannot decode a header block: {exc}") from None
        after = (len(entries), entries[0] if entries else None, table.maxsize)
        if after[0] != before[0] or after[1] is not before[1] or after[2] != before[2]:
            self._decoded.clear()
        elif len(self._decoded) < _DECODED_CACHE:
            self._decoded[block] = headers
        return headers

    def _settings(self, payload: bytes) -> None:
        if len(payload) % 6:
            raise ProtocolError(FRAME_SIZE_ERROR, "SETTINGS of the wrong size")
        for offset in range(0, len(payload), 6):
            key, value = _SETTING.unpack_from(payload, offset)
            if key == _INITIAL_WINDOW_SIZE:
                if value > _MAX_WINDOW:
                    raise ProtocolError(FLOW_CONTROL_ERROR, "initial window too large")
                delta = value - self.peer_initial_window
                self.peer_initial_window = value
                for stream in self.stream_windows:
                    self.stream_windows[stream] += delta
            elif key == _MAX_FRAME_SIZE:
                if not _DEFAULT_FRAME <= value <= 2**24 - 1:
                    raise ProtocolError(PROTOCOL_ERROR, "invalid SETTINGS_MAX_FRAME_SIZE")
                self.peer_max_frame = value
            elif key == _MAX_CONCURRENT_STREAMS:
                self.peer_max_streams = value
        if self.transport is not None:
            self._emit(frame(SETTINGS, ACK, 0))
        self._flush()

    def _window_update(self, stream: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise ProtocolError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = _WORD.unpack(payload)[0] & _MAX_WINDOW
        if stream == 0:
            self.send_window += increment
        elif stream in self.stream_windows:
            self.stream_windows[stream] += increment
        else:
            return
        if self._pending:
            self._flush()


# Marks a queued header block (trailers behind data) apart from queued data.
_HEADER_ITEM = 0x100


def _unpad(payload: bytes) -> bytes:
    if not payload:
        raise ProtocolError(PROTOCOL_ERROR, "padded frame without a pad length")
    pad = payload[0]
    if pad >= len(payload):
        raise ProtocolError(PROTOCOL_ERROR, "padding longer than the frame")
    return payload[1 : len(payload) - pad]
