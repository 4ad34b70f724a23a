"""What an ``oci://`` storage URI names: the registry, the repository, and a tag or digest.

``oci://<registry>/<repository>:<tag>`` or ``oci://<registry>/<repository>@sha256:<hex>``,
as in KServe's modelcar ``storageUri``. Docker's naming rules apply: the first path component
is the registry when it has a ``.`` or a ``:`` or is ``localhost``; otherwise the image is on
Docker Hub (``oci://library/busybox`` is ``docker.io/library/busybox``; a one-component name
gets ``library/``). No tag and no digest means ``latest``; with both, the digest wins.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping

from modelhost.access import is_loopback
from modelhost.errors import StorageError

__all__ = ["DIGEST_PATTERN", "Reference", "is_plain_http", "parse_reference"]

SCHEME = "oci://"
DOCKER_HUB = "docker.io"
DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
# Docker Hub's registry API is not served on the name users write.
DOCKER_HUB_API = "registry-1.docker.io"
# Registries (``host`` or ``host:port``, comma-separated) spoken to over plain HTTP.
INSECURE_REGISTRIES_VAR = "MODELHOST_OCI_INSECURE_REGISTRIES"

DIGEST_PATTERN = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REGISTRY = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:]+\])(?::[0-9]+)?")


@dataclasses.dataclass(frozen=True)
class Reference:
    """One image: ``registry`` as written (``host[:port]``), ``repository``, tag or digest."""

    registry: str
    repository: str
    tag: str
    digest: str | None

    @property
    def api_host(self) -> str:
        """The ``host[:port]`` that serves the registry API for ``registry``."""
        return DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry

    @property
    def target(self) -> str:
        """What to ask the registry for: the digest if pinned, else the tag."""
        return self.digest or self.tag

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{self.registry}/{self.repository}{suffix}"


def parse_reference(uri: str) -> Reference:
    """The image an ``oci://`` URI names; a malformed URI raises ``StorageError``."""
    if not uri.startswith(SCHEME):
        raise StorageError(f"{uri!r} is not an oci:// URI")
    rest = uri[len(SCHEME) :].rstrip("/")
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not DIGEST_PATTERN.fullmatch(digest):
            raise StorageError(f"{uri}: {digest!r} is not a digest (sha256:<64 hex digits>)")
    tag = "latest"
    last_slash = rest.rfind("/")
    if ":" in rest[last_slash + 1 :]:
        rest, tag = rest.rsplit(":", 1)
        if not _TAG.fullmatch(tag):
            raise StorageError(f"{uri}: {tag!r} is not a valid tag")
    first, _, remainder = rest.partition("/")
    if remainder and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, remainder
    else:
        registry, repository = DOCKER_HUB, rest
    if registry in DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
        if "/" not in repository:
            repository = f"library/{repository}"
    if not _REGISTRY.fullmatch(registry):
        raise StorageError(f"{uri}: {registry!r} is not a registry host")
    if not _REPOSITORY.fullmatch(repository):
        raise StorageError(
            f"{uri}: {repository!r} is not a repository name (lowercase letters, digits, "
            "separators . _ - and /)"
        )
    return Reference(registry, repository, tag, digest)


def is_plain_http(registry: str, environ: Mapping[str, str]) -> bool:
    """Loopback registries and those listed in ``MODELHOST_OCI_INSECURE_REGISTRIES``."""
    listed = {item.strip() for item in environ.get(INSECURE_REGISTRIES_VAR, "").split(",")}
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    return registry in listed or host in listed or is_loopback(host)
