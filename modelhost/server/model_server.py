"""``ModelServer``: one process serving REST and gRPC over the same models.

It loads the models, binds both ports (0 picks a free one), serves until SIGTERM or
SIGINT, then drains: readiness turns false, no new connection is accepted, requests
already running finish (up to ``grace_period``), and only then does the process exit.

As KServe's ``kserve.model_server`` module, it offers ``parser``, the server's flags for
a script's own ``ArgumentParser(parents=[model_server.parser])``; it is built on first
use, and nothing reads the command line at import.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, cast

import uvicorn

from modelhost.access import Guard, TokenTable, warn_if_open
from modelhost.access.tls import reloader_for
from modelhost.model.model import Model, PredictorConfig
from modelhost.model.repository import ModelRepository
from modelhost.server.dataplane import DataPlane
from modelhost.server.extensions import ServerExtensions
from modelhost.server.heap import keep_freed_buffers
from modelhost.server.http.app import HttpApp
from modelhost.server.http.protocol import limited_protocol
from modelhost.server.inference import StepRunner
from modelhost.server.metrics import Metrics
from modelhost.server.openai.guardrails import GuardrailChain, chain_from_names
from modelhost.server.openai.routes import OpenAIRoutes
from modelhost.server.scheduling import (
    batch_this_thread,
    restore_thread_policy,
    thread_policy,
    unbatch_this_thread,
)
from modelhost.server.workers import WorkerPool, reserve_port
from modelhost.settings import (
    BatchSettings,
    ServerSettings,
    add_server_arguments,
    parse_known_server_args,
)

if TYPE_CHECKING:
    # Imported when the server starts gRPC: without it (--enable_grpc false) a server does not
    # pay for gRPC's and HTTP/2's modules.
    from modelhost.server.grpc.server import GrpcServer

__all__ = ["ModelServer", "predictor_config_from_args", "server_parser"]

logger = logging.getLogger("modelhost.server")


class _UvicornServer(uvicorn.Server):
    """uvicorn without its own signal handling: ``ModelServer`` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ModelServer:
    """Serves models over REST (v1, v2) and gRPC (v2), KServe's ``ModelServer`` API.

    Without ``settings`` it reads KServe's flags from the command line it was started
    with (``--http_port``, ``--grpc_port``, ...), as KServe's does, then the
    ``MODELHOST_*`` environment; explicit arguments win over both.
    """

    def __init__(
        self,
        http_port: int | None = None,
        grpc_port: int | None = None,
        workers: int | None = None,
        max_threads: int | None = None,
        registered_models: ModelRepository | None = None,
        enable_grpc: bool | None = None,
        enable_docs_url: bool | None = None,
        grace_period: float | None = None,
        settings: ServerSettings | None = None,
        extensions: ServerExtensions | None = None,
        **kserve_options: Any,
    ) -> None:
        base = settings if settings is not None else parse_known_server_args(sys.argv[1:])
        overrides = {
            "http_port": http_port,
            "grpc_port": grpc_port,
            "workers": workers,
            "max_threads": max_threads,
            "enable_grpc": enable_grpc,
            "enable_docs": enable_docs_url,
            "grace_period": grace_period,
        }
        self.settings = base.replace(**{k: v for k, v in overrides.items() if v is not None})
        if kserve_options:
            logger.debug("Ignoring KServe options with no effect here: %s", sorted(kserve_options))
        self.repository = registered_models if registered_models is not None else ModelRepository()
        self.extensions = extensions if extensions is not None else ServerExtensions()
        self.metrics = Metrics()
        # A model's metric label children go when it unloads: bounded by the loaded models.
        self.repository.add_unload_listener(self._forget_model_metrics)
        self.http_port: int | None = None
        self.grpc_port: int | None = None
        self._started = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    # -- running -------------------------------------------------------------------

    def start(self, models: Sequence[Model] = ()) -> None:
        """Serve ``models`` until SIGTERM/SIGINT (blocking), as KServe's ``start``.

        With ``workers`` > 1 the models are loaded here, once, and then the process
        forks its workers (see ``modelhost.server.workers``).
        """
        configure_logging(self.settings.log_level)
        if self.settings.workers <= 1:
            _run(self.serve(models))
            return
        # Checked before the fork: a worker that fails on a bad certificate would be
        # restarted, and fail again, forever.
        settings = self.settings
        reloader_for(settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs)
        for model in models:
            if not model.ready:
                model.load()
        http_reservation, http_port = reserve_port(self.settings.host, self.settings.http_port)
        grpc_reservation, grpc_port = reserve_port(self.settings.host, self.settings.grpc_port)
        worker_settings = self.settings.replace(
            http_port=http_port, grpc_port=grpc_port, reuse_port=True
        )

        def worker_main(index: int, metrics_dir: str) -> int:
            http_reservation.close()
            grpc_reservation.close()
            self.settings = worker_settings
            self.metrics = Metrics(multiprocess_dir=metrics_dir)
            _run(self.serve(models))
            return 0

        try:
            WorkerPool(worker_settings, worker_main).run()
        finally:
            http_reservation.close()
            grpc_reservation.close()

    async def serve(self, models: Sequence[Model] = ()) -> None:
        """Serve until :meth:`stop` or a signal; then drain and return."""
        settings = self.settings
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        keep_freed_buffers(settings.malloc_mmap_threshold)
        previous_policy = thread_policy()
        if not settings.batch_scheduling:
            # Off means SCHED_OTHER, also for a process that inherited SCHED_BATCH from the
            # platform's gateway that started it; the threads started from here inherit it.
            unbatch_this_thread()
        # Before the models load: a certificate that does not load fails the start at once.
        tls = reloader_for(settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs)
        executor = ThreadPoolExecutor(
            settings.max_threads,
            thread_name_prefix="modelhost-model",
            initializer=batch_this_thread if settings.batch_scheduling else None,
        )
        batching = BatchSettings(settings.max_batch_size, settings.max_latency_ms)
        runner = StepRunner(executor, self.metrics, batching, settings.inline_below_ms)
        for model in models:
            if not model.ready:
                await runner.call(model.load)
            self.repository.update(model)
        dataplane = DataPlane(
            self.repository, runner, settings.server_name, self.extensions.explainer
        )
        guard = guard_for(settings)
        openai = OpenAIRoutes(
            dataplane,
            self.metrics,
            GuardrailChain(
                [*chain_from_names(settings.guardrails).guardrails, *self.extensions.guardrails]
            ),
            request_timeout_s=settings.llm_request_timeout_s,
        )
        mounts = self.extensions.mounts
        for mount in mounts:
            if mount.bind is not None:
                mount.bind(dataplane)
            if mount.on_start is not None:
                await mount.on_start()
        app = HttpApp(dataplane, self.metrics, settings, openai, guard=guard, mounts=mounts)
        http_socket = _bind(settings.host, settings.http_port, settings.reuse_port)
        self.http_port = http_socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            # httptools with the header and body deadlines and caps uvicorn lacks.
            http=cast(
                Any,
                limited_protocol(settings.http1_limits(), app if settings.direct_http else None),
            ),
            # The client in the access log is the socket's peer, on both paths.
            proxy_headers=False,
            ws="none",
            lifespan="off",
            log_config=None,
            log_level=settings.log_level,
            access_log=False,
            timeout_keep_alive=settings.timeout_keep_alive,
            timeout_graceful_shutdown=int(settings.grace_period),
            # Given so that uvicorn knows it serves https; the context is ours (below).
            ssl_certfile=settings.ssl_certfile or None,
            ssl_keyfile=settings.ssl_keyfile or None,
        )
        if tls is not None:
            # uvicorn loads its config once, at serve(), unless it is loaded already: loaded
            # here, its SSL context is replaced by one that follows the certificate files.
            config.load()
            config.ssl = tls.context(["http/1.1"])
        http_server = _UvicornServer(config)
        dataplane.listening = not settings.enable_grpc  # ready once gRPC listens too
        http_task = asyncio.create_task(http_server.serve(sockets=[http_socket]))
        self._install_signal_handlers()
        # uvicorn has no "started" event to wait on, only a flag.
        while not http_server.started and not http_task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        if http_task.done():
            http_task.result()  # raises what stopped the HTTP server from starting
            raise RuntimeError("The HTTP server exited at start.")
        grpc_server: GrpcServer | None = None
        if settings.enable_grpc:
            try:
                # HTTP answers meanwhile: importing gRPC and protobuf (~0.1 s) runs off the
                # loop, so a cold server's first REST answer does not wait for them.
                grpc_server_class = await asyncio.get_running_loop().run_in_executor(
                    None, _grpc_server_class
                )
                grpc_server = grpc_server_class(
                    dataplane, self.metrics, settings, guard=guard, tls=tls
                )
                self.grpc_port = await grpc_server.start(settings.host, settings.grpc_port)
                dataplane.listening = True
            except BaseException:
                http_server.should_exit = True
                await asyncio.gather(http_task, return_exceptions=True)
                http_socket.close()
                executor.shutdown(wait=False)
                raise
        logger.info(
            "modelhost serving %s: HTTP on %s:%s%s",
            ", ".join(self.repository.get_models()) or "no models",
            settings.host,
            self.http_port,
            f", gRPC on {settings.host}:{self.grpc_port}" if grpc_server else "",
        )
        if settings.batch_scheduling:
            batch_this_thread()  # after gRPC started its threads, which stay SCHED_OTHER
        watch = asyncio.create_task(tls.watch()) if tls is not None else None
        # What start-up built (modules, the models) lives as long as the server: out of the
        # collector's sight, a full collection scans the requests' objects only, not ~150,000
        # long-lived ones (~100 ms each, the REST p99 under load: bench/RESULTS.md, run 13).
        gc.freeze()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            if watch is not None:
                watch.cancel()
            logger.info("Draining in-flight requests (up to %ss)", settings.grace_period)
            dataplane.draining = True
            if grpc_server is not None:
                grpc_server.set_not_serving()
            http_server.should_exit = True
            drains = [http_task]
            if grpc_server is not None:
                drains.append(asyncio.ensure_future(grpc_server.stop(settings.grace_period)))
            await asyncio.gather(*drains, return_exceptions=True)
            for mount in mounts:
                if mount.on_stop is not None:
                    try:
                        await mount.on_stop()
                    except Exception:
                        logger.exception("Stopping %s failed", mount.name)
            await runner.close()
            for model in self.repository.get_models().values():
                with contextlib.suppress(Exception):
                    model.stop()
            executor.shutdown(wait=False, cancel_futures=True)
            http_socket.close()
            self._started.clear()
            restore_thread_policy(previous_policy)  # for a program that embeds serve()
            logger.info("modelhost stopped")

    def stop(self) -> None:
        """Ask a running server to drain and stop; safe from any thread."""
        loop, event = self._loop, self._stop
        if loop is not None and event is not None and not loop.is_closed():
            loop.call_soon_threadsafe(event.set)

    def wait_started(self, timeout: float | None = None) -> bool:
        """Block until both ports serve (for embedding and tests)."""
        return self._started.wait(timeout)

    def _forget_model_metrics(self, name: str) -> None:
        # Unloads run in the model threads; the metrics are observed on the loop.
        loop = self._loop
        if loop is None or loop.is_closed():
            self.metrics.forget_model(name)
        else:
            loop.call_soon_threadsafe(self.metrics.forget_model, name)

    def _install_signal_handlers(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stop)


def guard_for(settings: ServerSettings) -> Guard | None:
    """The token checks ``--auth`` asks for (None: off, with a warning beyond loopback)."""
    if settings.auth not in ("tokens", "none"):
        raise ValueError(f"--auth takes tokens or none, not {settings.auth!r}")
    warn_if_open(settings.host, settings.auth == "tokens", "The model server")
    if settings.auth != "tokens":
        return None
    return Guard(TokenTable(settings.token_path()))


def _bind(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named so that asyncio (when uvloop is absent) sets TCP_NODELAY on each
    # accepted connection; the listener's own TCP_NODELAY is inherited where it is not.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"Cannot bind HTTP to {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _run(main: Any) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main)
    else:
        uvloop.run(main)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("modelhost").setLevel(level.upper())


# -- KServe's model_server.parser --------------------------------------------------------


def _grpc_server_class() -> type[GrpcServer]:
    """The gRPC server's class, imported on first use (with grpc and protobuf)."""
    from modelhost.server.grpc.server import GrpcServer

    return GrpcServer


def server_parser() -> argparse.ArgumentParser:
    """The server's and a model's flags, KServe's names, as a parent for a script's parser.

    Server flags default to None (not given: the environment's or the default setting,
    see ``settings_from_args``); the model flags have KServe's defaults.
    """
    from modelhost.server.remote_predictor import PROTOCOLS

    parser = argparse.ArgumentParser(add_help=False)
    add_server_arguments(parser)
    group = parser.add_argument_group("model")
    group.add_argument("--model_name", default="model", help="model name in URLs (model)")
    group.add_argument(
        "--predictor_host",
        default=None,
        help="a transformer's predictor, host:port (gRPC v2: its gRPC address)",
    )
    group.add_argument(
        "--predictor_protocol",
        default="v1",
        choices=PROTOCOLS,
        help="protocol to the predictor (v1)",
    )
    # KServe's deprecated name; here it applies when --predictor_protocol is left at v1.
    group.add_argument("--protocol", default="v1", choices=PROTOCOLS, help=argparse.SUPPRESS)
    group.add_argument(
        "--predictor_use_ssl",
        type=_bool_flag,
        nargs="?",
        const=True,
        default=False,
        help="https (and TLS gRPC) to the predictor (false)",
    )
    group.add_argument(
        "--predictor_request_timeout_seconds",
        type=float,
        default=600,
        help="seconds a request to the predictor may take (600)",
    )
    return parser


def predictor_config_from_args(args: argparse.Namespace) -> PredictorConfig | None:
    """The ``PredictorConfig`` that flags from :func:`server_parser` give; None without a host."""
    host = getattr(args, "predictor_host", None)
    if not host:
        return None
    protocol = getattr(args, "predictor_protocol", "v1")
    if protocol == "v1":
        protocol = getattr(args, "protocol", None) or protocol
    return PredictorConfig(
        predictor_host=host,
        predictor_protocol=protocol,
        predictor_use_ssl=bool(getattr(args, "predictor_use_ssl", False)),
        predictor_request_timeout_seconds=float(
            getattr(args, "predictor_request_timeout_seconds", 600)
        ),
    )


def _bool_flag(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {raw!r}")


_parser: argparse.ArgumentParser | None = None


def __getattr__(name: str) -> Any:
    # ``parser`` is made on first use, so that importing this module parses nothing.
    global _parser
    if name == "parser":
        if _parser is None:
            _parser = server_parser()
        return _parser
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
