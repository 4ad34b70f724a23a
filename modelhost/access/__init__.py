"""Access control: bearer tokens with roles and scopes, per-token limits, TLS, the audit log.

Every listener that takes requests from outside asks this layer, and only this layer,
whether to serve them (see ``docs/security.md``)::

    Authorization: Bearer mh_<id>_<secret>
        → Guard.admit(header, namespace, service)    tokens.py: TokenTable (file, hashed)
            → Unauthenticated 401 / PermissionDenied 403 / RateLimited 429   limits.py
            → Admission (release() when the request ends)
"""

from __future__ import annotations

import ipaddress
import logging

from modelhost.access.audit import AuditLog
from modelhost.access.guard import (
    OPEN,
    Admission,
    Guard,
    bearer_token,
    check_scope,
    refusal_headers,
)
from modelhost.access.limits import Limiter, retry_after_header
from modelhost.access.tokens import (
    MAX_TOKEN_LENGTH,
    Role,
    Token,
    TokenStore,
    TokenTable,
    parse_duration,
)

__all__ = [
    "MAX_TOKEN_LENGTH",
    "OPEN",
    "Admission",
    "AuditLog",
    "Guard",
    "Limiter",
    "Role",
    "Token",
    "TokenStore",
    "TokenTable",
    "bearer_token",
    "check_scope",
    "is_loopback",
    "parse_duration",
    "refusal_headers",
    "retry_after_header",
    "warn_if_open",
]

logger = logging.getLogger("modelhost.access")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to bind) is reachable only from this machine."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_open(host: str, auth: bool, what: str) -> None:
    """Log a warning when ``what`` listens beyond loopback with no access control."""
    if not auth and not is_loopback(host):
        logger.warning(
            "%s listens on %s with no access control: anyone who can reach it can call "
            "every model. Use --auth tokens (and TLS: --ssl_certfile/--ssl_keyfile).",
            what,
            host,
        )
