"""A real embedded platform for tests: its own event loop thread, loopback ports, a temp home."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvloop

from modelhost.control import PlatformConfig
from modelhost.local.client import PlatformClient
from modelhost.local.server import PlatformServer
from modelhost.local.settings import PlatformSettings

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningPlatform:
    server: PlatformServer
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    home: Path
    stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def client(self) -> PlatformClient:
        """The control API over the owner's Unix socket."""
        return PlatformClient(self.server.api_address)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def apply(self, text: str) -> list[dict[str, Any]]:
        return self.client.apply(text.encode(), source="test.yaml")

    def status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        found: dict[str, Any] = self.client.get("isvc", namespace, name).get("status") or {}
        return found

    def wait_for(
        self,
        name: str,
        check: Callable[[dict[str, Any]], bool],
        namespace: str = "default",
        timeout: float = 60,
        what: str = "the condition",
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = self.status(name, namespace)
            if check(status):
                return status
            time.sleep(0.1)
        revisions = self.client.revisions(namespace, name)
        raise AssertionError(
            f"{namespace}/{name}: {what} not reached in {timeout}s; status {status}; "
            f"revisions {revisions}"
        )

    def wait_ready(
        self, name: str, namespace: str = "default", timeout: float = 60
    ) -> dict[str, Any]:
        return self.wait_for(name, is_ready, namespace, timeout, "Ready")

    def revisions(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        return self.client.revisions(namespace, name)

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as response:
            text: str = response.read().decode()
            return text


def is_ready(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or ()
    )


def traffic(status: dict[str, Any], component: str = "predictor") -> dict[str, int]:
    """``{revision: percent}`` as the status says it is served now."""
    targets = ((status.get("components") or {}).get(component) or {}).get("traffic") or ()
    return {t["revisionName"]: t.get("percent", 0) for t in targets}


def start_platform(
    home: Path,
    replica_env: dict[str, str] | None = None,
    access: dict[str, Any] | None = None,
    graph_router: str = "in-process",
    batch_scheduling: bool = True,
    **config: Any,
) -> RunningPlatform:
    """A platform in ``home``; ``access`` sets its auth, api_port and ssl_* settings."""
    settings = PlatformSettings(
        home=home,
        http_port=0,
        grpc_port=0,
        **(access or {}),
        config=PlatformConfig(**config),
        replica_env=replica_env or {},
        workdir=str(REPO),
        replica_start_timeout_s=60,
        replica_stop_grace_s=5,
        autoscale_tick_s=0.25,
        graph_router=graph_router,
        batch_scheduling=batch_scheduling,
    )
    server = PlatformServer(settings)
    # uvloop, as `modelhost up` runs it.
    loop = uvloop.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    async def main() -> None:
        try:
            await server.start()
        except BaseException as exc:
            failure.append(exc)
            raise
        finally:
            started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    thread = threading.Thread(target=run, name="modelhost-test-platform", daemon=True)
    thread.start()
    started.wait(30)
    if failure:
        raise failure[0]
    return RunningPlatform(server, loop, thread, home)


def stop_platform(running: RunningPlatform) -> None:
    if running.stopped:
        return
    running.stopped = True
    try:
        asyncio.run_coroutine_threadsafe(running.server.stop(), running.loop).result(60)
    finally:
        running.server.platform.kill_now()
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.thread.join(10)
        running.loop.close()


def platform_address(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "platform.json").read_text())
    return data


def run_modelhost(
    *args: str, home: Path, cwd: Path, **env: str
) -> subprocess.CompletedProcess[str]:
    """``python -m modelhost ARGS`` as a user runs it, with ``MODELHOST_HOME=home`` and ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "modelhost", *args],
        cwd=cwd,
        env={**os.environ, "MODELHOST_HOME": str(home), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def process_alive(pid: int) -> bool:
    """Runs: a zombie (killed, not yet reaped by whoever adopted it) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")
