"""A running revision: its replicas, kept at the autoscaler's count, and the requests it holds.

This is where Knative's pieces meet on one machine: the supervisor (replicas started on free
ports, replaced with back-off when they crash), the readiness gate, the load balancer (least
in-flight among ready replicas, ``containerConcurrency`` as a hard limit per replica), and the
activator (a request that finds no ready replica waits here while one starts, and counts as
load so the autoscaler starts it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from modelhost import errors
from modelhost.control import Revision, ScalingPolicy
from modelhost.local.autoscaler import Autoscaler
from modelhost.local.replica import Replica, ReplicaLedger, ReplicaState, free_port, local_argv
from modelhost.local.zygote import Zygote

__all__ = ["ReplicaSpec", "RevisionRunner"]

logger = logging.getLogger("modelhost.local")

# CrashLoopBackOff, shortened for one machine: 0.5 s doubling to 30 s, reset after 30 s ready.
_BACKOFF_START_S = 0.5
_BACKOFF_MAX_S = 30.0
_BACKOFF_RESET_S = 30.0
_LIVE = (ReplicaState.STARTING, ReplicaState.READY)


@dataclass(frozen=True)
class ReplicaSpec:
    """What every replica of a revision is started with, the ports aside."""

    env: dict[str, str]
    log_dir: Path
    cwd: str | None
    start_timeout_s: float
    stop_grace_s: float
    # host:port of the component this one calls (a transformer's predictor), if any.
    predictor_host: Callable[[], str]
    # Where the replicas are written down while they run (so a killed platform's are found).
    ledger: ReplicaLedger | None = None
    # Forks the replicas it can (a local tabular ``modelhost serve``); None: all are spawned.
    zygote: Zygote | None = None


class RevisionRunner:
    """The replicas of one revision of one component of one InferenceService."""

    def __init__(
        self,
        revision: Revision,
        scaling: ScalingPolicy,
        spec: ReplicaSpec,
        session: aiohttp.ClientSession,
        *,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.revision = revision
        self.scaling = scaling
        self.spec = spec
        self.autoscaler = Autoscaler(scaling, clock=clock)
        self.desired = self.autoscaler.initial
        self.replicas: list[Replica] = []
        self.restarts = 0
        self.cold_starts = 0
        self.in_flight = 0  # requests held or sent, as the autoscaler sees them
        self.ever_ready = False
        self.last_error: str | None = None
        self._session = session
        self._on_change = on_change
        self._clock = clock
        self._changed = asyncio.Condition()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._supervisor: asyncio.Task[None] | None = None
        self._failures = 0
        self._next_start = 0.0
        self._serial = 0
        self._arrivals = 0
        self._load_area = 0.0
        self._load_since = clock()
        self._load_mark = clock()
        self._retired = False

    @property
    def name(self) -> str:
        return self.revision.name

    @property
    def ready_count(self) -> int:
        return sum(1 for r in self.replicas if r.serving)

    @property
    def ready(self) -> bool:
        """Serves now, or may scale from zero (Knative counts such a revision as ready)."""
        if self.ready_count > 0:
            return True
        return self.ever_ready and self.desired == 0 and self.scaling.scale_to_zero

    def change_scaling(self, scaling: ScalingPolicy) -> None:
        """Follow a changed policy at once: scaling fields are not part of a revision, so an
        update of minReplicas, maxReplicas or the targets keeps the revision that runs."""
        if scaling == self.scaling:
            return
        self.scaling = scaling
        self.autoscaler.change_policy(scaling)
        self.autoscale()

    def start(self) -> None:
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise {self.name}")

    async def retire(self) -> None:
        """Stop taking requests, let the ones held finish, then stop every replica."""
        self._retired = True
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        timeout = float(self.revision.timeout_s)
        # Every replica whose process may run, those already stopping (scaled down) too.
        await asyncio.gather(*(self._stop_replica(r, drain_s=timeout) for r in self.replicas))
        # Waited for, not cancelled: a replica being started or stopped ends on its own now
        # that it is stopped, and a cancelled task would leave its process unwaited for.
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._changed:
            self._changed.notify_all()

    def kill_now(self) -> None:
        for replica in self.replicas:
            replica.kill_now()

    # -- requests -------------------------------------------------------------------------

    def try_acquire(self) -> Replica | None:
        """The least busy ready replica, if one can take a request now (no waiting)."""
        return self._pick()

    async def acquire(self, timeout: float) -> Replica:
        """The least busy ready replica; waits (the activator) while none can take it."""
        replica = self._pick()
        if replica is not None:
            return replica
        self._note_load(+1)
        try:
            deadline = time.monotonic() + timeout
            async with self._changed:
                while True:
                    if self._retired:
                        raise errors.ServerNotReady(f"revision {self.name} was removed")
                    replica = self._pick()
                    if replica is not None:
                        return replica
                    if self.desired == 0 or not any(
                        r.state in (ReplicaState.STARTING, ReplicaState.READY)
                        for r in self.replicas
                    ):
                        self._activate()
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise errors.ServerNotReady(self._not_ready_reason())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), remaining)
        finally:
            self._note_load(-1)

    def release(self, replica: Replica) -> None:
        replica.in_flight -= 1
        self._note_load(-1)
        limit = self.revision.container_concurrency
        if limit and replica.in_flight == limit - 1:
            self._notify()

    def _pick(self) -> Replica | None:
        limit = self.revision.container_concurrency
        best: Replica | None = None
        for replica in self.replicas:
            if not replica.serving or (limit and replica.in_flight >= limit):
                continue
            if best is None or replica.in_flight < best.in_flight:
                best = replica
        if best is not None:
            best.in_flight += 1
            self._arrivals += 1
            self._note_load(+1)
        return best

    def _activate(self) -> None:
        wanted = self.autoscaler.activate()
        if wanted > self.desired:
            if self.desired == 0:
                self.cold_starts += 1
            self.desired = wanted
            self._wake.set()

    def _not_ready_reason(self) -> str:
        reason = f"revision {self.name} has no ready replica"
        if self.last_error:
            reason += f": {self.last_error}"
        return reason

    # -- autoscaling ----------------------------------------------------------------------

    def _note_load(self, delta: int) -> None:
        now = self._clock()
        self._load_area += self.in_flight * (now - self._load_mark)
        self._load_mark = now
        self.in_flight += delta

    def autoscale(self) -> None:
        """One autoscaler tick: feed it the load since the last tick and apply its answer."""
        self._note_load(0)
        now = self._clock()
        elapsed = now - self._load_since
        concurrency = self._load_area / elapsed if elapsed > 0 else float(self.in_flight)
        self.autoscaler.record(concurrency, self._arrivals)
        self._load_area, self._load_since, self._arrivals = 0.0, now, 0
        live = sum(1 for r in self.replicas if r.state in _LIVE)
        wanted = self.autoscaler.desired(live)
        if not self.ever_ready:
            # As Knative: a new revision reaches its initial scale before it may scale down,
            # else one whose first replica starts slower than the idle window never serves.
            wanted = max(wanted, self.autoscaler.initial)
        if wanted != self.desired:
            logger.info("revision %s: %d -> %d replicas", self.name, self.desired, wanted)
            self.desired = wanted
            self._wake.set()

    # -- supervision ----------------------------------------------------------------------

    async def _supervise(self) -> None:
        while not self._retired:
            self._reap()
            live = [r for r in self.replicas if r.state in _LIVE]
            if len(live) < self.desired:
                delay = self._next_start - time.monotonic()
                if delay <= 0:
                    self._launch()
                    continue
                await self._sleep(delay)
                continue
            if len(live) > self.desired:
                # Replicas still starting go first, then the newest ready ones.
                ordered = sorted(live, key=lambda r: (r.serving, r.started_at))
                extra = ordered[: len(live) - self.desired]
                for replica in extra:
                    replica.state = ReplicaState.DRAINING
                    self._spawn(self._stop_replica(replica, drain_s=float(self.revision.timeout_s)))
                self._notify_change()
            await self._sleep(1.0)

    async def _sleep(self, seconds: float) -> None:
        self._wake.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _reap(self) -> None:
        # A stopped replica stays listed until its process has exited: retiring the revision
        # waits for it, and no process is left running unseen.
        self.replicas = [
            r
            for r in self.replicas
            if r.state not in (ReplicaState.STOPPED, ReplicaState.FAILED) or not r.exited
        ]

    def _launch(self) -> None:
        self._serial += 1
        http_port, grpc_port = free_port(), free_port()
        argv, env = self.revision.process.render(
            http_port=http_port,
            grpc_port=grpc_port,
            predictor_host=self.spec.predictor_host(),
        )
        replica = Replica(
            f"{self.name}-{self._serial}",
            local_argv(argv),
            {**self.spec.env, **env},
            http_port=http_port,
            grpc_port=grpc_port,
            log_path=self.spec.log_dir / f"{self.name}.log",
            cwd=self.spec.cwd,
            ledger=self.spec.ledger,
            zygote=self.spec.zygote,
        )
        self.replicas.append(replica)
        self._spawn(self._run(replica))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, replica: Replica) -> None:
        try:
            await replica.start()
        except (OSError, subprocess.SubprocessError) as exc:  # the latter: from preexec_fn
            self._failed(replica, f"could not start {replica.argv[:3]}: {exc}")
            return
        ready = await replica.wait_ready(self._session, self.spec.start_timeout_s)
        if _stopped(replica):
            return
        if not ready:
            code = replica.returncode
            reason = (
                f"exited with code {code} before it was ready"
                if code is not None
                else f"not ready after {self.spec.start_timeout_s:.0f}s"
            )
            self._failed(replica, reason)
            await replica.stop(grace=1.0)
            replica.state = ReplicaState.FAILED
            self._wake.set()
            return
        self.ever_ready = True
        self.last_error = None
        self._notify_change()
        code = await replica.wait_exit()
        if _stopped(replica):
            return
        self._failed(replica, f"exited with code {code}")
        if replica.ready_at is not None and time.monotonic() - replica.ready_at > _BACKOFF_RESET_S:
            self._failures = 0
        self._wake.set()

    def _failed(self, replica: Replica, reason: str) -> None:
        replica.state = ReplicaState.FAILED
        self.restarts += 1
        self._failures += 1
        self.last_error = f"replica {replica.name} {reason} (log: {replica.log_path})"
        delay = min(_BACKOFF_MAX_S, _BACKOFF_START_S * 2 ** (self._failures - 1))
        self._next_start = time.monotonic() + delay
        logger.warning("%s; restarting in %.1fs", self.last_error, delay)
        self._notify_change()

    async def _stop_replica(self, replica: Replica, drain_s: float) -> None:
        await replica.drain(drain_s)
        await replica.stop(self.spec.stop_grace_s)
        self._notify_change()

    def _notify_change(self) -> None:
        self._notify()
        self._on_change()

    def _notify(self) -> None:
        async def wake() -> None:
            async with self._changed:
                self._changed.notify_all()

        self._spawn(wake())


def _stopped(replica: Replica) -> bool:
    """Stopped on purpose (scaled down, retired): its exit is no failure."""
    return replica.state is ReplicaState.STOPPED
