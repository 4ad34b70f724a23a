"""Test helpers: a real ``ModelServer`` or ASGI app in a thread, on free loopback ports."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
import uvloop

from modelhost import Model, ModelServer, ServerSettings
from modelhost.model.repository import ModelRepository
from modelhost.server.extensions import ServerExtensions


@dataclass
class RunningServer:
    server: ModelServer
    thread: threading.Thread

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.server.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"


StartServer = Callable[..., RunningServer]


def start_server(
    models: Sequence[Model],
    repository: ModelRepository | None = None,
    *,
    on_uvloop: bool = False,
    extensions: ServerExtensions | None = None,
    **settings: Any,
) -> RunningServer:
    """A ``ModelServer`` serving ``models`` in a thread of its own, on free ports
    (``on_uvloop``: on uvloop's event loop, as ``modelhost serve`` runs it)."""
    options: dict[str, Any] = {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0}
    options.update(settings)
    server = ModelServer(
        settings=ServerSettings(**options), registered_models=repository, extensions=extensions
    )
    failure: list[BaseException] = []

    def run() -> None:
        try:
            if on_uvloop:
                uvloop.run(server.serve(models))
            else:
                asyncio.run(server.serve(models))
        except BaseException as exc:  # reported to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="modelhost-test-server", daemon=True)
    thread.start()
    while not server.wait_started(0.05):
        if failure:
            raise failure[0]
        if not thread.is_alive():
            raise RuntimeError("the test server exited before it started")
    return RunningServer(server, thread)


def stop_server(running: RunningServer) -> None:
    running.server.stop()
    running.thread.join(30)
    assert not running.thread.is_alive(), "the test server did not stop"


@contextmanager
def serve_asgi(app: Any, **uvicorn_options: Any) -> Iterator[int]:
    """``app`` under uvicorn in a thread, on a free loopback port; yields the port.

    The socket listens before uvicorn starts, so connections made at once wait in its
    backlog. ``uvicorn_options`` override the defaults (lifespan on, httptools, no logging
    set-up) for ``uvicorn.Config``.
    """
    options: dict[str, Any] = {"lifespan": "on", "log_config": None, "http": "httptools"}
    options.update(uvicorn_options)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="asgi-test-server", daemon=True
    )
    thread.start()
    try:
        yield int(sock.getsockname()[1])
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive(), "the ASGI test server did not stop"


READY_LINE = re.compile(r"HTTP on [\d.]+:(\d+)(?:, gRPC on [\d.]+:(\d+))?")


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "modelhost", "serve", *args]


class ServeProcess:
    """A server in a child process on free loopback ports, read from its ready line."""

    def __init__(self, command: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [*command, "--host", "127.0.0.1", "--http_port", "0", "--grpc_port", "0"],
            cwd=cwd,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self.http_port = 0
        self.grpc_port = 0
        ready = threading.Event()

        def read() -> None:
            assert self.process.stderr is not None
            for line in self.process.stderr:
                self.lines.append(line)
                match = READY_LINE.search(line)
                if match:
                    self.http_port = int(match.group(1))
                    self.grpc_port = int(match.group(2) or 0)
                    ready.set()

        self.reader = threading.Thread(target=read, daemon=True)
        self.reader.start()
        if not ready.wait(60):
            self.process.kill()
            self.stop()
            raise AssertionError("modelhost serve did not start:\n" + "".join(self.lines))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self.reader.join(5)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code
