"""A real OCI registry for the ``oci://`` tests, and the means to push model images into it.

The registry is Debian's ``docker-registry`` (CNCF distribution 2.8), started on a loopback
port the kernel picks, with its storage in the test's temporary folder; the tests skip when
it is not installed (``scripts/install_test_services.sh`` installs it). It runs open, with
htpasswd (Basic) auth, or with token auth, where :class:`TokenService` plays the token server
real registries use (Docker Hub, GHCR, Harbor): it checks a password and signs a JWT that the
registry verifies against the service's self-signed certificate.

Images are pushed over the registry's HTTP API with httpx, so the tests control every byte
of the manifests and layers (OCI and Docker schema 2 manifests, image indexes, layers that a
correct registry would never refuse but a safe client must).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

__all__ = [
    "HTPASSWD_PASSWORD",
    "HTPASSWD_USER",
    "Registry",
    "TokenService",
    "blob_path",
    "push_blob",
    "push_image",
    "push_index",
    "push_manifest",
    "registry_binary",
    "running_registry",
    "running_token_service",
    "tar_layer",
]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"

HTPASSWD_USER = "modelhost"
HTPASSWD_PASSWORD = "s3cret-pass"
# bcrypt (cost 4, the registry accepts only bcrypt) of HTPASSWD_PASSWORD, made once with
# crypt(3): apache2-utils' htpasswd and the bcrypt package are not among the test tools.
HTPASSWD_LINE = f"{HTPASSWD_USER}:$2b$04$qvMUppj1ph3MhDUsQA9BuuEqdRrhnWLroBsPn4dqF7SWqJPeogxsu"


@dataclasses.dataclass
class Registry:
    """A running registry: ``host`` is ``127.0.0.1:<port>``; ``storage`` its blob folder."""

    host: str
    storage: Path
    headers: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://{self.host}"


def registry_binary() -> str:
    """The ``docker-registry`` executable, or skip the test that needs it."""
    found = shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if os.access("/usr/bin/docker-registry", os.X_OK) else None
    )
    if found is None:
        pytest.skip("docker-registry is not installed (scripts/install_test_services.sh)")
    return found


@contextmanager
def running_registry(folder: Path, **sections: Any) -> Iterator[Registry]:
    """Start a registry storing into ``folder``; ``sections`` (``auth``, ``middleware``) are
    added to its configuration."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(folder / "data")}},
        "http": {"addr": "127.0.0.1:0", "secret": "modelhost-tests"},
    }
    config.update(sections)
    # JSON is YAML: no YAML writer needed.
    (folder / "config.yml").write_text(json.dumps(config))
    log_path = folder / "registry.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [registry_binary(), "serve", str(folder / "config.yml")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        host = _wait_listening(log_path, process)
        registry = Registry(host, folder / "data")
        _wait_answering(registry)
        yield registry
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_listening(log_path: Path, process: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = re.search(r"listening on (127\.0\.0\.1:\d+)", log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    raise RuntimeError(f"docker-registry did not start:\n{log_path.read_text(errors='replace')}")


def _wait_answering(registry: Registry) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            status = httpx.get(f"{registry.url}/v2/", timeout=1).status_code
        except httpx.TransportError:
            status = 0
        if status in (200, 401):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"the registry at {registry.url} does not answer /v2/")
        time.sleep(0.02)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(registry: Registry, digest: str) -> Path:
    """Where the registry's filesystem driver keeps a blob (to corrupt it on purpose)."""
    hex_digest = digest.split(":", 1)[1]
    return (
        registry.storage / "docker/registry/v2/blobs/sha256" / hex_digest[:2] / hex_digest / "data"
    )


def push_blob(registry: Registry, repository: str, data: bytes) -> str:
    digest = digest_of(data)
    with httpx.Client(base_url=registry.url, headers=registry.headers, timeout=30) as client:
        started = client.post(f"/v2/{repository}/blobs/uploads/")
        assert started.status_code == 202, started.text
        location = urllib.parse.urljoin(registry.url, started.headers["Location"])
        separator = "&" if "?" in location else "?"
        done = client.put(
            f"{location}{separator}digest={digest}",
            content=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert done.status_code == 201, done.text
    return digest


def push_manifest(
    registry: Registry, repository: str, reference: str, manifest: dict[str, Any], media_type: str
) -> str:
    body = json.dumps(manifest).encode()
    with httpx.Client(base_url=registry.url, headers=registry.headers, timeout=30) as client:
        answer = client.put(
            f"/v2/{repository}/manifests/{reference}",
            content=body,
            headers={"Content-Type": media_type},
        )
    assert answer.status_code == 201, answer.text
    assert answer.headers["Docker-Content-Digest"] == digest_of(body)
    return digest_of(body)


def tar_layer(
    files: dict[str, bytes | str | None],
    *,
    links: dict[str, str] | None = None,
    hardlinks: dict[str, str] | None = None,
    compress: bool = True,
) -> bytes:
    """A layer: ``files`` maps archive paths to content (None: a folder); ``links`` maps
    symlink paths to targets, ``hardlinks`` link paths to the archive path they share."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = 0
            if content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                archive.addfile(info)
                continue
            data = content.encode() if isinstance(content, str) else content
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))
        for kind, entries in ((tarfile.SYMTYPE, links), (tarfile.LNKTYPE, hardlinks)):
            for name, target in (entries or {}).items():
                info = tarfile.TarInfo(name)
                info.type, info.linkname, info.mtime = kind, target, 0
                archive.addfile(info)
    data = raw.getvalue()
    return gzip.compress(data, mtime=0) if compress else data


def push_image(
    registry: Registry,
    repository: str,
    tag: str,
    layers: list[bytes],
    *,
    docker: bool = False,
    architecture: str = "amd64",
) -> tuple[str, dict[str, Any]]:
    """Push an image with these (gzip) layers; its manifest digest and manifest."""
    config = {
        "architecture": architecture,
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": [digest_of(gzip.decompress(layer)) for layer in layers],
        },
    }
    config_bytes = json.dumps(config).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST if docker else OCI_MANIFEST,
        "config": {
            "mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
            "digest": push_blob(registry, repository, config_bytes),
            "size": len(config_bytes),
        },
        "layers": [
            {
                "mediaType": DOCKER_LAYER if docker else OCI_LAYER_GZIP,
                "digest": push_blob(registry, repository, layer),
                "size": len(layer),
            }
            for layer in layers
        ],
    }
    media_type = manifest["mediaType"]
    return push_manifest(registry, repository, tag, manifest, media_type), manifest


def push_index(
    registry: Registry, repository: str, tag: str, entries: list[tuple[str, str, str]]
) -> str:
    """Push an image index of ``(digest, os, architecture)`` manifests already pushed."""
    manifests = []
    for digest, os_name, architecture in entries:
        with httpx.Client(base_url=registry.url, headers=registry.headers) as client:
            size = len(
                client.get(
                    f"/v2/{repository}/manifests/{digest}", headers={"Accept": OCI_MANIFEST}
                ).content
            )
        manifests.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": size,
                "platform": {"os": os_name, "architecture": architecture},
            }
        )
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
    return push_manifest(registry, repository, tag, index, OCI_INDEX)


class TokenService:
    """A registry token server: Basic credentials in, a signed JWT granting the scope out.

    The registry trusts tokens signed by the key of ``certificate`` (self-signed, sent in the
    token's ``x5c`` header), issued by ``ISSUER`` for the audience ``SERVICE``.
    """

    ISSUER = "modelhost-test-issuer"
    SERVICE = "modelhost-test-registry"

    def __init__(self, folder: Path, username: str, password: str):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.username, self.password = username, password
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "modelhost-test-token")])
        now = time.time()
        self._certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(datetime.datetime.fromtimestamp(now - 3600, datetime.timezone.utc))
            .not_valid_after(datetime.datetime.fromtimestamp(now + 3600, datetime.timezone.utc))
            .sign(self._key, hashes.SHA256())
        )
        self.certificate_path = folder / "token-cert.pem"
        self.certificate_path.write_bytes(
            self._certificate.public_bytes(serialization.Encoding.PEM)
        )
        self.realm = ""

    def token(self, scope: str) -> str:
        """A JWT granting ``scope`` (``repository:<name>:<actions>``), as the registry wants."""
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for item in scope.split():
            kind, _, rest = item.partition(":")
            repository, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": repository, "actions": actions.split(",")})
        now = int(time.time())
        certificate = base64.b64encode(
            self._certificate.public_bytes(serialization.Encoding.DER)
        ).decode()
        header = {"typ": "JWT", "alg": "ES256", "x5c": [certificate]}
        claims = {
            "iss": self.ISSUER,
            "sub": self.username,
            "aud": self.SERVICE,
            "exp": now + 300,
            "nbf": now - 60,
            "iat": now,
            "jti": os.urandom(8).hex(),
            "access": access,
        }
        signing_input = f"{_b64url(json.dumps(header))}.{_b64url(json.dumps(claims))}"
        der = self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}"

    def registry_auth(self) -> dict[str, Any]:
        return {
            "token": {
                "realm": self.realm,
                "service": self.SERVICE,
                "issuer": self.ISSUER,
                "rootcertbundle": str(self.certificate_path),
            }
        }


def _b64url(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@contextmanager
def running_token_service(folder: Path, username: str, password: str) -> Iterator[TokenService]:
    """Serve ``GET /token?service=...&scope=...`` on loopback, as a registry's realm."""
    service = TokenService(folder, username, password)
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            if self.headers.get("Authorization") != expected:
                self._answer(401, {"details": "wrong username or password"})
                return
            if query.get("service") != [TokenService.SERVICE]:
                self._answer(400, {"details": "unknown service"})
                return
            token = service.token(" ".join(query.get("scope", [])))
            self._answer(200, {"token": token, "access_token": token, "expires_in": 300})

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    service.realm = f"http://127.0.0.1:{server.server_address[1]}/token"
    try:
        yield service
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
