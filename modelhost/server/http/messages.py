"""The request and response objects REST handlers see: plain, small, and fast to build."""

from __future__ import annotations

import zlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from modelhost import errors
from modelhost.protocol import v2_json
from modelhost.server.http.streaming import StreamingResponse

__all__ = [
    "Handler",
    "HttpRequest",
    "HttpResponse",
    "Route",
    "body_model",
    "json_response",
    "read_body",
]


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


Handler = Callable[[HttpRequest], Awaitable[HttpResponse | StreamingResponse]]


class Route:
    """A route of the HTTP app or of one of its route tables: method, handler, labels."""

    __slots__ = ("endpoint", "handler", "method", "protocol")

    def __init__(self, method: str, handler: Handler, protocol: str, endpoint: str) -> None:
        self.method = method
        self.handler = handler
        self.protocol = protocol
        self.endpoint = endpoint


async def read_body(
    receive: Callable[[], Awaitable[Mapping[str, Any]]], headers: dict[str, str], limit: int
) -> bytes:
    """An ASGI request's whole body, refused past ``limit`` (as sent and as decompressed)."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise errors.PayloadTooLarge(
            f"Request body of {declared} bytes exceeds the limit of {limit} bytes."
        )
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise errors.InvalidInput("Client disconnected before sending the whole body.")
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise errors.PayloadTooLarge(f"Request body exceeds the limit of {limit} bytes.")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding and encoding != "identity":
        body = _decompress(body, encoding, limit)
    return body


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise errors.UnsupportedMediaType(
            f"Content-Encoding {encoding!r} is not supported (gzip, deflate or identity)."
        )
    decoder = zlib.decompressobj(wbits)
    try:
        # Bounded so that a small compressed body cannot expand past the limit.
        data = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise errors.InvalidInput(f"Body is not valid {encoding} data: {exc}") from None
    if len(data) > limit or decoder.unconsumed_tail:
        raise errors.PayloadTooLarge(f"Decompressed body exceeds the limit of {limit} bytes.")
    return data


def body_model(body: bytes) -> str | None:
    """The ``model`` an OpenAI-style JSON body names, or None (not JSON, no such string)."""
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None
