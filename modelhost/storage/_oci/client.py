"""Pulling from an OCI registry: manifests and blobs over the distribution API, with its auth.

This is written on the standard library instead of oras-py (0.2.43), which was tried first:
its ``Registry.do_request`` retries every failure five times with sleeps of 3 to 83 s (a
closed port takes over two minutes to report), it reads credentials from the process
environment and its own Docker config lookup rather than from the settings' snapshot, each of
its auth backends answers only one challenge scheme (``token`` cannot do ``Basic``, ``basic``
cannot do ``Bearer``), and its blob download neither verifies digests nor reports progress.
The part of the protocol a pull needs is small: ``GET``/``HEAD /v2/<repo>/manifests/<ref>``,
``GET /v2/<repo>/blobs/<digest>``, and answering a 401 challenge with Basic credentials or a
Bearer token from the challenge's realm (``service`` and ``scope`` passed on).

Blob redirects (to S3, a CDN) are followed without the ``Authorization`` header, since
pre-signed URLs reject a second credential. ``MODELHOST_OCI_CA_BUNDLE`` names extra trusted
CAs; ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` from the settings' environment are honoured.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import IO

from modelhost.errors import StorageAccessDenied, StorageError, StorageNotFound, StorageUnreachable

from .credentials import PASSWORD_VAR, USERNAME_VAR, registry_credentials
from .reference import DIGEST_PATTERN, INSECURE_REGISTRIES_VAR, Reference, is_plain_http

__all__ = ["MANIFEST_MEDIA_TYPES", "RegistryClient", "VerifiedBlob"]

CA_BUNDLE_VAR = "MODELHOST_OCI_CA_BUNDLE"
MANIFEST_MEDIA_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
# The image spec's advice to registries; a larger "manifest" is not one.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 1024 * 1024
USER_AGENT = "modelhost-storage"
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


class RegistryClient:
    """One repository on one registry, with the credentials the environment gives for it."""

    def __init__(self, reference: Reference, environ: Mapping[str, str], timeout: float = 60.0):
        scheme = "http" if is_plain_http(reference.registry, environ) else "https"
        self._root = f"{scheme}://{reference.api_host}"
        self._repository = reference.repository
        self._name = str(reference)
        self._credentials = registry_credentials(reference.registry, environ)
        self._authorization: str | None = None
        self._timeout = timeout
        self._opener = _build_opener(environ, reference.api_host)

    def resolve(self, tag: str) -> str:
        """The digest ``tag`` points at now (what a HEAD on the manifest answers)."""
        with self._send("HEAD", self._url("manifests", tag)) as response:
            digest = response.headers.get("Docker-Content-Digest", "")
        if DIGEST_PATTERN.fullmatch(digest):
            return digest
        # Registries that leave the header out of HEAD answers: the body's digest is the same.
        body, _ = self.manifest(tag)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def manifest(self, target: str) -> tuple[bytes, str]:
        """The manifest (or index) ``target`` names, and its media type; checked if a digest."""
        with self._send("GET", self._url("manifests", target)) as response:
            try:
                body = response.read(MAX_MANIFEST_BYTES + 1)
            except (OSError, http.client.HTTPException) as exc:
                raise _transport_error(exc, self._name, self._root) from None
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        if len(body) > MAX_MANIFEST_BYTES:
            raise StorageError(f"{self._name}: the manifest {target} is larger than 4 MiB")
        if DIGEST_PATTERN.fullmatch(target):
            _check_digest(body, target, f"{self._name}: the manifest")
        return body, media_type

    @contextmanager
    def blob(
        self, digest: str, size: int, on_bytes: Callable[[int], None]
    ) -> Iterator[VerifiedBlob]:
        """The blob's bytes; call ``finish()`` on it to check its size and digest."""
        with self._send("GET", self._url("blobs", digest)) as response:
            yield VerifiedBlob(response, digest, size, on_bytes, f"{self._name}: blob {digest}")

    def _url(self, kind: str, target: str) -> str:
        return f"{self._root}/v2/{self._repository}/{kind}/{target}"

    @contextmanager
    def _send(self, method: str, url: str) -> Iterator[http.client.HTTPResponse]:
        response = self._open(method, url)
        try:
            yield response
        finally:
            response.close()

    def _open(self, method: str, url: str) -> http.client.HTTPResponse:
        headers = {"User-Agent": USER_AGENT, "Accept": ", ".join(MANIFEST_MEDIA_TYPES)}
        for attempt in (1, 2):
            request = urllib.request.Request(url, method=method, headers=headers)
            if self._authorization is not None:
                request.add_header("Authorization", self._authorization)
            try:
                response: http.client.HTTPResponse = self._opener.open(
                    request, timeout=self._timeout
                )
                return response
            except urllib.error.HTTPError as exc:
                with exc:
                    # A 401 is a challenge (first contact, or an expired token): answer it once.
                    if exc.code == 401 and attempt == 1:
                        self._authorization = self._answer(exc.headers.get("WWW-Authenticate", ""))
                        continue
                    error = self._status_error(exc, method, url)
                raise error from None
            except (OSError, http.client.HTTPException) as exc:
                raise _transport_error(exc, self._name, self._root) from None
        raise AssertionError("unreachable")

    def _answer(self, challenge: str) -> str:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self._credentials is None:
                raise StorageAccessDenied(
                    f"{self._name}: the registry asks for credentials. " + _HINT
                )
            username, password = self._credentials
            return "Basic " + _basic(username, password)
        if scheme == "bearer":
            return "Bearer " + self._token(dict(_CHALLENGE_PARAM.findall(challenge)))
        raise StorageAccessDenied(f"{self._name}: the registry refused access ({challenge!r})")

    def _token(self, params: dict[str, str]) -> str:
        realm = params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise StorageAccessDenied(
                f"{self._name}: the registry's token realm {realm!r} is no URL"
            )
        query = {"scope": params.get("scope") or f"repository:{self._repository}:pull"}
        if params.get("service"):
            query["service"] = params["service"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
        if self._credentials is not None:
            request.add_header("Authorization", "Basic " + _basic(*self._credentials))
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                answer = json.loads(response.read(MAX_MANIFEST_BYTES))
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code in (401, 403):
                    who = "the credentials" if self._credentials else "anonymous access"
                    raise StorageAccessDenied(
                        f"{self._name}: the token service {realm} refused {who} ({exc.code}). "
                        + _HINT
                    ) from None
                error = self._status_error(exc, "GET", realm)
            raise error from None
        except (OSError, http.client.HTTPException) as exc:
            raise _transport_error(exc, self._name, realm) from None
        except ValueError:
            raise StorageError(f"{self._name}: the token service {realm} sent no JSON") from None
        token = (
            (answer.get("token") or answer.get("access_token"))
            if isinstance(answer, dict)
            else None
        )
        if not isinstance(token, str) or not token:
            raise StorageError(f"{self._name}: the token service {realm} sent no token")
        return token

    def _status_error(self, exc: urllib.error.HTTPError, method: str, url: str) -> StorageError:
        detail = _registry_errors(exc) or exc.reason
        what = f"{self._name}: {method} {urllib.parse.urlsplit(url).path} answered {exc.code}"
        if exc.code in (401, 403):
            hint = "" if self._credentials else " " + _HINT
            return StorageAccessDenied(f"{what} (access denied: {detail}).{hint}")
        if exc.code == 404:
            return StorageNotFound(f"{what} (not found: {detail})")
        if exc.code == 429 or exc.code >= 500:
            return StorageUnreachable(f"{what} ({detail})")
        return StorageError(f"{what} ({detail})")


class VerifiedBlob:
    """A blob's bytes read as a file, hashed on the way; ``finish()`` checks size and digest.

    Reading past the size the manifest gives fails at once, so a wrong registry answer cannot
    fill the disk.
    """

    def __init__(
        self,
        response: http.client.HTTPResponse,
        digest: str,
        size: int,
        on_bytes: Callable[[int], None],
        name: str,
    ):
        algorithm, self._expected = digest.split(":", 1)
        self._hash = hashlib.new(algorithm)
        self._response = response
        self._size = size
        self._read = 0
        self._on_bytes = on_bytes
        self.name = name

    def read(self, size: int = -1) -> bytes:
        wanted = CHUNK_BYTES if size is None or size < 0 else size
        try:
            data = self._response.read(wanted)
        except (OSError, http.client.HTTPException) as exc:
            raise StorageUnreachable(f"{self.name}: the download broke off: {exc}") from None
        self._read += len(data)
        if self._read > self._size:
            raise StorageError(f"{self.name}: the registry sent more than the {self._size} bytes")
        self._hash.update(data)
        if data:
            self._on_bytes(len(data))
        return data

    def finish(self) -> None:
        """Read what is left (an archive's trailing padding) and check size and digest."""
        while self.read(CHUNK_BYTES):
            pass
        if self._read != self._size:
            raise StorageError(
                f"{self.name}: got {self._read} bytes, the manifest says {self._size}"
            )
        if self._hash.hexdigest() != self._expected:
            raise StorageError(
                f"{self.name}: digest mismatch (the content hashes to "
                f"{self._hash.name}:{self._hash.hexdigest()})"
            )


_HINT = (
    f"Set {USERNAME_VAR} and {PASSWORD_VAR}, or add the registry to a Docker config file "
    "(DOCKER_CONFIG, REGISTRY_AUTH_FILE)."
)


def _basic(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def _check_digest(body: bytes, digest: str, what: str) -> None:
    algorithm, expected = digest.split(":", 1)
    actual = hashlib.new(algorithm, body).hexdigest()
    if actual != expected:
        raise StorageError(f"{what} {digest} does not match its content ({algorithm}:{actual})")


def _registry_errors(exc: urllib.error.HTTPError) -> str:
    """The ``{"errors": [{"code", "message"}]}`` a registry puts in an error answer."""
    try:
        answer = json.loads(exc.read(64 * 1024) or b"{}")
    except (OSError, ValueError, http.client.HTTPException):
        return ""
    errors = answer.get("errors") if isinstance(answer, dict) else None
    if not isinstance(errors, list):
        return ""
    parts = [
        f"{error.get('code', '')} {error.get('message', '')}".strip()
        for error in errors
        if isinstance(error, dict)
    ]
    return "; ".join(part for part in parts if part)


def _transport_error(exc: BaseException, name: str, root: str) -> StorageError:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLError):
        return StorageError(
            f"{name}: TLS failed with {root} ({reason}). A registry that speaks plain HTTP must "
            f"be listed in {INSECURE_REGISTRIES_VAR}; a private CA goes in {CA_BUNDLE_VAR}."
        )
    return StorageUnreachable(f"{name}: cannot reach {root} ({reason})")


class _RedirectWithoutCrossHostAuth(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only, dropping credentials when the host changes."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            return None
        redirected = super().redirect_request(req, fp, code, msg, headers, newurl)
        if redirected is not None and redirected.host != req.host:
            redirected.remove_header("Authorization")
        return redirected


def _build_opener(environ: Mapping[str, str], host: str) -> urllib.request.OpenerDirector:
    try:
        context = ssl.create_default_context(cafile=environ.get(CA_BUNDLE_VAR) or None)
    except (OSError, ssl.SSLError) as exc:
        raise StorageError(f"{CA_BUNDLE_VAR}={environ[CA_BUNDLE_VAR]!r}: {exc}") from None
    return urllib.request.build_opener(
        urllib.request.ProxyHandler(_proxies(environ, host)),
        urllib.request.HTTPSHandler(context=context),
        _RedirectWithoutCrossHostAuth(),
    )


def _proxies(environ: Mapping[str, str], host: str) -> dict[str, str]:
    def get(name: str) -> str:
        return environ.get(name.lower()) or environ.get(name.upper()) or ""

    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    for entry in get("no_proxy").split(","):
        entry = entry.strip().lstrip(".")
        if entry == "*" or (entry and (hostname == entry or hostname.endswith("." + entry))):
            return {}
    found = {"https": get("https_proxy"), "http": get("http_proxy")}
    return {scheme: url for scheme, url in found.items() if url}
