"""One client flooding the gRPC port must not keep the others waiting, nor grow the server.

The attacker is another process writing as fast as the kernel takes it (in the test's own
event loop it could never outrun the server), never reading; the bystander is a gRPC
client making ordinary calls, each with a 5 s deadline. The server runs on uvloop, as
``modelhost serve`` does: it reads a busy socket up to 32 times in a row.
"""

from __future__ import annotations

import multiprocessing
import socket
import struct
from collections.abc import Iterator

import grpc
import hpack
import pytest
from serving import RunningServer, start_server, stop_server
from testmodels import EchoModel

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.transport import http2_frames as wire
from modelhost.transport.http2_frames import frame

_REQUEST = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/inference.GRPCInferenceService/ModelInfer"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
    ("x-flood", "1"),
]


def _burst(kind: str, number: int) -> bytes:
    """What the attacker writes next on its connection (stream ids keep going up)."""
    if kind == "ping":
        return b"".join(frame(wire.PING, 0, 0, struct.pack(">Q", i)) for i in range(1000))
    # One block sent again and again: each adds its fields to the server's HPACK table, so
    # that every one costs a full decode (what a flood that wants to cost most does).
    block = hpack.Encoder().encode(_REQUEST)
    out = []
    for i in range(300):
        stream = 1 + 2 * (300 * number + i)
        out.append(frame(wire.HEADERS, wire.END_HEADERS, stream, block))
        if kind == "rapid-reset":
            out.append(frame(wire.RST_STREAM, 0, stream, struct.pack(">L", wire.CANCEL)))
    return b"".join(out)


def _flood(kind: str, port: int, stop: multiprocessing.synchronize.Event) -> None:
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(wire.PREFACE + frame(wire.SETTINGS, 0, 0))
                number = 0
                while not stop.is_set():
                    sock.sendall(_burst(kind, number))
                    number += 1
        except OSError:
            continue  # ended by the server: back again, as a flood is


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    running = start_server([EchoModel()], on_uvloop=True)
    yield running
    stop_server(running)


@pytest.mark.parametrize("kind", ["ping", "headers", "rapid-reset"])
def test_a_flooding_client_does_not_hold_up_the_others(server: RunningServer, kind: str) -> None:
    port = server.server.grpc_port
    stop = multiprocessing.get_context("spawn").Event()
    attacker = multiprocessing.get_context("spawn").Process(
        target=_flood, args=(kind, port, stop), daemon=True
    )
    attacker.start()
    try:
        request = pb.ModelInferRequest(model_name="echo")
        tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
        tensor.contents.fp32_contents.extend([1.0, 2.0])
        with grpc.insecure_channel(server.grpc_address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            for _ in range(20):
                answer = stub.ModelInfer(request, timeout=5)
                assert answer.model_name == "echo"
        assert attacker.is_alive()  # the flood went on the whole time
    finally:
        stop.set()
        attacker.join(5)
        if attacker.is_alive():
            attacker.kill()
