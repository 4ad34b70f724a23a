"""The model server's budget of request bytes in flight, decoding included.

The HTTP/1.1 connection's own limits (deadlines, the connection cap, refusals) are the
transport's (:mod:`modelhost.transport.http1_limits`); this is what the server's
application charges each request's body to, so that memory has an overall cap.
"""

from __future__ import annotations

from modelhost import errors

__all__ = ["DECODE_FACTORS", "BytesInFlight", "Reservation"]

# Peak memory of decoding a body, over the body's size, by protocol (measured on rows of
# float32 values): v2 JSON decodes straight to arrays (about 2x); v1 and OpenAI JSON build
# Python lists and floats first (14x to 22x, by how long the numbers are written).
DECODE_FACTORS = {"v2": 2, "v1": 16, "openai": 16}
_DEFAULT_FACTOR = 16
# Seconds a refused client is told to wait: requests in flight are usually answered by then.
_RETRY_AFTER_S = 1.0


class BytesInFlight:
    """The server-wide budget of request bytes in flight, decoding included.

    A request is charged before its body is read (by its Content-Length) or as it is read
    (a chunked body), and gives its share back once answered. Past the budget it is refused
    with ``ServerBusy`` (503, Retry-After), unless nothing else is in flight: a request
    larger than the whole budget still passes alone, so it is never refused forever.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def reserve(self, protocol: str) -> Reservation:
        return Reservation(self, 1 + DECODE_FACTORS.get(protocol, _DEFAULT_FACTOR))

    def take(self, charge: int) -> None:
        if self.used and self.used + charge > self.limit:
            raise errors.ServerBusy(
                f"The server is holding {self.used} bytes of requests (decoded), and this one "
                f"would take {charge} more, past its budget of {self.limit}: retry later.",
                retry_after=_RETRY_AFTER_S,
            )
        self.used += charge

    def give(self, charge: int) -> None:
        self.used -= charge


class Reservation:
    """One request's share of :class:`BytesInFlight`: body bytes times ``factor``."""

    __slots__ = ("body_bytes", "budget", "charged", "factor")

    def __init__(self, budget: BytesInFlight, factor: int) -> None:
        self.budget = budget
        self.factor = factor
        self.body_bytes = 0
        self.charged = 0

    def cover(self, body_bytes: int) -> None:
        """Make the share cover a body of ``body_bytes`` (it only grows); ``ServerBusy``."""
        if body_bytes > self.body_bytes:
            charge = (body_bytes - self.body_bytes) * self.factor
            self.budget.take(charge)
            self.body_bytes = body_bytes
            self.charged += charge

    def release(self) -> None:
        if self.charged:
            self.budget.give(self.charged)
            self.charged = 0
