"""The gRPC port's relay in front of grpc.aio: one client's back-pressure stays its own.

A raw HTTP/2 client opens a ``ModelStreamInfer`` (relayed to grpc.aio) and grants no flow
control window, so megabytes of answers pile up for it and the relay stops reading the
connection they come from. Another client's relayed calls must go on meanwhile, which they
can only do over a connection of their own.
"""

from __future__ import annotations

import asyncio
import struct

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_helpers import grpc_server, raw_call
from testmodels import EchoModel

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc

STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"
_INITIAL_WINDOW_SIZE = 0x4


def _framed_requests(count: int, floats: int) -> bytes:
    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="x", datatype="FP32", shape=[1, floats])
    message.raw_input_contents.append(np.ones(floats, dtype=np.float32).tobytes())
    body = message.SerializeToString()
    return (b"\0" + len(body).to_bytes(4, "big") + body) * count


async def test_a_client_that_stops_reading_does_not_stall_other_clients() -> None:
    async with grpc_server(EchoModel()) as (server, port):
        address = f"127.0.0.1:{port}"
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        # The stuck client: a window of 0 for every stream, never raised; 8 answers of 1 MiB.
        no_window = struct.pack(">HL", _INITIAL_WINDOW_SIZE, 0)
        data = _framed_requests(count=8, floats=256 * 1024)
        writer.write(raw_call(address, STREAM, data, end=True, settings=no_window))
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
