"""The embedded platform's settings: one object, built by the CLI and passed down explicitly."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from modelhost import errors
from modelhost.access import is_loopback
from modelhost.control import PlatformConfig
from modelhost.settings import Http1Limits, default_home

__all__ = ["GRAPH_ROUTERS", "PlatformSettings", "default_home"]

GRAPH_ROUTERS = ("in-process", "replica")


@dataclasses.dataclass(frozen=True)
class PlatformSettings:
    """Where the platform keeps its state and listens, and how it treats replicas."""

    home: Path
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    config: PlatformConfig = dataclasses.field(default_factory=PlatformConfig)
    # The environment every replica starts with (credentials, cache folder, emulator hosts),
    # the component's own env on top.
    replica_env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Relative paths in a custom container's command are relative to this folder.
    workdir: str | None = None
    # Access control on the gateway: "tokens", "none", or "auto" (tokens as soon as it
    # listens beyond loopback). The control API is apart: a Unix socket (owner only) and,
    # with ``api_port``, loopback TCP that always needs an admin or deployer token.
    auth: str = "auto"
    api_port: int | None = None
    api_host: str = "127.0.0.1"
    # TLS on the gateway's REST and gRPC ports (replicas stay clear text on loopback).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_ca_certs: str = ""
    replica_start_timeout_s: float = 300.0
    replica_stop_grace_s: float = 10.0
    autoscale_tick_s: float = 1.0
    # Fork tabular replicas from a pre-imported interpreter (modelhost.local.zygote) instead
    # of spawning each: a cold start without seconds of imports. Off: every replica spawns.
    zygote: bool = True
    # Run the gateway's event loop under SCHED_BATCH on Linux (modelhost.server.scheduling):
    # woken by a replica's answer, it does not preempt the replica, which goes on answering
    # the requests it already has; the two then take turns in bunches, not one request each.
    # Processes the gateway starts inherit the policy; a replica then sets its own
    # (``--batch_scheduling``).
    batch_scheduling: bool = True
    # The gateway's process keeps freed blocks under this many bytes in malloc's heap, as
    # a model server does (``modelhost.server.heap``; 0: glibc's own thresholds).
    malloc_mmap_threshold: int = 4 * 1024 * 1024
    # Where InferenceGraph routers run: "in-process" (in the gateway: no hop of their own)
    # or "replica" (a `modelhost graph` process each, scaled as the graph's spec says).
    graph_router: str = "in-process"
    # The model registry's database: a ``postgresql://`` URL, or None for the SQLite file
    # ``registry.sqlite`` in the home.
    registry_db: str | None = None
    # The REST gateway's HTTP/1.1 limits (``modelhost.settings.Http1Limits`` has their
    # reasons; docs/limits.md the table). The same on each component's own loopback port.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_idle_timeout_s: float = 65.0
    http_max_connections: int = 4096
    http_max_header_count: int = 128
    http_max_header_bytes: int = 64 * 1024
    http_max_body_bytes: int = 64 * 1024 * 1024
    http_write_buffer_bytes: int = 1024 * 1024

    def __post_init__(self) -> None:
        if self.graph_router not in GRAPH_ROUTERS:
            raise errors.InvalidInput(
                f"graph_router: {self.graph_router!r} is not one of {', '.join(GRAPH_ROUTERS)}"
            )
        if self.config.storage_spec_secret is not None:
            # A storage spec names a Kubernetes Secret; this platform has no Secret store,
            # and planning with one would start replicas with an empty model folder.
            raise errors.InvalidInput(
                "storage_spec_secret: the embedded platform has no Secrets to read a storage "
                "spec from; give models a storageUri (credentials from the environment)"
            )

    def http1_limits(self) -> Http1Limits:
        return Http1Limits(
            header_timeout_s=self.http_header_timeout_s,
            body_timeout_s=self.http_body_timeout_s,
            idle_timeout_s=self.http_idle_timeout_s,
            max_connections=self.http_max_connections,
            max_header_count=self.http_max_header_count,
            max_header_bytes=self.http_max_header_bytes,
            max_body_bytes=self.http_max_body_bytes,
            write_buffer_bytes=self.http_write_buffer_bytes,
        )

    @property
    def state_path(self) -> Path:
        return self.home / "state.db"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def token_path(self) -> Path:
        return self.home / "tokens.db"

    @property
    def audit_path(self) -> Path:
        return self.home / "audit.log"

    @property
    def gateway_auth(self) -> bool:
        """Whether the gateway checks tokens (``auto``: when bound beyond loopback)."""
        if self.auth == "auto":
            return not is_loopback(self.host)
        return self.auth == "tokens"

    @property
    def address_path(self) -> Path:
        """Written by a running platform: where the CLI finds it."""
        return self.home / "platform.json"
