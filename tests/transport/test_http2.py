"""The relay's HTTP/2 connection, driven frame by frame by a raw client over loopback."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import pytest
from h2_peer import FakeTransport, Peer

from modelhost.transport import http2
from modelhost.transport import http2_frames as wire
from modelhost.transport.http2 import H2Connection, Header
from modelhost.transport.http2_frames import frame


class Recorder(H2Connection):
    """A server-side connection that records what its streams receive."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, int, object, bool]] = []
        self.changed = asyncio.Event()

    def on_headers(self, stream: int, headers: list[Header], end: bool) -> None:
        self.open_stream(stream)
        self.events.append(("headers", stream, headers, end))
        self.changed.set()

    def on_data(self, stream: int, data: bytes, end: bool) -> None:
        self.events.append(("data", stream, data, end))
        self.changed.set()

    def on_reset(self, stream: int, code: int) -> None:
        self.events.append(("reset", stream, code, True))
        self.changed.set()


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Recorder, Peer]]:
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder())
        return made[-1]

    server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PREFACE + frame(wire.SETTINGS, 0, 0))
    peer = Peer(reader, writer)
    flags, _, settings = await peer.expect(wire.SETTINGS)
    assert flags == 0
    assert (wire.SETTINGS_INITIAL_WINDOW_SIZE, 2**31 - 1) in [
        struct.unpack_from(">HL", settings, i) for i in range(0, len(settings), 6)
    ]
    yield made[0], peer
    writer.close()
    server.close()
    await server.wait_closed()


async def wait_events(connection: Recorder, count: int) -> None:
    while len(connection.events) < count:
        connection.changed.clear()
        await asyncio.wait_for(connection.changed.wait(), 5)


async def test_ping_and_settings_are_acknowledged(pair: tuple[Recorder, Peer]) -> None:
    _, peer = pair
    peer.send(wire.PING, 0, 0, b"12345678")
    flags, _, payload = await peer.expect(wire.PING)
    assert (flags, payload) == (wire.ACK, b"12345678")
    peer.send(wire.SETTINGS, 0, 0, struct.pack(">HL", wire.SETTINGS_MAX_FRAME_SIZE, 32768))
    flags, _, payload = await peer.expect(wire.SETTINGS)
    assert (flags, payload) == (wire.ACK, b"")


async def test_continuations_and_padding_are_undone(pair: tuple[Recorder, Peer]) -> None:
    connection, peer = pair
    block = peer.request("/a/b", ("x-long", "v" * 100))
    peer.send(wire.HEADERS, 0, 1, block[:10])
    peer.send(wire.CONTINUATION, wire.END_HEADERS, 1, block[10:])
    peer.send(wire.DATA, wire.PADDED | wire.END_STREAM, 1, b"\x03hello\x00\x00\x00")
    await wait_events(connection, 2)

    kind, stream, headers, end = connection.events[0]
    assert (kind, stream, end) == ("headers", 1, False)
    assert (b":path", b"/a/b") in headers  # type: ignore[operator]
    assert connection.events[1] == ("data", 1, b"hello", True)


async def test_data_waits_for_the_peers_window_and_trailers_keep_their_place(
    pair: tuple[Recorder, Peer],
) -> None:
    connection, peer = pair
    # The peer allows 10 bytes per stream.
    peer.send(wire.SETTINGS, 0, 0, struct.pack(">HL", wire.SETTINGS_INITIAL_WINDOW_SIZE, 10))
    await peer.expect(wire.SETTINGS)
    peer.send(wire.HEADERS, wire.END_HEADERS, 1, peer.request())
    await wait_events(connection, 1)

    connection.send_data(1, b"0123456789abcdef", False)
    connection.send_headers(1, [(b"grpc-status", b"0")], True)
    flags, _, payload = await peer.expect(wire.DATA)
    assert (flags, payload) == (0, b"0123456789")
    assert connection.pending_bytes == 6

    peer.send(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 100))
    flags, _, payload = await peer.expect(wire.DATA)
    assert (flags, payload) == (0, b"abcdef")
    flags, stream, block = await peer.expect(wire.HEADERS)
    assert flags & wire.END_STREAM
    assert stream == 1
    assert peer.decoder.decode(block) == [("grpc-status", "0")]
    assert connection.pending_bytes == 0


async def test_a_bad_preface_ends_the_connection_with_goaway() -> None:
    server = await asyncio.get_running_loop().create_server(Recorder, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    peer = Peer(reader, writer)

    _, _, payload = await peer.expect(wire.GOAWAY)

    assert struct.unpack_from(">LL", payload)[1] == wire.PROTOCOL_ERROR
    assert await asyncio.wait_for(reader.read(), 5) == b""  # and closed
    writer.close()
    server.close()
    await server.wait_closed()


async def test_a_reset_stream_drops_its_waiting_data(pair: tuple[Recorder, Peer]) -> None:
    connection, peer = pair
    peer.send(wire.SETTINGS, 0, 0, struct.pack(">HL", wire.SETTINGS_INITIAL_WINDOW_SIZE, 0))
    await peer.expect(wire.SETTINGS)
    peer.send(wire.HEADERS, wire.END_HEADERS, 3, peer.request())
    await wait_events(connection, 1)
    connection.send_data(3, b"x" * 1000, True)
    assert connection.pending_bytes == 1000

    peer.send(wire.RST_STREAM, 0, 3, struct.pack(">L", wire.CANCEL))
    await wait_events(connection, 2)

    assert connection.events[1] == ("reset", 3, wire.CANCEL, True)
    assert connection.pending_bytes == 0


async def test_a_congested_connection_pauses_its_sender_until_it_drains(
    pair: tuple[Recorder, Peer],
) -> None:
    connection, peer = pair
    sender = Recorder()
    paused: list[str] = []

    class Transport:
        def pause_reading(self) -> None:
            paused.append("pause")

        def resume_reading(self) -> None:
            paused.append("resume")

    sender.transport = Transport()  # type: ignore[assignment]
    peer.send(wire.SETTINGS, 0, 0, struct.pack(">HL", wire.SETTINGS_INITIAL_WINDOW_SIZE, 0))
    await peer.expect(wire.SETTINGS)
    peer.send(wire.HEADERS, wire.END_HEADERS, 1, peer.request())
    await wait_events(connection, 1)

    connection.send_data(1, b"x" * (http2._HIGH_WATER + 1), False)
    assert connection.congested
    connection.hold(sender)
    connection.hold(sender)  # once per sender
    assert paused == ["pause"]

    peer.send(wire.WINDOW_UPDATE, 0, 1, struct.pack(">L", 2**31 - 1))
    await peer.expect(wire.DATA)  # sent once the window opened
    assert not connection.congested
    assert paused == ["pause", "resume"]


async def test_a_connection_acts_on_a_bounded_number_of_frames_per_turn() -> None:
    # The event loop may hand over a socket's bytes many reads in a row: past
    # _FRAMES_PER_TURN frames the connection stops reading and lets the others run.
    connection = Recorder()
    transport = FakeTransport()
    connection.connection_made(transport)  # type: ignore[arg-type]
    updates = 3 * http2._FRAMES_PER_TURN
    one = frame(wire.WINDOW_UPDATE, 0, 0, struct.pack(">L", 1))
    connection.data_received(wire.PREFACE + frame(wire.SETTINGS, 0, 0) + one * updates)

    start = wire.DEFAULT_WINDOW
    assert connection.send_window == start + http2._FRAMES_PER_TURN - 1  # SETTINGS was one
    assert transport.paused
    for _ in range(10):
        if not transport.paused:
            break
        await asyncio.sleep(0)
    assert connection.send_window == start + updates
    assert not transport.paused
