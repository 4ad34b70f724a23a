"""Where the platform's traffic goes now: the route table, each component's split, gRPC calls.

The reconciler decides (it writes KServe's traffic block into the status); this module
carries the decision out for the gateways: :func:`split_traffic` turns a component's
traffic targets into its weighted split and its tag routes, and :class:`TrafficRouter`
holds the route table of every service (rebuilt after each reconcile and swapped whole,
so a request never sees half of one) and resolves a gRPC call to a replica of the
revision its split picks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence

from modelhost import errors
from modelhost.control import ComponentPlan, Route, ServicePlan
from modelhost.control.objects import TrafficTarget
from modelhost.local.component import ComponentState
from modelhost.local.replica import Replica
from modelhost.local.revision import RevisionRunner
from modelhost.local.routing import RouteTable, WeightedChoice
from modelhost.transport.target import Target

__all__ = ["CallCounter", "TrafficRouter", "split_traffic"]

# Counts a finished call: component, revision, status, seconds (the forwarder's metrics).
CallCounter = Callable[[ComponentState, RevisionRunner, int, float], None]


def split_traffic(
    state: ComponentState, plan: ComponentPlan, traffic: Sequence[TrafficTarget]
) -> None:
    """Serve ``traffic`` (the status' targets) from now on; a tagged target gets its URL."""
    shares = [
        (state.runners[t.revision_name], t.percent or 0)
        for t in traffic
        # Not only the ready ones: a revision whose replica just crashed keeps its share,
        # and its requests wait for the replacement (Knative's activator does the same).
        if t.revision_name in state.runners
    ]
    state.split = WeightedChoice(shares)
    # Knative's tag routes: <tag>-<component host> reaches that revision alone.
    state.tagged = {}
    for target in traffic:
        tagged = state.runners.get(target.revision_name or "")
        if target.tag and tagged is not None:
            state.tagged[f"{target.tag}-{plan.host}"] = dataclasses.replace(
                state, split=WeightedChoice([(tagged, 100)]), tagged={}
            )
            target.url = f"{plan.url.split('://')[0]}://{target.tag}-{plan.host}"


class TrafficRouter:
    """The routes of every running service, and the gRPC gateway's resolver over them."""

    def __init__(self, count: CallCounter) -> None:
        self.routes: RouteTable[ComponentState] = RouteTable()
        self._count = count

    def rebuild(
        self, services: Iterable[tuple[ServicePlan | None, Mapping[str, ComponentState]]]
    ) -> None:
        """Route to these services' components: (last plan, components) of each."""
        routes = []
        for plan, components in services:
            if plan is None or plan.stopped:
                continue
            for route in plan.routes:
                component = components.get(route.component)
                if component is not None:
                    routes.append((route, component))
            for component in components.values():
                for host, pinned in component.tagged.items():
                    routes.append((Route(component.component, host=host), pinned))
        self.routes = RouteTable(routes)

    def resolve_grpc_now(self, host: str | None, model: str | None) -> Target | None:
        """A replica's gRPC address for a call if one can take it now; None: ask resolve_grpc."""
        component, runner = self._grpc_runner(host, model)
        replica = runner.try_acquire()
        if replica is None:
            return None
        return self._grpc_target(component, runner, replica)

    async def resolve_grpc(self, host: str | None, model: str | None) -> Target:
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
    ) -> Target:
        started = time.perf_counter()
        count = self._count

        def release(ok: bool) -> None:
            runner.release(replica)
            # gRPC calls count as 200 or 500 beside the HTTP ones (a status per revision).
            count(component, runner, 200 if ok else 500, time.perf_counter() - started)

        return Target(address=replica.grpc_address, release=release)
