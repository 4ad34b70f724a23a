"""Group commit for logged inferences: the payload logger's rows reach SQLite in batches.

The built-in sink sees every logged request. Decoding and writing each in its own
transaction costs the serving process more than the request itself; here exchanges wait,
undecoded, and are decoded and stored together, one transaction per round, one statement per
model. A lone exchange is written at once; then a round starts at most every ``linger_s``, so
that under load one commit serves many requests.

Where the round runs was measured (bench/trust_scenario.py, gateway CPU per logged request):
in a worker thread it cost the serving loop about twice what the same work costs on the loop
itself, as the two threads traded the GIL through it. So a round of up to ``inline_rows``
exchanges (SQLite without fsync per commit: a few milliseconds at most) runs on the loop,
unless a reader holds the store; a bigger one, or a blocked one, goes to a thread. Past
``max_pending`` rows waiting (the disk cannot keep up), new ones are dropped and counted,
with a warning: never an unbounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from modelhost import errors
from modelhost.trust.ingest import OneRow, exchange_batch, one_row, parse_exchange
from modelhost.trust.store import InferenceBatch, TrustStore

__all__ = ["BatchWriter", "Exchange"]

logger = logging.getLogger("modelhost.trust")

_WARN_EVERY_S = 10.0
# An exchange not yet decoded: (model id, request id, request body, response body).
Exchange = tuple[str, str, bytes, bytes]


class BatchWriter:
    """Writes rows to ``store`` in group commits, off the event loop; loop-thread only."""

    def __init__(
        self,
        store: TrustStore,
        on_written: Callable[[set[str]], None],
        max_pending: int = 100_000,
        linger_s: float = 0.02,
        inline_rows: int = 256,
    ) -> None:
        self._inline_rows = inline_rows
        self._store = store
        self._on_written = on_written
        self._max_pending = max_pending
        self._linger_s = linger_s
        self._pending: list[InferenceBatch | Exchange] = []
        self._pending_rows = 0
        self._task: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.refused = 0
        self._warned_at = 0.0

    def add(self, batch: InferenceBatch) -> None:
        """Queue decoded rows; they are written with whatever else arrives while a write runs."""
        self._queue(batch, len(batch))

    def add_exchange(self, model_id: str, request_id: str, request: bytes, response: bytes) -> None:
        """Queue one logged exchange, to be decoded in the writer's thread (counted one row)."""
        self._queue((model_id, request_id, request, response), 1)

    def _queue(self, item: InferenceBatch | Exchange, rows: int) -> None:
        if self._pending_rows + rows > self._max_pending:
            self.dropped += rows
            now = time.monotonic()
            if now - self._warned_at >= _WARN_EVERY_S:
                self._warned_at = now
                logger.warning(
                    "trust: %d rows waiting to be stored; %d logged rows dropped so far",
                    self._pending_rows,
                    self.dropped,
                )
            return
        self._pending.append(item)
        self._pending_rows += rows
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            started = loop.time()
            items, self._pending, self._pending_rows = self._pending, [], 0
            try:
                merged = _merged(self._decoded(items))
                models = None
                if len(items) <= self._inline_rows:
                    models = self._write(merged, inline=True)
                if models is None:
                    models = await asyncio.to_thread(self._write, merged)
            except Exception:
                logger.exception("trust: storing %d logged inferences failed", len(items))
                models = set()
            if models:
                self._on_written(models)
            # The round's window stays open: what arrives in it waits for the next round, so
            # that under load a round takes many exchanges, not the one or two that came
            # while the last one ran (measured: 4 a round at 1,300 requests/s without this).
            await asyncio.sleep(max(0.0, started + self._linger_s - loop.time()))

    def _write(self, merged: list[_Run], inline: bool = False) -> set[str] | None:
        """Store the merged batches in one transaction; the models that got rows. ``inline``:
        None, having done nothing, when a reader holds the store (it would stall the loop)."""
        batches = [batch for batch, _ in merged]
        try:
            if inline:
                written = self._store.try_write(batches)
                if written is None:
                    return None
            else:
                written = self._store.write(batches)
            self.written += written
        except errors.ModelhostError:
            # One bad inference must not cost the others their rows: each part on its own.
            for _, parts in merged:
                for part in parts:
                    if isinstance(part, OneRow):
                        part = part.batch()
                    try:
                        self.written += self._store.write([part])
                    except errors.ModelhostError as exc:
                        self.refused += len(part)
                        logger.warning("trust: logged rows of %s refused: %s", part.model_id, exc)
        return {batch.model_id for batch, _ in merged}

    def _decoded(
        self,
        items: Sequence[InferenceBatch | Exchange],
        pause: Callable[[], object] | None = None,
        every: int = 32,
    ) -> list[InferenceBatch | OneRow]:
        decoded: list[InferenceBatch | OneRow] = []
        for index, item in enumerate(items, 1):
            if pause is not None and index % every == 0:
                pause()
            if isinstance(item, InferenceBatch):
                decoded.append(item)
                continue
            model_id, request_id, request, response = item
            try:
                row = one_row(model_id, request_id, request, response)
                if row is None:
                    request_data, response_data = parse_exchange(request_id, request, response)
                    decoded.append(
                        exchange_batch(model_id, request_id, request_data, response_data)
                    )
                else:
                    decoded.append(row)
            except errors.ModelhostError as exc:
                self.refused += 1
                logger.warning("trust: a logged inference of %s was refused: %s", model_id, exc)
        return decoded

    def store_exchanges(
        self,
        exchanges: list[Exchange],
        pause: Callable[[], object] | None = None,
        every: int = 32,
    ) -> set[str]:
        """Decode and store ``exchanges`` now, in this thread: the models that got rows.

        For a process that does nothing else (:mod:`modelhost.trust.writer_process`); a bad
        exchange is refused and counted, the others stored. ``pause`` is called after every
        ``every`` exchanges decoded (the process gives up the CPU there).
        """
        return self._write(_merged(self._decoded(exchanges, pause, every))) or set()

    async def settled(self) -> None:
        """Wait until every row added so far is written."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)


# A merged run: one batch to store, and what it was made of (stored one by one if refused).
_Run = tuple[InferenceBatch, Sequence[InferenceBatch | OneRow]]


def _merged(items: list[InferenceBatch | OneRow]) -> list[_Run]:
    """Consecutive batches (or rows) of one model with the same columns and tag, as one batch
    (with the batches it was made of, for storing each alone if the whole is refused)."""
    merged: list[_Run] = []
    start = 0
    while start < len(items):
        first = items[start]
        end = start + 1
        if isinstance(first, OneRow):
            key = (first.model_id, first.layout)
            while end < len(items):
                item = items[end]
                if not isinstance(item, OneRow) or (item.model_id, item.layout) != key:
                    break
                end += 1
            merged.append(_joined_rows(items[start:end]))  # type: ignore[arg-type]
        else:
            while end < len(items):
                item = items[end]
                if not isinstance(item, InferenceBatch) or not _same_shape(first, item):
                    break
                end += 1
            merged.append(_joined_batches(items[start:end]))  # type: ignore[arg-type]
        start = end
    return merged


def _joined_rows(run: list[OneRow]) -> tuple[InferenceBatch, list[OneRow]]:
    first = run[0]
    inputs, outputs = first.layout
    # The run's rows turned into columns in one C call (a row's values are in column order).
    columns = list(zip(*(row.values for row in run), strict=True))
    split = len(inputs)
    joined = InferenceBatch(
        first.model_id,
        dict(zip(inputs, columns[:split], strict=True)),
        dict(zip(outputs, columns[split:], strict=True)),
        [row.request_id for row in run],
    )
    return joined, run


def _joined_batches(run: list[InferenceBatch]) -> tuple[InferenceBatch, list[InferenceBatch]]:
    if len(run) == 1:
        return run[0], run
    first = run[0]
    inputs: dict[str, list[Any]] = {name: [] for name in first.inputs}
    outputs: dict[str, list[Any]] = {name: [] for name in first.outputs}
    ids: list[str] = []
    for batch in run:
        for name, values in batch.inputs.items():
            inputs[name].extend(values)
        for name, values in batch.outputs.items():
            outputs[name].extend(values)
        ids.extend(batch.request_ids)
    return InferenceBatch(first.model_id, inputs, outputs, ids, first.tag), run


def _same_shape(a: InferenceBatch, b: InferenceBatch) -> bool:
    return (
        a.model_id == b.model_id
        and a.tag == b.tag
        and list(a.inputs) == list(b.inputs)
        and list(a.outputs) == list(b.outputs)
    )
