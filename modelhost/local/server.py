"""``modelhost up``: the platform, its HTTP and gRPC gateways, and the control API's listeners.

It runs in the foreground until SIGINT or SIGTERM, then stops every replica; while it runs,
``<home>/platform.json`` tells the CLI where it listens. The gateways serve inference only;
the control API is on a Unix socket in the home (and loopback TCP with ``api_port``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from ssl import SSLContext

from modelhost import errors
from modelhost.access import (
    OPEN,
    Admission,
    AuditLog,
    Guard,
    Role,
    TokenTable,
    check_scope,
    is_loopback,
    warn_if_open,
)
from modelhost.access.tls import reloader_for
from modelhost.local import gateway
from modelhost.local.api_server import ApiServer
from modelhost.local.grpc_services import GatewayServices
from modelhost.local.platform import Platform
from modelhost.local.settings import PlatformSettings
from modelhost.protocol._generated import grpc_predict_v2_pb2 as pb
from modelhost.server.heap import keep_freed_buffers
from modelhost.server.scheduling import (
    ThreadPolicy,
    batch_this_thread,
    restore_thread_policy,
    thread_policy,
)
from modelhost.transport.grpc_call import Admit
from modelhost.transport.grpc_relay import GrpcRelay, NowResolver, Resolver
from modelhost.transport.http1_proxy import ProxyServer
from modelhost.transport.http2 import Header
from modelhost.transport.target import Target

__all__ = ["PlatformServer", "grpc_gateway", "run"]

logger = logging.getLogger("modelhost.local")

# The gateway is alive and ready whenever it answers; whether a model is ready is the
# replica's answer to ModelReady.
_ANSWERED = {
    b"ServerLive": pb.ServerLiveResponse(live=True).SerializeToString(),
    b"ServerReady": pb.ServerReadyResponse(ready=True).SerializeToString(),
}


def grpc_gateway(
    resolve: Resolver,
    *,
    resolve_now: NowResolver | None = None,
    admit: Admit | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: SSLContext | None = None,
    elsewhere: Target | None = None,
) -> GrpcRelay:
    """The platform's gRPC gateway: a relay to the replicas ``resolve`` names, and the
    methods of other services (health, reflection) to ``elsewhere``."""
    relay = GrpcRelay(
        resolve,
        resolve_now=resolve_now,
        answered=_ANSWERED,
        name="gRPC gateway",
        host=host,
        port=port,
        ssl=ssl,
        elsewhere=elsewhere,
    )
    relay.admit = admit
    return relay


def grpc_admit(platform: Platform, guard: Guard) -> Admit:
    """The gRPC gateway's token check: the ``authorization`` metadata, for the service the
    call's ``host`` metadata or model names (what the resolver will route it to)."""

    def admit(headers: list[Header], host: str | None, model: str | None) -> Admission:
        authorization = next((v for k, v in headers if k == b"authorization"), None)
        token = guard.authenticate(authorization)
        component = platform.routes.match_call(host, model)
        if component is None:
            # Unroutable: the resolver says so, unless the token may not even ask.
            check_scope(token, None, None, Role.CALLER)
            return OPEN
        return guard.enter(token, component.namespace, component.service)

    return admit


class PlatformServer:
    """The platform with its two gateways; ``start`` returns once both listen."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.platform = Platform(settings)
        self.guard = Guard(TokenTable(settings.token_path))
        self.audit = AuditLog(settings.audit_path)
        self._http: ProxyServer | None = None
        self._grpc: GrpcRelay | None = None
        self._services = GatewayServices()
        self._api: ApiServer | None = None
        self._tls_watch: asyncio.Task[None] | None = None
        # The loop thread's policy before start() put it under SCHED_BATCH (given back by stop).
        self._previous_policy: ThreadPolicy | None = None

    @property
    def http_port(self) -> int:
        assert self._http is not None
        return self._http.port

    @property
    def grpc_port(self) -> int:
        assert self._grpc is not None
        return self._grpc.port

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.ssl_certfile else "http"
        return f"{scheme}://{self.settings.host}:{self.http_port}"

    @property
    def api_address(self) -> str:
        """Where the CLI reaches the control API: ``unix:<path>``."""
        assert self._api is not None
        return f"unix:{self._api.path}"

    @property
    def api_url(self) -> str | None:
        """The control API over loopback TCP (tokens required), if it listens there."""
        if self._api is None or self._api.tcp_port is None:
            return None
        return f"http://{self.settings.api_host}:{self._api.tcp_port}"

    async def start(self) -> None:
        settings = self.settings
        if settings.auth not in ("auto", "tokens", "none"):
            raise errors.InvalidInput(f"--auth takes tokens, none or auto, not {settings.auth!r}")
        if settings.api_port is not None and not is_loopback(settings.api_host):
            raise errors.InvalidInput(
                f"the control API listens on loopback only, not {settings.api_host}: reach it "
                "from elsewhere through an SSH tunnel"
            )
        keep_freed_buffers(settings.malloc_mmap_threshold)
        # Bad certificate files fail here, before any replica starts.
        tls = reloader_for(settings.ssl_certfile, settings.ssl_keyfile, settings.ssl_ca_certs)
        await self.platform.start()
        platform = self.platform
        guard = self.guard if settings.gateway_auth else None
        if guard is None:
            warn_if_open(settings.host, False, "The platform's gateway")
        self._http = gateway.http_gateway(platform, guard, settings.http1_limits())
        await self._http.start(
            settings.host, settings.http_port, ssl=tls.context(["http/1.1"]) if tls else None
        )
        self._grpc = grpc_gateway(
            platform.resolve_grpc,
            resolve_now=platform.resolve_grpc_now,
            admit=grpc_admit(platform, guard) if guard is not None else None,
            host=settings.host,
            port=settings.grpc_port,
            ssl=tls.context(["h2"]) if tls else None,
            elsewhere=await self._services.start(),
        )
        await self._grpc.start()
        if tls is not None:
            self._tls_watch = asyncio.create_task(tls.watch())
        tcp = (settings.api_host, settings.api_port) if settings.api_port is not None else None
        self._api = ApiServer(platform, self.audit, settings.home, self.guard, tcp)
        await self._api.start()
        address = {
            "pid": os.getpid(),
            "url": self.url,
            "grpc": f"{settings.host}:{self.grpc_port}",
            "api": self.api_address,
            "api_url": self.api_url,
            "auth": "tokens" if guard is not None else "none",
        }
        settings.address_path.write_text(json.dumps(address))
        logger.info(
            "modelhost platform on %s (gRPC %s, tokens %s); control API on %s%s",
            self.url,
            address["grpc"],
            "on" if guard is not None else "off",
            self.api_address,
            f" and {self.api_url}" if self.api_url else "",
        )
        if settings.batch_scheduling:
            # Last: the threads started above (gRPC's) keep SCHED_OTHER.
            previous = thread_policy()
            if batch_this_thread():
                self._previous_policy = previous

    async def stop(self) -> None:
        policy, self._previous_policy = self._previous_policy, None
        restore_thread_policy(policy)  # for a program (a test) that embeds the platform
        with contextlib.suppress(FileNotFoundError):
            current = json.loads(self.settings.address_path.read_text())
            if current.get("pid") == os.getpid():
                self.settings.address_path.unlink()
        if self._tls_watch is not None:
            self._tls_watch.cancel()
            await asyncio.gather(self._tls_watch, return_exceptions=True)
        if self._api is not None:
            await self._api.stop()
        if self._grpc is not None:
            await self._grpc.stop()
        await self._services.stop()
        if self._http is not None:
            await self._http.stop()
        await self.platform.stop()


async def run(settings: PlatformSettings) -> None:
    """Serve until SIGINT or SIGTERM."""
    server = PlatformServer(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await server.start()
        print(f"modelhost platform listening on {server.url} (gRPC port {server.grpc_port})")
        await stop.wait()
    finally:
        try:
            await server.stop()
        finally:
            server.platform.kill_now()
