"""A small client of TrustyAI's API, for the ``modelhost trust`` command and scripts.

It speaks to any TrustyAI-shaped service: the platform's gateway, ``modelhost serve
--trust``, or TrustyAI's own. Plain ``http.client``: each command makes a few short calls.
"""

from __future__ import annotations

from typing import Any

from modelhost import errors
from modelhost.transport.json_http import JsonHttpClient, error_message

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


class TrustClient(JsonHttpClient):
    """JSON calls to one TrustyAI-shaped service at ``url`` (http or https)."""

    def get(self, path: str) -> Any:
        return self.call("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.call("POST", path, body)

    def delete(self, path: str, body: Any) -> Any:
        return self.call("DELETE", path, body)

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call; the decoded JSON answer, or the text when it is not JSON."""
        try:
            status, answer = self.exchange(method, path, body)
        except OSError as exc:
            raise errors.ServerNotReady(f"no trust service at {self.url} ({exc})") from None
        if status >= 400:
            raise TrustRequestFailed(status, error_message(answer) or f"HTTP {status}")
        return answer
