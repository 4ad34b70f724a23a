"""The embedded platform's front: applied objects in, running services and their views out.

:class:`Platform` is what the control API and the gateways talk to. ``apply`` admits
objects (parsing, defaulting and validating them as KServe's webhook would, so a bad object
is a 400 and is not stored), records them in SQLite and asks the reconciler
(:mod:`modelhost.local.reconciler`) to carry them out; ``get``, ``list_objects``,
``replicas`` and ``logs`` are the views ``kubectl``'s verbs print. Where requests go is the
traffic router's (:mod:`modelhost.local.traffic`): the gateways read its route table and
resolve gRPC calls through it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import aiohttp

from modelhost import control, errors
from modelhost.control import (
    ClusterServingRuntime,
    InferenceGraph,
    InferenceService,
    ServingRuntime,
)
from modelhost.graph import GraphMetrics
from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.graph_host import GraphHost
from modelhost.local.guardrails_host import GuardrailsHost
from modelhost.local.mesh import mesh_server
from modelhost.local.metrics import ColdStartCount, GatewayMetrics, ReplicaCount
from modelhost.local.payload_logger import PayloadLogger
from modelhost.local.reaper import ReplicaLedger, reap_leftovers
from modelhost.local.reconciler import GRAPH, SERVICE, Reconciler, replica_env, stored_runtimes
from modelhost.local.registry_deploy import RegistryDeployments
from modelhost.local.registry_host import RegistryHost
from modelhost.local.revision import RevisionRunner
from modelhost.local.routing import RouteTable
from modelhost.local.settings import PlatformSettings
from modelhost.local.store import Store, StoredObject
from modelhost.local.traffic import TrafficRouter
from modelhost.local.trust_host import TRUST_SINK, TrustHost
from modelhost.local.zygote import Zygote
from modelhost.transport.http1_proxy import ProxyServer
from modelhost.transport.target import Target

__all__ = ["Platform"]


class Platform:
    """Runs InferenceServices on this machine; one per ``home`` folder."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(self._replica_counts, self._cold_start_counts)
        self.traffic = TrafficRouter(self._count_call)
        self._store: Store | None = None
        self._session: aiohttp.ClientSession | None = None
        self._forwarder: Forwarder | None = None
        self._payload_logger: PayloadLogger | None = None
        self._reconciler: Reconciler | None = None
        self._mesh: ProxyServer | None = None
        self._graph_host: GraphHost | None = None
        # The fork-server tabular replicas start from (local.zygote); None when turned off.
        self.zygote: Zygote | None = None
        # TrustyAI's API and the payload logger's built-in sink (local.trust_host).
        self.trust: TrustHost | None = None
        # TrustyAI's detector API and guardrails orchestrator (local.guardrails_host).
        self.guardrails: GuardrailsHost | None = None
        # Kubeflow Model Registry's API (local.registry_host).
        self.registry: RegistryHost | None = None

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def store(self) -> Store:
        assert self._store is not None, "Platform.start() first"
        return self._store

    @property
    def forwarder(self) -> Forwarder:
        assert self._forwarder is not None, "Platform.start() first"
        return self._forwarder

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "Platform.start() first"
        return self._session

    @property
    def reconciler(self) -> Reconciler:
        assert self._reconciler is not None, "Platform.start() first"
        return self._reconciler

    @property
    def routes(self) -> RouteTable[ComponentState]:
        """Every running service's routes, as the gateways match requests now."""
        return self.traffic.routes

    async def start(self) -> None:
        """Open the state and bring back every service it holds."""
        self.settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._store = Store(self.settings.state_path)
        # What a platform killed on this home left running goes before anything starts.
        await asyncio.to_thread(reap_leftovers, self._store)
        if self.settings.zygote:
            # First: its imports run while the rest starts; replicas spawn until it is ready.
            self.zygote = Zygote(self.settings.home, replica_env(self.settings))
            await self.zygote.start()
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )
        self.trust = TrustHost(self.settings.home, self.metrics.registry, self.traffic)
        await self.trust.start()
        self.registry = RegistryHost(self.settings.home, self.settings.registry_db)
        await self.registry.start()
        self._payload_logger = PayloadLogger(
            local_sinks={TRUST_SINK: self.trust.sink},
            exchange_sinks={TRUST_SINK: self.trust.record},
        )
        await self._payload_logger.start()
        self._forwarder = Forwarder(self.metrics, self._payload_logger)
        self.guardrails = GuardrailsHost(self.settings.home, self.traffic, self._forwarder)
        mesh_address = ""
        if self.settings.graph_router == "in-process":
            self._graph_host = GraphHost(
                self.traffic,
                self._forwarder,
                GraphMetrics(self.metrics.registry),
                self.settings.http1_limits(),
            )
        else:
            # Only router replicas call services through the mesh; in-process ones do not.
            self._mesh = mesh_server(self.traffic, self._forwarder, self.settings.http1_limits())
            mesh_address = f"127.0.0.1:{await self._mesh.start('127.0.0.1', 0)}"
        self._reconciler = Reconciler(
            self.settings,
            self._store,
            forwarder=self._forwarder,
            session=self._session,
            traffic=self.traffic,
            ledger=ReplicaLedger(self._store),
            mesh_address=mesh_address,
            graph_host=self._graph_host,
            registry=RegistryDeployments(self.registry.store) if self.registry.store else None,
            zygote=self.zygote,
        )
        self._reconciler.start()

    async def stop(self) -> None:
        """Stop every replica (they drain) and close what was opened."""
        if self._reconciler is not None:
            await self._reconciler.stop()
        if self.zygote is not None:
            # After the replicas: those it forked die with it.
            await self.zygote.stop()
        if self._mesh is not None:
            await self._mesh.stop()
        if self._graph_host is not None:
            await self._graph_host.close()
        if self._forwarder is not None:
            self._forwarder.close()
        if self._payload_logger is not None:
            await self._payload_logger.stop()
        if self.guardrails is not None:
            await self.guardrails.stop()
        if self.trust is not None:
            await self.trust.stop()
        if self.registry is not None:
            await self.registry.stop()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            self._store.close()

    def kill_now(self) -> None:
        """At interpreter exit after a failure: no replica may outlive the platform."""
        if self._reconciler is not None:
            self._reconciler.kill_now()
        if self.zygote is not None:
            self.zygote.kill_now()

    # -- the API --------------------------------------------------------------------------

    async def apply(
        self,
        text: str | bytes,
        source: str = "",
        authorize: Callable[[list[Any]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Admit and store every object in a YAML/JSON text; reconcile the services.

        All objects are checked before any is stored, so a file with one bad object changes
        nothing; ``authorize`` sees them first and raises to refuse them all. Returns
        ``{kind, namespace, name, result}`` per object, ``result`` being ``created``,
        ``configured`` or ``unchanged`` as ``kubectl apply`` says.
        """
        objects = control.parse_documents(text, source=source)
        if authorize is not None:
            authorize(objects)
        runtimes: list[ServingRuntime | ClusterServingRuntime] = [
            obj for obj in objects if isinstance(obj, (ServingRuntime, ClusterServingRuntime))
        ]
        known = stored_runtimes(self.store)
        for obj in objects:
            if isinstance(obj, ServingRuntime) and obj.metadata.namespace is None:
                obj.metadata.namespace = "default"
            if isinstance(obj, (ServingRuntime, ClusterServingRuntime)):
                control.validate_serving_runtime(obj)
            elif isinstance(obj, InferenceService):
                if not obj.name:
                    raise errors.InvalidInput("metadata.name: Required value")
                obj.metadata.namespace = obj.namespace
                # Admission: the planner defaults and validates; its result is not kept.
                control.plan(obj, [*runtimes, *known], config=self.settings.config)
            elif isinstance(obj, InferenceGraph):
                obj.metadata.namespace = obj.namespace
                # Admission as KServe's webhook (field paths); the services come later.
                control.plan_graph(obj, {}, config=self.settings.config)
        self._check_hosts(objects)
        results = []
        for obj in objects:
            kind = obj.kind
            namespace = (
                "" if kind == "ClusterServingRuntime" else (obj.metadata.namespace or "default")
            )
            name = obj.metadata.name or ""
            before = self.store.get(kind, namespace, name)
            stored = self.store.put(kind, namespace, name, control.to_dict(obj))
            if before is None:
                result = "created"
            elif before.document == stored.document:
                result = "unchanged"
            else:
                result = "configured"
            results.append({"kind": kind, "namespace": namespace, "name": name, "result": result})
            if kind in (SERVICE, GRAPH):
                self.reconciler.kick(namespace, name, kind)
            if kind == SERVICE and result != "unchanged":
                # What its graphs know of it (address, protocol) may have changed.
                self.reconciler.kick_graphs(namespace)
        if any(r["kind"] not in (SERVICE, GRAPH) and r["result"] != "unchanged" for r in results):
            for stored_isvc in self.store.list_objects(SERVICE):
                self.reconciler.kick(stored_isvc.namespace, stored_isvc.name)
                self.reconciler.kick_graphs(stored_isvc.namespace)
        return results

    def _check_hosts(self, objects: list[Any]) -> None:
        """Refuse a graph and a service of one name in one namespace: they share a host."""
        named = {
            (obj.kind, obj.namespace, obj.name)
            for obj in objects
            if isinstance(obj, (InferenceService, InferenceGraph))
        }
        for kind, namespace, name in sorted(named):
            other = GRAPH if kind == SERVICE else SERVICE
            if (other, namespace, name) in named or self.store.get(other, namespace, name):
                raise errors.InvalidInput(
                    f"metadata.name: {kind} {namespace}/{name} would share its host and model "
                    f"paths with the {other} of that name; choose another name"
                )

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self.store.get(kind, namespace, name)
        return _document(stored) if stored else None

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [_document(s) for s in self.store.list_objects(kind, namespace)]

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        deleted = self.store.delete(kind, namespace, name)
        if deleted and kind in (SERVICE, GRAPH):
            await self.reconciler.forget(namespace, name, kind)
        if deleted and kind == SERVICE:
            self.reconciler.kick_graphs(namespace)
        return deleted

    def replicas(self, namespace: str, name: str, kind: str = SERVICE) -> list[dict[str, Any]]:
        """The live view ``describe`` prints: every revision and replica of a service."""
        service = self.reconciler.service(namespace, name, kind)
        rows: list[dict[str, Any]] = []
        if service is None:
            return rows
        for component in service.components.values():
            shares = {runner.name: percent for runner, percent in component.split.items}
            for runner in component.runners.values():
                rows.append(
                    {
                        "component": component.component,
                        "revision": runner.name,
                        "traffic": shares.get(runner.name, 0),
                        "desired": runner.desired,
                        "restarts": runner.restarts,
                        "coldStarts": runner.cold_starts,
                        "inFlight": runner.in_flight,
                        "lastError": runner.last_error,
                        "replicas": [
                            {
                                "name": r.name,
                                "pid": r.pid,
                                "state": r.state.value,
                                "httpPort": r.http_port,
                                "grpcPort": r.grpc_port,
                                "inFlight": r.in_flight,
                            }
                            for r in runner.replicas
                        ],
                    }
                )
        return rows

    def logs(
        self, namespace: str, name: str, component: str, tail: int = 200, kind: str = SERVICE
    ) -> str:
        """The last lines of the newest revision's log of a component."""
        service = self.reconciler.service(namespace, name, kind)
        state = service.components.get(component) if service else None
        if state is None:
            raise errors.ModelNotFound(f"{namespace}/{name} {component}")
        path = self.reconciler.log_path(namespace, name, state.plan.revision.name)
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:]) + "\n"

    # -- the gateway's side ---------------------------------------------------------------

    def resolve_grpc_now(self, host: str | None, model: str | None) -> Target | None:
        """A replica's gRPC address for a call if one can take it now; None: ask resolve_grpc."""
        return self.traffic.resolve_grpc_now(host, model)

    async def resolve_grpc(self, host: str | None, model: str | None) -> Target:
        """A replica's gRPC address for a call, by host, else by model name (may wait)."""
        return await self.traffic.resolve_grpc(host, model)

    def _count_call(
        self, component: ComponentState, runner: RevisionRunner, status: int, seconds: float
    ) -> None:
        self.forwarder.count(component, runner, status, seconds)

    def _replica_counts(self) -> Iterator[ReplicaCount]:
        if self._reconciler is not None:
            yield from self._reconciler.replica_counts()

    def _cold_start_counts(self) -> Iterator[ColdStartCount]:
        if self._reconciler is not None:
            yield from self._reconciler.cold_start_counts()


def _document(stored: StoredObject) -> dict[str, Any]:
    document = dict(stored.document)
    if stored.status is not None:
        document["status"] = stored.status
    return document
