"""TrustyAI's API on the platform's gateway: the inference data store and its metrics.

The trust service (:mod:`modelhost.trust`) runs inside the gateway's process, over one SQLite
file in the platform's home. The gateway hands it TrustyAI's paths (:func:`is_trust_request`):
its ingest routes, ``/info``, ``/q/metrics`` and the fairness and drift metrics; its scheduled
metrics join the gateway's ``/metrics``. A component whose ``logger.url`` is
:data:`TRUST_SINK` logs into the store in-process, with no HTTP hop and no token: the platform's
built-in sink for KServe's payload logger. Its whole exchanges (``mode: all``) are decoded and
stored by a writer process (:mod:`modelhost.trust.process_writer`), off the gateway's loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from prometheus_client import CollectorRegistry

from modelhost import errors
from modelhost.local.payload_logger import LogContext
from modelhost.local.traffic import TrafficRouter
from modelhost.local.trust_models import PlatformModelCaller
from modelhost.transport.http1_proxy import InProcess, ProxiedRequest
from modelhost.trust import TrustApp, TrustSettings, TrustStore
from modelhost.trust.paths import is_trust_path
from modelhost.trust.process_writer import ProcessWriter

__all__ = ["TRUST_OWNER", "TRUST_SINK", "TrustHost", "is_trust_request"]

logger = logging.getLogger("modelhost.trust")

# The logger URL of the built-in sink (KServe's logger.url: any URL its logger posts to).
TRUST_SINK = "modelhost://trust"
# The owner of the trust service's requests at the gateway: tokens are checked by role.
TRUST_OWNER = "trustyai"


def is_trust_request(request: ProxiedRequest) -> bool:
    """Whether a request to the gateway (not to a service's host) is for TrustyAI's API."""
    path = request.path.rstrip("/") or "/"
    if path == "/":
        # KServe's logger posts CloudEvents to the sink's root; nothing else goes there.
        return request.method == b"POST" and request.header(b"ce-type") is not None
    return is_trust_path(request.method.decode("latin-1"), path)


class TrustHost:
    """The trust service of one platform: its store, its app, and the logger's sink."""

    def __init__(
        self, home: Path, registry: CollectorRegistry, traffic: TrafficRouter | None = None
    ) -> None:
        path = str(home / "trust.sqlite")
        self.store = TrustStore(path)
        # The local explainers call the platform's services (without ``traffic``: 501).
        self.caller = PlatformModelCaller(traffic) if traffic is not None else None
        self.app = TrustApp(self.store, registry, TrustSettings(), self.caller)
        self.destination = InProcess(cast(Any, self.app), TRUST_OWNER)
        # Logged exchanges are decoded and stored by a process of their own, at low priority.
        self.exchanges = ProcessWriter(path, self.app.rows_written)

    async def start(self) -> None:
        """Bring back the scheduled metrics the store holds; start the exchanges' writer."""
        await asyncio.to_thread(self.app.scheduler.restore)
        await self.exchanges.start()

    async def stop(self) -> None:
        await self.exchanges.stop()
        await self.app.settled()
        if self.caller is not None:
            await self.caller.close()
        await asyncio.to_thread(self.store.close)

    async def sink(self, headers: Mapping[str, str], body: bytes) -> int:
        """The payload logger's delivery to the store: one CloudEvent; its HTTP status.

        No HTTP and no ASGI on this path: the event is paired and queued for the store's
        next group commit (:class:`~modelhost.trust.writer.BatchWriter`).
        """
        attributes = {k[3:].lower(): v for k, v in headers.items() if k.lower().startswith("ce-")}
        try:
            self.app.ingest_logged(attributes, body)
        except errors.ModelhostError as exc:
            logger.warning("trust: a logged event was refused: %s", exc)
            return errors.http_status(exc)
        return 202

    def record(
        self, ctx: LogContext, request_id: str, request: bytes, status: int, response: bytes
    ) -> None:
        """The payload logger's delivery of a whole ``mode: all`` exchange: sent as is to the
        store's writer process, which decodes it. Only answered inferences (2xx) are rows."""
        if 200 <= status < 300:
            self.exchanges.add_exchange(ctx.service, request_id, request, response)
