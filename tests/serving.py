"""Test helpers: a real ``ModelServer`` in a thread, on loopback ports the kernel picks."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from modelhost import Model, ModelServer, ServerSettings
from modelhost.model.repository import ModelRepository


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
    **settings: Any,
) -> RunningServer:
    """A ``ModelServer`` serving ``models`` in a thread of its own, on free ports."""
    options: dict[str, Any] = {"host": "127.0.0.1", "http_port": 0, "grpc_port": 0}
    options.update(settings)
    server = ModelServer(settings=ServerSettings(**options), registered_models=repository)
    failure: list[BaseException] = []

    def run() -> None:
        try:
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
