"""``modelhost up``: the platform, its HTTP gateway (with the control API) and its gRPC gateway.

It runs in the foreground until SIGINT or SIGTERM, then stops every replica; while it runs,
``<home>/platform.json`` tells the CLI where it listens.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal

from modelhost.local import gateway
from modelhost.local.http_proxy import ProxyServer
from modelhost.local.platform import Platform
from modelhost.local.settings import PlatformSettings
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.server.grpc.relay import GrpcRelay, NowResolver, Resolver

__all__ = ["PlatformServer", "grpc_gateway", "run"]

logger = logging.getLogger("modelhost.local")

# The gateway is alive and ready whenever it answers; whether a model is ready is the
# replica's answer to ModelReady.
_ANSWERED = {
    b"ServerLive": pb.ServerLiveResponse(live=True).SerializeToString(),
    b"ServerReady": pb.ServerReadyResponse(ready=True).SerializeToString(),
}


def grpc_gateway(
    resolve: Resolver,
    *,
    resolve_now: NowResolver | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
) -> GrpcRelay:
    """The platform's gRPC gateway: a relay to the replicas ``resolve`` names."""
    return GrpcRelay(
        resolve,
        resolve_now=resolve_now,
        answered=_ANSWERED,
        name="gRPC gateway",
        host=host,
        port=port,
    )


class PlatformServer:
    """The platform with its two gateways; ``start`` returns once both listen."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.platform = Platform(settings)
        self._http: ProxyServer | None = None
        self._grpc: GrpcRelay | None = None

    @property
    def http_port(self) -> int:
        assert self._http is not None
        return self._http.port

    @property
    def grpc_port(self) -> int:
        assert self._grpc is not None
        return self._grpc.port

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.http_port}"

    async def start(self) -> None:
        await self.platform.start()
        platform = self.platform
        self._http = ProxyServer(
            platform.forwarder,
            lambda request: gateway.resolve(platform, request),
            gateway.GatewayApp(platform),
        )
        await self._http.start(self.settings.host, self.settings.http_port)
        self._grpc = grpc_gateway(
            platform.resolve_grpc,
            resolve_now=platform.resolve_grpc_now,
            host=self.settings.host,
            port=self.settings.grpc_port,
        )
        await self._grpc.start()
        address = {
            "pid": os.getpid(),
            "url": self.url,
            "grpc": f"{self.settings.host}:{self.grpc_port}",
        }
        self.settings.address_path.write_text(json.dumps(address))
        logger.info("modelhost platform on %s (gRPC %s)", self.url, address["grpc"])

    async def stop(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            current = json.loads(self.settings.address_path.read_text())
            if current.get("pid") == os.getpid():
                self.settings.address_path.unlink()
        if self._grpc is not None:
            await self._grpc.stop()
        if self._http is not None:
            await self._http.stop()
        await self.platform.stop()


async def run(settings: PlatformSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = PlatformServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        print(f"modelhost platform listening on {server.url} (gRPC port {server.grpc_port})")
        await stop.wait()
    finally:
        try:
            await server.stop()
        finally:
            server.platform.kill_now()
