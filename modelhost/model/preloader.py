"""Background loading of a repository's deferred models, so a server serves before they load.

A server of a folder of 10,000 models listens and lists them all at once; the
``Preloader`` then loads them in the background, in the listing's order, until the
repository's budget is full. A request for a model not loaded yet does not wait for it:
the data plane loads that model on demand, and the repository's per-name lock makes a
background load and a request's load of the same model one load.

Threads help only where a framework's load releases the GIL (reading files, native
deserializers); unpickling a small scikit-learn model holds it (joblib unpickles in
Python), so more threads load such a folder no faster: 2,000 of them took 1.7 s with
one thread, 2.0 s with two and 2.4 s with four, on two cores.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from modelhost import errors
from modelhost.model.repository import ModelRepository

__all__ = ["PreloadProgress", "Preloader"]

logger = logging.getLogger("modelhost.model")

# How often a waiting loader looks at its stop flag while its start gate is shut.
_GATE_POLL_S = 0.05


@dataclass(frozen=True)
class PreloadProgress:
    """What the loader did: models it loaded, ones that failed, and whether it is done."""

    loaded: int
    failed: int
    done: bool
    seconds: float


class Preloader:
    """Loads ``names`` into ``repository`` with ``threads`` threads, up to its budget."""

    def __init__(
        self,
        repository: ModelRepository,
        names: Sequence[str],
        threads: int = 1,
        on_done: Callable[[], None] | None = None,
    ) -> None:
        if threads < 1:
            raise errors.InvalidInput(f"The preloader needs at least one thread, not {threads}.")
        self.repository = repository
        self.threads = threads
        # Called once, from the last loader thread, when the loading is over.
        self.on_done = on_done
        self._names: Iterator[str] = iter(list(names))
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []
        self._loaded = 0
        self._failed = 0
        self._started_at = 0.0
        self._finished_at = 0.0
        self._running = 0

    def start(self, gate: Callable[[float], bool] | None = None) -> None:
        """Start loading in the background; with ``gate``, only once ``gate(timeout)`` is true.

        ``gate`` is a wait such as ``ModelServer.wait_started``: models then load after the
        server listens, not in competition with its start.
        """
        self._started_at = time.perf_counter()
        self._running = self.threads
        for index in range(self.threads):
            worker = threading.Thread(
                target=self._work, args=(gate,), name=f"modelhost-preload-{index}", daemon=True
            )
            self._workers.append(worker)
            worker.start()

    def run(self) -> PreloadProgress:
        """Load in this thread and the others until done (before a fork, for instance)."""
        self.start()
        self.join()
        return self.progress()

    def stop(self) -> None:
        """Load no more models; a load under way finishes."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the threads; False when ``timeout`` passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            worker.join(left)
            if worker.is_alive():
                return False
        return True

    def progress(self) -> PreloadProgress:
        with self._lock:
            done = bool(self._workers) and self._running == 0
            end = self._finished_at if done else time.perf_counter()
            return PreloadProgress(
                self._loaded, self._failed, done, end - self._started_at if self._workers else 0.0
            )

    def _work(self, gate: Callable[[float], bool] | None) -> None:
        try:
            if gate is not None:
                while not self._stop.is_set() and not gate(_GATE_POLL_S):
                    pass
            while not self._stop.is_set() and self.repository.has_room():
                name = self._next_name()
                if name is None:
                    break
                self._load(name)
        finally:
            with self._lock:
                self._running -= 1
                last = self._running == 0
                if last:
                    self._finished_at = time.perf_counter()
                    logger.info(
                        "Background loading done: %d loaded, %d failed, in %.1fs",
                        self._loaded,
                        self._failed,
                        self._finished_at - self._started_at,
                    )
            if last and self.on_done is not None:
                self.on_done()

    def _next_name(self) -> str | None:
        with self._lock:
            return next(self._names, None)

    def _load(self, name: str) -> None:
        try:
            loaded = self.repository.preload(name)
        except errors.ModelhostError as exc:
            logger.error("Model %s did not load: %s", name, exc)
            with self._lock:
                self._failed += 1
            return
        if loaded:
            with self._lock:
                self._loaded += 1
