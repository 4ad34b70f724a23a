"""Placeholder: the gRPC server (being written)."""

from __future__ import annotations

from modelhost.server.dataplane import DataPlane
from modelhost.server.metrics import Metrics
from modelhost.settings import ServerSettings


class GrpcServer:
    def __init__(self, dataplane: DataPlane, metrics: Metrics, settings: ServerSettings) -> None:
        self.dataplane = dataplane

    async def start(self, host: str, port: int) -> int:
        return 0

    def set_not_serving(self) -> None:
        pass

    async def stop(self, grace: float) -> None:
        pass
