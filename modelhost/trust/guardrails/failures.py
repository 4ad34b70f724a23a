"""The detector API's two refusals, placed in modelhost's error hierarchy.

The detector API answers ``{"code", "message"}`` with 404 for an unknown detector id and
422 for a body it cannot read (its ``Error`` schema).
"""

from __future__ import annotations

from modelhost import errors

__all__ = ["DetectorNotFound", "RequestInvalid"]


class DetectorNotFound(errors.ModelhostError):
    """No detector has the id a request names."""

    status_code = 404
    grpc_status = "NOT_FOUND"


class RequestInvalid(errors.InvalidInput):
    """The body is not the detector API's (or the orchestrator's) request."""

    status_code = 422
