"""The embedded platform's settings: one object, built by the CLI and passed down explicitly."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from modelhost.control import PlatformConfig

__all__ = ["PlatformSettings", "default_home"]


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$MODELHOST_HOME``, else ``~/.modelhost``: state, logs, the running platform's address."""
    environ = os.environ if environ is None else environ
    home = environ.get("MODELHOST_HOME")
    return Path(home) if home else Path.home() / ".modelhost"


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
    replica_start_timeout_s: float = 300.0
    replica_stop_grace_s: float = 10.0
    autoscale_tick_s: float = 1.0

    @property
    def state_path(self) -> Path:
        return self.home / "state.db"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def address_path(self) -> Path:
        """Written by a running platform: where the CLI finds it."""
        return self.home / "platform.json"
