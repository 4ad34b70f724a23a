"""Worker processes: ``--workers N`` forks N servers after the models are loaded.

The parent loads every model once, then forks: the workers share the model's memory
copy-on-write, and each binds the HTTP and gRPC ports with SO_REUSEPORT so the kernel
spreads connections over them. Metrics go to a shared Prometheus multiprocess folder,
so ``/metrics`` on any worker shows the sum over all. The parent only supervises: a
worker that dies is forked again (with back-off if it keeps dying), and SIGTERM is passed
on to every worker, each of which drains its own in-flight requests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import multiprocess

from modelhost.settings import ServerSettings

__all__ = ["WorkerPool", "reserve_port"]

logger = logging.getLogger("modelhost.workers")

# A worker that lived this long before dying is restarted at once; a worker that dies
# sooner waits 1, 2, 4, ... seconds (at most MAX_BACKOFF) before its next start.
STABLE_AFTER = 10.0
MAX_BACKOFF = 30.0

# What the forked child runs: it gets its index and the metrics folder, returns an exit code.
WorkerMain = Callable[[int, str], int]


@dataclass
class _Worker:
    index: int
    pid: int = 0
    started: float = 0.0
    failures: int = 0
    restart_at: float = 0.0


@dataclass
class WorkerPool:
    """Forks and supervises the workers; :meth:`run` blocks until they have all exited."""

    settings: ServerSettings
    worker_main: WorkerMain
    metrics_dir: str = ""
    _workers: dict[int, _Worker] = field(default_factory=dict)
    _stopping: bool = False

    def run(self) -> int:
        owned_dir = not self.metrics_dir
        if owned_dir:
            self.metrics_dir = tempfile.mkdtemp(prefix="modelhost-metrics-")
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            for index in range(self.settings.workers):
                self._spawn(_Worker(index))
            logger.info("Started %d workers: %s", len(self._workers), sorted(self._workers))
            self._supervise()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if owned_dir:
                shutil.rmtree(self.metrics_dir, ignore_errors=True)
        return 0

    @property
    def pids(self) -> list[int]:
        return sorted(self._workers)

    def _spawn(self, worker: _Worker) -> None:
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without running the parent's cleanup
            code = 1
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                code = self.worker_main(worker.index, self.metrics_dir)
            except BaseException:
                logger.exception("Worker %d failed", worker.index)
            finally:
                logging.shutdown()
                os._exit(code)
        worker.pid = pid
        worker.started = time.monotonic()
        self._workers[pid] = worker

    def _supervise(self) -> None:
        pending: list[_Worker] = []
        while self._workers or (pending and not self._stopping):
            if pending and not self._stopping:
                now = time.monotonic()
                for worker in [w for w in pending if w.restart_at <= now]:
                    pending.remove(worker)
                    self._spawn(worker)
                    logger.warning("Restarted worker %d as pid %d", worker.index, worker.pid)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                time.sleep(0.1)
                continue
            if pid not in self._workers:
                continue
            worker = self._workers.pop(pid)
            multiprocess.mark_process_dead(pid, self.metrics_dir)  # type: ignore[no-untyped-call]
            if self._stopping:
                continue
            lived = time.monotonic() - worker.started
            worker.failures = 0 if lived >= STABLE_AFTER else worker.failures + 1
            delay = 0.0 if worker.failures == 0 else min(2.0 ** (worker.failures - 1), MAX_BACKOFF)
            worker.restart_at = time.monotonic() + delay
            logger.warning(
                "Worker %d (pid %d) exited with status %s; restarting in %.0fs",
                worker.index,
                pid,
                _describe(status),
                delay,
            )
            pending.append(worker)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self._stopping:
            return
        self._stopping = True
        logger.info("Stopping %d workers", len(self._workers))
        for pid in list(self._workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return str(os.waitstatus_to_exitcode(status))


def reserve_port(host: str, port: int) -> tuple[socket.socket, int]:
    """Bind (not listen) with SO_REUSEPORT, so that workers can share the port it names.

    With port 0 the kernel picks one; holding the socket keeps it ours while workers
    come and go. Only listening sockets receive connections, so it takes no traffic.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock, int(sock.getsockname()[1])
