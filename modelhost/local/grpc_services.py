"""The gRPC gateway's own services: health checking and reflection, as a model server has.

The gateway relays ``inference.GRPCInferenceService`` to replicas; a client that asks it
``grpc.health.v1.Health/Check`` (a load balancer, ``grpc_health_probe``) or for reflection
(``grpcurl``) is answered by a grpc.aio server of the platform's own on an internal
loopback port, to which the relay passes every method outside the inference service.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1.health import aio as health_aio

from modelhost.server.grpc.server import add_health_and_reflection
from modelhost.transport.target import Target

__all__ = ["GatewayServices"]


class GatewayServices:
    """Health (SERVING until the platform stops) and reflection, on ``127.0.0.1:<free>``."""

    def __init__(self) -> None:
        self._health = health_aio.HealthServicer()
        self._server: Any = None

    async def start(self) -> Target:
        """Start serving; the target the relay sends other services' methods to."""
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        await add_health_and_reflection(server, self._health)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        self._server = server
        return Target(address=f"127.0.0.1:{port}", release=_nothing_to_release)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            await self._health.enter_graceful_shutdown()
            await server.stop(None)


def _nothing_to_release(ok: bool) -> None:
    """The target is the platform's own server, not a replica: nothing to give back."""
