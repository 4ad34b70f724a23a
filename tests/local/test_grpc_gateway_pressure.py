"""The gRPC gateway under clients that send too much or read too little.

A raw HTTP/2 client plays the bad client; a real model server plays the replica, and
grpc.aio's client plays the bystander that must not notice.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Iterator

import grpc
import hpack
import numpy as np
import pytest
from serving import RunningServer, start_server, stop_server
from testmodels import EchoModel

from modelhost import errors
from modelhost.local.server import grpc_gateway
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.transport import http2_frames as wire
from modelhost.transport.grpc_relay import GrpcRelay
from modelhost.transport.http2_frames import frame
from modelhost.transport.target import Target

STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


@pytest.fixture(scope="module")
def replica() -> Iterator[RunningServer]:
    running = start_server([EchoModel("echo")])
    yield running
    stop_server(running)


@pytest.fixture
async def gateway(replica: RunningServer) -> AsyncIterator[GrpcRelay]:
    async def resolve(host: str | None, model: str | None) -> Target:
        if model != "echo":
            raise errors.ModelNotFound(str(model))
        return Target(replica.grpc_address, lambda ok: None)

    relay = grpc_gateway(resolve)
    await relay.start()
    yield relay
    await relay.stop()


def echo_request(floats: int) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="echo")
    request.inputs.add(name="x", datatype="FP32", shape=[1, floats])
    request.raw_input_contents.append(np.ones(floats, dtype=np.float32).tobytes())
    return request


def framed(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


async def raw_call(
    port: int, path: str, data: bytes, *, window: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw client's call on stream 1 (``window``: the stream window it grants, for ever)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    settings = b"" if window is None else struct.pack(">HL", 0x4, window)
    block = hpack.Encoder().encode(
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", f"127.0.0.1:{port}"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
    )
    frames = [wire.PREFACE, frame(wire.SETTINGS, 0, 0, settings)]
    frames.append(frame(wire.HEADERS, wire.END_HEADERS, 1, block))
    for start in range(0, len(data), 16_384):
        frames.append(frame(wire.DATA, 0, 1, data[start : start + 16_384]))
    writer.write(b"".join(frames))
    return reader, writer


async def trailers(reader: asyncio.StreamReader) -> dict[str, str]:
    decoder = hpack.Decoder()
    while True:
        head = await asyncio.wait_for(reader.readexactly(9), 10)
        payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
        if head[3] == wire.HEADERS:
            fields = dict(decoder.decode(payload))
            if head[4] & wire.END_STREAM:
                return fields


async def test_a_first_message_over_the_limit_is_refused_from_its_prefix(
    gateway: GrpcRelay,
) -> None:
    # Five bytes announce a message past the limit: the answer comes before the rest does.
    prefix = b"\0" + (gateway.max_message_bytes + 1).to_bytes(4, "big")
    reader, writer = await raw_call(gateway.port, STREAM_INFER, prefix + b"\0" * 1000)
    answer = await trailers(reader)
    writer.close()
    assert answer["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "larger than max" in answer["grpc-message"]


async def test_a_first_message_in_many_frames_is_routed(gateway: GrpcRelay) -> None:
    # 3 MiB in 192 DATA frames: held whole before it is routed, joined once.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = await stub.ModelInfer(echo_request(768 * 1024), timeout=30)
    assert answer.model_name == "echo"
    assert len(answer.raw_output_contents[0]) == 3 * 1024 * 1024


async def test_a_client_that_stops_reading_does_not_stall_others_on_the_same_replica(
    gateway: GrpcRelay,
) -> None:
    # The stuck client: a stream window of 0, never raised; 8 answers of 1 MiB come back.
    message = framed(echo_request(256 * 1024).SerializeToString()) * 8
    _reader, writer = await raw_call(gateway.port, STREAM_INFER, message, window=0)
    for _ in range(1000):
        if any(client.congested for client in gateway._clients):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the stuck client's answers never piled up")
    (shared,) = [c for connections in gateway._shared.upstreams.values() for c in connections]

    # A bystander's calls go to the same replica over the same shared connection.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(3):
            answer = await stub.ModelInfer(echo_request(4), timeout=5)
            assert answer.model_name == "echo"
        answers = [a async for a in stub.ModelStreamInfer(iter([echo_request(64 * 1024)]))]
        assert [a.error_message for a in answers] == [""]
    assert [c for connections in gateway._shared.upstreams.values() for c in connections] == [
        shared
    ]
    assert any(client.congested for client in gateway._clients)  # still stuck
    writer.close()
