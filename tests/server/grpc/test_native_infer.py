"""ModelInfer answered on the gRPC port's own HTTP/2 (``native_infer``), the rest by grpc.aio.

Real grpcio clients on real loopback sockets, plus a raw HTTP/2 client where a grpcio
client would hide what the server does (a deadline the server must enforce by itself).
Which side answered is seen by recording calls to the grpc.aio servicer's ``ModelInfer``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import hpack
import numpy as np
import pytest
from grpc_helpers import grpc_server, raw_call
from serving import RunningServer, StartServer
from testmodels import EchoModel, SlowModel

from modelhost import Model
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.protocol.infer_type import InferOutput, InferRequest, InferResponse
from modelhost.server.grpc.servicer import InferenceServicer
from modelhost.settings import ServerSettings, parse_known_server_args
from modelhost.transport import http2_frames as wire

INFER = "/inference.GRPCInferenceService/ModelInfer"


@pytest.fixture
def aio_infers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model names of the ModelInfer calls grpc.aio's servicer answered."""
    seen: list[str] = []
    original = InferenceServicer.ModelInfer

    async def recording(self: InferenceServicer, request: Any, context: Any) -> Any:
        seen.append(request.model_name)
        return await original(self, request, context)

    monkeypatch.setattr(InferenceServicer, "ModelInfer", recording)
    return seen


def _request(model: str = "echo", values: tuple[float, ...] = (1.0, 2.0)) -> Any:
    message = pb.ModelInferRequest(model_name=model, id="r1")
    message.inputs.add(name="x", datatype="FP32", shape=[1, len(values)])
    message.raw_input_contents.append(np.asarray(values, dtype=np.float32).tobytes())
    return message


def _answer(response: Any) -> list[float]:
    return np.frombuffer(response.raw_output_contents[0], dtype=np.float32).tolist()


def _requests_total(running: RunningServer) -> dict[tuple[str, str, str], float]:
    return {
        (s.labels["model"], s.labels["endpoint"], s.labels["status"]): s.value
        for metric in running.server.metrics.registry.collect()
        if metric.name == "modelhost_requests"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels["protocol"] == "grpc"
    }


async def _counted(running: RunningServer, key: tuple[str, str, str]) -> None:
    """Wait until the server has counted one call as ``key`` (the cancelled task's last
    step runs just after the client has its answer)."""
    deadline = time.monotonic() + 5
    while _requests_total(running).get(key) != 1:
        assert time.monotonic() < deadline, _requests_total(running)
        await asyncio.sleep(0.02)


def _in_flight(running: RunningServer) -> float:
    return running.server.metrics.in_flight_now("grpc")


def test_model_infer_is_answered_natively_and_the_rest_by_grpc_aio(
    serve: StartServer, aio_infers: list[str]
) -> None:
    running = serve([EchoModel()])
    with grpc.insecure_channel(running.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(_request(values=(1.5, -2.0)))
        assert (response.model_name, response.id) == ("echo", "r1")
        assert _answer(response) == [1.5, -2.0]
        assert stub.ServerLive(pb.ServerLiveRequest()).live
        assert stub.ModelMetadata(pb.ModelMetadataRequest(name="echo")).name == "echo"
    assert aio_infers == []
    assert _requests_total(running)[("echo", "infer", "OK")] == 1
    assert _requests_total(running)[("", "live", "OK")] == 1


def test_native_grpc_false_puts_grpc_aio_on_the_port(
    serve: StartServer, aio_infers: list[str]
) -> None:
    running = serve([EchoModel()], native_grpc=False)
    with grpc.insecure_channel(running.grpc_address) as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request())
    assert _answer(response) == [1.0, 2.0]
    assert aio_infers == ["echo"]


def test_a_compressed_call_is_passed_on_to_grpc_aio(
    serve: StartServer, aio_infers: list[str]
) -> None:
    running = serve([EchoModel()])
    with grpc.insecure_channel(running.grpc_address, compression=grpc.Compression.Gzip) as chan:
        response = pb_grpc.GRPCInferenceServiceStub(chan).ModelInfer(_request(values=(7.0,)))
    assert _answer(response) == [7.0]
    assert aio_infers == ["echo"]


def test_bytes_that_are_no_request_are_invalid_argument(serve: StartServer) -> None:
    running = serve([EchoModel()])
    with grpc.insecure_channel(running.grpc_address) as channel:
        call = channel.unary_unary(INFER)  # no serializers: the bytes go as they are
        with pytest.raises(grpc.RpcError) as exc:
            call(b"\xff\xff\xff")
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Not a ModelInferRequest" in (exc.value.details() or "")


@pytest.mark.parametrize("count", [0, 2])
def test_model_infer_takes_exactly_one_message(serve: StartServer, count: int) -> None:
    running = serve([EchoModel()])
    message = _request().SerializeToString()
    with grpc.insecure_channel(running.grpc_address) as channel:
        call = channel.stream_unary(INFER)
        with pytest.raises(grpc.RpcError) as exc:
            call(iter([message] * count))
    assert exc.value.code() == grpc.StatusCode.INTERNAL
    assert "one request message" in (exc.value.details() or "")


class Inflating(Model):
    """Answers every request with 4,096 FP32 zeros, whatever it was sent."""

    def __init__(self) -> None:
        super().__init__("inflating")
        self.ready = True

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        assert isinstance(payload, InferRequest)
        output = InferOutput("y", [1, 4096], "FP32")
        output.set_data_from_numpy(np.zeros((1, 4096), dtype=np.float32))
        return InferResponse(payload.id, self.name, [output])


def test_an_answer_over_the_size_limit_is_resource_exhausted(serve: StartServer) -> None:
    running = serve([Inflating()], max_request_bytes=4096)
    stub = pb_grpc.GRPCInferenceServiceStub
    with (
        grpc.insecure_channel(running.grpc_address) as channel,
        pytest.raises(grpc.RpcError) as exc,
    ):
        stub(channel).ModelInfer(_request("inflating"))
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Sent message larger than max" in (exc.value.details() or "")
    assert _requests_total(running)[("inflating", "infer", "RESOURCE_EXHAUSTED")] == 1


async def test_a_cancelled_call_cancels_the_model_work(serve: StartServer) -> None:
    slow = SlowModel(delay=2.0)
    running = serve([slow])
    async with grpc.aio.insecure_channel(running.grpc_address) as channel:
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("slow"))
        assert await asyncio.to_thread(slow.started.wait, 5)
        assert _in_flight(running) == 1
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
    await _counted(running, ("slow", "infer", "CANCELLED"))
    assert _in_flight(running) == 0


async def _raw_call(
    address: str, data: bytes, *, end: bool, extra: tuple[tuple[str, str], ...] = ()
) -> dict[str, str]:
    """One ModelInfer from a raw HTTP/2 client, which keeps no timer and may leave its side
    open: the trailers the server ends the call with (within 5 s, or the test fails)."""
    host, port = address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(raw_call(address, INFER, data, end=end, extra=extra))
        decoder = hpack.Decoder()
        while True:
            head = await asyncio.wait_for(reader.readexactly(9), 5)
            payload = await reader.readexactly(int.from_bytes(head[:3], "big"))
            if head[3] == wire.HEADERS and head[4] & wire.END_STREAM:
                return dict(decoder.decode(payload))
    finally:
        writer.close()


def _framed(message: Any) -> bytes:
    body = message.SerializeToString()
    return b"\0" + len(body).to_bytes(4, "big") + body


async def test_the_server_enforces_the_deadline_itself(serve: StartServer) -> None:
    running = serve([SlowModel(delay=2.0)])
    started = time.monotonic()
    trailers = await _raw_call(
        running.grpc_address, _framed(_request("slow")), end=True, extra=(("grpc-timeout", "200m"),)
    )
    elapsed = time.monotonic() - started
    assert trailers["grpc-status"] == str(grpc.StatusCode.DEADLINE_EXCEEDED.value[0])
    assert 0.15 < elapsed < 1.5
    await _counted(running, ("slow", "infer", "CANCELLED"))


async def test_bytes_past_one_message_are_refused_before_the_stream_ends(
    serve: StartServer,
) -> None:
    running = serve([EchoModel()])
    message = _framed(_request())
    trailers = await _raw_call(running.grpc_address, message + message[:10], end=False)
    assert trailers["grpc-status"] == str(grpc.StatusCode.INTERNAL.value[0])
    assert "exactly one request message" in trailers["grpc-message"]


async def test_an_oversized_message_is_refused_from_its_prefix(serve: StartServer) -> None:
    running = serve([EchoModel()], max_request_bytes=4096)
    prefix = b"\0" + (10**6).to_bytes(4, "big")  # announces 1 MB; 10 bytes follow
    trailers = await _raw_call(running.grpc_address, prefix + b"x" * 10, end=False)
    assert trailers["grpc-status"] == str(grpc.StatusCode.RESOURCE_EXHAUSTED.value[0])
    assert "(1000000 vs. 4096)" in trailers["grpc-message"]


async def test_stop_after_the_grace_period_ends_a_running_call_as_unavailable() -> None:
    slow = SlowModel(delay=3.0)
    async with (
        grpc_server(slow) as (server, port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
    ):
        call = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_request("slow"))
        assert await asyncio.to_thread(slow.started.wait, 5)
        started = time.monotonic()
        await server.stop(0.2)
        assert time.monotonic() - started < 1.5
        with pytest.raises(grpc.aio.AioRpcError) as exc:
            await call
        assert exc.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "stopping" in (exc.value.details() or "")


def test_the_native_grpc_flag_and_variable_are_read() -> None:
    assert ServerSettings().native_grpc is True
    assert parse_known_server_args(["--native_grpc", "false"]).native_grpc is False
    assert parse_known_server_args(["--native-grpc", "true"]).native_grpc is True
    assert ServerSettings.from_env({"MODELHOST_NATIVE_GRPC": "false"}).native_grpc is False
