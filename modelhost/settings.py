"""One settings object for the server, built from defaults, the environment and CLI flags.

This is the only module that reads the environment, and only when asked to
(:meth:`ServerSettings.from_env`); every other component gets its settings passed in.
Flag names follow KServe's model server (``--http_port``), with dashed aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BatchSettings",
    "Http1Limits",
    "Http2Limits",
    "ServerSettings",
    "StorageSettings",
    "add_server_arguments",
    "default_home",
    "parse_size",
    "settings_from_args",
]

ENV_PREFIX = "MODELHOST_"


def default_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$MODELHOST_HOME``, else ``~/.modelhost``: state, logs, tokens, the platform's address."""
    environ = os.environ if environ is None else environ
    home = environ.get("MODELHOST_HOME")
    return Path(home) if home else Path.home() / ".modelhost"


def _default_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


@dataclasses.dataclass(frozen=True)
class BatchSettings:
    """Adaptive batching of one model: ``max_batch_size`` rows (< 2: off), ``max_latency_ms``.

    A model carries its own as ``model.batching``; a model without one gets the server's.
    """

    max_batch_size: int = 0
    max_latency_ms: float = 0.0
    # Batches of one model running at once; more only helps models that release the GIL.
    max_concurrent_batches: int = 1

    @property
    def enabled(self) -> bool:
        return self.max_batch_size > 1


@dataclasses.dataclass(frozen=True)
class Http2Limits:
    """What one HTTP/2 connection may ask of a gRPC port (the server's and the gateway's).

    Past a frame budget the connection ends with GOAWAY ENHANCE_YOUR_CALM (RFC 9113,
    section 10.5); budgets count frames per second of one connection. The defaults are far
    above what gRPC clients send (they PING a few times a second at most, SETTINGS once)
    and far below what a flood sends (hundreds of thousands a second).
    """

    # Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS);
    # past it a new stream is refused with RST_STREAM REFUSED_STREAM.
    max_concurrent_streams: int = 256
    # A request's header block, compressed and decoded (SETTINGS_MAX_HEADER_LIST_SIZE).
    max_header_list_bytes: int = 64 * 1024
    pings_per_s: int = 100
    settings_per_s: int = 100
    # Streams the client resets (the "rapid reset" attack, CVE-2023-44487).
    resets_per_s: int = 1000
    # Frames that carry nothing: empty DATA without END_STREAM, PRIORITY, unknown types.
    empty_frames_per_s: int = 1000
    # (A peer that sends without reading what we answer, PING acks included, is not read
    # either once 4 MiB wait for it: memory stays bounded without a limit of its own.)
    # Seconds to send the connection preface and SETTINGS, to finish a header block once
    # begun, and with no stream open before the connection is closed (GOAWAY NO_ERROR).
    handshake_timeout_s: float = 10.0
    header_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    # Connections one listener keeps open; past it a new one is closed at once.
    max_connections: int = 4096


@dataclasses.dataclass(frozen=True)
class Http1Limits:
    """What one HTTP/1.1 client may ask of a REST port (the server's and the gateway's).

    Timeouts bound how long a connection may hold a file descriptor and a parser without
    making progress (slowloris, a body shorter than its Content-Length); the sizes bound
    what one request may make the process hold. The defaults are far above what a client
    on a working link needs, and the benchmarks (wrk, 64 keep-alive connections, 3 MB
    bodies) never reach them. Each is a row of docs/limits.md.
    """

    # Seconds from a connection's start, or a request's first byte, to its last header
    # byte; past it: 408 and close (a connection that sent nothing is closed silently).
    header_timeout_s: float = 10.0
    # Seconds a request body may go without a byte arriving (a progress deadline, so
    # that large bodies on slow links pass); past it: 408 and close.
    body_timeout_s: float = 30.0
    # Seconds an idle keep-alive connection is kept between requests.
    idle_timeout_s: float = 65.0
    # Connections one listener keeps open; past it a new one is answered 503 and closed.
    max_connections: int = 4096
    # Header lines, and bytes of request line and headers, in one request (431 past them).
    max_header_count: int = 128
    max_header_bytes: int = 64 * 1024
    # Largest request body (413 past it).
    max_body_bytes: int = 64 * 1024 * 1024
    # Unsent bytes to a client past which the gateway stops reading the replica's answer
    # (and to a replica past which it stops reading the client); reading resumes below a
    # quarter of it.
    write_buffer_bytes: int = 1024 * 1024


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Everything the data-plane process needs to know, with KServe's defaults."""

    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 8081
    enable_grpc: bool = True
    workers: int = 1
    # Size of the thread pool that runs synchronous model code off the event loop.
    max_threads: int = dataclasses.field(default_factory=_default_threads)
    # Largest request body (REST) or message (gRPC) accepted, in bytes.
    max_request_bytes: int = 64 * 1024 * 1024
    # Adaptive batching for every model that sets none of its own (< 2 turns it off).
    max_batch_size: int = 0
    max_latency_ms: float = 0.0
    # Opt-in: sync model steps whose moving mean is below this many ms run on the event
    # loop instead of the thread pool. 0 keeps every sync step off the loop.
    inline_below_ms: float = 0.0
    # Linux: once the servers listen, the event loop's thread and the model threads run under
    # SCHED_BATCH, and the threads gRPC's core polls on stay SCHED_OTHER. A woken batch thread
    # does not preempt the running one, so the poller (or a gateway on the same core) hands
    # over its calls in bunches rather than one context switch per call (bench/RESULTS.md).
    batch_scheduling: bool = True
    # ModelInfer answered on modelhost's own HTTP/2 in front of grpc.aio, which keeps every
    # other gRPC method (modelhost.server.grpc.native_infer). False: grpc.aio on the port.
    native_grpc: bool = True
    enable_docs: bool = True
    access_log: bool = False
    log_level: str = "info"
    # Seconds SIGTERM waits for in-flight requests before the process exits.
    grace_period: float = 30.0
    timeout_keep_alive: int = 65
    # The REST port's HTTP/1.1 limits (``Http1Limits`` has their reasons); the idle
    # timeout is ``timeout_keep_alive`` and the body limit ``max_request_bytes``.
    http_header_timeout_s: float = 10.0
    http_body_timeout_s: float = 30.0
    http_max_connections: int = 4096
    http_max_header_count: int = 128
    http_max_header_bytes: int = 64 * 1024
    # Request bytes in flight, server-wide: each REST request with a body is charged its
    # size times (1 + what decoding it costs: 2 for v2, 16 for v1 and OpenAI JSON) until it
    # is answered; past the budget it is answered 503 with Retry-After. Health probes carry
    # no body and are never refused. 0: no budget.
    max_bytes_in_flight: int = 4 * 1024**3
    server_name: str = "modelhost"
    # Set by the worker pool, not by users: bind with SO_REUSEPORT to share the ports.
    reuse_port: bool = False
    # High-density serving: past this many loaded models (or bytes of model files), the
    # least recently used model is unloaded and loads again on its next request. 0: no limit.
    max_loaded_models: int = 0
    max_loaded_bytes: int = 0
    # LLM serving: the longest a generation may run, and the guardrails every prompt and
    # answer pass through (comma-separated names: "pii").
    llm_request_timeout_s: float = 600.0
    guardrails: str = ""
    # Access control: "tokens" (every request but the health probes needs a bearer token
    # from ``token_file``) or "none". Off by default, with a warning when bound beyond
    # loopback; the platform turns it on for its gateway (modelhost.access).
    auth: str = "none"
    # The token file ``modelhost token create`` writes; empty: ``<MODELHOST_HOME>/tokens.db``.
    token_file: str = ""
    # TLS for REST and gRPC (KServe 0.21's flag names): PEM files, read again when they
    # change; with ``ssl_ca_certs`` clients must present a certificate it signed (mutual TLS).
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_ca_certs: str = ""
    # The gRPC port's HTTP/2 limits (``Http2Limits`` has their reasons); the message limit
    # is ``max_request_bytes``.
    grpc_max_concurrent_streams: int = 256
    grpc_max_header_list_bytes: int = 64 * 1024
    grpc_pings_per_s: int = 100
    grpc_settings_per_s: int = 100
    grpc_resets_per_s: int = 1000
    grpc_empty_frames_per_s: int = 1000
    grpc_handshake_timeout_s: float = 10.0
    grpc_header_timeout_s: float = 10.0
    grpc_idle_timeout_s: float = 300.0
    grpc_max_connections: int = 4096

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServerSettings:
        """Defaults overridden by ``MODELHOST_<FIELD>`` environment variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = env.get(ENV_PREFIX + field.name.upper())
            if raw is not None:
                values[field.name] = _coerce(field.name, field.type, raw)
        return cls(**values)

    def replace(self, **changes: Any) -> ServerSettings:
        return dataclasses.replace(self, **changes)

    @property
    def tls(self) -> bool:
        return bool(self.ssl_certfile)

    def http1_limits(self) -> Http1Limits:
        return Http1Limits(
            header_timeout_s=self.http_header_timeout_s,
            body_timeout_s=self.http_body_timeout_s,
            idle_timeout_s=float(self.timeout_keep_alive),
            max_connections=self.http_max_connections,
            max_header_count=self.http_max_header_count,
            max_header_bytes=self.http_max_header_bytes,
            max_body_bytes=self.max_request_bytes,
        )

    def http2_limits(self) -> Http2Limits:
        """The ``grpc_<name>`` fields, one for each of :class:`Http2Limits`'s."""
        names = [field.name for field in dataclasses.fields(Http2Limits)]
        return Http2Limits(**{name: getattr(self, f"grpc_{name}") for name in names})

    def token_path(self, environ: Mapping[str, str] | None = None) -> Path:
        """The token file: ``token_file``, else ``tokens.db`` in :func:`default_home`."""
        return Path(self.token_file) if self.token_file else default_home(environ) / "tokens.db"


def _default_cache_dir(env: Mapping[str, str]) -> str:
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "modelhost", "models")


@dataclasses.dataclass(frozen=True)
class StorageSettings:
    """Where models are fetched to, and the environment the storage clients read.

    ``environ`` is a snapshot of the variables KServe's storage initializer reads
    (``AWS_ACCESS_KEY_ID``, ``S3_ENDPOINT``, ``AZURE_STORAGE_ACCESS_KEY``, ``HF_TOKEN``, ...):
    backends take credentials from it, never from ``os.environ`` directly.
    """

    # The content-addressed cache shared by every server and replica on the machine.
    cache_dir: str = ""
    # Where ``pvc://<claim>/<path>`` lives on this machine: ``<pvc_root>/<claim>/<path>``.
    pvc_root: str = ""
    # Progress bars while downloading: None shows them only on a terminal.
    progress: bool | None = None
    # A fetched archive (a .zip or .tar.gz storageUri, an OCI image's layers) is network
    # input: it may unpack to at most this many bytes in all, and, once past 64 MiB, to at
    # most this many times its compressed size, else the fetch is refused (a decompression
    # bomb: a 1 MB zip of zeros is 1 GiB). Model weights compress 1-2x, text models ~10x.
    # 0: no limit.
    max_unpack_bytes: int = 256 * 1024**3
    max_unpack_ratio: float = 100.0
    environ: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        """``MODELHOST_CACHE_DIR``, ``MODELHOST_PVC_ROOT``, ``MODELHOST_PROGRESS``,
        ``MODELHOST_MAX_UNPACK_BYTES`` (a size: ``500GB``, ``1TiB``),
        ``MODELHOST_MAX_UNPACK_RATIO`` and the environment snapshot; the cache defaults to
        ``$XDG_CACHE_HOME/modelhost/models``."""
        env = dict(os.environ if environ is None else environ)
        progress = env.get(ENV_PREFIX + "PROGRESS")
        limits: dict[str, Any] = {}
        for name, parse in (("max_unpack_bytes", parse_size), ("max_unpack_ratio", float)):
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None:
                try:
                    limits[name] = parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None
        return cls(
            cache_dir=env.get(ENV_PREFIX + "CACHE_DIR") or _default_cache_dir(env),
            pvc_root=env.get(ENV_PREFIX + "PVC_ROOT") or "/mnt/pvc",
            progress=None if progress is None else _parse_bool(progress),
            environ=env,
            **limits,
        )

    def replace(self, **changes: Any) -> StorageSettings:
        return dataclasses.replace(self, **changes)


def _coerce(name: str, kind: Any, raw: str) -> Any:
    kind = str(kind)
    try:
        if kind == "bool":
            return _parse_bool(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_PREFIX}{name.upper()}={raw!r}: {exc}") from None
    return raw


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {raw!r}")


_SIZE_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}


def parse_size(raw: str) -> int:
    """Bytes from ``"1500000"``, ``"512MB"`` or ``"2GiB"`` (binary units with an ``i``)."""
    text = raw.strip().lower().removesuffix("b")
    binary = text.endswith("i")
    text = text.removesuffix("i")
    unit = text[-1:] if text[-1:] in _SIZE_UNITS and text[-1:] else ""
    number = text[: len(text) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {raw!r} (examples: 500000000, 512MB, 2GiB)") from None
    scale = 1024 ** "kmgt".index(unit) * 1024 if binary and unit else _SIZE_UNITS[unit]
    if value < 0:
        raise ValueError(f"a size cannot be negative: {raw!r}")
    return int(value * scale)


def _size_flag(raw: str) -> int:
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool_flag(raw: str) -> bool:
    try:
        return _parse_bool(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the server flags (KServe's names, with dashed aliases) to ``parser``.

    Every flag defaults to ``None`` so that :func:`settings_from_args` can tell a flag
    given on the command line from one left to the environment or the default.
    """
    group = parser.add_argument_group("server")
    group.add_argument("--host", dest="host", default=None, help="address to bind (0.0.0.0)")
    group.add_argument(
        "--http_port",
        "--http-port",
        dest="http_port",
        type=int,
        default=None,
        help="REST port (8080; 0 picks a free one)",
    )
    group.add_argument(
        "--grpc_port",
        "--grpc-port",
        dest="grpc_port",
        type=int,
        default=None,
        help="gRPC port (8081; 0 picks a free one)",
    )
    group.add_argument(
        "--enable_grpc",
        "--enable-grpc",
        dest="enable_grpc",
        type=_bool_flag,
        default=None,
        help="serve gRPC (true)",
    )
    group.add_argument(
        "--workers", dest="workers", type=int, default=None, help="server processes (1)"
    )
    group.add_argument(
        "--max_threads",
        "--max-threads",
        dest="max_threads",
        type=int,
        default=None,
        help="threads running synchronous model code",
    )
    group.add_argument(
        "--max_request_bytes",
        "--max-request-bytes",
        dest="max_request_bytes",
        type=int,
        default=None,
        help="largest request body accepted (64 MiB)",
    )
    group.add_argument(
        "--max_batch_size",
        "--max-batch-size",
        dest="max_batch_size",
        type=int,
        default=None,
        help="adaptive batching: most rows per predict (off)",
    )
    group.add_argument(
        "--max_latency_ms",
        "--max-latency-ms",
        dest="max_latency_ms",
        type=float,
        default=None,
        help="adaptive batching: longest wait to fill a batch (0: none)",
    )
    group.add_argument(
        "--max_loaded_models",
        "--max-loaded-models",
        dest="max_loaded_models",
        type=int,
        default=None,
        help="most models loaded at once; the least recently used is unloaded (no limit)",
    )
    group.add_argument(
        "--max_loaded_bytes",
        "--max-loaded-bytes",
        dest="max_loaded_bytes",
        type=_size_flag,
        default=None,
        help="budget of loaded model files, e.g. 2GiB; the least recently used is unloaded",
    )
    group.add_argument(
        "--llm_request_timeout_s",
        "--llm-request-timeout-s",
        dest="llm_request_timeout_s",
        type=float,
        default=None,
        help="LLM: longest a generation may run, in seconds (600)",
    )
    group.add_argument(
        "--guardrails",
        dest="guardrails",
        default=None,
        help="LLM: guardrails on prompts and answers, comma-separated (pii)",
    )
    group.add_argument(
        "--auth",
        dest="auth",
        choices=["tokens", "none"],
        default=None,
        help="tokens: every request but health probes needs a bearer token (none)",
    )
    group.add_argument(
        "--token_file",
        "--token-file",
        dest="token_file",
        default=None,
        help="the token file `modelhost token create` writes ($MODELHOST_HOME/tokens.db)",
    )
    group.add_argument(
        "--ssl_certfile",
        "--ssl-certfile",
        dest="ssl_certfile",
        default=None,
        help="TLS certificate chain (PEM) for REST and gRPC; reloaded when it changes",
    )
    group.add_argument(
        "--ssl_keyfile",
        "--ssl-keyfile",
        dest="ssl_keyfile",
        default=None,
        help="TLS private key (PEM)",
    )
    group.add_argument(
        "--ssl_ca_certs",
        "--ssl-ca-certs",
        dest="ssl_ca_certs",
        default=None,
        help="CA bundle (PEM): clients must present a certificate it signed (mutual TLS)",
    )
    group.add_argument(
        "--inline_below_ms",
        "--inline-below-ms",
        dest="inline_below_ms",
        type=float,
        default=None,
        help="run sync model steps faster than this on the event loop (0: never)",
    )
    group.add_argument(
        "--batch_scheduling",
        "--batch-scheduling",
        dest="batch_scheduling",
        type=_bool_flag,
        default=None,
        help="run the event loop and model threads under SCHED_BATCH on Linux (true)",
    )
    group.add_argument(
        "--native_grpc",
        "--native-grpc",
        dest="native_grpc",
        type=_bool_flag,
        default=None,
        help="answer ModelInfer on modelhost's own HTTP/2, not grpc.aio (true)",
    )
    group.add_argument(
        "--grpc_max_concurrent_streams",
        "--grpc-max-concurrent-streams",
        dest="grpc_max_concurrent_streams",
        type=int,
        default=None,
        help="streams one gRPC connection may have open (256)",
    )
    group.add_argument(
        "--grpc_max_connections",
        "--grpc-max-connections",
        dest="grpc_max_connections",
        type=int,
        default=None,
        help="gRPC connections the port keeps open; more are closed at once (4096)",
    )
    group.add_argument(
        "--grpc_idle_timeout_s",
        "--grpc-idle-timeout-s",
        dest="grpc_idle_timeout_s",
        type=float,
        default=None,
        help="seconds a gRPC connection with no stream open is kept (300)",
    )
    group.add_argument(
        "--enable_docs_url",
        "--enable-docs",
        dest="enable_docs",
        type=_bool_flag,
        default=None,
        help="serve /docs and /openapi.json (true)",
    )
    group.add_argument(
        "--access_log",
        "--access-log",
        dest="access_log",
        type=_bool_flag,
        nargs="?",
        const=True,
        default=None,
        help="log every request (false)",
    )
    group.add_argument(
        "--log_level",
        "--log-level",
        dest="log_level",
        default=None,
        choices=["critical", "error", "warning", "info", "debug"],
        help="log level (info)",
    )
    group.add_argument(
        "--grace_period",
        "--grace-period",
        dest="grace_period",
        type=float,
        default=None,
        help="seconds to drain in-flight requests on SIGTERM (30)",
    )
    group.add_argument(
        "--timeout_keep_alive",
        "--timeout-keep-alive",
        dest="timeout_keep_alive",
        type=int,
        default=None,
        help="HTTP keep-alive seconds (65)",
    )
    group.add_argument(
        "--http_header_timeout_s",
        "--http-header-timeout-s",
        dest="http_header_timeout_s",
        type=float,
        default=None,
        help="seconds to send a request's headers; then 408 and close (10)",
    )
    group.add_argument(
        "--http_body_timeout_s",
        "--http-body-timeout-s",
        dest="http_body_timeout_s",
        type=float,
        default=None,
        help="seconds a request body may go without a byte; then 408 and close (30)",
    )
    group.add_argument(
        "--http_max_connections",
        "--http-max-connections",
        dest="http_max_connections",
        type=int,
        default=None,
        help="REST connections kept open; more are answered 503 and closed (4096)",
    )
    group.add_argument(
        "--http_max_header_count",
        "--http-max-header-count",
        dest="http_max_header_count",
        type=int,
        default=None,
        help="header lines in one request; more get 431 (128)",
    )
    group.add_argument(
        "--http_max_header_bytes",
        "--http-max-header-bytes",
        dest="http_max_header_bytes",
        type=_size_flag,
        default=None,
        help="bytes of request line and headers; more get 431 (64KiB)",
    )
    group.add_argument(
        "--max_bytes_in_flight",
        "--max-bytes-in-flight",
        dest="max_bytes_in_flight",
        type=_size_flag,
        default=None,
        help="server-wide budget of request bytes in flight, decoding included; "
        "past it 503 (4GiB; 0: none)",
    )


def settings_from_args(
    args: argparse.Namespace, base: ServerSettings | None = None
) -> ServerSettings:
    """``base`` (by default, the environment's settings) overridden by the flags given."""
    settings = ServerSettings.from_env() if base is None else base
    names = {field.name for field in dataclasses.fields(ServerSettings)}
    changes = {k: v for k, v in vars(args).items() if k in names and v is not None}
    return settings.replace(**changes)


def parse_known_server_args(argv: Sequence[str]) -> ServerSettings:
    """Settings from a KServe-style command line, ignoring flags that are not ours."""
    parser = argparse.ArgumentParser(add_help=False)
    add_server_arguments(parser)
    args, _ = parser.parse_known_args(list(argv))
    return settings_from_args(args)
