"""The request and response objects REST handlers see: plain, small, and fast to build."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelhost.protocol import v2_json

if TYPE_CHECKING:
    from modelhost.server.openai.streaming import DeferredResponse

__all__ = ["Handler", "HttpRequest", "HttpResponse", "Route", "json_response"]


@dataclass(slots=True)
class HttpRequest:
    method: str
    path: str
    # Header names are lower-case; a repeated header keeps its last value.
    headers: dict[str, str]
    body: bytes
    # Path parameters the router extracted: model name, version.
    model: str = ""
    version: str | None = None
    query: str = ""


@dataclass(slots=True)
class HttpResponse:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    return HttpResponse(status, v2_json.dumps(content), headers=headers or {})


Handler = Callable[[HttpRequest], Awaitable["HttpResponse | DeferredResponse"]]


class Route:
    """A route of the HTTP app or of one of its route tables: method, handler, labels."""

    __slots__ = ("endpoint", "handler", "method", "protocol")

    def __init__(self, method: str, handler: Handler, protocol: str, endpoint: str) -> None:
        self.method = method
        self.handler = handler
        self.protocol = protocol
        self.endpoint = endpoint
