"""What an HTTP/2 peer may send beyond the framing: well-formed header lists, frame budgets.

``http2`` reads frames; this module holds the two judgements it asks for that are not about
one frame's layout. A request's header list must be well formed (RFC 9113, section 8.2-8.3:
lowercase names, pseudo-headers first and only the request's, no connection-specific
fields), else the stream is refused as malformed. And some frames cost us work but carry
nothing a client needs to send often (PING, SETTINGS, RST_STREAM, empty frames): each kind
has a per-second budget per connection, past which the peer is flooding (section 10.5).
"""

from __future__ import annotations

import re

__all__ = ["FrameBudget", "malformed_request", "malformed_trailers"]

_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
# RFC 9110's token characters, lowercase only (section 8.2.1 of RFC 9113).
_NAME = re.compile(rb"[a-z0-9!#$%&'*+\-.^_`|~]+")
# Field values: no NUL, CR or LF anywhere; no whitespace at either end (section 8.2.1).
_BAD_VALUE = re.compile(rb"[\x00\r\n]|^[ \t]|[ \t]$")


def malformed_request(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header list is malformed, or None when it is well formed."""
    seen: set[bytes] = set()
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                return f"pseudo-header {name!r} after a regular header"
            if name not in _REQUEST_PSEUDO:
                return f"pseudo-header {name!r} is not a request's"
            if name in seen:
                return f"pseudo-header {name!r} twice"
            seen.add(name)
        else:
            regular = True
            why = _bad_field(name, value)
            if why is not None:
                return why
        if _BAD_VALUE.search(value):
            return f"the value of {name!r} holds NUL, CR, LF or outer whitespace"
    for required in (b":method", b":scheme", b":path"):
        if required not in seen:
            return f"no {required.decode()} pseudo-header"
    return None


def malformed_trailers(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a trailer section is malformed (trailers carry no pseudo-headers), or None."""
    for name, value in headers:
        if name[:1] == b":":
            return f"pseudo-header {name!r} in trailers"
        why = _bad_field(name, value)
        if why is not None:
            return why
        if _BAD_VALUE.search(value):
            return f"the value of {name!r} holds NUL, CR, LF or outer whitespace"
    return None


def _bad_field(name: bytes, value: bytes) -> str | None:
    if not _NAME.fullmatch(name):
        return f"field name {name!r} is not a lowercase token"
    if name in _CONNECTION_SPECIFIC:
        return f"connection-specific field {name!r}"
    if name == b"te" and value != b"trailers":
        return "te other than 'trailers'"
    return None


class FrameBudget:
    """How many frames of one kind a connection may send per second of the loop's clock.

    Counted in whole-second windows: cheap (one comparison and one addition per frame of
    the kinds counted, none for the frames calls are made of) and enough to tell a client
    from a flood, which sends thousands where a client sends a few.
    """

    __slots__ = ("_count", "_window", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._window = -1.0
        self._count = 0

    def spend(self, now: float) -> bool:
        """Count one frame at ``now``; False once this second's budget is spent."""
        if now - self._window >= 1.0:
            self._window = now
            self._count = 0
        self._count += 1
        return self._count <= self.limit
