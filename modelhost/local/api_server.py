"""The control API's own doors: a Unix socket in the platform's home, and optionally loopback TCP.

Never the gateway's port: a client of the models cannot reach ``apply``. The socket is
made mode 0600 inside a folder only its owner can enter, so whoever can open it is the
platform's owner (the caller :data:`api.OWNER`); TCP takes an admin or deployer token on
every call. Both are served by uvicorn (its parser, its header and keep-alive limits),
with a body limit of our own, and every call is written to the audit log.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import socket
import tempfile
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

from modelhost import errors
from modelhost.access import AuditLog, Guard, Role, refusal_headers
from modelhost.local import api
from modelhost.local.platform import Platform
from modelhost.server.http.messages import read_body

__all__ = ["MAX_BODY_BYTES", "ApiServer", "ControlApp", "socket_path"]

logger = logging.getLogger("modelhost.local")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

# A YAML file of objects is small; anything this big is not one.
MAX_BODY_BYTES = 8 * 1024 * 1024
# Unix socket paths are limited to 108 bytes; keep well inside.
_MAX_SOCKET_PATH = 100


def socket_path(home: Path) -> Path:
    """``<home>/api.sock``, or a private folder in /tmp named after home when that is too long."""
    inside = home / "api.sock"
    if len(str(inside.resolve())) <= _MAX_SOCKET_PATH:
        return inside
    digest = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"modelhost-{os.getuid()}-{digest}" / "api.sock"


_UNAUTHENTICATED = api.Caller("unauthenticated")


class ControlApp:
    """The control API as an ASGI app; ``guard`` None means the caller is the owner."""

    def __init__(self, platform: Platform, audit: AuditLog, guard: Guard | None) -> None:
        self.platform = platform
        self.audit = audit
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # uvicorn runs it with lifespan "off"
            return
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}', "application/json")
            return
        # Until a token says otherwise, a TCP caller is nobody in particular.
        caller = api.OWNER if self.guard is None else _UNAUTHENTICATED
        response: api.ApiResponse
        failure: errors.ModelhostError | None = None
        try:
            if self.guard is not None:
                caller = self._caller(scope)
                _needs_deployer(caller)
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            body = await read_body(receive, headers, MAX_BODY_BYTES)
            query = scope.get("query_string", b"")
            response = await api.handle(self.platform, method, path, query, body, caller)
        except errors.ModelhostError as exc:
            failure = exc
            response = api.failure(exc.status_code, str(exc))
        extra = (
            [(k.encode(), v.encode()) for k, v in refusal_headers(failure).items()]
            if failure
            else []
        )
        self.audit.record(
            caller.name,
            f"{method} {path}",
            response.objects,
            response.status,
            response.message,
            via="tcp" if self.guard is not None else "unix",
        )
        await _respond(send, response.status, response.body, response.content_type, extra)

    def _caller(self, scope: Scope) -> api.Caller:
        assert self.guard is not None
        authorization = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        token = self.guard.authenticate(authorization)
        return api.Caller(token.name, token)


def _needs_deployer(caller: api.Caller) -> None:
    """Any control call needs at least a deployer; namespaces are checked per call."""
    token = caller.token
    if token is not None and token.role.rank < Role.DEPLOYER.rank:
        raise errors.PermissionDenied(
            f"Token {token.name!r} is a {token.role.value} token: the control API takes "
            "admin and deployer tokens."
        )


class ApiServer:
    """The control API's listeners: the Unix socket always, loopback TCP when asked."""

    def __init__(
        self,
        platform: Platform,
        audit: AuditLog,
        home: Path,
        guard: Guard,
        tcp: tuple[str, int] | None = None,
    ) -> None:
        self.path = socket_path(home)
        self._apps: list[tuple[ControlApp, tuple[str, int] | None]] = [
            (ControlApp(platform, audit, None), None)
        ]
        if tcp is not None:
            self._apps.append((ControlApp(platform, audit, guard), tcp))
        self._servers: list[uvicorn.Server] = []
        self._tasks: list[asyncio.Task[None]] = []
        self.tcp_port: int | None = None

    async def start(self) -> None:
        for app, tcp in self._apps:
            sock = _tcp_socket(*tcp) if tcp is not None else _unix_socket(self.path)
            if tcp is not None:
                self.tcp_port = int(sock.getsockname()[1])
            config = uvicorn.Config(
                app,
                http="httptools",
                lifespan="off",
                log_config=None,
                access_log=False,
                timeout_keep_alive=5,
                limit_concurrency=64,
                h11_max_incomplete_event_size=64 * 1024,
            )
            server = _Server(config)
            self._servers.append(server)
            self._tasks.append(asyncio.create_task(server.serve(sockets=[sock])))
        while not all(s.started for s in self._servers):
            for task in self._tasks:
                if task.done():
                    task.result()
                    raise RuntimeError("the control API stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        for server in self._servers:
            server.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _Server(uvicorn.Server):
    """uvicorn without signal handlers of its own: the platform owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def _unix_socket(path: Path) -> socket.socket:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent.name.startswith("modelhost-"):
        os.chmod(path.parent, 0o700)  # the /tmp folder: nobody else may even look in
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a platform that was killed
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # Made 0600 from the start: no moment when another user could connect.
    previous = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(previous)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _tcp_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"Cannot bind the control API to {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode("latin-1")),
        (b"content-length", str(len(body)).encode()),
        *(extra or ()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
