"""What a protocol served beside v1 and v2 gives the HTTP app: its routes and its errors.

The app routes KServe's v1 and v2 itself; another protocol (OpenAI's API, with v2's generate
extension) plugs in as a :class:`RouteProvider` that whoever builds the app passes in. The
app so imports no protocol above it, and a protocol's handlers, error shape and streams
stay in its own package.
"""

from __future__ import annotations

from typing import Protocol

from modelhost.server.http.messages import HttpRequest, HttpResponse, Route

__all__ = ["RouteProvider"]


class RouteProvider(Protocol):
    """Routes the app serves besides its own, and the error shape of their protocol."""

    # The ``Route.protocol`` of its own routes: their errors are shaped by
    # ``error_response``, and those with no model in the path name it in the body.
    protocol: str

    def route(self, path: str) -> tuple[Route, str] | None:
        """The route for a path of its own and the model name in it ("" for none), or None."""
        ...

    def model_route(self, verb: str) -> Route | None:
        """The route of ``/v2/models/{name}/<verb>`` for a verb v2 lacks, or None."""
        ...

    async def v1_models(self, request: HttpRequest) -> HttpResponse:
        """``GET /v1/models``: v1's model list, which clients of this protocol call too."""
        ...

    def error_response(self, exc: BaseException) -> HttpResponse:
        """``exc`` as this protocol's error response (the status from ``modelhost.errors``)."""
        ...
