"""``storageUri``s that are already on this machine: paths, ``file://`` and ``pvc://``.

These are served where they are, never copied into the cache: KServe mounts a PVC
straight into the container, and a local folder is its own best copy.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from modelhost import errors
from modelhost.settings import StorageSettings

__all__ = ["local_path"]


def local_path(uri: str, scheme: str, settings: StorageSettings) -> Path:
    """The existing file or folder that ``uri`` (scheme ``""``, ``file`` or ``pvc``) names."""
    if scheme == "pvc":
        path = _pvc_path(uri, settings)
    elif scheme == "file":
        # KServe drops the prefix and keeps the rest as a path: file:///abs or file://rel.
        path = Path(uri[len("file://") :])
    else:
        path = Path(uri).expanduser()
    if not path.exists():
        raise errors.StorageNotFound(f"{uri}: no such file or folder ({path}).")
    return path


def _pvc_path(uri: str, settings: StorageSettings) -> Path:
    claim, _, subpath = uri[len("pvc://") :].partition("/")
    parts = PurePosixPath(subpath).parts
    if not claim or claim in (".", "..") or ".." in parts:
        raise errors.StorageError(f"{uri}: expected pvc://<claim>/<path> without '..'.")
    root = settings.pvc_root or StorageSettings.from_env(settings.environ).pvc_root
    return Path(root, claim, *parts)
