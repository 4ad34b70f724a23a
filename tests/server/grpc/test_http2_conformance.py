"""RFC 9113 sections 5-6 on the gRPC port: each rule a peer can break, and the answer it gets.

A raw client (``h2_peer``) breaks one rule per test against a real model server's gRPC port
(the relay, with ``ModelInfer`` answered natively) and checks the error the RFC names: a
connection error ends with GOAWAY and that code, a stream error with RST_STREAM, and the
connection goes on. The limits are set small where a test needs to reach one.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import struct
from collections.abc import AsyncIterator

import pytest
from grpc_helpers import grpc_server
from h2_peer import INFER, Peer, connect, settings_of
from testmodels import EchoModel, SlowModel

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.settings import (
    Http2Limits,
    ServerSettings,
    add_server_arguments,
    settings_from_args,
)
from modelhost.transport import http2_frames as wire
from modelhost.transport.http2_frames import (
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    NO_ERROR,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STREAM_CLOSED,
)

END_STREAM, END_HEADERS, ACK = wire.END_STREAM, wire.END_HEADERS, wire.ACK
WORD = struct.Struct(">L")

SETTINGS = ServerSettings(
    grpc_max_concurrent_streams=4,
    grpc_pings_per_s=20,
    grpc_settings_per_s=20,
    grpc_resets_per_s=20,
    grpc_empty_frames_per_s=20,
    grpc_handshake_timeout_s=0.3,
    grpc_header_timeout_s=0.3,
    grpc_idle_timeout_s=0.5,
    grpc_max_connections=8,
)
LIMITS = SETTINGS.http2_limits()


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with grpc_server(EchoModel(), SlowModel(delay=2.0), settings=SETTINGS) as (_, bound):
        yield bound


@pytest.fixture
async def peer(port: int) -> AsyncIterator[Peer]:
    peer = await connect(port)
    yield peer
    peer.close()


def infer_message(model: str = "echo") -> bytes:
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    body = request.SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


async def answered(peer: Peer, stream: int) -> list[tuple[str, str]]:
    """The trailers that end ``stream``'s call (what a gRPC client reads for its status)."""
    while True:
        kind, flags, got, payload = await peer.next_frame()
        if kind == wire.HEADERS and got == stream and flags & END_STREAM:
            return [(k, v) for k, v in peer.decoder.decode(payload)]
        if kind == wire.HEADERS:
            peer.decoder.decode(payload)  # keep the table in step


async def call(peer: Peer, stream: int, model: str = "echo") -> list[tuple[str, str]]:
    peer.send(wire.HEADERS, END_HEADERS, stream, peer.grpc_request())
    peer.send(wire.DATA, END_STREAM, stream, infer_message(model))
    return await answered(peer, stream)


# -- settings we announce ------------------------------------------------------------------


async def test_the_server_announces_its_limits(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PREFACE + wire.frame(wire.SETTINGS, 0, 0))
    flags, _, payload = await Peer(reader, writer).expect(wire.SETTINGS)
    writer.close()
    assert flags == 0
    announced = settings_of(payload)
    assert announced[0x3] == LIMITS.max_concurrent_streams
    assert announced[0x6] == LIMITS.max_header_list_bytes
    assert announced[0x2] == 0  # no push


# -- PING, SETTINGS, GOAWAY: connection-level frames ---------------------------------------


async def test_a_ping_is_answered_with_the_same_8_bytes(peer: Peer) -> None:
    peer.send(wire.PING, 0, 0, b"abcdefgh")
    flags, _, payload = await peer.expect(wire.PING)
    assert (flags, payload) == (ACK, b"abcdefgh")


@pytest.mark.parametrize("size", [0, 7, 9, 64])
async def test_a_ping_of_another_length_is_a_frame_size_error(peer: Peer, size: int) -> None:
    peer.send(wire.PING, 0, 0, b"x" * size)
    assert (await peer.goaway())[1] == FRAME_SIZE_ERROR


async def test_a_ping_on_a_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.PING, 0, 1, b"abcdefgh")
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_settings_on_a_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.SETTINGS, 0, 1)
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_a_settings_ack_with_a_payload_is_a_frame_size_error(peer: Peer) -> None:
    peer.send(wire.SETTINGS, ACK, 0, struct.pack(">HL", 0x4, 10))
    assert (await peer.goaway())[1] == FRAME_SIZE_ERROR


async def test_enable_push_other_than_0_or_1_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.SETTINGS, 0, 0, struct.pack(">HL", 0x2, 2))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_the_first_frame_must_be_settings(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PREFACE + wire.frame(wire.PING, 0, 0, b"12345678"))
    peer = Peer(reader, writer)
    assert (await peer.goaway())[1] == PROTOCOL_ERROR
    writer.close()


async def test_a_goaway_on_a_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.GOAWAY, 0, 1, struct.pack(">LL", 0, 0))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_a_connection_error_names_the_last_stream_taken(peer: Peer) -> None:
    trailers = await call(peer, 1)
    assert ("grpc-status", "0") in trailers
    peer.send(wire.PING, 0, 0, b"short")
    assert await peer.goaway() == (1, FRAME_SIZE_ERROR)


# -- WINDOW_UPDATE --------------------------------------------------------------------------


async def test_a_connection_window_past_2_31_is_a_flow_control_error(peer: Peer) -> None:
    peer.send(wire.WINDOW_UPDATE, 0, 0, WORD.pack(2**31 - 1))
    assert (await peer.goaway())[1] == FLOW_CONTROL_ERROR


async def test_a_stream_window_past_2_31_resets_the_stream(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.WINDOW_UPDATE, 0, 1, WORD.pack(2**31 - 1))
    assert await peer.reset(1) == FLOW_CONTROL_ERROR
    assert ("grpc-status", "0") in await call(peer, 3)  # the connection goes on


async def test_a_window_update_of_0_on_the_connection_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.WINDOW_UPDATE, 0, 0, WORD.pack(0))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_a_window_update_of_0_on_a_stream_resets_it(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.WINDOW_UPDATE, 0, 1, WORD.pack(0))
    assert await peer.reset(1) == PROTOCOL_ERROR


async def test_a_window_update_on_an_idle_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.WINDOW_UPDATE, 0, 9, WORD.pack(100))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_a_window_update_of_the_wrong_size_is_a_frame_size_error(peer: Peer) -> None:
    peer.send(wire.WINDOW_UPDATE, 0, 0, b"\0\0\1")
    assert (await peer.goaway())[1] == FRAME_SIZE_ERROR


# -- DATA, RST_STREAM, HEADERS and stream states --------------------------------------------


async def test_data_after_end_stream_on_a_running_call_resets_it(peer: Peer) -> None:
    # The slow model keeps the call running (half-closed for the client) while more comes.
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.DATA, END_STREAM, 1, infer_message("slow"))
    peer.send(wire.DATA, 0, 1, b"more")
    assert await peer.reset(1) == STREAM_CLOSED
    assert ("grpc-status", "0") in await call(peer, 3)


async def test_data_on_a_closed_stream_is_a_stream_closed_error(peer: Peer) -> None:
    assert ("grpc-status", "0") in await call(peer, 1)
    peer.send(wire.DATA, 0, 1, b"late")
    assert (await peer.goaway())[1] == STREAM_CLOSED


async def test_data_on_an_idle_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.DATA, 0, 5, b"x")
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_data_on_stream_0_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.DATA, 0, 0, b"x")
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_rst_stream_on_stream_0_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.RST_STREAM, 0, 0, WORD.pack(0))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_rst_stream_on_an_idle_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.RST_STREAM, 0, 7, WORD.pack(0))
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_headers_on_an_even_stream_is_a_protocol_error(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS | END_STREAM, 2, peer.grpc_request())
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_stream_ids_may_not_go_down(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 5, peer.grpc_request())
    peer.send(wire.HEADERS, END_HEADERS, 3, peer.grpc_request())
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


async def test_a_priority_field_too_short_is_a_frame_size_error(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS | wire.PRIORITY_FLAG, 1, b"\0\0")
    assert (await peer.goaway())[1] == FRAME_SIZE_ERROR


async def test_a_priority_frame_of_the_wrong_size_resets_its_stream(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.PRIORITY, 0, 1, b"\0\0\0")
    assert await peer.reset(1) == FRAME_SIZE_ERROR


async def test_a_stream_that_depends_on_itself_is_reset(peer: Peer) -> None:
    block = WORD.pack(1) + b"\x10" + peer.grpc_request()
    peer.send(wire.HEADERS, END_HEADERS | wire.PRIORITY_FLAG, 1, block)
    assert await peer.reset(1) == PROTOCOL_ERROR


async def test_a_header_block_interrupted_is_a_protocol_error(peer: Peer) -> None:
    block = peer.grpc_request()
    peer.send(wire.HEADERS, 0, 1, block[:4])
    peer.send(wire.PING, 0, 0, b"12345678")
    assert (await peer.goaway())[1] == PROTOCOL_ERROR


# -- malformed requests (section 8.2-8.3): the stream is refused, the connection goes on ----


@pytest.mark.parametrize(
    "fields",
    [
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("Content-Type", "x")],
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("connection", "close")],
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("te", "gzip")],
        [(":method", "POST"), (":scheme", "http"), ("x", "1"), (":path", INFER)],
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), (":status", "200")],
        [(":method", "POST"), (":path", INFER)],
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("x", "a\nb")],
        [(":method", "POST"), (":scheme", "http"), (":path", INFER), ("bad name", "1")],
    ],
    ids=[
        "uppercase",
        "connection",
        "te",
        "pseudo-late",
        "response-pseudo",
        "no-scheme",
        "newline",
        "space-in-name",
    ],
)
async def test_a_malformed_request_is_refused(peer: Peer, fields: list[tuple[str, str]]) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, bytes(peer.encoder.encode(fields)))
    assert await peer.reset(1) == PROTOCOL_ERROR
    assert ("grpc-status", "0") in await call(peer, 3)


async def test_trailers_with_a_pseudo_header_are_refused(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.HEADERS, END_HEADERS | END_STREAM, 1, peer.encoder.encode([(":path", "/")]))
    assert await peer.reset(1) == PROTOCOL_ERROR


async def test_a_header_list_over_the_limit_ends_the_connection(peer: Peer) -> None:
    # 80 KB that HPACK cannot shrink (each field new), over the 64 KiB list limit.
    big = [(f"x-big-{i}", f"{i:04d}" * 1000) for i in range(20)]
    block = peer.request(INFER, *big)
    peer.send(wire.HEADERS, 0, 1, block[:16_000])
    for start in range(16_000, len(block), 16_000):
        last = start + 16_000 >= len(block)
        peer.send(wire.CONTINUATION, END_HEADERS if last else 0, 1, block[start : start + 16_000])
    assert (await peer.goaway())[1] == ENHANCE_YOUR_CALM


# -- streams and budgets --------------------------------------------------------------------


async def test_streams_past_max_concurrent_streams_are_refused(peer: Peer) -> None:
    for stream in (1, 3, 5, 7):  # the limit is 4: these stay open (no data yet)
        peer.send(wire.HEADERS, END_HEADERS, stream, peer.grpc_request())
    peer.send(wire.HEADERS, END_HEADERS, 9, peer.grpc_request())
    assert await peer.reset(9) == REFUSED_STREAM
    peer.send(wire.DATA, END_STREAM, 1, infer_message())  # one ends: room for another
    assert ("grpc-status", "0") in await answered(peer, 1)
    assert ("grpc-status", "0") in await call(peer, 11)


@pytest.mark.parametrize(
    "flood",
    ["ping", "settings", "reset", "empty-data", "priority", "unknown-type", "empty-continuation"],
)
async def test_a_flood_of_frames_ends_with_enhance_your_calm(peer: Peer, flood: str) -> None:
    for index in range(200):
        stream = 1 + 2 * index
        if flood == "ping":
            peer.send(wire.PING, 0, 0, WORD.pack(index) * 2)
        elif flood == "settings":
            peer.send(wire.SETTINGS, 0, 0)
        elif flood == "reset":  # rapid reset: a call begun and cancelled, again and again
            peer.send(wire.HEADERS, END_HEADERS, stream, peer.grpc_request())
            peer.send(wire.DATA, 0, stream, infer_message()[:10])
            peer.send(wire.RST_STREAM, 0, stream, WORD.pack(wire.CANCEL))
        elif flood == "empty-data":
            if index == 0:
                peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
            peer.send(wire.DATA, 0, 1)
        elif flood == "priority":
            peer.send(wire.PRIORITY, 0, stream, WORD.pack(0) + b"\x10")
        elif flood == "unknown-type":
            peer.send(0x42, 0, 0, b"x")
        else:
            if index == 0:
                peer.send(wire.HEADERS, 0, 1, peer.grpc_request())
            peer.send(wire.CONTINUATION, 0, 1)
    assert (await peer.goaway())[1] == ENHANCE_YOUR_CALM


# -- timeouts and connections ---------------------------------------------------------------


async def test_a_partial_preface_is_closed_after_the_handshake_timeout(port: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire.PREFACE[:10])
    _, code = await Peer(reader, writer).goaway(timeout=LIMITS.handshake_timeout_s + 5)
    assert code == PROTOCOL_ERROR
    writer.close()


async def test_an_unfinished_header_block_is_closed_after_the_header_timeout(peer: Peer) -> None:
    peer.send(wire.HEADERS, 0, 1, peer.grpc_request()[:5])
    assert (await peer.goaway(timeout=LIMITS.header_timeout_s + 5))[1] == PROTOCOL_ERROR


async def test_an_idle_connection_is_closed_with_no_error(peer: Peer) -> None:
    assert ("grpc-status", "0") in await call(peer, 1)
    assert await peer.goaway(timeout=2 * LIMITS.idle_timeout_s + 5) == (1, NO_ERROR)


async def test_a_connection_with_a_call_running_is_not_idle(peer: Peer) -> None:
    peer.send(wire.HEADERS, END_HEADERS, 1, peer.grpc_request())
    peer.send(wire.DATA, END_STREAM, 1, infer_message("slow"))  # 2 s, four idle timeouts
    assert ("grpc-status", "0") in await answered(peer, 1)


async def test_connections_past_the_cap_are_closed_at_once(port: int) -> None:
    peers = [await connect(port) for _ in range(LIMITS.max_connections)]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(wire.PREFACE + wire.frame(wire.SETTINGS, 0, 0))
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        peers.pop().close()  # one goes: a new one is taken again
        await asyncio.sleep(0.1)
        again = await connect(port)
        assert ("grpc-status", "0") in await call(again, 1)
        again.close()
    finally:
        for each in peers:
            each.close()


def test_the_limits_come_from_flags_and_the_environment() -> None:
    parser = argparse.ArgumentParser()
    add_server_arguments(parser)
    flags = parser.parse_args(["--grpc_max_concurrent_streams", "7", "--grpc-idle-timeout-s", "9"])
    environ = {"MODELHOST_GRPC_MAX_CONNECTIONS": "11", "MODELHOST_GRPC_PINGS_PER_S": "5"}
    limits = settings_from_args(flags, ServerSettings.from_env(environ)).http2_limits()
    assert (limits.max_concurrent_streams, limits.idle_timeout_s) == (7, 9.0)
    assert (limits.max_connections, limits.pings_per_s) == (11, 5)
    assert dataclasses.asdict(ServerSettings().http2_limits()) == dataclasses.asdict(Http2Limits())
