"""The reconciler: a stored InferenceService → its plan → running revisions and KServe's status.

A reconcile of a service plans it (the control plane's planner, fed the last status),
starts the revisions the plan names, keeps the revision that serves now until the newest
is ready, has the traffic router split traffic as the status says, retires what no longer
serves, and writes the status back. An InferenceGraph is reconciled the same way: its plan
has one component, the router (:func:`modelhost.control.plan_graph`), planned with the
services it calls as they are stored now. An apply, a replica's change and the end of a
reconcile that found work left all ask for another (:meth:`Reconciler.kick`); kicks made while
one is queued make one reconcile, and one object reconciles at a time. The autoscaler ticks
here too, for every revision.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from modelhost import control, errors
from modelhost.control import (
    ClusterServingRuntime,
    ComponentPlan,
    InferenceService,
    InferenceServiceStatus,
    ServicePlan,
    ServingRuntime,
)
from modelhost.control.conditions import COMPONENT_CONDITIONS, Check, conditions, service_conditions
from modelhost.control.objects import ComponentStatusSpec, InferenceGraphStatus
from modelhost.local.component import ComponentState
from modelhost.local.forwarder import Forwarder
from modelhost.local.graph_host import GraphHost
from modelhost.local.graphs import graph_status, service_plans
from modelhost.local.metrics import ColdStartCount, ReplicaCount
from modelhost.local.reaper import ReplicaLedger
from modelhost.local.registry_deploy import RESOLVE_FAILED, RegistryDeployments, describe_failure
from modelhost.local.replica import ReplicaState
from modelhost.local.revision import ReplicaSpec, RevisionRunner
from modelhost.local.settings import PlatformSettings
from modelhost.local.store import Store, StoredObject
from modelhost.local.traffic import TrafficRouter, split_traffic
from modelhost.local.zygote import Zygote
from modelhost.storage.model_registry import ResolvedArtifact
from modelhost.transport.http1_proxy import ProxyServer

__all__ = ["GRAPH", "SERVICE", "Reconciler", "ServiceState", "replica_env", "stored_runtimes"]

logger = logging.getLogger("modelhost.local")

SERVICE = "InferenceService"
GRAPH = "InferenceGraph"


@dataclass
class ServiceState:
    """One InferenceService (or graph) as it runs: its last plan, components and listeners."""

    namespace: str
    name: str
    kind: str = SERVICE
    plan: ServicePlan | None = None
    components: dict[str, ComponentState] = field(default_factory=dict)
    listeners: dict[str, ProxyServer] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: bool = False
    # A graph's router status, kept here: KServe's graph status has no components block.
    router_status: ComponentStatusSpec | None = None


class Reconciler:
    """Keeps every stored InferenceService running as its spec and its status say."""

    def __init__(
        self,
        settings: PlatformSettings,
        store: Store,
        *,
        forwarder: Forwarder,
        session: aiohttp.ClientSession,
        traffic: TrafficRouter,
        ledger: ReplicaLedger | None = None,
        mesh_address: str = "",
        graph_host: GraphHost | None = None,
        registry: RegistryDeployments | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._forwarder = forwarder
        self._session = session
        self._traffic = traffic
        self._ledger = ledger
        # Where a graph's router sends its steps (modelhost.local.mesh).
        self._mesh_address = mesh_address
        # Builds in-process graph routers (None: graphs run as replicas).
        self._graph_host = graph_host
        # Resolves model-registry:// storageUris and records deployments (None: no registry).
        self._registry = registry
        # Forks the replicas it can (modelhost.local.zygote); None: every replica is spawned.
        self._zygote = zygote
        self._services: dict[tuple[str, str, str], ServiceState] = {}
        self._reconciles: set[asyncio.Task[None]] = set()
        # Revisions nothing routes to any more, draining in the background: tracked so that
        # stopping the platform finishes stopping their replicas instead of orphaning them.
        self._retiring: set[RevisionRunner] = set()
        self._retirements: set[asyncio.Task[None]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Bring back every stored service and graph, and start the autoscaler's ticks."""
        for kind in (SERVICE, GRAPH):
            for stored in self._store.list_objects(kind):
                self.kick(stored.namespace, stored.name, kind)
        self._ticker = asyncio.create_task(self._autoscale_loop(), name="autoscaler")

    async def stop(self) -> None:
        """Stop every replica (they drain); no reconcile runs after this."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._reconciles):
            task.cancel()
        await asyncio.gather(*self._reconciles, return_exceptions=True)
        # Retirements under way are let finish, not cancelled (a cancelled one would stop
        # waiting for its replicas' processes); one that a cancelled reconcile began is
        # begun again (retiring a revision twice is harmless).
        await asyncio.gather(
            *self._retirements,
            *(self._teardown(service) for service in list(self._services.values())),
            *(runner.retire() for runner in list(self._retiring)),
            return_exceptions=True,
        )
        self._retiring.clear()
        self._services.clear()

    def kill_now(self) -> None:
        """At interpreter exit after a failure: no replica may outlive the platform."""
        for runner in [*(runner for _, _, runner in self._runners()), *self._retiring]:
            runner.kill_now()

    def service(self, namespace: str, name: str, kind: str = SERVICE) -> ServiceState | None:
        """The running state of a service (or graph), if it runs."""
        return self._services.get((kind, namespace, name))

    def log_path(self, namespace: str, name: str, revision: str) -> Path:
        """Where the replicas of a revision write their output."""
        return self._log_dir(namespace, name) / f"{revision}.log"

    def kick(self, namespace: str, name: str, kind: str = SERVICE) -> None:
        """Reconcile a service (or graph) soon; many kicks before it runs make one reconcile."""
        if self._closing:
            return
        service = self._services.get((kind, namespace, name))
        if service is None:
            service = self._services[(kind, namespace, name)] = ServiceState(namespace, name, kind)
        if service.pending:
            return
        service.pending = True
        task = asyncio.create_task(self._reconcile(service), name=f"reconcile {namespace}/{name}")
        self._reconciles.add(task)
        task.add_done_callback(self._reconciles.discard)

    def kick_graphs(self, namespace: str) -> None:
        """Reconcile the graphs of a namespace: a service they may call came or went."""
        for stored in self._store.list_objects(GRAPH, namespace):
            self.kick(stored.namespace, stored.name, GRAPH)

    async def forget(self, namespace: str, name: str, kind: str = SERVICE) -> None:
        """Stop a deleted service's replicas and listeners, and route nothing to it."""
        service = self._services.pop((kind, namespace, name), None)
        if service is not None:
            async with service.lock:
                await self._teardown(service)
        self._publish_routes()
        if self._registry is not None and kind == SERVICE:
            await self._registry.undeploy(namespace, name)

    def replica_counts(self) -> Iterator[ReplicaCount]:
        """Replicas per revision and state, for the gateway's metrics."""
        for service, component, runner in self._runners():
            for state in (ReplicaState.STARTING, ReplicaState.READY, ReplicaState.DRAINING):
                count = sum(1 for r in runner.replicas if r.state is state)
                yield (
                    service.namespace,
                    service.name,
                    component.component,
                    runner.name,
                    state.value,
                    count,
                )

    def cold_start_counts(self) -> Iterator[ColdStartCount]:
        """Requests per revision that waited for a replica to start, for the gateway's metrics."""
        for service, component, runner in self._runners():
            yield (
                service.namespace,
                service.name,
                component.component,
                runner.name,
                runner.cold_starts,
            )

    def _runners(self) -> Iterator[tuple[ServiceState, ComponentState, RevisionRunner]]:
        """Every revision's runner with its service and component (copies: a scrape may run
        while a reconcile changes them)."""
        for service in list(self._services.values()):
            for component in list(service.components.values()):
                for runner in list(component.runners.values()):
                    yield service, component, runner

    # -- one reconcile --------------------------------------------------------------------

    async def _reconcile(self, service: ServiceState) -> None:
        async with service.lock:
            service.pending = False
            try:
                if service.kind == GRAPH:
                    await self._reconcile_graph_locked(service)
                else:
                    await self._reconcile_locked(service)
            except Exception:
                logger.exception("reconcile of %s/%s failed", service.namespace, service.name)

    async def _reconcile_locked(self, service: ServiceState) -> None:
        stored = self._store.get("InferenceService", service.namespace, service.name)
        if stored is None:
            return
        isvc = control.parse_object(stored.document)
        assert isinstance(isvc, InferenceService)
        previous = _status(stored)
        resolved: list[ResolvedArtifact] = []
        try:
            if self._registry is not None:
                resolved = await self._registry.resolve(isvc)
        except errors.ModelhostError as exc:
            self._plan_failed(stored, previous, RESOLVE_FAILED, str(exc))
            return
        try:
            plan = control.plan(
                isvc,
                [*stored_runtimes(self._store)],
                config=self.settings.config,
                previous=previous,
            )
        except errors.ModelhostError as exc:
            self._plan_failed(stored, previous, "PlanFailed", str(exc))
            return
        service.plan = plan
        status = control.plan_status(plan, stored.generation)
        checks: list[Check] = []
        for name in [c for c in service.components if plan.component(c) is None]:
            await self._drop_component(service, name)
        for component_plan in plan.components:
            previous_component = (
                (previous.components or {}).get(component_plan.component) if previous else None
            )
            component_status, check = await self._reconcile_component(
                service, component_plan, previous_component, plan.stopped
            )
            assert status.components is not None
            status.components[component_plan.component] = component_status
            checks.append(check)
        status.conditions = service_conditions(
            checks,
            stopped=plan.stopped,
            predictor=status.components.get("predictor") if status.components else None,
            previous=previous.conditions if previous else None,
            latest=_latest_check(service, plan),
        )
        for condition in status.conditions or ():
            if resolved and condition.reason == "RevisionFailed" and condition.message:
                condition.message = describe_failure(condition.message, resolved)
        self._store.set_status(
            "InferenceService", service.namespace, service.name, msgspec.to_builtins(status)
        )
        self._publish_routes()
        if self._registry is not None:
            await self._registry.record(isvc, resolved, status.url)

    def _plan_failed(
        self,
        stored: StoredObject,
        previous: InferenceServiceStatus | None,
        reason: str,
        message: str,
    ) -> None:
        """The service cannot be planned: Ready False, and what serves keeps serving."""
        status = previous or InferenceServiceStatus()
        # Observed, and failed: `apply --wait` stops waiting on this generation.
        status.observed_generation = stored.generation
        status.conditions = conditions([Check("Ready", False, reason, message)])
        self._store.set_status(
            "InferenceService", stored.namespace, stored.name, msgspec.to_builtins(status)
        )

    async def _reconcile_graph_locked(self, service: ServiceState) -> None:
        stored = self._store.get(GRAPH, service.namespace, service.name)
        if stored is None:
            return
        graph = control.parse_object(stored.document)
        assert isinstance(graph, control.InferenceGraph)
        previous = (
            msgspec.convert(stored.status, InferenceGraphStatus).conditions
            if stored.status
            else None
        )
        services = service_plans(
            self._store, graph, stored_runtimes(self._store), self.settings.config
        )
        try:
            plan = control.plan_graph(graph, services, config=self.settings.config)
        except errors.ModelhostError as exc:
            status = graph_status(
                graph,
                stored.generation,
                plan=None,
                router=None,
                services=services,
                previous=previous,
                failure=str(exc),
            )
            self._store.set_status(GRAPH, service.namespace, service.name, status)
            return
        service.plan = plan
        router_plan = plan.components[0]
        if self._graph_host is not None:
            check = self._host_graph(service, plan)
        else:
            service.router_status, check = await self._reconcile_component(
                service, router_plan, service.router_status, plan.stopped
            )
        status = graph_status(
            graph,
            stored.generation,
            plan=plan,
            router=check,
            services=services,
            previous=previous,
        )
        self._store.set_status(GRAPH, service.namespace, service.name, status)
        self._publish_routes()

    def _host_graph(self, service: ServiceState, plan: ServicePlan) -> Check:
        """The graph's router in the gateway's process, rebuilt when its plan changes."""
        assert self._graph_host is not None
        router_plan = plan.components[0]
        state = service.components.get(router_plan.component)
        if state is None:
            state = ComponentState(
                service.namespace, service.name, router_plan.component, router_plan
            )
            service.components[router_plan.component] = state
        if state.in_process is None or state.plan.revision.name != router_plan.revision.name:
            state.in_process = self._graph_host.router(plan, state)
        state.plan = router_plan
        return Check("Ready", True)

    async def _reconcile_component(
        self,
        service: ServiceState,
        plan: ComponentPlan,
        previous: ComponentStatusSpec | None,
        stopped: bool,
    ) -> tuple[ComponentStatusSpec, Check]:
        kind = plan.component
        state = service.components.get(kind)
        if state is None:
            state = ComponentState(service.namespace, service.name, kind, plan)
            # The component's own address (a Kubernetes Service's): everything sent to it
            # goes to this component, whatever its host or path.
            listener = ProxyServer(
                functools.partial(_always, state),
                self._forwarder.forward,
                pool=self._forwarder.pool,
                limits=self.settings.http1_limits(),
            )
            state.service_port = await listener.start("127.0.0.1", 0)
            service.components[kind] = state
            service.listeners[kind] = listener
        state.plan = plan
        # A change of scaling alone plans the same revision: the running ones must follow it.
        for runner in state.runners.values():
            runner.change_scaling(plan.scaling)
        self._store.put_revision(service.namespace, service.name, plan.revision)
        wanted = [] if stopped else list(plan.revision_names)
        # Until the newest revision is ready, the one that served before keeps serving.
        serving = previous.latest_ready_revision if previous else None
        if serving and serving not in wanted and not stopped:
            newest = state.runners.get(plan.revision.name)
            if newest is None or not newest.ready:
                wanted.append(serving)
        for name in wanted:
            if name not in state.runners:
                revision = (
                    plan.revision
                    if name == plan.revision.name
                    else self._store.get_revision(service.namespace, service.name, name)
                )
                if revision is None:
                    continue
                runner = RevisionRunner(
                    revision,
                    plan.scaling,
                    self._replica_spec(service, plan),
                    self._session,
                    on_change=functools.partial(
                        self.kick, service.namespace, service.name, service.kind
                    ),
                )
                state.runners[name] = runner
                runner.start()
        ready = {name for name, runner in state.runners.items() if runner.ready}
        component_status = control.propagate_rollout(previous, plan, ready)
        split_traffic(state, plan, component_status.traffic or ())
        keep = set(wanted) | {
            t.revision_name for t in component_status.traffic or () if t.revision_name
        }
        for name in [n for n in state.runners if n not in keep]:
            self._background_retire(state.runners.pop(name))
        keep_recorded = keep | {
            n
            for n in (
                component_status.latest_rolledout_revision,
                component_status.previous_rolledout_revision,
                component_status.latest_ready_revision,
            )
            if n
        }
        if kind in ("predictor", control.ROUTER_COMPONENT):
            # Revisions of every component share the table; prune only what none needs.
            others = {n for s in service.components.values() for n in s.runners if s is not state}
            self._store.prune_revisions(service.namespace, service.name, keep_recorded | others)
        condition = COMPONENT_CONDITIONS.get(kind, "Ready")
        if stopped:
            return component_status, Check(condition, False, "Stopped", "the service is stopped")
        if any(runner.ready for runner, _ in state.split.items):
            return component_status, Check(condition, True)
        errors_seen = [r.last_error for r in state.runners.values() if r.last_error]
        message = errors_seen[0] if errors_seen else f"revision {plan.revision.name} is starting"
        reason = "RevisionFailed" if errors_seen else "RevisionMissing"
        return component_status, Check(condition, False, reason, message)

    def _replica_spec(self, service: ServiceState, plan: ComponentPlan) -> ReplicaSpec:
        env = replica_env(self.settings)
        calls = plan.calls

        def predictor_host() -> str:
            if service.kind == GRAPH:
                return self._mesh_address
            target = service.components.get(calls) if calls else None
            return target.address if target is not None else ""

        return ReplicaSpec(
            env=env,
            log_dir=self._log_dir(service.namespace, service.name),
            cwd=self.settings.workdir,
            start_timeout_s=self.settings.replica_start_timeout_s,
            stop_grace_s=self.settings.replica_stop_grace_s,
            predictor_host=predictor_host,
            ledger=self._ledger,
            zygote=self._zygote,
        )

    def _log_dir(self, namespace: str, name: str) -> Path:
        return self.settings.log_dir / namespace / name

    def _publish_routes(self) -> None:
        self._traffic.rebuild((s.plan, s.components) for s in self._services.values())

    # -- stopping what no longer serves ---------------------------------------------------

    async def _drop_component(self, service: ServiceState, kind: str) -> None:
        state = service.components.pop(kind, None)
        listener = service.listeners.pop(kind, None)
        if state is not None:
            runners = list(state.runners.values())
            # Tracked while they stop: a stop of the platform meanwhile finishes the job.
            self._retiring.update(runners)
            await asyncio.gather(*(self._retire(r) for r in runners))
        if listener is not None:
            await listener.stop()

    async def _teardown(self, service: ServiceState) -> None:
        for kind in list(service.components):
            await self._drop_component(service, kind)

    def _background_retire(self, runner: RevisionRunner) -> None:
        self._retiring.add(runner)
        task = asyncio.create_task(self._retire(runner), name=f"retire {runner.name}")
        self._retirements.add(task)
        task.add_done_callback(self._retirements.discard)

    async def _retire(self, runner: RevisionRunner) -> None:
        await runner.retire()
        self._retiring.discard(runner)

    # -- the autoscaler's ticks -----------------------------------------------------------

    async def _autoscale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autoscale_tick_s)
            for _, _, runner in list(self._runners()):
                runner.autoscale()


def replica_env(settings: PlatformSettings) -> dict[str, str]:
    """The environment every replica starts with, its component's own variables aside."""
    env = {**os.environ, **settings.replica_env}
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Replicas are reached through the gateway only, which checked the caller and
    # ended TLS: loopback, clear text, no tokens, whatever the platform's environment.
    env.update(MODELHOST_HOST="127.0.0.1", MODELHOST_AUTH="none", MODELHOST_SSL_CERTFILE="")
    env.update(MODELHOST_SSL_KEYFILE="", MODELHOST_SSL_CA_CERTS="")
    return env


def stored_runtimes(store: Store) -> list[ServingRuntime | ClusterServingRuntime]:
    """The runtimes applied to this platform, then the built-in ones not overridden."""
    found: list[ServingRuntime | ClusterServingRuntime] = []
    for kind in ("ServingRuntime", "ClusterServingRuntime"):
        for stored in store.list_objects(kind):
            obj = control.parse_object(stored.document)
            assert isinstance(obj, (ServingRuntime, ClusterServingRuntime))
            found.append(obj)
    names = {r.name for r in found if isinstance(r, ClusterServingRuntime)}
    found.extend(r for r in control.builtin_runtimes() if r.name not in names)
    return found


def _latest_check(service: ServiceState, plan: ServicePlan) -> Check | None:
    """Why the predictor's newest revision is not ready yet (None: it is, or there is none)."""
    predictor = plan.component("predictor")
    state = service.components.get("predictor")
    if predictor is None or state is None:
        return None
    newest = state.runners.get(predictor.revision.name)
    if newest is not None and newest.ready:
        return None
    if newest is not None and newest.last_error:
        return Check("", False, "RevisionFailed", newest.last_error)
    return Check("", False, "RevisionMissing", f"revision {predictor.revision.name} is starting")


def _always(component: ComponentState, request: object) -> ComponentState:
    return component


def _status(stored: StoredObject) -> InferenceServiceStatus | None:
    if not stored.status:
        return None
    return msgspec.convert(stored.status, InferenceServiceStatus)
