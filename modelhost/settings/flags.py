"""The server's command-line flags (KServe's names, with dashed aliases) and the settings
they build."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence

from modelhost.settings.server import ServerSettings
from modelhost.settings.values import parse_bool, parse_size

__all__ = ["add_server_arguments", "parse_known_server_args", "settings_from_args"]


def _size_flag(raw: str) -> int:
    try:
        return parse_size(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _bool_flag(raw: str) -> bool:
    try:
        return parse_bool(raw)
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
        "--detectors",
        dest="detectors",
        default=None,
        help="LLM: a detectors YAML file whose detectors run as guardrails too (none)",
    )
    group.add_argument(
        "--explainer",
        dest="explainer",
        choices=["shap", "lime"],
        default=None,
        help="answer v1 :explain with SHAP or LIME for models without an explainer (none)",
    )
    group.add_argument(
        "--explainer_background",
        "--explainer-background",
        dest="explainer_background",
        default=None,
        help="reference rows for --explainer, a .npy or .csv file (one row of zeros)",
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
        "--malloc_mmap_threshold",
        "--malloc-mmap-threshold",
        dest="malloc_mmap_threshold",
        type=int,
        default=None,
        help="glibc: freed blocks under this many bytes stay in the heap (4 MiB; 0: glibc's)",
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
        "--direct_http",
        "--direct-http",
        dest="direct_http",
        type=_bool_flag,
        default=None,
        help="answer small REST inference requests without uvicorn's ASGI cycle (true)",
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
