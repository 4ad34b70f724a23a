"""Per-token limits: a token bucket for the request rate, a counter for requests at once.

State exists only for tokens that were valid, so its size is bounded by the token file,
whatever a client sends. The limits are per process: a service with three replicas behind
the gateway is limited at the gateway, once.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from modelhost import errors
from modelhost.access.tokens import Token

__all__ = ["Limiter"]


class _State:
    __slots__ = ("in_flight", "level", "stamp")

    def __init__(self, level: float, stamp: float) -> None:
        self.level = level
        self.stamp = stamp
        self.in_flight = 0


class Limiter:
    """Takes one request's share of a token's limits, or raises ``RateLimited``."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, _State] = {}

    def take(self, token: Token) -> bool:
        """Count one request in; True if :meth:`give_back` must be called when it ends."""
        if token.rate is None and token.concurrency is None:
            return False
        now = self._clock()
        burst = float(token.burst or 1)
        state = self._states.get(token.id)
        if state is None:
            state = self._states[token.id] = _State(burst, now)
        if token.concurrency is not None and state.in_flight >= token.concurrency:
            raise errors.RateLimited(
                f"token {token.name!r} has {token.concurrency} requests running, its limit",
                retry_after=1.0,
            )
        if token.rate is not None:
            state.level = min(burst, state.level + (now - state.stamp) * token.rate)
            state.stamp = now
            if state.level < 1.0:
                wait = (1.0 - state.level) / token.rate
                raise errors.RateLimited(
                    f"token {token.name!r} is over its rate of {token.rate:g} requests/s",
                    retry_after=wait,
                )
            state.level -= 1.0
        if token.concurrency is None:
            return False
        state.in_flight += 1
        return True

    def give_back(self, token: Token) -> None:
        state = self._states.get(token.id)
        if state is not None and state.in_flight > 0:
            state.in_flight -= 1


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, at least 1 (HTTP has no fractions there)."""
    return str(max(1, math.ceil(seconds)))
