"""The gRPC service through its own generated stubs: typed contents, health, reflection, drain.

tritonclient only sends raw contents, so the typed-contents rules of the protocol are
checked here with hand-built messages; health checking and reflection with the stock
grpcio clients; draining with a ``GrpcServer`` driven directly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_helpers import grpc_server
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from serving import start_server, stop_server
from testmodels import EchoModel, SlowModel

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.protocol.infer_type import InferOutput, InferResponse
from modelhost.server.grpc.server import GrpcServer
from modelhost.settings import ServerSettings


class HalvingEcho(EchoModel):
    """An echo model that also answers each FP32 input as FP16, named ``<input>_half``."""

    def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        response = super().predict(payload, headers)
        assert isinstance(response, InferResponse)
        outputs = []
        for output in response.outputs:
            outputs.append(output)
            if output.datatype == "FP32":
                half = InferOutput(f"{output.name}_half", output.shape, "FP16")
                half.set_data_from_numpy(output.as_numpy().astype(np.float16))
                outputs.append(half)
        response.outputs = outputs
        return response


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    running = start_server([HalvingEcho("echo")])
    with grpc.insecure_channel(running.grpc_address) as chan:
        yield chan
    stop_server(running)


@pytest.fixture
def stub(channel: grpc.Channel) -> Any:
    return pb_grpc.GRPCInferenceServiceStub(channel)


def _request(**inputs: tuple[str, list[int], dict[str, Any]]) -> Any:
    message = pb.ModelInferRequest(model_name="echo", id="typed")
    for name, (datatype, shape, contents) in inputs.items():
        message.inputs.add(
            name=name, datatype=datatype, shape=shape, contents=pb.InferTensorContents(**contents)
        )
    return message


def test_typed_contents_in_typed_contents_out(stub: Any) -> None:
    message = _request(
        b=("BOOL", [2], {"bool_contents": [True, False]}),
        i8=("INT8", [3], {"int_contents": [-128, 0, 127]}),
        u16=("UINT16", [1, 2], {"uint_contents": [0, 65535]}),
        u64=("UINT64", [1], {"uint64_contents": [2**64 - 1]}),
        i64=("INT64", [1], {"int64_contents": [-(2**63)]}),
        f64=("FP64", [2], {"fp64_contents": [0.5, -1e300]}),
        s=("BYTES", [2], {"bytes_contents": [b"hello", b"\xff"]}),
    )
    response = stub.ModelInfer(message)
    assert response.id == "typed"
    assert not response.raw_output_contents
    out = {o.name: o for o in response.outputs}
    assert list(out["b"].contents.bool_contents) == [True, False]
    assert list(out["i8"].contents.int_contents) == [-128, 0, 127]
    assert list(out["u16"].contents.uint_contents) == [0, 65535]
    assert list(out["u16"].shape) == [1, 2]
    assert list(out["u64"].contents.uint64_contents) == [2**64 - 1]
    assert list(out["i64"].contents.int64_contents) == [-(2**63)]
    assert list(out["f64"].contents.fp64_contents) == [0.5, -1e300]
    assert list(out["s"].contents.bytes_contents) == [b"hello", b"\xff"]


def test_fp16_output_makes_every_output_raw(stub: Any) -> None:
    message = _request(
        x=("FP32", [2], {"fp32_contents": [1.5, -2.0]}),
        n=("INT32", [1], {"int_contents": [7]}),
    )
    response = stub.ModelInfer(message)
    names = [o.name for o in response.outputs]
    assert names == ["x", "x_half", "n"]
    assert len(response.raw_output_contents) == 3
    assert all(not o.HasField("contents") for o in response.outputs)
    raw = dict(zip(names, response.raw_output_contents, strict=True))
    np.testing.assert_array_equal(np.frombuffer(raw["x_half"], "<f2"), [1.5, -2.0])
    np.testing.assert_array_equal(np.frombuffer(raw["n"], "<i4"), [7])


def test_binary_data_output_parameter_asks_for_raw(stub: Any) -> None:
    message = _request(n=("INT32", [1], {"int_contents": [7]}))
    message.parameters["binary_data_output"].bool_param = True
    response = stub.ModelInfer(message)
    assert np.frombuffer(response.raw_output_contents[0], "<i4").tolist() == [7]


def _assert_invalid(stub: Any, message: Any, *fragments: str) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        stub.ModelInfer(message)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for fragment in fragments:
        assert fragment in exc.value.details()


def test_typed_and_raw_contents_together_are_invalid(stub: Any) -> None:
    message = _request(x=("INT32", [1], {"int_contents": [1]}))
    message.raw_input_contents.append(np.array([1], "<i4").tobytes())
    _assert_invalid(stub, message, "Input x", "raw")


def test_typed_contents_errors_name_the_input(stub: Any) -> None:
    _assert_invalid(stub, _request(x=("INT32", [3], {"int_contents": [1]})), "Input x", "3")
    _assert_invalid(stub, _request(h=("FP16", [1], {})), "Input h", "raw")
    _assert_invalid(stub, _request(t=("INT8", [1], {"int_contents": [300]})), "Input t", "INT8")
    _assert_invalid(stub, _request(q=("COMPLEX", [1], {})), "Input q", "COMPLEX")


def test_raw_contents_count_must_match_inputs(stub: Any) -> None:
    message = pb.ModelInferRequest(model_name="echo")
    message.inputs.add(name="a", datatype="INT32", shape=[1])
    message.inputs.add(name="b", datatype="INT32", shape=[1])
    message.raw_input_contents.append(b"\x00" * 4)
    _assert_invalid(stub, message, "raw_input_contents")


def test_stream_with_a_bad_request_goes_on(stub: Any) -> None:
    good = _request(x=("FP64", [1], {"fp64_contents": [2.0]}))
    bad = _request(x=("FP64", [2], {"fp64_contents": [2.0]}))
    answers = list(stub.ModelStreamInfer(iter([bad, good])))
    assert len(answers) == 2
    assert "Input x" in answers[0].error_message
    assert not answers[0].HasField("infer_response")
    assert answers[1].error_message == ""
    assert list(answers[1].infer_response.outputs[0].contents.fp64_contents) == [2.0]


def test_health_check_serving(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_services(channel: grpc.Channel) -> None:
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    asks = [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService"
        ),
    ]
    listed, described = list(reflection.ServerReflectionInfo(iter(asks)))
    names = {s.name for s in listed.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto


# -- draining, with a GrpcServer of our own --------------------------------------------


async def test_drain_reports_not_serving_and_finishes_running_calls() -> None:
    slow = SlowModel(delay=0.5)
    async with (
        grpc_server(slow) as (server, port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan,
    ):
        health = health_pb2_grpc.HealthStub(chan)
        check = health_pb2.HealthCheckRequest(service="inference.GRPCInferenceService")
        assert (await health.Check(check)).status == health_pb2.HealthCheckResponse.SERVING
        # From another thread, as a signal handler or an embedding program would.
        await asyncio.to_thread(server.set_not_serving)
        status = (await health.Check(check)).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        stub = pb_grpc.GRPCInferenceServiceStub(chan)
        running = asyncio.ensure_future(
            stub.ModelInfer(
                pb.ModelInferRequest(
                    model_name="slow",
                    inputs=[
                        pb.ModelInferRequest.InferInputTensor(
                            name="x",
                            datatype="INT64",
                            shape=[1],
                            contents=pb.InferTensorContents(int64_contents=[5]),
                        )
                    ],
                )
            )
        )
        assert await asyncio.to_thread(slow.started.wait, 5)
        await server.stop(5.0)
        response = await running
        assert response.model_name == "slow"
        assert len(response.outputs) == 1


async def test_set_not_serving_on_the_server_loop() -> None:
    async with (
        grpc_server() as (server, port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as chan,
    ):
        health = health_pb2_grpc.HealthStub(chan)
        server.set_not_serving()
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.mark.parametrize("native", [True, False])
async def test_busy_port_is_an_os_error(native: bool) -> None:
    # Another gRPC server holds the port: without SO_REUSEPORT the second must fail loudly.
    settings = ServerSettings(native_grpc=native)
    async with grpc_server(settings=settings) as (first, port):
        second = GrpcServer(first.dataplane, first.metrics, settings)
        with pytest.raises(OSError, match="Cannot bind the gRPC server"):
            await second.start("127.0.0.1", port)
