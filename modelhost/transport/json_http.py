"""A small blocking JSON-over-HTTP client for the commands and resolvers that call an API.

The trust and registry commands and the ``model-registry://`` resolver each make a few short
calls: plain ``http.client`` on one kept connection costs them no event loop and no import of
an async client. What a failure means is theirs to say: this returns the status and the
decoded answer, and raises ``OSError`` when nothing answered.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any, TypeVar

from modelhost import errors

__all__ = ["JsonHttpClient", "error_message"]

_Client = TypeVar("_Client", bound="JsonHttpClient")


def error_message(answer: Any) -> str:
    """The message of an error answer: its ``message`` or ``error``, else the answer itself."""
    if isinstance(answer, dict):
        found = answer.get("message") or answer.get("error")
        if found:
            return str(found)
    return "" if answer is None else str(answer)


class JsonHttpClient:
    """JSON calls to ``url`` (``http(s)://host[:port][/prefix]``), one at a time, on one kept
    connection (a connection the server closed meanwhile is replaced once)."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.InvalidInput(f"not a service URL: {url!r} (http:// or https://)")
        self.url = url.rstrip("/")
        self._parts = parts
        self.token = token
        self.timeout = timeout
        self.ssl_context = ssl_context
        self._connection: http.client.HTTPConnection | None = None

    def __enter__(self: _Client) -> _Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def exchange(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: Mapping[str, str] | None = None,
    ) -> tuple[int, Any]:
        """One call to ``path`` under the URL's own path: the status and the answer, decoded
        from JSON (or its text when it is not JSON). ``OSError`` when nothing answered."""
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        target = self._parts.path.rstrip("/") + path
        if params:
            target += "?" + urllib.parse.urlencode(params)
        status, raw = self._send(method, target, data, headers)
        try:
            return status, (json.loads(raw) if raw else None)
        except ValueError:
            return status, raw.decode(errors="replace")

    def _send(
        self, method: str, target: str, data: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            connection = self._connection or self._connect()
            self._connection = connection
            try:
                connection.request(method, target, body=data, headers=headers)
                response = connection.getresponse()
                return response.status, response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
            except OSError:
                self.close()
                raise
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)
