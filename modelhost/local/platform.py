"""The embedded executor: applied objects → plans → running revisions, routes and status.

:class:`Platform` is the reconciler. ``apply`` admits objects (parsing, defaulting and
validating them as KServe's webhook would, so a bad object is a 400 and is not stored),
records them in SQLite and reconciles their service: plan it (the control plane's planner,
fed the last status), start the revisions the plan names, keep the revision that serves now
until the newest is ready, split traffic as the status says, retire what no longer serves,
and write KServe's status back. Replica changes and autoscaler ticks reconcile again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from modelhost import control, errors
from modelhost.control import (
    ClusterServingRuntime,
    ComponentPlan,
    InferenceService,
    InferenceServiceStatus,
    Route,
    ServicePlan,
    ServingRuntime,
)
from modelhost.control.objects import Addressable, ComponentStatusSpec
from modelhost.local.component import ComponentState
from modelhost.local.conditions import COMPONENT_CONDITIONS, Check, conditions, service_conditions
from modelhost.local.forwarder import Forwarder
from modelhost.local.http_proxy import ProxyServer
from modelhost.local.metrics import GatewayMetrics, ReplicaCount
from modelhost.local.payload_logger import PayloadLogger
from modelhost.local.replica import Replica, ReplicaState
from modelhost.local.revision import ReplicaSpec, RevisionRunner
from modelhost.local.routing import RouteTable, WeightedChoice
from modelhost.local.settings import PlatformSettings
from modelhost.local.store import Store, StoredObject
from modelhost.server.grpc.relay import GrpcTarget

__all__ = ["Platform"]

logger = logging.getLogger("modelhost.local")


@dataclass
class _Service:
    namespace: str
    name: str
    plan: ServicePlan | None = None
    components: dict[str, ComponentState] = field(default_factory=dict)
    listeners: dict[str, ProxyServer] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: bool = False


class Platform:
    """Runs InferenceServices on this machine; one per ``home`` folder."""

    def __init__(self, settings: PlatformSettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics(self._replica_counts)
        self.routes: RouteTable[ComponentState] = RouteTable()
        self._services: dict[tuple[str, str], _Service] = {}
        self._store: Store | None = None
        self._session: aiohttp.ClientSession | None = None
        self._forwarder: Forwarder | None = None
        self._payload_logger: PayloadLogger | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Revisions nothing routes to any more, draining in the background: tracked so that
        # stopping the platform finishes stopping their replicas instead of orphaning them.
        self._retiring: set[RevisionRunner] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._closing = False

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

    async def start(self) -> None:
        """Open the state and bring back every service it holds."""
        self.settings.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._store = Store(self.settings.state_path)
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        )
        self._payload_logger = PayloadLogger()
        await self._payload_logger.start()
        self._forwarder = Forwarder(self.metrics, self._payload_logger)
        for stored in self.store.list_objects("InferenceService"):
            self._kick(stored.namespace, stored.name)
        self._ticker = asyncio.create_task(self._autoscale_loop(), name="autoscaler")

    async def stop(self) -> None:
        """Stop every replica (they drain) and close what was opened."""
        self._closing = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._teardown(service) for service in list(self._services.values())),
            *(runner.retire() for runner in list(self._retiring)),
            return_exceptions=True,
        )
        self._retiring.clear()
        self._services.clear()
        if self._forwarder is not None:
            self._forwarder.close()
        if self._payload_logger is not None:
            await self._payload_logger.stop()
        if self._session is not None:
            await self._session.close()
        if self._store is not None:
            self._store.close()

    def kill_now(self) -> None:
        """At interpreter exit after a failure: no replica may outlive the platform."""
        for service in self._services.values():
            for component in service.components.values():
                for runner in component.runners.values():
                    runner.kill_now()
        for runner in self._retiring:
            runner.kill_now()

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
        known = self._runtimes()
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
            if kind == "InferenceService":
                self._kick(namespace, name)
        if any(r["kind"] != "InferenceService" and r["result"] != "unchanged" for r in results):
            for stored_isvc in self.store.list_objects("InferenceService"):
                self._kick(stored_isvc.namespace, stored_isvc.name)
        return results

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        stored = self.store.get(kind, namespace, name)
        return _document(stored) if stored else None

    def list_objects(self, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return [_document(s) for s in self.store.list_objects(kind, namespace)]

    async def delete(self, kind: str, namespace: str, name: str) -> bool:
        deleted = self.store.delete(kind, namespace, name)
        if deleted and kind == "InferenceService":
            service = self._services.pop((namespace, name), None)
            if service is not None:
                async with service.lock:
                    await self._teardown(service)
            self._rebuild_routes()
        return deleted

    def replicas(self, namespace: str, name: str) -> list[dict[str, Any]]:
        """The live view ``describe`` prints: every revision and replica of a service."""
        service = self._services.get((namespace, name))
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

    def logs(self, namespace: str, name: str, component: str, tail: int = 200) -> str:
        """The last lines of the newest revision's log of a component."""
        service = self._services.get((namespace, name))
        state = service.components.get(component) if service else None
        if state is None:
            raise errors.ModelNotFound(f"{namespace}/{name} {component}")
        path = self._log_dir(namespace, name) / f"{state.plan.revision.name}.log"
        if not path.exists():
            return ""
        lines = path.read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:]) + "\n"

    # -- the gateway's side ---------------------------------------------------------------

    def resolve_grpc_now(self, host: str | None, model: str | None) -> GrpcTarget | None:
        """A replica's gRPC address for a call if one can take it now; None: ask resolve_grpc."""
        component, runner = self._grpc_runner(host, model)
        replica = runner.try_acquire()
        if replica is None:
            return None
        return self._grpc_target(component, runner, replica)

    async def resolve_grpc(self, host: str | None, model: str | None) -> GrpcTarget:
        """A replica's gRPC address for a call, by host, else by model name (may wait)."""
        component, runner = self._grpc_runner(host, model)
        replica = await runner.acquire(float(runner.revision.timeout_s))
        return self._grpc_target(component, runner, replica)

    def _grpc_runner(
        self, host: str | None, model: str | None
    ) -> tuple[ComponentState, RevisionRunner]:
        component = self.routes.match_call(host, model)
        if component is None:
            if model:
                raise errors.ModelNotFound(model)
            raise errors.InvalidInput(
                "no service named: set the 'host' metadata to the service's host"
            )
        runner = component.choose()
        if runner is None:
            raise errors.ServerNotReady(f"{component.service}: no revision is ready")
        return component, runner

    def _grpc_target(
        self, component: ComponentState, runner: RevisionRunner, replica: Replica
    ) -> GrpcTarget:
        started = time.perf_counter()

        def release(ok: bool) -> None:
            runner.release(replica)
            # gRPC calls count as 200 or 500 beside the HTTP ones (a status per revision).
            seconds = time.perf_counter() - started
            self.forwarder.count(component, runner, 200 if ok else 500, seconds)

        return GrpcTarget(address=replica.grpc_address, release=release)

    # -- reconciling ----------------------------------------------------------------------

    def _kick(self, namespace: str, name: str) -> None:
        """Reconcile a service soon; many kicks before it runs make one reconcile."""
        if self._closing:
            return
        service = self._services.get((namespace, name))
        if service is None:
            service = self._services[(namespace, name)] = _Service(namespace, name)
        if service.pending:
            return
        service.pending = True
        task = asyncio.create_task(self._reconcile(service), name=f"reconcile {namespace}/{name}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reconcile(self, service: _Service) -> None:
        async with service.lock:
            service.pending = False
            try:
                await self._reconcile_locked(service)
            except Exception:
                logger.exception("reconcile of %s/%s failed", service.namespace, service.name)

    async def _reconcile_locked(self, service: _Service) -> None:
        stored = self.store.get("InferenceService", service.namespace, service.name)
        if stored is None:
            return
        isvc = control.parse_object(stored.document)
        assert isinstance(isvc, InferenceService)
        previous = _status(stored)
        try:
            plan = control.plan(
                isvc, [*self._runtimes()], config=self.settings.config, previous=previous
            )
        except errors.ModelhostError as exc:
            status = previous or InferenceServiceStatus()
            status.conditions = conditions([Check("Ready", False, "PlanFailed", str(exc))])
            self.store.set_status(
                "InferenceService", service.namespace, service.name, msgspec.to_builtins(status)
            )
            return
        service.plan = plan
        status = InferenceServiceStatus(
            observed_generation=stored.generation,
            url=plan.url,
            address=Addressable(url=plan.address_url),
            components={},
            deployment_mode=plan.deployment_mode,
        )
        if plan.runtime_kind == "ServingRuntime":
            status.serving_runtime_name = plan.runtime
        elif plan.runtime_kind == "ClusterServingRuntime":
            status.cluster_serving_runtime_name = plan.runtime
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
        )
        self.store.set_status(
            "InferenceService", service.namespace, service.name, msgspec.to_builtins(status)
        )
        self._rebuild_routes()

    async def _reconcile_component(
        self,
        service: _Service,
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
            listener = ProxyServer(self.forwarder, functools.partial(_always, state))
            state.service_port = await listener.start("127.0.0.1", 0)
            service.components[kind] = state
            service.listeners[kind] = listener
        state.plan = plan
        self.store.put_revision(service.namespace, service.name, plan.revision)
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
                    else self.store.get_revision(service.namespace, service.name, name)
                )
                if revision is None:
                    continue
                runner = RevisionRunner(
                    revision,
                    plan.scaling,
                    self._replica_spec(service, plan),
                    self.session,
                    on_change=functools.partial(self._kick, service.namespace, service.name),
                )
                state.runners[name] = runner
                runner.start()
        ready = {name for name, runner in state.runners.items() if runner.ready}
        component_status = control.propagate_rollout(previous, plan, ready)
        shares = [
            (state.runners[t.revision_name], t.percent or 0)
            for t in component_status.traffic or ()
            # Not only the ready ones: a revision whose replica just crashed keeps its share,
            # and its requests wait for the replacement (Knative's activator does the same).
            if t.revision_name in state.runners
        ]
        state.split = WeightedChoice(shares)
        # Knative's tag routes: <tag>-<component host> reaches that revision alone.
        state.tagged = {}
        for target in component_status.traffic or ():
            tagged = state.runners.get(target.revision_name or "")
            if target.tag and tagged is not None:
                state.tagged[f"{target.tag}-{plan.host}"] = dataclasses.replace(
                    state, split=WeightedChoice([(tagged, 100)]), tagged={}
                )
                target.url = f"{plan.url.split('://')[0]}://{target.tag}-{plan.host}"
        keep = set(wanted) | {
            t.revision_name for t in component_status.traffic or () if t.revision_name
        }
        for name in [n for n in state.runners if n not in keep]:
            runner = state.runners.pop(name)
            self._retiring.add(runner)
            self._background(self._retire(runner))
        keep_recorded = keep | {
            n
            for n in (
                component_status.latest_rolledout_revision,
                component_status.previous_rolledout_revision,
                component_status.latest_ready_revision,
            )
            if n
        }
        if kind == "predictor":
            # Revisions of every component share the table; prune only what none needs.
            others = {n for s in service.components.values() for n in s.runners if s is not state}
            self.store.prune_revisions(service.namespace, service.name, keep_recorded | others)
        condition = COMPONENT_CONDITIONS[kind]
        if stopped:
            return component_status, Check(condition, False, "Stopped", "the service is stopped")
        if any(runner.ready for runner, percent in shares if percent > 0):
            return component_status, Check(condition, True)
        errors_seen = [r.last_error for r in state.runners.values() if r.last_error]
        message = errors_seen[0] if errors_seen else f"revision {plan.revision.name} is starting"
        reason = "RevisionFailed" if errors_seen else "RevisionMissing"
        return component_status, Check(condition, False, reason, message)

    def _replica_spec(self, service: _Service, plan: ComponentPlan) -> ReplicaSpec:
        env = {**os.environ, **self.settings.replica_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        # Replicas are reached through the gateway only, which checked the caller and
        # ended TLS: loopback, clear text, no tokens, whatever the platform's environment.
        env.update(MODELHOST_HOST="127.0.0.1", MODELHOST_AUTH="none", MODELHOST_SSL_CERTFILE="")
        env.update(MODELHOST_SSL_KEYFILE="", MODELHOST_SSL_CA_CERTS="")
        calls = plan.calls

        def predictor_host() -> str:
            target = service.components.get(calls) if calls else None
            return target.address if target is not None else ""

        return ReplicaSpec(
            env=env,
            log_dir=self._log_dir(service.namespace, service.name),
            cwd=self.settings.workdir,
            start_timeout_s=self.settings.replica_start_timeout_s,
            stop_grace_s=self.settings.replica_stop_grace_s,
            predictor_host=predictor_host,
        )

    def _log_dir(self, namespace: str, name: str) -> Any:
        return self.settings.log_dir / namespace / name

    async def _drop_component(self, service: _Service, kind: str) -> None:
        state = service.components.pop(kind, None)
        listener = service.listeners.pop(kind, None)
        if state is not None:
            await asyncio.gather(*(r.retire() for r in state.runners.values()))
        if listener is not None:
            await listener.stop()

    async def _teardown(self, service: _Service) -> None:
        for kind in list(service.components):
            await self._drop_component(service, kind)

    def _rebuild_routes(self) -> None:
        routes = []
        for service in self._services.values():
            plan = service.plan
            if plan is None or plan.stopped:
                continue
            for route in plan.routes:
                component = service.components.get(route.component)
                if component is not None:
                    routes.append((route, component))
            for component in service.components.values():
                for host, pinned in component.tagged.items():
                    routes.append((Route(component.component, host=host), pinned))
        self.routes = RouteTable(routes)

    def _runtimes(self) -> list[ServingRuntime | ClusterServingRuntime]:
        found: list[ServingRuntime | ClusterServingRuntime] = []
        for kind in ("ServingRuntime", "ClusterServingRuntime"):
            for stored in self.store.list_objects(kind):
                obj = control.parse_object(stored.document)
                assert isinstance(obj, (ServingRuntime, ClusterServingRuntime))
                found.append(obj)
        names = {r.name for r in found if isinstance(r, ClusterServingRuntime)}
        found.extend(r for r in control.builtin_runtimes() if r.name not in names)
        return found

    async def _retire(self, runner: RevisionRunner) -> None:
        await runner.retire()
        self._retiring.discard(runner)

    def _background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _autoscale_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.autoscale_tick_s)
            for runner in list(self._runners()):
                runner.autoscale()

    def _runners(self) -> Iterator[RevisionRunner]:
        for service in self._services.values():
            for component in service.components.values():
                yield from component.runners.values()

    def _replica_counts(self) -> Iterator[ReplicaCount]:
        for service in list(self._services.values()):
            for component in list(service.components.values()):
                for runner in list(component.runners.values()):
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


def _always(component: ComponentState, request: object) -> ComponentState:
    return component


def _document(stored: StoredObject) -> dict[str, Any]:
    document = dict(stored.document)
    if stored.status is not None:
        document["status"] = stored.status
    return document


def _status(stored: StoredObject) -> InferenceServiceStatus | None:
    if not stored.status:
        return None
    return msgspec.convert(stored.status, InferenceServiceStatus)
