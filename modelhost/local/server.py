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
from modelhost.local.grpc_gateway import GrpcGateway
from modelhost.local.http_proxy import ProxyServer
from modelhost.local.platform import Platform
from modelhost.local.settings import PlatformSettings

__all__ = ["PlatformServer", "run"]

logger = logging.getLogger("modelhost.local")


class PlatformServer:
    """The platform with its two gateways; ``start`` returns once both listen."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.platform = Platform(settings)
        self._http: ProxyServer | None = None
        self._grpc: GrpcGateway | None = None

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
        self._grpc = GrpcGateway(
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
