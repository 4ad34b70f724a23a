"""Errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``.

The status comes from ``modelhost.errors`` as everywhere else; this module adds only the
fields OpenAI's clients read: ``type`` from the status, ``param`` naming the offending
request field, and ``code`` for the cases clients branch on (``model_not_found``, ...).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from modelhost import errors
from modelhost.server.http.messages import HttpResponse
from modelhost.server.http.streaming import ResponseTimeout

__all__ = [
    "ContentFiltered",
    "InvalidParameter",
    "error_payload",
    "kserve_error_payload",
    "openai_error_response",
]

logger = logging.getLogger("modelhost.server")


class InvalidParameter(errors.InvalidInput):
    """A request field is invalid: 400, with ``param`` naming it."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


class ContentFiltered(errors.InvalidInput):
    """A guardrail refused the text: 400 on input, ``finish_reason`` "content_filter" on output."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = "content_filter"


def _type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_payload(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and OpenAI-shaped body for ``exc``; logs what is the server's own fault."""
    status = errors.http_status(exc)
    param = getattr(exc, "param", None)
    code = getattr(exc, "code", None)
    message = errors.error_message(exc)
    if isinstance(exc, errors.ModelNotFound):
        param, code = "model", "model_not_found"
        message = f"The model `{exc.name}` does not exist."
    elif isinstance(exc, errors.ModelNotReady):
        code = "model_not_ready"
    elif isinstance(exc, errors.Overloaded):
        code = "rate_limit_exceeded"
    elif isinstance(exc, ResponseTimeout):
        code = "timeout"
    elif status >= 500 and not isinstance(exc, errors.ModelhostError):
        logger.error("Unhandled error in an OpenAI request", exc_info=exc)
    body = {"error": {"message": message, "type": _type(status), "param": param, "code": code}}
    return status, body


def kserve_error_payload(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and KServe's ``{"error": message}`` body (the generate extension's shape)."""
    status = errors.http_status(exc)
    if status >= 500 and not isinstance(exc, errors.ModelhostError):
        logger.error("Unhandled error in a generate request", exc_info=exc)
    return status, {"error": errors.error_message(exc)}


def openai_error_response(exc: BaseException) -> HttpResponse:
    status, body = error_payload(exc)
    return HttpResponse(status, orjson.dumps(body))
