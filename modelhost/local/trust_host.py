"""TrustyAI's API on the platform's gateway: the inference data store and its metrics.

The trust service (:mod:`modelhost.trust`) runs inside the gateway's process, over one SQLite
file in the platform's home. The gateway hands it TrustyAI's paths (:func:`is_trust_request`):
its ingest routes, ``/info``, ``/q/metrics`` and the fairness and drift metrics; its scheduled
metrics join the gateway's ``/metrics``. A component whose ``logger.url`` is
:data:`TRUST_SINK` logs into the store in-process, with no HTTP hop and no token: the platform's
built-in sink for KServe's payload logger.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from modelhost.transport.http1_proxy import InProcess, ProxiedRequest
from modelhost.trust import TrustApp, TrustSettings, TrustStore

__all__ = ["TRUST_OWNER", "TRUST_SINK", "TrustHost", "is_trust_request"]

# The logger URL of the built-in sink (KServe's logger.url: any URL its logger posts to).
TRUST_SINK = "modelhost://trust"
# The owner of the trust service's requests at the gateway: tokens are checked by role.
TRUST_OWNER = "trustyai"

_PATHS = frozenset(
    {"/consumer/kserve/v2", "/data/upload", "/info", "/info/names", "/info/tags", "/q/metrics"}
)
_PREFIXES = ("/metrics/group/", "/metrics/drift/")


def is_trust_request(request: ProxiedRequest) -> bool:
    """Whether a request to the gateway (not to a service's host) is for TrustyAI's API."""
    path = request.path.rstrip("/") or "/"
    if path in _PATHS or path.startswith(_PREFIXES):
        return True
    # KServe's logger posts CloudEvents to the sink's root.
    return path == "/" and request.method == b"POST" and request.header(b"ce-type") is not None


class TrustHost:
    """The trust service of one platform: its store, its app, and the logger's sink."""

    def __init__(self, home: Path, registry: CollectorRegistry) -> None:
        self.store = TrustStore(str(home / "trust.sqlite"))
        self.app = TrustApp(self.store, registry, TrustSettings())
        self.destination = InProcess(cast(Any, self.app), TRUST_OWNER)

    async def start(self) -> None:
        """Bring back the scheduled metrics the store holds."""
        await asyncio.to_thread(self.app.scheduler.restore)

    async def stop(self) -> None:
        await self.app.settled()
        await asyncio.to_thread(self.store.close)

    async def sink(self, headers: Mapping[str, str], body: bytes) -> int:
        """The payload logger's delivery to the store: one CloudEvent; its HTTP status."""
        raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        raw.append((b"content-length", str(len(body)).encode()))
        scope = {"type": "http", "method": "POST", "path": "/", "headers": raw}
        status = 500
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])

        await self.app(scope, receive, send)
        return status
