"""The ``oci://`` source: a model shipped as an OCI image (KServe's modelcar) or an ORAS artifact.

``identity()`` is the digest the tag points at (one ``HEAD``; none at all for an
``@sha256:`` URI), and ``fetch`` pulls that digest, not the tag again, so the files always
match the identity the cache filed them under. An image index (multi-platform list) gives its
``linux/amd64`` manifest, else the first that is not an attestation.

A manifest's layers come in two kinds, and one manifest may mix them:

* image layers (no ``org.opencontainers.image.title`` annotation), as ``docker build`` or
  ``podman build`` make them: applied in order onto a scratch root file system; the model is
  that root's ``/models`` folder, KServe's modelcar convention (a ``FROM busybox`` image with
  ``COPY model/ /models/``). An image without ``/models`` gives its whole file system. The
  scratch root sits inside ``dest`` while layers are applied, so a big base image costs its
  size in disk for that time.
* artifact layers (titled), as ``oras push`` makes them: each one is the file its title
  names, except a ``tar+gzip`` layer (or one annotated ``io.deis.oras.content.unpack``),
  which is a pushed folder and is unpacked in place.

Every blob is checked against its digest and size while it streams; a mismatch fails the
fetch, and the caller discards ``dest``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from modelhost.errors import StorageError
from modelhost.settings import StorageSettings

from .._inflate import UnpackBudget
from .._source import Progress
from .client import RegistryClient
from .reference import DIGEST_PATTERN, parse_reference
from .unpack import CorruptArchive, apply_layer, check_links, promote, write_file

__all__ = ["OciSource"]

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
FOLDER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX_MEDIA_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
PREFERRED_PLATFORM = ("linux", "amd64")


@dataclasses.dataclass(frozen=True)
class _Layer:
    digest: str
    size: int
    media_type: str
    title: str | None
    unpack: bool


class OciSource:
    """An ``oci://<registry>/<repository>:<tag>`` (or ``@sha256:...``) model image."""

    def __init__(self, uri: str, settings: StorageSettings):
        self.uri = uri
        self._reference = parse_reference(uri)
        self._settings = settings
        self._environ = settings.environ
        self._digest = self._reference.digest
        self._client: RegistryClient | None = None

    def identity(self) -> str:
        if self._digest is None:
            self._digest = self._registry().resolve(self._reference.tag)
        return self._digest

    def fetch(self, dest: Path, progress: Progress) -> None:
        client = self._registry()
        layers = _layers(self._image_manifest(client, self.identity()), self.uri)
        progress.set_total(sum(layer.size for layer in layers))
        packed = sum(layer.size for layer in layers if layer.title is None or layer.unpack)
        budget = UnpackBudget(self._settings, packed, self.uri)
        rootfs: Path | None = None
        for layer in layers:
            with client.blob(layer.digest, layer.size, progress.update) as blob:
                try:
                    if layer.title is None:
                        if rootfs is None:
                            rootfs = Path(tempfile.mkdtemp(prefix=".oci-rootfs-", dir=dest))
                        apply_layer(rootfs, blob, blob.name, budget)
                    elif layer.unpack:
                        apply_layer(dest, blob, blob.name, budget)
                    else:
                        write_file(dest, layer.title, blob, blob.name)
                except CorruptArchive:
                    blob.finish()  # a digest mismatch explains a broken archive best
                    raise
                blob.finish()
        if rootfs is not None:
            promote(rootfs, dest)
        check_links(dest)

    def _registry(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self._reference, self._environ)
        return self._client

    def _image_manifest(self, client: RegistryClient, digest: str) -> dict[str, Any]:
        manifest = _parse(*client.manifest(digest), self.uri)
        if manifest["mediaType"] in INDEX_MEDIA_TYPES:
            chosen = _choose_platform(manifest, self.uri)
            manifest = _parse(*client.manifest(chosen), self.uri)
            if manifest["mediaType"] in INDEX_MEDIA_TYPES:
                raise StorageError(f"{self.uri}: an image index inside an image index")
        return manifest


def _parse(body: bytes, media_type: str, uri: str) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except ValueError:
        raise StorageError(f"{uri}: the registry sent a manifest that is not JSON") from None
    if not isinstance(document, dict):
        raise StorageError(f"{uri}: the registry sent a manifest that is not a JSON object")
    kind = document.get("mediaType") or media_type
    if "manifests" in document and kind not in INDEX_MEDIA_TYPES:
        kind = INDEX_MEDIA_TYPES[0]
    if document.get("schemaVersion") == 1 or "prettyjws" in kind:
        raise StorageError(f"{uri}: Docker schema 1 manifests are not supported; push it again")
    document["mediaType"] = kind
    return document


def _choose_platform(index: dict[str, Any], uri: str) -> str:
    entries = [entry for entry in index.get("manifests") or [] if isinstance(entry, dict)]

    def platform(entry: dict[str, Any]) -> tuple[str, str]:
        described = entry.get("platform") or {}
        return described.get("os", ""), described.get("architecture", "")

    preferred = [entry for entry in entries if platform(entry) == PREFERRED_PLATFORM]
    # buildx lists its attestations as platform unknown/unknown.
    usable = [entry for entry in entries if platform(entry) != ("unknown", "unknown")]
    for entry in (*preferred, *usable):
        digest = entry.get("digest")
        if isinstance(digest, str) and DIGEST_PATTERN.fullmatch(digest):
            return digest
    raise StorageError(f"{uri}: the image index lists no usable manifest")


def _layers(manifest: dict[str, Any], uri: str) -> list[_Layer]:
    raw_layers = manifest.get("layers")
    if not isinstance(raw_layers, list):
        raise StorageError(f"{uri}: the manifest lists no layers")
    layers = []
    for raw in raw_layers:
        if not isinstance(raw, dict):
            raise StorageError(f"{uri}: a layer is not a JSON object ({raw!r})")
        digest, size = raw.get("digest"), raw.get("size")
        if not isinstance(digest, str) or not DIGEST_PATTERN.fullmatch(digest):
            raise StorageError(f"{uri}: a layer has no valid digest ({raw!r})")
        if not isinstance(size, int) or size < 0:
            raise StorageError(f"{uri}: the layer {digest} has no valid size")
        media_type = str(raw.get("mediaType", ""))
        annotations = raw.get("annotations")
        annotations = annotations if isinstance(annotations, dict) else {}
        title = str(annotations[TITLE]) if annotations.get(TITLE) else None
        unpack = title is not None and (
            media_type == FOLDER_MEDIA_TYPE or str(annotations.get(UNPACK)).lower() == "true"
        )
        if (
            (title is None or unpack)
            and media_type.endswith("+zstd")
            and sys.version_info < (3, 14)
        ):
            raise StorageError(
                f"{uri}: the layer {digest} is zstd-compressed, which needs Python 3.14; "
                "push it with gzip layers"
            )
        layers.append(_Layer(digest, size, media_type, title, unpack))
    return layers
