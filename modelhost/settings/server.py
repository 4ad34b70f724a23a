"""The data-plane process's settings: ports, workers, batching, limits, tokens and TLS."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from modelhost.settings.limits import Http1Limits, Http2Limits
from modelhost.settings.values import ENV_PREFIX, coerce

__all__ = ["BatchSettings", "ServerSettings", "default_home"]


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
    # glibc: blocks under this many bytes stay in malloc's heap once freed, and up to four
    # times it free at the heap's top, so that a large request's buffers are not page
    # faults again on the next one (modelhost.server.heap). The whole process's; 0 leaves
    # glibc's own thresholds (and its MALLOC_* environment variables) in charge.
    malloc_mmap_threshold: int = 4 * 1024 * 1024
    # ModelInfer answered on modelhost's own HTTP/2 in front of grpc.aio, which keeps every
    # other gRPC method (modelhost.server.grpc.native_infer). False: grpc.aio on the port.
    native_grpc: bool = True
    # Small v1 predict and v2 infer requests answered without uvicorn's ASGI cycle, in one
    # socket write (modelhost.server.http.direct). False: every request takes uvicorn's path.
    direct_http: bool = True
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
    # A detectors file (the trust layer's guardrails.yaml): its detectors run as guardrails
    # after the built-in ones. Empty: none.
    detectors: str = ""
    # v1 ``:explain`` for models without an explainer of their own: "shap", "lime" or ""
    # (none), against the rows of ``explainer_background`` (.npy/.csv; empty: a zero row).
    explainer: str = ""
    explainer_background: str = ""
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
                values[field.name] = coerce(field.name, field.type, raw)
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
