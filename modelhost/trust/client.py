"""A small client of TrustyAI's API, for the ``modelhost trust`` command and scripts.

It speaks to any TrustyAI-shaped service: the platform's gateway, ``modelhost serve
--trust``, or TrustyAI's own. Plain ``http.client``: each command makes a few short calls.
"""

from __future__ import annotations

import http.client
import json
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

from modelhost import errors

__all__ = ["TrustClient", "TrustRequestFailed", "typed_value"]


class TrustRequestFailed(errors.ModelhostError):
    """The service answered a 4xx or 5xx; ``status_code`` is its status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status


def typed_value(text: str) -> dict[str, Any]:
    """A command-line value as TrustyAI's ``{type, value}``: an integer, a number or text."""
    for kind, parse in (("INT64", int), ("DOUBLE", float)):
        try:
            return {"type": kind, "value": parse(text)}
        except ValueError:
            continue
    if text.lower() in ("true", "false"):
        return {"type": "BOOL", "value": text.lower() == "true"}
    return {"type": "STRING", "value": text}


class TrustClient:
    """JSON calls to one TrustyAI-shaped service at ``url`` (http or https)."""

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

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def delete(self, path: str, body: Any) -> Any:
        return self.call("DELETE", path, body)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """One call; the decoded JSON answer, or the text when it is not JSON."""
        sent = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if self.token:
            sent["Authorization"] = f"Bearer {self.token}"
        prefix = self._parts.path.rstrip("/")
        connection = self._connection()
        try:
            connection.request(method, prefix + path, body=data, headers=sent)
            response = connection.getresponse()
            raw = response.read()
        except OSError as exc:
            raise errors.ServerNotReady(f"no trust service at {self.url} ({exc})") from None
        finally:
            connection.close()
        try:
            answer: Any = json.loads(raw) if raw else None
        except ValueError:
            answer = raw.decode(errors="replace")
        if response.status >= 400:
            message = (
                answer.get("error") or answer.get("message") if isinstance(answer, dict) else None
            )
            raise TrustRequestFailed(response.status, str(message or answer or response.reason))
        return answer

    def _connection(self) -> http.client.HTTPConnection:
        host, port = self._parts.hostname or "", self._parts.port
        if self._parts.scheme == "https":
            return http.client.HTTPSConnection(
                host, port, timeout=self.timeout, context=self.ssl_context
            )
        return http.client.HTTPConnection(host, port, timeout=self.timeout)
