"""The model registry's API on the platform's gateway: Kubeflow Model Registry's REST API.

The registry (:mod:`modelhost.registry`) runs inside the gateway's process, over one SQLite
file in the platform's home or, when the settings name one, a PostgreSQL database. The
gateway hands it the API's paths (:func:`is_registry_request`); with tokens on, reads need a
caller's token and writes a deployer's (``gateway.http_admit``).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

from modelhost.registry import API_PREFIXES, RegistryApp, RegistrySettings, RegistryStore
from modelhost.transport.http1_proxy import InProcess, ProxiedRequest

__all__ = ["REGISTRY_OWNER", "RegistryHost", "is_registry_request"]

# The owner of the registry's requests at the gateway: tokens are checked by role.
REGISTRY_OWNER = "model-registry"
_PREFIXES = tuple(prefix + "/" for prefix in API_PREFIXES)


def is_registry_request(request: ProxiedRequest) -> bool:
    """Whether a request to the gateway (not to a service's host) is for the registry's API."""
    return request.path.startswith(_PREFIXES)


class RegistryHost:
    """The registry of one platform: its store and its app."""

    def __init__(self, home: Path, database_url: str | None = None) -> None:
        self._url = database_url or str(home / "registry.sqlite")
        self.store: RegistryStore | None = None
        self.destination: InProcess | None = None

    async def start(self) -> None:
        """Open the database (creating the table and indexes on first use)."""
        self.store = await asyncio.to_thread(RegistryStore, self._url)
        app = RegistryApp(self.store, RegistrySettings())
        self.destination = InProcess(cast(Any, app), REGISTRY_OWNER)

    async def stop(self) -> None:
        if self.store is not None:
            await asyncio.to_thread(self.store.close)
            self.store = None
