"""Which endpoints a token must reach, and with which role: one table for REST and gRPC.

Used where ``--auth tokens`` is on (``modelhost.access``); endpoint names are the metrics'.
"""

from __future__ import annotations

from modelhost.access import Role

__all__ = ["OPEN_ENDPOINTS", "role_for"]

# Open without a token: liveness and readiness, the server's and a model's, which
# Kubernetes probes call without credentials.
OPEN_ENDPOINTS = frozenset({"live", "ready", "model_ready"})
# The repository extension changes what the server holds.
_DEPLOYER_ENDPOINTS = frozenset({"repository_load", "repository_unload"})


def role_for(endpoint: str) -> Role:
    """The least role that may call ``endpoint``."""
    return Role.DEPLOYER if endpoint in _DEPLOYER_ENDPOINTS else Role.CALLER
