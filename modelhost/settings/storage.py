"""Where models are fetched to, and the storage clients' view of the environment."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from modelhost.settings.values import ENV_PREFIX, parse_bool, parse_size

__all__ = ["StorageSettings"]


def _default_cache_dir(env: Mapping[str, str], name: str) -> str:
    """``$XDG_CACHE_HOME/modelhost/<name>`` (``~/.cache`` where it is not set)."""
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "modelhost", name)


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """Where models are fetched to, and the environment the storage clients read.

    ``environ`` is a snapshot of the variables KServe's storage initializer reads
    (``AWS_ACCESS_KEY_ID``, ``S3_ENDPOINT``, ``AZURE_STORAGE_ACCESS_KEY``, ``HF_TOKEN``, ...):
    backends take credentials from it, never from ``os.environ`` directly.
    """

    # The content-addressed cache shared by every server and replica on the machine.
    cache_dir: str = ""
    # Where runtimes keep what makes their next start faster (scikit-learn's linear models
    # as plain arrays: ``runtimes/sklearn_distilled.py``); "" keeps nothing.
    fast_start_dir: str = ""
    # Where ``pvc://<claim>/<path>`` lives on this machine: ``<pvc_root>/<claim>/<path>``.
    pvc_root: str = ""
    # Progress bars while downloading: None shows them only on a terminal.
    progress: bool | None = None
    # A fetched archive (a .zip or .tar.gz storageUri, an OCI image's layers) is network
    # input: it may unpack to at most this many bytes in all, and, once past 64 MiB, to at
    # most this many times its compressed size, else the fetch is refused (a decompression
    # bomb: a 1 MB zip of zeros is 1 GiB). Model weights compress 1-2x, text models ~10x.
    # 0: no limit.
    max_unpack_bytes: int = 256 * 1024**3
    max_unpack_ratio: float = 100.0
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        """``MODELHOST_CACHE_DIR``, ``MODELHOST_PVC_ROOT``, ``MODELHOST_PROGRESS``,
        ``MODELHOST_MAX_UNPACK_BYTES`` (a size: ``500GB``, ``1TiB``),
        ``MODELHOST_MAX_UNPACK_RATIO``, ``MODELHOST_FAST_START_DIR`` and the environment
        snapshot; the caches default to ``$XDG_CACHE_HOME/modelhost/models`` and
        ``$XDG_CACHE_HOME/modelhost/fast-start``."""
        env = dict(os.environ if environ is None else environ)
        progress = env.get(ENV_PREFIX + "PROGRESS")
        limits: dict[str, Any] = {}
        for name, parse in (("max_unpack_bytes", parse_size), ("max_unpack_ratio", float)):
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                try:
                    limits[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None
        return cls(
            cache_dir=env.get(ENV_PREFIX + "CACHE_DIR") or _default_cache_dir(env, "models"),
            fast_start_dir=env.get(
                ENV_PREFIX + "FAST_START_DIR", _default_cache_dir(env, "fast-start")
            ),
            pvc_root=env.get(ENV_PREFIX + "PVC_ROOT") or "/mnt/pvc",
            progress=None if progress is None else parse_bool(progress),
            environ=env,
            **limits,
        )

    def replace(self, **changes: Any) -> StorageSettings:
        return dataclasses.replace(self, **changes)
