"""``GrpcServer``: the gRPC port of a ``ModelServer``, with health checking and reflection.

One ``grpc.aio`` server carries the Open Inference Protocol service, the standard
``grpc.health.v1.Health`` service (SERVING until the server drains) and server
reflection, so that grpcurl and load balancers work without the .proto file.

With ``native_grpc`` (the default) that server listens on loopback only, on a port the
kernel picks, and the gRPC port is a relay in front of it (``relay``): ``ModelInfer`` is
answered on the relay's own connection (``native_infer``), every other call is passed on
to grpc.aio. grpc.aio's cost per call is more than the rest of an iris answer, batched;
the relay's HTTP/2 is a fraction of it (bench/RESULTS.md, run 7).

With TLS (``tls``, a ``CertificateReloader``) the gRPC port serves TLS and follows the
certificate files: the relay through an ``ssl.SSLContext``, grpc.aio (``native_grpc`` off)
through its dynamic credentials. The loopback server behind the relay stays clear text.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Any

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection, reflection_pb2

from modelhost.access import Guard
from modelhost.access.tls import CertificateReloader
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.protocol._generated import grpc_predict_v2_pb2_grpc as pb_grpc
from modelhost.server.dataplane import DataPlane
from modelhost.server.grpc.native_infer import native_calls
from modelhost.server.grpc.servicer import InferenceServicer
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings
from modelhost.transport.grpc_relay import GrpcRelay
from modelhost.transport.target import Target

__all__ = ["INFERENCE_SERVICE", "GrpcServer"]

INFERENCE_SERVICE = "inference.GRPCInferenceService"
_HEALTH_SERVICE = "grpc.health.v1.Health"

# How long a thread other than the server's waits for NOT_SERVING to take effect.
_CROSS_THREAD_TIMEOUT = 5.0


class GrpcServer:
    """Serves ``GRPCInferenceService`` over a ``DataPlane``; created by ``ModelServer``."""

    def __init__(
        self,
        dataplane: DataPlane,
        metrics: Metrics,
        settings: ServerSettings,
        guard: Guard | None = None,
        tls: CertificateReloader | None = None,
    ) -> None:
        self.guard = guard
        self.tls = tls
        self.dataplane = dataplane
        self.metrics = metrics
        self.settings = settings
        self._server: Any = None
        self._relay: GrpcRelay | None = None
        self._health = health_aio.HealthServicer()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> int:
        """Bind ``host:port`` (0 picks a free port), start serving, return the port."""
        servicer = InferenceServicer(self.dataplane, self.metrics, self.guard)
        if not self.settings.native_grpc:
            return await self._start_grpc_aio(
                servicer, host, port, self.settings.reuse_port, tls=self.tls
            )
        inner = await self._start_grpc_aio(servicer, "127.0.0.1", 0, reuse_port=False)
        target = Target(address=f"127.0.0.1:{inner}", release=_nothing_to_release)

        async def resolve(host: str | None, model: str | None) -> Target:
            return target

        limit = self.settings.max_request_bytes
        relay = GrpcRelay(
            resolve,
            resolve_now=lambda host, model: target,
            local=native_calls(servicer, limit),
            any_method=True,
            upstream_per_client=True,
            name="gRPC server",
            host=host,
            port=port,
            reuse_port=self.settings.reuse_port,
            ssl=self.tls.context(["h2"]) if self.tls is not None else None,
            limits=self.settings.http2_limits(),
            max_message_bytes=limit,
        )
        try:
            bound = await relay.start()
        except BaseException:
            await self._server.stop(None)
            self._server = None
            raise
        self._relay = relay
        return bound

    async def _start_grpc_aio(
        self,
        servicer: InferenceServicer,
        host: str,
        port: int,
        reuse_port: bool,
        tls: CertificateReloader | None = None,
    ) -> int:
        limit = self.settings.max_request_bytes
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                # gRPC sets SO_REUSEPORT by default: a second server on a busy port would
                # then share it silently instead of failing to start. Worker processes
                # share the port on purpose, and say so.
                ("grpc.so_reuseport", 1 if reuse_port else 0),
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
        await add_health_and_reflection(server, self._health)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            if tls is not None:
                bound = server.add_secure_port(address, tls.grpc_credentials())
            else:
                bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise OSError(f"Cannot bind the gRPC server to {address}: {exc}") from None
        await server.start()
        self._server = server
        self._loop = asyncio.get_running_loop()
        return int(bound)

    def set_not_serving(self) -> None:
        """Make health checks answer NOT_SERVING from now on (the server is draining).

        Safe from any thread: from another thread it returns once the change is made.
        """
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._pending = loop.create_task(self._health.enter_graceful_shutdown())
            return
        future = asyncio.run_coroutine_threadsafe(self._health.enter_graceful_shutdown(), loop)
        try:
            future.result(_CROSS_THREAD_TIMEOUT)
        except concurrent.futures.TimeoutError:
            future.cancel()

    async def stop(self, grace: float) -> None:
        """Report NOT_SERVING, refuse new calls, and let running ones finish within ``grace``."""
        if self._server is None:
            return
        # What set_not_serving does, awaited: NOT_SERVING is in place before calls stop.
        await self._health.enter_graceful_shutdown()
        relay, self._relay = self._relay, None
        if relay is not None:
            # Calls relayed to grpc.aio end within the relay's grace (or are cancelled).
            await relay.stop(grace)
            grace = 0
        await self._server.stop(grace)
        self._server = None


def _nothing_to_release(ok: bool) -> None:
    """The relay's target is this process's own grpc.aio server: no replica to give back."""


async def add_health_and_reflection(server: Any, health: health_aio.HealthServicer) -> None:
    """``grpc.health.v1.Health`` (SERVING: the server and the inference service) and
    reflection of both and of itself, on a grpc.aio ``server`` not started yet."""
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for service in ("", INFERENCE_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [INFERENCE_SERVICE, _HEALTH_SERVICE, reflection.SERVICE_NAME],
        server,
        pool=_reflection_pool(),
    )


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """The descriptors reflection serves: ours live in a private pool, not the default one."""
    pool = descriptor_pool.DescriptorPool()
    for file in (pb.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        pool.AddSerializedFile(file.serialized_pb)
    return pool
