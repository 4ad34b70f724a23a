"""The check every data-plane listener makes: who is calling, may they reach this, how often.

The model server (REST and gRPC), the platform's gateway (REST and gRPC) and the control
API call :meth:`Guard.admit` with the request's ``Authorization`` value and what it is for
(a namespace and a service); it answers an :class:`Admission` or raises ``Unauthenticated``
(401 / UNAUTHENTICATED), ``PermissionDenied`` (403 / PERMISSION_DENIED) or ``RateLimited``
(429 / RESOURCE_EXHAUSTED). A refused token leaves nothing behind: no cache entry, no
counter, so a flood of wrong tokens costs no memory.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable

from modelhost import errors
from modelhost.access.limits import Limiter, retry_after_header
from modelhost.access.tokens import Role, Token, TokenTable, split_token

__all__ = ["OPEN", "Admission", "Guard", "bearer_token", "check_scope", "refusal_headers"]

_KNOWN_MAX = 4096
_HINT = 'send "Authorization: Bearer <token>" (make one with `modelhost token create`)'


class Admission:
    """One admitted request: its token, and the limits' share to give back when it ends."""

    __slots__ = ("_guard", "_held", "token")

    def __init__(self, guard: Guard | None, token: Token | None, held: bool) -> None:
        self._guard = guard
        self.token = token
        self._held = held

    def release(self) -> None:
        """The request ended (idempotent)."""
        if self._held and self._guard is not None and self.token is not None:
            self._held = False
            self._guard.limiter.give_back(self.token)


OPEN = Admission(None, None, False)
"""What every request gets where access control is off."""


def bearer_token(authorization: bytes | str | None) -> str:
    """The token in an ``Authorization: Bearer <token>`` value; Unauthenticated if none."""
    if authorization is None or not authorization:
        raise errors.Unauthenticated(f"This endpoint needs a token: {_HINT}.")
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated(f"The Authorization header is not a bearer token: {_HINT}.")
    return token.strip()


class Guard:
    """Token checks over a :class:`TokenTable`, with per-token limits."""

    def __init__(
        self,
        table: TokenTable,
        limiter: Limiter | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.table = table
        self.limiter = limiter or Limiter()
        self._wall_clock = wall_clock
        # Header values already verified, to the token they carry: a client sends the same
        # value on every request, and parsing and hashing it again costs more than the rest
        # of the check. Only verified values enter, so its size is bounded by the token file
        # (and _KNOWN_MAX), never by what strangers send.
        self._known: dict[bytes | str, Token] = {}

    def authenticate(self, authorization: bytes | str | None) -> Token:
        """The valid, unexpired token the header carries; Unauthenticated otherwise."""
        if authorization is not None:
            known = self._known.get(authorization)
            # The table hands out new records when the file changes (a revocation): a value
            # verified against an older record goes the long way again.
            if (
                known is not None
                and self.table.find(known.id) is known
                and not known.expired(self._wall_clock())
            ):
                return known
        token = self._verify(authorization)
        if authorization is not None:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[authorization] = token
        return token

    def _verify(self, authorization: bytes | str | None) -> Token:
        text = bearer_token(authorization)
        parts = split_token(text)
        token = self.table.find(parts[0]) if parts is not None else None
        if parts is None or token is None or not token.matches(parts[1]):
            # One message for unknown, revoked and mistyped: which one is not the caller's
            # business, and the text never echoes the token.
            raise errors.Unauthenticated("The token is not valid (unknown, revoked or mistyped).")
        if token.expired(self._wall_clock()):
            when = datetime.datetime.fromtimestamp(token.expires_at or 0, datetime.timezone.utc)
            raise errors.Unauthenticated(
                f"Token {token.name!r} expired at {when:%Y-%m-%dT%H:%M:%SZ}."
            )
        return token

    def admit(
        self,
        authorization: bytes | str | None,
        namespace: str | None,
        service: str | None,
        role: Role = Role.CALLER,
    ) -> Admission:
        """Admit one request for ``namespace``/``service`` (None: not about one)."""
        return self.enter(self.authenticate(authorization), namespace, service, role)

    def enter(
        self,
        token: Token,
        namespace: str | None,
        service: str | None,
        role: Role = Role.CALLER,
    ) -> Admission:
        """Admit an authenticated ``token`` for ``namespace``/``service``: scope, then limits.

        For listeners that authenticate before they know what a request is for.
        """
        check_scope(token, namespace, service, role)
        return self.hold(token)

    def hold(self, token: Token) -> Admission:
        """Take ``token``'s share of its limits for one request (its scope checked elsewhere)."""
        return Admission(self, token, self.limiter.take(token))


def check_scope(token: Token, namespace: str | None, service: str | None, role: Role) -> None:
    """PermissionDenied unless ``token`` reaches ``namespace``/``service`` with ``role``."""
    # Every role may do what a caller may: the common case asks nothing more.
    if role is not Role.CALLER and token.role.rank < role.rank:
        raise errors.PermissionDenied(
            f"Token {token.name!r} has the role {token.role.value}; this needs {role.value}"
            f"{' or admin' if role is Role.DEPLOYER else ''}."
        )
    if token.namespace is not None and namespace != token.namespace:
        where = f"namespace {namespace!r}" if namespace else "requests outside a namespace"
        raise errors.PermissionDenied(
            f"Token {token.name!r} is for namespace {token.namespace!r}, not {where}."
        )
    if token.service is not None and service != token.service:
        what = f"service {service!r}" if service else "requests not for one service"
        raise errors.PermissionDenied(
            f"Token {token.name!r} is for service {token.service!r}, not {what}."
        )


def refusal_headers(exc: BaseException) -> dict[str, str]:
    """The headers an HTTP refusal carries: how to authenticate (401), when to retry (429)."""
    if isinstance(exc, errors.Unauthenticated):
        return {"www-authenticate": 'Bearer realm="modelhost"'}
    if isinstance(exc, errors.RateLimited):
        return {"retry-after": retry_after_header(exc.retry_after)}
    return {}
