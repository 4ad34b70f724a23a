"""One HTTP/2 connection of the gRPC relay: frames, settings, flow control, HPACK.

The relay terminates HTTP/2 on both sides (clients, targets) so that each call can go to
its own target, and a model server can answer ``ModelInfer`` without grpc.aio, which costs
~350 µs of Python per call on each side, more than a replica's whole answer. This module
is the part both sides share: reading frames, answering SETTINGS and PING, keeping the
peer's flow-control windows (data waits while a window is shut), and HPACK through the
``hpack`` library. What a stream means is the subclass's business (``relay``). Our own
receive windows are opened wide at once, so a peer never waits on us; the relay pauses
reading a sender instead, while whoever it writes to is congested.

The peer is not trusted: every rule of RFC 9113 sections 5-6 that ends a stream or the
connection is kept here (the error codes it names), a request's headers must be well
formed, and the ``Http2Limits`` bound what one connection may ask (streams, header sizes,
frame budgets, timeouts). python-hyper's ``h2`` would keep the same rules, at ~13-17x this
module's cost per call (bench/RESULTS.md, run 9).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from typing import cast

import hpack

from modelhost.settings import Http2Limits
from modelhost.transport.hpack_encoder import Header, encode_headers
from modelhost.transport.http2_checks import FrameBudget
from modelhost.transport.http2_frames import (
    CANCEL,
    CONTINUATION,
    DATA,
    DEFAULT_FRAME,
    DEFAULT_WINDOW,
    END_HEADERS,
    END_STREAM,
    FRAME_HEAD,
    FRAME_SIZE_ERROR,
    GOAWAY,
    GOAWAY_PAYLOAD,
    HEADERS,
    MAX_WINDOW,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    RST_STREAM,
    SETTING,
    SETTINGS,
    SETTINGS_ENABLE_PUSH,
    SETTINGS_INITIAL_WINDOW_SIZE,
    SETTINGS_MAX_CONCURRENT_STREAMS,
    SETTINGS_MAX_HEADER_LIST_SIZE,
    WINDOW_UPDATE,
    WORD,
    ProtocolError,
    StreamError,
    frame,
)
from modelhost.transport.http2_receive import FrameReceiver

__all__ = ["H2Connection", "Header"]

logger = logging.getLogger("modelhost.server")

# Frames we accept: the protocol's default, which every peer can send and receive, so data
# frames pass from one side to the other unsplit.
_OUR_MAX_FRAME = DEFAULT_FRAME
# Beyond this much unsent data a connection counts as congested and its senders pause.
_HIGH_WATER = 4 * 1024 * 1024
_LOW_WATER = 1024 * 1024
# Streams we reset whose late frames are still ignored (section 5.4.2: the peer may have
# sent them before our RST_STREAM reached it); older ones are just closed.
_RESETS_REMEMBERED = 1024
# Frames acted on in one turn of the event loop before the connection lets the others run:
# a gRPC call is two or three, so a client's pipelined calls pass in one turn.
_FRAMES_PER_TURN = 256
# Seconds a connection ended for an error is still read (and what comes dropped).
_LINGER = 1.0


class H2Connection(FrameReceiver, asyncio.Protocol):
    """The framing, settings and windows of one connection; streams are the subclass's."""

    client_side = False  # True where we opened the connection (we send the preface)
    # SETTINGS_INITIAL_WINDOW_SIZE we announce: what the peer may send on a stream before
    # we top its window up. Wide open by default; a subclass that relays what it receives
    # to someone who may stop reading lowers it, and withholds credit (``withhold``).
    stream_window = MAX_WINDOW

    def __init__(self, limits: Http2Limits | None = None) -> None:
        self.limits = limits = limits or Http2Limits()
        self.transport: asyncio.Transport | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # Frames written in one turn of the event loop go out in one write (one syscall).
        self._out: list[bytes] = []
        self._out_bytes = 0
        self.closed = False
        self._buffer = bytearray()
        self._preface_pending = not self.client_side
        self._settings_pending = True  # the peer's first frame must be SETTINGS
        self._decoder = hpack.Decoder(max_header_list_size=limits.max_header_list_bytes)
        self._decoded: dict[bytes, list[Header]] = {}
        self._header_block: bytearray | None = None
        self._header_stream = 0
        self._header_flags = 0
        self._header_error: StreamError | None = None
        # The peer's windows and limits, which bound what we send.
        self.peer_initial_window = DEFAULT_WINDOW
        self.peer_max_frame = DEFAULT_FRAME
        self.peer_max_streams: int | None = None
        self.send_window = DEFAULT_WINDOW
        self.stream_windows: dict[int, int] = {}
        self._pending: dict[int, deque[tuple[bytes | memoryview, int]]] = {}
        self.pending_bytes = 0
        self._forget_after_end: set[int] = set()
        # What the peer has used of the windows we opened, not yet topped up.
        self._received = 0
        self._stream_received: dict[int, int] = {}
        self._withheld: set[int] = set()
        self._writing_paused = False
        self._pause_count = 0
        self._paused_senders: set[H2Connection] = set()
        self._credit_waiters: dict[tuple[H2Connection, int], None] = {}
        # Stream states (section 5.1) as far as the peer's frames go: the streams on which
        # it may still send, the highest it opened (or we did), the ones we reset lately.
        self._peer_open: set[int] = set()
        self.last_peer_stream = 0
        self._last_local_stream = 0
        self._reset_sent: dict[int, None] = {}
        self._pings = FrameBudget(limits.pings_per_s)
        self._settings_budget = FrameBudget(limits.settings_per_s)
        self._resets = FrameBudget(limits.resets_per_s)
        self._empty = FrameBudget(limits.empty_frames_per_s)
        self._timer: asyncio.TimerHandle | None = None
        self._active = False  # frames came since the idle timer last looked
        self._turn_pending = False  # frames wait in the buffer for the next turn

    # -- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not derive from asyncio.Transport, but have its methods.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self._loop = loop = asyncio.get_running_loop()
        transport.set_write_buffer_limits(high=_HIGH_WATER, low=_LOW_WATER)
        limits = self.limits
        settings = b"".join(
            [
                SETTING.pack(SETTINGS_INITIAL_WINDOW_SIZE, self.stream_window),
                SETTING.pack(SETTINGS_ENABLE_PUSH, 0),
                SETTING.pack(SETTINGS_MAX_HEADER_LIST_SIZE, limits.max_header_list_bytes),
            ]
        )
        if not self.client_side:
            settings += SETTING.pack(SETTINGS_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams)
            self._timer = loop.call_later(limits.handshake_timeout_s, self._handshake_expired)
        opening = [frame(SETTINGS, 0, 0, settings)]
        opening.append(frame(WINDOW_UPDATE, 0, 0, WORD.pack(MAX_WINDOW - DEFAULT_WINDOW)))
        if self.client_side:
            opening.insert(0, PREFACE)
        transport.write(b"".join(opening))

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._active = True
        self._buffer += data
        if not self._turn_pending:
            self._read_frames()

    def _read_frames(self) -> None:
        """Act on the frames buffered, at most ``_FRAMES_PER_TURN`` of them in one turn of the
        event loop; past that, reading stops until the next turn, so that a peer that sends
        without pause (the event loop reads one socket up to 32 times in a row) cannot keep
        the others waiting."""
        buffer = self._buffer
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
            frames = 0
            view = memoryview(buffer)
            try:
                while end - position >= 9 and not self.closed:
                    if frames == _FRAMES_PER_TURN:
                        self._wait_a_turn()
                        break
                    high, low, kind, flags, stream = FRAME_HEAD.unpack_from(buffer, position)
                    size = (high << 8) | low
                    if size > _OUR_MAX_FRAME:
                        raise ProtocolError(FRAME_SIZE_ERROR, f"a frame of {size} bytes")
                    if end - position - 9 < size:
                        break
                    start = position + 9
                    position = start + size
                    frames += 1
                    payload = bytes(view[start:position])
                    try:
                        self._frame(kind, flags, stream & MAX_WINDOW, payload)
                    except StreamError as exc:
                        self.stream_error(exc.stream, exc.code, str(exc))
            finally:
                view.release()
            del buffer[:position]
        except ProtocolError as exc:
            self.fail(exc.code, str(exc))

    def _wait_a_turn(self) -> None:
        assert self._loop is not None
        assert self.transport is not None
        self._turn_pending = True
        self._pause_count += 1
        if self._pause_count == 1:
            self.transport.pause_reading()
        self._loop.call_soon(self._next_turn)

    def _next_turn(self) -> None:
        self._turn_pending = False
        if not self.closed:
            self._read_frames()  # may wait another turn: its own pause keeps reading off
        self._pause_count -= 1
        if self._pause_count == 0 and not self.closed and self.transport is not None:
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        self._release_senders()
        self._credit_waiters.clear()
        self.lost()

    def pause_writing(self) -> None:
        self._writing_paused = True
        if not self.client_side and self.transport is not None:
            # A client that does not read what we answer gets no more of its frames read:
            # otherwise answers (or PING acks) would pile up here without end.
            self._pause_count += 1
            if self._pause_count == 1:
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._writing_paused and not self.client_side:
            self._pause_count -= 1
            if self._pause_count == 0 and not self.closed and self.transport is not None:
                self.transport.resume_reading()
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
        if stream in self._peer_open:
            self._remember_reset(stream)
        self.forget(stream)
        if not self.closed and self.transport is not None:
            self._emit(frame(RST_STREAM, 0, stream, WORD.pack(code)))

    def stream_error(self, stream: int, code: int, message: str) -> None:
        """The peer broke the rules on ``stream``: it is reset, and its call told so."""
        logger.info("HTTP/2 stream %s error (%s): %s", stream, code, message)
        known = stream in self.stream_windows
        self.reset(stream, code)
        if known:
            self.on_reset(stream, code)

    def close_stream(self, stream: int) -> None:
        """We are done with ``stream``: forget it once what waits for a window is sent."""
        if self._pending.get(stream):
            self._forget_after_end.add(stream)
        else:
            self.forget(stream)

    def forget(self, stream: int) -> None:
        """Drop the stream's windows and waiting data (both sides are done with it).

        A stream the peer still sends on is reset, so that it stops (a server answered
        before the request ended, section 8.1; a client gave up on the answer).
        """
        if stream in self._peer_open:
            self._remember_reset(stream)
            if not self.closed and self.transport is not None:
                code = CANCEL if self.client_side else NO_ERROR
                self._emit(frame(RST_STREAM, 0, stream, WORD.pack(code)))
        self._forget_after_end.discard(stream)
        self.stream_windows.pop(stream, None)
        self._stream_received.pop(stream, None)
        self._withheld.discard(stream)
        queue = self._pending.pop(stream, None)
        if queue:
            data = [item for item, flags in queue if not flags & _HEADER_ITEM]
            self.pending_bytes -= sum(len(item) for item in data)
            self._maybe_uncongested()

    def _remember_reset(self, stream: int) -> None:
        self._peer_open.discard(stream)
        reset = self._reset_sent
        reset[stream] = None
        if len(reset) > _RESETS_REMEMBERED:
            del reset[next(iter(reset))]

    def goaway(self, last_stream: int, code: int = NO_ERROR, message: str = "") -> None:
        if not self.closed and self.transport is not None:
            payload = GOAWAY_PAYLOAD.pack(last_stream, code) + message.encode("utf-8", "replace")
            self._emit(frame(GOAWAY, 0, 0, payload))

    def fail(self, code: int, message: str) -> None:
        """A connection error: GOAWAY with ``code`` (and the last stream we took), then close.

        Closing a socket with unread bytes in it makes the kernel answer with a TCP reset,
        which can overtake the GOAWAY; so our side is shut first and what the peer still
        sends is read and dropped for a moment (a "lingering close"), then it is closed.
        """
        logger.info("HTTP/2 connection error (%s): %s", code, message)
        self.goaway(self.last_peer_stream, code, message)
        transport = self.transport
        if transport is None or self._loop is None or not transport.can_write_eof():
            self.close()
            return
        self._write_out()
        self.closed = True
        self._cancel_timer()
        transport.write_eof()
        self._loop.call_later(_LINGER, transport.close)

    def close(self) -> None:
        self._write_out()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        self.closed = True
        self._cancel_timer()

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
        if stream not in self.stream_windows:
            self.stream_windows[stream] = self.peer_initial_window
        if self.client_side and stream > self._last_local_stream:
            self._last_local_stream = stream
            self._peer_open.add(stream)

    def _sent_end(self, stream: int) -> None:
        if stream in self._forget_after_end:
            self.forget(stream)

    # -- timers --------------------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake_expired(self) -> None:
        self._timer = None
        if self._preface_pending or self._settings_pending:
            self.fail(PROTOCOL_ERROR, "no connection preface and SETTINGS in time")
        else:
            self._arm_idle()

    def _arm_idle(self) -> None:
        if self._loop is not None and not self.closed and not self.client_side:
            self._active = False
            self._timer = self._loop.call_later(self.limits.idle_timeout_s, self._idle_expired)

    def _idle_expired(self) -> None:
        self._timer = None
        if self._header_block is not None:
            self.fail(PROTOCOL_ERROR, "a header block was not finished in time")
        elif not self._active and not self.stream_windows and not self._pending:
            self.goaway(self.last_peer_stream, NO_ERROR, "idle")
            self.close()
        else:
            self._arm_idle()

    def _header_expired(self) -> None:
        self._timer = None
        if self._header_block is not None:
            self.fail(PROTOCOL_ERROR, "a header block was not finished in time")
        else:
            self._arm_idle()

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

    def wait_for_room(self, sender: H2Connection, stream: int) -> None:
        """Withhold ``sender``'s credit on ``stream`` until this connection has drained.

        Where ``sender`` is shared (a gateway's connection to a replica carries many clients'
        calls), pausing all of it for one slow reader would stall the others: instead that
        one stream's window is not topped up, and its sender stops on its own.
        """
        sender._withheld.add(stream)
        self._credit_waiters[(sender, stream)] = None

    def _maybe_uncongested(self) -> None:
        if (self._paused_senders or self._credit_waiters) and not self.congested:
            self._release_senders()

    def _release_senders(self) -> None:
        senders, self._paused_senders = self._paused_senders, set()
        for sender in senders:
            sender._pause_count -= 1
            if sender._pause_count == 0 and not sender.closed and sender.transport is not None:
                sender.transport.resume_reading()
        waiters, self._credit_waiters = self._credit_waiters, {}
        for sender, stream in waiters:
            sender._give_credit(stream)

    def _give_credit(self, stream: int) -> None:
        """Top up ``stream``'s window for what the peer has used of it (nothing withheld now)."""
        self._withheld.discard(stream)
        used = self._stream_received.get(stream, 0)
        if used and not self.closed and stream in self.stream_windows:
            self._stream_received[stream] = 0
            self._emit(frame(WINDOW_UPDATE, 0, stream, WORD.pack(used)))


# Marks a queued header block (trailers behind data) apart from queued data.
_HEADER_ITEM = 0x100
