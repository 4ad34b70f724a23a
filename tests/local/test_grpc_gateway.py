"""The gRPC gateway between real clients and real replicas, on loopback ports the kernel picks.

A ``ModelServer`` in a thread plays the replica for tritonclient's calls; a small recording
gRPC server plays it where the test must see exactly what arrives (bytes, metadata, the
deadline) or must make the replica hang or fail on command.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc.aio as tca
from serving import RunningServer, start_server, stop_server
from testmodels import EchoModel, SumModel
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from modelhost import errors
from modelhost.local.server import grpc_gateway
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.transport.grpc_relay import GrpcRelay
from modelhost.transport.target import Target

SERVICE = "/inference.GRPCInferenceService/"
# What the router records as the host of a call that named no host but the gateway's own
# address (the ``:authority`` every gRPC client sends).
GATEWAY = "<the gateway's address>"


@pytest.fixture(scope="module")
def upstream() -> Iterator[RunningServer]:
    running = start_server([SumModel("iris"), EchoModel("echo")])
    yield running
    stop_server(running)


@dataclass
class Router:
    """A resolver that records what it was asked and every release it got."""

    routes: dict[str | None, str]
    delay: float = 0.0
    authority: str = ""
    failure: BaseException | None = None
    calls: list[tuple[str | None, str | None]] = field(default_factory=list)
    releases: list[bool] = field(default_factory=list)

    async def __call__(self, host: str | None, model: str | None) -> Target:
        self.calls.append((GATEWAY if host == self.authority else host, model))
        if self.delay:
            await asyncio.sleep(self.delay)  # a replica starting from zero
        if self.failure is not None:
            raise self.failure
        if model not in self.routes:
            raise errors.ModelNotFound(str(model))
        return Target(self.routes[model], self.releases.append)


@pytest.fixture(autouse=True)
async def no_leaked_tasks() -> AsyncIterator[None]:
    """Every test ends with nothing of the gateway's (or the clients') still running."""
    yield
    current = asyncio.current_task()
    left: list[asyncio.Task[Any]] = []
    for _ in range(100):
        left = [task for task in asyncio.all_tasks() if task is not current and not task.done()]
        if not left:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"tasks still running after the test: {left}")


@pytest.fixture
def router() -> Router:
    """The gateway's resolver: each test adds the routes it needs."""
    return Router({})


@pytest.fixture
async def gateway(router: Router) -> AsyncIterator[GrpcRelay]:
    gateway = grpc_gateway(router)
    port = await gateway.start()
    assert port == gateway.port > 0
    router.authority = f"127.0.0.1:{port}"
    yield gateway
    await gateway.stop()
    assert gateway._shared.upstreams == {}


@pytest.fixture
async def client(gateway: GrpcRelay) -> AsyncIterator[tca.InferenceServerClient]:
    triton = tca.InferenceServerClient(f"127.0.0.1:{gateway.port}")
    yield triton
    await triton.close()


@pytest.fixture
async def direct(upstream: RunningServer) -> AsyncIterator[tca.InferenceServerClient]:
    triton = tca.InferenceServerClient(upstream.grpc_address)
    yield triton
    await triton.close()


def features(array: np.ndarray[Any, Any]) -> list[InferInput]:
    tensor = InferInput("x", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array.astype(np.float32))
    return [tensor]


def status_of(exc: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(exc.value.status()).rsplit(".", 1)[-1]


async def until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def closed_address() -> str:
    """A loopback address where nothing listens (the port was free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


# -- through a real ModelServer, with tritonclient -----------------------------------------


async def test_infer_through_the_gateway_answers_as_the_replica_does(
    gateway: GrpcRelay,
    router: Router,
    client: tca.InferenceServerClient,
    direct: tca.InferenceServerClient,
    upstream: RunningServer,
) -> None:
    router.routes["iris"] = upstream.grpc_address
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])

    proxied = await client.infer("iris", features(rows), request_id="r-1")
    expected = await direct.infer("iris", features(rows), request_id="r-1")

    for name in ("sum", "double"):
        np.testing.assert_array_equal(proxied.as_numpy(name), expected.as_numpy(name))
    np.testing.assert_allclose(proxied.as_numpy("sum"), rows.sum(axis=1), rtol=1e-6)
    assert proxied.get_response().id == "r-1"
    assert router.calls == [(GATEWAY, "iris")]
    assert router.releases == [True]


async def test_model_metadata_and_ready_through_the_gateway(
    gateway: GrpcRelay, router: Router, client: tca.InferenceServerClient, upstream: RunningServer
) -> None:
    router.routes["iris"] = upstream.grpc_address

    metadata = await client.get_model_metadata("iris", as_json=True)
    ready = await client.is_model_ready("iris")

    assert metadata["name"] == "iris"
    assert metadata["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert ready is True
    assert router.calls == [(GATEWAY, "iris"), (GATEWAY, "iris")]
    assert router.releases == [True, True]


async def test_server_methods_answer_or_resolve_without_a_model(
    gateway: GrpcRelay, router: Router, client: tca.InferenceServerClient, upstream: RunningServer
) -> None:
    router.routes[None] = upstream.grpc_address

    assert await client.is_server_live() is True  # answered by the gateway itself
    assert await client.is_server_ready() is True
    assert router.calls == []
    metadata = await client.get_server_metadata(as_json=True)
    index = await client.get_model_repository_index(as_json=True)

    assert metadata["name"] == "modelhost"
    assert {model["name"] for model in index["models"]} == {"iris", "echo"}
    assert router.calls == [(GATEWAY, None), (GATEWAY, None)]
    assert router.releases == [True, True]


async def test_unknown_model_is_refused_by_the_resolver(
    gateway: GrpcRelay, router: Router, client: tca.InferenceServerClient, upstream: RunningServer
) -> None:
    router.routes["iris"] = upstream.grpc_address

    with pytest.raises(InferenceServerException) as failure:
        await client.infer("nope", features(np.zeros((1, 4))))

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "nope", "inputs": features(np.ones((1, 4)))}

    with pytest.raises(grpc.aio.AioRpcError) as stream:
        _ = [answer async for answer in client.stream_infer(requests())]

    assert status_of(failure) == "NOT_FOUND"
    assert failure.value.message() == "Model with name nope does not exist."
    assert stream.value.code() == grpc.StatusCode.NOT_FOUND
    assert router.calls == [(GATEWAY, "nope"), (GATEWAY, "nope")]
    assert router.releases == []  # no replica was handed out, none to give back


async def test_replica_errors_come_back_unchanged(
    gateway: GrpcRelay,
    router: Router,
    client: tca.InferenceServerClient,
    direct: tca.InferenceServerClient,
    upstream: RunningServer,
) -> None:
    router.routes["iris"] = upstream.grpc_address
    bad = np.zeros((2, 3))  # iris rows have four features

    with pytest.raises(InferenceServerException) as proxied:
        await client.infer("iris", features(bad))
    with pytest.raises(InferenceServerException) as expected:
        await direct.infer("iris", features(bad))

    assert status_of(proxied) == "INVALID_ARGUMENT"
    assert proxied.value.message() == expected.value.message()
    assert "4" in str(proxied.value.message())
    assert router.releases == [False]


async def test_host_metadata_reaches_the_resolver(
    gateway: GrpcRelay, router: Router, client: tca.InferenceServerClient, upstream: RunningServer
) -> None:
    router.routes["echo"] = upstream.grpc_address
    headers = {"host": "echo.default.example.com"}

    result = await client.infer("echo", features(np.ones((1, 4))), headers=headers)

    assert result.as_numpy("x").tolist() == [[1.0] * 4]
    assert router.calls == [("echo.default.example.com", "echo")]
    assert router.releases == [True]


async def test_stream_infer_goes_to_the_replica_of_its_first_message(
    gateway: GrpcRelay, router: Router, client: tca.InferenceServerClient, upstream: RunningServer
) -> None:
    router.routes["iris"] = upstream.grpc_address

    async def requests() -> AsyncIterator[dict[str, Any]]:
        yield {"model_name": "iris", "inputs": features(np.ones((1, 4))), "request_id": "a"}
        yield {"model_name": "iris", "inputs": features(np.zeros((1, 3))), "request_id": "b"}
        yield {"model_name": "iris", "inputs": features(np.full((2, 4), 2.0)), "request_id": "c"}

    answers = [answer async for answer in client.stream_infer(requests())]

    assert len(answers) == 3
    first, second, third = answers
    assert first[1] is None
    assert first[0].as_numpy("sum").tolist() == [4.0]
    assert second[0] is None
    assert "4" in str(second[1].message())
    assert third[1] is None
    assert third[0].as_numpy("sum").tolist() == [8.0, 8.0]
    assert router.calls == [(GATEWAY, "iris")]
    assert router.releases == [True]


# -- through a recording replica, with a raw-bytes client ----------------------------------


@dataclass
class Seen:
    method: str
    request: bytes
    metadata: dict[str, Any]
    time_remaining: float | None


class Probe:
    """A stand-in replica that records each call and echoes, hangs or fails as told."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self.mode = "echo"
        self.started = asyncio.Event()
        self.cancelled = asyncio.Event()
        self.address = ""

    def service(self, details: Any) -> Any:
        method = details.method
        if method.endswith("StreamInfer"):

            async def stream(requests: AsyncIterator[bytes], context: Any) -> AsyncIterator[bytes]:
                await context.send_initial_metadata((("x-initial", "s"),))
                async for request in requests:
                    self.record(method, request, context)
                    await self.hang()
                    yield request[::-1]

            return grpc.stream_stream_rpc_method_handler(stream)

        async def answer(request: bytes, context: Any) -> bytes:
            return await self.answer(method, request, context)

        return grpc.unary_unary_rpc_method_handler(answer)

    def record(self, method: str, request: bytes, context: Any) -> None:
        metadata = dict(context.invocation_metadata())
        self.seen.append(Seen(method, request, metadata, context.time_remaining()))
        self.started.set()

    async def hang(self) -> None:
        if self.mode == "hang":
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                self.cancelled.set()
                raise

    async def answer(self, method: str, request: bytes, context: Any) -> bytes:
        self.record(method, request, context)
        await self.hang()
        if self.mode == "fail":
            trailers = (("x-why", "probe"),)
            code = grpc.StatusCode.FAILED_PRECONDITION
            await context.abort(code, "the probe says no", trailing_metadata=trailers)
        await context.send_initial_metadata((("x-initial", "1"),))
        context.set_trailing_metadata((("x-trailing", "2"),))
        return request[::-1]


async def start_probe(*options: tuple[str, Any]) -> tuple[Probe, grpc.aio.Server]:
    """A probe replica on a free port, its gRPC server started with ``options``."""
    probe = Probe()
    server = grpc.aio.server(options=list(options))
    server.add_generic_rpc_handlers((probe,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    probe.address = f"127.0.0.1:{port}"
    return probe, server


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    probe, server = await start_probe(("grpc.max_receive_message_length", -1))
    yield probe
    await server.stop(None)


@pytest.fixture
async def channel(gateway: GrpcRelay) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
        yield channel


async def test_bytes_metadata_and_deadline_travel_unchanged(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe
) -> None:
    router.routes["iris"] = probe.address
    router.delay = 0.2  # the deadline keeps running while the resolver waits
    request = pb.ModelInferRequest(
        model_name="iris", id="q", raw_input_contents=[b"\x00\x01\x02" * 1000]
    ).SerializeToString()
    metadata = (("x-tag", "t1"), ("host", "iris.example"), ("x-blob-bin", b"\x00\xff"))

    call = channel.unary_unary(SERVICE + "ModelInfer")(request, timeout=5.0, metadata=metadata)
    response = await call

    assert response == request[::-1]
    [seen] = probe.seen
    assert seen.method == SERVICE + "ModelInfer"
    assert seen.request == request
    assert seen.metadata["x-tag"] == "t1"
    assert seen.metadata["host"] == "iris.example"
    assert seen.metadata["x-blob-bin"] == b"\x00\xff"
    assert seen.time_remaining is not None
    assert 0 < seen.time_remaining < 4.85
    assert ("x-initial", "1") in tuple(await call.initial_metadata())
    assert ("x-trailing", "2") in tuple(await call.trailing_metadata())
    assert router.calls == [("iris.example", "iris")]
    assert router.releases == [True]


async def test_replica_status_details_and_trailers_pass_back(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe
) -> None:
    router.routes[None] = probe.address
    probe.mode = "fail"

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await channel.unary_unary(SERVICE + "ServerMetadata")(b"")

    assert failure.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert failure.value.details() == "the probe says no"
    assert ("x-why", "probe") in tuple(failure.value.trailing_metadata())
    assert probe.seen[0].time_remaining is None  # no deadline from the client, none sent on
    assert router.releases == [False]


async def test_model_name_is_read_wherever_the_field_sits(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe
) -> None:
    router.routes.update(dict.fromkeys(["iris", None], probe.address))
    # Field 2 before field 1 is valid protobuf: parsers merge concatenated messages.
    ready = (
        pb.ModelReadyRequest(version="7").SerializeToString()
        + pb.ModelReadyRequest(name="iris").SerializeToString()
    )
    load = pb.RepositoryModelLoadRequest(repository_name="r", model_name="iris")

    await channel.unary_unary(SERVICE + "ModelReady")(ready)
    await channel.unary_unary(SERVICE + "RepositoryModelLoad")(load.SerializeToString())
    await channel.unary_unary(SERVICE + "ModelMetadata")(b"\x0a\x05ir")  # cut short

    assert router.calls == [(GATEWAY, "iris"), (GATEWAY, "iris"), (GATEWAY, None)]
    assert probe.seen[0].request == ready


@pytest.mark.parametrize(
    ("failure", "code", "details"),
    [
        (errors.ServerNotReady("no replica came up"), "UNAVAILABLE", "no replica came up"),
        (errors.Unsupported("no such thing"), "UNIMPLEMENTED", "no such thing"),
        (RuntimeError("boom"), "INTERNAL", "RuntimeError: boom"),
        # grpc-message is percent-encoded on the wire; the client decodes it back.
        (errors.ServerNotReady("modèle à 100%"), "UNAVAILABLE", "modèle à 100%"),
    ],
)
async def test_resolver_errors_map_to_grpc_status(
    gateway: GrpcRelay,
    router: Router,
    channel: grpc.aio.Channel,
    failure: BaseException,
    code: str,
    details: str,
) -> None:
    router.failure = failure

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await channel.unary_unary(SERVICE + "ServerMetadata")(b"")

    assert refused.value.code() == grpc.StatusCode[code]
    assert refused.value.details() == details
    assert router.releases == []


async def test_other_services_are_unimplemented(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await channel.unary_unary("/other.Service/Call")(b"")
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await channel.unary_unary(SERVICE + "NoSuchMethod")(b"")

    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert unknown.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert router.calls == []


async def test_discard_closes_a_replicas_channel(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe
) -> None:
    router.routes[None] = probe.address
    await channel.unary_unary(SERVICE + "ServerMetadata")(b"")
    assert set(gateway._shared.upstreams) == {probe.address}

    await gateway.discard(probe.address)
    await gateway.discard(probe.address)

    assert gateway._shared.upstreams == {}
    assert await channel.unary_unary(SERVICE + "ServerMetadata")(b"") == b""


async def test_an_unreachable_replica_is_unavailable_and_released_as_failed(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel
) -> None:
    router.routes["iris"] = closed_address()
    request = pb.ModelInferRequest(model_name="iris").SerializeToString()

    with pytest.raises(grpc.aio.AioRpcError) as unary:
        await channel.unary_unary(SERVICE + "ModelInfer")(request, timeout=5)
    with pytest.raises(grpc.aio.AioRpcError) as stream:
        async for _ in channel.stream_stream(SERVICE + "ModelStreamInfer")(iter([request])):
            pass

    assert unary.value.code() == grpc.StatusCode.UNAVAILABLE
    assert stream.value.code() == grpc.StatusCode.UNAVAILABLE
    assert router.releases == [False, False]


async def test_raw_stream_keeps_to_one_replica_and_forwards_the_deadline(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe
) -> None:
    router.routes["iris"] = probe.address
    router.delay = 0.3  # time the replica does not get
    first = pb.ModelInferRequest(model_name="iris", id="1").SerializeToString()
    second = pb.ModelInferRequest(model_name="other", id="2").SerializeToString()
    call = channel.stream_stream(SERVICE + "ModelStreamInfer")(
        iter([first, second]), timeout=5, metadata=(("x-tag", "s"),)
    )

    answers = [answer async for answer in call]

    assert answers == [first[::-1], second[::-1]]
    assert ("x-initial", "s") in tuple(await call.initial_metadata())
    assert [seen.request for seen in probe.seen] == [first, second]
    assert probe.seen[0].metadata["x-tag"] == "s"
    assert probe.seen[0].time_remaining is not None
    assert 0 < probe.seen[0].time_remaining < 4.8
    assert router.calls == [(GATEWAY, "iris")]
    assert router.releases == [True]

    empty = channel.stream_stream(SERVICE + "ModelStreamInfer")(iter([]))
    assert [answer async for answer in empty] == []
    assert await empty.code() == grpc.StatusCode.OK
    assert router.calls == [(GATEWAY, "iris")]  # an empty stream asks no replica


async def test_messages_over_grpcs_default_limit_pass(
    gateway: GrpcRelay, router: Router, probe: Probe
) -> None:
    router.routes["iris"] = probe.address
    # 4 MiB is gRPC's default limit; the replica, not the gateway, decides what is too big.
    request = pb.ModelInferRequest(
        model_name="iris", raw_input_contents=[bytes(range(256)) * 24_000]
    ).SerializeToString()
    options = [("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}", options=options) as big:
        response = await big.unary_unary(SERVICE + "ModelInfer")(request, timeout=10)

    assert len(request) > 6_000_000
    assert response == request[::-1]
    assert router.releases == [True]


@pytest.mark.parametrize("ending", ["deadline", "cancel", "stream cancel"])
async def test_a_call_that_ends_early_cancels_the_replicas_call_and_releases_it(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel, probe: Probe, ending: str
) -> None:
    router.routes["iris"] = probe.address
    probe.mode = "hang"
    request = pb.ModelInferRequest(model_name="iris").SerializeToString()

    async def requests() -> AsyncIterator[bytes]:
        yield request
        await asyncio.Event().wait()  # the client keeps its side open

    if ending == "deadline":
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await channel.unary_unary(SERVICE + "ModelInfer")(request, timeout=0.3)
        assert failure.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    else:
        call = (
            channel.unary_unary(SERVICE + "ModelInfer")(request)
            if ending == "cancel"
            else channel.stream_stream(SERVICE + "ModelStreamInfer")(requests())
        )
        await asyncio.wait_for(probe.started.wait(), 5)
        call.cancel()

    await asyncio.wait_for(probe.cancelled.wait(), 5)
    await until(lambda: router.releases == [False])


@pytest.mark.parametrize("waiting_in", ["replica", "resolver"])
async def test_stop_ends_calls_in_flight_and_closes_the_port(probe: Probe, waiting_in: str) -> None:
    # A replica that hangs, or one that never comes up while the resolver waits for it.
    router = Router({"iris": probe.address}, delay=30 if waiting_in == "resolver" else 0)
    probe.mode = "hang"
    gateway = grpc_gateway(router)
    port = await gateway.start()
    request = pb.ModelInferRequest(model_name="iris").SerializeToString()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(SERVICE + "ModelInfer")(request)
        await until(lambda: router.calls != [] and (waiting_in == "resolver" or probe.seen != []))

        started = time.monotonic()
        await gateway.stop(grace=0.1)

        assert time.monotonic() - started < 5
        with pytest.raises(grpc.aio.AioRpcError):
            await call
    # Released by the time stop() returns, and only when a replica was handed out.
    assert router.releases == ([False] if waiting_in == "replica" else [])
    assert gateway._shared.upstreams == {}
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    await gateway.stop()  # twice is harmless


async def test_a_replica_that_takes_one_stream_per_connection_gets_a_second_connection(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel
) -> None:
    probe, server = await start_probe(("grpc.max_concurrent_streams", 1))
    probe.mode = "hang"
    router.routes["iris"] = probe.address
    request = pb.ModelInferRequest(model_name="iris").SerializeToString()
    try:
        calls = [channel.unary_unary(SERVICE + "ModelInfer")(request) for _ in range(2)]
        await until(lambda: len(probe.seen) == 2)
        assert len(gateway._shared.upstreams[probe.address]) == 2
        for call in calls:
            call.cancel()
        await until(lambda: router.releases == [False, False])
    finally:
        await server.stop(None)


async def test_a_replica_that_goes_away_mid_call_is_unavailable_and_released_as_failed(
    gateway: GrpcRelay, router: Router, channel: grpc.aio.Channel
) -> None:
    probe, server = await start_probe()
    probe.mode = "hang"
    router.routes["iris"] = probe.address
    request = pb.ModelInferRequest(model_name="iris").SerializeToString()
    call = channel.unary_unary(SERVICE + "ModelInfer")(request, timeout=10)
    await until(lambda: probe.seen != [])

    await server.stop(None)  # the replica's process ends

    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert router.releases == [False]
    await until(lambda: gateway._shared.upstreams == {})
