"""TLS for every listener, made in one place, so that a renewed certificate needs no restart.

Certificates are short-lived (cert-manager, an ACME client, a renewal cron rewrite the files
in place), and a restart would drop every connection and, for a replica, its loaded models.
So the files are watched, and when they change the new pair is loaded into the contexts the
listeners already hold: OpenSSL copies a context's certificate into each new connection, so
new connections get the new certificate and open ones keep theirs.

    reloader = reloader_for(certfile, keyfile, ca_certs)      # None: no TLS
    await loop.create_server(..., ssl=reloader.context(["http/1.1"]))
    watch = asyncio.create_task(reloader.watch())               # cancel it on the way out

A pair that does not load (half written, key and certificate not matching yet) is logged and
the certificate in use is kept. With ``ca_certs`` (mutual TLS) clients must present a
certificate that it signed; CA certificates added to that file are trusted once it is read
again, but one taken out stays trusted until the restart (OpenSSL's store only grows).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
from collections.abc import Sequence
from typing import Any, NoReturn

from modelhost import errors

__all__ = ["CertificateReloader", "reloader_for"]

logger = logging.getLogger("modelhost.access")

# One file's identity: a rewrite changes its mtime or size, a swap (rename, the symlink
# flip of a Kubernetes secret volume) its inode. None: the file is missing.
_FileStamp = tuple[int, int, int] | None
_Stamp = tuple[_FileStamp, ...]


def reloader_for(
    certfile: str, keyfile: str = "", ca_certs: str = ""
) -> CertificateReloader | None:
    """A reloader for the ``--ssl_*`` settings, or None where they ask for no TLS.

    Raises ``InvalidInput`` where they are inconsistent or a file does not load: a key or a
    CA bundle without a certificate would otherwise serve in clear text, silently.
    """
    if not certfile:
        if keyfile or ca_certs:
            given = "--ssl_keyfile" if keyfile else "--ssl_ca_certs"
            raise errors.InvalidInput(f"{given} needs --ssl_certfile (the certificate chain)")
        return None
    return CertificateReloader(certfile, keyfile, ca_certs)


class CertificateReloader:
    """Makes the server-side SSL contexts of one certificate, and loads it again when it changes.

    Not thread-safe, by design: :meth:`context`, :meth:`check` and :meth:`watch` run on the
    event loop that serves the contexts, so no handshake starts while a context changes.
    """

    # Seconds between two looks at the files, where :meth:`watch` is given none.
    interval = 1.0

    def __init__(
        self,
        certfile: str | os.PathLike[str],
        keyfile: str | os.PathLike[str] = "",
        ca_certs: str | os.PathLike[str] = "",
    ) -> None:
        if not certfile:
            raise errors.InvalidInput("TLS needs a certificate file (--ssl_certfile)")
        self.certfile = os.fspath(certfile)
        self.keyfile = os.fspath(keyfile) if keyfile else ""
        self.ca_certs = os.fspath(ca_certs) if ca_certs else ""
        self._contexts: list[ssl.SSLContext] = []
        stamp = self._stamp()
        try:
            self._load(_new_context())
        except _Unusable as exc:
            raise errors.InvalidInput(str(exc)) from None
        self._seen: _Stamp | None = stamp  # the files last looked at, loaded or not
        self._reloads = 0

    @property
    def mutual(self) -> bool:
        """Whether clients must present a certificate (``ca_certs`` given)."""
        return bool(self.ca_certs)

    @property
    def reloads(self) -> int:
        """How many times changed files were loaded (for tests and logs)."""
        return self._reloads

    def context(self, alpn: Sequence[str]) -> ssl.SSLContext:
        """A new server context with the current certificate, offering ``alpn`` protocols.

        ``["http/1.1"]`` for REST, ``["h2"]`` for gRPC (gRPC clients refuse a server that
        does not agree on h2). The context follows the files from now on.
        """
        context = _new_context()
        try:
            self._load(context)
        except _Unusable as exc:
            raise errors.InvalidInput(str(exc)) from None
        context.set_alpn_protocols(list(alpn))
        self._contexts.append(context)
        return context

    def check(self) -> bool:
        """Load the files again if they changed since the last look; True when it did.

        Never raises: a pair that does not load is logged, once, and the old one kept.
        """
        try:
            return self._check()
        except Exception:  # a reload must never take the listener down
            logger.exception("TLS: reloading %s failed; keeping the current one", self.certfile)
            return False

    async def watch(self, interval: float | None = None) -> None:
        """Call :meth:`check` every ``interval`` seconds (:attr:`interval`) until cancelled.

        It runs on the loop: a few stat() calls, and a few KiB read when a file changed.
        """
        while True:
            await asyncio.sleep(self.interval if interval is None else interval)
            self.check()

    def grpc_credentials(self) -> Any:
        """``grpc.ServerCredentials`` for a grpc.aio port, following the files the same way.

        gRPC's own TLS cannot use an ``ssl.SSLContext``; it asks the fetcher made here before
        each handshake, which answers a new configuration when the files changed (and load),
        None otherwise. It runs on gRPC's threads, hence its own lock and state.
        """
        import grpc  # only where a grpc.aio port serves TLS

        lock = threading.Lock()
        stamp = self._stamp()
        try:
            initial = self._grpc_configuration(grpc, stamp)
        except _Unusable as exc:
            raise errors.InvalidInput(str(exc)) from None
        seen: list[_Stamp | None] = [stamp]

        def fetch() -> Any:
            with lock:
                stamp = self._stamp()
                if stamp == seen[0]:
                    return None
                seen[0] = stamp
                try:
                    return self._grpc_configuration(grpc, stamp)
                except _Changing:
                    seen[0] = None  # still being written: look again at the next handshake
                except _Unusable as exc:
                    logger.warning("TLS (gRPC): %s; keeping the current certificate", exc)
                except Exception:
                    logger.exception("TLS (gRPC): reloading %s failed", self.certfile)
                return None

        return grpc.dynamic_ssl_server_credentials(
            initial, fetch, require_client_authentication=self.mutual
        )

    # -- internals -----------------------------------------------------------------------

    def _files(self) -> list[tuple[str, str]]:
        """(flag, path) of each file given, the flag to name it by in messages."""
        files = [
            ("--ssl_certfile", self.certfile),
            ("--ssl_keyfile", self.keyfile),
            ("--ssl_ca_certs", self.ca_certs),
        ]
        return [(flag, path) for flag, path in files if path]

    def _stamp(self) -> _Stamp:
        stamps: list[_FileStamp] = []
        for _, path in self._files():
            try:
                status = os.stat(path)
            except OSError:
                stamps.append(None)
            else:
                stamps.append((status.st_mtime_ns, status.st_size, status.st_ino))
        return tuple(stamps)

    def _check(self) -> bool:
        stamp = self._stamp()
        if stamp == self._seen:
            return False
        self._seen = stamp
        try:
            # A scratch context first: a pair that fails half-way through load_cert_chain
            # would leave a live context with a certificate and no key.
            self._load(_new_context())
            if self._stamp() != stamp:
                raise _Changing
        except _Changing:
            self._seen = None  # still being written: look again at the next tick
            return False
        except _Unusable as exc:
            logger.warning("TLS: %s; keeping the current certificate", exc)
            return False
        for context in self._contexts:
            self._load(context)
        self._reloads += 1
        logger.info("TLS: loaded the new certificate from %s", self.certfile)
        return True

    def _load(self, context: ssl.SSLContext) -> None:
        """Load the files into ``context``; raises :class:`_Unusable` naming the file at fault."""
        for flag, path in self._files():
            if not os.path.isfile(path):
                raise _Unusable(f"{flag} {path}: no such file")
        try:
            context.load_cert_chain(self.certfile, self.keyfile or None, password=_no_password)
        except (OSError, ssl.SSLError, errors.InvalidInput) as exc:
            key = f" with the key {self.keyfile}" if self.keyfile else ""
            raise _Unusable(f"cannot use the certificate {self.certfile}{key}: {exc}") from None
        if self.ca_certs:
            try:
                context.load_verify_locations(cafile=self.ca_certs)
            except (OSError, ssl.SSLError) as exc:
                raise _Unusable(f"cannot read the CA certificates {self.ca_certs}: {exc}") from None
            context.verify_mode = ssl.CERT_REQUIRED

    def _grpc_configuration(self, grpc: Any, stamp: _Stamp) -> Any:
        self._load(_new_context())  # the same checks, and the same messages, as for REST
        try:
            chain = _read(self.certfile)
            key = _read(self.keyfile) if self.keyfile else chain  # one file with both
            roots = _read(self.ca_certs) if self.ca_certs else None
        except OSError as exc:
            raise _Unusable(str(exc)) from None
        if self._stamp() != stamp:
            raise _Changing
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=roots)


class _Unusable(Exception):
    """The files do not make a usable certificate (missing, malformed, key not matching)."""


class _Changing(_Unusable):
    """The files changed while they were read: someone is still writing them."""


def _new_context() -> ssl.SSLContext:
    # Not create_default_context(CLIENT_AUTH): that trusts the system's CAs for client
    # certificates, where mutual TLS must trust ``ca_certs`` alone.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _no_password() -> NoReturn:
    # Without a callback OpenSSL would prompt on the terminal, blocking the event loop.
    raise errors.InvalidInput("the key is encrypted; give an unencrypted key file")


def _read(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()
