"""Where the username and password for a registry come from, read from the settings' environment.

In order: ``OCI_USERNAME`` and ``OCI_PASSWORD`` (sent to whichever registry the URI names, so
prefer a config file when several registries are used); then the first of these Docker-format
config files with an entry for the registry: ``$REGISTRY_AUTH_FILE`` (podman, skopeo),
``$DOCKER_CONFIG/config.json``, ``$HOME/.docker/config.json``. A Kubernetes
``kubernetes.io/dockerconfigjson`` pull secret mounted as a file is such a file. An entry
gives ``auth`` (base64 ``user:password``) or ``username`` and ``password``; credential helpers
(``credsStore``, ``credHelpers``) and ``identitytoken`` entries are not supported, because
they run programs or OAuth flows that a model server should not.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from modelhost.errors import StorageError

from .reference import DOCKER_HUB, DOCKER_HUB_ALIASES

__all__ = ["registry_credentials"]

USERNAME_VAR = "OCI_USERNAME"
PASSWORD_VAR = "OCI_PASSWORD"


def registry_credentials(registry: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """``(username, password)`` for ``registry`` (``host[:port]``), or None: anonymous."""
    username, password = environ.get(USERNAME_VAR), environ.get(PASSWORD_VAR)
    if username and password is not None:
        return username, password
    for path in _config_files(environ):
        found = _credentials_in(path, registry)
        if found is not None:
            return found
    return None


def _config_files(environ: Mapping[str, str]) -> Iterator[Path]:
    if environ.get("REGISTRY_AUTH_FILE"):
        yield Path(environ["REGISTRY_AUTH_FILE"])
    if environ.get("DOCKER_CONFIG"):
        yield Path(environ["DOCKER_CONFIG"]) / "config.json"
    if environ.get("HOME"):
        yield Path(environ["HOME"]) / ".docker" / "config.json"


def _credentials_in(path: Path, registry: str) -> tuple[str, str] | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"cannot read registry credentials from {path}: {exc}") from None
    auths = config.get("auths") if isinstance(config, dict) else None
    if not isinstance(auths, dict):
        return None
    for key, entry in auths.items():
        if _registry_of_key(key) == registry and isinstance(entry, dict):
            return _decode_entry(entry, path, key)
    return None


def _registry_of_key(key: str) -> str:
    """``https://index.docker.io/v1/`` → ``docker.io``; ``http://host:5000`` → ``host:5000``."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in DOCKER_HUB_ALIASES else host


def _decode_entry(entry: dict[str, object], path: Path, key: str) -> tuple[str, str] | None:
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str) and username:
        return username, password
    auth = entry.get("auth")
    if not isinstance(auth, str) or not auth:
        return None
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise StorageError(f"{path}: the auth of {key!r} is not base64 'user:password'") from None
    username, sep, password = decoded.partition(":")
    if not sep:
        raise StorageError(f"{path}: the auth of {key!r} is not base64 'user:password'")
    return username, password
