"""Graph router test helpers: step services on loopback ports, and the router config for them.

:class:`StepService` is a small aiohttp server that plays every InferenceService a graph calls
(the platform's end-to-end tests run real model replicas): it records each call (path,
``Host``, headers, body) and answers ``{"model", "path", "host", "got"}`` for a JSON body, 400
for a body that is not JSON, and a v2 binary body (``inference-header-content-length``) back as
it came. A test can hold every call until it says so (:meth:`StepService.hold`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web

from modelhost.graph import GraphServer, GraphServerSettings, RouterConfig, parse_router_config

_T = TypeVar("_T")


@dataclass(frozen=True)
class StepCall:
    path: str
    host: str
    headers: dict[str, str]
    body: bytes


class StepService:
    """Every InferenceService of a test graph, on one loopback port (``address``)."""

    def __init__(self) -> None:
        self.calls: list[StepCall] = []
        self.address = ""
        self._runner: web.AppRunner | None = None
        self._gate: asyncio.Event | None = None
        self._arrived: asyncio.Event | None = None

    async def start(self) -> str:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.address = f"{host}:{port}"
        return self.address

    async def close(self) -> None:
        self.release()
        if self._runner is not None:
            await self._runner.cleanup()

    def hold(self) -> None:
        """Calls from now on wait until :meth:`release`; :meth:`arrived` waits for the first."""
        self._gate = asyncio.Event()
        self._arrived = asyncio.Event()

    async def arrived(self) -> None:
        assert self._arrived is not None, "hold() first"
        await self._arrived.wait()

    def release(self) -> None:
        if self._gate is not None:
            self._gate.set()

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        self.calls.append(StepCall(request.path, headers.get("host", ""), headers, body))
        if self._gate is not None and self._arrived is not None:
            self._arrived.set()
            await self._gate.wait()
        length = headers.get("inference-header-content-length")
        if length is not None:
            answer_headers = {"inference-header-content-length": length}
            return web.Response(
                body=body, content_type="application/octet-stream", headers=answer_headers
            )
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            return web.json_response({"error": "the body is not JSON"}, status=400)
        model = request.path.split("/")[3].split(":")[0] if request.path.count("/") >= 3 else ""
        answer = {
            "model": model,
            "path": request.path,
            "host": headers.get("host"),
            "got": document,
        }
        return web.Response(body=orjson.dumps(answer), content_type="application/json")


def router_config(
    nodes: Mapping[str, Any],
    services: Mapping[str, Mapping[str, Any]],
    *,
    name: str = "g",
    **spec: Any,
) -> RouterConfig:
    """A :class:`RouterConfig` in the platform's shape: KServe's graph YAML and a service table."""
    document = {
        "graph": {
            "apiVersion": "serving.kserve.io/v1alpha1",
            "kind": "InferenceGraph",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodes": dict(nodes), **spec},
        },
        "services": {key: dict(value) for key, value in services.items()},
    }
    return parse_router_config(document)


def service(address: str, name: str, protocol: str = "v1", **extra: Any) -> dict[str, Any]:
    """A service table entry reached at ``address``, its ingress host in ``example.com``."""
    entry = {
        "host": f"{name}.default.example.com",
        "address": address,
        "protocol": protocol,
        "protocols": [protocol],
        "model": name,
    }
    entry.update(extra)
    return entry


@contextlib.asynccontextmanager
async def serving(server: GraphServer) -> AsyncIterator[str]:
    """``server`` serving in this event loop; yields its base URL, stops and drains after."""
    task = asyncio.create_task(server.serve())
    # GraphServer says it serves through its readiness (uvicorn has no event to wait on).
    while not server.front.ready:
        if task.done():
            task.result()
            raise AssertionError("the graph server exited at start")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        await asyncio.wait_for(task, 30)


def local_settings(**settings: Any) -> GraphServerSettings:
    return GraphServerSettings(**{"host": "127.0.0.1", "http_port": 0, **settings})


class LoopThread:
    """An event loop in a thread of its own, for servers a synchronous test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, work: Coroutine[Any, Any, _T], timeout: float = 30) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()
