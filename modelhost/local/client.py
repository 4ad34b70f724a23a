"""The CLI's side of the control API: find the running platform and call it.

Plain ``urllib``: the commands make one short call each, and the CLI should not pay for an
async client's import.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
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
}
_ALIASES = {
    "isvc": "inferenceservice",
    "inferenceservices": "inferenceservice",
    "servingruntimes": "servingruntime",
    "clusterservingruntimes": "clusterservingruntime",
}


def platform_url(explicit: str | None, home: Path, environ: dict[str, str]) -> str:
    """``--server``, else ``$MODELHOST_SERVER``, else what the running platform wrote."""
    if explicit:
        return explicit.rstrip("/")
    if environ.get("MODELHOST_SERVER"):
        return environ["MODELHOST_SERVER"].rstrip("/")
    try:
        url: str = json.loads((home / "platform.json").read_text())["url"]
        return url
    except (OSError, ValueError, KeyError):
        return "http://127.0.0.1:8080"


def resource(name: str) -> tuple[str, str, bool]:
    """(plural, API prefix, namespaced) of a kind as ``kubectl`` spells it."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in _RESOURCES:
        raise errors.InvalidInput(
            f"unknown resource type {name!r}: use isvc, servingruntime or clusterservingruntime"
        )
    return _RESOURCES[key]


class PlatformClient:
    def __init__(self, url: str, timeout: float = 60.0) -> None:
        self.url = url
        self.timeout = timeout

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

    def revisions(self, namespace: str, name: str) -> list[dict[str, Any]]:
        path = self._path("isvc", namespace, name) + "/revisions"
        items: list[dict[str, Any]] = self._call("GET", path)["items"]
        return items

    def logs(self, namespace: str, name: str, component: str, tail: int) -> str:
        query = urllib.parse.urlencode({"component": component, "tail": tail})
        path = self._path("isvc", namespace, name) + f"/log?{query}"
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

    def _call(self, method: str, path: str, body: bytes | None = None, raw: bool = False) -> Any:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", "application/yaml")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
        except urllib.error.HTTPError as exc:
            payload = exc.read()
            try:
                message = json.loads(payload).get("message") or payload.decode()
            except ValueError:
                message = payload.decode(errors="replace")
            error = errors.ModelhostError(message)
            error.status_code = exc.code
            raise error from None
        except (urllib.error.URLError, OSError) as exc:
            raise errors.ServerNotReady(
                f"no modelhost platform at {self.url} ({exc}): start one with `modelhost up -d`"
            ) from None
        return data.decode() if raw else json.loads(data)
