"""The seam between the relays and their owner: where a call goes, and who may make it.

Both relays, gRPC (``grpc_relay``) and HTTP/1.1 (``http1_proxy``), ask their owner's
callbacks where each call goes (resolve), get a :class:`Target` back, and tell it once, when
the call is over, whether it went through (``release(ok)``): the owner counts, frees the
replica, lets the activator go on. Before that, an ``admit`` callback may check the caller
(the platform's tokens) and hand back an :class:`Admission`, held until the call ends.
What a target is (a replica, a server's internal port) and how callers are checked are the
owner's business (``modelhost.local``, ``modelhost.server``, ``modelhost.access``), not this
layer's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

__all__ = ["Admission", "Target"]


class Target(NamedTuple):
    """Where one call goes (``host:port``), and what to tell its owner when the call ends.

    A tuple rather than a frozen dataclass: one is made per call, on the gateway's hot path.
    """

    address: str
    release: Callable[[bool], None]


class Admission(Protocol):
    """What an ``admit`` callback hands back for a call it let through (``modelhost.access``'s
    ``Admission``): who called, and the place the call holds until it ends."""

    @property
    def token(self) -> object | None: ...

    def release(self) -> None: ...
