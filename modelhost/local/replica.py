"""One replica: a model-server process on free loopback ports, probed until it is ready.

A replica is the embedded platform's pod. It owns its process (in a session of its own, so
stopping it stops whatever it spawned), its log file, and a readiness gate: the gateway sends
it nothing until its server answers ``/v2/health/ready`` (KServe's and modelhost's readiness
probe), or, for a custom server that has no such route, until its HTTP port accepts.

A replica must not outlive the platform, even one killed at once: on Linux the kernel sends
it SIGKILL when the platform dies (``PR_SET_PDEATHSIG``), and a ledger records it so that
the next platform kills what it spawned (:mod:`modelhost.local.reaper`).

A local ``modelhost serve`` of a tabular runtime is forked from the platform's zygote when one
is up (:mod:`modelhost.local.zygote`): the same argv, environment, folder and log file,
without the seconds of imports; any other argv, or a zygote that is down, is spawned.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import aiohttp

from modelhost.local.zygote import Zygote, ZygoteUnavailable

__all__ = [
    "REPLICA_ID_VARIABLE",
    "Replica",
    "ReplicaLedger",
    "ReplicaState",
    "free_port",
    "local_argv",
]

logger = logging.getLogger("modelhost.local")

_PROBE_PATH = "/v2/health/ready"
_PROBE_INTERVAL_S = 0.05
# A forked replica is probed this often for its first seconds: it is ready in tens of
# milliseconds, and a refused connection costs next to nothing. A spawned one takes seconds.
_FIRST_PROBES_INTERVAL_S = 0.005
_FIRST_PROBES_S = 2.0
# What whatever a replica spawns inherits too: how the reaper knows a process is ours.
REPLICA_ID_VARIABLE = "MODELHOST_REPLICA_ID"
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class ReplicaLedger(Protocol):
    """Where replicas are written down while their process runs (the platform's state)."""

    def started(self, replica: Replica) -> None: ...

    def ended(self, replica: Replica) -> None: ...


class ReplicaProcess(Protocol):
    """A replica's process: spawned (asyncio's) or forked by the zygote."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class ReplicaState(enum.Enum):
    STARTING = "Starting"
    READY = "Ready"
    DRAINING = "Draining"
    STOPPED = "Stopped"
    FAILED = "Failed"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel has just handed out; the replica binds it moments later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def local_argv(argv: Sequence[str]) -> list[str]:
    """The argv to run here: ``modelhost`` and ``python`` mean this very interpreter.

    A container image brings its own ``modelhost`` and ``python``; on one machine the
    platform's own environment is the one that has modelhost and the runtimes installed.
    """
    argv = list(argv)
    if not argv:
        return argv
    head = os.path.basename(argv[0])
    if head == "modelhost":
        return [sys.executable, "-m", "modelhost", *argv[1:]]
    if head in ("python", "python3", f"python3.{sys.version_info.minor}"):
        return [sys.executable, *argv[1:]]
    return argv


class Replica:
    """A process serving one revision on ``http_port`` (and ``grpc_port``)."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        http_port: int,
        grpc_port: int,
        log_path: Path,
        cwd: str | None = None,
        ledger: ReplicaLedger | None = None,
        zygote: Zygote | None = None,
    ) -> None:
        self.name = name
        self.id = uuid.uuid4().hex
        self.argv = list(argv)
        self.env = {**env, REPLICA_ID_VARIABLE: self.id}
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.log_path = log_path
        self.cwd = cwd
        self.state = ReplicaState.STARTING
        self.in_flight = 0
        self.started_at = 0.0
        self.ready_at: float | None = None
        self._process: ReplicaProcess | None = None
        self._zygote = zygote
        self.forked = False
        self._stopping = False
        self._ledger = ledger
        self._recorded = False
        self._spawning = False
        self._grace = 10.0

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @property
    def returncode(self) -> int | None:
        return self._process.returncode if self._process else None

    @property
    def exited(self) -> bool:
        """Its process has exited, or will never run (stopped before it was started)."""
        if self._process is None:
            return not self._spawning
        return self._process.returncode is not None

    @property
    def serving(self) -> bool:
        """Takes new requests: ready, and not draining or gone."""
        return self.state is ReplicaState.READY

    async def start(self) -> None:
        if self._stopping:
            return  # stopped before it started: nothing to run
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._spawning = True
        try:
            # A local file opened for appending: no wait worth a thread.
            with open(self.log_path, "ab") as log:  # noqa: ASYNC230
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                log.write(f"--- {stamp} {self.name}: start\n".encode())
                log.flush()
                self._process = await self._fork(log.fileno())
                if self._process is None:
                    self._process = await asyncio.create_subprocess_exec(
                        *self.argv,
                        env=self.env,
                        cwd=self.cwd,
                        stdin=asyncio.subprocess.DEVNULL,
                        stdout=log,
                        stderr=asyncio.subprocess.STDOUT,
                        start_new_session=True,
                        preexec_fn=_die_with(os.getpid()) if _PRCTL is not None else None,
                    )
        finally:
            self._spawning = False
        self.started_at = time.monotonic()
        if self._ledger is not None:
            self._ledger.started(self)
            self._recorded = True
        if self._stopping:
            # stop() ran while the process was being created: it found nothing to stop.
            await self._terminate()
            return
        logger.info(
            "replica %s %s: pid %s, port %s",
            self.name,
            "forked" if self.forked else "started",
            self.pid,
            self.http_port,
        )

    async def _fork(self, log_fd: int) -> ReplicaProcess | None:
        """The process forked from the zygote; None: spawn it (no zygote, or it failed)."""
        zygote = self._zygote
        if zygote is None or not zygote.accepts(self.argv, self.env):
            return None
        try:
            process = await zygote.fork(self.argv, self.env, self.cwd, log_fd)
        except ZygoteUnavailable as exc:
            logger.warning("replica %s: %s; spawning it", self.name, exc)
            return None
        self.forked = True
        return process

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float) -> bool:
        """Probe until the server is ready; False when the process exits or time runs out."""
        deadline = time.monotonic() + timeout
        url = f"http://{self.http_address}{_PROBE_PATH}"
        probe_timeout = aiohttp.ClientTimeout(total=2.0)
        fast_until = time.monotonic() + (_FIRST_PROBES_S if self.forked else 0.0)
        while time.monotonic() < deadline:
            if self._process is None or self._process.returncode is not None or self._stopping:
                return False
            try:
                async with session.get(url, timeout=probe_timeout) as response:
                    await response.read()
                    # A server without the v2 route is up once it answers at all.
                    if response.status == 200 or response.status == 404:
                        self.state = ReplicaState.READY
                        self.ready_at = time.monotonic()
                        return True
            except (aiohttp.ClientError, asyncio.TimeoutError):
                pass
            fast = time.monotonic() < fast_until
            await asyncio.sleep(_FIRST_PROBES_INTERVAL_S if fast else _PROBE_INTERVAL_S)
        return False

    async def wait_exit(self) -> int:
        return await self._wait()

    async def _wait(self) -> int:
        assert self._process is not None
        code = await self._process.wait()
        if self._recorded:
            self._recorded = False
            assert self._ledger is not None
            self._ledger.ended(self)
        return code

    async def drain(self, timeout: float) -> None:
        """Take no new requests, and wait for the ones it holds to finish."""
        if self.state is ReplicaState.READY or self.state is ReplicaState.STARTING:
            self.state = ReplicaState.DRAINING
        deadline = time.monotonic() + timeout
        # Polled: the count moves in the gateway's hot path, which should not wake anyone.
        while self.in_flight > 0 and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)

    async def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the server drains), then SIGKILL after ``grace`` seconds."""
        self._stopping = True
        self._grace = grace
        self.state = ReplicaState.STOPPED
        await self._terminate()

    async def _terminate(self) -> None:
        process = self._process
        if process is None:
            return
        if process.returncode is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), self._grace)
            except asyncio.TimeoutError:
                logger.warning("replica %s did not stop in %ss: killed", self.name, self._grace)
                _signal_group(process.pid, signal.SIGKILL)
        await self._wait()

    def kill_now(self) -> None:
        """Last resort at platform exit: no replica outlives the platform."""
        process = self._process
        if process is not None and process.returncode is None:
            _signal_group(process.pid, signal.SIGKILL)


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


# Looked up once, in the parent: the child between fork and exec should do no more than call.
_PRCTL = _load_prctl()


def _die_with(parent: int) -> Callable[[], None]:
    """A ``preexec_fn`` that has the kernel SIGKILL the child when ``parent`` dies (Linux).

    "Dies" is the death of the *thread* that forked: replicas are spawned from the event
    loop's thread, which lives as long as the platform does.
    """

    def preexec() -> None:
        assert _PRCTL is not None
        if _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent:
            # The platform died between the fork and the prctl: no signal will come.
            os._exit(1)

    return preexec


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)
