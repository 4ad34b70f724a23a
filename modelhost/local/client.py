"""The CLI's side of the control API: find the running platform and call it.

The platform's own address is a Unix socket (``unix:<path>``, from ``platform.json``); a
remote one is an ``http(s)://`` URL that takes a bearer token. Plain ``http.client``: the
commands make one short call each, and the CLI should not pay for an async client's import.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import urllib.parse
from pathlib import Path
from typing import Any

from modelhost import errors

__all__ = ["PlatformClient", "platform_url"]

_INFERENCE_SERVICES = "/apis/serving.kserve.io/v1beta1"
_RUNTIMES = "/apis/serving.kserve.io/v1alpha1"
_RESOURCES = {
    "inferenceservice": ("inferenceservices", _INFERENCE_SERVICES, True),
    "servingruntime": ("servingruntimes", _RUNTIMES, True),
    "clusterservingruntime": ("clusterservingruntimes", _RUNTIMES, False),
    "inferencegraph": ("inferencegraphs", _RUNTIMES, True),
}
_ALIASES = {
    "isvc": "inferenceservice",
    "inferenceservices": "inferenceservice",
    "servingruntimes": "servingruntime",
    "clusterservingruntimes": "clusterservingruntime",
    "ig": "inferencegraph",
    "inferencegraphs": "inferencegraph",
}


def platform_url(explicit: str | None, home: Path, environ: dict[str, str]) -> str:
    """``--server``, else ``$MODELHOST_SERVER``, else the socket the running platform wrote."""
    if explicit:
        return explicit.rstrip("/")
    if environ.get("MODELHOST_SERVER"):
        return environ["MODELHOST_SERVER"].rstrip("/")
    try:
        address: str = json.loads((home / "platform.json").read_text())["api"]
        return address
    except (OSError, ValueError, KeyError):
        return f"unix:{home / 'api.sock'}"


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the platform's control API in its home)."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def resource(name: str) -> tuple[str, str, bool]:
    """(plural, API prefix, namespaced) of a kind as ``kubectl`` spells it."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _RESOURCES:
        raise errors.InvalidInput(
            f"unknown resource type {name!r}: use isvc, ig, servingruntime or clusterservingruntime"
        )
    return _RESOURCES[key]


class PlatformClient:
    """Calls the control API at ``url`` (``unix:<path>`` or ``http(s)://host:port``)."""

    def __init__(
        self,
        url: str,
        timeout: float = 60.0,
        token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.token = token
        self.ssl_context = ssl_context

    def apply(self, text: bytes, source: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({"source": source})
        found = self._call("POST", f"/apis/modelhost.io/v1/apply?{query}", text)
        items: list[dict[str, Any]] = found["items"]
        return items

    def list_objects(self, kind: str, namespace: str | None) -> list[dict[str, Any]]:
        plural, prefix, namespaced = resource(kind)
        where = f"/namespaces/{namespace}" if namespaced and namespace else ""
        items: list[dict[str, Any]] = self._call("GET", f"{prefix}{where}/{plural}")["items"]
        return items

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        return self._call("GET", self._path(kind, namespace, name))  # type: ignore[no-any-return]

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self._call("DELETE", self._path(kind, namespace, name))

    def revisions(self, namespace: str, name: str, kind: str = "isvc") -> list[dict[str, Any]]:
        path = self._path(kind, namespace, name) + "/revisions"
        items: list[dict[str, Any]] = self._call("GET", path)["items"]
        return items

    def logs(
        self, namespace: str, name: str, component: str | None, tail: int, kind: str = "isvc"
    ) -> str:
        fields: dict[str, str | int] = {"tail": tail}
        if component:
            fields["component"] = component
        query = urllib.parse.urlencode(fields)
        path = self._path(kind, namespace, name) + f"/log?{query}"
        return self._call("GET", path, raw=True)  # type: ignore[no-any-return]

    def healthy(self) -> bool:
        try:
            self._call("GET", "/healthz")
        except errors.ModelhostError:
            return False
        return True

    def _path(self, kind: str, namespace: str, name: str) -> str:
        plural, prefix, namespaced = resource(kind)
        where = f"/namespaces/{namespace}" if namespaced else ""
        return f"{prefix}{where}/{plural}/{name}"

    def _connection(self) -> http.client.HTTPConnection:
        if self.url.startswith("unix:"):
            return _UnixConnection(self.url[len("unix:") :], self.timeout)
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(
                parts.hostname or "", parts.port, timeout=self.timeout, context=self.ssl_context
            )
        if parts.scheme != "http" or not parts.hostname:
            raise errors.InvalidInput(
                f"not a platform address: {self.url!r} (unix:<path>, http:// or https://)"
            )
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)

    def _call(self, method: str, path: str, body: bytes | None = None, raw: bool = False) -> Any:
        headers = {"Content-Type": "application/yaml"} if body is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except OSError as exc:
            raise errors.ServerNotReady(
                f"no modelhost platform at {self.url} ({exc}): start one with `modelhost up -d`"
            ) from None
        finally:
            connection.close()
        if response.status >= 400:
            try:
                message = json.loads(data).get("message") or data.decode()
            except (ValueError, AttributeError):
                message = data.decode(errors="replace")
            error = errors.ModelhostError(message)
            error.status_code = response.status
            raise error from None
        return data.decode() if raw else json.loads(data)
