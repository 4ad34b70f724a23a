"""The gRPC gateway answers health checks and reflection itself, as a model server's port does."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from platform_fixtures import RunningPlatform, start_platform, stop_platform

from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc


@pytest.fixture(params=["none", "tokens"])
def platform(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningPlatform]:
    running = start_platform(tmp_path / "home", access={"auth": request.param})
    yield running
    stop_platform(running)


def test_health_check_and_reflection_answer_on_the_gateway(platform: RunningPlatform) -> None:
    # With tokens on, too: health and reflection say nothing about a model.
    with grpc.insecure_channel(platform.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        service = "inference.GRPCInferenceService"
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as unknown:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (reply,) = list(reflection.ServerReflectionInfo(iter([request]), timeout=10))
        names = {each.name for each in reply.list_services_response.service}
        assert {service, "grpc.health.v1.Health"} <= names

        # The inference service is still the gateway's: live without any replica.
        live = pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            pb.ServerLiveRequest(), timeout=10
        )
        assert live.live
