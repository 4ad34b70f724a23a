"""The router process: one graph's :class:`GraphFront` on uvicorn, until it is told to stop.

``modelhost graph --spec ...`` runs :func:`run_graph_server`; the platform starts it as a
replica and the Kubernetes renderer as a Deployment's container. The listener is uvicorn's
httptools protocol with modelhost's limits (:func:`~modelhost.server.http.protocol.
limited_protocol`), and the graph's ``spec.routerTimeouts`` set them as KServe's router sets
its Go ``http.Server`` (its defaults: serverRead 60 s, serverWrite 60 s, serverIdle 180 s):

- ``serverRead``: the header deadline and the body's progress deadline (408 past them). When
  it is not set, headers get modelhost's 10 s (no working client needs KServe's 60 s for
  them, a slowloris does) and the body KServe's 60 s between two of its bytes.
- ``serverWrite``: how long the graph may take to answer a request (504 past it).
- ``serverIdle``: how long an idle keep-alive connection is kept.

On :meth:`GraphServer.stop` (SIGTERM or SIGINT for the command) the readiness probe turns 503,
the listener closes, requests in flight finish within ``grace_period_s``, the step client's
connections close, and :meth:`GraphServer.serve` returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import uvicorn
from prometheus_client import CollectorRegistry

from modelhost.control import InferenceGraph
from modelhost.graph.caller import HttpStepCaller, StepCaller
from modelhost.graph.config import RouterConfig
from modelhost.graph.front import FrontSettings, GraphFront
from modelhost.graph.metrics import GraphMetrics, RouterLoad
from modelhost.graph.resolve import ServiceTableResolver
from modelhost.graph.router import GraphRouter, RouterSettings
from modelhost.server.http.protocol import limited_protocol
from modelhost.settings import Http1Limits

__all__ = [
    "GraphServer",
    "GraphServerSettings",
    "ServerTimeouts",
    "run_graph_server",
    "server_timeouts",
]

logger = logging.getLogger("modelhost.graph")

# KServe's router defaults (constants.RouterTimeoutsServerRead, ...ServerWrite, ...ServerIdle).
KSERVE_SERVER_READ_S = 60.0
KSERVE_SERVER_WRITE_S = 60.0
KSERVE_SERVER_IDLE_S = 180.0


@dataclass(frozen=True)
class GraphServerSettings:
    """What the command line decides about the router process (the graph decides the rest).

    ``gateway`` (``host:port``; None: none) is where every ``serviceName`` step goes, with the
    service's ingress host in ``Host``; without it steps go to each service's address.
    ``grace_period_s`` bounds how long requests in flight may finish once stopping
    (Kubernetes' default ``terminationGracePeriodSeconds``).
    """

    host: str = "0.0.0.0"
    http_port: int = 8080
    gateway: str | None = None
    router: RouterSettings = field(default_factory=RouterSettings)
    max_body_bytes: int = Http1Limits.max_body_bytes
    grace_period_s: float = 30.0


@dataclass(frozen=True)
class ServerTimeouts:
    """The listener's deadlines for one graph, in seconds (see the module's docstring)."""

    header_s: float
    body_s: float
    write_s: float
    idle_s: float


def server_timeouts(graph: InferenceGraph) -> ServerTimeouts:
    """The graph's ``routerTimeouts``, with KServe's defaults (and modelhost's header one)."""
    timeouts = graph.spec.router_timeouts
    read = timeouts.server_read if timeouts is not None else None
    write = timeouts.server_write if timeouts is not None else None
    idle = timeouts.server_idle if timeouts is not None else None
    return ServerTimeouts(
        header_s=float(read) if read else Http1Limits.header_timeout_s,
        body_s=float(read) if read else KSERVE_SERVER_READ_S,
        write_s=float(write) if write else KSERVE_SERVER_WRITE_S,
        idle_s=float(idle) if idle else KSERVE_SERVER_IDLE_S,
    )


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: the command owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class GraphServer:
    """Serves one graph over HTTP until :meth:`stop`; :attr:`port` is the port it bound.

    ``caller`` makes the step calls (default: an :class:`HttpStepCaller`, closed on the way
    out; one given here is the giver's to close).
    """

    def __init__(
        self,
        config: RouterConfig,
        settings: GraphServerSettings | None = None,
        *,
        caller: StepCaller | None = None,
    ) -> None:
        self.config = config
        self.settings = settings or GraphServerSettings()
        self.timeouts = server_timeouts(config.graph)
        self.registry = CollectorRegistry()
        self._own_caller: HttpStepCaller | None = None
        if caller is None:
            caller = self._own_caller = HttpStepCaller()
        graph = config.graph
        resolver = ServiceTableResolver(
            config.services, gateway=self.settings.gateway or None, namespace=graph.namespace
        )
        router = GraphRouter(
            graph,
            caller,
            resolver,
            settings=self.settings.router,
            metrics=GraphMetrics(self.registry),
        )
        front_settings = FrontSettings(self.settings.max_body_bytes, self.timeouts.write_s)
        self.front = GraphFront(
            router, self.registry, front_settings, RouterLoad(self.registry, graph.name)
        )
        self.port: int | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def limits(self) -> Http1Limits:
        """The listener's limits: modelhost's, with the graph's timeouts and the body limit."""
        return Http1Limits(
            header_timeout_s=self.timeouts.header_s,
            body_timeout_s=self.timeouts.body_s,
            idle_timeout_s=self.timeouts.idle_s,
            max_body_bytes=self.settings.max_body_bytes,
        )

    async def serve(self) -> None:
        """Serve until :meth:`stop`; then drain, close the step client and return."""
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        listener = _listen(settings.host, settings.http_port)
        self.port = listener.getsockname()[1]
        config = uvicorn.Config(
            self.front,
            # httptools with the header and body deadlines and caps uvicorn lacks.
            http=cast(Any, limited_protocol(self.limits())),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=max(1, round(self.timeouts.idle_s)),
            timeout_graceful_shutdown=max(1, round(settings.grace_period_s)),
        )
        http_server = _UvicornServer(config)
        http_task = asyncio.create_task(http_server.serve(sockets=[listener]))
        try:
            # uvicorn has no "started" event to wait on, only a flag.
            while not http_server.started and not http_task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            if http_task.done():
                http_task.result()  # raises what stopped the HTTP server from starting
                raise RuntimeError("The graph's HTTP server exited at start.")
            graph = self.config.graph
            self.front.ready = True
            logger.info(
                "modelhost graph %s/%s serving HTTP on %s:%s (steps %s)",
                graph.namespace,
                graph.name,
                settings.host,
                self.port,
                f"via the gateway {settings.gateway}" if settings.gateway else "direct",
            )
            self._started.set()
            await self._stop.wait()
        finally:
            self.front.ready = False
            logger.info("Draining in-flight graph requests (up to %ss)", settings.grace_period_s)
            http_server.should_exit = True
            await asyncio.gather(http_task, return_exceptions=True)
            if self._own_caller is not None:
                await self._own_caller.close()
            listener.close()
            self._started.clear()
            logger.info("modelhost graph stopped")

    def stop(self) -> None:
        """Ask a running server to drain and stop; safe from any thread."""
        loop, event = self._loop, self._stop
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until the port serves (for embedding and tests)."""
        return self._started.wait(timeout)


async def run_graph_server(server: GraphServer) -> None:
    """:meth:`GraphServer.serve`, stopped by SIGTERM or SIGINT (the command's main loop)."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, server.stop)
    try:
        await server.serve()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named so that asyncio sets TCP_NODELAY on each accepted connection.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"Cannot bind HTTP to {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock
