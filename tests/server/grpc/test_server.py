"""The gRPC port's relay in front of grpc.aio: one client's back-pressure stays its own.

A raw HTTP/2 client opens a ``ModelStreamInfer`` (relayed to grpc.aio) and grants no flow
control window, so megabytes of answers pile up for it and the relay stops reading the
connection they come from. Another client's relayed calls must go on meanwhile, which they
can only do over a connection of their own.
"""

from __future__ import annotations

import asyncio
import struct
from concurrent.futures import ThreadPoolExecutor

import grpc
import hpack
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from testmodels import EchoModel

from modelhost.model.repository import ModelRepository
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.server.dataplane import DataPlane
from modelhost.server.grpc import http2
from modelhost.server.grpc.http2 import frame
from modelhost.server.grpc.server import GrpcServer
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
_INITIAL_WINDOW_SIZE = 0x4


def _framed_requests(count: int, floats: int) -> bytes:
    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="x", datatype="FP32", shape=[1, floats])
    message.raw_input_contents.append(np.ones(floats, dtype=np.float32).tobytes())
    body = message.SerializeToString()
    return (b"\0" + len(body).to_bytes(4, "big") + body) * count


async def test_a_client_that_stops_reading_does_not_stall_other_clients() -> None:
    executor = ThreadPoolExecutor(2)
    metrics = Metrics()
    repository = ModelRepository()
    repository.update(EchoModel())
    dataplane = DataPlane(repository, StepRunner(executor, metrics), "modelhost")
    server = GrpcServer(dataplane, metrics, ServerSettings())
    port = await server.start("127.0.0.1", 0)
    address = f"127.0.0.1:{port}"
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        # The stuck client: a window of 0 for every stream, never raised.
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", STREAM),
            (":authority", address),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        data = _framed_requests(count=8, floats=256 * 1024)  # 8 answers of 1 MiB each
        frames = [
            http2.PREFACE,
            frame(http2.SETTINGS, 0, 0, struct.pack(">HL", _INITIAL_WINDOW_SIZE, 0)),
            frame(http2.HEADERS, http2.END_HEADERS, 1, hpack.Encoder().encode(headers)),
        ]
        size = 16_384
        for start in range(0, len(data), size):
            last = start + size >= len(data)
            chunk = data[start : start + size]
            frames.append(frame(http2.DATA, http2.END_STREAM if last else 0, 1, chunk))
        writer.write(b"".join(frames))
        relay = server._relay
        assert relay is not None
        for _ in range(500):  # until the answers held for it congest its connection
            if any(client.congested for client in relay._clients):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the stuck client's answers never piled up")

        # Another client's relayed calls (health, metadata, a stream) are answered.
        async with grpc.aio.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name="echo"), timeout=5)
            assert metadata.name == "echo"
            request = pb.ModelInferRequest(model_name="echo")
            request.inputs.add(name="x", datatype="FP32", shape=[1, 2])
            request.raw_input_contents.append(np.ones(2, dtype=np.float32).tobytes())
            answers = [answer async for answer in stub.ModelStreamInfer(iter([request]), timeout=5)]
            assert [answer.error_message for answer in answers] == [""]
        stuck = [client for client in relay._clients if client.congested]
        assert len(stuck) == 1  # still stuck, and only that client
        assert stuck[0].pool.upstreams  # its own connection to grpc.aio
        writer.close()
        for _ in range(500):  # once it is gone, so is its connection to grpc.aio
            if stuck[0].pool.closed and not stuck[0].pool.upstreams:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the stuck client's upstream connection stayed open")
    finally:
        writer.close()
        await server.stop(0)
        executor.shutdown(wait=False)
