"""The gateway's side of the store's writer process: frames out, acknowledgements back.

:class:`ProcessWriter` takes logged exchanges on the event loop (``add_exchange``: one frame
appended, one pipe write per loop iteration), and counts what the process
(:mod:`modelhost.trust.writer_process`) says it stored. What is sent and not yet acknowledged
is bounded (``max_in_flight_bytes``): past it an exchange is dropped and counted, with a
warning, as the in-process writer drops past its ``max_pending``. A process that dies loses
the exchanges it had not acknowledged (counted as dropped, logged) and is started again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import sys
import time
from collections.abc import Callable

import orjson

from modelhost.trust.exchange_frames import append_exchange

__all__ = ["ProcessWriter"]

logger = logging.getLogger("modelhost.trust")

_WARN_EVERY_S = 10.0
# How long exchanges gather before they are written to the pipe together.
_FLUSH_S = 0.02
# How long a process that died waits before it is started again (doubled while it keeps
# dying without storing anything, up to the cap), and how long stop() waits for one to end.
_RESTART_S = 1.0
_RESTART_CAP_S = 30.0
_STOP_S = 10.0
# The longest answer line read from the process (its models' names, for a round of many).
_ANSWER_LIMIT = 16 * 1024 * 1024


class ProcessWriter:
    """Logged exchanges into ``store_path`` through a writer process; loop-thread only."""

    def __init__(
        self,
        store_path: str,
        on_written: Callable[[set[str]], None],
        *,
        max_in_flight_bytes: int = 64 * 1024 * 1024,
        nice: int = 19,
        python: str = sys.executable,
    ) -> None:
        self._command = [
            python, "-m", "modelhost.trust.writer_process",
            "--store", store_path, "--nice", str(nice),
        ]  # fmt: skip
        self._on_written = on_written
        self._max_in_flight_bytes = max_in_flight_bytes
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        # Frames not yet written to the pipe (as their pieces) and their sizes, and the sizes
        # of those written, not acknowledged.
        self._outbox: list[bytes] = []
        self._outbox_sizes: list[int] = []
        self._unacked: collections.deque[int] = collections.deque()
        self._in_flight_bytes = 0
        self._flush_scheduled = False
        self._changed = asyncio.Event()
        self._stopping = False
        self._warned_at = 0.0
        self._restart_s = _RESTART_S
        self.written = 0
        self.refused = 0
        self.dropped = 0

    async def start(self) -> None:
        """Start the writer process (again after :meth:`stop`)."""
        self._stopping = False
        await self._spawn()

    def add_exchange(self, model_id: str, request_id: str, request: bytes, response: bytes) -> None:
        """Send one logged exchange to be decoded and stored (dropped and counted when the
        process is that far behind, or stopped)."""
        outbox = self._outbox
        pieces = len(outbox)
        size = append_exchange(outbox, model_id, request_id, request, response)
        if self._stopping or self._in_flight_bytes + size > self._max_in_flight_bytes:
            del outbox[pieces:]
            self._drop(1, "the store's writer is behind" if not self._stopping else "stopped")
            return
        self._outbox_sizes.append(size)
        self._in_flight_bytes += size
        if not self._flush_scheduled:
            # One pipe write per window, not per exchange: each write wakes the process.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(_FLUSH_S, self._flush)

    async def settled(self) -> None:
        """Wait until every exchange added so far is stored, refused or counted lost."""
        while (self._outbox or self._unacked) and self._process is not None:
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        """Let the process store what it was sent, then end it."""
        self._stopping = True
        self._flush()
        reader = self._reader
        if (
            reader is not None
            and self._process is not None
            and self._process.returncode is not None
        ):
            reader.cancel()  # a process that died: the reader only waits to start another
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        process, reader = self._process, self._reader
        if process is not None and process.returncode is None:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), _STOP_S)
            except asyncio.TimeoutError:
                logger.error("trust: the store's writer did not end in %gs; killed", _STOP_S)
                process.kill()
                await process.wait()
            if reader is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        self._process = None
        if self._outbox:  # added while the process was down: nobody will store them now
            self._drop(len(self._outbox_sizes), "stopped")
            self._in_flight_bytes -= sum(self._outbox_sizes)
            self._outbox.clear()
            self._outbox_sizes.clear()
        self._changed.set()

    # -- the process ---------------------------------------------------------------------

    async def _spawn(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self._command,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=_ANSWER_LIMIT,
            # Not in the gateway's process group: a signal to the group (^C, a supervisor's
            # SIGTERM) must not end it before the gateway hands it its last exchanges. It
            # ends when its input does, the gateway's exit included.
            start_new_session=True,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read(self._process))
        self._flush()

    def _flush(self) -> None:
        self._flush_scheduled = False
        process = self._process
        if not self._outbox or process is None or process.returncode is not None:
            return
        stdin = process.stdin
        if stdin is None or stdin.is_closing():
            return
        self._unacked.extend(self._outbox_sizes)
        stdin.write(b"".join(self._outbox))
        self._outbox.clear()
        self._outbox_sizes.clear()

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            try:
                answer = orjson.loads(line)
                taken = int(answer["taken"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                logger.error("trust: the store's writer said %r", line[:200])
                continue
            self._acknowledge(min(taken, len(self._unacked)))
            self.written += int(answer.get("written", 0))
            self.refused += int(answer.get("refused", 0))
            failed = int(answer.get("failed", 0))
            if failed:
                self._drop(failed, "the store failed")
            self._restart_s = _RESTART_S  # it works: a later death restarts it at once
            models = set(answer.get("models") or ())
            if models:
                try:
                    self._on_written(models)
                except Exception:  # the listener's bug must not stop the acknowledgements
                    logger.exception("trust: noting rows of %s failed", sorted(models))
            self._changed.set()
        code = await process.wait()
        lost = len(self._unacked)
        self._acknowledge(lost)
        if lost:
            self._drop(lost, "the store's writer ended")
        self._changed.set()
        if not self._stopping:
            wait, self._restart_s = self._restart_s, min(self._restart_s * 2, _RESTART_CAP_S)
            logger.error(
                "trust: the store's writer ended with %s; starting it again in %gs", code, wait
            )
            await asyncio.sleep(wait)
            if not self._stopping:
                await self._spawn()

    def _acknowledge(self, count: int) -> None:
        for _ in range(count):
            self._in_flight_bytes -= self._unacked.popleft()

    def _drop(self, count: int, why: str) -> None:
        self.dropped += count
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            logger.warning(
                "trust: %d logged rows dropped so far (%s); %d bytes in flight",
                self.dropped,
                why,
                self._in_flight_bytes,
            )
