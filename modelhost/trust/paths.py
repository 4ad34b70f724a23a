"""Which requests are for TrustyAI's API: one answer for the platform's gateway and ``serve``."""

from __future__ import annotations

__all__ = ["is_trust_path"]

_PATHS = frozenset(
    {"/consumer/kserve/v2", "/data/upload", "/info", "/info/names", "/info/tags", "/q/metrics"}
)
_PREFIXES = (
    "/metrics/group/",
    "/metrics/drift/",
    "/metrics/all/",
    "/explainers/",
    "/info/inference/ids/",
)


def is_trust_path(method: str, path: str) -> bool:
    """Whether ``method`` on ``path`` is one of TrustyAI's routes.

    ``POST /`` is the sink KServe's payload logger posts CloudEvents to; a server whose own
    ``/`` answers GETs only leaves it to the trust app.
    """
    path = path.rstrip("/") or "/"
    if path in _PATHS or path.startswith(_PREFIXES):
        return True
    return path == "/" and method == "POST"
