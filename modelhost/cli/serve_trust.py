"""``modelhost serve --trust``: TrustyAI's API on a plain model server's HTTP port.

The trust layer sits above the server, so the command builds it and hands it to the server
as a :class:`~modelhost.server.http.mount.Mount`: the server answers its own routes, and
TrustyAI's (ingest, ``/info``, fairness and drift metrics, explainers) go to the trust app,
with the server's tokens (GETs a caller token, writes a deployer token) when tokens are on.
Its local explainers call the server's models through the data plane (no HTTP hop).
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from modelhost.server.dataplane import DataPlane
    from modelhost.server.http.mount import Mount

__all__ = ["add_arguments", "trust_mount"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("trust (TrustyAI's API)")
    group.add_argument(
        "--trust",
        action="store_true",
        help="serve TrustyAI's API (data ingest, fairness and drift metrics) on the HTTP port",
    )
    group.add_argument(
        "--trust-store",
        "--trust_store",
        dest="trust_store",
        default="trust.sqlite",
        help="the SQLite file of the inference data store (trust.sqlite)",
    )


def trust_mount(args: argparse.Namespace) -> Mount | None:
    """The trust app as a mount for the server, or None without ``--trust``.

    Its scheduled metrics (``trustyai_spd``, ...) are on its own ``/q/metrics``, as on
    TrustyAI's service: the server's ``/metrics`` stays the data plane's.
    """
    if not getattr(args, "trust", False):
        return None
    # Imported here: a server without --trust never loads the trust layer.
    import asyncio

    from prometheus_client import CollectorRegistry

    from modelhost.server.http.mount import Mount
    from modelhost.trust import TrustApp, TrustSettings, TrustStore
    from modelhost.trust.paths import is_trust_path

    store = TrustStore(args.trust_store)
    app = TrustApp(store, CollectorRegistry(), TrustSettings())

    def bind(dataplane: DataPlane) -> None:
        # The local explainers ask the server's own models for the rows they make up.
        from modelhost.trust.explainers.dataplane_caller import DataPlaneModelCaller

        app.explainers.caller = DataPlaneModelCaller(dataplane)

    async def start() -> None:
        await asyncio.to_thread(app.scheduler.restore)

    async def stop() -> None:
        await app.settled()
        await asyncio.to_thread(store.close)

    return Mount(
        matches=is_trust_path,
        app=cast(Any, app),
        name="trust",
        on_start=start,
        on_stop=stop,
        bind=bind,
    )
